//! JSON written byte for byte the way QEMU and its tools write it: one writer, with a
//! [`Style`] for each of the three layouts that really differ.
//!
//! | output | style | layout | empty array | strings |
//! | --- | --- | --- | --- | --- |
//! | the vmdesc trailer (`qobject/json-writer.c`, not pretty-printed) | [`Style::QEMU`] | one line, `", "` between members and elements | `[]` | `\uXXXX` (uppercase) for control characters and everything from 0x7F |
//! | `-dump-vmstate` (`migration/savevm.c`) | [`Style::QEMU_DUMP`] | two-space indentation, one member or element per line | `[`, an empty line, `]` | only what JSON requires is escaped |
//! | `analyze-migration.py` (`json.dumps(indent=4)`) | [`Style::PYTHON`] | four-space indentation, one member or element per line | `[]` | `\uxxxx` (lowercase) for control characters and everything from 0x7F |
//!
//! In every style keys are followed by `": "` and an empty object is `{}`.
//! [`to_string`] writes a [`Value`] in QEMU's vmdesc style; [`Style::to_string`] in any
//! style; an [`Emitter`] writes a piece at a time, for output built as it is produced.
//!
//! ```
//! use vmstate::qjson::{self, Style};
//!
//! let v = serde_json::json!({"name": "timer", "fields": [1, 2], "é": true, "none": []});
//! assert_eq!(qjson::to_string(&v),
//!            r#"{"name": "timer", "fields": [1, 2], "\u00E9": true, "none": []}"#);
//! assert_eq!(Style::QEMU_DUMP.to_string(&v),
//!            "{\n  \"name\": \"timer\",\n  \"fields\": [\n    1,\n    2\n  ],\n  \
//!             \"é\": true,\n  \"none\": [\n\n  ]\n}");
//! assert_eq!(Style::PYTHON.to_string(&v),
//!            "{\n    \"name\": \"timer\",\n    \"fields\": [\n        1,\n        2\n    ],\n    \
//!             \"\\u00e9\": true,\n    \"none\": []\n}");
//! ```

use std::fmt::Write as _;

use serde_json::Value;

use crate::json::Json;

/// How a JSON text is laid out and how its strings are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Spaces per nesting level, with one member or element per line; `None` writes
    /// everything on one line with `", "` between members and elements.
    pub indent: Option<usize>,
    /// How an empty array is written when indenting.
    pub empty_array: EmptyArray,
    /// Which characters of a string are escaped.
    pub escape: Escape,
}

/// How an indented empty array is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyArray {
    /// `[]`.
    Brackets,
    /// `[`, an empty line, and `]` at the indentation of the line that opened it: what
    /// QEMU's `-dump-vmstate` prints for a field list without fields.
    BlankLine,
}

/// Which characters of a string are escaped. `"`, `\` and the control characters are
/// always escaped, the ones that have a short form (`\b`, `\f`, `\n`, `\r`, `\t`) with
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Only what JSON requires; other control characters as `\u00xx` (lowercase), and
    /// everything else as is.
    Required,
    /// Also everything from 0x7F up, all as UTF-16 `\uXXXX` with uppercase hex (QEMU's
    /// `json-writer.c`).
    AsciiUpper,
    /// Also everything from 0x7F up, all as UTF-16 `\uxxxx` with lowercase hex
    /// (Python's `json` with `ensure_ascii`).
    AsciiLower,
}

impl Style {
    /// QEMU's vmdesc trailer and QMP: one line.
    pub const QEMU: Style = Style {
        indent: None,
        empty_array: EmptyArray::Brackets,
        escape: Escape::AsciiUpper,
    };

    /// QEMU's `-dump-vmstate` file (without its final newline).
    pub const QEMU_DUMP: Style = Style {
        indent: Some(2),
        empty_array: EmptyArray::BlankLine,
        escape: Escape::Required,
    };

    /// `analyze-migration.py`'s output: Python's `json.dumps(v, indent=4)` (without the
    /// newline `print` adds).
    pub const PYTHON: Style = Style {
        indent: Some(4),
        empty_array: EmptyArray::Brackets,
        escape: Escape::AsciiLower,
    };

    /// A [`Json`] tree written in this style, duplicate keys included.
    pub fn to_string_json(self, value: &Json) -> String {
        let mut e = Emitter::new(self);
        e.json(value);
        e.finish()
    }

    /// Writes `value` in this style.
    pub fn to_string(self, value: &Value) -> String {
        let mut e = Emitter::new(self);
        e.value(value);
        e.finish()
    }

    /// Appends `s` to `out` as a JSON string in this style.
    pub fn write_str(self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = match self.escape {
                        Escape::AsciiUpper => write!(out, "\\u{:04X}", c as u32),
                        Escape::Required | Escape::AsciiLower => {
                            write!(out, "\\u{:04x}", c as u32)
                        }
                    };
                }
                c if (c as u32) >= 0x7f && self.escape != Escape::Required => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        let _ = match self.escape {
                            Escape::AsciiUpper => write!(out, "\\u{u:04X}"),
                            _ => write!(out, "\\u{u:04x}"),
                        };
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Writes `value` in QEMU's vmdesc style ([`Style::QEMU`]).
pub fn to_string(value: &Value) -> String {
    Style::QEMU.to_string(value)
}

/// Appends `value` in QEMU's vmdesc style ([`Style::QEMU`]) to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    let mut e = Emitter {
        out: std::mem::take(out),
        ..Emitter::new(Style::QEMU)
    };
    e.value(value);
    *out = e.finish();
}

/// Writes JSON a piece at a time in a [`Style`]: arrays and objects are opened and
/// closed by the caller, separators, line breaks and indentation are the emitter's.
///
/// The text so far can be taken out ([`Emitter::write_to`]) at any point, so a large
/// output need not be held in memory.
///
/// ```
/// use vmstate::qjson::{Emitter, Style};
///
/// let mut e = Emitter::new(Style::QEMU);
/// e.begin_object();
/// e.key("pages");
/// e.begin_array();
/// e.literal("1");
/// e.string("two");
/// e.end_array();
/// e.end_object();
/// assert_eq!(e.finish(), r#"{"pages": [1, "two"]}"#);
/// ```
#[derive(Debug, Clone)]
pub struct Emitter {
    style: Style,
    out: String,
    /// Members or elements written so far in each open array or object, innermost last.
    open: Vec<usize>,
    /// A key was just written: the value follows it on the same line.
    after_key: bool,
}

impl Emitter {
    /// An emitter with nothing written yet.
    pub fn new(style: Style) -> Self {
        Emitter {
            style,
            out: String::new(),
            open: Vec::new(),
            after_key: false,
        }
    }

    /// Opens an object (`{`).
    pub fn begin_object(&mut self) {
        self.item();
        self.out.push('{');
        self.open.push(0);
    }

    /// Closes the innermost open object (`}`).
    pub fn end_object(&mut self) {
        self.end('}');
    }

    /// Opens an array (`[`).
    pub fn begin_array(&mut self) {
        self.item();
        self.out.push('[');
        self.open.push(0);
    }

    /// Closes the innermost open array (`]`).
    pub fn end_array(&mut self) {
        self.end(']');
    }

    /// Writes a member's key (and `": "`); its value comes next.
    pub fn key(&mut self, key: &str) {
        self.item();
        self.style.write_str(&mut self.out, key);
        self.out.push_str(": ");
        self.after_key = true;
    }

    /// Writes a string value.
    pub fn string(&mut self, s: &str) {
        self.item();
        self.style.write_str(&mut self.out, s);
    }

    /// Writes a value given as its JSON text: a number, `true`, `false` or `null`.
    pub fn literal(&mut self, text: &str) {
        self.item();
        self.out.push_str(text);
    }

    /// Writes a whole [`Json`] tree, duplicate keys included.
    pub fn json(&mut self, value: &Json) {
        match value {
            Json::Null => self.literal("null"),
            Json::Bool(b) => self.literal(if *b { "true" } else { "false" }),
            Json::Number(n) => {
                self.item();
                let _ = write!(self.out, "{n}");
            }
            Json::String(s) => self.string(s),
            Json::Array(items) => {
                self.begin_array();
                for item in items {
                    self.json(item);
                }
                self.end_array();
            }
            Json::Object(members) => {
                self.begin_object();
                for (k, v) in members {
                    self.key(k);
                    self.json(v);
                }
                self.end_object();
            }
        }
    }

    /// Writes a whole value.
    pub fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.literal("null"),
            Value::Bool(b) => self.literal(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                self.item();
                let _ = write!(self.out, "{n}");
            }
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.begin_array();
                for item in items {
                    self.value(item);
                }
                self.end_array();
            }
            Value::Object(map) => {
                self.begin_object();
                for (k, v) in map {
                    self.key(k);
                    self.value(v);
                }
                self.end_object();
            }
        }
    }

    /// The text written and not yet taken out.
    pub fn text(&self) -> &str {
        &self.out
    }

    /// Writes the text so far to `w` and forgets it; what follows continues it.
    pub fn write_to(&mut self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(self.out.as_bytes())?;
        self.out.clear();
        Ok(())
    }

    /// Ends the emitter: the text written and not yet taken out.
    pub fn finish(self) -> String {
        debug_assert!(self.open.is_empty(), "an array or object is still open");
        self.out
    }

    /// Starts a member or an element: the separator from the previous one and, when
    /// indenting, a new line.
    fn item(&mut self) {
        if std::mem::take(&mut self.after_key) {
            return;
        }
        let depth = self.open.len();
        let Some(n) = self.open.last_mut() else {
            return;
        };
        if *n > 0 {
            self.out.push(',');
            if self.style.indent.is_none() {
                self.out.push(' ');
            }
        }
        *n += 1;
        if let Some(width) = self.style.indent {
            self.newline(width * depth);
        }
    }

    fn end(&mut self, close: char) {
        let n = self.open.pop().expect("no array or object is open");
        if let Some(width) = self.style.indent {
            let pad = width * self.open.len();
            if n > 0 {
                self.newline(pad);
            } else if close == ']' && self.style.empty_array == EmptyArray::BlankLine {
                self.out.push('\n');
                self.newline(pad);
            }
        }
        self.out.push(close);
    }

    fn newline(&mut self, pad: usize) {
        self.out.push('\n');
        self.out.extend(std::iter::repeat_n(' ', pad));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn escapes_like_qemu() {
        let v = Value::String("a\"b\\c\n\u{1}\u{7f}😀".into());
        assert_eq!(to_string(&v), r#""a\"b\\c\n\u0001\u007F\uD83D\uDE00""#);
    }

    #[test]
    fn escapes_like_python() {
        let v = Value::String("a\"b\\c\n\u{1}\u{1f}\u{7f}é😀".into());
        assert_eq!(
            Style::PYTHON.to_string(&v),
            r#""a\"b\\c\n\u0001\u001f\u007f\u00e9\ud83d\ude00""#
        );
    }

    #[test]
    fn escapes_only_what_json_requires_like_serde_json() {
        let s: String = (0u8..0x80).map(char::from).chain("é😀".chars()).collect();
        let v = Value::String(s);
        assert_eq!(Style::QEMU_DUMP.to_string(&v), v.to_string());
    }

    #[test]
    fn keeps_key_order_and_separators() {
        let v: Value = serde_json::from_str(r#"{"z": 1, "a": [true, null, -3]}"#).unwrap();
        assert_eq!(to_string(&v), r#"{"z": 1, "a": [true, null, -3]}"#);
        let mut out = String::from("x=");
        write_value(&mut out, &v);
        assert_eq!(out, r#"x={"z": 1, "a": [true, null, -3]}"#);
    }

    #[test]
    fn empty_containers_in_each_style() {
        let v = json!({"a": [], "o": {}, "n": [[]]});
        assert_eq!(to_string(&v), r#"{"a": [], "o": {}, "n": [[]]}"#);
        assert_eq!(
            Style::QEMU_DUMP.to_string(&v),
            "{\n  \"a\": [\n\n  ],\n  \"o\": {},\n  \"n\": [\n    [\n\n    ]\n  ]\n}"
        );
        assert_eq!(
            Style::PYTHON.to_string(&v),
            "{\n    \"a\": [],\n    \"o\": {},\n    \"n\": [\n        []\n    ]\n}"
        );
        assert_eq!(Style::PYTHON.to_string(&json!({})), "{}");
        assert_eq!(Style::QEMU_DUMP.to_string(&json!([])), "[\n\n]");
    }

    #[test]
    fn emitter_output_can_be_taken_out_as_it_goes() {
        let mut e = Emitter::new(Style::PYTHON);
        let mut sink = Vec::new();
        e.begin_object();
        e.key("k");
        e.begin_array();
        e.literal("1");
        e.write_to(&mut sink).unwrap();
        assert!(e.text().is_empty());
        e.string("x");
        e.end_array();
        e.end_object();
        sink.extend(e.finish().into_bytes());
        assert_eq!(
            String::from_utf8(sink).unwrap(),
            Style::PYTHON.to_string(&json!({"k": [1, "x"]}))
        );
    }
}

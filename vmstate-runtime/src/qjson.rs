//! JSON in the exact shape of QEMU's `qobject/json-writer.c` (not pretty-printed):
//! `", "` between members and elements, `": "` after keys, no other spaces,
//! `\uXXXX` (uppercase hex) for control characters and everything at or above 0x7F.
//!
//! ```
//! let v = serde_json::json!({"name": "timer", "fields": [1, 2], "é": true});
//! assert_eq!(vmstate::qjson::to_string(&v),
//!            r#"{"name": "timer", "fields": [1, 2], "\u00E9": true}"#);
//! ```

use std::fmt::Write;

use serde_json::Value;

/// Writes `value` in QEMU's JSON format.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// Appends `value` in QEMU's JSON format to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
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
            c if (c as u32) < 0x20 || (c as u32) >= 0x7f => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04X}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_qemu() {
        let v = Value::String("a\"b\\c\n\u{1}\u{7f}😀".into());
        assert_eq!(to_string(&v), r#""a\"b\\c\n\u0001\u007F\uD83D\uDE00""#);
    }

    #[test]
    fn keeps_key_order_and_separators() {
        let v: Value = serde_json::from_str(r#"{"z": 1, "a": [true, null, -3]}"#).unwrap();
        assert_eq!(to_string(&v), r#"{"z": 1, "a": [true, null, -3]}"#);
    }
}

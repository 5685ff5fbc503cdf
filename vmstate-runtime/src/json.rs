//! JSON as a tree that keeps object members in order **and keeps duplicate keys**: the
//! shape of QEMU's vmdesc.
//!
//! QEMU's vmdesc writes the keys of a `qtailq`, `qlist` or `gtree` element's
//! description straight into the field object, once per element (spec 1.7), so one
//! object can hold `vmsd_name`, `version` and `fields` several times.
//! `serde_json::Value` (even with `preserve_order`) keeps only one of each, which loses
//! the description of every element but the last; [`Json`] is parsed by serde_json
//! through a map visitor that keeps every member, and the vmdesc is built and written as
//! one ([`crate::qjson::Emitter::json`]). Lookups with [`Json::get`] return the
//! **last** member of a name, as Python's `json.loads` with an `OrderedDict` does (what
//! `analyze-migration.py` sees).
//!
//! Hostile input is bounded: serde_json refuses nesting deeper than [`MAX_DEPTH`]
//! levels, and the caller bounds the text size (the vmdesc trailer is at most 10 MiB).
//!
//! ```
//! use vmstate::json::Json;
//! let j = Json::parse(br#"{"a": 1, "a": [true, null], "s": "x\u00e9"}"#).unwrap();
//! assert_eq!(j.get("a").unwrap().as_array().unwrap().len(), 2);
//! assert_eq!(j.members().unwrap().len(), 3);
//! assert_eq!(j.get("s").unwrap().as_str(), Some("xé"));
//! ```

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The deepest nesting of arrays and objects that parses (serde_json's limit).
pub const MAX_DEPTH: usize = 127;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object: members in source order, duplicates kept.
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// Builds a [`Json`] from serde's events, keeping every object member.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Json>()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

impl Json {
    /// Parses a complete JSON text (whitespace around the value is allowed).
    pub fn parse(text: &[u8]) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The last member named `key` of an object (Python's `dict[key]` after
    /// `json.loads`), or `None`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The members of an object, in order, duplicates included.
    pub fn members(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A string's contents.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer (also accepted: a string holding one, as Python's
    /// `int()` would).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// An integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// True for an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// The tree as a `serde_json::Value`: a repeated key keeps its **last** member (what
    /// Python's `json.loads`, and so `analyze-migration.py`, sees).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => {
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.shift_remove(k);
                    map.insert(k.clone(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }
}

impl From<&serde_json::Value> for Json {
    fn from(v: &serde_json::Value) -> Self {
        use serde_json::Value;
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(s.clone()),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Json::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Self {
        Json::String(s.to_owned())
    }
}

impl From<u64> for Json {
    fn from(n: u64) -> Self {
        Json::Number(n.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicates_and_order() {
        let j = Json::parse(br#"{"v": 1, "f": [], "v": 2, "size": 3}"#).unwrap();
        let keys: Vec<&str> = j
            .members()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["v", "f", "v", "size"]);
        assert_eq!(j.get("v").unwrap().as_u64(), Some(2));
    }

    #[test]
    fn rejects_bad_text_and_deep_nesting() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"{\"a\" 1}",
            b"\"\\x\"",
            b"01x",
            b"[1] 2",
            b"\"\x01\"",
        ] {
            assert!(
                Json::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(Json::parse(deep.as_bytes()).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Json::parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn escapes_round_trip_like_python() {
        let j = Json::parse(br#""a\"\\\n\u0001\u00e9\ud83d\ude00""#).unwrap();
        assert_eq!(
            crate::qjson::Style::PYTHON.to_string_json(&j),
            r#""a\"\\\n\u0001\u00e9\ud83d\ude00""#
        );
    }

    #[test]
    fn pretty_prints_like_python_indent_4() {
        let j = Json::parse(br#"{"a": [1, {"b": null}], "c": {}, "d": []}"#).unwrap();
        assert_eq!(
            crate::qjson::Style::PYTHON.to_string_json(&j),
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": null\n        }\n    ],\n    \"c\": {},\n    \"d\": []\n}"
        );
    }
}

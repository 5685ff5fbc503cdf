//! The layout comparison behind [`ForRelease`](super::ForRelease): whether the fields
//! this build writes for a description at version `V` are the fields the target
//! release reads for it at `V`.
//!
//! Both sides are typed [`Description`]s: ours restricted to what this build writes at
//! `V` (nested structs at their planned versions, no subsections), theirs the target's
//! description of the same name at its version `V`. A description's fields on the wire
//! are those with an `exists` test and those whose `version_id` is at most the version
//! the description is loaded at: the version in its header for a section or subsection
//! (`V`, which both sides carry as their `version_id`), its own `version_id` for a
//! nested struct (QEMU's `VMS_STRUCT` loads a struct at its own version). The two field
//! lists are walked in order:
//!
//! - fields of the same name match; primitives must have the same element `size` and
//!   `num`, structs the same nested layout (and a nested struct the same description
//!   name); a struct on our side needs one on theirs;
//! - where the names differ, a struct whose first field has the other side's name is
//!   entered (fields moved into a new struct, or out of a removed one, keep their
//!   place);
//! - `unused` bytes on one side cover whole fields of the other side, byte for byte
//!   (fields retired as `unused`);
//! - anything else is a difference, and the rest of that field list is not compared.
//!
//! A difference is reported in the words of the schema checker (QEMU's
//! `vmstate-static-checker.py`, in `vmstate_tools::check`), ours as its src and the
//! target's as its dest, so a refusal reads like the checker's report. Unlike the
//! checker, field names must match exactly (no QEMU rename whitelist), `num` counts,
//! fields' `version_id`s only decide which fields are on the wire, and `unused` bytes
//! count `size × num` of the fields they cover.

use std::fmt;

use crate::schema::{Description, Field};

/// How `unused` bytes are named in a dump.
const UNUSED: &str = "unused";

/// One difference between what this build writes and what the target reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Difference {
    /// The top-level description compared (the checker's section).
    section: String,
    /// The innermost description the difference is in.
    description: String,
    /// The field, where there is one.
    field: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The target's `minimum_version_id` is above the version written.
    MinimumVersion { version: u32, min: u32 },
    /// The target's description has no field list.
    NoFieldList,
    /// A nested struct has another description name in the target.
    DescriptionName { theirs: String },
    /// The field lists diverge at `field`, where the target has `theirs`.
    FieldName { theirs: String },
    /// The target has no field where we still write `field`.
    Missing,
    /// The target reads `field` after our last field.
    Extra { version_id: u32 },
    /// The element sizes of `field` differ.
    Size { ours: u64, theirs: u64 },
    /// The element counts of `field` differ.
    Num {
        ours: Option<u64>,
        theirs: Option<u64>,
    },
    /// `field` is a struct here and a primitive in the target.
    NotAStruct,
    /// `unused` bytes cannot be covered by whole fields: `field` overshoots.
    Unused,
    /// The target's `unused` `field` expects bytes after our last field.
    UnusedUncovered { bytes: u64 },
}

/// Compares `ours`, what this build writes at version `V` (its `version_id`), with
/// `theirs`, the target's description read at `V`. Empty when the layouts agree.
pub(super) fn compare(ours: &Description, theirs: &Description) -> Vec<Difference> {
    let mut walk = Walk {
        section: &ours.name,
        found: Vec::new(),
    };
    if ours.version_id < theirs.minimum_version_id {
        let kind = Kind::MinimumVersion {
            version: ours.version_id,
            min: theirs.minimum_version_id,
        };
        walk.report(&ours.name, "", kind);
    }
    walk.description(ours, theirs);
    walk.found
}

struct Walk<'a> {
    section: &'a str,
    found: Vec<Difference>,
}

impl Walk<'_> {
    fn report(&mut self, description: &str, field: &str, kind: Kind) {
        self.found.push(Difference {
            section: self.section.to_string(),
            description: description.to_string(),
            field: field.to_string(),
            kind,
        });
    }

    /// Two descriptions of the same name: their field lists.
    fn description(&mut self, ours: &Description, theirs: &Description) {
        if theirs.fields.is_none() {
            self.report(&ours.name, "", Kind::NoFieldList);
            return;
        }
        let name = &ours.name;
        let mut o = Cursor::new(ours);
        let mut t = Cursor::new(theirs);
        loop {
            let (a, b) = match (o.peek(), t.peek()) {
                (None, None) => return,
                (Some(a), None) => return self.report(name, &a.name, Kind::Missing),
                (None, Some(_)) => return self.extra(name, &mut t),
                (Some(a), Some(b)) => (a, b),
            };
            if a.name == b.name {
                o.next();
                t.next();
                self.field(name, a, b);
            } else if first_field_is(b, &a.name) {
                // The target holds our field first in a struct: compare inside it.
                t.next();
                t.enter(b);
            } else if first_field_is(a, &b.name) {
                o.next();
                o.enter(a);
            } else if a.name == UNUSED || b.name == UNUSED {
                o.next();
                t.next();
                if !self.unused(name, a, b, &mut o, &mut t) {
                    return;
                }
            } else {
                let kind = Kind::FieldName {
                    theirs: b.name.clone(),
                };
                return self.report(name, &a.name, kind);
            }
        }
    }

    /// Two fields of the same name.
    fn field(&mut self, desc: &str, a: &Field, b: &Field) {
        match (&a.description, &b.description) {
            (Some(_), None) => self.report(desc, &a.name, Kind::NotAStruct),
            (Some(da), Some(db)) if da.name != db.name => {
                let kind = Kind::DescriptionName {
                    theirs: db.name.clone(),
                };
                self.report(&da.name, "", kind);
            }
            (Some(da), Some(db)) => self.description(da, db),
            // Element sizes are compared for primitives only, as a struct's is its
            // fixed wire size or QEMU's C `sizeof`.
            (None, _) if a.size != b.size => {
                let kind = Kind::Size {
                    ours: a.size,
                    theirs: b.size,
                };
                self.report(desc, &a.name, kind);
            }
            (None, _) => {}
        }
        if a.num != b.num {
            let kind = Kind::Num {
                ours: a.num,
                theirs: b.num,
            };
            self.report(desc, &a.name, kind);
        }
    }

    /// `a` (ours) and `b` (theirs) differ in name and one is `unused`: its bytes must be
    /// made up exactly by the other field and whole fields after it on the same side.
    /// False when the rest of the list cannot be compared.
    fn unused<'a>(
        &mut self,
        desc: &str,
        a: &Field,
        b: &Field,
        o: &mut Cursor<'a>,
        t: &mut Cursor<'a>,
    ) -> bool {
        let (unused, named) = if b.name == UNUSED { (b, a) } else { (a, b) };
        let Some(left) = bytes(unused).checked_sub(bytes(named)) else {
            self.report(desc, &named.name, Kind::Unused);
            return false;
        };
        let covering = if b.name == UNUSED { &mut *o } else { &mut *t };
        match cover(left, covering) {
            Cover::Done => return true,
            Cover::Overshoot(f) => self.report(desc, &f.name, Kind::Unused),
            // Our fields ended inside the target's `unused`: it expects more.
            Cover::Short(bytes) if b.name == UNUSED => {
                self.report(desc, &b.name, Kind::UnusedUncovered { bytes });
                self.extra(desc, t);
            }
            // The target's fields ended inside our `unused`.
            Cover::Short(_) => self.report(desc, &a.name, Kind::Missing),
        }
        false
    }

    /// We wrote everything: the target's remaining fields that it reads regardless of
    /// run-time state (no `exists` test) are extra.
    fn extra(&mut self, desc: &str, t: &mut Cursor<'_>) {
        while let Some(f) = t.next() {
            if !f.field_exists {
                let kind = Kind::Extra {
                    version_id: f.version_id,
                };
                self.report(desc, &f.name, kind);
            }
        }
    }
}

/// How `unused` bytes were made up by whole fields.
enum Cover<'a> {
    /// Exactly.
    Done,
    /// This field goes past them.
    Overshoot(&'a Field),
    /// The fields ended with this many bytes left.
    Short(u64),
}

/// Takes whole fields from `c` until they make up `left` bytes.
fn cover<'a>(mut left: u64, c: &mut Cursor<'a>) -> Cover<'a> {
    while left > 0 {
        let Some(f) = c.next() else {
            return Cover::Short(left);
        };
        match left.checked_sub(bytes(f)) {
            Some(l) => left = l,
            None => return Cover::Overshoot(f),
        }
    }
    Cover::Done
}

/// The bytes a field takes: `size × num`.
fn bytes(f: &Field) -> u64 {
    f.size.saturating_mul(f.num.unwrap_or(1))
}

/// Whether `f` is a struct whose first field on the wire is named `name`.
fn first_field_is(f: &Field, name: &str) -> bool {
    f.description
        .as_ref()
        .and_then(|d| on_wire(d).next())
        .is_some_and(|first| first.name == name)
}

/// The fields of `d` on the wire when it is loaded at its own version.
fn on_wire(d: &Description) -> impl Iterator<Item = &Field> {
    let version = d.version_id;
    d.fields()
        .iter()
        .filter(move |f| f.field_exists || f.version_id <= version)
}

/// A position in a field list, inside the structs entered so far. Fields are taken
/// one by one ([`next`](Self::next)), leaving a struct when it is done; a struct is
/// only entered on request ([`enter`](Self::enter)).
struct Cursor<'a> {
    /// The field lists entered, outermost first, each with the position in it.
    levels: Vec<(Vec<&'a Field>, usize)>,
}

impl<'a> Cursor<'a> {
    fn new(d: &'a Description) -> Self {
        Cursor {
            levels: vec![(on_wire(d).collect(), 0)],
        }
    }

    /// The next field, leaving the structs that are done.
    fn peek(&mut self) -> Option<&'a Field> {
        loop {
            let (fields, pos) = self.levels.last()?;
            if let Some(f) = fields.get(*pos) {
                return Some(f);
            }
            if self.levels.len() == 1 {
                return None;
            }
            self.levels.pop();
        }
    }

    /// Takes the next field.
    fn next(&mut self) -> Option<&'a Field> {
        let f = self.peek()?;
        self.levels.last_mut()?.1 += 1;
        Some(f)
    }

    /// Continues inside the struct `f` (just taken with [`next`](Self::next)).
    fn enter(&mut self, f: &'a Field) {
        if let Some(d) = &f.description {
            self.levels.push((on_wire(d).collect(), 0));
        }
    }
}

/// One line in the schema checker's wording, e.g. `Section "dev" Description "dev"
/// Field "x" size mismatch: 2 , 1`.
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sec, desc, field) = (&self.section, &self.description, &self.field);
        match &self.kind {
            Kind::MinimumVersion { version, min } => write!(
                f,
                "Section \"{sec}\" Description \"{desc}\": minimum version error: {version} < \
                 {min}"
            ),
            Kind::NoFieldList => {
                write!(
                    f,
                    "Section \"{sec}\" Description \"{desc}\": Entry \"Fields\" missing"
                )
            }
            Kind::DescriptionName { theirs } => write!(
                f,
                "Section \"{sec}\": Description \"{desc}\" missing, got \"{theirs}\" instead; \
                 skipping"
            ),
            Kind::Size { ours, theirs } => write!(
                f,
                "Section \"{sec}\" Description \"{desc}\" Field \"{field}\" size mismatch: \
                 {ours} , {theirs}"
            ),
            Kind::Num { ours, theirs } => {
                let n = |n: &Option<u64>| n.map_or_else(|| "none".to_string(), |n| n.to_string());
                write!(
                    f,
                    "Section \"{sec}\" Description \"{desc}\" Field \"{field}\" num mismatch: \
                     {} , {}",
                    n(ours),
                    n(theirs)
                )
            }
            Kind::NotAStruct => write!(
                f,
                "Section \"{sec}\", Description \"{desc}\", Field \"{field}\": missing \
                 description"
            ),
            Kind::FieldName { theirs } => write!(
                f,
                "Section \"{sec}\", Description \"{desc}\": expected field \"{field}\", got \
                 \"{theirs}\"; skipping rest"
            ),
            Kind::Missing => write!(
                f,
                "Section \"{sec}\", Description \"{desc}\": expected field \"{field}\", while \
                 dest has no further fields"
            ),
            Kind::Extra { version_id } => write!(
                f,
                "Section \"{sec}\", Description \"{desc}\": dest has extra field \"{field}\" \
                 (version_id {version_id}) that src does not send"
            ),
            Kind::Unused => write!(
                f,
                "Section \"{sec}\", Description \"{desc}\": unused size mismatch near \
                 \"{field}\""
            ),
            Kind::UnusedUncovered { bytes } => write!(
                f,
                "Section \"{sec}\", Description \"{desc}\": dest field \"{field}\" expects \
                 {bytes} more byte(s) than src sends"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn f(name: &str, size: u64) -> Value {
        json!({"field": name, "version_id": 0, "field_exists": false, "size": size})
    }

    fn with(mut field: Value, key: &str, value: Value) -> Value {
        field[key] = value;
        field
    }

    fn st(name: &str, desc: Value) -> Value {
        with(f(name, 0), "Description", desc)
    }

    fn d(name: &str, version: u32, fields: Vec<Value>) -> Value {
        json!({"name": name, "version_id": version, "minimum_version_id": 1, "Fields": fields})
    }

    fn lines(ours: Value, theirs: Value) -> Vec<String> {
        let ours: Description = serde_json::from_value(ours).unwrap();
        let theirs: Description = serde_json::from_value(theirs).unwrap();
        compare(&ours, &theirs)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn same_fields_agree() {
        let a = d(
            "dev",
            2,
            vec![f("a", 4), st("s", d("sub", 1, vec![f("x", 2)]))],
        );
        assert!(lines(a.clone(), a).is_empty());
    }

    #[test]
    fn sizes_counts_and_names_are_compared() {
        let ours = d("dev", 1, vec![f("a", 4), with(f("b", 2), "num", json!(4))]);
        let theirs = d("dev", 1, vec![f("a", 2), with(f("b", 2), "num", json!(2))]);
        assert_eq!(
            lines(ours, theirs),
            [
                r#"Section "dev" Description "dev" Field "a" size mismatch: 4 , 2"#,
                r#"Section "dev" Description "dev" Field "b" num mismatch: 4 , 2"#,
            ]
        );
        let ours = d("dev", 1, vec![f("a", 4), f("b", 4), f("c", 4)]);
        let theirs = d("dev", 1, vec![f("a", 4), f("x", 4), f("c", 2)]);
        assert_eq!(
            lines(ours, theirs),
            [r#"Section "dev", Description "dev": expected field "b", got "x"; skipping rest"#]
        );
        // No rename whitelist: QEMU's e1000 `dev` ↔ `parent_obj` is a difference here.
        let ours = d("e1000", 1, vec![f("dev", 4)]);
        let theirs = d("e1000", 1, vec![f("parent_obj", 4)]);
        assert_eq!(lines(ours, theirs).len(), 1);
    }

    #[test]
    fn fields_the_target_does_not_read_at_the_version_are_left_aside() {
        // The target's `b` comes with version 3 of the struct, which it loads at 2...
        let ours = d("dev", 2, vec![f("a", 4), f("c", 4)]);
        let b3 = with(f("b", 4), "version_id", json!(3));
        let theirs = d("dev", 2, vec![f("a", 4), b3.clone(), f("c", 4)]);
        assert!(lines(ours.clone(), theirs).is_empty());
        // ...but one it reads at 2 and we do not write is extra; with an `exists` test it
        // depends on run-time state and is not reported.
        let b2 = with(f("b", 4), "version_id", json!(2));
        let theirs = d("dev", 2, vec![f("a", 4), f("c", 4), b2]);
        assert_eq!(
            lines(ours.clone(), theirs),
            [
                r#"Section "dev", Description "dev": dest has extra field "b" (version_id 2) that src does not send"#
            ]
        );
        let test = with(f("b", 4), "field_exists", json!(true));
        let theirs = d("dev", 2, vec![f("a", 4), f("c", 4), test]);
        assert!(lines(ours.clone(), theirs).is_empty());
        let theirs = d("dev", 2, vec![f("a", 4)]);
        assert_eq!(
            lines(ours, theirs),
            [
                r#"Section "dev", Description "dev": expected field "c", while dest has no further fields"#
            ]
        );
    }

    #[test]
    fn fields_moved_into_or_out_of_a_struct_keep_their_place() {
        let flat = d("dev", 1, vec![f("a", 4), f("b", 4), f("c", 4)]);
        let nested = d(
            "dev",
            1,
            vec![st("s", d("sub", 1, vec![f("a", 4), f("b", 4)])), f("c", 4)],
        );
        assert!(lines(flat.clone(), nested.clone()).is_empty());
        assert!(lines(nested.clone(), flat.clone()).is_empty());
        let nested = d(
            "dev",
            1,
            vec![st("s", d("sub", 1, vec![f("a", 4), f("b", 2)]))],
        );
        assert_eq!(
            lines(flat, nested),
            [
                r#"Section "dev" Description "dev" Field "b" size mismatch: 4 , 2"#,
                r#"Section "dev", Description "dev": expected field "c", while dest has no further fields"#,
            ]
        );
    }

    #[test]
    fn nested_structs_are_compared_by_description() {
        let ours = d("dev", 1, vec![st("s", d("sub", 1, vec![f("x", 4)]))]);
        let theirs = d("dev", 1, vec![st("s", d("other", 1, vec![f("x", 4)]))]);
        assert_eq!(
            lines(ours.clone(), theirs),
            [r#"Section "dev": Description "sub" missing, got "other" instead; skipping"#]
        );
        let theirs = d("dev", 1, vec![f("s", 4)]);
        assert_eq!(
            lines(ours.clone(), theirs),
            [r#"Section "dev", Description "dev", Field "s": missing description"#]
        );
        let mut theirs = d("dev", 1, vec![st("s", d("sub", 1, vec![]))]);
        theirs["Fields"][0]["Description"]
            .as_object_mut()
            .unwrap()
            .remove("Fields");
        assert_eq!(
            lines(ours, theirs),
            [r#"Section "dev" Description "sub": Entry "Fields" missing"#]
        );
    }

    #[test]
    fn unused_bytes_cover_whole_fields() {
        let gap = d("dev", 1, vec![f("a", 1), f("unused", 8), f("z", 2)]);
        let regs = d("dev", 1, vec![f("a", 1), f("b", 4), f("c", 4), f("z", 2)]);
        assert!(lines(gap.clone(), regs.clone()).is_empty());
        assert!(lines(regs, gap.clone()).is_empty());
        let arr = d(
            "dev",
            1,
            vec![f("a", 1), with(f("r", 2), "num", json!(4)), f("z", 2)],
        );
        assert!(lines(gap.clone(), arr).is_empty());
        // Overshooting, or a field larger than the unused bytes.
        let over = d("dev", 1, vec![f("a", 1), f("b", 4), f("c", 8)]);
        assert_eq!(
            lines(gap.clone(), over),
            [r#"Section "dev", Description "dev": unused size mismatch near "c""#]
        );
        let big = d("dev", 1, vec![f("a", 1), f("b", 16)]);
        assert_eq!(
            lines(gap.clone(), big),
            [r#"Section "dev", Description "dev": unused size mismatch near "b""#]
        );
        // Running out inside the unused bytes, on either side.
        let short = d("dev", 1, vec![f("a", 1), f("b", 4)]);
        assert_eq!(
            lines(short.clone(), gap.clone()),
            [
                r#"Section "dev", Description "dev": dest field "unused" expects 4 more byte(s) than src sends"#,
                r#"Section "dev", Description "dev": dest has extra field "z" (version_id 0) that src does not send"#,
            ]
        );
        assert_eq!(
            lines(gap, short),
            [
                r#"Section "dev", Description "dev": expected field "unused", while dest has no further fields"#
            ]
        );
    }

    #[test]
    fn the_target_must_read_the_version_written() {
        let mut theirs = d("dev", 2, vec![f("a", 4)]);
        theirs["minimum_version_id"] = json!(3);
        assert_eq!(
            lines(d("dev", 2, vec![f("a", 4)]), theirs),
            [r#"Section "dev" Description "dev": minimum version error: 2 < 3"#]
        );
    }
}

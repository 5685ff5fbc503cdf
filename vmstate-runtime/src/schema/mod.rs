//! Schema dumps in the shape of QEMU's `-dump-vmstate`, and the compatibility checker
//! (QEMU's `vmstate-static-checker.py`).
//!
//! # Schema dumps
//!
//! A dump is a [`Dump`]: the machine type and the [`Section`]s in dump order, each with
//! its [`Description`] and their [`Field`]s, read and written with serde. Every key QEMU
//! always writes is required, so a malformed dump is an error naming the key, never a
//! silent 0; the keys QEMU leaves out in some cases are `Option`s.
//!
//! [`Dump::from_descriptions`] turns `(section name, description)` pairs into what
//! `qemu-system-XXX -M <machine> -dump-vmstate FILE` writes, and [`Dump::from_registry`]
//! does the same for the devices of a [`Registry`](crate::Registry) (keyed by idstr;
//! iterative handlers such as RAM are left out, as QEMU leaves out what is not a qdev
//! device); [`dump_json`] and [`dump_registry`] give the same as JSON. [`to_string`]
//! ([`Dump::to_text`]) prints it as QEMU does, byte for byte: two-space indentation, an
//! empty list as `[`, an empty line and `]`, and a final newline. A QEMU dump read into a
//! [`Dump`] and printed again gives back the file.
//!
//! ```text
//! { "vmschkmachine": {"Name": "<machine>"},
//!   "<section>": {"Name": "<section>", "version_id": N, "minimum_version_id": N,
//!                 "Description": <desc>}, ... }
//! <desc>  = {"name", "version_id", "minimum_version_id", ["Fields": [<field>...]],
//!            ["Subsections": [<desc>...]]}
//! <field> = {"field", "version_id", "field_exists", ["num"], "size", ["Description"]}
//! ```
//!
//! How our [`VmStateDescription`](crate::VmStateDescription) maps onto those keys:
//!
//! | key | from |
//! | --- | --- |
//! | `Fields` | the fields, always present (QEMU omits it only when `fields` is `NULL`, for devices that save by hand; a list holding only `VMSTATE_END_OF_LIST()` gives `[]`, which is what a derived struct without fields is), except the `validate` checks ([`Count::Validate`](crate::Count::Validate)), which QEMU's dump leaves out as it leaves out `VMSTATE_VALIDATE` ([`dumped_fields`]) |
//! | `Subsections` | the subsections, omitted when there are none (as QEMU) |
//! | `field` | [`Field::name`](crate::Field::name), QEMU's field name (`unused` for unused bytes) |
//! | `version_id` | [`Field::since`](crate::Field::since) |
//! | `field_exists` | [`Field::has_exists_test`](crate::Field::has_exists_test) |
//! | `num` | only for [`Count::Array`](crate::Count::Array) (QEMU's `VMS_ARRAY`); a single value, a `Varray` or a `Vbuffer` has none |
//! | `size` | the size of **one element**: the info's wire size for a primitive (a `buffer` or `unused_buffer` counts all its bytes, as QEMU's `VMSTATE_BUFFER`/`VMSTATE_UNUSED`; a counted buffer, [`Count::Vbuffer`](crate::Count::Vbuffer), says 0, as QEMU's `VMSTATE_VBUFFER*`); for a struct, QEMU prints `sizeof` the C struct, which we do not have, so we print the element's fixed wire size ([`FieldType::fixed_size`](crate::FieldType::fixed_size)), or 0 when it is not fixed |
//! | `Description` | the nested description of a [`FieldType::Struct`](crate::FieldType::Struct) |
//!
//! So a dump of a device modelled exactly after QEMU's matches QEMU's dump key for key,
//! except the `size` of struct fields (QEMU's `hpet` `timer` says 80, the C struct; ours
//! says 42, the bytes on the wire) and wherever the model's types differ from QEMU's
//! (a `u16` stand-in for QEMU's `int32_as_uint16` in `fw_cfg`, for instance). QEMU's
//! checker never compares struct sizes, so that difference does not matter to it.
//!
//! # The checker
//!
//! [`check`] compares two dumps for a migration from `src` to `dest` and returns the
//! [`Problem`]s, in the order QEMU's checker prints them; [`check_reverse`] is its
//! `--reverse`, [`exit_code`] its exit code (the count, capped at 255) and
//! [`machine_warning`] its machine-type warning (not an error). A [`Problem`] displays as
//! one line in QEMU's wording and converts to JSON with [`Problem::to_json`].
//!
//! The rules are those of QEMU 10.0's `scripts/vmstate-static-checker.py`, applied in the
//! same order:
//!
//! 1. Every src top-level key must be in dest, else `Section "S" does not exist in dest`.
//!    `ICH9 LPC` ↔ `ICH9-LPC` and `e1000-82540em` ↔ `e1000` are tolerated renames.
//!    `vmschkmachine` only gives the warning.
//! 2. Section: `version_id` src > dest is a `version error`. Each src key (`Name`,
//!    `version_id`, ...) missing in dest is `Entry "k" missing`. Then the `Description`.
//! 3. Description: `version error` (src > dest) and `minimum version error` (src
//!    `version_id` < dest `minimum_version_id`); the names must match or be renames
//!    listed for the section, else `Description "a" missing, got "b" instead;
//!    skipping`; each src key missing in dest is `Entry "k" missing`; then `Fields` and
//!    `Subsections`, in src key order.
//! 4. Fields, in order. Names must match or be renames listed for the description
//!    (QEMU's hardcoded whitelist: `e1000` `dev` ↔ `parent_obj` and some thirty more;
//!    see [`Renames`]). Otherwise, in this order: descend into a dest struct field whose
//!    first sub-field matches the src field (a field moved into a substruct), or the
//!    reverse; if either is `unused`, compare `size × num` and, when they differ, consume
//!    fields on the other side until the byte counts balance (`unused size mismatch
//!    near "f"` when they overshoot); otherwise `expected field "a", got "b"; skipping
//!    rest` ends the description. dest running out first is `expected field "a", while
//!    dest has no further fields`. Matched fields get the version check, a `size
//!    mismatch: a , b` check unless they are structs, and a recursive check of their
//!    descriptions (`missing description` when dest has none).
//! 5. Subsections: each src subsection must have a dest subsection of the same name
//!    (`Subsection "n" not found`), which is then checked as a description. Extra dest
//!    subsections are fine.
//!
//! Two rules QEMU's checker misses are added (turn them off with
//! [`CheckOptions::qemu`]; [`Problem::is_extra`] tells them apart):
//!
//! - a **section-level** `minimum_version_id` in dest above the src `version_id` (QEMU's
//!   script computes it, but an indentation slip keeps it from being printed or counted
//!   unless a description name is given): `Section "S" minimum version error: a < b`;
//! - **extra fields at the end of dest**: when src has no more fields, each remaining
//!   dest field that dest would still read is `dest has extra field "f" (version_id N)
//!   that src does not send`. A field is read when it has no `exists` test and its
//!   `version_id` is at most the version dest loads the list at: src's version for a
//!   section or subsection (it comes in the header), dest's own version for a nested
//!   struct (QEMU loads those at `vmsd->version_id`). A description without a `Fields`
//!   list in src (QEMU does not compare anything then) counts as an empty list. A dest
//!   `unused` that src covers only in part is reported too (`unused-uncovered`). Fields
//!   with an `exists` test are not reported: whether they are read depends on run-time
//!   state.
//!
//! Deliberate differences in the output: a field-level version error also names the
//! field (QEMU prints only the description), and `unused size mismatch near "f"` has no
//! stray space after the quote. QEMU's quirks in the rules themselves are kept: the
//! `unused` balancing subtracts each field's `size` without its `num`, size checks are
//! skipped for struct fields, a name mismatch stops checking the rest of a description,
//! and subsections are looked up by name in any order. The default rename list is QEMU
//! 10.0's; [`Renames::Upstream`] adds the later `hpet` `num_timers` ↔ `num_timers_save`.
//! Malformed dumps do not panic (missing numbers read as 0).
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use vmstate::schema::{self, CheckOptions, ProblemKind};
//! use vmstate::VmState;
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 1)]
//! struct Port92 {
//!     outport: u8,
//! }
//!
//! // A later build adds a field behind a version bump: fine forwards, not backwards.
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 2, min_version = 1)]
//! struct Port92V2 {
//!     outport: u8,
//!     #[vmstate(since = 2)]
//!     gate: u8,
//! }
//!
//! let old = schema::dump_json("pc-1.0", [("port92", Port92::DESCRIPTION)]);
//! let new = schema::dump_json("pc-1.0", [("port92", Port92V2::DESCRIPTION)]);
//! assert_eq!(
//!     new["port92"]["Description"]["Fields"][1],
//!     json!({"field": "gate", "version_id": 2, "field_exists": false, "size": 1})
//! );
//! assert!(schema::to_string(&old).starts_with("{\n  \"vmschkmachine\": {\n    \"Name\""));
//!
//! let opts = CheckOptions::default();
//! assert!(schema::check(&old, &new, &opts).is_empty());
//! let back = schema::check_reverse(&old, &new, &opts); // from new to old
//! let lines: Vec<String> = back.iter().map(|p| p.to_string()).collect();
//! assert_eq!(lines, [
//!     r#"Section "port92" version error: 2 > 1"#,
//!     r#"Section "port92" Description "port92": version error: 2 > 1"#,
//!     r#"Section "port92", Description "port92": expected field "gate", while dest has no further fields"#,
//! ]);
//! assert_eq!(schema::exit_code(&back), 3);
//!
//! // Adding a field without a version bump: QEMU's checker sees nothing wrong, but the
//! // new build would read a byte the old one never sent.
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 1)]
//! struct Port92Broken {
//!     outport: u8,
//!     gate: u8,
//! }
//! let broken = schema::dump_json("pc-1.0", [("port92", Port92Broken::DESCRIPTION)]);
//! assert!(schema::check(&old, &broken, &CheckOptions::qemu()).is_empty());
//! let problems = schema::check(&old, &broken, &opts);
//! assert_eq!(problems.len(), 1);
//! assert_eq!(problems[0].kind, ProblemKind::ExtraDestField { version_id: 0 });
//! assert!(problems[0].is_extra());
//! assert_eq!(problems[0].to_json()["kind"], "extra-dest-field");
//! ```

mod check;
mod dump;
mod types;

pub use check::{
    CheckOptions, Problem, ProblemKind, Renames, check, check_reverse, exit_code, machine_warning,
    problems_to_json, renamed_section,
};
pub use dump::{
    description_json, dump_json, dump_registry, dumped_fields, element_size, to_string,
};
pub use types::{Description, Dump, Field, MACHINE_KEY, Section};

/// The examples of `docs/compatibility.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/compatibility.md")]
pub struct CompatibilityDoc;

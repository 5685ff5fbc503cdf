//! The compatibility checker: QEMU's `scripts/vmstate-static-checker.py`, rule for rule,
//! plus two rules it misses, on typed schema dumps ([`vmstate::schema::Dump`]).
//!
//! [`check`] compares two dumps for a migration from `src` to `dest` and returns the
//! [`Problem`]s, in the order QEMU's checker prints them; [`check_reverse`] is its
//! `--reverse`, [`exit_code`] its exit code (the count, capped at 255) and
//! [`machine_warning`] its machine-type warning (not an error). A [`Problem`] displays as
//! one line in QEMU's wording and converts to JSON with [`Problem::to_json`].
//!
//! The module is in four parts: the rename tables ([`Renames`], [`renamed_section`]),
//! sections and descriptions (`descriptions`: rules 1 to 3 and 5 below), field lists
//! (`fields`: rule 4 with the `unused` balancing and the trailing-fields rule), and the
//! problems with their wording and JSON ([`Problem`]).
//!
//! # Rules
//!
//! The rules are those of QEMU 10.0's `scripts/vmstate-static-checker.py`, applied in the
//! same order:
//!
//! 1. Every src section must be in dest, else `Section "S" does not exist in dest`.
//!    `ICH9 LPC` ↔ `ICH9-LPC` and `e1000-82540em` ↔ `e1000` are tolerated renames. The
//!    machine entry (`vmschkmachine`) only gives the warning.
//! 2. Section: `version_id` src > dest is a `version error`. Then the `Description`.
//! 3. Description: `version error` (src > dest) and `minimum version error` (src
//!    `version_id` < dest `minimum_version_id`); the names must match or be renames
//!    listed for the section, else `Description "a" missing, got "b" instead;
//!    skipping`; a `Fields` or `Subsections` list src has and dest does not is `Entry
//!    "k" missing`; then `Fields` and `Subsections`, in that order (QEMU's key order).
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
//!
//! The checker works on typed dumps, so a malformed dump never reaches it: reading one
//! ([`Dump::from_json`], `str::parse`) is an error naming the missing or unexpected key
//! (QEMU's script stops with a Python exception). Every key QEMU always writes is
//! there; only `Fields` and `Subsections` can be missing (`Entry "k" missing`).
//!
//! # Example
//!
//! ```
//! use vmstate::schema::{Dump, Field};
//! use vmstate::VmState;
//! use vmstate_tools::check::{self, CheckOptions, ProblemKind};
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
//! let old = Dump::from_descriptions("pc-1.0", [("port92", Port92::DESCRIPTION)]);
//! let new = Dump::from_descriptions("pc-1.0", [("port92", Port92V2::DESCRIPTION)]);
//! let port92 = &new.section("port92").unwrap().description;
//! assert_eq!(
//!     port92.fields()[1],
//!     Field {
//!         name: "gate".into(),
//!         version_id: 2,
//!         field_exists: false,
//!         num: None,
//!         size: 1,
//!         description: None,
//!     }
//! );
//! assert!(old.to_text().starts_with("{\n  \"vmschkmachine\": {\n    \"Name\""));
//!
//! let opts = CheckOptions::default();
//! assert!(check::check(&old, &new, &opts).is_empty());
//! let back = check::check_reverse(&old, &new, &opts); // from new to old
//! let lines: Vec<String> = back.iter().map(|p| p.to_string()).collect();
//! assert_eq!(lines, [
//!     r#"Section "port92" version error: 2 > 1"#,
//!     r#"Section "port92" Description "port92": version error: 2 > 1"#,
//!     r#"Section "port92", Description "port92": expected field "gate", while dest has no further fields"#,
//! ]);
//! assert_eq!(check::exit_code(&back), 3);
//!
//! // Adding a field without a version bump: QEMU's checker sees nothing wrong, but the
//! // new build would read a byte the old one never sent.
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 1)]
//! struct Port92Broken {
//!     outport: u8,
//!     gate: u8,
//! }
//! let broken = Dump::from_descriptions("pc-1.0", [("port92", Port92Broken::DESCRIPTION)]);
//! assert!(check::check(&old, &broken, &CheckOptions::qemu()).is_empty());
//! let problems = check::check(&old, &broken, &opts);
//! assert_eq!(problems.len(), 1);
//! assert_eq!(problems[0].kind, ProblemKind::ExtraDestField { version_id: 0 });
//! assert!(problems[0].is_extra());
//! assert_eq!(problems[0].to_json()["kind"], "extra-dest-field");
//! ```

mod descriptions;
mod fields;
mod problem;
mod renames;
#[cfg(test)]
mod tests;

use vmstate::schema::Dump;

pub use problem::{Problem, ProblemKind, exit_code, problems_to_json};
pub use renames::{Renames, renamed_section};

/// Options for [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The field rename whitelist.
    pub renames: Renames,
    /// Also apply the rules QEMU's checker misses (default: on): a top-level
    /// `minimum_version_id` in dest above the src `version_id`, and fields at the end of
    /// a dest field list that src does not send.
    pub extra_rules: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            renames: Renames::default(),
            extra_rules: true,
        }
    }
}

impl CheckOptions {
    /// Exactly QEMU 10.0's checker: its rename list, without the extra rules.
    pub fn qemu() -> Self {
        CheckOptions {
            renames: Renames::Qemu10_0,
            extra_rules: false,
        }
    }
}

/// Checks whether state described by the dump `src` can be loaded by the build that
/// wrote the dump `dest` (migration from src to dest). Returns the problems in the
/// order QEMU's checker prints them (src sections in dump order, each depth first).
pub fn check(src: &Dump, dest: &Dump, opts: &CheckOptions) -> Vec<Problem> {
    let mut c = Checker {
        opts,
        problems: Vec::new(),
    };
    c.check_sections(src, dest);
    c.problems
}

/// QEMU's `--reverse`: checks migration from `dest` to `src`.
pub fn check_reverse(src: &Dump, dest: &Dump, opts: &CheckOptions) -> Vec<Problem> {
    check(dest, src, opts)
}

/// The warning QEMU's checker prints (without counting an error) when the two dumps come
/// from different machine types: `Warning: checking incompatible machine types: "a",
/// "b"`. None when the names agree.
pub fn machine_warning(src: &Dump, dest: &Dump) -> Option<String> {
    let (s, d) = (src.machine(), dest.machine());
    (s != d).then(|| format!("Warning: checking incompatible machine types: \"{s}\", \"{d}\""))
}

/// One run of the checker: the options and the problems found so far.
struct Checker<'o> {
    opts: &'o CheckOptions,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// Records a problem. `description` is the path of description names, outermost
    /// first; `field` the src field, for field-level problems.
    fn report(
        &mut self,
        section: &str,
        description: &[String],
        field: Option<&str>,
        kind: ProblemKind,
        message: String,
    ) {
        self.problems.push(Problem {
            section: section.to_string(),
            description: description.to_vec(),
            field: field.map(str::to_string),
            kind,
            message,
        });
    }

    /// Whether `s` and `d` name the same field of `name`, with the configured renames.
    fn fields_match(&self, name: &str, s: &str, d: &str) -> bool {
        self.opts.renames.fields_match(name, s, d)
    }
}

//! # vmstate-tools
//!
//! What sits around the `vmstate` core rather than inside every emulator, as QEMU keeps
//! `scripts/analyze-migration.py` and `scripts/vmstate-static-checker.py` outside
//! `migration/`:
//!
//! - [`against`]: a stream checked against a schema dump: will that machine load it?
//!   (behind `vmstate verify --against`);
//! - [`check`]: the schema checker (QEMU's `vmstate-static-checker.py`, plus two rules
//!   it misses) between two typed schema dumps, behind `vmstate check`;
//! - [`decode`]: the vmdesc-driven decoder behind `vmstate info`, `dump`, `extract`,
//!   `verify` and `rewrite`; it decodes any stream that carries a vmdesc trailer, ours
//!   or QEMU's;
//! - [`compat`]: a harness for compatibility test suites across releases (golden
//!   streams, schemas, the load matrix), meant as a dev-dependency of an emulator's
//!   tests.
//!
//! An emulator links only `vmstate`; its test suite and the `vmstate` command use this
//! crate.

pub mod against;
pub mod check;
pub mod compat;
pub mod decode;

/// The examples of `docs/compatibility.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/compatibility.md")]
pub struct CompatibilityDoc;

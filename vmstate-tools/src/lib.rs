//! # vmstate-tools
//!
//! What sits around the `vmstate` core rather than inside every emulator, as QEMU keeps
//! `scripts/analyze-migration.py` and `scripts/vmstate-static-checker.py` outside
//! `migration/`:
//!
//! - [`decode`]: the vmdesc-driven decoder behind `vmstate info`, `dump`, `extract`,
//!   `verify` and `rewrite`; it decodes any stream that carries a vmdesc trailer, ours
//!   or QEMU's;
//! - [`compat`]: a harness for compatibility test suites across releases (golden
//!   streams, schemas, the load matrix), meant as a dev-dependency of an emulator's
//!   tests.
//!
//! An emulator links only `vmstate`; its test suite and the `vmstate` command use this
//! crate.

pub mod compat;
pub mod decode;

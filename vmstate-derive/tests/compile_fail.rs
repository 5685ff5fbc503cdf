//! Compile-fail UI tests: every misuse of `#[derive(VmState)]` is a compile error that
//! points at the offending token. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p vmstate-derive --test compile_fail`, then read them.
//! (The exact text of rustc's type errors depends on the compiler version.)

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    // `pass_*.rs` also match the glob above; a later registration of the same file wins.
    t.pass("tests/ui/pass_*.rs");
}

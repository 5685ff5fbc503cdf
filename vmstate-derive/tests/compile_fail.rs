//! Compile-fail UI tests: every misuse of `#[derive(VmState)]` is a compile error that
//! points at the offending token. Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p vmstate-derive --test compile_fail`, then read them.
//! (The exact text of rustc's type errors depends on the compiler version.)
//!
//! The inputs of the golden expansion tests (`tests/expand/<shape>.rs`) must compile and
//! run too, so that the shapes they show are real uses.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    // `pass_*.rs` also match the glob above; a later registration of the same file wins.
    t.pass("tests/ui/pass_*.rs");
    for entry in std::fs::read_dir("tests/expand").expect("read tests/expand") {
        let path = entry.expect("read tests/expand").path();
        let name = path.to_str().expect("UTF-8 path");
        if name.ends_with(".rs") && !name.ends_with(".expanded.rs") {
            t.pass(name);
        }
    }
}

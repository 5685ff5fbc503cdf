//! Running the `vmstate` binary, shared by the CLI's test files.
#![allow(dead_code)] // each test file uses part of it

use std::process::{Command, Output};

/// Runs `vmstate ARGS` and returns what it printed and its exit status.
pub fn vmstate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .output()
        .expect("run vmstate")
}

/// Runs `vmstate ARGS`, which must succeed, and returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = vmstate(args);
    assert!(
        out.status.success(),
        "vmstate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

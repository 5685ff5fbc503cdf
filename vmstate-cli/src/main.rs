//! The `vmstate` command. Its subcommands (info, dump, verify, rewrite, check) arrive
//! with the stream engine and decoder; until then it only prints its version.

fn main() {
    println!(
        "vmstate {} (stream inspection commands are not built yet)",
        env!("CARGO_PKG_VERSION")
    );
}

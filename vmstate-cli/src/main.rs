//! The `vmstate` command: inspect, verify and rewrite QEMU migration streams.
//!
//! Every subcommand reads a stream file (ours or QEMU's) through the description-driven
//! decoder of `vmstate_tools::decode`. Exit status: 0 on success, 1 on any error (with a
//! message naming the record, field path and byte offset), 2 for usage errors.

mod check;
mod commands;
mod progress;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmstate_tools::decode::DumpOptions;

/// Inspect, verify and rewrite QEMU migration streams (savevm / migrate-to-file).
#[derive(Parser, Debug)]
#[command(
    name = "vmstate",
    version,
    about,
    long_about = "Inspect, verify and rewrite QEMU migration streams (format version 3), \
                  as written by QEMU's `migrate \"exec:cat > FILE\"` or by this project's \
                  stream engine. Decoding is driven by the stream's own vmdesc JSON trailer, \
                  like QEMU's scripts/analyze-migration.py.",
    after_help = "Examples:\n  \
        vmstate info vm.mig\n  \
        vmstate dump vm.mig > state.json\n  \
        vmstate verify vm.mig && echo well formed\n  \
        vmstate rewrite vm.mig copy.mig\n  \
        vmstate extract vm.mig ram/\n  \
        vmstate check old-schema.json new-schema.json"
)]
struct Cli {
    /// Never show a progress bar (it is only shown on a terminal, for large files).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compare two schema dumps for migrating from OLD to NEW (QEMU's
    /// vmstate-static-checker.py, plus the two rules it misses).
    #[command(after_help = "Examples:\n  \
        vmstate check release-1.json release-2.json            # 1 -> 2\n  \
        vmstate check --reverse release-1.json release-2.json  # 2 -> 1\n  \
        vmstate check --json old.json new.json | jq .\n\n\
        The dumps are QEMU's `-dump-vmstate FILE` output or vmstate::schema::dump_json. \
        One problem per line names the section, description and field. The exit status is \
        the number of problems, at most 255, as QEMU's checker's.")]
    Check {
        /// The schema of the release migrating from.
        old: PathBuf,
        /// The schema of the release migrating to.
        new: PathBuf,
        /// Check the other direction (NEW to OLD).
        #[arg(long)]
        reverse: bool,
        /// Print the problems as a JSON array.
        #[arg(long)]
        json: bool,
        /// Apply exactly QEMU 10.0's rules (without the two added ones).
        #[arg(long)]
        qemu: bool,
    },
    /// Show the header, machine type and a table of the top-level records.
    #[command(after_help = "Examples:\n  \
        vmstate info vm.mig\n\n\
        Prints the file summary (format, machine type, page size, vmdesc, RAM) and one row \
        per record: offset, length, type, section id, instance, version and idstr, like an \
        annotated hex dump. A section's footer is its own row.")]
    Info {
        /// The stream file.
        file: PathBuf,
    },
    /// Print the decoded state as JSON, in the shape of `analyze-migration.py -d state`.
    #[command(after_help = "Examples:\n  \
        vmstate dump vm.mig                      # like analyze-migration.py -f vm.mig\n  \
        vmstate dump --memory vm.mig -o full.json  # with RAM page contents\n  \
        vmstate dump --desc vm.mig               # the vmdesc JSON (-d desc)\n  \
        vmstate dump --expand vm.mig             # queues, trees and temporaries decoded\n\n\
        Keys are \"<idstr> (<section_id>)\"; integers are zero-padded hex strings, raw bytes \
        space-separated hex, subsections nested objects, so the output can be diffed with \
        the script's.")]
    Dump {
        /// The stream file.
        file: PathBuf,
        /// Include RAM page contents ("memory" objects, as the script's -m).
        #[arg(long, short)]
        memory: bool,
        /// Print the vmdesc JSON trailer instead of the state (as the script's -d desc).
        #[arg(long, conflicts_with = "memory")]
        desc: bool,
        /// Decode qtailq, qlist, gtree, tmp and vstruct fields into their elements
        /// instead of the script's hex string of their bytes.
        #[arg(long, conflicts_with = "desc")]
        expand: bool,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Write one file per RAM block into DIR (like the script's -x).
    #[command(after_help = "Examples:\n  \
        vmstate extract vm.mig out/\n\n\
        Each RAM block becomes DIR/<block name> (e.g. out/pc.ram, out/rom@etc/acpi/tables), \
        as long as the block, with every page the stream carries. DIR/desc.json and \
        DIR/state.json hold the vmdesc and the state dump, as with the script's -x.")]
    Extract {
        /// The stream file.
        file: PathBuf,
        /// The directory to write into (created if needed).
        dir: PathBuf,
    },
    /// Decode the whole stream; exit 0 if it is well formed (and loadable by the schema's
    /// machine, with --against), 1 otherwise.
    #[command(after_help = "Examples:\n  \
        vmstate verify vm.mig\n  \
        vmstate verify --against vmstate-7.2.json vm.mig   # would QEMU 7.2 load it?\n\n\
        On error, the message names the record (section id, idstr, instance), the field path \
        and the byte offset, e.g.\n  \
        error: FULL section 14 '0000:00:01.1/ide' instance 0 (version 3): \
        field bmdma[1].status: ... at byte offset 251290 (0x3d59a)")]
    Verify {
        /// The stream file.
        file: PathBuf,
        /// A schema dump (QEMU's -dump-vmstate JSON, or this project's): report every
        /// section version, subsection and field that machine would not accept.
        #[arg(long, value_name = "SCHEMA.json")]
        against: Option<PathBuf>,
    },
    /// Decode and re-encode a stream; OUT equals IN byte for byte.
    #[command(after_help = "Examples:\n  \
        vmstate rewrite vm.mig copy.mig && cmp vm.mig copy.mig\n\n\
        RAM pages are copied from IN by offset, so memory use stays small for any stream \
        size. OUT is compared with IN afterwards unless --no-check is given.")]
    Rewrite {
        /// The stream file to read.
        input: PathBuf,
        /// The file to write.
        output: PathBuf,
        /// Do not compare OUT with IN after writing.
        #[arg(long)]
        no_check: bool,
    },
}

/// An error for the user: printed as `error: ...`, exit status 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// Runs a subcommand; returns the exit status on success.
fn run(cli: Cli) -> Result<u8, CliError> {
    let quiet = cli.quiet;
    let done = match cli.command {
        Command::Check {
            old,
            new,
            reverse,
            json,
            qemu,
        } => return check::check(&old, &new, reverse, json, qemu),
        Command::Info { file } => commands::info(&file, quiet),
        Command::Dump {
            file,
            memory,
            desc,
            expand,
            output,
        } => {
            let opts = DumpOptions { memory, expand };
            commands::dump(&file, &opts, desc, output.as_deref(), quiet)
        }
        Command::Extract { file, dir } => commands::extract(&file, &dir, quiet),
        Command::Verify { file, against } => commands::verify(&file, against.as_deref(), quiet),
        Command::Rewrite {
            input,
            output,
            no_check,
        } => commands::rewrite(&input, &output, !no_check, quiet),
    };
    done.map(|()| 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The decoder never panics on any input; should a bug make it, report it as an
    // error rather than dying with status 101.
    let result = std::panic::catch_unwind(|| run(cli));
    match result {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(CliError(msg))) => {
            if msg.contains("Broken pipe") {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(io::stderr(), "error: {msg}");
            ExitCode::from(1)
        }
        Err(_) => {
            let _ = writeln!(
                io::stderr(),
                "error: internal error (a bug in vmstate; please report it with the input file)"
            );
            ExitCode::from(1)
        }
    }
}

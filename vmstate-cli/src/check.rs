//! `vmstate check OLD.json NEW.json`: compare two schema dumps (QEMU's `-dump-vmstate`
//! shape, or `vmstate::schema::Dump` output) for migrating from OLD to NEW.

use std::io::Write;
use std::path::Path;

use vmstate::schema::Dump;
use vmstate_tools::check::{self, CheckOptions};

use crate::CliError;

/// Largest dump accepted (QEMU's full pc dump is under 1 MiB).
const MAX_DUMP: u64 = 256 << 20;

/// Reads a dump file; a file that is not JSON, or not a dump (a key missing or
/// unexpected), is an error naming the file, the key and the place.
fn read_dump(path: &Path) -> Result<Dump, CliError> {
    let len = std::fs::metadata(path)
        .map_err(|e| CliError(format!("{}: {e}", path.display())))?
        .len();
    if len > MAX_DUMP {
        return Err(CliError(format!(
            "{}: {len} bytes is larger than any schema dump ({MAX_DUMP} at most)",
            path.display()
        )));
    }
    let text = std::fs::read(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "not JSON"
        } else {
            "not a schema dump"
        };
        CliError(format!("{}: {what}: {e}", path.display()))
    })
}

/// Runs the checker; returns the exit status: the number of problems, capped at 255.
pub fn check(
    old: &Path,
    new: &Path,
    reverse: bool,
    json: bool,
    qemu: bool,
) -> Result<u8, CliError> {
    let (src, dest) = (read_dump(old)?, read_dump(new)?);
    let opts = if qemu {
        CheckOptions::qemu()
    } else {
        CheckOptions::default()
    };
    let (src, dest) = if reverse {
        (&dest, &src)
    } else {
        (&src, &dest)
    };
    let problems = check::check(src, dest, &opts);
    if let Some(w) = check::machine_warning(src, dest) {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", check::problems_to_json(&problems))?;
    } else {
        for p in &problems {
            writeln!(out, "{p}")?;
        }
    }
    Ok(check::exit_code(&problems))
}

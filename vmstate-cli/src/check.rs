//! `vmstate check OLD.json NEW.json`: compare two schema dumps (QEMU's `-dump-vmstate`
//! shape, or `vmstate::schema::dump_json` output) for migrating from OLD to NEW.

use std::io::Write;
use std::path::Path;

use serde_json::Value;
use vmstate::schema::{self, CheckOptions};

use crate::CliError;

/// Largest dump accepted (QEMU's full pc dump is under 1 MiB).
const MAX_DUMP: u64 = 256 << 20;

fn read_dump(path: &Path) -> Result<Value, CliError> {
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
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| CliError(format!("{}: not JSON: {e}", path.display())))?;
    if !v.is_object() {
        return Err(CliError(format!(
            "{}: a schema dump is a JSON object keyed by section name",
            path.display()
        )));
    }
    Ok(v)
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
    let problems = schema::check(src, dest, &opts);
    if let Some(w) = schema::machine_warning(src, dest) {
        eprintln!("warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", schema::problems_to_json(&problems))?;
    } else {
        for p in &problems {
            writeln!(out, "{p}")?;
        }
    }
    Ok(schema::exit_code(&problems))
}

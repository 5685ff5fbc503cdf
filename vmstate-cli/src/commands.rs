//! The subcommands.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use vmstate::stream::format;
use vmstate::stream::integrity::{self, Integrity};
use vmstate::stream::records::SectionKind;
use vmstate_tools::decode::{
    self, DecodeOptions, DumpOptions, PageRun, Payload, RamRecord, Record, RecordBody, SeekSource,
    Stream,
};

use crate::CliError;
use crate::progress::{self, ProgressWriter};

/// Decodes `path` with a progress bar; returns the records decoded and the error that
/// stopped decoding, if any.
fn decode_partial(path: &Path, quiet: bool) -> Result<(Stream, Option<vmstate::Error>), CliError> {
    let size = fs::metadata(path)
        .map_err(|e| CliError(format!("{}: {e}", path.display())))?
        .len();
    let bar = progress::bar(size, "decoding", quiet);
    let b = bar.clone();
    let opts = DecodeOptions {
        progress: Some(Box::new(move |pos| b.set_position(pos))),
        ..Default::default()
    };
    let result = decode::decode_file_partial(path, opts);
    bar.finish_and_clear();
    Ok(result?)
}

fn decode_all(path: &Path, quiet: bool) -> Result<Stream, CliError> {
    match decode_partial(path, quiet)? {
        (s, None) => Ok(s),
        (_, Some(e)) => Err(e.into()),
    }
}

fn open(path: &Path) -> Result<File, CliError> {
    File::open(path).map_err(|e| CliError(format!("{}: {e}", path.display())))
}

fn create(path: &Path) -> Result<File, CliError> {
    File::create(path).map_err(|e| CliError(format!("{}: {e}", path.display())))
}

/// Where output goes: a file, or standard output.
fn output(path: Option<&Path>) -> Result<Box<dyn Write>, CliError> {
    Ok(match path {
        Some(p) => Box::new(BufWriter::with_capacity(1 << 20, create(p)?)),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    })
}

// ---------------------------------------------------------------------------------
// info

/// The name of a record type for the table (QEMU's names without `QEMU_VM_`).
fn type_name(rec: &Record) -> &'static str {
    format::record_name(rec.type_byte())
}

fn ram_detail(records: &[RamRecord]) -> String {
    let (mut full, mut zero, mut xbzrle, mut flushes, mut blocks) = (0u64, 0u64, 0u64, 0, None);
    for r in records {
        match r {
            RamRecord::Pages(p) if p.zero => zero += p.count,
            RamRecord::Pages(p) => full += p.count,
            RamRecord::Xbzrle { .. } => xbzrle += 1,
            RamRecord::MultifdFlush { .. } => flushes += 1,
            RamRecord::MemSize { blocks: b, .. } => blocks = Some(b.len()),
            _ => {}
        }
    }
    let mut parts = Vec::new();
    if let Some(b) = blocks {
        parts.push(format!("{b} RAM blocks"));
    }
    if full > 0 || zero > 0 || blocks.is_none() {
        parts.push(format!("{full} pages, {zero} zero pages"));
    }
    if xbzrle > 0 {
        parts.push(format!("{xbzrle} XBZRLE pages"));
    }
    if flushes > 0 {
        parts.push("multifd flush".into());
    }
    parts.join("; ")
}

pub fn info(path: &Path, quiet: bool) -> Result<(), CliError> {
    let (s, err) = decode_partial(path, quiet)?;
    let integrity = integrity::check(&mut open(path)?)?;
    let mut out = output(None)?;
    write_info(&mut out, path, &s, &integrity, err.as_ref())?;
    out.flush()?;
    match err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn write_info(
    out: &mut dyn Write,
    path: &Path,
    s: &Stream,
    integrity: &Integrity,
    err: Option<&vmstate::Error>,
) -> io::Result<()> {
    let (full, zero) = s.page_counts();
    let blocks = s.ram_blocks();
    let sections: Vec<_> = s
        .records
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::Section(sec) if sec.header.kind.has_full_header() => Some(sec),
            _ => None,
        })
        .collect();
    let iterative = sections
        .iter()
        .filter(|x| x.header.kind == SectionKind::Start)
        .count();
    writeln!(out, "file       {} ({} bytes)", path.display(), s.len)?;
    if s.magic == format::MAGIC {
        writeln!(out, "format     QEVM version {}", s.version)?;
    }
    if let Some(cfg) = s.configuration() {
        writeln!(
            out,
            "machine    {}",
            cfg.machine().unwrap_or_else(|| "?".into())
        )?;
        let caps = cfg.capabilities();
        if !caps.is_empty() {
            writeln!(out, "caps       {}", caps.join(", "))?;
        }
    }
    match (&s.trailer, &s.desc) {
        (Some(t), Some(d)) => {
            writeln!(out, "page size  {}", d.page_size)?;
            writeln!(
                out,
                "vmdesc     {} bytes of JSON at offset 0x{:x}, {} devices",
                t.json.len(),
                t.offset,
                d.device_count
            )?;
        }
        (Some(t), None) => writeln!(
            out,
            "vmdesc     {} bytes of JSON at offset 0x{:x} (not usable)",
            t.json.len(),
            t.offset
        )?,
        _ => writeln!(out, "vmdesc     none")?,
    }
    writeln!(out, "integrity  {}", integrity.describe())?;
    let (xbzrle, encoded) = s.xbzrle_pages();
    if !blocks.is_empty() || full + zero + xbzrle > 0 {
        let total: u64 = blocks.iter().map(|b| b.used_length).sum();
        let deltas = match xbzrle {
            0 => String::new(),
            n => format!(", {n} XBZRLE pages ({encoded} encoded bytes)"),
        };
        writeln!(
            out,
            "RAM        {} blocks, {total} bytes (0x{total:x}); {full} full pages, {zero} zero pages{deltas}",
            blocks.len()
        )?;
        for b in &blocks {
            writeln!(out, "             {:<24} 0x{:x}", b.name, b.used_length)?;
        }
    }
    writeln!(
        out,
        "sections   {} ({iterative} iterative, {} devices)",
        sections.len(),
        sections.len() - iterative
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<10}  {:>9}  {:<15} {:>5} {:>8} {:>7}  idstr / detail",
        "offset", "length", "type", "id", "instance", "version"
    )?;
    let row = |out: &mut dyn Write,
               off: u64,
               len: u64,
               ty: &str,
               id: String,
               inst: String,
               ver: String,
               detail: String|
     -> io::Result<()> {
        let line = format!("0x{off:08x}  {len:>9}  {ty:<15} {id:>5} {inst:>8} {ver:>7}  {detail}");
        writeln!(out, "{}", line.trim_end())
    };
    if s.magic == format::MAGIC {
        row(
            out,
            0,
            8,
            "HEADER",
            String::new(),
            String::new(),
            String::new(),
            format!("magic QEVM, version {}", s.version),
        )?;
    }
    let mut names: HashMap<u32, String> = HashMap::new();
    for rec in &s.records {
        let (mut id, mut inst, mut ver, mut detail) =
            (String::new(), String::new(), String::new(), String::new());
        match &rec.body {
            RecordBody::Configuration(c) => {
                detail = format!("machine {}", c.machine().unwrap_or_else(|| "?".into()));
            }
            RecordBody::Section(sec) => {
                let h = &sec.header;
                id = h.section_id.to_string();
                if h.kind.has_full_header() {
                    names.insert(h.section_id, h.idstr.clone());
                    inst = h.instance_id.to_string();
                    ver = h.version.to_string();
                }
                let name = names.get(&h.section_id).cloned().unwrap_or_default();
                detail = match &sec.payload {
                    Payload::Ram(r) => format!("{name}: {}", ram_detail(&r.records)),
                    Payload::Vmsd(_) => name,
                };
            }
            RecordBody::Footer { section_id } => id = section_id.to_string(),
            RecordBody::Command(c) => {
                detail = format!("{} ({}), {} bytes", c.name, c.cmd, c.data.len());
                if let Some(p) = &c.package {
                    detail.push_str(&format!(" + {} packaged bytes", p.len()));
                }
            }
            RecordBody::Eof => {}
        }
        row(
            out,
            rec.offset,
            rec.len,
            type_name(rec),
            id,
            inst,
            ver,
            detail,
        )?;
    }
    if err.is_none()
        && let Some(t) = &s.trailer
    {
        row(
            out,
            t.offset,
            5 + t.json.len() as u64,
            "VMDESCRIPTION",
            String::new(),
            String::new(),
            String::new(),
            format!("{} bytes of JSON", t.json.len()),
        )?;
    }
    if let Some(r) = &s.integrity {
        row(
            out,
            s.len - integrity::RECORD_LEN,
            integrity::RECORD_LEN,
            "INTEGRITY",
            String::new(),
            String::new(),
            String::new(),
            format!("CRC32C 0x{:08x} over {} bytes", r.crc32c, r.covered),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// dump

pub fn dump(
    path: &Path,
    opts: &DumpOptions,
    desc: bool,
    out_path: Option<&Path>,
    quiet: bool,
) -> Result<(), CliError> {
    if desc {
        let found = decode::read_trailer(open(path)?)?.ok_or_else(|| {
            CliError(format!(
                "{}: no vmdesc trailer (0x06, be32 length, JSON) at the end of the file",
                path.display()
            ))
        })?;
        let mut text = decode::desc_json_string(&found.json);
        text.push('\n');
        let mut out = output(out_path)?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
        return Ok(());
    }
    let s = decode_all(path, quiet)?;
    let mut src = SeekSource(open(path)?);
    // With page contents the output is about three bytes per page byte: show how far
    // along it is.
    let (full, _) = s.page_counts();
    let page_size = s.desc.as_ref().map_or(4096, |d| d.page_size);
    let expected = if opts.memory { full * page_size * 3 } else { 0 };
    let bar = progress::bar(expected, "dumping", quiet);
    let mut out = ProgressWriter {
        inner: output(out_path)?,
        bar: bar.clone(),
    };
    decode::write_state_json(&s, &mut out, Some(&mut src), opts)?;
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

// ---------------------------------------------------------------------------------
// verify

pub fn verify(path: &Path, against: Option<&Path>, quiet: bool) -> Result<(), CliError> {
    let integrity = integrity::check(&mut open(path)?)?;
    if let Integrity::Mismatch { .. } = integrity {
        return Err(CliError(format!(
            "{}: integrity record: {}",
            path.display(),
            integrity.describe()
        )));
    }
    let s = decode_all(path, quiet)?;
    if s.configuration().is_none() {
        return Err(CliError(format!(
            "{}: the stream has no configuration section: a QEMU destination refuses it \
             (\"Configuration section missing\") unless its send-configuration property \
             is off",
            path.display()
        )));
    }
    let (full, zero) = s.page_counts();
    let sections = s
        .records
        .iter()
        .filter(|r| matches!(&r.body, RecordBody::Section(_)))
        .count();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}: OK: {} bytes, machine {}, {} records ({sections} sections), {full} full pages, {zero} zero pages, {}, integrity record {}",
        path.display(),
        s.len,
        s.machine().unwrap_or_else(|| "?".into()),
        s.records.len(),
        match &s.trailer {
            Some(t) => format!("vmdesc {} bytes", t.json.len()),
            None => "no vmdesc".into(),
        },
        integrity.describe()
    )?;
    if let Some(schema_path) = against {
        let text = fs::read_to_string(schema_path)
            .map_err(|e| CliError(format!("cannot read {}: {e}", schema_path.display())))?;
        let schema = serde_json::from_str(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| vmstate::schema::Dump::from_json(v).map_err(|e| e.to_string()))
            .map_err(|e| CliError(format!("{}: not a schema dump: {e}", schema_path.display())))?;
        let report = vmstate_tools::against::check(&s, &schema);
        writeln!(
            out,
            "against {} (machine {}): {} sections checked, {} not described by the schema{}",
            schema_path.display(),
            schema.machine(),
            report.checked.len(),
            report.not_described.len(),
            if report.not_described.is_empty() {
                String::new()
            } else {
                format!(" ({})", report.not_described.join(", "))
            }
        )?;
        for p in &report.problems {
            writeln!(out, "  {p}")?;
        }
        if !report.problems.is_empty() {
            return Err(CliError(format!(
                "{}: {} differences from what {} accepts",
                path.display(),
                report.problems.len(),
                schema_path.display()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// rewrite

pub fn rewrite(input: &Path, out_path: &Path, check: bool, quiet: bool) -> Result<(), CliError> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(input), fs::canonicalize(out_path))
        && a == b
    {
        return Err(CliError(format!(
            "{} is both the input and the output",
            input.display()
        )));
    }
    let s = decode_all(input, quiet)?;
    let bar = progress::bar(s.len, "writing", quiet);
    let file = create(out_path)?;
    let mut w = BufWriter::with_capacity(
        1 << 20,
        ProgressWriter {
            inner: file,
            bar: bar.clone(),
        },
    );
    let mut src = SeekSource(open(input)?);
    let n = decode::encode(&s, &mut w, Some(&mut src))?;
    w.flush()
        .map_err(|e| CliError(format!("{}: {e}", out_path.display())))?;
    drop(w);
    bar.finish_and_clear();
    if n != s.len {
        return Err(CliError(format!(
            "wrote {n} bytes, but the input has {} (a bug: please report it)",
            s.len
        )));
    }
    if check && let Some(at) = first_difference(input, out_path, quiet)? {
        return Err(CliError(format!(
            "{} differs from {} at byte offset {at} (a bug: please report it)",
            out_path.display(),
            input.display()
        )));
    }
    Ok(())
}

/// The offset of the first byte where two files differ, or `None` if they are equal.
fn first_difference(a: &Path, b: &Path, quiet: bool) -> Result<Option<u64>, CliError> {
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let len = fa.metadata()?.len();
    if fb.metadata()?.len() != len {
        return Ok(Some(len.min(fb.metadata()?.len())));
    }
    let bar = progress::bar(len, "checking", quiet);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(ba.len());
        fa.read_exact(&mut ba[..n])?;
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y);
            return Ok(Some(off + i.unwrap_or(0) as u64));
        }
        off += n as u64;
        bar.set_position(off);
    }
    bar.finish_and_clear();
    Ok(None)
}

// ---------------------------------------------------------------------------------
// extract

/// The path of a RAM block's file under `dir`: the block name's `/`-separated parts,
/// with empty parts dropped and `.`/`..` replaced, so nothing lands outside `dir`.
fn block_path(dir: &Path, name: &str) -> PathBuf {
    let mut p = dir.to_path_buf();
    let mut any = false;
    for part in name.split('/').filter(|c| !c.is_empty()) {
        p.push(if part == "." || part == ".." {
            "_"
        } else {
            part
        });
        any = true;
    }
    if !any {
        p.push("_");
    }
    p
}

pub fn extract(path: &Path, dir: &Path, quiet: bool) -> Result<(), CliError> {
    let s = decode_all(path, quiet)?;
    fs::create_dir_all(dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    let mut stdout = io::stdout().lock();

    // desc.json and state.json, as the script's -x writes them.
    if let Some(found) = decode::read_trailer(open(path)?)? {
        fs::write(dir.join("desc.json"), decode::desc_json_string(&found.json))?;
        writeln!(stdout, "desc.json")?;
    }
    let mut src = SeekSource(open(path)?);
    {
        let mut f = BufWriter::new(create(&dir.join("state.json"))?);
        decode::write_state_json(&s, &mut f, Some(&mut src), &DumpOptions::default())?;
        f.flush()?;
    }
    writeln!(stdout, "state.json")?;

    // One file per block, as long as the block; pages written where they belong.
    let mut files: HashMap<String, (File, Vec<u64>)> = HashMap::new();
    for b in s.ram_blocks() {
        let p = block_path(dir, &b.name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        let f = create(&p)?;
        f.set_len(b.used_length)
            .map_err(|e| CliError(format!("{}: {e}", p.display())))?;
        writeln!(stdout, "{}", b.name)?;
        files.insert(b.name.clone(), (f, Vec::new()));
    }
    let total: u64 = s
        .ram_records()
        .map(|r| match r {
            RamRecord::Pages(p) if !p.zero => p.count * p.page_size,
            _ => 0,
        })
        .sum();
    let bar = progress::bar(total, "extracting", quiet);
    let mut buf = Vec::new();
    for r in s.ram_records() {
        let RamRecord::Pages(run) = r else { continue };
        let Some((file, written)) = files.get_mut(&*run.block) else {
            continue;
        };
        write_run(run, file, written, &mut src, &mut buf)?;
        if !run.zero {
            bar.inc(run.count * run.page_size);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Writes a run's pages into its block file. Zero pages only need writing over pages
/// an earlier record filled (the file starts as zeros); `written` is that bitmap.
fn write_run(
    run: &PageRun,
    file: &mut File,
    written: &mut Vec<u64>,
    src: &mut SeekSource<File>,
    buf: &mut Vec<u8>,
) -> Result<(), CliError> {
    use vmstate_tools::decode::PageSource;
    let ps = run.page_size;
    let mark = |written: &mut Vec<u64>, page: u64, on: bool| -> bool {
        let (w, bit) = ((page / 64) as usize, page % 64);
        if written.len() <= w {
            written.resize(w + 1, 0);
        }
        let was = written[w] >> bit & 1 == 1;
        if on {
            written[w] |= 1 << bit;
        } else {
            written[w] &= !(1 << bit);
        }
        was
    };
    let per_chunk = ((1u64 << 20) / (8 + ps)).max(1);
    let mut i = 0;
    while i < run.count {
        let n = per_chunk.min(run.count - i);
        let addr = run.addr + i * ps;
        if run.zero {
            for k in 0..n {
                let page = (addr + k * ps) / ps;
                if mark(written, page, false) {
                    buf.clear();
                    buf.resize(ps as usize, 0);
                    file.seek(SeekFrom::Start(addr + k * ps))?;
                    file.write_all(buf)?;
                }
            }
        } else {
            buf.clear();
            buf.resize((n * ps) as usize, 0);
            for k in 0..n {
                let at = run.body_offset(i + k);
                let dst = &mut buf[(k * ps) as usize..((k + 1) * ps) as usize];
                match &run.data {
                    Some(d) => dst
                        .copy_from_slice(&d[((i + k) * ps) as usize..((i + k + 1) * ps) as usize]),
                    None => src.read_at(at, dst)?,
                }
                mark(written, (addr + k * ps) / ps, true);
            }
            file.seek(SeekFrom::Start(addr))?;
            file.write_all(buf)?;
        }
        i += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_paths_stay_inside_the_directory() {
        let d = Path::new("/out");
        assert_eq!(block_path(d, "pc.ram"), Path::new("/out/pc.ram"));
        assert_eq!(
            block_path(d, "/rom@etc/acpi/tables"),
            Path::new("/out/rom@etc/acpi/tables")
        );
        assert_eq!(
            block_path(d, "../../etc/passwd"),
            Path::new("/out/_/_/etc/passwd")
        );
        assert_eq!(block_path(d, "//"), Path::new("/out/_"));
    }
}

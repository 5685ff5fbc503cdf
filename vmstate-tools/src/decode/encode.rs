//! The encoder: a value tree back to the exact bytes it was decoded from.
//!
//! Page contents that the tree does not hold are copied from the source by offset
//! ([`PageSource`]), a chunk at a time, so a multi-GiB stream is rewritten with
//! bounded memory.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::desc::FieldKind;
use super::value::*;
use vmstate::Error;
use vmstate::Writer;
use vmstate::stream::{format, records};

/// Where page contents that the tree refers to by offset are read from.
pub trait PageSource {
    /// Fills `buf` with the source bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl PageSource for &[u8] {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.get(start..start.saturating_add(buf.len())) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "page data beyond the end of the source",
            )),
        }
    }
}

/// A [`PageSource`] over anything seekable (a `File`).
#[derive(Debug)]
pub struct SeekSource<R>(pub R);

impl<R: Read + Seek> PageSource for SeekSource<R> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(offset))?;
        self.0.read_exact(buf)
    }
}

/// How many bytes of page records are copied from the source at a time.
const COPY_CHUNK: u64 = 1 << 20;

/// Writes `stream` as bytes. Page contents not kept in the tree come from `pages`
/// (an error if it is `None` and some are needed). Returns the bytes written.
pub fn encode(
    stream: &Stream,
    out: &mut dyn Write,
    mut pages: Option<&mut dyn PageSource>,
) -> Result<u64, Error> {
    let mut w = Counter { out, n: 0 };
    w.put(&stream.magic.to_be_bytes())?;
    w.put(&stream.version.to_be_bytes())?;
    // Record headers, footers and commands are written by the core's record writers,
    // the same rules the stream engine saves with.
    let mut head = Writer::new();
    for rec in &stream.records {
        head.clear();
        match &rec.body {
            RecordBody::Eof => head.put_u8(format::EOF),
            RecordBody::Footer { section_id } => records::write_footer(&mut head, *section_id),
            RecordBody::Configuration(_) => head.put_u8(format::CONFIGURATION),
            RecordBody::Command(c) => records::write_command(&mut head, c.cmd, &c.data)?,
            RecordBody::Section(s) => {
                let h = &s.header;
                if h.kind.has_full_header() {
                    records::write_full_header(
                        &mut head,
                        h.kind,
                        h.section_id,
                        &h.idstr,
                        h.instance_id,
                        h.version,
                    )?;
                } else {
                    records::write_part_header(&mut head, h.kind, h.section_id);
                }
            }
        }
        w.put(head.as_bytes())?;
        match &rec.body {
            RecordBody::Eof | RecordBody::Footer { .. } => {}
            RecordBody::Configuration(Configuration::Legacy { name }) => {
                let len = u32::try_from(name.len())
                    .map_err(|_| Error::malformed("machine name longer than 4 GiB"))?;
                w.put(&len.to_be_bytes())?;
                w.put(name)?;
            }
            RecordBody::Configuration(Configuration::Vmsd(s)) => put_struct(&mut w, s)?,
            RecordBody::Command(c) => {
                if let Some(p) = &c.package {
                    w.put(p)?;
                }
            }
            RecordBody::Section(s) => match &s.payload {
                Payload::Vmsd(v) => put_struct(&mut w, v)?,
                Payload::Ram(r) => put_ram(&mut w, r, &mut pages)?,
            },
        }
    }
    if let Some(t) = &stream.trailer {
        let len = u32::try_from(t.json.len())
            .map_err(|_| Error::malformed("vmdesc JSON longer than 4 GiB"))?;
        w.put(&[format::VMDESCRIPTION])?;
        w.put(&len.to_be_bytes())?;
        w.put(&t.json)?;
    }
    if let Some(record) = &stream.integrity {
        w.put(&record.to_bytes())?;
    }
    Ok(w.n)
}

/// Encodes a stream whose tree holds every byte (decoded with `keep_pages`, or with
/// no full pages) into a vector.
pub fn encode_to_vec(stream: &Stream) -> Result<Vec<u8>, Error> {
    let mut v = Vec::new();
    encode(stream, &mut v, None)?;
    Ok(v)
}

struct Counter<'w> {
    out: &'w mut dyn Write,
    n: u64,
}

impl Counter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), Error> {
        self.out
            .write_all(b)
            .map_err(|e| Error::malformed(format!("writing the stream: {e}")).at_offset(self.n))?;
        self.n += b.len() as u64;
        Ok(())
    }
}

fn put_counted(w: &mut Counter<'_>, s: &str) -> Result<(), Error> {
    let len = u8::try_from(s.len())
        .map_err(|_| Error::malformed(format!("'{s}' is longer than 255 bytes")))?;
    w.put(&[len])?;
    w.put(s.as_bytes())
}

/// Writes a VMState payload: fields, then subsections.
fn put_struct(w: &mut Counter<'_>, s: &StructValue) -> Result<(), Error> {
    for f in &s.fields {
        let desc = s.field_desc(f);
        match &f.value {
            Value::Int(v) => {
                let size = desc.size.unwrap_or(8).clamp(1, 8) as usize;
                if !matches!(desc.kind, FieldKind::Int { .. }) {
                    return Err(Error::malformed(format!(
                        "field '{}' holds an integer but is not an integer type",
                        desc.name
                    )));
                }
                w.put(&v.to_be_bytes()[8 - size..])?;
            }
            Value::Bool(b) => w.put(&[*b])?,
            Value::Nullptr => w.put(b"0")?,
            Value::Capability(c) => put_counted(w, c)?,
            Value::Bytes(b) => w.put(b)?,
            Value::Struct(inner) => put_struct(w, inner)?,
            Value::Inline(i) => w.put(&i.bytes)?,
        }
    }
    for sub in &s.subsections {
        w.put(&[0x05])?;
        put_counted(w, &sub.name)?;
        w.put(&sub.version.to_be_bytes())?;
        put_struct(w, &sub.body)?;
    }
    Ok(())
}

fn put_ram(
    w: &mut Counter<'_>,
    p: &RamPayload,
    pages: &mut Option<&mut dyn PageSource>,
) -> Result<(), Error> {
    for r in &p.records {
        match r {
            RamRecord::MemSize { word, blocks } => {
                w.put(&word.to_be_bytes())?;
                for b in blocks {
                    put_counted(w, &b.name)?;
                    w.put(&b.used_length.to_be_bytes())?;
                    if let Some(a) = b.mr_addr {
                        w.put(&a.to_be_bytes())?;
                    }
                    if let Some(m) = &b.mapped_ram {
                        put_mapped_block(w, b, m, &p.records, pages)?;
                    }
                }
            }
            // Written with its block, after the block's entry.
            RamRecord::Pages(run) if run.mapped => {}
            RamRecord::Xbzrle { word, block, data } => {
                w.put(&word.to_be_bytes())?;
                if let Some(b) = block {
                    put_counted(w, b)?;
                }
                w.put(data)?;
            }
            RamRecord::MultifdFlush { word } | RamRecord::Eos { word } => {
                w.put(&word.to_be_bytes())?
            }
            RamRecord::Pages(run) => put_run(w, run, pages)?,
        }
    }
    Ok(())
}

/// A mapped-ram block after its entry: header, bitmap, zeros to the pages region,
/// then the region: the block's mapped runs (from `records`) at their offsets, zeros
/// between.
fn put_mapped_block(
    w: &mut Counter<'_>,
    b: &RamBlockInfo,
    m: &MappedRamInfo,
    records: &[RamRecord],
    pages: &mut Option<&mut dyn PageSource>,
) -> Result<(), Error> {
    let h = &m.header;
    w.put(&h.version.to_be_bytes())?;
    w.put(&h.page_size.to_be_bytes())?;
    w.put(&h.bitmap_offset.to_be_bytes())?;
    w.put(&h.pages_offset.to_be_bytes())?;
    w.put(&m.bitmap)?;
    let to_pages = h.pages_offset.checked_sub(w.n).ok_or_else(|| {
        Error::malformed(format!(
            "mapped-ram block '{}': pages before the bitmap's end",
            b.name
        ))
    })?;
    put_zeros(w, to_pages)?;
    let mut at = 0;
    for r in records {
        let RamRecord::Pages(run) = r else { continue };
        if !run.mapped || *run.block != *b.name {
            continue;
        }
        let gap = run.addr.checked_sub(at).ok_or_else(|| {
            Error::malformed(format!("mapped-ram block '{}': runs out of order", b.name))
        })?;
        put_zeros(w, gap)?;
        put_mapped_run(w, run, pages)?;
        at = run.addr + run.count * run.page_size;
    }
    put_zeros(w, b.used_length.saturating_sub(at))
}

fn put_zeros(w: &mut Counter<'_>, n: u64) -> Result<(), Error> {
    static ZEROS: [u8; 65536] = [0; 65536];
    let mut left = n;
    while left > 0 {
        let k = left.min(ZEROS.len() as u64) as usize;
        w.put(&ZEROS[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn put_mapped_run(
    w: &mut Counter<'_>,
    run: &PageRun,
    pages: &mut Option<&mut dyn PageSource>,
) -> Result<(), Error> {
    if let Some(data) = &run.data {
        return w.put(data);
    }
    let Some(src) = pages.as_mut() else {
        return Err(Error::malformed(
            "page contents are not in the tree and no page source was given",
        ));
    };
    let len = run.count * run.page_size;
    let mut buf = vec![0u8; COPY_CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let k = (len - done).min(buf.len() as u64) as usize;
        src.read_at(run.offset + done, &mut buf[..k]).map_err(|e| {
            Error::malformed(format!("reading page data: {e}")).at_offset(run.offset + done)
        })?;
        w.put(&buf[..k])?;
        done += k as u64;
    }
    Ok(())
}

fn put_run(
    w: &mut Counter<'_>,
    run: &PageRun,
    pages: &mut Option<&mut dyn PageSource>,
) -> Result<(), Error> {
    let header = |w: &mut Counter<'_>, i: u64| -> Result<(), Error> {
        w.put(&run.word(i).to_be_bytes())?;
        if i == 0 && run.named {
            put_counted(w, &run.block)?;
        }
        Ok(())
    };
    if run.zero {
        for i in 0..run.count {
            header(w, i)?;
            w.put(&[0])?;
        }
        return Ok(());
    }
    let ps = run.page_size as usize;
    if let Some(data) = &run.data {
        for (i, page) in data.chunks(ps).enumerate() {
            header(w, i as u64)?;
            w.put(page)?;
        }
        return Ok(());
    }
    let Some(src) = pages.as_mut() else {
        return Err(Error::malformed(
            "page contents are not in the tree and no page source was given",
        ));
    };
    // Records after the first are evenly spaced: read many at once and take the page
    // data out of each.
    let stride = 8 + run.page_size;
    let per_chunk = (COPY_CHUNK / stride).max(1);
    let mut buf = Vec::new();
    let mut i = 0;
    while i < run.count {
        if i == 0 {
            buf.resize(ps, 0);
            src.read_at(run.body_offset(0), &mut buf).map_err(|e| {
                Error::malformed(format!("reading page data: {e}")).at_offset(run.body_offset(0))
            })?;
            header(w, 0)?;
            w.put(&buf)?;
            i = 1;
            continue;
        }
        let n = per_chunk.min(run.count - i);
        // From the body of record i back to its word: 8 bytes before.
        let start = run.body_offset(i) - 8;
        buf.resize((n * stride) as usize, 0);
        src.read_at(start, &mut buf)
            .map_err(|e| Error::malformed(format!("reading page data: {e}")).at_offset(start))?;
        for k in 0..n {
            header(w, i + k)?;
            let b = (k * stride + 8) as usize;
            w.put(&buf[b..b + ps])?;
        }
        i += n;
    }
    Ok(())
}

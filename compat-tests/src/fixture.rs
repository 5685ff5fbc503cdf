//! Test support: the real QEMU streams kept in `fixtures/`, and a small walker over their
//! top-level records.
//!
//! The walker is written from the record layout of the spec (§1.1–1.9 and §5 for the RAM
//! section), independently of the runtime's own reader, so that a bug in the runtime
//! cannot hide itself: it only uses `std` and `serde_json`. A FULL section has no length
//! on the wire, so its payload ends at the first footer (`0x7e`, be32 section id) that is
//! followed by the start of another record; for `pc-minimal` the resulting record map is
//! checked against QEMU's own `pc-minimal.sections.txt`.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

/// The directory holding the real QEMU 10.0.2 streams and their reference decodings.
pub fn qemu10_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/qemu-10.0.2")
}

/// Reads a file from [`qemu10_dir`]; panics with the path if it is missing.
pub fn read_qemu10(name: &str) -> Vec<u8> {
    let path = qemu10_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// Reads and parses a JSON file from [`qemu10_dir`].
pub fn read_qemu10_json(name: &str) -> Value {
    let bytes = read_qemu10(name);
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"))
}

/// The target page size of the x86 streams (RAM page records carry this many bytes).
pub const TARGET_PAGE_SIZE: usize = 4096;

const MAGIC: u32 = 0x5145_564d;
const FILE_VERSION: u32 = 3;

/// The kind of a top-level record, named as in `*.sections.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `0x07`: the configuration section.
    Configuration,
    /// `0x01`: first section of an iterative handler.
    Start,
    /// `0x02`: middle section of an iterative handler.
    Part,
    /// `0x03`: last section of an iterative handler.
    End,
    /// `0x04`: the complete state of a device.
    Full,
    /// `0x7e`: the footer after a section.
    Footer,
    /// `0x08`: a command.
    Command,
    /// `0x00`: end of the device sections.
    Eof,
    /// `0x06`: the vmdesc JSON trailer.
    VmDescription,
}

impl RecordKind {
    /// The name `*.sections.txt` uses.
    pub fn qemu_name(self) -> &'static str {
        match self {
            RecordKind::Configuration => "QEMU_VM_CONFIGURATION",
            RecordKind::Start => "QEMU_VM_SECTION_START",
            RecordKind::Part => "QEMU_VM_SECTION_PART",
            RecordKind::End => "QEMU_VM_SECTION_END",
            RecordKind::Full => "QEMU_VM_SECTION_FULL",
            RecordKind::Footer => "QEMU_VM_SECTION_FOOTER",
            RecordKind::Command => "QEMU_VM_COMMAND",
            RecordKind::Eof => "QEMU_VM_EOF",
            RecordKind::VmDescription => "QEMU_VM_VMDESCRIPTION",
        }
    }
}

/// One top-level record of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record's type byte.
    pub offset: usize,
    /// Bytes of the whole record: type byte, header and payload (a section's footer is a
    /// record of its own, as in `*.sections.txt`).
    pub len: usize,
    /// What it is.
    pub kind: RecordKind,
    /// Bytes from `offset` to the payload (type byte included).
    pub header_len: usize,
    /// Section id (sections and footers).
    pub section_id: Option<u32>,
    /// idstr (START and FULL).
    pub idstr: Option<String>,
    /// Instance id (START and FULL).
    pub instance_id: Option<u32>,
    /// Section version (START and FULL).
    pub version: Option<u32>,
    /// Command number (commands).
    pub command: Option<u16>,
}

impl Record {
    fn new(offset: usize, kind: RecordKind) -> Self {
        Record {
            offset,
            len: 0,
            kind,
            header_len: 1,
            section_id: None,
            idstr: None,
            instance_id: None,
            version: None,
            command: None,
        }
    }

    /// The payload range inside the stream.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        self.offset + self.header_len..self.offset + self.len
    }
}

/// Counts of RAM page records seen while walking (compare with `query-migrate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamCounts {
    /// Full pages (`RAM_SAVE_FLAG_PAGE`).
    pub normal: u64,
    /// Zero pages (`RAM_SAVE_FLAG_ZERO`).
    pub zero: u64,
    /// The total RAM bytes announced by `RAM_SAVE_FLAG_MEM_SIZE`.
    pub total: u64,
}

/// A walking error: what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkError {
    /// Byte offset.
    pub offset: usize,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {:#x}: {}", self.offset, self.what)
    }
}

impl std::error::Error for WalkError {}

/// A whole stream, walked into its top-level records.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The raw bytes.
    pub bytes: Vec<u8>,
    /// Every top-level record after the 8-byte file header, in stream order.
    pub records: Vec<Record>,
    /// RAM page counts.
    pub ram: RamCounts,
}

/// A FULL section located in a stream.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    /// The section id.
    pub section_id: u32,
    /// The section (vmsd) version from the header.
    pub version: u32,
    /// The payload: the bytes between the FULL header and the footer.
    pub payload: &'a [u8],
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> WalkError {
        WalkError {
            offset: self.pos,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WalkError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err(format!("stream ends, {n} more bytes needed")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WalkError> {
        Ok(self.take(1)?[0])
    }

    fn be16(&mut self) -> Result<u16, WalkError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn be32(&mut self) -> Result<u32, WalkError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn be64(&mut self) -> Result<u64, WalkError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn counted_str(&mut self) -> Result<String, WalkError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

// RAM flags (spec §5.1).
const RAM_ZERO: u64 = 0x002;
const RAM_MEM_SIZE: u64 = 0x004;
const RAM_PAGE: u64 = 0x008;
const RAM_EOS: u64 = 0x010;
const RAM_CONTINUE: u64 = 0x020;
const RAM_MULTIFD_FLUSH: u64 = 0x200;

/// Walks one RAM section payload (START, PART or END) up to and including its EOS word.
fn walk_ram(c: &mut Cursor<'_>, counts: &mut RamCounts) -> Result<(), WalkError> {
    let page_mask = !(TARGET_PAGE_SIZE as u64 - 1);
    loop {
        let word = c.be64()?;
        let flags = word & !page_mask;
        if flags & RAM_MEM_SIZE != 0 {
            let total = word & page_mask;
            counts.total = total;
            let mut left = total;
            while left > 0 {
                let _name = c.counted_str()?;
                let used = c.be64()?;
                left = left
                    .checked_sub(used)
                    .ok_or_else(|| c.err("RAM block lengths exceed the announced total"))?;
            }
        }
        if flags & (RAM_ZERO | RAM_PAGE) != 0 && flags & RAM_CONTINUE == 0 {
            let _block = c.counted_str()?;
        }
        if flags & RAM_ZERO != 0 {
            if c.u8()? != 0 {
                return Err(c.err("zero page fill byte is not 0"));
            }
            counts.zero += 1;
        } else if flags & RAM_PAGE != 0 {
            c.take(TARGET_PAGE_SIZE)?;
            counts.normal += 1;
        }
        let known = RAM_ZERO | RAM_MEM_SIZE | RAM_PAGE | RAM_EOS | RAM_CONTINUE | RAM_MULTIFD_FLUSH;
        if flags & !known != 0 {
            return Err(c.err(format!("unsupported RAM flags {flags:#x}")));
        }
        if flags & RAM_EOS != 0 {
            return Ok(());
        }
    }
}

/// True if a record can start at `pos` (or the stream ends there).
fn record_can_start(bytes: &[u8], pos: usize) -> bool {
    match bytes.get(pos) {
        None => true,
        Some(b) => matches!(b, 0x00..=0x04 | 0x08),
    }
}

impl Stream {
    /// Walks `bytes`: file header, then every record until the end of the data.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, WalkError> {
        let (records, ram) = walk(&bytes)?;
        Ok(Stream {
            bytes,
            records,
            ram,
        })
    }

    /// Reads and walks a stream from the fixtures directory.
    pub fn load(name: &str) -> Self {
        Stream::parse(read_qemu10(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The FULL section for `idstr` and `instance_id`, if the stream has one.
    pub fn full_section(&self, idstr: &str, instance_id: u32) -> Option<Section<'_>> {
        self.records
            .iter()
            .find(|r| {
                r.kind == RecordKind::Full
                    && r.idstr.as_deref() == Some(idstr)
                    && r.instance_id == Some(instance_id)
            })
            .map(|r| Section {
                section_id: r.section_id.unwrap_or_default(),
                version: r.version.unwrap_or_default(),
                payload: &self.bytes[r.payload_range()],
            })
    }

    /// The raw JSON bytes of the vmdesc trailer.
    pub fn vmdesc_bytes(&self) -> Option<&[u8]> {
        let r = self
            .records
            .iter()
            .find(|r| r.kind == RecordKind::VmDescription)?;
        Some(&self.bytes[r.payload_range()])
    }

    /// The vmdesc JSON trailer, parsed (key order kept).
    pub fn vmdesc(&self) -> Option<Value> {
        serde_json::from_slice(self.vmdesc_bytes()?).ok()
    }

    /// The vmdesc entry of the device `name`/`instance_id`, with the `name` and
    /// `instance_id` keys removed (what the device's own description must produce).
    pub fn vmdesc_device(&self, name: &str, instance_id: u32) -> Option<Value> {
        let desc = self.vmdesc()?;
        let devices = desc.get("devices")?.as_array()?;
        let mut entry = devices
            .iter()
            .find(|d| {
                d.get("name").and_then(Value::as_str) == Some(name)
                    && d.get("instance_id").and_then(Value::as_u64) == Some(u64::from(instance_id))
            })?
            .clone();
        let obj = entry.as_object_mut()?;
        obj.shift_remove("name");
        obj.shift_remove("instance_id");
        Some(entry)
    }
}

fn walk(bytes: &[u8]) -> Result<(Vec<Record>, RamCounts), WalkError> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.be32()? != MAGIC {
        return Err(WalkError {
            offset: 0,
            what: "bad magic".into(),
        });
    }
    if c.be32()? != FILE_VERSION {
        return Err(WalkError {
            offset: 4,
            what: "unsupported file version".into(),
        });
    }
    let mut records = Vec::new();
    let mut ram = RamCounts::default();
    // Section id -> idstr, for PART/END sections.
    let mut idstrs: Vec<(u32, String)> = Vec::new();
    while c.pos < bytes.len() {
        let start = c.pos;
        let ty = c.u8()?;
        let mut rec;
        match ty {
            0x07 => {
                rec = Record::new(start, RecordKind::Configuration);
                let len = c.be32()? as usize;
                c.take(len)?;
                if c.bytes.get(c.pos) == Some(&0x05) {
                    return Err(c.err("configuration subsections are not supported"));
                }
            }
            0x01 | 0x04 => {
                let kind = if ty == 0x01 {
                    RecordKind::Start
                } else {
                    RecordKind::Full
                };
                rec = Record::new(start, kind);
                let id = c.be32()?;
                let idstr = c.counted_str()?;
                rec.instance_id = Some(c.be32()?);
                rec.version = Some(c.be32()?);
                rec.header_len = c.pos - start;
                rec.section_id = Some(id);
                idstrs.push((id, idstr.clone()));
                if kind == RecordKind::Start {
                    if idstr != "ram" {
                        return Err(c.err(format!("iterative section {idstr:?} not supported")));
                    }
                    walk_ram(&mut c, &mut ram)?;
                } else {
                    // No length on the wire: the payload ends at the first footer for
                    // this section id that is followed by the start of a record.
                    let mut footer = [0u8; 5];
                    footer[0] = 0x7e;
                    footer[1..].copy_from_slice(&id.to_be_bytes());
                    let from = c.pos;
                    let end = (from..bytes.len().saturating_sub(4))
                        .find(|&p| bytes[p..p + 5] == footer && record_can_start(bytes, p + 5))
                        .ok_or_else(|| c.err(format!("no footer for section {id} ({idstr})")))?;
                    c.pos = end;
                }
                rec.idstr = Some(idstr);
            }
            0x02 | 0x03 => {
                let kind = if ty == 0x02 {
                    RecordKind::Part
                } else {
                    RecordKind::End
                };
                rec = Record::new(start, kind);
                let id = c.be32()?;
                rec.section_id = Some(id);
                rec.header_len = c.pos - start;
                let idstr = idstrs
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, s)| s.as_str())
                    .ok_or_else(|| c.err(format!("section {id} continues but never started")))?;
                if idstr != "ram" {
                    return Err(c.err(format!("iterative section {idstr:?} not supported")));
                }
                walk_ram(&mut c, &mut ram)?;
            }
            0x7e => {
                rec = Record::new(start, RecordKind::Footer);
                rec.section_id = Some(c.be32()?);
                rec.header_len = c.pos - start;
            }
            0x08 => {
                rec = Record::new(start, RecordKind::Command);
                rec.command = Some(c.be16()?);
                let len = c.be16()? as usize;
                rec.header_len = c.pos - start;
                c.take(len)?;
            }
            0x00 => {
                rec = Record::new(start, RecordKind::Eof);
            }
            0x06 => {
                rec = Record::new(start, RecordKind::VmDescription);
                let len = c.be32()? as usize;
                rec.header_len = c.pos - start;
                c.take(len)?;
            }
            other => {
                return Err(WalkError {
                    offset: start,
                    what: format!("unknown record type {other:#04x}"),
                });
            }
        }
        rec.len = c.pos - start;
        records.push(rec);
    }
    Ok((records, ram))
}

/// One line of a `*.sections.txt` record map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionsTxtLine {
    /// Byte offset.
    pub offset: usize,
    /// Record length.
    pub len: usize,
    /// Record type name (`QEMU_VM_SECTION_FULL`, ...).
    pub kind: String,
    /// The `id=` value, if any.
    pub section_id: Option<u32>,
    /// The quoted idstr, if any.
    pub idstr: Option<String>,
    /// The `inst=` value, if any.
    pub instance_id: Option<u32>,
    /// The `ver=` value, if any.
    pub version: Option<u32>,
    /// The `header=NB` value, if any.
    pub header_len: Option<usize>,
}

/// Parses a `*.sections.txt` record map (the header line and the trailing summary line
/// are skipped).
pub fn parse_sections_txt(text: &str) -> Vec<SectionsTxtLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(off), Some(len), Some(kind)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Some(off) = off.strip_prefix("0x") else {
            continue;
        };
        let (Ok(offset), Ok(len)) = (usize::from_str_radix(off, 16), len.parse::<usize>()) else {
            continue;
        };
        let mut entry = SectionsTxtLine {
            offset,
            len,
            kind: kind.to_string(),
            section_id: None,
            idstr: None,
            instance_id: None,
            version: None,
            header_len: None,
        };
        if let (Some(a), Some(b)) = (line.find('\''), line.rfind('\''))
            && b > a
        {
            entry.idstr = Some(line[a + 1..b].to_string());
        }
        for w in words {
            if let Some(v) = w.strip_prefix("id=") {
                entry.section_id = v.parse().ok();
            } else if let Some(v) = w.strip_prefix("inst=") {
                entry.instance_id = v.parse().ok();
            } else if let Some(v) = w.strip_prefix("ver=") {
                entry.version = v.parse().ok();
            } else if let Some(v) = w.strip_prefix("header=").and_then(|v| v.strip_suffix('B')) {
                entry.header_len = v.parse().ok();
            }
        }
        out.push(entry);
    }
    out
}

/// The `analyze-migration.py` decoding of one section: the value under
/// `"<idstr> (<section_id>)"`.
pub fn analyze_section<'a>(analyze: &'a Value, idstr: &str, section_id: u32) -> &'a Value {
    let key = format!("{idstr} ({section_id})");
    analyze
        .get(&key)
        .unwrap_or_else(|| panic!("analyze.json has no key {key:?}"))
}

/// An integer as `analyze-migration.py` prints it: `"0x0000000a"`, or `"0xfffffffe (-2)"`
/// for negative signed values (the raw bits are returned).
pub fn hex(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected a hex string, got {v}"));
    let digits = s
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("0x"))
        .unwrap_or_else(|| panic!("not a hex integer: {s:?}"));
    u64::from_str_radix(digits, 16).unwrap_or_else(|e| panic!("not a hex integer: {s:?}: {e}"))
}

/// Raw bytes as `analyze-migration.py` prints them: space-separated hex pairs.
pub fn hex_bytes(v: &Value) -> Vec<u8> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("expected a hex byte string, got {v}"));
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("bad byte {b:?}: {e}")))
        .collect()
}

/// A subsection as it appears on the wire: marker, counted name, be32 version, payload.
pub fn subsection_bytes(name: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x05,
        u8::try_from(name.len()).expect("name up to 255 bytes"),
    ];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parses_analyze_integers() {
        assert_eq!(hex(&Value::from("0x0000000a")), 10);
        assert_eq!(hex(&Value::from("0xfffffffe (-2)")), 0xffff_fffe);
        assert_eq!(hex_bytes(&Value::from("00 ff 3b")), [0, 0xff, 0x3b]);
    }

    #[test]
    fn sections_txt_lines_parse() {
        let text = "offset     length     type                   detail\n\
            0x0003c5a1 43         QEMU_VM_SECTION_FULL   id=0 'timer' inst=0 ver=2 header=19B\n\
            0x0003c5cc 5          QEMU_VM_SECTION_FOOTER id=0\n\
            end of parsed data: 358982, file size: 358982\n";
        let lines = parse_sections_txt(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].offset, 0x3c5a1);
        assert_eq!(lines[0].idstr.as_deref(), Some("timer"));
        assert_eq!(lines[0].header_len, Some(19));
        assert_eq!(lines[1].section_id, Some(0));
        assert_eq!(lines[1].idstr, None);
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_panic() {
        let bytes = read_qemu10("none-minimal.mig");
        for cut in [0, 3, 8, 20, 0x60, 0x100, bytes.len() - 1] {
            assert!(
                Stream::parse(bytes[..cut].to_vec()).is_err() || cut == 8,
                "cut {cut}"
            );
        }
    }
}

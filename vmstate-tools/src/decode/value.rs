//! The value tree: every byte of a decoded stream, in a form that re-encodes exactly.
//!
//! Values point at their descriptions ([`StructValue::desc`]); integers keep their bits
//! (the width comes from the field's `size`), everything the decoder cannot interpret
//! stays raw bytes. RAM pages are runs of records that refer to the source by offset
//! ([`PageRun`]) unless page contents were asked for.

use std::sync::Arc;

use super::desc::{FieldDesc, VmDescription, VmsdDesc};
use vmstate::ram::format as ram_flags;
use vmstate::stream::format;
pub use vmstate::stream::records::{Command, SectionHeader, SectionKind};

/// A decoded stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The first be32 (`QEVM`).
    pub magic: u32,
    /// The second be32 (3).
    pub version: u32,
    /// Top-level records in stream order, up to and including EOF.
    pub records: Vec<Record>,
    /// The vmdesc trailer, if the stream has one.
    pub trailer: Option<Trailer>,
    /// The descriptions taken from the trailer.
    pub desc: Option<Arc<VmDescription>>,
    /// The snapshot's integrity record at the very end, if it has one (kept as read;
    /// [`vmstate::stream::integrity::check`] says whether it matches).
    pub integrity: Option<vmstate::stream::integrity::IntegrityRecord>,
    /// Total bytes decoded (the stream length).
    pub len: u64,
}

/// The JSON trailer after EOF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Stream offset of the 0x06 byte.
    pub offset: u64,
    /// The JSON text, byte for byte.
    pub json: Vec<u8>,
}

/// A top-level record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Stream offset of the type byte.
    pub offset: u64,
    /// Bytes from the type byte to the end of the record (a section's footer is a
    /// record of its own).
    pub len: u64,
    /// What it holds.
    pub body: RecordBody,
}

/// What a top-level record holds.
#[derive(Debug, Clone)]
pub enum RecordBody {
    /// The configuration section (0x07).
    Configuration(Configuration),
    /// A START, PART, END or FULL section.
    Section(Section),
    /// A section footer (0x7e + section id).
    Footer {
        /// The section id it names.
        section_id: u32,
    },
    /// A command (0x08).
    Command(Command),
    /// EOF (0x00).
    Eof,
}

impl Record {
    /// The record type byte.
    pub fn type_byte(&self) -> u8 {
        match &self.body {
            RecordBody::Configuration(_) => format::CONFIGURATION,
            RecordBody::Section(s) => s.header.kind.byte(),
            RecordBody::Footer { .. } => format::SECTION_FOOTER,
            RecordBody::Command(_) => format::COMMAND,
            RecordBody::Eof => format::EOF,
        }
    }
}

/// The configuration section's payload.
#[derive(Debug, Clone)]
pub enum Configuration {
    /// Decoded with the vmdesc's `configuration` description.
    Vmsd(StructValue),
    /// No description: be32 length and the machine name (older streams).
    Legacy {
        /// The machine name bytes.
        name: Vec<u8>,
    },
}

impl Configuration {
    /// The machine type name.
    pub fn machine(&self) -> Option<String> {
        match self {
            Configuration::Legacy { name } => Some(String::from_utf8_lossy(name).into_owned()),
            Configuration::Vmsd(s) => s.field("name").and_then(|v| match v {
                Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }),
        }
    }

    /// The validated capabilities (`configuration/capabilities`).
    pub fn capabilities(&self) -> Vec<String> {
        let Configuration::Vmsd(s) = self else {
            return Vec::new();
        };
        s.subsections
            .iter()
            .filter(|sub| sub.name == "configuration/capabilities")
            .flat_map(|sub| sub.body.fields.iter())
            .filter_map(|f| match &f.value {
                Value::Capability(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A START, PART, END or FULL section: header, payload (the footer is its own record).
#[derive(Debug, Clone)]
pub struct Section {
    /// The header; for PART and END, the idstr, instance id and version are those of
    /// the START section that introduced the id (only the id is on the wire).
    pub header: SectionHeader,
    /// The payload.
    pub payload: Payload,
}

/// A section payload.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A VMState payload decoded with the section's description.
    Vmsd(StructValue),
    /// RAM records (section `ram`).
    Ram(RamPayload),
}

/// A decoded VMState payload: fields in stream order, then subsections.
#[derive(Debug, Clone, PartialEq)]
pub struct StructValue {
    /// The description it was decoded with.
    pub desc: Arc<VmsdDesc>,
    /// One entry per value read, in stream order (arrays unfolded).
    pub fields: Vec<FieldValue>,
    /// The subsections read after the fields.
    pub subsections: Vec<Subsection>,
}

impl StructValue {
    /// The first value of the field named `name`.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| self.field_desc(f).name == name)
            .map(|f| &f.value)
    }

    /// The description of a field value of this struct.
    pub fn field_desc(&self, f: &FieldValue) -> &FieldDesc {
        &self.desc.fields[f.field as usize]
    }

    /// The subsection named `name`.
    pub fn subsection(&self, name: &str) -> Option<&Subsection> {
        self.subsections.iter().find(|s| s.name == name)
    }
}

/// One value of a field entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    /// Index of the entry in the struct description's `fields`.
    pub field: u32,
    /// The value.
    pub value: Value,
}

/// A subsection: header and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Subsection {
    /// The name read from the stream.
    pub name: String,
    /// The version read from the stream.
    pub version: u32,
    /// The payload.
    pub body: StructValue,
}

/// A field value. Its width and type come from the field's description.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer of `size` (1 to 8) bytes, big-endian on the wire.
    Int(u64),
    /// A one-byte bool, the raw byte kept.
    Bool(u8),
    /// The NULL pointer marker `'0'`.
    Nullptr,
    /// A capability name (u8 length + name on the wire).
    Capability(String),
    /// Raw bytes (`buffer`, `timer`, unknown types, or an integer or bool whose size
    /// is unusual).
    Bytes(Box<[u8]>),
    /// A nested struct.
    Struct(Box<StructValue>),
    /// A `vstruct`/`tmp`/`qtailq`/`qlist`/`gtree` entry: its raw bytes, and the
    /// elements decoded with the inline descriptions when they account for every byte.
    Inline(Box<InlineValue>),
}

/// Raw bytes of an entry with inline descriptions, and their decoding if it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineValue {
    /// The `size` bytes, which are what is re-encoded.
    pub bytes: Box<[u8]>,
    /// The elements (one for `vstruct`/`tmp`; for a `gtree`, each node's key then value
    /// when keys are described structs, each node's value when keys are direct), if the
    /// bytes decode exactly.
    pub elements: Option<Vec<StructValue>>,
    /// A `gtree` with direct keys: each node's be64 key, in stream order (else empty).
    pub direct_keys: Vec<u64>,
}

/// The RAM records of one section payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RamPayload {
    /// Records in stream order; runs of page records are grouped.
    pub records: Vec<RamRecord>,
}

/// A RAM record (spec 5.1), or a run of page records.
#[derive(Debug, Clone, PartialEq)]
pub enum RamRecord {
    /// The block list (MEM_SIZE).
    MemSize {
        /// The be64 word (total bytes | flags).
        word: u64,
        /// The blocks.
        blocks: Vec<RamBlockInfo>,
    },
    /// Consecutive ZERO or PAGE records of one block at consecutive addresses.
    Pages(PageRun),
    /// An XBZRLE page.
    Xbzrle {
        /// The be64 word.
        word: u64,
        /// The block name, when the record carries one (no CONTINUE).
        block: Option<String>,
        /// Encoding byte, be16 length and the encoded bytes.
        data: Vec<u8>,
    },
    /// A multifd sync point.
    MultifdFlush {
        /// The be64 word.
        word: u64,
    },
    /// End of the section's RAM payload.
    Eos {
        /// The be64 word.
        word: u64,
    },
}

/// One entry of the RAM block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamBlockInfo {
    /// The block's idstr (`pc.ram`).
    pub name: String,
    /// Its used length in bytes.
    pub used_length: u64,
    /// Its guest address, present with the x-ignore-shared capability.
    pub mr_addr: Option<u64>,
    /// With the mapped-ram capability: the block's header and bitmap (its pages
    /// follow the block list as runs marked [`PageRun::mapped`]).
    pub mapped_ram: Option<MappedRamInfo>,
}

/// A block's mapped-ram header and bitmap of pages present, as in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRamInfo {
    /// The header after the block's entry.
    pub header: vmstate::ram::mapped_ram::MappedRamHeader,
    /// The bitmap's bytes (host-order 64-bit words, one bit per page).
    pub bitmap: Vec<u8>,
}

/// A run of page records: the first may carry the block name, the others have
/// CONTINUE; addresses go up by one page.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRun {
    /// Zero pages (one 0x00 byte each) rather than full pages.
    pub zero: bool,
    /// The block the pages belong to.
    pub block: Arc<str>,
    /// True if the first record carries the block name (no CONTINUE flag).
    pub named: bool,
    /// Offset in the block of the first page.
    pub addr: u64,
    /// Number of records.
    pub count: u64,
    /// The page size.
    pub page_size: u64,
    /// Stream offset of the first record.
    pub offset: u64,
    /// Page contents (`count * page_size` bytes) when they were kept.
    pub data: Option<Vec<u8>>,
    /// Pages of a mapped-ram block: their bytes at fixed file offsets, without record
    /// headers (`offset` is the first page's; never zero pages, which are absent).
    pub mapped: bool,
}

impl PageRun {
    /// Bytes of the first record before its page data (word and name; none for a
    /// mapped-ram run).
    pub fn first_header_len(&self) -> u64 {
        if self.mapped {
            return 0;
        }
        8 + if self.named {
            1 + self.block.len() as u64
        } else {
            0
        }
    }

    /// Bytes of one record's body (one byte for a zero page).
    pub fn body_len(&self) -> u64 {
        if self.zero { 1 } else { self.page_size }
    }

    /// Bytes the run takes in the stream.
    pub fn stream_len(&self) -> u64 {
        if self.mapped {
            return self.count * self.page_size;
        }
        self.first_header_len() - 8 + self.count * (8 + self.body_len())
    }

    /// Stream offset of the body (page data or zero byte) of record `i`.
    pub fn body_offset(&self, i: u64) -> u64 {
        if self.mapped {
            return self.offset + i * self.page_size;
        }
        if i == 0 {
            self.offset + self.first_header_len()
        } else {
            self.offset
                + self.first_header_len()
                + self.body_len()
                + (i - 1) * (8 + self.body_len())
                + 8
        }
    }

    /// The be64 word of record `i`.
    pub fn word(&self, i: u64) -> u64 {
        let flag = if self.zero {
            ram_flags::ZERO
        } else {
            ram_flags::PAGE
        };
        let cont = if i == 0 && self.named {
            0
        } else {
            ram_flags::CONTINUE
        };
        (self.addr + i * self.page_size) | flag | cont
    }
}

impl Stream {
    /// The configuration section, if any.
    pub fn configuration(&self) -> Option<&Configuration> {
        self.records.iter().find_map(|r| match &r.body {
            RecordBody::Configuration(c) => Some(c),
            _ => None,
        })
    }

    /// The machine type named in the configuration section.
    pub fn machine(&self) -> Option<String> {
        self.configuration().and_then(Configuration::machine)
    }

    /// Every RAM record of every RAM section, in stream order.
    pub fn ram_records(&self) -> impl Iterator<Item = &RamRecord> {
        self.records.iter().flat_map(|r| match &r.body {
            RecordBody::Section(Section {
                payload: Payload::Ram(p),
                ..
            }) => p.records.iter(),
            _ => [].iter(),
        })
    }

    /// The RAM blocks of the last block list, in order.
    pub fn ram_blocks(&self) -> Vec<RamBlockInfo> {
        let mut out = Vec::new();
        for r in self.ram_records() {
            if let RamRecord::MemSize { blocks, .. } = r {
                out = blocks.clone();
            }
        }
        out
    }

    /// Counts of (full pages, zero pages) over all RAM sections (XBZRLE pages are
    /// counted by [`xbzrle_pages`](Self::xbzrle_pages)).
    pub fn page_counts(&self) -> (u64, u64) {
        let (mut full, mut zero) = (0, 0);
        for r in self.ram_records() {
            match r {
                RamRecord::Pages(run) if run.zero => zero += run.count,
                RamRecord::Pages(run) => full += run.count,
                _ => {}
            }
        }
        (full, zero)
    }

    /// XBZRLE records over all RAM sections, and the encoded bytes they carry.
    pub fn xbzrle_pages(&self) -> (u64, u64) {
        self.ram_records().fold((0, 0), |(n, bytes), r| match r {
            RamRecord::Xbzrle { data, .. } => (n + 1, bytes + data.len() as u64 - 3),
            _ => (n, bytes),
        })
    }
}

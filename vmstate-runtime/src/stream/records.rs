//! The stream grammar, in one place: QEMU's records read as typed values (spec 1.2 to
//! 1.12) and written by the same rules.
//!
//! A stream is a header, an optional configuration section, then records until EOF,
//! then an optional vmdesc trailer. Section payloads carry no length, so the reader
//! stops at each payload: the caller reads it (a device, an iterative handler, or the
//! vmdesc-driven decoder) and then asks for the next record. The reader keeps what the
//! grammar needs between records — which section is open, the headers of START
//! sections for their PART and END sections, whether footers are expected — and checks
//! everything that does not depend on what a payload means: magic, format version,
//! where the configuration may stand, footers and their section ids, command numbers
//! and payload lengths, and that PART/END continue a START. The registry loader
//! ([`load_stream`](super::load_stream)) and the decoder of `vmstate-tools` both read
//! through it, so a new record kind is one change here.
//!
//! ```
//! use vmstate::Reader;
//! use vmstate::stream::records::{Footers, Record, RecordReader, SectionKind, write_full_header};
//! use vmstate::stream::format;
//!
//! let mut w = vmstate::Writer::new();
//! w.put_be32(format::MAGIC);
//! w.put_be32(format::VERSION);
//! write_full_header(&mut w, SectionKind::Full, 3, "port92", 0, 1).unwrap();
//! w.put_u8(0x02); // the payload
//! vmstate::stream::records::write_footer(&mut w, 3);
//! w.put_u8(format::EOF);
//! let bytes = w.into_vec();
//!
//! let mut r = Reader::from_slice(&bytes);
//! let mut records = RecordReader::new(Footers::Expected).without_configuration();
//! records.header(&mut r).unwrap();
//! let Record::Section(h) = records.next(&mut r).unwrap() else { panic!() };
//! assert_eq!((h.kind, h.idstr.as_str(), h.version), (SectionKind::Full, "port92", 1));
//! assert_eq!(r.get_u8().unwrap(), 0x02);
//! assert_eq!(records.next(&mut r).unwrap(), Record::Footer { section_id: 3 });
//! assert_eq!(records.next(&mut r).unwrap(), Record::Eof);
//! ```

use std::collections::HashMap;

use super::format;
use crate::error::{Error, ErrorKind, Result, SectionRef};
use crate::handler::Phase;
use crate::wire::{Reader, Writer};

/// The four section record types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// `QEMU_VM_SECTION_START`: an iterative handler's first section, with a full header.
    Start,
    /// `QEMU_VM_SECTION_PART`: a round of an iterative handler.
    Part,
    /// `QEMU_VM_SECTION_END`: an iterative handler's last section.
    End,
    /// `QEMU_VM_SECTION_FULL`: a device's whole state, with a full header.
    Full,
}

impl SectionKind {
    /// The kind for a record type byte, if it is a section.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            format::SECTION_START => Some(Self::Start),
            format::SECTION_PART => Some(Self::Part),
            format::SECTION_END => Some(Self::End),
            format::SECTION_FULL => Some(Self::Full),
            _ => None,
        }
    }

    /// The record type byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Start => format::SECTION_START,
            Self::Part => format::SECTION_PART,
            Self::End => format::SECTION_END,
            Self::Full => format::SECTION_FULL,
        }
    }

    /// `START`, `PART`, `END` or `FULL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "START",
            Self::Part => "PART",
            Self::End => "END",
            Self::Full => "FULL",
        }
    }

    /// Whether the record carries the idstr, instance id and version (START and FULL).
    pub fn has_full_header(self) -> bool {
        matches!(self, Self::Start | Self::Full)
    }

    /// The phase an iterative handler's payload belongs to.
    pub fn phase(self) -> Phase {
        match self {
            Self::Start => Phase::Start,
            Self::Part => Phase::Part,
            Self::End | Self::Full => Phase::End,
        }
    }
}

/// A section's header. For PART and END sections, which carry only the section id on
/// the wire, the idstr, instance id and version are those of the START section that
/// introduced the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// Which of the four section records this is.
    pub kind: SectionKind,
    /// The section id.
    pub section_id: u32,
    /// The idstr.
    pub idstr: String,
    /// The instance id.
    pub instance_id: u32,
    /// The version in the (START or FULL) header.
    pub version: u32,
}

impl SectionHeader {
    /// The section, for errors and reports.
    pub fn section_ref(&self) -> SectionRef {
        SectionRef {
            idstr: self.idstr.clone(),
            instance_id: self.instance_id,
            section_id: self.section_id,
        }
    }

    /// Adds this section (record type, idstr, instance, id, version) to an error.
    #[cold]
    pub fn tag(&self, e: Error) -> Error {
        e.in_record(self.kind.name())
            .in_section(self.section_ref())
            .with_section_version(self.version)
    }
}

/// A command record (`QEMU_VM_COMMAND`, spec 1.8), checked against QEMU's table of
/// command numbers and fixed lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command number (1 to 11).
    pub cmd: u16,
    /// QEMU's name for it (`SWITCHOVER_START`, ...).
    pub name: &'static str,
    /// The payload.
    pub data: Vec<u8>,
    /// For `PACKAGED`, the package that follows the command (itself a run of records).
    pub package: Option<Vec<u8>>,
}

/// One top-level record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The configuration section (`0x07`); its payload (the `configuration` vmsd)
    /// follows and is read by the caller. It has no footer.
    Configuration,
    /// A section; its payload follows and is read by the caller, then the footer
    /// comes as the next record when footers are on.
    Section(SectionHeader),
    /// A section footer (`0x7e`, section id), checked against the section it closes.
    Footer {
        /// The section id, equal to the closed section's.
        section_id: u32,
    },
    /// A command.
    Command(Command),
    /// End of the records (`0x00`).
    Eof,
}

/// Whether sections end with a footer (QEMU's `send-section-footer`, on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footers {
    /// Every section ends with a footer; its absence is an error.
    Expected,
    /// No section has a footer.
    Absent,
    /// The first section decides (for tools reading streams of unknown origin): if a
    /// footer follows it, every section must have one, else none may.
    Detect,
}

/// Whether the stream has a configuration section (QEMU's `send-configuration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigRule {
    Expected,
    Absent,
    Detect,
}

/// Where the reader is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    BeforeHeader,
    AfterHeader,
    InSection,
    BetweenRecords,
    AfterEof,
}

/// The vmdesc trailer after EOF, or what stands there instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trailer {
    /// Nothing follows EOF.
    None,
    /// `0x06`, be32 length, the JSON text.
    Vmdesc {
        /// Stream offset of the `0x06` byte.
        offset: u64,
        /// The JSON text.
        json: Vec<u8>,
    },
    /// Some other byte follows EOF (QEMU only warns).
    Other {
        /// Its offset.
        offset: u64,
        /// The byte.
        byte: u8,
    },
}

/// Reads the records of one stream; see the [module documentation](self).
#[derive(Debug)]
pub struct RecordReader {
    footers: Footers,
    configuration: ConfigRule,
    state: State,
    /// The section whose payload is being read, or that the next footer closes.
    open: Option<SectionHeader>,
    /// START headers by section id, for PART and END.
    starts: HashMap<u32, SectionHeader>,
    /// Where the records end, when known (the trailer's offset or the input's length).
    end: Option<u64>,
}

impl RecordReader {
    /// A reader for a stream with a configuration section, with `footers` as given.
    pub fn new(footers: Footers) -> Self {
        RecordReader {
            footers,
            configuration: ConfigRule::Expected,
            state: State::BeforeHeader,
            open: None,
            starts: HashMap::new(),
            end: None,
        }
    }

    /// For the records inside a `PACKAGED` command: no header, no configuration
    /// section and no EOF; they end where the package ends.
    pub fn for_package(footers: Footers) -> Self {
        RecordReader {
            configuration: ConfigRule::Absent,
            state: State::BetweenRecords,
            ..Self::new(footers)
        }
    }

    /// Whether a section's payload or footer is still to be read: not a place where
    /// the records may end.
    pub fn in_section(&self) -> bool {
        self.state == State::InSection
    }

    /// For a stream without a configuration section.
    pub fn without_configuration(mut self) -> Self {
        self.configuration = ConfigRule::Absent;
        self
    }

    /// For a stream that may or may not start with a configuration section.
    pub fn detect_configuration(mut self) -> Self {
        self.configuration = ConfigRule::Detect;
        self
    }

    /// The records end at `offset` (where the vmdesc trailer starts, or the length of
    /// the input): running into it before EOF is an error that says so.
    pub fn ending_at(mut self, offset: u64) -> Self {
        self.end = Some(offset);
        self
    }

    /// Reads and checks the stream header: magic and format version 3.
    pub fn header(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let tag = |e: Error| e.in_record("header");
        let at = r.position();
        let magic = r.get_be32().map_err(tag)?;
        if magic != format::MAGIC {
            return Err(tag(
                Error::new(ErrorKind::BadMagic { found: magic }).at_offset(at)
            ));
        }
        let version = r.get_be32().map_err(tag)?;
        if version != format::VERSION {
            return Err(tag(Error::new(ErrorKind::UnsupportedFormatVersion {
                found: version,
            })
            .at_offset(at + 4)));
        }
        self.state = State::AfterHeader;
        Ok(())
    }

    /// The next record. After a [`Record::Section`] or [`Record::Configuration`], read
    /// the payload before calling it again.
    pub fn next(&mut self, r: &mut Reader<'_>) -> Result<Record> {
        match self.state {
            State::BeforeHeader => self.header(r)?,
            State::AfterEof => {
                return Err(Error::malformed("records asked for after EOF").at_offset(r.position()));
            }
            State::InSection => {
                if let Some(footer) = self.footer(r)? {
                    return Ok(footer);
                }
            }
            State::AfterHeader | State::BetweenRecords => {}
        }
        let at = r.position();
        if self.end.is_some_and(|end| at >= end) {
            return Err(Error::malformed(
                "the records end here (at the trailer or the end of the input) without an EOF record",
            )
            .at_offset(at)
            .in_record("EOF"));
        }
        let ty = r.get_u8().map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof { .. } => Error::malformed(
                "the stream ends where a record should start, without an EOF record",
            )
            .at_offset(at)
            .in_record("EOF"),
            _ => e.in_record("record type"),
        })?;
        let first = self.state == State::AfterHeader;
        self.state = State::BetweenRecords;
        self.open = None;
        match (ty, first, self.configuration) {
            (format::CONFIGURATION, true, ConfigRule::Expected | ConfigRule::Detect) => {
                return Ok(Record::Configuration);
            }
            (_, true, ConfigRule::Expected) => {
                return Err(Error::invalid(
                    "stream",
                    format!("expected the configuration section (0x07), found 0x{ty:02x}"),
                )
                .at_offset(at)
                .in_record("configuration"));
            }
            _ => {}
        }
        if let Some(kind) = SectionKind::from_byte(ty) {
            let header = self.section_header(r, kind, at)?;
            self.state = State::InSection;
            self.open = Some(header.clone());
            return Ok(Record::Section(header));
        }
        match ty {
            format::COMMAND => self.command(r, at).map(Record::Command),
            format::EOF => {
                self.state = State::AfterEof;
                Ok(Record::Eof)
            }
            format::SECTION_FOOTER => Err(Error::malformed(
                "a section footer that does not follow a section payload",
            )
            .at_offset(at)
            .in_record("footer")),
            byte => Err(Error::new(ErrorKind::UnknownRecordType { byte }).at_offset(at)),
        }
    }

    /// After a section payload: the footer, if the rules say one stands here.
    fn footer(&mut self, r: &mut Reader<'_>) -> Result<Option<Record>> {
        self.state = State::BetweenRecords;
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let at = r.position();
        let present = match self.footers {
            Footers::Expected => true,
            Footers::Absent => false,
            Footers::Detect => {
                let present = r.peek(1)?.first() == Some(&format::SECTION_FOOTER);
                self.footers = if present {
                    Footers::Expected
                } else {
                    Footers::Absent
                };
                present
            }
        };
        if !present {
            return Ok(None);
        }
        let cut_short = |e: Error| match e.kind() {
            ErrorKind::UnexpectedEof { .. } => {
                Error::malformed("the stream ends inside the section footer (0x7e, be32 id)")
                    .at_offset(at)
            }
            _ => e,
        };
        let result = (|| {
            let marker = r.get_u8().map_err(cut_short)?;
            if marker != format::SECTION_FOOTER {
                return Err(Error::new(ErrorKind::MissingFooter { found: marker }).at_offset(at));
            }
            let found = r.get_be32().map_err(cut_short)?;
            if found != open.section_id {
                return Err(Error::new(ErrorKind::FooterMismatch {
                    expected: open.section_id,
                    found,
                })
                .at_offset(at));
            }
            Ok(Record::Footer { section_id: found })
        })();
        result.map(Some).map_err(|e| open.tag(e))
    }

    fn section_header(
        &mut self,
        r: &mut Reader<'_>,
        kind: SectionKind,
        at: u64,
    ) -> Result<SectionHeader> {
        let section_id = r.get_be32().map_err(|e| e.in_record(kind.name()))?;
        if !kind.has_full_header() {
            let Some(start) = self.starts.get(&section_id) else {
                return Err(Error::new(ErrorKind::UnknownSectionId { section_id })
                    .at_offset(at)
                    .in_record(kind.name()));
            };
            return Ok(SectionHeader {
                kind,
                ..start.clone()
            });
        }
        let read = |r: &mut Reader<'_>| -> Result<(String, u32, u32)> {
            Ok((r.get_counted_string()?, r.get_be32()?, r.get_be32()?))
        };
        // The section is not known until its header is read: the error names the header.
        let (idstr, instance_id, version) = read(r).map_err(|e| {
            e.in_record(match kind {
                SectionKind::Start => "START header",
                _ => "FULL header",
            })
        })?;
        let header = SectionHeader {
            kind,
            section_id,
            idstr,
            instance_id,
            version,
        };
        if kind == SectionKind::Start {
            self.starts.insert(section_id, header.clone());
        }
        Ok(header)
    }

    fn command(&mut self, r: &mut Reader<'_>, at: u64) -> Result<Command> {
        let tag = |e: Error| e.in_record("COMMAND");
        let cmd = r.get_be16().map_err(tag)?;
        let len = r.get_be16().map_err(tag)?;
        let Some(&(name, fixed)) = format::COMMANDS.get(cmd as usize).filter(|_| cmd != 0) else {
            return Err(tag(Error::new(ErrorKind::InvalidCommand {
                cmd,
                len,
                detail: "not a command QEMU defines (1 to 11)",
            })
            .at_offset(at)));
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(tag(Error::new(ErrorKind::InvalidCommand {
                cmd,
                len,
                detail: "wrong payload length for this command",
            })
            .at_offset(at)));
        }
        let data = self.bounded_vec(r, u64::from(len)).map_err(tag)?;
        let package = if cmd == format::CMD_PACKAGED {
            let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            Some(self.bounded_vec(r, u64::from(size)).map_err(tag)?)
        } else {
            None
        };
        Ok(Command {
            cmd,
            name,
            data,
            package,
        })
    }

    /// `len` bytes, refused before allocating when they would run past the end.
    fn bounded_vec(&self, r: &mut Reader<'_>, len: u64) -> Result<Vec<u8>> {
        let at = r.position();
        if let Some(end) = self.end
            && len > end.saturating_sub(at)
        {
            return Err(Error::new(ErrorKind::UnexpectedEof {
                needed: usize::try_from(len - end.saturating_sub(at)).unwrap_or(usize::MAX),
            })
            .at_offset(at));
        }
        r.get_vec(len)
    }

    /// After [`Record::Eof`]: the vmdesc trailer, if one follows.
    pub fn trailer(&mut self, r: &mut Reader<'_>) -> Result<Trailer> {
        let offset = r.position();
        match r.peek(1)?.first().copied() {
            None => Ok(Trailer::None),
            Some(format::VMDESCRIPTION) => {
                let tag = |e: Error| e.in_record("vmdesc trailer");
                r.skip(1).map_err(tag)?;
                let len = r.get_be32().map_err(tag)?;
                let json = self.bounded_vec(r, u64::from(len)).map_err(tag)?;
                Ok(Trailer::Vmdesc { offset, json })
            }
            Some(byte) => Ok(Trailer::Other { offset, byte }),
        }
    }
}

/// Writes a START or FULL section's type byte and header.
pub fn write_full_header(
    w: &mut Writer<'_>,
    kind: SectionKind,
    section_id: u32,
    idstr: &str,
    instance_id: u32,
    version: u32,
) -> Result<()> {
    w.put_u8(kind.byte());
    w.put_be32(section_id);
    w.put_counted_str(idstr)?;
    w.put_be32(instance_id);
    w.put_be32(version);
    Ok(())
}

/// Writes a PART or END section's type byte and section id.
pub fn write_part_header(w: &mut Writer<'_>, kind: SectionKind, section_id: u32) {
    w.put_u8(kind.byte());
    w.put_be32(section_id);
}

/// Writes a section footer.
pub fn write_footer(w: &mut Writer<'_>, section_id: u32) {
    w.put_u8(format::SECTION_FOOTER);
    w.put_be32(section_id);
}

/// Writes a command with its payload.
pub fn write_command(w: &mut Writer<'_>, cmd: u16, data: &[u8]) -> Result<()> {
    let len = u16::try_from(data.len())
        .map_err(|_| Error::invalid("command", "payload longer than 65535 bytes"))?;
    w.put_u8(format::COMMAND);
    w.put_be16(cmd);
    w.put_be16(len);
    w.put_bytes(data);
    Ok(())
}

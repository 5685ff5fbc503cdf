//! One error type for every failure, carrying where it happened.
//!
//! An [`Error`] has a [`ErrorKind`] (what went wrong) and a context: the byte offset in
//! the stream, the field path (`serial.fifo[3]`), and the section when the error came
//! from a stream. Context is added on the way out, only on the error path, so the fast
//! path pays nothing for it.

use std::borrow::Cow;
use std::fmt;

/// A boxed error returned by user hooks (`pre_save`, `post_load`, ...).
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The stream ended while `needed` more bytes were expected.
    #[error("unexpected end of stream ({needed} more bytes needed)")]
    UnexpectedEof {
        /// Bytes that were still needed.
        needed: usize,
    },
    /// The stream's version of a description is newer than this build supports.
    #[error("version {stream} of '{vmsd}' is newer than the newest supported version {local}")]
    VersionTooNew {
        /// Description name.
        vmsd: &'static str,
        /// Version found in the stream.
        stream: u32,
        /// Local `version`.
        local: u32,
    },
    /// The stream's version of a description is older than `min_version`.
    #[error("version {stream} of '{vmsd}' is older than the oldest supported version {min}")]
    VersionTooOld {
        /// Description name.
        vmsd: &'static str,
        /// Version found in the stream.
        stream: u32,
        /// Local `min_version`.
        min: u32,
    },
    /// A subsection with the parent's name prefix that this description does not know.
    #[error("subsection '{name}' in '{parent}' does not exist")]
    UnknownSubsection {
        /// Name read from the stream.
        name: String,
        /// Parent description name.
        parent: &'static str,
    },
    /// A field marked `equal` loaded a value different from the local one.
    #[error("value mismatch: the stream has {stream}, the local value is {local}")]
    NotEqual {
        /// Value in the stream.
        stream: String,
        /// Local value.
        local: String,
    },
    /// A `validate` check (QEMU's `VMSTATE_VALIDATE`) returned false while loading.
    #[error("input validation failed: the check '{check}' does not hold")]
    ValidationFailed {
        /// The check's name (the field's QEMU name).
        check: &'static str,
    },
    /// A stream-driven allocation is larger than the reader's limit.
    #[error("allocation of {requested} bytes exceeds the limit of {limit} bytes")]
    AllocationTooLarge {
        /// Bytes the stream asked for.
        requested: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A count field disagrees with the length of the data it counts.
    #[error("count field '{count_field}' says {count}, but the data has {actual} elements")]
    CountMismatch {
        /// Name of the count field.
        count_field: &'static str,
        /// Value of the count field.
        count: u64,
        /// Actual number of elements.
        actual: u64,
    },
    /// A count field holds a value that cannot be an element count (negative).
    #[error("count field '{count_field}' holds an invalid count {count}")]
    InvalidCount {
        /// Name of the count field.
        count_field: &'static str,
        /// The value read.
        count: i64,
    },
    /// A value that the format does not allow.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was being read.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
    /// A user hook failed.
    #[error("{hook} hook failed: {source}")]
    Hook {
        /// Which hook (`pre_save`, `post_load`, ...).
        hook: &'static str,
        /// The hook's error.
        source: HookError,
    },
    /// Two entries with the same idstr and instance id.
    #[error("an entry '{idstr}' with instance id {instance_id} is already registered")]
    DuplicateSection {
        /// The idstr.
        idstr: String,
        /// The instance id.
        instance_id: u32,
    },
    /// The stream does not start with QEMU's magic.
    #[error("not a migration stream: magic is 0x{found:08x}, expected 0x5145564d (\"QEVM\")")]
    BadMagic {
        /// The first four bytes.
        found: u32,
    },
    /// A stream format version other than 3.
    #[error("unsupported stream format version {found} (only version 3 is supported{})",
            if *found == 2 { "; version 2 is obsolete" } else { "" })]
    UnsupportedFormatVersion {
        /// The version found.
        found: u32,
    },
    /// The configuration section names another machine type.
    #[error("machine type mismatch: the stream is for '{stream}', this side is '{local}'")]
    MachineMismatch {
        /// Name in the stream.
        stream: String,
        /// Local name.
        local: String,
    },
    /// A START or FULL section for an entry nobody registered.
    #[error(
        "unknown section or instance: '{idstr}' instance {instance_id} (section id {section_id}) is not registered here"
    )]
    UnknownSection {
        /// The idstr in the stream.
        idstr: String,
        /// The instance id in the stream.
        instance_id: u32,
        /// The section id in the stream.
        section_id: u32,
    },
    /// A PART or END section whose id no START section introduced.
    #[error("section id {section_id} was not introduced by a START section")]
    UnknownSectionId {
        /// The section id in the stream.
        section_id: u32,
    },
    /// A section's version is newer than the local entry's.
    #[error("section version {stream} is newer than the local version {local}")]
    SectionVersionTooNew {
        /// Version in the stream.
        stream: u32,
        /// Local version.
        local: u32,
    },
    /// A FULL or START section for an entry that already had one.
    #[error(
        "section '{idstr}' instance {instance_id} was sent twice (QEMU would load the second \
         copy over the first without a word)"
    )]
    SectionSentTwice {
        /// The section's idstr.
        idstr: String,
        /// Its instance id.
        instance_id: u32,
    },
    /// The stream ended (EOF) before every registered entry's section arrived.
    #[error(
        "the stream ended without the sections of {} registered entr{}: {}; their state \
         was not loaded (QEMU would keep it as it was without a word; \
         `LoadOptions::accept_partial` accepts this and lists them in the load report)",
        missing.len(),
        if missing.len() == 1 { "y" } else { "ies" },
        missing.join(", ")
    )]
    SectionsMissing {
        /// Each missing entry as `idstr (instance N)`.
        missing: Vec<String>,
    },
    /// A snapshot's integrity record does not match the file (see
    /// [`crate::stream::integrity`]).
    #[error("{detail}{}", first_error.as_ref().map(|e| format!(" (the load had stopped at: {e})")).unwrap_or_default())]
    IntegrityMismatch {
        /// What does not match.
        detail: String,
        /// The error the load stopped at, when the corruption broke the stream first.
        first_error: Option<String>,
    },
    /// A record type byte that is not defined.
    #[error("unknown record type 0x{byte:02x}")]
    UnknownRecordType {
        /// The byte.
        byte: u8,
    },
    /// The byte after a section payload is not the footer marker.
    #[error("missing section footer: expected 0x7e, found 0x{found:02x}")]
    MissingFooter {
        /// The byte found.
        found: u8,
    },
    /// The footer names another section.
    #[error("mismatched section footer: expected section id {expected}, found {found}")]
    FooterMismatch {
        /// The section id of the section.
        expected: u32,
        /// The id in the footer.
        found: u32,
    },
    /// A command this loader does not implement (postcopy, COLO, return path, ...).
    #[error("unsupported command {name} ({cmd}) with {len} bytes of payload")]
    UnsupportedCommand {
        /// Command number.
        cmd: u16,
        /// QEMU's name for it.
        name: &'static str,
        /// Declared payload length.
        len: u16,
    },
    /// A command number outside QEMU's range, or with the wrong length.
    #[error("invalid command {cmd} with length {len}: {detail}")]
    InvalidCommand {
        /// Command number.
        cmd: u16,
        /// Declared payload length.
        len: u16,
        /// What is wrong.
        detail: &'static str,
    },
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A live migration failed at `phase`; the source's guest runs on the source.
    #[error("migration failed during {phase}, {bytes} bytes into the stream: {cause}")]
    MigrationFailed {
        /// Where: `setup`, `round 3`, `switchover`, `confirmation`, ...
        phase: String,
        /// Bytes of the stream written (source) or read (destination) before it.
        bytes: u64,
        /// What went wrong.
        cause: Box<Error>,
    },
    /// A TLS handshake or session failed, or the peer's certificate was refused.
    #[error("TLS: {detail}")]
    Tls {
        /// What failed and why, in words.
        detail: String,
    },
    /// Bytes that do not follow the stream grammar or the description they are read
    /// with (the decoder's and the record reader's errors).
    #[error("{detail}")]
    Malformed {
        /// What is wrong, in words.
        detail: String,
    },
    /// An I/O error from the underlying reader or writer.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A step in a field path. Names are static when they come from a derived description
/// and owned when they come from a stream's vmdesc (the decoder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A description (top-level or subsection) name.
    Vmsd(Cow<'static, str>),
    /// A field name.
    Field(Cow<'static, str>),
    /// An array index.
    Index(u64),
}

/// The section an error happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRef {
    /// The section's idstr.
    pub idstr: String,
    /// The section's instance id.
    pub instance_id: u32,
    /// The section id used in the stream.
    pub section_id: u32,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    offset: Option<u64>,
    /// Innermost segment first; rendered in reverse.
    path: Vec<PathSegment>,
    section: Option<SectionRef>,
    /// The record type (`FULL`, `PART`, `COMMAND`, `header`, ...).
    record: Option<&'static str>,
    /// The version in the section's header.
    section_version: Option<u32>,
}

/// An error with context: kind, byte offset, field path, section and record.
///
/// The loader, the record reader and the vmdesc-driven decoder all return it. It
/// displays as `<record> section <id> '<idstr>' instance <n> (version <v>): field
/// <path>: <what> at byte offset <offset>`, leaving out what is not known.
///
/// ```
/// use vmstate::{Error, ErrorKind};
/// let e = Error::new(ErrorKind::UnexpectedEof { needed: 4 })
///     .at_offset(0x20)
///     .at_index(3)
///     .in_field("fifo")
///     .in_vmsd("serial");
/// assert_eq!(e.path(), "serial.fifo[3]");
/// assert_eq!(e.offset(), Some(0x20));
/// assert!(e.to_string().contains("serial.fifo[3]"));
/// ```
pub struct Error(Box<Inner>);

impl Error {
    /// An error of this kind with no context yet.
    #[cold]
    pub fn new(kind: ErrorKind) -> Self {
        Error(Box::new(Inner {
            kind,
            offset: None,
            path: Vec::new(),
            section: None,
            record: None,
            section_version: None,
        }))
    }

    /// An [`ErrorKind::Malformed`] error: bytes that do not follow the grammar.
    #[cold]
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed {
            detail: detail.into(),
        })
    }

    /// An [`ErrorKind::Invalid`] error.
    #[cold]
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid {
            what,
            detail: detail.into(),
        })
    }

    /// A failed hook.
    #[cold]
    pub fn hook(hook: &'static str, source: impl Into<HookError>) -> Self {
        Self::new(ErrorKind::Hook {
            hook,
            source: source.into(),
        })
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The byte offset in the stream where it went wrong, if known.
    pub fn offset(&self) -> Option<u64> {
        self.0.offset
    }

    /// The section the error happened in, if it came from a stream.
    pub fn section(&self) -> Option<&SectionRef> {
        self.0.section.as_ref()
    }

    /// The record type the error happened in (`FULL`, `PART`, `COMMAND`, `header`, ...).
    pub fn record(&self) -> Option<&'static str> {
        self.0.record
    }

    /// The version in the header of the section the error happened in, if known.
    pub fn section_version(&self) -> Option<u32> {
        self.0.section_version
    }

    /// The field path, such as `serial.fifo[3]` (empty if unknown).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.0.path.iter().rev() {
            match seg {
                // A subsection name already starts with its parent's name: it replaces it.
                PathSegment::Vmsd(name) => {
                    if !(out.is_empty() || name.starts_with(out.as_str())) {
                        out.push('>');
                    } else {
                        out.clear();
                    }
                    out.push_str(name);
                }
                PathSegment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                PathSegment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }

    /// Sets the byte offset unless one is already set (the innermost offset wins).
    #[cold]
    pub fn at_offset(mut self, offset: u64) -> Self {
        self.0.offset.get_or_insert(offset);
        self
    }

    /// Adds a field name to the path (called from the inside out).
    #[cold]
    pub fn in_field(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.0.path.push(PathSegment::Field(name.into()));
        self
    }

    /// Adds an array index to the path.
    #[cold]
    pub fn at_index(mut self, index: impl TryInto<u64>) -> Self {
        let index = index.try_into().unwrap_or(u64::MAX);
        self.0.path.push(PathSegment::Index(index));
        self
    }

    /// Adds `by` to the array index the path ends with (an error from a slice loaded
    /// at offset `by` of its array); no change when it ends otherwise.
    #[cold]
    pub(crate) fn shift_index(mut self, by: u64) -> Self {
        if let Some(PathSegment::Index(i)) = self.0.path.last_mut() {
            *i = i.saturating_add(by);
        }
        self
    }

    /// Adds a description name to the path.
    #[cold]
    pub fn in_vmsd(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.0.path.push(PathSegment::Vmsd(name.into()));
        self
    }

    /// Records the section unless one is already recorded.
    #[cold]
    pub fn in_section(mut self, section: SectionRef) -> Self {
        self.0.section.get_or_insert(section);
        self
    }

    /// Records the record type (`FULL`, `COMMAND`, `header`, ...) unless one is
    /// already recorded.
    #[cold]
    pub fn in_record(mut self, record: &'static str) -> Self {
        self.0.record.get_or_insert(record);
        self
    }

    /// Records the section header's version unless one is already recorded.
    #[cold]
    pub fn with_section_version(mut self, version: u32) -> Self {
        self.0.section_version.get_or_insert(version);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.section, self.0.record) {
            (Some(s), record) => {
                if let Some(r) = record {
                    write!(f, "{r} ")?;
                }
                write!(
                    f,
                    "section {} '{}' instance {}",
                    s.section_id, s.idstr, s.instance_id
                )?;
                if let Some(v) = self.0.section_version {
                    write!(f, " (version {v})")?;
                }
                f.write_str(": ")?;
            }
            (None, Some(r)) => write!(f, "{r}: ")?,
            (None, None) => {}
        }
        let path = self.path();
        if !path.is_empty() {
            write!(f, "field {path}: ")?;
        }
        write!(f, "{}", self.0.kind)?;
        if let Some(off) = self.0.offset {
            write!(f, " at byte offset {off} (0x{off:x})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.kind {
            ErrorKind::Hook { source, .. } => Some(source.as_ref()),
            ErrorKind::Io(e) => Some(e),
            ErrorKind::MigrationFailed { cause, .. } => Some(cause.as_ref()),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsection_path_replaces_its_parent_prefix() {
        let e = Error::new(ErrorKind::UnexpectedEof { needed: 1 })
            .in_field("x")
            .in_vmsd("serial/poll")
            .in_vmsd("serial");
        assert_eq!(e.path(), "serial/poll.x");
    }

    #[test]
    fn innermost_offset_wins() {
        let e = Error::new(ErrorKind::UnexpectedEof { needed: 1 })
            .at_offset(7)
            .at_offset(3);
        assert_eq!(e.offset(), Some(7));
    }

    #[test]
    fn display_names_section_path_and_offset() {
        let e = Error::new(ErrorKind::UnexpectedEof { needed: 2 })
            .at_offset(16)
            .in_field("divider")
            .in_vmsd("serial")
            .in_section(SectionRef {
                idstr: "serial".into(),
                instance_id: 1,
                section_id: 9,
            });
        let s = e.to_string();
        assert!(s.starts_with("section 9 'serial' instance 1: "), "{s}");
        assert!(s.contains("field serial.divider"), "{s}");
        assert!(s.contains("byte offset 16"), "{s}");
    }
}

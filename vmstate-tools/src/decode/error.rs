//! The decoder's error: what went wrong, in which top-level record, at which field
//! path, at which byte offset.

use std::fmt;

/// A step of a field path, innermost first while the error travels outwards.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Field(String),
    Index(u64),
}

/// A decoding failure.
///
/// ```
/// use vmstate_tools::decode::DecodeError;
/// let e = DecodeError::new("unexpected end of stream")
///     .at(0x40)
///     .in_field("status")
///     .at_index(1)
///     .in_field("bmdma")
///     .in_record("FULL section 14 '0000:00:01.1/ide' instance 0");
/// assert_eq!(e.path(), "bmdma[1].status");
/// assert_eq!(
///     e.to_string(),
///     "FULL section 14 '0000:00:01.1/ide' instance 0: field bmdma[1].status: \
///      unexpected end of stream at byte offset 64 (0x40)"
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
    offset: Option<u64>,
    record: Option<String>,
    path: Vec<Seg>,
}

impl DecodeError {
    /// An error with a message and no context yet.
    #[cold]
    pub fn new(message: impl Into<String>) -> Self {
        DecodeError {
            message: message.into(),
            offset: None,
            record: None,
            path: Vec::new(),
        }
    }

    /// Sets the byte offset unless one is set already (the innermost wins).
    #[cold]
    pub fn at(mut self, offset: u64) -> Self {
        self.offset.get_or_insert(offset);
        self
    }

    /// Adds a field name to the path (called from the inside out).
    #[cold]
    pub fn in_field(mut self, name: &str) -> Self {
        self.path.push(Seg::Field(name.to_string()));
        self
    }

    /// Adds an array index to the path (called from the inside out).
    #[cold]
    pub fn at_index(mut self, index: u64) -> Self {
        self.path.push(Seg::Index(index));
        self
    }

    /// Names the top-level record unless one is named already.
    #[cold]
    pub fn in_record(mut self, record: impl Into<String>) -> Self {
        if self.record.is_none() {
            self.record = Some(record.into());
        }
        self
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The byte offset in the stream, if known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The top-level record, such as `FULL section 14 'ide' instance 0`.
    pub fn record(&self) -> Option<&str> {
        self.record.as_deref()
    }

    /// The field path, such as `bmdma[1].status` (empty outside fields).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.record {
            write!(f, "{r}: ")?;
        }
        let path = self.path();
        if !path.is_empty() {
            write!(f, "field {path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(off) = self.offset {
            write!(f, " at byte offset {off} (0x{off:x})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for DecodeError {}

impl From<vmstate::Error> for DecodeError {
    fn from(e: vmstate::Error) -> Self {
        let mut d = DecodeError::new(e.kind().to_string());
        d.offset = e.offset();
        d
    }
}

impl From<std::io::Error> for DecodeError {
    fn from(e: std::io::Error) -> Self {
        DecodeError::new(format!("I/O error: {e}"))
    }
}

//! The integrity record: a checksum of a snapshot file, after everything QEMU reads.
//!
//! A snapshot written by [`save_snapshot`](super::save_snapshot) ends with 20 bytes:
//!
//! ```text
//! "VMSTCRC" 0x01 | be64 length covered | be32 CRC32C of those bytes
//! ```
//!
//! The covered bytes are the whole stream before the record, vmdesc trailer included.
//! QEMU reads at most to the end of the vmdesc and never looks further, so it loads such
//! a file unchanged. [`load_file`](super::load_file) checks the record while it
//! reads, `vmstate verify` and `vmstate info` report it; a file without it (every file
//! QEMU writes) still loads.
//!
//! CRC32C (Castagnoli, the `crc32c` crate) because it detects every single-bit error and
//! every burst of up to 32 bits by construction, not just with high probability as a
//! hash would, and because SSE4.2 and ARMv8 compute it in hardware at many GB/s, so the
//! checksum costs little next to writing the file. It protects against accidental
//! corruption (disks, copies, truncation), not against tampering: anyone can recompute it.
//!
//! ```
//! use vmstate::stream::integrity::{self, Integrity};
//! use vmstate::stream::{StreamConfig, save_snapshot};
//! use vmstate::Registry;
//!
//! let mut bytes = Vec::new();
//! save_snapshot(&mut Registry::new(), &mut bytes, StreamConfig::new("demo-1.0")).unwrap();
//! let check = |b: &[u8]| integrity::check(&mut std::io::Cursor::new(b)).unwrap();
//! assert!(matches!(check(&bytes), Integrity::Valid(_)));
//! bytes[10] ^= 1;
//! assert!(matches!(check(&bytes), Integrity::Mismatch { .. }));
//! ```

use std::io::{self, Read, Seek, SeekFrom, Write};

/// The record's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"VMSTCRC\x01";
/// The record's length.
pub const RECORD_LEN: u64 = 20;

/// An integrity record as read from a file's last 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegrityRecord {
    /// How many bytes before it the checksum covers (all of them, when valid).
    pub covered: u64,
    /// The CRC32C of those bytes.
    pub crc32c: u32,
}

impl IntegrityRecord {
    /// The record's 20 bytes.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN as usize] {
        let mut out = [0; RECORD_LEN as usize];
        out[..8].copy_from_slice(&MAGIC);
        out[8..16].copy_from_slice(&self.covered.to_be_bytes());
        out[16..].copy_from_slice(&self.crc32c.to_be_bytes());
        out
    }

    /// The record at the end of `tail`, if its last 20 bytes start with [`MAGIC`].
    pub fn from_tail(tail: &[u8]) -> Option<Self> {
        let start = tail.len().checked_sub(RECORD_LEN as usize)?;
        let rec = &tail[start..];
        if rec[..8] != MAGIC {
            return None;
        }
        Some(IntegrityRecord {
            covered: u64::from_be_bytes(rec[8..16].try_into().expect("8 bytes")),
            crc32c: u32::from_be_bytes(rec[16..].try_into().expect("4 bytes")),
        })
    }
}

/// What a file's end says about its integrity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Integrity {
    /// No record (QEMU's files, or written with the record turned off).
    #[default]
    Absent,
    /// A record whose checksum matches every byte before it.
    Valid(IntegrityRecord),
    /// A record that does not cover exactly the bytes before it (the file was cut or
    /// extended), or whose checksum does not match them.
    Mismatch {
        /// The record.
        record: IntegrityRecord,
        /// The bytes before the record.
        length: u64,
        /// Their CRC32C.
        computed: u32,
    },
}

impl Integrity {
    /// One line for reports: `absent`, `valid (CRC32C 0x..., N bytes)`, or what is wrong.
    pub fn describe(&self) -> String {
        match self {
            Integrity::Absent => "absent".into(),
            Integrity::Valid(r) => {
                format!("valid (CRC32C 0x{:08x} over {} bytes)", r.crc32c, r.covered)
            }
            Integrity::Mismatch {
                record,
                length,
                computed,
            } => mismatch_text(record, *length, *computed),
        }
    }
}

/// What is wrong with a record that does not match its file.
pub(crate) fn mismatch_text(record: &IntegrityRecord, length: u64, computed: u32) -> String {
    if record.covered != length {
        format!(
            "the record covers {} bytes but {length} precede it: the file was cut or extended",
            record.covered
        )
    } else {
        format!(
            "CRC32C mismatch: the record says 0x{:08x}, the {length} bytes before it give \
             0x{computed:08x}: the file is corrupt",
            record.crc32c
        )
    }
}

/// The record at the end of a seekable file, and where the stream before it ends (the
/// file's length, or the record's offset). The position is restored.
pub fn find_record<R: Read + Seek>(src: &mut R) -> io::Result<(u64, Option<IntegrityRecord>)> {
    let here = src.stream_position()?;
    let len = src.seek(SeekFrom::End(0))?;
    let mut found = None;
    if len >= RECORD_LEN {
        src.seek(SeekFrom::Start(len - RECORD_LEN))?;
        let mut tail = [0; RECORD_LEN as usize];
        src.read_exact(&mut tail)?;
        found = IntegrityRecord::from_tail(&tail);
    }
    src.seek(SeekFrom::Start(here))?;
    let end = if found.is_some() {
        len - RECORD_LEN
    } else {
        len
    };
    Ok((end, found))
}

/// Checks a whole file's record by reading every byte before it once. The position is
/// restored.
pub fn check<R: Read + Seek>(src: &mut R) -> io::Result<Integrity> {
    let (end, record) = find_record(src)?;
    let Some(record) = record else {
        return Ok(Integrity::Absent);
    };
    let here = src.stream_position()?;
    src.seek(SeekFrom::Start(0))?;
    let mut crc = crc32c::Crc32cReader::new(src.by_ref().take(end));
    io::copy(&mut crc, &mut io::sink())?;
    let computed = crc.crc32c();
    src.seek(SeekFrom::Start(here))?;
    Ok(verdict(record, end, computed))
}

/// The verdict on `record` for `length` bytes whose CRC32C is `computed`.
pub fn verdict(record: IntegrityRecord, length: u64, computed: u32) -> Integrity {
    if record.covered == length && record.crc32c == computed {
        Integrity::Valid(record)
    } else {
        Integrity::Mismatch {
            record,
            length,
            computed,
        }
    }
}

/// A writer that checksums and counts what goes through it, for appending a record.
pub struct ChecksumWriter<W: Write> {
    inner: crc32c::Crc32cWriter<W>,
    written: u64,
}

impl<W: Write> ChecksumWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        ChecksumWriter {
            inner: crc32c::Crc32cWriter::new(inner),
            written: 0,
        }
    }

    /// Writes the integrity record of everything written so far, and returns the inner
    /// writer.
    pub fn finish(self) -> io::Result<W> {
        let record = IntegrityRecord {
            covered: self.written,
            crc32c: self.inner.crc32c(),
        };
        let mut w = self.inner.into_inner();
        w.write_all(&record.to_bytes())?;
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

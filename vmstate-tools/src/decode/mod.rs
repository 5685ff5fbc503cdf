//! The description-driven decoder: any stream with a vmdesc trailer into a value tree.
//!
//! Decoding is driven only by the vmdesc JSON, as QEMU's `analyze-migration.py` does
//! (spec 6): the trailer is read from the end of the file first, then the records are
//! walked from the start. Every byte is accounted for (header, configuration,
//! sections, footers, commands, EOF, vmdesc), so the tree re-encodes to exactly the
//! bytes it came from ([`encode()`]). RAM page contents are skipped unless asked for;
//! the tree then refers to them by offset, and [`encode()`] / [`write_state_json`] read
//! them back from the source one chunk at a time, so a multi-GiB stream is never held
//! in memory.
//!
//! The records themselves are read by the core's record readers
//! ([`vmstate::stream::records`], [`vmstate::ram::records`]), the same that the
//! registry loader uses, and errors are the core's [`vmstate::Error`] with the record,
//! section, version, field path and offset.
//!
//! Modules: [`json`] (the vmdesc JSON as a tree that keeps the duplicate keys of
//! `qtailq` descriptions, parsed by serde_json), [`desc`] (descriptions from the JSON),
//! [`value`] (the tree), `field` and `walk` (field decoding, and the payload decoder
//! chosen for each section), [`mod@encode`] (back to bytes) and [`analyze`] (JSON in the
//! script's `-d state` shape).
//!
//! ```
//! use vmstate::{Registry, Registration, VmState};
//! use vmstate::stream::{StreamConfig, save_snapshot};
//! use vmstate_tools::decode::{self, DecodeOptions, DumpOptions};
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92")]
//! struct Port92 { outport: u8 }
//!
//! let mut reg = Registry::new();
//! reg.register_device(Port92 { outport: 2 }, Registration::new()).unwrap();
//! let mut bytes = Vec::new();
//! save_snapshot(&mut reg, &mut bytes, StreamConfig::new("demo-1.0")).unwrap();
//!
//! let stream = decode::decode_slice(&bytes, DecodeOptions::default()).unwrap();
//! assert_eq!(stream.machine().as_deref(), Some("demo-1.0"));
//! assert_eq!(decode::encode_to_vec(&stream).unwrap(), bytes);
//! let json = decode::state_json_string(&stream, &DumpOptions::default()).unwrap();
//! assert!(json.contains("\"outport\": \"0x02\""));
//! ```
//!
//! Hostile input gives an error, never a panic or a hang: reads are bounded by the
//! stream length, allocations by [`Limits`], the number of decoded values by
//! [`DecodeOptions::max_values`], nesting by [`json::MAX_DEPTH`] and the JSON size by
//! [`desc::TRAILER_SEARCH`].

pub mod analyze;
pub mod desc;
pub mod encode;
mod field;
pub mod json;
pub mod value;
mod walk;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

pub use analyze::{DumpOptions, desc_json_string, state_json_string, write_state_json};
pub use desc::{FieldDesc, FieldKind, VmDescription, VmsdDesc};
pub use encode::{PageSource, SeekSource, encode, encode_to_vec};
pub use value::*;

use vmstate::Error;
use vmstate::stream::integrity::{self, IntegrityRecord};
use vmstate::stream::vmdesc;
use vmstate::wire::{Limits, Reader};

/// How a stream is decoded.
pub struct DecodeOptions<'o> {
    /// Keep RAM page contents in the tree (otherwise they are skipped and referred to
    /// by offset).
    pub keep_pages: bool,
    /// Limits on single allocations.
    pub limits: Limits,
    /// The most field values (and RAM runs) the tree may hold.
    pub max_values: u64,
    /// Called now and then with the stream offset reached.
    pub progress: Option<Box<dyn FnMut(u64) + 'o>>,
}

impl Default for DecodeOptions<'_> {
    fn default() -> Self {
        DecodeOptions {
            keep_pages: false,
            limits: Limits::default(),
            max_values: 4 << 20,
            progress: None,
        }
    }
}

impl std::fmt::Debug for DecodeOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeOptions")
            .field("keep_pages", &self.keep_pages)
            .field("limits", &self.limits)
            .field("max_values", &self.max_values)
            .finish_non_exhaustive()
    }
}

/// Decodes a stream held in memory.
pub fn decode_slice(bytes: &[u8], opts: DecodeOptions<'_>) -> Result<Stream, Error> {
    match decode_slice_partial(bytes, opts) {
        (s, None) => Ok(s),
        (_, Some(e)) => Err(e),
    }
}

/// Decodes a stream held in memory; on error, also returns the records decoded
/// before it.
pub fn decode_slice_partial(bytes: &[u8], mut opts: DecodeOptions<'_>) -> (Stream, Option<Error>) {
    let len = bytes.len() as u64;
    let record = IntegrityRecord::from_tail(bytes);
    let stream_end = bytes.len() - record.map_or(0, |_| integrity::RECORD_LEN as usize);
    let tail_start = stream_end.saturating_sub(desc::TRAILER_SEARCH as usize);
    let found = desc::find_trailer(&bytes[tail_start..stream_end], tail_start as u64);
    let end = found.as_ref().map_or(stream_end as u64, |t| t.offset);
    let mut r = Reader::from_slice(&bytes[..end as usize]).with_limits(opts.limits);
    run(&mut r, len, stream_end as u64, found, record, &mut opts)
}

/// Decodes a stream file.
pub fn decode_file(path: impl AsRef<Path>, opts: DecodeOptions<'_>) -> Result<Stream, Error> {
    match decode_file_partial(path, opts)? {
        (s, None) => Ok(s),
        (_, Some(e)) => Err(e),
    }
}

/// Decodes a stream file; on a decoding error, also returns the records decoded before
/// it. The outer error is for a file that cannot be read at all.
pub fn decode_file_partial(
    path: impl AsRef<Path>,
    opts: DecodeOptions<'_>,
) -> Result<(Stream, Option<Error>), Error> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| Error::malformed(format!("cannot open {}: {e}", path.display())))?;
    decode_seekable(file, opts)
}

/// Decodes a stream from anything seekable: the trailer is read from the end first,
/// then the records from the start, through a bounded buffer.
pub fn decode_seekable<R: Read + Seek>(
    mut src: R,
    mut opts: DecodeOptions<'_>,
) -> Result<(Stream, Option<Error>), Error> {
    let len = src.seek(SeekFrom::End(0))?;
    let (stream_end, record) = integrity::find_record(&mut src)?;
    let found = read_trailer(&mut src)?;
    let end = found.as_ref().map_or(stream_end, |t| t.offset);
    src.seek(SeekFrom::Start(0))?;
    let mut r = Reader::from_io(src.take(end)).with_limits(opts.limits);
    Ok(run(&mut r, len, stream_end, found, record, &mut opts))
}

/// Finds the vmdesc trailer of a seekable stream, reading only its last bytes (at most
/// [`desc::TRAILER_SEARCH`]), with [`vmstate::stream::vmdesc::read_trailer`].
pub fn read_trailer<R: Read + Seek>(mut src: R) -> std::io::Result<Option<desc::FoundTrailer>> {
    vmdesc::read_trailer(&mut src, desc::FoundTrailer::parse)
}

/// Decodes the records of a stream of `len` bytes whose records and trailer end at
/// `stream_end` (where its integrity `record`, if any, starts).
fn run(
    r: &mut Reader<'_>,
    len: u64,
    stream_end: u64,
    found: Option<desc::FoundTrailer>,
    record: Option<IntegrityRecord>,
    opts: &mut DecodeOptions<'_>,
) -> (Stream, Option<Error>) {
    let mut stream = Stream {
        magic: 0,
        version: 0,
        records: Vec::new(),
        trailer: None,
        desc: None,
        integrity: record,
        len,
    };
    let end = found.as_ref().map_or(stream_end, |t| t.offset);
    let desc = match found {
        None => None,
        Some(t) => {
            let at = t.offset;
            stream.trailer = Some(Trailer {
                offset: t.offset,
                json: t.text,
            });
            match VmDescription::from_json(t.json) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    let e = e.at_offset(at + 5).in_record("vmdesc trailer");
                    return (stream, Some(e));
                }
            }
        }
    };
    stream.desc = desc.clone();
    let trailer = stream.trailer.is_some();
    let mut w = walk::Walker::new(r, end, desc, opts);
    if let Err(e) = w.run(&mut stream) {
        return (stream, Some(e));
    }
    let pos = r.position();
    if pos != end {
        let what = if trailer {
            "between EOF and the vmdesc trailer"
        } else {
            "after EOF (and no vmdesc trailer)"
        };
        let e = Error::malformed(format!("{} unexpected bytes {what}", end - pos))
            .at_offset(pos)
            .in_record("EOF");
        return (stream, Some(e));
    }
    if let Some(p) = opts.progress.as_mut() {
        p(len);
    }
    (stream, None)
}

#[cfg(test)]
mod tests;

//! The big-endian writer (QEMU's `qemu_put_*`).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};

use byteorder::{BigEndian, ByteOrder};

use crate::error::Result;
use crate::ram::GuestPages;
use crate::ram::mapping::{Piece, write_all_vectored};

/// How many buffered bytes make [`Writer::flush_if_full`] write them out.
pub const FLUSH_THRESHOLD: usize = 1 << 20;

/// A big-endian writer.
///
/// Every `put_*` appends to an in-memory buffer and cannot fail; nothing on the hot path
/// makes a virtual call. A writer built with [`Writer::to_io`] or [`Writer::to_fd`]
/// hands the buffer to its sink when [`Writer::flush_if_full`] or [`Writer::flush`] is
/// called (the stream engine does that between records), so I/O errors surface there.
///
/// ```
/// use vmstate::Writer;
/// let mut w = Writer::new();
/// w.put_u8(0x04);
/// w.put_be32(7);
/// w.put_counted_str("ram").unwrap();
/// assert_eq!(w.as_bytes(), &[4, 0, 0, 0, 7, 3, b'r', b'a', b'm']);
/// ```
pub struct Writer<'a> {
    buf: Vec<u8>,
    sink: Sink<'a>,
    /// Bytes already handed to the sink.
    flushed: u64,
    /// Guest pages sent in place (only with a descriptor sink): each goes out right
    /// after `buf[..offset]`.
    in_place: Vec<(usize, GuestPages)>,
    /// Their total length.
    in_place_bytes: usize,
}

/// Where a writer's bytes go.
enum Sink<'a> {
    /// Nowhere: the writer keeps them.
    Memory,
    /// Any `Write`.
    Io(Box<dyn Write + 'a>),
    /// A socket or file, written with vectored calls that take guest pages in place
    /// (held as a `File` for its safe `seek`, which [`Writer::put_hole`] uses on files).
    Fd(File),
}

impl Default for Writer<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Writer<'a> {
    /// A writer that keeps everything in memory.
    pub fn new() -> Self {
        Self::from_vec(Vec::new())
    }

    /// An in-memory writer that appends to `buf` (reuse a buffer to avoid allocating).
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Writer {
            buf,
            sink: Sink::Memory,
            flushed: 0,
            in_place: Vec::new(),
            in_place_bytes: 0,
        }
    }

    /// A writer that sends its bytes to `sink` when flushed.
    pub fn to_io(sink: impl Write + 'a) -> Self {
        Self::with_sink(Sink::Io(Box::new(sink)))
    }

    /// A writer that sends its bytes to a socket or file descriptor itself, with
    /// vectored calls (`sendmsg`, or `writev` for what is not a socket): guest pages
    /// given to [`put_guest_pages`](Self::put_guest_pages) go from guest memory to the
    /// kernel without being copied into the buffer. Use it for a plain TCP or Unix
    /// socket or a file, not for anything that must see the bytes (TLS, a checksum).
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    /// let (tx, mut rx) = UnixStream::pair().unwrap();
    /// let mut w = vmstate::Writer::to_fd(tx);
    /// w.put_be32(7);
    /// w.flush().unwrap();
    /// let mut got = [0u8; 4];
    /// rx.read_exact(&mut got).unwrap();
    /// assert_eq!(got, [0, 0, 0, 7]);
    /// ```
    pub fn to_fd(fd: impl Into<OwnedFd>) -> Writer<'static> {
        Writer::with_sink(Sink::Fd(File::from(fd.into())))
    }

    fn with_sink(sink: Sink<'_>) -> Writer<'_> {
        Writer {
            buf: Vec::with_capacity(FLUSH_THRESHOLD + (64 << 10)),
            sink,
            flushed: 0,
            in_place: Vec::new(),
            in_place_bytes: 0,
        }
    }

    /// Bytes written so far, flushed or not: the stream offset of the next byte.
    #[inline]
    pub fn position(&self) -> u64 {
        self.flushed + (self.buf.len() + self.in_place_bytes) as u64
    }

    /// Whether [`put_guest_pages`](Self::put_guest_pages) sends pages in place (a
    /// [`to_fd`](Self::to_fd) writer) rather than copying them into the buffer.
    #[inline]
    pub fn sends_in_place(&self) -> bool {
        matches!(self.sink, Sink::Fd(_))
    }

    /// Appends guest memory: in place for a [`to_fd`](Self::to_fd) writer (the kernel
    /// reads it when the buffer goes out, so it goes out as it is then), copied into
    /// the buffer otherwise.
    #[inline]
    pub fn put_guest_pages(&mut self, pages: GuestPages) {
        if self.sends_in_place() {
            self.in_place_bytes += pages.len();
            // Pages right after the previous ones, with no bytes between: one piece.
            if let Some((at, last)) = self.in_place.last_mut()
                && *at == self.buf.len()
                && last.try_extend(&pages)
            {
                return;
            }
            self.in_place.push((self.buf.len(), pages));
        } else {
            pages.append_to(&mut self.buf);
        }
    }

    /// The bytes still buffered (everything, for an in-memory writer).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the buffered bytes, leaving the writer empty (its position keeps counting).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        debug_assert!(
            self.in_place.is_empty(),
            "only a to_fd writer sends in place"
        );
        self.flushed += self.buf.len() as u64;
        std::mem::take(&mut self.buf)
    }

    /// Empties the buffer and resets the position to 0, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.in_place.clear();
        self.in_place_bytes = 0;
        self.flushed = 0;
    }

    /// The in-memory buffer (for an in-memory writer, everything written).
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// Reserves room for `additional` more bytes.
    #[inline]
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Writes one byte.
    #[inline]
    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Writes one signed byte.
    #[inline]
    pub fn put_i8(&mut self, v: i8) {
        self.buf.push(v as u8);
    }

    /// Writes a bool as one byte, 0 or 1.
    #[inline]
    pub fn put_bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    /// Writes a big-endian u16.
    #[inline]
    pub fn put_be16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a big-endian u32.
    #[inline]
    pub fn put_be32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a big-endian u64.
    #[inline]
    pub fn put_be64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes raw bytes, with no length prefix.
    #[inline]
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Writes `n` zero bytes.
    #[inline]
    pub fn put_zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// Appends `n` zero bytes that a file may leave unwritten: for a
    /// [`to_fd`](Self::to_fd) writer on a regular file, the buffer goes out and the
    /// file position moves past them, leaving a hole that reads back as zeros (the
    /// file must get more bytes after it, or it ends before the hole); anything else
    /// gets the zeros written, a MiB at a time.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("hole-{}", std::process::id()));
    /// let mut w = vmstate::Writer::to_fd(std::fs::File::create(&path).unwrap());
    /// w.put_be32(1);
    /// w.put_hole(1 << 20).unwrap();
    /// w.put_be32(2);
    /// w.flush().unwrap();
    /// let bytes = std::fs::read(&path).unwrap();
    /// assert_eq!(bytes.len(), 8 + (1 << 20));
    /// assert!(bytes[4..4 + (1 << 20)].iter().all(|&b| b == 0));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn put_hole(&mut self, n: u64) -> Result<()> {
        if matches!(self.sink, Sink::Fd(_)) {
            self.write_out()?;
            if let Sink::Fd(file) = &self.sink {
                let is_file = file.metadata().is_ok_and(|m| m.is_file());
                if is_file {
                    let by = i64::try_from(n).map_err(|_| {
                        crate::Error::invalid("hole", format!("{n} bytes is too long"))
                    })?;
                    (&*file).seek(SeekFrom::Current(by))?;
                    self.flushed += n;
                    return Ok(());
                }
            }
        }
        let mut left = n;
        while left > 0 {
            let chunk = left.min(FLUSH_THRESHOLD as u64);
            self.put_zeros(chunk as usize);
            self.flush_if_full()?;
            left -= chunk;
        }
        Ok(())
    }

    /// Writes a slice of u16 as consecutive big-endian values, in one reservation.
    pub fn put_be16_slice(&mut self, values: &[u16]) {
        let start = self.grow(values.len() * 2);
        BigEndian::write_u16_into(values, &mut self.buf[start..]);
    }

    /// Writes a slice of u32 as consecutive big-endian values, in one reservation.
    pub fn put_be32_slice(&mut self, values: &[u32]) {
        let start = self.grow(values.len() * 4);
        BigEndian::write_u32_into(values, &mut self.buf[start..]);
    }

    /// Writes a slice of u64 as consecutive big-endian values, in one reservation.
    pub fn put_be64_slice(&mut self, values: &[u64]) {
        let start = self.grow(values.len() * 8);
        BigEndian::write_u64_into(values, &mut self.buf[start..]);
    }

    /// Appends `n` zero bytes and returns them for the caller to fill in place (saves
    /// a copy when the data comes from elsewhere, such as a guest page).
    #[inline]
    pub fn put_slot(&mut self, n: usize) -> &mut [u8] {
        let start = self.grow(n);
        &mut self.buf[start..]
    }

    /// Appends `N` zero bytes and returns them as an array to fill in place: one
    /// capacity check for a run of fixed-size fields (the derive's generated code).
    #[doc(hidden)]
    #[inline]
    pub fn put_array<const N: usize>(&mut self) -> &mut [u8; N] {
        let start = self.grow(N);
        self.buf[start..]
            .first_chunk_mut::<N>()
            .expect("grow appended N bytes")
    }

    /// Drops the bytes written after stream position `pos`. Only bytes still in the
    /// buffer and written after the last guest pages sent in place can be dropped:
    /// returns false (and drops nothing) otherwise.
    pub fn rewind_to(&mut self, pos: u64) -> bool {
        let before_buf = self.flushed + self.in_place_bytes as u64;
        let last_in_place = self.in_place.last().map_or(0, |&(at, _)| at as u64);
        match pos.checked_sub(before_buf) {
            Some(keep) if keep <= self.buf.len() as u64 && keep >= last_in_place => {
                self.buf.truncate(keep as usize);
                true
            }
            _ => false,
        }
    }

    /// Writes a counted string: a u8 length, then the bytes (QEMU's
    /// `qemu_put_counted_string`). Fails if the string is empty (QEMU's reader refuses
    /// it) or longer than 255 bytes.
    pub fn put_counted_str(&mut self, s: &str) -> Result<()> {
        if s.is_empty() {
            return Err(crate::Error::invalid("counted string", "empty string"));
        }
        let len = u8::try_from(s.len()).map_err(|_| {
            crate::Error::invalid(
                "counted string",
                format!("'{s}' is {} bytes long; the limit is 255", s.len()),
            )
        })?;
        self.put_u8(len);
        self.put_bytes(s.as_bytes());
        Ok(())
    }

    /// Hands the buffer to the sink once it holds at least [`FLUSH_THRESHOLD`] bytes.
    #[inline]
    pub fn flush_if_full(&mut self) -> Result<()> {
        if self.buf.len() + self.in_place_bytes >= FLUSH_THRESHOLD {
            self.write_out()?;
        }
        Ok(())
    }

    /// Hands every buffered byte to the sink and flushes it. No-op in memory.
    pub fn flush(&mut self) -> Result<()> {
        self.write_out()?;
        if let Sink::Io(sink) = &mut self.sink {
            sink.flush()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        match &mut self.sink {
            Sink::Memory => return Ok(()),
            Sink::Io(sink) => sink.write_all(&self.buf)?,
            Sink::Fd(fd) => {
                let mut pieces = Vec::with_capacity(2 * self.in_place.len() + 1);
                let mut from = 0;
                for (at, pages) in &self.in_place {
                    pieces.push(Piece::Bytes(&self.buf[from..*at]));
                    pieces.push(Piece::Guest(pages));
                    from = *at;
                }
                pieces.push(Piece::Bytes(&self.buf[from..]));
                write_all_vectored(fd.as_fd(), &pieces)?;
            }
        }
        self.flushed += (self.buf.len() + self.in_place_bytes) as u64;
        self.buf.clear();
        self.in_place.clear();
        self.in_place_bytes = 0;
        Ok(())
    }

    /// Grows the buffer by `n` zero bytes and returns where they start.
    #[inline]
    fn grow(&mut self, n: usize) -> usize {
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut w = Writer::new();
        w.put_be16(0x0102);
        w.put_be32(0x03040506);
        w.put_be64(0x0708090a0b0c0d0e);
        w.put_i8(-1);
        assert_eq!(
            w.as_bytes(),
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff]
        );
    }

    #[test]
    fn slices_match_single_puts() {
        let vals = [1u32, 0xdeadbeef, 7];
        let mut a = Writer::new();
        a.put_be32_slice(&vals);
        let mut b = Writer::new();
        vals.iter().for_each(|v| b.put_be32(*v));
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn counted_string_over_255_bytes_is_an_error() {
        let mut w = Writer::new();
        assert!(w.put_counted_str(&"x".repeat(256)).is_err());
        assert!(w.put_counted_str(&"x".repeat(255)).is_ok());
        assert_eq!(w.as_bytes()[0], 255);
    }

    #[test]
    fn io_writer_counts_position_across_flushes() {
        let mut out = Vec::new();
        {
            let mut w = Writer::to_io(&mut out);
            w.put_be32(1);
            w.flush().unwrap();
            w.put_be16(2);
            assert_eq!(w.position(), 6);
            w.flush().unwrap();
        }
        assert_eq!(out, [0, 0, 0, 1, 0, 2]);
    }
}

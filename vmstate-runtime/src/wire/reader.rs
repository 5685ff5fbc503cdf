//! The big-endian reader (QEMU's `qemu_get_*` and `qemu_peek_*`).

use std::io::Read;

use crate::error::{Error, ErrorKind, Result};

/// Limits that protect a reader from hostile streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest single allocation (in bytes) that stream contents may cause.
    pub max_alloc: u64,
}

impl Default for Limits {
    /// 256 MiB for any single allocation.
    fn default() -> Self {
        Limits {
            max_alloc: 256 << 20,
        }
    }
}

/// How many bytes an I/O reader asks its source for at a time, at most.
const READ_CHUNK: usize = 1 << 20;
/// ... and at first.
const FIRST_CHUNK: usize = 64 << 10;

/// The most bytes [`Reader::peek`] may look ahead.
pub const MAX_PEEK: usize = 4096;

enum Buf<'a> {
    Borrowed(&'a [u8]),
    /// `data[..end]` holds stream bytes; the rest is scratch space for the next read.
    Owned {
        data: Vec<u8>,
        end: usize,
    },
}

/// A big-endian reader over a byte slice or any [`std::io::Read`].
///
/// Reads past the end are errors (QEMU returns zeros and flags the file; we stop).
/// Positions are absolute stream offsets, for error messages.
///
/// ```
/// use vmstate::Reader;
/// let mut r = Reader::from_slice(&[0, 0, 0, 7, 3, b'r', b'a', b'm']);
/// assert_eq!(r.get_be32().unwrap(), 7);
/// assert_eq!(r.peek(1).unwrap(), &[3]);
/// assert_eq!(r.get_counted_string().unwrap(), "ram");
/// assert!(r.get_u8().is_err()); // end of stream
/// ```
pub struct Reader<'a> {
    buf: Buf<'a>,
    /// Next unread byte in `buf`.
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    source: Option<Box<dyn Read + 'a>>,
    /// With [`from_file`](Self::from_file): the file (another handle on the source),
    /// for positioned reads and for skipping by seeking.
    file: Option<std::fs::File>,
    limits: Limits,
}

impl<'a> Reader<'a> {
    /// A reader over bytes in memory.
    pub fn from_slice(bytes: &'a [u8]) -> Self {
        Reader {
            buf: Buf::Borrowed(bytes),
            pos: 0,
            base: 0,
            source: None,
            file: None,
            limits: Limits::default(),
        }
    }

    /// A buffered reader over any `Read`. Memory use stays bounded whatever the stream size.
    pub fn from_io(source: impl Read + 'a) -> Self {
        Reader {
            buf: Buf::Owned {
                data: Vec::new(),
                end: 0,
            },
            pos: 0,
            base: 0,
            source: Some(Box::new(source)),
            file: None,
            limits: Limits::default(),
        }
    }

    /// A buffered reader over `file` from its current position (stream offset 0 is
    /// there), which also offers the file for positioned reads ([`file`](Self::file))
    /// and skips long runs by seeking rather than reading them.
    pub fn from_file(file: std::fs::File) -> std::io::Result<Reader<'static>> {
        let other = file.try_clone()?;
        let mut r = Reader::from_io(file);
        r.file = Some(other);
        Ok(r)
    }

    /// The file under a [`from_file`](Self::from_file) reader (for positioned reads at
    /// stream offsets: the stream starts at file offset 0 when the reader started
    /// there).
    pub fn file(&self) -> Option<&std::fs::File> {
        self.file.as_ref()
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the stream offset of the next byte (for a reader that starts mid-stream,
    /// so that error offsets stay absolute).
    pub fn with_base_offset(mut self, offset: u64) -> Self {
        self.base = offset - self.pos as u64;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The stream offset of the next byte to be read.
    #[inline]
    pub fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.buf {
            Buf::Borrowed(b) => b,
            Buf::Owned { data, end } => &data[..*end],
        }
    }

    #[inline]
    fn available(&self) -> usize {
        self.bytes().len() - self.pos
    }

    /// An "unexpected end" error at the current position.
    #[cold]
    fn eof(&self, needed: usize) -> Error {
        Error::new(ErrorKind::UnexpectedEof { needed }).at_offset(self.position())
    }

    /// Makes at least `n` bytes available, reading from the source if needed.
    /// Returns false at end of stream.
    fn fill(&mut self, n: usize) -> Result<bool> {
        if self.available() >= n {
            return Ok(true);
        }
        let Some(source) = self.source.as_mut() else {
            return Ok(false);
        };
        let Buf::Owned { data, end } = &mut self.buf else {
            return Ok(false);
        };
        // Move the unread bytes to the front, then read until n are there or the
        // source ends. The scratch space is zeroed once, when it grows: from 64 KiB,
        // doubling up to READ_CHUNK, so that a small input costs little.
        data.copy_within(self.pos..*end, 0);
        *end -= self.pos;
        self.base += self.pos as u64;
        self.pos = 0;
        let chunk = (data.len() * 2).clamp(FIRST_CHUNK, READ_CHUNK);
        if data.len() < n.max(chunk) {
            data.resize(n.max(chunk), 0);
        }
        while *end < n {
            let got = match source.read(&mut data[*end..]) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e).at_offset(self.base + *end as u64)),
            };
            if got == 0 {
                return Ok(false);
            }
            *end += got;
        }
        Ok(true)
    }

    /// Reads exactly `N` bytes.
    #[inline]
    pub fn get_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let pos = self.pos;
        if let Some(b) = self.bytes().get(pos..pos + N) {
            let out: [u8; N] = b.try_into().expect("slice has N bytes");
            self.pos = pos + N;
            return Ok(out);
        }
        self.get_array_slow()
    }

    #[cold]
    fn get_array_slow<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.get_bytes_into(&mut out)?;
        Ok(out)
    }

    /// Reads one byte.
    #[inline]
    pub fn get_u8(&mut self) -> Result<u8> {
        Ok(self.get_array::<1>()?[0])
    }

    /// Reads one signed byte.
    #[inline]
    pub fn get_i8(&mut self) -> Result<i8> {
        Ok(self.get_u8()? as i8)
    }

    /// Reads a bool: any non-zero byte is true (as QEMU).
    #[inline]
    pub fn get_bool(&mut self) -> Result<bool> {
        Ok(self.get_u8()? != 0)
    }

    /// Reads a big-endian u16.
    #[inline]
    pub fn get_be16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.get_array()?))
    }

    /// Reads a big-endian u32.
    #[inline]
    pub fn get_be32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.get_array()?))
    }

    /// Reads a big-endian u64.
    #[inline]
    pub fn get_be64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.get_array()?))
    }

    /// Fills `out` with the next bytes.
    #[inline]
    pub fn get_bytes_into(&mut self, out: &mut [u8]) -> Result<()> {
        let pos = self.pos;
        if let Some(b) = self.bytes().get(pos..pos + out.len()) {
            out.copy_from_slice(b);
            self.pos = pos + out.len();
            return Ok(());
        }
        self.get_bytes_into_slow(out)
    }

    #[cold]
    fn get_bytes_into_slow(&mut self, out: &mut [u8]) -> Result<()> {
        // Copy what is buffered, then refill chunk by chunk: large reads stay bounded.
        let start = self.position();
        let mut done = 0;
        while done < out.len() {
            if self.available() == 0 && !self.fill(1)? {
                return Err(
                    Error::new(ErrorKind::UnexpectedEof { needed: out.len() }).at_offset(start)
                );
            }
            let take = self.available().min(out.len() - done);
            let pos = self.pos;
            out[done..done + take].copy_from_slice(&self.bytes()[pos..pos + take]);
            self.pos += take;
            done += take;
        }
        Ok(())
    }

    /// Hands the next `n` bytes to `f` in place (reading them from the source first if
    /// needed) and consumes them: one copy less than [`get_bytes_into`] for bulk data
    /// such as RAM pages. `n` must be at most 1 MiB.
    ///
    /// [`get_bytes_into`]: Self::get_bytes_into
    pub fn with_bytes<T>(&mut self, n: usize, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        assert!(
            n <= READ_CHUNK,
            "with_bytes reads at most {READ_CHUNK} bytes"
        );
        if !self.fill(n)? {
            return Err(self.eof(n));
        }
        let pos = self.pos;
        let out = f(&self.bytes()[pos..pos + n]);
        self.pos = pos + n;
        Ok(out)
    }

    /// Skips `n` bytes (by seeking, for a [`from_file`](Self::from_file) reader and
    /// more bytes than are buffered; a seek past the end shows as the end of the
    /// stream at the next read).
    pub fn skip(&mut self, n: u64) -> Result<()> {
        if n > self.available() as u64
            && let Some(file) = &self.file
        {
            let to = self.position() + n;
            std::io::Seek::seek(&mut &*file, std::io::SeekFrom::Current(0))
                .and_then(|at| {
                    // The file's offset is past the buffered bytes: move it by what
                    // is left to skip beyond them.
                    let beyond = n - self.available() as u64;
                    std::io::Seek::seek(&mut &*file, std::io::SeekFrom::Start(at + beyond))
                })
                .map_err(|e| Error::from(e).at_offset(to))?;
            if let Buf::Owned { end, .. } = &mut self.buf {
                *end = 0;
            }
            self.pos = 0;
            self.base = to;
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            if self.available() == 0 && !self.fill(1)? {
                return Err(self.eof(usize::try_from(left).unwrap_or(usize::MAX)));
            }
            let take = (self.available() as u64).min(left) as usize;
            self.pos += take;
            left -= take as u64;
        }
        Ok(())
    }

    /// Reads `n` bytes into a new vector, after checking `n` against the allocation limit
    /// and, for a reader over a slice, against the bytes left: a hostile length is
    /// refused before anything is allocated.
    pub fn get_vec(&mut self, n: u64) -> Result<Vec<u8>> {
        if let Buf::Borrowed(bytes) = &self.buf {
            let left = (bytes.len() - self.pos) as u64;
            if n > left {
                return Err(Error::new(ErrorKind::UnexpectedEof {
                    needed: usize::try_from(n - left).unwrap_or(usize::MAX),
                })
                .at_offset(self.position()));
            }
        }
        let n = self.check_alloc(n, 1)?;
        let mut v = vec![0u8; n];
        self.get_bytes_into(&mut v)?;
        Ok(v)
    }

    /// Reads a counted string (u8 length + bytes). An empty or non-UTF-8 string is an error.
    pub fn get_counted_string(&mut self) -> Result<String> {
        let at = self.position();
        let len = self.get_u8()? as usize;
        let mut buf = [0u8; 255];
        self.get_bytes_into(&mut buf[..len])?;
        match std::str::from_utf8(&buf[..len]) {
            Ok("") => Err(Error::invalid("counted string", "empty string").at_offset(at)),
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(Error::invalid(
                "counted string",
                format!("not UTF-8: {:02x?}", &buf[..len]),
            )
            .at_offset(at)),
        }
    }

    /// Looks at the next `n` bytes without consuming them. Returns fewer than `n` bytes
    /// only at the end of the stream. `n` is capped at [`MAX_PEEK`].
    pub fn peek(&mut self, n: usize) -> Result<&[u8]> {
        let n = n.min(MAX_PEEK);
        self.fill(n)?;
        let end = (self.pos + n).min(self.bytes().len());
        Ok(&self.bytes()[self.pos..end])
    }

    /// True when no byte is left.
    #[inline]
    pub fn at_end(&mut self) -> Result<bool> {
        if self.available() > 0 {
            return Ok(false);
        }
        if self.source.is_none() {
            return Ok(true);
        }
        Ok(!self.fill(1)?)
    }

    /// False when the next byte is certainly not `byte`: it is buffered and differs, or
    /// an in-memory stream has ended. True otherwise (it is `byte`, or more must be
    /// read to know). A cheap test before a peek.
    #[inline]
    pub fn may_be_next(&self, byte: u8) -> bool {
        match self.bytes().get(self.pos) {
            Some(&b) => b == byte,
            None => !matches!(self.buf, Buf::Borrowed(_)),
        }
    }

    /// Reads `n` bytes in place, without copying them out, when they are already
    /// buffered: calls `read` with the buffered bytes from the read position (at least
    /// `n`, and everything after them that is buffered) and whether those run to the
    /// end of the stream, and consumes the `n` bytes if `read` returns true. Returns
    /// false (consuming nothing) when fewer than `n` bytes are buffered or `read`
    /// declines; the caller then reads the ordinary way.
    ///
    /// The derive's generated code reads runs of fixed-size fields with one check.
    #[doc(hidden)]
    #[inline]
    pub fn read_raw(&mut self, n: usize, read: impl FnOnce(&[u8], bool) -> bool) -> bool {
        let at_end = matches!(self.buf, Buf::Borrowed(_));
        let pos = self.pos;
        let ok = match self.bytes().get(pos..) {
            Some(rest) if rest.len() >= n => read(rest, at_end),
            _ => false,
        };
        if ok {
            self.pos = pos + n;
        }
        ok
    }

    /// Checks that `count` elements of `elem_size` bytes fit the allocation limit and
    /// returns the count as a `usize`.
    pub fn check_alloc(&self, count: u64, elem_size: u64) -> Result<usize> {
        let bytes = count.saturating_mul(elem_size.max(1));
        if bytes > self.limits.max_alloc {
            return Err(Error::new(ErrorKind::AllocationTooLarge {
                requested: bytes,
                limit: self.limits.max_alloc,
            })
            .at_offset(self.position()));
        }
        usize::try_from(count).map_err(|_| {
            Error::new(ErrorKind::AllocationTooLarge {
                requested: bytes,
                limit: self.limits.max_alloc,
            })
        })
    }

    /// Reads `out.len()` big-endian u16 values.
    pub fn get_be16_into(&mut self, out: &mut [u16]) -> Result<()> {
        read_words(self, out, u16::from_be_bytes)
    }

    /// Reads `out.len()` big-endian u32 values.
    pub fn get_be32_into(&mut self, out: &mut [u32]) -> Result<()> {
        read_words(self, out, u32::from_be_bytes)
    }

    /// Reads `out.len()` big-endian u64 values.
    pub fn get_be64_into(&mut self, out: &mut [u64]) -> Result<()> {
        read_words(self, out, u64::from_be_bytes)
    }

    /// The buffered bytes at the read position, when at least `n` are available;
    /// lets bulk readers convert in place without copying twice.
    #[inline]
    fn buffered(&mut self, n: usize) -> Result<Option<&[u8]>> {
        if n > READ_CHUNK || !self.fill(n)? {
            return Ok(None);
        }
        let pos = self.pos;
        Ok(Some(&self.bytes()[pos..pos + n]))
    }
}

/// Reads a run of fixed-width big-endian words, in bulk when the bytes are buffered.
fn read_words<T, const W: usize>(
    r: &mut Reader<'_>,
    out: &mut [T],
    convert: fn([u8; W]) -> T,
) -> Result<()> {
    let n = out.len() * W;
    if let Some(bytes) = r.buffered(n)? {
        for (dst, chunk) in out.iter_mut().zip(bytes.chunks_exact(W)) {
            *dst = convert(chunk.try_into().expect("chunk has W bytes"));
        }
        r.pos += n;
        return Ok(());
    }
    for dst in out {
        *dst = convert(r.get_array()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // `Trickle`: a source that hands out one byte per read, to exercise refills.
    include!("../../tests/support/trickle.rs");

    #[test]
    fn io_reader_matches_slice_reader() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut a = Reader::from_slice(&data);
        let mut b = Reader::from_io(Trickle(&data));
        for _ in 0..600 {
            assert_eq!(a.get_be64().unwrap(), b.get_be64().unwrap());
        }
        assert_eq!(a.peek(3).unwrap(), b.peek(3).unwrap());
        let mut x = [0u16; 100];
        let mut y = [0u16; 100];
        a.get_be16_into(&mut x).unwrap();
        b.get_be16_into(&mut y).unwrap();
        assert_eq!(x, y);
        assert_eq!(a.position(), b.position());
    }

    #[test]
    fn eof_error_carries_offset() {
        let mut r = Reader::from_slice(&[1, 2, 3]);
        r.get_u8().unwrap();
        let e = r.get_be32().unwrap_err();
        assert_eq!(e.offset(), Some(1));
        assert!(matches!(e.kind(), ErrorKind::UnexpectedEof { needed: 4 }));
    }

    #[test]
    fn peek_at_end_returns_what_is_left() {
        let mut r = Reader::from_io(Trickle(&[5, 6]));
        assert_eq!(r.peek(10).unwrap(), &[5, 6]);
        assert_eq!(r.position(), 0);
    }

    #[test]
    fn allocation_over_limit_is_refused() {
        let r = Reader::from_slice(&[]).with_limits(Limits { max_alloc: 100 });
        assert!(r.check_alloc(101, 1).is_err());
        assert!(r.check_alloc(25, 4).is_ok());
        assert!(r.check_alloc(u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn empty_counted_string_is_an_error() {
        let mut r = Reader::from_slice(&[0]);
        assert!(r.get_counted_string().is_err());
    }

    #[test]
    fn skip_past_end_is_an_error() {
        let mut r = Reader::from_slice(&[0; 4]);
        assert!(r.skip(5).is_err());
    }
}

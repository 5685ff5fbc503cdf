//! QEMU's `mapped-ram` file layout (spec section 5.7; QEMU's
//! `docs/devel/migration/mapped-ram.rst`): with the `mapped-ram` capability, each
//! block's entry in the RAM setup section is followed by a [`MappedRamHeader`], and the
//! block's pages live at fixed file offsets: page `i` at `pages_offset + i x page_size`,
//! `pages_offset` aligned to 1 MiB, zero pages left out (holes in the file), and a
//! bitmap of the pages present at `bitmap_offset`, in the host's `unsigned long`
//! layout. The stream goes on at `pages_offset + used_length`.
//!
//! QEMU writes the bitmap right after the header (`bitmap_offset` = the header's end)
//! and the pages region after it, so the file can be read front to back:
//! [`RamHandler::with_mapped_ram`](super::RamHandler::with_mapped_ram) saves a stopped
//! guest that way (zero pages as holes through [`Writer::put_hole`]) and loads
//! files of that layout, QEMU's included, with one sequential pass.
//!
//! ```
//! use vmstate::ram::mapped_ram::MappedRamHeader;
//! // A 4 MiB block whose entry ends at file offset 0x65: the bitmap (1024 pages,
//! // 128 bytes) follows the 28-byte header, the pages start at the next MiB.
//! let h = MappedRamHeader::layout(0x65, 4 << 20, 4096);
//! assert_eq!((h.bitmap_offset, h.pages_offset), (0x81, 0x100000));
//! ```

use super::{GuestRam, is_zero};
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

/// The header version QEMU 10 writes (and the highest it reads).
pub const MAPPED_RAM_VERSION: u32 = 1;
/// Bytes of a packed `MappedRamHeader`.
pub const HEADER_LEN: u64 = 28;
/// Alignment of each block's pages region in the file (QEMU's
/// `MAPPED_RAM_FILE_OFFSET_ALIGNMENT`).
pub const FILE_OFFSET_ALIGNMENT: u64 = 1 << 20;

/// A block's `MappedRamHeader` (packed, big-endian on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRamHeader {
    /// Format version ([`MAPPED_RAM_VERSION`]).
    pub version: u32,
    /// The target page size the bitmap counts in.
    pub page_size: u64,
    /// File offset of the bitmap of pages present.
    pub bitmap_offset: u64,
    /// File offset of page 0 (aligned to [`FILE_OFFSET_ALIGNMENT`]).
    pub pages_offset: u64,
}

impl MappedRamHeader {
    /// QEMU's layout for a block of `used_length` bytes whose header is written at file
    /// offset `header_at`: the bitmap right after the header, the pages at the next
    /// 1 MiB boundary after the bitmap.
    pub fn layout(header_at: u64, used_length: u64, page_size: u64) -> MappedRamHeader {
        let bitmap_offset = header_at + HEADER_LEN;
        let pages_offset = (bitmap_offset + bitmap_len(used_length, page_size))
            .next_multiple_of(FILE_OFFSET_ALIGNMENT);
        MappedRamHeader {
            version: MAPPED_RAM_VERSION,
            page_size,
            bitmap_offset,
            pages_offset,
        }
    }

    /// Writes the 28 bytes.
    pub fn encode(&self, w: &mut Writer<'_>) {
        w.put_be32(self.version);
        w.put_be64(self.page_size);
        w.put_be64(self.bitmap_offset);
        w.put_be64(self.pages_offset);
    }

    /// Reads the 28 bytes; refuses a version above QEMU 10's.
    pub fn decode(r: &mut Reader<'_>) -> Result<MappedRamHeader> {
        let at = r.position();
        let h = MappedRamHeader {
            version: r.get_be32()?,
            page_size: r.get_be64()?,
            bitmap_offset: r.get_be64()?,
            pages_offset: r.get_be64()?,
        };
        if h.version > MAPPED_RAM_VERSION {
            return Err(Error::invalid(
                "mapped-ram header",
                format!(
                    "version {}; QEMU 10 writes version {MAPPED_RAM_VERSION}",
                    h.version
                ),
            )
            .at_offset(at));
        }
        Ok(h)
    }

    /// Checks the header of a block of `used_length` bytes read at file offset
    /// `header_at` against what a front-to-back reader can follow: this side's page
    /// size, the bitmap right after the header, and the pages aligned, after the bitmap.
    pub fn check_sequential(&self, header_at: u64, used_length: u64, page_size: u64) -> Result<()> {
        let why = if self.page_size != page_size {
            Some(format!(
                "page size {} in the file, {page_size} here",
                self.page_size
            ))
        } else if self.bitmap_offset != header_at + HEADER_LEN {
            Some(format!(
                "the bitmap is at 0x{:x}, not right after the header (0x{:x})",
                self.bitmap_offset,
                header_at + HEADER_LEN
            ))
        } else if self.pages_offset % FILE_OFFSET_ALIGNMENT != 0
            || self.pages_offset < self.bitmap_offset + bitmap_len(used_length, page_size)
        {
            Some(format!(
                "the pages start at 0x{:x}, which is not a 1 MiB boundary after the bitmap",
                self.pages_offset
            ))
        } else {
            None
        };
        match why {
            Some(why) => Err(Error::invalid("mapped-ram header", why).at_offset(header_at)),
            None => Ok(()),
        }
    }
}

/// Bytes of the bitmap of a block of `used_length` bytes: one bit per page, in whole
/// 64-bit words (QEMU's `BITS_TO_LONGS(pages) * sizeof(unsigned long)` on a 64-bit
/// host).
pub fn bitmap_len(used_length: u64, page_size: u64) -> u64 {
    (used_length / page_size).div_ceil(64) * 8
}

/// Whether page `page` is present in `bitmap` (host byte order 64-bit words, as QEMU
/// writes it on this host).
pub fn bitmap_test(bitmap: &[u8], page: usize) -> bool {
    let word = &bitmap[page / 64 * 8..page / 64 * 8 + 8];
    u64::from_ne_bytes(word.try_into().expect("8 bytes")) & (1 << (page % 64)) != 0
}

/// Marks page `page` present in `bitmap`.
pub fn bitmap_set(bitmap: &mut [u8], page: usize) {
    let at = page / 64 * 8;
    let word = u64::from_ne_bytes(bitmap[at..at + 8].try_into().expect("8 bytes"));
    bitmap[at..at + 8].copy_from_slice(&(word | 1 << (page % 64)).to_ne_bytes());
}

/// Writes block `block`'s mapped-ram part after its block list entry: the header, the
/// bitmap of the pages holding data, zeros to the pages region, then the pages, zero
/// pages as holes. Returns (data pages, zero pages). The pages are taken as they are
/// now: the guest must be stopped.
pub(crate) fn save_block(w: &mut Writer<'_>, block: &dyn GuestRam) -> Result<(u64, u64)> {
    let ps = block.page_size();
    let pages = (block.len() / ps as u64) as usize;
    let h = MappedRamHeader::layout(w.position(), block.len(), ps as u64);
    h.encode(w);
    let mut bitmap = vec![0u8; bitmap_len(block.len(), ps as u64) as usize];
    let mut copy = vec![0u8; ps];
    let mut data_pages = 0u64;
    for p in 0..pages {
        let zero = block.page_is_zero(p).unwrap_or_else(|| {
            block.copy_page(p, &mut copy);
            is_zero(&copy)
        });
        if !zero {
            bitmap_set(&mut bitmap, p);
            data_pages += 1;
        }
    }
    w.put_bytes(&bitmap);
    // The padding to the pages region is a hole too.
    let mut hole = h.pages_offset - w.position();
    for p in 0..pages {
        if !bitmap_test(&bitmap, p) {
            hole += ps as u64;
            continue;
        }
        if hole > 0 {
            w.put_hole(hole)?;
            hole = 0;
        }
        match block.page_in_place(p) {
            Some(page) if w.sends_in_place() => w.put_guest_pages(page),
            _ => block.copy_page(p, w.put_slot(ps)),
        }
        w.flush_if_full()?;
    }
    if hole > 0 {
        w.put_hole(hole)?;
    }
    Ok((data_pages, pages as u64 - data_pages))
}

/// Reads block `block`'s mapped-ram part after its block list entry (the reader at
/// the header, at its file offset): the header, the bitmap, and the pages region front
/// to back, placing the pages present and zeroing the others. Returns (data pages,
/// zero pages).
pub(crate) fn load_block(r: &mut Reader<'_>, block: &dyn GuestRam) -> Result<(u64, u64)> {
    let ps = block.page_size();
    let pages = (block.len() / ps as u64) as usize;
    let header_at = r.position();
    let h = MappedRamHeader::decode(r)?;
    h.check_sequential(header_at, block.len(), ps as u64)?;
    let len = r.check_alloc(bitmap_len(block.len(), ps as u64), 1)?;
    let bitmap = r.get_vec(len as u64)?;
    r.skip(h.pages_offset - r.position())?;
    if let Some(file) = r.file().and_then(|f| f.try_clone().ok()) {
        let counts = read_pages_positioned(block, &bitmap, &h, &file)?;
        if let Some(counts) = counts {
            r.skip(block.len())?;
            return Ok(counts);
        }
    }
    let mut data_pages = 0u64;
    let mut hole = 0u64;
    for p in 0..pages {
        if !bitmap_test(&bitmap, p) {
            block.zero_page(p);
            hole += ps as u64;
            continue;
        }
        if hole > 0 {
            r.skip(hole)?;
            hole = 0;
        }
        r.with_bytes(ps, |data| block.load_page(p, data))?;
        data_pages += 1;
    }
    r.skip(hole)?;
    Ok((data_pages, pages as u64 - data_pages))
}

/// Reads block `block`'s mapped-ram header and bitmap and leaves its pages in the
/// file: from now on the block fetches each page on first touch from there
/// ([`RamBlock::fetch_on_demand`](super::RamBlock::fetch_on_demand)). The reader must
/// be over the file ([`Reader::from_file`]); it seeks past the pages.
pub(crate) fn load_block_lazily(r: &mut Reader<'_>, block: &dyn GuestRam) -> Result<()> {
    let ps = block.page_size();
    let header_at = r.position();
    let h = MappedRamHeader::decode(r)?;
    h.check_sequential(header_at, block.len(), ps as u64)?;
    let len = r.check_alloc(bitmap_len(block.len(), ps as u64), 1)?;
    let bitmap = r.get_vec(len as u64)?;
    let file = r
        .file()
        .ok_or_else(|| {
            Error::invalid(
                "lazy restore",
                "pages are fetched from the file on demand: load with load_file",
            )
        })?
        .try_clone()?;
    let fetcher = FilePages {
        file,
        pages_offset: h.pages_offset,
        bitmap,
        page_size: ps,
    };
    block
        .fetch_on_demand(Box::new(fetcher))
        .unwrap_or_else(|| {
            Err(Error::invalid(
                "lazy restore",
                "this memory cannot fetch pages on demand (a RamBlock can)",
            ))
        })?;
    r.skip(h.pages_offset + block.len() - r.position())
}

/// A mapped-ram file's pages of one block, fetched on demand: present pages read by
/// position straight into guest memory, absent ones left zero.
struct FilePages {
    file: std::fs::File,
    pages_offset: u64,
    bitmap: Vec<u8>,
    page_size: usize,
}

impl super::on_demand::PageFetcher for FilePages {
    fn fetch(&self, block: &super::RamBlock, first: usize, count: usize) -> Result<usize> {
        let ps = self.page_size;
        let mut p = first;
        while p < first + count {
            if !bitmap_test(&self.bitmap, p) {
                block.zero_page(p);
                p += 1;
                continue;
            }
            let mut end = p + 1;
            while end < first + count && bitmap_test(&self.bitmap, end) {
                end += 1;
            }
            let offset = self.pages_offset + (p * ps) as u64;
            block
                .read_pages_at(p, end - p, &self.file, offset)
                .map_err(|e| Error::from(e).at_offset(offset))?;
            p = end;
        }
        Ok(count)
    }
}

/// Pages read at most in one positioned read.
const MAX_READ: usize = 8 << 20;

/// The pages region of `block` read with large positioned reads straight into guest
/// memory, run of present pages by run; the absent pages zeroed. `None` when the
/// block's memory cannot be read into that way.
fn read_pages_positioned(
    block: &dyn GuestRam,
    bitmap: &[u8],
    h: &MappedRamHeader,
    file: &std::fs::File,
) -> Result<Option<(u64, u64)>> {
    let ps = block.page_size();
    let pages = (block.len() / ps as u64) as usize;
    let per_read = (MAX_READ / ps).max(1);
    let mut data_pages = 0u64;
    let mut p = 0;
    while p < pages {
        if !bitmap_test(bitmap, p) {
            block.zero_page(p);
            p += 1;
            continue;
        }
        let mut end = p + 1;
        while end < pages && end - p < per_read && bitmap_test(bitmap, end) {
            end += 1;
        }
        let offset = h.pages_offset + (p * ps) as u64;
        match block.read_pages_at(p, end - p, file, offset) {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::from(e).at_offset(offset)),
            Some(Ok(())) => {}
        }
        data_pages += (end - p) as u64;
        p = end;
    }
    Ok(Some((data_pages, pages as u64 - data_pages)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_matches_qemus_capture() {
        // QEMU 10.0.2, `-M none -m 4M`, mapped-ram: the entry of block "ram" ends at
        // 0x65; its header says bitmap 0x81, pages 0x100000.
        let h = MappedRamHeader::layout(0x65, 4 << 20, 4096);
        let mut w = Writer::new();
        h.encode(&mut w);
        assert_eq!(
            w.as_bytes(),
            [
                0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0, 0, 0, 0, 0,
                0x10, 0, 0
            ]
        );
        let back = MappedRamHeader::decode(&mut Reader::from_slice(w.as_bytes())).unwrap();
        assert_eq!(back, h);
        back.check_sequential(0x65, 4 << 20, 4096).unwrap();
        assert!(back.check_sequential(0x64, 4 << 20, 4096).is_err());
        assert!(back.check_sequential(0x65, 4 << 20, 65536).is_err());
    }

    #[test]
    fn bitmap_bits_are_host_order_words() {
        let mut b = vec![0u8; 16];
        bitmap_set(&mut b, 0);
        bitmap_set(&mut b, 67);
        assert!(bitmap_test(&b, 0) && bitmap_test(&b, 67) && !bitmap_test(&b, 1));
        assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 1 << 3);
        assert_eq!(bitmap_len(4 << 20, 4096), 128);
        assert_eq!(bitmap_len(4096 * 65, 4096), 16);
    }
}

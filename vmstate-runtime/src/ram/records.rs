//! The records inside a `ram` section's payload (spec 5.1), read as typed values.
//!
//! Each record starts with a be64 word: the page offset in the high bits, flags in the
//! bits below the target page size. A page record names its block unless `CONTINUE`
//! says it is the block of the previous page record — across section boundaries too,
//! so one [`RamRecordReader`] lives as long as the whole load. The reader checks the
//! grammar (flag combinations, the zero page's fill byte, an XBZRLE record's header,
//! a `CONTINUE` with no block before it); what the block names and offsets mean is the
//! caller's: the RAM handler places pages in its blocks, the decoder of
//! `vmstate-tools` lists them.
//!
//! ```
//! use vmstate::Reader;
//! use vmstate::ram::records::{BlockRef, RamRecord, RamRecordReader};
//!
//! let mut bytes = (0x1000u64 | 0x2).to_be_bytes().to_vec(); // ZERO page at 0x1000
//! bytes.extend([3, b'r', b'a', b'm', 0]); // its block, its fill byte
//! bytes.extend(0x10u64.to_be_bytes()); // EOS
//! let mut r = Reader::from_slice(&bytes);
//! let mut records = RamRecordReader::new(4096);
//! let rec = records.next(&mut r).unwrap();
//! assert_eq!(rec, RamRecord::Zero { block: BlockRef::Named("ram".into()), offset: 0x1000 });
//! assert_eq!(records.next(&mut r).unwrap(), RamRecord::Eos);
//! ```

use super::format::{CONTINUE, EOS, HOOK, MEM_SIZE, MULTIFD_FLUSH, PAGE, XBZRLE, ZERO, flag_names};
use crate::error::{Error, Result};
use crate::wire::Reader;

/// The block a page record is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockRef {
    /// Named in the record.
    Named(String),
    /// The block of the previous page record (`CONTINUE`).
    Same,
}

/// One record of a RAM payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RamRecord {
    /// `MEM_SIZE`: the block list follows, one [`RamRecordReader::block_entry`] per
    /// block until their lengths add up to `total` (see [`RamRecordReader::block_list`]).
    MemSize {
        /// The total of the blocks' used lengths.
        total: u64,
    },
    /// `ZERO`: a page of zeros (its fill byte was read and is 0).
    Zero {
        /// The block.
        block: BlockRef,
        /// The page's offset in the block.
        offset: u64,
    },
    /// `PAGE`: one target page of data follows; the caller reads it.
    Page {
        /// The block.
        block: BlockRef,
        /// The page's offset in the block.
        offset: u64,
    },
    /// `XBZRLE`: a page encoded against the previous one sent.
    Xbzrle {
        /// The block.
        block: BlockRef,
        /// The page's offset in the block.
        offset: u64,
        /// The encoding byte (1), the be16 length and the encoded bytes, as on the wire.
        data: Vec<u8>,
    },
    /// `MULTIFD_FLUSH`: a sync point of multifd channels.
    MultifdFlush,
    /// `EOS`: the end of this section's payload.
    Eos,
}

/// One entry of the block list after `MEM_SIZE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    /// The block's name (QEMU's idstr).
    pub name: String,
    /// Its used length in bytes.
    pub used_length: u64,
    /// Its guest address, present with the `x-ignore-shared` capability.
    pub mr_addr: Option<u64>,
}

/// Reads RAM records; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct RamRecordReader {
    page_size: u64,
    ignore_shared: bool,
    /// Whether a page record has named its block yet (for `CONTINUE`).
    block_named: bool,
    /// The be64 word of the last record read.
    word: u64,
}

impl RamRecordReader {
    /// A reader for pages of `page_size` bytes (a power of two).
    pub fn new(page_size: u64) -> Self {
        RamRecordReader {
            page_size,
            ignore_shared: false,
            block_named: false,
            word: 0,
        }
    }

    /// With the `x-ignore-shared` capability, block entries carry a guest address.
    pub fn with_ignore_shared(mut self, on: bool) -> Self {
        self.ignore_shared = on;
        self
    }

    /// The target page size.
    #[inline]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The be64 word of the last record read, as on the wire (QEMU ignores the offset
    /// bits of `EOS`, `MEM_SIZE`'s are the total, and so on; a tool that re-encodes a
    /// stream exactly keeps it).
    #[inline]
    pub fn last_word(&self) -> u64 {
        self.word
    }

    /// The next record. Errors carry the record's offset.
    #[inline]
    pub fn next(&mut self, r: &mut Reader<'_>) -> Result<RamRecord> {
        let at = r.position();
        self.record(r, at).map_err(|e| e.at_offset(at))
    }

    #[inline]
    fn record(&mut self, r: &mut Reader<'_>, at: u64) -> Result<RamRecord> {
        let word = r.get_be64()?;
        self.word = word;
        let mask = self.page_size - 1;
        let (flags, offset) = (word & mask, word & !mask);
        let single = flags & CONTINUE == 0;
        match flags & !CONTINUE {
            EOS if single => Ok(RamRecord::Eos),
            MULTIFD_FLUSH if single => Ok(RamRecord::MultifdFlush),
            MEM_SIZE if single => Ok(RamRecord::MemSize { total: offset }),
            ZERO => {
                let block = self.block(r, flags)?;
                let fill_at = r.position();
                let fill = r.get_u8()?;
                if fill != 0 {
                    return Err(Error::invalid(
                        "RAM zero page",
                        format!("fill byte 0x{fill:02x}; QEMU requires 0x00"),
                    )
                    .at_offset(fill_at));
                }
                Ok(RamRecord::Zero { block, offset })
            }
            PAGE => Ok(RamRecord::Page {
                block: self.block(r, flags)?,
                offset,
            }),
            XBZRLE => {
                let block = self.block(r, flags)?;
                let encoding = r.get_u8()?;
                if encoding != 1 {
                    return Err(Error::invalid(
                        "RAM XBZRLE page",
                        format!("encoding byte 0x{encoding:02x}, expected 0x01"),
                    ));
                }
                let len = r.get_be16()?;
                if u64::from(len) > self.page_size {
                    return Err(Error::invalid(
                        "RAM XBZRLE page",
                        format!("XBZRLE length {len} exceeds the page size"),
                    ));
                }
                let mut data = Vec::with_capacity(3 + usize::from(len));
                data.push(encoding);
                data.extend_from_slice(&len.to_be_bytes());
                data.extend(r.get_vec(u64::from(len))?);
                Ok(RamRecord::Xbzrle {
                    block,
                    offset,
                    data,
                })
            }
            f if f & HOOK != 0 => Err(Error::invalid(
                "RAM record",
                "RAM_SAVE_FLAG_HOOK (RDMA) records are not supported",
            )),
            _ => Err(Error::invalid(
                "RAM record",
                format!(
                    "unsupported combination of flags 0x{flags:x} ({}) at 0x{at:x}",
                    flag_names(flags)
                ),
            )),
        }
    }

    #[inline]
    fn block(&mut self, r: &mut Reader<'_>, flags: u64) -> Result<BlockRef> {
        if flags & CONTINUE != 0 {
            if !self.block_named {
                return Err(Error::invalid(
                    "RAM record",
                    "CONTINUE flag on the first page record (no previous block)",
                ));
            }
            return Ok(BlockRef::Same);
        }
        self.block_named = true;
        Ok(BlockRef::Named(r.get_counted_string()?))
    }

    /// One block list entry.
    pub fn block_entry(&self, r: &mut Reader<'_>) -> Result<BlockEntry> {
        let name = r.get_counted_string()?;
        let used_length = r.get_be64()?;
        let mr_addr = if self.ignore_shared {
            Some(r.get_be64()?)
        } else {
            None
        };
        Ok(BlockEntry {
            name,
            used_length,
            mr_addr,
        })
    }

    /// The whole block list after a `MEM_SIZE` of `total`: each entry is handed to
    /// `each` with its offset. Lengths adding up to more than `total` are an error.
    pub fn block_list(
        &self,
        r: &mut Reader<'_>,
        total: u64,
        mut each: impl FnMut(BlockEntry, u64) -> Result<()>,
    ) -> Result<()> {
        self.block_list_with(r, total, |entry, at, _| each(entry, at))
    }

    /// [`block_list`](Self::block_list) whose `each` also gets the reader, to read
    /// what follows an entry (with `mapped-ram`, the block's header, bitmap and pages).
    pub fn block_list_with(
        &self,
        r: &mut Reader<'_>,
        total: u64,
        mut each: impl FnMut(BlockEntry, u64, &mut Reader<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut left = total;
        while left > 0 {
            let at = r.position();
            let entry = self.block_entry(r).map_err(|e| e.at_offset(at))?;
            left = left.checked_sub(entry.used_length).ok_or_else(|| {
                Error::invalid(
                    "RAM block list",
                    format!("blocks add up to more than the total 0x{total:x}"),
                )
                .at_offset(at)
            })?;
            each(entry, at, r)?;
        }
        Ok(())
    }
}

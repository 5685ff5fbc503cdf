//! QEMU's `postcopy-preempt` channel: a second connection on which the pages a
//! postcopy destination asked for travel, so that they do not queue behind the
//! background pages already written to the main stream.
//!
//! The channel carries bare RAM records (ZERO or PAGE; a record names its block
//! unless it is the block of the previous record on this channel, CONTINUE; EOS to
//! end): no magic, no sections (spec 5.6). As QEMU 8 and later do, the source opens it
//! just before the switch to postcopy, while the guest still runs, and writes each
//! request's pages from the return path's thread the moment the request arrives; it
//! closes the channel once the destination said `SHUT`, and sends no EOS. The destination takes the connection after the main one
//! and reads it in a thread of its own. A page goes out on exactly one of the two
//! connections: whichever takes it from the dirty bitmap first sends it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::format::{CONTINUE, PAGE, ZERO};
use super::guest_ram::GuestRam;
use super::handler::RamStats;
use super::postcopy::{PostcopyIncoming, place_postcopy_page, requested_pages};
use super::records::{BlockRef, RamRecord, RamRecordReader};
use super::zero::is_zero;
use crate::error::{Error, Result};
use crate::wire::Reader;

/// Bytes of page records gathered before they are written (a request for a large
/// range goes out in pieces of this size, not as one buffer of its size).
const WRITE_AT: usize = 256 << 10;

/// Opens the source's side of the preempt channel (just before the switch to
/// postcopy, with the guest still running).
pub type PreemptOpener = Box<dyn FnOnce() -> Result<Box<dyn Write + Send>> + Send>;

/// Takes the destination's side of the preempt channel: the connection the source
/// opens after the main one. Called in the channel's thread at `POSTCOPY_LISTEN` (the
/// source connected before it sent LISTEN); it should give up after a while. The reader
/// should block without a timeout: the channel is quiet while the guest faults on
/// nothing.
pub type PreemptAcceptor = Box<dyn FnOnce() -> Result<Box<dyn Read + Send>> + Send>;

/// The source's side: writes requested pages as they are asked for.
pub(crate) struct PreemptSender {
    out: Box<dyn Write + Send>,
    blocks: Vec<Arc<dyn GuestRam>>,
    page_size: usize,
    stats: Arc<RamStats>,
    /// The block of the last record on this channel (CONTINUE is per channel).
    last_block: Option<usize>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for PreemptSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreemptSender")
    }
}

impl PreemptSender {
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        blocks: Vec<Arc<dyn GuestRam>>,
        page_size: usize,
        stats: Arc<RamStats>,
    ) -> Self {
        PreemptSender {
            out,
            blocks,
            page_size,
            stats,
            last_block: None,
            buf: Vec::new(),
        }
    }

    /// Sends the pages of `len` bytes at `start` of `block` that are still to be sent
    /// (taking them from the dirty bitmap), in one write; returns how many went out.
    pub(crate) fn send(&mut self, block: &str, start: u64, len: u64) -> Result<u64> {
        let (bi, pages) = requested_pages(&self.blocks, self.page_size, block, start, len)?;
        let mut sent = 0;
        for page in pages {
            if self.blocks[bi].migration_bitmap().test_and_clear(page) {
                self.put_page(bi, page);
                sent += 1;
                if self.buf.len() >= WRITE_AT {
                    self.write_out()?;
                }
            }
        }
        self.write_out()?;
        Ok(sent)
    }

    /// Writes what `buf` holds and pushes it out.
    fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| Error::from(e).in_record("postcopy preempt channel");
        self.out.write_all(&self.buf).map_err(io)?;
        self.out.flush().map_err(io)?;
        self.stats
            .preempt_bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.buf.clear();
        Ok(())
    }

    fn put_page(&mut self, bi: usize, page: usize) {
        let block = &self.blocks[bi];
        let mut header = (page * self.page_size) as u64;
        if self.last_block == Some(bi) {
            header |= CONTINUE;
        }
        let at = self.buf.len();
        self.buf.extend_from_slice(&(header | PAGE).to_be_bytes());
        if self.last_block != Some(bi) {
            // Block names are at most 255 bytes (checked when the block was made).
            self.buf.push(block.name().len() as u8);
            self.buf.extend_from_slice(block.name().as_bytes());
            self.last_block = Some(bi);
        }
        let data = self.buf.len();
        self.buf.resize(data + self.page_size, 0);
        block.copy_page(page, &mut self.buf[data..]);
        if is_zero(&self.buf[data..]) {
            self.buf.truncate(data + 1); // the fill byte, 0
            self.buf[at..at + 8].copy_from_slice(&(header | ZERO).to_be_bytes());
            self.stats.zero_pages.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.normal_pages.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the destination's preempt thread (at `POSTCOPY_LISTEN`): it takes the
/// connection with `accept`, then places each page it reads that is still missing,
/// until EOS or the source closes the channel. A malformed record or a failed accept
/// ends the thread; the main stream's end then reports the pages missing and why.
pub(crate) fn spawn_receiver(
    accept: PreemptAcceptor,
    blocks: Vec<Arc<dyn GuestRam>>,
    page_size: usize,
    stats: Arc<RamStats>,
    incoming: Arc<PostcopyIncoming>,
) {
    incoming.side_channel_opened();
    let thread_incoming = incoming.clone();
    let spawned = std::thread::Builder::new()
        .name("postcopy-preempt".into())
        .spawn(move || {
            let incoming = thread_incoming;
            let result =
                accept().and_then(|from| receive(from, &blocks, page_size, &stats, &incoming));
            incoming.side_channel_ended(result.err());
        });
    if let Err(e) = spawned {
        incoming.side_channel_ended(Some(e.into()));
    }
}

fn receive(
    from: Box<dyn Read + Send>,
    blocks: &[Arc<dyn GuestRam>],
    page_size: usize,
    stats: &RamStats,
    incoming: &PostcopyIncoming,
) -> Result<()> {
    let mut r = Reader::from_io(from);
    let mut records = RamRecordReader::new(page_size as u64);
    let mut last: Option<usize> = None;
    loop {
        let at = r.position();
        let record = match records.next(&mut r) {
            Ok(record) => record,
            // The source closes the channel between records when it is done.
            Err(_) if r.position() == at && matches!(r.at_end(), Ok(true)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (block, offset, zero) = match record {
            RamRecord::Eos => return Ok(()),
            RamRecord::Zero { block, offset } => (block, offset, true),
            RamRecord::Page { block, offset } => (block, offset, false),
            _ => {
                return Err(Error::invalid(
                    "RAM record",
                    "only ZERO, PAGE and EOS records are valid on the preempt channel",
                )
                .at_offset(at));
            }
        };
        let bi = match block {
            BlockRef::Same => last.unwrap_or(0),
            BlockRef::Named(name) => {
                blocks
                    .iter()
                    .position(|b| b.name() == name)
                    .ok_or_else(|| {
                        Error::invalid("RAM block", format!("unknown RAM block '{name}'"))
                            .at_offset(at)
                    })?
            }
        };
        last = Some(bi);
        let b = &blocks[bi];
        let page = super::handler::page_index(b.as_ref(), page_size, offset, at)?;
        incoming.side_channel_page(); // counted before it is placed: see the report
        place_postcopy_page(b.as_ref(), page_size, stats, incoming, &mut r, page, zero)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::RamBlock;
    use crate::ram::format::{EOS, XBZRLE};

    const PS: usize = 4096;

    /// A block of 4 pages, every page missing, and what receiving
    /// `bytes` on a preempt channel into it gives.
    fn receive_into(bytes: Vec<u8>) -> (Arc<RamBlock>, Result<()>) {
        let block = Arc::new(RamBlock::new("pc.ram", 4 * PS as u64).unwrap());
        let incoming = PostcopyIncoming::new(Box::new(std::io::sink()));
        incoming.attach(block.clone()).unwrap();
        let blocks = vec![block.clone() as Arc<dyn GuestRam>];
        let stats = RamStats::default();
        let r = receive(
            Box::new(std::io::Cursor::new(bytes)),
            &blocks,
            PS,
            &stats,
            &incoming,
        );
        (block, r)
    }

    /// A record header, written the way QEMU's `save_page_header` does.
    fn header(out: &mut Vec<u8>, offset: u64, flags: u64, block: Option<&str>) {
        let cont = if block.is_some() { 0 } else { CONTINUE };
        out.extend_from_slice(&(offset | flags | cont).to_be_bytes());
        if let Some(name) = block {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
    }

    #[test]
    fn pages_and_zero_pages_are_placed_and_the_rest_stays_missing() {
        let mut s = Vec::new();
        header(&mut s, 0x2000, PAGE, Some("pc.ram"));
        s.extend(std::iter::repeat_n(0xab, PS));
        header(&mut s, 0x1000, ZERO, None);
        s.push(0);
        s.extend_from_slice(&EOS.to_be_bytes());
        s.extend_from_slice(&[0xee; 8]); // after EOS: not read
        let (block, r) = receive_into(s);
        r.unwrap();
        assert!(!block.page_missing(2) && !block.page_missing(1));
        assert!(block.page_missing(0) && block.page_missing(3));
        let mut b = [0u8; 2];
        block.read(0x2000 + 100, &mut b);
        assert_eq!(b, [0xab, 0xab]);
    }

    #[test]
    fn a_channel_closed_between_records_ends_cleanly_and_mid_record_fails() {
        let mut s = Vec::new();
        header(&mut s, 0, PAGE, Some("pc.ram"));
        s.extend(std::iter::repeat_n(1, PS));
        let (block, r) = receive_into(s.clone());
        r.unwrap();
        assert!(!block.page_missing(0));
        s.truncate(s.len() - 10);
        let (block, r) = receive_into(s);
        assert!(r.is_err(), "a cut page is an error");
        assert!(block.page_missing(0), "and is not placed");
    }

    #[test]
    fn records_other_than_pages_unknown_blocks_and_pages_outside_fail() {
        let mut xbzrle = Vec::new();
        header(&mut xbzrle, 0, XBZRLE, Some("pc.ram"));
        xbzrle.extend_from_slice(&[1, 0, 0]);
        let mut unknown = Vec::new();
        header(&mut unknown, 0, ZERO, Some("other"));
        unknown.push(0);
        let mut outside = Vec::new();
        header(&mut outside, 4 * PS as u64, ZERO, Some("pc.ram"));
        outside.push(0);
        let mut continue_first = Vec::new();
        header(&mut continue_first, 0, ZERO, None);
        continue_first.push(0);
        for (what, bytes) in [
            ("XBZRLE", xbzrle),
            ("unknown block", unknown),
            ("outside", outside),
            ("CONTINUE first", continue_first),
        ] {
            let (block, r) = receive_into(bytes);
            assert!(r.is_err(), "{what}");
            assert_eq!(block.missing_pages(), 4, "{what}: nothing placed");
        }
    }
}

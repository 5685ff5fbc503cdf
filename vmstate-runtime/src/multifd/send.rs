//! The source's multifd channels: the RAM handler hands batches of dirty pages (up to
//! one packet's worth, of one block) to channel threads, each of which copies the
//! pages out of guest memory, tells zero pages from the others, and writes the packet
//! to its connection; a SYNC job makes every channel send a SYNC packet after what it
//! was given before (QEMU's `multifd_send_sync_main`).
//!
//! With compression each channel thread keeps its own stream
//! ([`compress`](super::compress)) and compresses each packet's copied pages at once.
//!
//! Jobs go round-robin to the channels through bounded queues, so a slow channel holds
//! the handler back instead of piling up memory. A channel whose connection fails
//! ends; the handler learns it at its next job or sync and fails the migration with the
//! channel's error.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::compress::{Compression, Compressor};
use super::packet::{FLAG_SYNC, Handshake, RamPacket, pages_per_packet};
use crate::error::{Error, Result};
use crate::ram::{GuestRam, RamStats, is_zero};

/// A connection for one channel.
pub type ChannelWriter = Box<dyn Write + Send>;

/// Opens one channel's connection, in that channel's thread (see
/// [`RamHandler::with_multifd_connecting`](crate::ram::RamHandler::with_multifd_connecting)).
pub type ChannelOpener = Box<dyn FnOnce() -> Result<ChannelWriter> + Send>;

enum Job {
    /// Pages (indices) of one block.
    Pages {
        block: Arc<dyn GuestRam>,
        pages: Vec<usize>,
    },
    /// A SYNC packet.
    Sync,
}

struct Channel {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// The source's channel threads.
pub(crate) struct MultifdSender {
    channels: Vec<Channel>,
    next: usize,
    page_size: usize,
}

impl MultifdSender {
    /// Starts one thread per opener; each opens its connection and writes its
    /// handshake. `compression` must have passed [`Compression::check`].
    pub(crate) fn start(
        openers: Vec<ChannelOpener>,
        page_size: usize,
        stats: Arc<RamStats>,
        compression: Compression,
    ) -> MultifdSender {
        let packet_num = Arc::new(AtomicU64::new(0));
        let channels = openers
            .into_iter()
            .enumerate()
            .map(|(id, w)| {
                let (tx, rx) = sync_channel(2);
                let (stats, packet_num) = (stats.clone(), packet_num.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("multifd{id}"))
                    .spawn(move || {
                        let ctx = ChannelContext {
                            page_size,
                            stats: &stats,
                            packet_num: &packet_num,
                            compression,
                        };
                        run_channel(id as u8, w, rx, &ctx)
                    })
                    .expect("a multifd channel thread");
                Channel {
                    jobs: Some(tx),
                    thread: Some(thread),
                }
            })
            .collect();
        MultifdSender {
            channels,
            next: 0,
            page_size,
        }
    }

    /// Pages a packet holds.
    pub(crate) fn batch(&self) -> usize {
        pages_per_packet(self.page_size)
    }

    /// Hands `pages` of `block` (at most [`batch`](Self::batch)) to the next channel.
    pub(crate) fn send_pages(&mut self, block: Arc<dyn GuestRam>, pages: Vec<usize>) -> Result<()> {
        let i = self.next;
        self.next = (self.next + 1) % self.channels.len();
        self.submit(i, Job::Pages { block, pages })
    }

    /// Every channel sends a SYNC packet after what it was given.
    pub(crate) fn sync(&mut self) -> Result<()> {
        for i in 0..self.channels.len() {
            self.submit(i, Job::Sync)?;
        }
        Ok(())
    }

    /// Whether [`finish`](Self::finish) ran: the connections are used up.
    pub(crate) fn is_finished(&self) -> bool {
        self.channels.iter().all(|c| c.jobs.is_none())
    }

    /// Closes the queues and waits for every channel to have written everything.
    pub(crate) fn finish(&mut self) -> Result<()> {
        for c in &mut self.channels {
            c.jobs = None;
        }
        let mut first = None;
        for (i, c) in self.channels.iter_mut().enumerate() {
            if let Some(t) = c.thread.take() {
                let r = t.join().unwrap_or_else(|_| {
                    Err(Error::invalid("multifd channel", "the thread panicked"))
                });
                if let Err(e) = r {
                    first.get_or_insert(channel_error(i, e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn submit(&mut self, i: usize, job: Job) -> Result<()> {
        let sent = self.channels[i]
            .jobs
            .as_ref()
            .ok_or_else(|| Error::invalid("multifd channel", "the channels are closed"))?
            .send(job);
        if sent.is_ok() {
            return Ok(());
        }
        // The thread ended: its result says why.
        let c = &mut self.channels[i];
        c.jobs = None;
        let why = match c.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => Error::invalid("multifd channel", "the channel ended"),
        };
        Err(channel_error(i, why))
    }
}

impl Drop for MultifdSender {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn channel_error(i: usize, e: Error) -> Error {
    Error::invalid("multifd channel", format!("channel {i}: {e}"))
}

/// What every channel thread shares.
struct ChannelContext<'a> {
    page_size: usize,
    stats: &'a RamStats,
    /// Packet numbers count across the channels.
    packet_num: &'a AtomicU64,
    compression: Compression,
}

/// One channel's thread: the handshake, then a packet per job.
fn run_channel(
    id: u8,
    open: ChannelOpener,
    jobs: Receiver<Job>,
    ctx: &ChannelContext<'_>,
) -> Result<()> {
    let ChannelContext {
        page_size,
        stats,
        packet_num,
        compression,
    } = *ctx;
    let mut w = open()?;
    w.write_all(&Handshake { uuid: [0; 16], id }.encode())?;
    let mut compressor = Compressor::new(compression)?;
    let slots = pages_per_packet(page_size) as u32;
    let mut data = Vec::with_capacity(pages_per_packet(page_size) * page_size);
    let (mut out, mut zdata) = (Vec::new(), Vec::new());
    while let Ok(job) = jobs.recv() {
        out.clear();
        data.clear();
        let mut packet = match job {
            Job::Sync => RamPacket {
                flags: FLAG_SYNC,
                packet_num: packet_num.fetch_add(1, Ordering::Relaxed),
                ..Default::default()
            },
            Job::Pages { block, pages } => {
                let (mut normal, mut zero) = (Vec::new(), Vec::new());
                for p in pages {
                    let offset = (p * page_size) as u64;
                    let known_zero = block.page_is_zero(p);
                    if known_zero == Some(true) {
                        zero.push(offset);
                        continue;
                    }
                    // Copied once, straight into the packet's data; taken back out if
                    // the copy turns out zero.
                    let at = data.len();
                    data.resize(at + page_size, 0);
                    block.copy_page(p, &mut data[at..]);
                    if known_zero.is_none() && is_zero(&data[at..]) {
                        data.truncate(at);
                        zero.push(offset);
                    } else {
                        normal.push(offset);
                    }
                }
                stats
                    .normal_pages
                    .fetch_add(normal.len() as u64, Ordering::Relaxed);
                stats
                    .zero_pages
                    .fetch_add(zero.len() as u64, Ordering::Relaxed);
                RamPacket {
                    // A packet with pages names its method even without data, as
                    // QEMU's do (its receiver checks it).
                    flags: compression.flag(),
                    pages_alloc: slots,
                    next_packet_size: data.len() as u32,
                    packet_num: packet_num.fetch_add(1, Ordering::Relaxed),
                    block: block.name().to_string(),
                    normal,
                    zero,
                }
            }
        };
        let payload: &[u8] = match &mut compressor {
            Some(c) if !data.is_empty() => {
                zdata.clear();
                c.compress(&data, &mut zdata)?;
                &zdata
            }
            _ => &data,
        };
        packet.next_packet_size = payload.len() as u32;
        packet.encode(page_size, &mut out);
        out.extend_from_slice(payload);
        w.write_all(&out)?;
        if packet.is_sync() {
            w.flush()?;
        }
        stats
            .multifd_bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
    }
    w.flush()?;
    Ok(())
}

//! The destination's multifd channels: one thread per channel reads its packets and
//! places the pages straight into guest memory, while the main stream loads as usual;
//! at each `RAM_SAVE_FLAG_MULTIFD_FLUSH` record the main stream waits until every
//! channel has reached its next SYNC packet, then lets them all go on (QEMU's
//! `multifd_recv_sync_main`).
//!
//! ```no_run
//! # use std::net::TcpListener;
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! use vmstate::multifd::recv::{MultifdReceiver, accept_channels};
//! use vmstate::ram::{RamBlock, RamHandler, RAM_VERSION};
//! # fn main() -> vmstate::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:4444")?;
//! let ram = Arc::new(RamBlock::new("ram", 64 << 20)?);
//! let (main, channels) = accept_channels(&listener, 2, Duration::from_secs(30))?;
//! let receiver = MultifdReceiver::start(vec![ram.clone()], channels);
//! let handler = RamHandler::new(vec![ram])?.with_multifd_flush(receiver.flush_hook());
//! // ... register `handler` as "ram", load_stream(&mut reg, &mut Reader::from_io(main), ..)
//! receiver.finish()?;
//! # Ok(()) }
//! ```

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::packet::{
    FLAG_COMPRESSION_MASK, FLAG_DEVICE_STATE, HANDSHAKE_LEN, Handshake, MAGIC, RamPacket,
    packet_flags, ram_packet_len,
};
use crate::error::{Error, Result};
use crate::ram::GuestRam;

/// What the main stream calls at each multifd flush record.
pub type FlushHook = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Accepts the main connection and `channels` multifd connections on `listener`, in
/// whatever order they come, telling them apart by their first four bytes as QEMU
/// does (`QEVM`: the main stream; the multifd magic: a channel). Gives up after
/// `timeout`.
pub fn accept_channels(
    listener: &TcpListener,
    channels: usize,
    timeout: Duration,
) -> Result<(TcpStream, Vec<TcpStream>)> {
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true)?;
    let (mut main, mut extra) = (None, Vec::new());
    while main.is_none() || extra.len() < channels {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false)?;
                sock.set_read_timeout(Some(timeout))?;
                let mut first = [0u8; 4];
                let mut got = 0;
                while got < 4 {
                    got = sock.peek(&mut first)?;
                    if got == 0 {
                        break;
                    }
                }
                sock.set_read_timeout(None)?;
                match u32::from_be_bytes(first) {
                    _ if got < 4 => continue, // closed before saying what it is
                    0x5145_564d if main.is_none() => main = Some(sock),
                    MAGIC if extra.len() < channels => extra.push(sock),
                    other => {
                        listener.set_nonblocking(false)?;
                        return Err(Error::invalid(
                            "multifd",
                            format!("an unexpected connection starting with 0x{other:08x}"),
                        ));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    listener.set_nonblocking(false)?;
                    return Err(Error::invalid(
                        "multifd",
                        format!(
                            "{} of {channels} channels and {} main stream connected within {timeout:?}",
                            extra.len(),
                            if main.is_some() { "the" } else { "no" }
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
    listener.set_nonblocking(false)?;
    Ok((main.expect("accepted"), extra))
}

/// Counters of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// The channel's id from its handshake.
    pub id: u8,
    /// Packets read.
    pub packets: u64,
    /// Pages placed with their data.
    pub normal_pages: u64,
    /// Pages zeroed.
    pub zero_pages: u64,
    /// SYNC packets.
    pub syncs: u64,
}

#[derive(Default)]
struct SyncState {
    /// Channels waiting at a SYNC packet to be let go.
    waiting: usize,
    /// Bumped each time the main stream lets the channels go.
    generation: u64,
    /// The first channel failure, which ends every wait.
    failed: Option<String>,
    /// Channels that ended (their connection closed).
    ended: usize,
}

struct Shared {
    channels: usize,
    state: Mutex<SyncState>,
    cond: Condvar,
}

/// The running channel threads; see the [module documentation](self).
pub struct MultifdReceiver {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<ChannelStats>>>,
}

impl MultifdReceiver {
    /// Starts one thread per channel, placing pages into `blocks` (found by name).
    pub fn start<C: Read + Send + 'static>(
        blocks: Vec<Arc<dyn GuestRam>>,
        channels: Vec<C>,
    ) -> MultifdReceiver {
        let shared = Arc::new(Shared {
            channels: channels.len(),
            state: Mutex::new(SyncState::default()),
            cond: Condvar::new(),
        });
        let blocks = Arc::new(blocks);
        let threads = channels
            .into_iter()
            .map(|c| {
                let (shared, blocks) = (shared.clone(), blocks.clone());
                std::thread::spawn(move || {
                    let result = run_channel(c, &blocks, &shared);
                    let mut s = shared.state.lock().expect("sync state");
                    s.ended += 1;
                    if let Err(e) = &result {
                        s.failed.get_or_insert_with(|| e.to_string());
                    }
                    shared.cond.notify_all();
                    result
                })
            })
            .collect();
        MultifdReceiver { shared, threads }
    }

    /// What the RAM handler calls at each flush record: waits until every channel has
    /// reached its next SYNC packet, then lets them go on. A channel's failure, or a
    /// channel that ended without its SYNC, is an error here.
    pub fn flush_hook(&self) -> FlushHook {
        let shared = self.shared.clone();
        Arc::new(move || {
            let mut s = shared.state.lock().expect("sync state");
            loop {
                if let Some(e) = &s.failed {
                    return Err(Error::invalid("multifd channel", e.clone()));
                }
                if s.waiting == shared.channels {
                    s.waiting = 0;
                    s.generation += 1;
                    shared.cond.notify_all();
                    return Ok(());
                }
                if s.ended + s.waiting == shared.channels && s.ended > 0 {
                    return Err(Error::invalid(
                        "multifd channel",
                        format!(
                            "{} channel(s) closed before the sync the main stream waits for",
                            s.ended
                        ),
                    ));
                }
                s = shared.cond.wait(s).expect("sync state");
            }
        })
    }

    /// Waits for every channel to end (its connection closed by the source) and
    /// returns their counters, or the first channel's error.
    pub fn finish(self) -> Result<Vec<ChannelStats>> {
        let mut out = Vec::new();
        let mut first_error = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(stats)) => out.push(stats),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(Error::invalid(
                        "multifd channel",
                        "a channel thread panicked",
                    ));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// One channel: the handshake, then packets until the connection closes.
fn run_channel(
    mut c: impl Read,
    blocks: &[Arc<dyn GuestRam>],
    shared: &Shared,
) -> Result<ChannelStats> {
    let page_size = blocks.first().map_or(4096, |b| b.page_size());
    let mut hs = [0u8; HANDSHAKE_LEN];
    c.read_exact(&mut hs)?;
    let mut stats = ChannelStats {
        id: Handshake::decode(&hs)?.id,
        ..Default::default()
    };
    let mut offset = HANDSHAKE_LEN as u64;
    let mut header = vec![0u8; ram_packet_len(page_size)];
    let mut page = vec![0u8; page_size];
    let what = |stats: &ChannelStats| format!("channel {}", stats.id);
    loop {
        // A clean end: the connection closes between packets.
        match read_full(&mut c, &mut header)? {
            0 => return Ok(stats),
            n if n < header.len() => {
                return Err(Error::invalid(
                    "multifd channel",
                    format!("{}: a packet cut short after {n} bytes", what(&stats)),
                )
                .at_offset(offset));
            }
            _ => {}
        }
        let flags = packet_flags(header[..12].try_into().expect("12 bytes"))
            .map_err(|e| e.at_offset(offset))?;
        if flags & FLAG_DEVICE_STATE != 0 || flags & FLAG_COMPRESSION_MASK != 0 {
            return Err(Error::invalid(
                "multifd channel",
                format!(
                    "{}: packet flags 0x{flags:x} (device state or compression are not supported yet)",
                    what(&stats)
                ),
            )
            .at_offset(offset));
        }
        let p = RamPacket::decode(&header, page_size).map_err(|e| e.at_offset(offset))?;
        offset += header.len() as u64;
        stats.packets += 1;
        if p.next_packet_size as usize != p.normal.len() * page_size {
            return Err(Error::invalid(
                "multifd channel",
                format!(
                    "{}: packet {} announces {} bytes for {} pages",
                    what(&stats),
                    p.packet_num,
                    p.next_packet_size,
                    p.normal.len()
                ),
            ));
        }
        if !p.normal.is_empty() || !p.zero.is_empty() {
            let block = blocks.iter().find(|b| b.name() == p.block).ok_or_else(|| {
                Error::invalid(
                    "multifd channel",
                    format!("{}: unknown RAM block '{}'", what(&stats), p.block),
                )
            })?;
            let index = |off: u64| -> Result<usize> {
                match off.checked_add(page_size as u64) {
                    Some(end) if end <= block.len() => Ok((off / page_size as u64) as usize),
                    _ => Err(Error::invalid(
                        "multifd channel",
                        format!(
                            "packet {}: offset 0x{off:x} is outside block '{}'",
                            p.packet_num, p.block
                        ),
                    )),
                }
            };
            for &off in &p.normal {
                let i = index(off)?;
                c.read_exact(&mut page)?;
                block.load_page(i, &page);
            }
            for &off in &p.zero {
                block.zero_page(index(off)?);
            }
            offset += p.next_packet_size as u64;
            stats.normal_pages += p.normal.len() as u64;
            stats.zero_pages += p.zero.len() as u64;
        }
        if p.is_sync() {
            stats.syncs += 1;
            let mut s = shared.state.lock().expect("sync state");
            let generation = s.generation;
            s.waiting += 1;
            shared.cond.notify_all();
            while s.generation == generation && s.failed.is_none() {
                s = shared.cond.wait(s).expect("sync state");
            }
            if let Some(e) = &s.failed {
                return Err(Error::invalid("multifd channel", e.clone()));
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

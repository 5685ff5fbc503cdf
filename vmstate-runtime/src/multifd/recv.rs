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

use super::compress::{Decompressor, MAX_COMPRESSED_BYTES};
use super::packet::{
    FLAG_COMPRESSION_MASK, FLAG_DEVICE_STATE, HANDSHAKE_LEN, Handshake, MAGIC, RamPacket,
    packet_flags, ram_packet_len,
};
use crate::error::{Error, Result};
use crate::migrate::DEFAULT_IO_TIMEOUT;
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

/// [`accept_channels`] over mutual TLS, each connection with its own TLS session:
/// the first connection is the main stream and the next `channels` are the
/// channels, as QEMU's destination assumes under TLS (it cannot peek through it).
/// Both this project's source and QEMU's open the main connection first. Each
/// handshake, and the whole, are bounded by `timeout`; the streams come back without
/// timeouts.
#[cfg(feature = "tls")]
pub fn accept_tls_channels(
    listener: &TcpListener,
    channels: usize,
    timeout: Duration,
    server: &crate::transport::tls::TlsServer,
) -> Result<(
    crate::transport::tls::TlsStream,
    Vec<crate::transport::tls::TlsStream>,
)> {
    use crate::transport::Connection;
    let deadline = Instant::now() + timeout;
    let accept_one = |what: &str| -> Result<crate::transport::tls::TlsStream> {
        let sock = accept_before(listener, deadline)?.ok_or_else(|| {
            Error::invalid(
                "multifd",
                format!("{what} did not connect within {timeout:?}"),
            )
        })?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let tls = server.accept(sock)?;
        tls.set_io_timeout(None)?;
        Ok(tls)
    };
    let main = accept_one("the main stream")?;
    let extra = (0..channels)
        .map(|i| accept_one(&format!("channel {i} of {channels}")))
        .collect::<Result<Vec<_>>>()?;
    Ok((main, extra))
}

/// The next connection on `listener`, or `None` once `deadline` passed.
#[cfg(feature = "tls")]
fn accept_before(listener: &TcpListener, deadline: Instant) -> Result<Option<TcpStream>> {
    listener.set_nonblocking(true)?;
    let result = loop {
        match listener.accept() {
            Ok((sock, _)) => break sock.set_nonblocking(false).map(|_| Some(sock)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(None),
            Err(e) => break Err(e),
        }
    };
    listener.set_nonblocking(false)?;
    Ok(result?)
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
    /// Compressed page-data bytes read (0 on a channel without compression); the
    /// pages they held are counted in `normal_pages`.
    pub compressed_bytes: u64,
}

struct SyncState {
    /// Channels waiting at a SYNC packet to be let go.
    waiting: usize,
    /// Bumped each time the main stream lets the channels go.
    generation: u64,
    /// The first channel failure, which ends every wait.
    failed: Option<String>,
    /// Channels that ended (their connection closed).
    ended: usize,
    /// Packets read by all channels, the sign of progress.
    packets: u64,
    /// How long the main stream waits for channels that make no progress.
    stall_timeout: Duration,
}

impl SyncState {
    /// Waits on `cond` until `done` says the wait is over (`Some`), failing once no
    /// channel has read a packet for the stall timeout.
    fn wait_until<'a, T>(
        mut s: std::sync::MutexGuard<'a, SyncState>,
        cond: &Condvar,
        what: &str,
        mut done: impl FnMut(&mut SyncState) -> Option<Result<T>>,
    ) -> Result<T> {
        let mut seen = (s.packets, Instant::now());
        loop {
            if let Some(r) = done(&mut s) {
                return r;
            }
            if s.packets != seen.0 {
                seen = (s.packets, Instant::now());
            }
            let left = s.stall_timeout.saturating_sub(seen.1.elapsed());
            if left.is_zero() {
                let message = format!(
                    "{what}: no channel read a packet for {:?} ({} waiting at their SYNC, \
                     {} ended)",
                    s.stall_timeout, s.waiting, s.ended
                );
                // Every channel still reading stops at its next packet.
                s.failed.get_or_insert_with(|| message.clone());
                cond.notify_all();
                return Err(Error::invalid("multifd channel", message));
            }
            s = cond.wait_timeout(s, left).expect("sync state").0;
        }
    }
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
            state: Mutex::new(SyncState {
                waiting: 0,
                generation: 0,
                failed: None,
                ended: 0,
                packets: 0,
                stall_timeout: DEFAULT_IO_TIMEOUT,
            }),
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

    /// How long the main stream waits, at a flush or in [`finish`](Self::finish), while
    /// no channel reads a packet: a stalled channel then fails the load instead of
    /// hanging it. Default: [`DEFAULT_IO_TIMEOUT`]. A channel may stay silent for
    /// longer between syncs (an idle guest sends nothing); only waits count.
    pub fn set_stall_timeout(&self, timeout: Duration) {
        self.shared.state.lock().expect("sync state").stall_timeout = timeout;
    }

    /// What the RAM handler calls at each flush record: waits until every channel has
    /// reached its next SYNC packet, then lets them go on. A channel's failure, a
    /// channel that ended without its SYNC, or no progress for the stall timeout is an
    /// error here.
    pub fn flush_hook(&self) -> FlushHook {
        let shared = self.shared.clone();
        Arc::new(move || {
            let s = shared.state.lock().expect("sync state");
            SyncState::wait_until(s, &shared.cond, "waiting at a flush", |s| {
                if let Some(e) = &s.failed {
                    return Some(Err(Error::invalid("multifd channel", e.clone())));
                }
                if s.waiting == shared.channels {
                    s.waiting = 0;
                    s.generation += 1;
                    shared.cond.notify_all();
                    return Some(Ok(()));
                }
                if s.ended + s.waiting == shared.channels && s.ended > 0 {
                    return Some(Err(Error::invalid(
                        "multifd channel",
                        format!(
                            "{} channel(s) closed before the sync the main stream waits for",
                            s.ended
                        ),
                    )));
                }
                None
            })
        })
    }

    /// Waits for every channel to end (its connection closed by the source) and
    /// returns their counters, or the first channel's error. Channels that make no
    /// progress for the stall timeout are given up on (their threads end when their
    /// connections do) and make this an error.
    pub fn finish(self) -> Result<Vec<ChannelStats>> {
        let s = self.shared.state.lock().expect("sync state");
        let channels = self.shared.channels;
        SyncState::wait_until(
            s,
            &self.shared.cond,
            "waiting for the channels to close",
            |s| (s.ended == channels).then_some(Ok(())),
        )?;
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
    // Compression: the channel's method (from its first packet with pages), its
    // stream, and the packet's bytes before and after decompression.
    let mut method_seen: Option<u32> = None;
    let mut decompressor: Option<Decompressor> = None;
    let (mut compressed, mut plain) = (Vec::new(), Vec::new());
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
        if flags & FLAG_DEVICE_STATE != 0 {
            return Err(Error::invalid(
                "multifd channel",
                format!(
                    "{}: a device-state packet (flags 0x{flags:x}); device state on \
                     multifd channels is not supported yet",
                    what(&stats)
                ),
            )
            .at_offset(offset));
        }
        let p = RamPacket::decode(&header, page_size).map_err(|e| e.at_offset(offset))?;
        offset += header.len() as u64;
        stats.packets += 1;
        {
            let mut s = shared.state.lock().expect("sync state");
            if let Some(e) = &s.failed {
                return Err(Error::invalid("multifd channel", e.clone()));
            }
            s.packets += 1;
        }
        let has_pages = !p.normal.is_empty() || !p.zero.is_empty();
        // A SYNC packet without pages carries no method (QEMU's neither); packets with
        // pages name the channel's one method, fixed by the first of them.
        if has_pages {
            let method = flags & FLAG_COMPRESSION_MASK;
            match method_seen {
                None => {
                    decompressor = Decompressor::for_flags(flags)
                        .map_err(|e| e.at_offset(offset - header.len() as u64))?;
                    method_seen = Some(method);
                }
                Some(m) if m != method => {
                    return Err(Error::invalid(
                        "multifd channel",
                        format!(
                            "{}: packet {} has compression bits 0x{method:x}, earlier \
                             packets 0x{m:x}",
                            what(&stats),
                            p.packet_num
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let expected = p.normal.len() * page_size;
        let size_ok = match &decompressor {
            Some(_) if !p.normal.is_empty() => p.next_packet_size as usize <= MAX_COMPRESSED_BYTES,
            _ => p.next_packet_size as usize == expected,
        };
        if !size_ok {
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
        if has_pages {
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
            match &mut decompressor {
                Some(d) if !p.normal.is_empty() => {
                    let pages = p
                        .normal
                        .iter()
                        .map(|&off| index(off))
                        .collect::<Result<Vec<_>>>()?;
                    compressed.resize(p.next_packet_size as usize, 0);
                    c.read_exact(&mut compressed)?;
                    stats.compressed_bytes += compressed.len() as u64;
                    d.decompress(&compressed, expected, &mut plain)
                        .map_err(|e| {
                            Error::invalid(
                                "multifd channel",
                                format!("{}: packet {}: {e}", what(&stats), p.packet_num),
                            )
                            .at_offset(offset)
                        })?;
                    for (i, data) in pages.into_iter().zip(plain.chunks_exact(page_size)) {
                        block.load_page(i, data);
                    }
                }
                _ => {
                    for &off in &p.normal {
                        let i = index(off)?;
                        c.read_exact(&mut page)?;
                        block.load_page(i, &page);
                    }
                }
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

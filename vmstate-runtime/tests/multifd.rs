//! The destination's multifd channels fed with packets built here: pages land in
//! their blocks, flushes wait for every channel's SYNC, and a channel cut short or
//! lying about its pages fails the load instead of hanging it.

use std::io::Cursor;
use std::sync::Arc;

use vmstate::multifd::compress::Compression;
use vmstate::multifd::packet::{FLAG_SYNC, FLAG_ZLIB, FLAG_ZSTD, Handshake, RamPacket};
use vmstate::multifd::recv::MultifdReceiver;
use vmstate::ram::{GuestRam, RamBlock};

const PAGE: usize = 4096;

fn sync(num: u64) -> RamPacket {
    RamPacket {
        flags: FLAG_SYNC,
        packet_num: num,
        ..Default::default()
    }
}

/// A channel's bytes: handshake, then each packet with the data of its normal pages
/// (each page filled with the low byte of its offset / 4096, plus one).
fn channel(id: u8, packets: &[RamPacket]) -> Vec<u8> {
    let mut out = Handshake { uuid: [0; 16], id }.encode().to_vec();
    for p in packets {
        let mut p = p.clone();
        p.next_packet_size = (p.normal.len() * PAGE) as u32;
        p.encode(PAGE, &mut out);
        for off in &p.normal {
            out.extend(std::iter::repeat_n((off / PAGE as u64) as u8 + 1, PAGE));
        }
    }
    out
}

fn pages(block: &str, normal: &[u64], zero: &[u64], num: u64) -> RamPacket {
    RamPacket {
        pages_alloc: 128,
        packet_num: num,
        block: block.into(),
        normal: normal.iter().map(|p| p * PAGE as u64).collect(),
        zero: zero.iter().map(|p| p * PAGE as u64).collect(),
        ..Default::default()
    }
}

fn blocks() -> (Arc<RamBlock>, Arc<RamBlock>, Vec<Arc<dyn GuestRam>>) {
    let a = Arc::new(RamBlock::new("pc.ram", 16 * PAGE as u64).unwrap());
    let b = Arc::new(RamBlock::new("vram", 4 * PAGE as u64).unwrap());
    let all: Vec<Arc<dyn GuestRam>> = vec![a.clone(), b.clone()];
    (a, b, all)
}

fn first_byte(b: &RamBlock, page: u64) -> u8 {
    let mut x = [0u8; 1];
    b.read(page * PAGE as u64, &mut x);
    x[0]
}

#[test]
fn pages_from_every_channel_land_in_their_blocks_and_flushes_wait_for_each_sync() {
    let (a, b, all) = blocks();
    b.write(0, &[9; PAGE]); // to be zeroed by a zero-page offset
    let c0 = channel(
        0,
        &[sync(0), pages("pc.ram", &[1, 2], &[], 2), sync(4), sync(6)],
    );
    let c1 = channel(
        1,
        &[sync(1), pages("vram", &[3], &[0], 3), sync(5), sync(7)],
    );
    let rx = MultifdReceiver::start(all, vec![Cursor::new(c0), Cursor::new(c1)]);
    let flush = rx.flush_hook();
    for _ in 0..3 {
        flush().unwrap();
    }
    let stats = rx.finish().unwrap();
    assert_eq!(stats.iter().map(|s| s.syncs).sum::<u64>(), 6);
    assert_eq!(
        (first_byte(&a, 1), first_byte(&a, 2), first_byte(&a, 3)),
        (2, 3, 0)
    );
    assert_eq!((first_byte(&b, 3), first_byte(&b, 0)), (4, 0));
}

#[test]
fn a_channel_cut_short_fails_the_flush_and_the_finish() {
    let (_, _, all) = blocks();
    let c0 = channel(0, &[sync(0), sync(2)]);
    let mut c1 = channel(1, &[sync(1), pages("pc.ram", &[5], &[], 3), sync(4)]);
    c1.truncate(64 + 1344 + 1344 + 100); // inside the page data
    let rx = MultifdReceiver::start(all, vec![Cursor::new(c0), Cursor::new(c1)]);
    let flush = rx.flush_hook();
    flush().unwrap(); // both SYNCs of the setup arrived
    let err = flush().unwrap_err();
    assert!(err.to_string().contains("multifd channel"), "{err}");
    assert!(rx.finish().is_err());
}

#[test]
fn a_packet_for_an_unknown_block_or_outside_it_is_refused() {
    for (bad, expected) in [
        (pages("nope", &[0], &[], 1), "unknown RAM block 'nope'"),
        (pages("vram", &[4], &[], 1), "outside block 'vram'"),
    ] {
        let (_, _, all) = blocks();
        let c = channel(0, &[sync(0), bad]);
        let rx = MultifdReceiver::start(all, vec![Cursor::new(c)]);
        rx.flush_hook()().unwrap();
        let err = rx.flush_hook()().unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(rx.finish().unwrap_err().to_string().contains(expected));
    }
}

/// A compressed channel: each packet's page data (pages filled as in [`channel`])
/// through `compress`, which is given each packet's plain bytes in turn and returns
/// its compressed bytes. The packets get `flag`.
fn compressed_channel(
    packets: &[RamPacket],
    flag: u32,
    mut compress: impl FnMut(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = Handshake {
        uuid: [0; 16],
        id: 0,
    }
    .encode()
    .to_vec();
    for p in packets {
        let mut p = p.clone();
        let plain: Vec<u8> = p
            .normal
            .iter()
            .flat_map(|off| std::iter::repeat_n((off / PAGE as u64) as u8 + 1, PAGE))
            .collect();
        let data = if plain.is_empty() {
            Vec::new()
        } else {
            compress(&plain)
        };
        if !p.is_sync() {
            p.flags |= flag;
        }
        p.next_packet_size = data.len() as u32;
        p.encode(PAGE, &mut out);
        out.extend(data);
    }
    out
}

/// zlib and zstd streams written by the crates' own stream writers (not this
/// project's compressor), flushed after each packet, are read by the receiver.
#[test]
fn channels_compressed_by_independent_writers_load() {
    use std::io::Write;
    let packets = [
        sync(0),
        pages("pc.ram", &[1, 2], &[3], 1),
        pages("vram", &[], &[0], 2),
        pages("vram", &[3], &[], 3),
        sync(4),
    ];
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let zlib_channel = compressed_channel(&packets, FLAG_ZLIB, |plain| {
        zlib.write_all(plain).unwrap();
        zlib.flush().unwrap(); // Z_SYNC_FLUSH
        std::mem::take(zlib.get_mut())
    });
    let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 5).unwrap();
    let zstd_channel = compressed_channel(&packets, FLAG_ZSTD, |plain| {
        zstd.write_all(plain).unwrap();
        zstd.flush().unwrap(); // ZSTD_e_flush
        std::mem::take(zstd.get_mut())
    });
    for bytes in [zlib_channel, zstd_channel] {
        let (a, b, all) = blocks();
        a.write(3 * PAGE as u64, &[9; PAGE]);
        b.write(0, &[9; PAGE]);
        let rx = MultifdReceiver::start(all, vec![Cursor::new(bytes)]);
        rx.flush_hook()().unwrap();
        rx.flush_hook()().unwrap();
        let stats = rx.finish().unwrap();
        assert_eq!((stats[0].normal_pages, stats[0].zero_pages), (3, 2));
        assert_eq!(
            (first_byte(&a, 1), first_byte(&a, 2), first_byte(&a, 3)),
            (2, 3, 0)
        );
        assert_eq!((first_byte(&b, 3), first_byte(&b, 0)), (4, 0));
    }
}

#[test]
fn compressed_packets_that_lie_are_refused() {
    use std::io::Write;
    let zlib = |level| {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
        move |plain: &[u8]| {
            z.write_all(plain).unwrap();
            z.flush().unwrap();
            std::mem::take(z.get_mut())
        }
    };
    let two = [pages("pc.ram", &[1], &[], 1), pages("pc.ram", &[2], &[], 2)];
    // The second packet claims zstd on a zlib channel.
    let mut mixed = compressed_channel(&two[..1], FLAG_ZLIB, zlib(1));
    mixed.extend(
        &compressed_channel(&two[1..], FLAG_ZSTD, |p| zstd::encode_all(p, 1).unwrap())[64..],
    );
    // A packet whose data inflates to one page while it lists two.
    let mut short = compressed_channel(&[pages("pc.ram", &[1], &[], 1)], FLAG_ZLIB, zlib(1));
    short[64 + 16..64 + 20].copy_from_slice(&2u32.to_be_bytes());
    short[64 + 320 + 8..64 + 320 + 16].copy_from_slice(&(2 * PAGE as u64).to_be_bytes());
    // More compressed bytes than QEMU's receive buffer holds.
    let mut huge = compressed_channel(&[pages("pc.ram", &[1], &[], 1)], FLAG_ZLIB, zlib(1));
    huge[64 + 20..64 + 24].copy_from_slice(&(1u32 << 21).to_be_bytes());
    // A method implemented by hardware accelerators only (QPL).
    let qpl = compressed_channel(&[pages("pc.ram", &[1], &[], 1)], 4 << 1, zlib(1));
    for (bytes, expected) in [
        (mixed, "compression bits 0x4, earlier packets 0x2"),
        (short, "expected 8192"),
        (huge, "announces 2097152 bytes for 1 pages"),
        (qpl, "QPL"),
    ] {
        let (_, _, all) = blocks();
        let rx = MultifdReceiver::start(all, vec![Cursor::new(bytes)]);
        let err = rx.finish().unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

/// Our multifd source into our multifd destination with `compression`, through
/// in-memory pipes, for a guest of two blocks whose pages the channels share: text,
/// random and repeated pages, a page written between rounds, a page that became zero
/// and one written for completion all arrive in their blocks.
fn our_source_reaches_our_destination(compression: Compression) {
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
    use vmstate::transport::pipe;
    use vmstate::{IterationStatus, Reader, Registration, Registry};

    let src_ram = Arc::new(RamBlock::new("pc.ram", 1024 * PAGE as u64).unwrap());
    let src_vram = Arc::new(RamBlock::new("vram", 64 * PAGE as u64).unwrap());
    for p in 0..300u64 {
        src_ram.write_u64(p * 3 * PAGE as u64, p + 1);
    }
    let text: Vec<u8> = b"migration stream, page by page; "
        .iter()
        .copied()
        .cycle()
        .take(40 * PAGE)
        .collect();
    src_ram.write(900 * PAGE as u64, &text);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..20 * PAGE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    src_vram.write(10 * PAGE as u64, &random);
    let (main_w, main_r) = pipe();
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (w, r) = pipe();
        writers.push(Box::new(w) as Box<dyn std::io::Write + Send>);
        readers.push(r);
    }
    let dst = std::thread::spawn(move || {
        let ram = Arc::new(RamBlock::new("pc.ram", 1024 * PAGE as u64).unwrap());
        let vram = Arc::new(RamBlock::new("vram", 64 * PAGE as u64).unwrap());
        let all: Vec<Arc<dyn GuestRam>> = vec![ram.clone(), vram.clone()];
        let rx = MultifdReceiver::start(all, readers);
        let mut reg = Registry::new();
        let h = RamHandler::new(vec![ram.clone(), vram.clone()])
            .unwrap()
            .with_multifd_flush(rx.flush_hook());
        reg.register_iterative("ram", RAM_VERSION, h, Registration::new())
            .unwrap();
        load_stream(
            &mut reg,
            &mut Reader::from_io(main_r),
            &LoadOptions::default(),
        )
        .unwrap();
        (ram, vram, rx.finish().unwrap())
    });
    let handler = RamHandler::new(vec![src_ram.clone(), src_vram.clone()])
        .unwrap()
        .with_multifd(writers, compression)
        .unwrap();
    let stats = handler.stats();
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    {
        let mut s = SaveSession::new(&mut reg, main_w, StreamConfig::new("m"));
        s.setup().unwrap();
        while s.iterate(64 * PAGE as u64).unwrap() == IterationStatus::More {}
        src_ram.write(5 * PAGE as u64, b"between the rounds");
        src_ram.write(3 * PAGE as u64, &[0; 8]); // page 3 held 2: now zero
        src_vram.write(63 * PAGE as u64, b"vram between the rounds");
        while s.iterate(64 * PAGE as u64).unwrap() == IterationStatus::More {}
        src_ram.write(1000 * PAGE as u64, b"in completion");
        s.complete().unwrap();
    }
    let (ram, vram, channels) = dst.join().unwrap();
    for (src, copy) in [(&src_ram, &ram), (&src_vram, &vram)] {
        for p in 0..src.pages() {
            assert_eq!(
                src.page_checksum(p),
                copy.page_checksum(p),
                "{compression}: {} page {p}",
                src.name()
            );
        }
    }
    assert_eq!(first_byte(&ram, 3), 0);
    assert_eq!(channels.len(), 3);
    assert!(channels.iter().all(|c| c.normal_pages > 0), "{channels:?}");
    let s = stats.get();
    let data = (s.normal_pages * PAGE as u64) as f64;
    match compression {
        // 40 pages of text and 300 nearly empty pages shrink; the 20 random ones not.
        Compression::None => assert!(s.multifd_bytes as f64 > data, "{s:?}"),
        _ => assert!(
            (s.multifd_bytes as f64) < data / 4.0,
            "{compression}: {s:?}"
        ),
    }
}

#[test]
fn our_multifd_source_reaches_our_multifd_destination() {
    our_source_reaches_our_destination(Compression::None);
}

#[test]
fn zlib_compressed_channels_reach_our_destination() {
    our_source_reaches_our_destination(Compression::ZLIB);
}

#[test]
fn zstd_compressed_channels_reach_our_destination() {
    our_source_reaches_our_destination(Compression::Zstd { level: 3 });
}

/// A connection that breaks after `left` bytes.
struct Breaks {
    left: usize,
}

impl std::io::Write for Breaks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "channel cut",
            ));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_channel_dropped_mid_way_fails_the_source_by_name() {
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{SaveSession, StreamConfig};
    use vmstate::{IterationStatus, Registration, Registry};
    let src = Arc::new(RamBlock::new("pc.ram", 4096 * PAGE as u64).unwrap());
    src.write(0, &vec![1u8; 4096 * PAGE]);
    let writers: Vec<Box<dyn std::io::Write + Send>> = vec![
        Box::new(std::io::sink()),
        Box::new(Breaks { left: 200_000 }),
    ];
    let handler = RamHandler::new(vec![src.clone()])
        .unwrap()
        .with_multifd_channels(writers);
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    let mut s = SaveSession::new(&mut reg, std::io::sink(), StreamConfig::new("m"));
    s.setup().unwrap();
    let mut result = Ok(IterationStatus::More);
    while let Ok(IterationStatus::More) = result {
        result = s.iterate(1 << 20);
    }
    let err = match result {
        Err(e) => e,
        Ok(_) => s.complete().unwrap_err(),
    };
    let text = err.to_string();
    assert!(text.contains("channel 1"), "{text}");
    assert!(text.contains("channel cut"), "{text}");
    // The guest's memory is untouched: the source can go on running.
    assert_eq!(first_byte(&src, 4095), 1);
}

/// A channel that stops sending without closing (its SYNC never comes) fails the
/// flush and the finish once no channel made progress for the stall timeout, instead
/// of hanging the load; the other channel's thread is let go.
#[test]
fn a_stalled_channel_fails_the_flush_and_the_finish_after_the_stall_timeout() {
    use std::io::Write;
    use std::time::Duration;
    let (_, _, all) = blocks();
    let (mut w, stalled) = vmstate::transport::pipe();
    // Its handshake and one page, then silence with the connection open.
    w.write_all(&channel(1, &[pages("pc.ram", &[1], &[], 1)]))
        .unwrap();
    let good = std::io::Cursor::new(channel(0, &[sync(0), sync(2)]));
    let readers: Vec<Box<dyn std::io::Read + Send>> = vec![Box::new(good), Box::new(stalled)];
    let rx = MultifdReceiver::start(all, readers);
    rx.set_stall_timeout(Duration::from_millis(300));
    let err = rx.flush_hook()().unwrap_err().to_string();
    assert!(err.contains("no channel read a packet for 300ms"), "{err}");
    assert!(err.contains("1 waiting at their SYNC"), "{err}");
    let err = rx.finish().unwrap_err().to_string();
    assert!(err.contains("no channel read a packet"), "{err}");
    drop(w);
}

/// A channel whose connection cannot be opened (its opener fails in the channel's
/// thread) fails the migration, naming the channel and the reason.
#[test]
fn a_channel_that_cannot_connect_fails_the_source_by_name() {
    use vmstate::multifd::send::{ChannelOpener, ChannelWriter};
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{SaveSession, StreamConfig};
    use vmstate::{IterationStatus, Registration, Registry};
    let src = Arc::new(RamBlock::new("pc.ram", 1024 * PAGE as u64).unwrap());
    src.write(0, &vec![1u8; 1024 * PAGE]);
    let openers: Vec<ChannelOpener> = vec![
        Box::new(|| Ok(Box::new(std::io::sink()) as ChannelWriter)),
        Box::new(|| {
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here").into())
        }),
    ];
    let handler = RamHandler::new(vec![src])
        .unwrap()
        .with_multifd_connecting(openers, Compression::ZSTD)
        .unwrap();
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    let mut s = SaveSession::new(&mut reg, std::io::sink(), StreamConfig::new("m"));
    let mut result = s.setup().map(|_| IterationStatus::More);
    while let Ok(IterationStatus::More) = result {
        result = s.iterate(1 << 20);
    }
    let err = match result {
        Err(e) => e,
        Ok(_) => s.complete().unwrap_err(),
    };
    let text = err.to_string();
    assert!(
        text.contains("channel 1") && text.contains("refused here"),
        "{text}"
    );
}

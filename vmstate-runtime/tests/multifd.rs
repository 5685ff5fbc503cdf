//! The destination's multifd channels fed with packets built here: pages land in
//! their blocks, flushes wait for every channel's SYNC, and a channel cut short or
//! lying about its pages fails the load instead of hanging it.

use std::io::Cursor;
use std::sync::Arc;

use vmstate::multifd::packet::{FLAG_SYNC, Handshake, RamPacket};
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

/// Our multifd source into our multifd destination, through in-memory pipes: the
/// guest's pages, a page written between rounds, and zero pages arrive.
#[test]
fn our_multifd_source_reaches_our_multifd_destination() {
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
    use vmstate::transport::pipe;
    use vmstate::{IterationStatus, Reader, Registration, Registry};

    let src = Arc::new(RamBlock::new("pc.ram", 1024 * PAGE as u64).unwrap());
    for p in 0..300u64 {
        src.write_u64(p * 3 * PAGE as u64, p + 1);
    }
    let (main_w, main_r) = pipe();
    let (mut writers, mut readers) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (w, r) = pipe();
        writers.push(Box::new(w) as Box<dyn std::io::Write + Send>);
        readers.push(r);
    }
    let dst = std::thread::spawn(move || {
        let copy = Arc::new(RamBlock::new("pc.ram", 1024 * PAGE as u64).unwrap());
        let rx = MultifdReceiver::start(vec![copy.clone() as Arc<dyn GuestRam>], readers);
        let mut reg = Registry::new();
        let h = RamHandler::new(vec![copy.clone()])
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
        (copy, rx.finish().unwrap())
    });
    let handler = RamHandler::new(vec![src.clone()])
        .unwrap()
        .with_multifd_channels(writers);
    let stats = handler.stats();
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    {
        let mut s = SaveSession::new(&mut reg, main_w, StreamConfig::new("m"));
        s.setup().unwrap();
        while s.iterate(64 * PAGE as u64).unwrap() == IterationStatus::More {}
        src.write(5 * PAGE as u64, b"between the rounds");
        src.write(3 * PAGE as u64, &[0; 8]); // page 3 held 2: now zero
        while s.iterate(64 * PAGE as u64).unwrap() == IterationStatus::More {}
        src.write(1000 * PAGE as u64, b"in completion");
        s.complete().unwrap();
    }
    let (copy, channels) = dst.join().unwrap();
    for p in 0..src.pages() {
        assert_eq!(src.page_checksum(p), copy.page_checksum(p), "page {p}");
    }
    assert_eq!(channels.len(), 3);
    assert!(channels.iter().all(|c| c.normal_pages > 0), "{channels:?}");
    let s = stats.get();
    assert!(s.multifd_bytes > 300 * PAGE as u64);
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

//! The two ways pages leave the source: in place, from guest memory to the kernel
//! (a `Writer::to_fd` writer, what `migrate_over` uses on a plain socket), and copied
//! into the stream buffer (any other writer); and the vm-memory adapter on the same
//! paths. Pages written while they are on their way must arrive in their final state.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstate::migrate::{
    CancelToken, GuestControl, IncomingParams, MigrationParams, migrate_over, receive,
};
use vmstate::ram::{GuestRam, RAM_VERSION, RamBlock, RamHandler, VmMemoryRam};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
use vmstate::{IterativeHandler, Phase, Reader, Registration, Registry, Writer};

const PAGE: u64 = 4096;

/// Fills a block: pseudo-random pages, with every 5th page never written and every 7th
/// written with zeros (the three kinds of page the source tells apart).
fn fill(block: &RamBlock, seed: u64) {
    let mut x = seed | 1;
    let mut page = vec![0u8; PAGE as usize];
    for p in 0..block.pages() as u64 {
        if p % 5 == 0 {
            continue;
        }
        if p % 7 == 0 {
            block.write(p * PAGE, &[0u8; PAGE as usize]);
            continue;
        }
        for chunk in page.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_ne_bytes());
        }
        block.write(p * PAGE, &page);
    }
}

fn registry(blocks: Vec<Arc<dyn GuestRam>>) -> Registry {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::from_blocks(blocks).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg
}

fn ram_blocks(sizes: &[u64], seed: u64) -> Vec<Arc<RamBlock>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, pages)| {
            let b = Arc::new(RamBlock::new(format!("b{i}"), pages * PAGE).unwrap());
            if seed != 0 {
                fill(&b, seed + i as u64);
            }
            b
        })
        .collect()
}

fn dyn_blocks(blocks: &[Arc<RamBlock>]) -> Vec<Arc<dyn GuestRam>> {
    blocks
        .iter()
        .map(|b| b.clone() as Arc<dyn GuestRam>)
        .collect()
}

fn assert_same(a: &[Arc<RamBlock>], b: &[Arc<RamBlock>]) {
    for (x, y) in a.iter().zip(b) {
        for p in 0..x.pages() {
            assert_eq!(
                x.page_checksum(p),
                y.page_checksum(p),
                "block {} page {p} differs",
                x.name()
            );
        }
    }
}

/// A file in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("vmstate-ram-paths-{tag}-{}", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Block sizes around the 64-page bitmap word the source works through at a time, the
/// 256 pages of a 1 MiB write and the 1024 pieces one vectored call takes.
const ODD_SIZES: [u64; 10] = [1, 3, 63, 64, 65, 255, 257, 1023, 1025, 130];

#[test]
fn blocks_that_are_not_multiples_of_the_batch_size_give_the_same_stream_in_place_and_copied() {
    let src = ram_blocks(&ODD_SIZES, 11);
    // In place: through a file descriptor (writev, as a file is not a socket).
    let file = TempFile::new("odd");
    SaveSession::with_writer(
        &mut registry(dyn_blocks(&src)),
        Writer::to_fd(File::create(&file.0).unwrap()),
        StreamConfig::new("m"),
    )
    .save_all()
    .unwrap();
    let in_place = std::fs::read(&file.0).unwrap();
    // Copied: into memory.
    let mut copied = Vec::new();
    SaveSession::new(
        &mut registry(dyn_blocks(&src)),
        &mut copied,
        StreamConfig::new("m"),
    )
    .save_all()
    .unwrap();
    assert!(in_place == copied, "the two paths wrote different streams");
    let dst = ram_blocks(&ODD_SIZES, 0);
    load_stream(
        &mut registry(dyn_blocks(&dst)),
        &mut Reader::from_slice(&in_place),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_same(&src, &dst);
}

#[test]
fn blocks_that_are_not_multiples_of_the_batch_size_arrive_whole_over_a_socket() {
    let src = ram_blocks(&ODD_SIZES, 23);
    let dst = ram_blocks(&ODD_SIZES, 0);
    let (tx, rx) = UnixStream::pair().unwrap();
    let dst_blocks = dyn_blocks(&dst);
    let loader = std::thread::spawn(move || {
        load_stream(
            &mut registry(dst_blocks),
            &mut Reader::from_io(rx),
            &LoadOptions::default(),
        )
        .map(|r| r.bytes)
    });
    let stats = SaveSession::with_writer(
        &mut registry(dyn_blocks(&src)),
        Writer::to_fd(tx),
        StreamConfig::new("m"),
    )
    .save_all()
    .unwrap();
    assert_eq!(loader.join().unwrap().unwrap(), stats.bytes);
    assert_same(&src, &dst);
}

#[test]
fn a_page_written_while_in_flight_goes_out_as_it_is_then_and_again_in_the_next_round() {
    let src = Arc::new(RamBlock::new("pc.ram", 8 * PAGE).unwrap());
    fill(&src, 5);
    src.write(3 * PAGE, b"first");
    let file = TempFile::new("flight");
    let mut w = Writer::to_fd(File::create(&file.0).unwrap());
    let mut h = RamHandler::new(vec![src.clone()]).unwrap();
    let stats = h.stats();
    h.save_setup(&mut w).unwrap();
    w.flush().unwrap();
    // The round hands page 3 to the writer in place; it is not written out yet.
    h.save_iterate(&mut w, u64::MAX).unwrap();
    assert!(!src.dirty().is_dirty(3));
    // The guest writes it while it is on its way: the page is dirty again...
    src.write(3 * PAGE, b"final");
    assert!(
        src.dirty().is_dirty(3),
        "a write during the send must re-dirty the page"
    );
    w.flush().unwrap();
    let sent_first = stats.get().normal_pages;
    // ...and the next round sends it again, alone.
    h.save_iterate(&mut w, u64::MAX).unwrap();
    w.flush().unwrap();
    assert_eq!(stats.get().normal_pages - sent_first, 1);
    h.save_complete(&mut w).unwrap();
    w.flush().unwrap();
    drop(w);

    let mut bytes = Vec::new();
    File::open(&file.0)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    // In place, the kernel read the page when the buffer went out, after the write:
    // both sends carry the final bytes.
    let sends = bytes.windows(5).filter(|w| w == b"final").count();
    assert_eq!(
        sends, 2,
        "the first send must carry the page as it was when written out"
    );
    let dst = Arc::new(RamBlock::new("pc.ram", 8 * PAGE).unwrap());
    let mut d = RamHandler::new(vec![dst.clone()]).unwrap();
    d.load_setup().unwrap();
    let mut r = Reader::from_slice(&bytes);
    for phase in [Phase::Start, Phase::Part, Phase::Part, Phase::End] {
        d.load(&mut r, RAM_VERSION, phase).unwrap();
    }
    assert!(r.at_end().unwrap(), "four payloads, nothing after them");
    let mut got = [0u8; 5];
    dst.read(3 * PAGE, &mut got);
    assert_eq!(&got, b"final");
    for p in 0..8 {
        assert_eq!(src.page_checksum(p), dst.page_checksum(p), "page {p}");
    }
}

#[test]
fn a_vcpu_rewriting_pages_during_every_round_leaves_them_in_their_final_state() {
    let src = Arc::new(RamBlock::new("pc.ram", 512 * PAGE).unwrap());
    fill(&src, 7);
    let dst = Arc::new(RamBlock::new("pc.ram", 512 * PAGE).unwrap());
    let running = Arc::new(AtomicBool::new(true));
    let writes = Arc::new(AtomicU64::new(0));
    // The vCPU keeps rewriting the first word of 16 pages while the rounds go out.
    let vcpu = {
        let (ram, running, writes) = (src.clone(), running.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                n += 1;
                ram.write_u64((n % 16) * 31 * PAGE, n);
                writes.store(n, Ordering::Relaxed);
            }
        })
    };
    let (tx, rx) = UnixStream::pair().unwrap();
    let dst_blocks: Vec<Arc<dyn GuestRam>> = vec![dst.clone()];
    let loader = std::thread::spawn(move || {
        load_stream(
            &mut registry(dst_blocks),
            &mut Reader::from_io(rx),
            &LoadOptions::default(),
        )
    });
    let mut reg = registry(vec![src.clone() as Arc<dyn GuestRam>]);
    let mut s = SaveSession::with_writer(&mut reg, Writer::to_fd(tx), StreamConfig::new("m"));
    s.setup().unwrap();
    let mut seen = 0;
    for _ in 0..6 {
        // A budget, as the precopy driver gives: without one a round would chase the
        // vCPU's writes for ever.
        s.iterate(256 << 10).unwrap();
        // Let the vCPU write between rounds too.
        while writes.load(Ordering::Relaxed) < seen + 1000 {
            assert!(!vcpu.is_finished(), "the vCPU thread died");
            std::thread::yield_now();
        }
        seen = writes.load(Ordering::Relaxed);
    }
    running.store(false, Ordering::SeqCst);
    vcpu.join().unwrap();
    s.complete().unwrap();
    drop(s);
    loader.join().unwrap().unwrap();
    for p in 0..512 {
        assert_eq!(src.page_checksum(p), dst.page_checksum(p), "page {p}");
    }
}

/// One RAM block and one vm-memory region side by side, as a VMM that keeps some
/// memory in each might have them.
struct MixedMachine {
    ram: Arc<RamBlock>,
    mem: Arc<GuestMemoryMmap<AtomicBitmap>>,
    region: Arc<VmMemoryRam>,
}

impl MixedMachine {
    fn new() -> MixedMachine {
        let mem = Arc::new(
            GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap(),
        );
        let region = Arc::new(VmMemoryRam::new("vm-mem", mem.clone(), GuestAddress(0)).unwrap());
        MixedMachine {
            ram: Arc::new(RamBlock::new("pc.ram", 300 * PAGE).unwrap()),
            mem,
            region,
        }
    }

    fn registry(&self) -> Registry {
        registry(vec![self.ram.clone(), self.region.clone()])
    }
}

/// The source's guest: on stop, it writes once more through both kinds of memory (the
/// last writes before the vCPUs halt).
struct LastWrites<'a>(&'a MixedMachine);

impl GuestControl for LastWrites<'_> {
    fn stop(&mut self) -> vmstate::Result<()> {
        self.0.ram.write(5 * PAGE, b"last write, ram block");
        self.0
            .mem
            .write_slice(b"last write, vm-memory", GuestAddress(9 * PAGE))
            .unwrap();
        Ok(())
    }
    fn resume(&mut self) {}
}

#[test]
fn the_vm_memory_adapter_migrates_beside_ram_blocks_over_a_socket() {
    let src = MixedMachine::new();
    fill(&src.ram, 3);
    let mut page = vec![0u8; PAGE as usize];
    for p in 0..256u64 {
        page.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (p as usize * 31 + i) as u8);
        if p % 3 != 0 {
            src.mem.write_slice(&page, GuestAddress(p * PAGE)).unwrap();
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let destination = std::thread::spawn(move || {
        let dst = MixedMachine::new();
        let (sock, _) = listener.accept().unwrap();
        receive(
            &mut dst.registry(),
            sock,
            &IncomingParams::new("m"),
            &mut || Ok(()),
        )
        .unwrap();
        dst
    });
    migrate_over(
        &mut src.registry(),
        TcpStream::connect(addr).unwrap(),
        &mut LastWrites(&src),
        &MigrationParams::new("m"),
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let dst = destination.join().unwrap();
    assert_same(
        std::slice::from_ref(&src.ram),
        std::slice::from_ref(&dst.ram),
    );
    let read = |m: &MixedMachine| {
        let mut v = vec![0u8; 1 << 20];
        m.mem.read_slice(&mut v, GuestAddress(0)).unwrap();
        v
    };
    assert!(read(&src) == read(&dst), "the vm-memory region differs");
    let mut got = [0u8; 21];
    dst.ram.read(5 * PAGE, &mut got);
    assert_eq!(&got, b"last write, ram block");
    dst.mem
        .read_slice(&mut got, GuestAddress(9 * PAGE))
        .unwrap();
    assert_eq!(&got, b"last write, vm-memory");
}

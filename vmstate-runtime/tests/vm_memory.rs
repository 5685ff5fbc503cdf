//! rust-vmm's vm-memory as guest RAM: writes through vm-memory's API are tracked by
//! its AtomicBitmap, synced into the migration bitmap each round, and arrive.

use std::sync::Arc;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstate::ram::{GuestRam, RAM_VERSION, RamBlock, RamHandler, VmMemoryRam};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
use vmstate::{Reader, Registration, Registry};

const MIB: u64 = 1 << 20;
/// Two regions with a hole between them, as a VMM lays out low and high memory.
const LAYOUT: [(u64, u64, &str); 2] = [(0, 4 * MIB, "lo"), (64 * MIB, 2 * MIB, "hi")];

fn memory() -> (Arc<GuestMemoryMmap<AtomicBitmap>>, Vec<Arc<VmMemoryRam>>) {
    let ranges: Vec<_> = LAYOUT
        .iter()
        .map(|(base, len, _)| (GuestAddress(*base), *len as usize))
        .collect();
    let mem = Arc::new(GuestMemoryMmap::<AtomicBitmap>::from_ranges(&ranges).unwrap());
    let blocks = LAYOUT
        .iter()
        .map(|(base, _, name)| {
            Arc::new(VmMemoryRam::new(*name, mem.clone(), GuestAddress(*base)).unwrap())
        })
        .collect();
    (mem, blocks)
}

fn registry<B: GuestRam + 'static>(blocks: Vec<Arc<B>>) -> Registry {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(blocks).unwrap(),
        Registration::new(),
    )
    .unwrap();
    reg
}

fn read(mem: &GuestMemoryMmap<AtomicBitmap>, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

#[test]
fn writes_through_vm_memory_in_every_phase_arrive_in_ram_blocks() {
    let (mem, blocks) = memory();
    mem.write_slice(b"before setup", GuestAddress(0x1000))
        .unwrap();
    let mut reg = registry(blocks);
    let mut out = Vec::new();
    {
        let mut s = SaveSession::new(&mut reg, &mut out, StreamConfig::new("m"));
        s.setup().unwrap();
        mem.write_slice(b"after setup", GuestAddress(0x2000))
            .unwrap();
        s.iterate(64 * 1024).unwrap();
        // The last page of the low region and the first of the high one.
        mem.write_slice(b"round 1", GuestAddress(4 * MIB - 7))
            .unwrap();
        mem.write_slice(b"round 1 high", GuestAddress(64 * MIB))
            .unwrap();
        s.iterate(64 * 1024).unwrap();
        mem.write_slice(b"0x1000 rewritten", GuestAddress(0x1000))
            .unwrap();
        s.complete().unwrap();
    }
    let dst: Vec<_> = LAYOUT
        .iter()
        .map(|(_, len, name)| Arc::new(RamBlock::new(*name, *len).unwrap()))
        .collect();
    load_stream(
        &mut registry(dst.clone()),
        &mut Reader::from_slice(&out),
        &LoadOptions::default(),
    )
    .unwrap();
    for (i, (base, len, _)) in LAYOUT.iter().enumerate() {
        let mut got = vec![0u8; *len as usize];
        dst[i].read(0, &mut got);
        assert!(got == read(&mem, *base, *len as usize), "block {i} differs");
    }
}

#[test]
fn a_stream_loads_into_vm_memory() {
    let src: Vec<_> = LAYOUT
        .iter()
        .map(|(_, len, name)| Arc::new(RamBlock::new(*name, *len).unwrap()))
        .collect();
    src[0].write(3 * 4096 + 5, b"into vm-memory");
    src[1].write(2 * MIB - 8, b"lastpage");
    let mut out = Vec::new();
    vmstate::stream::save_snapshot(&mut registry(src), &mut out, StreamConfig::new("m")).unwrap();
    let (mem, blocks) = memory();
    mem.write_slice(&[0xff; 4096], GuestAddress(8 * 4096))
        .unwrap(); // must be zeroed by the load
    load_stream(
        &mut registry(blocks),
        &mut Reader::from_slice(&out),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(read(&mem, 3 * 4096 + 5, 14), b"into vm-memory");
    assert_eq!(read(&mem, 64 * MIB + 2 * MIB - 8, 8), b"lastpage");
    assert_eq!(read(&mem, 8 * 4096, 4096), vec![0u8; 4096]);
}

#[test]
fn region_must_start_at_the_given_address() {
    let (mem, _) = memory();
    assert!(VmMemoryRam::new("x", mem.clone(), GuestAddress(4096)).is_err());
    assert!(VmMemoryRam::new("x", mem, GuestAddress(32 * MIB)).is_err());
}

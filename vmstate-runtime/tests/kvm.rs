//! A RAM block as the memory of a real KVM guest: pages the guest's own code writes
//! reach the migration bitmap through KVM's dirty log, and arrive at a destination.
//! These tests need `/dev/kvm`; `.ci/run` runs them where it exists.

use std::sync::Arc;

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vmstate::ram::{GuestRam, KvmRam, RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
use vmstate::{Reader, Registration, Registry};

const PAGE: u64 = 4096;

/// 16-bit real-mode code: point DS at 0x20000, store one byte at each `(offset, value)`,
/// halt. (`mov ax, 0x2000; mov ds, ax; mov byte [offset], value; ...; hlt`.)
fn program(stores: &[(u16, u8)]) -> Vec<u8> {
    let mut code = vec![0xb8, 0x00, 0x20, 0x8e, 0xd8];
    for &(offset, value) in stores {
        let [lo, hi] = offset.to_le_bytes();
        code.extend([0xc6, 0x06, lo, hi, value]);
    }
    code.push(0xf4);
    code
}

/// A VM with one vCPU in real mode.
fn vm() -> (Arc<VmFd>, VcpuFd) {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = Arc::new(kvm.create_vm().unwrap());
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    (vm, vcpu)
}

/// Runs the vCPU from `rip` until it halts.
fn run_until_halt(vcpu: &mut VcpuFd, rip: u64) {
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = rip;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    match vcpu.run().unwrap() {
        VcpuExit::Hlt => {}
        other => panic!("the guest stopped with {other:?}"),
    }
}

fn dirty_pages(block: &RamBlock) -> Vec<usize> {
    (0..block.pages())
        .filter(|&p| block.dirty().is_dirty(p))
        .collect()
}

#[test]
#[ignore = "needs /dev/kvm (run by .ci/run where it exists)"]
fn kvm_guest_writes_reach_the_migration_bitmap_and_arrive() {
    let block = Arc::new(RamBlock::new("pc.ram", 1 << 20).unwrap());
    block.write(0x1000, &program(&[(0x0000, 0x5a), (0x3000, 0xa5)]));
    block.write(0x1100, &program(&[(0x5000, 0x77)]));
    let (vm, mut vcpu) = vm();
    let ram = Arc::new(KvmRam::new(block.clone(), vm, 0, 0).unwrap());
    block.dirty().clear();

    run_until_halt(&mut vcpu, 0x1000);
    assert!(
        dirty_pages(&block).is_empty(),
        "guest writes bypass the block until the log is synced"
    );
    ram.sync_dirty();
    assert_eq!(dirty_pages(&block), [0x20, 0x23]);

    // KVM_GET_DIRTY_LOG cleared the log: the next sync brings only the new writes.
    block.dirty().clear();
    run_until_halt(&mut vcpu, 0x1100);
    ram.sync_dirty();
    assert_eq!(dirty_pages(&block), [0x25]);
    ram.sync_dirty();
    assert_eq!(
        dirty_pages(&block),
        [0x25],
        "a sync with no new writes adds nothing"
    );

    // The pages only the guest wrote are sent with their contents, not as zero pages.
    let mut src = Registry::new();
    src.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![ram.clone()]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    let mut stream = Vec::new();
    SaveSession::new(&mut src, &mut stream, StreamConfig::new("kvm"))
        .save_all()
        .unwrap();
    let dst = Arc::new(RamBlock::new("pc.ram", 1 << 20).unwrap());
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![dst.clone()]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    load_stream(
        &mut reg,
        &mut Reader::from_slice(&stream),
        &LoadOptions::default(),
    )
    .unwrap();
    for (at, value) in [(0x20000, 0x5a), (0x23000, 0xa5), (0x25000, 0x77)] {
        let mut b = [0u8];
        dst.read(at, &mut b);
        assert_eq!(b[0], value, "byte at 0x{at:x}");
    }
    for p in 0..block.pages() {
        assert_eq!(block.page_checksum(p), dst.page_checksum(p), "page {p}");
    }
    assert_eq!(dst.len(), 256 * PAGE);
}

#[test]
#[ignore = "needs /dev/kvm (run by .ci/run where it exists)"]
fn kvm_slots_need_4k_pages_and_free_their_slot_number_when_dropped() {
    let (vm, _vcpu) = vm();
    let big = Arc::new(RamBlock::with_page_size("big", 1 << 20, 64 << 10).unwrap());
    let err = KvmRam::new(big, vm.clone(), 0, 0)
        .err()
        .expect("64 KiB pages");
    assert!(err.to_string().contains("4 KiB"), "{err}");
    let a = Arc::new(RamBlock::new("a", 1 << 20).unwrap());
    let first = KvmRam::new(a.clone(), vm.clone(), 0, 0).unwrap();
    // The kernel refuses a second slot over the same guest addresses...
    let b = Arc::new(RamBlock::new("b", 1 << 20).unwrap());
    assert!(KvmRam::new(b.clone(), vm.clone(), 1, 0).is_err());
    // ...until the first one is dropped, which deletes its slot.
    drop(first);
    KvmRam::new(b, vm, 1, 0).unwrap();
}

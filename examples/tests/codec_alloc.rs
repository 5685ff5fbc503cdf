//! Allocation behaviour of the derive, counted by a global allocator installed in this
//! test binary only (`allocation-counter`, which counts per thread): encoding into a
//! reused `Writer` allocates nothing, and decoding allocates only for `Vec` fields.

use allocation_counter::measure;
use vmstate::{VmState, Writer};
use vmstate_examples::codec::{BenchState, Codec, Derive, Pit, Uart16550, X86Cpu};

fn encode_does_not_allocate<T: BenchState>() {
    let mut v = T::sample(1);
    let mut w = Writer::from_vec(Vec::new());
    v.save(&mut w).expect("save"); // grows the buffer once
    let info = measure(|| {
        for _ in 0..100 {
            w.clear();
            v.save(&mut w).expect("save");
        }
    });
    assert_eq!(
        info.count_total,
        0,
        "{}: save into a reused Writer",
        T::LABEL
    );

    // The same through the benchmark's adapter.
    let mut codec = <Derive as Codec<T>>::new();
    codec.encode(&mut v).expect("encode");
    let info = measure(|| {
        for _ in 0..100 {
            codec.encode(&mut v).expect("encode");
        }
    });
    assert_eq!(info.count_total, 0, "{}: Derive::encode", T::LABEL);
}

/// Decodes a sample into `target`; returns the allocations made.
fn decode_allocations<T: BenchState>(bytes: &[u8], target: &mut T) -> u64 {
    let version = T::DESCRIPTION.version;
    let info = measure(|| target.load_bytes(bytes, version).expect("load"));
    info.count_total
}

#[test]
fn encoding_into_a_reused_writer_does_not_allocate() {
    encode_does_not_allocate::<Uart16550>();
    encode_does_not_allocate::<Pit>();
    encode_does_not_allocate::<X86Cpu>();
}

#[test]
fn decoding_allocates_only_for_vec_fields() {
    // No Vec field: no allocation, into a fresh or an existing value.
    let uart = Uart16550::sample(1).to_bytes().expect("save");
    assert_eq!(decode_allocations(&uart, &mut Uart16550::default()), 0);
    assert_eq!(decode_allocations(&uart, &mut Uart16550::sample(2)), 0);
    let pit = Pit::sample(1).to_bytes().expect("save");
    assert_eq!(decode_allocations(&pit, &mut Pit::default()), 0);
    assert_eq!(decode_allocations(&pit, &mut Pit::sample(2)), 0);

    // The vCPU's MSR list is a Vec: one allocation when the value has no room for the
    // MSRs, none when it has (decoding over a live vCPU).
    let cpu = X86Cpu::sample(1).to_bytes().expect("save");
    let mut fresh = X86Cpu::default();
    assert_eq!(decode_allocations(&cpu, &mut fresh), 1);
    assert_eq!(fresh, X86Cpu::sample(1));
    let mut live = X86Cpu::sample(2);
    assert_eq!(decode_allocations(&cpu, &mut live), 0);
    assert_eq!(live, X86Cpu::sample(1));
    // Decoding again over the value just decoded allocates nothing either.
    assert_eq!(decode_allocations(&cpu, &mut fresh), 0);
}

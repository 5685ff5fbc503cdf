//! The codec benchmark's codecs agree: the derive and the hand-written codec write the
//! same bytes, every codec round-trips every state, and the derive's static description
//! agrees with what its generated code writes (on both of its paths: the bulk path of
//! a plain save and the field-by-field path taken when describing or when bytes are not
//! buffered).

#[path = "../../vmstate-runtime/tests/support/trickle.rs"]
mod trickle;

use serde_json::Value;
use trickle::Trickle;
use vmstate::{Reader, VmElem, VmState, VmStateDescription};
use vmstate_examples::codec::{
    BenchState, Codec, Derive, Hand, Pit, Uart16550, Visitor, X86Cpu, visit_all,
};

fn derive_bytes<T: VmState>(v: &mut T) -> Vec<u8> {
    v.to_bytes().expect("derive encodes")
}

fn hand_bytes<T: BenchState>(v: &mut T) -> Vec<u8> {
    let mut c = <Hand as Codec<T>>::new();
    c.encode(v).expect("hand encodes");
    <Hand as Codec<T>>::bytes(&c).to_vec()
}

fn same_bytes<T: BenchState>() {
    for seed in [1, 2, 0x5eed, u64::MAX] {
        let mut v = T::sample(seed);
        let d = derive_bytes(&mut v);
        let h = hand_bytes(&mut v);
        assert_eq!(
            d,
            h,
            "{} seed {seed}: derive and hand-written bytes differ",
            T::LABEL
        );
    }
}

#[test]
fn derive_and_hand_written_write_the_same_bytes() {
    same_bytes::<Uart16550>();
    same_bytes::<Pit>();
    same_bytes::<X86Cpu>();
}

#[test]
fn byte_layout_is_qemus_big_endian() {
    let mut uart = Uart16550 {
        divider: 0x0102,
        rbr: 3,
        fifo: [0xaa; 16],
        fifo_count: 4,
        thr_ipending: true,
        ..Default::default()
    };
    let b = derive_bytes(&mut uart);
    assert_eq!(b.len(), 31);
    assert_eq!(&b[..3], &[1, 2, 3]);
    assert_eq!(&b[12..28], &[0xaa; 16]);
    assert_eq!(&b[28..], &[4, 1, 0]);

    let mut cpu = X86Cpu::sample(7);
    let b = derive_bytes(&mut cpu);
    assert_eq!(&b[..8], &cpu.regs[0].to_be_bytes());
    let nmsrs_at = b.len() - 4 - 12 * cpu.msrs.len();
    assert_eq!(&b[nmsrs_at..nmsrs_at + 4], &100u32.to_be_bytes());
    let last = cpu.msrs.last().expect("has MSRs");
    assert_eq!(&b[b.len() - 8..], &last.value.to_be_bytes());
}

struct RoundTrip;

impl Visitor for RoundTrip {
    fn visit<T: BenchState, C: Codec<T>>(&mut self) {
        let mut codec = C::new();
        for seed in [1, 99] {
            let mut v = T::sample(seed);
            codec.encode(&mut v).expect("encode");
            // Into an existing value that differs everywhere.
            let mut target = T::sample(seed + 1);
            assert_ne!(target, v);
            codec.decode(codec.bytes(), &mut target).expect("decode");
            assert_eq!(target, v, "{} {} seed {seed}", T::LABEL, C::NAME);
            // The buffer is reused: a second encode writes the same bytes again.
            let first = codec.bytes().to_vec();
            codec.encode(&mut v).expect("encode again");
            assert_eq!(codec.bytes(), first, "{} {}", T::LABEL, C::NAME);
        }
    }
}

#[test]
fn every_codec_round_trips_every_state() {
    visit_all(&mut RoundTrip);
}

#[test]
fn truncated_derive_streams_are_errors() {
    fn check<T: BenchState>() {
        let mut v = T::sample(3);
        let bytes = derive_bytes(&mut v);
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let mut target = T::sample(4);
            let err = <Derive as Codec<T>>::new().decode(&bytes[..cut], &mut target);
            assert!(err.is_err(), "{} cut at {cut}", T::LABEL);
        }
    }
    check::<Uart16550>();
    check::<Pit>();
    check::<X86Cpu>();
}

/// The wire size of one element of a described field, from the description alone.
fn described_size(desc: &VmStateDescription, field: &str) -> Option<usize> {
    desc.field(field).and_then(|f| f.ty.fixed_size())
}

/// Walks the vmdesc of a save and checks every entry's measured size against the static
/// description; returns the bytes the entries account for.
fn check_vmdesc(desc: &'static VmStateDescription, vmdesc: &Value) -> usize {
    assert_eq!(vmdesc["vmsd_name"], desc.name);
    let mut total = 0;
    for entry in vmdesc["fields"].as_array().expect("fields") {
        let name = entry["name"].as_str().expect("name");
        let size = entry["size"].as_u64().expect("size") as usize;
        let n = entry["array_len"].as_u64().unwrap_or(1) as usize;
        let field = desc.field(name).expect("described field");
        if let vmstate::FieldType::Struct(sub) = field.ty {
            assert_eq!(check_vmdesc(sub, &entry["struct"]), size, "{name}");
        }
        if let Some(expected) = described_size(desc, name) {
            assert_eq!(size, expected, "{}.{name}: vmdesc size", desc.name);
        }
        total += size * n;
    }
    total
}

fn description_agrees<T: BenchState + VmElem>(varray_bytes: impl Fn(&T) -> usize) {
    let mut v = T::sample(5);
    let bytes = derive_bytes(&mut v);
    let desc = T::DESCRIPTION;

    // The static fixed size (when there is one) is what the generated code writes, and
    // what its bulk path reserves.
    match desc.fixed_size() {
        Some(n) => {
            assert_eq!(bytes.len(), n, "{}", T::LABEL);
            assert_eq!(<T as VmElem>::RAW_SIZE, Some(n), "{}", T::LABEL);
        }
        None => {
            let fixed: usize = desc
                .fields
                .iter()
                .filter_map(|f| Some(f.ty.fixed_size()? * f.static_count()?))
                .sum();
            assert_eq!(bytes.len(), fixed + varray_bytes(&v), "{}", T::LABEL);
            assert_eq!(<T as VmElem>::RAW_SIZE, None, "{}", T::LABEL);
        }
    }

    // Describing takes the field-by-field path: same bytes, and every vmdesc entry has
    // the size the description gives.
    let (described, vmdesc) = v.save_described().expect("describe");
    assert_eq!(described, bytes, "{}: described save", T::LABEL);
    assert_eq!(check_vmdesc(desc, &vmdesc), bytes.len(), "{}", T::LABEL);

    // A reader that hands out one byte at a time never has a run buffered, so it loads
    // field by field: same value.
    let mut slow = T::sample(6);
    let mut r = Reader::from_io(Trickle(&bytes));
    slow.load(&mut r, desc.version).expect("load from io");
    assert_eq!(slow, v, "{}: field-by-field load", T::LABEL);
}

#[test]
fn static_description_agrees_with_the_generated_code() {
    description_agrees::<Uart16550>(|_| 0);
    description_agrees::<Pit>(|_| 0);
    let msr = vmstate_examples::codec::Msr::DESCRIPTION
        .fixed_size()
        .expect("an MSR has a fixed size");
    assert_eq!(msr, 12);
    description_agrees::<X86Cpu>(|cpu| cpu.msrs.len() * msr);
}

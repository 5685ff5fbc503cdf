//! Properties: saved state loads back equal, and hostile bytes never panic.

use proptest::prelude::*;
use vmstate::{Limits, Reader, Timer, VmState};

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "p", version = 2, min_version = 1)]
struct P {
    a: i64,
    b: [u16; 4],
    n: u8,
    #[vmstate(len = n)]
    v: Vec<Inner>,
    #[vmstate(since = 2)]
    f: f64,
    t: Timer,
    #[vmstate(subsection, needed = Self::has_sub)]
    sub: PSub,
}

impl P {
    fn has_sub(&self) -> bool {
        self.sub.on
    }
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "inner")]
struct Inner {
    x: u32,
    y: bool,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "p/sub")]
struct PSub {
    on: bool,
    data: [u8; 3],
}

fn arb_p() -> impl Strategy<Value = P> {
    (
        any::<i64>(),
        any::<[u16; 4]>(),
        prop::collection::vec((any::<u32>(), any::<bool>()), 0..5),
        any::<u64>(),
        any::<i64>(),
        any::<bool>(),
        any::<[u8; 3]>(),
    )
        .prop_map(|(a, b, v, fbits, t, on, data)| P {
            a,
            b,
            n: v.len() as u8,
            v: v.into_iter().map(|(x, y)| Inner { x, y }).collect(),
            f: f64::from_bits(fbits),
            t: Timer::armed_at(t),
            sub: PSub { on, data },
        })
}

proptest! {
    #[test]
    fn saved_state_loads_back_bit_for_bit(p in arb_p()) {
        let mut src = p.clone();
        let bytes = src.to_bytes().unwrap();
        let mut dst = P::default();
        dst.load_bytes(&bytes, 2).unwrap();
        prop_assert_eq!(dst.to_bytes().unwrap(), bytes);
        prop_assert_eq!(dst.f.to_bits(), p.f.to_bits());
    }

    #[test]
    fn loading_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), version in 0u32..4) {
        let mut r = Reader::from_slice(&bytes).with_limits(Limits { max_alloc: 4096 });
        let _ = P::default().load(&mut r, version);
    }

    #[test]
    fn every_truncation_is_an_error(p in arb_p()) {
        let bytes = p.clone().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            let mut dst = P::default();
            // A cut exactly before an optional subsection is a valid shorter stream.
            let sub_start = bytes.len() - if p.sub.on { 1 + 1 + 5 + 4 + 1 + 3 } else { 0 };
            let res = dst.load_bytes(&bytes[..cut], 2);
            if cut == sub_start && p.sub.on {
                prop_assert!(res.is_ok());
            } else {
                prop_assert!(res.is_err(), "cut at {} of {} loaded", cut, bytes.len());
            }
        }
    }
}

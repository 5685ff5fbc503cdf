//! Criterion benchmark of the codecs in `vmstate_examples::codec`: for each state
//! (small UART, medium PIT, large x86 vCPU), encode into the codec's reused buffer and
//! decode into an existing value, with the derive, the hand-written floor, bincode 2,
//! postcard and versionize.
//!
//! ```text
//! cargo bench -p vmstate-examples --bench codec
//! cargo bench -p vmstate-examples --bench codec -- small/decode
//! ```
//!
//! `cargo run --release --example codec-bench` measures the same in one run and prints
//! the table of medians and ratios (see `BENCHMARKS.md`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmstate_examples::codec::{BenchState, Codec, Visitor, visit_all};

struct Bench<'a>(&'a mut Criterion);

impl Visitor for Bench<'_> {
    fn visit<T: BenchState, C: Codec<T>>(&mut self) {
        let mut codec = C::new();
        let mut value = T::sample(1);
        codec.encode(&mut value).expect("encode");
        let bytes = codec.bytes().to_vec();

        let mut g = self.0.benchmark_group(format!("{}/encode", T::LABEL));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(C::NAME, |b| {
            b.iter(|| {
                codec.encode(black_box(&mut value)).expect("encode");
                black_box(codec.bytes());
            })
        });
        g.finish();

        let mut target = T::sample(2);
        let mut g = self.0.benchmark_group(format!("{}/decode", T::LABEL));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(C::NAME, |b| {
            b.iter(|| {
                codec
                    .decode(black_box(&bytes), black_box(&mut target))
                    .expect("decode");
            })
        });
        g.finish();
        assert_eq!(target, value, "{} {}", T::LABEL, C::NAME);
    }
}

fn codecs(c: &mut Criterion) {
    visit_all(&mut Bench(c));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codecs
}
criterion_main!(benches);

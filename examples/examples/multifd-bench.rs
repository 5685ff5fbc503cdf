//! Multifd scaling: a guest's RAM (paused, every page holding data) migrated over
//! loopback on the main stream alone and on 1, 2 and 4 multifd channels, each against
//! a raw loopback copy of the same bytes over as many connections, run by run
//! interleaved in one process.
//!
//! ```text
//! cargo run --release --example multifd-bench                   # 512 MiB, 5 runs
//! cargo run --release --example multifd-bench -- --ram 1G --runs 3
//! ```
//!
//! Both ends run here: the source's main stream and channel threads, the
//! destination's main thread and channel threads. Throughput is the bytes sent over
//! the migration's time (setup to the destination's last page placed); the ratio is
//! the raw copy's time over the migration's.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use vmstate::multifd::recv::{MultifdReceiver, accept_channels};
use vmstate::multifd::send::ChannelWriter;
use vmstate::ram::{GuestRam, RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream};
use vmstate::{IterationStatus, Reader, Registration, Registry};
use vmstate_examples::cli::{median, parse_size, raw_loopback_copy_on};

/// Multifd channels against the main stream alone, and against raw copies.
#[derive(Parser, Debug)]
struct Args {
    /// Guest RAM (K, M, G suffixes).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    ram: u64,
    /// Runs of each channel count.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// One migration of `src` over loopback with `channels` multifd channels (0: pages on
/// the main stream); returns its time and the bytes sent on all connections.
fn migrate(src: &Arc<RamBlock>, channels: usize) -> (Duration, u64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let len = src.len();
    let dst = std::thread::spawn(move || {
        let ram = Arc::new(RamBlock::new("pc.ram", len).unwrap());
        ram.preallocate().unwrap();
        let (main, rx) = match channels {
            0 => (listener.accept().unwrap().0, None),
            n => {
                let (main, socks) = accept_channels(&listener, n, Duration::from_secs(30)).unwrap();
                let rx = MultifdReceiver::start(vec![ram.clone() as Arc<dyn GuestRam>], socks);
                (main, Some(rx))
            }
        };
        let mut h = RamHandler::new(vec![ram.clone()]).unwrap();
        if let Some(rx) = &rx {
            h = h.with_multifd_flush(rx.flush_hook());
        }
        let mut reg = Registry::new();
        reg.register_iterative("ram", RAM_VERSION, h, Registration::new())
            .unwrap();
        load_stream(
            &mut reg,
            &mut Reader::from_io(main),
            &LoadOptions::default(),
        )
        .unwrap();
        if let Some(rx) = rx {
            rx.finish().unwrap();
        }
        Instant::now()
    });
    let main = TcpStream::connect(addr).unwrap();
    main.set_nodelay(true).unwrap();
    let t = Instant::now();
    let writers: Vec<ChannelWriter> = (0..channels)
        .map(|_| Box::new(TcpStream::connect(addr).unwrap()) as ChannelWriter)
        .collect();
    let mut handler = RamHandler::new(vec![src.clone()]).unwrap();
    if channels > 0 {
        handler = handler.with_multifd_channels(writers);
    }
    let stats = handler.stats();
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    let main_bytes = {
        let mut s = SaveSession::new(&mut reg, main, StreamConfig::new("m"));
        s.setup().unwrap();
        while s.iterate(32 << 20).unwrap() == IterationStatus::More {}
        s.complete().unwrap().bytes
    };
    let done = dst.join().unwrap();
    (done - t, main_bytes + stats.get().multifd_bytes)
}

fn main() {
    let args = Args::parse();
    let src = Arc::new(RamBlock::new("pc.ram", args.ram).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for p in 0..src.pages() as u64 {
        for w in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            src.write_u64(p * 4096 + w * 512, x);
        }
    }
    println!(
        "{} MiB of RAM, every page holding data; {} runs each, medians",
        args.ram >> 20,
        args.runs
    );
    println!(
        "| channels | connections | migration ms | MiB/s | raw copy ms (same connections) | ratio |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for channels in [0usize, 1, 2, 4] {
        let (mut times, mut raws, mut ratios, mut bytes) = (vec![], vec![], vec![], 0);
        migrate(&src, channels); // warm-up
        for _ in 0..args.runs {
            let (t, b) = migrate(&src, channels);
            let conns = channels.max(1);
            let raw = raw_loopback_copy_on(b, conns);
            times.push(t.as_secs_f64() * 1e3);
            raws.push(raw.as_secs_f64() * 1e3);
            ratios.push(raw.as_secs_f64() / t.as_secs_f64());
            bytes = b;
        }
        let t = median(times);
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.2} |",
            match channels {
                0 => "none (main stream)".to_string(),
                n => n.to_string(),
            },
            channels + 1,
            t,
            bytes as f64 / (1 << 20) as f64 / (t / 1e3),
            median(raws),
            median(ratios)
        );
    }
}

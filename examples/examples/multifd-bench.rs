//! Multifd scaling: a guest's RAM (paused, every page holding data) migrated over
//! loopback on the main stream alone and on 1, 2 and 4 multifd channels, each against
//! a raw loopback copy of the same bytes over as many connections, run by run
//! interleaved in one process. Then compression: random, sparse (8 words per page)
//! and text-like memory through zlib and zstd (level 1, QEMU's default) on 1, 2 and 4
//! channels, against no compression on as many channels in the same run.
//!
//! ```text
//! cargo run --release --example multifd-bench                   # both tables
//! cargo run --release --example multifd-bench -- --ram 1G --runs 3 --table scaling
//! cargo run --release --example multifd-bench -- --table compression --compress-ram 256M
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
use vmstate::multifd::compress::Compression;
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
    /// Which table: scaling, compression or all.
    #[arg(long, default_value = "all")]
    table: String,
    /// Guest RAM for the compression table.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    compress_ram: u64,
    /// Runs of each compression row.
    #[arg(long, default_value_t = 3)]
    compress_runs: usize,
}

/// What the guest's memory holds.
#[derive(Clone, Copy)]
enum Content {
    /// Random bytes: nothing to compress.
    Random,
    /// Eight random words per page, the rest zero (the example guest's stores).
    Sparse,
    /// Lines of text.
    Text,
}

impl Content {
    fn name(self) -> &'static str {
        match self {
            Content::Random => "random",
            Content::Sparse => "sparse (8 words/page)",
            Content::Text => "text",
        }
    }

    fn fill(self, ram: &RamBlock) {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words = [
            "page",
            "guest",
            "memory",
            "the",
            "of",
            "migration",
            "dirty",
            "a",
            "qemu",
        ];
        for p in 0..ram.pages() as u64 {
            let page: Vec<u8> = match self {
                Content::Random => (0..512).flat_map(|_| next().to_le_bytes()).collect(),
                Content::Sparse => {
                    let mut page = vec![0u8; 4096];
                    for w in 0..8 {
                        page[w * 512..w * 512 + 8].copy_from_slice(&next().to_le_bytes());
                    }
                    page
                }
                Content::Text => {
                    let mut text = String::with_capacity(4200);
                    while text.len() < 4096 {
                        let r = next();
                        text.push_str(words[(r % words.len() as u64) as usize]);
                        text.push(if r % 11 == 0 { '\n' } else { ' ' });
                        if r % 7 == 0 {
                            text.push_str(&(r % 10_000).to_string());
                        }
                    }
                    text.into_bytes()[..4096].to_vec()
                }
            };
            ram.write(p * 4096, &page);
        }
    }
}

/// One migration of `src` over loopback with `channels` multifd channels (0: pages on
/// the main stream); returns its time and the bytes sent on all connections.
fn migrate(src: &Arc<RamBlock>, channels: usize, compression: Compression) -> (Duration, u64) {
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
        handler = handler.with_multifd(writers, compression).unwrap();
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
    if args.table != "compression" {
        scaling(&args);
    }
    if args.table != "scaling" {
        compression(&args);
    }
}

fn scaling(args: &Args) {
    let src = Arc::new(RamBlock::new("pc.ram", args.ram).unwrap());
    Content::Sparse.fill(&src);
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
        migrate(&src, channels, Compression::None); // warm-up
        for _ in 0..args.runs {
            let (t, b) = migrate(&src, channels, Compression::None);
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

/// zlib and zstd against no compression, per content and channel count: the bytes on
/// the wire (all connections) as a share of the guest's, the guest MiB migrated per
/// second, and the time as a ratio to no compression on as many channels, run by run.
fn compression(args: &Args) {
    let src = Arc::new(RamBlock::new("pc.ram", args.compress_ram).unwrap());
    let mib = args.compress_ram as f64 / (1 << 20) as f64;
    println!();
    println!(
        "{mib} MiB of RAM; level 1 (QEMU's default); {} runs each, medians",
        args.compress_runs
    );
    println!(
        "| memory | channels | method | wire bytes / guest bytes | ms | guest MiB/s | time / none |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for content in [Content::Random, Content::Sparse, Content::Text] {
        content.fill(&src);
        for channels in [1usize, 2, 4] {
            let methods = [Compression::None, Compression::ZLIB, Compression::ZSTD];
            let mut times: Vec<Vec<f64>> = vec![vec![]; 3];
            let mut ratios: Vec<Vec<f64>> = vec![vec![]; 3];
            let mut wire = [0u64; 3];
            for &m in &methods {
                migrate(&src, channels, m); // warm-up
            }
            for _ in 0..args.compress_runs {
                let mut none = 0.0;
                for (i, &m) in methods.iter().enumerate() {
                    let (t, b) = migrate(&src, channels, m);
                    let t = t.as_secs_f64() * 1e3;
                    if i == 0 {
                        none = t;
                    }
                    times[i].push(t);
                    ratios[i].push(t / none);
                    wire[i] = b;
                }
            }
            for (i, m) in methods.iter().enumerate() {
                let t = median(times[i].clone());
                println!(
                    "| {} | {channels} | {} | {:.3} | {:.1} | {:.0} | {:.2} |",
                    content.name(),
                    m.method(),
                    wire[i] as f64 / args.compress_ram as f64,
                    t,
                    mib / (t / 1e3),
                    median(ratios[i].clone())
                );
            }
        }
    }
}

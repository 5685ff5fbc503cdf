//! What the examples' command lines and benchmarks share: sizes in and out, the
//! migration progress line, and the raw loopback copy that throughput is measured
//! against.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use vmstate::migrate::MigrationStats;

/// Parses a size such as `512M`, `2G`, `64K` or `4096` (bytes).
///
/// ```
/// assert_eq!(vmstate_examples::cli::parse_size("2G"), Ok(2 << 30));
/// assert!(vmstate_examples::cli::parse_size("lots").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size like 512M or 2G"))
}

/// A byte count for people: `512 B`, `1.5 KiB`, `300.0 MiB`, `2.00 GiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_024 => format!("{bytes} B"),
        1_024..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.2} GiB", b / 1_073_741_824.0),
    }
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median (the upper one of an even count). Panics on an empty vector.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A progress line for a migration of `ram` bytes.
pub fn progress_bar(ram: u64) -> ProgressBar {
    let bar = ProgressBar::new(ram);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes:>10} sent {wide_msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Shows a round's statistics on the progress line.
pub fn show_progress(bar: &ProgressBar, s: &MigrationStats) {
    bar.set_position(s.transferred);
    bar.set_message(format!(
        "{:?}, round {}, remaining {}, dirty {}/s, {}/s",
        s.status,
        s.rounds,
        human(s.remaining),
        human(s.dirty_rate),
        human(s.bandwidth)
    ));
}

/// Copies `bytes` bytes through a fresh loopback TCP connection in 1 MiB writes and
/// reads (as the migration streams do): the yardstick for a migration's throughput.
pub fn raw_loopback_copy(bytes: u64) -> Duration {
    raw_loopback_copy_on(bytes, 1)
}

/// [`raw_loopback_copy`] spread over `connections` connections at once (each carrying
/// an equal share), the yardstick for multifd channels.
pub fn raw_loopback_copy_on(bytes: u64, connections: usize) -> Duration {
    let n = connections.max(1) as u64;
    let t = Instant::now();
    let copies: Vec<_> = (0..n)
        .map(|i| {
            let share = bytes / n + u64::from(i < bytes % n);
            std::thread::spawn(move || one_loopback_copy(share))
        })
        .collect();
    for c in copies {
        c.join().expect("a copy thread");
    }
    t.elapsed()
}

/// Copies `bytes` through one fresh loopback TCP connection; returns its time.
fn one_loopback_copy(bytes: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let t = Instant::now();
    let reader = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("the copy's connection");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < bytes {
            let n = sock.read(&mut buf).expect("reading the copy");
            assert!(n > 0, "the copy ended early");
            got += n as u64;
        }
    });
    let mut sock = TcpStream::connect(addr).expect("connecting the copy");
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        sock.write_all(&chunk[..n]).expect("writing the copy");
        left -= n as u64;
    }
    reader.join().expect("the copy's reader");
    t.elapsed()
}

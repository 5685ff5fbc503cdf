//! A destination receiving a postcopy migration (`migrate::receive_with`) over a
//! socket pair, with a postcopy-preempt channel: the input starts with a be16 length
//! and that many bytes, which the preempt channel carries (bare RAM records, read from
//! POSTCOPY_LISTEN on); after a well-formed start of the main stream (header,
//! configuration, OPEN_RETURN_PATH, PING, POSTCOPY_ADVISE and the RAM block list of two
//! small blocks), the rest of the input is the rest of the main stream: discards,
//! packages with LISTEN and RUN, page records, END sections, EOF, in any order or
//! shape. Every input must end in a load or an error, never a panic, hang or write
//! outside a block.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vmstate::migrate::{IncomingGuest, IncomingParams, receive_with};
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::Configuration;
use vmstate::stream::format::{
    CMD_OPEN_RETURN_PATH, CMD_PING, CMD_POSTCOPY_ADVISE, CONFIGURATION, MAGIC, VERSION,
};
use vmstate::stream::records::{SectionKind, write_command, write_footer, write_full_header};
use vmstate::{Registration, Registry, VmState, Writer};

const PAGE: u64 = 4096;

/// The stream up to the end of the RAM START section (section id 0).
fn prologue() -> Vec<u8> {
    let mut w = Writer::new();
    w.put_be32(MAGIC);
    w.put_be32(VERSION);
    w.put_u8(CONFIGURATION);
    Configuration::new("fuzz").save(&mut w).unwrap();
    write_command(&mut w, CMD_OPEN_RETURN_PATH, &[]).unwrap();
    write_command(&mut w, CMD_PING, &1u32.to_be_bytes()).unwrap();
    let mut advise = PAGE.to_be_bytes().to_vec();
    advise.extend(PAGE.to_be_bytes());
    write_command(&mut w, CMD_POSTCOPY_ADVISE, &advise).unwrap();
    write_full_header(&mut w, SectionKind::Start, 0, "ram", 0, RAM_VERSION).unwrap();
    w.put_be64((24 * PAGE) | 0x04); // MEM_SIZE
    for (name, pages) in [("pc.ram", 16u64), ("vram", 8)] {
        w.put_counted_str(name).unwrap();
        w.put_be64(pages * PAGE);
    }
    w.put_be64(0x10); // EOS
    write_footer(&mut w, 0);
    w.into_vec()
}

/// A guest with no vCPU (one touching a missing page after a failure would wait for
/// it forever, as a paused vCPU does: a thread per input).
struct NoVcpu;

impl IncomingGuest for NoVcpu {
    fn start(&mut self) -> vmstate::Result<()> {
        Ok(())
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((len, rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let threads_before = threads();
    let (preempt, data) = rest.split_at(usize::from(u16::from_be_bytes(*len)).min(rest.len()));
    // The preempt channel's reader lives in the preempt thread (or in the hook until
    // LISTEN): `preempt_gone` says when it was dropped, so that no thread outlives this
    // input.
    let (gone_tx, preempt_gone) = std::sync::mpsc::channel::<()>();
    let preempt = Channel(std::io::Cursor::new(preempt.to_vec()), gone_tx);
    let blocks = vec![
        Arc::new(RamBlock::new("pc.ram", 16 * PAGE).unwrap()),
        Arc::new(RamBlock::new("vram", 8 * PAGE).unwrap()),
    ];
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(blocks.clone())
            .unwrap()
            .with_postcopy_preempt_incoming(Box::new(move || {
                Ok(Box::new(preempt) as Box<dyn Read + Send>)
            })),
        Registration::new(),
    )
    .unwrap();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut stream = prologue();
    stream.extend_from_slice(data);
    let mut drain = theirs.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = theirs.write_all(&stream);
        let _ = theirs.shutdown(std::net::Shutdown::Write);
    });
    let sink = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut params = IncomingParams::new("fuzz");
    params.io_timeout = Some(Duration::from_secs(2));
    let _ = receive_with(&mut reg, ours, &params, &mut NoVcpu);
    feeder.join().unwrap();
    // The blocks hold the return path (their fetchers ask the source through it):
    // dropping them closes it, which ends the sink.
    drop((reg, blocks));
    let _ = sink.join();
    let _ = preempt_gone.recv_timeout(Duration::from_secs(30));
    // The preempt thread dropped its channel; let it finish exiting too (the leak
    // checker counts a thread's exit bookkeeping as a leak while it runs).
    for _ in 0..5000 {
        if threads() <= threads_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
});

/// Threads of this process now.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The preempt channel: its bytes, and a sender dropped with it.
struct Channel(std::io::Cursor<Vec<u8>>, std::sync::mpsc::Sender<()>);

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

//! A real QEMU 10.0.2 postcopy migration (`fixtures/qemu-10.0.2-postcopy/README.md`):
//! its command sequence, and our destination loading it through `receive_with` (the
//! return path answered into a drain), with the guest's memory checked against what
//! QEMU's loader devices put there.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use vmstate::migrate::{IncomingGuest, IncomingParams, receive_with};
use vmstate::stream::records::{Footers, Record, RecordReader};

fn stream() -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/qemu-10.0.2-postcopy");
    std::fs::read(dir.join("postcopy.mig")).unwrap()
}

/// The commands of the stream in order, a package's inside brackets.
fn commands(bytes: &[u8], package: bool) -> Vec<String> {
    let mut r = vmstate::Reader::from_slice(bytes);
    let mut records = if package {
        RecordReader::for_package(Footers::Expected)
    } else {
        RecordReader::new(Footers::Expected)
    };
    let mut out = Vec::new();
    loop {
        if package && !records.in_section() && r.at_end().unwrap() {
            return out;
        }
        match records.next(&mut r).unwrap() {
            Record::Command(c) => match c.package {
                Some(p) => out.push(format!("PACKAGED[{}]", commands(&p, true).join(" "))),
                None if c.name == "PING" => out.push(format!("PING({})", c.data[3])),
                None => out.push(c.name.to_string()),
            },
            // Sections are read whole by the loader test; here only their place.
            Record::Section(h) => {
                out.push(format!("{}:{}", h.kind.name(), h.idstr));
                return out; // the first section's payload needs its handler
            }
            Record::Configuration => {
                use vmstate::VmState;
                vmstate::stream::Configuration::default()
                    .load(&mut r, 0)
                    .unwrap();
            }
            Record::Eof => return out,
            Record::Footer { .. } => {}
        }
    }
}

#[test]
fn qemus_postcopy_stream_opens_with_the_return_path_and_advise() {
    let s = stream();
    // Up to the RAM START section: what QEMU 10.0.2 sends first.
    assert_eq!(
        commands(&s, false),
        [
            "OPEN_RETURN_PATH",
            "PING(1)",
            "POSTCOPY_ADVISE",
            "START:ram"
        ]
    );
}

/// QEMU's guest as QEMU's loader devices filled it (the capture's command line).
fn blob() -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn text() -> Vec<u8> {
    (0..8192u32)
        .flat_map(|i| {
            format!("line {i:05}: the guest wrote this text into its memory\n").into_bytes()
        })
        .take(256 << 10)
        .collect()
}

struct NoVcpu;

impl IncomingGuest for NoVcpu {
    fn start(&mut self) -> vmstate::Result<()> {
        Ok(())
    }
}

#[test]
fn our_destination_loads_qemus_postcopy_stream() {
    let (mut reg, ram) = compat_tests::destination::none_with_ram(64 << 20);
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut drain = theirs.try_clone().unwrap();
    let bytes = stream();
    std::thread::spawn(move || {
        theirs.write_all(&bytes).unwrap();
        let _ = theirs.shutdown(std::net::Shutdown::Write);
    });
    let answers = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = drain.read_to_end(&mut got);
        got
    });
    let mut params = IncomingParams::new("none");
    params.io_timeout = Some(Duration::from_secs(10));
    let report = receive_with(&mut reg, ours, &params, &mut NoVcpu).unwrap();
    let pc = report.postcopy.expect("QEMU switched to postcopy");
    assert!(pc.discarded_pages > 0 && pc.pages_after_start > 0, "{pc:?}");
    assert_eq!(ram.missing_pages(), 0);
    let mut got = vec![0u8; 1 << 20];
    ram.read(1 << 20, &mut got);
    assert!(got == blob(), "the random MiB at 1 MiB");
    let text = text();
    let mut got = vec![0u8; text.len()];
    ram.read(8 << 20, &mut got);
    assert!(got == text, "the text at 8 MiB");
    drop((reg, ram));
    // PONG(1), PONG(2), PONG(3), PONG(4), SHUT(0): the package holds no PING(0x42).
    let answers = answers.join().unwrap();
    let pong = |v: u8| [0, 2, 0, 4, 0, 0, 0, v];
    let expected = [pong(1), pong(2), pong(3), pong(4)].concat();
    assert_eq!(&answers[..32], &expected[..]);
    assert_eq!(&answers[32..], &[0, 1, 0, 4, 0, 0, 0, 0]);
}

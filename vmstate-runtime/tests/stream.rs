//! The stream engine: phase order, priorities, instance ids, every load error,
//! transports, truncation and cleanup.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vmstate::stream::{LoadOptions, SaveSession, StreamConfig, load_stream, save_snapshot};
use vmstate::{
    ErrorKind, IterationStatus, IterativeHandler, Pending, Phase, Priority, Reader, Registration,
    Registry, SectionHandle, VmState, Writer,
};

// ---- a test iterative handler: bytes sent in chunks ----
// Payload format: records `be32 len, len bytes`, ended by `be32 0`.

type Log = Arc<Mutex<Vec<String>>>;

struct Blob {
    name: &'static str,
    data: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    log: Log,
    fail_iterate: bool,
}

impl Blob {
    fn new(name: &'static str, data: Vec<u8>, log: &Log) -> Self {
        Blob {
            name,
            data,
            sent: 0,
            received: Vec::new(),
            log: log.clone(),
            fail_iterate: false,
        }
    }
    fn note(&self, what: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{what}", self.name));
    }
    fn send(&mut self, w: &mut Writer<'_>, budget: u64) {
        let end = self
            .sent
            .saturating_add(budget as usize)
            .min(self.data.len());
        if end > self.sent {
            w.put_be32((end - self.sent) as u32);
            w.put_bytes(&self.data[self.sent..end]);
            self.sent = end;
        }
        w.put_be32(0);
    }
}

impl IterativeHandler for Blob {
    fn save_setup(&mut self, w: &mut Writer<'_>) -> vmstate::Result<()> {
        self.note("setup");
        self.sent = 0;
        w.put_be32(0);
        Ok(())
    }
    fn pending(&mut self, _exact: bool) -> Pending {
        Pending {
            must_precopy: (self.data.len() - self.sent) as u64,
            can_postcopy: 0,
        }
    }
    fn save_iterate(
        &mut self,
        w: &mut Writer<'_>,
        budget: u64,
    ) -> vmstate::Result<IterationStatus> {
        if self.fail_iterate {
            return Err(vmstate::Error::invalid("blob", "disk on fire"));
        }
        self.note("iterate");
        self.send(w, budget.min(10));
        Ok(if self.sent == self.data.len() {
            IterationStatus::Done
        } else {
            IterationStatus::More
        })
    }
    fn save_complete(&mut self, w: &mut Writer<'_>) -> vmstate::Result<()> {
        self.note("complete");
        self.send(w, u64::MAX);
        Ok(())
    }
    fn save_cleanup(&mut self) {
        self.note("cleanup");
    }
    fn load_setup(&mut self) -> vmstate::Result<()> {
        self.note("load_setup");
        self.received.clear();
        Ok(())
    }
    fn load(&mut self, r: &mut Reader<'_>, version: u32, phase: Phase) -> vmstate::Result<()> {
        self.note(&format!("load {phase:?} v{version}"));
        loop {
            let len = r.get_be32()? as u64;
            if len == 0 {
                return Ok(());
            }
            let bytes = r.get_vec(len)?;
            self.received.extend(bytes);
        }
    }
    fn switchover_start(&mut self) {
        self.note("switchover");
    }
    fn load_cleanup(&mut self) {
        self.note("load_cleanup");
    }
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "uart", version = 2)]
struct Uart {
    lcr: u8,
    divisor: u16,
}

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "apic", version = 3)]
struct Apic {
    id: u32,
}

const MACHINE: &str = "test-machine-1.0";

// The source's state, which a load must reproduce.

/// What the `ram` handler sends.
fn ram_data() -> Vec<u8> {
    (0..35).collect()
}
/// What the `blob2` handler sends.
const BLOB2_DATA: [u8; 12] = [7; 12];
/// The first `uart`.
const UART0: Uart = Uart {
    lcr: 3,
    divisor: 12,
};
/// The second `uart`.
const UART1: Uart = Uart { lcr: 1, divisor: 2 };
/// The `apic`.
const APIC: Apic = Apic { id: 5 };

/// Source: two handlers (ram, blob2) and three devices; the apic has a higher
/// priority but is registered last.
fn source(log: &Log) -> (Registry, Arc<Mutex<Uart>>) {
    let mut reg = Registry::new();
    let uart = Arc::new(Mutex::new(UART0));
    reg.register_iterative(
        "ram",
        4,
        Blob::new("ram", ram_data(), log),
        Registration::new(),
    )
    .unwrap();
    reg.register_device(uart.clone(), Registration::new())
        .unwrap();
    reg.register_iterative(
        "blob2",
        1,
        Blob::new("blob2", BLOB2_DATA.to_vec(), log),
        Registration::new(),
    )
    .unwrap();
    reg.register_device(UART1, Registration::new()).unwrap();
    reg.register_device(APIC, Registration::new().priority(Priority::Apic))
        .unwrap();
    (reg, uart)
}

/// The destination for `source()`'s streams: the same handlers and devices, empty,
/// kept at hand so that what was loaded can be compared with the source.
struct Destination {
    reg: Registry,
    ram: Arc<Mutex<Blob>>,
    blob2: Arc<Mutex<Blob>>,
    uart0: Arc<Mutex<Uart>>,
    uart1: SectionHandle,
    apic: SectionHandle,
}

impl Destination {
    fn new(log: &Log) -> Self {
        let mut reg = Registry::new();
        let ram = Arc::new(Mutex::new(Blob::new("ram", vec![], log)));
        reg.register_iterative("ram", 4, ram.clone(), Registration::new())
            .unwrap();
        let uart0 = Arc::new(Mutex::new(Uart::default()));
        reg.register_device(uart0.clone(), Registration::new())
            .unwrap();
        let blob2 = Arc::new(Mutex::new(Blob::new("blob2", vec![], log)));
        reg.register_iterative("blob2", 1, blob2.clone(), Registration::new())
            .unwrap();
        let uart1 = reg
            .register_device(Uart::default(), Registration::new())
            .unwrap();
        let apic = reg
            .register_device(
                Apic::default(),
                Registration::new().priority(Priority::Apic),
            )
            .unwrap();
        Destination {
            reg,
            ram,
            blob2,
            uart0,
            uart1,
            apic,
        }
    }

    /// Asserts that what was loaded equals the source's state: every field of every
    /// device and every byte each handler sent.
    fn assert_equals_source(&mut self) {
        assert_eq!(self.ram.lock().unwrap().received, ram_data(), "ram");
        assert_eq!(self.blob2.lock().unwrap().received, BLOB2_DATA, "blob2");
        assert_eq!(*self.uart0.lock().unwrap(), UART0, "uart 0");
        let uart1 = self.reg.device_mut::<Uart>(self.uart1).cloned();
        assert_eq!(uart1, Some(UART1), "uart 1");
        let apic = self.reg.device_mut::<Apic>(self.apic).cloned();
        assert_eq!(apic, Some(APIC), "apic");
    }
}

/// A destination for `source()`'s streams.
fn destination(log: &Log) -> Registry {
    Destination::new(log).reg
}

/// The source's stream, as a live migration sends it: without the snapshot's integrity
/// record (`tests/integrity.rs` tests that).
fn snapshot(log: &Log) -> Vec<u8> {
    let (mut reg, _) = source(log);
    let mut out = Vec::new();
    let mut config = StreamConfig::new(MACHINE);
    config.integrity_record = false;
    save_snapshot(&mut reg, &mut out, config).unwrap();
    out
}

fn opts() -> LoadOptions {
    LoadOptions {
        machine: Some(MACHINE.into()),
        ..Default::default()
    }
}

/// Walks the records of a stream written by `source()`, independently of the loader:
/// (type, section id or command, offset) for each record.
fn records(s: &[u8]) -> Vec<(u8, u32, usize)> {
    let be32 = |at: usize| u32::from_be_bytes(s[at..at + 4].try_into().unwrap());
    assert_eq!(&s[..8], b"QEVM\0\0\0\x03");
    assert_eq!(s[8], 0x07);
    let mut at = 9 + 4 + be32(9) as usize;
    let mut out = Vec::new();
    loop {
        let start = at;
        let ty = s[at];
        at += 1;
        match ty {
            0x00 => {
                out.push((0, 0, start));
                assert_eq!(s[at], 0x06, "vmdesc follows EOF");
                assert_eq!(
                    at + 5 + be32(at + 1) as usize,
                    s.len(),
                    "vmdesc ends the stream"
                );
                return out;
            }
            0x08 => {
                out.push((8, u32::from(u16::from_be_bytes([s[at], s[at + 1]])), start));
                at += 4;
                continue;
            }
            _ => {}
        }
        let id = be32(at);
        at += 4;
        let mut idstr = String::new();
        if ty == 0x01 || ty == 0x04 {
            let len = s[at] as usize;
            idstr = String::from_utf8(s[at + 1..at + 1 + len].to_vec()).unwrap();
            at += 1 + len + 8;
        }
        if ty == 0x04 {
            at += match idstr.as_str() {
                "uart" => 3,
                "apic" => 4,
                other => panic!("unexpected device {other}"),
            };
        } else {
            loop {
                let len = be32(at) as usize;
                at += 4 + len;
                if len == 0 {
                    break;
                }
            }
        }
        assert_eq!(s[at], 0x7e, "footer after section {id}");
        assert_eq!(be32(at + 1), id);
        at += 5;
        out.push((ty, id, start));
    }
}

fn walk(s: &[u8]) -> Vec<(u8, u32)> {
    records(s).into_iter().map(|(t, i, _)| (t, i)).collect()
}

/// Offset of the first record of type `ty` for section (or command) `id`.
fn record_offset(s: &[u8], ty: u8, id: u32) -> usize {
    records(s)
        .into_iter()
        .find(|r| (r.0, r.1) == (ty, id))
        .map(|r| r.2)
        .unwrap_or_else(|| panic!("no record {ty}/{id}"))
}

#[test]
fn phases_interleave_as_qemu_writes_them() {
    let log = Log::default();
    let records = walk(&snapshot(&log));
    // Section ids: ram 1 (never 0), uart 2, blob2 3, uart 4, apic 5.
    let expected = vec![
        (1, 1),
        (1, 3),
        (2, 1),
        (2, 3),
        (2, 1),
        (2, 3),
        (2, 1),
        (2, 3),
        (2, 1),
        (2, 3), // every active handler gets a PART each round, done or not
        (8, 11),
        (3, 1),
        (3, 3),
        (4, 5), // apic first: higher priority
        (4, 2),
        (4, 4),
        (0, 0),
    ];
    assert_eq!(records, expected);
}

#[test]
fn handlers_see_setup_rounds_completion_and_cleanup() {
    let log = Log::default();
    snapshot(&log);
    let ram: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("ram:").map(str::to_string))
        .collect();
    assert_eq!(
        ram,
        [
            "setup", "iterate", "iterate", "iterate", "iterate", "complete", "cleanup"
        ]
    );
}

#[test]
fn snapshot_loads_back_into_a_fresh_registry() {
    let log = Log::default();
    let stream = snapshot(&log);
    let mut dst = destination(&log);
    let report = load_stream(&mut dst, &mut Reader::from_slice(&stream), &opts()).unwrap();
    assert!(report.switchover_started);
    assert_eq!(report.sections.len(), 5);
    assert_eq!(report.bytes, stream.len() as u64);
    assert_eq!(report.configuration.unwrap().machine, MACHINE);
    let vmdesc: serde_json::Value = serde_json::from_str(&report.vmdesc.unwrap()).unwrap();
    let names: Vec<_> = vmdesc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["instance_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("apic".into(), 0), ("uart".into(), 0), ("uart".into(), 1)]
    );
    let lines = log.lock().unwrap().clone();
    for l in [
        "ram:load_setup",
        "ram:load Start v4",
        "ram:load Part v4",
        "ram:switchover",
        "ram:load End v4",
        "ram:load_cleanup",
    ] {
        assert!(lines.iter().any(|x| x == l), "missing {l} in {lines:?}");
    }
}

#[test]
fn loaded_state_equals_the_source_state() {
    let log = Log::default();
    let stream = snapshot(&log);
    let mut dst = Destination::new(&log);
    load_stream(&mut dst.reg, &mut Reader::from_slice(&stream), &opts()).unwrap();
    dst.assert_equals_source();
}

#[test]
fn instance_ids_default_to_the_next_free_one_and_duplicates_are_refused() {
    let mut reg = Registry::new();
    reg.register_device(Uart::default(), Registration::new().instance(3))
        .unwrap();
    reg.register_device(Uart::default(), Registration::new())
        .unwrap();
    reg.register_device(Uart::default(), Registration::new().path("0000:00:1f.0"))
        .unwrap();
    let err = reg
        .register_device(Uart::default(), Registration::new().instance(4))
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::DuplicateSection { instance_id: 4, .. }
    ));
    let ids: Vec<_> = reg
        .sections()
        .map(|s| (s.idstr.to_string(), s.instance_id, s.section_id))
        .collect();
    assert_eq!(
        ids,
        [
            ("uart".into(), 3, 0),
            ("uart".into(), 4, 1),
            ("0000:00:1f.0/uart".into(), 0, 2)
        ]
    );
}

#[test]
fn an_iterative_handler_never_gets_section_id_0() {
    let log = Log::default();
    let mut reg = Registry::new();
    let ram = reg
        .register_iterative(
            "ram",
            4,
            Blob::new("ram", vec![], &log),
            Registration::new(),
        )
        .unwrap();
    let dev = reg
        .register_device(Uart::default(), Registration::new())
        .unwrap();
    assert_eq!((ram.section_id(), dev.section_id()), (1, 2));
    let mut reg = Registry::new();
    let dev = reg
        .register_device(Uart::default(), Registration::new())
        .unwrap();
    let ram = reg
        .register_iterative(
            "ram",
            4,
            Blob::new("ram", vec![], &log),
            Registration::new(),
        )
        .unwrap();
    assert_eq!((dev.section_id(), ram.section_id()), (0, 1));
}

#[test]
fn next_free_instance_id_past_u32_max_is_an_error_not_a_panic() {
    let mut reg = Registry::new();
    reg.register_device(Uart::default(), Registration::new().instance(u32::MAX))
        .unwrap();
    let err = reg
        .register_device(Uart::default(), Registration::new())
        .unwrap_err();
    assert!(err.to_string().contains("largest possible"), "{err}");
}

#[test]
fn unregistered_section_ids_are_never_reused() {
    let mut reg = Registry::new();
    let a = reg
        .register_device(Uart::default(), Registration::new())
        .unwrap();
    assert!(reg.unregister(a));
    assert!(!reg.unregister(a));
    let b = reg
        .register_device(Uart::default(), Registration::new())
        .unwrap();
    assert_eq!((a.section_id(), b.section_id()), (0, 1));
    assert_eq!(reg.sections().next().unwrap().instance_id, 0);
}

// ---- load errors: one test each ----

fn load_err(stream: &[u8], dst: &mut Registry) -> vmstate::Error {
    load_stream(dst, &mut Reader::from_slice(stream), &opts()).unwrap_err()
}

#[test]
fn bad_magic_is_named() {
    let log = Log::default();
    let mut s = snapshot(&log);
    s[0] = b'X';
    let err = load_err(&s, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::BadMagic { found: 0x5845564d }
    ));
    assert_eq!(err.offset(), Some(0));
}

#[test]
fn format_version_2_is_obsolete() {
    let log = Log::default();
    let mut s = snapshot(&log);
    s[7] = 2;
    let err = load_err(&s, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::UnsupportedFormatVersion { found: 2 }
    ));
    assert!(err.to_string().contains("obsolete"));
}

#[test]
fn machine_mismatch_names_both_machines() {
    let log = Log::default();
    let s = snapshot(&log);
    let o = LoadOptions {
        machine: Some("other-machine".into()),
        ..Default::default()
    };
    let err = load_stream(&mut destination(&log), &mut Reader::from_slice(&s), &o).unwrap_err();
    match err.kind() {
        ErrorKind::MachineMismatch { stream, local } => {
            assert_eq!(
                (stream.as_str(), local.as_str()),
                (MACHINE, "other-machine")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_configuration_section_is_an_error() {
    let log = Log::default();
    let (mut reg, _) = source(&log);
    let mut cfg = StreamConfig::new(MACHINE);
    cfg.send_configuration = false;
    let mut s = Vec::new();
    save_snapshot(&mut reg, &mut s, cfg).unwrap();
    let err = load_err(&s, &mut destination(&log));
    assert!(err.to_string().contains("configuration section"), "{err}");
    assert_eq!(err.offset(), Some(8));
    // ... and loads when the loader is told not to expect one.
    let o = LoadOptions {
        no_configuration: true,
        ..opts()
    };
    load_stream(&mut destination(&log), &mut Reader::from_slice(&s), &o).unwrap();
}

#[test]
fn configuration_page_bits_and_capabilities_must_agree() {
    let log = Log::default();
    let (mut reg, _) = source(&log);
    let mut cfg = StreamConfig::new(MACHINE);
    cfg.configuration.target_page_bits.target_page_bits = 16;
    cfg.configuration.capabilities.capabilities =
        vec![vmstate::stream::Capability("mapped-ram".into())];
    let mut s = Vec::new();
    save_snapshot(&mut reg, &mut s, cfg).unwrap();
    let err = load_err(&s, &mut destination(&log));
    assert!(err.to_string().contains("16 page bits"), "{err}");
    assert_eq!(err.offset(), Some(8));
    let o = LoadOptions {
        target_page_bits: Some(16),
        ..opts()
    };
    let err = load_stream(&mut destination(&log), &mut Reader::from_slice(&s), &o).unwrap_err();
    assert!(err.to_string().contains("mapped-ram"), "{err}");
    let o = LoadOptions {
        target_page_bits: Some(16),
        capabilities: vec!["mapped-ram".into()],
        ..opts()
    };
    load_stream(&mut destination(&log), &mut Reader::from_slice(&s), &o).unwrap();
}

#[test]
fn unknown_section_names_idstr_instance_and_offset() {
    let log = Log::default();
    let s = snapshot(&log);
    let mut dst = destination(&log);
    let apic = dst.find_section("apic", 0).unwrap();
    assert!(dst.unregister(apic));
    let err = load_err(&s, &mut dst);
    match err.kind() {
        ErrorKind::UnknownSection {
            idstr,
            instance_id,
            section_id,
        } => assert_eq!((idstr.as_str(), *instance_id, *section_id), ("apic", 0, 5)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.offset(), Some(record_offset(&s, 4, 5) as u64));
    assert_eq!(err.section().unwrap().idstr, "apic");
}

#[test]
fn newer_section_version_is_refused() {
    let log = Log::default();
    let s = snapshot(&log);
    let mut dst = Registry::new();
    dst.register_iterative(
        "ram",
        3,
        Blob::new("ram", vec![], &log),
        Registration::new(),
    )
    .unwrap();
    let err = load_err(&s, &mut dst);
    assert!(matches!(
        err.kind(),
        ErrorKind::SectionVersionTooNew {
            stream: 4,
            local: 3
        }
    ));
    assert_eq!(err.section().unwrap().idstr, "ram");
}

#[test]
fn part_section_without_start_is_an_error() {
    let log = Log::default();
    let s = snapshot(&log);
    let start = record_offset(&s, 1, 1);
    let part = record_offset(&s, 2, 1);
    // Turn the START of ram into a PART of an unknown id 99 by rebuilding: drop it.
    let mut t = s[..start].to_vec();
    t.extend(&s[record_offset(&s, 1, 3)..part]);
    t.extend(&s[part..]);
    let err = load_err(&t, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::UnknownSectionId { section_id: 1 }
    ));
}

#[test]
fn missing_footer_is_an_error() {
    let log = Log::default();
    let mut s = snapshot(&log);
    let apic = record_offset(&s, 4, 5);
    let footer = apic + 1 + 4 + 1 + 4 + 8 + 4;
    assert_eq!(s[footer], 0x7e);
    s[footer] = 0x7f;
    let err = load_err(&s, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::MissingFooter { found: 0x7f }
    ));
    assert_eq!(err.offset(), Some(footer as u64));
    assert_eq!(err.section().unwrap().idstr, "apic");
}

#[test]
fn footer_with_another_section_id_is_an_error() {
    let log = Log::default();
    let mut s = snapshot(&log);
    let apic = record_offset(&s, 4, 5);
    let footer = apic + 1 + 4 + 1 + 4 + 8 + 4;
    s[footer + 4] = 9;
    let err = load_err(&s, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::FooterMismatch {
            expected: 5,
            found: 9
        }
    ));
}

#[test]
fn unknown_record_type_is_an_error() {
    let log = Log::default();
    let mut s = snapshot(&log);
    let at = record_offset(&s, 4, 5);
    s[at] = 0x09;
    let err = load_err(&s, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::UnknownRecordType { byte: 9 }
    ));
    assert_eq!(err.offset(), Some(at as u64));
}

#[test]
fn colo_is_unsupported_and_named() {
    let log = Log::default();
    let mut s = snapshot(&log);
    let at = record_offset(&s, 8, 11);
    s[at + 2] = 8; // ENABLE_COLO, len 0
    let err = load_err(&s, &mut destination(&log));
    assert!(matches!(
        err.kind(),
        ErrorKind::UnsupportedCommand {
            cmd: 8,
            name: "ENABLE_COLO",
            ..
        }
    ));
}

#[test]
fn a_postcopy_command_out_of_order_is_refused_and_named() {
    let log = Log::default();
    let mut s = snapshot(&log);
    let at = record_offset(&s, 8, 11);
    s[at + 2] = 4; // POSTCOPY_LISTEN, len 0, without POSTCOPY_ADVISE
    let err = load_err(&s, &mut destination(&log));
    assert!(err.to_string().contains("POSTCOPY_LISTEN"), "{err}");
    assert_eq!(err.offset(), Some(at as u64));
}

#[test]
fn command_out_of_range_or_with_a_wrong_length_is_invalid() {
    let log = Log::default();
    let s = snapshot(&log);
    let at = record_offset(&s, 8, 11);
    let mut bad_cmd = s.clone();
    bad_cmd[at + 2] = 12;
    assert!(matches!(
        load_err(&bad_cmd, &mut destination(&log)).kind(),
        ErrorKind::InvalidCommand { cmd: 12, .. }
    ));
    let mut bad_len = s.clone();
    bad_len[at + 4] = 1;
    assert!(matches!(
        load_err(&bad_len, &mut destination(&log)).kind(),
        ErrorKind::InvalidCommand {
            cmd: 11,
            len: 1,
            ..
        }
    ));
}

#[test]
fn truncation_at_every_offset_is_an_error_never_a_panic() {
    let log = Log::default();
    let s = snapshot(&log);
    let vmdesc_start = records(&s).last().unwrap().2 + 1;
    for cut in 0..s.len() {
        let res = load_stream(
            &mut destination(&log),
            &mut Reader::from_slice(&s[..cut]),
            &opts(),
        );
        if cut == vmdesc_start {
            // Cut right after EOF: the trailer is optional, the load is complete.
            assert!(res.is_ok(), "cut at {cut}");
        } else {
            assert!(res.is_err(), "cut at {cut} of {} loaded", s.len());
        }
    }
}

#[test]
fn loading_a_randomly_corrupted_stream_never_panics() {
    let log = Log::default();
    let s = snapshot(&log);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut t = s.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % t.len() as u64) as usize;
            t[at] = (seed >> 32) as u8;
        }
        let _ = load_stream(&mut destination(&log), &mut Reader::from_slice(&t), &opts());
    }
}

// ---- failure and cleanup ----

#[test]
fn failed_save_cleans_up_and_leaves_the_source_usable() {
    let log = Log::default();
    let (mut reg, uart) = source(&log);
    let bad = Arc::new(Mutex::new(Blob::new("bad", vec![1; 100], &log)));
    bad.lock().unwrap().fail_iterate = true;
    reg.register_iterative("bad", 1, bad.clone(), Registration::new())
        .unwrap();
    let mut out = Vec::new();
    let err = save_snapshot(&mut reg, &mut out, StreamConfig::new(MACHINE)).unwrap_err();
    assert_eq!(err.section().unwrap().idstr, "bad");
    assert!(err.to_string().contains("disk on fire"));
    let lines = log.lock().unwrap().clone();
    for l in ["ram:cleanup", "blob2:cleanup", "bad:cleanup"] {
        assert!(lines.iter().any(|x| x == l), "missing {l}");
    }
    assert_eq!(uart.lock().unwrap().divisor, 12);
    // The source can save again once the handler recovers.
    bad.lock().unwrap().fail_iterate = false;
    save_snapshot(&mut reg, &mut Vec::new(), StreamConfig::new(MACHINE)).unwrap();
}

#[test]
fn dropping_a_session_midway_cleans_up() {
    let log = Log::default();
    let (mut reg, _) = source(&log);
    {
        let mut s = SaveSession::new(&mut reg, Vec::new(), StreamConfig::new(MACHINE));
        s.setup().unwrap();
        s.iterate(5).unwrap();
    }
    assert!(log.lock().unwrap().iter().any(|l| l == "ram:cleanup"));
}

#[test]
fn session_phases_out_of_order_are_refused() {
    let log = Log::default();
    let (mut reg, _) = source(&log);
    let mut s = SaveSession::new(&mut reg, Vec::new(), StreamConfig::new(MACHINE));
    assert!(s.iterate(10).is_err());
    assert!(s.complete().is_err());
}

#[test]
fn switchover_start_can_be_left_out_for_older_receivers() {
    let log = Log::default();
    let (mut reg, _) = source(&log);
    let mut cfg = StreamConfig::new(MACHINE);
    cfg.send_switchover_start = false;
    cfg.integrity_record = false;
    let mut s = Vec::new();
    save_snapshot(&mut reg, &mut s, cfg).unwrap();
    assert!(!walk(&s).iter().any(|(t, _)| *t == 8));
    let report = load_stream(&mut destination(&log), &mut Reader::from_slice(&s), &opts()).unwrap();
    assert!(!report.switchover_started);
}

// ---- transports ----

/// Writes a snapshot with `write`, loads what `read` gives back, and compares the
/// loaded state with the source's.
fn round_trip_via(write: impl FnOnce(Vec<u8>), read: impl FnOnce() -> Box<dyn std::io::Read>) {
    let log = Log::default();
    let s = snapshot(&log);
    write(s.clone());
    let mut dst = Destination::new(&log);
    let report = load_stream(&mut dst.reg, &mut Reader::from_io(read()), &opts()).unwrap();
    assert_eq!(report.bytes, s.len() as u64);
    dst.assert_equals_source();
}

#[test]
fn round_trip_through_an_atomic_file() {
    let dir = std::env::temp_dir().join(format!("vmstate-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("snap.mig");
    let p2 = path.clone();
    round_trip_via(
        move |bytes| {
            let mut f = vmstate::transport::AtomicFile::create(&p2).unwrap();
            f.write_all(&bytes).unwrap();
            f.commit().unwrap();
        },
        || Box::new(vmstate::transport::open_snapshot(&path).unwrap()),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn uncommitted_atomic_file_leaves_the_old_snapshot() {
    let dir = std::env::temp_dir().join(format!("vmstate-torn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("snap.mig");
    std::fs::write(&path, b"old").unwrap();
    {
        let mut f = vmstate::transport::AtomicFile::create(&path).unwrap();
        f.write_all(b"half a new snap").unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "temp file removed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn round_trip_through_tcp() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let sender = std::thread::spawn(move || {
        let (mut reg, _) = source(&log);
        let sock = std::net::TcpStream::connect(addr).unwrap();
        save_snapshot(&mut reg, sock, StreamConfig::new(MACHINE)).unwrap();
    });
    let (sock, _) = listener.accept().unwrap();
    let log = Log::default();
    let mut dst = Destination::new(&log);
    load_stream(&mut dst.reg, &mut Reader::from_io(sock), &opts()).unwrap();
    sender.join().unwrap();
    dst.assert_equals_source();
}

#[test]
fn round_trip_through_a_unix_socket() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let log = Log::default();
    let sender = std::thread::spawn(move || {
        let (mut reg, _) = source(&log);
        save_snapshot(&mut reg, a, StreamConfig::new(MACHINE)).unwrap();
    });
    let log = Log::default();
    let mut dst = Destination::new(&log);
    load_stream(&mut dst.reg, &mut Reader::from_io(b), &opts()).unwrap();
    sender.join().unwrap();
    dst.assert_equals_source();
}

#[test]
fn round_trip_through_an_in_memory_pipe() {
    let (w, r) = vmstate::transport::pipe();
    let log = Log::default();
    let sender = std::thread::spawn(move || {
        let (mut reg, _) = source(&log);
        save_snapshot(&mut reg, w, StreamConfig::new(MACHINE)).unwrap();
    });
    let log = Log::default();
    let mut dst = Destination::new(&log);
    load_stream(&mut dst.reg, &mut Reader::from_io(r), &opts()).unwrap();
    sender.join().unwrap();
    dst.assert_equals_source();
}

#[derive(VmState, Default)]
#[vmstate(name = "counted")]
struct Counted {
    n: u8,
    #[vmstate(len = n)]
    v: Vec<u8>,
}

#[test]
fn a_device_that_fails_to_save_is_named_and_the_handlers_cleaned_up() {
    let log = Log::default();
    let (mut reg, _) = source(&log);
    let bad = Counted { n: 3, v: vec![1] }; // the count disagrees with the data
    reg.register_device(bad, Registration::new().instance(7))
        .unwrap();
    let err = save_snapshot(&mut reg, &mut Vec::new(), StreamConfig::new(MACHINE)).unwrap_err();
    let section = err.section().unwrap();
    assert_eq!(
        (section.idstr.as_str(), section.instance_id),
        ("counted", 7)
    );
    assert_eq!(err.path(), "counted.v");
    assert!(log.lock().unwrap().iter().any(|l| l == "ram:cleanup"));
}

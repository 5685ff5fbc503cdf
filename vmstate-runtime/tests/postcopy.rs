//! Postcopy between `migrate_over` and `receive_with`: the switch, pages asked for by a
//! guest already running on the destination, pages dirtied just before the switch,
//! requests for pages already sent, a link that drops in postcopy, and the destination's
//! checks of the command order.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use support::proxy::{Cut, Proxy};
use support::{MACHINE, PAGE, ShadowGuest, TimerDev, UartDev, connect, listen};
use vmstate::migrate::{
    CancelToken, IncomingGuest, IncomingParams, MigrationParams, PostcopyPolicy, StartPostcopy,
    Status, migrate_over, receive_with,
};
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::LoadReport;
use vmstate::{ErrorKind, Registration};

const PAGES: u64 = 4096; // 16 MiB

/// The destination's guest: at start a vCPU thread reads pages through the RAM block's
/// API (each missing one is asked for) and writes a marker into one page.
struct DestGuest {
    ram: Arc<RamBlock>,
    /// Pages the vCPU reads, in order, and the page it writes `MARK` into first.
    touch: Vec<u64>,
    mark_page: Option<u64>,
    vcpu: Option<JoinHandle<()>>,
    touched: Arc<AtomicU64>,
    paused: bool,
}

const MARK: u64 = 0x5ca1_ab1e_0000_0001;

impl DestGuest {
    fn new(ram: Arc<RamBlock>, touch: Vec<u64>, mark_page: Option<u64>) -> Self {
        DestGuest {
            ram,
            touch,
            mark_page,
            vcpu: None,
            touched: Arc::default(),
            paused: false,
        }
    }
}

impl IncomingGuest for DestGuest {
    fn start(&mut self) -> vmstate::Result<()> {
        let (ram, touch, mark, touched) = (
            self.ram.clone(),
            self.touch.clone(),
            self.mark_page,
            self.touched.clone(),
        );
        self.vcpu = Some(std::thread::spawn(move || {
            if let Some(p) = mark {
                ram.write_u64(p * PAGE + 8, MARK);
            }
            let mut buf = [0u8; 8];
            for p in touch {
                ram.read(p * PAGE, &mut buf);
                touched.fetch_add(1, Ordering::Relaxed);
            }
        }));
        Ok(())
    }
    fn pause(&mut self) {
        self.paused = true;
    }
}

struct Landed {
    result: vmstate::Result<LoadReport>,
    guest: DestGuest,
    dev: Arc<Mutex<TimerDev>>,
}

/// A destination thread receiving one migration on a fresh listener.
fn destination(
    listener: std::net::TcpListener,
    touch: Vec<u64>,
    mark_page: Option<u64>,
) -> JoinHandle<Landed> {
    destination_with(listener, touch, mark_page, false)
}

/// [`destination`], taking a postcopy-preempt channel from the same listener when
/// `preempt`.
fn destination_with(
    listener: std::net::TcpListener,
    touch: Vec<u64>,
    mark_page: Option<u64>,
    preempt: bool,
) -> JoinHandle<Landed> {
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let ram = Arc::new(RamBlock::new("ram0", PAGES * PAGE).unwrap());
        let dev = Arc::new(Mutex::new(TimerDev::default()));
        let mut handler = RamHandler::new(vec![ram.clone()]).unwrap();
        if preempt {
            handler = handler.with_postcopy_preempt_incoming(Box::new(move || {
                let (sock, _) = listener.accept()?;
                Ok(Box::new(sock) as Box<dyn std::io::Read + Send>)
            }));
        }
        let mut reg = vmstate::Registry::new();
        reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
            .unwrap();
        reg.register_device(dev.clone(), Registration::new())
            .unwrap();
        reg.register_device(
            Arc::new(Mutex::new(UartDev::default())),
            Registration::new(),
        )
        .unwrap();
        let mut guest = DestGuest::new(ram, touch, mark_page);
        let mut params = IncomingParams::new(MACHINE);
        params.io_timeout = Some(Duration::from_secs(5));
        let result = receive_with(&mut reg, sock, &params, &mut guest);
        Landed { result, guest, dev }
    })
}

/// Migrates `guest` over a new connection to `addr` and waits for `dst`; both ends
/// must succeed. The source's statistics, the destination's report and what landed.
fn migrate_to(
    reg: &mut vmstate::Registry,
    guest: &mut ShadowGuest,
    params: &MigrationParams,
    addr: std::net::SocketAddr,
    dst: JoinHandle<Landed>,
) -> (vmstate::migrate::MigrationStats, LoadReport, Landed) {
    let stats = support::migrate_to(reg, addr, guest, params);
    let mut landed = dst.join().unwrap();
    let taken = Err(vmstate::Error::invalid("test", "the result was taken"));
    let report = match std::mem::replace(&mut landed.result, taken) {
        Ok(r) => r,
        Err(e) => panic!("destination: {e}; source: {stats:?}"),
    };
    (stats.unwrap(), report, landed)
}

/// Source parameters that switch to postcopy after one round, slowed down so that
/// most of RAM is still on the source at the switch and the background pages take a
/// second: the destination's requests overtake them.
fn postcopy_params(base: MigrationParams) -> MigrationParams {
    let mut params = base;
    params.max_bandwidth = Some(8 << 20);
    params.max_postcopy_bandwidth = Some(16 << 20);
    params.postcopy = Some(PostcopyPolicy::after_rounds(1));
    params
}

#[test]
fn postcopy_moves_a_running_guest_and_the_destination_asks_for_what_it_touches() {
    let mut guest = ShadowGuest::new(PAGES, 256, 7);
    let (mut reg, params) = guest.source();
    let params = postcopy_params(params);
    let (l, addr) = listen();
    // The destination's vCPU reads pages from the end of RAM backwards (the background
    // scan sends from the start) and writes a marker into page 3000.
    let touch: Vec<u64> = (0..PAGES).rev().step_by(7).collect();
    let dst = destination(l, touch.clone(), Some(3000));
    let (stats, report, mut landed) = migrate_to(&mut reg, &mut guest, &params, addr, dst);

    assert_eq!(stats.status, Status::Completed);
    assert_eq!(
        (guest.stops, guest.resumes),
        (1, 0),
        "never resumed on the source"
    );
    let pc = stats.postcopy.expect("the migration switched to postcopy");
    assert!(pc.requests > 0, "the destination asked for pages: {pc:?}");
    assert!(pc.requested_pages > 0);
    let seen = report.postcopy.expect("the destination saw postcopy");
    assert!(seen.requests > 0 && seen.pages_after_start > 0, "{seen:?}");
    assert!(
        seen.discarded_pages > 0,
        "pages still to send were discarded: {seen:?}"
    );
    assert!(seen.fault_latency_p99 >= seen.fault_latency_p50);

    landed.guest.vcpu.take().unwrap().join().unwrap();
    assert_eq!(
        landed.guest.touched.load(Ordering::Relaxed),
        touch.len() as u64
    );
    assert_eq!(landed.guest.ram.missing_pages(), 0, "every page arrived");
    // Every page equals the source's at the switch, except the one the destination's
    // guest wrote, which holds its write (no late page overwrote it).
    let (src, dst) = (&guest.ram, &landed.guest.ram);
    for p in 0..PAGES {
        if p != 3000 {
            assert_eq!(
                src.page_checksum(p as usize),
                dst.page_checksum(p as usize),
                "page {p}"
            );
        }
    }
    let mut word = [0u8; 8];
    dst.read(3000 * PAGE + 8, &mut word);
    assert_eq!(u64::from_ne_bytes(word), MARK);
    assert_eq!(*guest.dev.lock().unwrap(), *landed.dev.lock().unwrap());
    assert!(!landed.guest.paused);
}

#[test]
fn with_the_preempt_channel_requested_pages_travel_beside_the_main_stream() {
    let mut guest = ShadowGuest::new(PAGES, 256, 5);
    let (l, addr) = listen();
    let (mut reg, params) = guest.source_with(|h| {
        h.with_postcopy_preempt(Box::new(move || {
            Ok(Box::new(connect(addr)) as Box<dyn std::io::Write + Send>)
        }))
    });
    let params = postcopy_params(params);
    let touch: Vec<u64> = (0..PAGES).rev().step_by(5).collect();
    let dst = destination_with(l, touch.clone(), Some(2000), true);
    let (stats, report, mut landed) = migrate_to(&mut reg, &mut guest, &params, addr, dst);
    let pc = stats.postcopy.expect("the migration switched to postcopy");
    assert!(pc.requests > 0 && pc.requested_pages > 0, "{pc:?}");
    let ram = stats.ram.expect("RAM counters");
    // Every page sent for a request went on the preempt channel: a page record takes
    // at least 9 bytes (a zero page's).
    assert!(
        ram.preempt_bytes >= pc.requested_pages * 9,
        "{} bytes on the preempt channel for {} requested pages",
        ram.preempt_bytes,
        pc.requested_pages
    );
    let seen = report.postcopy.unwrap();
    assert!(seen.requests > 0);
    assert_eq!(
        seen.preempt_pages, pc.requested_pages,
        "every page sent for a request came on the preempt channel"
    );
    landed.guest.vcpu.take().unwrap().join().unwrap();
    assert_eq!(landed.guest.ram.missing_pages(), 0, "every page arrived");
    for p in (0..PAGES).filter(|&p| p != 2000) {
        assert_eq!(
            guest.ram.page_checksum(p as usize),
            landed.guest.ram.page_checksum(p as usize),
            "page {p}"
        );
    }
    let mut word = [0u8; 8];
    landed.guest.ram.read(2000 * PAGE + 8, &mut word);
    assert_eq!(
        u64::from_ne_bytes(word),
        MARK,
        "no late page overwrote the guest's write"
    );
}

#[test]
fn a_preempt_channel_never_opened_leaves_nothing_behind() {
    // Precopy converges before postcopy is asked for: the source never opens the
    // preempt channel, the destination never takes it, and its blocks are freed
    // with the registry (nothing waiting for LISTEN holds them).
    let mut guest = ShadowGuest::new(PAGES, 4, 13);
    let (l, addr) = listen();
    let (mut reg, mut params) = guest.source_with(|h| {
        h.with_postcopy_preempt(Box::new(move || {
            Ok(Box::new(connect(addr)) as Box<dyn std::io::Write + Send>)
        }))
    });
    params.postcopy = Some(PostcopyPolicy::on_request(StartPostcopy::new()));
    let dst = destination_with(l, Vec::new(), None, true);
    let (stats, report, mut landed) = migrate_to(&mut reg, &mut guest, &params, addr, dst);
    landed.guest.vcpu.take().unwrap().join().unwrap();
    assert!(stats.postcopy.is_none(), "precopy converged");
    assert!(report.postcopy.is_none());
    assert_eq!(
        Arc::strong_count(&landed.guest.ram),
        1,
        "only the guest holds its RAM once the registry is gone"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the acceptor's listener was dropped with the registry"
    );
}

#[test]
fn pages_dirtied_just_before_the_switch_reach_the_destination() {
    // Round 1 sends every page; then, right before the switch, 40 pages it sent are
    // written again: the destination's copies are stale, so they must be discarded
    // there and sent again.
    let mut guest = ShadowGuest::new(PAGES, 64, 11);
    let (mut reg, mut params) = guest.source();
    let trigger = StartPostcopy::new();
    params.downtime_limit = Duration::ZERO; // precopy never converges
    params.postcopy = Some(PostcopyPolicy::on_request(trigger.clone()));
    let (l, addr) = listen();
    let dst = destination(l, (1000..1040).collect(), None);
    let ram = guest.ram.clone();
    let stats = migrate_over(
        &mut reg,
        connect(addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |s| {
            if s.status == Status::Active && s.rounds == 1 {
                for p in 1000..1040 {
                    ram.write_u64(p * PAGE + 16, 0xfeed_0000 + p);
                }
                trigger.start();
            }
        },
    );
    let mut landed = dst.join().unwrap();
    let report = match landed.result {
        Ok(r) => r,
        Err(e) => panic!("destination: {e}; source: {stats:?}"),
    };
    let stats = stats.unwrap();
    assert_eq!(
        stats.postcopy.map(|p| p.precopy_time.is_zero()),
        Some(false)
    );
    assert!(report.postcopy.unwrap().discarded_pages >= 40);
    landed.guest.vcpu.take().unwrap().join().unwrap();
    let mut word = [0u8; 8];
    for p in 1000..1040u64 {
        landed.guest.ram.read(p * PAGE + 16, &mut word);
        assert_eq!(u64::from_ne_bytes(word), 0xfeed_0000 + p, "page {p}");
    }
    for p in 0..PAGES as usize {
        assert_eq!(
            guest.ram.page_checksum(p),
            landed.guest.ram.page_checksum(p),
            "page {p}"
        );
    }
}

#[test]
fn a_link_dropped_in_postcopy_pauses_the_destination_and_counts_what_is_missing() {
    let mut guest = ShadowGuest::new(PAGES, 256, 3);
    let (mut reg, params) = guest.source();
    let mut params = postcopy_params(params);
    params.max_bandwidth = Some(4 << 20);
    params.io_timeout = Some(Duration::from_secs(5));
    let (l, addr) = listen();
    // The destination's vCPU touches one page and then nothing: the background pages
    // flow until the link is cut.
    let dst = destination(l, vec![PAGES - 1], None);
    // Cut the link 1 MiB after the package (the pages after POSTCOPY_RUN).
    let run_cmd = vec![0x08, 0x00, 0x05, 0x00, 0x00];
    let proxy = Proxy::start(
        addr,
        Cut::AfterPattern {
            pattern: run_cmd,
            from: 0,
            plus: 1 << 20,
        },
    );
    let result = migrate_over(
        &mut reg,
        connect(proxy.addr),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    );
    let landed = dst.join().unwrap();
    assert!(proxy.did_cut());
    let e = result.expect_err("the source cannot finish without the link");
    assert!(e.to_string().contains("postcopy"), "{e}");
    assert_eq!(
        guest.resumes, 0,
        "the guest is not resumed on the source after the switch"
    );

    let e = landed
        .result
        .expect_err("the destination lost the rest of the stream");
    let ErrorKind::MigrationFailed { phase, cause, .. } = e.kind() else {
        panic!("{e}");
    };
    assert!(phase.contains("paused"), "{phase}");
    let missing = landed.guest.ram.missing_pages();
    assert!(missing > 0);
    assert!(
        cause
            .to_string()
            .contains(&format!("{missing} pages were still missing")),
        "{cause}"
    );
    assert!(landed.guest.paused, "the destination paused its guest");
    // A vCPU touching a missing page now waits for it: it never runs without it.
    let ram = landed.guest.ram.clone();
    let page = (0..PAGES as usize).find(|&p| ram.page_missing(p)).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiting = Arc::new(AtomicBool::new(true));
    std::thread::spawn(move || {
        let mut b = [0u8; 8];
        ram.read(page as u64 * PAGE, &mut b);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a read of a missing page returned after the link was lost"
    );
    waiting.store(false, Ordering::Relaxed);
    proxy.join();
}

/// What one record of a postcopy stream was, as the tests below list them.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Command(&'static str, Vec<u8>),
    /// A PACKAGED command and what its package held.
    Package(Vec<Seen>),
    Section(u8, String),
    /// A page record in a RAM section: block, page, whether it was a full page.
    Page(String, u64, bool),
    Eof,
}

/// Lists the records of `bytes` (a whole stream, or a package when `package`), RAM
/// section payloads page by page; checks that nothing follows EOF.
fn walk(bytes: &[u8], package: bool) -> Vec<Seen> {
    use vmstate::VmState;
    use vmstate::ram::records::{BlockRef, RamRecord, RamRecordReader};
    use vmstate::stream::records::{Footers, Record, RecordReader};
    let mut r = vmstate::Reader::from_slice(bytes);
    let mut records = if package {
        RecordReader::for_package(Footers::Expected)
    } else {
        RecordReader::new(Footers::Expected)
    };
    let mut ram = RamRecordReader::new(PAGE);
    let mut last_block = String::new();
    let mut out = Vec::new();
    loop {
        if package && !records.in_section() && r.at_end().unwrap() {
            return out;
        }
        match records.next(&mut r).unwrap() {
            Record::Configuration => {
                vmstate::stream::Configuration::default()
                    .load(&mut r, 0)
                    .unwrap();
            }
            Record::Footer { .. } => {}
            Record::Command(c) => match c.package {
                Some(p) => out.push(Seen::Package(walk(&p, true))),
                None => out.push(Seen::Command(c.name, c.data)),
            },
            Record::Section(h) => {
                out.push(Seen::Section(h.kind.byte(), h.idstr.clone()));
                if h.idstr == "timer-dev" {
                    TimerDev::default().load(&mut r, h.version).unwrap();
                    continue;
                }
                if h.idstr == "uart-dev" {
                    UartDev::default().load(&mut r, h.version).unwrap();
                    continue;
                }
                loop {
                    let (block, offset, full) = match ram.next(&mut r).unwrap() {
                        RamRecord::Eos => break,
                        RamRecord::MemSize { total } => {
                            ram.block_list(&mut r, total, |_, _| Ok(())).unwrap();
                            continue;
                        }
                        RamRecord::Zero { block, offset } => (block, offset, false),
                        RamRecord::Page { block, offset } => {
                            r.skip(PAGE).unwrap();
                            (block, offset, true)
                        }
                        other => panic!("{other:?} in a postcopy stream"),
                    };
                    if let BlockRef::Named(n) = block {
                        last_block = n;
                    }
                    out.push(Seen::Page(last_block.clone(), offset / PAGE, full));
                }
            }
            Record::Eof => {
                out.push(Seen::Eof);
                assert!(r.at_end().unwrap(), "no vmdesc after a postcopy stream");
                return out;
            }
        }
    }
}

#[test]
fn the_switch_follows_qemus_command_sequence_and_discards_what_is_still_to_send() {
    use vmstate::IterativeHandler;
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::{SaveSession, StreamConfig};
    let ram = Arc::new(RamBlock::new("ram0", 64 * PAGE).unwrap());
    for p in 0..64 {
        ram.write_u64(p * PAGE, p + 1);
    }
    let handler = RamHandler::new(vec![ram.clone()]).unwrap();
    let requests = handler.page_requests().expect("RAM serves page requests");
    let mut reg = vmstate::Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    reg.register_device(TimerDev::default(), Registration::new())
        .unwrap();
    let mut config = StreamConfig::new(MACHINE);
    config.open_return_path = true;
    config.postcopy = true;
    let mut out = Vec::new();
    let mut s = SaveSession::new(&mut reg, &mut out, config);
    s.setup().unwrap();
    s.iterate(u64::MAX).unwrap(); // every page goes out once
    for p in [3, 4, 5, 10] {
        ram.write_u64(p * PAGE + 8, 0xd1); // dirtied just before the switch
    }
    s.start_postcopy().unwrap();
    // The destination asks for page 0 (sent, not dirtied since: not sent again) and
    // page 10 (dirty: sent first, before the background pages).
    requests.push(Some("ram0"), 0, PAGE).unwrap();
    requests.push(None, 10 * PAGE, PAGE).unwrap();
    s.iterate(u64::MAX).unwrap();
    s.complete().unwrap();
    drop(s);

    let seen = walk(&out, false);
    let commands: Vec<_> = seen
        .iter()
        .filter_map(|x| match x {
            Seen::Command(name, _) => Some(*name),
            Seen::Package(_) => Some("PACKAGED"),
            _ => None,
        })
        .collect();
    // Spec 5.6 (and QEMU 10.0.2's stream, which has no PING 0x42 in the package):
    // advise at the start; at the switch SWITCHOVER_START, the discards, PING 2, the
    // package, PING 4.
    assert_eq!(
        commands,
        [
            "OPEN_RETURN_PATH",
            "PING",
            "POSTCOPY_ADVISE",
            "SWITCHOVER_START",
            "POSTCOPY_RAM_DISCARD",
            "PING",
            "PACKAGED",
            "PING"
        ]
    );
    let data = |name: &str, nth: usize| {
        seen.iter()
            .filter_map(|x| match x {
                Seen::Command(n, d) if *n == name => Some(d.clone()),
                _ => None,
            })
            .nth(nth)
            .unwrap()
    };
    assert_eq!(
        data("POSTCOPY_ADVISE", 0),
        [0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]
    );
    let mut discard = vec![0u8, 4];
    discard.extend(b"ram0\0");
    for (start, len) in [(3u64, 3u64), (10, 1)] {
        discard.extend((start * PAGE).to_be_bytes());
        discard.extend((len * PAGE).to_be_bytes());
    }
    assert_eq!(data("POSTCOPY_RAM_DISCARD", 0), discard);
    assert_eq!(data("PING", 1), 2u32.to_be_bytes());
    assert_eq!(data("PING", 2), 4u32.to_be_bytes());
    let package = seen
        .iter()
        .find_map(|x| match x {
            Seen::Package(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        package,
        [
            Seen::Command("POSTCOPY_LISTEN", vec![]),
            Seen::Section(4, "timer-dev".into()),
            Seen::Command("PING", 3u32.to_be_bytes().to_vec()),
            Seen::Command("POSTCOPY_RUN", vec![]),
        ]
    );
    // After PING 4: one PART whose first page is the requested dirty one, then the other
    // discarded pages; page 0 is not sent again; END; EOF.
    let ping4 = seen
        .iter()
        .rposition(|x| matches!(x, Seen::Command("PING", _)))
        .unwrap();
    let after: Vec<_> = seen[ping4 + 1..].to_vec();
    let page = |p: u64| Seen::Page("ram0".into(), p, true);
    assert_eq!(
        after,
        [
            Seen::Section(2, "ram".into()),
            page(10),
            page(3),
            page(4),
            page(5),
            Seen::Section(3, "ram".into()),
            Seen::Eof
        ]
    );
    let (n, sent_for_requests, _) = requests.summary();
    assert_eq!((n, sent_for_requests), (2, 1));
}

/// A hand-made postcopy stream fed to `receive_with` over a socket pair (the source's
/// end drained): what the destination says about it.
fn receive_crafted(tail: &[u8]) -> vmstate::Result<LoadReport> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use vmstate::ram::{RAM_VERSION, RamHandler};
    use vmstate::stream::records::{SectionKind, write_command, write_footer, write_full_header};
    let mut w = vmstate::Writer::new();
    w.put_be32(0x5145_564d);
    w.put_be32(3);
    w.put_u8(0x07);
    vmstate::VmState::save(&mut vmstate::stream::Configuration::new(MACHINE), &mut w).unwrap();
    write_command(&mut w, 1, &[]).unwrap(); // OPEN_RETURN_PATH
    let mut advise = PAGE.to_be_bytes().to_vec();
    advise.extend(PAGE.to_be_bytes());
    write_command(&mut w, 3, &advise).unwrap();
    write_full_header(&mut w, SectionKind::Start, 0, "ram", 0, RAM_VERSION).unwrap();
    w.put_be64((8 * PAGE) | 0x04);
    w.put_counted_str("ram0").unwrap();
    w.put_be64(8 * PAGE);
    w.put_be64(0x10);
    write_footer(&mut w, 0);
    let mut stream = w.into_vec();
    stream.extend_from_slice(tail);
    let ram = Arc::new(RamBlock::new("ram0", 8 * PAGE).unwrap());
    let mut reg = vmstate::Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(vec![ram]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut drain = theirs.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = theirs.write_all(&stream);
        let _ = theirs.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut b = [0u8; 256];
        while matches!(drain.read(&mut b), Ok(n) if n > 0) {}
    });
    let mut params = IncomingParams::new(MACHINE);
    params.io_timeout = Some(Duration::from_secs(5));
    struct NoVcpu;
    impl IncomingGuest for NoVcpu {
        fn start(&mut self) -> vmstate::Result<()> {
            Ok(())
        }
    }
    receive_with(&mut reg, ours, &params, &mut NoVcpu)
}

fn cmd(n: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08];
    v.extend(n.to_be_bytes());
    v.extend((data.len() as u16).to_be_bytes());
    v.extend(data);
    v
}

fn package(inner: &[u8]) -> Vec<u8> {
    let mut v = cmd(7, &(inner.len() as u32).to_be_bytes());
    v.extend(inner);
    v
}

#[test]
fn the_destination_refuses_postcopy_commands_out_of_order_or_malformed() {
    let listen_run = [cmd(4, &[]), cmd(5, &[])].concat();
    let discard = |start: u64, len: u64| {
        let mut p = vec![0u8, 4];
        p.extend(b"ram0\0");
        p.extend(start.to_be_bytes());
        p.extend(len.to_be_bytes());
        cmd(6, &p)
    };
    for (tail, why) in [
        (cmd(5, &[]), "POSTCOPY_RUN"), // RUN before LISTEN
        (
            [cmd(4, &[]), discard(0, PAGE)].concat(),
            "POSTCOPY_RAM_DISCARD",
        ), // discard after LISTEN
        (discard(100, PAGE), "0x1000 bytes at 0x64"), // not page-aligned
        (discard(0, 9 * PAGE), "0x9000 bytes"), // past the block
        (package(&package(&listen_run)), "package inside a package"),
        (
            [package(&listen_run), vec![0]].concat(),
            "8 pages never sent",
        ), // EOF, pages missing
    ] {
        let e = receive_crafted(&tail).expect_err(why);
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
}

#[test]
fn a_postcopy_stream_that_sends_every_page_loads() {
    // Discard a page that never came, LISTEN and RUN in a package, then all 8 pages
    // as zero pages in a PART, END, EOF.
    let mut p = vec![0u8, 4];
    p.extend(b"ram0\0");
    p.extend(0u64.to_be_bytes());
    p.extend(PAGE.to_be_bytes());
    let mut part = vec![0x02, 0, 0, 0, 0];
    for page in 0..8u64 {
        let cont = if page == 0 { 0 } else { 0x20 };
        part.extend(((page * PAGE) | 0x02 | cont).to_be_bytes());
        if page == 0 {
            part.push(4);
            part.extend(b"ram0");
        }
        part.push(0);
    }
    part.extend(0x10u64.to_be_bytes());
    part.extend([0x7e, 0, 0, 0, 0]);
    let end = [
        vec![0x03, 0, 0, 0, 0],
        0x10u64.to_be_bytes().to_vec(),
        vec![0x7e, 0, 0, 0, 0],
    ]
    .concat();
    let tail = [
        cmd(6, &p),
        package(&[cmd(4, &[]), cmd(5, &[])].concat()),
        part,
        end,
        vec![0],
    ]
    .concat();
    let report = receive_crafted(&tail).unwrap();
    let pc = report.postcopy.expect("postcopy ran");
    assert_eq!((pc.pages_after_start, pc.discarded_pages), (8, 1));
}

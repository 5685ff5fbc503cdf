//! The precopy driver: convergence with a guest writing, cancellation, a destination
//! dying mid-stream, and the total-time limit.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vmstate::migrate::{CancelToken, GuestControl, MigrationParams, OnTimeout, Status, migrate};
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::stream::{LoadOptions, load_stream};
use vmstate::transport::pipe;
use vmstate::{
    IterationStatus, IterativeHandler, Pending, Phase, Reader, Registration, Registry, VmState,
    Writer,
};

const MACHINE: &str = "migrate-test-1.0";
const PAGES: u64 = 2048; // 8 MiB

#[derive(VmState, Default, Debug, Clone, PartialEq)]
#[vmstate(name = "counter")]
struct Counter {
    value: u64,
}

/// A guest: one vCPU thread storing to its RAM until stopped, and a device.
struct Guest {
    ram: Arc<RamBlock>,
    running: Arc<AtomicBool>,
    vcpu: Option<JoinHandle<()>>,
    writes: Arc<AtomicU64>,
    stops: u32,
    resumes: u32,
}

impl Guest {
    fn new() -> Self {
        let mut g = Guest {
            ram: Arc::new(RamBlock::new("ram0", PAGES * 4096).unwrap()),
            running: Arc::new(AtomicBool::new(false)),
            vcpu: None,
            writes: Arc::default(),
            stops: 0,
            resumes: 0,
        };
        g.start();
        g.wait_for_writes();
        g
    }

    /// Waits until the vCPU has made some writes (it may not be scheduled at once).
    fn wait_for_writes(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.writes.load(Ordering::Relaxed) < 10_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the vCPU thread never ran"
            );
            std::thread::yield_now();
        }
    }

    fn start(&mut self) {
        self.running.store(true, Ordering::SeqCst);
        let (ram, running, writes) = (self.ram.clone(), self.running.clone(), self.writes.clone());
        self.vcpu = Some(std::thread::spawn(move || {
            let mut i = writes.load(Ordering::Relaxed);
            while running.load(Ordering::Relaxed) {
                // A working set of the first quarter of RAM, rewritten in a loop.
                let page = i % (PAGES / 4);
                ram.write_u64(page * 4096 + (i % 512) * 8, i);
                i += 1;
                writes.store(i, Ordering::Relaxed);
            }
        }));
    }

    fn halt(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(h) = self.vcpu.take() {
            h.join().unwrap();
        }
    }

    fn is_running(&self) -> bool {
        self.vcpu.is_some()
    }
}

impl GuestControl for Guest {
    fn stop(&mut self) -> vmstate::Result<()> {
        self.stops += 1;
        self.halt();
        Ok(())
    }
    fn resume(&mut self) {
        self.resumes += 1;
        self.start();
    }
}

fn source(guest: &Guest) -> (Registry, MigrationParams) {
    let mut reg = Registry::new();
    let handler = RamHandler::new(vec![guest.ram.clone()]).unwrap();
    let mut params = MigrationParams::new(MACHINE);
    params.ram_stats = Some(handler.stats());
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    reg.register_device(Counter { value: 42 }, Registration::new())
        .unwrap();
    (reg, params)
}

/// A destination on a thread: returns its RAM and device after loading.
fn destination(
    input: impl Read + Send + 'static,
) -> JoinHandle<vmstate::Result<(Arc<RamBlock>, Counter, u64)>> {
    destination_with(input, false)
}

/// A destination that may also have the never-converging handler.
fn destination_with(
    input: impl Read + Send + 'static,
    endless: bool,
) -> JoinHandle<vmstate::Result<(Arc<RamBlock>, Counter, u64)>> {
    std::thread::spawn(move || {
        let ram = Arc::new(RamBlock::new("ram0", PAGES * 4096).unwrap());
        let mut reg = Registry::new();
        reg.register_iterative(
            "ram",
            RAM_VERSION,
            RamHandler::new(vec![ram.clone()])?,
            Registration::new(),
        )?;
        let counter = Arc::new(Mutex::new(Counter::default()));
        reg.register_device(counter.clone(), Registration::new())?;
        if endless {
            reg.register_iterative("endless", 1, Dirtier::default(), Registration::new())?;
        }
        let opts = LoadOptions {
            machine: Some(MACHINE.into()),
            ..Default::default()
        };
        let report = load_stream(&mut reg, &mut Reader::from_io(input), &opts)?;
        let c = counter.lock().unwrap().clone();
        Ok((ram, c, report.bytes))
    })
}

fn same_ram(a: &RamBlock, b: &RamBlock) -> bool {
    (0..a.pages()).all(|p| a.page_checksum(p) == b.page_checksum(p))
}

#[test]
fn migration_with_a_guest_writing_converges_and_the_copy_is_exact() {
    let mut guest = Guest::new();
    let (mut reg, params) = source(&guest);
    let (w, r) = pipe();
    let dst = destination(r);
    let mut rounds_seen = 0;
    let stats = migrate(
        &mut reg,
        w,
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |s| {
            rounds_seen = s.rounds;
        },
    )
    .unwrap();
    let (ram, counter, bytes) = dst.join().unwrap().unwrap();
    assert_eq!(stats.status, Status::Completed);
    assert!(!guest.is_running(), "the guest now runs on the destination");
    assert!(guest.writes.load(Ordering::Relaxed) > 0);
    assert!(
        same_ram(&guest.ram, &ram),
        "destination RAM differs from the source's"
    );
    assert_eq!(counter.value, 42);
    assert_eq!(stats.transferred, bytes);
    assert_eq!(rounds_seen, stats.rounds);
    let pages = stats.ram.unwrap();
    assert!(pages.normal_pages + pages.zero_pages >= PAGES);
}

#[test]
fn cancellation_keeps_the_guest_running_on_the_source() {
    let mut guest = Guest::new();
    let (mut reg, mut params) = source(&guest);
    reg.register_iterative("endless", 1, Dirtier::default(), Registration::new())
        .unwrap();
    params.max_bandwidth = Some(8 << 20);
    let (w, r) = pipe();
    let dst = destination_with(r, true);
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let err = migrate(&mut reg, w, &mut guest, &params, &cancel, &mut |s| {
        if s.rounds == 2 {
            c2.cancel();
        }
    })
    .unwrap_err();
    assert!(matches!(err.kind(), vmstate::ErrorKind::Cancelled));
    assert!(guest.is_running(), "cancel never stops the guest");
    assert_eq!((guest.stops, guest.resumes), (0, 0));
    assert!(
        dst.join().unwrap().is_err(),
        "the destination saw a cut stream"
    );
    guest.halt();
}

#[test]
fn destination_dying_mid_stream_leaves_the_source_running() {
    let mut guest = Guest::new();
    let (mut reg, params) = source(&guest);
    let (w, mut r) = pipe();
    let dst = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        r.read_exact(&mut buf).unwrap();
        drop(r); // dies after 1 MiB
    });
    let before = guest.writes.load(Ordering::Relaxed);
    let err = migrate(
        &mut reg,
        w,
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
    dst.join().unwrap();
    let vmstate::ErrorKind::MigrationFailed { phase, cause, .. } = err.kind() else {
        panic!("{err}");
    };
    // Usually in a round; on a loaded machine the vCPU thread may dirty so little that
    // the migration reaches the switchover before the destination dies: the guest is
    // then resumed, and running either way.
    assert!(phase.starts_with("round") || phase == "switchover", "{err}");
    assert!(matches!(cause.kind(), vmstate::ErrorKind::Io(_)), "{err}");
    assert!(guest.is_running());
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        guest.writes.load(Ordering::Relaxed) > before,
        "the guest keeps running"
    );
    guest.halt();
    // The source can migrate again afterwards.
    guest.start();
    let (w, r) = pipe();
    let dst = destination(r);
    migrate(
        &mut reg,
        w,
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let (ram, _, _) = dst.join().unwrap().unwrap();
    assert!(same_ram(&guest.ram, &ram));
}

#[test]
fn failure_after_the_guest_stopped_resumes_it() {
    struct Failing(Guest);
    impl GuestControl for Failing {
        fn stop(&mut self) -> vmstate::Result<()> {
            self.0.stop()
        }
        fn resume(&mut self) {
            self.0.resume()
        }
        fn wait_destination(&mut self) -> vmstate::Result<()> {
            Err(vmstate::Error::invalid("destination", "refused the guest"))
        }
    }
    let guest = Guest::new();
    let (mut reg, params) = source(&guest);
    let mut failing = Failing(guest);
    let (w, r) = pipe();
    let dst = destination(r);
    let err = migrate(
        &mut reg,
        w,
        &mut failing,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("refused the guest"));
    assert_eq!((failing.0.stops, failing.0.resumes), (1, 1));
    assert!(failing.0.is_running());
    dst.join().unwrap().unwrap();
    failing.0.halt();
}

/// Stands in for a guest that dirties memory faster than any link until its vCPUs are
/// throttled to at least 60%: 1 GiB stays pending until then, nothing after. Never
/// throttled, it never converges. Each payload is `be32 n` and `n` zero bytes.
#[derive(Default)]
struct Dirtier {
    throttle: Arc<std::sync::atomic::AtomicU8>,
}

impl Dirtier {
    fn put(w: &mut Writer<'_>, n: u32) {
        w.put_be32(n);
        w.put_zeros(n as usize);
    }
}

impl IterativeHandler for Dirtier {
    fn save_setup(&mut self, w: &mut Writer<'_>) -> vmstate::Result<()> {
        Self::put(w, 0);
        Ok(())
    }
    fn pending(&mut self, _exact: bool) -> Pending {
        let throttled = self.throttle.load(Ordering::SeqCst) >= 60;
        Pending {
            must_precopy: if throttled { 0 } else { 1 << 30 },
            can_postcopy: 0,
        }
    }
    fn save_iterate(&mut self, w: &mut Writer<'_>, _: u64) -> vmstate::Result<IterationStatus> {
        Self::put(w, 4096);
        Ok(IterationStatus::More)
    }
    fn save_complete(&mut self, w: &mut Writer<'_>) -> vmstate::Result<()> {
        Self::put(w, 0);
        Ok(())
    }
    fn load(&mut self, r: &mut Reader<'_>, _: u32, _: Phase) -> vmstate::Result<()> {
        let n = r.get_be32()?;
        r.skip(u64::from(n))
    }
}

#[test]
fn running_out_of_time_cancels_or_forces_the_switchover() {
    let mut guest = Guest::new();
    let (mut reg, mut params) = source(&guest);
    reg.register_iterative("endless", 1, Dirtier::default(), Registration::new())
        .unwrap();
    params.max_total_time = Some(Duration::from_millis(200));
    let err = migrate(
        &mut reg,
        Vec::new(),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_total_time"), "{err}");
    assert!(guest.is_running());
    assert_eq!(guest.stops, 0);

    params.on_timeout = OnTimeout::ForceSwitchover;
    let mut stream = Vec::new();
    let stats = migrate(
        &mut reg,
        &mut stream,
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert!(stats.forced_switchover);
    assert_eq!(stats.status, Status::Completed);
    assert!(!guest.is_running());
}

/// A guest that records the throttle it is given.
#[derive(Default)]
struct Throttled {
    throttle: Arc<std::sync::atomic::AtomicU8>,
    history: Vec<u8>,
}

impl GuestControl for Throttled {
    fn stop(&mut self) -> vmstate::Result<()> {
        Ok(())
    }
    fn resume(&mut self) {}
    fn throttle(&mut self, percent: u8) {
        self.throttle.store(percent, Ordering::SeqCst);
        self.history.push(percent);
    }
}

fn dirtier_registry(guest: &Throttled) -> Registry {
    let mut reg = Registry::new();
    let d = Dirtier {
        throttle: guest.throttle.clone(),
    };
    reg.register_iterative("dirtier", 1, d, Registration::new())
        .unwrap();
    reg
}

#[test]
fn auto_converge_throttles_in_qemus_steps_until_it_converges_then_lifts_the_throttle() {
    let mut guest = Throttled::default();
    let mut reg = dirtier_registry(&guest);
    let mut params = MigrationParams::new(MACHINE);
    params.downtime_limit = Duration::from_millis(1);
    params.max_total_time = Some(Duration::from_secs(60));
    params.auto_converge = true;
    params.auto_converge_period = Duration::ZERO; // decide after every round
    let mut seen = Vec::new();
    let stats = migrate(
        &mut reg,
        Vec::new(),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |s| seen.push(s.throttle_percent),
    )
    .unwrap();
    assert_eq!(stats.status, Status::Completed);
    assert!(!stats.forced_switchover);
    // Two rounds dirtying more than half of what they sent per step: 20, then +10.
    assert_eq!(guest.history, [20, 30, 40, 50, 60, 0]);
    assert!(seen.contains(&60));
}

#[test]
fn without_auto_converge_such_a_guest_never_converges() {
    let mut guest = Throttled::default();
    let mut reg = dirtier_registry(&guest);
    let mut params = MigrationParams::new(MACHINE);
    params.downtime_limit = Duration::from_millis(1);
    params.max_total_time = Some(Duration::from_millis(200));
    let err = migrate(
        &mut reg,
        Vec::new(),
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_total_time"), "{err}");
    assert!(
        guest.history.is_empty(),
        "no throttle without auto-converge"
    );
}

/// A guest that is already paused: stopping it records how many RAM pages had been
/// sent by then.
struct Paused {
    stats: Arc<vmstate::ram::RamStats>,
    pages_at_stop: Option<u64>,
}

impl GuestControl for Paused {
    fn stop(&mut self) -> vmstate::Result<()> {
        let c = self.stats.get();
        self.pages_at_stop = Some(c.normal_pages + c.zero_pages);
        Ok(())
    }
    fn resume(&mut self) {}
}

#[test]
fn a_paused_guest_has_all_its_pages_sent_before_the_switchover() {
    // 64 MiB of written pages at 100 MiB/s: rounds of 10 MiB, and after the first one
    // everything left fits the 300 ms limit; nothing is ever re-dirtied.
    const PAUSED_PAGES: u64 = 16384;
    let ram = Arc::new(RamBlock::new("ram0", PAUSED_PAGES * 4096).unwrap());
    for p in 0..PAUSED_PAGES {
        ram.write_u64(p * 4096, p + 1);
    }
    let handler = RamHandler::new(vec![ram.clone()]).unwrap();
    let mut guest = Paused {
        stats: handler.stats(),
        pages_at_stop: None,
    };
    let mut reg = Registry::new();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .unwrap();
    let mut params = MigrationParams::new(MACHINE);
    params.downtime_limit = Duration::from_millis(300);
    params.max_bandwidth = Some(100 << 20);
    params.ram_stats = Some(guest.stats.clone());
    let (w, r) = pipe();
    let dst = std::thread::spawn(move || {
        let copy = Arc::new(RamBlock::new("ram0", PAUSED_PAGES * 4096).unwrap());
        let mut reg = Registry::new();
        reg.register_iterative(
            "ram",
            RAM_VERSION,
            RamHandler::new(vec![copy.clone()]).unwrap(),
            Registration::new(),
        )
        .unwrap();
        load_stream(&mut reg, &mut Reader::from_io(r), &LoadOptions::default()).unwrap();
        copy
    });
    let stats = migrate(
        &mut reg,
        w,
        &mut guest,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    let copy = dst.join().unwrap();
    assert!(same_ram(&ram, &copy));
    assert!(
        stats.rounds > 1,
        "the rate limit splits the pages into rounds"
    );
    assert_eq!(
        guest.pages_at_stop,
        Some(PAUSED_PAGES),
        "every page was sent before the guest was stopped"
    );
}

//! The KVM guest (`vmstate_examples::kvm`) migrated live between two VMs: its own code
//! runs on a real vCPU, KVM's dirty log feeds the rounds, and on the destination the
//! guest goes on counting from where it stopped. Needs `/dev/kvm`; `.ci/run` runs these
//! tests where it exists.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmstate::migrate::{CancelToken, IncomingParams, MigrationParams, migrate_over, receive};
use vmstate_examples::kvm::{CpuState, KvmMachine, MACHINE_TYPE, WORKING_SET_BASE};

const RAM: u64 = 64 << 20;
/// 16 MiB of working set: the guest rewrites it while the rounds go out.
const PAGES: u32 = 4096;

fn quiet() -> vmstate_examples::kvm::LineSink {
    Arc::new(|_: &str| {})
}

/// Waits until the guest has reported pass `pass`.
fn wait_for_pass(m: &KvmMachine, pass: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.console.lock().unwrap().last_pass < pass {
        assert!(
            Instant::now() < deadline,
            "the guest never reached pass {pass}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn word_at(m: &KvmMachine, addr: u64) -> u32 {
    let mut b = [0u8; 4];
    m.block.read(addr, &mut b);
    u32::from_le_bytes(b)
}

/// What the destination held when its guest was about to start.
struct Landed {
    pages: Vec<u64>,
    cpu: CpuState,
    last_pass: u32,
}

#[test]
#[ignore = "needs /dev/kvm (run by .ci/run where it exists)"]
fn kvm_guest_migrates_live_and_goes_on_counting() {
    let mut src = KvmMachine::new(RAM, quiet()).unwrap();
    src.boot(PAGES).unwrap();
    src.start().unwrap();
    wait_for_pass(&src, 3);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // What the destination held when the guest was about to start there.
    let landed: Arc<Mutex<Option<Landed>>> = Arc::default();
    let at_start = landed.clone();
    let destination = std::thread::spawn(move || {
        let mut dst = KvmMachine::new(RAM, quiet()).unwrap();
        let (mut reg, _) = dst.registry().unwrap();
        let (sock, _) = listener.accept().unwrap();
        let mut starting = None;
        receive(
            &mut reg,
            sock,
            &IncomingParams::new(MACHINE_TYPE),
            &mut || {
                let pages = (0..dst.block.pages())
                    .map(|p| dst.block.page_checksum(p))
                    .collect();
                let cpu = dst.cpu.lock().unwrap().clone();
                let last_pass = dst.console.lock().unwrap().last_pass;
                starting = Some(Landed {
                    pages,
                    cpu,
                    last_pass,
                });
                Ok(())
            },
        )
        .unwrap();
        *at_start.lock().unwrap() = starting;
        dst.start().unwrap();
        dst
    });

    let (mut reg, ram_stats) = src.registry().unwrap();
    let mut params = MigrationParams::new(MACHINE_TYPE);
    params.downtime_limit = Duration::from_millis(100);
    let stats = migrate_over(
        &mut reg,
        TcpStream::connect(addr).unwrap(),
        &mut src,
        &params,
        &CancelToken::new(),
        &mut |_| {},
    )
    .unwrap();
    assert!(
        !src.is_running(),
        "the source's guest stays stopped after SHUT(0)"
    );
    assert!(stats.rounds >= 1);
    // The guest kept writing during the rounds, and KVM's dirty log brought those pages
    // back to be sent again.
    assert!(
        ram_stats.get().redirtied_pages > 0,
        "no page was sent twice: {stats:?}"
    );
    let dst = destination.join().unwrap();

    // At the switchover, the destination held exactly the source's stopped state.
    let Landed {
        pages,
        cpu,
        last_pass,
    } = landed.lock().unwrap().take().expect("the guest started");
    let differing = (0..src.block.pages())
        .filter(|&p| src.block.page_checksum(p) != pages[p])
        .count();
    assert_eq!(differing, 0, "pages differ at the switchover");
    assert_eq!(cpu, *src.cpu.lock().unwrap(), "the vCPU state differs");
    let source_pass = src.console.lock().unwrap().last_pass;
    assert_eq!(last_pass, source_pass);
    assert!(source_pass >= 3);

    // The guest goes on from there: the next passes it reports follow the source's.
    wait_for_pass(&dst, source_pass + 2);
    let first_page = word_at(&dst, WORKING_SET_BASE);
    assert!(
        first_page > source_pass,
        "the guest's counter in RAM went on: {first_page} after {source_pass}"
    );
}

#[test]
#[ignore = "needs /dev/kvm (run by .ci/run where it exists)"]
fn kvm_guest_state_round_trips_through_a_stream_while_stopped() {
    let mut src = KvmMachine::new(RAM, quiet()).unwrap();
    src.boot(64).unwrap();
    src.start().unwrap();
    wait_for_pass(&src, 10);
    src.stop().unwrap();
    let (mut reg, _) = src.registry().unwrap();
    let mut stream = Vec::new();
    vmstate::stream::save_snapshot(
        &mut reg,
        &mut stream,
        vmstate::stream::StreamConfig::new(MACHINE_TYPE),
    )
    .unwrap();
    let mut dst = KvmMachine::new(RAM, quiet()).unwrap();
    let (mut reg, _) = dst.registry().unwrap();
    vmstate::stream::load_stream(
        &mut reg,
        &mut vmstate::Reader::from_slice(&stream),
        &vmstate::stream::LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(*dst.cpu.lock().unwrap(), *src.cpu.lock().unwrap());
    let stopped_at = src.console.lock().unwrap().last_pass;
    dst.start().unwrap();
    wait_for_pass(&dst, stopped_at + 1);
    dst.stop().unwrap();
    // The pass after the last one reported: the guest did not restart from scratch.
    let reports = dst.console.lock().unwrap().reports;
    assert!(reports > src.console.lock().unwrap().reports);
}

#[test]
#[ignore = "needs /dev/kvm (run by .ci/run where it exists)"]
fn kvm_example_ends_agree_and_verify_the_migration() {
    use vmstate_examples::kvm::live::{SourceConfig, run_destination, run_source};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let destination = std::thread::spawn(move || {
        run_destination(listener, RAM, quiet()).map_err(|e| e.to_string())
    });
    let cfg = SourceConfig {
        ram: RAM,
        working_set_pages: PAGES,
        downtime_limit: Duration::from_millis(100),
        max_bandwidth: None,
        max_time: Duration::from_secs(60),
        warm_up: Duration::from_millis(50),
    };
    let outcome = run_source(&cfg, &addr, quiet(), &mut |_| {}).unwrap();
    destination.join().unwrap().unwrap();
    assert_eq!(outcome.differing_pages, 0);
    assert!(outcome.differing_devices.is_empty());
    assert_eq!(outcome.destination_passes.0, outcome.source_last_pass + 1);
    assert!(outcome.verified());
}

//! Interoperability with a real QEMU: fresh streams from paused VMs of several machine
//! configurations are decoded, dumped, verified and rewritten by `vmstate`, and QEMU
//! must accept the rewritten stream (`-incoming "exec:cat REWRITTEN"`, migration
//! status `completed`).
//!
//! These tests need `qemu-system-x86_64` (QEMU 7.2 or 10.x); they are ignored by
//! default and run explicitly by `.ci/run` with
//! `cargo test -p vmstate-cli --test qemu_interop -- --ignored`.
//!
//! Each VM is started as (plus the configuration's own arguments):
//!
//! ```text
//! qemu-system-x86_64 -no-user-config -nodefaults -display none -accel tcg \
//!     -rtc base=2025-01-01T00:00:00,clock=vm -seed 1 -S \
//!     -qmp unix:DIR/qmp.sock,server=on,wait=off
//! ```
//!
//! and driven over QMP: `qmp_capabilities`, `migrate {"uri": "exec:cat > FILE"}`,
//! `query-migrate` until `completed`, `quit`. Every wait has a timeout, and QEMU is
//! killed when a test ends, so nothing hangs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ok;
use compat_tests::qemu::{BASE, QEMU, Qemu};
use serde_json::{Value, json};

/// The machine configurations: name, arguments.
fn configurations() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("pc", vec!["-M", "pc", "-m", "16"]),
        (
            "pc-usb-serial-e1000",
            vec![
                "-M",
                "pc",
                "-m",
                "24",
                "-device",
                "piix3-usb-uhci",
                "-device",
                "usb-tablet",
                "-chardev",
                "null,id=ser0",
                "-device",
                "isa-serial,chardev=ser0",
                "-device",
                "e1000,mac=52:54:00:12:34:56",
            ],
        ),
        (
            "q35-e1000-virtio-usb-serial",
            vec![
                "-M",
                "q35",
                "-m",
                "32",
                "-device",
                "e1000,mac=52:54:00:12:34:57",
                "-device",
                "virtio-net-pci,mac=52:54:00:12:34:58",
                "-blockdev",
                "driver=null-co,node-name=null0,size=1048576",
                "-device",
                "virtio-blk-pci,drive=null0",
                "-device",
                "qemu-xhci",
                "-device",
                "usb-tablet",
                "-device",
                "usb-kbd",
                "-chardev",
                "null,id=ser0",
                "-device",
                "isa-serial,chardev=ser0",
            ],
        ),
    ]
}

/// Saves a stream from a paused VM with `args` into `out`.
fn save_stream(dir: &Path, args: &[&str], out: &Path) {
    let mut q = Qemu::start(dir, "src", args);
    q.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", out.display())}),
    );
    q.wait_migration("saving");
    q.quit();
    assert!(std::fs::metadata(out).unwrap().len() > 0);
}

/// Starts a VM with `args` that loads `stream`; panics unless QEMU accepts it.
fn load_stream(dir: &Path, args: &[&str], stream: &Path) {
    let incoming = format!("exec:cat {}", stream.display());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-incoming", &incoming]);
    let mut q = Qemu::start(dir, "dst", &all);
    let status = q.wait_migration("loading the rewritten stream");
    assert_eq!(status, "completed");
    q.quit();
}

fn machine_available(name: &str) -> bool {
    let out = Command::new(QEMU).args(["-M", "help"]).output();
    out.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    })
}

/// Save with QEMU, decode/dump/verify/rewrite with vmstate, load the rewrite in QEMU.
fn round_trip(name: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(format!("{name}.mig"));
    let re = dir.path().join(format!("{name}.rewritten.mig"));
    save_stream(dir.path(), args, &src);
    let s = src.to_str().unwrap();

    let verify = ok(&["verify", s]);
    assert!(verify.contains(": OK: "), "{verify}");
    let info = ok(&["info", s]);
    assert!(info.contains("SECTION_FULL"), "{info}");
    // The dump has one key per START/FULL section id, and the RAM block sizes.
    let dump: Value = serde_json::from_str(&ok(&["dump", s])).unwrap();
    let sections = info
        .lines()
        .filter(|l| l.contains("SECTION_START") || l.contains("SECTION_FULL"))
        .count();
    assert_eq!(dump.as_object().unwrap().len(), sections, "{name}: {info}");
    let ram = dump
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("ram ("))
        .expect("a ram section");
    assert!(
        ram.1["section sizes"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    );
    let memory: Value = serde_json::from_str(&ok(&["dump", "--memory", s])).unwrap();
    assert!(memory.as_object().unwrap().len() == sections);

    ok(&["rewrite", s, re.to_str().unwrap()]);
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&re).unwrap(),
        "{name}: rewrite is not byte-identical"
    );
    load_stream(dir.path(), args, &re);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_pc_stream_round_trips() {
    let (name, args) = &configurations()[0];
    round_trip(name, args);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_pc_with_usb_serial_e1000_round_trips() {
    let (name, args) = &configurations()[1];
    round_trip(name, args);
}

#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_q35_with_e1000_virtio_usb_serial_round_trips() {
    let (name, args) = &configurations()[2];
    round_trip(name, args);
}

/// Machine types up to 9.2 do not send SWITCHOVER_START (QEMU 7.2 never does): the
/// decoder must not depend on the command.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_older_machine_type_without_switchover_start() {
    let machine = ["pc-i440fx-9.2", "pc-i440fx-7.2"]
        .into_iter()
        .find(|m| machine_available(m))
        .expect("QEMU knows pc-i440fx-9.2 or pc-i440fx-7.2");
    let args = ["-M", machine, "-m", "16"];
    round_trip(machine, &args);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("old.mig");
    save_stream(dir.path(), &args, &src);
    let info = ok(&["info", src.to_str().unwrap()]);
    assert!(!info.contains("SWITCHOVER_START"), "{info}");
    assert!(info.contains(&format!("machine    {machine}")), "{info}");
}

/// A stream from QEMU loads back in QEMU unchanged (checks the test harness itself),
/// and the fixture stream written by QEMU 10.0.2 decodes the same way as a fresh one.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_accepts_its_own_stream_and_ours_agree() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["-M", "pc", "-m", "16"];
    let src = dir.path().join("pc.mig");
    save_stream(dir.path(), &args, &src);
    load_stream(dir.path(), &args, &src);
    let fresh: Value = serde_json::from_str(&ok(&["dump", src.to_str().unwrap()])).unwrap();
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../compat-tests/fixtures/qemu-10.0.2/pc-minimal.mig");
    let old: Value = serde_json::from_str(&ok(&["dump", fixture.to_str().unwrap()])).unwrap();
    // Same QEMU version: the same devices in the same order.
    let version = Command::new(QEMU).arg("--version").output().unwrap();
    if String::from_utf8_lossy(&version.stdout).contains("version 10.0.2") {
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&fresh), keys(&old));
    }
}

/// A stream written by our own engine (not a rewrite) for QEMU's `-M none` machine,
/// whose only sections are `ram` (no blocks), `timer` and `globalstate`, with those
/// devices modelled by the derive and RAM by the runtime's handler, ending with the
/// snapshot's integrity record: QEMU must load it.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_accepts_a_stream_written_by_our_engine_for_the_none_machine() {
    use compat_tests::qemu10::globalstate::GlobalState;
    use compat_tests::qemu10::timer::CpuTimers;
    use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
    use vmstate::stream::{StreamConfig, save_snapshot};
    use vmstate::{Registration, Registry};

    let mut reg = Registry::new();
    let no_blocks: Vec<std::sync::Arc<RamBlock>> = Vec::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::new(no_blocks).unwrap(),
        Registration::new(),
    )
    .unwrap();
    let timers = CpuTimers {
        cpu_ticks_offset: 0x1234,
        cpu_clock_offset: -5678,
        ..CpuTimers::default()
    };
    reg.register_device(timers, Registration::new()).unwrap();
    let mut gs = GlobalState::default();
    gs.set_runstate("prelaunch");
    gs.has_vm_was_suspended = 1;
    reg.register_device(gs, Registration::new()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.mig");
    let mut file = std::fs::File::create(&ours).unwrap();
    save_snapshot(&mut reg, &mut file, StreamConfig::new("none")).unwrap();
    drop(file);
    // A snapshot ends with the integrity record, which QEMU does not read.
    let bytes = std::fs::read(&ours).unwrap();
    assert!(vmstate::stream::integrity::IntegrityRecord::from_tail(&bytes).is_some());
    let verify = ok(&["verify", ours.to_str().unwrap()]);
    assert!(verify.contains("integrity record valid"), "{verify}");
    load_stream(dir.path(), &["-M", "none"], &ours);
}

/// Writes `src` with the payload of its FULL section `idstr` replaced by `payload` to
/// `modified.mig` next to it; returns QEMU's `-incoming` URI for it.
fn write_spliced(src: &Path, idstr: &str, payload: &[u8]) -> String {
    let modified = src.with_file_name("modified.mig");
    let bytes = splice_section(&std::fs::read(src).unwrap(), idstr, payload);
    std::fs::write(&modified, bytes).unwrap();
    format!("exec:cat {}", modified.display())
}

/// Replaces the payload of the FULL section `idstr` (instance 0) in `stream` by
/// `payload` (sections carry no length, so the sizes may differ; QEMU's loader does not
/// read the vmdesc trailer).
fn splice_section(stream: &[u8], idstr: &str, payload: &[u8]) -> Vec<u8> {
    let walked = compat_tests::fixture::Stream::parse(stream.to_vec()).unwrap();
    let rec = walked
        .records
        .iter()
        .find(|r| {
            r.kind == compat_tests::fixture::RecordKind::Full && r.idstr.as_deref() == Some(idstr)
        })
        .unwrap_or_else(|| panic!("no FULL section {idstr}"));
    let range = rec.payload_range();
    [&stream[..range.start], payload, &stream[range.end..]].concat()
}

/// The payload of the FULL section `idstr` (instance 0) of a stream file.
fn section_payload(path: &Path, idstr: &str) -> Vec<u8> {
    let walked = compat_tests::fixture::Stream::parse(std::fs::read(path).unwrap()).unwrap();
    let section = walked.full_section(idstr, 0).expect("the section");
    section.payload.to_vec()
}

/// QEMU reads a QTAILQ we wrote: the uefi-vars variables reordered and one changed by
/// our model are loaded by QEMU 10, which saves them back in our order, byte for byte
/// (but for one counter QEMU recomputes).
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_loads_a_qtailq_we_reordered_and_saves_it_back_unchanged() {
    use compat_tests::qemu10::UefiVarsSysbus;
    use vmstate::VmState;

    const IDSTR: &str = "uefi-vars-sysbus";
    let args = ["-M", "q35", "-m", "128", "-device", "uefi-vars-x64"];
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("uefi.mig");
    save_stream(dir.path(), &args, &src);

    let mut dev = UefiVarsSysbus::default();
    dev.load_bytes(&section_payload(&src, IDSTR), 0).unwrap();
    let vars = &mut dev.state.variables;
    assert_eq!(vars.len(), 6);
    vars.swap(0, 1);
    let last = vars.len() - 1;
    vars[last].data = vec![0];
    let ours = dev.to_bytes().unwrap();

    let incoming = write_spliced(&src, IDSTR, &ours);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-incoming", &incoming]);
    let mut dst = Qemu::start(dir.path(), "dst", &all);
    dst.wait_migration("loading our uefi-vars section");
    let back = dir.path().join("back.mig");
    dst.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", back.display())}),
    );
    dst.wait_migration("saving it again");
    dst.quit();
    // QEMU 10.0.2 recomputes `used_storage` after an incoming migration from memory it
    // did not initialise (a different value on every run, even for its own unchanged
    // stream), so that field is the one allowed to differ.
    let mut again = UefiVarsSysbus::default();
    again.load_bytes(&section_payload(&back, IDSTR), 0).unwrap();
    again.state.used_storage = dev.state.used_storage;
    assert_eq!(again, dev);
    assert_eq!(again.to_bytes().unwrap(), ours);
}

/// QEMU reads a WITH_TMP temporary we wrote: virtio-mem's sanity checks saved by our
/// model with another block size make QEMU 10 refuse the stream with its own message;
/// with the same properties our section is QEMU's, byte for byte, and loads.
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_checks_a_temporary_we_wrote() {
    use compat_tests::qemu10::VirtioMemEarly;
    use vmstate::VmState;

    const IDSTR: &str = "0000:00:01.0/virtio-mem-device-early";
    let args = [
        "-M",
        "q35",
        "-m",
        "128,maxmem=1G,slots=1",
        "-object",
        "memory-backend-ram,id=mem0,size=128M",
        "-device",
        "virtio-mem-pci,memdev=mem0",
    ];
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mem.mig");
    save_stream(dir.path(), &args, &src);
    let theirs = section_payload(&src, IDSTR);
    let mut dev = VirtioMemEarly::q35_128m();
    dev.load_bytes(&theirs, 1).unwrap();
    assert_eq!(dev.to_bytes().unwrap(), theirs);

    dev.block_size = 4 << 20;
    let ours = dev.to_bytes().unwrap();
    // QEMU refuses the stream and exits, possibly before a QMP connection could be
    // made: run it without one and wait for it to end.
    let incoming = write_spliced(&src, IDSTR, &ours);
    let stderr_path = dir.path().join("dst.stderr");
    let mut child = Command::new(QEMU)
        .args(BASE)
        .args(args)
        .args(["-incoming", &incoming])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start qemu-system-x86_64");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("QEMU did not refuse the stream within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        said.contains("Property 'block-size' changed from 0x400000 to 0x200000"),
        "{said}"
    );
}

/// QEMU 10 loads a stream whose `timer` section is sent twice without a word; our loader
/// refuses it (see `vmstate-runtime/tests/no_silent_loss.rs`).
#[test]
#[ignore = "needs qemu-system-x86_64 (installed by .ci/run)"]
fn qemu_silently_loads_a_duplicated_section_which_we_refuse() {
    use compat_tests::fixture::{RecordKind, Stream};
    use vmstate::stream::{LoadOptions, load_stream as load_into};
    use vmstate::{ErrorKind, Reader};

    let args = ["-M", "none"];
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("none.mig");
    save_stream(dir.path(), &args, &src);
    let bytes = std::fs::read(&src).unwrap();
    let walked = Stream::parse(bytes.clone()).unwrap();
    let at = walked
        .records
        .iter()
        .position(|r| r.kind == RecordKind::Full && r.idstr.as_deref() == Some("timer"))
        .expect("a timer section");
    let (section, footer) = (&walked.records[at], &walked.records[at + 1]);
    assert_eq!(footer.kind, RecordKind::Footer);
    let range = section.offset..footer.offset + footer.len;
    let twice = [
        &bytes[..range.end],
        &bytes[range.clone()],
        &bytes[range.end..],
    ]
    .concat();
    let twice_path = dir.path().join("twice.mig");
    std::fs::write(&twice_path, &twice).unwrap();
    load_stream(dir.path(), &args, &twice_path);

    let mut reg = compat_tests::destination::none();
    let err = load_into(
        &mut reg,
        &mut Reader::from_slice(&twice),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::SectionSentTwice { idstr, .. } if idstr == "timer"),
        "{err}"
    );
}

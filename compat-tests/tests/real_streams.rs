//! Whole real QEMU 10.0.2 streams loaded by the stream engine: the RAM section, the
//! devices modelled in `compat_tests::qemu10`, unknown sections failing as QEMU fails,
//! and skipping them with the vmdesc.

use compat_tests::destination::{self, Pc};
use compat_tests::fixture::{self, hex, qemu10_dir, read_qemu10_json};
use compat_tests::qemu10::{
    globalstate::GlobalState, hpet::Hpet, i8254::I8254, i8259::I8259, mc146818rtc::Mc146818Rtc,
    timer::CpuTimers,
};
use sha3::digest::{ExtendableOutput, Update, XofReader};
use vmstate::ram::{RAM_VERSION, RamHandler};
use vmstate::stream::{LoadOptions, LoadReport, load_file};
use vmstate::{ErrorKind, Registration, Registry};

fn load(pc: &mut Pc, file: &str, skip_unknown: bool) -> vmstate::Result<LoadReport> {
    let opts = LoadOptions {
        machine: Some("pc-i440fx-10.0".into()),
        ..Default::default()
    };
    load_file(&mut pc.reg, qemu10_dir().join(file), opts, skip_unknown)
}

#[test]
fn none_minimal_loads_completely_with_its_three_sections() {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::from_blocks(vec![]).unwrap(),
        Registration::new(),
    )
    .unwrap();
    let dirty_timers = CpuTimers {
        cpu_ticks_offset: 7,
        cpu_clock_offset: 9,
        ..CpuTimers::default()
    };
    let timer = reg
        .register_device(dirty_timers, Registration::new())
        .unwrap();
    let gs = reg
        .register_device(GlobalState::default(), Registration::new())
        .unwrap();
    let opts = LoadOptions {
        machine: Some("none".into()),
        ..Default::default()
    };
    let report = load_file(&mut reg, qemu10_dir().join("none-minimal.mig"), opts, false).unwrap();
    assert_eq!(report.bytes, 1089);
    assert!(report.switchover_started);
    let ids: Vec<_> = report
        .sections
        .iter()
        .map(|s| (s.section.idstr.as_str(), s.section.section_id, s.skipped))
        .collect();
    assert_eq!(
        ids,
        [
            ("ram", 1, false),
            ("timer", 0, false),
            ("globalstate", 3, false)
        ]
    );
    assert_eq!(
        reg.device_mut::<GlobalState>(gs).unwrap().runstate_name(),
        b"prelaunch"
    );
    // The none stream's timer payload is 24 zero bytes (spec 1.9); loading over
    // non-zero values proves they were read.
    let t = reg.device_mut::<CpuTimers>(timer).unwrap();
    assert_eq!((t.cpu_ticks_offset, t.cpu_clock_offset), (0, 0));
}

#[test]
fn missing_device_fails_at_its_section_naming_it() {
    let analyze = read_qemu10_json("pc-minimal.analyze.json");
    let mut pc = destination::pc(&analyze);
    let err = load(&mut pc, "pc-minimal.mig", false).unwrap_err();
    match err.kind() {
        ErrorKind::UnknownSection {
            idstr,
            instance_id,
            section_id,
        } => assert_eq!(
            (idstr.as_str(), *instance_id, *section_id),
            ("cpu_common", 0, 3)
        ),
        other => panic!("unexpected {other:?}"),
    }
    // cpu_common starts at 0x3c5d1 (pc-minimal.sections.txt).
    assert_eq!(err.offset(), Some(0x3c5d1));
    assert!(err.to_string().contains("cpu_common"));
}

#[test]
fn skipping_unknown_sections_loads_every_modelled_device_with_qemus_values() {
    let analyze = read_qemu10_json("pc-minimal.analyze.json");
    let mut pc = destination::pc(&analyze);
    let report = load(&mut pc, "pc-minimal.mig", true).unwrap();
    assert_eq!(report.bytes, 358_982);
    let loaded: Vec<_> = report
        .sections
        .iter()
        .filter(|s| !s.skipped)
        .map(|s| s.section.idstr.as_str())
        .collect();
    assert_eq!(
        loaded,
        [
            "ram",
            "timer",
            "fw_cfg",
            "mc146818rtc",
            "i8259",
            "i8259",
            "ioapic",
            "hpet",
            "i8254",
            "port92",
            "globalstate"
        ]
    );
    assert_eq!(report.sections.iter().filter(|s| s.skipped).count(), 20);

    let hpet = pc
        .reg
        .device_mut::<Hpet>(pc.handle("hpet"))
        .unwrap()
        .clone();
    let want = &analyze["hpet (21)"];
    assert_eq!(hpet.timer.len(), 3);
    assert_eq!(hpet.timer[2].config, hex(&want["timer"][2]["config"]));
    assert_eq!(hpet.timer[1].cmp, hex(&want["timer"][1]["cmp"]));
    let pit = pc
        .reg
        .device_mut::<I8254>(pc.handle("i8254"))
        .unwrap()
        .clone();
    let want = &analyze["i8254 (22)"]["channels"];
    for (i, ch) in pit.channels.iter().enumerate() {
        assert_eq!(ch.count as u64, hex(&want[i]["count"]), "channel {i}");
        assert_eq!(ch.mode as u64, hex(&want[i]["mode"]), "channel {i}");
    }
    let pic1 = pc
        .reg
        .device_mut::<I8259>(pc.handle("i8259.1"))
        .unwrap()
        .clone();
    assert_eq!(
        pic1.irq_base as u64,
        hex(&analyze["i8259 (19)"]["irq_base"])
    );
    let rtc = pc
        .reg
        .device_mut::<Mc146818Rtc>(pc.handle("mc146818rtc"))
        .unwrap()
        .clone();
    assert_eq!(
        rtc.cmos_data.to_vec(),
        fixture::hex_bytes(&analyze["mc146818rtc (13)"]["cmos_data"])
    );
    let gs = pc
        .reg
        .device_mut::<GlobalState>(pc.handle("globalstate"))
        .unwrap();
    assert_eq!(gs.runstate_name(), b"prelaunch");
}

#[test]
fn pc_minimal_ram_page_counts_equal_qemus() {
    let analyze = read_qemu10_json("pc-minimal.analyze.json");
    let info = read_qemu10_json("pc-minimal.migrate-info.json");
    let mut pc = destination::pc(&analyze);
    load(&mut pc, "pc-minimal.mig", true).unwrap();
    let c = pc.ram_stats.get();
    assert_eq!(
        c.normal_pages,
        info["query_migrate"]["ram"]["normal"].as_u64().unwrap()
    );
    assert_eq!(
        c.zero_pages,
        info["query_migrate"]["ram"]["duplicate"].as_u64().unwrap()
    );
}

/// The 8 MiB pc-ramdata payload, rebuilt from its recipe (vectors README).
fn ramdata_payload() -> Vec<u8> {
    let mut shake = sha3::Shake256::default();
    shake.update(b"ramdata-v1");
    let mut data = vec![0u8; 8 << 20];
    shake.finalize_xof().read(&mut data);
    for (i, page) in data.chunks_exact_mut(4096).enumerate() {
        match i % 16 {
            5 => page.fill(0),
            9 => page.fill(0xa5),
            _ => {}
        }
    }
    let banner = b"QEMU-MIGRATION-TEST-VECTOR ramdata seed=ramdata-v1\n";
    data[..banner.len()].copy_from_slice(banner);
    data
}

#[test]
fn pc_ramdata_reproduces_the_known_payload_and_qemus_page_counts() {
    let analyze = read_qemu10_json("pc-ramdata.analyze.json");
    let info = read_qemu10_json("pc-ramdata.migrate-info.json");
    let mut pc = destination::pc(&analyze);
    load(&mut pc, "pc-ramdata.mig", true).unwrap();
    let ram = pc.ram.iter().find(|b| b.name() == "pc.ram").unwrap();
    let mut got = vec![0u8; 8 << 20];
    ram.read(0x100000, &mut got);
    let want = ramdata_payload();
    let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "payload differs at byte {first_bad:?}");
    let c = pc.ram_stats.get();
    assert_eq!(
        c.normal_pages,
        info["query_migrate"]["ram"]["normal"].as_u64().unwrap()
    );
    assert_eq!(
        c.zero_pages,
        info["query_migrate"]["ram"]["duplicate"].as_u64().unwrap()
    );
}

#[test]
fn stream_for_another_machine_is_refused_naming_both() {
    let analyze = read_qemu10_json("pc-minimal.analyze.json");
    let mut pc = destination::pc(&analyze);
    let opts = LoadOptions {
        machine: Some("pc-q35-10.0".into()),
        ..Default::default()
    };
    let err = load_file(&mut pc.reg, qemu10_dir().join("pc-minimal.mig"), opts, true).unwrap_err();
    assert!(err.to_string().contains("'pc-i440fx-10.0'"), "{err}");
    assert!(err.to_string().contains("'pc-q35-10.0'"), "{err}");
}

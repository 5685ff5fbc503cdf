//! QEMU 10.0.2 devices modelled with `#[derive(VmState)]`, proved byte-exact against real
//! QEMU streams (`fixtures/qemu-10.0.2/`).
//!
//! For every device the `qemu_device_tests!` macro checks, on the section taken from the
//! real stream:
//! - the payload loads at the section's version into a default device, and the loaded
//!   values equal the reference decoding (`analyze-migration.py`'s `*.analyze.json`, or
//!   the spec's annotation of `none-minimal.mig`);
//! - saving again gives exactly the same bytes;
//! - `save_described()` gives exactly the device's entry of the stream's own vmdesc JSON
//!   (without `name` and `instance_id`), written the way QEMU writes it;
//! - the section header carries the description's version;
//! - an unknown subsection with the device's name prefix is an error, one with another
//!   prefix is not consumed, and a truncated payload only loads when the cut falls just
//!   before a subsection.
//!
//! Per-device tests below exercise subsections and older versions with synthetic values
//! where the real streams have none.

use std::sync::OnceLock;

use compat_tests::fixture::{
    self, RecordKind, Section, Stream, analyze_section, hex, hex_bytes, parse_sections_txt,
    subsection_bytes,
};
use compat_tests::qemu10::*;
use serde_json::{Value, json};
use vmstate::{ErrorKind, Timer, VmState, VmStateDescription, qjson};

// ---------------------------------------------------------------------------------------
// Fixtures

fn none_minimal() -> &'static Stream {
    static S: OnceLock<Stream> = OnceLock::new();
    S.get_or_init(|| Stream::load("none-minimal.mig"))
}

fn pc_minimal() -> &'static Stream {
    static S: OnceLock<Stream> = OnceLock::new();
    S.get_or_init(|| Stream::load("pc-minimal.mig"))
}

fn pc_minimal_analyze() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| fixture::read_qemu10_json("pc-minimal.analyze.json"))
}

fn qemu10_dump() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| fixture::read_qemu10_json("vmstate-pc-qemu10.0.2.json"))
}

/// The reference decoding of a pc-minimal section: analyze-migration.py's output.
fn pc_reference(idstr: &str, section_id: u32) -> Value {
    analyze_section(pc_minimal_analyze(), idstr, section_id).clone()
}

/// The `timer` section of `none-minimal.mig`, as annotated in spec §1.9 ("24 bytes: int64
/// cpu_ticks_offset, 8 unused zero bytes, int64 cpu_clock_offset"), in analyze format.
fn none_timer_reference(_: &str, _: u32) -> Value {
    json!({
        "cpu_ticks_offset": "0x0000000000000000",
        "unused": "00 00 00 00 00 00 00 00",
        "cpu_clock_offset": "0x0000000000000000",
    })
}

/// The `globalstate` section of `none-minimal.mig`, as annotated in spec §1.9
/// (`0000000a "prelaunch\0" + zero pad to 32, 01, 00, 66 zero bytes`).
fn none_globalstate_reference(_: &str, _: u32) -> Value {
    let mut runstate = b"prelaunch".to_vec();
    runstate.resize(32, 0);
    json!({
        "size": "0x0000000a",
        "runstate": spaced_hex(&runstate),
        "has_vm_was_suspended": "0x01",
        "vm_was_suspended": "0x00",
        "unused": spaced_hex(&[0; 66]),
    })
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn section<'a>(stream: &'a Stream, idstr: &str, instance: u32) -> Section<'a> {
    stream
        .full_section(idstr, instance)
        .unwrap_or_else(|| panic!("no FULL section {idstr}/{instance} in the stream"))
}

fn is_unknown_subsection(e: &vmstate::Error) -> bool {
    matches!(e.kind(), ErrorKind::UnknownSubsection { .. })
}

/// A `timer` field as analyze-migration.py prints it (8 raw bytes, be64 ns, -1 = off).
fn timer_from_analyze(v: &Value) -> Timer {
    let b = hex_bytes(v);
    let raw = u64::from_be_bytes(b.try_into().expect("timer is 8 bytes"));
    Timer::armed_at(raw as i64)
}

// ---------------------------------------------------------------------------------------
// The per-device suite

macro_rules! qemu_device_tests {
    ($(
        $(#[$meta:meta])*
        $module:ident {
            device: $ty:ty,
            stream: $stream:ident,
            idstr: $idstr:literal,
            instance: $instance:literal,
            reference: $reference:expr,
            check: $check:expr $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        mod $module {
            use super::*;

            fn real() -> Section<'static> {
                section($stream(), $idstr, $instance)
            }

            fn loaded() -> $ty {
                let s = real();
                let mut dev = <$ty>::default();
                dev.load_bytes(s.payload, s.version).unwrap_or_else(|e| {
                    panic!("{}/{}: loading the real payload failed: {e}", $idstr, $instance)
                });
                dev
            }

            #[test]
            fn loads_real_payload_with_reference_values() {
                let s = real();
                let dev = loaded();
                let reference: Value = ($reference)($idstr, s.section_id);
                let check: fn(&$ty, &Value) = $check;
                check(&dev, &reference);
            }

            #[test]
            fn saves_the_same_bytes() {
                let s = real();
                let mut dev = loaded();
                let bytes = dev.to_bytes().expect("save");
                assert_eq!(bytes, s.payload, "re-saved bytes differ from QEMU's");
            }

            #[test]
            fn vmdesc_equals_qemus_entry() {
                let s = real();
                let mut dev = loaded();
                let (bytes, ours) = dev.save_described().expect("save_described");
                assert_eq!(bytes, s.payload);
                let theirs = $stream()
                    .vmdesc_device($idstr, $instance)
                    .expect("the stream's vmdesc describes the device");
                assert_eq!(qjson::to_string(&ours), qjson::to_string(&theirs));
            }

            #[test]
            fn section_version_is_the_description_version() {
                assert_eq!(real().version, <$ty as VmState>::DESCRIPTION.version);
            }

            #[test]
            fn unknown_subsection_with_parent_prefix_fails_to_load() {
                let s = real();
                let name = format!("{}/no-such-subsection", <$ty as VmState>::DESCRIPTION.name);
                let mut payload = s.payload.to_vec();
                payload.extend(subsection_bytes(&name, 1, &[0; 8]));
                let err = <$ty>::default()
                    .load_bytes(&payload, s.version)
                    .expect_err("an unknown subsection must not load");
                assert!(is_unknown_subsection(&err), "{err}");
            }

            #[test]
            fn subsection_of_another_device_is_not_consumed() {
                let s = real();
                let mut payload = s.payload.to_vec();
                payload.extend(subsection_bytes("zz-other-device/sub", 1, &[0; 4]));
                let mut dev = <$ty>::default();
                let mut r = vmstate::Reader::from_slice(&payload);
                dev.load(&mut r, s.version).expect("the device's own bytes load");
                assert_eq!(r.position(), s.payload.len() as u64, "stopped at the foreign marker");
                assert!(dev.load_bytes(&payload, s.version).is_err(), "left-over bytes");
            }

            #[test]
            fn truncated_payload_loads_only_when_cut_before_a_subsection() {
                let s = real();
                for cut in 0..s.payload.len() {
                    let mut dev = <$ty>::default();
                    if dev.load_bytes(&s.payload[..cut], s.version).is_ok() {
                        assert_eq!(s.payload[cut], 0x05, "a cut at {cut} loaded");
                    }
                }
            }
        }
    )*};
}

qemu_device_tests! {
    timer_none_minimal {
        device: CpuTimers,
        stream: none_minimal,
        idstr: "timer",
        instance: 0,
        reference: none_timer_reference,
        check: check_timer,
    }
    timer_pc_minimal {
        device: CpuTimers,
        stream: pc_minimal,
        idstr: "timer",
        instance: 0,
        reference: pc_reference,
        check: check_timer,
    }
    globalstate_none_minimal {
        device: GlobalState,
        stream: none_minimal,
        idstr: "globalstate",
        instance: 0,
        reference: none_globalstate_reference,
        check: check_globalstate,
    }
    globalstate_pc_minimal {
        device: GlobalState,
        stream: pc_minimal,
        idstr: "globalstate",
        instance: 0,
        reference: pc_reference,
        check: check_globalstate,
    }
    i8254 {
        device: I8254,
        stream: pc_minimal,
        idstr: "i8254",
        instance: 0,
        reference: pc_reference,
        check: check_i8254,
    }
    mc146818rtc {
        device: Mc146818Rtc,
        stream: pc_minimal,
        idstr: "mc146818rtc",
        instance: 0,
        reference: pc_reference,
        check: check_rtc,
    }
    i8259_master {
        device: I8259,
        stream: pc_minimal,
        idstr: "i8259",
        instance: 0,
        reference: pc_reference,
        check: check_i8259,
    }
    i8259_slave {
        device: I8259,
        stream: pc_minimal,
        idstr: "i8259",
        instance: 1,
        reference: pc_reference,
        check: check_i8259,
    }
    ioapic {
        device: IoApic,
        stream: pc_minimal,
        idstr: "ioapic",
        instance: 0,
        reference: pc_reference,
        check: check_ioapic,
    }
    hpet {
        device: Hpet,
        stream: pc_minimal,
        idstr: "hpet",
        instance: 0,
        reference: pc_reference,
        check: check_hpet,
    }
    fw_cfg {
        device: FwCfg,
        stream: pc_minimal,
        idstr: "fw_cfg",
        instance: 0,
        reference: pc_reference,
        check: check_fw_cfg,
    }
    port92 {
        device: Port92,
        stream: pc_minimal,
        idstr: "port92",
        instance: 0,
        reference: pc_reference,
        check: check_port92,
    }
}

// ---------------------------------------------------------------------------------------
// Reference checks: loaded values against the independent decoding

fn check_timer(dev: &CpuTimers, a: &Value) {
    assert_eq!(dev.cpu_ticks_offset as u64, hex(&a["cpu_ticks_offset"]));
    assert_eq!(dev.cpu_clock_offset as u64, hex(&a["cpu_clock_offset"]));
    assert_eq!(hex_bytes(&a["unused"]), [0; 8]);
    assert_eq!(
        a.as_object().map(|o| o.len()),
        Some(3),
        "no icount subsection"
    );
    assert_eq!(dev.icount, TimersIcount::default());
}

fn check_globalstate(dev: &GlobalState, a: &Value) {
    assert_eq!(u64::from(dev.size), hex(&a["size"]));
    assert_eq!(dev.runstate.to_vec(), hex_bytes(&a["runstate"]));
    assert_eq!(dev.runstate_name(), b"prelaunch");
    assert_eq!(
        u64::from(dev.has_vm_was_suspended),
        hex(&a["has_vm_was_suspended"])
    );
    assert_eq!(u64::from(dev.vm_was_suspended), hex(&a["vm_was_suspended"]));
    assert_eq!(dev.unused.to_vec(), hex_bytes(&a["unused"]));
}

fn check_i8254(dev: &I8254, a: &Value) {
    assert_eq!(
        u64::from(dev.irq_disabled),
        hex(&a["channels[0].irq_disabled"])
    );
    let channels = a["channels"].as_array().expect("channels list");
    assert_eq!(channels.len(), 3);
    for (ch, c) in dev.channels.iter().zip(channels) {
        assert_eq!(ch.count as u32 as u64, hex(&c["count"]));
        assert_eq!(u64::from(ch.latched_count), hex(&c["latched_count"]));
        assert_eq!(u64::from(ch.status), hex(&c["status"]));
        assert_eq!(u64::from(ch.rw_mode), hex(&c["rw_mode"]));
        assert_eq!(u64::from(ch.mode), hex(&c["mode"]));
        assert_eq!(u64::from(ch.bcd), hex(&c["bcd"]));
        assert_eq!(u64::from(ch.gate), hex(&c["gate"]));
        assert_eq!(ch.count_load_time as u64, hex(&c["count_load_time"]));
        assert_eq!(
            ch.next_transition_time as u64,
            hex(&c["next_transition_time"])
        );
    }
    assert_eq!(
        dev.irq_timer as u64,
        hex(&a["channels[0].next_transition_time"])
    );
    // Values that say the decoding is of a real reset PIT: mode 3, count 0x10000, gate
    // off only on channel 2, and channel 0's transition time sent twice.
    assert_eq!(dev.channels[0].count, 0x10000);
    assert_eq!(dev.channels.each_ref().map(|c| c.gate), [1, 1, 0]);
    assert_eq!(dev.irq_timer, 0x1a3_0c2c);
    assert_eq!(dev.channels[0].next_transition_time, dev.irq_timer);
}

fn check_rtc(dev: &Mc146818Rtc, a: &Value) {
    assert_eq!(dev.cmos_data.to_vec(), hex_bytes(&a["cmos_data"]));
    assert_eq!(u64::from(dev.cmos_index), hex(&a["cmos_index"]));
    assert_eq!(hex_bytes(&a["unused[0]"]), [0; 28]);
    assert_eq!(dev.periodic_timer, timer_from_analyze(&a["periodic_timer"]));
    assert!(!dev.periodic_timer.is_armed());
    assert_eq!(dev.next_periodic_time as u64, hex(&a["next_periodic_time"]));
    assert_eq!(hex_bytes(&a["unused[1]"]), [0; 24]);
    assert_eq!(u64::from(dev.irq_coalesced), hex(&a["irq_coalesced"]));
    assert_eq!(u64::from(dev.period), hex(&a["period"]));
    assert_eq!(dev.base_rtc, hex(&a["base_rtc"]));
    // -rtc base=2025-01-01T00:00:00
    assert_eq!(dev.base_rtc, 1_735_689_600);
    assert_eq!(dev.last_update, hex(&a["last_update"]));
    assert_eq!(dev.offset as u64, hex(&a["offset"]));
    assert_eq!(dev.update_timer, timer_from_analyze(&a["update_timer"]));
    assert_eq!(dev.update_timer.expiry_ns(), Some(1_000_000_000));
    assert_eq!(dev.next_alarm_time, hex(&a["next_alarm_time"]));
    // CMOS register A/B/D as set at realize.
    assert_eq!(dev.cmos_data[0x0a..0x0e], [0x26, 0x02, 0x00, 0x80]);
    assert!(a.get("mc146818rtc/irq_reinject_on_ack_count").is_none());
}

fn check_i8259(dev: &I8259, a: &Value) {
    let fields: [(&str, u8); 16] = [
        ("last_irr", dev.last_irr),
        ("irr", dev.irr),
        ("imr", dev.imr),
        ("isr", dev.isr),
        ("priority_add", dev.priority_add),
        ("irq_base", dev.irq_base),
        ("read_reg_select", dev.read_reg_select),
        ("poll", dev.poll),
        ("special_mask", dev.special_mask),
        ("init_state", dev.init_state),
        ("auto_eoi", dev.auto_eoi),
        ("rotate_on_auto_eoi", dev.rotate_on_auto_eoi),
        ("special_fully_nested_mode", dev.special_fully_nested_mode),
        ("init4", dev.init4),
        ("single_mode", dev.single_mode),
        ("elcr", dev.elcr),
    ];
    assert_eq!(a.as_object().map(|o| o.len()), Some(fields.len()));
    for (name, value) in fields {
        assert_eq!(u64::from(value), hex(&a[name]), "{name}");
    }
    assert_eq!(dev.ltim, I8259Ltim::default());
}

fn check_ioapic(dev: &IoApic, a: &Value) {
    assert_eq!(u64::from(dev.id), hex(&a["id"]));
    assert_eq!(u64::from(dev.ioregsel), hex(&a["ioregsel"]));
    assert_eq!(hex_bytes(&a["unused"]), [0; 8]);
    assert_eq!(u64::from(dev.irr), hex(&a["irr"]));
    let table: Vec<u64> = a["ioredtbl"]
        .as_array()
        .expect("ioredtbl list")
        .iter()
        .map(hex)
        .collect();
    assert_eq!(dev.ioredtbl.to_vec(), table);
    // Every pin masked (bit 16) after reset.
    assert!(dev.ioredtbl.iter().all(|&e| e == 1 << 16));
}

fn check_hpet(dev: &Hpet, a: &Value) {
    assert_eq!(dev.config, hex(&a["config"]));
    assert_eq!(dev.isr, hex(&a["isr"]));
    assert_eq!(dev.hpet_counter, hex(&a["hpet_counter"]));
    assert_eq!(u64::from(dev.num_timers_save), hex(&a["num_timers_save"]));
    let timers = a["timer"].as_array().expect("timer list");
    assert_eq!(dev.timer.len(), timers.len());
    assert_eq!(dev.timer.len(), 3);
    for (i, (t, r)) in dev.timer.iter().zip(timers).enumerate() {
        assert_eq!(u64::from(t.tn), hex(&r["tn"]));
        assert_eq!(usize::from(t.tn), i);
        assert_eq!(t.config, hex(&r["config"]));
        assert_eq!(t.cmp, hex(&r["cmp"]));
        assert_eq!(t.fsb, hex(&r["fsb"]));
        assert_eq!(t.period, hex(&r["period"]));
        assert_eq!(u64::from(t.wrap_flag), hex(&r["wrap_flag"]));
        assert_eq!(t.qemu_timer, timer_from_analyze(&r["qemu_timer"]));
        assert!(!t.qemu_timer.is_armed());
    }
    assert!(a.get("hpet/rtc_irq_level").is_none() && a.get("hpet/offset").is_none());
}

fn check_fw_cfg(dev: &FwCfg, a: &Value) {
    assert_eq!(u64::from(dev.cur_entry), hex(&a["cur_entry"]));
    // QEMU's vmdesc names the version 2 field `cur_offset[1]`: the first `cur_offset`
    // (the version 1 hack) does not exist at version 2.
    assert_eq!(u64::from(dev.cur_offset), hex(&a["cur_offset[1]"]));
    assert!(a.get("cur_offset[0]").is_none());
    assert_eq!(dev.dma.dma_addr, hex(&a["fw_cfg/dma"]["dma_addr"]));
    let acpi = &a["fw_cfg/acpi_mr"];
    assert_eq!(dev.acpi_mr.table_mr_size, hex(&acpi["table_mr_size"]));
    assert_eq!(dev.acpi_mr.linker_mr_size, hex(&acpi["linker_mr_size"]));
    assert_eq!(dev.acpi_mr.rsdp_mr_size, hex(&acpi["rsdp_mr_size"]));
    // The RSDP blob (20 bytes) is what makes `fw_cfg/acpi_mr` needed.
    assert_eq!(dev.acpi_mr.rsdp_mr_size, 20);
}

fn check_port92(dev: &Port92, a: &Value) {
    assert_eq!(u64::from(dev.outport), hex(&a["outport"]));
}

// ---------------------------------------------------------------------------------------
// The test support itself, against QEMU's own record map

#[test]
fn walker_record_map_equals_qemus_sections_txt() {
    let text = String::from_utf8(fixture::read_qemu10("pc-minimal.sections.txt")).unwrap();
    let expected = parse_sections_txt(&text);
    let stream = pc_minimal();
    assert_eq!(stream.records.len(), expected.len());
    for (r, e) in stream.records.iter().zip(&expected) {
        assert_eq!(r.offset, e.offset, "{e:?}");
        assert_eq!(r.len, e.len, "{e:?}");
        assert_eq!(r.kind.qemu_name(), e.kind, "{e:?}");
        if e.section_id.is_some() {
            assert_eq!(r.section_id, e.section_id, "{e:?}");
        }
        if matches!(r.kind, RecordKind::Start | RecordKind::Full) {
            assert_eq!(r.idstr, e.idstr, "{e:?}");
            assert_eq!(r.instance_id, e.instance_id, "{e:?}");
            assert_eq!(r.version, e.version, "{e:?}");
            assert_eq!(Some(r.header_len), e.header_len, "{e:?}");
        }
    }
    assert_eq!(
        text.lines().last(),
        Some(
            format!(
                "end of parsed data: {0}, file size: {0}",
                stream.bytes.len()
            )
            .as_str()
        )
    );
}

#[test]
fn walker_ram_page_counts_equal_query_migrate() {
    let info = fixture::read_qemu10_json("pc-minimal.migrate-info.json");
    let ram = &info["query_migrate"]["ram"];
    let counts = pc_minimal().ram;
    assert_eq!(Some(counts.normal), ram["normal"].as_u64());
    assert_eq!(Some(counts.zero), ram["duplicate"].as_u64());
    assert_eq!(Some(counts.total), ram["total"].as_u64());
}

#[test]
fn walker_finds_none_minimal_layout_of_spec_1_9() {
    let s = none_minimal();
    let timer = section(s, "timer", 0);
    assert_eq!(
        (timer.section_id, timer.version, timer.payload.len()),
        (0, 2, 24)
    );
    let gs = section(s, "globalstate", 0);
    assert_eq!((gs.section_id, gs.version, gs.payload.len()), (3, 1, 104));
    assert_eq!(s.vmdesc_bytes().map(<[u8]>::len), Some(823));
    assert_eq!(
        s.records.last().map(|r| r.kind),
        Some(RecordKind::VmDescription)
    );
}

#[test]
fn vmdesc_trailers_reserialize_byte_for_byte() {
    // Parsing QEMU's JSON and writing it back with `qjson` gives QEMU's exact bytes, so
    // comparing per-device entries as `qjson` strings compares what QEMU would write.
    for stream in [none_minimal(), pc_minimal()] {
        let raw = stream.vmdesc_bytes().expect("vmdesc trailer");
        let parsed = stream.vmdesc().expect("valid JSON");
        assert_eq!(qjson::to_string(&parsed).as_bytes(), raw);
    }
}

// ---------------------------------------------------------------------------------------
// Descriptions against QEMU 10.0.2's -dump-vmstate

/// Compares a description with QEMU's `-dump-vmstate` entry: names, versions, minimum
/// versions, field order, field versions, `field_exists`, array counts, primitive sizes
/// and subsections, recursively. Returns the differences.
fn dump_differences(ours: &VmStateDescription, theirs: &Value, path: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut diff = |what: String| diffs.push(format!("{path}: {what}"));
    if theirs["name"].as_str() != Some(ours.name) {
        diff(format!("name {} vs {}", ours.name, theirs["name"]));
    }
    if theirs["version_id"].as_u64() != Some(u64::from(ours.version)) {
        diff(format!(
            "version {} vs {}",
            ours.version, theirs["version_id"]
        ));
    }
    if theirs["minimum_version_id"].as_u64() != Some(u64::from(ours.min_version)) {
        diff(format!(
            "min_version {} vs {}",
            ours.min_version, theirs["minimum_version_id"]
        ));
    }
    let empty = Vec::new();
    let fields = theirs["Fields"].as_array().unwrap_or(&empty);
    // QEMU's dump leaves out VMSTATE_VALIDATE checks (our `validate` fields).
    let ours_fields: Vec<&vmstate::Field> = vmstate::schema::dumped_fields(ours).collect();
    if fields.len() != ours_fields.len() {
        diff(format!("{} fields vs {}", ours_fields.len(), fields.len()));
    }
    let mut nested = Vec::new();
    for (f, t) in ours_fields.into_iter().zip(fields) {
        let fp = format!("{path}.{}", f.name);
        if t["field"].as_str() != Some(f.name) {
            diff(format!("field {} vs {}", f.name, t["field"]));
        }
        if t["version_id"].as_u64() != Some(u64::from(f.since)) {
            diff(format!("{fp}: since {} vs {}", f.since, t["version_id"]));
        }
        if t["field_exists"].as_bool() != Some(f.has_exists_test) {
            diff(format!(
                "{fp}: exists {} vs {}",
                f.has_exists_test, t["field_exists"]
            ));
        }
        let num = match f.count {
            vmstate::Count::Array(n) => Some(n as u64),
            _ => None,
        };
        if t["num"].as_u64() != num {
            diff(format!("{fp}: num {num:?} vs {}", t["num"]));
        }
        match f.ty {
            vmstate::FieldType::Info(info) => {
                if t["size"].as_u64() != Some(info.size as u64) {
                    diff(format!("{fp}: size {} vs {}", info.size, t["size"]));
                }
            }
            vmstate::FieldType::Struct(d) => nested.push((d, &t["Description"], fp)),
        }
    }
    let subs = theirs["Subsections"].as_array().unwrap_or(&empty);
    if subs.len() != ours.subsections.len() {
        diff(format!(
            "{} subsections vs {}",
            ours.subsections.len(),
            subs.len()
        ));
    }
    for (d, t, fp) in nested {
        diffs.extend(dump_differences(d, t, &fp));
    }
    for (s, t) in ours.subsections.iter().zip(subs) {
        diffs.extend(dump_differences(s, t, &format!("{path}/{}", s.name)));
    }
    diffs
}

fn dump_entry(qom_type: &str) -> &'static Value {
    let entry = &qemu10_dump()[qom_type];
    assert!(entry.is_object(), "no {qom_type} in the dump");
    &entry["Description"]
}

#[test]
fn descriptions_match_qemu_dump_vmstate() {
    let cases: [(&str, &VmStateDescription); 6] = [
        ("isa-pit", I8254::DESCRIPTION),
        ("mc146818rtc", Mc146818Rtc::DESCRIPTION),
        ("isa-i8259", I8259::DESCRIPTION),
        ("ioapic", IoApic::DESCRIPTION),
        ("hpet", Hpet::DESCRIPTION),
        ("port92", Port92::DESCRIPTION),
    ];
    for (qom_type, ours) in cases {
        let diffs = dump_differences(ours, dump_entry(qom_type), ours.name);
        assert!(diffs.is_empty(), "{qom_type}: {diffs:#?}");
    }
}

#[test]
fn fw_cfg_description_matches_qemu_dump_except_the_v1_hack_size() {
    // The only difference: QEMU's VMSTATE_UINT16_HACK declares the size of the 32-bit
    // member (4) although it reads a be16; ours is the 2-byte wire size.
    let diffs = dump_differences(FwCfg::DESCRIPTION, dump_entry("fw_cfg_io"), "fw_cfg");
    assert_eq!(diffs, ["fw_cfg: fw_cfg.cur_offset: size 2 vs 4"]);
}

// ---------------------------------------------------------------------------------------
// timer

fn round_trip<T: VmState + Clone + PartialEq + std::fmt::Debug>(dev: &T, fresh: T) -> Vec<u8> {
    let mut dev = dev.clone();
    let bytes = dev.to_bytes().expect("save");
    let mut back = fresh;
    back.load_bytes(&bytes, T::DESCRIPTION.version)
        .expect("load what was saved");
    assert_eq!(back, dev);
    bytes
}

#[test]
fn timer_icount_subsection_tree_round_trips() {
    let dev = CpuTimers {
        cpu_ticks_offset: -5,
        cpu_clock_offset: 77,
        icount_enabled: true,
        icount: TimersIcount {
            qemu_icount_bias: 0x1234,
            qemu_icount: 0x5678,
            warp_timer: TimersIcountWarpTimer {
                vm_clock_warp_start: -1,
                icount_warp_timer: Timer::armed_at(1_000),
            },
            shift: TimersIcountShift {
                icount_time_shift: 3,
                last_delta: -9,
            },
            has_warp_timer: true,
            adaptive: true,
            ..TimersIcount::default()
        },
        ..CpuTimers::default()
    };
    // The destination has the same configuration (the skip fields).
    let fresh = CpuTimers {
        icount_enabled: true,
        icount: TimersIcount {
            has_warp_timer: true,
            adaptive: true,
            ..TimersIcount::default()
        },
        ..CpuTimers::default()
    };
    let bytes = round_trip(&dev, fresh);

    let mut expected = Vec::new();
    expected.extend((-5i64).to_be_bytes());
    expected.extend([0; 8]);
    expected.extend(77i64.to_be_bytes());
    let mut icount = Vec::new();
    icount.extend(0x1234i64.to_be_bytes());
    icount.extend(0x5678i64.to_be_bytes());
    let mut warp = (-1i64).to_be_bytes().to_vec();
    warp.extend(1_000i64.to_be_bytes());
    icount.extend(subsection_bytes("timer/icount/warp_timer", 1, &warp));
    let mut shift = 3i16.to_be_bytes().to_vec();
    shift.extend((-9i64).to_be_bytes());
    icount.extend(subsection_bytes("timer/icount/shift", 2, &shift));
    expected.extend(subsection_bytes("timer/icount", 1, &icount));
    assert_eq!(bytes, expected);

    let (_, desc) = dev.clone().save_described().unwrap();
    let sub = &desc["subsections"][0];
    assert_eq!(sub["vmsd_name"], "timer/icount");
    let nested: Vec<&str> = sub["subsections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["vmsd_name"].as_str().unwrap())
        .collect();
    assert_eq!(nested, ["timer/icount/warp_timer", "timer/icount/shift"]);
}

#[test]
fn timer_version_1_stream_has_no_cpu_clock_offset() {
    let mut payload = 42i64.to_be_bytes().to_vec();
    payload.extend([0; 8]);
    let mut dev = CpuTimers {
        cpu_clock_offset: 99,
        ..CpuTimers::default()
    };
    dev.load_bytes(&payload, 1).unwrap();
    assert_eq!((dev.cpu_ticks_offset, dev.cpu_clock_offset), (42, 99));
}

#[test]
fn timer_icount_shift_version_1_is_too_old() {
    let mut icount = vec![0; 16];
    icount.extend(subsection_bytes("timer/icount/shift", 1, &[0; 2]));
    let mut payload = vec![0; 24];
    payload.extend(subsection_bytes("timer/icount", 1, &icount));
    let err = CpuTimers::default().load_bytes(&payload, 2).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::VersionTooOld {
                vmsd: "timer/icount/shift",
                stream: 1,
                min: 2
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// globalstate

#[test]
fn globalstate_pre_save_sets_size_from_runstate() {
    let mut gs = GlobalState::default();
    gs.set_runstate("running");
    gs.size = 0;
    let bytes = gs.to_bytes().unwrap();
    assert_eq!(gs.size, 8);
    assert_eq!(bytes[..4], 8u32.to_be_bytes());
    assert_eq!(&bytes[4..12], b"running\0");
    assert_eq!(bytes.len(), 4 + 32 + 1 + 1 + 66);
}

#[test]
fn globalstate_pre_save_rejects_unterminated_runstate() {
    let mut gs = GlobalState {
        runstate: [b'x'; 32],
        ..GlobalState::default()
    };
    let err = gs.to_bytes().unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Hook {
                hook: "pre_save",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn globalstate_needed_follows_runstate_and_store_global_state() {
    let mut gs = GlobalState::default();
    gs.set_runstate("running");
    assert!(gs.needed(), "store-global-state defaults to on");
    gs.store_global_state = false;
    assert!(!gs.needed());
    gs.set_runstate("paused");
    assert!(!gs.needed());
    gs.set_runstate("prelaunch");
    assert!(gs.needed());
}

#[test]
fn globalstate_unused_buffer_is_loaded_not_discarded() {
    let s = section(none_minimal(), "globalstate", 0);
    let mut payload = s.payload.to_vec();
    payload[103] = 0xab;
    let mut gs = GlobalState::default();
    gs.load_bytes(&payload, 1).unwrap();
    assert_eq!(gs.unused[65], 0xab);
    assert_eq!(gs.to_bytes().unwrap(), payload);
}

// ---------------------------------------------------------------------------------------
// i8254

#[test]
fn i8254_second_copy_of_channel0_transition_time_wins() {
    let s = section(pc_minimal(), "i8254", 0);
    let mut payload = s.payload.to_vec();
    let n = payload.len();
    payload[n - 8..].copy_from_slice(&0x1122_3344i64.to_be_bytes());
    let mut pit = I8254::default();
    pit.load_bytes(&payload, 3).unwrap();
    assert_eq!(pit.channels[0].next_transition_time, 0x1122_3344);
    // Saved again, both copies carry the value.
    let again = pit.to_bytes().unwrap();
    assert_eq!(again[4 + 24..4 + 32], 0x1122_3344i64.to_be_bytes());
    assert_eq!(again[n - 8..], 0x1122_3344i64.to_be_bytes());
}

#[test]
fn i8254_version_2_stream_has_no_irq_disabled() {
    let s = section(pc_minimal(), "i8254", 0);
    let mut pit = I8254 {
        irq_disabled: 7,
        ..I8254::default()
    };
    pit.load_bytes(&s.payload[4..], 2).unwrap();
    assert_eq!(pit.irq_disabled, 7);
    assert_eq!(pit.channels[1].mode, 3);
}

#[test]
fn i8254_versions_outside_2_to_3_are_rejected() {
    let s = section(pc_minimal(), "i8254", 0);
    let err = I8254::default().load_bytes(s.payload, 1).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::VersionTooOld { vmsd: "i8254", .. }),
        "{err}"
    );
    let err = I8254::default().load_bytes(s.payload, 4).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::VersionTooNew { vmsd: "i8254", .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// mc146818rtc

#[test]
fn rtc_irq_reinject_subsection_round_trips() {
    let s = section(pc_minimal(), "mc146818rtc", 0);
    let mut rtc = Mc146818Rtc::default();
    rtc.load_bytes(s.payload, 3).unwrap();
    rtc.irq_reinject_on_ack_count.irq_reinject_on_ack_count = 0x1234;
    let bytes = round_trip(&rtc, Mc146818Rtc::default());
    let mut expected = s.payload.to_vec();
    expected.extend(subsection_bytes(
        "mc146818rtc/irq_reinject_on_ack_count",
        1,
        &[0x12, 0x34],
    ));
    assert_eq!(bytes, expected);

    let (_, desc) = rtc.save_described().unwrap();
    assert_eq!(
        qjson::to_string(&desc["subsections"]),
        r#"[{"vmsd_name": "mc146818rtc/irq_reinject_on_ack_count", "version": 1, "fields": [{"name": "irq_reinject_on_ack_count", "type": "uint16", "size": 2}]}]"#
    );
}

#[test]
fn rtc_older_versions_load_without_newer_fields() {
    let s = section(pc_minimal(), "mc146818rtc", 0);
    // Version 1: up to the second unused block; version 2 adds irq_coalesced and period.
    let v1_len = 128 + 1 + 28 + 8 + 8 + 24;
    let keep = Mc146818Rtc {
        base_rtc: 5,
        period: 6,
        ..Mc146818Rtc::default()
    };
    let mut rtc = keep.clone();
    rtc.load_bytes(&s.payload[..v1_len], 1).unwrap();
    assert_eq!((rtc.base_rtc, rtc.period), (5, 6));
    assert_eq!(rtc.cmos_data.to_vec(), s.payload[..128].to_vec());
    let mut rtc = keep;
    rtc.load_bytes(&s.payload[..v1_len + 8], 2).unwrap();
    assert_eq!((rtc.base_rtc, rtc.period), (5, 0));
    let err = Mc146818Rtc::default().load_bytes(s.payload, 4).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::VersionTooNew { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// i8259

#[test]
fn i8259_ltim_subsection_round_trips() {
    let pic = I8259 {
        irr: 1,
        imr: 0xfb,
        elcr: 0x0c,
        ltim: I8259Ltim { ltim: 8 },
        ..I8259::default()
    };
    let bytes = round_trip(&pic, I8259::default());
    assert_eq!(
        bytes.len(),
        16 + subsection_bytes("i8259/ltim", 1, &[8]).len()
    );
    assert_eq!(bytes[16..], subsection_bytes("i8259/ltim", 1, &[8]));
}

// ---------------------------------------------------------------------------------------
// ioapic

#[test]
fn ioapic_version_1_stream_has_no_unused_and_irr() {
    let mut payload = vec![3, 0x10];
    for i in 0..24u64 {
        payload.extend((i << 56 | 0x1_0000).to_be_bytes());
    }
    let mut ioapic = IoApic {
        irr: 0xdead,
        ..IoApic::default()
    };
    ioapic.load_bytes(&payload, 1).unwrap();
    assert_eq!((ioapic.id, ioapic.ioregsel, ioapic.irr), (3, 0x10, 0xdead));
    assert_eq!(ioapic.ioredtbl[23], 23 << 56 | 0x1_0000);
}

// ---------------------------------------------------------------------------------------
// hpet

fn enabled_hpet() -> Hpet {
    let s = section(pc_minimal(), "hpet", 0);
    let mut hpet = Hpet::default();
    hpet.load_bytes(s.payload, 2).unwrap();
    hpet.config |= 1; // HPET_CFG_ENABLE
    hpet.rtc_irq_level.rtc_irq_level = 1;
    hpet.offset.hpet_offset = 0xffff_ffff_0000_1000;
    hpet
}

#[test]
fn hpet_subsections_round_trip() {
    let hpet = enabled_hpet();
    let bytes = round_trip(&hpet, Hpet::default());
    let s = section(pc_minimal(), "hpet", 0);
    let mut expected = s.payload.to_vec();
    expected[7] |= 1;
    expected.extend(subsection_bytes("hpet/rtc_irq_level", 1, &[1]));
    expected.extend(subsection_bytes(
        "hpet/offset",
        1,
        &0xffff_ffff_0000_1000u64.to_be_bytes(),
    ));
    assert_eq!(bytes, expected);
}

#[test]
fn hpet_subsections_load_in_any_order() {
    let hpet = enabled_hpet();
    let s = section(pc_minimal(), "hpet", 0);
    let mut payload = s.payload.to_vec();
    payload[7] |= 1;
    payload.extend(subsection_bytes(
        "hpet/offset",
        1,
        &0xffff_ffff_0000_1000u64.to_be_bytes(),
    ));
    payload.extend(subsection_bytes("hpet/rtc_irq_level", 1, &[1]));
    let mut back = Hpet::default();
    back.load_bytes(&payload, 2).unwrap();
    assert_eq!(back, hpet);
}

#[test]
fn hpet_offset_needs_enabled_and_the_property() {
    let mut hpet = enabled_hpet();
    hpet.hpet_offset_saved = false;
    let bytes = hpet.to_bytes().unwrap();
    let s = section(pc_minimal(), "hpet", 0);
    assert_eq!(
        bytes.len(),
        s.payload.len() + subsection_bytes("hpet/rtc_irq_level", 1, &[1]).len()
    );
    hpet.hpet_offset_saved = true;
    hpet.config &= !1;
    hpet.rtc_irq_level.rtc_irq_level = 0;
    assert_eq!(hpet.to_bytes().unwrap().len(), s.payload.len());
}

#[test]
fn hpet_version_1_stream_uses_the_configured_timer_count() {
    let s = section(pc_minimal(), "hpet", 0);
    // Version 1: config, isr, counter, then the timers without num_timers_save.
    let mut payload = s.payload[..24].to_vec();
    payload.extend(&s.payload[25..]);
    let mut hpet = Hpet::default();
    hpet.load_bytes(&payload, 1).unwrap();
    let mut v2 = Hpet::default();
    v2.load_bytes(s.payload, 2).unwrap();
    assert_eq!(hpet, v2);
}

#[test]
fn hpet_timer_count_beyond_the_data_fails() {
    let s = section(pc_minimal(), "hpet", 0);
    let mut payload = s.payload.to_vec();
    payload[24] = 32;
    // A 32-timer HPET passes the validation, then runs out of timer data.
    let mut hpet = Hpet {
        num_timers: 32,
        ..Hpet::default()
    };
    let err = hpet.load_bytes(&payload, 2).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::UnexpectedEof { .. }),
        "{err}"
    );
}

#[test]
fn hpet_timer_count_must_match_the_configured_one() {
    // QEMU's VMSTATE_VALIDATE("num_timers must match", ...) runs after num_timers_save
    // and before the timers.
    let s = section(pc_minimal(), "hpet", 0);
    let mut payload = s.payload.to_vec();
    payload[24] = 4;
    let mut hpet = Hpet::default();
    let err = hpet.load_bytes(&payload, 2).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ValidationFailed {
                check: "num_timers must match"
            }
        ),
        "{err}"
    );
    assert_eq!(err.path(), "hpet.num_timers must match");
    assert_eq!(err.offset(), Some(25));
    // Nothing after the check was read: the timers are the configured ones.
    assert_eq!((hpet.num_timers_save, hpet.timer.len()), (4, 3));
}

#[test]
fn hpet_pre_save_rejects_too_few_timers() {
    let mut hpet = Hpet::default();
    hpet.timer.truncate(2);
    let err = hpet.to_bytes().unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Hook {
                hook: "pre_save",
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// fw_cfg

#[test]
fn fw_cfg_subsections_follow_the_properties() {
    let s = section(pc_minimal(), "fw_cfg", 0);
    let mut fw = FwCfg::default();
    fw.load_bytes(s.payload, 2).unwrap();
    fw.dma_enabled = false;
    fw.acpi_mr.rsdp_mr_size = 0x1000;
    let bytes = fw.to_bytes().unwrap();
    assert_eq!(bytes, s.payload[..6]);
    let (_, desc) = fw.save_described().unwrap();
    assert!(desc.get("subsections").is_none());

    fw.acpi_mr.rsdp_mr_size = 20;
    fw.acpi_mr_restore = false;
    assert_eq!(fw.to_bytes().unwrap().len(), 6);
    fw.dma_enabled = true;
    fw.dma.dma_addr = 0x1234_5678_9abc;
    // The destination builds the same ACPI tables and has the same properties.
    let fresh = FwCfg {
        acpi_mr: fw.acpi_mr.clone(),
        acpi_mr_restore: false,
        ..FwCfg::default()
    };
    let bytes = round_trip(&fw, fresh);
    let mut expected = s.payload[..6].to_vec();
    expected.extend(subsection_bytes(
        "fw_cfg/dma",
        0,
        &0x1234_5678_9abcu64.to_be_bytes(),
    ));
    assert_eq!(bytes, expected);
}

#[test]
fn fw_cfg_version_1_stream_carries_a_16_bit_cur_offset() {
    let payload = [0x00, 0x19, 0xab, 0xcd];
    let mut fw = FwCfg {
        cur_offset: 0xffff_ffff,
        ..FwCfg::default()
    };
    fw.load_bytes(&payload, 1).unwrap();
    assert_eq!((fw.cur_entry, fw.cur_offset), (0x19, 0xabcd));
    // At version 2 the same field is a be32.
    let mut fw = FwCfg::default();
    fw.load_bytes(&[0x00, 0x19, 0, 0, 0xab, 0xcd], 2).unwrap();
    assert_eq!(
        (fw.cur_entry, fw.cur_offset, fw.cur_offset_v1),
        (0x19, 0xabcd, 0)
    );
}

#[test]
fn fw_cfg_dma_subsection_version_above_0_is_too_new() {
    let mut payload = vec![0; 6];
    payload.extend(subsection_bytes("fw_cfg/dma", 1, &[0; 8]));
    let err = FwCfg::default().load_bytes(&payload, 2).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::VersionTooNew {
                vmsd: "fw_cfg/dma",
                stream: 1,
                local: 0
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// port92

#[test]
fn port92_a20_bit_round_trips() {
    let bytes = round_trip(&Port92 { outport: 2 }, Port92::default());
    assert_eq!(bytes, [2]);
}

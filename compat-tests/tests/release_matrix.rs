//! The "demo" emulator over its four releases (`compat_tests::evolving`): fixtures kept
//! and regenerated identically, the checker between consecutive releases, every golden
//! stream loaded by every release, and saving for each older release.
//!
//! Every expectation below is written out per cell from the rules, not computed:
//!
//! - a release refuses a stream whose machine names a later release (the release check);
//! - a section or subsection loads when its version is within the loader's
//!   `[min_version, version]`; fields with `since` above the stream's version are not
//!   read and keep the fresh machine's value; `unused` bytes are skipped; an unknown
//!   subsection is an error;
//! - saving for an older release writes each description at that release's version,
//!   leaves out the fields added later, and fails when needed state (a subsection) has no
//!   form the target understands.
//!
//! `VMSTATE_BLESS=1 cargo test -p compat-tests --test release_matrix fixtures` rewrites
//! the fixtures after an intended change.

use std::fmt::Debug;

use compat_tests::evolving::values::*;
use compat_tests::evolving::{self, r1_0, r1_1, r2_0, r3_0};
use vmstate::release::{Version, save_for_release};
use vmstate::stream::{LoadOptions, StreamConfig, load_stream, save_snapshot};
use vmstate::{Reader, Registry};
use vmstate_tools::check::CheckOptions;
use vmstate_tools::compat::{Cell, Expect};

// ---------------------------------------------------------------------------------
// What each release holds after a load, built from the golden values.

/// Release 1.0's machine: the golden registers, `scratch` as given.
fn in_1_0(scratch: u32) -> r1_0::Machine {
    r1_0::Machine {
        uart: r1_0::Uart {
            lcr: LCR,
            lsr: LSR,
            divisor: DIVISOR,
            scratch,
        },
        pit: r1_0::Pit {
            mode: MODE,
            counters: COUNTERS,
        },
        intc: r1_0::Intc {
            imr: IMR,
            irr: IRR,
            isr: ISR,
            elcr: ELCR,
            base: BASE,
        },
    }
}

/// Release 1.1's machine.
fn in_1_1(scratch: u32, fcr: u8) -> r1_1::Machine {
    r1_1::Machine {
        uart: r1_1::Uart {
            lcr: LCR,
            lsr: LSR,
            divisor: DIVISOR,
            scratch,
            fcr,
        },
        pit: r1_1::Pit {
            mode: MODE,
            counters: COUNTERS,
        },
        intc: r1_1::Intc {
            imr: IMR,
            irr: IRR,
            isr: ISR,
            elcr: ELCR,
            base: BASE,
        },
    }
}

/// Release 2.0's machine.
fn in_2_0(fcr: u8, fifo: &[u8], extra: &[u16]) -> r2_0::Machine {
    r2_0::Machine {
        uart: r2_0::Uart {
            lcr: LCR,
            lsr: LSR,
            divisor: DIVISOR,
            _scratch: (),
            fcr,
            fifo: r2_0::UartFifo {
                count: fifo.len() as u8,
                data: fifo.to_vec(),
            },
        },
        pit: r2_0::Pit {
            mode: MODE,
            counters: COUNTERS,
            nextra: extra.len() as u8,
            extra: extra.to_vec(),
        },
        intc: r2_0::Intc {
            imr: IMR,
            irr: IRR,
            isr: ISR,
            elcr: ELCR,
            base: BASE,
        },
    }
}

/// Release 3.0's machine.
fn in_3_0(fcr: u8, fifo: &[u16], extra: &[u16]) -> r3_0::Machine {
    r3_0::Machine {
        uart: r3_0::Uart {
            lcr: LCR,
            lsr: LSR,
            divisor: DIVISOR,
            _scratch: (),
            fcr,
            fifo: r3_0::UartFifo {
                count: fifo.len() as u8,
                data: fifo.to_vec(),
            },
        },
        pit: r3_0::Pit {
            mode: MODE,
            counters: COUNTERS,
            nextra: extra.len() as u8,
            extra: extra.to_vec(),
        },
        pic: r3_0::Pic {
            regs: r3_0::PicRegs {
                imr: IMR,
                irr: IRR,
                isr: ISR,
            },
            config: r3_0::PicConfig {
                elcr: ELCR,
                base: BASE,
            },
        },
    }
}

/// A check that the loaded machine equals `want`.
fn equals<M: PartialEq + Debug + 'static>(
    want: M,
    read: fn(&mut Registry) -> Result<M, String>,
) -> impl Fn(&mut Registry) -> Result<(), String> {
    move |reg| {
        let got = read(reg)?;
        if got == want {
            Ok(())
        } else {
            Err(format!("loaded {got:?}, expected {want:?}"))
        }
    }
}

fn loads_1_0(m: r1_0::Machine) -> Expect {
    Expect::loads(equals(m, r1_0::Machine::from_registry))
}
fn loads_1_1(m: r1_1::Machine) -> Expect {
    Expect::loads(equals(m, r1_1::Machine::from_registry))
}
fn loads_2_0(m: r2_0::Machine) -> Expect {
    Expect::loads(equals(m, r2_0::Machine::from_registry))
}
fn loads_3_0(m: r3_0::Machine) -> Expect {
    Expect::loads(equals(m, r3_0::Machine::from_registry))
}

/// The release check's refusal of a stream from a later release.
fn newer(stream: &str, local: &str) -> Expect {
    let m = |v: &str| format!("demo-{}", &v[..3]);
    Expect::fails(format!(
        "stream written by release {stream} (machine {}), which is newer than this release \
         {local} (machine {})",
        m(stream),
        m(local)
    ))
}

/// A section header version above the loader's.
const UART_TOO_NEW: &str = "FULL section 0 'uart' instance 0 (version 2): section version 2 is newer than the local version 1";
const PIT_TOO_NEW: &str = "FULL section 1 'pit' instance 0 (version 2): section version 2 is newer than the local version 1";
const FIFO_UNKNOWN: &str = "subsection 'uart/fifo' in 'uart' does not exist";
const FIFO_TOO_NEW: &str = "version 2 of 'uart/fifo' is newer than the newest supported version 1";
const FIFO_TOO_OLD: &str = "version 1 of 'uart/fifo' is older than the oldest supported version 2";

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

// ---------------------------------------------------------------------------------

#[test]
fn fixtures_are_regenerated_identically() {
    let suite = evolving::suite();
    if let Err(failures) = suite.check_fixtures() {
        panic!("{failures}");
    }
    let goldens: Vec<String> = suite
        .goldens()
        .iter()
        .map(|(g, v)| format!("{g}-{v}"))
        .collect();
    assert_eq!(
        goldens,
        [
            "idle-1.0.0",
            "idle-1.1.0",
            "idle-2.0.0",
            "busy-2.0.0",
            "idle-3.0.0",
            "busy-3.0.0"
        ]
    );
    // Small and deterministic.
    for (g, ver) in suite.goldens() {
        assert!(suite.read_golden(&g, &ver).unwrap().len() < 2048);
    }
}

#[test]
fn each_release_declares_exactly_its_devices() {
    for (name, reg, release) in [
        ("1.0", r1_0::Machine::idle().registry(), r1_0::release()),
        ("1.1", r1_1::Machine::idle().registry(), r1_1::release()),
        ("2.0", r2_0::Machine::busy().registry(), r2_0::release()),
        ("3.0", r3_0::Machine::busy().registry(), r3_0::release()),
    ] {
        release
            .check_registry(&reg)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The 3.0 machine is not 2.0's: `uart/fifo` changed.
    let err = r2_0::release()
        .check_registry(&r3_0::Machine::idle().registry())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "device section 'uart' does not match release 2.0.0: its description differs from the \
         one declared in the release"
    );
    // What each release knows.
    let known: Vec<String> = r3_0::release_map()
        .releases()
        .iter()
        .map(|r| format!("{} {}", r.version(), r.machine()))
        .collect();
    assert_eq!(
        known,
        [
            "1.0.0 demo-1.0",
            "1.1.0 demo-1.1",
            "2.0.0 demo-2.0",
            "3.0.0 demo-3.0"
        ]
    );
    fn uart(r: &vmstate::release::Release) -> (u32, u32, Vec<(String, u32)>) {
        let s = r.section("uart").unwrap();
        let subs = r.subsections("uart");
        let subs = subs.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        (s.version, s.min_version, subs)
    }
    let map = r3_0::release_map();
    let rel = |v: &str| map.find(v).unwrap();
    assert_eq!(uart(rel("1.0")), (1, 1, vec![]));
    assert_eq!(uart(rel("1.1")), (2, 1, vec![]));
    assert_eq!(uart(rel("2.0")), (2, 1, vec![("uart/fifo".to_string(), 1)]));
    assert_eq!(uart(rel("3.0")), (2, 1, vec![("uart/fifo".to_string(), 2)]));
    assert_eq!(rel("2.0").section("pit").unwrap().version, 2);
}

#[test]
fn consecutive_releases_pass_the_checker() {
    let steps = evolving::suite().check_steps(&CheckOptions::default());
    let got: Vec<(String, Vec<String>)> = steps
        .iter()
        .map(|s| {
            (
                format!("{} -> {}", s.from, s.to),
                s.problems.iter().map(|p| p.to_string()).collect(),
            )
        })
        .collect();
    let none: Vec<String> = Vec::new();
    assert_eq!(
        got,
        [
            // `fcr` comes with a version bump; 1.0 streams (version 1) do not have it.
            ("1.0.0 -> 1.1.0".to_string(), none.clone()),
            // `scratch` -> 4 unused bytes; `uart/fifo` is new (extra subsections are
            // fine); `pit`'s extra counters come with a version bump.
            ("1.1.0 -> 2.0.0".to_string(), none),
            // The deliberate break: `uart/fifo` version 2 refuses version 1, and its
            // entries are wider. Only FIFO state is affected (the subsection is sent
            // only with data in the FIFO); the `intc` split is not reported.
            (
                "2.0.0 -> 3.0.0".to_string(),
                vec![
                    r#"Section "uart" Description "uart/fifo": minimum version error: 1 < 2"#
                        .to_string(),
                    r#"Section "uart" Description "uart/fifo" Field "data" size mismatch: 1 , 2"#
                        .to_string(),
                ]
            ),
        ]
    );
}

/// Every golden stream into every release, with the release check.
fn release_matrix_cell(cell: &Cell) -> Expect {
    let written = cell.written_by.to_string();
    let loaded = cell.loaded_by.to_string();
    match (cell.golden.as_str(), written.as_str(), loaded.as_str()) {
        // Release 1.0 knows itself only.
        ("idle", "1.0.0", "1.0.0") => loads_1_0(in_1_0(SCRATCH)),
        ("idle", "1.1.0", "1.0.0") => newer("1.1.0", "1.0.0"),
        ("idle", "2.0.0", "1.0.0") => newer("2.0.0", "1.0.0"),
        ("busy", "2.0.0", "1.0.0") => newer("2.0.0", "1.0.0"),
        ("idle", "3.0.0", "1.0.0") => newer("3.0.0", "1.0.0"),
        ("busy", "3.0.0", "1.0.0") => newer("3.0.0", "1.0.0"),
        // Release 1.1: a 1.0 stream has `uart` version 1, without `fcr` (stays 0).
        ("idle", "1.0.0", "1.1.0") => loads_1_1(in_1_1(SCRATCH, 0)),
        ("idle", "1.1.0", "1.1.0") => loads_1_1(in_1_1(SCRATCH, FCR)),
        ("idle", "2.0.0", "1.1.0") => newer("2.0.0", "1.1.0"),
        ("busy", "2.0.0", "1.1.0") => newer("2.0.0", "1.1.0"),
        ("idle", "3.0.0", "1.1.0") => newer("3.0.0", "1.1.0"),
        ("busy", "3.0.0", "1.1.0") => newer("3.0.0", "1.1.0"),
        // Release 2.0: `scratch` bytes skipped; 1.x `pit` (version 1) has no extra
        // counters; no FIFO subsection in idle streams.
        ("idle", "1.0.0", "2.0.0") => loads_2_0(in_2_0(0, &[], &[])),
        ("idle", "1.1.0", "2.0.0") => loads_2_0(in_2_0(FCR, &[], &[])),
        ("idle", "2.0.0", "2.0.0") => loads_2_0(in_2_0(FCR, &[], &[])),
        ("busy", "2.0.0", "2.0.0") => loads_2_0(in_2_0(FCR, &FIFO, &EXTRA)),
        ("idle", "3.0.0", "2.0.0") => newer("3.0.0", "2.0.0"),
        ("busy", "3.0.0", "2.0.0") => newer("3.0.0", "2.0.0"),
        // Release 3.0: loads everything but 2.0's FIFO state (`uart/fifo` version 1 is
        // below its min_version 2).
        ("idle", "1.0.0", "3.0.0") => loads_3_0(in_3_0(0, &[], &[])),
        ("idle", "1.1.0", "3.0.0") => loads_3_0(in_3_0(FCR, &[], &[])),
        ("idle", "2.0.0", "3.0.0") => loads_3_0(in_3_0(FCR, &[], &[])),
        ("busy", "2.0.0", "3.0.0") => Expect::fails(FIFO_TOO_OLD),
        ("idle", "3.0.0", "3.0.0") => loads_3_0(in_3_0(FCR, &[], &[])),
        ("busy", "3.0.0", "3.0.0") => loads_3_0(in_3_0(FCR, &FIFO_3_0, &EXTRA)),
        _ => panic!("no expectation written for {cell}"),
    }
}

#[test]
fn every_golden_stream_in_every_release() {
    let report = evolving::suite().matrix(release_matrix_cell);
    println!("{report}");
    assert_eq!(report.cells.len(), 6 * 4);
    report.assert_ok();
    let loaded = report
        .cells
        .iter()
        .filter(|c| c.outcome == "loaded")
        .count();
    // 1 in 1.0, 2 in 1.1, 4 in 2.0, 5 in 3.0.
    assert_eq!(loaded, 12);
}

#[test]
fn a_newer_release_s_stream_is_refused_naming_both_releases() {
    let suite = evolving::suite();
    let err = suite.load("idle", &v("3.0.0"), &v("2.0.0")).err().unwrap();
    assert_eq!(
        err.to_string(),
        "configuration: invalid stream release: stream written by release 3.0.0 (machine demo-3.0), which is \
         newer than this release 2.0.0 (machine demo-2.0); this release knows releases up to \
         2.0.0 (1.0.0, 1.1.0, 2.0.0): load the stream with release 3.0.0 or later, or have \
         3.0.0 save it for release 2.0.0 at byte offset 13 (0xd)"
    );
}

/// What the section rules alone do, without the release check (`load_stream` with no
/// machine check): some newer streams happen to load, which is why the check is there.
enum Raw {
    V1_0(r1_0::Machine),
    V1_1(r1_1::Machine),
    V2_0(r2_0::Machine),
    V3_0(r3_0::Machine),
    Fails(&'static str),
}

fn raw_cell(golden: &str, written: &str, loaded: &str) -> Raw {
    use Raw::*;
    match (golden, written, loaded) {
        // 1.0: every later stream has `uart` version 2.
        ("idle", "1.0.0", "1.0.0") => V1_0(in_1_0(SCRATCH)),
        ("idle", "1.1.0", "1.0.0") => Fails(UART_TOO_NEW),
        ("idle", "2.0.0", "1.0.0") => Fails(UART_TOO_NEW),
        ("busy", "2.0.0", "1.0.0") => Fails(UART_TOO_NEW),
        ("idle", "3.0.0", "1.0.0") => Fails(UART_TOO_NEW),
        ("busy", "3.0.0", "1.0.0") => Fails(UART_TOO_NEW),
        // 1.1: `uart` of 2.0+ loads (`scratch` reads the zeros of `unused`), then `pit`
        // version 2 is too new; FIFO state is an unknown subsection.
        ("idle", "1.0.0", "1.1.0") => V1_1(in_1_1(SCRATCH, 0)),
        ("idle", "1.1.0", "1.1.0") => V1_1(in_1_1(SCRATCH, FCR)),
        ("idle", "2.0.0", "1.1.0") => Fails(PIT_TOO_NEW),
        ("busy", "2.0.0", "1.1.0") => Fails(FIFO_UNKNOWN),
        ("idle", "3.0.0", "1.1.0") => Fails(PIT_TOO_NEW),
        ("busy", "3.0.0", "1.1.0") => Fails(FIFO_UNKNOWN),
        // 2.0: an idle 3.0 stream is byte-compatible; 3.0's FIFO state is not.
        ("idle", "1.0.0", "2.0.0") => V2_0(in_2_0(0, &[], &[])),
        ("idle", "1.1.0", "2.0.0") => V2_0(in_2_0(FCR, &[], &[])),
        ("idle", "2.0.0", "2.0.0") => V2_0(in_2_0(FCR, &[], &[])),
        ("busy", "2.0.0", "2.0.0") => V2_0(in_2_0(FCR, &FIFO, &EXTRA)),
        ("idle", "3.0.0", "2.0.0") => V2_0(in_2_0(FCR, &[], &[])),
        ("busy", "3.0.0", "2.0.0") => Fails(FIFO_TOO_NEW),
        // 3.0: as with the release check (no stream is newer).
        ("idle", "1.0.0", "3.0.0") => V3_0(in_3_0(0, &[], &[])),
        ("idle", "1.1.0", "3.0.0") => V3_0(in_3_0(FCR, &[], &[])),
        ("idle", "2.0.0", "3.0.0") => V3_0(in_3_0(FCR, &[], &[])),
        ("busy", "2.0.0", "3.0.0") => Fails(FIFO_TOO_OLD),
        ("idle", "3.0.0", "3.0.0") => V3_0(in_3_0(FCR, &[], &[])),
        ("busy", "3.0.0", "3.0.0") => V3_0(in_3_0(FCR, &FIFO_3_0, &EXTRA)),
        _ => panic!("no expectation written for {golden}-{written} in {loaded}"),
    }
}

#[test]
fn every_golden_stream_in_every_release_by_the_section_rules_alone() {
    let suite = evolving::suite();
    let mut failures = Vec::new();
    for (golden, written) in suite.goldens() {
        let bytes = suite.read_golden(&golden, &written).unwrap();
        for subject in suite.subjects() {
            let loaded = subject.release().version().to_string();
            let mut reg = subject.fresh();
            let result = load_stream(
                &mut reg,
                &mut Reader::from_slice(&bytes),
                &LoadOptions::default(),
            );
            let cell = format!("{golden}-{written} in {loaded}");
            let check = match (raw_cell(&golden, &written.to_string(), &loaded), result) {
                (Raw::Fails(text), Err(e)) if e.to_string().contains(text) => Ok(()),
                (Raw::Fails(text), Err(e)) => Err(format!("expected \"{text}\", got: {e}")),
                (Raw::Fails(text), Ok(_)) => Err(format!("loaded, expected \"{text}\"")),
                (_, Err(e)) => Err(format!("failed: {e}")),
                (Raw::V1_0(m), Ok(_)) => equals(m, r1_0::Machine::from_registry)(&mut reg),
                (Raw::V1_1(m), Ok(_)) => equals(m, r1_1::Machine::from_registry)(&mut reg),
                (Raw::V2_0(m), Ok(_)) => equals(m, r2_0::Machine::from_registry)(&mut reg),
                (Raw::V3_0(m), Ok(_)) => equals(m, r3_0::Machine::from_registry)(&mut reg),
            };
            if let Err(e) = check {
                failures.push(format!("{cell}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn saving_for_each_older_release_then_loading_there() {
    let suite = evolving::suite();
    let (v1_0, v1_1, v2_0, v3_0) = (v("1.0.0"), v("1.1.0"), v("2.0.0"), v("3.0.0"));
    // Every newer release's idle machine, saved for every older release, loads there.
    // `fcr` is left out for 1.0 (since 2); 2.0+ write `scratch` as 4 zero bytes.
    let check = |from: &Version, to: &Version| -> Result<(), String> {
        let mut reg = suite
            .downgrade("idle", from, to)
            .map_err(|e| format!("{from} -> {to}: {e}"))?;
        match (from.to_string().as_str(), to.to_string().as_str()) {
            ("1.1.0", "1.0.0") => equals(in_1_0(SCRATCH), r1_0::Machine::from_registry)(&mut reg),
            ("2.0.0", "1.0.0") => equals(in_1_0(0), r1_0::Machine::from_registry)(&mut reg),
            ("2.0.0", "1.1.0") => equals(in_1_1(0, FCR), r1_1::Machine::from_registry)(&mut reg),
            ("3.0.0", "1.0.0") => equals(in_1_0(0), r1_0::Machine::from_registry)(&mut reg),
            ("3.0.0", "1.1.0") => equals(in_1_1(0, FCR), r1_1::Machine::from_registry)(&mut reg),
            ("3.0.0", "2.0.0") => {
                equals(in_2_0(FCR, &[], &[]), r2_0::Machine::from_registry)(&mut reg)
            }
            other => panic!("no expectation for {other:?}"),
        }
        .map_err(|e| format!("{from} -> {to}: {e}"))
    };
    let pairs = [
        (&v1_1, &v1_0),
        (&v2_0, &v1_0),
        (&v2_0, &v1_1),
        (&v3_0, &v1_0),
        (&v3_0, &v1_1),
        (&v3_0, &v2_0),
    ];
    let failures: Vec<String> = pairs
        .iter()
        .filter_map(|(from, to)| check(from, to).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Saving for one's own release is the plain save: the golden stream itself.
    for ver in [&v1_0, &v1_1, &v2_0, &v3_0] {
        for golden in ["idle", "busy"] {
            if ver.major < 2 && golden == "busy" {
                continue;
            }
            assert_eq!(
                suite.save_for(golden, ver, ver).unwrap(),
                suite.read_golden(golden, ver).unwrap(),
                "{golden}-{ver}"
            );
        }
    }
}

#[test]
fn state_an_older_release_cannot_hold_fails_the_save() {
    let suite = evolving::suite();
    let unknown = |to: &str| {
        format!(
            "cannot save for release {to}.0 (machine demo-{to}): this state needs subsection \
             'uart/fifo' of 'uart' (its `needed` is true), and the release does not know \
             subsection 'uart/fifo' of 'uart'"
        )
    };
    let cases = [
        // 2.0's FIFO subsection is unknown to 1.x.
        ("2.0.0", "1.0.0", unknown("1.0")),
        ("2.0.0", "1.1.0", unknown("1.1")),
        ("3.0.0", "1.0.0", unknown("1.0")),
        ("3.0.0", "1.1.0", unknown("1.1")),
        // 2.0 knows `uart/fifo`, but only version 1, which 3.0 no longer writes.
        (
            "3.0.0",
            "2.0.0",
            "cannot save for release 2.0.0 (machine demo-2.0): this state needs subsection \
             'uart/fifo' of 'uart' (its `needed` is true), and the release reads 'uart/fifo' at \
             version 1, and this build writes versions 2 to 2 only (min_version was raised past \
             1)"
            .to_string(),
        ),
    ];
    for (from, to, expected) in cases {
        let err = suite.save_for("busy", &v(from), &v(to)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("section 0 'uart' instance 0: "), "{msg}");
        assert!(msg.contains(&expected), "{from} -> {to}: {msg}");
    }
}

#[test]
fn extra_counters_are_kept_for_2_0_and_left_out_for_1_x() {
    // A 3.0 machine with extra counters and an empty FIFO.
    let machine = || {
        let mut m = r3_0::Machine::idle();
        m.pit.extra = EXTRA.to_vec();
        m.registry()
    };
    let map = r3_0::release_map();
    let suite = evolving::suite();
    let save = |to: &str| {
        let mut out = Vec::new();
        save_for_release(
            &mut machine(),
            &mut out,
            map.stream_config(),
            map.find(to).unwrap(),
        )
        .unwrap();
        out
    };
    let mut reg = suite.load_bytes(&save("2.0"), &v("2.0.0")).unwrap();
    equals(in_2_0(FCR, &[], &EXTRA), r2_0::Machine::from_registry)(&mut reg).unwrap();
    // 1.x never had them: `pit` is written at version 1, without `nextra` and `extra`.
    let mut reg = suite.load_bytes(&save("1.1"), &v("1.1.0")).unwrap();
    equals(in_1_1(0, FCR), r1_1::Machine::from_registry)(&mut reg).unwrap();
    let mut reg = suite.load_bytes(&save("1.0"), &v("1.0.0")).unwrap();
    equals(in_1_0(0), r1_0::Machine::from_registry)(&mut reg).unwrap();
}

/// Plain save with no vmdesc trailer (the trailer describes struct nesting, which the
/// 3.0 `intc` split changes without changing a byte of the sections).
fn plain(reg: &mut Registry, machine: &str) -> Vec<u8> {
    let mut config = StreamConfig::new(machine);
    config.send_vmdesc = false;
    config.integrity_record = false;
    let mut out = Vec::new();
    save_snapshot(reg, &mut out, config).unwrap();
    out
}

#[test]
fn a_stream_saved_for_an_older_release_is_what_that_release_writes() {
    let map = r3_0::release_map();
    let for_release = |reg: &mut Registry, to: &str| {
        let mut config = map.stream_config();
        config.send_vmdesc = false;
        config.integrity_record = false;
        let mut out = Vec::new();
        save_for_release(reg, &mut out, config, map.find(to).unwrap()).unwrap();
        out
    };
    let mut r1_0_zero = r1_0::Machine::idle();
    r1_0_zero.uart.scratch = 0;
    let mut r1_1_zero = r1_1::Machine::idle();
    r1_1_zero.uart.scratch = 0;
    assert_eq!(
        for_release(&mut r3_0::Machine::idle().registry(), "2.0"),
        plain(&mut r2_0::Machine::idle().registry(), r2_0::MACHINE)
    );
    assert_eq!(
        for_release(&mut r3_0::Machine::idle().registry(), "1.1"),
        plain(&mut r1_1_zero.registry(), r1_1::MACHINE)
    );
    assert_eq!(
        for_release(&mut r3_0::Machine::idle().registry(), "1.0"),
        plain(&mut r1_0_zero.registry(), r1_0::MACHINE)
    );
    // 1.1 for 1.0 keeps `scratch`.
    let map = r1_1::release_map();
    let mut out = Vec::new();
    let mut config = map.stream_config();
    config.send_vmdesc = false;
    config.integrity_record = false;
    save_for_release(
        &mut r1_1::Machine::idle().registry(),
        &mut out,
        config,
        map.find("1.0").unwrap(),
    )
    .unwrap();
    assert_eq!(
        out,
        plain(&mut r1_0::Machine::idle().registry(), r1_0::MACHINE)
    );
}

#[test]
fn a_retired_field_reads_as_zero_in_the_old_release() {
    let suite = evolving::suite();
    let bytes = suite.save_for("idle", &v("2.0.0"), &v("1.1.0")).unwrap();
    // A 1.1 destination whose `scratch` was not zero before the load.
    let mut dst = r1_1::Machine::default();
    dst.uart.scratch = 0xffff_ffff;
    let mut reg = dst.registry();
    let map = r1_1::release_map();
    let loaded = vmstate::release::load_for_release(
        &map,
        &mut reg,
        &mut Reader::from_slice(&bytes),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.written_by.machine(), "demo-1.1");
    equals(in_1_1(0, FCR), r1_1::Machine::from_registry)(&mut reg).unwrap();
}

#[test]
fn the_harness_reports_drifted_fixtures_and_wrong_expectations() {
    use vmstate_tools::compat::Suite;

    // A copy of the fixtures with one byte of a golden stream changed.
    let tmp = std::env::temp_dir().join(format!("vmstate-evolving-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for entry in std::fs::read_dir(evolving::fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.join(path.file_name().unwrap())).unwrap();
    }
    let drifted = tmp.join("idle-2.0.0.mig");
    let mut bytes = std::fs::read(&drifted).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&drifted, bytes).unwrap();
    let suite = Suite::new(&tmp)
        .blessing(false)
        .subject(r1_0::subject())
        .subject(r1_1::subject())
        .subject(r2_0::subject())
        .subject(r3_0::subject());
    let failures = suite.check_fixtures().unwrap_err();
    std::fs::remove_dir_all(&tmp).unwrap();
    assert_eq!(failures.0.len(), 1, "{failures}");
    assert!(
        failures.0[0].ends_with(
            "idle-2.0.0.mig: regenerated file differs from the kept one at byte 20 (1196 bytes \
             kept, 1196 regenerated)"
        ),
        "{failures}"
    );
    assert!(failures.to_string().contains("VMSTATE_BLESS=1"));

    // Expecting every cell to load: the 12 refusals are reported.
    let report = evolving::suite().matrix(|_| Expect::loads(|_| Ok(())));
    assert_eq!(report.failures().count(), 12, "{report}");
    // A wrong value is reported too.
    let report = evolving::suite().matrix(|cell| match release_matrix_cell(cell) {
        Expect::Loads(_) if cell.loaded_by.major == 1 => {
            loads_1_0(in_1_0(SCRATCH + 1)) // 1.1 cells fail to read as 1.0 machines, too
        }
        other => other,
    });
    assert_eq!(report.failures().count(), 3, "{report}");
}

#[test]
fn golden_streams_of_releases_whose_code_is_gone_stay_in_the_matrix() {
    use vmstate_tools::compat::Suite;

    // A later project that kept 1.x's streams and schemas but dropped its code.
    let suite = Suite::new(evolving::fixtures_dir())
        .blessing(false)
        .archived(v("1.0.0"), &["idle"])
        .archived(v("1.1.0"), &["idle"])
        .subject(r2_0::subject())
        .subject(r3_0::subject());
    suite.check_fixtures().unwrap();
    let report = suite.matrix(release_matrix_cell);
    let cells: Vec<String> = report.cells.iter().map(|c| c.cell.to_string()).collect();
    assert_eq!(cells.len(), 6 * 2);
    assert_eq!(cells[0], "idle-1.0.0 loaded by 2.0.0");
    assert_eq!(cells[3], "idle-1.1.0 loaded by 3.0.0");
    report.assert_ok();
}

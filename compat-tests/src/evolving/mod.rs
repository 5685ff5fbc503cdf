//! "demo", a small emulator whose devices evolve over four releases, each release kept
//! as its own module so that all of them build in one test binary.
//!
//! | release | machine | change |
//! | --- | --- | --- |
//! | [1.0](r1_0) | `demo-1.0` | `uart` v1 (`lcr`, `lsr`, `divisor`, `scratch`), `pit` v1 (`mode`, `counters[2]`), `intc` v1 (`imr`, `irr`, `isr`, `elcr`, `base`) |
//! | [1.1](r1_1) | `demo-1.1` | `uart` v2, min 1: field `fcr` added with `since = 2` |
//! | [2.0](r2_0) | `demo-2.0` | `uart`: `scratch` retired as `unused = 4` (no version change); subsection `uart/fifo` v1 added, sent only when the FIFO holds data; `pit` v2, min 1: the counter array grows past its two fixed counters with a count field (`nextra`, `since = 2`) and a `Vec` counted by it |
//! | [3.0](r3_0) | `demo-3.0` | `uart/fifo` v2, **min 2**: FIFO entries widened to 16 bits (data + error flags), old FIFO state refused; `intc` renamed `Pic` in Rust and split into two nested structs (`pic-regs`, `pic-config`), wire name and bytes unchanged |
//!
//! Each module has its devices, its [`Release`] (declared from the device
//! descriptions, next to them), the [`ReleaseMap`](vmstate::release::ReleaseMap) it
//! knows (older releases from their schema files, compiled in, as a real emulator
//! would embed them), a `Machine` with the state of every device, and its
//! [`Subject`](vmstate_tools::compat::Subject) for the harness.
//!
//! The fixtures are in `fixtures/evolving/`: `schema-<version>.json` per release and the
//! golden streams `<golden>-<version>.mig` ("idle": registers only; "busy": with the
//! optional state, FIFO data and extra counters, from 2.0 on). Every golden machine
//! holds the same register values ([`values`]), so that what each release loads can be
//! written down from the rules alone.

pub mod r1_0;
pub mod r1_1;
pub mod r2_0;
pub mod r3_0;

use std::path::PathBuf;

use vmstate::release::{Release, Version};
use vmstate_tools::compat::Suite;

/// The register values every golden machine holds.
pub mod values {
    /// `uart.lcr`: 8 data bits, no parity, 1 stop bit.
    pub const LCR: u8 = 0x03;
    /// `uart.lsr`: transmitter empty.
    pub const LSR: u8 = 0x60;
    /// `uart.divisor`: 9600 baud.
    pub const DIVISOR: u16 = 12;
    /// `uart.scratch` (1.0 and 1.1 only).
    pub const SCRATCH: u32 = 0x5a5a_5a5a;
    /// `uart.fcr` (from 1.1).
    pub const FCR: u8 = 0xc1;
    /// The FIFO contents of the "busy" machines: `h`, `i`.
    pub const FIFO: [u8; 2] = *b"hi";
    /// The FIFO contents of the 3.0 "busy" machine: `h`, and `i` with an error flag.
    pub const FIFO_3_0: [u16; 2] = [0x0068, 0x0169];
    /// `pit.mode`.
    pub const MODE: u8 = 0x34;
    /// `pit.counters`.
    pub const COUNTERS: [u16; 2] = [0x1234, 0xabcd];
    /// `pit.extra` of the "busy" machines (from 2.0).
    pub const EXTRA: [u16; 3] = [0x0111, 0x0222, 0x0333];
    /// `intc.imr`.
    pub const IMR: u8 = 0xfb;
    /// `intc.irr`.
    pub const IRR: u8 = 0x01;
    /// `intc.isr`.
    pub const ISR: u8 = 0x04;
    /// `intc.elcr`.
    pub const ELCR: u8 = 0x0c;
    /// `intc.base`.
    pub const BASE: u8 = 0x08;
}

/// `fixtures/evolving/`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/evolving")
}

/// The schema files kept with each release, compiled in.
static SCHEMAS: [(Version, &str); 4] = [
    (
        r1_0::VERSION,
        include_str!("../../fixtures/evolving/schema-1.0.0.json"),
    ),
    (
        r1_1::VERSION,
        include_str!("../../fixtures/evolving/schema-1.1.0.json"),
    ),
    (
        r2_0::VERSION,
        include_str!("../../fixtures/evolving/schema-2.0.0.json"),
    ),
    (
        r3_0::VERSION,
        include_str!("../../fixtures/evolving/schema-3.0.0.json"),
    ),
];

/// A past release as a later one knows it: from the schema file kept with it.
pub fn kept_release(version: &Version) -> Release {
    let (_, text) = SCHEMAS
        .iter()
        .find(|(v, _)| v == version)
        .unwrap_or_else(|| panic!("no schema file for release {version}"));
    Release::from_schema_str(version.clone(), text)
        .unwrap_or_else(|e| panic!("schema file of release {version}: {e}"))
}

/// The harness over all four releases and `fixtures/evolving/`.
pub fn suite() -> Suite {
    Suite::new(fixtures_dir())
        .subject(r1_0::subject())
        .subject(r1_1::subject())
        .subject(r2_0::subject())
        .subject(r3_0::subject())
}

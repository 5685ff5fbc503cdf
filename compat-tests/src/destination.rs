//! Destinations for the real QEMU 10.0.2 streams: registries with RAM blocks and the
//! devices modelled in [`crate::qemu10`], registered under QEMU's idstrs.

use std::sync::Arc;

use serde_json::Value;
use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler, RamStats};
use vmstate::{Registration, Registry, SectionHandle};

use crate::fixture::hex;
use crate::qemu10::{
    fw_cfg::FwCfg, globalstate::GlobalState, hpet::Hpet, i8254::I8254, i8259::I8259,
    ioapic::IoApic, mc146818rtc::Mc146818Rtc, port92::Port92, timer::CpuTimers,
};

/// RAM blocks named and sized as `analyze-migration.py` reports them in `analyze`.
pub fn ram_blocks(analyze: &Value) -> Vec<Arc<RamBlock>> {
    analyze["ram (1)"]["section sizes"]
        .as_object()
        .expect("the analyze JSON has the RAM block sizes")
        .iter()
        .map(|(name, size)| Arc::new(RamBlock::new(name, hex(size)).expect("a RAM block")))
        .collect()
}

/// A `pc` destination: RAM and the foundation devices.
pub struct Pc {
    /// The registry to load into.
    pub reg: Registry,
    /// Its RAM blocks.
    pub ram: Vec<Arc<RamBlock>>,
    /// The devices' handles by QEMU idstr (`i8259.0`, `i8259.1` for the two PICs).
    pub handles: Vec<(&'static str, SectionHandle)>,
    /// The RAM handler's counters.
    pub ram_stats: Arc<RamStats>,
}

impl Pc {
    /// The handle of the device registered as `name`.
    pub fn handle(&self, name: &str) -> SectionHandle {
        self.handles
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no device {name}"))
            .1
    }
}

fn add<D: vmstate::Device + 'static>(reg: &mut Registry, dev: D) -> SectionHandle {
    reg.register_device(dev, Registration::new())
        .expect("a fresh idstr")
}

/// A destination for a `pc` stream whose RAM is described by `analyze` (its
/// `analyze-migration.py` decoding).
pub fn pc(analyze: &Value) -> Pc {
    let mut reg = Registry::new();
    let ram = ram_blocks(analyze);
    let handler = RamHandler::new(ram.clone()).expect("RAM blocks");
    let ram_stats = handler.stats();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .expect("a fresh idstr");
    let handles = vec![
        ("timer", add(&mut reg, CpuTimers::default())),
        ("fw_cfg", add(&mut reg, FwCfg::default())),
        ("mc146818rtc", add(&mut reg, Mc146818Rtc::default())),
        ("i8259.0", add(&mut reg, I8259::default())),
        ("i8259.1", add(&mut reg, I8259::default())),
        ("ioapic", add(&mut reg, IoApic::default())),
        ("hpet", add(&mut reg, Hpet::default())),
        ("i8254", add(&mut reg, I8254::default())),
        ("port92", add(&mut reg, Port92::default())),
        ("globalstate", add(&mut reg, GlobalState::default())),
    ];
    Pc {
        reg,
        ram,
        handles,
        ram_stats,
    }
}

/// A destination for a `none` stream: RAM without blocks, `timer` and `globalstate`.
pub fn none() -> Registry {
    let mut reg = Registry::new();
    reg.register_iterative(
        "ram",
        RAM_VERSION,
        RamHandler::from_blocks(vec![]).expect("no blocks"),
        Registration::new(),
    )
    .expect("a fresh idstr");
    add(&mut reg, CpuTimers::default());
    add(&mut reg, GlobalState::default());
    reg
}

/// QEMU's `-M none -m SIZE` machine: one RAM block `ram` of `ram_bytes`, `timer` and
/// `globalstate`; returns the registry and the block (to fill it on a source or check
/// it on a destination).
pub fn none_with_ram(ram_bytes: u64) -> (Registry, Arc<RamBlock>) {
    let (reg, ram, _) = none_with_handler(ram_bytes, |h| h);
    (reg, ram)
}

/// [`none_with_ram`] whose RAM handler sends with XBZRLE and a cache of `cache_bytes`;
/// also returns the handler's counters.
pub fn none_with_xbzrle(
    ram_bytes: u64,
    cache_bytes: u64,
) -> (Registry, Arc<RamBlock>, Arc<RamStats>) {
    none_with_handler(ram_bytes, |h| h.with_xbzrle(cache_bytes))
}

/// [`none_with_ram`] whose RAM handler `configure` sets up (XBZRLE, a multifd flush
/// hook, ...); also returns the handler's counters.
pub fn none_with_handler(
    ram_bytes: u64,
    configure: impl FnOnce(RamHandler) -> RamHandler,
) -> (Registry, Arc<RamBlock>, Arc<RamStats>) {
    let mut reg = Registry::new();
    let ram = Arc::new(RamBlock::new("ram", ram_bytes).expect("a RAM block"));
    let handler = configure(RamHandler::new(vec![ram.clone()]).expect("one block"));
    let stats = handler.stats();
    reg.register_iterative("ram", RAM_VERSION, handler, Registration::new())
        .expect("a fresh idstr");
    add(&mut reg, CpuTimers::default());
    let mut gs = GlobalState::default();
    gs.set_runstate("running");
    add(&mut reg, gs);
    (reg, ram, stats)
}

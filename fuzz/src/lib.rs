//! What the fuzz targets share: a device with every field kind the derive supports, and
//! the registry the stream loader is fuzzed with.

use std::sync::Arc;

use vmstate::ram::{RAM_VERSION, RamBlock, RamHandler};
use vmstate::{Registration, Registry, Timer, Tmp, VmState};

/// Every field kind: integers, bool, f64, timer, `since`, `exists`, unused bytes,
/// arrays, counted arrays, `equal`, buffers, counted buffers, a validation, nested
/// structs, arrays of them, a qtailq, a gtree, an array of pointers (one absent), a
/// temporary, and a subsection.
#[derive(VmState, Default)]
#[vmstate(name = "dev", version = 3, min_version = 1, post_load = Self::post_load)]
pub struct Dev {
    a8: u8,
    a16: u16,
    a32: u32,
    a64: u64,
    s64: i64,
    flag: bool,
    ratio: f64,
    timer: Timer,
    #[vmstate(since = 2)]
    added: u32,
    #[vmstate(exists = Self::has_extra)]
    extra: u16,
    #[vmstate(unused = 4)]
    _gap: (),
    regs: [u32; 4],
    count: u8,
    #[vmstate(len = count)]
    fifo: Vec<u8>,
    nqueues: u32,
    #[vmstate(len = nqueues)]
    queues: Vec<Queue>,
    #[vmstate(equal)]
    nports: u32,
    #[vmstate(buffer)]
    mac: [u8; 6],
    blob_len: u32,
    #[vmstate(buffer, len = blob_len)]
    blob: Vec<u8>,
    #[vmstate(validate = Self::queues_fit, rename = "queues fit")]
    _queues_fit: (),
    inner: Queue,
    inners: [Queue; 2],
    #[vmstate(qtailq)]
    pending: std::collections::VecDeque<Queue>,
    #[vmstate(gtree)]
    by_id: std::collections::BTreeMap<u64, Queue>,
    #[vmstate(array_of_pointer)]
    slots: [Option<Box<Queue>>; 3],
    #[vmstate(to_tmp = Self::to_tmp, from_tmp = Self::apply_tmp)]
    tmp: Tmp<DevTmp>,
    #[vmstate(subsection, needed = Self::has_poll)]
    poll: DevPoll,
}

/// A nested struct.
#[derive(VmState, Default)]
#[vmstate(name = "dev/queue")]
pub struct Queue {
    head: u16,
    tail: u16,
}

/// A temporary.
#[derive(VmState, Default)]
#[vmstate(name = "dev/tmp", version = 0)]
pub struct DevTmp {
    sum: u32,
}

/// A subsection.
#[derive(VmState, Default)]
#[vmstate(name = "dev/poll", version = 2, min_version = 1)]
pub struct DevPoll {
    interval: u64,
    #[vmstate(since = 2)]
    jitter: u32,
}

impl Dev {
    /// The device the targets load into: its pointer array has an absent element
    /// between two present ones, so both ways of reading an element are fuzzed.
    pub fn new() -> Self {
        Dev {
            slots: [Some(Box::default()), None, Some(Box::default())],
            ..Default::default()
        }
    }
    fn to_tmp(&self) -> DevTmp {
        DevTmp {
            sum: self.a32.wrapping_add(u32::from(self.a16)),
        }
    }
    fn apply_tmp(&mut self, t: DevTmp) -> Result<(), String> {
        if t.sum == u32::MAX {
            return Err("sum out of range".into());
        }
        Ok(())
    }
    fn has_extra(&self, version: u32) -> bool {
        version >= 3 && self.flag
    }
    fn queues_fit(&self, _version: u32) -> bool {
        self.queues.len() <= 64
    }
    fn has_poll(&self) -> bool {
        self.poll.interval != 0
    }
    fn post_load(&mut self, _version: u32) -> Result<(), String> {
        if self.fifo.len() > 16 {
            return Err("fifo longer than 16".into());
        }
        Ok(())
    }
}

/// A machine to load streams into: two RAM blocks of 16 pages and 3 pages, the
/// all-kinds device, and two instances of a small one.
pub fn machine() -> Registry {
    machine_with(false)
}

/// [`machine`], its RAM in QEMU's mapped-ram layout when `mapped_ram`.
pub fn machine_with(mapped_ram: bool) -> Registry {
    let blocks = vec![
        Arc::new(RamBlock::new("pc.ram", 16 * 4096).unwrap()),
        Arc::new(RamBlock::new("vga.vram", 3 * 4096).unwrap()),
    ];
    let mut reg = Registry::new();
    let mut ram = RamHandler::new(blocks).unwrap();
    if mapped_ram {
        ram = ram.with_mapped_ram();
    }
    reg.register_iterative("ram", RAM_VERSION, ram, Registration::new())
        .unwrap();
    reg.register_device(Dev::new(), Registration::new())
        .unwrap();
    reg.register_device(Queue::default(), Registration::new())
        .unwrap();
    reg.register_device(Queue::default(), Registration::new())
        .unwrap();
    reg
}

//! Every container and field attribute, and every supported field type, in one place.

use vmstate::{Timer, VmState};

#[derive(VmState, Default)]
#[vmstate(
    name = "dev",
    version = 3,
    min_version = 2,
    pre_save = Self::pre_save,
    post_save = Self::post_save,
    pre_load = Self::pre_load,
    post_load = Self::post_load,
    needed = Self::is_needed
)]
struct Dev {
    a8: u8,
    a16: u16,
    a32: u32,
    a64: u64,
    s8: i8,
    s16: i16,
    s32: i32,
    s64: i64,
    flag: bool,
    ratio: f64,
    timer: Timer,
    #[vmstate(since = 2)]
    added: u32,
    #[vmstate(exists = Self::has_extra)]
    extra: u16,
    #[vmstate(skip)]
    runtime_only: String,
    #[vmstate(unused = 4)]
    _gap: (),
    #[vmstate(unused = 2, since = 3)]
    _gap_v3: (),
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
    #[vmstate(skip)]
    nregs: u16,
    #[vmstate(len = nregs)]
    counted_regs: Vec<u16>,
    #[vmstate(rename = "irq-level")]
    irq_level: u8,
    inner: Queue,
    inners: [Queue; 2],
    #[vmstate(subsection, needed = Self::has_poll)]
    poll: DevPoll,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev/queue")]
struct Queue {
    head: u16,
    tail: u16,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev/poll", version = 1)]
struct DevPoll(u64);

#[derive(Debug)]
struct DevError;

impl std::fmt::Display for DevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("device error")
    }
}

impl std::error::Error for DevError {}

impl Dev {
    fn pre_save(&mut self) -> Result<(), DevError> {
        Ok(())
    }
    fn post_save(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn pre_load(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
    fn post_load(&mut self, _version: u32) -> Result<(), vmstate::HookError> {
        Ok(())
    }
    fn is_needed(&self) -> bool {
        true
    }
    fn has_extra(&self, version: u32) -> bool {
        version >= 3
    }
    fn has_poll(&self) -> bool {
        self.poll.0 != 0
    }
    fn queues_fit(&self, _version: u32) -> bool {
        self.nqueues <= 8
    }
}

fn main() {
    let mut dev = Dev {
        count: 2,
        fifo: vec![1, 2],
        nqueues: 1,
        queues: vec![Queue::default()],
        poll: DevPoll(5),
        blob_len: 3,
        blob: b"abc".to_vec(),
        nregs: 2,
        counted_regs: vec![7, 8],
        ..Default::default()
    };
    let bytes = dev.to_bytes().unwrap();
    let mut back = Dev {
        nregs: 2,
        ..Default::default()
    };
    back.load_bytes(&bytes, 3).unwrap();
    assert_eq!(back.fifo, [1, 2]);
    assert_eq!(back.blob, b"abc");
    assert_eq!(back.counted_regs, [7, 8]);
    assert_eq!(back.poll.0, 5);
}

//! Load-time checks: a `validate` predicate (QEMU's `VMSTATE_VALIDATE`) and `equal`
//! fields, which keep their fields out of the fixed-size runs.

use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "hpet", version = 2, min_version = 1)]
struct Hpet {
    config: u64,
    #[vmstate(equal)]
    num_timers: u8,
    #[vmstate(validate = Self::num_timers_match, rename = "num_timers must match")]
    _num_timers_match: (),
    #[vmstate(since = 2, equal)]
    rtc_irq: u32,
    counter: u64,
}

impl Hpet {
    fn num_timers_match(&self, _version: u32) -> bool {
        self.num_timers <= 32
    }
}

fn main() {
    let mut hpet = Hpet {
        num_timers: 3,
        ..Default::default()
    };
    let bytes = hpet.to_bytes().unwrap();
    let mut back = Hpet {
        num_timers: 3,
        ..Default::default()
    };
    back.load_bytes(&bytes, 2).unwrap();
}

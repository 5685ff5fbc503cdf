//! Fixed-size runs: scalars, arrays, a byte buffer, `unused` and `since` fields share
//! one run; a large byte array stands alone between two runs; a nested struct whose
//! bytes never vary gets the raw `VmElem` items.

use vmstate::{Timer, VmState};

#[derive(VmState)]
#[vmstate(name = "pic", version = 2)]
struct Pic {
    imr: u8,
    isr: u8,
    regs: [u32; 4],
    #[vmstate(buffer)]
    mac: [u8; 6],
    #[vmstate(unused = 3)]
    _pad: (),
    #[vmstate(since = 2)]
    elcr: u8,
    ram: [u8; 128],
    timer: Timer,
    chans: [Channel; 2],
    #[vmstate(skip)]
    irq_raised: bool,
}

#[derive(VmState, Default)]
#[vmstate(name = "pic/channel")]
struct Channel {
    count: u16,
    mode: u8,
    #[vmstate(rename = "gate-level")]
    gate: bool,
}

impl Pic {
    fn new(imr: u8) -> Self {
        Pic {
            imr,
            isr: 0,
            regs: [0; 4],
            mac: [0; 6],
            _pad: (),
            elcr: 0,
            ram: [0; 128],
            timer: Timer::default(),
            chans: Default::default(),
            irq_raised: false,
        }
    }
}

fn main() {
    let bytes = Pic::new(0xff).to_bytes().unwrap();
    let mut back = Pic::new(0);
    back.load_bytes(&bytes, 2).unwrap();
    assert_eq!(back.imr, 0xff);
}

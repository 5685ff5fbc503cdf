//! Subsections: two optional parts with types of their own, each sent when its
//! `needed` predicate says so, and found by name on load.

use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "e1000")]
struct E1000 {
    mac_reg: [u32; 8],
    #[vmstate(subsection, needed = Self::has_tso)]
    tso: E1000Tso,
    #[vmstate(subsection, needed = Self::has_full_mac)]
    full_mac: E1000FullMac,
}

#[derive(VmState, Default)]
#[vmstate(name = "e1000/tx_tso_state", version = 2)]
struct E1000Tso {
    ipcss: u8,
    paylen: u32,
}

#[derive(VmState, Default)]
#[vmstate(name = "e1000/full_mac_state")]
struct E1000FullMac(u8);

impl E1000 {
    fn has_tso(&self) -> bool {
        self.tso.paylen != 0
    }
    fn has_full_mac(&self) -> bool {
        self.full_mac.0 != 0
    }
}

fn main() {
    let mut dev = E1000 {
        tso: E1000Tso {
            ipcss: 1,
            paylen: 64,
        },
        ..Default::default()
    };
    let bytes = dev.to_bytes().unwrap();
    let mut back = E1000::default();
    back.load_bytes(&bytes, 1).unwrap();
    assert_eq!(back.tso.paylen, 64);
}

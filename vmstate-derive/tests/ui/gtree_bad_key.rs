use std::collections::BTreeMap;

use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "val")]
struct Val {
    x: u8,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(gtree)]
    by_name: BTreeMap<String, Val>,
}

fn main() {}

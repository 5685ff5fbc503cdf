use vmstate::{Tmp, VmState};

#[derive(VmState, Default)]
#[vmstate(name = "dev/tmp", version = 0)]
struct DevTmp {
    x: u32,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(to_tmp = Self::to_tmp, from_tmp = Self::apply_tmp)]
    tmp: Tmp<DevTmp>,
}

impl Dev {
    fn to_tmp(&self) -> DevTmp {
        DevTmp { x: 1 }
    }
    /// Takes the temporary by reference and returns nothing.
    fn apply_tmp(&mut self, _: &DevTmp) {}
}

fn main() {}

use vmstate::{Tmp, VmState};

#[derive(VmState, Default)]
#[vmstate(name = "dev/tmp", version = 0)]
struct DevTmp {
    x: u32,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev", version = 2)]
struct Dev {
    #[vmstate(to_tmp = Self::to_tmp, from_tmp = Self::apply_tmp, since = 2)]
    tmp: Tmp<DevTmp>,
}

impl Dev {
    fn to_tmp(&self) -> DevTmp {
        DevTmp { x: 1 }
    }
    fn apply_tmp(&mut self, _: DevTmp) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}

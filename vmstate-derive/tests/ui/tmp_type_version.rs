use vmstate::{Tmp, VmState};

/// Version 1 (the default) with min_version 1: QEMU would load it at version 0.
#[derive(VmState, Default)]
#[vmstate(name = "dev/tmp")]
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
    fn apply_tmp(&mut self, _: DevTmp) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}

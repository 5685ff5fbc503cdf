use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(subsection, needed = Self::always)]
    first: DevSub,
    #[vmstate(subsection, needed = Self::always)]
    second: DevSub,
}

#[derive(VmState)]
#[vmstate(name = "dev/sub")]
struct DevSub {
    x: u8,
}

impl Dev {
    fn always(&self) -> bool {
        true
    }
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2)]
struct Dev {
    a: u8,
    #[vmstate(since = 2, exists = Self::has_b)]
    b: u8,
}

impl Dev {
    fn has_b(&self, version: u32) -> bool {
        version >= 2
    }
}

fn main() {}

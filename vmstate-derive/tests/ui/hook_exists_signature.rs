use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(exists = Self::has_b)]
    b: u8,
}

impl Dev {
    // Missing the version: an exists predicate is `fn(&Self, u32) -> bool`.
    fn has_b(&self) -> bool {
        true
    }
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(needed = Self::has_b)]
    b: u8,
}

impl Dev {
    fn has_b(&self) -> bool {
        self.b != 0
    }
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(subsection, needed = Self::always)]
    extra: Extra,
}

// Not derived: a subsection needs its own description.
#[derive(Default)]
struct Extra {
    x: u8,
}

impl Dev {
    fn always(&self) -> bool {
        true
    }
}

fn main() {}

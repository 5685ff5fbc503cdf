use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(subsection, needed = Self::has_extra)]
    extra: DevExtra,
}

#[derive(VmState)]
#[vmstate(name = "dev/extra")]
struct DevExtra {
    b: u8,
}

impl Dev {
    // Takes the version: a needed predicate is `fn(&Self) -> bool`.
    fn has_extra(&self, _version: u32) -> bool {
        true
    }
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    a: u8,
    #[vmstate(subsection)]
    extra: DevExtra,
}

#[derive(VmState)]
#[vmstate(name = "dev/extra")]
struct DevExtra {
    b: u8,
}

fn main() {}

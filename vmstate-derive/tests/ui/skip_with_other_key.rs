use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2)]
struct Dev {
    a: u8,
    #[vmstate(skip, since = 2)]
    b: u8,
}

fn main() {}

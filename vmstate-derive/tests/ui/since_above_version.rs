use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2)]
struct Dev {
    a: u8,
    #[vmstate(since = 3)]
    b: u8,
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2, version = 3)]
struct Dev {
    #[vmstate(since = 2)]
    #[vmstate(since = 2)]
    a: u8,
}

fn main() {}

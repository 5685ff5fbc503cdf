use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2, min_version = 3)]
struct Dev {
    a: u8,
}

fn main() {}

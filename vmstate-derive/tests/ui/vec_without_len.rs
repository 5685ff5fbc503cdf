use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    count: u8,
    data: Vec<u8>,
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(len = count)]
    data: Vec<u8>,
    count: u8,
}

fn main() {}

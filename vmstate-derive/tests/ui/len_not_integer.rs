use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    count: u64,
    #[vmstate(len = count)]
    data: Vec<u8>,
}

fn main() {}

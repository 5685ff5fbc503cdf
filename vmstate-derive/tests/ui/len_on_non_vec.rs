use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    count: u8,
    #[vmstate(len = count)]
    data: [u8; 4],
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(equal)]
    ids: [u32; 2],
}

fn main() {}

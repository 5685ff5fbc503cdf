use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(qtailq)]
    items: [u8; 4],
}

fn main() {}

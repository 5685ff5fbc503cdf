use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "mode")]
enum Mode {
    Off,
    On(u8),
}

fn main() {}

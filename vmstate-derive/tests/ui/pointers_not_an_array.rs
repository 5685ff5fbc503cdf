use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(array_of_pointer)]
    slot: Option<u32>,
}

fn main() {}

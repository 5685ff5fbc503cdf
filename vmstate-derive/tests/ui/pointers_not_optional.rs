use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(array_of_pointer)]
    slots: [u32; 4],
}

fn main() {}

use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    n: u32,
    #[vmstate(array_of_pointer, equal)]
    slots: [Option<u32>; 4],
}

fn main() {}

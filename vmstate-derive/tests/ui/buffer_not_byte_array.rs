use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    #[vmstate(buffer)]
    regs: [u16; 8],
}

fn main() {}

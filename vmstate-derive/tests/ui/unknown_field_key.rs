use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2)]
struct Dev {
    // Both keys are reported, not just the first.
    #[vmstate(sinse = 2, lenght = a)]
    a: u8,
    // A container attribute on a field.
    #[vmstate(version = 2)]
    b: u8,
}

fn main() {}

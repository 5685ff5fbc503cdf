use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", verison = 2)]
struct Dev {
    a: u8,
}

// A field attribute on the struct.
#[derive(VmState)]
#[vmstate(name = "dev2", since = 2)]
struct Dev2 {
    a: u8,
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev<T> {
    a: T,
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    size: u8,
    // QEMU reads a VBUFFER's size as an int32: the count must be a u32 or i32.
    #[vmstate(buffer, len = size)]
    data: Vec<u8>,
}

fn main() {}

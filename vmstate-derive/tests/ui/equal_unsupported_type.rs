use vmstate::VmState;

type Count = u32;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    // QEMU has no `int64 equal` for signed 64-bit values (its "int64 equal" is the u64).
    #[vmstate(equal)]
    base: i64,
    // Matched as written: an alias of u32 is not recognised.
    #[vmstate(equal)]
    n: Count,
}

fn main() {}

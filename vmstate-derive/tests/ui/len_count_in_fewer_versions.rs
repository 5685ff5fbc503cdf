use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2, min_version = 1)]
struct Dev {
    #[vmstate(since = 2)]
    n: u8,
    // In a version 1 stream `n` is not sent, so the Vec would be read with a stale count.
    #[vmstate(len = n)]
    data: Vec<u8>,
}

#[derive(VmState)]
#[vmstate(name = "other")]
struct Other {
    #[vmstate(exists = Self::has_n)]
    n: u8,
    #[vmstate(len = n)]
    data: Vec<u8>,
}

impl Other {
    fn has_n(&self, _version: u32) -> bool {
        true
    }
}

fn main() {}

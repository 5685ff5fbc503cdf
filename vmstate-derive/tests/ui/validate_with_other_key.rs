use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", version = 2)]
struct Dev {
    n: u8,
    #[vmstate(validate = Self::n_ok, since = 2, equal)]
    _n_ok: (),
}

impl Dev {
    fn n_ok(&self, _version: u32) -> bool {
        self.n < 4
    }
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev")]
struct Dev {
    n: u8,
    #[vmstate(validate = Self::n_ok, rename = "n in range")]
    _n_ok: (),
}

impl Dev {
    // Missing the version: a validate check is `fn(&Self, u32) -> bool`.
    fn n_ok(&self) -> bool {
        self.n < 4
    }
}

fn main() {}

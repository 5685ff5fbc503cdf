use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", pre_save = Self::sync)]
struct Dev {
    a: u8,
}

impl Dev {
    // Takes `&self` and returns nothing: a pre_save hook is `fn(&mut Self) -> Result<(), E>`.
    fn sync(&self) {}
}

fn main() {}

use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "dev", post_load = Self::restore)]
struct Dev {
    a: u8,
}

impl Dev {
    // Missing the version: a post_load hook is `fn(&mut Self, u32) -> Result<(), E>`.
    fn restore(&mut self) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}

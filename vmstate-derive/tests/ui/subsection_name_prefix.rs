use vmstate::VmState;

#[derive(VmState)]
#[vmstate(name = "serial")]
struct Serial {
    lsr: u8,
    // Named "poll": it does not start with "serial".
    #[vmstate(subsection, needed = Self::has_poll)]
    poll: SerialPoll,
    // Named "serial": QEMU's loader never takes a subsection named like its parent.
    #[vmstate(subsection, needed = Self::has_poll)]
    same: SameName,
}

#[derive(VmState)]
#[vmstate(name = "poll")]
struct SerialPoll {
    interval_ns: u64,
}

#[derive(VmState)]
#[vmstate(name = "serial")]
struct SameName {
    x: u8,
}

impl Serial {
    fn has_poll(&self) -> bool {
        self.poll.interval_ns != 0
    }
}

fn main() {}

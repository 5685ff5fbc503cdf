use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "el")]
struct El {
    x: u8,
}

#[derive(VmState, Default)]
#[vmstate(name = "dev")]
struct Dev {
    n: u8,
    #[vmstate(qtailq, len = n)]
    items: Vec<El>,
    #[vmstate(qlist, qtailq)]
    more: Vec<El>,
}

fn main() {}

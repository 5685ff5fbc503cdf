//! Variable-size data: a counted byte buffer (`buffer, len`), counted arrays (`len`)
//! of bytes and of structs, one counted by a local `skip` field.

use vmstate::VmState;

#[derive(VmState, Default)]
#[vmstate(name = "virtio-net", version = 2, min_version = 1)]
struct Net {
    mac_len: u8,
    #[vmstate(len = mac_len)]
    macs: Vec<u8>,
    config_len: u32,
    #[vmstate(buffer, len = config_len)]
    config: Vec<u8>,
    #[vmstate(skip)]
    num_queues: u16,
    #[vmstate(len = num_queues, since = 2)]
    queues: Vec<Queue>,
}

#[derive(VmState, Default)]
#[vmstate(name = "virtio-net/queue")]
struct Queue {
    head: u16,
    tail: u16,
}

fn main() {
    let mut net = Net {
        mac_len: 2,
        macs: vec![1, 2],
        config_len: 3,
        config: b"cfg".to_vec(),
        num_queues: 1,
        queues: vec![Queue { head: 1, tail: 2 }],
    };
    let bytes = net.to_bytes().unwrap();
    let mut back = Net {
        num_queues: 1,
        ..Default::default()
    };
    back.load_bytes(&bytes, 2).unwrap();
    assert_eq!(back.config, b"cfg");
    assert_eq!(back.queues[0].tail, 2);
}

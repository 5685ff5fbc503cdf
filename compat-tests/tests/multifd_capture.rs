//! A real QEMU 10.0.2 multifd migration, captured channel by channel
//! (`fixtures/qemu-10.0.2-multifd/README.md`): every packet of both channels reads,
//! re-encodes to exactly QEMU's bytes, and the pages they carry are the guest's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vmstate::multifd::packet::{Handshake, RamPacket, ram_packet_len};

const PAGE: usize = 4096;

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/qemu-10.0.2-multifd");
    std::fs::read(dir.join(name)).unwrap()
}

/// The channel's handshake and its packets with their page data.
fn read_channel(bytes: &[u8]) -> (Handshake, Vec<(RamPacket, Vec<u8>)>) {
    let handshake = Handshake::decode(bytes[..64].try_into().unwrap()).unwrap();
    let mut packets = Vec::new();
    let mut at = 64;
    while at < bytes.len() {
        let header = &bytes[at..at + ram_packet_len(PAGE)];
        let packet = RamPacket::decode(header, PAGE).unwrap();
        // Byte for byte what QEMU wrote, unused slots included.
        let mut again = Vec::new();
        packet.encode(PAGE, &mut again);
        assert_eq!(again, header, "packet {} re-encodes", packet.packet_num);
        at += header.len();
        let data = bytes[at..at + packet.next_packet_size as usize].to_vec();
        at += data.len();
        packets.push((packet, data));
    }
    assert_eq!(at, bytes.len());
    (handshake, packets)
}

#[test]
fn qemus_multifd_channels_read_and_re_encode_exactly() {
    let blob = fixture("blob.bin");
    let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut zero = 0;
    let mut numbers = Vec::new();
    for (file, id) in [("channel0.bin", 0), ("channel1.bin", 1)] {
        let (handshake, packets) = read_channel(&fixture(file));
        assert_eq!(handshake.id, id);
        assert_eq!(handshake.uuid, [0; 16], "-M none has no UUID");
        assert!(
            packets[0].0.is_sync(),
            "each channel opens with a SYNC packet"
        );
        for (p, data) in packets {
            numbers.push(p.packet_num);
            if p.is_sync() {
                assert_eq!((p.pages_alloc, p.normal.len(), p.zero.len()), (0, 0, 0));
                continue;
            }
            assert_eq!(p.block, "ram");
            assert_eq!(p.pages_alloc, 128);
            assert_eq!(data.len(), p.normal.len() * PAGE);
            for (off, page) in p.normal.iter().zip(data.chunks_exact(PAGE)) {
                pages.insert(*off, page.to_vec());
            }
            zero += p.zero.len();
        }
    }
    // 4 MiB of RAM: the loader's 16 KiB at 1 MiB as four normal pages, the rest zero.
    assert_eq!(
        pages.keys().copied().collect::<Vec<_>>(),
        [0x100000, 0x101000, 0x102000, 0x103000]
    );
    let carried: Vec<u8> = pages.into_values().flatten().collect();
    assert_eq!(carried, blob);
    assert_eq!(zero, 1024 - 4);
    // Packet numbers count across the channels, each used once.
    numbers.sort_unstable();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
}

#[test]
fn the_main_channel_of_a_multifd_migration_loads_with_flushes_and_no_pages() {
    let (mut reg, ram) = compat_tests::destination::none_with_ram(4 << 20);
    let bytes = fixture("main.mig");
    let report = vmstate::stream::load_stream(
        &mut reg,
        &mut vmstate::Reader::from_slice(&bytes),
        &vmstate::stream::LoadOptions::default(),
    )
    .unwrap();
    assert!(report.bytes > 0);
    let mut b = vec![0u8; 4096];
    ram.read(0x100000, &mut b);
    assert!(
        b.iter().all(|&x| x == 0),
        "the pages travel on the other channels"
    );
}

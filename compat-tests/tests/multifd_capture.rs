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

/// QEMU 10's zstd and zlib multifd migrations, captured channel by channel
/// (`fixtures/qemu-10.0.2-multifd-compressed`), loaded as a destination loads them:
/// the main channel with its flush records, each waiting for the channels' SYNCs, and
/// the channels' compressed pages decompressed into the RAM block: the random and the
/// text blob arrive, everything else is zero.
#[test]
fn qemus_compressed_multifd_channels_load_into_ram() {
    use std::io::Cursor;
    use std::sync::Arc;
    use vmstate::multifd::recv::MultifdReceiver;
    for method in ["zstd", "zlib"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let file = |name: &str| {
            std::fs::read(dir.join("qemu-10.0.2-multifd-compressed").join(name)).unwrap()
        };
        let channels = vec![
            Cursor::new(file(&format!("{method}/channel0.bin"))),
            Cursor::new(file(&format!("{method}/channel1.bin"))),
        ];
        let ram = Arc::new(vmstate::ram::RamBlock::new("ram", 4 << 20).unwrap());
        let rx = MultifdReceiver::start(vec![ram.clone()], channels);
        let hook = rx.flush_hook();
        let (mut reg, main_ram, _) =
            compat_tests::destination::none_with_handler(4 << 20, |h| h.with_multifd_flush(hook));
        vmstate::stream::load_stream(
            &mut reg,
            &mut vmstate::Reader::from_slice(&file(&format!("{method}/main.mig"))),
            &vmstate::stream::LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        let stats = rx.finish().unwrap_or_else(|e| panic!("{method}: {e}"));
        assert!(stats.iter().any(|c| c.compressed_bytes > 0), "{stats:?}");
        let normal: u64 = stats.iter().map(|c| c.normal_pages).sum();
        assert_eq!(normal, 8, "{method}");
        let read = |at: u64| {
            let mut b = vec![0u8; 16384];
            ram.read(at, &mut b);
            b
        };
        assert_eq!(read(0x100000), fixture("blob.bin"), "{method}");
        assert_eq!(read(0x200000), file("text.bin"), "{method}");
        let mut all = vec![0u8; 4 << 20];
        ram.read(0, &mut all);
        let nonzero = all
            .chunks(4096)
            .filter(|p| p.iter().any(|&b| b != 0))
            .count();
        assert_eq!(nonzero, 8, "{method}");
        drop(main_ram);
    }
}

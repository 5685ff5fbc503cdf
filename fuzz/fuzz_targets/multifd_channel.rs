//! A multifd channel read by the destination's receiver, pages placed into two small
//! blocks: either the input's bytes as they are, or a well-formed zlib or zstd channel
//! built from the input (its pages compressed as QEMU does, one stream for the
//! channel, flushed per packet) with bytes of the compressed data overwritten from
//! the input's end, so that the decompressors see damaged streams. Every input must
//! end in pages placed or an error, never a panic, hang or out-of-block write.
#![no_main]

use std::io::{Cursor, Write};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmstate::multifd::packet::{FLAG_SYNC, FLAG_ZLIB, FLAG_ZSTD, Handshake, RamPacket};
use vmstate::multifd::recv::MultifdReceiver;
use vmstate::ram::{GuestRam, RamBlock};

const PAGE: usize = 4096;

/// A channel whose packets carry `body`'s pages (up to 3 per packet) at offsets taken
/// from `body`, compressed with `flag`'s method; then `damage` (offset, byte pairs)
/// is written over it.
fn compressed_channel(flag: u32, body: &[u8], damage: &[u8]) -> Vec<u8> {
    let mut out = Handshake { uuid: [0; 16], id: 0 }.encode().to_vec();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    for (n, chunk) in body.chunks(3 * 64).enumerate().take(8) {
        // Each 64 input bytes make a page: the first byte its index, the rest its data.
        let pages: Vec<(u64, Vec<u8>)> = chunk
            .chunks(64)
            .map(|c| {
                let page: Vec<u8> = c.iter().copied().cycle().take(PAGE).collect();
                ((c[0] % 24) as u64 * PAGE as u64, page)
            })
            .collect();
        let plain: Vec<u8> = pages.iter().flat_map(|(_, p)| p.clone()).collect();
        let data = if flag == FLAG_ZLIB {
            zlib.write_all(&plain).unwrap();
            zlib.flush().unwrap();
            std::mem::take(zlib.get_mut())
        } else {
            zstd.write_all(&plain).unwrap();
            zstd.flush().unwrap();
            std::mem::take(zstd.get_mut())
        };
        let p = RamPacket {
            flags: flag,
            pages_alloc: 128,
            next_packet_size: data.len() as u32,
            packet_num: n as u64,
            block: if n % 2 == 0 { "pc.ram" } else { "vram" }.into(),
            normal: pages.iter().map(|(off, _)| *off).collect(),
            zero: Vec::new(),
        };
        p.encode(PAGE, &mut out);
        out.extend(data);
        RamPacket {
            flags: FLAG_SYNC,
            packet_num: n as u64,
            ..Default::default()
        }
        .encode(PAGE, &mut out);
    }
    for d in damage.chunks_exact(3) {
        let at = u16::from_le_bytes([d[0], d[1]]) as usize;
        if let Some(b) = out.get_mut(at) {
            *b = d[2];
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let channel = match mode % 3 {
        0 => rest.to_vec(),
        m => {
            let (body, damage) = rest.split_at(rest.len() - rest.len().min(12));
            let flag = if m == 1 { FLAG_ZLIB } else { FLAG_ZSTD };
            compressed_channel(flag, body, damage)
        }
    };
    let blocks: Vec<Arc<dyn GuestRam>> = vec![
        Arc::new(RamBlock::new("pc.ram", 16 * PAGE as u64).unwrap()),
        Arc::new(RamBlock::new("vram", 8 * PAGE as u64).unwrap()),
    ];
    let rx = MultifdReceiver::start(blocks, vec![Cursor::new(channel)]);
    let flush = rx.flush_hook();
    for _ in 0..16 {
        if flush().is_err() {
            break;
        }
    }
    let _ = rx.finish();
});

//! Multifd channel bytes: a handshake, RAM packets and device-state headers read from
//! any input; whatever reads must encode and read back to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate::multifd::packet::{
    DEVICE_STATE_HEADER_LEN, DeviceStatePacket, HANDSHAKE_LEN, Handshake, RamPacket,
    packet_flags, ram_packet_len,
};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..HANDSHAKE_LEN) {
        let _ = Handshake::decode(h.try_into().unwrap());
    }
    if let Some(h) = data.get(..12) {
        let _ = packet_flags(h.try_into().unwrap());
    }
    for page_size in [4096, 65536] {
        if let Some(bytes) = data.get(..ram_packet_len(page_size)) {
            if let Ok(p) = RamPacket::decode(bytes, page_size) {
                let mut out = Vec::new();
                p.encode(page_size, &mut out);
                assert_eq!(RamPacket::decode(&out, page_size).unwrap(), p);
            }
        }
    }
    if let Some(bytes) = data.get(..DEVICE_STATE_HEADER_LEN) {
        if let Ok(p) = DeviceStatePacket::decode(bytes) {
            let mut out = Vec::new();
            p.encode(&mut out);
            assert_eq!(DeviceStatePacket::decode(&out).unwrap(), p);
        }
    }
});

//! The bytes of a multifd channel (QEMU's `migration/multifd.h`; spec, "Multifd"): the
//! 64-byte handshake that opens it, then packets, each a header and the page data it
//! announces.
//!
//! A RAM packet is 320 bytes of header (magic, version, flags, the page counts, the
//! packet number, the RAM block's name) and then **every** offset slot the packet has
//! room for, 128 for 4 KiB pages, used or not: that is what QEMU 10 sends and reads
//! (`compat-tests/fixtures/qemu-10.0.2-multifd/README.md`; the spec reads as if only the
//! used offsets followed). The normal pages' offsets come first, then the zero pages'.
//! A SYNC packet is a RAM packet with the `SYNC` flag and no pages. A device-state
//! packet (QEMU 10, `DEVICE_STATE` flag) has its own 276-byte header.
//!
//! Everything read here is checked before it is trusted: magic and version, counts
//! against the room the packet has, names, offsets against the page size; the caller
//! checks offsets against its blocks and `next_packet_size` against what it will read.

use crate::error::{Error, Result};

/// First be32 of a handshake and of every packet.
pub const MAGIC: u32 = 0x1122_3344;
/// The multifd version QEMU 10 speaks.
pub const VERSION: u32 = 1;
/// Bytes of the handshake (`MultiFDInit_t`).
pub const HANDSHAKE_LEN: usize = 64;
/// Bytes of a RAM packet before its offset slots (`MultiFDPacket_t`).
pub const RAM_HEADER_LEN: usize = 320;
/// Bytes of a device-state packet's header (`MultiFDPacketDeviceState_t`).
pub const DEVICE_STATE_HEADER_LEN: usize = 276;
/// Bytes of page data a RAM packet carries at most (QEMU's `MULTIFD_PACKET_SIZE`).
pub const PACKET_DATA_BYTES: usize = 512 << 10;
/// Bytes of a RAM block name field.
const NAME_LEN: usize = 256;

/// Flag: this packet ends a sync (the receiver waits for it from every channel).
pub const FLAG_SYNC: u32 = 1 << 0;
/// The compression bits of the flags.
pub const FLAG_COMPRESSION_MASK: u32 = 0x1f << 1;
/// Compression: zlib.
pub const FLAG_ZLIB: u32 = 1 << 1;
/// Compression: zstd.
pub const FLAG_ZSTD: u32 = 2 << 1;
/// Compression: Intel QPL (not supported here).
pub const FLAG_QPL: u32 = 4 << 1;
/// Compression: UADK (not supported here).
pub const FLAG_UADK: u32 = 8 << 1;
/// Compression: QATzip (not supported here).
pub const FLAG_QATZIP: u32 = 16 << 1;
/// Flag: a device-state packet, not a RAM packet.
pub const FLAG_DEVICE_STATE: u32 = 32 << 1;

/// Offset slots in a RAM packet for pages of `page_size` bytes (128 for 4 KiB).
pub fn pages_per_packet(page_size: usize) -> usize {
    (PACKET_DATA_BYTES / page_size).max(1)
}

/// Bytes of a RAM packet before its page data, for pages of `page_size` bytes.
pub fn ram_packet_len(page_size: usize) -> usize {
    RAM_HEADER_LEN + 8 * pages_per_packet(page_size)
}

/// The handshake that opens a multifd channel (`MultiFDInit_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handshake {
    /// The source VM's UUID (zero when it has none).
    pub uuid: [u8; 16],
    /// The channel's number, 0 to channels - 1.
    pub id: u8,
}

impl Handshake {
    /// The 64 bytes on the wire.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&VERSION.to_be_bytes());
        out[8..24].copy_from_slice(&self.uuid);
        out[24] = self.id;
        out
    }

    /// Reads a handshake; refuses another magic or version.
    pub fn decode(bytes: &[u8; HANDSHAKE_LEN]) -> Result<Handshake> {
        check_magic_version(bytes, "multifd handshake")?;
        Ok(Handshake {
            uuid: bytes[8..24].try_into().expect("16 bytes"),
            id: bytes[24],
        })
    }
}

/// A RAM packet's header and offsets (`MultiFDPacket_t`); a SYNC packet is one with
/// [`FLAG_SYNC`] and no pages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RamPacket {
    /// Flags: [`FLAG_SYNC`], a compression method.
    pub flags: u32,
    /// Offset slots the sender allocated (128 for 4 KiB pages; 0 in QEMU's SYNC
    /// packets).
    pub pages_alloc: u32,
    /// Bytes of page data after this header (compressed size when compressed).
    pub next_packet_size: u32,
    /// The packet's number, counted across all channels.
    pub packet_num: u64,
    /// The RAM block the offsets are in (empty in a packet without pages).
    pub block: String,
    /// Offsets of the pages whose data follows, in order.
    pub normal: Vec<u64>,
    /// Offsets of pages that are zero.
    pub zero: Vec<u64>,
}

impl RamPacket {
    /// Appends the packet's header and all `pages_per_packet(page_size)` offset slots.
    ///
    /// Panics if there are more offsets than slots or the block name does not fit
    /// (the sender builds packets; a peer's bytes go through [`decode`](Self::decode)).
    pub fn encode(&self, page_size: usize, out: &mut Vec<u8>) {
        let slots = pages_per_packet(page_size);
        assert!(
            self.normal.len() + self.zero.len() <= slots,
            "offsets fit the packet"
        );
        assert!(
            self.block.len() < NAME_LEN,
            "the block name fits with its NUL"
        );
        let start = out.len();
        put_be32(out, MAGIC);
        put_be32(out, VERSION);
        put_be32(out, self.flags);
        put_be32(out, self.pages_alloc);
        put_be32(out, self.normal.len() as u32);
        put_be32(out, self.next_packet_size);
        out.extend(self.packet_num.to_be_bytes());
        put_be32(out, self.zero.len() as u32);
        out.resize(out.len() + 4 + 24, 0); // reserved
        let name = out.len();
        out.resize(name + NAME_LEN, 0);
        out[name..name + self.block.len()].copy_from_slice(self.block.as_bytes());
        for off in self.normal.iter().chain(&self.zero) {
            out.extend(off.to_be_bytes());
        }
        out.resize(start + ram_packet_len(page_size), 0);
    }

    /// Reads a RAM packet of exactly `ram_packet_len(page_size)` bytes. Refuses a
    /// wrong magic or version, a device-state packet, more slots than the packet has,
    /// more offsets than slots, a block name without its NUL or not UTF-8, and an
    /// offset that is not page-aligned.
    pub fn decode(bytes: &[u8], page_size: usize) -> Result<RamPacket> {
        const WHAT: &str = "multifd RAM packet";
        let slots = pages_per_packet(page_size);
        if bytes.len() != ram_packet_len(page_size) {
            return Err(Error::invalid(
                WHAT,
                format!(
                    "{} bytes, expected {} for {page_size}-byte pages",
                    bytes.len(),
                    ram_packet_len(page_size)
                ),
            ));
        }
        check_magic_version(bytes, WHAT)?;
        let flags = be32(bytes, 8);
        if flags & FLAG_DEVICE_STATE != 0 {
            return Err(Error::invalid(
                WHAT,
                "a device-state packet where RAM was expected",
            ));
        }
        let pages_alloc = be32(bytes, 12);
        let normal = be32(bytes, 16) as usize;
        let next_packet_size = be32(bytes, 20);
        let packet_num = u64::from_be_bytes(bytes[24..32].try_into().expect("8 bytes"));
        let zero = be32(bytes, 32) as usize;
        if pages_alloc as usize > slots {
            return Err(Error::invalid(
                WHAT,
                format!("packet {packet_num}: {pages_alloc} page slots, at most {slots} here"),
            ));
        }
        // QEMU's rule: the pages fit the slots the sender allocated.
        if normal.saturating_add(zero) > pages_alloc as usize {
            return Err(Error::invalid(
                WHAT,
                format!(
                    "packet {packet_num}: {normal} normal and {zero} zero pages in {pages_alloc} slots"
                ),
            ));
        }
        let block = name(&bytes[64..64 + NAME_LEN])
            .map_err(|e| Error::invalid(WHAT, format!("packet {packet_num}: block name {e}")))?;
        let mut offsets = bytes[RAM_HEADER_LEN..]
            .chunks_exact(8)
            .take(normal + zero)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")));
        let normal_offsets: Vec<u64> = offsets.by_ref().take(normal).collect();
        let zero_offsets: Vec<u64> = offsets.collect();
        if let Some(bad) = normal_offsets
            .iter()
            .chain(&zero_offsets)
            .find(|&&o| o % page_size as u64 != 0)
        {
            return Err(Error::invalid(
                WHAT,
                format!("packet {packet_num}: offset 0x{bad:x} is not page-aligned"),
            ));
        }
        Ok(RamPacket {
            flags,
            pages_alloc,
            next_packet_size,
            packet_num,
            block,
            normal: normal_offsets,
            zero: zero_offsets,
        })
    }

    /// True for a packet that ends a sync.
    pub fn is_sync(&self) -> bool {
        self.flags & FLAG_SYNC != 0
    }
}

/// A device-state packet's header (`MultiFDPacketDeviceState_t`, QEMU 10): a device's
/// saved state travelling on a multifd channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStatePacket {
    /// Flags ([`FLAG_DEVICE_STATE`] and possibly [`FLAG_SYNC`]).
    pub flags: u32,
    /// The device's idstr.
    pub idstr: String,
    /// Its instance id.
    pub instance_id: u32,
    /// Bytes of state after this header.
    pub next_packet_size: u32,
}

impl DeviceStatePacket {
    /// Appends the 276-byte header.
    ///
    /// Panics if the idstr does not fit.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.idstr.len() < NAME_LEN, "the idstr fits with its NUL");
        put_be32(out, MAGIC);
        put_be32(out, VERSION);
        put_be32(out, self.flags | FLAG_DEVICE_STATE);
        let name = out.len();
        out.resize(name + NAME_LEN, 0);
        out[name..name + self.idstr.len()].copy_from_slice(self.idstr.as_bytes());
        put_be32(out, self.instance_id);
        put_be32(out, self.next_packet_size);
    }

    /// Reads a device-state header of exactly 276 bytes.
    pub fn decode(bytes: &[u8]) -> Result<DeviceStatePacket> {
        const WHAT: &str = "multifd device-state packet";
        if bytes.len() != DEVICE_STATE_HEADER_LEN {
            return Err(Error::invalid(
                WHAT,
                format!("{} bytes, expected {DEVICE_STATE_HEADER_LEN}", bytes.len()),
            ));
        }
        check_magic_version(bytes, WHAT)?;
        let flags = be32(bytes, 8);
        if flags & FLAG_DEVICE_STATE == 0 {
            return Err(Error::invalid(WHAT, "the DEVICE_STATE flag is not set"));
        }
        Ok(DeviceStatePacket {
            flags,
            idstr: name(&bytes[12..12 + NAME_LEN])
                .map_err(|e| Error::invalid(WHAT, format!("idstr {e}")))?,
            instance_id: be32(bytes, 12 + NAME_LEN),
            next_packet_size: be32(bytes, 16 + NAME_LEN),
        })
    }
}

/// The flags of a packet from its first 12 bytes (magic and version checked), to tell
/// a RAM packet from a device-state one before reading the rest.
pub fn packet_flags(header: &[u8; 12]) -> Result<u32> {
    check_magic_version(header, "multifd packet")?;
    Ok(be32(header, 8))
}

fn check_magic_version(bytes: &[u8], what: &'static str) -> Result<()> {
    let (magic, version) = (be32(bytes, 0), be32(bytes, 4));
    if magic != MAGIC {
        return Err(Error::invalid(
            what,
            format!("magic 0x{magic:08x}, expected 0x{MAGIC:08x}"),
        ));
    }
    if version != VERSION {
        return Err(Error::invalid(
            what,
            format!("version {version}; QEMU 10's multifd is version {VERSION}"),
        ));
    }
    Ok(())
}

/// A NUL-terminated name field.
fn name(field: &[u8]) -> std::result::Result<String, &'static str> {
    let len = field
        .iter()
        .position(|&b| b == 0)
        .ok_or("has no terminating NUL")?;
    String::from_utf8(field[..len].to_vec()).map_err(|_| "is not UTF-8")
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn put_be32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ram_packet_round_trips_with_all_its_slots() {
        let p = RamPacket {
            flags: FLAG_ZSTD,
            pages_alloc: 128,
            next_packet_size: 1234,
            packet_num: 77,
            block: "pc.ram".into(),
            normal: vec![0x1000, 0x5000],
            zero: vec![0x2000],
        };
        let mut out = Vec::new();
        p.encode(4096, &mut out);
        assert_eq!(out.len(), 1344);
        assert_eq!(
            &out[320..344],
            [
                0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0, 0x20, 0
            ]
        );
        assert_eq!(RamPacket::decode(&out, 4096).unwrap(), p);
    }

    #[test]
    fn hostile_packets_are_refused_by_what_is_wrong() {
        let mut good = Vec::new();
        RamPacket {
            pages_alloc: 128,
            block: "ram".into(),
            normal: vec![0],
            ..Default::default()
        }
        .encode(4096, &mut good);
        let cases: [(usize, &[u8], &str); 6] = [
            (0, &[0x11, 0x22, 0x33, 0x45], "magic 0x11223345"),
            (4, &[0, 0, 0, 2], "version 2"),
            (12, &[0, 0, 0, 129], "129 page slots"),
            (32, &[0, 0, 0, 128], "1 normal and 128 zero pages"),
            (
                320,
                &[0, 0, 0, 0, 0, 0, 0x10, 1],
                "offset 0x1001 is not page-aligned",
            ),
            (8, &[0, 0, 0, 64], "device-state packet"),
        ];
        for (at, bytes, expected) in cases {
            let mut bad = good.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            let err = RamPacket::decode(&bad, 4096).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let mut unterminated = good.clone();
        unterminated[64..320].fill(b'a');
        assert!(
            RamPacket::decode(&unterminated, 4096)
                .unwrap_err()
                .to_string()
                .contains("no terminating NUL")
        );
        assert!(RamPacket::decode(&good[..100], 4096).is_err());
    }

    #[test]
    fn handshake_and_device_state_round_trip() {
        let h = Handshake {
            uuid: [7; 16],
            id: 3,
        };
        assert_eq!(Handshake::decode(&h.encode()).unwrap(), h);
        let d = DeviceStatePacket {
            flags: FLAG_DEVICE_STATE,
            idstr: "0000:00:02.0/vfio".into(),
            instance_id: 0,
            next_packet_size: 4096,
        };
        let mut out = Vec::new();
        d.encode(&mut out);
        assert_eq!(out.len(), DEVICE_STATE_HEADER_LEN);
        assert_eq!(DeviceStatePacket::decode(&out).unwrap(), d);
        assert_eq!(
            packet_flags(out[..12].try_into().unwrap()).unwrap(),
            FLAG_DEVICE_STATE
        );
    }
}

//! QEMU's return path: the messages the destination sends back to the source on the
//! same connection (`migration/migration.h` `MIG_RP_MSG_*`, spec 1.8).
//!
//! Each message is a be16 type, a be16 payload length and the payload. The source
//! opens the path with the `OPEN_RETURN_PATH` command and checks it with `PING`; the
//! destination answers `PONG`, may send `SWITCHOVER_ACK`, and ends with `SHUT` carrying
//! its status (0: loaded, will run the guest; 1: failed).
//!
//! ```
//! use vmstate::migrate::return_path::{Message, read_message, write_message};
//! let mut wire = Vec::new();
//! write_message(&mut wire, &Message::Pong(1)).unwrap();
//! write_message(&mut wire, &Message::Shut { failed: false }).unwrap();
//! assert_eq!(wire, [0, 2, 0, 4, 0, 0, 0, 1, 0, 1, 0, 4, 0, 0, 0, 0]);
//! let mut r = &wire[..];
//! assert_eq!(read_message(&mut r).unwrap(), Some(Message::Pong(1)));
//! assert_eq!(read_message(&mut r).unwrap(), Some(Message::Shut { failed: false }));
//! assert_eq!(read_message(&mut r).unwrap(), None);
//! ```

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

/// `MIG_RP_MSG_SHUT`: the destination is done; be32 status.
pub const MSG_SHUT: u16 = 1;
/// `MIG_RP_MSG_PONG`: answer to a PING; be32 value.
pub const MSG_PONG: u16 = 2;
/// `MIG_RP_MSG_REQ_PAGES_ID`: postcopy page request naming the RAM block.
pub const MSG_REQ_PAGES_ID: u16 = 3;
/// `MIG_RP_MSG_REQ_PAGES`: postcopy page request in the last block named.
pub const MSG_REQ_PAGES: u16 = 4;
/// `MIG_RP_MSG_RECV_BITMAP`: postcopy recovery bitmap.
pub const MSG_RECV_BITMAP: u16 = 5;
/// `MIG_RP_MSG_RESUME_ACK`: postcopy recovery acknowledgement; be32 value.
pub const MSG_RESUME_ACK: u16 = 6;
/// `MIG_RP_MSG_SWITCHOVER_ACK`: the destination is ready for the switchover.
pub const MSG_SWITCHOVER_ACK: u16 = 7;

/// QEMU's source reads return-path payloads into a 512-byte buffer and refuses longer
/// ones.
pub const MAX_PAYLOAD: u16 = 512;

/// A return-path message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The destination is done: `failed == false` means it loaded the whole stream and
    /// runs the guest (QEMU writes status 0), `true` that the load failed (status 1).
    Shut {
        /// Whether the destination failed.
        failed: bool,
    },
    /// Answer to `PING(value)`.
    Pong(u32),
    /// Every device that asked for it is ready: the source may switch over (QEMU's
    /// `switchover-ack` capability).
    SwitchoverAck,
    /// Postcopy: send `len` bytes of RAM block `block` from byte `start` on, first.
    ReqPagesId {
        /// The RAM block (QEMU's idstr).
        block: String,
        /// Byte offset in the block.
        start: u64,
        /// Bytes asked for.
        len: u32,
    },
    /// Postcopy: as [`ReqPagesId`](Self::ReqPagesId), in the block the last one named.
    ReqPages {
        /// Byte offset in the block.
        start: u64,
        /// Bytes asked for.
        len: u32,
    },
    /// A message this side does not act on (postcopy recovery), kept
    /// with its type and payload.
    Other {
        /// The message type.
        kind: u16,
        /// The payload.
        payload: Vec<u8>,
    },
}

/// QEMU's fixed payload length of each message type (`None`: variable).
fn fixed_len(kind: u16) -> Option<Option<u16>> {
    Some(match kind {
        MSG_SHUT | MSG_PONG | MSG_RESUME_ACK => Some(4),
        MSG_REQ_PAGES => Some(12),
        MSG_SWITCHOVER_ACK => Some(0),
        MSG_REQ_PAGES_ID | MSG_RECV_BITMAP => None,
        _ => return None,
    })
}

/// Writes one message and flushes it (QEMU flushes every return-path message).
pub fn write_message(w: &mut dyn Write, msg: &Message) -> io::Result<()> {
    let (kind, payload): (u16, Vec<u8>) = match msg {
        Message::Shut { failed } => (MSG_SHUT, u32::from(*failed).to_be_bytes().to_vec()),
        Message::Pong(v) => (MSG_PONG, v.to_be_bytes().to_vec()),
        Message::SwitchoverAck => (MSG_SWITCHOVER_ACK, Vec::new()),
        Message::ReqPagesId { block, start, len } => {
            let name = block.as_bytes();
            let name_len = u8::try_from(name.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block name too long"))?;
            let mut p = Vec::with_capacity(13 + name.len());
            p.extend(start.to_be_bytes());
            p.extend(len.to_be_bytes());
            p.push(name_len);
            p.extend(name);
            (MSG_REQ_PAGES_ID, p)
        }
        Message::ReqPages { start, len } => {
            let mut p = Vec::with_capacity(12);
            p.extend(start.to_be_bytes());
            p.extend(len.to_be_bytes());
            (MSG_REQ_PAGES, p)
        }
        Message::Other { kind, payload } => (*kind, payload.clone()),
    };
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload too long"))?;
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend(kind.to_be_bytes());
    bytes.extend(len.to_be_bytes());
    bytes.extend(payload);
    w.write_all(&bytes)?;
    w.flush()
}

/// Reads one message; `Ok(None)` when the connection ends cleanly between messages.
/// Unknown types, lengths that differ from QEMU's fixed ones and payloads longer than
/// [`MAX_PAYLOAD`] are errors, as in QEMU's `source_return_path_thread`.
pub fn read_message(r: &mut dyn Read) -> Result<Option<Message>> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(Error::malformed(
                    "the return path ended inside a message header",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A timeout inside a message: the rest is on its way; what was read stays.
            Err(e) if got > 0 && crate::transport::is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = u16::from_be_bytes([head[2], head[3]]);
    let Some(fixed) = fixed_len(kind) else {
        return Err(Error::invalid(
            "return-path message",
            format!("unknown type {kind} (length {len})"),
        ));
    };
    if fixed.is_some_and(|f| f != len) || len > MAX_PAYLOAD {
        return Err(Error::invalid(
            "return-path message",
            format!("type {kind} with length {len}, expected {fixed:?}"),
        ));
    }
    let mut payload = vec![0u8; usize::from(len)];
    let mut got = 0;
    while got < payload.len() {
        match r.read(&mut payload[got..]) {
            Ok(0) => return Err(Error::malformed("the return path ended inside a message")),
            Ok(n) => got += n,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted || crate::transport::is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let be32 = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    Ok(Some(match kind {
        MSG_SHUT => Message::Shut {
            failed: be32(&payload) != 0,
        },
        MSG_PONG => Message::Pong(be32(&payload)),
        MSG_SWITCHOVER_ACK => Message::SwitchoverAck,
        MSG_REQ_PAGES => Message::ReqPages {
            start: u64::from_be_bytes(payload[..8].try_into().expect("8 bytes")),
            len: be32(&payload[8..]),
        },
        MSG_REQ_PAGES_ID => {
            // be64 start, be32 len, u8 name length, name: exactly, as QEMU checks.
            let bad = |why: &str| Error::invalid("REQ_PAGES_ID", why.to_string());
            if payload.len() < 13 {
                return Err(bad("shorter than its fixed part (13 bytes)"));
            }
            let name_len = usize::from(payload[12]);
            if payload.len() != 13 + name_len {
                return Err(bad("the block name does not end the message"));
            }
            Message::ReqPagesId {
                block: String::from_utf8_lossy(&payload[13..]).into_owned(),
                start: u64::from_be_bytes(payload[..8].try_into().expect("8 bytes")),
                len: be32(&payload[8..]),
            }
        }
        _ => Message::Other { kind, payload },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_qemu_refuses() {
        for bad in [
            &[0u8, 0, 0, 0][..], // INVALID
            &[0, 8, 0, 0],       // unknown type
            &[0, 1, 0, 2, 0, 0], // SHUT with 2 bytes
            &[0, 7, 0, 1, 0],    // SWITCHOVER_ACK with a payload
            &[0, 3, 0x02, 0x01], // REQ_PAGES_ID longer than 512
            &[0, 2, 0, 4, 0, 0], // PONG cut short
            &[0, 2],             // header cut short
        ] {
            assert!(read_message(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_requests_round_trip_in_qemus_layout() {
        let mut wire = Vec::new();
        let id = Message::ReqPagesId {
            block: "pc.ram".into(),
            start: 0x2000,
            len: 0x1000,
        };
        write_message(&mut wire, &id).unwrap();
        let plain = Message::ReqPages {
            start: 0x3000,
            len: 0x1000,
        };
        write_message(&mut wire, &plain).unwrap();
        // Written out by hand from QEMU's migrate_send_rp_req_pages.
        let mut expected = vec![0, 3, 0, 19];
        expected.extend([0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0, 6]);
        expected.extend(b"pc.ram");
        expected.extend([0, 4, 0, 12, 0, 0, 0, 0, 0, 0, 0x30, 0, 0, 0, 0x10, 0]);
        assert_eq!(wire, expected);
        let mut r = &wire[..];
        assert_eq!(read_message(&mut r).unwrap(), Some(id));
        assert_eq!(read_message(&mut r).unwrap(), Some(plain));
        // A name length that does not match the payload.
        let mut bad = expected[..23].to_vec();
        bad[16] = 7;
        assert!(read_message(&mut &bad[..]).is_err());
    }

    #[test]
    fn shut_status_is_any_non_zero() {
        let m = read_message(&mut &[0u8, 1, 0, 4, 0, 0, 0, 7][..]).unwrap();
        assert_eq!(m, Some(Message::Shut { failed: true }));
    }
}

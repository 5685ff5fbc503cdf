//! The record-level constants of QEMU's stream format (migration/savevm.h).

/// `"QEVM"`, the first four bytes.
pub const MAGIC: u32 = 0x5145_564d;
/// The only stream format version in use.
pub const VERSION: u32 = 3;
/// The obsolete format version 2.
pub const VERSION_COMPAT: u32 = 2;

/// End of the device sections.
pub const EOF: u8 = 0x00;
/// First section of an iterative handler.
pub const SECTION_START: u8 = 0x01;
/// A middle section of an iterative handler.
pub const SECTION_PART: u8 = 0x02;
/// The last section of an iterative handler.
pub const SECTION_END: u8 = 0x03;
/// The whole state of a device.
pub const SECTION_FULL: u8 = 0x04;
/// The JSON description trailer.
pub const VMDESCRIPTION: u8 = 0x06;
/// The configuration section, right after the header.
pub const CONFIGURATION: u8 = 0x07;
/// A command.
pub const COMMAND: u8 = 0x08;
/// The footer after each section payload.
pub const SECTION_FOOTER: u8 = 0x7e;

/// QEMU's `MIG_CMD_OPEN_RETURN_PATH`: the destination opens its return path.
pub const CMD_OPEN_RETURN_PATH: u16 = 1;
/// QEMU's `MIG_CMD_PING`: a be32 value the destination answers with PONG.
pub const CMD_PING: u16 = 2;
/// QEMU's `MIG_CMD_POSTCOPY_ADVISE`: postcopy may follow (page sizes, 0 or 16 bytes).
pub const CMD_POSTCOPY_ADVISE: u16 = 3;
/// QEMU's `MIG_CMD_POSTCOPY_LISTEN`: the destination takes pages on demand from now on.
pub const CMD_POSTCOPY_LISTEN: u16 = 4;
/// QEMU's `MIG_CMD_POSTCOPY_RUN`: the destination starts the guest.
pub const CMD_POSTCOPY_RUN: u16 = 5;
/// QEMU's `MIG_CMD_POSTCOPY_RAM_DISCARD`: page ranges the destination must drop.
pub const CMD_POSTCOPY_RAM_DISCARD: u16 = 6;
/// QEMU's `QEMU_VM_PING_PACKAGED_LOADED`: a PING value inside the postcopy package in
/// later QEMU releases (QEMU 10.0.2 does not send it; destinations answer it as any PING).
pub const PING_PACKAGED_LOADED: u32 = 0x42;
/// QEMU's `MIG_CMD_PACKAGED`: a be32 length, then that many bytes of records.
pub const CMD_PACKAGED: u16 = 7;
/// QEMU's `MIG_CMD_SWITCHOVER_START`.
pub const CMD_SWITCHOVER_START: u16 = 11;

/// QEMU's command names and fixed payload lengths (`None` = variable), indexed by
/// command number.
pub const COMMANDS: [(&str, Option<u16>); 12] = [
    ("INVALID", None),
    ("OPEN_RETURN_PATH", Some(0)),
    ("PING", Some(4)),
    ("POSTCOPY_ADVISE", None),
    ("POSTCOPY_LISTEN", Some(0)),
    ("POSTCOPY_RUN", Some(0)),
    ("POSTCOPY_RAM_DISCARD", None),
    ("PACKAGED", Some(4)),
    ("ENABLE_COLO", Some(0)),
    ("POSTCOPY_RESUME", Some(0)),
    ("RECV_BITMAP", None),
    ("SWITCHOVER_START", Some(0)),
];

/// A record type byte's name, for messages and listings.
pub fn record_name(byte: u8) -> &'static str {
    match byte {
        EOF => "EOF",
        SECTION_START => "SECTION_START",
        SECTION_PART => "SECTION_PART",
        SECTION_END => "SECTION_END",
        SECTION_FULL => "SECTION_FULL",
        0x05 => "SUBSECTION",
        VMDESCRIPTION => "VMDESCRIPTION",
        CONFIGURATION => "CONFIGURATION",
        COMMAND => "COMMAND",
        SECTION_FOOTER => "SECTION_FOOTER",
        _ => "unknown",
    }
}

//! RAM record flags (the low bits of each record's be64 word; spec 5.1).

/// Zero page: one 0x00 byte follows.
pub const ZERO: u64 = 0x002;
/// Block list; the offset bits hold the total RAM size.
pub const MEM_SIZE: u64 = 0x004;
/// Raw page: one target page follows.
pub const PAGE: u64 = 0x008;
/// End of this section's RAM payload.
pub const EOS: u64 = 0x010;
/// Same block as the previous record: no block name follows.
pub const CONTINUE: u64 = 0x020;
/// XBZRLE-encoded page (not supported).
pub const XBZRLE: u64 = 0x040;
/// RDMA hook (not supported).
pub const HOOK: u64 = 0x080;
/// Multifd sync point (no payload).
pub const MULTIFD_FLUSH: u64 = 0x200;

/// The names of the flags set in `flags`, for messages.
pub fn flag_names(flags: u64) -> String {
    const NAMES: [(u64, &str); 9] = [
        (0x001, "FULL"),
        (ZERO, "ZERO"),
        (MEM_SIZE, "MEM_SIZE"),
        (PAGE, "PAGE"),
        (EOS, "EOS"),
        (CONTINUE, "CONTINUE"),
        (XBZRLE, "XBZRLE"),
        (HOOK, "HOOK"),
        (MULTIFD_FLUSH, "MULTIFD_FLUSH"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("|")
    }
}

//! XBZRLE: any bytes decoded into a page (every run must land inside it), and the
//! encoder on two pages made from the input, whose encoding must decode back to the
//! second page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstate::ram::xbzrle::{decode, encode};

const PAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut page = vec![0u8; PAGE];
    let _ = decode(data, PAGE, |at, bytes| {
        page[at..at + bytes.len()].copy_from_slice(bytes)
    });

    // Old page: the input repeated; new page: the old one with the input's bytes
    // written at offsets the input picks.
    if data.is_empty() {
        return;
    }
    let old: Vec<u8> = data.iter().copied().cycle().take(PAGE).collect();
    let mut new = old.clone();
    for pair in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % PAGE;
        new[at] = pair[2];
    }
    let mut out = Vec::new();
    if let Some(n) = encode(&old, &new, &mut out, PAGE) {
        assert_eq!(n, out.len());
        let mut back = old.clone();
        decode(&out, PAGE, |at, bytes| back[at..at + bytes.len()].copy_from_slice(bytes))
            .expect("an encoding decodes");
        assert_eq!(back, new);
    }
});

//! Zero-page detection at memory-scan speed: OR-reduce 64-byte chunks of u64 words
//! (the compiler turns this into SIMD), stopping at the first non-zero chunk.

/// True if every byte of `page` is zero.
#[inline]
pub fn is_zero(page: &[u8]) -> bool {
    let mut chunks = page.chunks_exact(64);
    for chunk in &mut chunks {
        let mut acc = 0u64;
        for w in chunk.chunks_exact(8) {
            acc |= u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_single_non_zero_byte_anywhere() {
        let mut page = vec![0u8; 4096 + 7];
        assert!(is_zero(&page));
        for at in [0, 63, 64, 4095, 4096, 4102] {
            page[at] = 1;
            assert!(!is_zero(&page), "byte {at}");
            page[at] = 0;
        }
    }
}

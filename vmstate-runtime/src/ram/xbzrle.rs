//! QEMU's XBZRLE page encoding (`migration/xbzrle.c`; spec, "XBZRLE"): a page that
//! the destination already holds an older copy of is sent as the runs of bytes that
//! changed.
//!
//! An encoding is a list of pairs: the length of a run of unchanged bytes, then the
//! length of a run of changed bytes followed by those bytes (the new values, not an
//! XOR). Lengths are ULEB128 numbers of at most two bytes (14 bits). Runs are maximal,
//! a trailing unchanged run is left out, and an unchanged page encodes to nothing.
//! [`encode`] writes exactly what QEMU's encoder writes for the same two pages, and
//! gives up (`None`, QEMU's overflow) at the same points; [`decode`] accepts what
//! QEMU's decoder accepts and applies the changed runs to a page through a callback,
//! so a malformed encoding is an error before any byte lands outside the page.
//!
//! ```
//! use vmstate::ram::xbzrle::{decode, encode};
//!
//! let old = [0u8; 4096];
//! let mut new = old;
//! new[100..108].copy_from_slice(&42u64.to_le_bytes());
//! let mut out = Vec::new();
//! let len = encode(&old, &new, &mut out, 4096).unwrap();
//! assert_eq!(out, [100, 1, 42]); // 100 unchanged bytes, 1 changed byte: 42
//! let mut page = old;
//! decode(&out, page.len(), |at, bytes| page[at..at + bytes.len()].copy_from_slice(bytes))
//!     .unwrap();
//! assert_eq!(page, new);
//! # assert_eq!(len, 3);
//! ```

use std::fmt;

/// Why an encoding was refused; `at` is the byte of the encoding where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset in the encoded bytes.
    pub at: usize,
    /// What was wrong.
    pub reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {} of the encoding", self.reason, self.at)
    }
}

impl std::error::Error for DecodeError {}

/// The byte after an XBZRLE record's header (QEMU's `ENCODING_FLAG_XBZRLE`).
pub const ENCODING_FLAG: u8 = 0x01;

/// The largest run length a two-byte ULEB128 holds.
const MAX_RUN: usize = 0x3fff;

/// Appends the XBZRLE encoding of `new` against `old` (same length, at most 16 KiB) to
/// `out` and returns its length: 0 when the pages are equal, `None` when the encoding
/// would take more than `limit` bytes (then `out` holds a partial encoding the caller
/// discards; QEMU sends such a page whole).
pub fn encode(old: &[u8], new: &[u8], out: &mut Vec<u8>, limit: usize) -> Option<usize> {
    assert_eq!(old.len(), new.len(), "XBZRLE compares pages of one size");
    assert!(old.len() <= MAX_RUN, "XBZRLE runs are at most 14 bits long");
    let start = out.len();
    let len = old.len();
    let mut i = 0;
    while i < len {
        let d = out.len() - start;
        if d + 2 > limit {
            return None;
        }
        let same = run_length(old, new, i, true);
        if same == len {
            return Some(0);
        }
        i += same;
        if i == len {
            break; // a trailing unchanged run is left out
        }
        put_uleb(out, same);
        if out.len() - start + 2 > limit {
            return None;
        }
        let changed = run_length(old, new, i, false);
        if out.len() - start + changed > limit {
            return None;
        }
        put_uleb(out, changed);
        if out.len() - start + changed > limit {
            return None;
        }
        out.extend_from_slice(&new[i..i + changed]);
        i += changed;
    }
    Some(out.len() - start)
}

/// Bytes from `from` on that are equal in both pages (`equal`) or differ in each.
#[inline]
fn run_length(old: &[u8], new: &[u8], from: usize, equal: bool) -> usize {
    let (a, b) = (&old[from..], &new[from..]);
    // Eight bytes at a time while whole words match the run, then byte by byte.
    let mut n = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let diff =
            u64::from_ne_bytes(x.try_into().unwrap()) ^ u64::from_ne_bytes(y.try_into().unwrap());
        let whole = if equal {
            diff == 0
        } else {
            // Every byte differs: no zero byte in the XOR.
            const LOW: u64 = 0x0101_0101_0101_0101;
            (diff.wrapping_sub(LOW) & !diff & (LOW << 7)) == 0
        };
        if !whole {
            break;
        }
        n += 8;
    }
    n + a[n..]
        .iter()
        .zip(&b[n..])
        .take_while(|(x, y)| (x == y) == equal)
        .count()
}

fn put_uleb(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n <= MAX_RUN);
    if n < 0x80 {
        out.push(n as u8);
    } else {
        out.extend([(n & 0x7f) as u8 | 0x80, (n >> 7) as u8]);
    }
}

/// Reads a ULEB128 number of at most two bytes at `at`; returns it and its length.
fn get_uleb(enc: &[u8], at: usize) -> Result<(usize, usize), DecodeError> {
    let first = enc[at];
    if first & 0x80 == 0 {
        return Ok((usize::from(first), 1));
    }
    let second = enc[at + 1];
    if second & 0x80 != 0 {
        return Err(DecodeError {
            at,
            reason: "a run length longer than two bytes",
        });
    }
    Ok((usize::from(first & 0x7f) | usize::from(second) << 7, 2))
}

/// Applies the encoding `enc` to a page of `page_len` bytes: `apply(offset, bytes)` is
/// called for each changed run, in order, and only for runs inside the page. Returns
/// the bytes of the page the encoding covers. The rules are QEMU's decoder's: every
/// length needs two bytes of input left to be read, a changed run is never empty, an
/// unchanged run is empty only first, and no run goes past the page or the input.
pub fn decode(
    enc: &[u8],
    page_len: usize,
    mut apply: impl FnMut(usize, &[u8]),
) -> Result<usize, DecodeError> {
    let (mut i, mut d) = (0, 0);
    while i < enc.len() {
        if enc.len() - i < 2 {
            return Err(DecodeError {
                at: i,
                reason: "an unchanged run's length is cut short",
            });
        }
        let (same, n) = get_uleb(enc, i)?;
        if i > 0 && same == 0 {
            return Err(DecodeError {
                at: i,
                reason: "an empty unchanged run after the first",
            });
        }
        i += n;
        d += same;
        if d > page_len {
            return Err(DecodeError {
                at: i - n,
                reason: "an unchanged run goes past the page",
            });
        }
        if enc.len() - i < 2 {
            return Err(DecodeError {
                at: i,
                reason: "a changed run's length is cut short",
            });
        }
        let (changed, n) = get_uleb(enc, i)?;
        if changed == 0 {
            return Err(DecodeError {
                at: i,
                reason: "an empty changed run",
            });
        }
        i += n;
        if d + changed > page_len {
            return Err(DecodeError {
                at: i - n,
                reason: "a changed run goes past the page",
            });
        }
        if i + changed > enc.len() {
            return Err(DecodeError {
                at: i - n,
                reason: "a changed run goes past the end of the encoding",
            });
        }
        apply(d, &enc[i..i + changed]);
        d += changed;
        i += changed;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding written out by hand: (unchanged, changed bytes) pairs.
    fn by_hand(pairs: &[(usize, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (same, bytes) in pairs {
            put_uleb(&mut out, *same);
            put_uleb(&mut out, bytes.len());
            out.extend_from_slice(bytes);
        }
        out
    }

    #[test]
    fn runs_are_maximal_and_the_trailing_unchanged_run_is_left_out() {
        let old = [7u8; 4096];
        let mut new = old;
        new[0] = 1; // a change at the very start: an empty first unchanged run
        new[200..210].fill(2);
        new[211] = 3; // one equal byte between two changed runs splits them
        new[4000..4003].fill(4);
        let mut out = Vec::new();
        let n = encode(&old, &new, &mut out, 4096).unwrap();
        let expected = by_hand(&[(0, &[1]), (199, &[2; 10]), (1, &[3]), (4000 - 212, &[4; 3])]);
        assert_eq!(out, expected);
        assert_eq!(n, expected.len());
    }

    #[test]
    fn an_unchanged_page_encodes_to_nothing() {
        let page = [9u8; 4096];
        let mut out = vec![0xaa];
        assert_eq!(encode(&page, &page, &mut out, 4096), Some(0));
        assert_eq!(out, [0xaa], "nothing appended");
    }

    #[test]
    fn a_page_changed_everywhere_overflows() {
        let old = [0u8; 4096];
        let new = [1u8; 4096];
        assert_eq!(encode(&old, &new, &mut Vec::new(), 4096), None);
        // Alternating bytes: 2048 one-byte runs, each costing 3 bytes.
        let mut alt = old;
        alt.iter_mut().step_by(2).for_each(|b| *b = 1);
        assert_eq!(encode(&old, &alt, &mut Vec::new(), 4096), None);
    }

    #[test]
    fn lengths_of_128_and_more_take_two_bytes() {
        let old = [0u8; 4096];
        let mut new = old;
        new[300..500].fill(5);
        let mut out = Vec::new();
        encode(&old, &new, &mut out, 4096).unwrap();
        assert_eq!(&out[..4], [0xac, 0x02, 0xc8, 0x01]); // 300, 200
        assert_eq!(out.len(), 4 + 200);
    }

    #[test]
    fn decoding_refuses_what_qemu_refuses() {
        let ok = by_hand(&[(10, &[1, 2])]);
        let mut page = [0u8; 64];
        assert_eq!(
            decode(&ok, 64, |at, b| page[at..at + b.len()].copy_from_slice(b)),
            Ok(12)
        );
        assert_eq!(&page[10..12], [1, 2]);
        let refused: [(&[u8], &str); 7] = [
            (&[5], "an unchanged run's length is cut short"),
            (&[5, 0, 1], "an empty changed run"),
            (
                &[0, 1, 9, 0, 1, 9],
                "an empty unchanged run after the first",
            ),
            (&[65, 1, 9], "an unchanged run goes past the page"),
            (&[60, 5, 1, 2, 3, 4, 5], "a changed run goes past the page"),
            (
                &[1, 5, 1, 2],
                "a changed run goes past the end of the encoding",
            ),
            (&[0x80, 0x80, 1], "a run length longer than two bytes"),
        ];
        for (enc, reason) in refused {
            let err = decode(enc, 64, |_, _| {}).unwrap_err();
            assert_eq!(err.reason, reason, "{enc:?}");
        }
    }

    #[test]
    fn decoding_never_hands_out_bytes_outside_the_page() {
        // Every 3-byte and some longer inputs, against a small page.
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for a in [0u8, 1, 7, 8, 9, 0x7f, 0x80, 0x81, 0xff] {
            for b in [0u8, 1, 2, 8, 0x80, 0xff] {
                inputs.push(vec![a, b, 0x11, 0x22, a, b, 0x33]);
                inputs.push(vec![a, b]);
            }
        }
        for enc in inputs {
            let _ = decode(&enc, 8, |at, bytes| {
                assert!(at + bytes.len() <= 8, "{enc:?}")
            });
        }
    }
}

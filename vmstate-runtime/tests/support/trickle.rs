// A test reader that returns its data one byte per `read`, so that a `Reader` over it
// never has more than one byte buffered ahead and takes its short-read (refill) paths.
//
// Shared by the tests that load from such a source, without adding anything to the
// crate's API: `src/wire/reader.rs`'s unit tests `include!` it, integration tests
// (here and in other workspace crates) declare it with `#[path = ".../trickle.rs"] mod
// trickle;`. It has no inner attributes or inner doc comments, so that both ways work.

/// A source that hands out one byte per read.
pub struct Trickle<'a>(pub &'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(out)) => {
                *out = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

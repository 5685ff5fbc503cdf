//! Compressed multifd packets, as QEMU 10 writes them (`multifd-zlib.c`,
//! `multifd-zstd.c`): each channel keeps **one** compression stream for the whole
//! migration; a packet's page data (its normal pages, in order) is fed to it and the
//! stream is flushed at the packet's end (zlib `Z_SYNC_FLUSH`, zstd `ZSTD_e_flush`), so
//! the packet's `next_packet_size` bytes decompress on their own given everything the
//! channel carried before. The zlib stream has its 2-byte zlib header (in the first
//! packet), the zstd stream one frame that never ends.
//!
//! Zero pages stay offsets in the packet; a packet with only zero pages has no data
//! but still carries its method's flag, which the receiver checks as QEMU does.
//!
//! Decompression is bounded: a packet must come to exactly its normal pages, at most
//! 128 of them, and its compressed size may be at most twice the packet's data size
//! (QEMU's receive buffer); the zstd decoder's window is capped at 2^27 bytes (libzstd's
//! default limit) per channel.

use flate2::{FlushCompress, FlushDecompress};
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use super::packet::{FLAG_COMPRESSION_MASK, FLAG_ZLIB, FLAG_ZSTD, PACKET_DATA_BYTES};
use crate::error::{Error, Result};

/// Largest compressed payload a packet may announce (QEMU's receive buffer size).
pub const MAX_COMPRESSED_BYTES: usize = 2 * PACKET_DATA_BYTES;

/// How multifd channels compress page data (QEMU's `multifd-compression` parameter
/// with `multifd-zlib-level` / `multifd-zstd-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Pages as they are (QEMU's `none`, the default).
    #[default]
    None,
    /// zlib (deflate with the zlib header) at a level from 0 (store) to 9; QEMU's
    /// default is 1.
    Zlib {
        /// 0 to 9.
        level: u32,
    },
    /// zstd at a level from 1 to 20 (QEMU's range); QEMU's default is 1.
    Zstd {
        /// 1 to 20.
        level: i32,
    },
}

impl Compression {
    /// zlib at QEMU's default level 1.
    pub const ZLIB: Compression = Compression::Zlib { level: 1 };
    /// zstd at QEMU's default level 1.
    pub const ZSTD: Compression = Compression::Zstd { level: 1 };

    /// Parses `none`, `zlib` or `zstd` (QEMU's names), with `level` or QEMU's default.
    ///
    /// ```
    /// use vmstate::multifd::compress::Compression;
    /// assert_eq!(Compression::parse("zstd", Some(3)).unwrap(), Compression::Zstd { level: 3 });
    /// assert_eq!(Compression::parse("zlib", None).unwrap(), Compression::ZLIB);
    /// assert!(Compression::parse("zlib", Some(10)).is_err());
    /// ```
    pub fn parse(method: &str, level: Option<i32>) -> Result<Compression> {
        let c = match method {
            "none" => Compression::None,
            "zlib" => Compression::Zlib {
                level: level.unwrap_or(1).try_into().unwrap_or(u32::MAX),
            },
            "zstd" => Compression::Zstd {
                level: level.unwrap_or(1),
            },
            other => {
                return Err(Error::invalid(
                    "multifd compression",
                    format!("'{other}': expected none, zlib or zstd"),
                ));
            }
        };
        c.check()?;
        Ok(c)
    }

    /// Refuses a level outside QEMU's range for the method.
    pub fn check(self) -> Result<()> {
        let ok = match self {
            Compression::None => true,
            Compression::Zlib { level } => level <= 9,
            Compression::Zstd { level } => (1..=20).contains(&level),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "multifd compression",
                format!("{self}: the level is out of QEMU's range (zlib 0-9, zstd 1-20)"),
            ))
        }
    }

    /// The method's bits in a packet's flags.
    pub fn flag(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Zlib { .. } => FLAG_ZLIB,
            Compression::Zstd { .. } => FLAG_ZSTD,
        }
    }

    /// QEMU's name of the method.
    pub fn method(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zlib { .. } => "zlib",
            Compression::Zstd { .. } => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zlib { level } => write!(f, "zlib level {level}"),
            Compression::Zstd { level } => write!(f, "zstd level {level}"),
        }
    }
}

/// A sending channel's compression stream.
pub(crate) enum Compressor {
    Zlib(Box<flate2::Compress>),
    Zstd(Box<zstd::stream::raw::Encoder<'static>>),
}

impl Compressor {
    /// The stream for `c`; `None` for no compression.
    pub(crate) fn new(c: Compression) -> Result<Option<Compressor>> {
        c.check()?;
        Ok(match c {
            Compression::None => None,
            Compression::Zlib { level } => Some(Compressor::Zlib(Box::new(flate2::Compress::new(
                flate2::Compression::new(level),
                true,
            )))),
            Compression::Zstd { level } => Some(Compressor::Zstd(Box::new(
                zstd::stream::raw::Encoder::new(level).map_err(|e| compress_error("zstd", e))?,
            ))),
        })
    }

    /// Appends `data` compressed and flushed to `out`: one packet's payload.
    pub(crate) fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        // Both methods' worst case is a little above the input.
        out.reserve(data.len() + data.len() / 64 + 64);
        match self {
            Compressor::Zlib(z) => {
                let start = z.total_in();
                loop {
                    let used = (z.total_in() - start) as usize;
                    if out.len() == out.capacity() {
                        out.reserve(4096);
                    }
                    z.compress_vec(&data[used..], out, FlushCompress::Sync)
                        .map_err(|e| compress_error("zlib", e))?;
                    // The flush is complete once deflate stops short of the room it had.
                    if (z.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
                        return Ok(());
                    }
                }
            }
            Compressor::Zstd(z) => {
                let mut input = InBuffer::around(data);
                while input.pos() < data.len() {
                    if out.len() == out.capacity() {
                        out.reserve(4096);
                    }
                    let at = out.len();
                    let mut o = OutBuffer::around_pos(out, at);
                    z.run(&mut input, &mut o)
                        .map_err(|e| compress_error("zstd", e))?;
                }
                loop {
                    if out.len() == out.capacity() {
                        out.reserve(4096);
                    }
                    let at = out.len();
                    let mut o = OutBuffer::around_pos(out, at);
                    if z.flush(&mut o).map_err(|e| compress_error("zstd", e))? == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn compress_error(method: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("multifd compression", format!("{method}: {e}"))
}

/// A receiving channel's decompression stream, made for the method of the first
/// packet that needs one.
pub(crate) enum Decompressor {
    Zlib(Box<flate2::Decompress>),
    Zstd(Box<zstd::stream::raw::Decoder<'static>>),
}

impl Decompressor {
    /// The stream for the compression bits of `flags`; `None` for none. Refuses the
    /// methods this project does not implement (QPL, UADK, QATzip: hardware
    /// accelerators) and unknown bits.
    pub(crate) fn for_flags(flags: u32) -> Result<Option<Decompressor>> {
        Ok(match flags & FLAG_COMPRESSION_MASK {
            0 => None,
            FLAG_ZLIB => Some(Decompressor::Zlib(Box::new(flate2::Decompress::new(true)))),
            FLAG_ZSTD => {
                let mut d =
                    zstd::stream::raw::Decoder::new().map_err(|e| decompress_error("zstd", e))?;
                d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(27))
                    .map_err(|e| decompress_error("zstd", e))?;
                Some(Decompressor::Zstd(Box::new(d)))
            }
            other => {
                return Err(Error::invalid(
                    "multifd compression",
                    format!(
                        "method bits 0x{other:x} (QPL, UADK and QATzip are hardware \
                         accelerators this project does not implement)"
                    ),
                ));
            }
        })
    }

    /// Decompresses one packet's `input` into `out` (cleared first), which must come
    /// to exactly `expected` bytes with all of `input` used.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        expected: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        // Room for one byte more than expected, to tell "exactly" from "too much".
        out.reserve_exact(expected + 1);
        let method = self.method();
        let mut used = 0;
        loop {
            let before = (used, out.len());
            match self {
                Decompressor::Zlib(z) => {
                    let start = z.total_in();
                    let status = z
                        .decompress_vec(&input[used..], out, FlushDecompress::Sync)
                        .map_err(|e| decompress_error(method, e))?;
                    used += (z.total_in() - start) as usize;
                    if status == flate2::Status::StreamEnd {
                        return Err(decompress_error(
                            method,
                            "the stream ended (QEMU's streams never end)",
                        ));
                    }
                }
                Decompressor::Zstd(z) => {
                    let mut i = InBuffer::around(&input[used..]);
                    let at = out.len();
                    let mut o = OutBuffer::around_pos(out, at);
                    z.run(&mut i, &mut o)
                        .map_err(|e| decompress_error(method, e))?;
                    used += i.pos();
                }
            }
            if out.len() > expected {
                return Err(decompress_error(
                    method,
                    format!("the packet decompresses to more than its {expected} bytes"),
                ));
            }
            if used == input.len() && out.len() == expected {
                return Ok(());
            }
            if (used, out.len()) == before {
                return Err(decompress_error(
                    method,
                    format!(
                        "the packet decompresses to {} bytes, expected {expected} ({} of {} \
                         compressed bytes used)",
                        out.len(),
                        used,
                        input.len()
                    ),
                ));
            }
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Decompressor::Zlib(_) => "zlib",
            Decompressor::Zstd(_) => "zstd",
        }
    }
}

fn decompress_error(method: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("multifd decompression", format!("{method}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets() -> Vec<Vec<u8>> {
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog "
            .iter()
            .copied()
            .cycle()
            .take(3 * 4096)
            .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..128 * 4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        vec![text.clone(), random, vec![0; 4096], text]
    }

    /// Each packet decompresses on its own, in order, with the channel's one stream;
    /// zlib's stream is checked against an independent inflater (flate2's
    /// reader over the concatenated packets, which must see a zlib header).
    #[test]
    fn packets_round_trip_through_one_stream_per_channel() {
        for c in [
            Compression::ZLIB,
            Compression::Zlib { level: 9 },
            Compression::ZSTD,
            Compression::Zstd { level: 19 },
        ] {
            let mut tx = Compressor::new(c).unwrap().unwrap();
            let mut rx = Decompressor::for_flags(c.flag()).unwrap().unwrap();
            let mut wire = Vec::new();
            for p in packets() {
                let mut out = Vec::new();
                tx.compress(&p, &mut out).unwrap();
                wire.extend_from_slice(&out);
                let mut back = Vec::new();
                rx.decompress(&out, p.len(), &mut back).unwrap();
                assert_eq!(back, p, "{c}");
            }
            if let Compression::Zlib { .. } = c {
                use std::io::Read;
                let mut all = Vec::new();
                let _ = flate2::read::ZlibDecoder::new(&wire[..]).read_to_end(&mut all);
                assert_eq!(all, packets().concat());
            }
        }
    }

    #[test]
    fn a_packet_of_the_wrong_size_or_garbage_is_an_error() {
        for c in [Compression::ZLIB, Compression::ZSTD] {
            let mut tx = Compressor::new(c).unwrap().unwrap();
            let mut out = Vec::new();
            tx.compress(&[7u8; 8192], &mut out).unwrap();
            let mut back = Vec::new();
            let rx = || Decompressor::for_flags(c.flag()).unwrap().unwrap();
            let short = rx().decompress(&out, 4096, &mut back).unwrap_err();
            assert!(short.to_string().contains("more than its 4096"), "{short}");
            let long = rx().decompress(&out, 3 * 4096, &mut back).unwrap_err();
            assert!(long.to_string().contains("expected 12288"), "{long}");
            let garbage = rx().decompress(&[0xff; 64], 4096, &mut back).unwrap_err();
            assert!(garbage.to_string().contains(c.method()), "{garbage}");
        }
        assert!(Decompressor::for_flags(FLAG_COMPRESSION_MASK & (8 << 1)).is_err());
    }

    #[test]
    fn levels_outside_qemus_range_are_refused() {
        assert!(Compression::Zstd { level: 0 }.check().is_err());
        assert!(Compression::Zstd { level: 21 }.check().is_err());
        assert!(Compression::Zlib { level: 10 }.check().is_err());
        assert!(Compression::parse("lz4", None).is_err());
        assert_eq!(Compression::parse("none", None).unwrap(), Compression::None);
    }
}

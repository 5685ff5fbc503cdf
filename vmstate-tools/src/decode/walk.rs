//! The record walker: the core's record readers give the records
//! ([`RecordReader`]) and the RAM records ([`RamRecordReader`]); this module decides
//! how each section's payload is decoded, the way `analyze-migration.py` does (`ram`
//! instance 0 is the RAM format, any other START/FULL section is decoded with its
//! vmdesc entry, PART/END reuse the decoder of the START that introduced their id),
//! and builds the value tree.

use std::collections::HashMap;
use std::sync::Arc;

use vmstate::Error;
use vmstate::ram::records::{BlockRef, RamRecord as RamRec, RamRecordReader};
use vmstate::stream::format;
use vmstate::stream::records::{Footers, Record as Rec, RecordReader, SectionHeader, SectionKind};
use vmstate::wire::Reader;

use super::DecodeOptions;
use super::desc::{VmDescription, VmsdDesc};
use super::field::{FieldCtx, decode_struct};
use super::value::*;

/// How often (in bytes) progress is reported while walking RAM.
const PROGRESS_STEP: u64 = 8 << 20;

/// The RAM section version QEMU writes.
const RAM_VERSION: u32 = 4;

/// How the payloads of a section id are decoded.
#[derive(Clone)]
enum SectionDecoder {
    Ram,
    Vmsd(Arc<VmsdDesc>),
}

/// RAM state that persists across sections (spec 5.1: CONTINUE spans sections).
struct RamState {
    records: RamRecordReader,
    /// Block name -> used length.
    blocks: HashMap<Arc<str>, u64>,
    /// The block of the last page record, and its used length.
    last: Option<(Arc<str>, u64)>,
    mapped_ram: bool,
}

pub(crate) struct Walker<'r, 'a, 'o> {
    pub r: &'r mut Reader<'a>,
    /// Where the records end: the trailer's offset, or the end of the input.
    pub end: u64,
    pub desc: Option<Arc<VmDescription>>,
    pub opts: &'r mut DecodeOptions<'o>,
    records: RecordReader,
    budget: u64,
    ram: RamState,
    sections: HashMap<u32, SectionDecoder>,
    next_progress: u64,
}

impl<'r, 'a, 'o> Walker<'r, 'a, 'o> {
    pub fn new(
        r: &'r mut Reader<'a>,
        end: u64,
        desc: Option<Arc<VmDescription>>,
        opts: &'r mut DecodeOptions<'o>,
    ) -> Self {
        let page_size = desc.as_ref().map_or(4096, |d| d.page_size);
        Walker {
            r,
            end,
            desc,
            budget: opts.max_values,
            opts,
            records: RecordReader::new(Footers::Detect)
                .detect_configuration()
                .ending_at(end),
            ram: RamState {
                records: RamRecordReader::new(page_size),
                blocks: HashMap::new(),
                last: None,
                mapped_ram: false,
            },
            sections: HashMap::new(),
            next_progress: 0,
        }
    }

    fn progress(&mut self) {
        let pos = self.r.position();
        if pos >= self.next_progress {
            self.next_progress = pos + PROGRESS_STEP;
            if let Some(p) = self.opts.progress.as_mut() {
                p(pos);
            }
        }
    }

    /// Reads the header and records into `out` until EOF. On error, `out` holds every
    /// record completed before it.
    pub fn run(&mut self, out: &mut Stream) -> Result<(), Error> {
        self.records.header(self.r)?;
        out.magic = format::MAGIC;
        out.version = format::VERSION;
        loop {
            self.progress();
            let at = self.r.position();
            let body = match self.records.next(self.r)? {
                Rec::Configuration => RecordBody::Configuration(
                    self.configuration()
                        .map_err(|e| e.in_record("configuration"))?,
                ),
                Rec::Section(header) => {
                    let payload = self.section(&header).map_err(|e| header.tag(e))?;
                    RecordBody::Section(Section { header, payload })
                }
                Rec::Footer { section_id } => RecordBody::Footer { section_id },
                Rec::Command(c) => RecordBody::Command(c),
                Rec::Eof => RecordBody::Eof,
            };
            let eof = matches!(body, RecordBody::Eof);
            out.records.push(Record {
                offset: at,
                len: self.r.position() - at,
                body,
            });
            if eof {
                return Ok(());
            }
        }
    }

    /// A section's payload, with the decoder its id was introduced with.
    fn section(&mut self, h: &SectionHeader) -> Result<Payload, Error> {
        let decoder = if h.kind.has_full_header() {
            let decoder = self.decoder_for(h)?;
            if h.kind == SectionKind::Start {
                self.sections.insert(h.section_id, decoder.clone());
            }
            decoder
        } else {
            // The record reader only returns PART/END for ids a START introduced.
            self.sections
                .get(&h.section_id)
                .cloned()
                .ok_or_else(|| Error::malformed("a continuation of an undecoded section"))?
        };
        match decoder {
            SectionDecoder::Ram => Ok(Payload::Ram(self.ram_payload()?)),
            SectionDecoder::Vmsd(d) => {
                let mut cx = FieldCtx {
                    r: self.r,
                    end: self.end,
                    budget: &mut self.budget,
                };
                Ok(Payload::Vmsd(decode_struct(&mut cx, &d, 0)?))
            }
        }
    }

    fn decoder_for(&self, h: &SectionHeader) -> Result<SectionDecoder, Error> {
        if h.idstr == "ram" && h.instance_id == 0 {
            if h.version != RAM_VERSION {
                return Err(Error::malformed(format!(
                    "unknown RAM section version {} (only {RAM_VERSION} is known)",
                    h.version
                )));
            }
            return Ok(SectionDecoder::Ram);
        }
        let Some(desc) = &self.desc else {
            return Err(Error::malformed(
                "the stream has no vmdesc trailer, so its sections cannot be decoded",
            ));
        };
        match desc.device(&h.idstr, h.instance_id) {
            Some(d) => Ok(SectionDecoder::Vmsd(d.clone())),
            None if h.kind == SectionKind::Start => Err(Error::malformed(format!(
                "iterative section '{}' has no known format (only 'ram' is understood)",
                h.idstr
            ))),
            None => Err(Error::malformed(format!(
                "the vmdesc has no description of '{}' instance {}",
                h.idstr, h.instance_id
            ))),
        }
    }

    fn configuration(&mut self) -> Result<Configuration, Error> {
        let cfg = match self.desc.as_ref().and_then(|d| d.configuration.clone()) {
            Some(d) => {
                let mut cx = FieldCtx {
                    r: self.r,
                    end: self.end,
                    budget: &mut self.budget,
                };
                Configuration::Vmsd(decode_struct(&mut cx, &d, 0)?)
            }
            None => {
                let len = self.r.get_be32()? as u64;
                if len > self.end.saturating_sub(self.r.position()) {
                    return Err(Error::malformed(format!(
                        "machine name of {len} bytes runs past the end of the stream"
                    )));
                }
                Configuration::Legacy {
                    name: self.r.get_vec(len)?,
                }
            }
        };
        let caps = cfg.capabilities();
        let ignore_shared = caps.iter().any(|c| c == "x-ignore-shared");
        self.ram.records = self.ram.records.clone().with_ignore_shared(ignore_shared);
        self.ram.mapped_ram = caps.iter().any(|c| c == "mapped-ram");
        Ok(cfg)
    }

    fn ram_payload(&mut self) -> Result<RamPayload, Error> {
        let ps = self.ram.records.page_size();
        let mut out = RamPayload::default();
        loop {
            self.progress();
            let at = self.r.position();
            let fail = |e: Error| e.at_offset(at).in_field("ram");
            if at >= self.end {
                return Err(fail(Error::malformed("RAM payload without EOS")));
            }
            let record = self.ram.records.next(self.r).map_err(fail)?;
            let word = self.ram.records.last_word();
            match record {
                RamRec::Eos => {
                    out.records.push(RamRecord::Eos { word });
                    return Ok(out);
                }
                RamRec::MultifdFlush => out.records.push(RamRecord::MultifdFlush { word }),
                RamRec::MemSize { total } => {
                    let (blocks, runs) = self.block_list(total).map_err(fail)?;
                    out.records.push(RamRecord::MemSize { word, blocks });
                    out.records.extend(runs.into_iter().map(RamRecord::Pages));
                }
                RamRec::Zero { block, offset } => {
                    self.page(&mut out, true, &block, offset, at, ps)
                        .map_err(fail)?;
                }
                RamRec::Page { block, offset } => {
                    self.page(&mut out, false, &block, offset, at, ps)
                        .map_err(fail)?;
                }
                RamRec::Xbzrle {
                    block,
                    offset,
                    data,
                } => {
                    let name = self.page_block(&block, offset, ps).map_err(fail)?;
                    let named = matches!(block, BlockRef::Named(_));
                    out.records.push(RamRecord::Xbzrle {
                        word,
                        block: named.then(|| name.to_string()),
                        data,
                    });
                }
            }
        }
    }

    /// The block of a page record at `offset`, checked against the block list.
    fn page_block(&mut self, block: &BlockRef, offset: u64, ps: u64) -> Result<Arc<str>, Error> {
        if self.ram.mapped_ram {
            return Err(Error::malformed("page records in a mapped-ram stream"));
        }
        let (name, used) = match block {
            BlockRef::Named(name) => match self.ram.blocks.get_key_value(name.as_str()) {
                Some((k, &used)) => {
                    self.ram.last = Some((k.clone(), used));
                    (k.clone(), used)
                }
                None => {
                    return Err(Error::malformed(format!(
                        "page for RAM block '{name}', which is not in the block list"
                    )));
                }
            },
            // The record reader refuses CONTINUE before any named record, and the
            // last block's length is kept with it: no lookup per page.
            BlockRef::Same => self.ram.last.clone().unwrap_or_else(|| (Arc::from(""), 0)),
        };
        if offset >= used || used - offset < ps {
            return Err(Error::malformed(format!(
                "page at offset 0x{offset:x} is outside RAM block '{name}' (0x{used:x} bytes)"
            )));
        }
        Ok(name)
    }

    /// One ZERO or PAGE record after its header: reads or skips the body and extends
    /// the current run or starts a new one.
    fn page(
        &mut self,
        out: &mut RamPayload,
        zero: bool,
        block: &BlockRef,
        addr: u64,
        at: u64,
        ps: u64,
    ) -> Result<(), Error> {
        let name = self.page_block(block, addr, ps)?;
        let named = matches!(block, BlockRef::Named(_));
        let body_at = self.r.position();
        let mut data = None;
        if !zero {
            if ps > self.end.saturating_sub(body_at) {
                return Err(
                    Error::malformed("page data runs past the end of the stream")
                        .at_offset(body_at),
                );
            }
            if self.opts.keep_pages {
                data = Some(self.r.get_vec(ps)?);
            } else {
                self.r.skip(ps)?;
            }
        }
        if !named
            && let Some(RamRecord::Pages(run)) = out.records.last_mut()
            && run.zero == zero
            && Arc::ptr_eq(&run.block, &name)
            && run.addr.checked_add(run.count * ps) == Some(addr)
        {
            run.count += 1;
            if let (Some(d), Some(new)) = (run.data.as_mut(), data) {
                d.extend_from_slice(&new);
            }
            return Ok(());
        }
        self.spend("too many RAM runs (the decoder's value limit was reached)")?;
        out.records.push(RamRecord::Pages(PageRun {
            zero,
            block: name,
            named,
            addr,
            count: 1,
            page_size: ps,
            offset: at,
            data,
            mapped: false,
        }));
        Ok(())
    }

    /// The block list; with mapped-ram, also each block's header, bitmap and pages
    /// (as runs of the pages present).
    fn block_list(&mut self, total: u64) -> Result<(Vec<RamBlockInfo>, Vec<PageRun>), Error> {
        let mut blocks = Vec::new();
        let mut runs = Vec::new();
        let mapped = self.ram.mapped_ram;
        let ps = self.ram.records.page_size();
        let (keep, end) = (self.opts.keep_pages, self.end);
        let (budget, known, last) = (&mut self.budget, &mut self.ram.blocks, &mut self.ram.last);
        self.ram
            .records
            .block_list_with(self.r, total, |entry, at, r| {
                if *budget == 0 {
                    return Err(
                        vmstate::Error::invalid("RAM block list", "too many RAM blocks")
                            .at_offset(at),
                    );
                }
                *budget -= 1;
                let name: Arc<str> = entry.name.as_str().into();
                known.insert(name.clone(), entry.used_length);
                // A block list sent again may resize the block CONTINUE records refer to.
                if let Some((last_name, used)) = last
                    && **last_name == *entry.name
                {
                    *used = entry.used_length;
                }
                let mapped_ram = if mapped {
                    let page = MappedPages { r, ps, keep, end };
                    Some(page.read(&name, entry.used_length, budget, &mut runs)?)
                } else {
                    None
                };
                blocks.push(RamBlockInfo {
                    name: entry.name,
                    used_length: entry.used_length,
                    mr_addr: entry.mr_addr,
                    mapped_ram,
                });
                Ok(())
            })?;
        Ok((blocks, runs))
    }

    fn spend(&mut self, what: &str) -> Result<(), Error> {
        if self.budget == 0 {
            return Err(Error::malformed(what));
        }
        self.budget -= 1;
        Ok(())
    }
}

/// Reads one mapped-ram block after its entry: the header, the bitmap, the padding and
/// the pages region front to back. Pages present become runs; the padding and the
/// absent pages must be zeros (so that the file re-encodes to its own bytes).
struct MappedPages<'x, 'a> {
    r: &'x mut Reader<'a>,
    ps: u64,
    keep: bool,
    end: u64,
}

impl MappedPages<'_, '_> {
    fn read(
        self,
        name: &Arc<str>,
        used: u64,
        budget: &mut u64,
        runs: &mut Vec<PageRun>,
    ) -> vmstate::Result<MappedRamInfo> {
        use vmstate::ram::mapped_ram::{MappedRamHeader, bitmap_len, bitmap_test};
        let MappedPages { r, ps, keep, end } = self;
        let header_at = r.position();
        let header = MappedRamHeader::decode(r)?;
        header.check_sequential(header_at, used, ps)?;
        if header
            .pages_offset
            .checked_add(used)
            .is_none_or(|e| e > end)
        {
            return Err(vmstate::Error::invalid(
                "mapped-ram block",
                format!("'{name}': its pages run past the end of the file"),
            )
            .at_offset(header_at));
        }
        let bitmap = r.get_vec(bitmap_len(used, ps))?;
        let zeros = |r: &mut Reader<'_>, n: u64| -> vmstate::Result<()> {
            let mut left = n;
            while left > 0 {
                let at = r.position();
                let take = left.min(1 << 20) as usize;
                if !r.with_bytes(take, |b| b.iter().all(|&x| x == 0))? {
                    return Err(vmstate::Error::invalid(
                        "mapped-ram block",
                        format!("'{name}': non-zero bytes where the file holds no page"),
                    )
                    .at_offset(at));
                }
                left -= take as u64;
            }
            Ok(())
        };
        zeros(r, header.pages_offset - r.position())?;
        let pages = (used / ps) as usize;
        let mut p = 0;
        while p < pages {
            if !bitmap_test(&bitmap, p) {
                let mut q = p + 1;
                while q < pages && !bitmap_test(&bitmap, q) {
                    q += 1;
                }
                zeros(r, (q - p) as u64 * ps)?;
                p = q;
                continue;
            }
            let mut q = p + 1;
            while q < pages && bitmap_test(&bitmap, q) {
                q += 1;
            }
            if *budget == 0 {
                return Err(vmstate::Error::invalid(
                    "mapped-ram block",
                    "too many RAM runs (the decoder's value limit was reached)",
                ));
            }
            *budget -= 1;
            let len = (q - p) as u64 * ps;
            let offset = r.position();
            let data = if keep {
                Some(r.get_vec(len)?)
            } else {
                r.skip(len)?;
                None
            };
            runs.push(PageRun {
                zero: false,
                block: name.clone(),
                named: false,
                addr: p as u64 * ps,
                count: (q - p) as u64,
                page_size: ps,
                offset,
                data,
                mapped: true,
            });
            p = q;
        }
        zeros(r, used - pages as u64 * ps)?;
        Ok(MappedRamInfo { header, bitmap })
    }
}

//! The record walker: header, then top-level records until EOF, dispatching sections
//! the way `analyze-migration.py` does (`ram` instance 0 is the RAM format, any other
//! START/FULL section is decoded with its vmdesc entry, PART/END reuse the decoder
//! their section id was introduced with), with QEMU's checks on RAM records,
//! commands and footers.

use std::collections::HashMap;
use std::sync::Arc;

use super::DecodeOptions;
use super::desc::{VmDescription, VmsdDesc};
use super::error::DecodeError;
use super::field::{FieldCtx, decode_struct};
use super::value::*;
use vmstate::ram::format as rf;
use vmstate::stream::format;
use vmstate::wire::Reader;

/// How often (in bytes) progress is reported while walking RAM.
const PROGRESS_STEP: u64 = 8 << 20;

/// What a section id was introduced as.
#[derive(Clone)]
enum SectionDecoder {
    Ram,
    Vmsd(Arc<VmsdDesc>),
}

/// RAM state that persists across sections (spec 5.1: CONTINUE spans sections).
#[derive(Default)]
struct RamState {
    /// Block name -> used length.
    blocks: HashMap<Arc<str>, u64>,
    /// The block of the last page record.
    last: Option<Arc<str>>,
    ignore_shared: bool,
    mapped_ram: bool,
}

pub(crate) struct Walker<'r, 'a, 'o> {
    pub r: &'r mut Reader<'a>,
    /// Where the records end: the trailer's offset, or the end of the input.
    pub end: u64,
    pub desc: Option<Arc<VmDescription>>,
    pub opts: &'r mut DecodeOptions<'o>,
    budget: u64,
    ram: RamState,
    sections: HashMap<u32, SectionDecoder>,
    last_section_id: Option<u32>,
    /// The section being read, for error messages.
    current: Option<(u32, Option<SectionHeader>)>,
    /// True when `end` is the trailer's offset.
    trailer: bool,
    /// Section headers by section id, to name PART/END sections in errors.
    headers: HashMap<u32, SectionHeader>,
    next_progress: u64,
}

impl<'r, 'a, 'o> Walker<'r, 'a, 'o> {
    pub fn new(
        r: &'r mut Reader<'a>,
        end: u64,
        trailer: bool,
        desc: Option<Arc<VmDescription>>,
        opts: &'r mut DecodeOptions<'o>,
    ) -> Self {
        Walker {
            r,
            end,
            desc,
            budget: opts.max_values,
            opts,
            ram: RamState::default(),
            sections: HashMap::new(),
            last_section_id: None,
            current: None,
            trailer,
            headers: HashMap::new(),
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

    fn page_size(&self) -> u64 {
        self.desc.as_ref().map_or(4096, |d| d.page_size)
    }

    /// Reads the header and records into `out` until EOF. On error, `out` holds every
    /// record completed before it.
    pub fn run(&mut self, out: &mut Stream) -> Result<(), DecodeError> {
        let at = self.r.position();
        let magic = self.r.get_be32()?;
        if magic != format::MAGIC {
            return Err(DecodeError::new(format!(
                "not a migration stream: magic is 0x{magic:08x}, expected 0x5145564d (\"QEVM\")"
            ))
            .at(at)
            .in_record("header"));
        }
        out.magic = magic;
        let version = self.r.get_be32()?;
        if version != format::VERSION {
            return Err(DecodeError::new(format!(
                "unsupported stream format version {version} (only 3 is supported)"
            ))
            .at(at + 4)
            .in_record("header"));
        }
        out.version = version;
        loop {
            self.progress();
            let at = self.r.position();
            if at >= self.end {
                return Err(DecodeError::new(if self.trailer {
                    "the records run into the vmdesc trailer without an EOF record"
                } else {
                    "the stream ends before its EOF record"
                })
                .at(at));
            }
            let ty = self.r.get_u8()?;
            let body = self.record(ty, at).map_err(|e| {
                let e = e.at(at);
                let name = match ty {
                    format::SECTION_START..=format::SECTION_FULL => self.describe_section(at, ty),
                    _ => format!("{} record at offset 0x{at:x}", format::record_name(ty)),
                };
                e.in_record(name)
            })?;
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

    /// A description of the section whose header starts at `at`, for error messages.
    fn describe_section(&self, at: u64, ty: u8) -> String {
        let name = format::record_name(ty).trim_start_matches("SECTION_");
        match &self.current {
            Some((id, Some(h))) => format!(
                "{name} section {id} '{}' instance {} (version {}) at offset 0x{at:x}",
                h.idstr, h.instance_id, h.version
            ),
            Some((id, None)) => match self.headers.get(id) {
                Some(h) => format!(
                    "{name} section {id} ('{}' instance {}) at offset 0x{at:x}",
                    h.idstr, h.instance_id
                ),
                None => format!("{name} section {id} at offset 0x{at:x}"),
            },
            None => format!("{name} section at offset 0x{at:x}"),
        }
    }

    fn record(&mut self, ty: u8, at: u64) -> Result<RecordBody, DecodeError> {
        self.current = None;
        match ty {
            format::EOF => Ok(RecordBody::Eof),
            format::CONFIGURATION => self.configuration(),
            format::SECTION_START | format::SECTION_FULL => {
                let section_id = self.r.get_be32()?;
                self.current = Some((section_id, None));
                let idstr = self.r.get_counted_string()?;
                let instance_id = self.r.get_be32()?;
                let version = self.r.get_be32()?;
                let header = SectionHeader {
                    idstr,
                    instance_id,
                    version,
                };
                self.current = Some((section_id, Some(header.clone())));
                self.last_section_id = Some(section_id);
                let decoder = if header.idstr == "ram" && header.instance_id == 0 {
                    if version != 4 {
                        return Err(DecodeError::new(format!(
                            "unknown RAM section version {version} (only 4 is known)"
                        )));
                    }
                    SectionDecoder::Ram
                } else if let Some(d) = self
                    .desc
                    .as_ref()
                    .and_then(|d| d.device(&header.idstr, instance_id))
                {
                    SectionDecoder::Vmsd(d.clone())
                } else if self.desc.is_none() {
                    return Err(DecodeError::new(
                        "the stream has no vmdesc trailer, so its sections cannot be decoded",
                    ));
                } else if ty == format::SECTION_START {
                    return Err(DecodeError::new(format!(
                        "iterative section '{}' has no known format (only 'ram' is understood)",
                        header.idstr
                    )));
                } else {
                    return Err(DecodeError::new(format!(
                        "the vmdesc has no description of '{}' instance {}",
                        header.idstr, header.instance_id
                    )));
                };
                self.sections.insert(section_id, decoder.clone());
                self.headers.insert(section_id, header.clone());
                let payload = self.payload(&decoder)?;
                Ok(RecordBody::Section(Section {
                    kind: ty,
                    section_id,
                    header: Some(header),
                    payload,
                }))
            }
            format::SECTION_PART | format::SECTION_END => {
                let section_id = self.r.get_be32()?;
                self.current = Some((section_id, None));
                self.last_section_id = Some(section_id);
                let decoder = self.sections.get(&section_id).cloned().ok_or_else(|| {
                    DecodeError::new(format!(
                        "section id {section_id} was not introduced by a START or FULL section"
                    ))
                })?;
                let payload = self.payload(&decoder)?;
                Ok(RecordBody::Section(Section {
                    kind: ty,
                    section_id,
                    header: None,
                    payload,
                }))
            }
            format::SECTION_FOOTER => {
                let section_id = self.r.get_be32()?;
                match self.last_section_id {
                    Some(id) if id == section_id => Ok(RecordBody::Footer { section_id }),
                    Some(id) => Err(DecodeError::new(format!(
                        "mismatched section footer: it names section {section_id}, the last section was {id}"
                    ))),
                    None => Err(DecodeError::new(format!(
                        "a footer for section {section_id} before any section"
                    ))),
                }
            }
            format::COMMAND => self.command(at),
            byte => Err(DecodeError::new(format!(
                "unknown record type 0x{byte:02x}"
            ))),
        }
    }

    fn payload(&mut self, decoder: &SectionDecoder) -> Result<Payload, DecodeError> {
        match decoder {
            SectionDecoder::Ram => Ok(Payload::Ram(self.ram_payload()?)),
            SectionDecoder::Vmsd(d) => {
                let mut cx = FieldCtx {
                    r: self.r,
                    end: self.end,
                    budget: &mut self.budget,
                };
                Ok(Payload::Vmsd(decode_struct(&mut cx, d, 0)?))
            }
        }
    }

    fn configuration(&mut self) -> Result<RecordBody, DecodeError> {
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
                    return Err(DecodeError::new(format!(
                        "machine name of {len} bytes runs past the end of the stream"
                    )));
                }
                Configuration::Legacy {
                    name: self.r.get_vec(len)?,
                }
            }
        };
        let caps = cfg.capabilities();
        self.ram.ignore_shared = caps.iter().any(|c| c == "x-ignore-shared");
        self.ram.mapped_ram = caps.iter().any(|c| c == "mapped-ram");
        Ok(RecordBody::Configuration(cfg))
    }

    fn command(&mut self, at: u64) -> Result<RecordBody, DecodeError> {
        let cmd = self.r.get_be16()?;
        let len = self.r.get_be16()?;
        let Some(&(name, fixed)) = format::COMMANDS.get(cmd as usize).filter(|_| cmd != 0) else {
            return Err(
                DecodeError::new(format!("invalid command {cmd} (QEMU defines 1 to 11)")).at(at),
            );
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(DecodeError::new(format!(
                "command {name} ({cmd}) has length {len}, QEMU requires {}",
                fixed.unwrap_or(0)
            ))
            .at(at));
        }
        if u64::from(len) > self.end.saturating_sub(self.r.position()) {
            return Err(DecodeError::new(format!(
                "command {name} payload of {len} bytes runs past the end of the stream"
            ))
            .at(at));
        }
        let data = self.r.get_vec(u64::from(len))?;
        let packaged = if cmd == 7 {
            let l = u32::from_be_bytes(data[..4].try_into().expect("PACKAGED has 4 bytes"));
            if u64::from(l) > self.end.saturating_sub(self.r.position()) {
                return Err(DecodeError::new(format!(
                    "PACKAGED command: the package of {l} bytes runs past the end of the stream"
                ))
                .at(at));
            }
            Some(self.r.get_vec(u64::from(l))?)
        } else {
            None
        };
        Ok(RecordBody::Command(Command {
            cmd,
            len,
            data,
            packaged,
        }))
    }

    fn ram_payload(&mut self) -> Result<RamPayload, DecodeError> {
        let ps = self.page_size();
        let mut out = RamPayload::default();
        loop {
            self.progress();
            let at = self.r.position();
            if at >= self.end {
                return Err(DecodeError::new("RAM payload without EOS").at(at));
            }
            let word = self.r.get_be64()?;
            let flags = word & (ps - 1);
            let addr = word & !(ps - 1);
            let err = |m: String| Err(DecodeError::new(m).at(at).in_field("ram"));
            match flags & !rf::CONTINUE {
                rf::MEM_SIZE => {
                    let blocks = self.block_list(addr).map_err(|e| e.in_field("ram"))?;
                    out.records.push(RamRecord::MemSize { word, blocks });
                }
                rf::ZERO | rf::PAGE | rf::XBZRLE => {
                    if self.ram.mapped_ram {
                        return err("page records in a mapped-ram stream".into());
                    }
                    let named = flags & rf::CONTINUE == 0;
                    let block = if named {
                        let name = self.r.get_counted_string()?;
                        match self.ram.blocks.get_key_value(name.as_str()) {
                            Some((k, _)) => k.clone(),
                            None => {
                                return err(format!(
                                    "page for RAM block '{name}', which is not in the block list"
                                ));
                            }
                        }
                    } else {
                        match &self.ram.last {
                            Some(b) => b.clone(),
                            None => {
                                return err(
                                    "CONTINUE flag on the first page record (no previous block)"
                                        .into(),
                                );
                            }
                        }
                    };
                    let used = self.ram.blocks.get(&block).copied().unwrap_or(0);
                    if addr >= used || used - addr < ps {
                        return err(format!(
                            "page at offset 0x{addr:x} is outside RAM block '{block}' (0x{used:x} bytes)"
                        ));
                    }
                    self.ram.last = Some(block.clone());
                    match flags & !rf::CONTINUE {
                        rf::XBZRLE => {
                            let enc = self.r.get_u8()?;
                            if enc != 1 {
                                return err(format!(
                                    "XBZRLE encoding byte 0x{enc:02x}, expected 0x01"
                                ));
                            }
                            let len = self.r.get_be16()?;
                            if u64::from(len) > ps {
                                return err(format!("XBZRLE length {len} exceeds the page size"));
                            }
                            let mut data = vec![enc];
                            data.extend_from_slice(&len.to_be_bytes());
                            data.extend(self.r.get_vec(u64::from(len))?);
                            out.records.push(RamRecord::Xbzrle {
                                word,
                                block: named.then(|| block.to_string()),
                                data,
                            });
                        }
                        kind => {
                            let zero = kind == rf::ZERO;
                            self.page(&mut out, zero, block, named, addr, at, ps)?;
                        }
                    }
                }
                rf::MULTIFD_FLUSH if flags & rf::CONTINUE == 0 => {
                    out.records.push(RamRecord::MultifdFlush { word })
                }
                rf::EOS if flags & rf::CONTINUE == 0 => {
                    out.records.push(RamRecord::Eos { word });
                    return Ok(out);
                }
                f if f & rf::HOOK != 0 => {
                    return err("RAM_SAVE_FLAG_HOOK (RDMA) records cannot be decoded".into());
                }
                _ => {
                    return err(format!(
                        "unknown combination of RAM flags 0x{flags:x} ({})",
                        rf::flag_names(flags)
                    ));
                }
            }
        }
    }

    /// One ZERO or PAGE record after its word and name: reads or skips the body and
    /// extends the current run or starts a new one.
    #[allow(clippy::too_many_arguments)]
    fn page(
        &mut self,
        out: &mut RamPayload,
        zero: bool,
        block: Arc<str>,
        named: bool,
        addr: u64,
        at: u64,
        ps: u64,
    ) -> Result<(), DecodeError> {
        let body_at = self.r.position();
        let mut data = None;
        if zero {
            let fill = self.r.get_u8()?;
            if fill != 0 {
                return Err(DecodeError::new(format!(
                    "zero page with fill byte 0x{fill:02x} (QEMU requires 0x00)"
                ))
                .at(body_at)
                .in_field("ram"));
            }
        } else if self.opts.keep_pages {
            data = Some(self.r.get_vec(ps)?);
        } else {
            if ps > self.end.saturating_sub(body_at) {
                return Err(
                    DecodeError::new("page data runs past the end of the stream")
                        .at(body_at)
                        .in_field("ram"),
                );
            }
            self.r.skip(ps)?;
        }
        if !named
            && let Some(RamRecord::Pages(run)) = out.records.last_mut()
            && run.zero == zero
            && run.block == block
            && run.addr.checked_add(run.count * ps) == Some(addr)
        {
            run.count += 1;
            if let (Some(d), Some(new)) = (run.data.as_mut(), data) {
                d.extend_from_slice(&new);
            }
            return Ok(());
        }
        if self.budget == 0 {
            return Err(DecodeError::new(
                "too many RAM runs (the decoder's value limit was reached)",
            )
            .at(at));
        }
        self.budget -= 1;
        out.records.push(RamRecord::Pages(PageRun {
            zero,
            block,
            named,
            addr,
            count: 1,
            page_size: ps,
            offset: at,
            data: if zero { None } else { data },
        }));
        Ok(())
    }

    fn block_list(&mut self, total: u64) -> Result<Vec<RamBlockInfo>, DecodeError> {
        if self.ram.mapped_ram {
            return Err(DecodeError::new(
                "mapped-ram streams (file: migration with the mapped-ram capability) are not supported",
            )
            .at(self.r.position()));
        }
        let mut blocks = Vec::new();
        let mut left = total;
        while left > 0 {
            let at = self.r.position();
            if at >= self.end {
                return Err(
                    DecodeError::new("the RAM block list runs past the end of the stream").at(at),
                );
            }
            if self.budget == 0 {
                return Err(DecodeError::new("too many RAM blocks").at(at));
            }
            self.budget -= 1;
            let name = self.r.get_counted_string()?;
            let used_length = self.r.get_be64()?;
            let mr_addr = if self.ram.ignore_shared {
                Some(self.r.get_be64()?)
            } else {
                None
            };
            left = left.saturating_sub(used_length);
            let key: Arc<str> = name.as_str().into();
            self.ram.blocks.insert(key, used_length);
            blocks.push(RamBlockInfo {
                name,
                used_length,
                mr_addr,
            });
        }
        Ok(blocks)
    }
}

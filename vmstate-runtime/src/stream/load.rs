//! Reading a stream (QEMU's `qemu_loadvm_state`, spec 1.12): header and configuration
//! checks, sections dispatched by type and id, footers, commands, EOF, the optional
//! vmdesc trailer.
//!
//! # State after a failed load
//!
//! The first error ends the load and is returned; it names the section (idstr,
//! instance, section id), the field path and the byte offset. Sections before it were
//! loaded completely; the section that failed may be partly loaded (fields are loaded
//! in place, as in QEMU). Treat the destination as unusable, as QEMU does: do not run
//! the guest; load again into the same registry, or discard it. Every handler's
//! `load_cleanup` has run.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::config::Configuration;
use super::format;
use super::save::phase_of;
use super::vmdesc::{self, VmDesc};
use crate::error::{Error, ErrorKind, Result, SectionRef};
use crate::registry::{PartMut, Registry};
use crate::state::VmState;
use crate::wire::{Limits, Reader};

/// How a stream is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The local machine name. The stream's must be a prefix of it (QEMU's check).
    /// `None` accepts any machine.
    pub machine: Option<String>,
    /// Do not expect a configuration section (the source had `send-configuration` off).
    pub no_configuration: bool,
    /// Do not expect footers (the source had `send-section-footer` off).
    pub no_section_footers: bool,
    /// Skip FULL sections that nobody registered, using this vmdesc (see
    /// [`load_file`]) to know their lengths. Without it, such a section is an error,
    /// as in QEMU.
    pub skip_unknown: Option<VmDesc>,
    /// This side's target page bits when they differ from the legacy page size (QEMU
    /// sends `configuration/target-page-bits` only then). The stream's must agree:
    /// both absent, or equal.
    pub target_page_bits: Option<u32>,
    /// This side's validated capabilities (`x-ignore-shared`, `mapped-ram`); the
    /// stream's set must be the same (QEMU's rule). Default: none.
    pub capabilities: Vec<String>,
    /// Limits on stream-driven allocations.
    pub limits: Limits,
}

/// A section that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSection {
    /// The section's idstr, instance and id.
    pub section: SectionRef,
    /// Record type byte (START or FULL).
    pub kind: u8,
    /// Version in the header.
    pub version: u32,
    /// True if it was skipped because nobody registered it.
    pub skipped: bool,
}

/// What a successful load found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The configuration section, if there was one.
    pub configuration: Option<Configuration>,
    /// START and FULL sections in stream order.
    pub sections: Vec<LoadedSection>,
    /// PART/END sections read.
    pub continuation_sections: u64,
    /// Whether SWITCHOVER_START was seen.
    pub switchover_started: bool,
    /// The vmdesc trailer's JSON text, if present.
    pub vmdesc: Option<String>,
    /// Non-fatal oddities (QEMU only warns about them).
    pub warnings: Vec<String>,
    /// Bytes read.
    pub bytes: u64,
}

/// Loads a whole stream into the registry.
pub fn load_stream(
    registry: &mut Registry,
    r: &mut Reader<'_>,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    let mut active: Vec<usize> = Vec::new();
    let result = Loader {
        registry,
        opts,
        by_section_id: HashMap::new(),
        report: LoadReport::default(),
        active: &mut active,
    }
    .run(r);
    for &i in &active {
        if let Some(handler) = registry.entries_mut()[i].iterative_mut() {
            handler.load_cleanup();
        }
    }
    result
}

/// Loads a stream file. With `skip_unknown`, the vmdesc trailer is read first from the
/// end of the file, and FULL sections that nobody registered are skipped.
pub fn load_file(
    registry: &mut Registry,
    path: impl AsRef<Path>,
    mut opts: LoadOptions,
    skip_unknown: bool,
) -> Result<LoadReport> {
    let mut file = File::open(path)?;
    if skip_unknown {
        let desc = vmdesc::find_trailer(&mut file)?.ok_or_else(|| {
            Error::invalid(
                "stream",
                "skipping unknown sections needs the vmdesc trailer, and the file has none",
            )
        })?;
        opts.skip_unknown = Some(desc);
    }
    let mut r = Reader::from_io(BufReader::with_capacity(1 << 20, file)).with_limits(opts.limits);
    load_stream(registry, &mut r, &opts)
}

/// QEMU's configuration `post_load` checks besides the machine name: the target page
/// bits and the set of validated capabilities must agree with this side's.
fn check_configuration(cfg: &Configuration, opts: &LoadOptions) -> Result<()> {
    let stream_bits = Some(cfg.target_page_bits.target_page_bits).filter(|&b| b != 0);
    if stream_bits != opts.target_page_bits {
        let show = |b: Option<u32>| {
            b.map_or("the legacy page size".to_string(), |b| {
                format!("{b} page bits")
            })
        };
        return Err(Error::invalid(
            "configuration",
            format!(
                "the stream uses {}, this side {}",
                show(stream_bits),
                show(opts.target_page_bits)
            ),
        ));
    }
    let mut theirs: Vec<&str> = cfg
        .capabilities
        .capabilities
        .iter()
        .map(|c| c.0.as_str())
        .collect();
    let mut ours: Vec<&str> = opts.capabilities.iter().map(String::as_str).collect();
    theirs.sort_unstable();
    ours.sort_unstable();
    if theirs != ours {
        return Err(Error::invalid(
            "configuration",
            format!(
                "the stream's capabilities are {theirs:?}, this side's {ours:?}; they must be the same"
            ),
        ));
    }
    Ok(())
}

struct Loader<'a> {
    registry: &'a mut Registry,
    opts: &'a LoadOptions,
    /// Stream section id -> (entry index, version) for PART/END.
    by_section_id: HashMap<u32, (usize, u32)>,
    report: LoadReport,
    active: &'a mut Vec<usize>,
}

impl Loader<'_> {
    fn run(mut self, r: &mut Reader<'_>) -> Result<LoadReport> {
        self.header(r)?;
        for (i, e) in self.registry.entries_mut().iter_mut().enumerate() {
            let section = e.section_ref();
            if let Some(handler) = e.iterative_mut() {
                self.active.push(i);
                handler
                    .load_setup()
                    .map_err(|err| err.in_section(section))?;
            }
        }
        loop {
            let at = r.position();
            let ty = r.get_u8()?;
            match ty {
                format::SECTION_START | format::SECTION_FULL => self.full_section(r, ty, at)?,
                format::SECTION_PART | format::SECTION_END => self.part_section(r, ty, at)?,
                format::COMMAND => self.command(r, at)?,
                format::EOF => break,
                byte => {
                    return Err(Error::new(ErrorKind::UnknownRecordType { byte }).at_offset(at));
                }
            }
        }
        self.trailer(r)?;
        self.report.bytes = r.position();
        Ok(self.report)
    }

    fn header(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let magic = r.get_be32()?;
        if magic != format::MAGIC {
            return Err(Error::new(ErrorKind::BadMagic { found: magic }).at_offset(0));
        }
        let version = r.get_be32()?;
        if version != format::VERSION {
            return Err(
                Error::new(ErrorKind::UnsupportedFormatVersion { found: version }).at_offset(4),
            );
        }
        if self.opts.no_configuration {
            return Ok(());
        }
        let at = r.position();
        let ty = r.get_u8()?;
        if ty != format::CONFIGURATION {
            return Err(Error::invalid(
                "stream",
                format!("expected the configuration section (0x07), found 0x{ty:02x}"),
            )
            .at_offset(at));
        }
        let mut cfg = Configuration::default();
        cfg.load(r, 0)?;
        if let Some(local) = &self.opts.machine {
            cfg.check_machine(local).map_err(|e| e.at_offset(at + 5))?;
        }
        check_configuration(&cfg, self.opts).map_err(|e| e.at_offset(at))?;
        self.report.configuration = Some(cfg);
        Ok(())
    }

    fn full_section(&mut self, r: &mut Reader<'_>, ty: u8, at: u64) -> Result<()> {
        let section_id = r.get_be32()?;
        let idstr = r.get_counted_string()?;
        let instance_id = r.get_be32()?;
        let version = r.get_be32()?;
        let section = SectionRef {
            idstr,
            instance_id,
            section_id,
        };
        let Some(index) = self.registry.find(&section.idstr, instance_id) else {
            return self.skip_unknown(r, ty, section, version, at);
        };
        let entry = &mut self.registry.entries_mut()[index];
        let local = entry.version();
        if version > local {
            return Err(Error::new(ErrorKind::SectionVersionTooNew {
                stream: version,
                local,
            })
            .at_offset(at)
            .in_section(section));
        }
        let loaded = match entry.part_mut() {
            PartMut::Device(dev) if ty == format::SECTION_FULL => dev.load(r, version),
            PartMut::Iterative(handler) if ty == format::SECTION_START => {
                self.by_section_id.insert(section_id, (index, version));
                handler.load(r, version, phase_of(ty))
            }
            _ => Err(Error::invalid(
                "section",
                format!(
                    "a {} section for a {}",
                    format::record_name(ty),
                    if ty == format::SECTION_FULL {
                        "iterative handler"
                    } else {
                        "device"
                    }
                ),
            )
            .at_offset(at)),
        };
        loaded.map_err(|e| e.in_section(section.clone()))?;
        self.footer(r, section_id)
            .map_err(|e| e.in_section(section.clone()))?;
        self.report.sections.push(LoadedSection {
            section,
            kind: ty,
            version,
            skipped: false,
        });
        Ok(())
    }

    fn skip_unknown(
        &mut self,
        r: &mut Reader<'_>,
        ty: u8,
        section: SectionRef,
        version: u32,
        at: u64,
    ) -> Result<()> {
        let entry = match (&self.opts.skip_unknown, ty) {
            (Some(desc), format::SECTION_FULL) => desc.device(&section.idstr, section.instance_id),
            _ => None,
        };
        let Some(entry) = entry else {
            return Err(Error::new(ErrorKind::UnknownSection {
                idstr: section.idstr.clone(),
                instance_id: section.instance_id,
                section_id: section.section_id,
            })
            .at_offset(at)
            .in_section(section));
        };
        let len = vmdesc::payload_size(entry).map_err(|e| e.in_section(section.clone()))?;
        r.skip(len).map_err(|e| e.in_section(section.clone()))?;
        self.footer(r, section.section_id)
            .map_err(|e| e.in_section(section.clone()))?;
        self.report.sections.push(LoadedSection {
            section,
            kind: ty,
            version,
            skipped: true,
        });
        Ok(())
    }

    fn part_section(&mut self, r: &mut Reader<'_>, ty: u8, at: u64) -> Result<()> {
        let section_id = r.get_be32()?;
        let Some(&(index, version)) = self.by_section_id.get(&section_id) else {
            return Err(Error::new(ErrorKind::UnknownSectionId { section_id }).at_offset(at));
        };
        let entry = &mut self.registry.entries_mut()[index];
        let section = entry.section_ref();
        if let Some(handler) = entry.iterative_mut() {
            handler
                .load(r, version, phase_of(ty))
                .map_err(|e| e.in_section(section.clone()))?;
        }
        self.footer(r, section_id)
            .map_err(|e| e.in_section(section))?;
        self.report.continuation_sections += 1;
        Ok(())
    }

    fn footer(&mut self, r: &mut Reader<'_>, section_id: u32) -> Result<()> {
        if self.opts.no_section_footers {
            return Ok(());
        }
        let at = r.position();
        let marker = r.get_u8()?;
        if marker != format::SECTION_FOOTER {
            return Err(Error::new(ErrorKind::MissingFooter { found: marker }).at_offset(at));
        }
        let found = r.get_be32()?;
        if found != section_id {
            return Err(Error::new(ErrorKind::FooterMismatch {
                expected: section_id,
                found,
            })
            .at_offset(at));
        }
        Ok(())
    }

    fn command(&mut self, r: &mut Reader<'_>, at: u64) -> Result<()> {
        let cmd = r.get_be16()?;
        let len = r.get_be16()?;
        let Some(&(name, fixed)) = format::COMMANDS.get(cmd as usize).filter(|_| cmd != 0) else {
            return Err(Error::new(ErrorKind::InvalidCommand {
                cmd,
                len,
                detail: "not a command QEMU defines (1 to 11)",
            })
            .at_offset(at));
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(Error::new(ErrorKind::InvalidCommand {
                cmd,
                len,
                detail: "wrong payload length for this command",
            })
            .at_offset(at));
        }
        if cmd != format::CMD_SWITCHOVER_START {
            return Err(Error::new(ErrorKind::UnsupportedCommand { cmd, name, len }).at_offset(at));
        }
        self.report.switchover_started = true;
        for &i in self.active.iter() {
            if let Some(handler) = self.registry.entries_mut()[i].iterative_mut() {
                handler.switchover_start();
            }
        }
        Ok(())
    }

    /// After EOF: the optional vmdesc trailer. QEMU only warns if something else follows.
    fn trailer(&mut self, r: &mut Reader<'_>) -> Result<()> {
        let at = r.position();
        let next = r.peek(1)?.first().copied();
        match next {
            None => {}
            Some(format::VMDESCRIPTION) => {
                r.skip(1)?;
                let len = r.get_be32()?;
                let text = r.get_vec(len as u64)?;
                let text = String::from_utf8(text)
                    .map_err(|_| Error::invalid("vmdesc", "not UTF-8").at_offset(at + 5))?;
                self.report.vmdesc = Some(text);
            }
            Some(byte) => self.report.warnings.push(format!(
                "expected the vmdesc trailer at offset {at}, found byte 0x{byte:02x}"
            )),
        }
        Ok(())
    }
}

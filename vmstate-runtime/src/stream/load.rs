//! Loading a stream into a registry (QEMU's `qemu_loadvm_state`, spec 1.12). The
//! records come from the [record reader](super::records), which checks the grammar
//! (header, footers, commands, PART/END after START); the loader checks the
//! configuration against this side, hands each section payload to the device or
//! iterative handler registered under its idstr and instance (checking the version),
//! runs SWITCHOVER_START, and keeps the vmdesc trailer.
//!
//! # State after a failed load
//!
//! The first error ends the load and is returned; it names the section (idstr,
//! instance, section id), the field path and the byte offset. Sections before it were
//! loaded completely; the section that failed may be partly loaded (fields are loaded
//! in place, as in QEMU). Treat the destination as unusable, as QEMU does: do not run
//! the guest; load again into the same registry, or discard it. Every handler's
//! `load_cleanup` has run.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::config::Configuration;
use super::format;
use super::integrity::{self, Integrity};
use super::records::{Command, Footers, Record, RecordReader, SectionHeader, SectionKind, Trailer};
use super::vmdesc::{self, VmDesc};
use crate::error::{Error, ErrorKind, Result, SectionRef};
use crate::migrate::return_path::{self, Message};
use crate::ram::postcopy::{self, PostcopyIncoming};
use crate::registry::{PartMut, Registry};
use crate::state::VmState;
use crate::transport::ReadAhead;
use crate::wire::{Limits, Reader};
use std::sync::Arc;

/// How long the end of a postcopy stream waits for pages still on their way on the
/// postcopy-preempt channel (they may arrive after the main stream's last ones).
const SIDE_CHANNEL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Accept a stream that ends before every registered entry's section arrived,
    /// listing those entries in [`LoadReport::missing`] (QEMU accepts it silently).
    /// Default: such a stream is an error ([`ErrorKind::SectionsMissing`]). Devices whose
    /// `needed` may say no are never counted as missing.
    pub accept_partial: bool,
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
    /// Whether the source opened QEMU's return path (OPEN_RETURN_PATH).
    pub return_path: bool,
    /// Postcopy's figures, when the source switched to it (the guest then started at
    /// `POSTCOPY_RUN`, before the end of the stream).
    pub postcopy: Option<postcopy::PostcopyReport>,
    /// The vmdesc trailer's JSON text, if present.
    pub vmdesc: Option<String>,
    /// Non-fatal oddities (QEMU only warns about them).
    pub warnings: Vec<String>,
    /// Registered entries whose section the stream did not have, as `idstr (instance
    /// N)`; only with [`LoadOptions::accept_partial`] (otherwise it is an error).
    pub missing: Vec<String>,
    /// Bytes read.
    pub bytes: u64,
    /// The snapshot's integrity record, checked by [`load_file`] (`Absent` for
    /// [`load_stream`], which does not look for one).
    pub integrity: Integrity,
}

/// Loads a whole stream into the registry. A snapshot's integrity record is not
/// checked here (it is a property of a file: [`load_file`] checks it).
pub fn load_stream(
    registry: &mut Registry,
    r: &mut Reader<'_>,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    load_stream_with(registry, r, opts, &mut |_| Ok(()))
}

/// [`load_stream`], with `check` run on the configuration section right after QEMU's
/// own checks and before any other section is read (errors are placed at the machine
/// name). Saving for releases uses it to refuse streams of newer releases.
pub(crate) fn load_stream_with(
    registry: &mut Registry,
    r: &mut Reader<'_>,
    opts: &LoadOptions,
    check: &mut dyn FnMut(&Configuration) -> Result<()>,
) -> Result<LoadReport> {
    load_answering(registry, r, opts, check, None)
}

/// What starts the destination's guest.
pub(crate) type StartGuest<'a> = &'a mut dyn FnMut() -> Result<()>;

/// The destination's end of QEMU's return path while a stream loads: where PONG and
/// SWITCHOVER_ACK go (spec 1.8), and postcopy's page requests.
pub(crate) struct ReturnPath<'a> {
    /// The connection back to the source.
    pub out: &'a mut dyn Write,
    /// Postcopy's shared state (its requests share `out`), and what starts the guest
    /// at `POSTCOPY_RUN`.
    pub postcopy: Option<(Arc<PostcopyIncoming>, StartGuest<'a>)>,
    /// This side has QEMU's `switchover-ack` capability.
    pub switchover_ack: bool,
    /// The source sent OPEN_RETURN_PATH.
    pub open: bool,
    /// SWITCHOVER_ACK was sent.
    pub ack_sent: bool,
}

/// [`load_stream_with`], answering the source's return-path commands on `rp` (without
/// one, OPEN_RETURN_PATH and PING are errors, as in QEMU on a file).
pub(crate) fn load_answering(
    registry: &mut Registry,
    r: &mut Reader<'_>,
    opts: &LoadOptions,
    check: &mut dyn FnMut(&Configuration) -> Result<()>,
    rp: Option<&mut ReturnPath<'_>>,
) -> Result<LoadReport> {
    let mut active: Vec<usize> = Vec::new();
    let loaded = vec![false; registry.entries().len()];
    let footers = if opts.no_section_footers {
        Footers::Absent
    } else {
        Footers::Expected
    };
    let mut records = RecordReader::new(footers);
    if opts.no_configuration {
        records = records.without_configuration();
    }
    let result = Loader {
        registry,
        opts,
        records,
        report: LoadReport::default(),
        active: &mut active,
        loaded,
        check,
        rp,
        postcopy: PostcopyPhase::None,
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
///
/// A file that ends with an [integrity record](integrity) is checksummed as it is read:
/// a mismatch is an [`ErrorKind::IntegrityMismatch`] (also when the corruption made the
/// load fail first; the error then says where it stopped), and so are bytes after the
/// stream that are not a valid record. The report says what was found.
pub fn load_file(
    registry: &mut Registry,
    path: impl AsRef<Path>,
    mut opts: LoadOptions,
    skip_unknown: bool,
) -> Result<LoadReport> {
    let mut file = File::open(path)?;
    if opts.capabilities.iter().any(|c| c == "mapped-ram") {
        // QEMU's mapped-ram layout: pages read by position straight into guest memory,
        // the rest of the file through a reader that seeks over what it skips. Such
        // files carry no integrity record (QEMU's neither).
        let mut r = Reader::from_file(file)?.with_limits(opts.limits);
        return load_stream(registry, &mut r, &opts);
    }
    // A file that cannot seek (a pipe) has no record we could find first.
    let (end, record) = match integrity::find_record(&mut file) {
        Ok(found) => found,
        Err(_) => (u64::MAX, None),
    };
    if skip_unknown {
        let desc = vmdesc::find_trailer(&mut file)?.ok_or_else(|| {
            Error::invalid(
                "stream",
                "skipping unknown sections needs the vmdesc trailer, and the file has none",
            )
        })?;
        opts.skip_unknown = Some(desc);
    }
    // Read ahead in a thread: the next MiB arrives while this one is parsed and stored.
    let mut src = crc32c::Crc32cReader::new(ReadAhead::new(file.take(end)));
    let mut r = Reader::from_io(&mut src).with_limits(opts.limits);
    let loaded = load_stream(registry, &mut r, &opts);
    drop(r);
    // With a record, what the loader did not read (nothing, for an intact file) still
    // counts; a read error there leaves the record unchecked.
    let integrity = match record {
        Some(rec) => match std::io::copy(&mut src, &mut std::io::sink()) {
            Ok(_) => Some(integrity::verdict(rec, end, src.crc32c())),
            Err(e) => return Err(loaded.err().unwrap_or_else(|| e.into())),
        },
        None => None,
    };
    match (loaded, integrity) {
        (
            Err(e),
            Some(Integrity::Mismatch {
                record,
                length,
                computed,
            }),
        ) => Err(integrity_error(
            &record,
            length,
            computed,
            Some(e.to_string()),
        )),
        (Err(e), _) => Err(e),
        (
            Ok(_),
            Some(Integrity::Mismatch {
                record,
                length,
                computed,
            }),
        ) => Err(integrity_error(&record, length, computed, None)),
        (Ok(mut report), verdict) => {
            // Bytes the stream does not account for: a damaged record, or an appended
            // or spliced file; `end` is unknown (u64::MAX) for a pipe.
            let size = if end == u64::MAX { report.bytes } else { end };
            if report.bytes < size {
                let detail = match verdict {
                    Some(_) => format!(
                        "{} bytes stand between the end of the stream and its integrity record",
                        size - report.bytes
                    ),
                    None => format!(
                        "{} bytes follow the end of the stream and are not an integrity record \
                         (a damaged record, or bytes added to the file)",
                        size - report.bytes
                    ),
                };
                return Err(Error::new(ErrorKind::IntegrityMismatch {
                    detail,
                    first_error: None,
                })
                .at_offset(report.bytes)
                .in_record("integrity record"));
            }
            report.integrity = verdict.unwrap_or(Integrity::Absent);
            Ok(report)
        }
    }
}

fn integrity_error(
    record: &integrity::IntegrityRecord,
    length: u64,
    computed: u32,
    first_error: Option<String>,
) -> Error {
    Error::new(ErrorKind::IntegrityMismatch {
        detail: integrity::mismatch_text(record, length, computed),
        first_error,
    })
    .at_offset(length)
    .in_record("integrity record")
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

struct Loader<'a, 'b> {
    registry: &'a mut Registry,
    opts: &'a LoadOptions,
    records: RecordReader,
    report: LoadReport,
    active: &'a mut Vec<usize>,
    /// Per registry entry: whether its FULL or START section was read.
    loaded: Vec<bool>,
    check: &'a mut dyn FnMut(&Configuration) -> Result<()>,
    rp: Option<&'a mut ReturnPath<'b>>,
    postcopy: PostcopyPhase,
}

/// Where the destination is in postcopy (QEMU's `PostcopyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PostcopyPhase {
    None,
    /// `POSTCOPY_ADVISE` seen (discards may follow).
    Advised,
    /// `POSTCOPY_LISTEN`: pages are placed only if missing; the guest may run soon.
    Listening,
    /// `POSTCOPY_RUN`: the guest runs here.
    Running,
}

impl Loader<'_, '_> {
    fn run(mut self, r: &mut Reader<'_>) -> Result<LoadReport> {
        self.records.header(r)?;
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
            match self.records.next(r)? {
                Record::Configuration => self.configuration(r, at)?,
                Record::Section(header) => {
                    self.section(r, &header, at).map_err(|e| header.tag(e))?
                }
                Record::Footer { .. } => {}
                Record::Command(cmd) => self.command(&cmd, at)?,
                Record::Eof => break,
            }
        }
        if self.postcopy == PostcopyPhase::Listening {
            return Err(Error::invalid(
                "stream",
                "the stream ended after POSTCOPY_LISTEN without POSTCOPY_RUN",
            )
            .at_offset(r.position())
            .in_record("EOF"));
        }
        if let Some((incoming, _)) = self.rp.as_deref().and_then(|rp| rp.postcopy.as_ref())
            && self.postcopy != PostcopyPhase::None
        {
            // Advised, whether it switched or ended as precopy: every page must be here
            // (a missing one would make the guest wait for it forever).
            let (missing, side) = incoming.missing_at_end(SIDE_CHANNEL_GRACE);
            if missing > 0 {
                let why = side.map_or(String::new(), |e| {
                    format!(" (the preempt channel failed: {e})")
                });
                return Err(Error::invalid(
                    "stream",
                    format!("the stream ended with {missing} pages never sent{why}"),
                )
                .at_offset(r.position())
                .in_record("EOF"));
            }
            if self.postcopy == PostcopyPhase::Running {
                incoming.ended();
                self.report.postcopy = Some(incoming.report());
            }
        }
        self.check_complete(r.position())?;
        if self.postcopy == PostcopyPhase::Running {
            // No trailer after a postcopy stream: the source waits for SHUT instead.
            self.report.bytes = r.position();
            return Ok(self.report);
        }
        match self.records.trailer(r)? {
            Trailer::None => {}
            Trailer::Vmdesc { offset, json } => {
                let text = String::from_utf8(json).map_err(|_| {
                    Error::invalid("vmdesc", "not UTF-8")
                        .at_offset(offset + 5)
                        .in_record("vmdesc trailer")
                })?;
                self.report.vmdesc = Some(text);
            }
            // A snapshot without vmdesc: its integrity record follows EOF directly.
            Trailer::Other { .. } if r.peek(integrity::MAGIC.len())? == integrity::MAGIC => {}
            Trailer::Other { offset, byte } => self.report.warnings.push(format!(
                "expected the vmdesc trailer at offset {offset}, found byte 0x{byte:02x}"
            )),
        }
        self.report.bytes = r.position();
        Ok(self.report)
    }

    fn configuration(&mut self, r: &mut Reader<'_>, at: u64) -> Result<()> {
        let mut cfg = Configuration::default();
        let checked = (|| {
            cfg.load(r, 0)?;
            if let Some(local) = &self.opts.machine {
                cfg.check_machine(local).map_err(|e| e.at_offset(at + 5))?;
            }
            check_configuration(&cfg, self.opts).map_err(|e| e.at_offset(at))?;
            (self.check)(&cfg).map_err(|e| e.at_offset(at + 5))
        })();
        checked.map_err(|e| e.in_record("configuration"))?;
        self.report.configuration = Some(cfg);
        Ok(())
    }

    /// A section payload, dispatched to its entry; the caller tags errors with it.
    fn section(&mut self, r: &mut Reader<'_>, header: &SectionHeader, at: u64) -> Result<()> {
        let kind = header.kind;
        let Some(index) = self.registry.find(&header.idstr, header.instance_id) else {
            return self.skip_unknown(r, header, at);
        };
        let entry = &mut self.registry.entries_mut()[index];
        if kind.has_full_header() {
            if std::mem::replace(&mut self.loaded[index], true) {
                return Err(Error::new(ErrorKind::SectionSentTwice {
                    idstr: header.idstr.clone(),
                    instance_id: header.instance_id,
                })
                .at_offset(at));
            }
            let local = entry.version();
            if header.version > local {
                return Err(Error::new(ErrorKind::SectionVersionTooNew {
                    stream: header.version,
                    local,
                })
                .at_offset(at));
            }
        }
        match (entry.part_mut(), kind) {
            (PartMut::Device(dev), SectionKind::Full) => dev.load(r, header.version)?,
            (
                PartMut::Iterative(handler),
                SectionKind::Start | SectionKind::Part | SectionKind::End,
            ) => {
                handler.load(r, header.version, kind.phase())?;
                self.maybe_ack_switchover()?;
            }
            (part, _) => {
                return Err(Error::invalid(
                    "section",
                    format!(
                        "a {} section for a {}",
                        kind.name(),
                        match part {
                            PartMut::Device(_) => "device",
                            PartMut::Iterative(_) => "iterative handler",
                        }
                    ),
                )
                .at_offset(at));
            }
        }
        if kind.has_full_header() {
            self.report.sections.push(LoadedSection {
                section: header.section_ref(),
                kind: kind.byte(),
                version: header.version,
                skipped: false,
            });
        } else {
            self.report.continuation_sections += 1;
        }
        Ok(())
    }

    /// At EOF: every registered entry's section arrived, or is allowed not to.
    fn check_complete(&mut self, at: u64) -> Result<()> {
        // Devices whose `needed` may say no, and iterative handlers that are inactive
        // (they send no section), are not missing.
        let missing: Vec<String> = self
            .registry
            .entries_mut()
            .iter_mut()
            .zip(&self.loaded)
            .filter(|(_, loaded)| !**loaded)
            .filter_map(|(e, _)| {
                let optional = e.device().is_some_and(|d| d.sent_conditionally())
                    || e.iterative_mut().is_some_and(|h| !h.is_active());
                (!optional).then(|| format!("{} (instance {})", e.idstr(), e.instance_id()))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if self.opts.accept_partial {
            self.report.missing = missing;
            return Ok(());
        }
        Err(Error::new(ErrorKind::SectionsMissing { missing })
            .at_offset(at)
            .in_record("EOF"))
    }

    fn skip_unknown(&mut self, r: &mut Reader<'_>, header: &SectionHeader, at: u64) -> Result<()> {
        let entry = match (&self.opts.skip_unknown, header.kind) {
            (Some(desc), SectionKind::Full) => desc.device(&header.idstr, header.instance_id),
            _ => None,
        };
        let Some(entry) = entry else {
            return Err(Error::new(ErrorKind::UnknownSection {
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
                section_id: header.section_id,
            })
            .at_offset(at));
        };
        r.skip(vmdesc::payload_size(entry)?)?;
        self.report.sections.push(LoadedSection {
            section: header.section_ref(),
            kind: header.kind.byte(),
            version: header.version,
            skipped: true,
        });
        Ok(())
    }

    fn command(&mut self, cmd: &Command, at: u64) -> Result<()> {
        let tag = |e: Error| e.at_offset(at).in_record("COMMAND");
        match cmd.cmd {
            format::CMD_SWITCHOVER_START => {
                self.report.switchover_started = true;
                for &i in self.active.iter() {
                    if let Some(handler) = self.registry.entries_mut()[i].iterative_mut() {
                        handler.switchover_start();
                    }
                }
                Ok(())
            }
            format::CMD_OPEN_RETURN_PATH => {
                let Some(rp) = self.rp.as_deref_mut() else {
                    return Err(tag(Error::invalid(
                        "command",
                        "the source opened a return path (OPEN_RETURN_PATH), and this \
                         transport has none (receive a migration with migrate::receive)",
                    )));
                };
                rp.open = true;
                self.report.return_path = true;
                self.maybe_ack_switchover().map_err(tag)
            }
            format::CMD_PING => {
                let value =
                    u32::from_be_bytes([cmd.data[0], cmd.data[1], cmd.data[2], cmd.data[3]]);
                match self.rp.as_deref_mut() {
                    Some(rp) if rp.open => {
                        return_path::write_message(rp.out, &Message::Pong(value))
                            .map_err(|e| tag(Error::from(e).in_record("return path")))
                    }
                    _ => Err(tag(Error::invalid(
                        "command",
                        format!("PING ({value:#x}) received with no return path"),
                    ))),
                }
            }
            format::CMD_POSTCOPY_ADVISE => self.postcopy_advise(&cmd.data).map_err(tag),
            format::CMD_POSTCOPY_RAM_DISCARD => self.postcopy_discard(&cmd.data).map_err(tag),
            format::CMD_POSTCOPY_LISTEN => {
                if self.postcopy != PostcopyPhase::Advised {
                    return Err(tag(self.out_of_order("POSTCOPY_LISTEN")));
                }
                if let Some((incoming, _)) = self.rp.as_deref().and_then(|rp| rp.postcopy.as_ref())
                {
                    incoming.listen();
                }
                self.postcopy = PostcopyPhase::Listening;
                Ok(())
            }
            format::CMD_POSTCOPY_RUN => {
                if self.postcopy != PostcopyPhase::Listening {
                    return Err(tag(self.out_of_order("POSTCOPY_RUN")));
                }
                let (incoming, start_guest) = self
                    .rp
                    .as_deref_mut()
                    .and_then(|rp| rp.postcopy.as_mut())
                    .expect("postcopy was advised, so it has its state");
                incoming.started();
                start_guest().map_err(|e| {
                    tag(Error::invalid(
                        "POSTCOPY_RUN",
                        format!("the guest could not be started: {e}"),
                    ))
                })?;
                self.postcopy = PostcopyPhase::Running;
                Ok(())
            }
            format::CMD_PACKAGED => {
                let package = cmd.package.as_deref().unwrap_or_default();
                // The package's bytes follow the command's 9 (type, cmd, len, be32 size).
                self.package(package, at + 9)
            }
            _ => Err(tag(Error::new(ErrorKind::UnsupportedCommand {
                cmd: cmd.cmd,
                name: cmd.name,
                len: cmd.data.len() as u16,
            }))),
        }
    }

    /// `POSTCOPY_ADVISE`: every iterative handler gets ready to take pages on demand.
    fn postcopy_advise(&mut self, payload: &[u8]) -> Result<()> {
        if self.postcopy != PostcopyPhase::None {
            return Err(self.out_of_order("POSTCOPY_ADVISE"));
        }
        let Some(page_sizes) = postcopy::decode_advise(payload)? else {
            // QEMU's empty advise: postcopy of dirty bitmaps only, which needs block
            // devices this side does not have.
            return Err(Error::invalid(
                "POSTCOPY_ADVISE",
                "an empty advise (postcopy of dirty bitmaps only) is not supported",
            ));
        };
        let page_sizes = Some(page_sizes);
        let Some(incoming) = self
            .rp
            .as_deref()
            .and_then(|rp| rp.postcopy.as_ref().map(|p| p.0.clone()))
        else {
            return Err(Error::invalid(
                "POSTCOPY_ADVISE",
                "the source wants postcopy, which needs a return path and a running \
                 destination (receive the migration with migrate::receive)",
            ));
        };
        for &i in self.active.iter() {
            let entry = &mut self.registry.entries_mut()[i];
            let section = entry.section_ref();
            if let Some(handler) = entry.iterative_mut() {
                handler
                    .load_postcopy_advise(&incoming, page_sizes)
                    .map_err(|e| e.in_section(section))?;
            }
        }
        self.postcopy = PostcopyPhase::Advised;
        Ok(())
    }

    /// `POSTCOPY_RAM_DISCARD`: the handler that has the block drops the ranges.
    fn postcopy_discard(&mut self, payload: &[u8]) -> Result<()> {
        if self.postcopy != PostcopyPhase::Advised {
            return Err(self.out_of_order("POSTCOPY_RAM_DISCARD"));
        }
        let (block, ranges) = postcopy::decode_discard(payload)?;
        for &i in self.active.iter() {
            if let Some(handler) = self.registry.entries_mut()[i].iterative_mut()
                && handler.load_postcopy_discard(&block, &ranges)?
            {
                return Ok(());
            }
        }
        Err(Error::invalid(
            "POSTCOPY_RAM_DISCARD",
            format!("unknown RAM block '{block}'"),
        ))
    }

    fn out_of_order(&self, what: &str) -> Error {
        Error::invalid(
            "command",
            format!(
                "{what} in postcopy phase {:?} (QEMU's order: ADVISE, DISCARD, LISTEN, RUN)",
                self.postcopy
            ),
        )
    }

    /// The records of a `PACKAGED` command, loaded as part of the stream; they end
    /// at `POSTCOPY_RUN` or at the package's end. `at` is the package's offset.
    fn package(&mut self, bytes: &[u8], at: u64) -> Result<()> {
        let mut r = Reader::from_slice(bytes)
            .with_base_offset(at)
            .with_limits(self.opts.limits);
        let footers = if self.opts.no_section_footers {
            Footers::Absent
        } else {
            Footers::Expected
        };
        let outer = std::mem::replace(&mut self.records, RecordReader::for_package(footers));
        let result = self.package_records(&mut r);
        self.records = outer;
        result
    }

    fn package_records(&mut self, r: &mut Reader<'_>) -> Result<()> {
        loop {
            if !self.records.in_section() && r.at_end()? {
                return Ok(());
            }
            let at = r.position();
            match self.records.next(r)? {
                Record::Section(header) => {
                    self.section(r, &header, at).map_err(|e| header.tag(e))?
                }
                Record::Footer { .. } => {}
                Record::Command(cmd) if cmd.cmd == format::CMD_PACKAGED => {
                    return Err(Error::invalid("PACKAGED", "a package inside a package")
                        .at_offset(at)
                        .in_record("COMMAND"));
                }
                Record::Command(cmd) => {
                    self.command(&cmd, at)?;
                    if cmd.cmd == format::CMD_POSTCOPY_RUN {
                        return Ok(()); // QEMU stops reading the package here
                    }
                }
                Record::Configuration | Record::Eof => {
                    return Err(Error::invalid(
                        "PACKAGED",
                        "a configuration section or EOF inside a package",
                    )
                    .at_offset(at));
                }
            }
        }
    }

    /// Sends SWITCHOVER_ACK once the return path is open, this side has the capability,
    /// and every handler that needs the ack is ready.
    fn maybe_ack_switchover(&mut self) -> Result<()> {
        let Some(rp) = self.rp.as_deref_mut() else {
            return Ok(());
        };
        if !rp.open || !rp.switchover_ack || rp.ack_sent {
            return Ok(());
        }
        let entries = self.registry.entries_mut();
        let ready = self.active.iter().all(|&i| {
            entries[i]
                .iterative_mut()
                .is_none_or(|h| !h.switchover_ack_needed() || h.switchover_ready())
        });
        if ready {
            return_path::write_message(rp.out, &Message::SwitchoverAck)?;
            rp.ack_sent = true;
        }
        Ok(())
    }
}

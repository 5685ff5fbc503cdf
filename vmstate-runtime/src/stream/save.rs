//! Writing a stream: the phases of spec 1.2 and 4.2, exposed one by one for a
//! migration driver, and [`save_snapshot`] doing them all at once.

use std::io::Write;

use crate::json::Json;

use super::config::Configuration;
use super::format;
use super::records::{
    SectionKind, write_command, write_footer, write_full_header, write_part_header,
};
use crate::error::{Error, Result};
use crate::handler::{IterationStatus, IterativeHandler, Pending};
use crate::registry::{Entry, Registry};
use crate::save_policy::{SavePolicy, StreamSaveCtx};
use crate::state::VmState;
use crate::wire::Writer;

/// What the source writes besides the sections (QEMU's migration properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The configuration section's contents; `configuration.machine` names the machine.
    pub configuration: Configuration,
    /// Write the configuration section (QEMU: `send-configuration`, default on).
    pub send_configuration: bool,
    /// Write a footer after every section (QEMU: `send-section-footer`, default on).
    pub send_section_footer: bool,
    /// Write the SWITCHOVER_START command before the END sections (QEMU:
    /// `send-switchover-start`, on for machine types >= 10.0). Turn it off for
    /// receivers older than QEMU 9.2.
    pub send_switchover_start: bool,
    /// Write the vmdesc JSON trailer (QEMU: unless `suppress-vmdesc`).
    pub send_vmdesc: bool,
    /// The target page size written in the vmdesc (`page_size`).
    pub page_size: u64,
    /// Open QEMU's return path right after the configuration section: the
    /// `OPEN_RETURN_PATH` command, then `PING(1)` (QEMU's `return-path` capability).
    /// Only over a two-way connection: a destination reading a file refuses it.
    /// [`migrate_over`](crate::migrate::migrate_over) turns it on. Default: off.
    pub open_return_path: bool,
    /// Announce postcopy right after the return path is opened (`POSTCOPY_ADVISE`, with
    /// `page_size` as both the RAM page-size summary and the target page size; QEMU's
    /// `postcopy-ram` capability), so that [`SaveSession::start_postcopy`] may switch
    /// to it later. Default: off.
    pub postcopy: bool,
    /// End a snapshot written by [`save_snapshot`] with the [integrity
    /// record](super::integrity) (default on; QEMU ignores it). Live migrations never
    /// send it.
    pub integrity_record: bool,
}

impl StreamConfig {
    /// QEMU 10's defaults for a machine named `machine`.
    pub fn new(machine: impl Into<String>) -> Self {
        StreamConfig {
            configuration: Configuration::new(machine),
            send_configuration: true,
            send_section_footer: true,
            send_switchover_start: true,
            send_vmdesc: true,
            page_size: 4096,
            open_return_path: false,
            postcopy: false,
            integrity_record: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Begun,
    SetUp,
    /// Switched to postcopy: the guest runs on the destination.
    Postcopy,
    Completed,
    Failed,
}

/// Counters of one save.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Bytes written, trailer included.
    pub bytes: u64,
    /// PART rounds run.
    pub rounds: u64,
    /// FULL sections written.
    pub device_sections: u64,
}

/// One save in progress. Drive it with [`setup`](Self::setup), any number of
/// [`iterate`](Self::iterate), then [`complete`](Self::complete). If it is dropped
/// before completing, or a phase fails, every iterative handler's `save_cleanup`
/// runs and the source keeps running unchanged.
pub struct SaveSession<'r, 'w> {
    registry: &'r mut Registry,
    w: Writer<'w>,
    config: StreamConfig,
    policy: Option<&'r dyn SavePolicy>,
    devices_json: Vec<Json>,
    state: State,
    stats: SaveStats,
}

impl<'r, 'w> SaveSession<'r, 'w> {
    /// A session writing to `sink` (buffered internally; use a plain `File` or socket).
    pub fn new(registry: &'r mut Registry, sink: impl Write + 'w, config: StreamConfig) -> Self {
        Self::with_writer(registry, Writer::to_io(sink), config)
    }

    /// A session writing into a [`Writer`] (an in-memory one, say).
    pub fn with_writer(registry: &'r mut Registry, w: Writer<'w>, config: StreamConfig) -> Self {
        SaveSession {
            registry,
            w,
            config,
            policy: None,
            devices_json: Vec::new(),
            state: State::New,
            stats: SaveStats::default(),
        }
    }

    /// Saves device sections under `policy` (older versions, fewer subsections).
    pub fn with_policy(mut self, policy: &'r dyn SavePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.w.position()
    }

    /// Counters so far.
    pub fn stats(&self) -> SaveStats {
        SaveStats {
            bytes: self.w.position(),
            ..self.stats
        }
    }

    /// The part of the setup that carries no state: the header, the configuration
    /// section and the return-path commands, flushed. [`setup`](Self::setup) calls it
    /// if it was not called; a driver calls it first to hear from the destination (its
    /// PONG) before any state is sent.
    pub fn begin(&mut self) -> Result<()> {
        self.expect(State::New, "begin")?;
        let r = self.begin_inner();
        self.finish_phase(r, State::Begun)
    }

    fn begin_inner(&mut self) -> Result<()> {
        self.w.put_be32(format::MAGIC);
        self.w.put_be32(format::VERSION);
        if self.config.send_configuration {
            self.w.put_u8(format::CONFIGURATION);
            self.config.configuration.save(&mut self.w)?;
        }
        if self.config.open_return_path {
            write_command(&mut self.w, format::CMD_OPEN_RETURN_PATH, &[])?;
            write_command(&mut self.w, format::CMD_PING, &1u32.to_be_bytes())?;
        }
        if self.config.postcopy {
            let page = self.config.page_size;
            let advise = crate::ram::postcopy::encode_advise(page, page);
            write_command(&mut self.w, format::CMD_POSTCOPY_ADVISE, &advise)?;
        }
        self.w.flush()
    }

    /// Header, configuration section (unless [`begin`](Self::begin) wrote them) and
    /// every active handler's START section.
    pub fn setup(&mut self) -> Result<()> {
        if self.state == State::New {
            self.begin()?;
        }
        self.expect(State::Begun, "setup")?;
        let r = self.setup_inner();
        self.finish_phase(r, State::SetUp)
    }

    fn setup_inner(&mut self) -> Result<()> {
        let footer = self.config.send_section_footer;
        for e in self.registry.entries_mut() {
            let (version, id) = (e.version(), e.section_id());
            let section = e.section_ref();
            if let Some(handler) = e.iterative_mut()
                && handler.is_active()
            {
                write_full_header(
                    &mut self.w,
                    SectionKind::Start,
                    id,
                    &section.idstr,
                    section.instance_id,
                    version,
                )?;
                let saved = handler.save_setup(&mut self.w);
                saved.map_err(|err| err.in_section(section))?;
                put_footer(&mut self.w, footer, id);
                self.w.flush_if_full()?;
            }
        }
        self.w.flush()
    }

    /// Bytes the active handlers still have to send; `exact` asks them to synchronise.
    pub fn pending(&mut self, exact: bool) -> Pending {
        let mut total = Pending::default();
        let postcopy = self.state == State::Postcopy;
        for e in self.registry.entries_mut() {
            if let Some(handler) = e.iterative_mut()
                && handler.is_active()
                && (!postcopy || handler.has_postcopy())
            {
                let p = handler.pending(exact);
                total.must_precopy += p.must_precopy;
                total.can_postcopy += p.can_postcopy;
            }
        }
        total
    }

    /// One round: a PART section per active handler, sharing `budget` bytes in
    /// priority order. Returns `Done` when every handler is done.
    pub fn iterate(&mut self, budget: u64) -> Result<IterationStatus> {
        if self.state != State::Postcopy {
            self.expect(State::SetUp, "iterate")?;
        }
        let r = self.iterate_inner(budget);
        let status = match r {
            Ok(s) => s,
            Err(e) => return self.finish_phase(Err(e), State::Failed),
        };
        self.stats.rounds += 1;
        Ok(status)
    }

    fn iterate_inner(&mut self, budget: u64) -> Result<IterationStatus> {
        let start = self.w.position();
        let footer = self.config.send_section_footer;
        let mut all_done = true;
        let postcopy = self.state == State::Postcopy;
        for e in self.registry.entries_mut() {
            let id = e.section_id();
            let section = e.section_ref();
            if let Some(handler) = e.iterative_mut()
                && handler.is_active()
                && (!postcopy || handler.has_postcopy())
            {
                let left = budget.saturating_sub(self.w.position() - start);
                if left == 0 {
                    all_done = false;
                    break;
                }
                write_part_header(&mut self.w, SectionKind::Part, id);
                let status = handler
                    .save_iterate(&mut self.w, left)
                    .map_err(|err| err.in_section(section.clone()))?;
                put_footer(&mut self.w, footer, id);
                self.w.flush_if_full()?;
                all_done &= status == IterationStatus::Done;
            }
        }
        self.w.flush()?;
        Ok(if all_done {
            IterationStatus::Done
        } else {
            IterationStatus::More
        })
    }

    /// With the guest stopped: SWITCHOVER_START, END sections, every device's FULL
    /// section, EOF and the vmdesc trailer. Flushes the sink.
    ///
    /// After [`start_postcopy`](Self::start_postcopy): the END sections of the handlers
    /// that went on in postcopy, and EOF (no vmdesc, as QEMU).
    pub fn complete(&mut self) -> Result<SaveStats> {
        if self.state == State::Postcopy {
            let r = self.complete_postcopy();
            self.finish_phase(r, State::Completed)?;
            return Ok(self.stats());
        }
        self.expect(State::SetUp, "complete")?;
        let r = self.complete_inner();
        self.finish_phase(r, State::Completed)?;
        Ok(self.stats())
    }

    /// Lets every handler that goes on in postcopy prepare the switch while the guest
    /// still runs (QEMU connects its preempt channel at this point). Call it just
    /// before stopping the guest for [`start_postcopy`](Self::start_postcopy); an
    /// error leaves the stream as it was.
    pub fn prepare_postcopy(&mut self) -> Result<()> {
        self.expect(State::SetUp, "prepare_postcopy")?;
        for e in self.registry.entries_mut() {
            let section = e.section_ref();
            if let Some(handler) = e.iterative_mut()
                && handler.is_active()
                && handler.has_postcopy()
            {
                handler
                    .postcopy_prepare()
                    .map_err(|err| err.in_section(section.clone()))?;
            }
        }
        Ok(())
    }

    /// The switch to postcopy, with the guest stopped (QEMU's `postcopy_start`, spec
    /// 5.6): SWITCHOVER_START, the END sections of handlers that cannot go on in
    /// postcopy, `POSTCOPY_RAM_DISCARD` for every page still to send, `PING(2)`, the
    /// `PACKAGED` command holding `POSTCOPY_LISTEN`, every device's FULL section,
    /// `PING(3)` and `POSTCOPY_RUN`, then `PING(4)`, as QEMU 10.0.2 writes it. Everything
    /// up to the package has left when this returns `Ok` (so an error means the
    /// destination cannot have started the guest); `PING(4)` leaves with the next
    /// flush. Needs
    /// [`StreamConfig::postcopy`]. Afterwards [`iterate`](Self::iterate) sends the rest
    /// (requested pages first) and [`complete`](Self::complete) ends the stream.
    pub fn start_postcopy(&mut self) -> Result<()> {
        self.expect(State::SetUp, "start_postcopy")?;
        if !self.config.postcopy {
            return Err(Error::invalid(
                "save phase",
                "start_postcopy on a stream that did not advise postcopy (StreamConfig::postcopy)",
            ));
        }
        let r = self.start_postcopy_inner();
        self.finish_phase(r, State::Postcopy)
    }

    fn start_postcopy_inner(&mut self) -> Result<()> {
        let footer = self.config.send_section_footer;
        if self.config.send_switchover_start {
            write_command(&mut self.w, format::CMD_SWITCHOVER_START, &[])?;
        }
        self.end_sections(|h| !h.has_postcopy())?;
        let mut discards = Vec::new();
        for e in self.registry.entries_mut() {
            if let Some(handler) = e.iterative_mut()
                && handler.is_active()
                && handler.has_postcopy()
            {
                discards.extend(handler.postcopy_start()?);
            }
        }
        use crate::ram::postcopy::{DISCARDS_PER_COMMAND, encode_discard};
        for (block, ranges) in &discards {
            for chunk in ranges.chunks(DISCARDS_PER_COMMAND) {
                let payload = encode_discard(block, chunk);
                write_command(&mut self.w, format::CMD_POSTCOPY_RAM_DISCARD, &payload)?;
                self.w.flush_if_full()?;
            }
        }
        write_command(&mut self.w, format::CMD_PING, &2u32.to_be_bytes())?;
        // The package: what the destination loads before it starts the guest.
        let mut package = Writer::new();
        write_command(&mut package, format::CMD_POSTCOPY_LISTEN, &[])?;
        for e in self.registry.entries_mut() {
            let saved = save_device(&mut package, e, footer, self.policy);
            if saved
                .map_err(|err| err.in_section(e.section_ref()))?
                .is_some()
            {
                self.stats.device_sections += 1;
            }
        }
        write_command(&mut package, format::CMD_PING, &3u32.to_be_bytes())?;
        // (The spec adds PING(0x42) here; QEMU 10.0.2 does not send it, and this
        // writes what QEMU 10.0.2 writes: see compat-tests/fixtures/qemu-10.0.2-postcopy.)
        write_command(&mut package, format::CMD_POSTCOPY_RUN, &[])?;
        let package = package.into_vec();
        let len = u32::try_from(package.len())
            .map_err(|_| Error::invalid("PACKAGED", "device state larger than 4 GiB"))?;
        write_command(&mut self.w, format::CMD_PACKAGED, &len.to_be_bytes())?;
        self.w.put_bytes(&package);
        // Pushed out on its own: if this fails, POSTCOPY_RUN (the package's last
        // bytes) did not leave, and the guest may run here again. PING(4) goes with the
        // next flush; from here on the guest belongs to the destination.
        self.w.flush()?;
        write_command(&mut self.w, format::CMD_PING, &4u32.to_be_bytes())
    }

    fn complete_postcopy(&mut self) -> Result<()> {
        self.end_sections(|h| h.has_postcopy())?;
        self.w.put_u8(format::EOF);
        self.w.flush()
    }

    /// The END section of every active iterative handler that `pick` selects.
    fn end_sections(&mut self, pick: fn(&dyn IterativeHandler) -> bool) -> Result<()> {
        let footer = self.config.send_section_footer;
        for e in self.registry.entries_mut() {
            let id = e.section_id();
            let section = e.section_ref();
            if let Some(handler) = e.iterative_mut()
                && handler.is_active()
                && pick(&*handler)
            {
                write_part_header(&mut self.w, SectionKind::End, id);
                handler
                    .save_complete(&mut self.w)
                    .map_err(|err| err.in_section(section.clone()))?;
                put_footer(&mut self.w, footer, id);
                self.w.flush_if_full()?;
            }
        }
        Ok(())
    }

    fn complete_inner(&mut self) -> Result<()> {
        let footer = self.config.send_section_footer;
        if self.config.send_switchover_start {
            write_command(&mut self.w, format::CMD_SWITCHOVER_START, &[])?;
        }
        self.end_sections(|_| true)?;
        for e in self.registry.entries_mut() {
            let saved = save_device(&mut self.w, e, footer, self.policy);
            if let Some(json) = saved.map_err(|err| err.in_section(e.section_ref()))? {
                self.devices_json.push(json);
                self.stats.device_sections += 1;
            }
            self.w.flush_if_full()?;
        }
        self.w.put_u8(format::EOF);
        if self.config.send_vmdesc {
            let json = self.vmdesc_json()?;
            let len = u32::try_from(json.len())
                .map_err(|_| Error::invalid("vmdesc", "longer than 4 GiB"))?;
            self.w.put_u8(format::VMDESCRIPTION);
            self.w.put_be32(len);
            self.w.put_bytes(json.as_bytes());
        }
        self.w.flush()
    }

    /// The vmdesc JSON: configuration, page size, and every FULL section written.
    fn vmdesc_json(&mut self) -> Result<String> {
        let mut top = Vec::new();
        if self.config.send_configuration {
            let (_, cfg) = self.config.configuration.save_described()?;
            top.push(("configuration".into(), Json::from(&cfg)));
        }
        top.push(("page_size".into(), self.config.page_size.into()));
        top.push((
            "devices".into(),
            Json::Array(std::mem::take(&mut self.devices_json)),
        ));
        Ok(crate::qjson::Style::QEMU.to_string_json(&Json::Object(top)))
    }

    /// Every phase at once, as QEMU's `savevm`: setup, rounds without a rate limit
    /// until every handler is done, completion. A handler that never finishes would
    /// loop forever (QEMU's savevm has the same contract), so after 1,000,000 rounds
    /// the save fails.
    pub fn save_all(mut self) -> Result<SaveStats> {
        self.setup()?;
        for _ in 0..1_000_000 {
            if self.iterate(u64::MAX)? == IterationStatus::Done {
                return self.complete();
            }
        }
        Err(Error::invalid(
            "save",
            "iterative handlers did not finish after 1,000,000 rounds",
        ))
    }

    /// The writer, after [`complete`](Self::complete) (to reuse an in-memory buffer).
    pub fn into_writer(mut self) -> Writer<'w> {
        std::mem::take(&mut self.w)
    }

    fn expect(&self, state: State, what: &str) -> Result<()> {
        if self.state == state {
            Ok(())
        } else {
            Err(Error::invalid(
                "save phase",
                format!("{what} called in state {:?}", self.state),
            ))
        }
    }

    /// Records the outcome of a phase; any failure cleans up every handler.
    fn finish_phase<T>(&mut self, r: Result<T>, next: State) -> Result<T> {
        match r {
            Ok(v) => {
                self.state = next;
                if next == State::Completed {
                    self.cleanup();
                }
                Ok(v)
            }
            Err(e) => {
                self.state = State::Failed;
                self.cleanup();
                Err(e)
            }
        }
    }

    fn cleanup(&mut self) {
        for e in self.registry.entries_mut() {
            if let Some(handler) = e.iterative_mut() {
                handler.save_cleanup();
            }
        }
    }
}

impl Drop for SaveSession<'_, '_> {
    fn drop(&mut self) {
        if matches!(
            self.state,
            State::New | State::Begun | State::SetUp | State::Postcopy
        ) {
            self.cleanup();
        }
    }
}

/// A footer after a section, when the stream has them.
fn put_footer(w: &mut Writer<'_>, enabled: bool, section_id: u32) {
    if enabled {
        write_footer(w, section_id);
    }
}

/// Writes one device's FULL section if it is needed; returns its vmdesc entry. The
/// caller adds the section to errors.
fn save_device(
    w: &mut Writer<'_>,
    e: &mut Entry,
    footer: bool,
    policy: Option<&dyn SavePolicy>,
) -> Result<Option<Json>> {
    let (id, idstr, instance_id) = (e.section_id(), e.idstr().to_string(), e.instance_id());
    let Some(dev) = e.device_mut() else {
        return Ok(None);
    };
    if !dev.needed() {
        return Ok(None);
    }
    let desc = dev.description();
    let version = policy.map_or(desc.version, |p| p.save_version(desc));
    write_full_header(w, SectionKind::Full, id, &idstr, instance_id, version)?;
    let mut ctx = StreamSaveCtx::new(policy);
    dev.save(w, &mut ctx)?;
    put_footer(w, footer, id);
    let mut entry = vec![
        ("name".into(), idstr.as_str().into()),
        ("instance_id".into(), u64::from(instance_id).into()),
    ];
    if let Json::Object(vmsd) = ctx.finish() {
        entry.extend(vmsd);
    }
    Ok(Some(Json::Object(entry)))
}

/// Saves everything at once, as QEMU's `savevm`: setup, rounds until every handler is
/// done (no rate limit), completion, then the [integrity record](super::integrity)
/// unless `config.integrity_record` is off. Returns the counters.
///
/// ```
/// use vmstate::{Registry, Registration, VmState};
/// use vmstate::stream::{StreamConfig, save_snapshot};
///
/// #[derive(VmState, Default)]
/// #[vmstate(name = "port92")]
/// struct Port92 { outport: u8 }
///
/// let mut reg = Registry::new();
/// reg.register_device(Port92 { outport: 2 }, Registration::new()).unwrap();
/// let mut bytes = Vec::new();
/// save_snapshot(&mut reg, &mut bytes, StreamConfig::new("demo-1.0")).unwrap();
/// assert_eq!(&bytes[..4], b"QEVM");
/// ```
pub fn save_snapshot(
    registry: &mut Registry,
    sink: impl Write,
    config: StreamConfig,
) -> Result<SaveStats> {
    let with_record = config.integrity_record;
    saved_with_record(sink, with_record, |sink| {
        SaveSession::new(registry, sink, config).save_all()
    })
}

/// Saves a snapshot in QEMU's `mapped-ram` layout to `path`, atomically (a temporary
/// file, fsync, rename): every RAM handler must have been made
/// [`with_mapped_ram`](crate::ram::RamHandler::with_mapped_ram), the guest stopped;
/// the configuration gets the `mapped-ram` capability. Zero pages are holes in the
/// file. No integrity record is appended: the mapped-ram layout is QEMU's, read by
/// positioned I/O, and QEMU's own files carry none.
///
/// Load it with [`load_file`](super::load_file), `LoadOptions::capabilities`
/// listing `mapped-ram` and the RAM handlers made `with_mapped_ram` (or with QEMU:
/// the `mapped-ram` capability and `migrate-incoming file:PATH`).
pub fn save_mapped_ram_snapshot(
    registry: &mut Registry,
    path: impl AsRef<std::path::Path>,
    mut config: StreamConfig,
) -> Result<SaveStats> {
    config.configuration.add_capability("mapped-ram");
    config.integrity_record = false;
    let mut out = crate::transport::AtomicFile::create(path)?;
    let stats =
        SaveSession::with_writer(registry, Writer::to_fd(out.file()?), config).save_all()?;
    out.commit()?;
    Ok(stats)
}

/// Runs `save` into `sink`, then, when `with_record`, appends the integrity record of
/// what it wrote.
pub(crate) fn saved_with_record<W: Write>(
    sink: W,
    with_record: bool,
    save: impl FnOnce(&mut dyn Write) -> Result<SaveStats>,
) -> Result<SaveStats> {
    let mut sink = super::integrity::ChecksumWriter::new(sink);
    let mut stats = save(&mut sink)?;
    if with_record {
        sink.finish()?;
        stats.bytes += super::integrity::RECORD_LEN;
    }
    Ok(stats)
}

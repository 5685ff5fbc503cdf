//! What takes part in a save or load: devices and iterative handlers, each with an
//! idstr, an instance id, a section id and a priority (QEMU's `savevm_state.handlers`).
//!
//! Entries are kept in save order: higher [`Priority`] first, then registration order.
//! Section ids are assigned at registration from a counter and never reused, as in
//! QEMU, so they can have gaps and need not follow the stream order. One exception to
//! the counter: an iterative handler never gets id 0, because QEMU's loader would send
//! its PART/END sections to another device (see [`Registry::register_iterative`]).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vmstate::{Registration, Registry, VmState};
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "i8259")]
//! struct Pic { imr: u8 }
//!
//! let mut reg = Registry::new();
//! let master = Arc::new(Mutex::new(Pic::default()));
//! reg.register_device(master.clone(), Registration::new()).unwrap();
//! reg.register_device(Pic::default(), Registration::new()).unwrap();
//! let ids: Vec<_> = reg.sections().map(|s| (s.idstr.to_string(), s.instance_id)).collect();
//! assert_eq!(ids, [("i8259".to_string(), 0), ("i8259".to_string(), 1)]);
//! ```

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::description::VmStateDescription;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::IterativeHandler;
use crate::save_policy::StreamSaveCtx;
use crate::state::VmState;
use crate::wire::{Reader, Writer};

/// QEMU's `MigrationPriority`: entries with a higher priority are saved and loaded first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// MIG_PRI_LOW.
    Low = 1,
    /// MIG_PRI_DEFAULT (also what QEMU's "uninitialized" 0 means).
    #[default]
    Default = 2,
    /// MIG_PRI_IOMMU.
    Iommu = 3,
    /// MIG_PRI_PCI_BUS.
    PciBus = 4,
    /// MIG_PRI_VIRTIO_MEM.
    VirtioMem = 5,
    /// MIG_PRI_APIC.
    Apic = 6,
    /// MIG_PRI_GICV3_ITS.
    Gicv3Its = 7,
    /// MIG_PRI_GICV3.
    Gicv3 = 8,
    /// MIG_PRI_MAX.
    Max = 9,
}

/// A device state as the stream engine sees it: object-safe, implemented for every
/// `T: VmState + Send` and for `Arc<Mutex<T>>` (a device shared with the emulator).
pub trait Device: Send {
    /// The device's description.
    fn description(&self) -> &'static VmStateDescription;
    /// Whether its FULL section is sent (the description's top-level `needed`).
    fn needed(&mut self) -> bool;
    /// Whether a stream may lack its section because `needed` may say no on the source
    /// (a load then does not report it missing). Default: false.
    fn sent_conditionally(&self) -> bool {
        false
    }
    /// Writes the section payload, describing it.
    fn save(&mut self, w: &mut Writer<'_>, ctx: &mut StreamSaveCtx<'_>) -> Result<()>;
    /// Loads a section payload written at `version`.
    fn load(&mut self, r: &mut Reader<'_>, version: u32) -> Result<()>;
    /// The device itself, for downcasting.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: VmState + Send + 'static> Device for T {
    fn description(&self) -> &'static VmStateDescription {
        T::DESCRIPTION
    }
    fn needed(&mut self) -> bool {
        VmState::needed(self)
    }
    fn sent_conditionally(&self) -> bool {
        T::SENT_CONDITIONALLY
    }
    fn save(&mut self, w: &mut Writer<'_>, ctx: &mut StreamSaveCtx<'_>) -> Result<()> {
        self.save_state(w, ctx)
            .map_err(|e| e.in_vmsd(T::DESCRIPTION.name))
    }
    fn load(&mut self, r: &mut Reader<'_>, version: u32) -> Result<()> {
        VmState::load(self, r, version)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<T: VmState + Send + 'static> Device for Arc<Mutex<T>> {
    fn description(&self) -> &'static VmStateDescription {
        T::DESCRIPTION
    }
    fn needed(&mut self) -> bool {
        lock(self).needed()
    }
    fn sent_conditionally(&self) -> bool {
        T::SENT_CONDITIONALLY
    }
    fn save(&mut self, w: &mut Writer<'_>, ctx: &mut StreamSaveCtx<'_>) -> Result<()> {
        Device::save(&mut *lock(self), w, ctx)
    }
    fn load(&mut self, r: &mut Reader<'_>, version: u32) -> Result<()> {
        VmState::load(&mut *lock(self), r, version)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Locks a mutex, taking the value even if another thread panicked while holding it
/// (device state stays usable for saving; the panic is that thread's to report).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How an entry is registered: its idstr, instance id and priority.
///
/// ```
/// use vmstate::{Priority, Registration};
/// let r = Registration::new().path("0000:00:01.1").instance(0).priority(Priority::PciBus);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registration {
    path: Option<String>,
    idstr: Option<String>,
    instance_id: Option<u32>,
    priority: Priority,
}

impl Registration {
    /// Default: the description's name as idstr, the next free instance id, default
    /// priority.
    pub fn new() -> Self {
        Self::default()
    }

    /// A device path: the idstr becomes `"<path>/<name>"` (QEMU's qdev device path,
    /// e.g. `0000:00:01.1/ide`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// An explicit idstr instead of the description's name.
    pub fn idstr(mut self, idstr: impl Into<String>) -> Self {
        self.idstr = Some(idstr.into());
        self
    }

    /// An explicit instance id (default: 1 + the largest one with the same idstr, or 0,
    /// as QEMU's `VMSTATE_INSTANCE_ID_ANY`).
    pub fn instance(mut self, instance_id: u32) -> Self {
        self.instance_id = Some(instance_id);
        self
    }

    /// The priority (default [`Priority::Default`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
}

/// What an entry is.
enum EntryKind {
    Device(Box<dyn Device>),
    Iterative {
        handler: Box<dyn IterativeHandler>,
        version: u32,
    },
}

/// A mutable view of what an entry is.
pub(crate) enum PartMut<'a> {
    Device(&'a mut dyn Device),
    Iterative(&'a mut dyn IterativeHandler),
}

/// A registered entry. Its identity (idstr, instance id, section id, priority) is
/// fixed at registration; the stream engine, the schema dump and the release code see
/// it through [`Registry::entries`] and [`Registry::entries_mut`], which can neither
/// add, remove nor reorder entries.
pub(crate) struct Entry {
    idstr: String,
    instance_id: u32,
    section_id: u32,
    priority: Priority,
    kind: EntryKind,
}

impl Entry {
    /// The idstr written in its section headers.
    pub(crate) fn idstr(&self) -> &str {
        &self.idstr
    }

    /// The instance id written in its section headers.
    pub(crate) fn instance_id(&self) -> u32 {
        self.instance_id
    }

    /// The section id assigned at registration.
    pub(crate) fn section_id(&self) -> u32 {
        self.section_id
    }

    /// The device, if the entry is one.
    pub(crate) fn device(&self) -> Option<&dyn Device> {
        match &self.kind {
            EntryKind::Device(d) => Some(d.as_ref()),
            EntryKind::Iterative { .. } => None,
        }
    }

    /// The device, if the entry is one, to save or load it.
    pub(crate) fn device_mut(&mut self) -> Option<&mut dyn Device> {
        match &mut self.kind {
            EntryKind::Device(d) => Some(d.as_mut()),
            EntryKind::Iterative { .. } => None,
        }
    }

    /// What the entry is, to save or load it.
    pub(crate) fn part_mut(&mut self) -> PartMut<'_> {
        match &mut self.kind {
            EntryKind::Device(d) => PartMut::Device(d.as_mut()),
            EntryKind::Iterative { handler, .. } => PartMut::Iterative(handler.as_mut()),
        }
    }

    /// The iterative handler, if the entry is one.
    pub(crate) fn iterative_mut(&mut self) -> Option<&mut dyn IterativeHandler> {
        match &mut self.kind {
            EntryKind::Device(_) => None,
            EntryKind::Iterative { handler, .. } => Some(handler.as_mut()),
        }
    }

    /// The local version: the description's for devices, the registered one for handlers.
    pub(crate) fn version(&self) -> u32 {
        match &self.kind {
            EntryKind::Device(d) => d.description().version,
            EntryKind::Iterative { version, .. } => *version,
        }
    }

    pub(crate) fn section_ref(&self) -> crate::error::SectionRef {
        crate::error::SectionRef {
            idstr: self.idstr.clone(),
            instance_id: self.instance_id,
            section_id: self.section_id,
        }
    }
}

/// A registered entry, as listed by [`Registry::sections`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionInfo<'a> {
    /// The idstr written in the section header.
    pub idstr: &'a str,
    /// The instance id.
    pub instance_id: u32,
    /// The section id.
    pub section_id: u32,
    /// The version written in the section header.
    pub version: u32,
    /// The priority.
    pub priority: Priority,
    /// True for iterative handlers, false for devices.
    pub iterative: bool,
}

/// A handle to a registered entry, for [`Registry::unregister`] and
/// [`Registry::device_mut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectionHandle(u32);

impl SectionHandle {
    /// The section id assigned at registration.
    pub fn section_id(&self) -> u32 {
        self.0
    }
}

/// The set of devices and iterative handlers that take part in a save or load.
#[derive(Default)]
pub struct Registry {
    /// In save order: priority (highest first), then registration order.
    entries: Vec<Entry>,
    next_section_id: u32,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a device. Its idstr is the description's name, prefixed by the
    /// registration's path if any.
    pub fn register_device<D: Device + 'static>(
        &mut self,
        device: D,
        reg: Registration,
    ) -> Result<SectionHandle> {
        let name = device.description().name;
        let idstr = reg.idstr.clone().unwrap_or_else(|| match &reg.path {
            Some(p) => format!("{p}/{name}"),
            None => name.to_string(),
        });
        self.insert(idstr, reg, EntryKind::Device(Box::new(device)))
    }

    /// Registers an iterative handler under `idstr` with the version written in its
    /// section headers (QEMU's `register_savevm_live`; RAM is `("ram", 4)`).
    ///
    /// If it would get section id 0, it gets 1 (and 0 stays unused): QEMU matches a
    /// PART/END section to the first of its handlers whose last loaded section id equals
    /// it, and handlers not loaded yet count as 0, so QEMU would hand a PART section with
    /// id 0 to the device it registered first. (Found against QEMU 10.0.2.)
    pub fn register_iterative<H: IterativeHandler + 'static>(
        &mut self,
        idstr: &str,
        version: u32,
        handler: H,
        reg: Registration,
    ) -> Result<SectionHandle> {
        let idstr = match &reg.path {
            Some(p) => format!("{p}/{idstr}"),
            None => idstr.to_string(),
        };
        // QEMU's loader matches a PART/END section to the first handler whose
        // `load_section_id` equals its id, and handlers not loaded yet have 0 there: a
        // PART section with id 0 would go to whatever QEMU registered first (the
        // `timer` device on x86). So an iterative handler never gets section id 0.
        if self.next_section_id == 0 {
            self.next_section_id = 1;
        }
        self.insert(
            idstr,
            reg,
            EntryKind::Iterative {
                handler: Box::new(handler),
                version,
            },
        )
    }

    fn insert(
        &mut self,
        idstr: String,
        reg: Registration,
        kind: EntryKind,
    ) -> Result<SectionHandle> {
        if idstr.is_empty() || idstr.len() > 255 {
            return Err(Error::invalid(
                "idstr",
                format!("'{idstr}' must be 1 to 255 bytes long"),
            ));
        }
        let instance_id = match reg.instance_id {
            Some(id) => id,
            None => {
                let largest = self
                    .entries
                    .iter()
                    .filter(|e| e.idstr == idstr)
                    .map(|e| e.instance_id)
                    .max();
                match largest {
                    None => 0,
                    Some(n) => n.checked_add(1).ok_or_else(|| {
                        Error::invalid(
                            "instance id",
                            format!("'{idstr}' already has instance {n}, the largest possible"),
                        )
                    })?,
                }
            }
        };
        if self.find(&idstr, instance_id).is_some() {
            return Err(Error::new(ErrorKind::DuplicateSection {
                idstr,
                instance_id,
            }));
        }
        let section_id = self.next_section_id;
        self.next_section_id += 1;
        let at = self
            .entries
            .iter()
            .position(|e| e.priority < reg.priority)
            .unwrap_or(self.entries.len());
        self.entries.insert(
            at,
            Entry {
                idstr,
                instance_id,
                section_id,
                priority: reg.priority,
                kind,
            },
        );
        Ok(SectionHandle(section_id))
    }

    /// Removes an entry (hot-unplug). Its section id is not reused. Returns whether
    /// the entry existed.
    pub fn unregister(&mut self, handle: SectionHandle) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.section_id != handle.0);
        before != self.entries.len()
    }

    /// The registered entries in save order.
    pub fn sections(&self) -> impl Iterator<Item = SectionInfo<'_>> {
        self.entries.iter().map(|e| SectionInfo {
            idstr: &e.idstr,
            instance_id: e.instance_id,
            section_id: e.section_id,
            version: e.version(),
            priority: e.priority,
            iterative: matches!(e.kind, EntryKind::Iterative { .. }),
        })
    }

    /// The handle of the entry registered as `idstr` / `instance_id` (to unplug a
    /// device found by name).
    pub fn find_section(&self, idstr: &str, instance_id: u32) -> Option<SectionHandle> {
        self.find(idstr, instance_id)
            .map(|i| SectionHandle(self.entries[i].section_id))
    }

    /// A registered device of type `T`, if the handle names one (for an
    /// `Arc<Mutex<T>>` device, ask for `Arc<Mutex<T>>`).
    pub fn device_mut<T: 'static>(&mut self, handle: SectionHandle) -> Option<&mut T> {
        self.entries
            .iter_mut()
            .find(|e| e.section_id == handle.0)
            .and_then(|e| match &mut e.kind {
                EntryKind::Device(d) => d.as_any_mut().downcast_mut::<T>(),
                EntryKind::Iterative { .. } => None,
            })
    }

    pub(crate) fn find(&self, idstr: &str, instance_id: u32) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.idstr == idstr && e.instance_id == instance_id)
    }

    /// The entries in save order, read-only.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries in save order, to save or load them.
    pub(crate) fn entries_mut(&mut self) -> &mut [Entry] {
        &mut self.entries
    }
}

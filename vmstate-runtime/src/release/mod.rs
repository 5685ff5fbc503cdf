//! Releases of an emulator and the section versions each understands, for saving a
//! stream that an older release can load.
//!
//! A [`Release`] is a semver version, the machine name its streams carry in the
//! configuration section (`demo-2.0`), and what it understands: its schema, a typed
//! [`Dump`] (every section, its version and minimum version, its fields and its
//! subsections). The current release is declared
//! from its own descriptions with [`Release::new`]; older releases from the schema file
//! kept with each release ([`Release::from_schema_str`]), since their device code is
//! gone from the current build. A [`ReleaseMap`] lists them in order.
//!
//! Two things follow:
//!
//! - **Saving for an older release** ([`save_for_release`], or [`ForRelease`] as the
//!   [`SavePolicy`](crate::stream::SavePolicy) of a [`SaveSession`]): each section and
//!   subsection is written at the version the target release has, leaving out the
//!   fields added later (`since`), and the subsections the target does not know are
//!   left out while their `needed` is false. When state cannot be expressed for the
//!   target (a needed subsection it does not know, a device it does not know, a layout
//!   that differs from the target's at that version), the save fails naming the device
//!   and the state instead of writing a stream the old release would misread. The
//!   layouts are compared field by field: what this build writes at the target's
//!   version against what the target's schema reads at that version.
//! - **Refusing streams of newer releases** ([`ReleaseMap::check_stream_machine`],
//!   [`load_for_release`]): a stream whose machine name is not a release this one knows
//!   fails before any section is read, with an error naming both releases.
//!
//! `vmstate_tools::compat` (in the `vmstate-tools` crate) is a test harness built on
//! these: golden streams and schemas per release, the schema checker between
//! consecutive releases (`check_steps`), and the load matrix between releases.
//!
//! ```
//! use vmstate::release::{Release, ReleaseMap, Version, load_for_release, save_for_release};
//! use vmstate::stream::LoadOptions;
//! use vmstate::{Reader, Registration, Registry, VmState};
//!
//! // Release 1.0 had a version-1 "port92"; release 1.1 added `gate` (version 2).
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 1)]
//! struct Port92V1 { outport: u8 }
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 2, min_version = 1)]
//! struct Port92 {
//!     outport: u8,
//!     #[vmstate(since = 2)]
//!     gate: u8,
//! }
//!
//! // In practice the 1.0 entry comes from the schema file kept with release 1.0.
//! let r1_0 = Release::new(Version::new(1, 0, 0), "demo-1.0", [("port92", Port92V1::DESCRIPTION)]);
//! let r1_1 = Release::new(Version::new(1, 1, 0), "demo-1.1", [("port92", Port92::DESCRIPTION)]);
//! let releases = ReleaseMap::new([r1_0, r1_1]).unwrap();
//!
//! // Release 1.1 saves for release 1.0: section version 1, no `gate`.
//! let mut reg = Registry::new();
//! reg.register_device(Port92 { outport: 2, gate: 1 }, Registration::new()).unwrap();
//! let target = releases.find("1.0").unwrap();
//! let mut stream = Vec::new();
//! save_for_release(&mut reg, &mut stream, releases.current().stream_config(), target).unwrap();
//!
//! // Release 1.0 loads it; it only knows itself, so a 1.1 stream would be refused.
//! let old = ReleaseMap::new([releases.releases()[0].clone()]).unwrap();
//! let mut dst = Registry::new();
//! let h = dst.register_device(Port92V1::default(), Registration::new()).unwrap();
//! let loaded = load_for_release(&old, &mut dst, &mut Reader::from_slice(&stream), &LoadOptions::default()).unwrap();
//! assert_eq!(loaded.written_by.machine(), "demo-1.0");
//! assert_eq!(dst.device_mut::<Port92V1>(h).unwrap().outport, 2);
//!
//! let err = old.check_stream_machine("demo-1.1").unwrap_err();
//! assert!(err.to_string().starts_with("stream written by release 1.1.0 (machine demo-1.1), which is newer than this release 1.0.0 (machine demo-1.0)"));
//! ```
//!
//! See `docs/compatibility.md`, "Releases and saving for an older release", for which
//! changes keep saving for an older release possible.

mod layout;
mod policy;

use std::fmt;
use std::io::Write;

use serde_json::Value;

pub use policy::ForRelease;
/// The semver version type releases are named with (re-exported from `semver`).
pub use semver::Version;

use crate::description::VmStateDescription;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::schema::{Description, Dump};
use crate::stream::{
    LoadOptions, LoadReport, SaveSession, SaveStats, StreamConfig, load_stream_with,
};
use crate::wire::Reader;

/// The `what` of the [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) errors of a save
/// for an older release.
pub const SAVE_ERROR: &str = "save for an older release";
/// The `what` of the [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) errors of a load
/// that checks the stream's release.
pub const LOAD_ERROR: &str = "stream release";

/// One release of an emulator: its version, its machine name and what it understands
/// (its schema).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    version: Version,
    schema: Dump,
}

/// A top-level section of a release, with its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionVersions<'a> {
    /// The section name (the schema's top-level key: an idstr or a device type name).
    pub name: &'a str,
    /// The name of its description.
    pub vmsd: &'a str,
    /// The version the release writes.
    pub version: u32,
    /// The oldest version the release loads.
    pub min_version: u32,
}

impl Release {
    /// The release with these devices: `(section name, description)` pairs, as for
    /// [`Dump::from_descriptions`]. This is how the current release is declared, next to its
    /// device definitions.
    pub fn new<'a, I>(version: Version, machine: impl Into<String>, sections: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'static VmStateDescription)>,
    {
        let schema = Dump::from_descriptions(&machine.into(), sections);
        Release { version, schema }
    }

    /// A release from its schema dump (the file kept when it was released). The machine
    /// name is the dump's `vmschkmachine` name.
    pub fn from_dump(version: Version, schema: Dump) -> Self {
        Release { version, schema }
    }

    /// [`from_dump`](Self::from_dump) from the dump as JSON; a value that is not a
    /// `-dump-vmstate` dump is an error naming what is missing or unexpected.
    pub fn from_schema(version: Version, schema: Value) -> std::result::Result<Self, ReleaseError> {
        match Dump::from_json(schema) {
            Ok(dump) => Ok(Self::from_dump(version, dump)),
            Err(e) => Err(ReleaseError::InvalidSchema {
                release: version,
                detail: e.to_string(),
            }),
        }
    }

    /// [`from_dump`](Self::from_dump) from the text of a schema file; an error names what
    /// is missing or unexpected, with its line and column.
    pub fn from_schema_str(
        version: Version,
        text: &str,
    ) -> std::result::Result<Self, ReleaseError> {
        match text.parse::<Dump>() {
            Ok(dump) => Ok(Self::from_dump(version, dump)),
            Err(e) => {
                let not_json = if e.is_syntax() || e.is_eof() {
                    "not JSON: "
                } else {
                    ""
                };
                Err(ReleaseError::InvalidSchema {
                    release: version,
                    detail: format!("{not_json}{e}"),
                })
            }
        }
    }

    /// The release's version.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The machine name its streams carry in the configuration section.
    pub fn machine(&self) -> &str {
        self.schema.machine()
    }

    /// The schema: what the release understands.
    pub fn schema(&self) -> &Dump {
        &self.schema
    }

    /// The schema as the file to keep with the release (QEMU's `-dump-vmstate` text).
    pub fn schema_text(&self) -> String {
        self.schema.to_text()
    }

    /// A [`StreamConfig`] naming this release's machine.
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig::new(self.machine())
    }

    /// The top-level sections with their versions, in schema order.
    pub fn sections(&self) -> impl Iterator<Item = SectionVersions<'_>> {
        self.schema.sections().iter().map(|(name, section)| {
            let d = &section.description;
            SectionVersions {
                name,
                vmsd: &d.name,
                version: d.version_id,
                min_version: d.minimum_version_id,
            }
        })
    }

    /// The section named `name` (a schema key), if the release has it.
    pub fn section(&self, name: &str) -> Option<SectionVersions<'_>> {
        self.sections().find(|s| s.name == name)
    }

    /// The first description named `vmsd` anywhere in the schema: a section's, a nested
    /// struct's or a subsection's (depth first, in schema order).
    pub fn description(&self, vmsd: &str) -> Option<&Description> {
        let mut stack: Vec<&Description> = self
            .schema
            .sections()
            .iter()
            .rev()
            .map(|(_, s)| &s.description)
            .collect();
        while let Some(d) = stack.pop() {
            if d.name == vmsd {
                return Some(d);
            }
            let nested = d.fields().iter().filter_map(|f| f.description.as_ref());
            let children: Vec<&Description> = nested.chain(d.subsections()).collect();
            stack.extend(children.into_iter().rev());
        }
        None
    }

    /// The description of the top-level section whose description is named `vmsd`.
    pub(crate) fn top_description(&self, vmsd: &str) -> Option<&Description> {
        self.schema
            .sections()
            .iter()
            .map(|(_, s)| &s.description)
            .find(|d| d.name == vmsd)
    }

    /// The subsections the release knows under the description named `parent`, with
    /// their versions.
    pub fn subsections(&self, parent: &str) -> Vec<(&str, u32)> {
        self.description(parent)
            .map(|d| {
                d.subsections()
                    .iter()
                    .map(|s| (s.name.as_str(), s.version_id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the release knows subsection `sub` under the description `parent`.
    pub fn knows_subsection(&self, parent: &str, sub: &str) -> bool {
        self.subsections(parent).iter().any(|(n, _)| *n == sub)
    }

    /// Checks that every device of `registry` is declared in this release, with the same
    /// description (a device registered but missing from the release's list, or changed
    /// without updating it, is an error). Run it where the machine is built.
    pub fn check_registry(&self, registry: &Registry) -> std::result::Result<(), ReleaseError> {
        let dump = Dump::from_registry(self.machine(), registry);
        for (name, entry) in dump.sections() {
            let detail = match self.schema.section(name) {
                None => "it is registered but not declared in the release",
                Some(declared) if declared != entry => {
                    "its description differs from the one declared in the release"
                }
                Some(_) => continue,
            };
            return Err(ReleaseError::RegistryMismatch {
                release: self.version.clone(),
                section: name.clone(),
                detail: detail.into(),
            });
        }
        Ok(())
    }
}

/// Every release an emulator build knows, oldest first; the last one is the build's own.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseMap {
    releases: Vec<Release>,
}

impl ReleaseMap {
    /// A map of these releases, sorted by version. Versions and machine names must be
    /// unique, and there must be at least one release.
    pub fn new(
        releases: impl IntoIterator<Item = Release>,
    ) -> std::result::Result<Self, ReleaseError> {
        let mut releases: Vec<Release> = releases.into_iter().collect();
        if releases.is_empty() {
            return Err(ReleaseError::InvalidMap {
                detail: "a release map needs at least one release".into(),
            });
        }
        releases.sort_by(|a, b| a.version.cmp(&b.version));
        for pair in releases.windows(2) {
            if pair[0].version == pair[1].version {
                return Err(ReleaseError::InvalidMap {
                    detail: format!("release {} is listed twice", pair[0].version),
                });
            }
        }
        for (i, r) in releases.iter().enumerate() {
            if let Some(other) = releases[..i].iter().find(|o| o.machine() == r.machine()) {
                return Err(ReleaseError::InvalidMap {
                    detail: format!(
                        "releases {} and {} have the same machine name '{}'",
                        other.version,
                        r.version,
                        r.machine()
                    ),
                });
            }
        }
        Ok(ReleaseMap { releases })
    }

    /// The build's own release: the newest.
    pub fn current(&self) -> &Release {
        self.releases.last().expect("a release map is never empty")
    }

    /// Every release, oldest first.
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// The release with this version.
    pub fn get(&self, version: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    /// The release whose streams carry this machine name.
    pub fn by_machine(&self, machine: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.machine() == machine)
    }

    /// A release by machine name or by version (`"2.0"`, `"2.0.0"`, `"2"`).
    pub fn find(&self, spec: &str) -> Option<&Release> {
        self.by_machine(spec)
            .or_else(|| parse_version(spec).and_then(|v| self.get(&v)))
    }

    /// A [`StreamConfig`] naming the current release's machine.
    pub fn stream_config(&self) -> StreamConfig {
        self.current().stream_config()
    }

    /// The release that wrote a stream whose configuration section names `machine`:
    /// one of the releases this build knows, or an error naming the stream's release and
    /// this one ([`ReleaseError::NewerRelease`] for a release after this one).
    ///
    /// This replaces QEMU's machine-name check (a prefix comparison with the local
    /// name), which would refuse every older release.
    pub fn check_stream_machine(
        &self,
        machine: &str,
    ) -> std::result::Result<&Release, ReleaseError> {
        if let Some(r) = self.by_machine(machine) {
            return Ok(r);
        }
        let local = self.current();
        let ours = machine_version(local.machine()).map(|(family, _)| family);
        let theirs = machine_version(machine).filter(|(family, _)| Some(*family) == ours);
        let newer = matches!(&theirs, Some((_, v)) if *v > local.version);
        let info = Box::new(StreamRelease {
            stream_machine: machine.to_string(),
            stream_version: theirs.map(|(_, v)| v),
            local_machine: local.machine().to_string(),
            local_version: local.version.clone(),
            known: self
                .releases
                .iter()
                .map(|r| (r.version.clone(), r.machine().to_string()))
                .collect(),
        });
        Err(if newer {
            ReleaseError::NewerRelease(info)
        } else {
            ReleaseError::UnknownRelease(info)
        })
    }
}

/// A stream's machine name that names no release this one knows, and this release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRelease {
    /// The machine name in the stream.
    pub stream_machine: String,
    /// The release it names, when it is named like ours (`<family>-<version>`).
    pub stream_version: Option<Version>,
    /// This release's machine name.
    pub local_machine: String,
    /// This release.
    pub local_version: Version,
    /// The releases this one knows, with their machine names.
    pub known: Vec<(Version, String)>,
}

/// What went wrong with a release map or a stream's release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    /// The stream names a release after this one (`stream_version` is set).
    NewerRelease(Box<StreamRelease>),
    /// The stream names a machine that is no release this one knows (an unknown older
    /// release, or another emulator's machine).
    UnknownRelease(Box<StreamRelease>),
    /// A schema that is not a `-dump-vmstate` dump.
    InvalidSchema {
        /// The release it was given for.
        release: Version,
        /// What is wrong.
        detail: String,
    },
    /// Releases that do not make a map (duplicates, none).
    InvalidMap {
        /// What is wrong.
        detail: String,
    },
    /// A registered device that the release does not declare as it is.
    RegistryMismatch {
        /// The release.
        release: Version,
        /// The section (idstr).
        section: String,
        /// What differs.
        detail: String,
    },
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::NewerRelease(r) => {
                let known: Vec<String> = r.known.iter().map(|(v, _)| v.to_string()).collect();
                let stream = r
                    .stream_version
                    .as_ref()
                    .map_or_else(|| r.stream_machine.clone(), Version::to_string);
                let (local, local_machine) = (&r.local_version, &r.local_machine);
                write!(
                    f,
                    "stream written by release {stream} (machine {}), which is newer than this \
                     release {local} (machine {local_machine}); this release knows releases up \
                     to {local} ({}): load the stream with release {stream} or later, or have \
                     {stream} save it for release {local}",
                    r.stream_machine,
                    known.join(", ")
                )
            }
            ReleaseError::UnknownRelease(r) => {
                let known: Vec<String> =
                    r.known.iter().map(|(v, m)| format!("{v} ({m})")).collect();
                let (local, local_machine) = (&r.local_version, &r.local_machine);
                match &r.stream_version {
                    Some(v) => write!(
                        f,
                        "stream written by release {v} (machine {}), which this release \
                         {local} (machine {local_machine}) does not know",
                        r.stream_machine
                    )?,
                    None => write!(
                        f,
                        "stream written for machine {}, which is no release this release \
                         {local} (machine {local_machine}) knows",
                        r.stream_machine
                    )?,
                }
                write!(f, "; it knows {}", known.join(", "))
            }
            ReleaseError::InvalidSchema { release, detail } => {
                write!(f, "invalid schema for release {release}: {detail}")
            }
            ReleaseError::InvalidMap { detail } => write!(f, "invalid release map: {detail}"),
            ReleaseError::RegistryMismatch {
                release,
                section,
                detail,
            } => write!(
                f,
                "device section '{section}' does not match release {release}: {detail}"
            ),
        }
    }
}

impl std::error::Error for ReleaseError {}

impl From<ReleaseError> for Error {
    fn from(e: ReleaseError) -> Self {
        let what = match e {
            ReleaseError::NewerRelease(_) | ReleaseError::UnknownRelease(_) => LOAD_ERROR,
            _ => "release",
        };
        Error::invalid(what, e.to_string())
    }
}

/// A version written the short way machine names use: `"2"`, `"2.1"`, or full semver.
pub fn parse_version(text: &str) -> Option<Version> {
    if let Ok(v) = Version::parse(text) {
        return Some(v);
    }
    let mut parts = text.split('.');
    let num = |p: Option<&str>| -> Option<u64> {
        let p = p?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let major = num(parts.next())?;
    let minor = match parts.next() {
        None => 0,
        some => num(some)?,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Version::new(major, minor, 0))
}

/// Splits a machine name `<family>-<version>` (`demo-2.1` → `("demo-", 2.1.0)`), at the
/// first `-` followed by something that reads as a version.
pub fn machine_version(machine: &str) -> Option<(&str, Version)> {
    machine.match_indices('-').find_map(|(i, _)| {
        let rest = &machine[i + 1..];
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        parse_version(rest).map(|v| (&machine[..=i], v))
    })
}

/// Saves a snapshot for `target`, an older release (or the current one): the
/// configuration section names the target's machine, and each device section and
/// subsection is written at the target's version (see [`ForRelease`]). Fails before
/// writing anything if a needed device cannot be expressed for the target, and during
/// the save if a needed subsection cannot (the sink then holds a partial stream: write
/// to an [`AtomicFile`](crate::transport::AtomicFile) and commit only on success).
/// Iterative handlers (RAM) are written at their registered versions. Like
/// [`save_snapshot`](crate::stream::save_snapshot), it ends with the integrity record
/// unless `config.integrity_record` is off.
pub fn save_for_release(
    registry: &mut Registry,
    sink: impl Write,
    mut config: StreamConfig,
    target: &Release,
) -> Result<SaveStats> {
    let policy = ForRelease::new(target, registry)?;
    config.configuration.machine = target.machine().to_string();
    let with_record = config.integrity_record;
    crate::stream::save::saved_with_record(sink, with_record, |sink| {
        SaveSession::new(registry, sink, config)
            .with_policy(&policy)
            .save_all()
    })
}

/// A load by [`load_for_release`].
#[derive(Debug)]
pub struct ReleaseLoad<'m> {
    /// What the loader found.
    pub report: LoadReport,
    /// The release that wrote the stream.
    pub written_by: &'m Release,
}

/// Loads a stream written by any release `releases` knows: the configuration section's
/// machine name is checked with [`ReleaseMap::check_stream_machine`] before any section
/// is read (instead of `opts.machine`'s prefix check, which is ignored), then the stream
/// is loaded with [`load_stream`](crate::stream::load_stream), whose per-section version checks still apply.
pub fn load_for_release<'m>(
    releases: &'m ReleaseMap,
    registry: &mut Registry,
    r: &mut Reader<'_>,
    opts: &LoadOptions,
) -> Result<ReleaseLoad<'m>> {
    let no_config = || {
        Error::invalid(
            LOAD_ERROR,
            "the stream has no configuration section, so the release that wrote it is unknown",
        )
    };
    if opts.no_configuration {
        return Err(no_config());
    }
    let opts = LoadOptions {
        machine: None,
        ..opts.clone()
    };
    let mut written_by = None;
    let report = load_stream_with(registry, r, &opts, &mut |cfg| {
        written_by = Some(releases.check_stream_machine(&cfg.machine)?);
        Ok(())
    })?;
    let written_by = written_by.ok_or_else(no_config)?;
    Ok(ReleaseLoad { report, written_by })
}

#[cfg(test)]
mod tests;

//! A harness for compatibility test suites across releases: golden streams and schemas
//! kept per release, the checker between consecutive releases, every golden stream
//! loaded by every release, and saving for older releases.
//!
//! Each release whose device code is kept in the test binary (as frozen copies, one
//! module per release) is a [`Subject`]: the [`ReleaseMap`] it knows (its own release
//! last) and how to build its machine, fresh or in a deterministic state whose stream is
//! a *golden stream*. A [`Suite`] over a fixtures directory then
//!
//! - writes or checks the fixtures ([`Suite::check_fixtures`]): `<golden>-<version>.mig`
//!   for each golden of each subject and `schema-<version>.json` for each subject's
//!   release. With `VMSTATE_BLESS=1` in the environment it writes them; otherwise a
//!   regenerated file that differs from the kept one is a failure, so fixtures cannot
//!   drift silently;
//! - runs the checker between consecutive releases ([`Suite::check_steps`]);
//! - loads every golden stream into every release ([`Suite::matrix`]), each cell
//!   checked against the expectation the test writes for it: loads (then a check of
//!   the loaded values) or fails (with an error containing a given text);
//! - saves a newer release's golden machine for an older release and loads the result
//!   there ([`Suite::downgrade`]).
//!
//! Golden streams of releases whose code was dropped stay loadable as rows of the
//! matrix ([`Suite::archived`]).
//!
//! ```no_run
//! use vmstate_tools::compat::{Expect, Subject, Suite, device};
//! use vmstate::release::{Release, ReleaseMap, Version};
//! use vmstate::{Registration, Registry, VmState};
//!
//! mod r1 {
//!     use vmstate::VmState;
//!     #[derive(VmState, Default)]
//!     #[vmstate(name = "port92", version = 1)]
//!     pub struct Port92 { pub outport: u8 }
//! }
//! mod r2 {
//!     use vmstate::VmState;
//!     #[derive(VmState, Default)]
//!     #[vmstate(name = "port92", version = 2, min_version = 1)]
//!     pub struct Port92 { pub outport: u8, #[vmstate(since = 2)] pub gate: u8 }
//! }
//!
//! fn machine<D: vmstate::Device + 'static>(dev: D) -> Registry {
//!     let mut reg = Registry::new();
//!     reg.register_device(dev, Registration::new()).unwrap();
//!     reg
//! }
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/compat");
//! let r1 = Release::new(Version::new(1, 0, 0), "demo-1.0", [("port92", r1::Port92::DESCRIPTION)]);
//! let r2 = Release::new(Version::new(2, 0, 0), "demo-2.0", [("port92", r2::Port92::DESCRIPTION)]);
//! let suite = Suite::new(dir)
//!     .subject(
//!         Subject::new(ReleaseMap::new([r1.clone()]).unwrap(), || machine(r1::Port92::default()))
//!             .golden("idle", || machine(r1::Port92 { outport: 2 })),
//!     )
//!     .subject(
//!         Subject::new(ReleaseMap::new([r1, r2]).unwrap(), || machine(r2::Port92::default()))
//!             .golden("idle", || machine(r2::Port92 { outport: 2, gate: 1 })),
//!     );
//!
//! suite.check_fixtures().unwrap(); // VMSTATE_BLESS=1 writes them
//! for step in suite.check_steps(&Default::default()) {
//!     assert!(step.problems.is_empty(), "{} -> {}: {:?}", step.from, step.to, step.problems);
//! }
//! let v1 = Version::new(1, 0, 0);
//! suite
//!     .matrix(|cell| match (cell.written_by.major, cell.loaded_by.major) {
//!         (1, 1) => Expect::loads(|reg| {
//!             let dev = device::<r1::Port92>(reg, "port92")?;
//!             if dev.outport == 2 { Ok(()) } else { Err(format!("outport {}", dev.outport)) }
//!         }),
//!         (2, 1) => Expect::fails("newer than this release 1.0.0"),
//!         (_, _) => Expect::loads(|reg| Ok(())),
//!     })
//!     .assert_ok();
//! let mut old = suite.downgrade("idle", &Version::new(2, 0, 0), &v1).unwrap();
//! assert_eq!(device::<r1::Port92>(&mut old, "port92").unwrap().outport, 2);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use vmstate::registry::Registry;
use vmstate::release::{Release, ReleaseMap, Version, load_for_release, save_for_release};
use vmstate::schema::Dump;
use vmstate::stream::LoadOptions;
use vmstate::wire::Reader;
use vmstate::{Error, Result};

use crate::check::{self, CheckOptions, Problem};

/// The environment variable that makes [`Suite::check_fixtures`] write the fixtures
/// (`VMSTATE_BLESS=1`).
pub const BLESS_ENV: &str = "VMSTATE_BLESS";

/// The checker's result between two consecutive releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The older release.
    pub from: Version,
    /// The next release.
    pub to: Version,
    /// What [`check::check`] reports for a migration from `from` to `to`.
    pub problems: Vec<Problem>,
}

/// Runs the schema checker between each release of `releases` and the next (a
/// migration from the older to the newer), in order. An empty `problems` list means
/// every stream of the older release loads in the newer one, as far as the schemas can
/// tell.
pub fn check_steps(releases: &ReleaseMap, opts: &CheckOptions) -> Vec<Step> {
    releases
        .releases()
        .windows(2)
        .map(|w| Step {
            from: w[0].version().clone(),
            to: w[1].version().clone(),
            problems: check::check(w[0].schema(), w[1].schema(), opts),
        })
        .collect()
}

type Machine = Box<dyn Fn() -> Registry>;
type Check = Box<dyn Fn(&mut Registry) -> std::result::Result<(), String>>;

/// One release whose code is in the test binary.
pub struct Subject {
    known: ReleaseMap,
    fresh: Machine,
    goldens: Vec<(String, Machine)>,
}

impl Subject {
    /// A release that knows `known` (its own release last, the older ones typically
    /// from their schema files), with `fresh` building its machine in its initial state
    /// (what a destination builds before loading).
    pub fn new(known: ReleaseMap, fresh: impl Fn() -> Registry + 'static) -> Self {
        Subject {
            known,
            fresh: Box::new(fresh),
            goldens: Vec::new(),
        }
    }

    /// A golden stream: the machine `machine` builds, in a deterministic state, saved by
    /// this release into `<name>-<version>.mig`.
    pub fn golden(
        mut self,
        name: impl Into<String>,
        machine: impl Fn() -> Registry + 'static,
    ) -> Self {
        self.goldens.push((name.into(), Box::new(machine)));
        self
    }

    /// The release.
    pub fn release(&self) -> &Release {
        self.known.current()
    }

    /// The releases it knows.
    pub fn known(&self) -> &ReleaseMap {
        &self.known
    }

    /// A fresh machine.
    pub fn fresh(&self) -> Registry {
        (self.fresh)()
    }

    /// The golden machine named `name`, if there is one.
    pub fn golden_machine(&self, name: &str) -> Option<Registry> {
        self.goldens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m())
    }

    /// The names of its golden streams.
    pub fn golden_names(&self) -> impl Iterator<Item = &str> {
        self.goldens.iter().map(|(n, _)| n.as_str())
    }

    /// The golden machine `name` saved as this release saves it: the stream alone,
    /// without the snapshot's integrity record (goldens pin the wire format, and stay
    /// comparable with the goldens of releases written before the record existed).
    pub fn save_golden(&self, name: &str) -> Result<Vec<u8>> {
        let mut reg = self
            .golden_machine(name)
            .ok_or_else(|| Error::invalid("golden stream", format!("no golden named '{name}'")))?;
        let mut out = Vec::new();
        let mut config = self.known.stream_config();
        config.integrity_record = false;
        vmstate::stream::save_snapshot(&mut reg, &mut out, config)?;
        Ok(out)
    }
}

/// One cell of the matrix: a golden stream and the release loading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The golden stream's name.
    pub golden: String,
    /// The release that wrote it.
    pub written_by: Version,
    /// The release that loads it.
    pub loaded_by: Version,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} loaded by {}",
            self.golden, self.written_by, self.loaded_by
        )
    }
}

/// What a cell must do.
pub enum Expect {
    /// Load, then pass the check on the loaded machine.
    Loads(Check),
    /// Fail with an error whose text contains this.
    Fails(String),
}

impl Expect {
    /// The stream loads and `check` accepts the loaded machine.
    pub fn loads(
        check: impl Fn(&mut Registry) -> std::result::Result<(), String> + 'static,
    ) -> Self {
        Expect::Loads(Box::new(check))
    }

    /// The load fails with an error whose text contains `text`.
    pub fn fails(text: impl Into<String>) -> Self {
        Expect::Fails(text.into())
    }
}

/// The outcome of one cell.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// `"loads"` or `"fails with \"...\""`.
    pub expected: String,
    /// `"loaded"`, or the error.
    pub outcome: String,
    /// Whether the outcome is the expected one (and the check passed).
    pub ok: bool,
    /// Why not, when not.
    pub mismatch: Option<String>,
}

/// The outcome of [`Suite::matrix`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every cell, by golden stream then loading release.
    pub cells: Vec<CellResult>,
}

impl Report {
    /// The cells whose outcome was not the expected one.
    pub fn failures(&self) -> impl Iterator<Item = &CellResult> {
        self.cells.iter().filter(|c| !c.ok)
    }

    /// Panics with the whole table if a cell did not do what was expected.
    #[track_caller]
    pub fn assert_ok(&self) {
        if self.failures().next().is_some() {
            panic!("compatibility matrix failed:\n{self}");
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cells {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            write!(
                f,
                "{mark} {}: expected {}, {}",
                c.cell, c.expected, c.outcome
            )?;
            if let Some(m) = &c.mismatch {
                write!(f, " ({m})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Fixture problems found by [`Suite::check_fixtures`], one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures(pub Vec<String>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.0 {
            writeln!(f, "{line}")?;
        }
        write!(
            f,
            "(if the change is intended, rerun with {BLESS_ENV}=1 to rewrite the fixtures, \
             and review the diff)"
        )
    }
}

impl std::error::Error for Failures {}

/// The suite over a fixtures directory.
pub struct Suite {
    dir: PathBuf,
    subjects: Vec<Subject>,
    archived: Vec<(Version, Vec<String>)>,
    bless: bool,
}

impl Suite {
    /// A suite keeping its fixtures in `dir`. Blessing is on when `VMSTATE_BLESS=1`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Suite {
            dir: dir.into(),
            subjects: Vec::new(),
            archived: Vec::new(),
            bless: std::env::var(BLESS_ENV).is_ok_and(|v| v == "1"),
        }
    }

    /// Adds a release whose code is in the test binary.
    pub fn subject(mut self, subject: Subject) -> Self {
        self.subjects.push(subject);
        self.subjects
            .sort_by(|a, b| a.release().version().cmp(b.release().version()));
        self
    }

    /// Adds the golden streams kept from a release whose code is gone: rows of the
    /// matrix, never regenerated.
    pub fn archived(mut self, version: Version, goldens: &[&str]) -> Self {
        self.archived
            .push((version, goldens.iter().map(|g| g.to_string()).collect()));
        self
    }

    /// Turns blessing on or off (overriding `VMSTATE_BLESS`).
    pub fn blessing(mut self, on: bool) -> Self {
        self.bless = on;
        self
    }

    /// Whether [`check_fixtures`](Self::check_fixtures) writes the fixtures.
    pub fn is_blessing(&self) -> bool {
        self.bless
    }

    /// The fixtures directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The releases with code, oldest first.
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }

    /// The subject of a release.
    pub fn subject_for(&self, version: &Version) -> Option<&Subject> {
        self.subjects
            .iter()
            .find(|s| s.release().version() == version)
    }

    /// `<dir>/<golden>-<version>.mig`.
    pub fn stream_path(&self, golden: &str, version: &Version) -> PathBuf {
        self.dir.join(format!("{golden}-{version}.mig"))
    }

    /// `<dir>/schema-<version>.json`.
    pub fn schema_path(&self, version: &Version) -> PathBuf {
        self.dir.join(format!("schema-{version}.json"))
    }

    /// Every golden stream, oldest release first: `(name, release)`.
    pub fn goldens(&self) -> Vec<(String, Version)> {
        let mut all: Vec<(String, Version)> = self
            .archived
            .iter()
            .flat_map(|(v, names)| names.iter().map(move |n| (n.clone(), v.clone())))
            .chain(self.subjects.iter().flat_map(|s| {
                s.golden_names()
                    .map(|n| (n.to_string(), s.release().version().clone()))
            }))
            .collect();
        all.sort_by(|a, b| a.1.cmp(&b.1));
        all
    }

    /// Regenerates every subject's golden streams and schema and compares them with the
    /// files (writes them instead when blessing). Also checks that each subject's fresh
    /// and golden machines register exactly the devices its release declares, and that
    /// the older releases a subject knows match their schema files.
    pub fn check_fixtures(&self) -> std::result::Result<(), Failures> {
        let mut failures = Vec::new();
        if self.bless
            && let Err(e) = std::fs::create_dir_all(&self.dir)
        {
            failures.push(format!("cannot create {}: {e}", self.dir.display()));
        }
        for s in &self.subjects {
            let release = s.release();
            let v = release.version();
            let mut machines = vec![("fresh".to_string(), s.fresh())];
            machines.extend(s.goldens.iter().map(|(n, m)| (n.clone(), m())));
            for (name, reg) in machines {
                if let Err(e) = release.check_registry(&reg) {
                    failures.push(format!("release {v}, machine '{name}': {e}"));
                }
            }
            self.fixture(
                &self.schema_path(v),
                release.schema_text().into_bytes(),
                &mut failures,
            );
            for name in s.golden_names() {
                match s.save_golden(name) {
                    Ok(bytes) => self.fixture(&self.stream_path(name, v), bytes, &mut failures),
                    Err(e) => failures.push(format!("release {v}: golden '{name}': {e}")),
                }
            }
        }
        if !self.bless {
            for s in &self.subjects {
                for known in s.known().releases() {
                    let path = self.schema_path(known.version());
                    let Ok(text) = std::fs::read_to_string(&path) else {
                        continue;
                    };
                    match text.parse::<Dump>() {
                        Ok(kept) if &kept == known.schema() => {}
                        Ok(_) => failures.push(format!(
                            "release {} knows release {} differently from {}",
                            s.release().version(),
                            known.version(),
                            path.display()
                        )),
                        Err(e) => {
                            failures.push(format!("{}: not a schema dump: {e}", path.display()))
                        }
                    }
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Failures(failures))
        }
    }

    fn fixture(&self, path: &Path, bytes: Vec<u8>, failures: &mut Vec<String>) {
        if self.bless {
            if let Err(e) = std::fs::write(path, &bytes) {
                failures.push(format!("cannot write {}: {e}", path.display()));
            }
            return;
        }
        match std::fs::read(path) {
            Ok(kept) if kept == bytes => {}
            Ok(kept) => {
                let at = kept
                    .iter()
                    .zip(&bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(kept.len().min(bytes.len()));
                failures.push(format!(
                    "{}: regenerated file differs from the kept one at byte {at} ({} bytes kept, \
                     {} regenerated)",
                    path.display(),
                    kept.len(),
                    bytes.len()
                ));
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }

    /// The checker between consecutive releases, as the newest subject knows them
    /// ([`check_steps`]).
    pub fn check_steps(&self, opts: &CheckOptions) -> Vec<Step> {
        self.subjects
            .last()
            .map(|s| check_steps(s.known(), opts))
            .unwrap_or_default()
    }

    /// The kept golden stream `golden` of release `version`.
    pub fn read_golden(&self, golden: &str, version: &Version) -> Result<Vec<u8>> {
        let path = self.stream_path(golden, version);
        std::fs::read(&path).map_err(|e| {
            Error::invalid(
                "golden stream",
                format!("cannot read {}: {e}", path.display()),
            )
        })
    }

    /// Loads `bytes` into a fresh machine of release `into`, checking the stream's
    /// release against what `into` knows ([`load_for_release`]).
    pub fn load_bytes(&self, bytes: &[u8], into: &Version) -> Result<Registry> {
        let subject = self.need(into)?;
        let mut reg = subject.fresh();
        load_for_release(
            subject.known(),
            &mut reg,
            &mut Reader::from_slice(bytes),
            &LoadOptions::default(),
        )?;
        Ok(reg)
    }

    /// Loads the kept golden stream `golden` of release `written_by` into a fresh
    /// machine of release `into`.
    pub fn load(&self, golden: &str, written_by: &Version, into: &Version) -> Result<Registry> {
        let bytes = self.read_golden(golden, written_by)?;
        self.load_bytes(&bytes, into)
    }

    /// Saves release `from`'s golden machine `golden` for release `to`.
    pub fn save_for(&self, golden: &str, from: &Version, to: &Version) -> Result<Vec<u8>> {
        let src = self.need(from)?;
        let target = src.known().get(to).ok_or_else(|| {
            Error::invalid(
                "golden stream",
                format!("release {from} does not know release {to}"),
            )
        })?;
        let mut reg = src.golden_machine(golden).ok_or_else(|| {
            Error::invalid(
                "golden stream",
                format!("release {from} has no golden named '{golden}'"),
            )
        })?;
        let mut out = Vec::new();
        // Comparable with the goldens: the stream without the integrity record.
        let mut config = src.known().stream_config();
        config.integrity_record = false;
        save_for_release(&mut reg, &mut out, config, target)?;
        Ok(out)
    }

    /// Saves release `from`'s golden machine `golden` for release `to`, and loads the
    /// stream into a fresh machine of `to`.
    pub fn downgrade(&self, golden: &str, from: &Version, to: &Version) -> Result<Registry> {
        let bytes = self.save_for(golden, from, to)?;
        self.load_bytes(&bytes, to)
    }

    /// Loads every golden stream into every release with code and checks each outcome
    /// against `expect(cell)`.
    pub fn matrix(&self, expect: impl Fn(&Cell) -> Expect) -> Report {
        let mut report = Report::default();
        for (golden, written_by) in self.goldens() {
            for s in &self.subjects {
                let cell = Cell {
                    golden: golden.clone(),
                    written_by: written_by.clone(),
                    loaded_by: s.release().version().clone(),
                };
                let expectation = expect(&cell);
                let outcome = self.load(&golden, &written_by, &cell.loaded_by);
                report.cells.push(judge(cell, expectation, outcome));
            }
        }
        report
    }

    fn need(&self, version: &Version) -> Result<&Subject> {
        self.subject_for(version).ok_or_else(|| {
            Error::invalid(
                "golden stream",
                format!("release {version} has no code in this suite"),
            )
        })
    }
}

fn judge(cell: Cell, expect: Expect, outcome: Result<Registry>) -> CellResult {
    let (expected, ok, mismatch, outcome) = match (expect, outcome) {
        (Expect::Loads(check), Ok(mut reg)) => {
            let r = check(&mut reg);
            (
                "loads".to_string(),
                r.is_ok(),
                r.err(),
                "loaded".to_string(),
            )
        }
        (Expect::Loads(_), Err(e)) => ("loads".to_string(), false, None, format!("failed: {e}")),
        (Expect::Fails(text), Ok(_)) => (
            format!("fails with \"{text}\""),
            false,
            None,
            "loaded".to_string(),
        ),
        (Expect::Fails(text), Err(e)) => {
            let msg = e.to_string();
            let ok = msg.contains(&text);
            (
                format!("fails with \"{text}\""),
                ok,
                (!ok).then(|| "the error does not contain the expected text".to_string()),
                format!("failed: {msg}"),
            )
        }
    };
    CellResult {
        cell,
        expected,
        outcome,
        ok,
        mismatch,
    }
}

/// The device registered as `idstr` (instance 0) in a loaded machine, as a `T` (for a
/// device registered as `Arc<Mutex<D>>`, ask for `Arc<Mutex<D>>`).
pub fn device<'r, T: 'static>(
    reg: &'r mut Registry,
    idstr: &str,
) -> std::result::Result<&'r mut T, String> {
    let h = reg
        .find_section(idstr, 0)
        .ok_or_else(|| format!("no device '{idstr}' is registered"))?;
    reg.device_mut::<T>(h)
        .ok_or_else(|| format!("device '{idstr}' is not a {}", std::any::type_name::<T>()))
}

#[cfg(test)]
mod tests {
    use vmstate::VmState;

    use super::*;

    /// Release 1.0: "dev" v1 with a nested "inner" v1.
    mod r1 {
        use vmstate::VmState;

        #[derive(VmState, Default)]
        #[vmstate(name = "inner", version = 1)]
        pub struct Inner {
            pub a: u16,
        }

        #[derive(VmState, Default)]
        #[vmstate(name = "dev", version = 1)]
        pub struct Dev {
            pub x: u8,
            pub inner: Inner,
        }
    }

    /// Release 2.0: "dev" v3 min 1 with `y` since 2, `z` since 3, "inner" v2 with `b`
    /// since 2, and a subsection "dev/extra".
    mod r2 {
        use vmstate::VmState;

        #[derive(VmState, Default)]
        #[vmstate(name = "inner", version = 2, min_version = 1)]
        pub struct Inner {
            pub a: u16,
            #[vmstate(since = 2)]
            pub b: u8,
        }

        #[derive(VmState, Default)]
        #[vmstate(name = "dev/extra", version = 1)]
        pub struct Extra {
            pub e: u32,
        }

        #[derive(VmState, Default)]
        #[vmstate(name = "dev", version = 3, min_version = 1)]
        pub struct Dev {
            pub x: u8,
            pub inner: Inner,
            #[vmstate(since = 2)]
            pub y: u8,
            #[vmstate(since = 3)]
            pub z: u32,
            #[vmstate(subsection, needed = Self::has_extra)]
            pub extra: Extra,
        }

        impl Dev {
            fn has_extra(&self) -> bool {
                self.extra.e != 0
            }
        }
    }

    /// Release 1.5 knows "dev" at version 2 (with `y`), "inner" v2, and "dev/extra".
    fn rel1_5() -> Release {
        #[derive(VmState, Default)]
        #[vmstate(name = "dev", version = 2, min_version = 1)]
        struct Dev {
            x: u8,
            inner: r2::Inner,
            #[vmstate(since = 2)]
            y: u8,
            #[vmstate(subsection, needed = Self::never)]
            extra: r2::Extra,
        }
        impl Dev {
            fn never(&self) -> bool {
                false
            }
        }
        Release::new(
            Version::new(1, 5, 0),
            "demo-1.5",
            [("dev", Dev::DESCRIPTION)],
        )
    }

    #[test]
    fn check_steps_runs_the_checker_between_neighbours() {
        let v = |major, minor| Version::new(major, minor, 0);
        let rel1 = Release::new(v(1, 0), "demo-1.0", [("dev", r1::Dev::DESCRIPTION)]);
        let rel2 = Release::new(v(2, 0), "demo-2.0", [("dev", r2::Dev::DESCRIPTION)]);
        let map = ReleaseMap::new([rel1, rel1_5(), rel2]).unwrap();
        let steps = check_steps(&map, &CheckOptions::default());
        assert_eq!(steps.len(), 2);
        assert_eq!(
            (steps[0].from.clone(), steps[0].to.clone()),
            (v(1, 0), v(1, 5))
        );
        // 1.5's nested "inner" gained `b` (since 2): but a nested struct is loaded at the
        // destination's own version of it, so 1.5 would read `b` from a 1.0 stream that
        // does not have it. (Saving *for* 1.0 is fine: "inner" is written at 1.0's
        // version.)
        let lines: Vec<String> = steps[0].problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            [
                r#"Section "dev", Description "inner": dest has extra field "b" (version_id 2) that src does not send"#
            ]
        );
        assert!(steps[1].problems.is_empty(), "{steps:?}");
    }
}

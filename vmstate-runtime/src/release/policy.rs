//! [`ForRelease`]: the save policy that writes what an older release understands.
//!
//! The plan is made before the save, from the descriptions of the registered devices
//! and the target's schema, one description at a time (looked up in the target by
//! name):
//!
//! - a **section** or **subsection** is written at the target's version `V` of it. That
//!   is allowed when `V` is within this build's `[min_version, version]` (a build never
//!   writes a version it could not load itself: raising `min_version` is a statement
//!   that the older versions are no longer understood), and when the fields this build
//!   writes at `V` are exactly those the target reads at `V`. The second condition is
//!   checked by comparing the layouts (the `layout` module): the description
//!   restricted to the fields that exist at `V` (the fields of nested structs
//!   restricted the same way, subsections left aside) against the target's, as typed
//!   schema [`Description`]s; any difference refuses the description, and the
//!   differences, in the schema checker's words, are the reason given.
//! - a **nested struct** is loaded by the destination at *its own* version of that
//!   struct (QEMU's `VMS_STRUCT` semantics), so it is written at the target's version
//!   of the struct when the target has a description of that name (with the same two
//!   conditions), and otherwise at its own version: the struct is then new (its fields
//!   were split out of the parent, say) and the parent's comparison checks that its
//!   fields sit where the target expects them.
//! - a **subsection** the target does not know under its parent is refused.
//!
//! A refused section fails the save at once if the device is needed; a refused nested
//! struct refuses its parent; a refused subsection fails the save only when its
//! `needed` returns true, naming the device and the subsection.

use std::collections::HashMap;

use super::{Release, SAVE_ERROR, layout};
use crate::description::{FieldType, VmStateDescription};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::schema::{self, Description};
use crate::stream::SavePolicy;

type Planned = std::result::Result<u32, String>;

/// The [`SavePolicy`] that saves for an older release; see the
/// [module documentation](super) and [`save_for_release`](super::save_for_release).
///
/// Make it right before the save ([`ForRelease::new`]): the plan covers the devices
/// registered at that moment.
#[derive(Debug)]
pub struct ForRelease<'a> {
    target: &'a Release,
    plan: HashMap<&'static str, (&'static VmStateDescription, Planned)>,
}

impl<'a> ForRelease<'a> {
    /// The plan for saving the devices of `registry` for `target`. Fails, naming the
    /// section, if a device that is needed now cannot be expressed for the target.
    pub fn new(target: &'a Release, registry: &mut Registry) -> Result<Self> {
        let mut planner = Planner::new(target);
        let mut failure = None;
        for e in registry.entries_mut() {
            let section = e.section_ref();
            let Some(dev) = e.device_mut() else {
                continue;
            };
            let desc = dev.description();
            if let Err(reason) = planner.top(desc)
                && failure.is_none()
                && dev.needed()
            {
                failure = Some(
                    Error::invalid(SAVE_ERROR, planner.cannot_save(&reason)).in_section(section),
                );
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        planner.finish()
    }

    /// The plan for saving these top-level descriptions for `target` (for a driver that
    /// does not use a [`Registry`]). Fails if one of them cannot be expressed.
    pub fn for_descriptions(
        target: &'a Release,
        descriptions: impl IntoIterator<Item = &'static VmStateDescription>,
    ) -> Result<Self> {
        let mut planner = Planner::new(target);
        for desc in descriptions {
            if let Err(reason) = planner.top(desc) {
                return Err(
                    Error::invalid(SAVE_ERROR, planner.cannot_save(&reason)).in_vmsd(desc.name)
                );
            }
        }
        planner.finish()
    }

    /// The release the stream is saved for.
    pub fn target(&self) -> &'a Release {
        self.target
    }

    /// The version the description named `name` is written at, if it can be written.
    pub fn version_of(&self, name: &str) -> Option<u32> {
        match self.plan.get(name) {
            Some((_, Ok(v))) => Some(*v),
            _ => None,
        }
    }

    /// Why the description named `name` cannot be written for the target, if it cannot.
    pub fn refusal(&self, name: &str) -> Option<&str> {
        match self.plan.get(name) {
            Some((_, Err(reason))) => Some(reason),
            _ => None,
        }
    }
}

impl SavePolicy for ForRelease<'_> {
    fn save_version(&self, desc: &'static VmStateDescription) -> u32 {
        self.version_of(desc.name).unwrap_or(desc.version)
    }

    fn include_subsection(
        &self,
        parent: &'static VmStateDescription,
        sub: &'static VmStateDescription,
    ) -> Result<bool> {
        let reason = match self.plan.get(sub.name) {
            Some((_, Ok(_))) => return Ok(true),
            Some((_, Err(reason))) => reason.clone(),
            None => format!(
                "the save was planned before '{}' was registered",
                parent.name
            ),
        };
        Err(Error::invalid(
            SAVE_ERROR,
            format!(
                "cannot save for release {} (machine {}): this state needs subsection '{}' of \
                 '{}' (its `needed` is true), and {reason}",
                self.target.version,
                self.target.machine(),
                sub.name,
                parent.name
            ),
        ))
    }
}

struct Planner<'a> {
    target: &'a Release,
    plan: HashMap<&'static str, (&'static VmStateDescription, Planned)>,
    conflicts: Vec<&'static str>,
}

impl<'a> Planner<'a> {
    fn new(target: &'a Release) -> Self {
        Planner {
            target,
            plan: HashMap::new(),
            conflicts: Vec::new(),
        }
    }

    fn finish(self) -> Result<ForRelease<'a>> {
        if let Some(name) = self.conflicts.first() {
            return Err(Error::invalid(
                SAVE_ERROR,
                format!(
                    "this build has two different descriptions named '{name}', and saving for a \
                     release looks descriptions up by name"
                ),
            ));
        }
        Ok(ForRelease {
            target: self.target,
            plan: self.plan,
        })
    }

    fn release(&self) -> String {
        format!(
            "release {} (machine {})",
            self.target.version,
            self.target.machine()
        )
    }

    fn cannot_save(&self, reason: &str) -> String {
        format!("cannot save for {}: {reason}", self.release())
    }

    fn lookup(&self, d: &'static VmStateDescription) -> Option<Planned> {
        match self.plan.get(d.name) {
            Some((other, planned)) if std::ptr::eq(*other, d) || *other == d => {
                Some(planned.clone())
            }
            _ => None,
        }
    }

    fn record(&mut self, d: &'static VmStateDescription, planned: Planned) -> Planned {
        if let Some((other, _)) = self.plan.get(d.name)
            && !(std::ptr::eq(*other, d) || *other == d)
        {
            self.conflicts.push(d.name);
        }
        self.plan.insert(d.name, (d, planned.clone()));
        planned
    }

    /// A top-level section's description.
    fn top(&mut self, d: &'static VmStateDescription) -> Planned {
        if let Some(p) = self.lookup(d) {
            return p;
        }
        let target = self.target;
        let planned = match target.top_description(d.name) {
            Some(t) => self.description(d, t),
            None => Err(format!("the release does not know the device '{}'", d.name)),
        };
        self.record(d, planned)
    }

    /// A description the target has (`t`): the version to write it at, after planning
    /// its nested structs and its subsections.
    fn description(&mut self, d: &'static VmStateDescription, t: &'a Description) -> Planned {
        let v = t.version_id;
        if v > d.version {
            return Err(format!(
                "the release has version {v} of '{}', newer than this build's version {}",
                d.name, d.version
            ));
        }
        if v < d.min_version {
            return Err(format!(
                "the release reads '{}' at version {v}, and this build writes versions {} to {} \
                 only (min_version was raised past {v})",
                d.name, d.min_version, d.version
            ));
        }
        for f in d
            .fields
            .iter()
            .filter(|f| f.has_exists_test || f.since <= v)
        {
            if let FieldType::Struct(n) = f.ty {
                self.nested(n)
                    .map_err(|e| format!("field '{}' of '{}': {e}", f.name, d.name))?;
            }
        }
        for s in d.subsections {
            self.subsection(d, s, Some(t));
        }
        let differences = layout::compare(&self.restricted(d, v), t);
        if differences.is_empty() {
            Ok(v)
        } else {
            let lines: Vec<String> = differences.iter().map(|p| p.to_string()).collect();
            Err(format!(
                "the release's '{}' (version {v}) differs from what this build writes at version \
                 {v}: {}",
                d.name,
                lines.join("; ")
            ))
        }
    }

    /// A nested struct: the target's version of it if the target has it, else its own.
    fn nested(&mut self, n: &'static VmStateDescription) -> Planned {
        if let Some(p) = self.lookup(n) {
            return p;
        }
        let target = self.target;
        let planned = match target.description(n.name) {
            Some(t) => self.description(n, t),
            None => self.unknown_struct(n),
        };
        self.record(n, planned)
    }

    /// A nested struct the target has no description of: written at its own version;
    /// its own nested structs are planned, its subsections refused.
    fn unknown_struct(&mut self, n: &'static VmStateDescription) -> Planned {
        for f in n
            .fields
            .iter()
            .filter(|f| f.has_exists_test || f.since <= n.version)
        {
            if let FieldType::Struct(inner) = f.ty {
                self.nested(inner)
                    .map_err(|e| format!("field '{}' of '{}': {e}", f.name, n.name))?;
            }
        }
        for s in n.subsections {
            self.subsection(n, s, None);
        }
        Ok(n.version)
    }

    fn subsection(
        &mut self,
        parent: &'static VmStateDescription,
        s: &'static VmStateDescription,
        parent_target: Option<&'a Description>,
    ) {
        if self.lookup(s).is_some() {
            return;
        }
        let known = parent_target.and_then(|t| t.subsections().iter().find(|ts| ts.name == s.name));
        let planned = match known {
            Some(ts) => self.description(s, ts),
            None => Err(format!(
                "the release does not know subsection '{}' of '{}'",
                s.name, parent.name
            )),
        };
        let _ = self.record(s, planned);
    }

    /// `d` as this build writes it at version `v`: the fields that exist at `v`, nested
    /// structs at their planned versions, no subsections (they are planned apart).
    fn restricted(&self, d: &'static VmStateDescription, v: u32) -> Description {
        let fields = schema::dumped_fields(d)
            .filter(|f| f.has_exists_test || f.since <= v)
            .map(|f| {
                let mut field = schema::Field::from(f);
                if let FieldType::Struct(n) = f.ty {
                    let nv = match self.plan.get(n.name) {
                        Some((_, Ok(nv))) => *nv,
                        _ => n.version,
                    };
                    field.description = Some(self.restricted(n, nv));
                }
                field
            })
            .collect();
        Description {
            name: d.name.to_string(),
            version_id: v,
            minimum_version_id: d.min_version.min(v),
            fields: Some(fields),
            subsections: None,
        }
    }
}

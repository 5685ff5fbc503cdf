//! The save context the stream engine uses for device sections: it always describes
//! (the vmdesc trailer needs it) and may follow a [`SavePolicy`] that picks older
//! versions and leaves out subsections, to save for an older release.

use crate::description::VmStateDescription;
use crate::error::Result;
use crate::save_context::{Describer, SaveContext};

/// Which versions and subsections a save writes (default: the current ones, all).
pub trait SavePolicy: Send + Sync {
    /// The version to save `desc` at.
    fn save_version(&self, desc: &'static VmStateDescription) -> u32 {
        desc.version
    }

    /// Whether a needed subsection is written; an error fails the save.
    fn include_subsection(
        &self,
        _parent: &'static VmStateDescription,
        _sub: &'static VmStateDescription,
    ) -> Result<bool> {
        Ok(true)
    }
}

/// The context of one device section: a [`Describer`] plus an optional policy.
pub struct StreamSaveCtx<'p> {
    describer: Describer,
    policy: Option<&'p dyn SavePolicy>,
}

impl<'p> StreamSaveCtx<'p> {
    /// A context with an optional policy.
    pub fn new(policy: Option<&'p dyn SavePolicy>) -> Self {
        StreamSaveCtx {
            describer: Describer::new(),
            policy,
        }
    }

    /// The vmdesc object of what was saved.
    pub fn finish(self) -> crate::json::Json {
        self.describer.finish()
    }
}

impl SaveContext for StreamSaveCtx<'_> {
    const DESCRIBES: bool = true;

    fn save_version(&self, desc: &'static VmStateDescription) -> u32 {
        self.policy.map_or(desc.version, |p| p.save_version(desc))
    }
    fn include_subsection(
        &mut self,
        parent: &'static VmStateDescription,
        sub: &'static VmStateDescription,
    ) -> Result<bool> {
        self.policy
            .map_or(Ok(true), |p| p.include_subsection(parent, sub))
    }
    fn begin_vmsd(&mut self, desc: &'static VmStateDescription, version: u32) {
        self.describer.begin_vmsd(desc, version)
    }
    fn end_vmsd(&mut self) {
        self.describer.end_vmsd()
    }
    fn begin_field(&mut self, field: &'static crate::Field, n_elems: usize) {
        self.describer.begin_field(field, n_elems)
    }
    fn begin_elem(&mut self, index: usize, pos: u64) {
        self.describer.begin_elem(index, pos)
    }
    fn begin_pointer_elem(
        &mut self,
        index: usize,
        entry: Option<crate::save_context::PointerEntry>,
        pos: u64,
    ) {
        self.describer.begin_pointer_elem(index, entry, pos)
    }
    fn end_elem(&mut self, pos: u64) {
        self.describer.end_elem(pos)
    }
    fn end_field(&mut self) {
        self.describer.end_field()
    }
    fn begin_subsection(&mut self) {
        self.describer.begin_subsection()
    }
    fn end_subsection(&mut self) {
        self.describer.end_subsection()
    }
}

//! What a save is told and what it reports: the version to save each description at,
//! which subsections may be written, and (optionally) a description of every element
//! written, from which the vmdesc JSON is built.
//!
//! The plain context ([`PlainSave`]) is a zero-sized type whose methods do nothing, so the
//! generated save code compiles to straight-line writes. [`Describer`] records the vmdesc
//! the way QEMU's `vmstate_save_state_v` does, measuring each element's size from the
//! writer's position.

use crate::json::Json;

use crate::description::{Field, VmStateDescription};
use crate::error::Result;
pub use crate::pointers::PointerEntry;

/// The policy and observer of a save. Every method has a do-nothing default.
pub trait SaveContext {
    /// True when the context wants the `begin_*`/`end_*` calls (the generated code skips
    /// them entirely otherwise).
    const DESCRIBES: bool = false;

    /// The version to save `desc` at. Default: its current version.
    #[inline]
    fn save_version(&self, desc: &'static VmStateDescription) -> u32 {
        desc.version
    }

    /// Called for a subsection whose `needed` returned true: `Ok(true)` writes it,
    /// `Ok(false)` leaves it out, an error fails the save (a target that cannot
    /// express needed state).
    #[inline]
    fn include_subsection(
        &mut self,
        _parent: &'static VmStateDescription,
        _sub: &'static VmStateDescription,
    ) -> Result<bool> {
        Ok(true)
    }

    /// A description starts being saved at `version`.
    #[inline]
    fn begin_vmsd(&mut self, _desc: &'static VmStateDescription, _version: u32) {}
    /// The description started last is done.
    #[inline]
    fn end_vmsd(&mut self) {}
    /// A field with `n_elems` elements starts.
    #[inline]
    fn begin_field(&mut self, _field: &'static Field, _n_elems: usize) {}
    /// Element `index` starts at stream position `pos`.
    #[inline]
    fn begin_elem(&mut self, _index: usize, _pos: u64) {}
    /// Element `index` of an array of nullable pointers starts at stream position `pos`
    /// (instead of [`SaveContext::begin_elem`]): `entry` is the vmdesc entry QEMU writes
    /// for it, `None` when it writes none (see [`crate::pointers`]).
    #[inline]
    fn begin_pointer_elem(&mut self, _index: usize, _entry: Option<PointerEntry>, _pos: u64) {}
    /// The current element ends at stream position `pos`.
    #[inline]
    fn end_elem(&mut self, _pos: u64) {}
    /// The current field is done.
    #[inline]
    fn end_field(&mut self) {}
    /// A subsection (its header already written) starts; a `begin_vmsd` follows.
    #[inline]
    fn begin_subsection(&mut self) {}
    /// The current subsection is done.
    #[inline]
    fn end_subsection(&mut self) {}
}

/// The plain save: current versions, all needed subsections, nothing recorded.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainSave;

impl SaveContext for PlainSave {}

/// A JSON object's members, in order (repeated keys allowed, as QEMU writes them).
type Members = Vec<(String, Json)>;

enum Frame {
    Vmsd {
        obj: Members,
        fields: Vec<Json>,
        subsections: Vec<Json>,
    },
    Field {
        field: &'static Field,
        n_elems: usize,
        compress: bool,
        entries: Vec<Json>,
        current: Option<(Members, u64)>,
    },
    Subsection,
}

/// Builds the vmdesc JSON of what is saved, as QEMU's `vmstate_save_state_v` does:
/// one entry per emitted element group, compressible arrays described by their first
/// element with `array_len`, otherwise one entry per element with `index` (absent on
/// the last one, QEMU's quirk), nested structs under `"struct"`, and a `"subsections"`
/// array when at least one subsection was sent.
#[derive(Default)]
pub struct Describer {
    stack: Vec<Frame>,
    /// While > 0, calls are inside an element that is not described (the 2nd and later
    /// elements of a compressed array) and only nesting is counted.
    skip_depth: usize,
    result: Option<Json>,
}

impl Describer {
    /// A describer with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// The vmdesc object of the outermost description saved (`Null` if none).
    pub fn finish(self) -> Json {
        self.result.unwrap_or(Json::Null)
    }

    fn attach_vmsd(&mut self, value: Json) {
        match self.stack.last_mut() {
            // A list element's description goes straight into the field's object, once
            // per element, repeating its keys (QEMU's qtailq/qlist/gtree/tmp vmdesc).
            Some(Frame::Field {
                field,
                current: Some((entry, _)),
                ..
            }) if field.describes_inline() => {
                if let Json::Object(members) = value {
                    entry.extend(members);
                }
            }
            Some(Frame::Field {
                current: Some((entry, _)),
                ..
            }) => {
                entry.push(("struct".into(), value));
            }
            Some(Frame::Subsection) => {
                let parent = self.stack.len().checked_sub(2).map(|i| &mut self.stack[i]);
                if let Some(Frame::Vmsd { subsections, .. }) = parent {
                    subsections.push(value);
                }
            }
            _ => self.result = Some(value),
        }
    }
}

impl SaveContext for Describer {
    const DESCRIBES: bool = true;

    fn begin_vmsd(&mut self, desc: &'static VmStateDescription, version: u32) {
        if self.skip_depth > 0 {
            self.skip_depth += 1;
            return;
        }
        let obj = vec![
            ("vmsd_name".into(), desc.name.into()),
            ("version".into(), u64::from(version).into()),
        ];
        self.stack.push(Frame::Vmsd {
            obj,
            fields: Vec::new(),
            subsections: Vec::new(),
        });
    }

    fn end_vmsd(&mut self) {
        if self.skip_depth > 0 {
            self.skip_depth -= 1;
            return;
        }
        if let Some(Frame::Vmsd {
            mut obj,
            fields,
            subsections,
        }) = self.stack.pop()
        {
            obj.push(("fields".into(), Json::Array(fields)));
            if !subsections.is_empty() {
                obj.push(("subsections".into(), Json::Array(subsections)));
            }
            self.attach_vmsd(Json::Object(obj));
        }
    }

    fn begin_field(&mut self, field: &'static Field, n_elems: usize) {
        if self.skip_depth > 0 {
            self.skip_depth += 1;
            return;
        }
        self.stack.push(Frame::Field {
            field,
            n_elems,
            compress: field.is_compressible(),
            entries: Vec::new(),
            current: None,
        });
    }

    fn begin_elem(&mut self, index: usize, pos: u64) {
        if self.skip_depth > 0 {
            self.skip_depth += 1;
            return;
        }
        let Some(Frame::Field {
            field,
            n_elems,
            compress,
            current,
            ..
        }) = self.stack.last_mut()
        else {
            return;
        };
        if *compress && index > 0 {
            self.skip_depth = 1;
            return;
        }
        let mut entry: Members = vec![("name".into(), field.vmdesc_name.into())];
        if *n_elems > 1 {
            if *compress {
                entry.push(("array_len".into(), (*n_elems as u64).into()));
            } else if *n_elems - index > 1 {
                entry.push(("index".into(), (index as u64).into()));
            }
        }
        entry.push(("type".into(), field.vmdesc_type().into()));
        *current = Some((entry, pos));
    }

    fn begin_pointer_elem(&mut self, index: usize, entry: Option<PointerEntry>, pos: u64) {
        if self.skip_depth > 0 {
            self.skip_depth += 1;
            return;
        }
        let Some(Frame::Field { field, current, .. }) = self.stack.last_mut() else {
            return;
        };
        let Some(PointerEntry { run, null }) = entry else {
            self.skip_depth = 1;
            return;
        };
        let mut members: Members = vec![("name".into(), field.vmdesc_name.into())];
        if run > 1 {
            // QEMU's placeholder field is always compressible; a present element
            // follows the field's own rule.
            if null || field.is_compressible() {
                members.push(("array_len".into(), (run as u64).into()));
            } else {
                members.push(("index".into(), (index as u64).into()));
            }
        }
        let ty = if null { "nullptr" } else { field.vmdesc_type() };
        members.push(("type".into(), ty.into()));
        *current = Some((members, pos));
    }

    fn end_elem(&mut self, pos: u64) {
        if self.skip_depth > 0 {
            self.skip_depth -= 1;
            return;
        }
        if let Some(Frame::Field {
            current, entries, ..
        }) = self.stack.last_mut()
            && let Some((mut entry, start)) = current.take()
        {
            entry.push(("size".into(), (pos - start).into()));
            entries.push(Json::Object(entry));
        }
    }

    fn end_field(&mut self) {
        if self.skip_depth > 0 {
            self.skip_depth -= 1;
            return;
        }
        if let Some(Frame::Field { entries, .. }) = self.stack.pop()
            && let Some(Frame::Vmsd { fields, .. }) = self.stack.last_mut()
        {
            fields.extend(entries);
        }
    }

    fn begin_subsection(&mut self) {
        if self.skip_depth > 0 {
            self.skip_depth += 1;
            return;
        }
        self.stack.push(Frame::Subsection);
    }

    fn end_subsection(&mut self) {
        if self.skip_depth > 0 {
            self.skip_depth -= 1;
            return;
        }
        self.stack.pop();
    }
}

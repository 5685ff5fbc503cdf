//! The configuration section (spec 1.3): the machine type name, and optionally the
//! target page bits, the validated capabilities and the VM UUID, each a subsection.
//!
//! The section has no header, version or footer; the loader reads it at version 0.

use crate::derive_support as support;
use crate::description::{Count, Field, FieldType, Info, LenType, VmStateDescription, infos};
use crate::error::{Error, ErrorKind, Result};
use crate::save_context::SaveContext;
use crate::state::{VmElem, VmState};
use crate::wire::{Reader, Writer};

/// The configuration section's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    /// The machine type name (`pc-i440fx-10.0`, or your emulator's release/machine name).
    pub machine: String,
    /// Target page bits, sent only when set (QEMU sends it for variable-page-size targets).
    pub target_page_bits: ConfigPageBits,
    /// Validated capabilities (`x-ignore-shared`, `mapped-ram`), sent when not empty.
    pub capabilities: ConfigCapabilities,
    /// The VM UUID, sent when set (QEMU: with `validate-uuid`).
    pub uuid: ConfigUuid,
}

/// `configuration/target-page-bits`.
#[derive(crate::VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "configuration/target-page-bits", version = 1)]
pub struct ConfigPageBits {
    /// log2 of the target page size; 0 = not sent.
    pub target_page_bits: u32,
}

/// `configuration/capabilities`.
#[derive(crate::VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "configuration/capabilities", version = 1)]
pub struct ConfigCapabilities {
    /// Number of capabilities.
    pub caps_count: u32,
    /// The capability names.
    #[vmstate(len = caps_count)]
    pub capabilities: Vec<Capability>,
}

/// `configuration/uuid`.
#[derive(crate::VmState, Debug, Clone, Default, PartialEq, Eq)]
#[vmstate(name = "configuration/uuid", version = 1)]
pub struct ConfigUuid {
    /// The UUID bytes; all zero = not sent.
    #[vmstate(rename = "uuid.data")]
    pub uuid: [u8; 16],
}

/// A capability name, written as a counted string (QEMU's `capability` info).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capability(pub String);

impl VmElem for Capability {
    const TYPE: FieldType = FieldType::Info(Info::new("capability", 0));

    fn save_elem<C: SaveContext>(&mut self, w: &mut Writer<'_>, _: &mut C) -> Result<()> {
        w.put_counted_str(&self.0)
    }

    fn load_elem(&mut self, r: &mut Reader<'_>) -> Result<()> {
        self.0 = r.get_counted_string()?;
        Ok(())
    }
}

static FIELDS: [Field; 2] = [
    Field {
        name: "len",
        vmdesc_name: "len",
        since: 0,
        has_exists_test: false,
        ty: FieldType::Info(infos::UINT32),
        count: Count::Single,
        equal: false,
    },
    Field {
        name: "name",
        vmdesc_name: "name",
        since: 0,
        has_exists_test: false,
        ty: FieldType::Info(infos::buffer(0)),
        count: Count::Vbuffer {
            len_field: "len",
            len_type: LenType::U32,
        },
        equal: false,
    },
];

static DESCRIPTION: VmStateDescription = VmStateDescription {
    name: "configuration",
    version: 1,
    min_version: 0,
    fields: &FIELDS,
    subsections: &[
        ConfigPageBits::DESCRIPTION,
        ConfigCapabilities::DESCRIPTION,
        ConfigUuid::DESCRIPTION,
    ],
};

impl Configuration {
    /// A configuration naming `machine`, with no optional subsection.
    pub fn new(machine: impl Into<String>) -> Self {
        Configuration {
            machine: machine.into(),
            ..Default::default()
        }
    }

    /// Lists the validated capability `name` (`mapped-ram`, `x-ignore-shared`), which
    /// the loading side must list too.
    ///
    /// ```
    /// let mut c = vmstate::stream::Configuration::new("none");
    /// c.add_capability("mapped-ram");
    /// assert_eq!(c.capabilities.capabilities[0].0, "mapped-ram");
    /// ```
    pub fn add_capability(&mut self, name: &str) {
        if !self.capabilities.capabilities.iter().any(|c| c.0 == name) {
            self.capabilities.capabilities.push(Capability(name.into()));
        }
    }

    /// QEMU's machine check: the received name must be a prefix of the local one
    /// (`strncmp` over the received length).
    pub fn check_machine(&self, local: &str) -> Result<()> {
        if local.as_bytes().starts_with(self.machine.as_bytes()) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::MachineMismatch {
                stream: self.machine.clone(),
                local: local.to_string(),
            }))
        }
    }
}

/// Configuration is written by hand rather than derived. Its name is a variable-length
/// buffer (QEMU's `VMSTATE_VBUFFER_ALLOC_UINT32`, which the derive has as
/// `#[vmstate(buffer, len = len)]` on a `Vec<u8>`) whose vmdesc entry is one `buffer`
/// element of the name's length. But the public API keeps the name as a `String`
/// (`Configuration::machine`); a derive would need private `len: u32` and `name: Vec<u8>`
/// copies of it, kept in step by `pre_save`/`post_load` hooks, and a hand-written
/// `PartialEq` that ignores them. The description above says the same as a derive would.
impl VmState for Configuration {
    const DESCRIPTION: &'static VmStateDescription = &DESCRIPTION;

    fn save_state<C: SaveContext>(&mut self, w: &mut Writer<'_>, ctx: &mut C) -> Result<()> {
        let version = ctx.save_version(&DESCRIPTION);
        if C::DESCRIBES {
            ctx.begin_vmsd(&DESCRIPTION, version);
        }
        let len = u32::try_from(self.machine.len())
            .map_err(|_| Error::invalid("machine name", "longer than 4 GiB"))?;
        support::save_one(&mut { len }, &FIELDS[0], w, ctx)?;
        support::save_buffer(self.machine.as_bytes(), &FIELDS[1], w, ctx)?;
        if self.target_page_bits.target_page_bits != 0 {
            support::save_subsection(&mut self.target_page_bits, &DESCRIPTION, w, ctx)?;
        }
        if !self.capabilities.capabilities.is_empty() {
            self.capabilities.caps_count = self.capabilities.capabilities.len() as u32;
            support::save_subsection(&mut self.capabilities, &DESCRIPTION, w, ctx)?;
        }
        if self.uuid.uuid != [0; 16] {
            support::save_subsection(&mut self.uuid, &DESCRIPTION, w, ctx)?;
        }
        if C::DESCRIBES {
            ctx.end_vmsd();
        }
        Ok(())
    }

    fn load_state(&mut self, r: &mut Reader<'_>, version: u32) -> Result<()> {
        support::check_version(&DESCRIPTION, version, r)?;
        let len = r.get_be32().map_err(|e| e.in_field("len"))?;
        let name_at = r.position();
        let name = r.get_vec(len as u64).map_err(|e| e.in_field("name"))?;
        let machine = String::from_utf8(name).map_err(|e| {
            Error::invalid("machine name", e.to_string())
                .at_offset(name_at)
                .in_field("name")
        })?;
        // Subsections that do not arrive mean their default (QEMU's pre_load).
        *self = Configuration {
            machine,
            ..Default::default()
        };
        let this = self;
        support::load_subsections(r, &DESCRIPTION, |name, r, v| match name {
            n if n == ConfigPageBits::DESCRIPTION.name => {
                support::load_subsection(&mut this.target_page_bits, r, v)
            }
            n if n == ConfigCapabilities::DESCRIPTION.name => {
                support::load_subsection(&mut this.capabilities, r, v)
            }
            n if n == ConfigUuid::DESCRIPTION.name => {
                support::load_subsection(&mut this.uuid, r, v)
            }
            _ => Ok(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_machine_matches_the_real_stream_bytes() {
        // From spec 1.3: `07 00000004 6e6f6e65` (the 0x07 is written by the engine).
        let mut c = Configuration::new("none");
        assert_eq!(c.to_bytes().unwrap(), [0, 0, 0, 4, b'n', b'o', b'n', b'e']);
    }

    #[test]
    fn arm_virt_page_bits_subsection_matches_the_spec_bytes() {
        let mut c = Configuration::new("virt-10.0");
        c.target_page_bits.target_page_bits = 12;
        let mut expected = vec![0, 0, 0, 9];
        expected.extend(b"virt-10.0");
        expected.extend([0x05, 0x1e]);
        expected.extend(b"configuration/target-page-bits");
        expected.extend([0, 0, 0, 1, 0, 0, 0, 12]);
        let bytes = c.to_bytes().unwrap();
        assert_eq!(bytes, expected);
        let mut back = Configuration::default();
        back.load_bytes(&bytes, 0).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn shorter_received_name_that_is_a_prefix_is_accepted() {
        assert!(
            Configuration::new("pc-i440fx")
                .check_machine("pc-i440fx-10.0")
                .is_ok()
        );
        assert!(
            Configuration::new("pc-i440fx-10.0")
                .check_machine("pc-i440fx")
                .is_err()
        );
        assert!(Configuration::new("virt").check_machine("pc").is_err());
    }

    #[test]
    fn vmdesc_matches_qemu_for_the_none_machine() {
        let (_, json) = Configuration::new("none").save_described().unwrap();
        assert_eq!(
            crate::qjson::to_string(&json),
            r#"{"vmsd_name": "configuration", "version": 1, "fields": [{"name": "len", "type": "uint32", "size": 4}, {"name": "name", "type": "buffer", "size": 4}]}"#
        );
    }
}

//! Schema dumps in the shape of QEMU's `-dump-vmstate`, as typed values read and
//! written with serde.
//!
//! # Schema dumps
//!
//! A dump is a [`Dump`]: the machine type and the [`Section`]s in dump order, each with
//! its [`Description`] and their [`Field`]s, read and written with serde. Every key QEMU
//! always writes is required, so a malformed dump is an error naming the key, never a
//! silent 0; the keys QEMU leaves out in some cases are `Option`s.
//!
//! [`Dump::from_descriptions`] turns `(section name, description)` pairs into what
//! `qemu-system-XXX -M <machine> -dump-vmstate FILE` writes, and [`Dump::from_registry`]
//! does the same for the devices of a [`Registry`](crate::Registry) (keyed by idstr;
//! iterative handlers such as RAM are left out, as QEMU leaves out what is not a qdev
//! device); [`dump_json`] and [`dump_registry`] give the same as JSON. [`to_string`]
//! ([`Dump::to_text`]) prints it as QEMU does, byte for byte: two-space indentation, an
//! empty list as `[`, an empty line and `]`, and a final newline. A QEMU dump read into a
//! [`Dump`] and printed again gives back the file.
//!
//! ```text
//! { "vmschkmachine": {"Name": "<machine>"},
//!   "<section>": {"Name": "<section>", "version_id": N, "minimum_version_id": N,
//!                 "Description": <desc>}, ... }
//! <desc>  = {"name", "version_id", "minimum_version_id", ["Fields": [<field>...]],
//!            ["Subsections": [<desc>...]]}
//! <field> = {"field", "version_id", "field_exists", ["num"], "size", ["Description"]}
//! ```
//!
//! How our [`VmStateDescription`](crate::VmStateDescription) maps onto those keys:
//!
//! | key | from |
//! | --- | --- |
//! | `Fields` | the fields, always present (QEMU omits it only when `fields` is `NULL`, for devices that save by hand; a list holding only `VMSTATE_END_OF_LIST()` gives `[]`, which is what a derived struct without fields is), except the `validate` checks ([`Count::Validate`](crate::Count::Validate)), which QEMU's dump leaves out as it leaves out `VMSTATE_VALIDATE` ([`dumped_fields`]) |
//! | `Subsections` | the subsections, omitted when there are none (as QEMU) |
//! | `field` | [`Field::name`](crate::Field::name), QEMU's field name (`unused` for unused bytes) |
//! | `version_id` | [`Field::since`](crate::Field::since) |
//! | `field_exists` | [`Field::has_exists_test`](crate::Field::has_exists_test) |
//! | `num` | only for [`Count::Array`](crate::Count::Array) (QEMU's `VMS_ARRAY`); a single value, a `Varray` or a `Vbuffer` has none |
//! | `size` | the size of **one element**: the info's wire size for a primitive (a `buffer` or `unused_buffer` counts all its bytes, as QEMU's `VMSTATE_BUFFER`/`VMSTATE_UNUSED`; a counted buffer, [`Count::Vbuffer`](crate::Count::Vbuffer), says 0, as QEMU's `VMSTATE_VBUFFER*`); for a struct, QEMU prints `sizeof` the C struct, which we do not have, so we print the element's fixed wire size ([`FieldType::fixed_size`](crate::FieldType::fixed_size)), or 0 when it is not fixed |
//! | `Description` | the nested description of a [`FieldType::Struct`](crate::FieldType::Struct) |
//!
//! So a dump of a device modelled exactly after QEMU's matches QEMU's dump key for key,
//! except the `size` of struct fields (QEMU's `hpet` `timer` says 80, the C struct; ours
//! says 42, the bytes on the wire) and wherever the model's types differ from QEMU's
//! (a `u16` stand-in for QEMU's `int32_as_uint16` in `fw_cfg`, for instance). QEMU's
//! checker never compares struct sizes, so that difference does not matter to it.
//!
//! # The checker
//!
//! The compatibility checker (QEMU's `vmstate-static-checker.py`, and two rules it
//! misses) is in the `vmstate-tools` crate, `vmstate_tools::check`: it compares two
//! [`Dump`]s, ours or QEMU's. An emulator needs only the dumps; its tests and the
//! `vmstate check` command use the checker.
//!
//! # Example
//!
//! ```
//! use vmstate::schema::{self, Dump};
//! use vmstate::VmState;
//!
//! #[derive(VmState, Default)]
//! #[vmstate(name = "port92", version = 2, min_version = 1)]
//! struct Port92 {
//!     outport: u8,
//!     #[vmstate(since = 2)]
//!     gate: u8,
//! }
//!
//! let dump = Dump::from_descriptions("pc-1.0", [("port92", Port92::DESCRIPTION)]);
//! let port92 = &dump.section("port92").unwrap().description;
//! assert_eq!((port92.version_id, port92.minimum_version_id), (2, 1));
//! assert_eq!(port92.fields()[1].name, "gate");
//! assert_eq!(port92.fields()[1].version_id, 2);
//!
//! // The file to keep, byte for byte what QEMU would write, and back.
//! let text = dump.to_text();
//! assert!(text.starts_with("{\n  \"vmschkmachine\": {\n    \"Name\": \"pc-1.0\""));
//! assert_eq!(text.parse::<Dump>().unwrap(), dump);
//! assert_eq!(text, schema::to_string(&schema::dump_json("pc-1.0", [("port92", Port92::DESCRIPTION)])));
//!
//! // A file missing a key QEMU always writes is an error naming the key.
//! let err = r#"{"vmschkmachine": {}}"#.parse::<Dump>().unwrap_err();
//! assert!(err.to_string().starts_with("missing field `Name`"));
//! ```

mod dump;
mod types;

pub use dump::{
    description_json, dump_json, dump_registry, dumped_fields, element_size, to_string,
};
pub use types::{Description, Dump, Field, MACHINE_KEY, Section};

//! Static descriptions of device state: QEMU's `VMStateDescription` and `VMStateField`.
//!
//! `#[derive(VmState)]` emits one [`VmStateDescription`] per type as a `const`. It drives
//! the vmdesc JSON, the schema dump, the compatibility checker and the generic decoder,
//! while the generated code does the actual saving and loading.

/// A description of one type's state: name, versions, fields and subsections.
#[derive(Debug, PartialEq, Eq)]
pub struct VmStateDescription {
    /// The name: section idstr (or its suffix), vmdesc `vmsd_name`, subsection name.
    pub name: &'static str,
    /// The current version, written in section and subsection headers.
    pub version: u32,
    /// The oldest version this build can load.
    pub min_version: u32,
    /// The fields in wire order.
    pub fields: &'static [Field],
    /// The subsections, in the order they are saved.
    pub subsections: &'static [&'static VmStateDescription],
}

/// One field of a description.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    /// QEMU's field name (what `-dump-vmstate` prints).
    pub name: &'static str,
    /// The name in the vmdesc JSON: `name`, plus `[k]` when several fields share it.
    pub vmdesc_name: &'static str,
    /// The version that introduced the field (QEMU's field `version_id`).
    pub since: u32,
    /// True when a custom `exists` predicate decides instead of `since`.
    pub has_exists_test: bool,
    /// The element type.
    pub ty: FieldType,
    /// How many elements.
    pub count: Count,
    /// Whether the loaded value must equal the local one.
    pub equal: bool,
}

/// The type of one element of a field.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FieldType {
    /// A primitive with a QEMU `VMStateInfo` name and a fixed wire size.
    Info(Info),
    /// A nested description (QEMU's `VMS_STRUCT`).
    Struct(&'static VmStateDescription),
}

/// A primitive wire type: its QEMU info name and its size in bytes.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Info {
    /// QEMU's `VMStateInfo` name, used as the vmdesc `type` (`"uint32"`, `"timer"`, ...).
    pub name: &'static str,
    /// Bytes on the wire for one element.
    pub size: usize,
}

/// How many elements a field has.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Count {
    /// One element.
    Single,
    /// A fixed number of elements (`[T; N]`, QEMU's `VMS_ARRAY`).
    Array(usize),
    /// A count read from an earlier field (QEMU's `VMS_VARRAY_*`).
    Varray {
        /// The count field's name.
        len_field: &'static str,
        /// The count field's integer type.
        len_type: LenType,
    },
    /// One `buffer` element whose size in bytes is the value of another field (QEMU's
    /// `VMS_VBUFFER`: `VMSTATE_VBUFFER`, `VMSTATE_VBUFFER_UINT32`,
    /// `VMSTATE_VBUFFER_ALLOC_UINT32`). The element type's size is 0, as QEMU's
    /// `-dump-vmstate` prints it; the vmdesc entry gives the actual byte count.
    Vbuffer {
        /// The byte-count field's name.
        len_field: &'static str,
        /// The byte-count field's integer type ([`LenType::U32`] or [`LenType::I32`]).
        len_type: LenType,
    },
    /// A list of elements of the field's struct type, each preceded by a `0x01` marker
    /// and the list ended by `0x00` (QEMU's `VMSTATE_QTAILQ_V` and `VMSTATE_QLIST_V`,
    /// which share the format). Elements are saved at their own version and loaded at
    /// the field's `since` version, as QEMU does.
    List(ListKind),
    /// A tree of key/value pairs whose value type is the field's struct type (QEMU's
    /// `VMSTATE_GTREE_V`, or `VMSTATE_GTREE_DIRECT_KEY_V` when `key` is `None`): a be32
    /// node count, `0x01` + key + value per node, `0x00`. Loaded at the field's `since`
    /// version like a list.
    Gtree {
        /// The key's description; `None` for a direct be64 key.
        key: Option<&'static VmStateDescription>,
    },
    /// A fixed number of nullable elements (QEMU's `VMSTATE_ARRAY_OF_POINTER` and
    /// `VMSTATE_ARRAY_OF_POINTER_TO_STRUCT`): a present element is written as the
    /// field's type, an absent one as the single byte `0x30` (QEMU's `nullptr`
    /// placeholder). What is read for an element depends on whether the *local* element
    /// is present, as in QEMU. In a schema dump the element size is a pointer's, 8.
    ArrayOfPointer(usize),
    /// A temporary struct of the field's struct type, computed from the device on save
    /// and applied to it on load (QEMU's `VMSTATE_WITH_TMP`, field name `tmp`). Saved at
    /// its own version and loaded at version 0, as QEMU does; its description goes
    /// straight into the field's vmdesc object.
    Tmp,
    /// No element at all: a check run on load between the fields around it (QEMU's
    /// `VMSTATE_VALIDATE`, a `VMS_ARRAY | VMS_MUST_EXIST` field with `num = 0` whose
    /// `field_exists` test is the check). The field's name names the check. It has no
    /// bytes and no vmdesc entry, is not run on save, and is left out of schema dumps,
    /// as QEMU's `-dump-vmstate` leaves out `VMS_MUST_EXIST` fields.
    Validate,
}

/// Which of QEMU's list kinds a [`Count::List`] field is: the vmdesc `type`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ListKind {
    /// `VMSTATE_QTAILQ_V`: vmdesc type `"qtailq"`.
    Qtailq,
    /// `VMSTATE_QLIST_V`: vmdesc type `"qlist"`.
    Qlist,
}

impl ListKind {
    /// The vmdesc `type`.
    pub const fn type_name(self) -> &'static str {
        match self {
            ListKind::Qtailq => "qtailq",
            ListKind::Qlist => "qlist",
        }
    }
}

/// The integer type of a count field.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum LenType {
    /// `u8` (VMS_VARRAY_UINT8).
    U8,
    /// `u16` (VMS_VARRAY_UINT16).
    U16,
    /// `u32` (VMS_VARRAY_UINT32).
    U32,
    /// `i32` (VMS_VARRAY_INT32).
    I32,
}

impl Info {
    /// A primitive type.
    pub const fn new(name: &'static str, size: usize) -> Self {
        Info { name, size }
    }
}

impl FieldType {
    /// The vmdesc `type` string: the info name, or `"struct"`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            FieldType::Info(i) => i.name,
            FieldType::Struct(_) => "struct",
        }
    }

    /// Bytes per element when they are fixed (structs without subsections or
    /// variable-length fields), else `None`.
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            FieldType::Info(i) => Some(i.size),
            FieldType::Struct(d) => d.fixed_size(),
        }
    }
}

impl Field {
    /// Whether the field exists at `version` by the `since` rule. A field with a custom
    /// `exists` predicate is decided by the predicate instead (it needs the value).
    pub const fn exists_at(&self, version: u32) -> bool {
        self.since <= version
    }

    /// QEMU's "compressible" rule for the vmdesc: an array is described by its first
    /// element only unless the field has an `exists` test or is a struct whose
    /// description has subsections or a non-compressible field.
    pub fn is_compressible(&self) -> bool {
        // Lists, trees and temporaries are not VMS_STRUCT fields in QEMU, so their
        // element type does not count.
        !self.has_exists_test
            && (self.describes_inline()
                || match self.ty {
                    FieldType::Info(_) => true,
                    FieldType::Struct(d) => d.is_compressible(),
                })
    }

    /// The number of elements of the field's type written, if it does not depend on the
    /// value. A [`Count::Vbuffer`] is one element of a size that depends on the value,
    /// and a [`Count::ArrayOfPointer`] writes a 1-byte placeholder for each absent
    /// element, so neither has one; a [`Count::Validate`] has no element.
    pub const fn static_count(&self) -> Option<usize> {
        match self.count {
            Count::Single => Some(1),
            Count::Array(n) => Some(n),
            Count::Validate => Some(0),
            Count::Tmp => Some(1),
            Count::Varray { .. }
            | Count::Vbuffer { .. }
            | Count::List(_)
            | Count::Gtree { .. }
            | Count::ArrayOfPointer(_) => None,
        }
    }

    /// The vmdesc `type` of the field: the list kind for a [`Count::List`], else the
    /// element type's.
    pub const fn vmdesc_type(&self) -> &'static str {
        match self.count {
            Count::List(kind) => kind.type_name(),
            Count::Gtree { .. } => "gtree",
            Count::Tmp => "tmp",
            _ => self.ty.type_name(),
        }
    }

    /// True for a list, a tree or a temporary (QEMU's qtailq, qlist, gtree, tmp): in the
    /// vmdesc, each element's description is written straight into the field's object
    /// rather than under `"struct"`.
    pub const fn describes_inline(&self) -> bool {
        matches!(
            self.count,
            Count::List(_) | Count::Gtree { .. } | Count::Tmp
        )
    }

    /// True for an array of nullable pointers ([`Count::ArrayOfPointer`]).
    pub const fn is_array_of_pointer(&self) -> bool {
        matches!(self.count, Count::ArrayOfPointer(_))
    }

    /// True for a load-time check between fields ([`Count::Validate`], QEMU's
    /// `VMSTATE_VALIDATE`): no bytes, no vmdesc entry, not in schema dumps.
    pub const fn is_validation(&self) -> bool {
        matches!(self.count, Count::Validate)
    }
}

impl VmStateDescription {
    /// True if the description (recursively) has no subsections and no field with an
    /// `exists` test, so that arrays of it are described by their first element.
    pub fn is_compressible(&self) -> bool {
        self.subsections.is_empty() && self.fields.iter().all(Field::is_compressible)
    }

    /// The wire size of the description's fields at its own version when it is fixed
    /// (no subsections, no variable counts, no `exists` tests).
    pub fn fixed_size(&self) -> Option<usize> {
        if !self.subsections.is_empty() {
            return None;
        }
        let mut total = 0;
        for f in self.fields.iter().filter(|f| f.exists_at(self.version)) {
            if f.has_exists_test {
                return None;
            }
            total += f.ty.fixed_size()? * f.static_count()?;
        }
        Some(total)
    }

    /// Looks up a subsection by its full name.
    pub fn subsection(&self, name: &str) -> Option<&'static VmStateDescription> {
        self.subsections.iter().copied().find(|s| s.name == name)
    }

    /// Looks up a field by its QEMU name (the first one, if several share it).
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// The QEMU info types this crate writes, by name and size.
pub mod infos {
    use super::Info;

    /// `bool`: one byte, any non-zero value loads as true.
    pub const BOOL: Info = Info::new("bool", 1);
    /// `int8`.
    pub const INT8: Info = Info::new("int8", 1);
    /// `int16`.
    pub const INT16: Info = Info::new("int16", 2);
    /// `int32`.
    pub const INT32: Info = Info::new("int32", 4);
    /// `int64`.
    pub const INT64: Info = Info::new("int64", 8);
    /// `uint8`.
    pub const UINT8: Info = Info::new("uint8", 1);
    /// `uint16`.
    pub const UINT16: Info = Info::new("uint16", 2);
    /// `uint32`.
    pub const UINT32: Info = Info::new("uint32", 4);
    /// `uint64`.
    pub const UINT64: Info = Info::new("uint64", 8);
    /// `float64`: be64 of the IEEE-754 bits (analyze-migration.py knows the name).
    pub const FLOAT64: Info = Info::new("float64", 8);
    /// `timer`: be64 expiry in ns, -1 = not armed.
    pub const TIMER: Info = Info::new("timer", 8);

    /// `buffer` of `size` raw bytes.
    pub const fn buffer(size: usize) -> Info {
        Info::new("buffer", size)
    }

    /// The element type of a [`Count::Validate`](super::Count::Validate) field. QEMU's
    /// `VMSTATE_VALIDATE` has no info; the name is never written to a vmdesc or a schema
    /// dump.
    pub const VALIDATE: Info = Info::new("validate", 0);

    /// `unused_buffer`: `size` zero bytes on save, skipped on load.
    pub const fn unused(size: usize) -> Info {
        Info::new("unused_buffer", size)
    }

    /// The `* equal` info that QEMU uses for an equal-checked field of this info, if any.
    /// (QEMU names the u64 variant `"int64 equal"`.)
    pub const fn equal_variant(info: Info) -> Info {
        let name = match info.name.as_bytes() {
            b"uint8" => "uint8 equal",
            b"uint16" => "uint16 equal",
            b"uint32" => "uint32 equal",
            b"uint64" => "int64 equal",
            b"int32" => "int32 equal",
            _ => info.name,
        };
        Info::new(name, info.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: VmStateDescription = VmStateDescription {
        name: "inner",
        version: 1,
        min_version: 1,
        fields: &[Field {
            name: "a",
            vmdesc_name: "a",
            since: 0,
            has_exists_test: false,
            ty: FieldType::Info(infos::UINT32),
            count: Count::Array(3),
            equal: false,
        }],
        subsections: &[],
    };

    #[test]
    fn fixed_size_multiplies_counts() {
        assert_eq!(INNER.fixed_size(), Some(12));
        assert!(INNER.is_compressible());
    }

    #[test]
    fn description_with_subsections_is_not_compressible() {
        static SUB: VmStateDescription = VmStateDescription {
            name: "outer/sub",
            version: 1,
            min_version: 1,
            fields: &[],
            subsections: &[],
        };
        static OUTER: VmStateDescription = VmStateDescription {
            name: "outer",
            version: 1,
            min_version: 1,
            fields: &[],
            subsections: &[&SUB],
        };
        let outer = &OUTER;
        assert!(!outer.is_compressible());
        assert_eq!(outer.fixed_size(), None);
        assert_eq!(outer.subsection("outer/sub").map(|s| s.version), Some(1));
    }

    #[test]
    fn counted_buffers_and_validations_have_no_fixed_size() {
        const fn field(ty: Info, count: Count, has_exists_test: bool) -> Field {
            Field {
                name: "f",
                vmdesc_name: "f",
                since: 0,
                has_exists_test,
                ty: FieldType::Info(ty),
                count,
                equal: false,
            }
        }
        static FIELDS: [Field; 2] = [
            field(
                infos::buffer(0),
                Count::Vbuffer {
                    len_field: "len",
                    len_type: LenType::U32,
                },
                false,
            ),
            field(infos::VALIDATE, Count::Validate, true),
        ];
        let [vbuffer, validate] = &FIELDS;
        assert_eq!(vbuffer.static_count(), None);
        assert!(!vbuffer.is_validation() && vbuffer.is_compressible());
        assert_eq!(validate.static_count(), Some(0));
        // QEMU's VMSTATE_VALIDATE has a field_exists test, so it is not compressible.
        assert!(validate.is_validation() && !validate.is_compressible());
    }

    #[test]
    fn equal_variant_names_follow_qemu() {
        assert_eq!(infos::equal_variant(infos::UINT64).name, "int64 equal");
        assert_eq!(infos::equal_variant(infos::UINT16).name, "uint16 equal");
    }
}

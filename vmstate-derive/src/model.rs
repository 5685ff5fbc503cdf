//! The resolved model: how each field is encoded, decided once from its attributes
//! after the checks passed. The expansion matches on it and never looks at attributes,
//! so an attribute combination the checks reject has no value here.

use syn::{Expr, Ident, Member, Path, Type};

/// A struct ready to expand.
pub struct Struct<'a> {
    /// The type's name.
    pub ident: &'a Ident,
    /// The description's name (`name = "..."`, or the type's name).
    pub name: String,
    /// The version saved.
    pub version: u32,
    /// The oldest version loaded.
    pub min_version: u32,
    /// The container hooks and the section's `needed` predicate.
    pub hooks: Hooks<'a>,
    /// Every field, in declaration order.
    pub fields: Vec<Field<'a>>,
}

/// The container's hooks, each a path to the user's function.
pub struct Hooks<'a> {
    /// `pre_save = path`.
    pub pre_save: Option<&'a Path>,
    /// `post_save = path`.
    pub post_save: Option<&'a Path>,
    /// `pre_load = path`.
    pub pre_load: Option<&'a Path>,
    /// `post_load = path`.
    pub post_load: Option<&'a Path>,
    /// `needed = path`: whether the section is sent.
    pub needed: Option<&'a Path>,
}

/// One field and how it is encoded.
pub struct Field<'a> {
    /// The Rust member (`foo`, or `0` in a tuple struct).
    pub member: &'a Member,
    /// The Rust name, for messages.
    pub rust_name: &'a str,
    /// QEMU's field name: `rename`, `unused` for unused bytes, else the Rust name.
    pub name: String,
    /// How the field is encoded.
    pub encoding: Encoding<'a>,
}

/// How a field is encoded: the one decision the expansion follows.
pub enum Encoding<'a> {
    /// `skip`: never sent (it may still count a `Vec` locally).
    Skipped,
    /// `subsection, needed = path`: an optional part after the section's fields.
    Subsection(Subsection<'a>),
    /// An entry of the section's field table (QEMU's `fields`).
    Wire(Wire<'a>),
}

/// A subsection field.
pub struct Subsection<'a> {
    /// The field's type, a `VmState` with its own description.
    pub ty: &'a Type,
    /// `fn(&Self) -> bool`: whether it is sent.
    pub needed: &'a Path,
}

/// An entry of the section's field table.
pub enum Wire<'a> {
    /// `unused = N`: N zero bytes, skipped on load.
    Unused {
        /// N.
        size: usize,
        /// When the bytes are in the stream.
        presence: Presence<'a>,
    },
    /// `validate = path`: a check on load (QEMU's `VMSTATE_VALIDATE`); no bytes.
    Validate {
        /// `fn(&Self, u32) -> bool`.
        check: &'a Path,
    },
    /// The field's value.
    Data {
        /// When the value is in the stream.
        presence: Presence<'a>,
        /// How many elements of what type, and how they are written.
        layout: Layout<'a>,
    },
}

/// When a field is in the stream.
#[derive(Clone, Copy)]
pub enum Presence<'a> {
    /// Always.
    Always,
    /// `since = N` with N > 0: in streams of version N and later.
    Since(u32),
    /// `exists = path`: where `fn(&Self, u32) -> bool` says so.
    Exists(&'a Path),
}

/// How a data field's value is written.
pub enum Layout<'a> {
    /// One `T`.
    Single {
        /// `T`.
        ty: &'a Type,
    },
    /// `equal`: one `T` that must load equal to the current value (QEMU's `* equal`).
    Equal {
        /// `T`, an integer type QEMU has an `equal` info for.
        ty: &'a Type,
    },
    /// `[T; N]`: N elements.
    Array {
        /// `T`.
        elem: &'a Type,
        /// `N`.
        len: &'a Expr,
    },
    /// `buffer` on `[u8; N]`: N raw bytes (QEMU's `VMSTATE_BUFFER`).
    Buffer {
        /// `N`.
        len: &'a Expr,
    },
    /// `len = field` on `Vec<T>`: as many elements as an earlier field counts (QEMU's
    /// `VMS_VARRAY_*`).
    Varray {
        /// `T`.
        elem: &'a Type,
        /// The count field.
        count: Count<'a>,
    },
    /// `buffer, len = field` on `Vec<u8>`: as many raw bytes as an earlier field counts
    /// (QEMU's `VMS_VBUFFER`).
    Vbuffer {
        /// The count field.
        count: Count<'a>,
    },
    /// `qtailq` or `qlist` on a `VmList` (`Vec<T>`, `VecDeque<T>`): marked elements
    /// ended by `0x00`, each loaded at the field's version.
    List {
        /// The field's type.
        ty: &'a Type,
        /// Which QEMU kind (the vmdesc `type`).
        kind: ListKind,
    },
    /// `gtree` on a `VmTree` (`BTreeMap<K, V>`): a node count, marked key/value pairs
    /// ended by `0x00`, loaded at the field's version.
    Tree {
        /// The field's type.
        ty: &'a Type,
    },
    /// `array_of_pointer` on `[P; N]` with `P: VmNullable` (`Option<T>`,
    /// `Option<Box<T>>`): present elements as `T`, absent ones as `0x30`.
    PointerArray {
        /// `P`.
        elem: &'a Type,
        /// `N`.
        len: &'a Expr,
    },
    /// `to_tmp`/`from_tmp` on a `Tmp<T>`: a temporary computed on save and applied on
    /// load (QEMU's `VMSTATE_WITH_TMP`).
    Tmp {
        /// The field's type, `Tmp<T>`.
        ty: &'a Type,
        /// `fn(&Self) -> T`.
        to_tmp: &'a Path,
        /// `fn(&mut Self, T) -> Result<(), E>`.
        from_tmp: &'a Path,
    },
}

/// QEMU's two list kinds, which share one wire format.
#[derive(Clone, Copy)]
pub enum ListKind {
    /// `qtailq`.
    Qtailq,
    /// `qlist`.
    Qlist,
}

/// The field that counts a `Varray` or `Vbuffer`.
pub struct Count<'a> {
    /// Its name as written in `len = field` (the generated code reads it there).
    pub field: &'a Ident,
    /// Its QEMU name.
    pub name: String,
    /// Its type.
    pub ty: &'a Type,
}

impl Presence<'_> {
    /// The `since` version of the field table: N for `since = N`, else 0.
    pub fn since(&self) -> u32 {
        match self {
            Presence::Always | Presence::Exists(_) => 0,
            Presence::Since(n) => *n,
        }
    }

    /// True for `exists = path`: the field table marks an existence test.
    pub fn is_exists(&self) -> bool {
        match self {
            Presence::Exists(_) => true,
            Presence::Always | Presence::Since(_) => false,
        }
    }
}

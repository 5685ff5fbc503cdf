//! The struct as written: its fields, their type shapes and parsed attributes (the input
//! of the checks and of `resolve`).

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, Fields, GenericArgument, Ident, Member, PathArguments, Type};

use crate::attr::{ContainerAttrs, FieldAttrs};
use crate::ctxt::Ctxt;

/// The struct being derived.
pub struct Container<'a> {
    /// The type's name.
    pub ident: &'a Ident,
    /// Its `#[vmstate(...)]` attributes.
    pub attrs: ContainerAttrs,
    /// Its fields, in declaration order.
    pub fields: Vec<FieldAst<'a>>,
    /// The whole input, for the rules about generics.
    pub input: &'a DeriveInput,
}

/// The syntactic shape of a field's type, which decides how it is saved.
pub enum Shape<'a> {
    /// Any element type `T`.
    Single,
    /// `[T; N]`.
    Array { elem: &'a Type, len: &'a Expr },
    /// `Vec<T>` (needs `len = field`).
    Vec { elem: &'a Type },
}

/// One field.
pub struct FieldAst<'a> {
    /// The member to access it by (`self.foo`, `self.0`).
    pub member: Member,
    /// The Rust name (`foo`, or `0` for tuple fields).
    pub rust_name: String,
    /// Its type as written.
    pub ty: &'a Type,
    /// The shape of that type.
    pub shape: Shape<'a>,
    /// Its `#[vmstate(...)]` attributes.
    pub attrs: FieldAttrs,
}

/// Which of a field's role-giving keys wins (`skip`, then `subsection`, `unused`,
/// `validate`, else plain data), so that the checks report each misuse once. Only
/// `resolve` turns a checked field into its encoding (`model::Encoding`).
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum Role {
    /// Not sent.
    Skip,
    /// A subsection.
    Subsection,
    /// `unused = N`.
    Unused,
    /// `validate = path`: a load-time check, no bytes.
    Validate,
    /// An ordinary field.
    Data,
}

impl<'a> Container<'a> {
    /// Builds the model; shape errors (enums, unions, unit structs) are recorded.
    pub fn from_input(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let attrs = ContainerAttrs::parse(cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(f) => f.named.iter().collect::<Vec<_>>(),
                Fields::Unnamed(f) => f.unnamed.iter().collect(),
                Fields::Unit => Vec::new(),
            },
            Data::Enum(e) => {
                cx.error(
                    e.enum_token.span(),
                    "VmState can only be derived for structs; an enum has no fixed wire layout",
                );
                return None;
            }
            Data::Union(u) => {
                cx.error(u.union_token.span(), "VmState cannot be derived for unions");
                return None;
            }
        };
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let (member, rust_name) = match &f.ident {
                    Some(id) => (Member::Named(id.clone()), id.to_string()),
                    None => (Member::Unnamed(i.into()), i.to_string()),
                };
                FieldAst {
                    member,
                    rust_name,
                    ty: &f.ty,
                    shape: Shape::of(&f.ty),
                    attrs: FieldAttrs::parse(cx, &f.attrs),
                }
            })
            .collect();
        Some(Container {
            ident: &input.ident,
            attrs,
            fields,
            input,
        })
    }

    /// The description name: `name = "..."`, or the type's name.
    pub fn name(&self) -> String {
        match self.attrs.name.get() {
            Some(n) => n.value.clone(),
            None => self.ident.to_string(),
        }
    }

    /// `version = N`, default 1.
    pub fn version(&self) -> u32 {
        self.attrs.version.get().map_or(1, |v| v.value)
    }

    /// `min_version = N`, default: the version (no older stream accepted).
    pub fn min_version(&self) -> u32 {
        self.attrs
            .min_version
            .get()
            .map_or(self.version(), |v| v.value)
    }

    /// Index of the field whose Rust name is `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.rust_name == name)
    }
}

impl<'a> Shape<'a> {
    fn of(ty: &'a Type) -> Self {
        match ty {
            Type::Array(a) => Shape::Array {
                elem: &a.elem,
                len: &a.len,
            },
            Type::Path(p) if p.qself.is_none() => {
                let last = p.path.segments.last();
                match last {
                    Some(seg) if seg.ident == "Vec" => match &seg.arguments {
                        PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
                            match &args.args[0] {
                                GenericArgument::Type(elem) => Shape::Vec { elem },
                                _ => Shape::Single,
                            }
                        }
                        _ => Shape::Single,
                    },
                    _ => Shape::Single,
                }
            }
            _ => Shape::Single,
        }
    }
}

impl FieldAst<'_> {
    /// What the field contributes.
    pub fn role(&self) -> Role {
        if self.attrs.skip.is_set() {
            Role::Skip
        } else if self.attrs.subsection.is_set() {
            Role::Subsection
        } else if self.attrs.unused.is_set() {
            Role::Unused
        } else if self.attrs.validate.is_set() {
            Role::Validate
        } else {
            Role::Data
        }
    }

    /// QEMU's field name: `rename`, `unused` for unused fields, else the Rust name.
    pub fn qemu_name(&self) -> String {
        if let Some(r) = self.attrs.rename.get() {
            return r.value.clone();
        }
        if self.role() == Role::Unused {
            return "unused".into();
        }
        // QEMU's VMSTATE_WITH_TMP always names its field `tmp`.
        if self.attrs.to_tmp.is_set() || self.attrs.from_tmp.is_set() {
            return "tmp".into();
        }
        self.rust_name.clone()
    }

    /// The integer type of this field, if it is one of the count types.
    pub fn count_type(&self) -> Option<&'static str> {
        let id = self.type_ident()?;
        ["u8", "u16", "u32", "i32"].into_iter().find(|t| *t == id)
    }

    /// True if the type is `[u8; N]`.
    pub fn is_byte_array(&self) -> bool {
        match &self.shape {
            Shape::Array { elem, .. } => is_ident(elem, "u8"),
            _ => false,
        }
    }

    /// True if the type is `Vec<u8>`.
    pub fn is_byte_vec(&self) -> bool {
        match &self.shape {
            Shape::Vec { elem } => is_ident(elem, "u8"),
            _ => false,
        }
    }

    /// True for a `buffer` field whose size comes from a count field: `Vec<u8>` with
    /// `len` (QEMU's `VMS_VBUFFER`).
    pub fn is_vbuffer(&self) -> bool {
        self.attrs.buffer.is_set() && matches!(self.shape, Shape::Vec { .. })
    }

    /// The type's single identifier as written (`u32` in `x: u32`), if it is one.
    pub fn type_ident(&self) -> Option<String> {
        let Type::Path(p) = self.ty else { return None };
        if p.qself.is_some() {
            return None;
        }
        p.path.get_ident().map(ToString::to_string)
    }

    /// The field's `since` (0 when not given).
    pub fn since(&self) -> u32 {
        self.attrs.since.get().map_or(0, |s| s.value)
    }
}

/// True if `ty` is the single identifier `name` as written.
pub fn is_ident(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
}

/// A type as the user wrote it, for messages.
pub fn type_str(ty: &syn::Type) -> String {
    let mut s = ty.to_token_stream().to_string();
    for (from, to) in [
        (" ;", ";"),
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
    ] {
        s = s.replace(from, to);
    }
    s
}

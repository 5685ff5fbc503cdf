//! The static description table: one field descriptor per wire field, with its vmdesc
//! name (`[k]` for a shared name), and the compile-time check of subsection names.

use std::collections::HashMap;

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{LitStr, Type};

use crate::ast::type_str;
use crate::attr::span_range;
use crate::model::{Count, Layout, ListKind, Wire};

use super::{SubsectionField, WireField};

/// vmdesc names: a name shared by several fields gets `[k]`, its position among them.
pub(super) fn vmdesc_names(wire: &[WireField<'_, '_>]) -> Vec<String> {
    let mut totals: HashMap<&str, usize> = HashMap::new();
    for f in wire {
        *totals.entry(&f.field.name).or_default() += 1;
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    wire.iter()
        .map(|f| {
            let n = f.field.name.as_str();
            if totals[n] > 1 {
                let k = seen.entry(n).or_default();
                *k += 1;
                format!("{n}[{}]", *k - 1)
            } else {
                n.to_owned()
            }
        })
        .collect()
}

/// `<T as VmElem>::TYPE`, spanned over `T`.
fn vm_type(ty: &Type) -> TokenStream {
    quote_spanned!(ty.span()=> <#ty as __vm::VmElem>::TYPE)
}

/// The element type expression of a field.
fn elem_type(w: &Wire<'_>) -> TokenStream {
    match w {
        Wire::Unused { size, .. } => quote!(__vm::unused_type(#size)),
        Wire::Validate { .. } => quote!(__vm::VALIDATE_TYPE),
        Wire::Data { layout, .. } => match layout {
            Layout::Single { ty } => vm_type(ty),
            Layout::Equal { ty } => {
                let base = vm_type(ty);
                quote!(__vm::equal_type(#base))
            }
            Layout::Array { elem, .. } | Layout::Varray { elem, .. } => vm_type(elem),
            Layout::Buffer { len } => quote!(__vm::buffer_type(#len)),
            // A counted buffer's element has size 0 in the description (QEMU's dump says 0).
            Layout::Vbuffer { .. } => quote!(__vm::buffer_type(0)),
            Layout::List { ty, .. } => quote_spanned!(ty.span()=> __vm::FieldType::Struct(
                <<#ty as __vm::VmList>::Elem as __vm::VmState>::DESCRIPTION
            )),
            Layout::Tree { ty } => quote_spanned!(ty.span()=> __vm::FieldType::Struct(
                <<#ty as __vm::VmTree>::Value as __vm::VmState>::DESCRIPTION
            )),
            Layout::PointerArray { elem, .. } => quote_spanned!(elem.span()=>
                <<#elem as __vm::VmNullable>::Target as __vm::VmElem>::TYPE
            ),
            Layout::Tmp { ty, .. } => quote_spanned!(ty.span()=> __vm::FieldType::Struct(
                <<#ty as __vm::VmTmp>::State as __vm::VmState>::DESCRIPTION
            )),
        },
    }
}

/// The element count expression of a field.
fn count(w: &Wire<'_>) -> TokenStream {
    match w {
        Wire::Unused { .. } => quote!(__vm::Count::Single),
        Wire::Validate { .. } => quote!(__vm::Count::Validate),
        Wire::Data { layout, .. } => match layout {
            Layout::Single { .. } | Layout::Equal { .. } | Layout::Buffer { .. } => {
                quote!(__vm::Count::Single)
            }
            Layout::Array { len, .. } => quote!(__vm::Count::Array(#len)),
            Layout::Varray { count, .. } => counted(quote!(Varray), count),
            Layout::Vbuffer { count } => counted(quote!(Vbuffer), count),
            Layout::List {
                kind: ListKind::Qtailq,
                ..
            } => quote!(__vm::Count::List(__vm::ListKind::Qtailq)),
            Layout::List {
                kind: ListKind::Qlist,
                ..
            } => quote!(__vm::Count::List(__vm::ListKind::Qlist)),
            Layout::Tree { ty } => quote_spanned!(ty.span()=> __vm::Count::Gtree {
                key: <<#ty as __vm::VmTree>::Key as __vm::GtreeKey>::DESCRIPTION,
            }),
            Layout::PointerArray { len, .. } => quote!(__vm::Count::ArrayOfPointer(#len)),
            Layout::Tmp { .. } => quote!(__vm::Count::Tmp),
        },
    }
}

/// `Count::Varray` or `Count::Vbuffer` with the count field's name and type, spanned over
/// the field named in `len = field`.
fn counted(variant: TokenStream, count: &Count<'_>) -> TokenStream {
    let len_name = &count.name;
    let len_ty = count.ty;
    quote_spanned! {count.field.span()=>
        __vm::Count::#variant {
            len_field: #len_name,
            len_type: <#len_ty as __vm::CountField>::LEN_TYPE,
        }
    }
}

/// One entry of the field table.
pub(super) fn field_desc(f: WireField<'_, '_>, vmdesc_name: &str) -> TokenStream {
    let name = &f.field.name;
    let (since, has_exists, equal) = match f.wire {
        Wire::Unused { presence, .. } => (presence.since(), presence.is_exists(), false),
        // A validation is QEMU's `field_exists` test with `VMS_MUST_EXIST`.
        Wire::Validate { .. } => (0, true, false),
        Wire::Data { presence, layout } => {
            let equal = match layout {
                Layout::Equal { .. } => true,
                Layout::Single { .. }
                | Layout::Array { .. }
                | Layout::Buffer { .. }
                | Layout::Varray { .. }
                | Layout::Vbuffer { .. }
                | Layout::List { .. }
                | Layout::Tree { .. }
                | Layout::PointerArray { .. }
                | Layout::Tmp { .. } => false,
            };
            (presence.since(), presence.is_exists(), equal)
        }
    };
    let ty = elem_type(f.wire);
    let count = count(f.wire);
    quote! {
        __vm::Field {
            name: #name,
            vmdesc_name: #vmdesc_name,
            since: #since,
            has_exists_test: #has_exists,
            ty: #ty,
            count: #count,
            equal: #equal,
        }
    }
}

/// A compile-time check that a temporary's type loads at version 0 as QEMU loads it.
pub(super) fn tmp_check(ty: &Type) -> TokenStream {
    let (first, last) = span_range(ty);
    let msg = LitStr::new(
        &format!(
            "the temporary of `{}`: QEMU loads a temporary (VMSTATE_WITH_TMP) at version 0, so \
             its type needs \
             `min_version = 0` and no field with `since`; e.g. #[vmstate(name = \"...\", \
             version = 0)]",
            type_str(ty)
        )
        .replace('{', "{{")
        .replace('}', "}}"),
        Span::call_site(),
    );
    let mut args = Group::new(
        Delimiter::Parenthesis,
        quote_spanned! {first=>
            __vm::tmp_loadable(<<#ty as __vm::VmTmp>::State as __vm::VmState>::DESCRIPTION),
            #msg
        },
    );
    args.set_span(last);
    quote_spanned! {first=>
        const _: () = ::core::assert! #args;
    }
}

/// A compile-time check that a subsection's name starts with the parent's name and goes
/// on after it (QEMU's loader only takes a subsection whose name is longer than the
/// parent's). The error points at the field's type and says what to write.
pub(super) fn prefix_check(parent: &str, f: SubsectionField<'_, '_>) -> TokenStream {
    let ty = f.sub.ty;
    let ty_name = type_str(ty);
    let field = f.field.rust_name;
    let msg = LitStr::new(
        &format!(
            "subsection `{field}`: the vmstate name of `{ty_name}` must start with its \
             parent's name \"{parent}\" and be longer, e.g. \
             #[vmstate(name = \"{parent}/{field}\")] on `{ty_name}`"
        )
        // `assert!` reads its message as a format string.
        .replace('{', "{{")
        .replace('}', "}}"),
        Span::call_site(),
    );
    let (first, last) = span_range(ty);
    // The assertion's span runs from the type's first token to its last.
    let mut args = Group::new(
        Delimiter::Parenthesis,
        quote_spanned! {first=>
            __vm::has_prefix(<#ty as __vm::VmState>::DESCRIPTION.name, #parent)
                && <#ty as __vm::VmState>::DESCRIPTION.name.len() > #parent.len(),
            #msg
        },
    );
    args.set_span(last);
    // QEMU's loader keeps one byte of a subsection's version.
    let byte_msg = LitStr::new(
        &format!(
            "subsection `{field}`: the version of `{ty_name}` must be at most 255 (QEMU \
             keeps one byte of a subsection's version)"
        )
        .replace('{', "{{")
        .replace('}', "}}"),
        Span::call_site(),
    );
    let mut byte_args = Group::new(
        Delimiter::Parenthesis,
        quote_spanned! {first=>
            <#ty as __vm::VmState>::DESCRIPTION.version <= 255,
            #byte_msg
        },
    );
    byte_args.set_span(last);
    quote_spanned! {first=>
        const _: () = ::core::assert! #args;
        const _: () = ::core::assert! #byte_args;
    }
}

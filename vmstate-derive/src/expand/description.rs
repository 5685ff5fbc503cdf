//! The static description table: one field descriptor per wire field, with its vmdesc
//! name (`[k]` for a shared name), and the compile-time check of subsection names.

use std::collections::HashMap;

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::LitStr;
use syn::spanned::Spanned;

use crate::ast::{Container, FieldAst, Role, Shape, type_str};
use crate::attr::span_range;

/// vmdesc names: a name shared by several fields gets `[k]`, its position among them.
pub(super) fn vmdesc_names(wire: &[&FieldAst<'_>]) -> Vec<String> {
    let mut totals: HashMap<String, usize> = HashMap::new();
    for f in wire {
        *totals.entry(f.qemu_name()).or_default() += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    wire.iter()
        .map(|f| {
            let n = f.qemu_name();
            if totals[&n] > 1 {
                let k = seen.entry(n.clone()).or_default();
                *k += 1;
                format!("{n}[{}]", *k - 1)
            } else {
                n
            }
        })
        .collect()
}

/// The element type expression of a field.
fn elem_type(f: &FieldAst<'_>) -> TokenStream {
    if let Some(u) = f.attrs.unused.get() {
        let n = u.value;
        return quote!(__vm::unused_type(#n));
    }
    if f.role() == Role::Validate {
        return quote!(__vm::VALIDATE_TYPE);
    }
    if f.attrs.buffer.is_set() {
        // A counted buffer's element has size 0 in the description (QEMU's dump says 0).
        return match &f.shape {
            Shape::Array { len, .. } => quote!(__vm::buffer_type(#len)),
            _ => quote!(__vm::buffer_type(0)),
        };
    }
    let elem = match &f.shape {
        Shape::Single => f.ty,
        Shape::Array { elem, .. } | Shape::Vec { elem } => *elem,
    };
    let base = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>::TYPE);
    if f.attrs.equal.is_set() {
        quote!(__vm::equal_type(#base))
    } else {
        base
    }
}

pub(super) fn field_desc(c: &Container<'_>, f: &FieldAst<'_>, vmdesc_name: &str) -> TokenStream {
    let name = f.qemu_name();
    let since = f.attrs.since.get().map_or(0, |s| s.value);
    // A validation is QEMU's `field_exists` test with `VMS_MUST_EXIST`.
    let has_exists = f.attrs.exists.is_set() || f.role() == Role::Validate;
    let equal = f.attrs.equal.is_set();
    let ty = elem_type(f);
    let count = match (&f.shape, f.attrs.buffer.is_set(), f.role()) {
        (_, _, Role::Validate) => quote!(__vm::Count::Validate),
        (Shape::Vec { .. }, _, Role::Data) => {
            let len = &f.attrs.len.get().expect("checked: Vec has len").value;
            let target = c
                .field_index(&len.to_string())
                .map(|i| &c.fields[i])
                .expect("checked: len names a field");
            let len_name = target.qemu_name();
            let len_ty = target.ty;
            let variant = if f.is_vbuffer() {
                quote!(Vbuffer)
            } else {
                quote!(Varray)
            };
            quote_spanned! {len.span()=>
                __vm::Count::#variant {
                    len_field: #len_name,
                    len_type: <#len_ty as __vm::CountField>::LEN_TYPE,
                }
            }
        }
        (_, _, Role::Unused) | (_, true, _) | (Shape::Single, _, _) => quote!(__vm::Count::Single),
        (Shape::Array { len, .. }, _, _) => quote!(__vm::Count::Array(#len)),
        (Shape::Vec { .. }, _, _) => quote!(__vm::Count::Single),
    };
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

/// A compile-time check that a subsection's name starts with the parent's name and goes
/// on after it (QEMU's loader only takes a subsection whose name is longer than the
/// parent's). The error points at the field's type and says what to write.
pub(super) fn prefix_check(parent: &str, f: &FieldAst<'_>) -> TokenStream {
    let ty = f.ty;
    let ty_name = type_str(ty);
    let field = &f.rust_name;
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
    quote_spanned! {first=>
        const _: () = ::core::assert! #args;
    }
}

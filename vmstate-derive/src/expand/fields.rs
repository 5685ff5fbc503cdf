//! Save and load code for one field at a time through the `Writer`/`Reader`: each field
//! behind its existence test (`since` or `exists`), and the subsections.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::{Container, FieldAst, Shape};

use super::hooks::hook_helper;

/// Wraps a field's code in its existence test (`since` or `exists`).
fn guarded(f: &FieldAst<'_>, body: TokenStream) -> TokenStream {
    if let Some(p) = f.attrs.exists.get() {
        let p = &p.value;
        let test = hook_helper(p, "exists", quote!(&*this, version), false);
        quote!(if #test { #body })
    } else if let Some(s) = f.attrs.since.get().filter(|s| s.value > 0) {
        let v = s.value;
        quote!(if version >= #v { #body })
    } else {
        body
    }
}

pub(super) fn save_field(c: &Container<'_>, index: usize, f: &FieldAst<'_>) -> TokenStream {
    let m = &f.member;
    let name = f.qemu_name();
    let field = quote!(&__DESCRIPTION.fields[#index]);
    let path = quote!(.map_err(|e| e.in_field(#name))?;);
    let body = if let Some(u) = f.attrs.unused.get() {
        let n = u.value;
        quote!(__vm::save_unused(#n, #field, w, ctx) #path)
    } else if f.attrs.buffer.is_set() {
        quote!(__vm::save_buffer(&this.#m[..], #field, w, ctx) #path)
    } else {
        match &f.shape {
            Shape::Single => quote!(__vm::save_one(&mut this.#m, #field, w, ctx) #path),
            Shape::Array { .. } => quote!(__vm::save_many(&mut this.#m[..], #field, w, ctx) #path),
            Shape::Vec { .. } => {
                let len = &f.attrs.len.get().expect("checked").value;
                let len_name = c
                    .field_index(&len.to_string())
                    .map(|i| c.fields[i].qemu_name())
                    .unwrap_or_default();
                quote! {
                    __vm::save_count(this.#len, #len_name, this.#m.len()) #path
                    __vm::save_many(&mut this.#m[..], #field, w, ctx) #path
                }
            }
        }
    };
    guarded(f, body)
}

pub(super) fn load_field(c: &Container<'_>, f: &FieldAst<'_>) -> TokenStream {
    let m = &f.member;
    let name = f.qemu_name();
    let path = quote!(.map_err(|e| e.in_field(#name))?;);
    let body = if let Some(u) = f.attrs.unused.get() {
        let n = u.value as u64;
        quote!(r.skip(#n) #path)
    } else if f.attrs.buffer.is_set() {
        quote!(r.get_bytes_into(&mut this.#m[..]) #path)
    } else if f.attrs.equal.is_set() {
        quote!(__vm::load_equal(&mut this.#m, r) #path)
    } else {
        match &f.shape {
            Shape::Single => quote!(__vm::VmElem::load_elem(&mut this.#m, r) #path),
            Shape::Array { elem, .. } => {
                quote!(<#elem as __vm::VmElem>::load_slice(&mut this.#m[..], r) #path)
            }
            Shape::Vec { elem } => {
                let len = &f.attrs.len.get().expect("checked").value;
                let len_name = c
                    .field_index(&len.to_string())
                    .map(|i| c.fields[i].qemu_name())
                    .unwrap_or_default();
                quote! {
                    __vm::load_count(&mut this.#m, this.#len, #len_name, r) #path
                    <#elem as __vm::VmElem>::load_slice(&mut this.#m[..], r) #path
                }
            }
        }
    };
    guarded(f, body)
}

pub(super) fn save_subsection(f: &FieldAst<'_>) -> TokenStream {
    let m = &f.member;
    let needed = &f
        .attrs
        .needed
        .get()
        .expect("checked: subsection has needed")
        .value;
    let test = hook_helper(needed, "needed", quote!(&*this), false);
    quote! {
        if #test {
            __vm::save_subsection(&mut this.#m, &__DESCRIPTION, w, ctx)?;
        }
    }
}

pub(super) fn load_subsections(subs: &[&FieldAst<'_>]) -> TokenStream {
    if subs.is_empty() {
        // Still consume nothing, but reject a subsection this description does not have.
        return quote! {
            __vm::load_subsections(r, &__DESCRIPTION, |_, _, _| Ok(false))?;
        };
    }
    let arms = subs.iter().map(|f| {
        let m = &f.member;
        let ty = f.ty;
        quote! {
            if name == <#ty as __vm::VmState>::DESCRIPTION.name {
                return __vm::load_subsection(&mut this.#m, r, sub_version);
            }
        }
    });
    quote! {
        __vm::load_subsections(r, &__DESCRIPTION, |name, r, sub_version| {
            #(#arms)*
            Ok(false)
        })?;
    }
}

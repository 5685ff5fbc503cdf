//! Save and load code for one field at a time through the `Writer`/`Reader`: each field
//! behind its existence test (`since` or `exists`), and the subsections.

use proc_macro2::{Delimiter, Group, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Container, FieldAst, Role, Shape};

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

/// The element type of a field (`T` in `T`, `[T; N]` and `Vec<T>`).
fn elem_of<'a>(f: &FieldAst<'a>) -> &'a syn::Type {
    match &f.shape {
        Shape::Single => f.ty,
        Shape::Array { elem, .. } | Shape::Vec { elem } => elem,
    }
}

/// `__vm::<helper>::<T, _>(<args>)` spanned over the type `T`, so that a `T` that is not a
/// `VmElem` (or `VmState`) is reported at the field's type rather than at the derive: the
/// bound is checked on the explicit `T`. (A call's span runs from its callee to its
/// closing parenthesis.)
fn typed_call(ty: &syn::Type, helper: &str, args: TokenStream) -> TokenStream {
    let span = ty.span();
    let helper = syn::Ident::new(helper, span);
    let mut args = Group::new(Delimiter::Parenthesis, args);
    args.set_span(span);
    quote_spanned!(span=> __vm::#helper::<#ty, _> #args)
}

/// The count field of a `Vec` (`len = field`) and its QEMU name.
fn count_field<'f>(c: &Container<'_>, f: &'f FieldAst<'_>) -> (&'f syn::Ident, String) {
    let len = &f.attrs.len.get().expect("checked: Vec has len").value;
    let len_name = c
        .field_index(&len.to_string())
        .map(|i| c.fields[i].qemu_name())
        .unwrap_or_default();
    (len, len_name)
}

pub(super) fn save_field(c: &Container<'_>, index: usize, f: &FieldAst<'_>) -> TokenStream {
    if f.role() == Role::Validate {
        // Checked on load only; nothing is written.
        return TokenStream::new();
    }
    let m = &f.member;
    let name = f.qemu_name();
    let field = quote!(&__DESCRIPTION.fields[#index]);
    let path = quote!(.map_err(|e| e.in_field(#name))?;);
    let body = if let Some(u) = f.attrs.unused.get() {
        let n = u.value;
        quote!(__vm::save_unused(#n, #field, w, ctx) #path)
    } else if let Shape::Vec { .. } = &f.shape {
        let (len, len_name) = count_field(c, f);
        let data = if f.attrs.buffer.is_set() {
            // QEMU's VBUFFER: one `buffer` element of the counted size.
            quote!(__vm::save_buffer(&this.#m[..], #field, w, ctx) #path)
        } else {
            let call = typed_call(
                elem_of(f),
                "save_many",
                quote!(&mut this.#m[..], #field, w, ctx),
            );
            quote!(#call #path)
        };
        quote! {
            __vm::save_count(this.#len, #len_name, this.#m.len()) #path
            #data
        }
    } else if f.attrs.buffer.is_set() {
        quote!(__vm::save_buffer(&this.#m[..], #field, w, ctx) #path)
    } else {
        match &f.shape {
            Shape::Single => {
                let call = typed_call(elem_of(f), "save_one", quote!(&mut this.#m, #field, w, ctx));
                quote!(#call #path)
            }
            _ => {
                let call = typed_call(
                    elem_of(f),
                    "save_many",
                    quote!(&mut this.#m[..], #field, w, ctx),
                );
                quote!(#call #path)
            }
        }
    };
    guarded(f, body)
}

pub(super) fn load_field(c: &Container<'_>, f: &FieldAst<'_>) -> TokenStream {
    let m = &f.member;
    let name = f.qemu_name();
    let path = quote!(.map_err(|e| e.in_field(#name))?;);
    let body = if let Some(v) = f.attrs.validate.get() {
        let test = hook_helper(
            &v.value,
            "validate",
            quote!(&*this, version, r, #name),
            false,
        );
        quote!(#test #path)
    } else if let Some(u) = f.attrs.unused.get() {
        let n = u.value as u64;
        quote!(r.skip(#n) #path)
    } else if f.is_vbuffer() {
        let (len, len_name) = count_field(c, f);
        quote! {
            __vm::load_count(&mut this.#m, this.#len, #len_name, r) #path
            r.get_bytes_into(&mut this.#m[..]) #path
        }
    } else if f.attrs.buffer.is_set() {
        quote!(r.get_bytes_into(&mut this.#m[..]) #path)
    } else if f.attrs.equal.is_set() {
        quote!(__vm::load_equal(&mut this.#m, r) #path)
    } else {
        match &f.shape {
            Shape::Single => {
                let ty = f.ty;
                let load = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>::load_elem);
                quote!(#load(&mut this.#m, r) #path)
            }
            Shape::Array { elem, .. } => {
                quote!(<#elem as __vm::VmElem>::load_slice(&mut this.#m[..], r) #path)
            }
            Shape::Vec { elem } => {
                let (len, len_name) = count_field(c, f);
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
    let call = typed_call(
        f.ty,
        "save_subsection",
        quote!(&mut this.#m, &__DESCRIPTION, w, ctx),
    );
    quote! {
        if #test {
            #call?;
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
        let name = quote_spanned!(ty.span()=> <#ty as __vm::VmState>::DESCRIPTION.name);
        let mut args = Group::new(Delimiter::Parenthesis, quote!(&mut this.#m, r, sub_version));
        args.set_span(ty.span());
        let load = quote_spanned!(ty.span()=> __vm::load_subsection::<#ty> #args);
        quote! {
            if name == #name {
                return #load;
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

//! Save and load code for one field at a time through the `Writer`/`Reader`: each field
//! behind its existence test (`since` or `exists`), and the subsections.

use proc_macro2::{Delimiter, Group, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{Count, Layout, Presence, Wire};

use super::hooks::hook_helper;
use super::{SubsectionField, WireField};

/// Wraps a field's code in its existence test (`since` or `exists`).
fn guarded(presence: &Presence<'_>, body: TokenStream) -> TokenStream {
    match presence {
        Presence::Always => body,
        Presence::Since(v) => quote!(if version >= #v { #body }),
        Presence::Exists(p) => {
            let test = hook_helper(p, "exists", quote!(&*this, version), false);
            quote!(if #test { #body })
        }
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

/// Writes field `index` of the field table.
pub(super) fn save_field(index: usize, f: WireField<'_, '_>) -> TokenStream {
    let m = f.field.member;
    let name = &f.field.name;
    let field = quote!(&__DESCRIPTION.fields[#index]);
    let path = quote!(.map_err(|e| e.in_field(#name))?;);
    match f.wire {
        // Checked on load only; nothing is written.
        Wire::Validate { .. } => TokenStream::new(),
        Wire::Unused { size, presence } => guarded(
            presence,
            quote!(__vm::save_unused(#size, #field, w, ctx) #path),
        ),
        Wire::Data { presence, layout } => {
            let body = match layout {
                Layout::Single { ty } | Layout::Equal { ty } => {
                    let call = typed_call(ty, "save_one", quote!(&mut this.#m, #field, w, ctx));
                    quote!(#call #path)
                }
                Layout::Array { elem, .. } => {
                    let call =
                        typed_call(elem, "save_many", quote!(&mut this.#m[..], #field, w, ctx));
                    quote!(#call #path)
                }
                Layout::Buffer { .. } => {
                    quote!(__vm::save_buffer(&this.#m[..], #field, w, ctx) #path)
                }
                Layout::Varray { elem, count } => {
                    let save_count = save_count(count, f, &path);
                    let call =
                        typed_call(elem, "save_many", quote!(&mut this.#m[..], #field, w, ctx));
                    quote! {
                        #save_count
                        #call #path
                    }
                }
                Layout::Vbuffer { count } => {
                    let save_count = save_count(count, f, &path);
                    // QEMU's VBUFFER: one `buffer` element of the counted size.
                    quote! {
                        #save_count
                        __vm::save_buffer(&this.#m[..], #field, w, ctx) #path
                    }
                }
                Layout::List { ty, .. } => {
                    let call =
                        quote_spanned!(ty.span()=> __vm::save_list(&mut this.#m, #field, w, ctx));
                    quote!(#call #path)
                }
                Layout::Tree { ty } => {
                    let call =
                        quote_spanned!(ty.span()=> __vm::save_tree(&mut this.#m, #field, w, ctx));
                    quote!(#call #path)
                }
                Layout::PointerArray { elem, .. } => {
                    let call = typed_call(
                        elem,
                        "save_pointer_array",
                        quote!(&mut this.#m[..], #field, w, ctx),
                    );
                    quote!(#call #path)
                }
                Layout::Tmp { ty, to_tmp, .. } => {
                    let make = make_tmp(ty, to_tmp);
                    // The marker field is read here, so that it is not reported as dead code.
                    let m = f.field.member;
                    quote! {{
                        let _ = &this.#m;
                        let mut tmp = #make;
                        __vm::save_tmp(&mut tmp, #field, w, ctx) #path
                    }}
                }
            };
            guarded(presence, body)
        }
    }
}

/// Checks that a counted field's count agrees with its length before it is written.
fn save_count(count: &Count<'_>, f: WireField<'_, '_>, path: &TokenStream) -> TokenStream {
    let (m, len, len_name) = (f.field.member, count.field, &count.name);
    quote!(__vm::save_count(this.#len, #len_name, this.#m.len()) #path)
}

/// Reads one field of the field table.
pub(super) fn load_field(f: WireField<'_, '_>) -> TokenStream {
    let m = f.field.member;
    let name = &f.field.name;
    let path = quote!(.map_err(|e| e.in_field(#name))?;);
    match f.wire {
        Wire::Validate { check } => {
            let test = hook_helper(check, "validate", quote!(&*this, version, r, #name), false);
            quote!(#test #path)
        }
        Wire::Unused { size, presence } => {
            let n = *size as u64;
            guarded(presence, quote!(r.skip(#n) #path))
        }
        Wire::Data { presence, layout } => {
            let body = match layout {
                Layout::Single { ty } => {
                    let load = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>::load_elem);
                    quote!(#load(&mut this.#m, r) #path)
                }
                Layout::Equal { .. } => quote!(__vm::load_equal(&mut this.#m, r) #path),
                Layout::Array { elem, .. } => {
                    quote!(<#elem as __vm::VmElem>::load_slice(&mut this.#m[..], r) #path)
                }
                Layout::Buffer { .. } => quote!(r.get_bytes_into(&mut this.#m[..]) #path),
                Layout::Varray { elem, count } => {
                    let (len, len_name) = (count.field, &count.name);
                    let call = typed_call(
                        elem,
                        "load_varray",
                        quote!(&mut this.#m, this.#len, #len_name, r),
                    );
                    quote!(#call #path)
                }
                Layout::Vbuffer { count } => {
                    let (len, len_name) = (count.field, &count.name);
                    quote!(__vm::load_vbuffer(&mut this.#m, this.#len, #len_name, r) #path)
                }
                // Elements load at the field's version (`since`), as QEMU's get_qtailq
                // and get_gtree do; without one, at their own.
                Layout::List { ty, .. } | Layout::Tree { ty } => {
                    let version = match presence {
                        Presence::Since(n) => quote!(::core::option::Option::Some(#n)),
                        Presence::Always | Presence::Exists(_) => {
                            quote!(::core::option::Option::None)
                        }
                    };
                    let load = match layout {
                        Layout::Tree { .. } => quote!(load_tree),
                        _ => quote!(load_list),
                    };
                    let call = quote_spanned!(ty.span()=> __vm::#load(&mut this.#m, #version, r));
                    quote!(#call #path)
                }
                Layout::PointerArray { elem, .. } => {
                    let call = quote_spanned!(elem.span()=>
                        __vm::load_pointer_array::<#elem>(&mut this.#m[..], r)
                    );
                    quote!(#call #path)
                }
                // The temporary starts from what `to_tmp` computes, is loaded, and is
                // handed to `from_tmp`.
                Layout::Tmp {
                    ty,
                    to_tmp,
                    from_tmp,
                } => {
                    let make = make_tmp(ty, to_tmp);
                    let apply = hook_helper(from_tmp, "apply_tmp", quote!(this, tmp, r), false);
                    quote! {{
                        let mut tmp = #make;
                        __vm::load_tmp(&mut tmp, r) #path
                        #apply #path
                    }}
                }
            };
            guarded(presence, body)
        }
    }
}

/// `to_tmp(&*this)`, typed by the field's `Tmp<T>` so that a field of another type, or a
/// function returning another type, is reported at the field's type or the path.
fn make_tmp(ty: &syn::Type, to_tmp: &syn::Path) -> TokenStream {
    let (first, last) = crate::attr::span_range(to_tmp);
    let mut args = Group::new(Delimiter::Parenthesis, quote!(&*this, #to_tmp));
    args.set_span(last);
    let helper = syn::Ident::new("make_tmp", first);
    quote_spanned!(first=> __vm::#helper::<#ty, _> #args)
}

/// Writes a subsection when its `needed` predicate says so.
pub(super) fn save_subsection(f: SubsectionField<'_, '_>) -> TokenStream {
    let m = f.field.member;
    let test = hook_helper(f.sub.needed, "needed", quote!(&*this), false);
    let call = typed_call(
        f.sub.ty,
        "save_subsection",
        quote!(&mut this.#m, &__DESCRIPTION, w, ctx),
    );
    quote! {
        if #test {
            #call?;
        }
    }
}

/// Reads the subsections that follow the fields, each found by its name.
pub(super) fn load_subsections(subs: &[SubsectionField<'_, '_>]) -> TokenStream {
    if subs.is_empty() {
        // Still consume nothing, but reject a subsection this description does not have.
        return quote! {
            __vm::load_subsections(r, &__DESCRIPTION, |_, _, _| Ok(false))?;
        };
    }
    let arms = subs.iter().map(|f| {
        let m = f.field.member;
        let ty = f.sub.ty;
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

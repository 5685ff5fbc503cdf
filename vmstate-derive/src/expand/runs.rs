//! The fixed-size fast path: wire fields grouped into segments, runs of fixed-size
//! fields written and read as one slot with compile-time layout constants, and the raw
//! `VmElem` items of a struct whose wire bytes never vary.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Container, FieldAst, Shape};

use super::fields::{load_field, save_field};

/// A piece of a struct's wire fields: a run of fixed-size fields written into one
/// reserved slot and read from one checked slice (when their types are raw, decided at
/// compile time from `VmElem::RAW_SIZE`), or one field that always goes through the
/// `Writer`/`Reader`.
pub(super) enum Segment {
    /// Wire fields `first..first + len` (indices into the description's fields).
    Run { id: usize, first: usize, len: usize },
    /// One wire field.
    Field(usize),
}

/// Whether a field can be part of a run: a fixed number of elements, no value-dependent
/// existence, no comparison or check on load.
fn run_eligible(f: &FieldAst<'_>) -> bool {
    !matches!(f.shape, Shape::Vec { .. })
        && !f.attrs.exists.is_set()
        && !f.attrs.equal.is_set()
        && !f.attrs.validate.is_set()
}

/// A large byte array (`[u8; N]` with a literal N above 64) stays out of runs: it is one
/// copy either way, and in a run it would be zero-filled first.
fn large_bytes(f: &FieldAst<'_>) -> bool {
    let Shape::Array { len, .. } = &f.shape else {
        return false;
    };
    if !(f.is_byte_array() || f.attrs.buffer.is_set()) {
        return false;
    }
    match len {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(n),
            ..
        }) => n.base10_parse::<usize>().is_ok_and(|n| n > 64),
        _ => false,
    }
}

pub(super) fn segments(wire: &[&FieldAst<'_>]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut runs = 0;
    let mut i = 0;
    while i < wire.len() {
        let f = wire[i];
        if !run_eligible(f) || large_bytes(f) {
            out.push(Segment::Field(i));
            i += 1;
            continue;
        }
        let first = i;
        while i < wire.len() && run_eligible(wire[i]) && !large_bytes(wire[i]) {
            i += 1;
        }
        out.push(Segment::Run {
            id: runs,
            first,
            len: i - first,
        });
        runs += 1;
    }
    out
}

fn run_ident(id: usize) -> Ident {
    Ident::new(&format!("__RUN_{id}"), Span::call_site())
}

/// The raw size of one field, as a `const` `Option<usize>` expression.
fn raw_size(f: &FieldAst<'_>) -> TokenStream {
    if let Some(u) = f.attrs.unused.get() {
        let n = u.value;
        return quote!(::core::option::Option::Some(#n));
    }
    match &f.shape {
        Shape::Array { len, .. } if f.attrs.buffer.is_set() => {
            quote!(::core::option::Option::Some(#len))
        }
        Shape::Array { elem, len } => {
            let size = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>::RAW_SIZE);
            quote!(__vm::raw_mul(#size, #len))
        }
        _ => {
            let ty = f.ty;
            quote_spanned!(ty.span()=> <#ty as __vm::VmElem>::RAW_SIZE)
        }
    }
}

/// A run's layout constant and its compile-time agreement with the description table.
pub(super) fn run_const(wire: &[&FieldAst<'_>], seg: &Segment) -> TokenStream {
    let Segment::Run { id, first, len } = *seg else {
        return TokenStream::new();
    };
    let run = run_ident(id);
    let sizes = wire[first..first + len].iter().map(|f| raw_size(f));
    quote! {
        const #run: __vm::RawRun<#len> = __vm::RawRun::new([#(#sizes),*]);
        const _: () = ::core::assert!(
            __vm::run_agrees(&__DESCRIPTION, #first, &#run),
            "vmstate derive bug: generated code and description table disagree",
        );
    }
}

/// The `since` guard of a run: every field in it exists at the version.
fn run_since(fields: &[&FieldAst<'_>]) -> TokenStream {
    let max = fields
        .iter()
        .map(|f| f.attrs.since.get().map_or(0, |s| s.value))
        .max()
        .unwrap_or(0);
    if max > 0 {
        quote!(&& version >= #max)
    } else {
        TokenStream::new()
    }
}

/// Writes field `k` of `run` into `__out`, the run's slot.
fn raw_put(run: &Ident, k: usize, f: &FieldAst<'_>) -> TokenStream {
    let m = &f.member;
    let range = quote!(#run.start[#k]..#run.end[#k]);
    if f.attrs.unused.is_set() {
        return quote!(__out[#range].fill(0););
    }
    match &f.shape {
        Shape::Array { .. } if f.attrs.buffer.is_set() => {
            quote!(__out[#range].copy_from_slice(&this.#m[..]);)
        }
        Shape::Array { elem, .. } => {
            let elem = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>);
            quote!(#elem::put_raw_slice(&this.#m[..], &mut __out[#range]);)
        }
        _ => {
            let ty = f.ty;
            let ty = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>);
            quote!(#ty::put_raw(&this.#m, &mut __out[#range]);)
        }
    }
}

/// Reads field `k` of `run` from `__run`, the run's bytes.
fn raw_get(run: &Ident, k: usize, f: &FieldAst<'_>) -> TokenStream {
    let m = &f.member;
    let range = quote!(#run.start[#k]..#run.end[#k]);
    if f.attrs.unused.is_set() {
        return TokenStream::new();
    }
    match &f.shape {
        Shape::Array { .. } if f.attrs.buffer.is_set() => {
            quote!(this.#m.copy_from_slice(&__run[#range]);)
        }
        Shape::Array { elem, .. } => {
            let elem = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>);
            quote!(#elem::get_raw_slice(&mut this.#m[..], &__run[#range]);)
        }
        _ => {
            let ty = f.ty;
            let ty = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>);
            quote!(#ty::get_raw(&mut this.#m, &__run[#range]);)
        }
    }
}

/// Whether field `k` of `run` may be read raw from `__in` (the buffered bytes from the
/// run's start); only nested structs look at the bytes.
fn raw_ok(run: &Ident, k: usize, f: &FieldAst<'_>) -> TokenStream {
    if f.attrs.unused.is_set() || f.attrs.buffer.is_set() {
        return TokenStream::new();
    }
    match &f.shape {
        Shape::Array { elem, len } => {
            let elem = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>);
            quote! {
                && (!#elem::RAW_CHECK
                    || #elem::raw_ok_slice(#len, &__in[#run.start[#k]..], __at_end))
            }
        }
        _ => {
            let ty = f.ty;
            let ty = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>);
            quote! {
                && (!#ty::RAW_CHECK || #ty::raw_ok(&__in[#run.start[#k]..], __at_end))
            }
        }
    }
}

pub(super) fn save_segment(
    c: &Container<'_>,
    wire: &[&FieldAst<'_>],
    seg: &Segment,
) -> TokenStream {
    match *seg {
        Segment::Field(i) => save_field(c, i, wire[i]),
        Segment::Run { id, first, len } => {
            let run = run_ident(id);
            let fields = &wire[first..first + len];
            let since = run_since(fields);
            let puts = fields.iter().enumerate().map(|(k, f)| raw_put(&run, k, f));
            let slow = fields
                .iter()
                .enumerate()
                .map(|(k, f)| save_field(c, first + k, f));
            quote! {
                if #run.ok && !C::DESCRIBES #since {
                    let __out = w.put_array::<{ #run.total }>();
                    #(#puts)*
                } else {
                    #(#slow)*
                }
            }
        }
    }
}

pub(super) fn load_segment(
    c: &Container<'_>,
    wire: &[&FieldAst<'_>],
    seg: &Segment,
) -> TokenStream {
    match *seg {
        Segment::Field(i) => load_field(c, wire[i]),
        Segment::Run { id, first, len } => {
            let run = run_ident(id);
            let fields = &wire[first..first + len];
            let since = run_since(fields);
            let oks = fields.iter().enumerate().map(|(k, f)| raw_ok(&run, k, f));
            let gets = fields.iter().enumerate().map(|(k, f)| raw_get(&run, k, f));
            let slow = fields.iter().map(|f| load_field(c, f));
            quote! {
                if !(#run.ok #since && r.read_raw(#run.total, |__in, __at_end| {
                    let ::core::option::Option::Some(__run) =
                        __in.first_chunk::<{ #run.total }>() else { return false };
                    if !(true #(#oks)*) {
                        return false;
                    }
                    #(#gets)*
                    true
                })) {
                    #(#slow)*
                }
            }
        }
    }
}

/// For a struct whose wire bytes never depend on the version, the context or hooks (no
/// hooks, subsections, `since`, `exists`, `equal`, `validate` or `Vec` fields), the raw
/// items of its `VmElem` impl: its size (when every field's type is raw too), and how to
/// write, read and check it, so that an enclosing struct's run or a `Vec` of it is
/// handled in bulk. The description table must give the same size (checked at compile time).
pub(super) fn raw_struct(
    c: &Container<'_>,
    wire: &[&FieldAst<'_>],
    subs: &[&FieldAst<'_>],
) -> Option<(TokenStream, TokenStream)> {
    let a = &c.attrs;
    let hooks = a.pre_save.is_set() || a.post_save.is_set() || a.pre_load.is_set();
    if hooks || a.post_load.is_set() || !subs.is_empty() {
        return None;
    }
    let eligible =
        |f: &&FieldAst<'_>| run_eligible(f) && f.attrs.since.get().is_none_or(|s| s.value == 0);
    if !wire.iter().all(eligible) {
        return None;
    }
    let run = Ident::new("__RAW", Span::call_site());
    let len = wire.len();
    let sizes = wire.iter().map(|f| raw_size(f));
    let puts = wire.iter().enumerate().map(|(k, f)| raw_put(&run, k, f));
    let gets = wire.iter().enumerate().map(|(k, f)| raw_get(&run, k, f));
    let oks = wire.iter().enumerate().map(|(k, f)| raw_ok(&run, k, f));
    let consts = quote! {
        const __RAW: __vm::RawRun<#len> = __vm::RawRun::new([#(#sizes),*]);
        const _: () = ::core::assert!(
            __vm::size_agrees(&__DESCRIPTION, __RAW.size()),
            "vmstate derive bug: generated code and description table disagree",
        );
    };
    let items = quote! {
        const RAW_SIZE: ::core::option::Option<usize> = __RAW.size();
        const RAW_CHECK: bool = true;

        #[inline]
        fn put_raw(&self, out: &mut [u8]) {
            let ::core::option::Option::Some(__out) =
                out.first_chunk_mut::<{ __RAW.total }>() else { return };
            let this = self;
            #(#puts)*
        }

        #[inline]
        fn get_raw(&mut self, input: &[u8]) {
            let ::core::option::Option::Some(__run) =
                input.first_chunk::<{ __RAW.total }>() else { return };
            let this = self;
            #(#gets)*
        }

        #[inline]
        fn raw_ok(__in: &[u8], __at_end: bool) -> bool {
            __in.len() >= __RAW.total
                #(#oks)*
                && __vm::no_subsection_at(__in, __RAW.total, __at_end)
        }
    };
    Some((consts, items))
}

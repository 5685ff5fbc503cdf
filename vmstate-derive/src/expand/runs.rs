//! The fixed-size fast path: wire fields grouped into segments, runs of fixed-size
//! fields written and read as one slot with compile-time layout constants, and the raw
//! `VmElem` items of a struct whose wire bytes never vary.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, Member, Type};

use crate::ast::is_ident;
use crate::model::{Layout, Presence, Struct, Wire};

use super::fields::{load_field, save_field};
use super::{SubsectionField, WireField};

/// A piece of a struct's wire fields: a run of fixed-size fields written into one
/// reserved slot and read from one checked slice (when their types are raw, decided at
/// compile time from `VmElem::RAW_SIZE`), or one field that always goes through the
/// `Writer`/`Reader`.
pub(super) enum Segment<'a> {
    /// Wire fields `first..first + fields.len()` (indices into the description's
    /// fields), as the run stores them.
    Run {
        /// The run's number, naming its layout constant.
        id: usize,
        /// The index of its first field.
        first: usize,
        /// Its fields.
        fields: Vec<RawField<'a>>,
    },
    /// One wire field.
    Field(usize),
}

/// A field in a run: a fixed number of bytes, no value-dependent existence, no
/// comparison or check on load.
#[derive(Clone, Copy)]
pub(super) struct RawField<'a> {
    member: &'a Member,
    /// Its `since` (0: always there).
    since: u32,
    raw: Raw<'a>,
}

/// What a run stores for one field.
#[derive(Clone, Copy)]
enum Raw<'a> {
    /// `unused = N`: N zero bytes.
    Zeros(usize),
    /// `buffer` on `[u8; N]`: N bytes copied as they are.
    Bytes { len: &'a Expr },
    /// One `T`, through its raw `VmElem` items.
    Value { ty: &'a Type },
    /// `[T; N]`, through `T`'s raw `VmElem` items.
    Array { elem: &'a Type, len: &'a Expr },
}

/// The field as a run stores it, if it can be part of one.
fn raw_field<'a>(f: WireField<'_, 'a>) -> Option<RawField<'a>> {
    let (presence, raw) = match f.wire {
        Wire::Validate { .. } => return None,
        Wire::Unused { size, presence } => (presence, Raw::Zeros(*size)),
        Wire::Data { presence, layout } => {
            let raw = match layout {
                Layout::Single { ty } => Raw::Value { ty },
                Layout::Array { elem, len } => Raw::Array { elem, len },
                Layout::Buffer { len } => Raw::Bytes { len },
                Layout::Equal { .. }
                | Layout::Varray { .. }
                | Layout::Vbuffer { .. }
                | Layout::List { .. }
                | Layout::Tree { .. }
                | Layout::PointerArray { .. }
                | Layout::Tmp { .. } => {
                    return None;
                }
            };
            (presence, raw)
        }
    };
    let since = match presence {
        Presence::Always => 0,
        Presence::Since(n) => *n,
        Presence::Exists(_) => return None,
    };
    Some(RawField {
        member: f.field.member,
        since,
        raw,
    })
}

/// A large byte array (`[u8; N]` with a literal N above 64) stays out of runs: it is one
/// copy either way, and in a run it would be zero-filled first.
fn large_bytes(raw: Raw<'_>) -> bool {
    let len = match raw {
        Raw::Bytes { len } => len,
        Raw::Array { elem, len } if is_ident(elem, "u8") => len,
        Raw::Array { .. } | Raw::Zeros(_) | Raw::Value { .. } => return false,
    };
    match len {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(n),
            ..
        }) => n.base10_parse::<usize>().is_ok_and(|n| n > 64),
        _ => false,
    }
}

/// The field as a run stores it, if it goes into a run.
fn run_field<'a>(f: WireField<'_, 'a>) -> Option<RawField<'a>> {
    raw_field(f).filter(|r| !large_bytes(r.raw))
}

/// Groups the wire fields into runs and single fields.
pub(super) fn segments<'a>(wire: &[WireField<'_, 'a>]) -> Vec<Segment<'a>> {
    let mut out = Vec::new();
    let mut runs = 0;
    let mut i = 0;
    while i < wire.len() {
        let first = i;
        let mut fields = Vec::new();
        while let Some(r) = wire.get(i).and_then(|f| run_field(*f)) {
            fields.push(r);
            i += 1;
        }
        if fields.is_empty() {
            out.push(Segment::Field(i));
            i += 1;
        } else {
            out.push(Segment::Run {
                id: runs,
                first,
                fields,
            });
            runs += 1;
        }
    }
    out
}

fn run_ident(id: usize) -> Ident {
    Ident::new(&format!("__RUN_{id}"), Span::call_site())
}

/// The raw size of one field, as a `const` `Option<usize>` expression.
fn raw_size(f: &RawField<'_>) -> TokenStream {
    match f.raw {
        Raw::Zeros(n) => quote!(::core::option::Option::Some(#n)),
        Raw::Bytes { len } => quote!(::core::option::Option::Some(#len)),
        Raw::Array { elem, len } => {
            let size = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>::RAW_SIZE);
            quote!(__vm::raw_mul(#size, #len))
        }
        Raw::Value { ty } => quote_spanned!(ty.span()=> <#ty as __vm::VmElem>::RAW_SIZE),
    }
}

/// A run's layout constant and its compile-time agreement with the description table.
pub(super) fn run_const(seg: &Segment<'_>) -> TokenStream {
    match seg {
        Segment::Field(_) => TokenStream::new(),
        Segment::Run { id, first, fields } => {
            let run = run_ident(*id);
            let len = fields.len();
            let sizes = fields.iter().map(raw_size);
            quote! {
                const #run: __vm::RawRun<#len> = __vm::RawRun::new([#(#sizes),*]);
                const _: () = ::core::assert!(
                    __vm::run_agrees(&__DESCRIPTION, #first, &#run),
                    "vmstate derive bug: generated code and description table disagree",
                );
            }
        }
    }
}

/// The `since` guard of a run: every field in it exists at the version.
fn run_since(fields: &[RawField<'_>]) -> TokenStream {
    let max = fields.iter().map(|f| f.since).max().unwrap_or(0);
    if max > 0 {
        quote!(&& version >= #max)
    } else {
        TokenStream::new()
    }
}

/// Writes field `k` of `run` into `__out`, the run's slot.
fn raw_put(run: &Ident, k: usize, f: &RawField<'_>) -> TokenStream {
    let m = f.member;
    let range = quote!(#run.start[#k]..#run.end[#k]);
    match f.raw {
        Raw::Zeros(_) => quote!(__out[#range].fill(0);),
        Raw::Bytes { .. } => quote!(__out[#range].copy_from_slice(&this.#m[..]);),
        Raw::Array { elem, .. } => {
            let elem = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>);
            quote!(#elem::put_raw_slice(&this.#m[..], &mut __out[#range]);)
        }
        Raw::Value { ty } => {
            let ty = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>);
            quote!(#ty::put_raw(&this.#m, &mut __out[#range]);)
        }
    }
}

/// Reads field `k` of `run` from `__run`, the run's bytes.
fn raw_get(run: &Ident, k: usize, f: &RawField<'_>) -> TokenStream {
    let m = f.member;
    let range = quote!(#run.start[#k]..#run.end[#k]);
    match f.raw {
        Raw::Zeros(_) => TokenStream::new(),
        Raw::Bytes { .. } => quote!(this.#m.copy_from_slice(&__run[#range]);),
        Raw::Array { elem, .. } => {
            let elem = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>);
            quote!(#elem::get_raw_slice(&mut this.#m[..], &__run[#range]);)
        }
        Raw::Value { ty } => {
            let ty = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>);
            quote!(#ty::get_raw(&mut this.#m, &__run[#range]);)
        }
    }
}

/// Whether field `k` of `run` may be read raw from `__in` (the buffered bytes from the
/// run's start); only nested structs look at the bytes.
fn raw_ok(run: &Ident, k: usize, f: &RawField<'_>) -> TokenStream {
    match f.raw {
        Raw::Zeros(_) | Raw::Bytes { .. } => TokenStream::new(),
        Raw::Array { elem, len } => {
            let elem = quote_spanned!(elem.span()=> <#elem as __vm::VmElem>);
            quote! {
                && (!#elem::RAW_CHECK
                    || #elem::raw_ok_slice(#len, &__in[#run.start[#k]..], __at_end))
            }
        }
        Raw::Value { ty } => {
            let ty = quote_spanned!(ty.span()=> <#ty as __vm::VmElem>);
            quote! {
                && (!#ty::RAW_CHECK || #ty::raw_ok(&__in[#run.start[#k]..], __at_end))
            }
        }
    }
}

/// The save code of one segment: a run's slot (with the field-by-field code when the run
/// cannot be used), or one field.
pub(super) fn save_segment(wire: &[WireField<'_, '_>], seg: &Segment<'_>) -> TokenStream {
    match seg {
        Segment::Field(i) => save_field(*i, wire[*i]),
        Segment::Run { id, first, fields } => {
            let run = run_ident(*id);
            let since = run_since(fields);
            let puts = fields.iter().enumerate().map(|(k, f)| raw_put(&run, k, f));
            let slow = (*first..*first + fields.len()).map(|i| save_field(i, wire[i]));
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

/// The load code of one segment: a run's checked slice (with the field-by-field code
/// when the run cannot be used), or one field.
pub(super) fn load_segment(wire: &[WireField<'_, '_>], seg: &Segment<'_>) -> TokenStream {
    match seg {
        Segment::Field(i) => load_field(wire[*i]),
        Segment::Run { id, first, fields } => {
            let run = run_ident(*id);
            let since = run_since(fields);
            let oks = fields.iter().enumerate().map(|(k, f)| raw_ok(&run, k, f));
            let gets = fields.iter().enumerate().map(|(k, f)| raw_get(&run, k, f));
            let slow = wire[*first..*first + fields.len()]
                .iter()
                .map(|f| load_field(*f));
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
    s: &Struct<'_>,
    wire: &[WireField<'_, '_>],
    subs: &[SubsectionField<'_, '_>],
) -> Option<(TokenStream, TokenStream)> {
    let h = &s.hooks;
    let hooks = h.pre_save.is_some() || h.post_save.is_some() || h.pre_load.is_some();
    if hooks || h.post_load.is_some() || !subs.is_empty() {
        return None;
    }
    let fields = wire
        .iter()
        .map(|f| raw_field(*f).filter(|r| r.since == 0))
        .collect::<Option<Vec<_>>>()?;
    let run = Ident::new("__RAW", Span::call_site());
    let len = fields.len();
    let sizes = fields.iter().map(raw_size);
    let puts = fields.iter().enumerate().map(|(k, f)| raw_put(&run, k, f));
    let gets = fields.iter().enumerate().map(|(k, f)| raw_get(&run, k, f));
    let oks = fields.iter().enumerate().map(|(k, f)| raw_ok(&run, k, f));
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

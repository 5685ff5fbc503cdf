//! The generated code: a static description table and straight-line save/load methods,
//! wrapped in `const _: () = { ... };` so that no names leak into the user's module.

use std::collections::HashMap;

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{LitStr, Path};

use crate::ast::{Container, FieldAst, Role, Shape, type_str};
use crate::attr::span_range;

/// Everything generated for one struct.
pub fn expand(c: &Container<'_>) -> TokenStream {
    let ident = c.ident;
    let name = c.name();
    let version = c.version();
    let min_version = c.min_version();

    let wire: Vec<&FieldAst<'_>> = c
        .fields
        .iter()
        .filter(|f| matches!(f.role(), Role::Data | Role::Unused))
        .collect();
    let subs: Vec<&FieldAst<'_>> = c
        .fields
        .iter()
        .filter(|f| f.role() == Role::Subsection)
        .collect();

    let vmdesc_names = vmdesc_names(&wire);
    let field_descs = wire
        .iter()
        .zip(&vmdesc_names)
        .map(|(f, vn)| field_desc(c, f, vn));
    let sub_descs = subs.iter().map(|f| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> <#ty as __vm::VmState>::DESCRIPTION)
    });
    let prefix_checks = subs.iter().map(|f| prefix_check(&name, f));

    let segments = segments(&wire);
    let run_consts = segments.iter().map(|seg| run_const(&wire, seg));
    let save_fields = segments.iter().map(|seg| save_segment(c, &wire, seg));
    let load_fields = segments.iter().map(|seg| load_segment(c, &wire, seg));
    let (raw, raw_items) = raw_struct(c, &wire, &subs).unwrap_or_default();
    let save_subs = subs.iter().map(|f| save_subsection(f));
    let load_subs = load_subsections(&subs);

    let pre_save = hook_call(c.attrs.pre_save.get().map(|h| &h.value), |p| {
        hook_helper(p, "pre_save", quote!(self), true)
    });
    let post_save = c.attrs.post_save.get().map(|h| &h.value).map_or_else(
        || quote!(__result),
        |p| {
            let call = hook_helper(p, "post_save", quote!(self), false);
            quote!({
                let __post = #call;
                __result.and(__post)
            })
        },
    );
    let pre_load = hook_call(c.attrs.pre_load.get().map(|h| &h.value), |p| {
        hook_helper(p, "pre_load", quote!(self, r), true)
    });
    let post_load = hook_call(c.attrs.post_load.get().map(|h| &h.value), |p| {
        hook_helper(p, "post_load", quote!(self, version, r), true)
    });
    let needed = c.attrs.needed.get().map(|h| {
        let p = &h.value;
        let call = hook_helper(p, "needed", quote!(self), false);
        quote! {
            fn needed(&self) -> bool {
                #call
            }
        }
    });

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            use ::vmstate::__private as __vm;

            static __DESCRIPTION: __vm::VmStateDescription = __vm::VmStateDescription {
                name: #name,
                version: #version,
                min_version: #min_version,
                fields: &[#(#field_descs),*],
                subsections: &[#(#sub_descs),*],
            };

            #(#prefix_checks)*

            #(#run_consts)*

            #raw

            impl __vm::VmState for #ident {
                const DESCRIPTION: &'static __vm::VmStateDescription = &__DESCRIPTION;

                fn save_state<C: __vm::SaveContext>(
                    &mut self,
                    w: &mut __vm::Writer<'_>,
                    ctx: &mut C,
                ) -> __vm::Result<()> {
                    #pre_save
                    let version = ctx.save_version(&__DESCRIPTION);
                    if C::DESCRIBES {
                        ctx.begin_vmsd(&__DESCRIPTION, version);
                    }
                    let __result = (|| -> __vm::Result<()> {
                        let this = &mut *self;
                        let _ = version;
                        #(#save_fields)*
                        #(#save_subs)*
                        Ok(())
                    })();
                    if C::DESCRIBES {
                        ctx.end_vmsd();
                    }
                    #post_save
                }

                fn load_state(
                    &mut self,
                    r: &mut __vm::Reader<'_>,
                    version: u32,
                ) -> __vm::Result<()> {
                    __vm::check_version(&__DESCRIPTION, version, r)?;
                    #pre_load
                    {
                        let this = &mut *self;
                        #(#load_fields)*
                        #load_subs
                    }
                    #post_load
                    Ok(())
                }

                #needed
            }

            impl __vm::VmElem for #ident {
                const TYPE: __vm::FieldType = __vm::FieldType::Struct(&__DESCRIPTION);

                #[inline]
                fn save_elem<C: __vm::SaveContext>(
                    &mut self,
                    w: &mut __vm::Writer<'_>,
                    ctx: &mut C,
                ) -> __vm::Result<()> {
                    <Self as __vm::VmState>::save_state(self, w, ctx)
                }

                #[inline]
                fn load_elem(&mut self, r: &mut __vm::Reader<'_>) -> __vm::Result<()> {
                    // QEMU's VMS_STRUCT: a nested struct loads at its own local version.
                    <Self as __vm::VmState>::load_state(self, r, __DESCRIPTION.version)
                }

                #raw_items
            }
        };
    }
}

fn hook_call(path: Option<&Path>, f: impl FnOnce(&Path) -> TokenStream) -> TokenStream {
    path.map(f).unwrap_or_default()
}

/// `__vm::<helper>(<args>, <path>)` (with `?;` if `try_`), spanned over the whole hook
/// path: the helpers take typed closures, so a hook with the wrong signature (or an error
/// type that is not an error) is a type error, and it points at `Self::sync` in
/// `pre_save = Self::sync` rather than at the derive.
fn hook_helper(p: &Path, helper: &str, args: TokenStream, try_: bool) -> TokenStream {
    let (first, last) = span_range(p);
    let helper = Ident::new(helper, first);
    // A call's span runs from its callee to its closing parenthesis.
    let mut call_args = Group::new(Delimiter::Parenthesis, quote!(#args, #p));
    call_args.set_span(last);
    let call = quote_spanned!(first=> __vm::#helper #call_args);
    if try_ {
        quote_spanned!(last=> #call ?;)
    } else {
        call
    }
}

/// vmdesc names: a name shared by several fields gets `[k]`, its position among them.
fn vmdesc_names(wire: &[&FieldAst<'_>]) -> Vec<String> {
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
    if f.attrs.buffer.is_set()
        && let Shape::Array { len, .. } = &f.shape
    {
        return quote!(__vm::buffer_type(#len));
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

fn field_desc(c: &Container<'_>, f: &FieldAst<'_>, vmdesc_name: &str) -> TokenStream {
    let name = f.qemu_name();
    let since = f.attrs.since.get().map_or(0, |s| s.value);
    let has_exists = f.attrs.exists.is_set();
    let equal = f.attrs.equal.is_set();
    let ty = elem_type(f);
    let count = match (&f.shape, f.attrs.buffer.is_set(), f.role()) {
        (_, _, Role::Unused) | (_, true, _) | (Shape::Single, _, _) => quote!(__vm::Count::Single),
        (Shape::Array { len, .. }, _, _) => quote!(__vm::Count::Array(#len)),
        (Shape::Vec { .. }, _, _) => {
            let len = &f.attrs.len.get().expect("checked: Vec has len").value;
            let target = c
                .field_index(&len.to_string())
                .map(|i| &c.fields[i])
                .expect("checked: len names a field");
            let len_name = target.qemu_name();
            let len_ty = target.ty;
            quote_spanned! {len.span()=>
                __vm::Count::Varray {
                    len_field: #len_name,
                    len_type: <#len_ty as __vm::CountField>::LEN_TYPE,
                }
            }
        }
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

fn save_field(c: &Container<'_>, index: usize, f: &FieldAst<'_>) -> TokenStream {
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

fn load_field(c: &Container<'_>, f: &FieldAst<'_>) -> TokenStream {
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

fn save_subsection(f: &FieldAst<'_>) -> TokenStream {
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

fn load_subsections(subs: &[&FieldAst<'_>]) -> TokenStream {
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

/// A compile-time check that a subsection's name starts with the parent's name and goes
/// on after it (QEMU's loader only takes a subsection whose name is longer than the
/// parent's). The error points at the field's type and says what to write.
fn prefix_check(parent: &str, f: &FieldAst<'_>) -> TokenStream {
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

/// A piece of a struct's wire fields: a run of fixed-size fields written into one
/// reserved slot and read from one checked slice (when their types are raw, decided at
/// compile time from `VmElem::RAW_SIZE`), or one field that always goes through the
/// `Writer`/`Reader`.
enum Segment {
    /// Wire fields `first..first + len` (indices into the description's fields).
    Run { id: usize, first: usize, len: usize },
    /// One wire field.
    Field(usize),
}

/// Whether a field can be part of a run: a fixed number of elements, no value-dependent
/// existence, no comparison on load.
fn run_eligible(f: &FieldAst<'_>) -> bool {
    !matches!(f.shape, Shape::Vec { .. }) && !f.attrs.exists.is_set() && !f.attrs.equal.is_set()
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

fn segments(wire: &[&FieldAst<'_>]) -> Vec<Segment> {
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
fn run_const(wire: &[&FieldAst<'_>], seg: &Segment) -> TokenStream {
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

fn save_segment(c: &Container<'_>, wire: &[&FieldAst<'_>], seg: &Segment) -> TokenStream {
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

fn load_segment(c: &Container<'_>, wire: &[&FieldAst<'_>], seg: &Segment) -> TokenStream {
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
/// hooks, subsections, `since`, `exists`, `equal` or `Vec` fields), the raw items of
/// its `VmElem` impl: its size (when every field's type is raw too), and how to write,
/// read and check it, so that an enclosing struct's run or a `Vec` of it is handled
/// in bulk. The description table must give the same size (checked at compile time).
fn raw_struct(
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

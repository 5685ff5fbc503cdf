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

    let save_fields = wire.iter().enumerate().map(|(i, f)| save_field(c, i, f));
    let load_fields = wire.iter().map(|f| load_field(c, f));
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

//! The generated code: a static description table and straight-line save/load methods,
//! wrapped in `const _: () = { ... };` so that no names leak into the user's module.
//!
//! It works from the resolved [`model`](crate::model) alone. This module assembles the
//! pieces: `description` builds the description table, `fields` the per-field save/load
//! code, `runs` the fixed-size fast path, and `hooks` the calls to the user's hooks and
//! predicates.

mod description;
mod fields;
mod hooks;
mod runs;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{Encoding, Field, Layout, Struct, Subsection, Wire};

use description::{field_desc, prefix_check, tmp_check, vmdesc_names};
use fields::{load_subsections, save_subsection};
use hooks::{hook_call, hook_helper};
use runs::{load_segment, raw_struct, run_const, save_segment, segments};

/// A field of the section's field table, with its encoding.
#[derive(Clone, Copy)]
struct WireField<'r, 'a> {
    field: &'r Field<'a>,
    wire: &'r Wire<'a>,
}

/// A subsection field, with its encoding.
#[derive(Clone, Copy)]
struct SubsectionField<'r, 'a> {
    field: &'r Field<'a>,
    sub: &'r Subsection<'a>,
}

/// Everything generated for one struct.
pub fn expand(s: &Struct<'_>) -> TokenStream {
    let ident = s.ident;
    let name = &s.name;
    let version = s.version;
    let min_version = s.min_version;

    let mut wire = Vec::new();
    let mut subs = Vec::new();
    for field in &s.fields {
        match &field.encoding {
            Encoding::Skipped => {}
            Encoding::Subsection(sub) => subs.push(SubsectionField { field, sub }),
            Encoding::Wire(w) => wire.push(WireField { field, wire: w }),
        }
    }

    let vmdesc_names = vmdesc_names(&wire);
    let field_descs = wire
        .iter()
        .zip(&vmdesc_names)
        .map(|(f, vn)| field_desc(*f, vn));
    let sub_descs = subs.iter().map(|f| {
        let ty = f.sub.ty;
        quote_spanned!(ty.span()=> <#ty as __vm::VmState>::DESCRIPTION)
    });
    let prefix_checks = subs.iter().map(|f| prefix_check(name, *f));
    let tmp_checks = wire.iter().filter_map(|f| match f.wire {
        Wire::Data {
            layout: Layout::Tmp { ty, .. },
            ..
        } => Some(tmp_check(ty)),
        _ => None,
    });

    let segments = segments(&wire);
    let run_consts = segments.iter().map(run_const);
    let save_fields = segments.iter().map(|seg| save_segment(&wire, seg));
    let load_fields = segments.iter().map(|seg| load_segment(&wire, seg));
    let (raw, raw_items) = raw_struct(s, &wire, &subs).unwrap_or_default();
    let save_subs = subs.iter().map(|f| save_subsection(*f));
    let load_subs = load_subsections(&subs);

    let h = &s.hooks;
    let pre_save = hook_call(h.pre_save, |p| {
        hook_helper(p, "pre_save", quote!(self), true)
    });
    let post_save = h.post_save.map_or_else(
        || quote!(__result),
        |p| {
            let call = hook_helper(p, "post_save", quote!(self), false);
            quote!({
                let __post = #call;
                __result.and(__post)
            })
        },
    );
    let pre_load = hook_call(h.pre_load, |p| {
        hook_helper(p, "pre_load", quote!(self, r), true)
    });
    let post_load = hook_call(h.post_load, |p| {
        hook_helper(p, "post_load", quote!(self, version, r), true)
    });
    let needed = h.needed.map(|p| {
        let call = hook_helper(p, "needed", quote!(self), false);
        quote! {
            const SENT_CONDITIONALLY: bool = true;

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

            #(#tmp_checks)*

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

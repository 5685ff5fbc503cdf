//! Decides, once, how each field is encoded: from the checked attributes to the
//! [`model`](crate::model).
//!
//! It runs only when `check` found nothing wrong. A combination that is not one of the
//! model's cases is then a gap in the checks: it is reported as a derive bug at the
//! field, never expanded.

use proc_macro2::Span;
use syn::spanned::Spanned;

use crate::ast::{Container, FieldAst, Role, Shape, is_ident};
use crate::ctxt::Ctxt;
use crate::model::{
    Count, Encoding, Field, Hooks, Layout, ListKind, Presence, Struct, Subsection, Wire,
};

/// The model of `c`, or `None` after recording an error for a field the checks should
/// have rejected.
pub fn resolve<'a>(cx: &Ctxt, c: &'a Container<'_>) -> Option<Struct<'a>> {
    let a = &c.attrs;
    let hook = |slot: &'a crate::attr::Slot<syn::Path>| slot.get().map(|h| &h.value);
    let fields = c
        .fields
        .iter()
        .map(|f| {
            Some(Field {
                member: &f.member,
                rust_name: &f.rust_name,
                name: f.qemu_name(),
                encoding: encoding(cx, c, f)?,
            })
        })
        .collect::<Vec<_>>();
    Some(Struct {
        ident: c.ident,
        name: c.name(),
        version: c.version(),
        min_version: c.min_version(),
        hooks: Hooks {
            pre_save: hook(&a.pre_save),
            post_save: hook(&a.post_save),
            pre_load: hook(&a.pre_load),
            post_load: hook(&a.post_load),
            needed: hook(&a.needed),
        },
        // Every field is resolved (and every bug reported) before giving up.
        fields: fields.into_iter().collect::<Option<_>>()?,
    })
}

/// How `f` is encoded.
fn encoding<'a>(cx: &Ctxt, c: &'a Container<'_>, f: &'a FieldAst<'_>) -> Option<Encoding<'a>> {
    let a = &f.attrs;
    Some(match f.role() {
        Role::Skip => Encoding::Skipped,
        Role::Subsection => {
            let Some(needed) = a.needed.get() else {
                return bug(cx, f.ty.span(), "a subsection without `needed`");
            };
            Encoding::Subsection(Subsection {
                ty: f.ty,
                needed: &needed.value,
            })
        }
        Role::Unused => Encoding::Wire(Wire::Unused {
            size: a.unused.get().map_or(0, |u| u.value),
            presence: presence(cx, f)?,
        }),
        Role::Validate => {
            let Some(check) = a.validate.get() else {
                return bug(cx, f.ty.span(), "a validation without a path");
            };
            Encoding::Wire(Wire::Validate {
                check: &check.value,
            })
        }
        Role::Data => Encoding::Wire(Wire::Data {
            presence: presence(cx, f)?,
            layout: layout(cx, c, f)?,
        }),
    })
}

/// When `f` is in the stream: `exists`, `since = N` (N > 0), or always.
fn presence<'a>(cx: &Ctxt, f: &'a FieldAst<'_>) -> Option<Presence<'a>> {
    match (f.attrs.exists.get(), f.since()) {
        (None, 0) => Some(Presence::Always),
        (None, n) => Some(Presence::Since(n)),
        (Some(exists), 0) => Some(Presence::Exists(&exists.value)),
        (Some(exists), _) => bug(cx, exists.key, "`exists` together with `since`"),
    }
}

/// How a data field's value is written, from its type's shape and its `len`, `buffer`
/// and `equal` keys.
fn layout<'a>(cx: &Ctxt, c: &'a Container<'_>, f: &'a FieldAst<'_>) -> Option<Layout<'a>> {
    let a = &f.attrs;
    // The checks allow no other data key beside a list kind; the type is checked by the
    // `VmList` bound of the generated code.
    if a.gtree.is_set() {
        return Some(Layout::Tree { ty: f.ty });
    }
    match (a.to_tmp.get(), a.from_tmp.get()) {
        (Some(to), Some(from)) => {
            return Some(Layout::Tmp {
                ty: f.ty,
                to_tmp: &to.value,
                from_tmp: &from.value,
            });
        }
        (None, None) => {}
        _ => return bug(cx, f.ty.span(), "`to_tmp` without `from_tmp`"),
    }
    if a.array_of_pointer.is_set() {
        return match &f.shape {
            Shape::Array { elem, len } => Some(Layout::PointerArray { elem, len }),
            _ => bug(
                cx,
                f.ty.span(),
                "`array_of_pointer` on a field that is no array",
            ),
        };
    }
    match (a.qtailq.is_set(), a.qlist.is_set()) {
        (true, false) => {
            return Some(Layout::List {
                ty: f.ty,
                kind: ListKind::Qtailq,
            });
        }
        (false, true) => {
            return Some(Layout::List {
                ty: f.ty,
                kind: ListKind::Qlist,
            });
        }
        (true, true) => return bug(cx, f.ty.span(), "a field that is a qtailq and a qlist"),
        (false, false) => {}
    }
    let len = a.len.get().map(|l| &l.value);
    match (&f.shape, len, a.buffer.is_set(), a.equal.is_set()) {
        (Shape::Single, None, false, false) => Some(Layout::Single { ty: f.ty }),
        (Shape::Single, None, false, true) => Some(Layout::Equal { ty: f.ty }),
        (Shape::Array { elem, len }, None, false, false) => Some(Layout::Array { elem, len }),
        (Shape::Array { elem, len }, None, true, false) if is_ident(elem, "u8") => {
            Some(Layout::Buffer { len })
        }
        (Shape::Vec { elem }, Some(len), false, false) => Some(Layout::Varray {
            elem,
            count: count(cx, c, len)?,
        }),
        (Shape::Vec { elem }, Some(len), true, false) if is_ident(elem, "u8") => {
            Some(Layout::Vbuffer {
                count: count(cx, c, len)?,
            })
        }
        // Every other combination is rejected by the checks.
        _ => bug(
            cx,
            f.ty.span(),
            "a field type that does not fit its attributes",
        ),
    }
}

/// The count field that `len = field` names.
fn count<'a>(cx: &Ctxt, c: &'a Container<'_>, len: &'a syn::Ident) -> Option<Count<'a>> {
    let Some(target) = c.field_index(&len.to_string()).map(|i| &c.fields[i]) else {
        return bug(cx, len.span(), "`len` naming no field");
    };
    Some(Count {
        field: len,
        name: target.qemu_name(),
        ty: target.ty,
    })
}

/// Records that a combination the checks should have rejected got through.
fn bug<T>(cx: &Ctxt, span: Span, what: &str) -> Option<T> {
    cx.error(
        span,
        format!("vmstate-derive bug: {what} passed the checks; please report it"),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::resolve;
    use crate::ast::Container;
    use crate::ctxt::Ctxt;
    use crate::model::{Encoding, Layout, ListKind, Presence, Wire};
    use syn::{DeriveInput, parse_quote};

    /// A short word for each decision, to compare with.
    fn describe(e: &Encoding<'_>) -> String {
        let presence = |p: &Presence<'_>| match p {
            Presence::Always => String::new(),
            Presence::Since(n) => format!(" since {n}"),
            Presence::Exists(_) => " exists".to_owned(),
        };
        match e {
            Encoding::Skipped => "skipped".to_owned(),
            Encoding::Subsection(_) => "subsection".to_owned(),
            Encoding::Wire(Wire::Unused { size, presence: p }) => {
                format!("unused {size}{}", presence(p))
            }
            Encoding::Wire(Wire::Validate { .. }) => "validate".to_owned(),
            Encoding::Wire(Wire::Data {
                presence: p,
                layout,
            }) => {
                let layout = match layout {
                    Layout::Single { .. } => "single".to_owned(),
                    Layout::Equal { .. } => "equal".to_owned(),
                    Layout::Array { .. } => "array".to_owned(),
                    Layout::Buffer { .. } => "buffer".to_owned(),
                    Layout::Varray { count, .. } => format!("varray by {}", count.name),
                    Layout::Vbuffer { count } => format!("vbuffer by {}", count.name),
                    Layout::List {
                        kind: ListKind::Qtailq,
                        ..
                    } => "qtailq".to_owned(),
                    Layout::List {
                        kind: ListKind::Qlist,
                        ..
                    } => "qlist".to_owned(),
                    Layout::Tree { .. } => "gtree".to_owned(),
                    Layout::PointerArray { .. } => "array_of_pointer".to_owned(),
                    Layout::Tmp { .. } => "tmp".to_owned(),
                };
                format!("{layout}{}", presence(p))
            }
        }
    }

    #[test]
    fn each_field_resolves_to_one_encoding() {
        let input: DeriveInput = parse_quote! {
            #[vmstate(version = 3)]
            struct S {
                a: u32,
                #[vmstate(since = 2)]
                b: u8,
                #[vmstate(since = 0)]
                c: u8,
                #[vmstate(exists = Self::e)]
                d: [u16; 4],
                #[vmstate(equal)]
                e: u32,
                #[vmstate(buffer)]
                f: [u8; 6],
                #[vmstate(rename = "count")]
                n: u32,
                #[vmstate(len = n)]
                g: Vec<u16>,
                #[vmstate(buffer, len = n)]
                h: Vec<u8>,
                #[vmstate(unused = 4, since = 3)]
                _i: (),
                #[vmstate(validate = Self::v)]
                _j: (),
                #[vmstate(skip)]
                k: String,
                #[vmstate(subsection, needed = Self::m)]
                l: Sub,
            }
        };
        let cx = Ctxt::default();
        let c = Container::from_input(&cx, &input).unwrap();
        let s = resolve(&cx, &c).unwrap();
        cx.check().unwrap();
        let got: Vec<String> = s
            .fields
            .iter()
            .map(|f| format!("{}: {}", f.name, describe(&f.encoding)))
            .collect();
        assert_eq!(
            got,
            [
                "a: single",
                "b: single since 2",
                "c: single",
                "d: array exists",
                "e: equal",
                "f: buffer",
                "count: single",
                "g: varray by count",
                "h: vbuffer by count",
                "unused: unused 4 since 3",
                "_j: validate",
                "k: skipped",
                "l: subsection",
            ]
        );
    }

    /// Resolution without the checks: a rejected combination is a compile error naming a
    /// derive bug, not a panic and not a silently wrong encoding.
    #[test]
    fn an_unchecked_combination_is_reported_as_a_bug() {
        let input: DeriveInput = parse_quote! {
            struct S {
                #[vmstate(len = nowhere)]
                a: u32,
                #[vmstate(subsection)]
                b: Sub,
            }
        };
        let cx = Ctxt::default();
        let c = Container::from_input(&cx, &input).unwrap();
        assert!(resolve(&cx, &c).is_none());
        let errors: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors,
            [
                "vmstate-derive bug: a field type that does not fit its attributes passed the \
                 checks; please report it",
                "vmstate-derive bug: a subsection without `needed` passed the checks; please \
                 report it",
            ]
        );
    }
}

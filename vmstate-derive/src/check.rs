//! Cross-attribute rules: one function per rule, each error pointing at the token at fault.
//!
//! Rules that need other types' descriptions (a subsection's name prefix) or type
//! information (hook signatures, element types) are checked by the generated code at
//! compile time instead, with spans on the offending tokens.

use syn::spanned::Spanned;

use crate::ast::{Container, FieldAst, Role, Shape};
use crate::ctxt::Ctxt;

/// Runs every rule.
pub fn check(cx: &Ctxt, c: &Container<'_>) {
    no_generics(cx, c);
    min_version_not_above_version(cx, c);
    for (i, f) in c.fields.iter().enumerate() {
        since_not_above_version(cx, c, f);
        exists_replaces_since(cx, f);
        skip_stands_alone(cx, f);
        unused_takes_only_version_keys(cx, f);
        subsection_needs_needed(cx, f);
        subsection_takes_no_data_keys(cx, f);
        needed_only_on_subsections(cx, f);
        len_matches_shape(cx, f);
        len_names_an_earlier_integer_field(cx, c, i, f);
        buffer_is_a_byte_array(cx, f);
        equal_is_a_single_value(cx, f);
    }
}

fn no_generics(cx: &Ctxt, c: &Container<'_>) {
    let g = &c.input.generics;
    if !g.params.is_empty() {
        cx.error(
            g.span(),
            "VmState cannot be derived for generic types: a description is one static table",
        );
    }
}

fn min_version_not_above_version(cx: &Ctxt, c: &Container<'_>) {
    if let Some(min) = c.attrs.min_version.get()
        && min.value > c.version()
    {
        cx.error(
            min.span,
            format!(
                "min_version {} is above version {}: no stream could ever load",
                min.value,
                c.version()
            ),
        );
    }
}

fn since_not_above_version(cx: &Ctxt, c: &Container<'_>, f: &FieldAst<'_>) {
    if let Some(since) = f.attrs.since.get()
        && since.value > c.version()
    {
        cx.error(
            since.span,
            format!(
                "since = {} is above the container's version {}: the field would never be sent",
                since.value,
                c.version()
            ),
        );
    }
}

fn exists_replaces_since(cx: &Ctxt, f: &FieldAst<'_>) {
    if let (Some(_), Some(exists)) = (f.attrs.since.get(), f.attrs.exists.get()) {
        cx.error(
            exists.span,
            "`exists` replaces `since` (the predicate receives the version): use one of them",
        );
    }
}

fn skip_stands_alone(cx: &Ctxt, f: &FieldAst<'_>) {
    let a = &f.attrs;
    if let Some(skip) = a.skip.get() {
        let others = [
            a.since.span(),
            a.exists.span(),
            a.unused.span(),
            a.len.span(),
            a.equal.span(),
            a.buffer.span(),
            a.subsection.span(),
            a.needed.span(),
            a.rename.span(),
        ];
        if others.iter().any(Option::is_some) {
            cx.error(
                skip.span,
                "`skip` cannot be combined with other vmstate attributes",
            );
        }
    }
}

fn unused_takes_only_version_keys(cx: &Ctxt, f: &FieldAst<'_>) {
    let a = &f.attrs;
    if let Some(unused) = a.unused.get() {
        if unused.value == 0 {
            cx.error(unused.span, "`unused` needs a size of at least 1 byte");
        }
        for span in [
            a.len.span(),
            a.equal.span(),
            a.buffer.span(),
            a.subsection.span(),
            a.rename.span(),
        ]
        .into_iter()
        .flatten()
        {
            cx.error(span, "`unused` fields take only `since` or `exists`");
        }
    }
}

fn subsection_needs_needed(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(sub) = f.attrs.subsection.get()
        && !f.attrs.needed.is_set()
    {
        cx.error(
            sub.span,
            "a subsection needs `needed = path`: the predicate that decides whether it is sent",
        );
    }
}

fn subsection_takes_no_data_keys(cx: &Ctxt, f: &FieldAst<'_>) {
    let a = &f.attrs;
    if a.subsection.is_set() {
        for span in [
            a.since.span(),
            a.exists.span(),
            a.len.span(),
            a.equal.span(),
            a.buffer.span(),
            a.rename.span(),
        ]
        .into_iter()
        .flatten()
        {
            cx.error(
                span,
                "a subsection takes only `needed` (its name and versions come from its own type)",
            );
        }
    }
}

fn needed_only_on_subsections(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(needed) = f.attrs.needed.get()
        && !f.attrs.subsection.is_set()
    {
        cx.error(
            needed.span,
            "`needed` applies to subsections: add `subsection`, or use `exists` for a field",
        );
    }
}

fn len_matches_shape(cx: &Ctxt, f: &FieldAst<'_>) {
    if f.role() != Role::Data {
        return;
    }
    match (&f.shape, f.attrs.len.get()) {
        (Shape::Vec { .. }, None) => cx.error(
            f.ty.span(),
            "a Vec field needs `len = field`: the earlier integer field holding its count",
        ),
        (Shape::Single | Shape::Array { .. }, Some(len)) => cx.error(
            len.span,
            "`len` applies to Vec fields; fixed arrays `[T; N]` carry their own length",
        ),
        _ => {}
    }
}

fn len_names_an_earlier_integer_field(
    cx: &Ctxt,
    c: &Container<'_>,
    index: usize,
    f: &FieldAst<'_>,
) {
    let Some(len) = f.attrs.len.get() else { return };
    let name = len.value.to_string();
    let Some(target) = c.field_index(&name) else {
        cx.error(
            len.span,
            format!("`len` names `{name}`, which is not a field of this struct"),
        );
        return;
    };
    if target >= index {
        cx.error(
            len.span,
            format!("`len` names `{name}`, which comes later: the count must be loaded first"),
        );
        return;
    }
    let t = &c.fields[target];
    if t.role() != Role::Data {
        cx.error(
            len.span,
            format!("`len` names `{name}`, which is not sent on the wire"),
        );
        return;
    }
    if t.count_type().is_none() {
        cx.error(
            len.span,
            format!("`len` names `{name}`, which is not a u8, u16, u32 or i32 field"),
        );
    }
}

fn buffer_is_a_byte_array(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(b) = f.attrs.buffer.get()
        && !f.is_byte_array()
    {
        cx.error(b.span, "`buffer` applies to byte arrays `[u8; N]`");
    }
}

fn equal_is_a_single_value(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(e) = f.attrs.equal.get()
        && !matches!(f.shape, Shape::Single)
    {
        cx.error(
            e.span,
            "`equal` applies to single values, not arrays or Vecs",
        );
    }
}

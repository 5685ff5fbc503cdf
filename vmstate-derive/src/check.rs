//! Cross-attribute rules: one function per rule, each error pointing at the token at fault.
//!
//! Rules that need other types' descriptions (a subsection's name prefix) or type
//! information (hook signatures, element types) are checked by the generated code at
//! compile time instead, with spans on the offending tokens.

use crate::ast::{Container, FieldAst, Role, Shape, type_str};
use crate::ctxt::Ctxt;

/// Runs every rule.
pub fn check(cx: &Ctxt, c: &Container<'_>) {
    no_generics(cx, c);
    min_version_not_above_version(cx, c);
    subsection_types_are_distinct(cx, c);
    for (i, f) in c.fields.iter().enumerate() {
        if f.attrs.skip.is_set() {
            // A skipped field is never sent: the only thing to say is what else was given.
            skip_stands_alone(cx, f);
            continue;
        }
        since_not_above_version(cx, c, f);
        exists_replaces_since(cx, f);
        unused_takes_only_version_keys(cx, f);
        validate_takes_only_rename(cx, f);
        subsection_needs_needed(cx, f);
        subsection_takes_no_data_keys(cx, f);
        needed_only_on_subsections(cx, f);
        len_matches_shape(cx, f);
        len_names_an_earlier_integer_field(cx, c, i, f);
        len_field_exists_whenever_the_vec_does(cx, c, f);
        buffer_is_a_byte_array(cx, f);
        equal_is_a_single_value(cx, f);
        equal_has_a_qemu_info(cx, f);
        list_takes_only_version_keys(cx, f);
        array_of_pointer_is_a_plain_array(cx, f);
        tmp_names_both_functions(cx, f);
        tmp_takes_only_exists(cx, f);
    }
}

/// `version = N` as the messages say it: given, or the default.
fn version_words(c: &Container<'_>) -> String {
    if c.attrs.version.is_set() {
        format!("version {}", c.version())
    } else {
        format!("version {} (the default; set `version = N`)", c.version())
    }
}

fn no_generics(cx: &Ctxt, c: &Container<'_>) {
    let g = &c.input.generics;
    if !g.params.is_empty() {
        cx.error_spanned(
            g,
            "VmState cannot be derived for generic types: a description is one static table \
             (write a concrete struct per instantiation)",
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
                "min_version {} is above {}: no stream could ever be loaded",
                min.value,
                version_words(c)
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
                "since = {} is above the container's {}: the field would never be sent",
                since.value,
                version_words(c)
            ),
        );
    }
}

fn exists_replaces_since(cx: &Ctxt, f: &FieldAst<'_>) {
    if let (Some(since), Some(exists)) = (f.attrs.since.get(), f.attrs.exists.get()) {
        cx.error_range(
            exists.whole(),
            format!(
                "`exists` and `since` cannot be combined: the `exists` predicate receives the \
                 version, so test `version >= {}` inside it and remove `since`",
                since.value
            ),
        );
    }
}

fn skip_stands_alone(cx: &Ctxt, f: &FieldAst<'_>) {
    for (key, range) in f.attrs.given() {
        if key != "skip" {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `skip`: a skipped field is never sent \
                     and takes no other vmstate attribute"
                ),
            );
        }
    }
}

fn unused_takes_only_version_keys(cx: &Ctxt, f: &FieldAst<'_>) {
    let Some(unused) = f.attrs.unused.get() else {
        return;
    };
    if unused.value == 0 {
        cx.error(unused.span, "`unused` needs a size of at least 1 byte");
    }
    for (key, range) in f.attrs.given() {
        if !matches!(key, "unused" | "since" | "exists") {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `unused`: an unused field takes only \
                     `since` or `exists`"
                ),
            );
        }
    }
}

/// `qtailq` / `qlist`: the element type and its description say everything; only
/// `since` (QEMU's field version, which is also the version its elements load at) and
/// `rename` go with it.
fn list_takes_only_version_keys(cx: &Ctxt, f: &FieldAst<'_>) {
    let kind = match (
        f.attrs.qtailq.get(),
        f.attrs.qlist.get(),
        f.attrs.gtree.get(),
    ) {
        (Some(_), _, _) => "qtailq",
        (None, Some(_), _) => "qlist",
        (None, None, Some(_)) => "gtree",
        (None, None, None) => return,
    };
    for (key, range) in f.attrs.given() {
        if !matches!(key, "since" | "rename") && key != kind {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `{kind}`: a list or tree field takes only \
                     `since` (its elements load at that version) and `rename`"
                ),
            );
        }
    }
}

/// `array_of_pointer`: a fixed array of `Option`s; its presence (`since`, `exists`) and
/// name (`rename`) work as for any array, nothing else goes with it.
fn array_of_pointer_is_a_plain_array(cx: &Ctxt, f: &FieldAst<'_>) {
    let Some(flag) = f.attrs.array_of_pointer.get() else {
        return;
    };
    if !matches!(f.shape, Shape::Array { .. }) {
        cx.error(
            flag.span,
            format!(
                "`array_of_pointer` applies to a fixed array `[Option<T>; N]` or \
                 `[Option<Box<T>>; N]`, and this field is a `{}`",
                type_str(f.ty)
            ),
        );
    }
    for (key, range) in f.attrs.given() {
        if !matches!(key, "array_of_pointer" | "since" | "exists" | "rename") {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `array_of_pointer`: an array of \
                     pointers takes only `since`, `exists` and `rename`"
                ),
            );
        }
    }
}

/// `to_tmp` and `from_tmp` come together: one computes the temporary, the other applies it.
fn tmp_names_both_functions(cx: &Ctxt, f: &FieldAst<'_>) {
    match (f.attrs.to_tmp.get(), f.attrs.from_tmp.get()) {
        (Some(to), None) => cx.error_range(
            to.whole(),
            "`to_tmp` needs `from_tmp = path` too: `fn(&mut Self, T) -> Result<(), E>`, which \
             applies the loaded temporary to the device",
        ),
        (None, Some(from)) => cx.error_range(
            from.whole(),
            "`from_tmp` needs `to_tmp = path` too: `fn(&Self) -> T`, which computes the \
             temporary from the device",
        ),
        _ => {}
    }
}

/// A temporary (QEMU's `VMSTATE_WITH_TMP`) is always named `tmp` and has field version 0:
/// only `exists` (QEMU's `VMSTATE_WITH_TMP_TEST`) goes with it.
fn tmp_takes_only_exists(cx: &Ctxt, f: &FieldAst<'_>) {
    if !f.attrs.to_tmp.is_set() && !f.attrs.from_tmp.is_set() {
        return;
    }
    for (key, range) in f.attrs.given() {
        if !matches!(key, "to_tmp" | "from_tmp" | "exists") {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `to_tmp`/`from_tmp`: QEMU names a \
                     temporary `tmp` and loads it at version 0, so it takes only `exists`"
                ),
            );
        }
    }
}

fn validate_takes_only_rename(cx: &Ctxt, f: &FieldAst<'_>) {
    if !f.attrs.validate.is_set() {
        return;
    }
    for (key, range) in f.attrs.given() {
        // `unused` and `subsection` together with `validate` are reported by their rules.
        if !matches!(key, "validate" | "rename" | "unused" | "subsection") {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `validate`: a validation sends nothing and \
                     takes only `rename` (the check's name)"
                ),
            );
        }
    }
}

fn subsection_needs_needed(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(sub) = f.attrs.subsection.get()
        && !f.attrs.needed.is_set()
    {
        cx.error(
            sub.span,
            "a subsection needs `needed = path`: the predicate `fn(&Self) -> bool` that decides \
             whether it is sent",
        );
    }
}

fn subsection_takes_no_data_keys(cx: &Ctxt, f: &FieldAst<'_>) {
    if !f.attrs.subsection.is_set() {
        return;
    }
    for (key, range) in f.attrs.given() {
        // `unused` together with `subsection` is reported by the `unused` rule.
        if !matches!(key, "subsection" | "needed" | "unused") {
            cx.error_range(
                range,
                format!(
                    "`{key}` cannot be combined with `subsection`: a subsection takes only \
                     `needed` (its name and versions come from its own type)"
                ),
            );
        }
    }
}

fn needed_only_on_subsections(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(needed) = f.attrs.needed.get()
        && !f.attrs.subsection.is_set()
    {
        cx.error_range(
            needed.whole(),
            "`needed` applies to subsections: add `subsection`, or use `exists = path` to make \
             a single field conditional",
        );
    }
}

fn len_matches_shape(cx: &Ctxt, f: &FieldAst<'_>) {
    if f.role() != Role::Data {
        return;
    }
    let list = f.attrs.qtailq.is_set() || f.attrs.qlist.is_set() || f.attrs.gtree.is_set();
    match (&f.shape, f.attrs.len.get()) {
        (Shape::Vec { .. }, None) if !list => cx.error_spanned(
            f.ty,
            "a Vec field needs `#[vmstate(len = field)]`: the earlier integer field holding its \
             element count",
        ),
        (Shape::Array { .. }, Some(len)) => cx.error_range(
            len.whole(),
            format!(
                "`len` applies to Vec fields; the fixed array `{}` carries its own length",
                type_str(f.ty)
            ),
        ),
        (Shape::Single, Some(len)) => cx.error_range(
            len.whole(),
            format!(
                "`len` applies to Vec fields, and this field is a `{}`",
                type_str(f.ty)
            ),
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
    let t = &c.fields[target];
    match t.role() {
        // A local count (a configuration value, never loaded): any position.
        Role::Skip => {}
        Role::Data if target >= index => {
            cx.error(
                len.span,
                format!(
                    "`len` names `{name}`, which does not come before this field: the count \
                     must be loaded first"
                ),
            );
            return;
        }
        Role::Data => {}
        Role::Unused | Role::Validate | Role::Subsection => {
            cx.error(
                len.span,
                format!(
                    "`len` names `{name}`, which holds no count (an `unused`, `validate` or \
                     `subsection` field)"
                ),
            );
            return;
        }
    }
    if f.is_vbuffer() {
        if !matches!(t.count_type(), Some("u32" | "i32")) {
            cx.error(
                len.span,
                format!(
                    "`len` names `{name}`, a `{}`: the byte count of a `buffer` must be a u32 \
                     or i32 (QEMU reads a VBUFFER's size as an int32)",
                    type_str(t.ty)
                ),
            );
        }
    } else if t.count_type().is_none() {
        cx.error(
            len.span,
            format!(
                "`len` names `{name}`, a `{}`: the count field must be a u8, u16, u32 or i32",
                type_str(t.ty)
            ),
        );
    }
}

/// The count must be on the wire in every stream that has the counted field: a count
/// with a later `since` (or an `exists` the counted field does not share) would not be
/// loaded, and the field would be read with a stale local count.
fn len_field_exists_whenever_the_vec_does(cx: &Ctxt, c: &Container<'_>, f: &FieldAst<'_>) {
    let Some(len) = f.attrs.len.get() else { return };
    let name = len.value.to_string();
    let Some(t) = c.field_index(&name).map(|i| &c.fields[i]) else {
        return;
    };
    if f.role() != Role::Data || t.role() != Role::Data || f.attrs.exists.is_set() {
        return;
    }
    if t.attrs.exists.is_set() {
        cx.error(
            len.span,
            format!(
                "`len` names `{name}`, which has an `exists` predicate and this field has none: \
                 in a stream without `{name}` the count would not be loaded (give this field \
                 the same `exists`)"
            ),
        );
    } else if t.since() > f.since() {
        cx.error(
            len.span,
            format!(
                "`len` names `{name}`, which is sent from version {} (`since = {}`), and this \
                 field from version {}: in older streams the count would not be loaded (give \
                 this field `since = {}` too, or count it with a local `skip` field)",
                t.since(),
                t.since(),
                f.since(),
                t.since()
            ),
        );
    }
}

fn buffer_is_a_byte_array(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(b) = f.attrs.buffer.get()
        && !f.is_byte_array()
        && !f.is_byte_vec()
    {
        cx.error(
            b.span,
            format!(
                "`buffer` applies to byte arrays `[u8; N]` and to `Vec<u8>` with `len`, and \
                 this field is a `{}`",
                type_str(f.ty)
            ),
        );
    }
}

fn equal_is_a_single_value(cx: &Ctxt, f: &FieldAst<'_>) {
    if let Some(e) = f.attrs.equal.get()
        && f.role() == Role::Data
        && !matches!(f.shape, Shape::Single)
    {
        cx.error(
            e.span,
            format!(
                "`equal` applies to single values, and this field is a `{}`",
                type_str(f.ty)
            ),
        );
    }
}

/// The types QEMU has a `* equal` info for (`uint8 equal` ... `int64 equal`, `int32 equal`).
const EQUAL_TYPES: [&str; 5] = ["u8", "u16", "u32", "u64", "i32"];

fn equal_has_a_qemu_info(cx: &Ctxt, f: &FieldAst<'_>) {
    if !f.attrs.equal.is_set() || f.role() != Role::Data || !matches!(f.shape, Shape::Single) {
        // Arrays and Vecs are reported by `equal_is_a_single_value`, `equal` on `unused`
        // or `validate` by their rules.
        return;
    }
    if f.type_ident()
        .is_some_and(|t| EQUAL_TYPES.contains(&t.as_str()))
    {
        return;
    }
    cx.error_spanned(
        f.ty,
        format!(
            "`equal` applies to u8, u16, u32, u64 and i32, the types QEMU has a `* equal` info \
             for, and this field is a `{}` (the type is matched as written: a type alias is not \
             recognised)",
            type_str(f.ty)
        ),
    );
}

/// QEMU finds a subsection by its name, which comes from its type: two subsection fields of
/// one type would send two subsections of one name, and a load would fill the first one
/// with both.
fn subsection_types_are_distinct(cx: &Ctxt, c: &Container<'_>) {
    let mut seen: Vec<(String, &FieldAst<'_>)> = Vec::new();
    for f in c.fields.iter().filter(|f| f.role() == Role::Subsection) {
        let ty = type_str(f.ty);
        if let Some((_, first)) = seen.iter().find(|(t, _)| *t == ty) {
            cx.error_spanned(
                f.ty,
                format!(
                    "subsection `{}` has the same type `{ty}` as subsection `{}`: subsections \
                     are found by name on load, so each needs a type of its own (with its own \
                     `name`)",
                    f.rust_name, first.rust_name
                ),
            );
        } else {
            seen.push((ty, f));
        }
    }
}

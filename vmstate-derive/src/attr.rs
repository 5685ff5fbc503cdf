//! The whole `#[vmstate(...)]` attribute grammar, in one place.
//!
//! Container: `name = "..."`, `version = N`, `min_version = N`, `pre_save = path`,
//! `post_save = path`, `pre_load = path`, `post_load = path`, `needed = path`.
//!
//! Field: `since = N`, `exists = path`, `skip`, `unused = N`, `len = field`, `equal`,
//! `buffer`, `subsection`, `needed = path`, `rename = "..."`.
//!
//! Unknown and duplicate keys are errors pointing at the key.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Ident, LitInt, LitStr, Path};

use crate::ctxt::Ctxt;

/// A parsed value and the span of the token it came from.
#[derive(Clone)]
pub struct WithSpan<T> {
    pub value: T,
    pub span: Span,
}

/// One attribute key that may be given at most once.
pub struct Slot<T> {
    key: &'static str,
    value: Option<WithSpan<T>>,
}

impl<T> Slot<T> {
    fn new(key: &'static str) -> Self {
        Slot { key, value: None }
    }

    fn set(&mut self, cx: &Ctxt, key_span: Span, value: T, span: Span) {
        if self.value.is_some() {
            cx.error(
                key_span,
                format!("duplicate vmstate attribute `{}`", self.key),
            );
        } else {
            self.value = Some(WithSpan { value, span });
        }
    }

    pub fn get(&self) -> Option<&WithSpan<T>> {
        self.value.as_ref()
    }

    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }

    pub fn span(&self) -> Option<Span> {
        self.value.as_ref().map(|v| v.span)
    }
}

/// Container attributes.
pub struct ContainerAttrs {
    pub name: Slot<String>,
    pub version: Slot<u32>,
    pub min_version: Slot<u32>,
    pub pre_save: Slot<Path>,
    pub post_save: Slot<Path>,
    pub pre_load: Slot<Path>,
    pub post_load: Slot<Path>,
    pub needed: Slot<Path>,
}

/// Field attributes.
pub struct FieldAttrs {
    pub since: Slot<u32>,
    pub exists: Slot<Path>,
    pub skip: Slot<()>,
    pub unused: Slot<usize>,
    pub len: Slot<Ident>,
    pub equal: Slot<()>,
    pub buffer: Slot<()>,
    pub subsection: Slot<()>,
    pub needed: Slot<Path>,
    pub rename: Slot<String>,
}

const CONTAINER_KEYS: &str =
    "name, version, min_version, pre_save, post_save, pre_load, post_load, needed";
const FIELD_KEYS: &str =
    "since, exists, skip, unused, len, equal, buffer, subsection, needed, rename";

impl ContainerAttrs {
    pub fn parse(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut a = ContainerAttrs {
            name: Slot::new("name"),
            version: Slot::new("version"),
            min_version: Slot::new("min_version"),
            pre_save: Slot::new("pre_save"),
            post_save: Slot::new("post_save"),
            pre_load: Slot::new("pre_load"),
            post_load: Slot::new("post_load"),
            needed: Slot::new("needed"),
        };
        for_each_meta(cx, attrs, |meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let ks = meta.path.span();
            match key.as_str() {
                "name" => set_str(cx, &mut a.name, ks, meta),
                "version" => set_int(cx, &mut a.version, ks, meta),
                "min_version" => set_int(cx, &mut a.min_version, ks, meta),
                "pre_save" => set_path(cx, &mut a.pre_save, ks, meta),
                "post_save" => set_path(cx, &mut a.post_save, ks, meta),
                "pre_load" => set_path(cx, &mut a.pre_load, ks, meta),
                "post_load" => set_path(cx, &mut a.post_load, ks, meta),
                "needed" => set_path(cx, &mut a.needed, ks, meta),
                _ => unknown(meta, CONTAINER_KEYS, "container"),
            }
        });
        a
    }
}

impl FieldAttrs {
    pub fn parse(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
        let mut a = FieldAttrs {
            since: Slot::new("since"),
            exists: Slot::new("exists"),
            skip: Slot::new("skip"),
            unused: Slot::new("unused"),
            len: Slot::new("len"),
            equal: Slot::new("equal"),
            buffer: Slot::new("buffer"),
            subsection: Slot::new("subsection"),
            needed: Slot::new("needed"),
            rename: Slot::new("rename"),
        };
        for_each_meta(cx, attrs, |meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let ks = meta.path.span();
            match key.as_str() {
                "since" => set_int(cx, &mut a.since, ks, meta),
                "exists" => set_path(cx, &mut a.exists, ks, meta),
                "skip" => set_flag(cx, &mut a.skip, ks),
                "unused" => set_int(cx, &mut a.unused, ks, meta),
                "len" => {
                    let ident: Ident = meta.value()?.parse()?;
                    let span = ident.span();
                    a.len.set(cx, ks, ident, span);
                    Ok(())
                }
                "equal" => set_flag(cx, &mut a.equal, ks),
                "buffer" => set_flag(cx, &mut a.buffer, ks),
                "subsection" => set_flag(cx, &mut a.subsection, ks),
                "needed" => set_path(cx, &mut a.needed, ks, meta),
                "rename" => set_str(cx, &mut a.rename, ks, meta),
                _ => unknown(meta, FIELD_KEYS, "field"),
            }
        });
        a
    }
}

/// Calls `f` for every key inside every `#[vmstate(...)]`; parse errors are recorded.
fn for_each_meta(
    cx: &Ctxt,
    attrs: &[syn::Attribute],
    mut f: impl FnMut(&ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("vmstate")) {
        if let Err(e) = attr.parse_nested_meta(|meta| f(&meta)) {
            cx.syn_error(e);
        }
    }
}

fn unknown(meta: &ParseNestedMeta<'_>, keys: &str, what: &str) -> syn::Result<()> {
    let key = meta
        .path
        .get_ident()
        .map(|i| i.to_string())
        .unwrap_or_else(|| "?".into());
    Err(meta.error(format!(
        "unknown vmstate {what} attribute `{key}` (expected one of: {keys})"
    )))
}

fn set_flag(cx: &Ctxt, slot: &mut Slot<()>, key_span: Span) -> syn::Result<()> {
    slot.set(cx, key_span, (), key_span);
    Ok(())
}

fn set_str(
    cx: &Ctxt,
    slot: &mut Slot<String>,
    ks: Span,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let lit: LitStr = meta.value()?.parse()?;
    slot.set(cx, ks, lit.value(), lit.span());
    Ok(())
}

fn set_path(
    cx: &Ctxt,
    slot: &mut Slot<Path>,
    ks: Span,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let path: Path = meta.value()?.parse()?;
    let span = path.span();
    slot.set(cx, ks, path, span);
    Ok(())
}

fn set_int<T>(
    cx: &Ctxt,
    slot: &mut Slot<T>,
    ks: Span,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let lit: LitInt = meta.value()?.parse()?;
    let v = lit.base10_parse::<T>()?;
    slot.set(cx, ks, v, lit.span());
    Ok(())
}

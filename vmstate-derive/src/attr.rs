//! The whole `#[vmstate(...)]` attribute grammar, in one place.
//!
//! Container: `name = "..."`, `version = N`, `min_version = N`, `pre_save = path`,
//! `post_save = path`, `pre_load = path`, `post_load = path`, `needed = path`.
//!
//! Field: `since = N`, `exists = path`, `skip`, `unused = N`, `len = field`, `equal`,
//! `buffer`, `subsection`, `needed = path`, `validate = path`, `rename = "..."`.
//!
//! Unknown and duplicate keys are errors pointing at the key.

use proc_macro2::{Span, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Ident, LitInt, LitStr, Path, Token};

use crate::ctxt::Ctxt;

/// A parsed value and where it came from, for errors that point at it.
#[derive(Clone)]
pub struct WithSpan<T> {
    pub value: T,
    /// The value's first token (the key itself for flags).
    pub span: Span,
    /// The key (`since` in `since = 2`).
    pub key: Span,
    /// The last token of the value (the key itself for flags).
    pub end: Span,
}

impl<T> WithSpan<T> {
    /// From the key to the end of the value: `since = 2`, `needed = Self::has_poll`.
    pub fn whole(&self) -> (Span, Span) {
        (self.key, self.end)
    }
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

    fn set(&mut self, cx: &Ctxt, key: Span, value: T, (span, end): (Span, Span)) {
        if self.value.is_some() {
            cx.error(key, format!("duplicate vmstate attribute `{}`", self.key));
        } else {
            self.value = Some(WithSpan {
                value,
                span,
                key,
                end,
            });
        }
    }

    pub fn get(&self) -> Option<&WithSpan<T>> {
        self.value.as_ref()
    }

    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }

    /// The key's name, for messages.
    pub fn key(&self) -> &'static str {
        self.key
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
    pub validate: Slot<Path>,
    pub rename: Slot<String>,
}

const CONTAINER_KEYS: &[&str] = &[
    "name",
    "version",
    "min_version",
    "pre_save",
    "post_save",
    "pre_load",
    "post_load",
    "needed",
];
const FIELD_KEYS: &[&str] = &[
    "since",
    "exists",
    "skip",
    "unused",
    "len",
    "equal",
    "buffer",
    "subsection",
    "needed",
    "validate",
    "rename",
];

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
                _ => unknown(cx, meta, Kind::Container),
            }
        });
        a
    }
}

impl FieldAttrs {
    /// Every key given on the field, in grammar order, with its whole span range.
    pub fn given(&self) -> Vec<(&'static str, (Span, Span))> {
        fn g<T>(s: &Slot<T>) -> Option<(&'static str, (Span, Span))> {
            s.get().map(|v| (s.key(), v.whole()))
        }
        [
            g(&self.since),
            g(&self.exists),
            g(&self.skip),
            g(&self.unused),
            g(&self.len),
            g(&self.equal),
            g(&self.buffer),
            g(&self.subsection),
            g(&self.needed),
            g(&self.validate),
            g(&self.rename),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

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
            validate: Slot::new("validate"),
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
                    a.len.set(cx, ks, ident, (span, span));
                    Ok(())
                }
                "equal" => set_flag(cx, &mut a.equal, ks),
                "buffer" => set_flag(cx, &mut a.buffer, ks),
                "subsection" => set_flag(cx, &mut a.subsection, ks),
                "needed" => set_path(cx, &mut a.needed, ks, meta),
                "validate" => set_path(cx, &mut a.validate, ks, meta),
                "rename" => set_str(cx, &mut a.rename, ks, meta),
                _ => unknown(cx, meta, Kind::Field),
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

/// Where an attribute was written.
#[derive(Clone, Copy)]
enum Kind {
    Container,
    Field,
}

/// Records an unknown key (with a hint when it is a typo or belongs on the struct rather
/// than a field, or the other way round) and skips its value, so that the rest of the
/// attribute is still checked.
fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, kind: Kind) -> syn::Result<()> {
    let (what, keys, other_keys, other_place) = match kind {
        Kind::Container => ("container", CONTAINER_KEYS, FIELD_KEYS, "on a field"),
        Kind::Field => ("field", FIELD_KEYS, CONTAINER_KEYS, "on the struct"),
    };
    let key = meta.path.to_token_stream().to_string().replace(' ', "");
    let hint = if other_keys.contains(&key.as_str()) {
        format!("`{key}` goes {other_place}; ")
    } else if let Some(k) = keys.iter().find(|k| is_typo_of(&key, k)) {
        format!("did you mean `{k}`? ")
    } else {
        String::new()
    };
    cx.error_spanned(
        &meta.path,
        format!(
            "unknown vmstate {what} attribute `{key}` ({hint}expected one of: {})",
            keys.join(", ")
        ),
    );
    while !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// True if `key` is within two single-character edits of `known`.
fn is_typo_of(key: &str, known: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (key.chars().collect(), known.chars().collect());
    // Levenshtein distance, one row at a time.
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            row.push(sub.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()] <= 2 && prev[b.len()] < b.len()
}

fn set_flag(cx: &Ctxt, slot: &mut Slot<()>, key_span: Span) -> syn::Result<()> {
    slot.set(cx, key_span, (), (key_span, key_span));
    Ok(())
}

fn set_str(
    cx: &Ctxt,
    slot: &mut Slot<String>,
    ks: Span,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let lit: LitStr = meta.value()?.parse()?;
    slot.set(cx, ks, lit.value(), (lit.span(), lit.span()));
    Ok(())
}

fn set_path(
    cx: &Ctxt,
    slot: &mut Slot<Path>,
    ks: Span,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let path: Path = meta.value()?.parse()?;
    let range = span_range(&path);
    slot.set(cx, ks, path, range);
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
    slot.set(cx, ks, v, (lit.span(), lit.span()));
    Ok(())
}

/// The spans of the first and last tokens of `tokens` (stable Rust cannot join spans;
/// an error given both is shown over the whole range).
pub fn span_range(tokens: &impl ToTokens) -> (Span, Span) {
    let mut iter = tokens.to_token_stream().into_iter();
    let first = iter.next().map_or_else(|| tokens.span(), |t| t.span());
    let last = iter.last().map_or(first, |t| t.span());
    (first, last)
}

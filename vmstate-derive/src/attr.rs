//! The whole `#[vmstate(...)]` attribute grammar, in one place.
//!
//! Each key is declared once, in [`ContainerAttrs`] or [`FieldAttrs`] below, with the
//! type of its value (see [`AttrValue`]). Parsing, the error for a key given twice, the
//! error for an unknown key, and the list of valid keys in that error all come from
//! those declarations.

use proc_macro2::{Span, TokenTree};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Ident, LitInt, LitStr, Path, Token};

use crate::ctxt::Ctxt;

/// Declares the attributes of one level (`Container` or `Field`): a struct with one
/// [`Slot`] per key, named like the key and typed by the key's value, and its parser.
/// The key is the field's name; its value type says how it is written (see
/// [`AttrValue`]).
macro_rules! attributes {
    (
        $(#[$doc:meta])*
        pub struct $attrs:ident at $level:ident {
            $( $(#[$key_doc:meta])* $key:ident: $value:ty, )*
        }
    ) => {
        $(#[$doc])*
        pub struct $attrs {
            $( $(#[$key_doc])* pub $key: Slot<$value>, )*
        }

        impl $attrs {
            /// Every key of this level, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            /// Parses every `#[vmstate(...)]` in `attrs`; errors are recorded in `cx`.
            pub fn parse(cx: &Ctxt, attrs: &[syn::Attribute]) -> Self {
                let mut a = $attrs {
                    $( $key: Slot::new(stringify!($key)), )*
                };
                for_each_meta(cx, attrs, |meta| {
                    let key = meta.path.get_ident().map(ToString::to_string);
                    match key.as_deref() {
                        $( Some(stringify!($key)) => a.$key.parse(cx, meta), )*
                        _ => unknown(cx, meta, Level::$level),
                    }
                });
                a
            }

            /// Every key given, in declaration order, with its whole span range.
            #[allow(dead_code, reason = "not every level asks what was given")]
            pub fn given(&self) -> Vec<(&'static str, (Span, Span))> {
                [$( self.$key.given() ),*].into_iter().flatten().collect()
            }
        }
    };
}

attributes! {
    /// Container attributes: `#[vmstate(...)]` on the struct.
    pub struct ContainerAttrs at Container {
        /// `name = "..."`: the description's name (default: the type's name).
        name: String,
        /// `version = N`: the version saved (default 1).
        version: u32,
        /// `min_version = N`: the oldest version loaded (default: `version`).
        min_version: u32,
        /// `pre_save = path`: `fn(&mut Self) -> Result<(), E>`, before saving.
        pre_save: Path,
        /// `post_save = path`: `fn(&mut Self) -> Result<(), E>`, after saving.
        post_save: Path,
        /// `pre_load = path`: `fn(&mut Self) -> Result<(), E>`, before loading.
        pre_load: Path,
        /// `post_load = path`: `fn(&mut Self, u32) -> Result<(), E>`, after loading.
        post_load: Path,
        /// `needed = path`: `fn(&Self) -> bool`, whether the section is sent.
        needed: Path,
    }
}

attributes! {
    /// Field attributes: `#[vmstate(...)]` on a field.
    pub struct FieldAttrs at Field {
        /// `since = N`: sent from version N on.
        since: u32,
        /// `exists = path`: `fn(&Self, u32) -> bool`, whether the field is in the stream.
        exists: Path,
        /// `skip`: never sent.
        skip: (),
        /// `unused = N`: N zero bytes, ignored on load.
        unused: usize,
        /// `len = field`: the earlier field counting this `Vec`'s elements.
        len: Ident,
        /// `equal`: the loaded value must equal the current one.
        equal: (),
        /// `buffer`: raw bytes (`[u8; N]`, or `Vec<u8>` with `len`).
        buffer: (),
        /// `subsection`: the field is a subsection (with `needed`).
        subsection: (),
        /// `needed = path`: `fn(&Self) -> bool`, whether the subsection is sent.
        needed: Path,
        /// `validate = path`: `fn(&Self, u32) -> bool`, a check on load.
        validate: Path,
        /// `rename = "..."`: the field's name in QEMU.
        rename: String,
        /// `qtailq`: a list of described elements (QEMU's `VMSTATE_QTAILQ_V`).
        qtailq: (),
        /// `qlist`: the same wire format under QEMU's `VMSTATE_QLIST_V`.
        qlist: (),
        /// `gtree`: a `BTreeMap` of described values (QEMU's `VMSTATE_GTREE_V`, or
        /// `VMSTATE_GTREE_DIRECT_KEY_V` with `u64` keys).
        gtree: (),
        /// `array_of_pointer`: an array of `Option`s, absent elements sent as QEMU's
        /// `0x30` placeholder (`VMSTATE_ARRAY_OF_POINTER[_TO_STRUCT]`).
        array_of_pointer: (),
        /// `to_tmp = path`: `fn(&Self) -> T`, the temporary of a `Tmp<T>` field
        /// (QEMU's `VMSTATE_WITH_TMP`).
        to_tmp: Path,
        /// `from_tmp = path`: `fn(&mut Self, T) -> Result<(), E>`, applies a loaded
        /// temporary.
        from_tmp: Path,
    }
}

/// Where an attribute is written.
#[derive(Clone, Copy)]
enum Level {
    Container,
    Field,
}

impl Level {
    /// The level's name in messages.
    fn name(self) -> &'static str {
        match self {
            Level::Container => "container",
            Level::Field => "field",
        }
    }

    /// The keys valid at this level.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Level::Container => ContainerAttrs::KEYS,
            Level::Field => FieldAttrs::KEYS,
        }
    }

    /// The other level, and where its keys go in words.
    fn other(self) -> (Level, &'static str) {
        match self {
            Level::Container => (Level::Field, "on a field"),
            Level::Field => (Level::Container, "on the struct"),
        }
    }
}

/// How an attribute's value is written, by the type it parses to.
pub trait AttrValue: Sized {
    /// Parses the value after the key, with the spans of its first and last tokens (the
    /// key's for a flag).
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))>;
}

/// A flag, written alone: `skip`.
impl AttrValue for () {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))> {
        let key = meta.path.span();
        Ok(((), (key, key)))
    }
}

/// A string literal: `name = "..."`.
impl AttrValue for String {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))> {
        let lit: LitStr = meta.value()?.parse()?;
        Ok((lit.value(), (lit.span(), lit.span())))
    }
}

/// An integer literal: `version = 3`.
impl AttrValue for u32 {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))> {
        parse_int(meta)
    }
}

/// An integer literal: `unused = 4`.
impl AttrValue for usize {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))> {
        parse_int(meta)
    }
}

/// A path to a function: `pre_save = Self::sync`.
impl AttrValue for Path {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))> {
        let path: Path = meta.value()?.parse()?;
        let range = span_range(&path);
        Ok((path, range))
    }
}

/// A field's name: `len = count`.
impl AttrValue for Ident {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<(Self, (Span, Span))> {
        let ident: Ident = meta.value()?.parse()?;
        let span = ident.span();
        Ok((ident, (span, span)))
    }
}

/// An integer literal of type `T`.
fn parse_int<T>(meta: &ParseNestedMeta<'_>) -> syn::Result<(T, (Span, Span))>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let lit: LitInt = meta.value()?.parse()?;
    let v = lit.base10_parse::<T>()?;
    Ok((v, (lit.span(), lit.span())))
}

/// A parsed value and where it came from, for errors that point at it.
#[derive(Clone)]
pub struct WithSpan<T> {
    /// The value.
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

/// One attribute key, which may be given at most once.
pub struct Slot<T> {
    key: &'static str,
    value: Option<WithSpan<T>>,
}

impl<T> Slot<T> {
    fn new(key: &'static str) -> Self {
        Slot { key, value: None }
    }

    /// Parses the key's value and records it, or records a duplicate key.
    fn parse(&mut self, cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()>
    where
        T: AttrValue,
    {
        let key = meta.path.span();
        let (value, (span, end)) = T::parse(meta)?;
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
        Ok(())
    }

    /// The value, if the key was given.
    pub fn get(&self) -> Option<&WithSpan<T>> {
        self.value.as_ref()
    }

    /// True if the key was given.
    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }

    /// The key and its whole span range, if given.
    fn given(&self) -> Option<(&'static str, (Span, Span))> {
        self.get().map(|v| (self.key, v.whole()))
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

/// Records an unknown key (with a hint when it is a typo or belongs on the struct rather
/// than a field, or the other way round) and skips its value, so that the rest of the
/// attribute is still checked.
fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, level: Level) -> syn::Result<()> {
    let keys = level.keys();
    let (other, other_place) = level.other();
    let key = meta.path.to_token_stream().to_string().replace(' ', "");
    let hint = if other.keys().contains(&key.as_str()) {
        format!("`{key}` goes {other_place}; ")
    } else if let Some(k) = keys.iter().find(|k| is_typo_of(&key, k)) {
        format!("did you mean `{k}`? ")
    } else {
        String::new()
    };
    cx.error_spanned(
        &meta.path,
        format!(
            "unknown vmstate {} attribute `{key}` ({hint}expected one of: {})",
            level.name(),
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

/// The spans of the first and last tokens of `tokens` (stable Rust cannot join spans;
/// an error given both is shown over the whole range).
pub fn span_range(tokens: &impl ToTokens) -> (Span, Span) {
    let mut iter = tokens.to_token_stream().into_iter();
    let first = iter.next().map_or_else(|| tokens.span(), |t| t.span());
    let last = iter.last().map_or(first, |t| t.span());
    (first, last)
}

#[cfg(test)]
mod tests {
    use super::{ContainerAttrs, FieldAttrs};
    use crate::ctxt::Ctxt;
    use syn::parse_quote;

    /// The messages of the errors recorded while parsing `attrs` as field attributes.
    fn field_errors(attrs: &[syn::Attribute]) -> Vec<String> {
        let cx = Ctxt::default();
        let _ = FieldAttrs::parse(&cx, attrs);
        cx.check()
            .err()
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn keys_in_declaration_order() {
        assert_eq!(
            ContainerAttrs::KEYS,
            [
                "name",
                "version",
                "min_version",
                "pre_save",
                "post_save",
                "pre_load",
                "post_load",
                "needed"
            ]
        );
        assert_eq!(
            FieldAttrs::KEYS,
            [
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
                "qtailq",
                "qlist",
                "gtree",
                "array_of_pointer",
                "to_tmp",
                "from_tmp"
            ]
        );
    }

    #[test]
    fn every_value_kind_parses() {
        let cx = Ctxt::default();
        let a = FieldAttrs::parse(
            &cx,
            &[
                parse_quote!(#[vmstate(since = 2, exists = Self::e, skip, unused = 4)]),
                parse_quote!(#[vmstate(len = n, rename = "x")]),
            ],
        );
        cx.check().unwrap();
        assert_eq!(a.since.get().unwrap().value, 2);
        assert!(a.exists.get().unwrap().value.segments.len() == 2);
        assert!(a.skip.is_set() && !a.equal.is_set());
        assert_eq!(a.unused.get().unwrap().value, 4);
        assert_eq!(a.len.get().unwrap().value, "n");
        assert_eq!(a.rename.get().unwrap().value, "x");
        let given: Vec<&str> = a.given().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            given,
            ["since", "exists", "skip", "unused", "len", "rename"]
        );
    }

    #[test]
    fn unknown_field_key() {
        assert_eq!(
            field_errors(&[parse_quote!(#[vmstate(sinse = 2, pre_save = Self::f, zzz)])]),
            [
                "unknown vmstate field attribute `sinse` (did you mean `since`? expected one of: \
                 since, exists, skip, unused, len, equal, buffer, subsection, needed, validate, \
                 rename, qtailq, qlist, gtree, array_of_pointer, to_tmp, from_tmp)",
                "unknown vmstate field attribute `pre_save` (`pre_save` goes on the struct; \
                 expected one of: since, exists, skip, unused, len, equal, buffer, subsection, \
                 needed, validate, rename, qtailq, qlist, gtree, array_of_pointer, to_tmp, \
                 from_tmp)",
                "unknown vmstate field attribute `zzz` (expected one of: since, exists, skip, \
                 unused, len, equal, buffer, subsection, needed, validate, rename, qtailq, qlist, \
                 gtree, array_of_pointer, to_tmp, from_tmp)",
            ]
        );
    }

    #[test]
    fn duplicate_keys_across_attributes() {
        assert_eq!(
            field_errors(&[
                parse_quote!(#[vmstate(skip)]),
                parse_quote!(#[vmstate(skip, rename = "a", rename = "b")]),
            ]),
            [
                "duplicate vmstate attribute `skip`",
                "duplicate vmstate attribute `rename`"
            ]
        );
    }
}

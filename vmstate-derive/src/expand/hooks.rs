//! Calls to the user's hooks and predicates (`pre_save`, `needed`, `exists`, ...),
//! spanned over the hook's path so that a wrong signature is reported there.

use proc_macro2::{Delimiter, Group, Ident, TokenStream};
use quote::{quote, quote_spanned};
use syn::Path;

use crate::attr::span_range;

pub(super) fn hook_call(path: Option<&Path>, f: impl FnOnce(&Path) -> TokenStream) -> TokenStream {
    path.map(f).unwrap_or_default()
}

/// `__vm::<helper>(<args>, <path>)` (with `?;` if `try_`), spanned over the whole hook
/// path: the helpers take typed closures, so a hook with the wrong signature (or an error
/// type that is not an error) is a type error, and it points at `Self::sync` in
/// `pre_save = Self::sync` rather than at the derive.
pub(super) fn hook_helper(p: &Path, helper: &str, args: TokenStream, try_: bool) -> TokenStream {
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

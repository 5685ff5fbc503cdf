//! Collects errors so that every misuse in one derive is reported together.

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::{Punct, Spacing, Span, TokenStream, TokenTree};
use quote::ToTokens;

/// The error collector for one derive invocation.
#[derive(Default)]
pub struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    /// Records an error at `span`.
    pub fn error(&self, span: Span, msg: impl Display) {
        self.errors.borrow_mut().push(syn::Error::new(span, msg));
    }

    /// Records an error over `tokens`, from their first token to their last.
    pub fn error_spanned(&self, tokens: impl ToTokens, msg: impl Display) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new_spanned(tokens, msg));
    }

    /// Records an error from `start` to `end` (two tokens of the same attribute or type).
    pub fn error_range(&self, (start, end): (Span, Span), msg: impl Display) {
        let token = |span| {
            let mut p = Punct::new('.', Spacing::Alone);
            p.set_span(span);
            TokenTree::Punct(p)
        };
        let range: TokenStream = [token(start), token(end)].into_iter().collect();
        self.error_spanned(range, msg);
    }

    /// Records a parse error.
    pub fn syn_error(&self, e: syn::Error) {
        self.errors.borrow_mut().push(e);
    }

    /// All recorded errors combined into one, if any.
    pub fn check(self) -> Result<(), syn::Error> {
        let mut errors = self.errors.into_inner().into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        for e in errors {
            first.combine(e);
        }
        Err(first)
    }
}

//! Collects errors so that every misuse in one derive is reported together.
//!
//! A `Ctxt` must end with [`Ctxt::check`], which hands its errors over: one dropped
//! unchecked panics (unless the thread is already panicking), so no path through the
//! derive can lose a recorded error and emit code for an invalid struct.

use std::cell::RefCell;
use std::fmt::Display;
use std::thread;

use proc_macro2::{Punct, Spacing, Span, TokenStream, TokenTree};
use quote::ToTokens;

/// The error collector for one derive invocation.
pub struct Ctxt {
    /// The errors so far; `None` once `check` has taken them.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Default for Ctxt {
    fn default() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }
}

impl Ctxt {
    /// Records an error at `span`.
    pub fn error(&self, span: Span, msg: impl Display) {
        self.syn_error(syn::Error::new(span, msg));
    }

    /// Records an error over `tokens`, from their first token to their last.
    pub fn error_spanned(&self, tokens: impl ToTokens, msg: impl Display) {
        self.syn_error(syn::Error::new_spanned(tokens, msg));
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
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("Ctxt used after check()")
            .push(e);
    }

    /// True if an error was recorded.
    pub fn has_errors(&self) -> bool {
        self.errors.borrow().as_ref().is_some_and(|e| !e.is_empty())
    }

    /// All recorded errors combined into one, if any. Consumes the context: it is the
    /// one way to end it without a panic.
    pub fn check(self) -> Result<(), syn::Error> {
        let errors = self.errors.borrow_mut().take();
        let mut errors = errors.expect("check() is called once").into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        for e in errors {
            first.combine(e);
        }
        Err(first)
    }
}

impl Drop for Ctxt {
    /// Refuses to lose errors: a context must be ended by `check`.
    fn drop(&mut self) {
        if !thread::panicking() && self.errors.get_mut().is_some() {
            panic!("vmstate-derive bug: Ctxt dropped without check()");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;
    use proc_macro2::Span;

    #[test]
    fn check_combines_every_error() {
        let cx = Ctxt::default();
        cx.error(Span::call_site(), "first");
        cx.error(Span::call_site(), "second");
        assert!(cx.has_errors());
        let messages: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    fn check_without_errors_is_ok() {
        let cx = Ctxt::default();
        assert!(!cx.has_errors());
        assert!(cx.check().is_ok());
    }

    #[test]
    #[should_panic(expected = "Ctxt dropped without check()")]
    fn dropping_unchecked_panics() {
        let cx = Ctxt::default();
        cx.error(Span::call_site(), "lost");
    }

    #[test]
    #[should_panic(expected = "Ctxt dropped without check()")]
    fn dropping_unchecked_panics_without_errors() {
        drop(Ctxt::default());
    }
}

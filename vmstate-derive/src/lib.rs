//! `#[derive(VmState)]` for the `vmstate` crate.
//!
//! Use it through `vmstate::VmState`; `docs/attributes.md` lists every attribute.
//! The derive parses the attributes (`attr`), builds a syntax model of the struct
//! (`ast`), checks the rules that span several attributes (`check`), decides once how
//! each field is encoded (`resolve`, into `model`), and emits a static description table
//! plus straight-line save/load code from that decision (`expand`). All errors of one
//! derive are reported together, each at the token at fault.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
#[cfg(test)]
mod golden;
mod model;
mod resolve;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `vmstate::VmState` (and `vmstate::VmElem`, so the type can be nested).
#[proc_macro_derive(VmState, attributes(vmstate))]
pub fn derive_vmstate(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive(&input).into()
}

/// The whole derive on a parsed struct: the generated items, or the compile errors.
fn derive(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = ctxt::Ctxt::default();
    let container = ast::Container::from_input(&cx, input);
    let model = container.as_ref().and_then(|c| {
        check::check(&cx, c);
        // Resolution takes the checks' word that the attributes fit together.
        if cx.has_errors() {
            None
        } else {
            resolve::resolve(&cx, c)
        }
    });
    match (cx.check(), model) {
        (Ok(()), Some(m)) => expand::expand(&m),
        (Err(e), _) => e.to_compile_error(),
        (Ok(()), None) => proc_macro2::TokenStream::new(),
    }
}

/// Compiles and runs every example of `docs/attributes.md` as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/attributes.md")]
struct AttributesDoc;

//! The `critical_section` attribute: a small declarative language of per-CPU steps, checked at
//! compile time and compiled into one restartable sequence. Use it through the `rseq` crate,
//! whose documentation describes the language.
//!
//! The macro parses the body (`parse`), checks every rule (`valid`), plans the instructions and
//! operands (`plan`, with the per-architecture templates of `rseq-arch`), and expands the
//! wrapper, the `asm!` block and the fallback body (`expand`).

mod ast;
mod expand;
mod parse;
mod plan;
mod regalloc;
mod valid;

use proc_macro::TokenStream;

/// See the `rseq` crate's documentation of `critical_section`.
#[proc_macro_attribute]
pub fn critical_section(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_critical_section(attr.into(), item.into()).into()
}

fn expand_critical_section(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let options = parse::parse_options(attr);
    let section = options.and_then(|options| parse::parse_section(options, item.clone()));
    let result = section.and_then(|section| {
        valid::validate(&section).and_then(|checked| expand::expand(&section, &checked))
    });
    match result {
        Ok(tokens) => tokens,
        Err(error) => {
            // One error, not a cascade: the function still exists with its signature.
            let stub = stub(item);
            let error = error.to_compile_error();
            quote::quote!(#error #stub)
        }
    }
}

/// The function's signature with a body that compiles whatever it returns.
fn stub(item: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    use syn::parse::Parser;
    let parser = |input: syn::parse::ParseStream| -> syn::Result<proc_macro2::TokenStream> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let vis: syn::Visibility = input.parse()?;
        let mut sig: syn::Signature = input.parse()?;
        // `unreachable!` cannot run in a `const fn`; the section cannot be one anyway.
        sig.constness = None;
        let _: proc_macro2::TokenStream = input.parse()?;
        Ok(quote::quote! {
            #(#attrs)*
            #[allow(unused_variables, unreachable_code, clippy::diverging_sub_expression)]
            #vis #sig { ::core::unreachable!("critical section with compile errors") }
        })
    };
    parser.parse2(item).unwrap_or_default()
}

#[cfg(test)]
mod snapshots;

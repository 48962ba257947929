//! The grammar of a critical section (documented on the `critical_section` attribute).

use crate::ast::*;
use proc_macro2::{TokenStream, TokenTree};
use rseq_arch::template::Cond;
use std::collections::HashSet;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{braced, parenthesized, token, Error, Expr, Ident, LitInt, Result, Token};

/// The attribute's arguments: `key = value, …`.
pub fn parse_options(attr: TokenStream) -> Result<Vec<OptionArg>> {
    let parser = Punctuated::<OptionArg, Token![,]>::parse_terminated;
    Ok(parser.parse2(attr)?.into_iter().collect())
}

impl Parse for OptionArg {
    fn parse(input: ParseStream) -> Result<Self> {
        // `crate` is a keyword; option names are any identifier.
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        let _: Token![=] = input
            .parse()
            .map_err(|e| Error::new(e.span(), format!("expected `=` after `{key}`")))?;
        let value: Expr = input.parse()?;
        Ok(OptionArg { key, value })
    }
}

/// The annotated function.
pub fn parse_section(options: Vec<OptionArg>, item: TokenStream) -> Result<Section> {
    let parser = move |input: ParseStream| -> Result<Section> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig: syn::Signature = input.parse()?;
        let content;
        let brace = braced!(content in input);
        let (mut steps, tail) = parse_body(&content)?;
        names_of_constants(&mut steps, &sig);
        Ok(Section {
            attrs,
            vis,
            sig,
            options,
            steps,
            tail,
            body_span: brace.span.close(),
        })
    };
    parser.parse2(item)
}

fn peek_ident(input: ParseStream, names: &[&str]) -> bool {
    let fork = input.fork();
    match fork.parse::<Ident>() {
        Ok(ident) => names.iter().any(|n| ident == n),
        Err(_) => false,
    }
}

/// Tokens from the fork's position to the input's, for error spans.
fn consumed(start: ParseStream, end: ParseStream) -> TokenStream {
    let mut tokens = TokenStream::new();
    let _ = start.step(|cursor| {
        let mut rest = *cursor;
        while rest != end.cursor() {
            match rest.token_tree() {
                Some((tt, next)) => {
                    tokens.extend([tt]);
                    rest = next;
                }
                None => break,
            }
        }
        Ok(((), rest))
    });
    tokens
}

fn parse_body(input: ParseStream) -> Result<(Vec<Step>, Option<Expr>)> {
    let mut steps = Vec::new();
    let mut tail = None;
    while !input.is_empty() {
        let start = input.fork();
        let step = if input.peek(Token![let]) && is_load(input) {
            parse_load(input)?
        } else if input.peek(Token![if]) {
            parse_fail_if(input)?
        } else if peek_ident(input, &["store", "store_release", "add", "sub"])
            && input.peek2(token::Paren)
        {
            let kind: Ident = input.parse()?;
            let (place, value) = parse_place_and_value(input, &kind)?;
            input.parse::<Token![;]>()?;
            Step::Store {
                kind,
                place,
                value,
                tokens: TokenStream::new(),
            }
        } else if peek_ident(input, &["memcpy"]) && input.peek2(token::Paren) {
            parse_memcpy(input)?
        } else if peek_ident(input, &["commit"]) && input.peek2(Token![::]) {
            parse_commit(input)?
        } else if input.peek(Token![let]) {
            Step::Other(input.parse()?)
        } else {
            let expr: Expr = input.parse()?;
            if input.peek(Token![;]) {
                Step::Other(syn::Stmt::Expr(expr, Some(input.parse()?)))
            } else if input.is_empty() {
                tail = Some(expr);
                continue;
            } else if matches!(
                expr,
                Expr::If(_)
                    | Expr::Loop(_)
                    | Expr::While(_)
                    | Expr::ForLoop(_)
                    | Expr::Match(_)
                    | Expr::Block(_)
                    | Expr::Unsafe(_)
            ) {
                Step::Other(syn::Stmt::Expr(expr, None))
            } else {
                return Err(input.error("expected `;`"));
            }
        };
        let tokens = consumed(&start, input);
        steps.push(match step {
            Step::Load {
                name, ty, place, ..
            } => Step::Load {
                name,
                ty,
                place,
                tokens,
            },
            Step::Add { op, name, a, b, .. } => Step::Add {
                op,
                name,
                a,
                b,
                tokens,
            },
            Step::FailIf {
                a,
                cmp,
                b,
                fail,
                value,
                ..
            } => Step::FailIf {
                a,
                cmp,
                b,
                fail,
                value,
                tokens,
            },
            Step::Store {
                kind, place, value, ..
            } => Step::Store {
                kind,
                place,
                value,
                tokens,
            },
            Step::Memcpy {
                kw, dst, src, len, ..
            } => Step::Memcpy {
                kw,
                dst,
                src,
                len,
                tokens,
            },
            Step::Commit {
                commit,
                kind,
                place,
                value,
                ..
            } => Step::Commit {
                commit,
                kind,
                place,
                value,
                tokens,
            },
            other => other,
        });
    }
    Ok((steps, tail))
}

/// `let name [: Ty] = load(…)`: anything else after `let` is left to validation as a
/// statement.
fn is_load(input: ParseStream) -> bool {
    let fork = input.fork();
    let ok = (|| -> Result<bool> {
        fork.parse::<Token![let]>()?;
        fork.parse::<Ident>()?;
        if fork.peek(Token![:]) {
            fork.parse::<Token![:]>()?;
            fork.parse::<syn::Type>()?;
        }
        fork.parse::<Token![=]>()?;
        Ok(peek_ident(&fork, &["load", "add", "sub"]) && fork.peek2(token::Paren))
    })();
    ok.unwrap_or(false)
}

fn parse_load(input: ParseStream) -> Result<Step> {
    input.parse::<Token![let]>()?;
    let name: Ident = input.parse()?;
    let ty = if input.peek(Token![:]) {
        input.parse::<Token![:]>()?;
        Some(input.parse()?)
    } else {
        None
    };
    input.parse::<Token![=]>()?;
    let kw: Ident = input.parse()?;
    let args = split_args(input)?;
    if kw == "add" || kw == "sub" {
        if args.len() != 2 {
            return Err(Error::new(
                kw.span(),
                format!("expected two arguments: `{kw}(a, b)`"),
            ));
        }
        let a = parse_operand.parse2(args[0].clone())?;
        let b = parse_operand.parse2(args[1].clone())?;
        input
            .parse::<Token![;]>()
            .map_err(|e| Error::new(e.span(), format!("expected `;` after `{kw}(…)`")))?;
        return Ok(Step::Add {
            op: kw,
            name,
            a,
            b,
            tokens: TokenStream::new(),
        });
    }
    if args.len() != 1 {
        return Err(Error::new(
            kw.span(),
            "expected one argument: `load(place)`",
        ));
    }
    let place = parse_place(&args[0], &kw)?;
    input
        .parse::<Token![;]>()
        .map_err(|e| Error::new(e.span(), "expected `;` after `load(…)`"))?;
    Ok(Step::Load {
        name,
        ty,
        place,
        tokens: TokenStream::new(),
    })
}

fn parse_fail_if(input: ParseStream) -> Result<Step> {
    let if_token: Token![if] = input.parse()?;
    let a = parse_operand(input)?;
    let cmp = parse_cmp(input)?;
    let b = parse_operand(input)?;
    if input.peek(Token![&&]) || input.peek(Token![||]) {
        let op: TokenTree = input.parse()?;
        return Err(Error::new(
            op.span(),
            "an `if` holds one comparison, without `&&` or `||`: `if a < 5 || a > 9 { .. }` is two steps, `if a < 5 { fail(..) }` then `if a > 9 { fail(..) }`; for `if a > 5 && a < 10 { .. }` compare once against the range, `let d = sub(a, 6);` then `if d < 4 { fail(..) }`",
        ));
    }
    if !input.peek(token::Brace) {
        return Err(input.error(
            "expected `{ fail(value) }` after the comparison: an `if` compares two values (a loaded value, a parameter, an integer, `null` or `{ expression }`)",
        ));
    }
    let content;
    let brace = braced!(content in input);
    let fail: Ident = content.parse().map_err(|_| {
        Error::new(
            brace.span.join(),
            "expected `fail(..)` in the body of `if`: `if a == b { fail(value) }`",
        )
    })?;
    if fail != "fail" {
        return Err(Error::new(
            fail.span(),
            format!("expected `fail(..)`, found `{fail}`: the only thing an `if` can do is leave through `fail(value)`"),
        ));
    }
    let args;
    parenthesized!(args in content);
    let value = if args.is_empty() {
        None
    } else {
        Some(args.parse::<Expr>()?)
    };
    if !args.is_empty() {
        return Err(args.error("expected `)`: `fail` takes one value"));
    }
    if content.peek(Token![;]) {
        content.parse::<Token![;]>()?;
    }
    if !content.is_empty() {
        return Err(
            content.error("expected `}` after `fail(..)`: nothing runs after a failure exit")
        );
    }
    if input.peek(Token![else]) {
        let else_token: Token![else] = input.parse()?;
        return Err(Error::new(
            else_token.span,
            "`else` is not allowed: a section goes on after a comparison that does not fail",
        ));
    }
    let _ = if_token;
    Ok(Step::FailIf {
        a,
        cmp,
        b,
        fail,
        value,
        tokens: TokenStream::new(),
    })
}

fn parse_cmp(input: ParseStream) -> Result<Cmp> {
    let op = if input.peek(Token![==]) {
        input.parse::<Token![==]>()?;
        Cond::Eq
    } else if input.peek(Token![!=]) {
        input.parse::<Token![!=]>()?;
        Cond::Ne
    } else if input.peek(Token![<=]) {
        input.parse::<Token![<=]>()?;
        Cond::Le
    } else if input.peek(Token![>=]) {
        input.parse::<Token![>=]>()?;
        Cond::Ge
    } else if input.peek(Token![<]) {
        input.parse::<Token![<]>()?;
        Cond::Lt
    } else if input.peek(Token![>]) {
        input.parse::<Token![>]>()?;
        Cond::Gt
    } else {
        return Err(
            input.error("expected a comparison: `==`, `!=`, `<`, `<=`, `>` or `>=` (unsigned)")
        );
    };
    Ok(Cmp { op })
}

fn parse_memcpy(input: ParseStream) -> Result<Step> {
    let kw: Ident = input.parse()?;
    let args = split_args(input)?;
    if args.len() != 3 {
        return Err(Error::new(
            kw.span(),
            "expected three arguments: `memcpy(dst, src, len)`",
        ));
    }
    let dst = parse_operand.parse2(args[0].clone())?;
    let src = parse_operand.parse2(args[1].clone())?;
    let len = parse_operand.parse2(args[2].clone())?;
    input.parse::<Token![;]>()?;
    Ok(Step::Memcpy {
        kw,
        dst,
        src,
        len,
        tokens: TokenStream::new(),
    })
}

fn parse_commit(input: ParseStream) -> Result<Step> {
    let commit: Ident = input.parse()?;
    input.parse::<Token![::]>()?;
    let kind: Ident = input.parse().map_err(|e| {
        Error::new(e.span(), "expected the commit's operation: `commit::store(..)`, `commit::store_release(..)` or `commit::add(..)`")
    })?;
    let (place, value) = parse_place_and_value(input, &kind)?;
    input
        .parse::<Token![;]>()
        .map_err(|e| Error::new(e.span(), "expected `;` after the commit"))?;
    Ok(Step::Commit {
        commit,
        kind,
        place,
        value,
        tokens: TokenStream::new(),
    })
}

fn parse_place_and_value(input: ParseStream, kw: &Ident) -> Result<(Place, Operand)> {
    let args = split_args(input)?;
    if args.len() != 2 {
        return Err(Error::new(
            kw.span(),
            format!("expected two arguments: `{kw}(place, value)`"),
        ));
    }
    Ok((
        parse_place(&args[0], kw)?,
        parse_operand.parse2(args[1].clone())?,
    ))
}

/// The parenthesised arguments of a step, split at top-level commas, as raw tokens.
fn split_args(input: ParseStream) -> Result<Vec<TokenStream>> {
    let content;
    let parens = parenthesized!(content in input);
    let mut args = vec![TokenStream::new()];
    while !content.is_empty() {
        let tt: TokenTree = content.parse()?;
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => args.push(TokenStream::new()),
            _ => args.last_mut().unwrap().extend([tt]),
        }
    }
    if args.last().is_some_and(|a| a.is_empty()) {
        args.pop();
    }
    let _ = parens;
    Ok(args)
}

fn parse_operand(input: ParseStream) -> Result<Operand> {
    if input.peek(token::Brace) {
        return Ok(Operand::Expr(input.parse()?));
    }
    if input.peek(LitInt) {
        return Ok(Operand::Int(input.parse()?));
    }
    if (input.peek(Ident) && input.peek2(Token![::])) || input.peek(Token![Self]) {
        // A path (`Self::CAP`, `limits::MAX`) names a constant: its value is taken before the
        // section starts, like `{ expression }`.
        let path: syn::Path = input.parse()?;
        return Ok(constant(&path));
    }
    if input.peek(Ident) {
        let ident: Ident = input.parse()?;
        return Ok(if ident == "null" {
            Operand::Null(ident)
        } else {
            Operand::Name(ident)
        });
    }
    Err(input.error(
        "expected a value: a loaded value or parameter name, an integer, `null`, or `{ expression }`",
    ))
}

/// A constant's value, as the operand `{ path }`.
fn constant(path: &impl quote::ToTokens) -> Operand {
    let span = path.to_token_stream().into_iter().next().map(|t| t.span());
    let span = span.unwrap_or_else(proc_macro2::Span::call_site);
    Operand::Expr(syn::parse_quote_spanned!(span=> { #path }))
}

/// The section's parameters that are plain names (`name: Type`), with their types; a receiver
/// or a pattern is no name a step can use (validation reports those).
pub(crate) fn named_parameters(
    sig: &syn::Signature,
) -> impl Iterator<Item = (&syn::Ident, &syn::Type)> {
    sig.inputs.iter().filter_map(|input| match input {
        syn::FnArg::Typed(t) => match &*t.pat {
            syn::Pat::Ident(p) => Some((&p.ident, &*t.ty)),
            _ => None,
        },
        syn::FnArg::Receiver(_) => None,
    })
}

/// Names of the section's parameters.
fn parameter_names(sig: &syn::Signature) -> HashSet<String> {
    named_parameters(sig)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// A name written like a constant (`BUF_CAP`, `Limit`) that is neither a parameter nor a loaded
/// value names a constant in scope, as a path does: it becomes `{ NAME }`, evaluated before the
/// section. Other unknown names are left for validation to report.
fn names_of_constants(steps: &mut [Step], sig: &syn::Signature) {
    let mut known = parameter_names(sig);
    for step in steps.iter() {
        if let Step::Load { name, .. } | Step::Add { name, .. } = step {
            known.insert(name.to_string());
        }
    }
    let lower = |op: &mut Operand| {
        if let Operand::Name(ident) = op {
            let text = ident.to_string();
            if !known.contains(&text) && text.starts_with(|c: char| c.is_ascii_uppercase()) {
                *op = constant(ident);
            }
        }
    };
    for step in steps.iter_mut() {
        let offset = |place: &mut Place| {
            if let PlaceBase::Deref {
                offset: Some(o), ..
            } = &mut place.base
            {
                lower(o);
            }
        };
        match step {
            Step::Add { a, b, .. } | Step::FailIf { a, b, .. } => {
                lower(a);
                lower(b);
            }
            Step::Store { place, value, .. } | Step::Commit { place, value, .. } => {
                offset(place);
                lower(value);
            }
            Step::Load { place, .. } => offset(place),
            Step::Memcpy { dst, src, len, .. } => {
                lower(dst);
                lower(src);
                lower(len);
            }
            Step::Other(_) => {}
        }
    }
}

fn parse_place(tokens: &TokenStream, kw: &Ident) -> Result<Place> {
    let parser = |input: ParseStream| -> Result<Place> {
        let base = if input.peek(Token![*]) {
            input.parse::<Token![*]>()?;
            if input.peek(token::Paren) {
                let content;
                parenthesized!(content in input);
                let ptr: Ident = content.parse()?;
                content.parse::<Token![+]>().map_err(|e| {
                    Error::new(
                        e.span(),
                        "expected `+`: a place through a pointer is `*ptr` or `*(ptr + offset)`",
                    )
                })?;
                let offset = parse_operand(&content)?;
                if !content.is_empty() {
                    return Err(content.error("expected `)` after the offset"));
                }
                PlaceBase::Deref {
                    ptr,
                    offset: Some(offset),
                }
            } else {
                PlaceBase::Deref {
                    ptr: input.parse()?,
                    offset: None,
                }
            }
        } else if input.peek(token::Paren) {
            let content;
            parenthesized!(content in input);
            content.parse::<Token![*]>().map_err(|e| {
                Error::new(
                    e.span(),
                    "expected `*`: a field through a pointer is written `(*ptr).field`",
                )
            })?;
            let ptr: Ident = content.parse()?;
            if !content.is_empty() {
                return Err(content.error("expected `)` after the pointer"));
            }
            if !input.peek(Token![.]) {
                return Err(input.error(
                    "expected `.field` after `(*ptr)`; for the pointee itself write `*ptr`",
                ));
            }
            PlaceBase::Field { ptr }
        } else if input.peek(Token![self]) {
            let receiver: Token![self] = input.parse()?;
            return Err(Error::new(
                receiver.span,
                "places cannot go through `self`: the macro needs each `PerCpu`'s type, which it cannot read from a field; write the section as a function of `hits: &PerCpu<T>` and call it from the method with `&self.hits`",
            ));
        } else {
            let percpu: Ident = input.parse().map_err(|e| {
                Error::new(
                    e.span(),
                    "expected a place: `percpu[cpu]`, `percpu[cpu].field`, `*ptr`, `*(ptr + offset)` or `(*ptr).field`",
                )
            })?;
            if !input.peek(token::Bracket) {
                return Err(Error::new(
                    percpu.span(),
                    format!("expected `{percpu}[cpu]`: a bare name is a value, not a place; write `*{percpu}` to go through a pointer"),
                ));
            }
            let content;
            syn::bracketed!(content in input);
            let index: Ident = content.parse()?;
            PlaceBase::Slot { percpu, index }
        };
        let mut fields = Vec::new();
        while input.peek(Token![.]) {
            input.parse::<Token![.]>()?;
            fields.push(input.parse::<Ident>()?);
        }
        let element = if input.peek(token::Bracket) {
            let content;
            syn::bracketed!(content in input);
            let index = content.parse::<Ident>().map_err(|e| {
                Error::new(
                    e.span(),
                    "an element index is a loaded value or a parameter: `items[i]`",
                )
            })?;
            if !content.is_empty() {
                return Err(content.error(format!(
                    "an element index is one loaded value or parameter: compute it in a step first, `let j = sub({index}, 1);` or `let j = add({index}, 1);`, then index with `[j]`"
                )));
            }
            Some(index)
        } else {
            None
        };
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the place"));
        }
        Ok(Place {
            base,
            fields,
            element,
            tokens: tokens.clone(),
        })
    };
    if tokens.is_empty() {
        return Err(Error::new(
            kw.span(),
            format!("expected a place inside `{kw}(…)`"),
        ));
    }
    parser.parse2(tokens.clone())
}

//! The syntax tree of a critical section. Every node keeps the tokens it came from, so later
//! stages can point errors at them.

use proc_macro2::{Span, TokenStream};
use syn::{Expr, Ident, LitInt, Signature, Type, Visibility};

/// A whole `#[critical_section]` function.
#[derive(Clone)]
pub struct Section {
    pub attrs: Vec<syn::Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    /// `key = value` pairs of the attribute, as written.
    pub options: Vec<OptionArg>,
    pub steps: Vec<Step>,
    /// The success value (the body's final expression), if any.
    pub tail: Option<Expr>,
    /// The span of the body's closing brace (for "missing commit" errors).
    pub body_span: Span,
}

/// One `key = value` of the attribute.
#[derive(Clone)]
pub struct OptionArg {
    pub key: Ident,
    pub value: Expr,
}

impl OptionArg {
    /// The name a `retrying = name` option gives its twin: one identifier, nothing else.
    pub fn twin_name(&self) -> Option<Ident> {
        match &self.value {
            Expr::Path(p) if p.qself.is_none() => p.path.get_ident().cloned(),
            _ => None,
        }
    }
}

/// The steps, in order.
#[derive(Clone)]
pub enum Step {
    /// `let name[: Ty] = load(place);`
    Load {
        name: Ident,
        ty: Option<Type>,
        place: Place,
        tokens: TokenStream,
    },
    /// `let name = add(a, b);`: a word sum computed in a register (wrapping); `sub(a, b)` is
    /// the same with `b` negated before the section (`op` is the keyword written).
    Add {
        op: Ident,
        name: Ident,
        a: Operand,
        b: Operand,
        tokens: TokenStream,
    },
    /// `if a <op> b { fail([value]) }`
    FailIf {
        a: Operand,
        cmp: Cmp,
        b: Operand,
        fail: Ident,
        value: Option<Expr>,
        tokens: TokenStream,
    },
    /// `store(place, value);`, or a release-store / add written outside the commit.
    Store {
        kind: Ident,
        place: Place,
        value: Operand,
        tokens: TokenStream,
    },
    /// `memcpy(dst, src, len);`
    Memcpy {
        kw: Ident,
        dst: Operand,
        src: Operand,
        len: Operand,
        tokens: TokenStream,
    },
    /// `commit::<kind>(place, value);` (`sub` adds the negated value).
    Commit {
        commit: Ident,
        kind: Ident,
        place: Place,
        value: Operand,
        tokens: TokenStream,
    },
    /// Anything else: rejected by validation with a message for its kind.
    Other(syn::Stmt),
}

impl Step {
    pub fn tokens(&self) -> TokenStream {
        match self {
            Step::Load { tokens, .. }
            | Step::Add { tokens, .. }
            | Step::FailIf { tokens, .. }
            | Step::Store { tokens, .. }
            | Step::Memcpy { tokens, .. }
            | Step::Commit { tokens, .. } => tokens.clone(),
            Step::Other(stmt) => quote::ToTokens::to_token_stream(stmt),
        }
    }
}

/// A comparison operator, with its tokens.
#[derive(Clone)]
pub struct Cmp {
    /// Unsigned, as the instruction templates compare.
    pub op: rseq_arch::template::Cond,
}

/// A word value.
#[derive(Clone)]
pub enum Operand {
    /// A loaded value or a parameter.
    Name(Ident),
    /// An integer literal.
    Int(LitInt),
    /// `null` (0).
    Null(Ident),
    /// `{ expr }`: evaluated once, before the section.
    Expr(syn::ExprBlock),
}

impl quote::ToTokens for Operand {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Operand::Name(i) | Operand::Null(i) => i.to_tokens(tokens),
            Operand::Int(l) => l.to_tokens(tokens),
            Operand::Expr(e) => e.to_tokens(tokens),
        }
    }
}

/// A memory location holding one word.
#[derive(Clone)]
pub struct Place {
    pub base: PlaceBase,
    /// `.field.field…` after the base.
    pub fields: Vec<Ident>,
    /// `[value]` at the end: an element of a word array, indexed by a loaded value or parameter.
    pub element: Option<Ident>,
    pub tokens: TokenStream,
}

#[derive(Clone)]
pub enum PlaceBase {
    /// `percpu[cpu]`: the current CPU's slot of a `&PerCpu<T>` parameter.
    Slot { percpu: Ident, index: Ident },
    /// `*ptr` or `*(ptr + offset)`.
    Deref { ptr: Ident, offset: Option<Operand> },
    /// `(*ptr).field…`: a field through a pointer whose type is known.
    Field { ptr: Ident },
}

/// Stable numbering of `{ expr }` operands across the asm and the fallback.
pub fn expr_operands(section: &Section) -> Vec<syn::ExprBlock> {
    let mut out = Vec::new();
    let mut push = |op: &Operand| {
        if let Operand::Expr(e) = op {
            out.push(e.clone());
        }
    };
    for step in &section.steps {
        match step {
            Step::FailIf { a, b, .. } | Step::Add { a, b, .. } => {
                push(a);
                push(b);
            }
            Step::Store { place, value, .. } | Step::Commit { place, value, .. } => {
                if let PlaceBase::Deref {
                    offset: Some(o), ..
                } = &place.base
                {
                    push(o);
                }
                push(value);
            }
            Step::Load { place, .. } => {
                if let PlaceBase::Deref {
                    offset: Some(o), ..
                } = &place.base
                {
                    push(o);
                }
            }
            Step::Memcpy { dst, src, len, .. } => {
                push(dst);
                push(src);
                push(len);
            }
            Step::Other(_) => {}
        }
    }
    out
}

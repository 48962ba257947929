//! Every rule of a correct critical section, one function each. Each rule has a UI test in
//! `ui-tests/tests/ui/`. Independent errors are combined and reported together.

use crate::ast::*;
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use std::collections::HashMap;
use syn::{Error, Expr, FnArg, GenericArgument, Ident, Pat, PathArguments, Result, Type};

/// How the section picks its per-CPU slot.
#[derive(Clone, Default)]
pub enum IndexMode {
    #[default]
    CpuId,
    MmCid,
    /// The caller passes the CPU (a parameter); the section checks it is still current.
    Given(Ident),
}

/// What a parameter can be used as.
#[derive(Clone)]
pub enum ParamKind {
    /// `&PerCpu<T>`: places `p[cpu]…`; `T` is kept for `offset_of!` and stride.
    PerCpu(Type),
    /// `*mut T` / `*const T`: `*p`, `(*p).field`.
    Ptr(Type),
    /// Anything else: a value (cast to a word).
    Other,
}

/// What validation learned, for expansion.
/// Loaded values: name → (position of the step, declared type).
pub type Values = HashMap<String, (usize, Option<Type>)>;

pub struct Checked {
    /// The path generated code reaches the runtime through (`crate = path`; `::rseq` by default).
    pub krate: TokenStream,
    /// Names bound by statements or parameters that were already rejected: accepted silently
    /// so one mistake gives one error.
    pub rejected_names: std::collections::HashSet<String>,
    pub index: IndexMode,
    pub moved: Option<Expr>,
    pub aborts: Option<Expr>,
    /// `fallback = path`: the function run instead of the slot-locked body.
    pub fallback: Option<Expr>,
    /// `on_abort = value`: returned at once when the first attempt aborts (no retry, no
    /// registration, no fallback: the caller runs a section that has them).
    pub on_abort: Option<Expr>,
    /// `retrying = name` (with `on_abort`): also generate `name`, the same section without
    /// `on_abort`.
    pub retrying: Option<Ident>,
    pub params: HashMap<String, ParamKind>,
    /// Loaded values: name → (position of the load step, declared type).
    pub values: Values,
}

impl Checked {
    pub fn is_value(&self, name: &Ident) -> bool {
        self.values.contains_key(&name.to_string())
    }
}

/// Collects independent errors.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn check(&mut self, r: Result<()>) {
        if let Err(e) = r {
            self.push(e)
        }
    }
    fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

pub fn validate(section: &Section) -> Result<Checked> {
    let mut errors = Errors::default();
    errors.check(signature_is_plain(section));
    let params = parameters(section);
    let Options {
        index,
        moved,
        aborts,
        fallback,
        on_abort,
        retrying,
    } = match options(section, &params) {
        Ok(o) => o,
        Err(e) => {
            errors.push(e);
            Options::default()
        }
    };
    for step in &section.steps {
        errors.check(step_is_known(step));
        errors.check(store_is_plain(step));
        errors.check(commit_kind_is_known(step));
    }
    errors.check(exactly_one_commit_at_the_end(section));
    let (values, loaded) = values_are_loaded_once(section, &params);
    errors.check(loaded);
    let checked = Checked {
        krate: krate(section),
        rejected_names: rejected_names(section),
        index,
        moved,
        aborts,
        fallback,
        on_abort,
        retrying,
        params,
        values,
    };
    for (position, step) in section.steps.iter().enumerate() {
        errors.check(operands_are_known(step, position, &checked));
        errors.check(places_are_valid(step, position, &checked));
    }
    errors.check(a_cpu_parameter_is_the_index(section, &checked));
    errors.check(subtrahends_are_not_loaded(section, &checked));
    errors.check(expressions_use_no_loaded_values(section, &checked));
    errors.check(results_run_no_steps(section, &checked));
    errors.check(raw_pointers_need_unsafe_fn(section, &checked));
    errors.check(results_match_the_return_type(section));
    errors.check(exprs_do_not_escape(section, &checked));
    errors.check(fail_values_use_earlier_loads(section, &checked));
    errors.finish()?;
    Ok(checked)
}

/// Generic, async, const, extern, variadic functions and methods are not supported.
fn signature_is_plain(section: &Section) -> Result<()> {
    let sig = &section.sig;
    let mut errors = Errors::default();
    if let Some(t) = &sig.asyncness {
        errors.push(Error::new_spanned(
            t,
            "critical sections cannot be `async`: a section runs to its commit without suspending",
        ));
    }
    if let Some(t) = &sig.constness {
        errors.push(Error::new_spanned(
            t,
            "critical sections cannot be `const fn`: they read the running CPU",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(Error::new_spanned(
            &sig.generics,
            "generic critical sections are not supported: the stride and field offsets must be constants of the asm; write one section per type, or put it in a generic `impl` and use the impl's parameters",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(Error::new_spanned(
            abi,
            "critical sections use the Rust ABI; wrap them in an `extern` function if needed",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(Error::new_spanned(
            v,
            "critical sections cannot be variadic",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(Error::new_spanned(
                r,
                "methods are not supported: the macro needs each `PerCpu`'s type, which it cannot read from `self`'s fields; write the section as a function of `hits: &PerCpu<T>` (or a pointer) and call it from the method with `&self.hits`",
            )),
            FnArg::Typed(t) => {
                if !matches!(&*t.pat, Pat::Ident(_)) {
                    errors.push(Error::new_spanned(&t.pat, "parameters of a critical section must be plain names"));
                }
            }
        }
    }
    errors.finish()
}

fn parameters(section: &Section) -> HashMap<String, ParamKind> {
    crate::parse::named_parameters(&section.sig)
        .map(|(name, ty)| (name.to_string(), param_kind(ty)))
        .collect()
}

fn param_kind(ty: &Type) -> ParamKind {
    match ty {
        Type::Reference(r) => {
            if let Type::Path(p) = &*r.elem {
                if let Some(last) = p.path.segments.last() {
                    if last.ident == "PerCpu" {
                        if let PathArguments::AngleBracketed(args) = &last.arguments {
                            if let Some(GenericArgument::Type(t)) = args.args.first() {
                                return ParamKind::PerCpu(t.clone());
                            }
                        }
                    }
                }
            }
            ParamKind::Other
        }
        Type::Ptr(p) => ParamKind::Ptr((*p.elem).clone()),
        Type::Paren(p) => param_kind(&p.elem),
        _ => ParamKind::Other,
    }
}

/// The options of the attribute, as [`Checked`] keeps them.
#[derive(Default)]
struct Options {
    index: IndexMode,
    moved: Option<Expr>,
    aborts: Option<Expr>,
    fallback: Option<Expr>,
    on_abort: Option<Expr>,
    retrying: Option<Ident>,
}

/// `index = cpu_id | mm_cid | given(param)`, `moved = expr` (with `given` only),
/// `aborts = static`, `fallback = path`, `on_abort = expr` (not with `fallback`), `retrying =
/// name` (with `on_abort`); no key twice, no other key.
fn options(section: &Section, params: &HashMap<String, ParamKind>) -> Result<Options> {
    let mut errors = Errors::default();
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    let (mut index, mut index_tokens, mut moved, mut aborts) = (IndexMode::CpuId, None, None, None);
    let (mut fallback, mut on_abort, mut retrying) = (None, None, None);
    let mut index_failed = false;
    for opt in &section.options {
        let key = opt.key.to_string();
        if seen.insert(key.clone(), &opt.key).is_some() {
            errors.push(Error::new_spanned(
                &opt.key,
                format!("duplicate option `{key}`"),
            ));
            continue;
        }
        match key.as_str() {
            "index" => {
                index_tokens = Some(opt.value.to_token_stream());
                match index_mode(&opt.value, params) {
                    Ok(m) => index = m,
                    Err(e) => {
                        index_failed = true;
                        errors.push(e)
                    }
                }
            }
            "moved" => moved = Some(opt.value.clone()),
            "crate" => {
                if !matches!(&opt.value, Expr::Path(_)) {
                    errors.push(Error::new_spanned(
                        &opt.value,
                        "expected a path to the rseq crate, such as `crate = ::rseq`",
                    ));
                }
            }
            "aborts" => aborts = Some(opt.value.clone()),
            "fallback" => {
                if matches!(&opt.value, Expr::Path(_)) {
                    fallback = Some(opt.value.clone());
                } else {
                    errors.push(Error::new_spanned(
                        &opt.value,
                        "expected a path to a function with the section's parameters and result, such as `fallback = add_with_atomics`",
                    ));
                }
            }
            "on_abort" => on_abort = Some(opt.value.clone()),
            "retrying" => match opt.twin_name() {
                Some(name) => retrying = Some(name),
                None => errors.push(Error::new_spanned(
                    &opt.value,
                    "expected the name of the function to generate, such as `retrying = pop_any`",
                )),
            },
            _ => errors.push(Error::new_spanned(
                &opt.key,
                format!("unknown option `{key}`; expected `index`, `moved`, `aborts`, `fallback`, `on_abort`, `retrying` or `crate`"),
            )),
        }
    }
    match (&index, &moved) {
        _ if index_failed => {}
        (IndexMode::Given(_), None) => errors.push(Error::new_spanned(
            index_tokens.unwrap(),
            "`index = given(..)` needs `moved = value`: the value returned when the caller's CPU is no longer the current one",
        )),
        (IndexMode::CpuId | IndexMode::MmCid, Some(m)) => errors.push(Error::new_spanned(
            m,
            "`moved` only applies with `index = given(cpu)`: with `cpu_id` or `mm_cid` the section reads the index itself",
        )),
        _ => {}
    }
    if let (Some(_), Some(value)) = (&fallback, &on_abort) {
        errors.push(Error::new_spanned(
            value,
            "`on_abort` and `fallback` exclude each other: with `on_abort` the section never falls back itself (the caller does, through a section without `on_abort`)",
        ));
    }
    if let (Some(name), None) = (&retrying, &on_abort) {
        errors.push(Error::new_spanned(
            name,
            "`retrying = name` generates the retrying twin of a section that returns on abort: add `on_abort = value`",
        ));
    }
    errors.finish()?;
    Ok(Options {
        index,
        moved,
        aborts,
        fallback,
        on_abort,
        retrying,
    })
}

fn index_mode(value: &Expr, params: &HashMap<String, ParamKind>) -> Result<IndexMode> {
    let unknown = || {
        Error::new_spanned(
            value,
            "unknown index; expected `cpu_id`, `mm_cid` or `given(parameter)`",
        )
    };
    match value {
        Expr::Path(p) if p.path.is_ident("cpu_id") => Ok(IndexMode::CpuId),
        Expr::Path(p) if p.path.is_ident("mm_cid") => Ok(IndexMode::MmCid),
        Expr::Call(call) => {
            match (&*call.func, call.args.first()) {
                (Expr::Path(f), Some(Expr::Path(arg)))
                    if f.path.is_ident("given") && call.args.len() == 1 =>
                {
                    let ident = arg.path.get_ident().ok_or_else(unknown)?;
                    match params.get(&ident.to_string()) {
                    Some(ParamKind::Other) => Ok(IndexMode::Given(ident.clone())),
                    _ => Err(Error::new_spanned(ident, format!("`given({ident})` needs a parameter `{ident}: usize` holding the CPU"))),
                }
                }
                _ => Err(unknown()),
            }
        }
        _ => Err(unknown()),
    }
}

/// Statements other than steps, each with the reason it cannot be in a section.
fn step_is_known(step: &Step) -> Result<()> {
    let Step::Other(stmt) = step else {
        return Ok(());
    };
    const STEPS: &str = "expected one of `let name = load(place);`, `let name = add(a, b);`, `let name = sub(a, b);`, `store(place, value);`, `memcpy(dst, src, len);`, `if a == b { fail(value) }`, `commit::store|store_release|add|sub(place, value);`";
    let msg = match stmt {
        syn::Stmt::Local(local) => match local.init.as_ref().map(|init| &*init.expr) {
            Some(Expr::Call(call)) if matches!(&*call.func, Expr::Path(p) if p.path.get_ident().is_some()) => {
                let Expr::Path(p) = &*call.func else { unreachable!() };
                let name = p.path.get_ident().unwrap();
                return Err(Error::new_spanned(
                    name,
                    format!("unknown step `{name}`: a `let` in a critical section must load, add or subtract: `let name = load(place);`, `let name = add(a, b);` or `let name = sub(a, b);`"),
                ));
            }
            _ => "a `let` in a critical section must load, add or subtract: `let name = load(place);`, `let name = add(a, b);` or `let name = sub(a, b);`".to_string(),
        },
        syn::Stmt::Macro(m) => format!(
            "macros cannot run inside a critical section (`{}!`): the kernel may restart it at any instruction",
            m.mac.path.to_token_stream()
        ),
        syn::Stmt::Item(_) => "items cannot be declared inside a critical section".into(),
        syn::Stmt::Expr(expr, _) => match expr {
            Expr::Call(call) => match &*call.func {
                Expr::Path(p) if p.path.get_ident().is_some() => format!(
                    "unknown step `{}`; {STEPS}",
                    p.path.get_ident().unwrap()
                ),
                _ => "function calls cannot run inside a critical section: the kernel may restart it at any instruction; compute the value before and pass it as `{ expression }`".into(),
            },
            Expr::MethodCall(_) => "method calls cannot run inside a critical section: the kernel may restart it at any instruction; compute the value before and pass it as `{ expression }`".into(),
            Expr::Loop(_) | Expr::While(_) | Expr::ForLoop(_) => {
                "loops are not allowed in a critical section: it must be short and straight; use `memcpy` to copy, and let the caller retry".into()
            }
            Expr::Return(_) => "`return` is not allowed in a critical section: the final expression is the value on commit, `fail(value)` the value on failure".into(),
            Expr::Try(_) => "`?` is not allowed in a critical section: leave through `if … { fail(value) }`".into(),
            Expr::Await(_) => "`.await` is not allowed in a critical section: it cannot suspend".into(),
            Expr::Macro(m) => format!(
                "macros cannot run inside a critical section (`{}!`): the kernel may restart it at any instruction",
                m.mac.path.to_token_stream()
            ),
            Expr::Assign(_) => "assignments are not steps: write `store(place, value);` or `commit::store(place, value);`".into(),
            Expr::Unsafe(_) | Expr::Block(_) => "blocks are not steps: the body of a section is a flat list of steps".into(),
            _ => format!("unsupported statement; {STEPS}"),
        },
    };
    Err(Error::new_spanned(stmt, msg))
}

/// `store_release` and `add` are only valid as the commit.
fn store_is_plain(step: &Step) -> Result<()> {
    match step {
        Step::Store { kind, .. } if kind != "store" => Err(Error::new_spanned(
            kind,
            format!("`{kind}` is only valid as the commit: write `commit::{kind}(place, value);` as the last step"),
        )),
        _ => Ok(()),
    }
}

fn commit_kind_is_known(step: &Step) -> Result<()> {
    match step {
        Step::Commit { kind, .. }
            if !["store", "store_release", "add", "sub"]
                .iter()
                .any(|k| kind == k) =>
        {
            Err(Error::new_spanned(
                kind,
                format!(
                    "unknown commit `{kind}`; expected `store`, `store_release`, `add` or `sub`"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Exactly one commit, and it is the last step.
fn exactly_one_commit_at_the_end(section: &Section) -> Result<()> {
    let commits: Vec<usize> = section
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, Step::Commit { .. }))
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = commits.first() else {
        return Err(Error::new(
            section.body_span,
            "expected a `commit` step before the end of the body: a critical section ends with `commit::store(..)`, `commit::store_release(..)`, `commit::add(..)` or `commit::sub(..)`",
        ));
    };
    if let Some(&second) = commits.get(1) {
        let Step::Commit { commit, .. } = &section.steps[second] else {
            unreachable!()
        };
        return Err(Error::new_spanned(
            commit,
            "a critical section has exactly one commit; this is a second one",
        ));
    }
    if let Some(after) = section.steps.get(first + 1) {
        let what = match after {
            Step::Load { .. } => "`load`",
            Step::Add { .. } => "`add`/`sub`",
            Step::FailIf { .. } => "`if … fail`",
            Step::Store { .. } => "`store`",
            Step::Memcpy { .. } => "`memcpy`",
            _ => "a step",
        };
        return Err(Error::new_spanned(
            after.tokens(),
            format!("expected the commit as the last step, found {what} after it: nothing may follow the commit"),
        ));
    }
    Ok(())
}

/// Each name is loaded once and does not shadow a parameter. Returns the values it accepted
/// (the first load of a name wins) along with the errors, so later rules do not report the
/// same name again.
fn values_are_loaded_once(
    section: &Section,
    params: &HashMap<String, ParamKind>,
) -> (Values, Result<()>) {
    let mut errors = Errors::default();
    let mut values = HashMap::new();
    for (position, step) in section.steps.iter().enumerate() {
        let (name, ty) = match step {
            Step::Load { name, ty, .. } => (name, ty.clone()),
            Step::Add { name, .. } => (name, None),
            _ => continue,
        };
        let key = name.to_string();
        if name == "cpu" || name == "null" {
            errors.push(Error::new_spanned(
                name,
                format!("`{name}` is reserved in critical sections; choose another name"),
            ));
        } else if params.contains_key(&key) {
            errors.push(Error::new_spanned(
                name,
                format!("`{name}` is already a parameter; give the loaded value another name"),
            ));
        } else if let std::collections::hash_map::Entry::Vacant(slot) = values.entry(key) {
            slot.insert((position, ty));
        } else {
            errors.push(Error::new_spanned(
                name,
                format!("`{name}` is loaded twice; each value is loaded once (give the second one another name)"),
            ));
        }
    }
    (values, errors.finish())
}

/// The runtime's path: `crate = path`, or `::rseq`.
fn krate(section: &Section) -> TokenStream {
    section
        .options
        .iter()
        .find(|o| o.key == "crate")
        .map(|o| o.value.to_token_stream())
        .unwrap_or_else(|| quote::quote!(::rseq))
}

/// Names bound by `let` statements that are not steps, and by pattern parameters.
fn rejected_names(section: &Section) -> std::collections::HashSet<String> {
    let mut pats: Vec<&Pat> = Vec::new();
    for step in &section.steps {
        if let Step::Other(syn::Stmt::Local(local)) = step {
            pats.push(&local.pat);
        }
    }
    for input in &section.sig.inputs {
        if let FnArg::Typed(t) = input {
            if !matches!(&*t.pat, Pat::Ident(_)) {
                pats.push(&t.pat);
            }
        }
    }
    let mut found = Vec::new();
    for pat in pats {
        idents(pat.to_token_stream(), &mut found);
    }
    found.into_iter().map(|i| i.to_string()).collect()
}

fn check_name(name: &Ident, position: usize, checked: &Checked) -> Result<()> {
    let key = name.to_string();
    if checked.rejected_names.contains(&key) {
        return Ok(());
    }
    if let Some((loaded_at, _)) = checked.values.get(&key) {
        if *loaded_at >= position {
            return Err(Error::new_spanned(
                name,
                format!("`{name}` is used before it is loaded; move its `load` above this step"),
            ));
        }
        return Ok(());
    }
    if checked.params.contains_key(&key) {
        return Ok(());
    }
    if name == "cpu" {
        return Err(Error::new_spanned(
            name,
            "`cpu` is only an index (`percpu[cpu]`); to compare with a CPU the caller computed, use `index = given(cpu)`",
        ));
    }
    Err(Error::new_spanned(
        name,
        format!("`{name}` is neither a loaded value nor a parameter; a constant or any other Rust expression is written in braces, `{{ {name} }}`, and evaluated before the section"),
    ))
}

fn check_operand(op: &Operand, position: usize, checked: &Checked) -> Result<()> {
    match op {
        Operand::Name(name) => {
            check_name(name, position, checked)?;
            if let Some(ParamKind::PerCpu(_)) = checked.params.get(&name.to_string()) {
                return Err(Error::new_spanned(
                    name,
                    format!(
                        "`{name}` is per-CPU storage, not a word; use `{name}[cpu]` as a place"
                    ),
                ));
            }
            Ok(())
        }
        Operand::Int(lit) => lit.base10_parse::<u64>().map(drop).map_err(|_| {
            Error::new_spanned(
                lit,
                "integers in a critical section are unsigned words (u64)",
            )
        }),
        Operand::Null(_) | Operand::Expr(_) => Ok(()),
    }
}

/// Every value operand names a loaded value (loaded earlier) or a parameter.
fn operands_are_known(step: &Step, position: usize, checked: &Checked) -> Result<()> {
    let mut errors = Errors::default();
    match step {
        Step::FailIf { a, b, .. } | Step::Add { a, b, .. } => {
            errors.check(check_operand(a, position, checked));
            errors.check(check_operand(b, position, checked));
        }
        Step::Store { value, .. } | Step::Commit { value, .. } => {
            errors.check(check_operand(value, position, checked))
        }
        Step::Memcpy { dst, src, len, .. } => {
            for op in [dst, src, len] {
                errors.check(check_operand(op, position, checked));
            }
        }
        _ => {}
    }
    errors.finish()
}

/// `p[cpu]` needs a `&PerCpu<T>` parameter and the index `cpu`; `*p` and `(*p).f` need a
/// pointer (a parameter or a loaded value; `(*p).f` a known pointee type); `[i]` a value.
fn places_are_valid(step: &Step, position: usize, checked: &Checked) -> Result<()> {
    let place = match step {
        Step::Load { place, .. } | Step::Store { place, .. } | Step::Commit { place, .. } => place,
        _ => return Ok(()),
    };
    let mut errors = Errors::default();
    match &place.base {
        PlaceBase::Slot { percpu, index } => {
            match checked.params.get(&percpu.to_string()) {
                Some(ParamKind::PerCpu(_)) => {}
                _ => errors.push(Error::new_spanned(
                    percpu,
                    format!("`{percpu}` is not a `&PerCpu<T>` parameter; only per-CPU storage is indexed by `[cpu]`"),
                )),
            }
            if index != "cpu" {
                errors.push(Error::new_spanned(index, format!("per-CPU slots are indexed by `cpu` (the section's own index), not `{index}`")));
            }
        }
        PlaceBase::Deref { ptr, offset } => {
            errors.check(pointer_name(ptr, position, checked));
            if let Some(offset) = offset {
                errors.check(check_operand(offset, position, checked));
                if matches!(offset, Operand::Name(_) | Operand::Expr(_)) && place.element.is_some()
                {
                    errors.push(Error::new_spanned(
                        &place.tokens,
                        "a place cannot have both a register offset and an element index",
                    ));
                }
            }
        }
        PlaceBase::Field { ptr } => {
            errors.check(pointer_name(ptr, position, checked));
            if errors.0.is_none() && pointee(ptr, checked).is_none() {
                errors.push(Error::new_spanned(
                    ptr,
                    format!("the type `{ptr}` points to is unknown: load it with a type, `let {ptr}: *mut Node = load(..);`, so `(*{ptr}).field` has an offset"),
                ));
            }
        }
    }
    if let Some(element) = &place.element {
        errors.check(check_name(element, position, checked));
    }
    errors.finish()
}

fn pointer_name(ptr: &Ident, position: usize, checked: &Checked) -> Result<()> {
    check_name(ptr, position, checked)?;
    if let Some(ParamKind::PerCpu(_)) = checked.params.get(&ptr.to_string()) {
        return Err(Error::new_spanned(
            ptr,
            format!("`{ptr}` is per-CPU storage; its current slot is `{ptr}[cpu]`"),
        ));
    }
    Ok(())
}

/// The pointee type of a pointer value or parameter, when known.
pub fn pointee(ptr: &Ident, checked: &Checked) -> Option<Type> {
    let key = ptr.to_string();
    if let Some((_, ty)) = checked.values.get(&key) {
        return match ty {
            Some(Type::Ptr(p)) => Some((*p.elem).clone()),
            _ => None,
        };
    }
    match checked.params.get(&key) {
        Some(ParamKind::Ptr(t)) => Some(t.clone()),
        _ => None,
    }
}

/// A parameter named `cpu` looks like the index but is not one unless the section says
/// `index = given(cpu)`: `p[cpu]` always means the section's own index.
fn a_cpu_parameter_is_the_index(section: &Section, checked: &Checked) -> Result<()> {
    if matches!(&checked.index, IndexMode::Given(p) if p == "cpu") {
        return Ok(());
    }
    for input in &section.sig.inputs {
        if let FnArg::Typed(t) = input {
            if let Pat::Ident(p) = &*t.pat {
                if p.ident == "cpu" {
                    return Err(Error::new_spanned(
                        &p.ident,
                        "a parameter named `cpu` is not the section's index: `percpu[cpu]` is the slot of the CPU the section runs on; to work on the CPU the caller chose, write `#[critical_section(index = given(cpu), moved = value)]`, else rename the parameter",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `sub(a, b)` and `commit::sub(place, b)` negate `b` before the section starts, so `b` cannot
/// be a value loaded inside it.
fn subtrahends_are_not_loaded(section: &Section, checked: &Checked) -> Result<()> {
    let mut errors = Errors::default();
    for step in &section.steps {
        let (op, b) = match step {
            Step::Add { op, b, .. } if op == "sub" => (op, b),
            Step::Commit { kind, value, .. } if kind == "sub" => (kind, value),
            _ => continue,
        };
        if let Operand::Name(name) = b {
            if checked.is_value(name) {
                errors.push(Error::new_spanned(
                    name,
                    format!("`{op}` cannot subtract the loaded value `{name}`: what it subtracts is negated before the section starts; subtract a parameter, an integer, a constant or `{{ expression }}`"),
                ));
            }
        }
    }
    errors.finish()
}

/// `{ expression }` runs before the section starts, when no value is loaded yet.
fn expressions_use_no_loaded_values(section: &Section, checked: &Checked) -> Result<()> {
    let mut errors = Errors::default();
    for expr in expr_operands(section) {
        let mut found = Vec::new();
        idents(expr.to_token_stream(), &mut found);
        for ident in found {
            if checked.is_value(&ident) {
                errors.push(Error::new_spanned(
                    &ident,
                    format!("`{ident}` is loaded inside the section, but `{{ expression }}` is evaluated before the section starts; use `{ident}` directly as a step's value, or compute with `add`/`sub`"),
                ));
            }
        }
    }
    errors.finish()
}

/// The result expressions run after the section: they can use loaded values, not steps or the
/// index.
fn results_run_no_steps(section: &Section, checked: &Checked) -> Result<()> {
    let mut exprs: Vec<&Expr> = section.tail.iter().collect();
    for step in &section.steps {
        if let Step::FailIf { value: Some(v), .. } = step {
            exprs.push(v);
        }
    }
    let mut errors = Errors::default();
    for expr in exprs {
        let tokens: Vec<TokenTree> = expr.to_token_stream().into_iter().collect();
        let mut stack = vec![tokens];
        while let Some(tokens) = stack.pop() {
            let mut skip = None;
            for (i, tt) in tokens.iter().enumerate() {
                if skip == Some(i) {
                    continue; // the arguments of a `load` already reported
                }
                match tt {
                    TokenTree::Ident(ident)
                        if ident == "load"
                            && matches!(tokens.get(i + 1), Some(TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis) =>
                    {
                        skip = Some(i + 1);
                        errors.push(Error::new_spanned(
                            ident,
                            "`load` is a step, and the result is evaluated after the section: load in a step before the commit (`let value = load(place);`) and use the value here",
                        ));
                    }
                    TokenTree::Ident(ident)
                        if ident == "cpu" && !checked.params.contains_key("cpu") =>
                    {
                        errors.push(Error::new_spanned(
                            ident,
                            "`cpu` is only a place's index (`percpu[cpu]`): the result is evaluated after the section; load what you need in a step and use the value here",
                        ));
                    }
                    TokenTree::Group(g) => stack.push(g.stream().into_iter().collect()),
                    _ => {}
                }
            }
        }
    }
    errors.finish()
}

/// Places through raw pointers, element indexing and `memcpy` dereference memory the macro
/// cannot check: they need an `unsafe fn`, whose callers promise the pointers are valid.
fn raw_pointers_need_unsafe_fn(section: &Section, _checked: &Checked) -> Result<()> {
    if section.sig.unsafety.is_some() {
        return Ok(());
    }
    let mut errors = Errors::default();
    for step in &section.steps {
        match step {
            Step::Load { place, .. } | Step::Store { place, .. } | Step::Commit { place, .. } => {
                if !matches!(place.base, PlaceBase::Slot { .. }) {
                    errors.push(Error::new_spanned(
                        &place.tokens,
                        "this place goes through a raw pointer: declare the section `unsafe fn` and document what its callers guarantee",
                    ));
                } else if place.element.is_some() {
                    errors.push(Error::new_spanned(
                        &place.tokens,
                        "indexing by a loaded value is not bounds-checked: declare the section `unsafe fn` and check the index with `if i >= CAPACITY { fail .. }`",
                    ));
                }
            }
            Step::Memcpy { kw, .. } => errors.push(Error::new_spanned(
                kw,
                "`memcpy` copies through raw pointers: declare the section `unsafe fn`",
            )),
            _ => {}
        }
    }
    errors.finish()
}

/// A function that returns a value needs a final expression (the value on commit) and a value
/// after every `fail`.
fn results_match_the_return_type(section: &Section) -> Result<()> {
    let returns_value = match &section.sig.output {
        syn::ReturnType::Default => false,
        syn::ReturnType::Type(_, ty) => !matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()),
    };
    if !returns_value {
        return Ok(());
    }
    let mut errors = Errors::default();
    if section.tail.is_none() {
        errors.push(Error::new_spanned(
            &section.sig.output,
            "this section returns a value: end the body with the expression returned on commit (after the `commit` step)",
        ));
    }
    for step in &section.steps {
        if let Step::FailIf {
            value: None, fail, ..
        } = step
        {
            errors.push(Error::new_spanned(
                fail,
                "this `fail` needs a value: the section returns one (`fail(value)`)",
            ));
        }
    }
    errors.finish()
}

fn idents(tokens: TokenStream, out: &mut Vec<Ident>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => out.push(i),
            TokenTree::Group(g) => idents(g.stream(), out),
            _ => {}
        }
    }
}

/// `return`, `?`, `.await`, `break` and `continue` in the returned expressions would jump out
/// of the generated retry loop.
fn exprs_do_not_escape(section: &Section, checked: &Checked) -> Result<()> {
    let mut exprs: Vec<&Expr> = section.tail.iter().collect();
    for step in &section.steps {
        if let Step::FailIf { value: Some(v), .. } = step {
            exprs.push(v);
        }
    }
    exprs.extend(checked.moved.iter());
    let mut errors = Errors::default();
    for expr in exprs {
        let mut found = Vec::new();
        idents(expr.to_token_stream(), &mut found);
        for ident in found {
            if ident == "return" || ident == "break" || ident == "continue" || ident == "await" {
                errors.push(Error::new_spanned(&ident, format!("`{ident}` is not allowed in a section's result: it is an expression evaluated after the section")));
            }
        }
        if let Some(q) = question_mark(expr.to_token_stream()) {
            errors.push(Error::new(q, "`?` is not allowed in a section's result: return the value (an `Option` or `Result`) as it is"));
        }
    }
    errors.finish()
}

fn question_mark(tokens: TokenStream) -> Option<Span> {
    for tt in tokens {
        match tt {
            TokenTree::Punct(p) if p.as_char() == '?' => return Some(p.span()),
            TokenTree::Group(g) => {
                if let Some(s) = question_mark(g.stream()) {
                    return Some(s);
                }
            }
            _ => {}
        }
    }
    None
}

/// A `fail` value can only use values loaded before it (the later ones were never read).
fn fail_values_use_earlier_loads(section: &Section, checked: &Checked) -> Result<()> {
    let mut errors = Errors::default();
    for (position, step) in section.steps.iter().enumerate() {
        if let Step::FailIf { value: Some(v), .. } = step {
            let mut found = Vec::new();
            idents(v.to_token_stream(), &mut found);
            for ident in found {
                if let Some((loaded_at, _)) = checked.values.get(&ident.to_string()) {
                    if *loaded_at > position {
                        errors.push(Error::new_spanned(
                            &ident,
                            format!(
                                "`{ident}` is loaded after this `fail`, so it has no value here"
                            ),
                        ));
                    }
                }
            }
        }
    }
    errors.finish()
}

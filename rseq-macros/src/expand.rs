//! Turns a validated section into tokens: the wrapper (retry loop, stack slots, results), one
//! `asm!` block per supported architecture, and the fallback body. Never rejects anything.

use crate::ast::*;
use crate::plan::{
    self, arg_ident, base_ident, expr_ident, value_ident, FrameWord, Plan, ABORTED, COMMITTED,
    MOVED,
};
use crate::valid::{pointee, Checked, IndexMode, ParamKind};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use rseq_arch::template::Cond;
use syn::spanned::Spanned;
use syn::Ident;

/// A section compiled for one architecture.
struct Target {
    name: &'static str,
    codegen: rseq_arch::Codegen,
    plan: Plan,
}

/// The section's function. Its success path is the section inline (area pointer, `asm!`, the
/// result bindings) and nothing else: every cold path (retry after an abort, attaching the
/// thread, a temporary registration, the fallback) is one out-of-line call made only after an
/// abort, with the hoisted words as its arguments, so no value is kept in memory for it.
pub fn expand(section: &Section, checked: &Checked) -> syn::Result<TokenStream> {
    let krate = &checked.krate;
    // One plan per architecture with a code generator, built once.
    let targets: Vec<Target> = rseq_arch::ALL
        .iter()
        .filter(|a| a.supported)
        .filter_map(|a| {
            let codegen = rseq_arch::codegen(a.target_arch)?;
            let plan = Plan::build(section, checked, a.target_arch);
            Some(Target {
                name: a.target_arch,
                codegen,
                plan,
            })
        })
        .collect();
    // x86_64 is the reference: hoists, checks and saved values do not depend on the
    // architecture, and a section that does not fit its registers is rejected outright (other
    // architectures report their own budget where the section is compiled for them).
    let reference = targets
        .iter()
        .find(|t| t.name == "x86_64")
        .expect("x86_64 generates sections");
    if let Some(msg) = over_budget(reference) {
        return Err(syn::Error::new(section.sig.ident.span(), msg));
    }
    let plan = &reference.plan;
    let Section {
        attrs, vis, sig, ..
    } = section;
    let hoists = &plan.hoists;
    let checks = &plan.checks;
    let slots = plan.saved.len();
    // With `on_abort = value` an abort returns the value: no retry, no fallback to build.
    let retries = checked.on_abort.is_none();
    let (hot, retry) = attempts(section, &targets, slots, krate, retries);
    // The fallback runs after the cold path gives up on rseq (it returns `ABORTED`): a named
    // fallback with the section's own arguments, or the slot-locked body.
    let fallback = match &checked.fallback {
        _ if !retries => TokenStream::new(),
        Some(path) => {
            let args = sig.inputs.iter().filter_map(|input| match input {
                // Spanned at the path: a mismatch is the named function's, not the section's.
                syn::FnArg::Typed(t) => match &*t.pat {
                    syn::Pat::Ident(p) => Some(Ident::new(&p.ident.to_string(), path.span())),
                    _ => None,
                },
                syn::FnArg::Receiver(_) => None,
            });
            // The callee gets the caller's contract: an `unsafe fn` section may call an
            // `unsafe fn` fallback; a safe one may not.
            let call = quote_spanned!(path.span()=> #path(#(#args),*));
            let call = if sig.unsafety.is_some() {
                quote!(unsafe { #call })
            } else {
                call
            };
            quote! {
                if __rseq_code == #ABORTED {
                    return #call;
                }
            }
        }
        None => {
            // The slot-locked body, out of line in a function of its own: a process in
            // `Fallback` mode for good calls it straight from the failed first attempt, and the
            // cold path's closure returns `ABORTED` to it when it gives up on rseq. (Inside that
            // closure, with the retries and the registration calls around it, every fallback
            // section paid for saving and restoring six registers.)
            let body = fallback_body(section, checked, plan);
            quote! {
                if __rseq_code == #ABORTED {
                    __rseq_code = #krate::__private::cold_with(
                        &mut __rseq_slots,
                        move |__rseq_slots: &mut [::core::mem::MaybeUninit<usize>; #slots]| -> u8 {
                            #body
                        },
                    );
                }
            }
        }
    };
    let after_abort = after_abort(section, checked, retry, fallback, slots);
    let finish = finish(section, checked, plan);
    let aborts_counter = checked.aborts.as_ref().map(|aborts| {
        quote_spanned!(aborts.span()=> let __rseq_aborts: &::core::sync::atomic::AtomicUsize = &#aborts;)
    });
    // The success path is a few instructions: offered for inlining across crates (a
    // collection's `add` calling its section, say) unless the function says otherwise.
    let inline = (!attrs.iter().any(|a| a.path().is_ident("inline"))).then(|| quote!(#[inline]));
    Ok(quote! {
        #(#attrs)*
        #inline
        #[allow(clippy::needless_return, clippy::unnecessary_cast, clippy::unused_unit, unused_unsafe)]
        #vis #sig {
            #(#checks)*
            #aborts_counter
            #(#hoists)*
            // The results of loaded values: written by the section (or the fallback) before the
            // exit that reads them, never read otherwise (`finish` binds, per exit, only values
            // loaded before it).
            #[allow(unused_mut)]
            let mut __rseq_slots: [::core::mem::MaybeUninit<usize>; #slots] =
                [const { ::core::mem::MaybeUninit::uninit() }; #slots];
            #hot
            #after_abort
            #finish
        }
    })
}

/// Everything after an abort: the retries, registration and fallback out of line, or, with
/// `on_abort = value`, the value.
fn after_abort(
    section: &Section,
    checked: &Checked,
    retry: TokenStream,
    fallback: TokenStream,
    slots: usize,
) -> TokenStream {
    let krate = &checked.krate;
    let count_abort = checked
        .aborts
        .as_ref()
        .map(|_| quote!(__rseq_aborts.fetch_add(1, ::core::sync::atomic::Ordering::Relaxed);));
    if let Some(value) = &checked.on_abort {
        // An `unsafe fn` section's value may use its caller's promises, as its results do.
        let value = if section.sig.unsafety.is_some() {
            quote_spanned!(value.span()=> unsafe { #value })
        } else {
            quote!(#value)
        };
        return quote! {
            if __rseq_code == #ABORTED {
                #count_abort
                return #value;
            }
        };
    }
    // A process in `Fallback` mode for good goes to the fallback straight from the failed first
    // attempt.
    let skip_cold = quote!(&& !#krate::__private::fallback_decided());
    let mm_cid = matches!(checked.index, IndexMode::MmCid);
    quote! {
        if __rseq_code == #ABORTED #skip_cold {
            // Everything after an abort, out of line. The closure copies the hoisted words
            // (it is built only here), so the success path keeps them in registers.
            __rseq_code = #krate::__private::cold_with(
                &mut __rseq_slots,
                move |__rseq_slots: &mut [::core::mem::MaybeUninit<usize>; #slots]| -> u8 {
                    #retry
                    let __rseq_outcome: u8 = loop {
                        match #krate::__private::after_abort(#mm_cid) {
                            #krate::__private::AbortAction::Retry => { #count_abort }
                            #krate::__private::AbortAction::Attached => {}
                            #krate::__private::AbortAction::Fallback => break #ABORTED,
                            #krate::__private::AbortAction::TemporaryRegistration => {
                                break #krate::__private::with_temporary_registration(|| {
                                    let __rseq_outcome = __rseq_attempt(&mut *__rseq_slots);
                                    (__rseq_outcome != #ABORTED).then_some(__rseq_outcome)
                                })
                                .unwrap_or(#ABORTED);
                            }
                        }
                        let __rseq_outcome = __rseq_attempt(&mut *__rseq_slots);
                        if __rseq_outcome != #ABORTED {
                            break __rseq_outcome;
                        }
                    };
                    __rseq_outcome
                },
            );
        }
        #fallback
    }
}

/// The error for a plan that needs more registers than its target offers, if it does.
fn over_budget(target: &Target) -> Option<String> {
    let (plan, codegen, name) = (&target.plan, &target.codegen, target.name);
    if plan.registers() <= codegen.available_registers {
        return None;
    }
    let memory = if codegen.values_in_memory {
        ", even with its values kept in memory"
    } else {
        ""
    };
    Some(format!(
        "this critical section needs {} registers but {name} offers {} to a section{memory}: load fewer values, pass fewer parameters, or split it",
        plan.registers(),
        codegen.available_registers
    ))
}

/// One run of the section and how it ended (a `u8` outcome), twice from one pass over the
/// targets: the first attempt, in the function's body (`let mut __rseq_code: u8 = ...;`), and,
/// if `retries`, the retries' closure on the cold path (`let mut __rseq_attempt = |slots| ->
/// u8 { ... };`).
/// Each has one version per architecture with a code generator (under its `cfg`) and one for
/// every other target; the compile errors are reported once, with the first attempt.
fn attempts(
    section: &Section,
    targets: &[Target],
    slots: usize,
    krate: &TokenStream,
    retries: bool,
) -> (TokenStream, TokenStream) {
    let slots_ty = quote!([::core::mem::MaybeUninit<usize>; #slots]);
    let (mut hot, mut retry) = (TokenStream::new(), TokenStream::new());
    let mut bind = |cfg: TokenStream, body: TokenStream| {
        hot.extend(quote! {
            #cfg
            #[allow(unused_mut)]
            let mut __rseq_code: u8 = #body;
        });
        if retries {
            retry.extend(quote! {
                #cfg
                let mut __rseq_attempt = |__rseq_slots: &mut #slots_ty| -> u8 {
                    let _ = &__rseq_slots;
                    #body
                };
            });
        }
    };
    let mut errors = TokenStream::new();
    let mut supported = Vec::new();
    for target in targets {
        let name = target.name;
        supported.push(name);
        let cfg = quote!(#[cfg(target_arch = #name)]);
        if let Some(msg) = over_budget(target) {
            let span = section.sig.ident.span();
            errors.extend(quote_spanned! {span=>
                #cfg
                ::core::compile_error!(#msg);
            });
            bind(cfg, quote!(#ABORTED));
            continue;
        }
        let asm = asm_block(&target.plan, &target.codegen);
        let body = match &target.plan.frame {
            Some(words) => attempt_with_frame(words, slots, &asm, krate),
            None => quote! {{
                let __rseq_area = #krate::__private::area_ptr();
                'attempt: {
                    // SAFETY:
                    // - `area` is this thread's rseq area (or the sentinel, whose index is out of
                    //   range): the section only stores the descriptor address into its `rseq_cs`.
                    // - the index is checked against the runtime's limit (≤ the number of slots of
                    //   every `PerCpu`) before any slot is touched; out of range → abort exit.
                    // - raw-pointer places are only accepted in `unsafe fn`s, whose callers vouch
                    //   for the pointers.
                    // - the commit is one instruction, the last of [start, post-commit); the abort
                    //   handler sits in `__rseq_failure` behind the signature, never fallen into.
                    // - `slots` points at `[MaybeUninit<usize>; N]` with one entry per saved
                    //   value.
                    unsafe { #asm }
                    #COMMITTED
                }
            }},
        };
        bind(cfg, body);
    }
    let msg = format!(
        "rseq critical sections are not supported on this target architecture yet (supported: {})",
        supported.join(", ")
    );
    let cfg = quote!(#[cfg(not(any(#(target_arch = #supported),*)))]);
    errors.extend(quote! {
        #cfg
        ::core::compile_error!(#msg);
    });
    bind(cfg, quote!(#ABORTED));
    errors.extend(hot);
    (errors, retry)
}

/// One run of a plan that keeps values in memory: the asm gets a frame array that starts with
/// the result slots (copied out afterwards), then parameters, then spill room.
fn attempt_with_frame(
    words: &[FrameWord],
    slots: usize,
    asm: &TokenStream,
    krate: &TokenStream,
) -> TokenStream {
    let init = words.iter().enumerate().map(|(i, word)| match word {
        FrameWord::Slot(slot) => {
            debug_assert_eq!(*slot, i, "result slots open the frame");
            quote!(0usize)
        }
        FrameWord::Input(e) => quote!((#e) as usize),
        FrameWord::Spill => quote!(0usize),
    });
    let len = words.len();
    let copy_out = (slots > 0).then(|| {
        quote! {
            for (__rseq_slot, __rseq_word) in __rseq_slots.iter_mut().zip(&__rseq_frame[..#slots]) {
                *__rseq_slot = ::core::mem::MaybeUninit::new(*__rseq_word);
            }
        }
    });
    quote! {{
        let __rseq_area = #krate::__private::area_ptr();
        let mut __rseq_frame: [usize; #len] = [#(#init),*];
        let __rseq_code: u8 = 'attempt: {
            // SAFETY: as in the attempt without a frame, and
            // - `frame` points at `__rseq_frame`, which lives until after the block; the
            //   section reads parameters from it and writes results and spilled values into
            //   it (thread-private memory, so a restarted attempt just writes it again).
            unsafe { #asm }
            #COMMITTED
        };
        #copy_out
        __rseq_code
    }}
}

fn asm_block(plan: &Plan, codegen: &rseq_arch::Codegen) -> TokenStream {
    let mut operands = Vec::new();
    for (name, op) in &plan.operands {
        // Registers a copy loop moves bytes through need a class with byte parts.
        let class = if plan.byte_operands.contains(name) {
            format_ident!("{}", codegen.byte_register_class)
        } else {
            format_ident!("{}", codegen.register_class)
        };
        let name = format_ident!("{}", name);
        operands.push(match op {
            plan::Operand::In(e) => quote!(#name = in(#class) #e),
            plan::Operand::InOut(e) => quote!(#name = inout(#class) #e => _),
            plan::Operand::Scratch => quote!(#name = out(#class) _),
            plan::Operand::Const(e) => quote!(#name = const #e),
            plan::Operand::Sym(p) => quote!(#name = sym #p),
            plan::Operand::Label(code) => quote!(#name = label { break 'attempt #code; }),
        });
    }
    // Operands in a fixed order: inputs, scratch, consts and syms, labels.
    let rank = |op: &plan::Operand| match op {
        plan::Operand::In(_) | plan::Operand::InOut(_) => 0,
        plan::Operand::Scratch => 1,
        plan::Operand::Const(_) | plan::Operand::Sym(_) => 2,
        plan::Operand::Label(_) => 3,
    };
    let mut ordered: Vec<(usize, TokenStream)> = plan
        .operands
        .iter()
        .zip(operands)
        .map(|((_, op), tokens)| (rank(op), tokens))
        .collect();
    ordered.sort_by_key(|(rank, _)| *rank);
    let operands = ordered.into_iter().map(|(_, t)| t);
    let clobbers = codegen.clobbers.iter().map(|r| quote!(out(#r) _));
    let lines = (codegen.emit)(&plan.ops);
    let lines = lines.iter().map(|l| Literal::string(l));
    let options = match (codegen.uses_stack, codegen.att_syntax) {
        (false, false) => quote!(options(nostack)),
        (false, true) => quote!(options(nostack, att_syntax)),
        (true, false) => quote!(),
        (true, true) => quote!(options(att_syntax)),
    };
    quote! {
        ::core::arch::asm!(
            #(#lines,)*
            #(#operands,)*
            #(#clobbers,)*
            #options
        )
    }
}

/// A Rust expression for an operand's word value in the fallback body.
fn fallback_value(op: &Operand, section: &Section, checked: &Checked) -> TokenStream {
    match op {
        Operand::Name(name) if checked.is_value(name) => {
            let v = value_ident(name);
            quote!(#v)
        }
        Operand::Name(name) => {
            let a = arg_ident(name);
            quote!(#a)
        }
        Operand::Null(_) => quote!(0usize),
        Operand::Int(lit) => quote!((#lit as usize)),
        Operand::Expr(e) => {
            let local = expr_ident(plan::expr_number(section, e));
            quote!(#local)
        }
    }
}

/// A Rust expression for a place's address in the fallback body.
fn fallback_addr(place: &Place, section: &Section, checked: &Checked) -> TokenStream {
    let krate = &checked.krate;
    let fields = &place.fields;
    let element = place.element.as_ref().map(|e| {
        let v = fallback_value(&Operand::Name(e.clone()), section, checked);
        quote!(+ #v * ::core::mem::size_of::<usize>())
    });
    match &place.base {
        PlaceBase::Slot { percpu, .. } => {
            let Some(ParamKind::PerCpu(ty)) = checked.params.get(&percpu.to_string()) else {
                unreachable!()
            };
            let base = base_ident(percpu);
            let disp =
                (!fields.is_empty()).then(|| quote!(+ ::core::mem::offset_of!(#ty, #(#fields).*)));
            quote!((#base + __rseq_idx * <#krate::PerCpu<#ty>>::STRIDE #disp #element))
        }
        PlaceBase::Deref { ptr, offset } => {
            let base = fallback_value(&Operand::Name(ptr.clone()), section, checked);
            let offset = offset.as_ref().map(|o| {
                let v = fallback_value(o, section, checked);
                quote!(+ #v)
            });
            quote!((#base #offset #element))
        }
        PlaceBase::Field { ptr } => {
            let base = fallback_value(&Operand::Name(ptr.clone()), section, checked);
            let ty = pointee(ptr, checked).expect("validated");
            quote!((#base + ::core::mem::offset_of!(#ty, #(#fields).*) #element))
        }
    }
}

/// The same steps in plain Rust, under the slot lock; evaluates to the outcome code and fills
/// the same stack slots.
fn fallback_body(section: &Section, checked: &Checked, plan: &Plan) -> TokenStream {
    let krate = &checked.krate;
    let preferred = match &checked.index {
        IndexMode::CpuId => quote!(#krate::current_cpu()),
        IndexMode::MmCid => quote!(#krate::current_mm_cid()),
        IndexMode::Given(param) => {
            let a = arg_ident(param);
            quote!(#a)
        }
    };
    // The CPU a caller chose is locked exactly, and the thread must be on it once it holds the
    // lock (as with rseq); when it is not, or the slot cannot be locked (no such CPU, or a
    // signal handler nested in this thread's own fallback section), the section reports it
    // moved.
    // This runs inside `cold_with(.., |..| ..)`, so `return` leaves the fallback with that code.
    let lock = match &checked.index {
        IndexMode::Given(param) => {
            let a = arg_ident(param);
            quote! {
                let __rseq_guard = match #krate::__private::lock_slot_on_cpu(#a) {
                    ::core::option::Option::Some(guard) => guard,
                    ::core::option::Option::None => return #MOVED,
                };
            }
        }
        _ => quote!(),
    };
    // Fault injection: the same points as the asm's delay loops (see `rseq_rt::inject`).
    let spin = |point: usize| {
        cfg!(feature = "inject-delays").then(|| quote!(#krate::inject::spin(#point);))
    };
    let mut steps = vec![spin(0).unwrap_or_default()];
    let mut fail = 0u8;
    let mut point = 0;
    for step in &section.steps {
        if !matches!(step, Step::Other(_)) {
            point += 1;
            steps.extend(spin(point));
        }
        steps.push(match step {
            Step::Load { name, place, .. } => {
                let v = value_ident(name);
                let addr = fallback_addr(place, section, checked);
                let save = plan
                    .saved
                    .get(&name.to_string())
                    .map(|slot| quote!(__rseq_slots[#slot] = ::core::mem::MaybeUninit::new(#v);));
                quote! {
                    let #v: usize = #krate::__private::load_word(#addr);
                    #save
                }
            }
            Step::Add { op, name, a, b, .. } => {
                let v = value_ident(name);
                let sum = if op == "sub" {
                    format_ident!("wrapping_sub")
                } else {
                    format_ident!("wrapping_add")
                };
                let (a, b) = (
                    fallback_value(a, section, checked),
                    fallback_value(b, section, checked),
                );
                let save = plan
                    .saved
                    .get(&name.to_string())
                    .map(|slot| quote!(__rseq_slots[#slot] = ::core::mem::MaybeUninit::new(#v);));
                quote! {
                    let #v: usize = #a.#sum(#b);
                    #save
                }
            }
            Step::FailIf { a, cmp, b, .. } => {
                fail += 1;
                let (a, b) = (
                    fallback_value(a, section, checked),
                    fallback_value(b, section, checked),
                );
                let op = match cmp.op {
                    Cond::Eq => quote!(==),
                    Cond::Ne => quote!(!=),
                    Cond::Lt => quote!(<),
                    Cond::Le => quote!(<=),
                    Cond::Gt => quote!(>),
                    Cond::Ge => quote!(>=),
                };
                quote!(if #a #op #b { break 'steps #fail; })
            }
            Step::Store { place, value, .. } => {
                let addr = fallback_addr(place, section, checked);
                let v = fallback_value(value, section, checked);
                quote!(#krate::__private::store_word(#addr, #v);)
            }
            Step::Memcpy { dst, src, len, .. } => {
                let (d, s, n) = (
                    fallback_value(dst, section, checked),
                    fallback_value(src, section, checked),
                    fallback_value(len, section, checked),
                );
                quote!(#krate::__private::copy_bytes(#d, #s, #n);)
            }
            Step::Commit {
                kind, place, value, ..
            } => {
                let addr = fallback_addr(place, section, checked);
                let v = fallback_value(value, section, checked);
                let f: Ident = match kind.to_string().as_str() {
                    "store_release" => format_ident!("store_word_release"),
                    "add" => format_ident!("add_word"),
                    "sub" => format_ident!("sub_word"),
                    _ => format_ident!("store_word"),
                };
                quote!(#krate::__private::#f(#addr, #v);)
            }
            Step::Other(_) => quote!(),
        });
    }
    let steps = quote! {
        'steps: {
            // SAFETY: the slot lock excludes every other fallback section on this slot (the
            // process is in fallback mode, so no rseq section runs); places are the same as the
            // asm's: per-CPU slots below the lock table's size (= every PerCpu's length), or
            // pointers an `unsafe fn`'s caller vouched for.
            unsafe {
                #(#steps)*
            }
            #COMMITTED
        }
    };
    match &checked.index {
        IndexMode::Given(_) => quote! {{
            #lock
            let __rseq_idx: usize = __rseq_guard.index();
            let __rseq_code: u8 = #steps;
            ::core::mem::drop(__rseq_guard);
            __rseq_code
        }},
        // The steps as a closure that the runtime calls with the slot locked: its common case
        // is inlined here, its other cases run a copy of the steps out of line.
        _ => quote! {
            #krate::__private::with_locked_slot(#preferred, move |__rseq_idx: usize| -> u8 {
                #steps
            })
        },
    }
}

/// Evaluates the success, failure or moved expression for the outcome code. Each exit binds the
/// values loaded before it (the only ones it may use, and the only slots written on its way).
fn finish(section: &Section, checked: &Checked, plan: &Plan) -> TokenStream {
    let krate = &checked.krate;
    let bindings = |before: usize| -> Vec<TokenStream> {
        plan.saved
            .iter()
            .filter(|(name, _)| checked.values[*name].0 < before)
            .map(|(name, slot)| {
                let ident = format_ident!("{}", name);
                // SAFETY: the section (or the fallback) wrote this slot right after loading the
                // value, which comes before the exit taken (`before`).
                let word = quote!(unsafe { __rseq_slots[#slot].assume_init() });
                match &checked.values[name].1 {
                    Some(ty) => {
                        let convert = quote_spanned!(ty.span()=> <#ty as #krate::__private::WordValue>::from_word);
                        quote!(#[allow(unused_variables)] let #ident: #ty = #convert(#word);)
                    }
                    None => quote!(#[allow(unused_variables)] let #ident: usize = #word;),
                }
            })
            .collect()
    };
    let tail = section
        .tail
        .as_ref()
        .map(|t| quote!(#t))
        .unwrap_or_else(|| quote!(()));
    let all = bindings(usize::MAX);
    let mut arms = vec![quote!(#COMMITTED => { #(#all)* #tail })];
    let mut fail = 0u8;
    for (position, step) in section.steps.iter().enumerate() {
        if let Step::FailIf { value, .. } = step {
            fail += 1;
            let value = value
                .as_ref()
                .map(|v| quote!(#v))
                .unwrap_or_else(|| quote!(()));
            let earlier = bindings(position);
            arms.push(quote!(#fail => { #(#earlier)* #value }));
        }
    }
    if let Some(moved) = &checked.moved {
        arms.push(quote!(#MOVED => { #moved }));
    }
    quote! {
        match __rseq_code {
            #(#arms)*
            _ => ::core::unreachable!("rseq: unknown outcome of a critical section"),
        }
    }
}

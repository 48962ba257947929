//! From a validated section to the architecture-neutral instruction list and the `asm!`
//! operands it needs. Shared by validation (to count registers) and expansion.

use crate::ast::*;
use crate::valid::{pointee, Checked, IndexMode, ParamKind};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use rseq_arch::template::{Addr, CommitKind, IndexField, Op, Value};
use std::collections::{BTreeMap, HashSet};
use syn::{spanned::Spanned, Ident, Type};

/// One `asm!` operand.
#[derive(Clone)]
pub enum Operand {
    /// `name = in(reg) expr`
    In(TokenStream),
    /// `name = inout(reg) expr => _`
    InOut(TokenStream),
    /// `name = out(reg) _`
    Scratch,
    /// `name = const expr`
    Const(TokenStream),
    /// `name = sym path`
    Sym(TokenStream),
    /// `name = label { break 'attempt code }`
    Label(u8),
}

/// Outcome codes of one attempt.
pub const COMMITTED: u8 = 0;
pub const MOVED: u8 = 254;
pub const ABORTED: u8 = 255;

/// The largest literal `sub` subtracts as an immediate (see [`Op::AddValue`]).
const NEGATED_IMM_MAX: i64 = -rseq_arch::template::ADD_IMM_MIN;

pub struct Plan {
    /// Statements run once before the retry loop (hoisted operands).
    pub hoists: Vec<TokenStream>,
    /// Type checks (never-called closures) that point at the offending place.
    pub checks: Vec<TokenStream>,
    /// Operands in declaration order.
    pub operands: Vec<(String, Operand)>,
    pub ops: Vec<Op>,
    /// Loaded values saved to stack slots for the result expressions: name → slot.
    pub saved: BTreeMap<String, usize>,
    /// Number of `fail` exits (codes 1..=fails).
    pub fails: u8,
    /// Register operands that must have a byte part (the byte a copy loop moves).
    pub byte_operands: Vec<String>,
    /// The words of the stack frame (operand `frame`) when the section keeps values in memory
    /// (`regalloc`); `None` when every value has its own register and results go to `slots`.
    pub frame: Option<Vec<FrameWord>>,
    /// Register operands the templates name themselves (their scratch registers `t0`, `t1`
    /// on the targets that have them): register allocation keeps them as they are and gives
    /// their registers to no value.
    pub pinned: Vec<String>,
}

/// What a place's type must be: loaded, written in a `PerCpu` slot (which other code may hold
/// `&T` to: atomics only), or written through a pointer (any type every word is valid for).
#[derive(Clone, Copy)]
enum WordCheck {
    Load,
    Shared,
    Pointer,
}

/// One word of a section's stack frame.
pub enum FrameWord {
    /// The result slot of that number (the frame starts with them, in order).
    Slot(usize),
    /// A parameter kept in memory: its value.
    Input(TokenStream),
    /// Room for a value the section spills.
    Spill,
}

impl Plan {
    pub fn registers(&self) -> usize {
        self.operands
            .iter()
            .filter(|(_, o)| matches!(o, Operand::In(_) | Operand::InOut(_) | Operand::Scratch))
            .count()
    }

    /// The plan for one architecture (`target_arch` name; it must have a code generator).
    /// Values that are never live at the same time share a register (`regalloc::share`: no
    /// memory traffic is added). Where the target lets values live in memory and the section
    /// does not fit in its registers, every base gets its index folded in (one register less)
    /// and the registers are allocated by liveness with spills (`regalloc::fit`); if even that
    /// fails, the plan that needs more registers than the target has is returned, and
    /// expansion reports it.
    pub fn build(section: &Section, checked: &Checked, target_arch: &str) -> Plan {
        let arch = rseq_arch::by_target_arch(target_arch).expect("known architecture");
        let codegen = rseq_arch::codegen(target_arch).expect("architecture with a code generator");
        Plan::build_with(section, checked, arch.pointer_bytes, &codegen)
    }

    /// [`Plan::build`] for a word size and code generator given directly (tests vary the
    /// register budget).
    pub fn build_with(
        section: &Section,
        checked: &Checked,
        word_bytes: usize,
        codegen: &rseq_arch::Codegen,
    ) -> Plan {
        let build = |fold| Builder::new(section, checked, word_bytes as u8, codegen, fold).build();
        let plan = build(false);
        if !codegen.values_in_memory {
            return crate::regalloc::share(plan, word_bytes);
        }
        if plan.registers() > codegen.available_registers {
            // The byte class lacks at most one register of the general class (i686: eax–edx
            // of eax, ebx, ecx, edx, edi).
            let byte_registers = if codegen.byte_register_class == codegen.register_class {
                codegen.available_registers
            } else {
                codegen.available_registers.saturating_sub(1)
            };
            if let Some(fitted) = crate::regalloc::fit(
                build(true),
                codegen.available_registers,
                byte_registers,
                word_bytes,
            ) {
                return fitted;
            }
        }
        plan
    }
}

/// Names a value operand in Rust (fallback) and in asm.
pub fn value_ident(name: &Ident) -> Ident {
    format_ident!("__rseq_v_{}", name)
}
pub fn arg_ident(name: &Ident) -> Ident {
    format_ident!("__rseq_arg_{}", name)
}
pub fn base_ident(name: &Ident) -> Ident {
    format_ident!("__rseq_base_{}", name)
}
pub fn expr_ident(n: usize) -> Ident {
    format_ident!("__rseq_expr_{}", n)
}

/// Values that the result expressions (tail, fail values) mention.
fn saved_values(section: &Section, checked: &Checked) -> BTreeMap<String, usize> {
    let mut tokens = TokenStream::new();
    if let Some(t) = &section.tail {
        tokens.extend(quote!(#t));
    }
    for step in &section.steps {
        if let Step::FailIf { value: Some(v), .. } = step {
            tokens.extend(quote!(#v));
        }
    }
    let mut mentioned = HashSet::new();
    collect(tokens, &mut mentioned);
    let mut loads: Vec<(usize, String)> = checked
        .values
        .iter()
        .filter(|(name, _)| mentioned.contains(*name))
        .map(|(name, (pos, _))| (*pos, name.clone()))
        .collect();
    loads.sort();
    loads
        .into_iter()
        .enumerate()
        .map(|(slot, (_, name))| (name, slot))
        .collect()
}

fn collect(tokens: TokenStream, out: &mut HashSet<String>) {
    for tt in tokens {
        match tt {
            proc_macro2::TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            proc_macro2::TokenTree::Group(g) => collect(g.stream(), out),
            _ => {}
        }
    }
}

/// The number of a `{ expr }` operand: the position of the first operand with the same tokens
/// (equal expressions are evaluated once).
pub fn expr_number(section: &Section, e: &syn::ExprBlock) -> usize {
    let text = quote!(#e).to_string();
    expr_operands(section)
        .iter()
        .position(|x| quote!(#x).to_string() == text)
        .expect("operand of this section")
}

/// Each distinct `{ expr }` operand with its number.
pub fn distinct_exprs(section: &Section) -> Vec<(usize, syn::ExprBlock)> {
    let all = expr_operands(section);
    all.iter()
        .enumerate()
        .filter(|(i, e)| expr_number(section, e) == *i)
        .map(|(i, e)| (i, e.clone()))
        .collect()
}

/// `PerCpu` parameters that places index, in first-use order, and whether any place of each
/// indexes an element (then the slot address is formed in the base register).
pub fn percpu_bases(section: &Section) -> Vec<(Ident, bool)> {
    let mut bases: Vec<(Ident, bool)> = Vec::new();
    for step in &section.steps {
        if let Step::Load { place, .. } | Step::Store { place, .. } | Step::Commit { place, .. } =
            step
        {
            if let PlaceBase::Slot { percpu, .. } = &place.base {
                match bases.iter_mut().find(|(b, _)| b == percpu) {
                    Some((_, folded)) => *folded |= place.element.is_some(),
                    None => bases.push((percpu.clone(), place.element.is_some())),
                }
            }
        }
    }
    bases
}

struct Builder<'a> {
    /// Bytes per word (the scale of an element index).
    word_bytes: u8,
    /// Scratch registers the architecture's templates need (`t0`, `t1`, …).
    scratch: usize,
    /// Whether `sym` operands are reachable anywhere in a section (else addresses go in
    /// registers).
    pc_relative_data: bool,
    /// Fold the scaled index into every base (one register less while values are allocated).
    fold: bool,
    section: &'a Section,
    checked: &'a Checked,
    plan: Plan,
    /// Hoisted parameters (asm name by parameter name).
    args: BTreeMap<String, String>,
    /// Parameters whose word (`__rseq_arg_NAME`) is already hoisted.
    arg_words: std::collections::BTreeSet<String>,
    /// `{ expr }` operands already declared, by their index in `expr_operands`.
    exprs: BTreeMap<usize, String>,
    next_const: usize,
    next_literal: usize,
    /// Per PerCpu base: (asm base name, asm offset name or None when folded into the base).
    bases: BTreeMap<String, (String, Option<String>)>,
}

impl<'a> Builder<'a> {
    fn new(
        section: &'a Section,
        checked: &'a Checked,
        word_bytes: u8,
        codegen: &rseq_arch::Codegen,
        fold: bool,
    ) -> Self {
        Builder {
            word_bytes,
            scratch: codegen.scratch_registers,
            pc_relative_data: codegen.pc_relative_data,
            fold,
            section,
            checked,
            plan: Plan {
                hoists: Vec::new(),
                checks: Vec::new(),
                operands: Vec::new(),
                ops: Vec::new(),
                saved: saved_values(section, checked),
                fails: 0,
                byte_operands: Vec::new(),
                frame: None,
                pinned: Vec::new(),
            },
            args: BTreeMap::new(),
            arg_words: Default::default(),
            exprs: BTreeMap::new(),
            next_const: 0,
            next_literal: 0,
            bases: BTreeMap::new(),
        }
    }

    fn operand(&mut self, name: impl Into<String>, op: Operand) -> String {
        let name = name.into();
        self.plan.operands.push((name.clone(), op));
        name
    }

    fn constant(&mut self, value: TokenStream) -> String {
        let name = format!("d{}", self.next_const);
        self.next_const += 1;
        self.operand(name, Operand::Const(value))
    }

    /// The local holding a parameter's word, hoisted (cast once) on first use.
    fn arg_word(&mut self, name: &Ident) -> Ident {
        let local = arg_ident(name);
        if self.arg_words.insert(name.to_string()) {
            self.plan
                .hoists
                .push(quote_spanned!(name.span()=> let #local: usize = #name as usize;));
        }
        local
    }

    /// A parameter as a register operand (hoisted once, cast to a word).
    fn arg(&mut self, name: &Ident) -> String {
        if let Some(asm) = self.args.get(&name.to_string()) {
            return asm.clone();
        }
        let local = self.arg_word(name);
        let asm = self.operand(format!("a_{name}"), Operand::In(quote!(#local)));
        self.args.insert(name.to_string(), asm.clone());
        asm
    }

    fn value(&mut self, op: &crate::ast::Operand) -> Value {
        match op {
            crate::ast::Operand::Name(name) if self.checked.is_value(name) => {
                Value::Reg(format!("v_{name}"))
            }
            crate::ast::Operand::Name(name) => Value::Reg(self.arg(name)),
            crate::ast::Operand::Null(_) => Value::Imm(0),
            crate::ast::Operand::Int(lit) => {
                let v: u64 = lit.base10_parse().unwrap_or(0);
                if v <= i32::MAX as u64 {
                    Value::Imm(v as i64)
                } else {
                    let n = self.next_literal;
                    self.next_literal += 1;
                    let local = format_ident!("__rseq_lit_{}", n);
                    self.plan
                        .hoists
                        .push(quote!(let #local: usize = #lit as usize;));
                    Value::Reg(self.operand(format!("l{n}"), Operand::In(quote!(#local))))
                }
            }
            crate::ast::Operand::Expr(e) => {
                let n = expr_number(self.section, e);
                if let Some(asm) = self.exprs.get(&n) {
                    return Value::Reg(asm.clone());
                }
                let local = expr_ident(n);
                let asm = self.operand(format!("e{n}"), Operand::In(quote!(#local)));
                self.exprs.insert(n, asm.clone());
                Value::Reg(asm)
            }
        }
    }

    /// The two's complement of a value that is known before the section (a parameter, an
    /// integer or `{ expression }`; validation rejects loaded values): `sub` adds it.
    /// What `sub(a, b)` adds to `a`: a small literal `b` as a negative immediate, which every
    /// target's add takes (so the section needs no register for it); anything else as
    /// [`negated`](Self::negated).
    fn negated_addend(&mut self, op: &crate::ast::Operand) -> Value {
        if let crate::ast::Operand::Int(lit) = op {
            if let Ok(v @ 1..=NEGATED_IMM_MAX) = lit.base10_parse::<i64>() {
                return Value::Imm(-v);
            }
        }
        self.negated(op)
    }

    fn negated(&mut self, op: &crate::ast::Operand) -> Value {
        let word = match op {
            crate::ast::Operand::Name(name) => {
                // The fallback body reads the parameter's word from this local too.
                let local = self.arg_word(name);
                quote!(#local)
            }
            crate::ast::Operand::Null(_) => return Value::Imm(0),
            crate::ast::Operand::Int(lit) => quote!((#lit as usize)),
            crate::ast::Operand::Expr(e) => {
                let local = expr_ident(expr_number(self.section, e));
                quote!(#local)
            }
        };
        let n = self.next_literal;
        self.next_literal += 1;
        let local = format_ident!("__rseq_lit_{}", n);
        self.plan
            .hoists
            .push(quote!(let #local: usize = #word.wrapping_neg();));
        Value::Reg(self.operand(format!("l{n}"), Operand::In(quote!(#local))))
    }

    fn reg_of(&mut self, name: &Ident) -> String {
        match self.value(&crate::ast::Operand::Name(name.clone())) {
            Value::Reg(r) => r,
            Value::Imm(_) => unreachable!(),
        }
    }

    /// Stores a value the results use into its stack slot.
    fn save(&self, name: &Ident, src: String) -> Option<Op> {
        let slot = *self.plan.saved.get(&name.to_string())?;
        Some(Op::Save {
            slots: "slots".into(),
            slot,
            src,
        })
    }

    /// The address of a place, with its type check (`written`: the step stores to it).
    fn addr(&mut self, place: &Place, written: bool) -> Addr {
        let fields = &place.fields;
        // Type errors point at the last field (or the place's first token).
        let span = match fields.last() {
            Some(f) => quote!(#f),
            None => place.tokens.clone(),
        };
        let element = place
            .element
            .as_ref()
            .map(|e| (self.reg_of(e), self.word_bytes));
        match &place.base {
            PlaceBase::Slot { percpu, .. } => {
                let Some(ParamKind::PerCpu(ty)) = self.checked.params.get(&percpu.to_string())
                else {
                    unreachable!()
                };
                let ty = ty.clone();
                let (base, offset) = self.bases[&percpu.to_string()].clone();
                let check = if written {
                    WordCheck::Shared
                } else {
                    WordCheck::Load
                };
                self.word_check(check, &ty, fields, place.element.is_some(), &span);
                let disp = (!fields.is_empty())
                    .then(|| self.constant(quote!(::core::mem::offset_of!(#ty, #(#fields).*))));
                let index = match (offset, element) {
                    (_, Some(e)) => Some(e),
                    (Some(o), None) => Some((o, 1)),
                    (None, None) => None,
                };
                Addr { base, index, disp }
            }
            PlaceBase::Deref { ptr, offset } => {
                let base = self.reg_of(ptr);
                if let Some(ty) = pointee(ptr, self.checked) {
                    if fields.is_empty() && offset.is_none() {
                        let check = if written {
                            WordCheck::Pointer
                        } else {
                            WordCheck::Load
                        };
                        self.word_check(check, &ty, &[], place.element.is_some(), &span);
                    }
                }
                let (index, disp) = match offset.as_ref().map(|o| self.value(o)) {
                    None => (element, None),
                    Some(Value::Imm(i)) => (element, Some(self.constant(quote!(#i)))),
                    Some(Value::Reg(r)) => (Some((r, 1)), None),
                };
                Addr { base, index, disp }
            }
            PlaceBase::Field { ptr } => {
                let base = self.reg_of(ptr);
                let ty = pointee(ptr, self.checked).expect("validated");
                let check = if written {
                    WordCheck::Pointer
                } else {
                    WordCheck::Load
                };
                self.word_check(check, &ty, fields, place.element.is_some(), &span);
                let disp = Some(self.constant(quote!(::core::mem::offset_of!(#ty, #(#fields).*))));
                Addr {
                    base,
                    index: element,
                    disp,
                }
            }
        }
    }

    /// A never-called closure that only type-checks if the place is a word of the kind `check`
    /// asks for (or, with an element index, an array of them), spanned at the place.
    fn word_check(
        &mut self,
        check: WordCheck,
        ty: &Type,
        fields: &[Ident],
        element: bool,
        span: &TokenStream,
    ) {
        let krate = &self.checked.krate;
        let span = span
            .clone()
            .into_iter()
            .next()
            .map(|t| t.span())
            .unwrap_or_else(proc_macro2::Span::call_site);
        let bound = match check {
            WordCheck::Load => quote!(#krate::word::Word),
            WordCheck::Shared => quote!(#krate::word::SharedWord),
            WordCheck::Pointer => quote!(#krate::word::PointerWord),
        };
        // The bound sits on a function of the generated code, not of the runtime, so an error
        // names the place and the trait, and points nowhere into the runtime's source.
        let (generics, param) = if element {
            (quote!(<W: #bound, const N: usize>), quote!(*const [W; N]))
        } else {
            (quote!(<W: #bound>), quote!(*const W))
        };
        self.plan.checks.push(quote_spanned! {span=>
            let _ = |__rseq_p: *const #ty| {
                fn __rseq_place #generics(_: #param) {}
                __rseq_place(unsafe { ::core::ptr::addr_of!((*__rseq_p) #(.#fields)*) })
            };
        });
    }

    fn build(mut self) -> Plan {
        let section = self.section;
        let checked = self.checked;
        let krate = &checked.krate;
        // Declared types of values the results do not use still have to be words (the results'
        // bindings check the others).
        for (name, (_, ty)) in &checked.values {
            if let (Some(ty), false) = (ty, self.plan.saved.contains_key(name)) {
                self.plan.checks.push(quote_spanned!(ty.span()=> let _ = <#ty as #krate::__private::WordValue>::from_word;));
            }
        }
        for (n, e) in distinct_exprs(section) {
            let local = expr_ident(n);
            self.plan
                .hoists
                .push(quote_spanned!(e.span()=> let #local: usize = (#e) as usize;));
        }
        let area = self.operand("area", Operand::In(quote!(__rseq_area)));
        if !self.plan.saved.is_empty() {
            self.operand("slots", Operand::In(quote!(__rseq_slots.as_mut_ptr())));
        }
        let given = match &checked.index {
            IndexMode::Given(param) => Some(self.arg(param)),
            _ => None,
        };
        let bases = percpu_bases(section);
        // One base: scale the index in place and address base + index. Several: scale into a
        // register per base, or — where the templates have a scratch register — into t0 and
        // fold it into the (then modified) base, which needs no register of its own. When
        // registers are allocated (`fold`), every base is folded, through one shared `o0`.
        let fold_all = self.fold || (bases.len() > 1 && self.scratch >= 1);
        for (percpu, folded) in &bases {
            let local = base_ident(percpu);
            self.plan
                .hoists
                .push(quote!(let #local: usize = #krate::PerCpu::as_ptr(#percpu) as usize;));
            let op = if *folded || fold_all {
                Operand::InOut(quote!(#local))
            } else {
                Operand::In(quote!(#local))
            };
            let name = self.operand(format!("b_{percpu}"), op);
            self.bases.insert(percpu.to_string(), (name, None));
        }
        let idx = self.operand("idx", Operand::Scratch);
        for t in 0..self.scratch {
            let name = self.operand(template_scratch(t), Operand::Scratch);
            self.plan.pinned.push(name);
        }
        // Scale the index once per base: in place when there is a single base.
        let mut scale_ops = Vec::new();
        for (i, (percpu, folded)) in bases.iter().enumerate() {
            let Some(ParamKind::PerCpu(ty)) = checked.params.get(&percpu.to_string()) else {
                unreachable!()
            };
            let stride_ty = quote!(<#krate::PerCpu<#ty>>::STRIDE);
            let stride = self.constant(stride_ty.clone());
            let pow2 = self.constant(quote!(#krate::__private::stride_is_pow2(#stride_ty)));
            let shift = self.constant(quote!(#krate::__private::stride_shift(#stride_ty)));
            let dst = if bases.len() == 1 {
                idx.clone()
            } else if fold_all && self.scratch >= 1 {
                "t0".to_string()
            } else if fold_all {
                if i == 0 {
                    self.operand("o0", Operand::Scratch);
                }
                "o0".to_string()
            } else {
                self.operand(format!("o{i}"), Operand::Scratch)
            };
            scale_ops.push(Op::Scale {
                dst: dst.clone(),
                index: idx.clone(),
                stride,
                pow2,
                shift,
            });
            let base = self.bases[&percpu.to_string()].0.clone();
            if *folded || fold_all {
                scale_ops.push(Op::AddTo {
                    base: base.clone(),
                    offset: dst,
                });
            } else {
                self.bases.insert(percpu.to_string(), (base, Some(dst)));
            }
        }
        for step in &section.steps {
            if let Step::Load { name, .. } | Step::Add { name, .. } = step {
                self.operand(format!("v_{name}"), Operand::Scratch);
            }
        }
        let limit = self.operand(
            "limit",
            Operand::Sym(match checked.index {
                IndexMode::MmCid => quote!(#krate::__private::MM_CID_LIMIT),
                _ => quote!(#krate::__private::INDEX_LIMIT),
            }),
        );
        let field = match checked.index {
            IndexMode::MmCid => IndexField::MmCid,
            _ => IndexField::CpuId,
        };

        // Fault injection (feature `inject-delays`): a delay loop at point 0, before the index
        // is read, and at point k before the k-th step. Its register is chosen once the
        // instructions are known (`assign_delay_registers`).
        let delays = cfg!(feature = "inject-delays").then(|| {
            // Where symbols are only reachable at the section's start (i686), the counts'
            // address is a parameter instead.
            let counts = if self.pc_relative_data {
                Operand::Sym(quote!(#krate::inject::DELAYS))
            } else {
                Operand::In(quote!(#krate::inject::DELAYS.as_ptr()))
            };
            self.operand("delays", counts)
        });
        let delay = |point: usize| {
            delays.as_ref().map(|counts| Op::Delay {
                counts: counts.clone(),
                point,
                reg: String::new(),
            })
        };

        let mut body = Vec::new();
        let mut exits = Vec::new();
        let mut memcpys = 0u32;
        let mut point = 0;
        for step in &section.steps {
            if !matches!(step, Step::Other(_)) {
                point += 1;
                body.extend(delay(point));
            }
            match step {
                Step::Load { name, place, .. } => {
                    let addr = self.addr(place, false);
                    let dst = format!("v_{name}");
                    body.push(Op::Load {
                        dst: dst.clone(),
                        addr,
                    });
                    body.extend(self.save(name, dst));
                }
                Step::Add { op, name, a, b, .. } => {
                    let dst = format!("v_{name}");
                    let a = self.value(a);
                    let b = if op == "sub" {
                        self.negated_addend(b)
                    } else {
                        self.value(b)
                    };
                    body.push(Op::Copy {
                        dst: dst.clone(),
                        src: a,
                    });
                    body.push(Op::AddValue {
                        dst: dst.clone(),
                        value: b,
                    });
                    body.extend(self.save(name, dst));
                }
                Step::FailIf { a, cmp, b, .. } => {
                    self.plan.fails += 1;
                    let exit = self.operand(
                        format!("f{}", self.plan.fails),
                        Operand::Label(self.plan.fails),
                    );
                    exits.push(exit.clone());
                    let (a, b) = (self.value(a), self.value(b));
                    let cond = cmp.op;
                    body.push(Op::ExitIf { a, cond, b, exit });
                }
                Step::Store { place, value, .. } => {
                    let value = self.value(value);
                    let addr = self.addr(place, true);
                    body.push(Op::Store { addr, value });
                }
                Step::Memcpy { dst, src, len, .. } => {
                    let n = memcpys;
                    memcpys += 1;
                    // The copy consumes its pointers and count; with two template scratch
                    // registers, those hold the count and the byte in flight.
                    let regs: Vec<String> = if self.scratch >= 2 {
                        vec![
                            self.operand(format!("m{n}d"), Operand::Scratch),
                            self.operand(format!("m{n}s"), Operand::Scratch),
                            "t0".into(),
                            "t1".into(),
                        ]
                    } else {
                        ["d", "s", "n", "t"]
                            .iter()
                            .map(|r| self.operand(format!("m{n}{r}"), Operand::Scratch))
                            .collect()
                    };
                    for (reg, op) in regs.iter().zip([dst, src, len]) {
                        let v = self.value(op);
                        body.push(Op::Copy {
                            dst: reg.clone(),
                            src: v,
                        });
                    }
                    if !self.plan.byte_operands.contains(&regs[3]) {
                        self.plan.byte_operands.push(regs[3].clone());
                    }
                    body.push(Op::Memcpy {
                        dst: regs[0].clone(),
                        src: regs[1].clone(),
                        len: regs[2].clone(),
                        scratch: regs[3].clone(),
                        unique: n,
                    });
                }
                Step::Commit {
                    kind, place, value, ..
                } => {
                    let value = if kind == "sub" {
                        self.negated(value)
                    } else {
                        self.value(value)
                    };
                    let addr = self.addr(place, true);
                    let kind = match kind.to_string().as_str() {
                        "store_release" => CommitKind::StoreRelease,
                        "add" | "sub" => CommitKind::Add,
                        _ => CommitKind::Store,
                    };
                    body.push(Op::Commit { kind, addr, value });
                }
                Step::Other(_) => {}
            }
        }
        if given.is_some() {
            exits.push(self.operand("moved", Operand::Label(MOVED)));
        }
        let abort = self.operand("abort", Operand::Label(ABORTED));

        let mut ops = vec![Op::Begin {
            area: area.clone(),
            scratch: idx.clone(),
            exits,
        }];
        ops.extend(delay(0));
        ops.push(Op::ReadIndex {
            dst: idx.clone(),
            area,
            field,
            limit,
        });
        if let Some(expected) = given {
            ops.push(Op::CheckIndex {
                index: idx.clone(),
                expected,
                exit: "moved".into(),
            });
        }
        ops.extend(scale_ops);
        ops.extend(body);
        ops.push(Op::End { abort });
        self.plan.ops = ops;
        self.assign_delay_registers();
        self.plan
    }

    /// Gives each delay loop a register the section may clobber (a scratch or in-out operand)
    /// that holds nothing live at that point — a value not loaded yet or no longer used, a copy
    /// loop's registers, a template scratch register — and a register of its own only where
    /// every such register is live.
    fn assign_delay_registers(&mut self) {
        let clobberable: Vec<String> = self
            .plan
            .operands
            .iter()
            .filter(|(_, o)| matches!(o, Operand::Scratch | Operand::InOut(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let mut own: Option<String> = None;
        for p in 0..self.plan.ops.len() {
            if !matches!(self.plan.ops[p], Op::Delay { .. }) {
                continue;
            }
            let live = live_after(&self.plan.ops[p + 1..], &self.plan.pinned);
            let free = clobberable.iter().find(|r| !live.contains(*r)).cloned();
            let reg = match free {
                Some(r) => r,
                None => own
                    .get_or_insert_with(|| {
                        self.plan
                            .operands
                            .push(("dl".to_string(), Operand::Scratch));
                        "dl".to_string()
                    })
                    .clone(),
            };
            if let Op::Delay { reg: r, .. } = &mut self.plan.ops[p] {
                *r = reg;
            }
        }
    }
}

/// Registers that `ops` read before writing them: the ones live on entry to `ops` (`pinned`:
/// the templates' scratch registers, as [`reads_writes`] takes them).
fn live_after(ops: &[Op], pinned: &[String]) -> HashSet<String> {
    let mut live = HashSet::new();
    // Backwards: live = (live - writes) + reads.
    for op in ops.iter().rev() {
        let (reads, writes) = reads_writes(op, pinned);
        for w in writes {
            live.remove(&w);
        }
        live.extend(reads);
    }
    live
}

/// The operand name of the templates' `t`-th scratch register.
fn template_scratch(t: usize) -> String {
    format!("t{t}")
}

/// The register operands an instruction group reads and writes (the templates' scratch
/// registers, [`Plan::pinned`], which an op may use internally, count as written). Names that are not register
/// operands (a `sym` counts array) may appear; callers ignore them. `ReadIndex` reads its
/// destination: i686's `Begin` leaves the code address there for it, so nothing may take that
/// register in between.
pub(crate) fn reads_writes(op: &Op, pinned: &[String]) -> (Vec<String>, Vec<String>) {
    fn value(v: &Value) -> Vec<String> {
        match v {
            Value::Reg(r) => vec![r.clone()],
            Value::Imm(_) => vec![],
        }
    }
    fn addr(a: &Addr) -> Vec<String> {
        let mut r = vec![a.base.clone()];
        r.extend(a.index.as_ref().map(|(i, _)| i.clone()));
        r
    }
    let temps = || pinned.to_vec();
    let with_temps = |mut w: Vec<String>| {
        w.extend(temps());
        w
    };
    match op {
        Op::Begin { area, scratch, .. } => (vec![area.clone()], with_temps(vec![scratch.clone()])),
        Op::Delay { counts, reg, .. } => (vec![counts.clone()], vec![reg.clone()]),
        Op::ReadIndex { dst, area, .. } => (
            vec![area.clone(), dst.clone()],
            with_temps(vec![dst.clone()]),
        ),
        Op::CheckIndex {
            index, expected, ..
        } => (vec![index.clone(), expected.clone()], temps()),
        Op::Scale { dst, index, .. } => (vec![index.clone()], vec![dst.clone()]),
        Op::AddTo { base, offset } => (vec![base.clone(), offset.clone()], vec![base.clone()]),
        Op::Load { dst, addr: a } => (addr(a), with_temps(vec![dst.clone()])),
        Op::Save { slots, src, .. } => (vec![slots.clone(), src.clone()], temps()),
        Op::ExitIf { a, b, .. } => ([value(a), value(b)].concat(), temps()),
        Op::Store { addr: a, value: v }
        | Op::Commit {
            addr: a, value: v, ..
        } => ([addr(a), value(v)].concat(), temps()),
        Op::Copy { dst, src } => (value(src), vec![dst.clone()]),
        Op::AddValue { dst, value: v } => ([vec![dst.clone()], value(v)].concat(), temps()),
        Op::Memcpy {
            dst,
            src,
            len,
            scratch,
            ..
        } => (
            vec![dst.clone(), src.clone(), len.clone()],
            vec![dst.clone(), src.clone(), len.clone(), scratch.clone()],
        ),
        Op::End { .. } => (vec![], vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(r: &str) -> String {
        r.to_string()
    }

    #[test]
    fn liveness_follows_reads_and_writes() {
        let at = |base: &str| Addr {
            base: reg(base),
            index: Some((reg("idx"), 1)),
            disp: None,
        };
        let ops = vec![
            Op::Load {
                dst: reg("v_a"),
                addr: at("b"),
            },
            Op::Copy {
                dst: reg("v_c"),
                src: Value::Reg(reg("v_a")),
            },
            Op::Commit {
                kind: CommitKind::Store,
                addr: at("b"),
                value: Value::Reg(reg("v_c")),
            },
        ];
        let pinned = [template_scratch(0), template_scratch(1)];
        // Before the load: the base and the index are live; the values are not loaded yet.
        let live = live_after(&ops, &pinned);
        assert!(live.contains("b") && live.contains("idx"));
        assert!(!live.contains("v_a") && !live.contains("v_c"));
        // Between the load and the copy, `v_a` is live; after the copy it is dead again.
        assert!(live_after(&ops[1..], &pinned).contains("v_a"));
        let live = live_after(&ops[2..], &pinned);
        assert!(!live.contains("v_a") && live.contains("v_c"));
        // Template scratch registers are never live across instruction groups.
        assert!(!live.contains("t0"));
    }

    #[test]
    fn a_copy_loop_consumes_its_registers() {
        let ops = vec![Op::Memcpy {
            dst: reg("m0d"),
            src: reg("m0s"),
            len: reg("m0n"),
            scratch: reg("m0t"),
            unique: 0,
        }];
        let live = live_after(&ops, &[]);
        assert!(live.contains("m0d") && live.contains("m0s") && live.contains("m0n"));
        assert!(!live.contains("m0t"));
    }
}

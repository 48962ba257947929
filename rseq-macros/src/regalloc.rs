//! Register allocation for targets with few registers (`Codegen::values_in_memory`, i686 with
//! five): when a section's operands do not fit, its values share registers by liveness,
//! parameters stay in a stack-frame array until they are needed, and values are spilled to
//! that array when the registers run out.
//!
//! A section's instructions are straight-line code (exits leave it for good; a copy loop is one
//! instruction here), so one forward pass decides everything: a value that must be in a
//! register takes a free one, or evicts the value whose next use is furthest away (Belady),
//! storing it first unless memory already holds it (a parameter's frame word, a result slot it
//! was saved to, or an earlier spill). The frame's address is pinned in one register.
//!
//! Every instruction gets distinct registers for everything it names (the same value read and
//! written shares one), so the templates never see an unexpected overlap.

use crate::plan::{FrameWord, Operand, Plan};
use proc_macro2::{Literal, TokenStream};
use quote::quote;
use rseq_arch::template::{Addr, Op, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The register operand that points at the frame.
pub const FRAME: &str = "frame";

/// `op` with every name replaced through `f` (names that are not registers map to themselves).
fn rename(op: &Op, f: &impl Fn(&str) -> String) -> Op {
    let addr = |a: &Addr| Addr {
        base: f(&a.base),
        index: a.index.as_ref().map(|(i, s)| (f(i), *s)),
        disp: a.disp.clone(),
    };
    let value = |v: &Value| match v {
        Value::Reg(r) => Value::Reg(f(r)),
        Value::Imm(i) => Value::Imm(*i),
    };
    match op {
        Op::Begin {
            area,
            scratch,
            exits,
        } => Op::Begin {
            area: f(area),
            scratch: f(scratch),
            exits: exits.clone(),
        },
        Op::ReadIndex {
            dst,
            area,
            field,
            limit,
        } => Op::ReadIndex {
            dst: f(dst),
            area: f(area),
            field: *field,
            limit: limit.clone(),
        },
        Op::CheckIndex {
            index,
            expected,
            exit,
        } => Op::CheckIndex {
            index: f(index),
            expected: f(expected),
            exit: exit.clone(),
        },
        Op::Scale {
            dst,
            index,
            stride,
            pow2,
            shift,
        } => Op::Scale {
            dst: f(dst),
            index: f(index),
            stride: stride.clone(),
            pow2: pow2.clone(),
            shift: shift.clone(),
        },
        Op::AddTo { base, offset } => Op::AddTo {
            base: f(base),
            offset: f(offset),
        },
        Op::Load { dst, addr: a } => Op::Load {
            dst: f(dst),
            addr: addr(a),
        },
        Op::Save { slots, slot, src } => Op::Save {
            slots: f(slots),
            slot: *slot,
            src: f(src),
        },
        Op::ExitIf { a, cond, b, exit } => Op::ExitIf {
            a: value(a),
            cond: *cond,
            b: value(b),
            exit: exit.clone(),
        },
        Op::Store { addr: a, value: v } => Op::Store {
            addr: addr(a),
            value: value(v),
        },
        Op::Copy { dst, src } => Op::Copy {
            dst: f(dst),
            src: value(src),
        },
        Op::AddValue { dst, value: v } => Op::AddValue {
            dst: f(dst),
            value: value(v),
        },
        Op::Memcpy {
            dst,
            src,
            len,
            scratch,
            unique,
        } => Op::Memcpy {
            dst: f(dst),
            src: f(src),
            len: f(len),
            scratch: f(scratch),
            unique: *unique,
        },
        Op::Commit {
            kind,
            addr: a,
            value: v,
        } => Op::Commit {
            kind: *kind,
            addr: addr(a),
            value: value(v),
        },
        Op::Delay { counts, point, reg } => Op::Delay {
            counts: f(counts),
            point: *point,
            reg: f(reg),
        },
        Op::End { abort } => Op::End {
            abort: abort.clone(),
        },
    }
}

/// One register of the allocation, named `r0`, `r1`, …
#[derive(Default)]
struct Reg {
    /// The value it holds now (possibly dead).
    holds: Option<String>,
    /// The parameter it receives on entry, if any.
    preload: Option<String>,
    /// Whether anything else is written into it after entry (then a preload is `inout`).
    written: bool,
    /// Whether it was ever given a value.
    used: bool,
    /// Whether it must have a byte part.
    byte: bool,
}

struct Allocator<'a> {
    /// Register names each instruction reads and writes.
    accesses: Vec<(Vec<String>, Vec<String>)>,
    ops: &'a [Op],
    /// Parameters: name → their Rust expression.
    inputs: HashMap<String, TokenStream>,
    /// Values that must sit in a register with a byte part.
    bytes: BTreeSet<String>,
    regs: Vec<Reg>,
    /// Whether the frame exists (and its pointer takes one of the registers).
    frame: bool,
    /// Registers with a byte part the target has at most.
    byte_registers: usize,
    /// Where each value is now.
    loc: HashMap<String, usize>,
    /// The frame word that holds each value's current contents, when one does.
    home: HashMap<String, usize>,
    /// Values written inside the section (a parameter's frame word is stale afterwards).
    defined: BTreeSet<String>,
    words: Vec<FrameWord>,
    /// The frame word of each parameter kept there.
    input_word: HashMap<String, usize>,
    /// `const` operands of frame offsets: word → name.
    offsets: BTreeMap<usize, String>,
    out: Vec<Op>,
}

impl Allocator<'_> {
    fn reg_name(p: usize) -> String {
        format!("r{p}")
    }

    /// The next instruction after `i` that reads `v`'s current value (`None`: it is dead).
    fn next_use(&self, v: &str, i: usize) -> Option<usize> {
        for (j, (reads, writes)) in self.accesses.iter().enumerate().skip(i + 1) {
            if reads.iter().any(|r| r == v) {
                return Some(j);
            }
            if writes.iter().any(|w| w == v) {
                return None;
            }
        }
        None
    }

    /// The `const` operand naming a frame word's byte offset (declared once per word).
    fn offset(&mut self, word: usize) -> String {
        self.offsets
            .entry(word)
            .or_insert_with(|| format!("k{word}"))
            .clone()
    }

    /// A register for a value of instruction `i` that none of `busy` occupies: a free one, a
    /// never-used one, or the one whose value is needed last (stored first if only the register
    /// holds it).
    fn pick(&mut self, i: usize, busy: &BTreeSet<String>, byte: bool) -> Option<usize> {
        let byte_count = self.regs.iter().filter(|r| r.byte).count();
        let allowed = |r: &Reg| !byte || r.byte || byte_count < self.byte_registers;
        let available: Vec<usize> = (0..self.regs.len())
            .filter(|&p| {
                let r = &self.regs[p];
                allowed(r) && r.holds.as_ref().is_none_or(|v| !busy.contains(v))
            })
            .collect();
        let dead = |p: &usize| {
            let r = &self.regs[*p];
            r.used
                && r.holds
                    .as_ref()
                    .is_none_or(|v| self.next_use(v, i).is_none())
        };
        // Free: used before, holding nothing still needed; for a byte value one that already
        // has a byte part.
        let free = available
            .iter()
            .copied()
            .filter(dead)
            .max_by_key(|p| self.regs[*p].byte == byte);
        let chosen = free
            .or_else(|| available.iter().copied().find(|p| !self.regs[*p].used))
            .or_else(|| {
                available.iter().copied().max_by_key(|p| {
                    let v = self.regs[*p].holds.as_deref().expect("a used register");
                    (self.next_use(v, i), self.is_clean(v))
                })
            })?;
        if let Some(v) = self.regs[chosen].holds.take() {
            self.loc.remove(&v);
            // A value still needed is reloaded later: memory must hold it.
            if self.next_use(&v, i).is_some() {
                if !self.frame {
                    return None;
                }
                if !self.is_clean(&v) {
                    let word = self.words.len();
                    self.words.push(FrameWord::Spill);
                    self.out.push(Op::Save {
                        slots: FRAME.into(),
                        slot: word,
                        src: Self::reg_name(chosen),
                    });
                    self.home.insert(v, word);
                }
            }
        }
        self.regs[chosen].used = true;
        if byte {
            self.regs[chosen].byte = true;
        }
        Some(chosen)
    }

    /// Whether memory holds `v`'s current value (so evicting it needs no store).
    fn is_clean(&self, v: &str) -> bool {
        self.home.contains_key(v) || (self.inputs.contains_key(v) && !self.defined.contains(v))
    }

    /// Puts `v` (read by instruction `i`) into a register: on entry if it is a parameter and a
    /// register is still unused, otherwise loaded from its frame word.
    fn ensure(&mut self, v: &str, i: usize, busy: &BTreeSet<String>) -> Option<()> {
        if self.loc.contains_key(v) {
            return Some(());
        }
        let parameter = self.inputs.contains_key(v) && !self.defined.contains(v);
        if parameter {
            if let Some(p) = (0..self.regs.len()).find(|&p| !self.regs[p].used) {
                let r = &mut self.regs[p];
                r.used = true;
                r.preload = Some(v.to_string());
                r.holds = Some(v.to_string());
                self.loc.insert(v.to_string(), p);
                return Some(());
            }
        }
        let word = self.memory_word(v)?;
        let p = self.pick(i, busy, self.bytes.contains(v))?;
        self.load(p, word);
        let r = &mut self.regs[p];
        r.holds = Some(v.to_string());
        self.loc.insert(v.to_string(), p);
        Some(())
    }

    /// The frame word holding `v`'s current value (a parameter gets its word on first need),
    /// or `None` without a frame or when only a register holds `v`.
    fn memory_word(&mut self, v: &str) -> Option<usize> {
        if !self.frame {
            return None;
        }
        if let Some(w) = self.home.get(v) {
            return Some(*w);
        }
        if !self.inputs.contains_key(v) || self.defined.contains(v) {
            return None;
        }
        Some(*self.input_word.entry(v.to_string()).or_insert_with(|| {
            self.words.push(FrameWord::Input(self.inputs[v].clone()));
            self.words.len() - 1
        }))
    }

    /// Loads frame word `word` into register `p`.
    fn load(&mut self, p: usize, word: usize) {
        let disp = self.offset(word);
        self.out.push(Op::Load {
            dst: Self::reg_name(p),
            addr: Addr {
                base: FRAME.into(),
                index: None,
                disp: Some(disp),
            },
        });
        self.regs[p].written = true;
    }

    /// A copy of a value that is only in memory: loaded straight into the destination, which
    /// saves an instruction and a register. Returns whether it applied.
    fn copy_from_memory(&mut self, i: usize) -> Option<bool> {
        let Op::Copy {
            dst,
            src: Value::Reg(src),
        } = &self.ops[i]
        else {
            return Some(false);
        };
        if self.loc.contains_key(src) || !self.accesses[i].0.contains(src) {
            return Some(false);
        }
        let Some(word) = self.memory_word(src) else {
            return Some(false);
        };
        let busy: BTreeSet<String> = [dst.clone(), src.clone()].into();
        let p = match self.loc.get(dst) {
            Some(p) => *p,
            None => self.pick(i, &busy, self.bytes.contains(dst))?,
        };
        self.load(p, word);
        self.regs[p].holds = Some(dst.clone());
        self.loc.insert(dst.clone(), p);
        self.defined.insert(dst.clone());
        self.home.remove(dst);
        Some(true)
    }

    fn run(&mut self) -> Option<()> {
        for i in 0..self.ops.len() {
            let (reads, writes) = self.accesses[i].clone();
            let busy: BTreeSet<String> = reads.iter().chain(&writes).cloned().collect();
            if busy.len() > self.regs.len() {
                return None;
            }
            if self.copy_from_memory(i)? {
                continue;
            }
            for r in &reads {
                self.ensure(r, i, &busy)?;
            }
            for w in &writes {
                if !self.loc.contains_key(w) {
                    let p = self.pick(i, &busy, self.bytes.contains(w))?;
                    self.regs[p].holds = Some(w.clone());
                    self.loc.insert(w.clone(), p);
                }
                let p = self.loc[w];
                if self.bytes.contains(w) && !self.regs[p].byte {
                    return None;
                }
            }
            let loc = &self.loc;
            let frame = self.frame;
            let op = rename(&self.ops[i], &|n: &str| match loc.get(n) {
                Some(p) => Self::reg_name(*p),
                None if frame && n == "slots" => FRAME.into(),
                None => n.to_string(),
            });
            self.out.push(op);
            for w in &writes {
                self.defined.insert(w.clone());
                self.home.remove(w);
                self.regs[self.loc[w]].written = true;
            }
            if let Op::Save { src, slot, .. } = &self.ops[i] {
                if self.frame {
                    self.home.insert(src.clone(), *slot);
                }
            }
        }
        Some(())
    }
}

/// `plan` with values that are never live at the same time sharing a register, in the fewest
/// registers that needs no memory (no spill, no parameter kept in memory); `plan` itself when
/// no fewer work. Each register operand of a section is one the compiler cannot use around
/// it: a hit path whose section names fewer values saves fewer callee-saved registers.
pub fn share(plan: Plan, word_bytes: usize) -> Plan {
    let mut best = None;
    for n in (1..plan.registers()).rev() {
        match allocate(&plan, n, n, word_bytes, false) {
            Some(fitted) => best = Some(fitted),
            None => break,
        }
    }
    best.unwrap_or(plan)
}

/// `plan` with its values fitted into `available` registers, or `None` when some instruction
/// needs more than that at once. Registers are tried alone first; the frame (which takes one
/// register for its address) only when they do not suffice. `byte_registers`: how many
/// registers of the target have a byte part.
pub fn fit(plan: Plan, available: usize, byte_registers: usize, word_bytes: usize) -> Option<Plan> {
    for frame in [false, true] {
        if let Some(fitted) = allocate(&plan, available, byte_registers, word_bytes, frame) {
            return Some(fitted);
        }
    }
    None
}

fn allocate(
    plan: &Plan,
    available: usize,
    byte_registers: usize,
    word_bytes: usize,
    frame: bool,
) -> Option<Plan> {
    let general = if frame {
        available.checked_sub(1)?
    } else {
        available
    };
    let mut inputs = HashMap::new();
    let mut registers = BTreeSet::new();
    for (name, op) in &plan.operands {
        // The templates' own scratch registers are named inside the templates: they keep their
        // operands, shared with no value.
        if (frame && name == "slots") || plan.pinned.contains(name) {
            continue;
        }
        match op {
            Operand::In(e) | Operand::InOut(e) => {
                inputs.insert(name.clone(), e.clone());
                registers.insert(name.clone());
            }
            Operand::Scratch => {
                registers.insert(name.clone());
            }
            _ => {}
        }
    }
    let accesses = plan
        .ops
        .iter()
        .map(|op| {
            let (reads, writes) = crate::plan::reads_writes(op, &plan.pinned);
            let keep = |names: Vec<String>| {
                let mut out: Vec<String> = Vec::new();
                for n in names {
                    if registers.contains(&n) && !out.contains(&n) {
                        out.push(n);
                    }
                }
                out
            };
            (keep(reads), keep(writes))
        })
        .collect();
    let mut a = Allocator {
        accesses,
        ops: &plan.ops,
        inputs,
        bytes: plan.byte_operands.iter().cloned().collect(),
        regs: (0..general).map(|_| Reg::default()).collect(),
        frame,
        byte_registers,
        loc: HashMap::new(),
        home: HashMap::new(),
        defined: BTreeSet::new(),
        words: (0..plan.saved.len()).map(FrameWord::Slot).collect(),
        input_word: HashMap::new(),
        offsets: BTreeMap::new(),
        out: Vec::new(),
    };
    a.run()?;

    let mut operands = Vec::new();
    let mut byte_operands = Vec::new();
    for (p, r) in a.regs.iter().enumerate().filter(|(_, r)| r.used) {
        let name = Allocator::reg_name(p);
        let op = match &r.preload {
            Some(v) if r.written => Operand::InOut(a.inputs[v].clone()),
            Some(v) => Operand::In(a.inputs[v].clone()),
            None => Operand::Scratch,
        };
        if r.byte {
            byte_operands.push(name.clone());
        }
        operands.push((name, op));
    }
    if frame {
        operands.push((FRAME.into(), Operand::In(quote!(__rseq_frame.as_mut_ptr()))));
    }
    for (name, op) in &plan.operands {
        let replaced = registers.contains(name) || (frame && name == "slots");
        if !replaced {
            operands.push((name.clone(), op.clone()));
        }
    }
    for (word, name) in &a.offsets {
        let bytes = Literal::usize_unsuffixed(word * word_bytes);
        operands.push((name.clone(), Operand::Const(quote!(#bytes))));
    }
    Some(Plan {
        hoists: plan.hoists.clone(),
        checks: plan.checks.clone(),
        operands,
        ops: a.out,
        saved: plan.saved.clone(),
        fails: plan.fails,
        byte_operands,
        frame: frame.then_some(a.words),
        pinned: plan.pinned.clone(),
    })
}

#[cfg(test)]
mod tests {
    //! Allocated plans are run on a small machine next to the same section's plan with a
    //! register for every value; both must take the same exit, write the same memory and leave
    //! the same results, whatever the inputs.

    use super::*;
    use crate::{parse, valid};
    use rseq_arch::template::{CommitKind, Cond, IndexField};

    const AREA: u32 = 0x1000_0000;
    const SLOTS: u32 = 0x2000_0000;
    const FRAME: u32 = 0x3000_0000;
    /// What `Begin` leaves in its scratch register (i686's code address), checked by
    /// `ReadIndex`.
    const ANCHOR: u32 = 0xC0DE_0024;
    /// The index limit (a `sym`): CPUs 0..LIMIT run the section, others abort.
    const LIMIT: u32 = 4;

    fn hash(text: &str, seed: u32) -> u32 {
        let mut h = 0x811c_9dc5u32 ^ seed.wrapping_mul(0x9e37_79b9);
        for b in text.bytes() {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
        h
    }

    /// Registers by operand name and byte memory; unwritten bytes read as a hash of their
    /// address (so loaded pointers lead somewhere), except in the slot and frame arrays (0).
    struct Machine<'p> {
        plan: &'p Plan,
        seed: u32,
        regs: HashMap<String, u32>,
        memory: BTreeMap<u32, u8>,
    }

    /// How a run ended: the outcome code, the memory it wrote outside the frame, the result
    /// slots.
    type Outcome = (u8, BTreeMap<u32, u8>, Vec<u32>);

    impl Machine<'_> {
        /// An input's value: small numbers (pointers, lengths, compared values), so places
        /// alias each other often and copies stay short.
        fn input(&self, expr: &TokenStream) -> u32 {
            match expr.to_string().as_str() {
                "__rseq_area" => AREA,
                "__rseq_slots . as_mut_ptr ()" => SLOTS,
                "__rseq_frame . as_mut_ptr ()" => FRAME,
                e => hash(e, self.seed) % 48,
            }
        }

        fn constant(&self, name: &str) -> u32 {
            let Some((_, Operand::Const(e))) = self.plan.operands.iter().find(|(n, _)| n == name)
            else {
                panic!("no const operand {name}")
            };
            let e = e.to_string();
            if let Ok(n) = e.parse() {
                n
            } else if e.contains("STRIDE") && !e.contains("stride_") {
                64 + 4 * (hash(&e, 0) % 3)
            } else {
                4 * (hash(&e, 0) % 5)
            }
        }

        fn byte(&self, a: u32) -> u8 {
            match self.memory.get(&a) {
                Some(b) => *b,
                None if a >= SLOTS => 0,
                None => hash(&a.to_string(), self.seed) as u8 % 48,
            }
        }

        fn load(&self, a: u32) -> u32 {
            u32::from_le_bytes([0, 1, 2, 3].map(|i| self.byte(a.wrapping_add(i))))
        }

        fn store(&mut self, a: u32, v: u32) {
            for (i, b) in v.to_le_bytes().into_iter().enumerate() {
                self.memory.insert(a.wrapping_add(i as u32), b);
            }
        }

        fn reg(&self, r: &str) -> u32 {
            *self
                .regs
                .get(r)
                .unwrap_or_else(|| panic!("register {r} has no value"))
        }

        fn value(&self, v: &Value) -> u32 {
            match v {
                Value::Reg(r) => self.reg(r),
                Value::Imm(i) => *i as u32,
            }
        }

        fn ea(&self, a: &Addr) -> u32 {
            let index = a
                .index
                .as_ref()
                .map_or(0, |(i, s)| self.reg(i).wrapping_mul(*s as u32));
            let disp = a.disp.as_ref().map_or(0, |d| self.constant(d));
            self.reg(&a.base).wrapping_add(index).wrapping_add(disp)
        }

        fn exit(&self, label: &str) -> u8 {
            match self.plan.operands.iter().find(|(n, _)| n == label) {
                Some((_, Operand::Label(code))) => *code,
                _ => panic!("no label operand {label}"),
            }
        }

        fn run(plan: &Plan, seed: u32, cpu: u32) -> Outcome {
            let mut m = Machine {
                plan,
                seed,
                regs: HashMap::new(),
                memory: BTreeMap::new(),
            };
            for (i, (name, op)) in plan.operands.iter().enumerate() {
                let v = match op {
                    Operand::In(e) | Operand::InOut(e) => m.input(e),
                    Operand::Scratch => 0xBAD0_0000 + i as u32,
                    _ => continue,
                };
                m.regs.insert(name.clone(), v);
            }
            for (i, word) in plan.frame.iter().flatten().enumerate() {
                if let FrameWord::Input(e) = word {
                    let v = m.input(e);
                    m.store(FRAME + 4 * i as u32, v);
                }
            }
            m.store(AREA + 4, cpu);
            m.store(AREA + 24, cpu);
            let initial = m.memory.clone();
            let code = m.steps();
            let written = m
                .memory
                .iter()
                .filter(|(a, b)| **a < SLOTS && initial.get(a) != Some(b))
                .map(|(a, b)| (*a, *b))
                .collect();
            let results = if plan.frame.is_some() { FRAME } else { SLOTS };
            let slots = (0..plan.saved.len() as u32)
                .map(|i| m.load(results + 4 * i))
                .collect();
            (code, written, slots)
        }

        fn steps(&mut self) -> u8 {
            let plan = self.plan;
            for op in &plan.ops {
                match op {
                    Op::Begin { area, scratch, .. } => {
                        let desc = self.reg(area) + 8;
                        self.store(desc, 0xDE5C);
                        self.regs.insert(scratch.clone(), ANCHOR);
                    }
                    Op::ReadIndex {
                        dst, area, field, ..
                    } => {
                        assert_eq!(self.reg(dst), ANCHOR, "ReadIndex must find Begin's value");
                        let offset = match field {
                            IndexField::CpuId => 4,
                            IndexField::MmCid => 24,
                        };
                        let index = self.load(self.reg(area) + offset);
                        if index >= LIMIT {
                            return crate::plan::ABORTED;
                        }
                        self.regs.insert(dst.clone(), index);
                    }
                    Op::CheckIndex {
                        index,
                        expected,
                        exit,
                    } => {
                        if self.reg(index) != self.reg(expected) {
                            return self.exit(exit);
                        }
                    }
                    Op::Scale {
                        dst, index, stride, ..
                    } => {
                        let v = self.reg(index).wrapping_mul(self.constant(stride));
                        self.regs.insert(dst.clone(), v);
                    }
                    Op::AddTo { base, offset } => {
                        let v = self.reg(base).wrapping_add(self.reg(offset));
                        self.regs.insert(base.clone(), v);
                    }
                    Op::Load { dst, addr } => {
                        let v = self.load(self.ea(addr));
                        self.regs.insert(dst.clone(), v);
                    }
                    Op::Save { slots, slot, src } => {
                        self.store(self.reg(slots) + 4 * *slot as u32, self.reg(src));
                    }
                    Op::ExitIf { a, cond, b, exit } => {
                        let (a, b) = (self.value(a), self.value(b));
                        let holds = match cond {
                            Cond::Eq => a == b,
                            Cond::Ne => a != b,
                            Cond::Lt => a < b,
                            Cond::Le => a <= b,
                            Cond::Gt => a > b,
                            Cond::Ge => a >= b,
                        };
                        if holds {
                            return self.exit(exit);
                        }
                    }
                    Op::Store { addr, value } => self.store(self.ea(addr), self.value(value)),
                    Op::Copy { dst, src } => {
                        let v = self.value(src);
                        self.regs.insert(dst.clone(), v);
                    }
                    Op::AddValue { dst, value } => {
                        let v = self.reg(dst).wrapping_add(self.value(value));
                        self.regs.insert(dst.clone(), v);
                    }
                    Op::Memcpy {
                        dst,
                        src,
                        len,
                        scratch,
                        ..
                    } => {
                        let (d, s, n) = (self.reg(dst), self.reg(src), self.reg(len));
                        for i in 0..n {
                            let b = self.byte(s + i);
                            self.memory.insert(d + i, b);
                        }
                        self.regs.insert(dst.clone(), d + n);
                        self.regs.insert(src.clone(), s + n);
                        self.regs.insert(len.clone(), 0);
                        self.regs.insert(scratch.clone(), 0xBAD);
                    }
                    Op::Commit { kind, addr, value } => {
                        let (a, v) = (self.ea(addr), self.value(value));
                        let v = match kind {
                            CommitKind::Add => self.load(a).wrapping_add(v),
                            CommitKind::Store | CommitKind::StoreRelease => v,
                        };
                        self.store(a, v);
                        return crate::plan::COMMITTED;
                    }
                    Op::Delay { reg, .. } => {
                        self.regs.insert(reg.clone(), 0xDE1A);
                    }
                    Op::End { .. } => panic!("fell into the abort handler"),
                }
            }
            panic!("no commit")
        }
    }

    fn section(attr: TokenStream, item: TokenStream) -> (crate::ast::Section, valid::Checked) {
        let options = parse::parse_options(attr).unwrap();
        let section = parse::parse_section(options, item).unwrap();
        let checked = valid::validate(&section).unwrap_or_else(|e| panic!("{e}"));
        (section, checked)
    }

    fn i686(available: usize) -> rseq_arch::Codegen {
        let mut codegen = rseq_arch::x86::CODEGEN.unwrap();
        codegen.available_registers = available;
        codegen
    }

    /// Sections that need more registers than i686 has, in register counts without allocation.
    fn crowded() -> Vec<(&'static str, TokenStream, TokenStream)> {
        vec![
            (
                "cmpeq_store",
                quote!(),
                quote! {
                    fn f(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> Result<(), usize> {
                        let seen = load(v[cpu]);
                        if seen != expect { fail(Err(seen)) }
                        commit::store(v[cpu], new);
                        Ok(())
                    }
                },
            ),
            (
                "double_compare",
                quote!(index = mm_cid),
                quote! {
                    fn f(p: &PerCpu<Pair>, ea: usize, eb: usize, new: usize) -> Result<(), (usize, usize)> {
                        let a = load(p[cpu].a);
                        let b = load(p[cpu].b);
                        if a != ea { fail(Err((a, b))) }
                        if b != eb { fail(Err((a, b))) }
                        commit::store_release(p[cpu].a, new);
                        Ok(())
                    }
                },
            ),
            (
                "pop",
                quote!(),
                quote! {
                    unsafe fn f(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
                        let head: *mut Node = load(heads[cpu]);
                        if head == null { fail(None) }
                        let next = load((*head).next);
                        commit::store(heads[cpu], next);
                        Some(head)
                    }
                },
            ),
            (
                "buffer_pop",
                quote!(),
                quote! {
                    unsafe fn f(b: &PerCpu<Buffer>) -> Option<usize> {
                        let limit = load(b[cpu].limit);
                        if limit == 0 { fail(None) }
                        let len = load(b[cpu].len);
                        if len == 0 { fail(None) }
                        let last = add(len, { usize::MAX });
                        let item = load(b[cpu].items[last]);
                        commit::store(b[cpu].len, last);
                        Some(item)
                    }
                },
            ),
            (
                "publish",
                quote!(),
                quote! {
                    unsafe fn f(slots: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8, len: usize) -> bool {
                        let current = load(slots[cpu]);
                        if current != 0 { fail(false) }
                        memcpy(dst, src, len);
                        commit::store(slots[cpu], dst);
                        true
                    }
                },
            ),
            (
                "two_bases",
                quote!(),
                quote! {
                    fn f(small: &PerCpu<AtomicUsize>, wide: &PerCpu<Wide>, n: usize) -> usize {
                        let x = load(small[cpu]);
                        let y = load(wide[cpu].last);
                        let sum = add(x, y);
                        if x > 3000000000 { fail(0) }
                        store(small[cpu], { n * 2 });
                        commit::store(wide[cpu].last, sum);
                        sum
                    }
                },
            ),
            (
                "given_cpu",
                quote!(index = given(cpu), moved = false),
                quote! {
                    unsafe fn f(c: &PerCpu<Slot>, cpu: usize, p: *mut Node, n: usize, m: usize) -> bool {
                        let v = load(c[cpu].a);
                        if v == n { fail(false) }
                        store((*p).next, m);
                        commit::add(c[cpu].b, n);
                        true
                    }
                },
            ),
            (
                "many_parameters",
                quote!(),
                quote! {
                    unsafe fn f(c: &PerCpu<Slot>, a: usize, b: usize, d: usize, e: usize, g: usize) -> usize {
                        let x = load(c[cpu].a);
                        let y = add(x, a);
                        if y == d { fail(1) }
                        store(c[cpu].b, e);
                        let w = add(y, g);
                        if w >= b { fail(2) }
                        commit::store(c[cpu].a, w);
                        x
                    }
                },
            ),
        ]
    }

    #[test]
    fn allocated_sections_behave_like_unallocated_ones() {
        for (name, attr, item) in crowded() {
            let (section, checked) = section(attr, item);
            let reference = Plan::build_with(&section, &checked, 4, &i686(64));
            assert!(reference.frame.is_none(), "{name}");
            assert!(reference.registers() > 5, "{name} fits without allocation");
            for available in [5, 6, 4, 3] {
                let plan = Plan::build_with(&section, &checked, 4, &i686(available));
                if plan.registers() > available {
                    // Only a copy (four registers, plus the frame's) may not fit.
                    assert!(available < 5, "{name} does not fit in {available}");
                    continue;
                }
                for seed in 0..40 {
                    let cpu = seed % 5;
                    assert_eq!(
                        Machine::run(&plan, seed, cpu),
                        Machine::run(&reference, seed, cpu),
                        "{name} with {available} registers, seed {seed}"
                    );
                }
            }
        }
    }

    /// Register sharing without memory (`share`, every target but i686): fewer registers, the
    /// same exits, memory and results.
    #[test]
    fn shared_registers_behave_like_one_register_per_value() {
        for (name, attr, item) in crowded() {
            let (section, checked) = section(attr, item);
            let reference = Plan::build_with(&section, &checked, 4, &i686(64));
            let shared = share(Plan::build_with(&section, &checked, 4, &i686(64)), 4);
            assert!(shared.frame.is_none(), "{name}");
            assert!(
                shared.registers() < reference.registers(),
                "{name}: {} registers, as many as values",
                shared.registers()
            );
            for seed in 0..40 {
                let cpu = seed % 5;
                assert_eq!(
                    Machine::run(&shared, seed, cpu),
                    Machine::run(&reference, seed, cpu),
                    "{name} with {} registers, seed {seed}",
                    shared.registers()
                );
            }
        }
    }

    /// Targets whose templates have scratch registers of their own (`t0`, `t1`) keep them as
    /// operands of their own: the templates name them, whatever the values share (a plan may
    /// also give them to a copy's count and byte, as before sharing).
    #[test]
    fn template_scratch_registers_keep_their_operands() {
        for (name, attr, item) in crowded() {
            let (section, checked) = section(attr, item);
            for arch in ["aarch64", "riscv64", "s390x", "powerpc64", "arm"] {
                let codegen = rseq_arch::codegen(arch).unwrap();
                assert!(codegen.scratch_registers > 0, "{arch}");
                let plan = Plan::build(&section, &checked, arch);
                assert_eq!(
                    plan.pinned.len(),
                    codegen.scratch_registers,
                    "{name} on {arch}"
                );
                for t in 0..codegen.scratch_registers {
                    let t = format!("t{t}");
                    assert!(plan.pinned.contains(&t), "{name} on {arch}: {t} not pinned");
                    assert!(
                        plan.operands
                            .iter()
                            .any(|(n, o)| *n == t && matches!(o, Operand::Scratch)),
                        "{name} on {arch}: no operand {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_section_fits_in_the_five_registers_of_i686() {
        for (name, attr, item) in crowded() {
            let (section, checked) = section(attr, item);
            let plan = Plan::build(&section, &checked, "x86");
            assert!(plan.registers() <= 5, "{name}: {}", plan.registers());
            // Byte registers only where a copy moves bytes, and never more than eax–edx.
            assert!(plan.byte_operands.len() <= 4, "{name}");
            let copies = plan.ops.iter().any(|op| matches!(op, Op::Memcpy { .. }));
            assert_eq!(copies, !plan.byte_operands.is_empty(), "{name}");
        }
    }

    // Delay loops (feature `inject-delays`) add two registers to every section.
    #[cfg(not(feature = "inject-delays"))]
    #[test]
    fn a_section_that_fits_keeps_one_register_per_value() {
        let (section, checked) = section(
            quote!(),
            quote! {
                fn add(counters: &PerCpu<AtomicUsize>, n: usize) {
                    commit::add(counters[cpu], n);
                }
            },
        );
        let plan = Plan::build(&section, &checked, "x86");
        assert!(plan.frame.is_none());
        let names: Vec<&str> = plan.operands.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"a_n") && names.contains(&"idx"),
            "{names:?}"
        );
    }

    // Delay loops (feature `inject-delays`) add two registers to every section.
    #[cfg(not(feature = "inject-delays"))]
    #[test]
    fn registers_are_shared_before_memory_is_used() {
        // Six values, but never more than four live at once: no frame needed.
        let (section, checked) = section(
            quote!(),
            quote! {
                fn f(v: &PerCpu<Slot>) {
                    let a = load(v[cpu].a);
                    if a == 0 { fail(()) }
                    let b = load(v[cpu].b);
                    if b == 0 { fail(()) }
                    commit::store(v[cpu].a, 1);
                }
            },
        );
        let plan = Plan::build_with(&section, &checked, 4, &i686(4));
        assert!(plan.registers() <= 4);
        assert!(plan.frame.is_none());
        for seed in 0..20 {
            let reference = Plan::build_with(&section, &checked, 4, &i686(64));
            assert_eq!(
                Machine::run(&plan, seed, seed % 5),
                Machine::run(&reference, seed, seed % 5)
            );
        }
    }

    #[test]
    fn an_instruction_that_needs_more_registers_than_there_are_does_not_fit() {
        let (_, attr, item) = crowded()
            .into_iter()
            .find(|(name, ..)| *name == "publish")
            .unwrap();
        let (section, checked) = section(attr, item);
        // The copy needs four registers, and the frame a fifth: four do not do.
        let plan = Plan::build_with(&section, &checked, 4, &i686(4));
        assert!(plan.registers() > 4);
        assert!(plan.frame.is_none());
        assert!(fit(Plan::build_with(&section, &checked, 4, &i686(64)), 4, 3, 4).is_none());
    }
}

//! s390x (LP64, big-endian, TSO).
//!
//! - Signature `0xb2ff0fff` = `trap4 4095(%r0)`.
//! - Thread pointer: access registers a0 (high half) and a1 (low half), read with `ear`.
//! - Loads and stores are totally ordered: a release commit is a plain store.
//! - Cache line: 256 bytes (z196 and later).

use crate::Arch;

/// s390x facts.
pub const ARCH: Arch = Arch {
    target_arch: "s390x",
    signature: 0xb2ff_0fff,
    signature_directive: ".long 0xb2ff0fff",
    cache_line: 256,
    pointer_bytes: 8,
    total_store_order: true,
    supported: true,
};

/// Code generation for s390x: memory operands take displacement + index + base (no scaling),
/// like x86's; `t0` scales element indexes and `t1` holds immediates. `brcl` reaches ±4 GiB, so
/// every exit is one branch. Registers come from `reg_addr` (r1–r10, r12–r14, one kept spare): r0 in an
/// address means "no register".
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 12,
    register_class: "reg_addr",
    scratch_registers: 2,
    clobbers: &[],
    uses_stack: false,
    byte_register_class: "reg_addr",
    att_syntax: false,
    values_in_memory: false,
    pc_relative_data: true,
});

use crate::template::{Addr, CommitKind, Cond, Op, Value};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// `brcl` masks after an unsigned compare (CC0 equal = 8, CC1 low = 4, CC2 high = 2).
fn mask(c: Cond) -> u8 {
    match c {
        Cond::Eq => 8,
        Cond::Ne => 6,
        Cond::Lt => 4,
        Cond::Le => 12,
        Cond::Gt => 2,
        Cond::Ge => 10,
    }
}

/// A `d(x,b)` operand for `a`, scaling an element index into `t0`.
fn mem(out: &mut Vec<String>, a: &Addr) -> String {
    let d = a
        .disp
        .as_ref()
        .map_or(String::from("0"), |d| format!("{{{d}}}"));
    let b = format!("{{{}}}", a.base);
    match &a.index {
        None => format!("{d}(0,{b})"),
        Some((i, 1)) => format!("{d}({{{i}}},{b})"),
        Some((i, _)) => {
            out.push(format!("sllg {{t0}}, {{{i}}}, 3"));
            format!("{d}({{t0}},{b})")
        }
    }
}

/// A register holding `v` (immediates go through `t1`).
fn reg(out: &mut Vec<String>, v: &Value) -> String {
    match v {
        Value::Reg(r) => format!("{{{r}}}"),
        Value::Imm(i) => {
            out.push(format!("lgfi {{t1}}, {i}"));
            "{t1}".into()
        }
    }
}

/// Template lines for a critical section (see [`crate::x86_64::emit`] for the label plan).
pub fn emit(ops: &[Op]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Begin { area, exits, .. } => {
                out.push("/* scratch {t0} {t1} */".into());
                crate::tables::emit(&mut out, exits, 8, true);
                out.push("larl {t0}, 20b".into());
                out.push(format!(
                    "stg {{t0}}, {}(0,{{{area}}})",
                    crate::tables::rseq_cs_offset(8, true)
                ));
                out.push("21:".into());
            }
            Op::ReadIndex {
                dst,
                area,
                field,
                limit,
            } => {
                let offset = field.offset();
                out.push(format!("llgf {{{dst}}}, {offset}(0,{{{area}}})"));
                out.push(format!("larl {{t0}}, {{{limit}}}"));
                out.push(format!("cl {{{dst}}}, 0(0,{{t0}})"));
                out.push(format!("brcl {}, 23f", mask(Cond::Ge)));
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                out.push(format!("clgr {{{index}}}, {{{expected}}}"));
                out.push(format!("brcl {}, {{{exit}}}", mask(Cond::Ne)));
            }
            Op::Scale {
                dst,
                index,
                stride,
                pow2,
                shift,
            } => {
                out.push(format!(".if {{{pow2}}}"));
                out.push(format!("sllg {{{dst}}}, {{{index}}}, {{{shift}}}"));
                out.push(".else".into());
                if dst != index {
                    out.push(format!("lgr {{{dst}}}, {{{index}}}"));
                }
                out.push(format!("msgfi {{{dst}}}, {{{stride}}}"));
                out.push(".endif".into());
            }
            Op::AddTo { base, offset } => out.push(format!("agr {{{base}}}, {{{offset}}}")),
            Op::Load { dst, addr } => {
                let m = mem(&mut out, addr);
                out.push(format!("lg {{{dst}}}, {m}"));
            }
            Op::Save { slots, slot, src } => {
                out.push(format!("stg {{{src}}}, {}(0,{{{slots}}})", slot * 8))
            }
            Op::ExitIf { a, cond, b, exit } => {
                let (a, c, b) = match (a, b) {
                    (Value::Imm(_), Value::Reg(_)) => (b, cond.swapped(), a),
                    _ => (a, *cond, b),
                };
                let a = match a {
                    Value::Reg(r) => format!("{{{r}}}"),
                    Value::Imm(i) => {
                        out.push(format!("lgfi {{t0}}, {i}"));
                        "{t0}".into()
                    }
                };
                match b {
                    Value::Imm(i) => out.push(format!("clgfi {a}, {i}")),
                    Value::Reg(r) => out.push(format!("clgr {a}, {{{r}}}")),
                }
                out.push(format!("brcl {}, {{{exit}}}", mask(c)));
            }
            Op::Store { addr, value } => {
                let v = reg(&mut out, value);
                let m = mem(&mut out, addr);
                out.push(format!("stg {v}, {m}"));
            }
            Op::Copy { dst, src } => match src {
                Value::Reg(r) => out.push(format!("lgr {{{dst}}}, {{{r}}}")),
                Value::Imm(i) => out.push(format!("lgfi {{{dst}}}, {i}")),
            },
            Op::AddValue { dst, value } => match value {
                Value::Reg(r) => out.push(format!("agr {{{dst}}}, {{{r}}}")),
                Value::Imm(i) => out.push(format!("agfi {{{dst}}}, {i}")),
            },
            Op::Memcpy {
                dst,
                src,
                len,
                scratch,
                unique,
            } => {
                let (top, done) = crate::template::memcpy_labels(*unique);
                out.push(format!("ltgr {{{len}}}, {{{len}}}"));
                out.push(format!("brcl 8, {done}f"));
                out.push(format!("{top}:"));
                out.push(format!("llgc {{{scratch}}}, 0(0,{{{src}}})"));
                out.push(format!("stc {{{scratch}}}, 0(0,{{{dst}}})"));
                out.push(format!("la {{{src}}}, 1(0,{{{src}}})"));
                out.push(format!("la {{{dst}}}, 1(0,{{{dst}}})"));
                out.push(format!("brctg {{{len}}}, {top}b"));
                out.push(format!("{done}:"));
            }
            Op::Commit { kind, addr, value } => {
                match kind {
                    // s390x is TSO: a plain store is already ordered after every earlier access.
                    CommitKind::Store | CommitKind::StoreRelease => {
                        let v = reg(&mut out, value);
                        let m = mem(&mut out, addr);
                        out.push(format!("stg {v}, {m}"));
                    }
                    CommitKind::Add => {
                        // Load and add inside the section; the store is the commit.
                        let m = mem(&mut out, addr);
                        out.push(format!("lg {{t1}}, {m}"));
                        match value {
                            Value::Reg(r) => out.push(format!("agr {{t1}}, {{{r}}}")),
                            Value::Imm(i) => out.push(format!("agfi {{t1}}, {i}")),
                        }
                        out.push(format!("stg {{t1}}, {m}"));
                    }
                }
                out.push("22:".into());
            }
            Op::Delay { counts, point, reg } => {
                // `brctg` decrements and branches while the register is not zero.
                out.push(format!("larl {{{reg}}}, {{{counts}}}"));
                out.push(format!("llgf {{{reg}}}, {}(0,{{{reg}}})", 4 * point));
                out.push(format!("ltgr {{{reg}}}, {{{reg}}}"));
                out.push(format!("brc {}, 97f", mask(Cond::Eq)));
                out.push("96:".into());
                out.push(format!("brctg {{{reg}}}, 96b"));
                out.push("97:".into());
            }
            Op::End { abort } => {
                crate::tables::abort_handler(&mut out, ARCH.signature_directive);
                out.push(format!("jg {{{abort}}}"));
                out.push(".popsection".into());
            }
        }
    }
    out
}

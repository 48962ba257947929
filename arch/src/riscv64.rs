//! riscv64 (LP64, little-endian).
//!
//! - Signature `0xf1401073` = `csrw mhartid, x0` (traps in user mode); `.balign 4` first, since
//!   compressed instructions may leave the stream 2-byte aligned.
//! - Thread pointer: `tp`.
//! - Release commit: `fence rw, w` before the store.
//! - Cache line: 64 bytes (SiFive U74, T-Head C910; RSEQ-ABI.md).

use crate::Arch;

/// riscv64 facts.
pub const ARCH: Arch = Arch {
    target_arch: "riscv64",
    signature: 0xf140_1073,
    signature_directive: ".balign 4\n.long 0xf1401073",
    cache_line: 64,
    pointer_bytes: 8,
    total_store_order: false,
    supported: true,
};

/// Code generation for riscv64: loads and stores take a base and a 12-bit displacement, so
/// `t0` forms addresses and `t1` holds immediates; branches reach ±4 KiB and `j` ±1 MiB, so
/// conditional exits branch around a `j`, and jumps to the abort handler (possibly far away)
/// use `auipc`/`jalr`.
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 22,
    register_class: "reg",
    scratch_registers: 2,
    clobbers: &[],
    uses_stack: false,
    byte_register_class: "reg",
    att_syntax: false,
    values_in_memory: false,
    pc_relative_data: true,
});

use crate::template::{Addr, CommitKind, Cond, Op, Value};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

struct Emitter {
    out: Vec<String>,
    next_label: u32,
}

impl Emitter {
    fn line(&mut self, s: impl Into<String>) {
        self.out.push(s.into());
    }

    fn label(&mut self) -> u32 {
        self.next_label += 1;
        self.next_label
    }

    /// A register holding `v`: the operand itself, `zero`, or `scratch` loaded with it.
    fn reg(&mut self, v: &Value, scratch: &str) -> String {
        match v {
            Value::Reg(r) => format!("{{{r}}}"),
            Value::Imm(0) => "zero".into(),
            Value::Imm(i) => {
                self.line(format!("li {{{scratch}}}, {i}"));
                format!("{{{scratch}}}")
            }
        }
    }

    /// A `disp(base)` operand for `a`, forming the address in `t0` when there is an index.
    fn mem(&mut self, a: &Addr) -> String {
        let mut base = format!("{{{}}}", a.base);
        if let Some((i, scale)) = &a.index {
            if *scale == 1 {
                self.line(format!("add {{t0}}, {base}, {{{i}}}"));
            } else {
                self.line(format!("slli {{t0}}, {{{i}}}, 3"));
                self.line(format!("add {{t0}}, {{t0}}, {base}"));
            }
            base = "{t0}".into();
        }
        match &a.disp {
            None => format!("0({base})"),
            Some(d) => {
                self.line(format!(".if {{{d}}} >= 2048"));
                self.line(".error \"a field offset of 2048 bytes or more does not fit a riscv64 critical section\"");
                self.line(".endif");
                format!("{{{d}}}({base})")
            }
        }
    }

    /// `b<cond> a, b, target` for an unsigned comparison.
    fn branch(&mut self, a: &str, c: Cond, b: &str, target: &str) {
        let line = match c {
            Cond::Eq => format!("beq {a}, {b}, {target}"),
            Cond::Ne => format!("bne {a}, {b}, {target}"),
            Cond::Lt => format!("bltu {a}, {b}, {target}"),
            Cond::Ge => format!("bgeu {a}, {b}, {target}"),
            Cond::Le => format!("bgeu {b}, {a}, {target}"),
            Cond::Gt => format!("bltu {b}, {a}, {target}"),
        };
        self.line(line);
    }

    /// An unconditional jump to `target` from anywhere (`auipc`/`jalr` through `t0`).
    fn far_jump(&mut self, target: &str) {
        let here = self.label();
        self.line(format!("{here}:"));
        self.line(format!("auipc {{t0}}, %pcrel_hi({target})"));
        self.line(format!("jalr zero, %pcrel_lo({here}b)({{t0}})"));
    }
}

fn inverse(c: Cond) -> Cond {
    match c {
        Cond::Eq => Cond::Ne,
        Cond::Ne => Cond::Eq,
        Cond::Lt => Cond::Ge,
        Cond::Ge => Cond::Lt,
        Cond::Le => Cond::Gt,
        Cond::Gt => Cond::Le,
    }
}

/// Template lines for a critical section (see [`crate::x86_64::emit`] for the label plan).
pub fn emit(ops: &[Op]) -> Vec<String> {
    let mut e = Emitter {
        out: Vec::new(),
        next_label: 49,
    };
    for op in ops {
        match op {
            Op::Begin { area, exits, .. } => {
                e.line("/* scratch {t0} {t1} */");
                crate::tables::emit(&mut e.out, exits, 8, false);
                e.line("lla {t0}, 20b");
                e.line(format!(
                    "sd {{t0}}, {}({{{area}}})",
                    crate::tables::rseq_cs_offset(8, false)
                ));
                e.line("21:");
            }
            Op::ReadIndex {
                dst,
                area,
                field,
                limit,
            } => {
                let offset = field.offset();
                e.line(format!("lwu {{{dst}}}, {offset}({{{area}}})"));
                e.line(format!("lla {{t0}}, {{{limit}}}"));
                e.line("lwu {t0}, 0({t0})");
                let ok = e.label();
                e.line(format!("bltu {{{dst}}}, {{t0}}, {ok}f"));
                e.far_jump("23f");
                e.line(format!("{ok}:"));
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                let ok = e.label();
                e.line(format!("beq {{{index}}}, {{{expected}}}, {ok}f"));
                e.line(format!("j {{{exit}}}"));
                e.line(format!("{ok}:"));
            }
            Op::Scale {
                dst,
                index,
                stride,
                pow2,
                shift,
            } => {
                e.line(format!(".if {{{pow2}}}"));
                e.line(format!("slli {{{dst}}}, {{{index}}}, {{{shift}}}"));
                e.line(".else");
                e.line(format!("li {{t0}}, {{{stride}}}"));
                e.line(format!("mul {{{dst}}}, {{{index}}}, {{t0}}"));
                e.line(".endif");
            }
            Op::AddTo { base, offset } => {
                e.line(format!("add {{{base}}}, {{{base}}}, {{{offset}}}"))
            }
            Op::Load { dst, addr } => {
                let m = e.mem(addr);
                e.line(format!("ld {{{dst}}}, {m}"));
            }
            Op::Save { slots, slot, src } => {
                e.line(format!("sd {{{src}}}, {}({{{slots}}})", slot * 8))
            }
            Op::ExitIf { a, cond, b, exit } => {
                let a = e.reg(a, "t0");
                let b = e.reg(b, "t1");
                let ok = e.label();
                e.branch(&a, inverse(*cond), &b, &format!("{ok}f"));
                e.line(format!("j {{{exit}}}"));
                e.line(format!("{ok}:"));
            }
            Op::Store { addr, value } => {
                let v = e.reg(value, "t1");
                let m = e.mem(addr);
                e.line(format!("sd {v}, {m}"));
            }
            Op::Copy { dst, src } => match src {
                Value::Reg(r) => e.line(format!("mv {{{dst}}}, {{{r}}}")),
                Value::Imm(i) => e.line(format!("li {{{dst}}}, {i}")),
            },
            Op::AddValue { dst, value } => match value {
                Value::Imm(i) if (-2048..2048).contains(i) => {
                    e.line(format!("addi {{{dst}}}, {{{dst}}}, {i}"))
                }
                v => {
                    let v = e.reg(v, "t1");
                    e.line(format!("add {{{dst}}}, {{{dst}}}, {v}"));
                }
            },
            Op::Memcpy {
                dst,
                src,
                len,
                scratch,
                unique,
            } => {
                let (top, done) = crate::template::memcpy_labels(*unique);
                e.line(format!("beqz {{{len}}}, {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("lbu {{{scratch}}}, 0({{{src}}})"));
                e.line(format!("sb {{{scratch}}}, 0({{{dst}}})"));
                e.line(format!("addi {{{src}}}, {{{src}}}, 1"));
                e.line(format!("addi {{{dst}}}, {{{dst}}}, 1"));
                e.line(format!("addi {{{len}}}, {{{len}}}, -1"));
                e.line(format!("bnez {{{len}}}, {top}b"));
                e.line(format!("{done}:"));
            }
            Op::Commit { kind, addr, value } => {
                match kind {
                    CommitKind::Store | CommitKind::StoreRelease => {
                        let v = e.reg(value, "t1");
                        let m = e.mem(addr);
                        if *kind == CommitKind::StoreRelease {
                            e.line("fence rw, w");
                        }
                        e.line(format!("sd {v}, {m}"));
                    }
                    CommitKind::Add => {
                        // Load and add inside the section; the store is the commit.
                        let m = e.mem(addr);
                        e.line(format!("ld {{t1}}, {m}"));
                        match value {
                            Value::Imm(i) if *i < 2048 => {
                                e.line(format!("addi {{t1}}, {{t1}}, {i}"))
                            }
                            Value::Imm(i) => {
                                // t0 may hold the address: use the value's register once more.
                                e.line(format!("li {{{}}}, {i}", "t0"));
                                e.line("add {t1}, {t1}, {t0}");
                                let m = e.mem(addr);
                                e.line(format!("sd {{t1}}, {m}"));
                                e.line("22:");
                                continue;
                            }
                            Value::Reg(r) => e.line(format!("add {{t1}}, {{t1}}, {{{r}}}")),
                        }
                        e.line(format!("sd {{t1}}, {m}"));
                    }
                }
                e.line("22:");
            }
            Op::Delay { counts, point, reg } => {
                let (top, done) = (e.label(), e.label());
                e.line(format!("lla {{{reg}}}, {{{counts}}}"));
                e.line(format!("lwu {{{reg}}}, {}({{{reg}}})", 4 * point));
                e.line(format!("beqz {{{reg}}}, {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("addi {{{reg}}}, {{{reg}}}, -1"));
                e.line(format!("bnez {{{reg}}}, {top}b"));
                e.line(format!("{done}:"));
            }
            Op::End { abort } => {
                crate::tables::abort_handler(&mut e.out, ARCH.signature_directive);
                e.far_jump(&format!("{{{abort}}}"));
                e.line(".popsection");
            }
        }
    }
    e.out
}

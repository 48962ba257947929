//! aarch64 (LP64, little-endian data; instructions are always little-endian).
//!
//! - Signature `0xd428bc00` = `brk #0x45e0`, emitted with `.inst` so the assembler writes it in
//!   instruction byte order. A big-endian data kernel would register the byte-swapped value.
//! - Thread pointer: `tpidr_el0`.
//! - Release commit: `stlr`.
//! - Cache line: 64 bytes on most cores, 128 on Apple and some Neoverse/ThunderX parts; the
//!   kernel and crossbeam use 128, and so do we.

use crate::Arch;

/// aarch64 facts.
pub const ARCH: Arch = Arch {
    target_arch: "aarch64",
    signature: 0xd428_bc00,
    signature_directive: ".inst 0xd428bc00",
    cache_line: 128,
    pointer_bytes: 8,
    total_store_order: false,
    supported: true,
};

/// Code generation for aarch64: loads and stores take a base plus an immediate or a register,
/// so `t0` forms addresses and `t1` holds immediates; `b.cond` reaches ±1 MiB, so jumps to the
/// abort handler (in `__rseq_failure`, possibly far away) go through a local `b`.
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 24,
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

    /// A register holding `v`: the operand itself, `xzr` for 0, else `t1` loaded with it.
    fn reg(&mut self, v: &Value) -> String {
        match v {
            Value::Reg(r) => format!("{{{r}}}"),
            Value::Imm(0) => "xzr".into(),
            Value::Imm(i) => {
                let i = *i as u64;
                self.line(format!("movz {{t1}}, #{}", i & 0xffff));
                if i > 0xffff {
                    self.line(format!("movk {{t1}}, #{}, lsl #16", (i >> 16) & 0xffff));
                }
                "{t1}".into()
            }
        }
    }

    /// A memory operand for `a`, forming the address in `t0` when it has both an index and a
    /// displacement.
    fn mem(&mut self, a: &Addr) -> String {
        let base = format!("{{{}}}", a.base);
        let index = a.index.as_ref().map(|(i, scale)| match scale {
            1 => format!("{{{i}}}"),
            _ => format!("{{{i}}}, lsl #3"),
        });
        match (index, &a.disp) {
            (None, None) => format!("[{base}]"),
            (None, Some(d)) => format!("[{base}, #{{{d}}}]"),
            (Some(i), None) => format!("[{base}, {i}]"),
            (Some(i), Some(d)) => {
                self.line(format!("add {{t0}}, {base}, {i}"));
                format!("[{{t0}}, #{{{d}}}]")
            }
        }
    }

    /// `t0` = the address of `a` (for `stlr`, which takes no offset).
    fn address(&mut self, a: &Addr) -> String {
        let m = self.mem(a);
        let inner = m.trim_start_matches('[').trim_end_matches(']');
        match inner.split_once(", ") {
            None => inner.into(),
            Some((b, rest)) if rest.starts_with('#') => {
                self.line(format!("add {{t0}}, {b}, {}", &rest[1..]));
                "{t0}".into()
            }
            Some((b, rest)) => {
                self.line(format!("add {{t0}}, {b}, {rest}"));
                "{t0}".into()
            }
        }
    }
}

fn cond(c: Cond) -> &'static str {
    match c {
        Cond::Eq => "eq",
        Cond::Ne => "ne",
        Cond::Lt => "lo",
        Cond::Le => "ls",
        Cond::Gt => "hi",
        Cond::Ge => "hs",
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
                // Every scratch operand must appear in the template.
                e.line("/* scratch {t0} {t1} */");
                crate::tables::emit(&mut e.out, exits, 8, false);
                e.line("adrp {t0}, 20b");
                e.line("add {t0}, {t0}, :lo12:20b");
                e.line(format!(
                    "str {{t0}}, [{{{area}}}, #{}]",
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
                e.line(format!("ldr {{{dst}:w}}, [{{{area}}}, #{offset}]"));
                e.line(format!("adrp {{t0}}, {{{limit}}}"));
                e.line(format!("ldr {{t0:w}}, [{{t0}}, :lo12:{{{limit}}}]"));
                e.line(format!("cmp {{{dst}:w}}, {{t0:w}}"));
                let ok = e.label();
                e.line(format!("b.lo {ok}f"));
                e.line("b 23f");
                e.line(format!("{ok}:"));
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                e.line(format!("cmp {{{index}}}, {{{expected}}}"));
                e.line(format!("b.ne {{{exit}}}"));
            }
            Op::Scale {
                dst,
                index,
                stride,
                pow2,
                shift,
            } => {
                e.line(format!(".if {{{pow2}}}"));
                e.line(format!("lsl {{{dst}}}, {{{index}}}, #{{{shift}}}"));
                e.line(".else");
                e.line(format!("mov {{t0}}, #{{{stride}}}"));
                e.line(format!("mul {{{dst}}}, {{{index}}}, {{t0}}"));
                e.line(".endif");
            }
            Op::AddTo { base, offset } => {
                e.line(format!("add {{{base}}}, {{{base}}}, {{{offset}}}"))
            }
            Op::Load { dst, addr } => {
                let m = e.mem(addr);
                e.line(format!("ldr {{{dst}}}, {m}"));
            }
            Op::Save { slots, slot, src } => {
                e.line(format!("str {{{src}}}, [{{{slots}}}, #{}]", slot * 8))
            }
            Op::ExitIf {
                a,
                cond: c,
                b,
                exit,
            } => {
                let (a, c, b) = match (a, b) {
                    (Value::Imm(_), Value::Reg(_)) => (b, c.swapped(), a),
                    _ => (a, *c, b),
                };
                let a = e.reg(a);
                match b {
                    Value::Imm(i) if (0..4096).contains(i) => e.line(format!("cmp {a}, #{i}")),
                    _ => {
                        // `a` may already sit in t1 (both immediates): move it to t0 first.
                        let a = if a == "{t1}" {
                            e.line("mov {t0}, {t1}");
                            String::from("{t0}")
                        } else {
                            a
                        };
                        let b = e.reg(b);
                        e.line(format!("cmp {a}, {b}"));
                    }
                }
                e.line(format!("b.{} {{{exit}}}", cond(c)));
            }
            Op::Store { addr, value } => {
                let v = e.reg(value);
                let m = e.mem(addr);
                e.line(format!("str {v}, {m}"));
            }
            Op::Copy { dst, src } => {
                let v = e.reg(src);
                e.line(format!("mov {{{dst}}}, {v}"));
            }
            Op::AddValue { dst, value } => match value {
                Value::Imm(i) if (0..4096).contains(i) => {
                    e.line(format!("add {{{dst}}}, {{{dst}}}, #{i}"))
                }
                Value::Imm(i) if (-4095..0).contains(i) => {
                    e.line(format!("sub {{{dst}}}, {{{dst}}}, #{}", -i))
                }
                v => {
                    let v = e.reg(v);
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
                e.line(format!("cbz {{{len}}}, {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("ldrb {{{scratch}:w}}, [{{{src}}}], #1"));
                e.line(format!("strb {{{scratch}:w}}, [{{{dst}}}], #1"));
                e.line(format!("subs {{{len}}}, {{{len}}}, #1"));
                e.line(format!("b.ne {top}b"));
                e.line(format!("{done}:"));
            }
            Op::Commit { kind, addr, value } => {
                match kind {
                    CommitKind::Store => {
                        let v = e.reg(value);
                        let m = e.mem(addr);
                        e.line(format!("str {v}, {m}"));
                    }
                    CommitKind::StoreRelease => {
                        let v = e.reg(value);
                        let a = e.address(addr);
                        e.line(format!("stlr {v}, [{a}]"));
                    }
                    CommitKind::Add => {
                        // Load and add inside the section; the store is the commit.
                        let m = e.mem(addr);
                        e.line(format!("ldr {{t1}}, {m}"));
                        match value {
                            Value::Imm(i) if (0..4096).contains(i) => {
                                e.line(format!("add {{t1}}, {{t1}}, #{i}"))
                            }
                            Value::Reg(r) => e.line(format!("add {{t1}}, {{t1}}, {{{r}}}")),
                            Value::Imm(i) => {
                                let i = *i as u64;
                                e.line(format!("movz {{t0}}, #{}", i & 0xffff));
                                e.line(format!("movk {{t0}}, #{}, lsl #16", (i >> 16) & 0xffff));
                                e.line("add {t1}, {t1}, {t0}");
                                // t0 may have held the address: recompute it.
                                let m2 = e.mem(addr);
                                e.line(format!("str {{t1}}, {m2}"));
                                e.line("22:");
                                continue;
                            }
                        }
                        e.line(format!("str {{t1}}, {m}"));
                    }
                }
                e.line("22:");
            }
            Op::Delay { counts, point, reg } => {
                let (top, done) = (e.label(), e.label());
                e.line(format!("adrp {{{reg}}}, {{{counts}}}"));
                e.line(format!(
                    "ldr {{{reg}:w}}, [{{{reg}}}, :lo12:{{{counts}}} + {}]",
                    4 * point
                ));
                e.line(format!("cbz {{{reg}:w}}, {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("subs {{{reg}:w}}, {{{reg}:w}}, #1"));
                e.line(format!("b.ne {top}b"));
                e.line(format!("{done}:"));
            }
            Op::End { abort } => {
                crate::tables::abort_handler(&mut e.out, ARCH.signature_directive);
                e.line(format!("b {{{abort}}}"));
                e.line(".popsection");
            }
        }
    }
    e.out
}

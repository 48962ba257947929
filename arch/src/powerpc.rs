//! powerpc (32-bit, big-endian).
//!
//! - Signature `0x0fe5000b` = `twui r5, 11`, as on powerpc64.
//! - r0 reads as zero in an address (see powerpc64).
//! - Thread pointer: r2.
//! - 64-bit descriptor fields are big-endian: a zero word, then the 32-bit pointer.
//! - Cache line: 64 bytes (RSEQ-ABI.md's default for architectures it does not single out;
//!   e500 and 74xx parts use 32, so 64 only over-pads).

use crate::Arch;

/// powerpc facts.
pub const ARCH: Arch = Arch {
    target_arch: "powerpc",
    signature: 0x0fe5_000b,
    signature_directive: ".long 0x0fe5000b",
    cache_line: 64,
    pointer_bytes: 4,
    total_store_order: false,
    supported: true,
};

/// Code generation for 32-bit powerpc (and, through `emit_words`, powerpc64): addresses go in
/// `reg_nonzero` registers with explicit `d(rA)` forms; `t0` forms addresses, `t1` holds
/// immediates and the address of the code (from `bcl 20,31` / `mflr`, which clobbers `lr`), so
/// the descriptor and the index limit are reached PC-relatively with no TOC and no text
/// relocation. Conditional branches reach ±32 KiB, so exits branch around a `b`.
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 22,
    register_class: "reg_nonzero",
    scratch_registers: 2,
    clobbers: &["lr"],
    uses_stack: false,
    byte_register_class: "reg_nonzero",
    att_syntax: false,
    values_in_memory: false,
    pc_relative_data: true,
});

use crate::template::{Addr, CommitKind, Cond, Op, Value};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Template lines for a 32-bit big-endian section.
pub fn emit(ops: &[Op]) -> Vec<String> {
    emit_words(ops, 4, true)
}

/// Word-size dependent mnemonics.
struct Words {
    bytes: usize,
    load: &'static str,
    store: &'static str,
    cmp: &'static str,
    cmpi: &'static str,
    shift_left: &'static str,
}

struct Emitter {
    out: Vec<String>,
    next_label: u32,
    /// The label whose address `t1` holds after `Begin` (for PC-relative addressing).
    pc_label: u32,
    w: Words,
}

impl Emitter {
    fn line(&mut self, s: impl Into<String>) {
        self.out.push(s.into());
    }

    fn label(&mut self) -> u32 {
        self.next_label += 1;
        self.next_label
    }

    /// `reg = imm` (imm ≤ i32::MAX).
    fn load_imm(&mut self, reg: &str, i: i64) {
        if (-32768..32768).contains(&i) {
            self.line(format!("li {reg}, {i}"));
        } else {
            self.line(format!("lis {reg}, {}", (i >> 16) & 0xffff));
            self.line(format!("ori {reg}, {reg}, {}", i & 0xffff));
        }
    }

    /// A register holding `v` (immediates go through `scratch`).
    fn reg(&mut self, v: &Value, scratch: &str) -> String {
        match v {
            Value::Reg(r) => format!("{{{r}}}"),
            Value::Imm(i) => {
                let s = format!("{{{scratch}}}");
                self.load_imm(&s, *i);
                s
            }
        }
    }

    /// A `d(rA)` operand for `a`, forming the address in `t0` when there is an index.
    fn mem(&mut self, a: &Addr) -> String {
        let mut base = format!("{{{}}}", a.base);
        if let Some((i, scale)) = &a.index {
            if *scale == 1 {
                self.line(format!("add {{t0}}, {base}, {{{i}}}"));
            } else {
                let shift = if self.w.bytes == 8 { 3 } else { 2 };
                self.line(format!("{} {{t0}}, {{{i}}}, {shift}", self.w.shift_left));
                self.line(format!("add {{t0}}, {{t0}}, {base}"));
            }
            base = "{t0}".into();
        }
        match &a.disp {
            None => format!("0({base})"),
            Some(d) => format!("{{{d}}}({base})"),
        }
    }

    /// Leaves through `exit` when `a cond b` (unsigned), branching around an unconditional `b`.
    fn exit_if(&mut self, a: &Value, c: Cond, b: &Value, exit: &str) {
        let (a, c, b) = match (a, b) {
            (Value::Imm(_), Value::Reg(_)) => (b, c.swapped(), a),
            _ => (a, c, b),
        };
        let a = self.reg(a, "t0");
        match b {
            Value::Imm(i) if (0..65536).contains(i) => {
                self.line(format!("{} {a}, {i}", self.w.cmpi))
            }
            _ => {
                let b = self.reg(b, "t1");
                self.line(format!("{} {a}, {b}", self.w.cmp));
            }
        }
        let skip = self.label();
        let inverse = match c {
            Cond::Eq => "bne",
            Cond::Ne => "beq",
            Cond::Lt => "bge",
            Cond::Le => "bgt",
            Cond::Gt => "ble",
            Cond::Ge => "blt",
        };
        self.line(format!("{inverse} {skip}f"));
        self.line(format!("b {exit}"));
        self.line(format!("{skip}:"));
    }
}

/// Template lines for a powerpc section with `bytes`-byte words.
pub(crate) fn emit_words(ops: &[Op], bytes: usize, big_endian: bool) -> Vec<String> {
    let w = if bytes == 8 {
        Words {
            bytes,
            load: "ld",
            store: "std",
            cmp: "cmpld",
            cmpi: "cmpldi",
            shift_left: "sldi",
        }
    } else {
        Words {
            bytes,
            load: "lwz",
            store: "stw",
            cmp: "cmplw",
            cmpi: "cmplwi",
            shift_left: "slwi",
        }
    };
    let mut e = Emitter {
        out: Vec::new(),
        next_label: 49,
        pc_label: 0,
        w,
    };
    for op in ops {
        match op {
            Op::Begin { area, exits, .. } => {
                e.line("/* scratch {t0} {t1} */");
                crate::tables::emit(&mut e.out, exits, bytes, big_endian);
                let here = e.label();
                e.pc_label = here;
                e.line(format!("bcl 20, 31, {here}f"));
                e.line(format!("{here}:"));
                e.line("mflr {t1}");
                e.line(format!("addis {{t0}}, {{t1}}, (20b - {here}b)@ha"));
                e.line(format!("addi {{t0}}, {{t0}}, (20b - {here}b)@l"));
                let off = crate::tables::rseq_cs_offset(bytes, big_endian);
                e.line(format!("{} {{t0}}, {off}({{{area}}})", e.w.store));
                e.line("21:");
            }
            Op::ReadIndex {
                dst,
                area,
                field,
                limit,
            } => {
                let offset = field.offset();
                let here = e.pc_label;
                e.line(format!("lwz {{{dst}}}, {offset}({{{area}}})"));
                e.line(format!("addis {{t0}}, {{t1}}, ({{{limit}}} - {here}b)@ha"));
                e.line(format!("lwz {{t0}}, ({{{limit}}} - {here}b)@l({{t0}})"));
                e.line(format!("cmplw {{{dst}}}, {{t0}}"));
                let ok = e.label();
                e.line(format!("blt {ok}f"));
                e.line("b 23f");
                e.line(format!("{ok}:"));
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                let ok = e.label();
                e.line(format!("{} {{{index}}}, {{{expected}}}", e.w.cmp));
                e.line(format!("beq {ok}f"));
                e.line(format!("b {{{exit}}}"));
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
                e.line(format!(
                    "{} {{{dst}}}, {{{index}}}, {{{shift}}}",
                    e.w.shift_left
                ));
                e.line(".else");
                e.line(format!("mulli {{{dst}}}, {{{index}}}, {{{stride}}}"));
                e.line(".endif");
            }
            Op::AddTo { base, offset } => {
                e.line(format!("add {{{base}}}, {{{base}}}, {{{offset}}}"))
            }
            Op::Load { dst, addr } => {
                let m = e.mem(addr);
                e.line(format!("{} {{{dst}}}, {m}", e.w.load));
            }
            Op::Save { slots, slot, src } => e.line(format!(
                "{} {{{src}}}, {}({{{slots}}})",
                e.w.store,
                slot * bytes
            )),
            Op::ExitIf { a, cond, b, exit } => e.exit_if(a, *cond, b, &format!("{{{exit}}}")),
            Op::Store { addr, value } => {
                let v = e.reg(value, "t1");
                let m = e.mem(addr);
                e.line(format!("{} {v}, {m}", e.w.store));
            }
            Op::Copy { dst, src } => match src {
                Value::Reg(r) => e.line(format!("mr {{{dst}}}, {{{r}}}")),
                Value::Imm(i) => e.load_imm(&format!("{{{dst}}}"), *i),
            },
            Op::AddValue { dst, value } => match value {
                Value::Imm(i) if (-32768..32768).contains(i) => {
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
                e.line(format!("{} {{{len}}}, 0", e.w.cmpi));
                e.line(format!("beq {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("lbz {{{scratch}}}, 0({{{src}}})"));
                e.line(format!("stb {{{scratch}}}, 0({{{dst}}})"));
                e.line(format!("addi {{{src}}}, {{{src}}}, 1"));
                e.line(format!("addi {{{dst}}}, {{{dst}}}, 1"));
                e.line(format!("addi {{{len}}}, {{{len}}}, -1"));
                e.line(format!("{} {{{len}}}, 0", e.w.cmpi));
                e.line(format!("bne {top}b"));
                e.line(format!("{done}:"));
            }
            Op::Commit { kind, addr, value } => {
                match kind {
                    CommitKind::Store | CommitKind::StoreRelease => {
                        let v = e.reg(value, "t1");
                        let m = e.mem(addr);
                        if *kind == CommitKind::StoreRelease {
                            e.line("lwsync");
                        }
                        e.line(format!("{} {v}, {m}", e.w.store));
                    }
                    CommitKind::Add => {
                        // Load and add inside the section; the store is the commit.
                        let m = e.mem(addr);
                        e.line(format!("{} {{t1}}, {m}", e.w.load));
                        match value {
                            Value::Imm(i) if (-32768..32768).contains(i) => {
                                e.line(format!("addi {{t1}}, {{t1}}, {i}"))
                            }
                            Value::Reg(r) => e.line(format!("add {{t1}}, {{t1}}, {{{r}}}")),
                            Value::Imm(i) => {
                                // A 32-bit immediate in two halves; the low one is signed.
                                let lo = (i & 0xffff) as u16 as i16 as i64;
                                e.line(format!("addis {{t1}}, {{t1}}, {}", (i - lo) >> 16));
                                e.line(format!("addi {{t1}}, {{t1}}, {lo}"));
                            }
                        }
                        e.line(format!("{} {{t1}}, {m}", e.w.store));
                    }
                }
                e.line("22:");
            }
            Op::Delay { counts, point, reg } => {
                // A fresh PC anchor: `t1`, set by `Begin`, is a scratch register by now.
                let (here, top, done) = (e.label(), e.label(), e.label());
                let target = format!("({{{counts}}} + {} - {here}b)", 4 * point);
                e.line(format!("bcl 20, 31, {here}f"));
                e.line(format!("{here}:"));
                e.line(format!("mflr {{{reg}}}"));
                e.line(format!("addis {{{reg}}}, {{{reg}}}, {target}@ha"));
                e.line(format!("lwz {{{reg}}}, {target}@l({{{reg}}})"));
                e.line(format!("cmpwi {{{reg}}}, 0"));
                e.line(format!("beq {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("addi {{{reg}}}, {{{reg}}}, -1"));
                e.line(format!("cmpwi {{{reg}}}, 0"));
                e.line(format!("bne {top}b"));
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

//! x86_64 (System V, LP64, little-endian, TSO).
//!
//! - Signature `0x53053053`, written as the last four bytes of `ud1 0x53053053(%rip),%edi`
//!   (`0f b9 3d` + the word), so the bytes before the abort label trap if ever executed.
//! - Thread pointer: `%fs:0`.
//! - Loads and stores are totally ordered: a release commit is a plain `mov`.
//! - Cache line: 64 bytes, but the L2 spatial prefetcher pulls lines in 128-byte pairs, so two
//!   slots 64 bytes apart still ping-pong; per-CPU slots are 128 bytes apart (as crossbeam and
//!   the kernel's own per-CPU allocator recommend for Sandy Bridge and later).

use crate::Arch;

/// x86_64 facts.
pub const ARCH: Arch = Arch {
    target_arch: "x86_64",
    signature: 0x5305_3053,
    signature_directive: ".byte 0x0f, 0xb9, 0x3d\n.long 0x53053053",
    cache_line: 128,
    pointer_bytes: 8,
    total_store_order: true,
    supported: true,
};

/// Code generation for x86_64. Registers: rax, rcx, rdx, rsi, rdi and r8–r15 (rsp is the stack
/// pointer, rbx is reserved by LLVM, rbp may hold the frame pointer); memory operands take
/// base + index + displacement, so no scratch register is needed.
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 13,
    register_class: "reg",
    scratch_registers: 0,
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

fn addr(a: &Addr) -> String {
    let mut s = format!("qword ptr [{{{}}}", a.base);
    if let Some((index, scale)) = &a.index {
        if *scale == 1 {
            s += &format!(" + {{{index}}}");
        } else {
            s += &format!(" + {{{index}}}*{scale}");
        }
    }
    if let Some(disp) = &a.disp {
        s += &format!(" + {{{disp}}}");
    }
    s + "]"
}

fn value(v: &Value) -> String {
    match v {
        Value::Reg(r) => format!("{{{r}}}"),
        Value::Imm(i) => format!("{i}"),
    }
}

/// The jump taken when `a cond b` holds (unsigned).
fn jump(cond: Cond) -> &'static str {
    match cond {
        Cond::Eq => "je",
        Cond::Ne => "jne",
        Cond::Lt => "jb",
        Cond::Le => "jbe",
        Cond::Gt => "ja",
        Cond::Ge => "jae",
    }
}

/// Template lines for a critical section. Local labels: 20 descriptor, 21 start, 22 post-commit,
/// 23 abort handler, 3x/4x/… memcpy loops (never labels made of 0s and 1s only, which Intel
/// syntax would read as binary numbers).
pub fn emit(ops: &[Op]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        if let Op::Begin { exits, .. } = op {
            crate::tables::emit(&mut out, exits, 8, false);
        }
        if let Op::End { .. } = op {
            crate::tables::abort_handler(&mut out, ARCH.signature_directive);
        }
        let mut line = |s: String| out.push(s);
        match op {
            Op::Begin { area, scratch, .. } => {
                line(format!("lea {{{scratch}}}, [rip + 20b]"));
                line(format!(
                    "mov qword ptr [{{{area}}} + {}], {{{scratch}}}",
                    crate::area::RSEQ_CS
                ));
                line("21:".into());
            }
            Op::ReadIndex {
                dst,
                area,
                field,
                limit,
            } => {
                let offset = field.offset();
                line(format!(
                    "mov {{{dst}:e}}, dword ptr [{{{area}}} + {offset}]"
                ));
                line(format!("cmp {{{dst}:e}}, dword ptr [rip + {{{limit}}}]"));
                line("jae 23f".into());
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                line(format!("cmp {{{index}}}, {{{expected}}}"));
                line(format!("jne {{{exit}}}"));
            }
            Op::Scale {
                dst,
                index,
                stride,
                pow2,
                shift,
            } => {
                line(format!(".if {{{pow2}}}"));
                if dst != index {
                    line(format!("mov {{{dst}}}, {{{index}}}"));
                }
                line(format!("shl {{{dst}}}, {{{shift}}}"));
                line(".else".into());
                line(format!("imul {{{dst}}}, {{{index}}}, {{{stride}}}"));
                line(".endif".into());
            }
            Op::AddTo { base, offset } => line(format!("add {{{base}}}, {{{offset}}}")),
            Op::Load { dst, addr: a } => line(format!("mov {{{dst}}}, {}", addr(a))),
            Op::Save { slots, slot, src } => line(format!(
                "mov qword ptr [{{{slots}}} + {}], {{{src}}}",
                slot * 8
            )),
            Op::ExitIf { a, cond, b, exit } => {
                let (a, cond, b) = match (a, b) {
                    (Value::Imm(_), Value::Reg(_)) => (b, cond.swapped(), a),
                    _ => (a, *cond, b),
                };
                match (a, b) {
                    (Value::Imm(x), Value::Imm(y)) => {
                        // Both constant: decided at compile time, but keep the branch shape.
                        let holds = match cond {
                            Cond::Eq => x == y,
                            Cond::Ne => x != y,
                            Cond::Lt => (*x as u64) < (*y as u64),
                            Cond::Le => (*x as u64) <= (*y as u64),
                            Cond::Gt => (*x as u64) > (*y as u64),
                            Cond::Ge => (*x as u64) >= (*y as u64),
                        };
                        if holds {
                            line(format!("jmp {{{exit}}}"));
                        }
                    }
                    _ => {
                        line(format!("cmp {}, {}", value(a), value(b)));
                        line(format!("{} {{{exit}}}", jump(cond)));
                    }
                }
            }
            Op::Store { addr: a, value: v } => line(format!("mov {}, {}", addr(a), value(v))),
            Op::AddValue { dst, value: v } => line(format!("add {{{dst}}}, {}", value(v))),
            Op::Copy { dst, src } => line(format!("mov {{{dst}}}, {}", value(src))),
            Op::Memcpy {
                dst,
                src,
                len,
                scratch,
                unique,
            } => {
                let (top, done) = crate::template::memcpy_labels(*unique);
                line(format!("test {{{len}}}, {{{len}}}"));
                line(format!("jz {done}f"));
                line(format!("{top}:"));
                line(format!("mov {{{scratch}:l}}, byte ptr [{{{src}}}]"));
                line(format!("mov byte ptr [{{{dst}}}], {{{scratch}:l}}"));
                line(format!("inc {{{src}}}"));
                line(format!("inc {{{dst}}}"));
                line(format!("dec {{{len}}}"));
                line(format!("jnz {top}b"));
                line(format!("{done}:"));
            }
            Op::Commit {
                kind,
                addr: a,
                value: v,
            } => {
                // x86 is TSO: a plain store is already ordered after every earlier access.
                let mnemonic = match kind {
                    CommitKind::Store | CommitKind::StoreRelease => "mov",
                    CommitKind::Add => "add",
                };
                line(format!("{mnemonic} {}, {}", addr(a), value(v)));
                line("22:".into());
            }
            Op::Delay { counts, point, reg } => {
                line(format!(
                    "mov {{{reg}:e}}, dword ptr [rip + {{{counts}}} + {}]",
                    4 * point
                ));
                line(format!("test {{{reg}:e}}, {{{reg}:e}}"));
                line("jz 97f".into());
                line("96:".into());
                line(format!("sub {{{reg}:e}}, 1"));
                line("jnz 96b".into());
                line("97:".into());
            }
            Op::End { abort } => {
                line(format!("jmp {{{abort}}}"));
                line(".popsection".into());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::IndexField;
    use alloc::vec;

    fn reg(s: &str) -> String {
        s.into()
    }

    #[test]
    fn counter_add_is_the_minimal_sequence() {
        let ops = vec![
            Op::Begin {
                area: reg("area"),
                scratch: reg("idx"),
                exits: vec![],
            },
            Op::ReadIndex {
                dst: reg("idx"),
                area: reg("area"),
                field: IndexField::CpuId,
                limit: reg("limit"),
            },
            Op::Scale {
                dst: reg("idx"),
                index: reg("idx"),
                stride: reg("s0"),
                pow2: reg("p0"),
                shift: reg("h0"),
            },
            Op::Commit {
                kind: CommitKind::Add,
                addr: Addr {
                    base: reg("b0"),
                    index: Some((reg("idx"), 1)),
                    disp: None,
                },
                value: Value::Reg(reg("n")),
            },
            Op::End {
                abort: reg("abort"),
            },
        ];
        let text = emit(&ops);
        let code: Vec<&str> = text
            .iter()
            .map(|s| s.as_str())
            .filter(|s| !s.starts_with('.') && !s.ends_with(':'))
            .collect();
        assert_eq!(
            code,
            [
                "lea {idx}, [rip + 20b]",
                "mov qword ptr [{area} + 8], {idx}",
                "mov {idx:e}, dword ptr [{area} + 4]",
                "cmp {idx:e}, dword ptr [rip + {limit}]",
                "jae 23f",
                "shl {idx}, {h0}",
                "imul {idx}, {idx}, {s0}",
                "add qword ptr [{b0} + {idx}], {n}",
                "jmp {abort}",
            ]
        );
        // The signature sits right before the abort label.
        let abort = text.iter().position(|l| l == "23:").unwrap();
        assert_eq!(text[abort - 1], ".long 0x53053053");
        assert_eq!(text[abort - 2], ".byte 0x0f, 0xb9, 0x3d");
        // The commit is the last instruction before the post-commit label.
        let post = text.iter().position(|l| l == "22:").unwrap();
        assert!(text[post - 1].starts_with("add qword ptr"));
    }

    #[test]
    fn immediate_on_the_left_is_swapped() {
        let ops = [Op::ExitIf {
            a: Value::Imm(5),
            cond: Cond::Lt,
            b: Value::Reg(reg("v")),
            exit: reg("f"),
        }];
        assert_eq!(emit(&ops), ["cmp {v}, 5", "ja {f}"]);
    }
}

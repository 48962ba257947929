//! i686 (32-bit x86, ILP32, little-endian, TSO).
//!
//! - Same signature and `ud1` encoding as x86_64.
//! - Thread pointer: `%gs:0`.
//! - 64-bit descriptor fields hold the 32-bit pointer in the low (first) half, then a zero word;
//!   the descriptor's address goes into the low half of the area's `rseq_cs` (offset 8).
//! - Five registers for `asm!` operands: eax, ebx, ecx, edx, edi (esi is LLVM's base pointer,
//!   ebp the frame pointer, esp the stack pointer). Only eax–edx have byte parts (`reg_abcd`).
//!   Sections that need more keep values in memory (see [`CODEGEN`]).
//! - No PC-relative data addressing: the code's address comes from `call` to the next
//!   instruction (which CPUs do not push on their return-stack predictor), before the section
//!   starts, so the stack is balanced again at the start label and at every exit. Linux gives
//!   32-bit processes no shadow stack, so the unmatched `call` costs nothing there.
//! - PC-relative displacements are `label - label` expressions, which LLVM only parses in AT&T
//!   syntax: the templates are AT&T.
//! - Loads and stores are totally ordered: a release commit is a plain `mov`.
//! - Cache line: 64 bytes (32-bit parts predate the paired-line prefetcher that makes 128 worth it
//!   on x86_64; the 64-byte figure is the one `shared/RSEQ-ABI.md` gives).

use crate::Arch;

/// i686 facts.
pub const ARCH: Arch = Arch {
    target_arch: "x86",
    signature: 0x5305_3053,
    signature_directive: ".byte 0x0f, 0xb9, 0x3d\n.long 0x53053053",
    cache_line: 64,
    pointer_bytes: 4,
    total_store_order: true,
    supported: true,
};

/// Code generation for i686, in AT&T syntax. Five registers; a section that needs more keeps
/// parameters (and spilled values) in a stack-frame array addressed through one register, and
/// shares registers between values that are not live at the same time (`values_in_memory`).
/// `Begin` leaves the address of its local label 24 in its scratch register, where `ReadIndex`
/// (whose destination the planner makes the same register) reads the index limit relative to
/// it. Delay loops get their counts' address in a register (`pc_relative_data: false`).
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 5,
    register_class: "reg",
    scratch_registers: 0,
    clobbers: &[],
    uses_stack: true,
    byte_register_class: "reg_abcd",
    att_syntax: true,
    values_in_memory: true,
    pc_relative_data: false,
});

use crate::template::{Addr, CommitKind, Cond, Op, Value};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// An AT&T memory operand: `disp(base, index, scale)`.
fn mem(a: &Addr) -> String {
    let disp = a
        .disp
        .as_ref()
        .map(|d| format!("{{{d}}}"))
        .unwrap_or_default();
    match &a.index {
        None => format!("{disp}({{{}}})", a.base),
        Some((index, scale)) => format!("{disp}({{{}}}, {{{index}}}, {scale})", a.base),
    }
}

/// An AT&T source operand: a register or an immediate.
fn value(v: &Value) -> String {
    match v {
        Value::Reg(r) => format!("{{{r}}}"),
        Value::Imm(i) => format!("${i}"),
    }
}

/// The jump taken when `a cond b` holds (unsigned), after `cmp b, a`.
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
/// 23 abort handler, 24 the code address `Begin` takes, 3x/4x/… memcpy loops, 96/97 delay loops.
pub fn emit(ops: &[Op]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        if let Op::Begin { exits, .. } = op {
            crate::tables::emit(&mut out, exits, ARCH.pointer_bytes, false);
        }
        if let Op::End { .. } = op {
            crate::tables::abort_handler(&mut out, ARCH.signature_directive);
        }
        let mut line = |s: String| out.push(s);
        match op {
            Op::Begin { area, scratch, .. } => {
                // The return address of a call to the next instruction is the code address; a
                // copy of it becomes the descriptor's address, and the pop leaves it in
                // `scratch` for `ReadIndex`, with the stack balanced before the start label.
                line("call 24f".into());
                line("24:".into());
                line(format!("movl (%esp), {{{scratch}}}"));
                line(format!("leal (20b - 24b)({{{scratch}}}), {{{scratch}}}"));
                line(format!(
                    "movl {{{scratch}}}, {}({{{area}}})",
                    crate::tables::rseq_cs_offset(ARCH.pointer_bytes, false)
                ));
                line(format!("popl {{{scratch}}}"));
                line("21:".into());
            }
            Op::ReadIndex {
                dst,
                area,
                field,
                limit,
            } => {
                // `dst` holds label 24's address (see `Begin`): read the limit through it, compare
                // the index in memory, then load the index.
                let offset = field.offset();
                line(format!("movl ({{{limit}}} - 24b)({{{dst}}}), {{{dst}}}"));
                line(format!("cmpl {{{dst}}}, {offset}({{{area}}})"));
                line("jae 23f".into());
                line(format!("movl {offset}({{{area}}}), {{{dst}}}"));
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                line(format!("cmpl {{{expected}}}, {{{index}}}"));
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
                    line(format!("movl {{{index}}}, {{{dst}}}"));
                }
                line(format!("shll ${{{shift}}}, {{{dst}}}"));
                line(".else".into());
                line(format!("imull ${{{stride}}}, {{{index}}}, {{{dst}}}"));
                line(".endif".into());
            }
            Op::AddTo { base, offset } => line(format!("addl {{{offset}}}, {{{base}}}")),
            Op::Load { dst, addr: a } => line(format!("movl {}, {{{dst}}}", mem(a))),
            Op::Save { slots, slot, src } => line(format!(
                "movl {{{src}}}, {}({{{slots}}})",
                slot * ARCH.pointer_bytes
            )),
            Op::ExitIf { a, cond, b, exit } => {
                let (a, cond, b) = match (a, b) {
                    (Value::Imm(_), Value::Reg(_)) => (b, cond.swapped(), a),
                    _ => (a, *cond, b),
                };
                match (a, b) {
                    (Value::Imm(x), Value::Imm(y)) => {
                        // Both constant: decided at compile time, but keep the branch shape.
                        let (x, y) = (*x as u32, *y as u32);
                        let holds = match cond {
                            Cond::Eq => x == y,
                            Cond::Ne => x != y,
                            Cond::Lt => x < y,
                            Cond::Le => x <= y,
                            Cond::Gt => x > y,
                            Cond::Ge => x >= y,
                        };
                        if holds {
                            line(format!("jmp {{{exit}}}"));
                        }
                    }
                    _ => {
                        // `cmp b, a` sets the flags of `a - b`.
                        line(format!("cmpl {}, {}", value(b), value(a)));
                        line(format!("{} {{{exit}}}", jump(cond)));
                    }
                }
            }
            Op::Store { addr: a, value: v } => line(format!("movl {}, {}", value(v), mem(a))),
            Op::AddValue { dst, value: v } => line(format!("addl {}, {{{dst}}}", value(v))),
            Op::Copy { dst, src } => line(format!("movl {}, {{{dst}}}", value(src))),
            Op::Memcpy {
                dst,
                src,
                len,
                scratch,
                unique,
            } => {
                // `scratch` is a `reg_abcd` register: only eax–edx have a low byte.
                let (top, done) = crate::template::memcpy_labels(*unique);
                line(format!("testl {{{len}}}, {{{len}}}"));
                line(format!("jz {done}f"));
                line(format!("{top}:"));
                line(format!("movb ({{{src}}}), {{{scratch}:l}}"));
                line(format!("movb {{{scratch}:l}}, ({{{dst}}})"));
                line(format!("incl {{{src}}}"));
                line(format!("incl {{{dst}}}"));
                line(format!("decl {{{len}}}"));
                line(format!("jnz {top}b"));
                line(format!("{done}:"));
            }
            Op::Commit {
                kind,
                addr: a,
                value: v,
            } => {
                // TSO: a plain store is already ordered after every earlier access.
                let mnemonic = match kind {
                    CommitKind::Store | CommitKind::StoreRelease => "movl",
                    CommitKind::Add => "addl",
                };
                line(format!("{mnemonic} {}, {}", value(v), mem(a)));
                line("22:".into());
            }
            Op::Delay { counts, point, reg } => {
                // `counts` is a register holding the counts' address (`pc_relative_data: false`).
                line(format!("movl {}({{{counts}}}), {{{reg}}}", 4 * point));
                line(format!("testl {{{reg}}}, {{{reg}}}"));
                line("jz 97f".into());
                line("96:".into());
                line(format!("subl $1, {{{reg}}}"));
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

    fn code(text: &[String]) -> Vec<&str> {
        text.iter()
            .map(|s| s.as_str())
            .filter(|s| !s.starts_with('.') && !s.ends_with(':'))
            .collect()
    }

    fn counter_add() -> Vec<Op> {
        vec![
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
        ]
    }

    #[test]
    fn counter_add_takes_the_code_address_before_the_start() {
        let text = emit(&counter_add());
        assert_eq!(
            code(&text),
            [
                "call 24f",
                "movl (%esp), {idx}",
                "leal (20b - 24b)({idx}), {idx}",
                "movl {idx}, 8({area})",
                "popl {idx}",
                "movl ({limit} - 24b)({idx}), {idx}",
                "cmpl {idx}, 4({area})",
                "jae 23f",
                "movl 4({area}), {idx}",
                "shll ${h0}, {idx}",
                "imull ${s0}, {idx}, {idx}",
                "addl {n}, ({b0}, {idx}, 1)",
                "jmp {abort}",
            ]
        );
        // The stack is balanced before the start label: one call, one pop.
        let start = text.iter().position(|l| l == "21:").unwrap();
        assert_eq!(text[start - 1], "popl {idx}");
        assert!(text[..start].iter().any(|l| l == "call 24f"));
        assert!(!text[start..]
            .iter()
            .any(|l| l.starts_with("call") || l.starts_with("push") || l.starts_with("pop")));
        // The signature sits right before the abort label.
        let abort = text.iter().position(|l| l == "23:").unwrap();
        assert_eq!(text[abort - 1], ".long 0x53053053");
        assert_eq!(text[abort - 2], ".byte 0x0f, 0xb9, 0x3d");
        // The commit is the last instruction before the post-commit label.
        let post = text.iter().position(|l| l == "22:").unwrap();
        assert!(text[post - 1].starts_with("addl {n}, "));
    }

    #[test]
    fn descriptor_fields_are_a_pointer_and_a_zero_word() {
        let text = emit(&counter_add());
        let desc = text.iter().position(|l| l == "20:").unwrap();
        assert_eq!(
            &text[desc + 1..desc + 5],
            [
                ".long 0, 0",
                ".long 21f, 0",
                ".long (22f - 21f), 0",
                ".long 23f, 0"
            ]
        );
        assert!(text.iter().any(|l| l == ".long 20b, 0"));
    }

    #[test]
    fn compares_put_the_right_operand_first() {
        let ops = [
            Op::ExitIf {
                a: Value::Imm(5),
                cond: Cond::Lt,
                b: Value::Reg(reg("v")),
                exit: reg("f"),
            },
            Op::ExitIf {
                a: Value::Reg(reg("v")),
                cond: Cond::Ge,
                b: Value::Reg(reg("w")),
                exit: reg("g"),
            },
            Op::ExitIf {
                a: Value::Imm(3),
                cond: Cond::Gt,
                b: Value::Imm(2),
                exit: reg("h"),
            },
            Op::ExitIf {
                a: Value::Imm(3),
                cond: Cond::Lt,
                b: Value::Imm(2),
                exit: reg("i"),
            },
        ];
        assert_eq!(
            emit(&ops),
            [
                "cmpl $5, {v}",
                "ja {f}",
                "cmpl {w}, {v}",
                "jae {g}",
                "jmp {h}"
            ]
        );
    }

    #[test]
    fn addresses_stores_and_saves_are_word_sized() {
        let ops = [
            Op::Load {
                dst: reg("v"),
                addr: Addr {
                    base: reg("b"),
                    index: Some((reg("i"), 4)),
                    disp: Some(reg("d")),
                },
            },
            Op::Store {
                addr: Addr {
                    base: reg("p"),
                    index: None,
                    disp: None,
                },
                value: Value::Imm(7),
            },
            Op::Save {
                slots: reg("frame"),
                slot: 3,
                src: reg("v"),
            },
            Op::Commit {
                kind: CommitKind::StoreRelease,
                addr: Addr {
                    base: reg("b"),
                    index: None,
                    disp: Some(reg("d")),
                },
                value: Value::Reg(reg("v")),
            },
        ];
        assert_eq!(
            emit(&ops),
            [
                "movl {d}({b}, {i}, 4), {v}",
                "movl $7, ({p})",
                "movl {v}, 12({frame})",
                "movl {v}, {d}({b})",
                "22:",
            ]
        );
    }

    #[test]
    fn memcpy_copies_through_a_byte_register() {
        let ops = [Op::Memcpy {
            dst: reg("d"),
            src: reg("s"),
            len: reg("n"),
            scratch: reg("t"),
            unique: 0,
        }];
        assert_eq!(
            emit(&ops),
            [
                "testl {n}, {n}",
                "jz 31f",
                "30:",
                "movb ({s}), {t:l}",
                "movb {t:l}, ({d})",
                "incl {s}",
                "incl {d}",
                "decl {n}",
                "jnz 30b",
                "31:",
            ]
        );
    }

    #[test]
    fn delay_reads_its_count_through_a_register() {
        let ops = [Op::Delay {
            counts: reg("delays"),
            point: 2,
            reg: reg("dl"),
        }];
        assert_eq!(
            emit(&ops),
            [
                "movl 8({delays}), {dl}",
                "testl {dl}, {dl}",
                "jz 97f",
                "96:",
                "subl $1, {dl}",
                "jnz 96b",
                "97:",
            ]
        );
    }

    #[test]
    fn scale_copies_only_into_another_register() {
        let ops = [Op::Scale {
            dst: reg("o"),
            index: reg("idx"),
            stride: reg("s"),
            pow2: reg("p"),
            shift: reg("h"),
        }];
        assert_eq!(
            emit(&ops),
            [
                ".if {p}",
                "movl {idx}, {o}",
                "shll ${h}, {o}",
                ".else",
                "imull ${s}, {idx}, {o}",
                ".endif",
            ]
        );
    }
}

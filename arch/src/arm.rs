//! armv7 (A32 and Thumb-2, ILP32, little-endian).
//!
//! - Signature `0xe7f5def3` = `udf #24035` in A32, emitted with `.word` as *data* in both
//!   instruction sets: `.inst` would write a Thumb-2 instruction as two halfwords, high one
//!   first. As Thumb the same bytes decode as a 16-bit `udf`, so they trap either way. The abort
//!   handler is word-aligned so the kernel reads the signature with one aligned load.
//! - Thumb-2 uses r7 as the frame pointer, A32 uses r11; r6 is LLVM's base pointer and r9 is
//!   free on Linux. The templates name no register at all (everything is an operand), so the
//!   same text serves both instruction sets.
//! - Reading `pc` gives the address of the instruction plus 8 in A32 but plus 4 in Thumb: the
//!   PC-relative sequences measure the size of their own `add Rd, pc` (4 bytes in A32, always
//!   the 16-bit encoding in Thumb) to tell which, so the assembler resolves the difference.
//! - Thread pointer: `mrc p15, 0, rX, c13, c0, 3`.
//! - Release commit: `dmb ish` before the store.
//! - 64-bit descriptor fields: pointer in the low (first) half, then zero; the descriptor's
//!   address goes into the low word of the area's `rseq_cs`, whose high word stays 0.
//! - Cache line: 64 bytes (Cortex-A9/A15/A53 and later; RSEQ-ABI.md).

use crate::Arch;

/// armv7 facts.
pub const ARCH: Arch = Arch {
    target_arch: "arm",
    signature: 0xe7f5_def3,
    signature_directive: ".word 0xe7f5def3",
    cache_line: 64,
    pointer_bytes: 4,
    total_store_order: false,
    supported: true,
};

/// Code generation for armv7, one template set for both A32 and Thumb-2 (unified syntax).
///
/// - Registers: r0–r12 and lr, minus the frame pointer (r7 in Thumb, r11 in A32): 13. rustc
///   refuses r6 as an *explicit* operand (LLVM's base pointer, which only functions that both
///   realign the stack and allocate dynamically need; Rust emits no dynamic allocas), but the
///   allocator hands it out for `reg` operands, as it does r9 (not reserved on Linux). Measured
///   with rustc 1.95 in both instruction sets, debug and release, in a function that keeps a
///   frame pointer (forced, and for a realigned stack): 13 register operands allocate, 14 do
///   not.
/// - `t0` forms addresses and PC-relative values, `t1` holds immediates and the value of an add
///   commit. The descriptor and the index limit are reached with `movw`/`movt` of their distance
///   to the code plus `pc` (`R_ARM_MOVW_PREL_NC`/`R_ARM_MOVT_PREL`, resolved by the static
///   linker): no literal pool, no GOT, no text relocation.
/// - Conditional branches reach ±1 MiB in Thumb-2 (±32 MiB in A32), enough for the section's
///   exits, which are blocks of the same function; the abort handler lives in `__rseq_failure`,
///   possibly further away, so the index check branches around an unconditional `b` to it
///   (±16 MiB in Thumb-2, ±32 MiB in A32, and the linker adds a veneer beyond).
/// - Immediates: `cmp`/`add` take 0–255 directly (valid in both instruction sets); larger values
///   go through `movw`/`movt`, or, for the add commit that has no free register, one `add` per
///   non-zero byte. Load and store displacements (field offsets) must be below 4096.
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 13,
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

/// The abort handler's opening: word-aligned, then the signature as data.
const SIGNATURE_LINES: &str = ".balign 4\n.word 0xe7f5def3";

/// Whether `i` fits the immediate of `cmp` and `add` in both A32 and Thumb-2.
fn small(i: i64) -> bool {
    (0..256).contains(&i)
}

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

    /// `reg = i` for 0 ≤ i ≤ u32::MAX.
    fn load_imm(&mut self, reg: &str, i: i64) {
        let i = i as u32;
        self.line(format!("movw {reg}, #{}", i & 0xffff));
        if i > 0xffff {
            self.line(format!("movt {reg}, #{}", i >> 16));
        }
    }

    /// `reg += i` without a second register: one `add` per non-zero byte of `i` (a byte at any
    /// byte position is an immediate in both A32 and Thumb-2).
    fn add_imm(&mut self, reg: &str, i: i64) {
        let i = i as u32;
        for shift in [0, 8, 16, 24] {
            let chunk = i & (0xff << shift);
            if chunk != 0 {
                self.line(format!("add {reg}, {reg}, #{chunk}"));
            }
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

    /// `reg = &target`, PC-relative. `pc` reads as the `add`'s address plus twice its size (8 in
    /// A32, 4 in Thumb, where `add Rd, pc` only has a 16-bit encoding); `after - here` is that
    /// size, so the expression is right in both instruction sets.
    fn pc_relative(&mut self, reg: &str, target: &str) {
        let (here, after) = (self.label(), self.label());
        let distance = format!("({target} - {after}f - ({after}f - {here}f))");
        self.line(format!("movw {reg}, #:lower16:{distance}"));
        self.line(format!("movt {reg}, #:upper16:{distance}"));
        self.line(format!("{here}:"));
        self.line(format!("add {reg}, pc"));
        self.line(format!("{after}:"));
    }

    /// A memory operand for `a`, forming the address in `t0` when it has both an index and a
    /// displacement.
    fn mem(&mut self, a: &Addr) -> String {
        let base = format!("{{{}}}", a.base);
        let index = a.index.as_ref().map(|(i, scale)| match scale {
            1 => format!("{{{i}}}"),
            _ => format!("{{{i}}}, lsl #2"),
        });
        if let Some(d) = &a.disp {
            // ldr/str immediates are 12 bits in both instruction sets (Thumb-2: unsigned only).
            self.line(format!(".if {{{d}}} >= 4096"));
            self.line(".error \"a field offset of 4096 bytes or more does not fit an arm critical section\"");
            self.line(".endif");
        }
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
}

/// The condition code for an unsigned `a cond b` after `cmp a, b`.
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
                crate::tables::emit(&mut e.out, exits, 4, false);
                e.pc_relative("{t0}", "20b");
                e.line(format!(
                    "str {{t0}}, [{{{area}}}, #{}]",
                    crate::tables::rseq_cs_offset(4, false)
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
                e.line(format!("ldr {{{dst}}}, [{{{area}}}, #{offset}]"));
                e.pc_relative("{t0}", &format!("{{{limit}}}"));
                e.line("ldr {t0}, [{t0}]");
                e.line(format!("cmp {{{dst}}}, {{t0}}"));
                let ok = e.label();
                e.line(format!("blo {ok}f"));
                e.line("b 23f");
                e.line(format!("{ok}:"));
            }
            Op::CheckIndex {
                index,
                expected,
                exit,
            } => {
                e.line(format!("cmp {{{index}}}, {{{expected}}}"));
                e.line(format!("bne {{{exit}}}"));
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
                e.line(format!("movw {{t0}}, #({{{stride}}} & 0xffff)"));
                e.line(format!(".if {{{stride}}} > 0xffff"));
                e.line(format!("movt {{t0}}, #({{{stride}}} >> 16)"));
                e.line(".endif");
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
                e.line(format!("str {{{src}}}, [{{{slots}}}, #{}]", slot * 4))
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
                let a = e.reg(a, "t0");
                match b {
                    Value::Imm(i) if small(*i) => e.line(format!("cmp {a}, #{i}")),
                    _ => {
                        let b = e.reg(b, "t1");
                        e.line(format!("cmp {a}, {b}"));
                    }
                }
                e.line(format!("b{} {{{exit}}}", cond(c)));
            }
            Op::Store { addr, value } => {
                let v = e.reg(value, "t1");
                let m = e.mem(addr);
                e.line(format!("str {v}, {m}"));
            }
            Op::Copy { dst, src } => match src {
                Value::Reg(r) => e.line(format!("mov {{{dst}}}, {{{r}}}")),
                Value::Imm(i) => e.load_imm(&format!("{{{dst}}}"), *i),
            },
            Op::AddValue { dst, value } => match value {
                Value::Imm(i) if small(*i) => e.line(format!("add {{{dst}}}, {{{dst}}}, #{i}")),
                Value::Imm(i) if small(i.wrapping_neg()) => {
                    e.line(format!("sub {{{dst}}}, {{{dst}}}, #{}", -i))
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
                e.line(format!("cmp {{{len}}}, #0"));
                e.line(format!("beq {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("ldrb {{{scratch}}}, [{{{src}}}], #1"));
                e.line(format!("strb {{{scratch}}}, [{{{dst}}}], #1"));
                e.line(format!("subs {{{len}}}, {{{len}}}, #1"));
                e.line(format!("bne {top}b"));
                e.line(format!("{done}:"));
            }
            Op::Commit { kind, addr, value } => {
                match kind {
                    CommitKind::Store | CommitKind::StoreRelease => {
                        let v = e.reg(value, "t1");
                        let m = e.mem(addr);
                        if *kind == CommitKind::StoreRelease {
                            // Orders every earlier load and store of the section before the
                            // commit.
                            e.line("dmb ish");
                        }
                        e.line(format!("str {v}, {m}"));
                    }
                    CommitKind::Add => {
                        // Load and add inside the section; the store is the commit. `t0` may
                        // hold the address, so large immediates are added byte by byte.
                        let m = e.mem(addr);
                        e.line(format!("ldr {{t1}}, {m}"));
                        match value {
                            Value::Reg(r) => e.line(format!("add {{t1}}, {{t1}}, {{{r}}}")),
                            Value::Imm(i) => e.add_imm("{t1}", *i),
                        }
                        e.line(format!("str {{t1}}, {m}"));
                    }
                }
                e.line("22:");
            }
            Op::Delay { counts, point, reg } => {
                let (top, done) = (e.label(), e.label());
                let r = format!("{{{reg}}}");
                e.pc_relative(&r, &format!("{{{counts}}}"));
                e.line(format!("ldr {r}, [{r}, #{}]", 4 * point));
                e.line(format!("cmp {r}, #0"));
                e.line(format!("beq {done}f"));
                e.line(format!("{top}:"));
                e.line(format!("subs {r}, {r}, #1"));
                e.line(format!("bne {top}b"));
                e.line(format!("{done}:"));
            }
            Op::End { abort } => {
                crate::tables::abort_handler(&mut e.out, SIGNATURE_LINES);
                e.line(format!("b {{{abort}}}"));
                e.line(".popsection");
            }
        }
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::IndexField;
    use alloc::vec;

    fn reg(s: &str) -> String {
        s.into()
    }

    /// The instructions of `text`: no directives, no labels, no comments.
    fn code(text: &[String]) -> Vec<&str> {
        text.iter()
            .map(|s| s.as_str())
            .filter(|s| !s.starts_with('.') && !s.ends_with(':') && !s.starts_with("/*"))
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
    fn counter_add_is_the_minimal_sequence() {
        let text = emit(&counter_add());
        assert_eq!(
            code(&text),
            [
                "movw {t0}, #:lower16:(20b - 51f - (51f - 50f))",
                "movt {t0}, #:upper16:(20b - 51f - (51f - 50f))",
                "add {t0}, pc",
                "str {t0}, [{area}, #8]",
                "ldr {idx}, [{area}, #4]",
                "movw {t0}, #:lower16:({limit} - 53f - (53f - 52f))",
                "movt {t0}, #:upper16:({limit} - 53f - (53f - 52f))",
                "add {t0}, pc",
                "ldr {t0}, [{t0}]",
                "cmp {idx}, {t0}",
                "blo 54f",
                "b 23f",
                "lsl {idx}, {idx}, #{h0}",
                "movw {t0}, #({s0} & 0xffff)",
                "movt {t0}, #({s0} >> 16)",
                "mul {idx}, {idx}, {t0}",
                "ldr {t1}, [{b0}, {idx}]",
                "add {t1}, {t1}, {n}",
                "str {t1}, [{b0}, {idx}]",
                "b {abort}",
            ]
        );
        // The start label follows the store of the descriptor's address.
        let start = text.iter().position(|l| l == "21:").unwrap();
        assert_eq!(text[start - 1], "str {t0}, [{area}, #8]");
    }

    /// Each PC-relative sequence is `movw`, `movt`, then `add Rd, pc` between its own two
    /// labels, which the expression names: the distance is measured from the value `pc` reads.
    #[test]
    fn pc_relative_sequences_bracket_their_add_with_their_own_labels() {
        let text = emit(&counter_add());
        let adds: Vec<usize> = (0..text.len())
            .filter(|&i| text[i] == "add {t0}, pc")
            .collect();
        assert_eq!(adds.len(), 2);
        let mut seen = Vec::new();
        for i in adds {
            let here = text[i - 1].trim_end_matches(':');
            let after = text[i + 1].trim_end_matches(':');
            assert_ne!(here, after);
            assert!(!seen.contains(&here), "label {here} reused");
            seen.push(here);
            let tail = format!(" - {after}f - ({after}f - {here}f))");
            assert!(text[i - 3].starts_with("movw {t0}, #:lower16:("));
            assert!(text[i - 3].ends_with(&tail), "{}", text[i - 3]);
            assert!(text[i - 2].starts_with("movt {t0}, #:upper16:("));
            assert!(text[i - 2].ends_with(&tail), "{}", text[i - 2]);
        }
    }

    /// The signature is data right before the abort label, word-aligned, in the separate
    /// executable section, and nothing falls into it.
    #[test]
    fn signature_is_an_aligned_word_before_the_abort_label() {
        let text = emit(&counter_add());
        let abort = text.iter().position(|l| l == "23:").unwrap();
        assert_eq!(text[abort - 1], ".word 0xe7f5def3");
        assert_eq!(text[abort - 2], ".balign 4");
        assert_eq!(text[abort - 3], ".pushsection __rseq_failure, \"ax\"");
        assert_eq!(text[abort + 1], "b {abort}");
        assert_eq!(text[abort + 2], ".popsection");
        assert_eq!(ARCH.signature.to_le_bytes(), [0xf3, 0xde, 0xf5, 0xe7]);
        assert!(SIGNATURE_LINES.ends_with(ARCH.signature_directive));
    }

    #[test]
    fn descriptor_fields_are_the_address_then_zero() {
        let text = emit(&counter_add());
        let start = text.iter().position(|l| l == "20:").unwrap();
        assert_eq!(
            &text[start + 1..start + 5],
            [
                ".long 0, 0",
                ".long 21f, 0",
                ".long (22f - 21f), 0",
                ".long 23f, 0"
            ]
        );
    }

    fn commit(kind: CommitKind, value: Value, disp: bool) -> Vec<String> {
        emit(&[Op::Commit {
            kind,
            addr: Addr {
                base: reg("b"),
                index: Some((reg("i"), 4)),
                disp: disp.then(|| reg("d")),
            },
            value,
        }])
    }

    /// Every commit ends with one store right before the post-commit label; a release commit
    /// has its barrier right before that store.
    #[test]
    fn every_commit_is_one_store_ending_the_section() {
        for kind in [CommitKind::Store, CommitKind::StoreRelease, CommitKind::Add] {
            for value in [Value::Reg(reg("v")), Value::Imm(0), Value::Imm(70000)] {
                for disp in [false, true] {
                    let text = commit(kind, value.clone(), disp);
                    let post = text.iter().position(|l| l == "22:").unwrap();
                    assert_eq!(post, text.len() - 1);
                    let last = &text[post - 1];
                    assert!(last.starts_with("str "), "{kind:?}: {last}");
                    let barriers = text.iter().filter(|l| *l == "dmb ish").count();
                    if kind == CommitKind::StoreRelease {
                        assert_eq!(barriers, 1);
                        assert_eq!(text[post - 2], "dmb ish");
                    } else {
                        assert_eq!(barriers, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn index_and_displacement_form_the_address_in_t0() {
        let text = commit(CommitKind::Store, Value::Reg(reg("v")), true);
        assert_eq!(
            text,
            [
                ".if {d} >= 4096",
                ".error \"a field offset of 4096 bytes or more does not fit an arm critical section\"",
                ".endif",
                "add {t0}, {b}, {i}, lsl #2",
                "str {v}, [{t0}, #{d}]",
                "22:",
            ]
        );
    }

    /// An add commit of an immediate cannot use `t0` (it may hold the address): it adds the
    /// immediate byte by byte, and the bytes sum to it.
    #[test]
    fn large_add_commit_adds_one_byte_at_a_time() {
        for i in [1i64, 255, 256, 70000, 0x1234_5678, i32::MAX as i64] {
            let text = commit(CommitKind::Add, Value::Imm(i), true);
            let mut sum = 0i64;
            for line in &text {
                if let Some(chunk) = line.strip_prefix("add {t1}, {t1}, #") {
                    let chunk: i64 = chunk.parse().unwrap();
                    let shift = chunk.trailing_zeros() / 8 * 8;
                    assert!(chunk >> shift <= 0xff, "{chunk:#x} is not one byte");
                    sum += chunk;
                }
            }
            assert_eq!(sum, i);
            assert!(!text
                .iter()
                .any(|l| l.contains("movw") || l.contains("movt")));
        }
    }

    #[test]
    fn immediate_on_the_left_is_swapped() {
        let ops = [Op::ExitIf {
            a: Value::Imm(5),
            cond: Cond::Lt,
            b: Value::Reg(reg("v")),
            exit: reg("f"),
        }];
        assert_eq!(emit(&ops), ["cmp {v}, #5", "bhi {f}"]);
    }

    #[test]
    fn immediates_beyond_a_byte_go_through_movw_movt() {
        let exit = |a: Value, b: Value| {
            emit(&[Op::ExitIf {
                a,
                cond: Cond::Eq,
                b,
                exit: reg("f"),
            }])
        };
        assert_eq!(
            exit(Value::Reg(reg("v")), Value::Imm(255)),
            ["cmp {v}, #255", "beq {f}"]
        );
        assert_eq!(
            exit(Value::Reg(reg("v")), Value::Imm(4096)),
            ["movw {t1}, #4096", "cmp {v}, {t1}", "beq {f}"]
        );
        assert_eq!(
            exit(Value::Reg(reg("v")), Value::Imm(2_000_000_000)),
            [
                "movw {t1}, #37888",
                "movt {t1}, #30517",
                "cmp {v}, {t1}",
                "beq {f}"
            ]
        );
        // Both constant: the left one in t0, the right one in t1.
        assert_eq!(
            exit(Value::Imm(70000), Value::Imm(70000)),
            [
                "movw {t0}, #4464",
                "movt {t0}, #1",
                "movw {t1}, #4464",
                "movt {t1}, #1",
                "cmp {t0}, {t1}",
                "beq {f}"
            ]
        );
        assert_eq!(
            emit(&[Op::Copy {
                dst: reg("x"),
                src: Value::Imm(0)
            }]),
            ["movw {x}, #0"]
        );
    }

    /// Unsigned conditions, taken when `a cond b` holds.
    #[test]
    fn conditions_are_unsigned() {
        let expect = [
            (Cond::Eq, "beq"),
            (Cond::Ne, "bne"),
            (Cond::Lt, "blo"),
            (Cond::Le, "bls"),
            (Cond::Gt, "bhi"),
            (Cond::Ge, "bhs"),
        ];
        for (c, branch) in expect {
            let text = emit(&[Op::ExitIf {
                a: Value::Reg(reg("a")),
                cond: c,
                b: Value::Reg(reg("b")),
                exit: reg("f"),
            }]);
            assert_eq!(text, ["cmp {a}, {b}", &format!("{branch} {{f}}")]);
        }
    }

    #[test]
    fn delay_uses_only_its_register() {
        let text = emit(&[Op::Delay {
            counts: reg("delays"),
            point: 3,
            reg: reg("r"),
        }]);
        assert!(text.iter().any(|l| l == "ldr {r}, [{r}, #12]"));
        assert!(text.iter().any(|l| l.contains("{delays}")));
        for line in code(&text) {
            assert!(!line.contains("{t0}") && !line.contains("{t1}"), "{line}");
        }
    }

    /// The templates name no machine register except `pc`: the frame pointer (r7 in Thumb, r11
    /// in A32), r6 and r9 are never written into them.
    #[test]
    fn templates_name_no_register() {
        let mut ops = counter_add();
        ops.insert(
            2,
            Op::Memcpy {
                dst: reg("d"),
                src: reg("s"),
                len: reg("n"),
                scratch: reg("t"),
                unique: 0,
            },
        );
        ops.insert(
            2,
            Op::Delay {
                counts: reg("delays"),
                point: 1,
                reg: reg("r"),
            },
        );
        let text = emit(&ops);
        for line in &text {
            let outside: String = line
                .split('{')
                .map(|part| part.split_once('}').map_or(part, |(_, rest)| rest))
                .collect();
            for word in outside.split(|c: char| !c.is_ascii_alphanumeric()) {
                let named = matches!(word, "sp" | "lr" | "ip" | "fp" | "sb" | "sl")
                    || (word.len() > 1
                        && word.starts_with('r')
                        && word[1..].bytes().all(|b| b.is_ascii_digit()));
                assert!(!named, "{line} names {word}");
            }
        }
    }
}

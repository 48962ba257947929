//! Per-architecture facts for Linux restartable sequences.
//!
//! Every supported `target_arch` has one module here, named after it, and every module exports
//! the same item: a `pub const ARCH: Arch` that describes it. The crate has no dependencies and
//! no `cfg` on its own contents, so the procedural macro (which runs on the *host*) can look up
//! the facts of any target, while the runtime (which runs on the *target*) uses [`current`].
//!
//! ```
//! let x86 = rseq_arch::by_target_arch("x86_64").unwrap();
//! assert_eq!(x86.signature, 0x5305_3053);
//! assert_eq!(x86.cache_line, 128);
//! ```

#![no_std]
#![deny(missing_docs)]

extern crate alloc;

mod tables;
pub mod template;

pub mod aarch64;
pub mod arm;
pub mod loongarch64;
pub mod powerpc;
pub mod powerpc64;
pub mod riscv64;
pub mod s390x;
pub mod x86;
pub mod x86_64;

/// What every architecture module provides (as its `ARCH` constant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// The `target_arch` value this module describes.
    pub target_arch: &'static str,
    /// The 32-bit value passed as `sig` to `rseq(2)`; the kernel requires the four bytes just
    /// before every abort handler to equal it (native byte order).
    pub signature: u32,
    /// How the signature is written into the instruction stream, as one assembler directive.
    /// It decodes to a trapping instruction, so falling into it by mistake stops the program.
    pub signature_directive: &'static str,
    /// Bytes between per-CPU slots so that two CPUs never share a line (or a prefetched pair of
    /// lines). Each module says where its number comes from.
    pub cache_line: usize,
    /// Pointer width in bytes.
    pub pointer_bytes: usize,
    /// Whether loads and stores are already release-ordered (TSO), so a release commit needs no
    /// extra barrier instruction.
    pub total_store_order: bool,
    /// Whether the project builds, checks and runs critical sections for this architecture.
    /// loongarch64 is described but not claimed: its standard library could not be obtained for
    /// the project's CI, so nothing for it has been built or run.
    pub supported: bool,
}

/// Byte offsets in the kernel's `struct rseq` (checked against `offset_of!` by `rseq-rt`'s
/// tests).
pub mod area {
    /// `cpu_id`.
    pub const CPU_ID: usize = 4;
    /// `rseq_cs`.
    pub const RSEQ_CS: usize = 8;
    /// `mm_cid`.
    pub const MM_CID: usize = 24;
}

/// How the macro generates critical sections for one architecture: every module exports a
/// `CODEGEN: Option<Codegen>` (`None` where sections are not generated yet).
#[derive(Debug, Clone, Copy)]
pub struct Codegen {
    /// Turns a section's [`template::Op`]s into `asm!` template lines.
    pub emit: fn(&[template::Op]) -> alloc::vec::Vec<alloc::string::String>,
    /// General-purpose registers the register allocator can give a section.
    pub available_registers: usize,
    /// The `asm!` register class for every register operand (`reg_nonzero` on powerpc, where
    /// r0 reads as zero in an address; `reg_addr` on s390x, where r0 means "no register").
    pub register_class: &'static str,
    /// Scratch registers the templates use besides the section's values, named `t0`, `t1`, …
    pub scratch_registers: usize,
    /// Registers the templates clobber outright (`lr` for powerpc's `bcl` address trick).
    pub clobbers: &'static [&'static str],
    /// Whether the templates use the stack (i686's call/pop); otherwise `options(nostack)`.
    pub uses_stack: bool,
    /// The register class of the register `memcpy` copies bytes through: `reg_abcd` on i686,
    /// where only eax–edx have byte parts; `register_class` everywhere else.
    pub byte_register_class: &'static str,
    /// Whether the templates are AT&T syntax (`options(att_syntax)`): i686's PC-relative
    /// addresses are `label - label` displacements, which LLVM's Intel-syntax parser rejects.
    pub att_syntax: bool,
    /// Whether a section that needs more registers than `available_registers` may keep values
    /// in memory: the macro then passes parameters in a stack-frame array addressed through one
    /// register, shares registers between values that are not live at the same time, and spills
    /// (i686, with five registers). Otherwise such a section is a compile error.
    pub values_in_memory: bool,
    /// Whether the templates can address a `sym` operand PC-relatively at any point of a
    /// section. i686 only has the code address at `Begin` (call/pop, which must not run inside
    /// the section), so there the delay loops get their counts' address in a register.
    pub pc_relative_data: bool,
}

/// The code generator for a `target_arch`, when sections are generated for it.
pub fn codegen(target_arch: &str) -> Option<Codegen> {
    match target_arch {
        "x86_64" => x86_64::CODEGEN,
        "x86" => x86::CODEGEN,
        "aarch64" => aarch64::CODEGEN,
        "arm" => arm::CODEGEN,
        "powerpc64" => powerpc64::CODEGEN,
        "powerpc" => powerpc::CODEGEN,
        "riscv64" => riscv64::CODEGEN,
        "s390x" => s390x::CODEGEN,
        "loongarch64" => loongarch64::CODEGEN,
        _ => None,
    }
}

/// Every architecture the crate describes, in a fixed order.
pub const ALL: [Arch; 9] = [
    x86_64::ARCH,
    x86::ARCH,
    aarch64::ARCH,
    arm::ARCH,
    powerpc64::ARCH,
    powerpc::ARCH,
    riscv64::ARCH,
    s390x::ARCH,
    loongarch64::ARCH,
];

/// The facts for a `target_arch` name, or `None` when the project does not know it.
pub fn by_target_arch(name: &str) -> Option<&'static Arch> {
    ALL.iter().find(|arch| arch.target_arch == name)
}

/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "aarch64")]
pub use aarch64::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "arm")]
pub use arm::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "loongarch64")]
pub use loongarch64::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "powerpc")]
pub use powerpc::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "powerpc64")]
pub use powerpc64::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "riscv64")]
pub use riscv64::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "s390x")]
pub use s390x::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "x86")]
pub use x86::ARCH as current;
/// The architecture this crate is compiled for, when it is one the project knows.
#[cfg(target_arch = "x86_64")]
pub use x86_64::ARCH as current;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_names_itself_once() {
        for (i, a) in ALL.iter().enumerate() {
            assert_eq!(by_target_arch(a.target_arch), Some(&ALL[i]));
        }
    }

    #[test]
    fn cache_lines_are_powers_of_two_and_at_least_64() {
        for a in ALL {
            assert!(a.cache_line.is_power_of_two(), "{}", a.target_arch);
            assert!(a.cache_line >= 64, "{}", a.target_arch);
        }
    }

    /// The numbers of `shared/RSEQ-ABI.md`, one by one.
    #[test]
    fn signatures_and_cache_lines_match_the_abi_table() {
        let expect: [(&str, u32, usize, usize); 9] = [
            ("x86_64", 0x5305_3053, 128, 8),
            ("x86", 0x5305_3053, 64, 4),
            ("aarch64", 0xd428_bc00, 128, 8),
            ("arm", 0xe7f5_def3, 64, 4),
            ("powerpc64", 0x0fe5_000b, 128, 8),
            ("powerpc", 0x0fe5_000b, 64, 4),
            ("riscv64", 0xf140_1073, 64, 8),
            ("s390x", 0xb2ff_0fff, 256, 8),
            ("loongarch64", 0x002a_0010, 64, 8),
        ];
        for (name, sig, line, ptr) in expect {
            let a = by_target_arch(name).unwrap();
            assert_eq!(a.signature, sig, "{name}");
            assert_eq!(a.cache_line, line, "{name}");
            assert_eq!(a.pointer_bytes, ptr, "{name}");
        }
    }

    #[test]
    fn only_loongarch_is_unclaimed() {
        for a in ALL {
            assert_eq!(a.supported, a.target_arch != "loongarch64");
        }
    }

    /// `sub(x, 1)` is planned as an add of `-1`: every generator adds the immediates it
    /// promises in one instruction, with no scratch register.
    #[test]
    fn small_negative_adds_are_one_instruction() {
        use crate::template::{Op, Value, ADD_IMM_MIN};
        for a in ALL {
            let Some(codegen) = codegen(a.target_arch) else {
                continue;
            };
            for imm in [-1, ADD_IMM_MIN] {
                let op = Op::AddValue {
                    dst: "v".into(),
                    value: Value::Imm(imm),
                };
                let lines = (codegen.emit)(&[op]);
                assert_eq!(lines.len(), 1, "{}: {lines:?}", a.target_arch);
                assert!(
                    lines[0].contains(&alloc::format!("{}", imm.unsigned_abs()))
                        && !lines[0].contains("t1"),
                    "{}: {lines:?}",
                    a.target_arch
                );
            }
        }
    }

    #[test]
    fn current_is_in_the_table() {
        assert!(by_target_arch(current.target_arch).is_some());
    }
}

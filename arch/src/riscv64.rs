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

/// Sections are not generated for this architecture yet.
pub const CODEGEN: Option<crate::Codegen> = None;

//! armv7 (A32 and Thumb-2, ILP32, little-endian).
//!
//! - Signature `0xe7f5def3` = `udf #24035` in A32, emitted with `.word`.
//! - Thumb-2 reserves r7 as the frame pointer: templates must not name it.
//! - Thread pointer: `mrc p15, 0, rX, c13, c0, 3`.
//! - Release commit: `dmb ish` before the store.
//! - 64-bit descriptor fields: pointer in the low (first) half, then zero.
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

/// Sections are not generated for this architecture yet.
pub const CODEGEN: Option<crate::Codegen> = None;

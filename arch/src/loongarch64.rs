//! loongarch64 (LP64, little-endian). Described, not supported: the project cannot obtain its
//! standard library for CI, so nothing for it has been built or run.
//!
//! - Signature `0x002a0010` = `break 0x10`.
//! - Thread pointer: `$tp` (`$r2`).
//! - Release commit: `dbar 0x12` before the store.
//! - Cache line: 64 bytes (3A5000; RSEQ-ABI.md).

use crate::Arch;

/// loongarch64 facts.
pub const ARCH: Arch = Arch {
    target_arch: "loongarch64",
    signature: 0x002a_0010,
    signature_directive: ".word 0x002a0010",
    cache_line: 64,
    pointer_bytes: 8,
    total_store_order: false,
    supported: false,
};

/// Sections are not generated for this architecture yet.
pub const CODEGEN: Option<crate::Codegen> = None;

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

/// Sections are not generated for this architecture yet.
pub const CODEGEN: Option<crate::Codegen> = None;

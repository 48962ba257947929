//! i686 (32-bit x86, ILP32, little-endian, TSO).
//!
//! - Same signature and `ud1` encoding as x86_64.
//! - Thread pointer: `%gs:0`.
//! - 64-bit descriptor fields hold the 32-bit pointer in the low (first) half, then a zero word.
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

/// Sections are not generated for this architecture yet.
pub const CODEGEN: Option<crate::Codegen> = None;

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

//! s390x (LP64, big-endian, TSO).
//!
//! - Signature `0xb2ff0fff` = `trap4 4095(%r0)`.
//! - Thread pointer: access registers a0 (high half) and a1 (low half), read with `ear`.
//! - Loads and stores are totally ordered: a release commit is a plain store.
//! - Cache line: 256 bytes (z196 and later).

use crate::Arch;

/// s390x facts.
pub const ARCH: Arch = Arch {
    target_arch: "s390x",
    signature: 0xb2ff_0fff,
    signature_directive: ".long 0xb2ff0fff",
    cache_line: 256,
    pointer_bytes: 8,
    total_store_order: true,
    supported: true,
};

/// Sections are not generated for this architecture yet.
pub const CODEGEN: Option<crate::Codegen> = None;

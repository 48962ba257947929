//! aarch64 (LP64, little-endian data; instructions are always little-endian).
//!
//! - Signature `0xd428bc00` = `brk #0x45e0`, emitted with `.inst` so the assembler writes it in
//!   instruction byte order. A big-endian data kernel would register the byte-swapped value.
//! - Thread pointer: `tpidr_el0`.
//! - Release commit: `stlr`.
//! - Cache line: 64 bytes on most cores, 128 on Apple and some Neoverse/ThunderX parts; the
//!   kernel and crossbeam use 128, and so do we.

use crate::Arch;

/// aarch64 facts.
pub const ARCH: Arch = Arch {
    target_arch: "aarch64",
    signature: 0xd428_bc00,
    signature_directive: ".inst 0xd428bc00",
    cache_line: 128,
    pointer_bytes: 8,
    total_store_order: false,
    supported: true,
};

//! powerpc64 and powerpc64le (LP64; both endiannesses share this `target_arch`).
//!
//! - Signature `0x0fe5000b` = `twui r5, 11`, a valid trap on both endiannesses (chosen for the
//!   kernel selftests in 2019 because `0x53053053` is not a powerpc instruction).
//! - r0 reads as zero in an address: addresses go in `reg_nonzero` registers, written in the
//!   explicit `0(rX)` form (no indexed "m" operands).
//! - Thread pointer: r13.
//! - Release commit: `lwsync` before the store.
//! - Cache line: 128 bytes (POWER7-POWER10; false sharing measured below 128 B on POWER9).

use crate::Arch;

/// powerpc64 facts.
pub const ARCH: Arch = Arch {
    target_arch: "powerpc64",
    signature: 0x0fe5_000b,
    signature_directive: ".long 0x0fe5000b",
    cache_line: 128,
    pointer_bytes: 8,
    total_store_order: false,
    supported: true,
};

/// Code generation for powerpc64 (both endiannesses): the 32-bit templates with doubleword
/// loads, stores and compares (see [`crate::powerpc`]); `.quad` fields are native-endian.
pub const CODEGEN: Option<crate::Codegen> = Some(crate::Codegen {
    emit,
    available_registers: 22,
    register_class: "reg_nonzero",
    scratch_registers: 2,
    clobbers: &["lr"],
    uses_stack: false,
    byte_register_class: "reg_nonzero",
    att_syntax: false,
    values_in_memory: false,
    pc_relative_data: true,
});

/// Template lines for a powerpc64 section.
pub fn emit(ops: &[crate::template::Op]) -> alloc::vec::Vec<alloc::string::String> {
    // 64-bit fields are `.quad`, whatever the byte order.
    crate::powerpc::emit_words(ops, 8, false)
}

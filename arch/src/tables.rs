//! The tables every architecture emits the same way, up to word size and byte order: the
//! `struct rseq_cs` descriptor (local label 20), its `__rseq_cs_ptr_array` entry and the
//! `__rseq_exit_point_array` pairs. Labels: 21 start, 22 post-commit, 23 abort handler.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A 64-bit field holding `value` (an assembler expression), as directives for this word size
/// and byte order: `.quad v` on 64-bit targets; on 32-bit ones the pointer and a zero word,
/// in memory order (little-endian: value then 0; big-endian: 0 then value).
fn u64_field(value: &str, pointer_bytes: usize, big_endian: bool) -> String {
    match (pointer_bytes, big_endian) {
        (8, _) => format!(".quad {value}"),
        (_, false) => format!(".long {value}, 0"),
        (_, true) => format!(".long 0, {value}"),
    }
}

/// The descriptor and table entries of one section; `exits` are label operand names.
pub(crate) fn emit(
    out: &mut Vec<String>,
    exits: &[String],
    pointer_bytes: usize,
    big_endian: bool,
) {
    let field = |v: &str| u64_field(v, pointer_bytes, big_endian);
    out.push(".pushsection __rseq_cs, \"aw\"".into());
    out.push(".balign 32".into());
    out.push("20:".into());
    out.push(".long 0, 0".into());
    out.push(field("21f"));
    out.push(field("(22f - 21f)"));
    out.push(field("23f"));
    out.push(".popsection".into());
    out.push(".pushsection __rseq_cs_ptr_array, \"awR\"".into());
    out.push(".balign 8".into());
    out.push(field("20b"));
    out.push(".popsection".into());
    if !exits.is_empty() {
        out.push(".pushsection __rseq_exit_point_array, \"awR\"".into());
        out.push(".balign 8".into());
        for exit in exits {
            out.push(field("21f"));
            out.push(field(&format!("{{{exit}}}")));
        }
        out.push(".popsection".into());
    }
}

/// The offset of the pointer inside the area's 64-bit `rseq_cs` field: 0, or 4 on 32-bit
/// big-endian targets (the high-address half).
pub(crate) fn rseq_cs_offset(pointer_bytes: usize, big_endian: bool) -> usize {
    crate::area::RSEQ_CS
        + if pointer_bytes == 4 && big_endian {
            4
        } else {
            0
        }
}

/// The abort handler's opening: the section that keeps it out of the hot path, the signature
/// right before label 23.
pub(crate) fn abort_handler(out: &mut Vec<String>, signature_directive: &str) {
    out.push(".pushsection __rseq_failure, \"ax\"".into());
    for directive in signature_directive.lines() {
        out.push(directive.into());
    }
    out.push("23:".into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_two_bit_fields_follow_the_byte_order() {
        assert_eq!(u64_field("x", 8, true), ".quad x");
        assert_eq!(u64_field("x", 4, false), ".long x, 0");
        assert_eq!(u64_field("x", 4, true), ".long 0, x");
        assert_eq!(rseq_cs_offset(4, true), 12);
        assert_eq!(rseq_cs_offset(4, false), 8);
        assert_eq!(rseq_cs_offset(8, true), 8);
    }
}

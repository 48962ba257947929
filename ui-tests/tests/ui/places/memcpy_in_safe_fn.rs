use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// `memcpy` copies through raw pointers: the section must be `unsafe fn`.
#[critical_section]
fn copy_and_publish(slots: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8, len: usize) -> bool {
    let current = load(slots[cpu]);
    if current != 0 { fail(false) }
    memcpy(dst, src, len);
    commit::store(slots[cpu], dst);
    true
}

fn main() {}

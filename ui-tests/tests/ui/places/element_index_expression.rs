use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

#[repr(C)]
pub struct Stack {
    len: AtomicUsize,
    items: [AtomicUsize; 8],
}

// An element index is one value: `len - 1` must be computed in a step.
/// # Safety
/// None beyond the checks in the section.
#[critical_section]
unsafe fn top(s: &PerCpu<Stack>) -> Option<usize> {
    let len = load(s[cpu].len);
    if len == 0 { fail(None) }
    let item = load(s[cpu].items[len - 1]);
    commit::store(s[cpu].len, len);
    Some(item)
}

fn main() {}

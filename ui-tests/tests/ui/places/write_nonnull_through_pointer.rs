use rseq::{critical_section, PerCpu};
use std::ptr::NonNull;
use std::sync::atomic::AtomicPtr;

#[repr(C)]
struct Node {
    next: NonNull<Node>,
}

// Even through a pointer in an `unsafe fn`, a `NonNull` field cannot take an arbitrary word.
/// # Safety
/// Every slot points at a valid node.
#[critical_section]
unsafe fn clear_next(heads: &PerCpu<AtomicPtr<Node>>) {
    let head: *mut Node = load(heads[cpu]);
    commit::store((*head).next, null);
}

fn main() {}

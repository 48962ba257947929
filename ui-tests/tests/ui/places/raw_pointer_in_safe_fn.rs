use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicPtr;

#[repr(C)]
pub struct Node {
    pub next: *mut Node,
    pub value: u64,
}

// `(*head).next` goes through a pointer the macro cannot check: the section must be `unsafe fn`.
#[critical_section]
fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
    let head: *mut Node = load(heads[cpu]);
    if head == null { fail(None) }
    let next = load((*head).next);
    commit::store(heads[cpu], next);
    Some(head)
}

fn main() {}

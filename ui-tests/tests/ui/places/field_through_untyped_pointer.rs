use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicPtr;

#[repr(C)]
pub struct Node {
    pub next: *mut Node,
    pub value: u64,
}

// `node` is loaded without a type, so `(*node).value` has no known offset.
/// # Safety
/// Every slot points at a valid `Node`.
#[critical_section]
unsafe fn deref_add(nodes: &PerCpu<AtomicPtr<Node>>, n: u64) {
    let node = load(nodes[cpu]);
    commit::add((*node).value, n);
}

fn main() {}

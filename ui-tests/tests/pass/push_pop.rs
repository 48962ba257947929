use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicPtr, Ordering};

#[repr(C)]
struct Node {
    next: *mut Node,
    value: u64,
}

/// # Safety
/// `node` is valid and not on any list.
#[critical_section]
unsafe fn push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
    let head = load(heads[cpu]);
    store((*node).next, head);
    commit::store_release(heads[cpu], node);
}

/// # Safety
/// Every node on the lists is valid and owned by the lists.
#[critical_section]
unsafe fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
    let head: *mut Node = load(heads[cpu]);
    if head == null {
        fail(None)
    }
    let next = load((*head).next);
    commit::store(heads[cpu], next);
    Some(head)
}

fn main() {
    let heads: PerCpu<AtomicPtr<Node>> = PerCpu::new(|_| AtomicPtr::new(std::ptr::null_mut()));
    let node = Box::into_raw(Box::new(Node {
        next: std::ptr::null_mut(),
        value: 7,
    }));
    unsafe {
        push(&heads, node);
        let got = loop {
            // The thread may have moved to another CPU between the calls: look everywhere.
            if let Some(n) = pop(&heads) {
                break n;
            }
            let n = heads.iter().find(|h| !h.load(Ordering::Relaxed).is_null());
            assert!(n.is_some(), "the node is on some CPU's list");
        };
        assert_eq!((*got).value, 7);
        drop(Box::from_raw(got));
    }
}

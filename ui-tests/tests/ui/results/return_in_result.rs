use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The result is an expression evaluated after the section: it cannot `return`.
#[critical_section]
fn store_if_empty(slots: &PerCpu<AtomicU64>, new: u64) -> bool {
    let seen = load(slots[cpu]);
    if seen != 0 { fail(return false) }
    commit::store(slots[cpu], new);
    true
}

fn main() {}

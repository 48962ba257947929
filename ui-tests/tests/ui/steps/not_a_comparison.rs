use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Comparisons are `==`, `!=`, `<`, `<=`, `>`, `>=`: there is no `&&`.
#[critical_section]
fn store_if_empty(slots: &PerCpu<AtomicU64>, new: u64) -> bool {
    let seen = load(slots[cpu]);
    if seen && new { fail(false) }
    commit::store(slots[cpu], new);
    true
}

fn main() {}

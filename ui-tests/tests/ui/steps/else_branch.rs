use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A comparison that does not fail simply goes on: there is no `else`.
#[critical_section]
fn store_if_empty(slots: &PerCpu<AtomicU64>, new: u64) -> bool {
    let seen = load(slots[cpu]);
    if seen != 0 { fail(false) } else { fail(true) }
    commit::store(slots[cpu], new);
    true
}

fn main() {}

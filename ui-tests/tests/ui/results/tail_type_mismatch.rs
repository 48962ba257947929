use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Loaded values are `usize` words unless loaded with a type: `n` is not a `u64`.
#[critical_section]
fn swap(slots: &PerCpu<AtomicU64>, new: u64) -> u64 {
    let old = load(slots[cpu]);
    commit::store(slots[cpu], new);
    old
}

fn main() {}

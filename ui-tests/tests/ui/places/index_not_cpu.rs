use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Per-CPU slots are indexed by `cpu`, the section's own index, not a parameter.
#[critical_section]
fn add_on(counters: &PerCpu<AtomicU64>, i: usize, n: u64) {
    commit::add(counters[i], n);
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A section commits exactly once.
#[critical_section]
fn add_twice(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
    commit::add(counters[cpu], n);
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A section runs to its commit without suspending.
#[critical_section]
async fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}

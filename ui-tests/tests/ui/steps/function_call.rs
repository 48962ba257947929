use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Arbitrary functions cannot run between the start and the commit.
#[critical_section]
fn polite_add(counters: &PerCpu<AtomicU64>, n: u64) {
    std::thread::yield_now();
    commit::add(counters[cpu], n);
}

fn main() {}

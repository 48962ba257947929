use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A section reads the running CPU: it cannot be evaluated at compile time.
#[critical_section]
const fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}

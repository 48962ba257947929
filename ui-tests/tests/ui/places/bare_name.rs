use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A bare name is a value; the place is `counters[cpu]`.
#[critical_section]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters, n);
}

fn main() {}

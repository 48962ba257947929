use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `increment` is not a step.
#[critical_section]
fn bump(counters: &PerCpu<AtomicU64>, n: u64) {
    increment(counters[cpu]);
    commit::add(counters[cpu], n);
}

fn main() {}

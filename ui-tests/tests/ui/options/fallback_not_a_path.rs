use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// The fallback is named, not written inline.
#[critical_section(fallback = |c: &PerCpu<AtomicUsize>, n: usize| ())]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

fn main() {}

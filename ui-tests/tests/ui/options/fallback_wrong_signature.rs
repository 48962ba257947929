use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// The fallback takes the section's parameters and returns its result.
#[critical_section(fallback = add_elsewhere)]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) -> usize {
    let old = load(counters[cpu]);
    commit::add(counters[cpu], n);
    old
}

fn add_elsewhere(_counters: &PerCpu<AtomicUsize>) -> usize {
    0
}

fn main() {}

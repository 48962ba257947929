use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// A safe section cannot name an `unsafe fn` fallback: its callers promised nothing.
#[critical_section(fallback = add_unchecked)]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

unsafe fn add_unchecked(_counters: &PerCpu<AtomicUsize>, _n: usize) {}

fn main() {}

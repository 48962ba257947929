use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// With `on_abort` the section never reaches a fallback of its own.
#[critical_section(on_abort = false, fallback = add_atomic)]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn add_atomic(_counters: &PerCpu<AtomicUsize>, _n: usize) -> bool {
    true
}

fn main() {}

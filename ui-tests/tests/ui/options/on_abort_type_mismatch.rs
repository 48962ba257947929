use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// `on_abort` is returned from the function: it must have its return type.
#[critical_section(on_abort = 0)]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {}

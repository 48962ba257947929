use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// The twin's name is one identifier, not a path.
#[critical_section(on_abort = false, retrying = other::add_any)]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {}

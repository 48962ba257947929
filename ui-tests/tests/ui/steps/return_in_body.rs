use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Sections leave through `fail(value)`, not `return`.
#[critical_section]
fn add_or_return(counters: &PerCpu<AtomicU64>, n: u64) {
    return;
    commit::add(counters[cpu], n);
}

fn main() {}

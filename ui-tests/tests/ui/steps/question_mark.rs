use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Sections leave through `fail(value)`, not `?`.
#[critical_section]
fn add_some(counters: &PerCpu<AtomicU64>, n: Option<u64>) -> Option<()> {
    n?;
    commit::add(counters[cpu], 1);
    Some(())
}

fn main() {}

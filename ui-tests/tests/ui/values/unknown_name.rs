use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `amount` is neither a loaded value nor a parameter.
#[critical_section]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], amount);
}

fn main() {}

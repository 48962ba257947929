use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Parameters are plain names.
#[critical_section]
fn add(counters: &PerCpu<AtomicU64>, (n, _): (u64, u64)) {
    commit::add(counters[cpu], n);
}

fn main() {}

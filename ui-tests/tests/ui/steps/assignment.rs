use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Memory is written by `store` or the commit, not by `=`.
#[critical_section]
fn reset(counters: &PerCpu<AtomicU64>, totals: &PerCpu<AtomicU64>, n: u64) {
    totals[cpu] = n;
    commit::store(counters[cpu], n);
}

fn main() {}

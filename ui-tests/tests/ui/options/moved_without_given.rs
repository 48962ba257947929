use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `moved` only applies with `index = given(..)`.
#[critical_section(moved = false)]
fn add(counters: &PerCpu<AtomicU64>, n: u64) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Macros cannot run between the start and the commit.
#[critical_section]
fn add_loudly(counters: &PerCpu<AtomicU64>, n: u64) {
    println!("adding {n}");
    commit::add(counters[cpu], n);
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

#[critical_section(crate = "rseq")]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}

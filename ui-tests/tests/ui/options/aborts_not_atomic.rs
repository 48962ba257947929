use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `aborts` counts into an `AtomicUsize` static.
static ABORTS: u64 = 0;

#[critical_section(aborts = ABORTS)]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `seen` is read by the step before its `load`.
#[critical_section]
fn bump(counters: &PerCpu<AtomicU64>) {
    let next = add(seen, 1);
    let seen = load(counters[cpu]);
    commit::store(counters[cpu], next);
}

fn main() {}

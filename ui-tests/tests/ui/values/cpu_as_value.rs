use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `cpu` is the index of a slot, not a value.
#[critical_section]
fn record_cpu(last: &PerCpu<AtomicU64>) {
    commit::store(last[cpu], cpu);
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// Integers are unsigned words.
#[critical_section]
fn set_big(counters: &PerCpu<AtomicU64>) {
    commit::store(counters[cpu], 18446744073709551616);
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A `let` loads or adds; other computations are `{ expression }` operands.
#[critical_section]
fn add_double(counters: &PerCpu<AtomicU64>, n: u64) {
    let twice = n * 2;
    commit::add(counters[cpu], twice);
}

fn main() {}

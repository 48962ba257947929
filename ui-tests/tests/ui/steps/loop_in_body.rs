use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A section is straight-line code.
#[critical_section]
fn add_slowly(counters: &PerCpu<AtomicU64>, n: u64) {
    loop {
        break;
    }
    commit::add(counters[cpu], n);
}

fn main() {}

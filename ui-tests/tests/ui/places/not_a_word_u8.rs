use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU8;

// A slot of one byte is not a word.
#[critical_section]
fn add(counters: &PerCpu<AtomicU8>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}

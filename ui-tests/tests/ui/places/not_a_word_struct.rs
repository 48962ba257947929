use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// The slot is a struct of two words: name the field, `pairs[cpu].hits`.
#[repr(C)]
pub struct Pair {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

#[critical_section]
fn hit(pairs: &PerCpu<Pair>, n: u64) {
    commit::add(pairs[cpu], n);
}

fn main() {}

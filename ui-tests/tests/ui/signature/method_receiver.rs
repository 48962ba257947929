use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

pub struct Stats;

impl Stats {
    // Sections are free functions: no `self`.
    #[critical_section]
    pub fn add(&self, counters: &PerCpu<AtomicU64>, n: u64) {
        commit::add(counters[cpu], n);
    }
}

fn main() {}

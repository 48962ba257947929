use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicU64, Ordering};

#[critical_section]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    for _ in 0..100 {
        add(&counters, 2);
    }
    let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, 200);
}

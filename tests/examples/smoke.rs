use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[critical_section]
fn counter_add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

#[critical_section]
fn cmpeq_store(words: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> bool {
    let v = load(words[cpu]);
    if v != expect {
        fail(false)
    }
    commit::store(words[cpu], new);
    true
}

fn main() {
    let c: PerCpu<AtomicU64> = PerCpu::default();
    for _ in 0..1000 {
        counter_add(&c, 2);
    }
    let s: u64 = c.iter().map(|x| x.load(Ordering::Relaxed)).sum();
    println!("sum {s} mode {:?} stats {:?}", rseq::mode(), rseq::stats());
    let w: PerCpu<AtomicUsize> = PerCpu::default();
    println!("{} {}", cmpeq_store(&w, 0, 5), cmpeq_store(&w, 0, 7));
}

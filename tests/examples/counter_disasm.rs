//! Shows the machine code of the per-CPU counter add (`objdump -d` of this example, symbol
//! `counter_add`), for comparison with librseq's `rseq_load_add_store__ptr`.
use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicUsize, Ordering};

#[critical_section]
#[inline(never)]
#[no_mangle]
pub fn counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

fn main() {
    let c: PerCpu<AtomicUsize> = PerCpu::default();
    for _ in 0..1000 {
        counter_add(&c, 1);
    }
    println!(
        "{}",
        c.iter().map(|x| x.load(Ordering::Relaxed)).sum::<usize>()
    );
}

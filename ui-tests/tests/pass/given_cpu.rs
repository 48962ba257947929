use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicU64, Ordering};

// librseq's style: the caller passes the CPU it computed; `false` if the thread moved.
#[critical_section(index = given(cpu), moved = false)]
fn add_on(counters: &PerCpu<AtomicU64>, cpu: usize, n: u64) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    let mut added = 0;
    while added < 10 {
        if add_on(&counters, rseq::current_cpu(), 1) {
            added += 1;
        }
    }
    let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, 10);
}

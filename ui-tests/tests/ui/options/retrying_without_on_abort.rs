use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicUsize;

// `retrying` names the twin of a section that returns on abort: without `on_abort` there is
// nothing to twin.
#[critical_section(retrying = add_any)]
fn add(counters: &PerCpu<AtomicUsize>, n: usize) -> bool {
    commit::add(counters[cpu], n);
    true
}

fn main() {
    let c: PerCpu<AtomicUsize> = PerCpu::default();
    add_any(&c, 1);
}

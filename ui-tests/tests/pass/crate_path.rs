// A crate that reaches rseq through a re-export names it with `crate = …`.
mod reexport {
    pub use rseq as runtime;
}

use reexport::runtime::{critical_section, PerCpu};
use std::sync::atomic::{AtomicU64, Ordering};

#[critical_section(crate = crate::reexport::runtime)]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    add(&counters, 2);
    assert_eq!(counters.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>(), 2);
}

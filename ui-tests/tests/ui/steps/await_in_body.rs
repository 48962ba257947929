use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A section cannot suspend.
#[critical_section]
fn add_later(counters: &PerCpu<AtomicU64>, n: u64, ready: std::future::Ready<()>) {
    ready.await;
    commit::add(counters[cpu], n);
}

fn main() {}

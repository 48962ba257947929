use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A loaded value is a word even when nothing returns it.
#[critical_section]
fn replace(slots: &PerCpu<AtomicU64>, new: u64) {
    let old: u16 = load(slots[cpu]);
    if old == 0 { fail() }
    commit::store(slots[cpu], new);
}

fn main() {}

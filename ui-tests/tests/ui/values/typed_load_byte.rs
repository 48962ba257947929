use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A loaded value is a word: it cannot be given a byte type.
#[critical_section]
fn swap(slots: &PerCpu<AtomicU64>, new: u64) -> u8 {
    let old: u8 = load(slots[cpu]);
    commit::store(slots[cpu], new);
    old
}

fn main() {}

use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// A loaded value is a word: it cannot be a `String`.
#[critical_section]
fn swap(slots: &PerCpu<AtomicU64>, new: u64) -> String {
    let old: String = load(slots[cpu]);
    commit::store(slots[cpu], new);
    old
}

fn main() {}

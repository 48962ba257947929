use rseq::{critical_section, PerCpu};
use std::sync::atomic::AtomicU64;

// `{ expression }` operands are cast to a word: a `&str` is not one.
#[critical_section]
fn store_name(slots: &PerCpu<AtomicU64>) {
    commit::store(slots[cpu], { "name" });
}

fn main() {}

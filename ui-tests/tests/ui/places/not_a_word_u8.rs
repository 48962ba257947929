use rseq::{critical_section, PerCpu};
use std::sync::atomic::{AtomicU8, AtomicUsize};

// A slot of one byte is not a word, not even to load.
#[critical_section]
fn widen(bytes: &PerCpu<AtomicU8>, words: &PerCpu<AtomicUsize>) {
    let b = load(bytes[cpu]);
    commit::store(words[cpu], b);
}

fn main() {}

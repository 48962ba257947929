use rseq::{critical_section, PerCpu};

// A plain `usize` slot may be borrowed (`counters.iter()`) while a section writes it: writes
// through a shared `PerCpu` need an atomic word.
#[critical_section]
fn add(counters: &PerCpu<usize>, n: usize) {
    commit::add(counters[cpu], n);
}

fn main() {}

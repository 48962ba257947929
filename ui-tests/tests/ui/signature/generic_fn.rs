use rseq::{critical_section, PerCpu};

// The stride and offsets must be known when the asm is generated.
#[critical_section]
fn add<T>(counters: &PerCpu<T>, n: u64) {
    commit::add(counters[cpu], n);
}

fn main() {}

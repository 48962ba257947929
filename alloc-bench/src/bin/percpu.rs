//! `PerCpuAlloc` over glibc's malloc, installed as a user would.

use rseq::collections::alloc::PerCpuAlloc;
use std::alloc::System;

#[global_allocator]
static GLOBAL: PerCpuAlloc = PerCpuAlloc::new(System);

fn main() {
    rseq_alloc_bench::worker_main(|| format!("mode={:?} stats={:?}", rseq::mode(), GLOBAL.stats()));
}

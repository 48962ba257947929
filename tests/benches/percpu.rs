//! criterion benchmarks of the per-CPU structures, one thread (for statistics over time; the
//! side-by-side, multi-threaded comparison is `cargo run --release -p rseq-tests --bin rseq-demo`).
//!
//! `cargo bench -p rseq-tests --bench percpu` (ends with the zero-overhead ratios: generated
//! sections against hand-written references, side by side)

use criterion::{black_box, criterion_group, Criterion};
use rseq::collections::alloc::PerCpuAlloc;
use rseq::collections::counter::PerCpuCounter;
use rseq::collections::pool::PerCpuPool;
use rseq::{critical_section, PerCpu};
use rseq_tests::reference;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[critical_section]
fn counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

static FRONT: PerCpuAlloc<System> = PerCpuAlloc::new(System);

fn counters(c: &mut Criterion) {
    let ours: PerCpu<AtomicUsize> = PerCpu::default();
    let counter = PerCpuCounter::new();
    let shared = AtomicUsize::new(0);
    let mut g = c.benchmark_group("counter add");
    g.bench_function("rseq counter_add (DSL)", |b| {
        b.iter(|| counter_add(black_box(&ours), 1))
    });
    g.bench_function("PerCpuCounter::add", |b| {
        b.iter(|| black_box(&counter).add(1))
    });
    g.bench_function("AtomicUsize::fetch_add", |b| {
        b.iter(|| black_box(&shared).fetch_add(1, Ordering::Relaxed))
    });
    g.finish();
}

fn accessors(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu id");
    g.bench_function("rseq::current_cpu", |b| b.iter(rseq::current_cpu));
    // SAFETY: no preconditions.
    g.bench_function("libc::sched_getcpu", |b| {
        b.iter(|| unsafe { libc::sched_getcpu() })
    });
    g.finish();
}

fn pools(c: &mut Criterion) {
    let pool: PerCpuPool<[u64; 8]> = PerCpuPool::new();
    c.bench_function("PerCpuPool alloc+free", |b| {
        b.iter(|| {
            let o = pool.alloc();
            // SAFETY: the object just allocated, freed once.
            unsafe { pool.free(black_box(o)) };
        })
    });
}

fn allocators(c: &mut Criterion) {
    let layout = Layout::from_size_align(32, 8).unwrap();
    let mut g = c.benchmark_group("32-byte alloc+free");
    // SAFETY: each block is freed with the layout it was allocated with.
    g.bench_function("PerCpuAlloc<System>", |b| {
        b.iter(|| unsafe { FRONT.dealloc(black_box(FRONT.alloc(layout)), layout) })
    });
    g.bench_function("System", |b| {
        b.iter(|| unsafe { System.dealloc(black_box(System.alloc(layout)), layout) })
    });
    g.finish();
}

/// The generated sections against the hand-written references (librseq's loops), each in
/// criterion's statistics here; the ratios come from a side-by-side run printed at the end.
fn zero_overhead(c: &mut Criterion) {
    if !reference::available() {
        let _ = c;
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let counters: PerCpu<AtomicUsize> = PerCpu::default();
        let mut g = c.benchmark_group("zero overhead");
        g.bench_function(reference::ROWS[0], |b| {
            b.iter(|| reference::counter_add(black_box(&counters), 1))
        });
        g.bench_function(reference::ROWS[1], |b| {
            b.iter(|| reference::dsl_counter_add(black_box(&counters), 1))
        });
        g.finish();
    }
}

criterion_group!(
    benches,
    counters,
    accessors,
    pools,
    allocators,
    zero_overhead
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Ratios measured side by side in one run (criterion's groups run one after the other).
    // Skipped when cargo runs the bench as a test (`--test`, `cargo test --benches`).
    if !std::env::args().any(|a| a == "--test") {
        if let Some(rows) = reference::side_by_side(9, 2_000_000) {
            rseq_tests::bench::print_table("Zero overhead, side by side (1 thread)", &rows);
            reference::print_goals(&rows);
        }
    }
}

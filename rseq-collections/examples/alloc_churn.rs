//! Small-object churn: `PerCpuAlloc<System>` against `System`, in one run.
//!
//! ```text
//! cargo run --release -p rseq-collections --example alloc_churn [threads] [iterations]
//! ```
//!
//! Each thread allocates and frees `iterations` blocks of one size through the allocator's
//! `GlobalAlloc` methods (not as the global allocator, so both run in the same process), in
//! bursts of 1 (alloc, free), 16, 48 and 256 blocks (a per-CPU cache grows to hold a burst: the
//! first bursts miss, the later ones hit).
//! Prints nanoseconds per alloc+free pair (median of 5 runs, the two allocators alternating)
//! and the ratio.

use rseq_collections::alloc::PerCpuAlloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Instant;

static CACHED: PerCpuAlloc = PerCpuAlloc::new(System);

/// Nanoseconds per alloc+free pair, `threads` threads at once.
fn churn<A: GlobalAlloc + Sync>(
    a: &A,
    threads: usize,
    iterations: usize,
    size: usize,
    burst: usize,
) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let barrier = std::sync::Barrier::new(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut held = vec![std::ptr::null_mut::<u8>(); burst];
                barrier.wait();
                for _ in 0..iterations / burst {
                    for slot in held.iter_mut() {
                        // SAFETY: non-zero size.
                        let p = unsafe { a.alloc(layout) };
                        // SAFETY: at least one byte.
                        unsafe { p.write(1) };
                        *slot = black_box(p);
                    }
                    for &p in held.iter().rev() {
                        // SAFETY: allocated above with `layout`.
                        unsafe { a.dealloc(p, layout) };
                    }
                }
            });
        }
    });
    start.elapsed().as_nanos() as f64 / (iterations / burst * burst) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(4, |a| a.parse().unwrap());
    let iterations: usize = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    println!(
        "mode {:?}, {threads} threads x {iterations} alloc+free per run, {} CPUs",
        rseq_rt::mode(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("size burst   System ns/op  PerCpuAlloc ns/op  ratio (PerCpuAlloc/System)");
    for size in [32, 256] {
        for burst in [1, 16, 48, 256] {
            let (mut sys, mut cached) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                sys.push(churn(&System, threads, iterations, size, burst));
                cached.push(churn(&CACHED, threads, iterations, size, burst));
            }
            let (s, c) = (median(sys), median(cached));
            println!(
                "{size:>4} {burst:>5}   {s:>12.2}  {c:>17.2}  {:>6.2}",
                c / s
            );
        }
    }
    println!("{:?}", CACHED.stats());
}

//! The project's demonstration: what the runtime found on this machine, a per-CPU counter
//! written with the DSL, and its cost measured side by side with the alternatives in one run.
//!
//! `cargo run --release -p rseq-tests --bin rseq-demo`
//! (`RSEQ_DISABLE=1` in front shows the fallback's numbers.)

use rseq::{critical_section, PerCpu};
use rseq_tests::bench::{compare, compare_threads, print_table, Measured};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// The showcase: a per-CPU counter add, no atomic instruction.
#[critical_section]
fn counter_add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

thread_local! {
    static LOCAL: Cell<u64> = const { Cell::new(0) };
}

fn ratio(rows: &[Measured], name: &str) -> f64 {
    rows.iter().find(|r| r.name == name).unwrap().ns_per_op / rows[0].ns_per_op
}

fn verdict(value: f64, goal: f64) -> &'static str {
    if value >= goal {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let mode = rseq::mode();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("rseq runtime on this machine");
    println!("  mode              {mode:?}");
    println!("  thread            {:?}", rseq::register_current_thread());
    println!("  kernel features   {:?}", rseq::features());
    println!(
        "  possible cpus     {} ({cores} usable)",
        rseq::possible_cpus()
    );
    println!(
        "  current cpu       {} (mm_cid {}, node {})",
        rseq::current_cpu(),
        rseq::current_mm_cid(),
        rseq::current_node()
    );
    println!("  fence_all         {:?}", rseq::fence_all());

    // Accessors, one thread.
    let ops = 2_000_000;
    let rows = compare(
        15,
        ops,
        &mut [
            ("rseq::current_cpu()", &mut |n| {
                for _ in 0..n {
                    black_box(rseq::current_cpu());
                }
            }),
            ("libc::sched_getcpu()", &mut |n| {
                for _ in 0..n {
                    // SAFETY: no preconditions.
                    black_box(unsafe { libc::sched_getcpu() });
                }
            }),
            ("rseq::current_mm_cid()", &mut |n| {
                for _ in 0..n {
                    black_box(rseq::current_mm_cid());
                }
            }),
        ],
    );
    print_table(
        "CPU id accessors, 1 thread (median of 15 interleaved rounds)",
        &rows,
    );
    let cpu_ratio = ratio(&rows, "libc::sched_getcpu()");

    // Counter add with every core busy.
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    let sharded: PerCpu<AtomicU64> = PerCpu::default();
    let shared = AtomicU64::new(0);
    let per_thread = 2_000_000;
    let ours = |n: u64| {
        for _ in 0..n {
            counter_add(black_box(&counters), 1);
        }
    };
    let local = |n: u64| {
        for _ in 0..n {
            LOCAL.with(|c| c.set(black_box(c.get()) + 1));
        }
    };
    let atomic = |n: u64| {
        for _ in 0..n {
            black_box(&shared).fetch_add(1, Ordering::Relaxed);
        }
    };
    let sharded_atomic = |n: u64| {
        for _ in 0..n {
            // SAFETY: no preconditions.
            let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
            black_box(&sharded)
                .get(cpu)
                .unwrap()
                .fetch_add(1, Ordering::Relaxed);
        }
    };
    let rows = compare_threads(
        11,
        cores,
        per_thread,
        &[
            ("rseq counter_add (DSL)", &ours),
            ("thread-local Cell<u64> add (floor)", &local),
            ("shared AtomicU64::fetch_add", &atomic),
            ("sched_getcpu + per-CPU fetch_add", &sharded_atomic),
        ],
    );
    print_table(
        &format!("Counter add, {cores} threads at once (median of 11 interleaved rounds)"),
        &rows,
    );
    let expected = 11 * cores as u64 * per_thread + cores as u64 * (per_thread / 10 + 1);
    let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    println!(
        "\n  counter total {total} (expected {expected}): {}",
        if total == expected { "exact" } else { "WRONG" }
    );

    let floor = 1.0 / ratio(&rows, "thread-local Cell<u64> add (floor)");
    let vs_atomic = ratio(&rows, "shared AtomicU64::fetch_add");
    let vs_sharded = ratio(&rows, "sched_getcpu + per-CPU fetch_add");
    println!("\nGoals (ratios from this run)");
    println!(
        "  current_cpu() vs sched_getcpu():            {cpu_ratio:5.1}× faster (goal ≥ 5×: {})",
        verdict(cpu_ratio, 5.0)
    );
    println!(
        "  counter add vs shared atomic, all cores:    {vs_atomic:5.1}× faster (goal ≥ 10×: {})",
        verdict(vs_atomic, 10.0)
    );
    println!(
        "  counter add vs sched_getcpu + atomic:       {vs_sharded:5.1}× faster (goal ≥ 3.5×: {})",
        verdict(vs_sharded, 3.5)
    );
    println!("  counter add vs thread-local add (floor):    {floor:5.2}× the floor's time");
    println!("\n  runtime stats     {:?}", rseq::stats());
    if total != expected {
        std::process::exit(1);
    }
}

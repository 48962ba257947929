//! The project's demonstration: what the runtime found on this machine, then the accessors
//! measured side by side against libc in one run.
//!
//! `cargo run --release -p rseq-tests --bin rseq-demo`

use rseq_tests::bench::{compare, print_table};
use std::hint::black_box;

fn main() {
    let mode = rseq::mode();
    println!("rseq runtime on this machine");
    println!("  mode              {mode:?}");
    println!("  thread            {:?}", rseq::register_current_thread());
    println!("  kernel features   {:?}", rseq::features());
    println!("  possible cpus     {}", rseq::possible_cpus());
    println!(
        "  current cpu       {} (mm_cid {}, node {})",
        rseq::current_cpu(),
        rseq::current_mm_cid(),
        rseq::current_node()
    );
    println!("  fence_all         {:?}", rseq::fence_all());

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
    print_table("CPU id accessors (median of 15 interleaved rounds)", &rows);
    let ratio = rows[1].ns_per_op / rows[0].ns_per_op;
    println!(
        "\n  current_cpu() is {ratio:.1}× faster than sched_getcpu() (goal ≥ 5×: {})",
        if ratio >= 5.0 { "met" } else { "missed" }
    );
    println!("\n  stats             {:?}", rseq::stats());
}

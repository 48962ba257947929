//! A side-by-side timing harness: candidates run in interleaved rounds within one process, and
//! each reports its median round, so a noisy shared machine shifts all of them alike and the
//! ratios stay meaningful. Absolute numbers are not compared across runs.

use std::hint::black_box;
use std::time::Instant;

/// One measured candidate.
pub struct Measured {
    /// What was measured.
    pub name: String,
    /// Median nanoseconds per operation over the rounds.
    pub ns_per_op: f64,
}

/// Times `ops_per_round` calls of each candidate, `rounds` times, interleaving candidates round
/// by round, and returns each one's median ns/op.
pub fn compare(
    rounds: usize,
    ops_per_round: u64,
    candidates: &mut [(&str, &mut dyn FnMut(u64))],
) -> Vec<Measured> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); candidates.len()];
    // One warm-up round each (registration, page faults, frequency ramp).
    for (_, f) in candidates.iter_mut() {
        f(ops_per_round / 10 + 1);
    }
    for _ in 0..rounds {
        for (i, (_, f)) in candidates.iter_mut().enumerate() {
            let start = Instant::now();
            f(black_box(ops_per_round));
            samples[i].push(start.elapsed().as_nanos() as f64 / ops_per_round as f64);
        }
    }
    medians(candidates.iter().map(|(name, _)| *name), samples)
}

/// Each candidate's median sample.
fn medians<'a>(names: impl Iterator<Item = &'a str>, samples: Vec<Vec<f64>>) -> Vec<Measured> {
    names
        .zip(samples)
        .map(|(name, mut s)| {
            s.sort_by(|a, b| a.total_cmp(b));
            Measured {
                name: name.to_string(),
                ns_per_op: s[s.len() / 2],
            }
        })
        .collect()
}

/// Prints a table of ns/op and each candidate's speed relative to the first one
/// (`baseline ns / candidate ns`: above 1 means the first is faster by that factor).
pub fn print_table(title: &str, rows: &[Measured]) {
    println!("\n{title}");
    println!(
        "  {:<44} {:>10} {:>16}",
        "candidate", "ns/op", "first is N× faster"
    );
    let first = rows[0].ns_per_op;
    for r in rows {
        println!(
            "  {:<44} {:>10.2} {:>16.2}",
            r.name,
            r.ns_per_op,
            r.ns_per_op / first
        );
    }
}

/// Like [`compare`], with `threads` threads running each candidate at once: ns/op is the time
/// of the slowest thread of a round, from the common start, divided by the operations of one
/// thread (the cost each thread sees while all run).
pub fn compare_threads(
    rounds: usize,
    threads: usize,
    ops_per_thread: u64,
    candidates: &[(&str, &(dyn Fn(u64) + Sync))],
) -> Vec<Measured> {
    // Each thread times its own run from the common start; a round lasts until the slowest one
    // is done. (Timing from the main thread undercounted: with as many workers as CPUs, the
    // main thread could be descheduled past the start barrier while the workers ran, and read
    // the clock only when they were nearly done — rounds of a tenth of a nanosecond per op.)
    let run = |f: &(dyn Fn(u64) + Sync), ops: u64| -> f64 {
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        f(ops);
                        start.elapsed()
                    })
                })
                .collect();
            let slowest = workers
                .into_iter()
                .map(|w| w.join().expect("benchmark thread"))
                .max()
                .unwrap_or_default();
            slowest.as_nanos() as f64 / ops as f64
        })
    };
    for (_, f) in candidates {
        run(*f, ops_per_thread / 10 + 1);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); candidates.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in candidates.iter().enumerate() {
            samples[i].push(run(*f, ops_per_thread));
        }
    }
    medians(candidates.iter().map(|(name, _)| *name), samples)
}

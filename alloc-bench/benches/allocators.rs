//! `cargo bench -p rseq-alloc-bench [--features others]`: `PerCpuAlloc` as the global
//! allocator against glibc's malloc (and mimalloc, jemalloc and snmalloc with `others`), on the
//! workloads of `rseq_alloc_bench::Workload`.
//!
//! One worker binary per allocator (a process has one global allocator); `PerCpuAlloc` runs
//! twice, on rseq and with `RSEQ_DISABLE=1` (its fallback). The workers run alternately, one
//! process per run, in `ALLOC_BENCH_BATCHES` batches (default 5) whose order rotates; the
//! tables give medians. `ALLOC_BENCH_SCALE` (default 1) scales every workload's size, and
//! `ALLOC_BENCH_ONLY` (comma-separated workload names) picks workloads. This machine is shared
//! and noisy: compare the ratios of one run, not absolute figures across runs.

use rseq_alloc_bench::Workload;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

struct Allocator {
    name: &'static str,
    exe: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const GLIBC: &str = "glibc";
const PERCPU: &str = "PerCpuAlloc";
const FALLBACK: &str = "PerCpuAlloc (fallback)";
const OTHERS: [&str; 3] = ["mimalloc", "jemalloc", "snmalloc"];

fn allocators() -> Vec<Allocator> {
    let mut list = vec![
        Allocator {
            name: GLIBC,
            exe: env!("CARGO_BIN_EXE_alloc-bench-glibc"),
            env: &[],
        },
        Allocator {
            name: PERCPU,
            exe: env!("CARGO_BIN_EXE_alloc-bench-percpu"),
            env: &[],
        },
        Allocator {
            name: FALLBACK,
            exe: env!("CARGO_BIN_EXE_alloc-bench-percpu"),
            env: &[("RSEQ_DISABLE", "1")],
        },
    ];
    // Only the workers of the features this build has (Cargo names every binary target's path
    // in `CARGO_BIN_EXE_*`, built or not).
    let others: &[(&'static str, &'static str)] = &[
        #[cfg(feature = "mimalloc")]
        ("mimalloc", env!("CARGO_BIN_EXE_alloc-bench-mimalloc")),
        #[cfg(feature = "jemalloc")]
        ("jemalloc", env!("CARGO_BIN_EXE_alloc-bench-jemalloc")),
        #[cfg(feature = "snmalloc")]
        ("snmalloc", env!("CARGO_BIN_EXE_alloc-bench-snmalloc")),
    ];
    list.extend(others.iter().map(|&(name, exe)| Allocator {
        name,
        exe,
        env: &[],
    }));
    list
}

fn env_number(key: &str, default: f64) -> f64 {
    match std::env::var(key) {
        Err(_) => default,
        Ok(v) => match v.parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => x,
            _ => {
                eprintln!("{key}={v}: expected a positive number");
                std::process::exit(2);
            }
        },
    }
}

/// How long one worker run may take at scale 1 before it is killed and the benchmark fails
/// (the longest run takes a few seconds); the limit grows with `ALLOC_BENCH_SCALE`.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Runs `workload` under `a` once; its value and its `info` line. A failed, hung or silent
/// worker ends the benchmark with what it printed.
fn run(a: &Allocator, workload: Workload, scale: f64) -> (f64, String) {
    let limit = RUN_LIMIT.mul_f64(scale.max(1.0));
    let out = rseq_alloc_bench::run_worker(
        Command::new(a.exe)
            .arg(workload.name())
            .arg(scale.to_string())
            .envs(a.env.iter().copied()),
        limit,
    )
    .unwrap_or_else(|e| {
        eprintln!("{} on {}: {e}", a.name, workload.name());
        std::process::exit(1);
    });
    match (
        out.status.success(),
        rseq_alloc_bench::printed_value(&out.stdout),
    ) {
        (true, Some(v)) => (
            v,
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix("info "))
                .unwrap_or("")
                .to_string(),
        ),
        _ => {
            eprintln!(
                "{} failed on {} ({}):\n{}{}",
                a.name,
                workload.name(),
                out.status,
                out.stdout,
                out.stderr
            );
            std::process::exit(1);
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let batches = env_number("ALLOC_BENCH_BATCHES", 5.0) as usize;
    let scale = env_number("ALLOC_BENCH_SCALE", 1.0);
    let workloads: Vec<Workload> = match std::env::var("ALLOC_BENCH_ONLY") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                Workload::from_name(n.trim()).unwrap_or_else(|| {
                    eprintln!("ALLOC_BENCH_ONLY: no workload {n:?}");
                    std::process::exit(2)
                })
            })
            .collect(),
        Err(_) => Workload::ALL.to_vec(),
    };
    let allocs = allocators();
    println!(
        "allocators: {} ({} batches, scale {scale}; mimalloc, jemalloc and snmalloc need \
         --features others)",
        allocs.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
        batches
    );
    let mut samples: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let mut infos: BTreeMap<&str, String> = BTreeMap::new();
    for batch in 0..batches {
        eprint!("batch {}/{batches}:", batch + 1);
        for (w, &workload) in workloads.iter().enumerate() {
            eprint!(" {}", workload.name());
            for k in 0..allocs.len() {
                let a = &allocs[(k + batch + w) % allocs.len()];
                let (value, info) = run(a, workload, scale);
                samples.entry((w, a.name)).or_default().push(value);
                if !info.is_empty() {
                    infos.insert(a.name, info);
                }
            }
        }
        eprintln!();
    }
    let med: BTreeMap<(usize, &str), f64> =
        samples.iter_mut().map(|(k, v)| (*k, median(v))).collect();
    let get = |w: usize, name: &str| med.get(&(w, name)).copied();

    println!("\nMedians (lower is better):");
    print!("{:<52}", "workload");
    for a in &allocs {
        print!("{:>24}", a.name);
    }
    println!();
    for (w, workload) in workloads.iter().enumerate() {
        print!(
            "{:<52}",
            format!("{} ({})", workload.title(), workload.unit())
        );
        for a in &allocs {
            print!("{:>24.2}", get(w, a.name).unwrap_or(f64::NAN));
        }
        println!();
    }
    for (name, info) in &infos {
        println!("{name}: {info}");
    }

    println!("\nPerCpuAlloc's ratios (its median / theirs; lower is better):");
    let others: Vec<&str> = OTHERS
        .iter()
        .copied()
        .filter(|o| allocs.iter().any(|a| a.name == *o))
        .collect();
    print!("{:<48}{:>12}", "workload", "÷ glibc");
    for o in &others {
        print!("{:>12}", format!("÷ {o}"));
    }
    println!("{:>14}", "÷ best other");
    for (w, workload) in workloads.iter().enumerate() {
        let ours = get(w, PERCPU).unwrap_or(f64::NAN);
        print!(
            "{:<48}{:>12.2}",
            workload.title(),
            ours / get(w, GLIBC).unwrap_or(f64::NAN)
        );
        for o in &others {
            print!("{:>12.2}", ours / get(w, o).unwrap_or(f64::NAN));
        }
        let best = others
            .iter()
            .filter_map(|o| get(w, o))
            .fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            println!("{:>14.2}", ours / best);
        } else {
            println!("{:>14}", "-");
        }
    }

    println!("\nGoals (issue: a per-CPU allocator worth installing):");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    // One goal line: PerCpuAlloc's median over `theirs` (`None`: that allocator was not built),
    // met if `ok` holds of the ratio.
    let goal = |title: &str, label: &str, ours: f64, theirs: Option<f64>, ok: fn(f64) -> bool| {
        match theirs {
            Some(t) => println!(
                "  {title:<44} {label:<20}{:>6.2}× {}",
                ours / t,
                verdict(ok(ours / t))
            ),
            None => println!("  {title:<44} {label:<20}n/a (--features others)"),
        }
    };
    for (w, workload) in workloads.iter().enumerate() {
        let ours = get(w, PERCPU).unwrap_or(f64::NAN);
        let glibc = get(w, GLIBC).unwrap_or(f64::NAN);
        goal(
            workload.title(),
            "≤ 1.0× glibc:",
            ours,
            Some(glibc),
            |r| r <= 1.0,
        );
        let mi = get(w, "mimalloc");
        let best = Some(
            others
                .iter()
                .filter_map(|o| get(w, o))
                .fold(f64::INFINITY, f64::min),
        )
        .filter(|b| b.is_finite());
        match workload {
            Workload::Pair | Workload::Batch | Workload::Pair2 => {
                goal("", "≤ 1.0× mimalloc:", ours, mi, |r| r <= 1.0)
            }
            Workload::Json | Workload::BTree => {
                goal("", "≤ 1.2× best other:", ours, best, |r| r <= 1.2)
            }
            Workload::Rss => {
                goal("", "≤ jemalloc's:", ours, get(w, "jemalloc"), |r| {
                    r <= 1.0
                });
                goal("", "< 0.1× mimalloc's:", ours, mi, |r| r < 0.1);
            }
            Workload::CrossFree => {}
        }
    }
    println!("\nIn the fallback (RSEQ_DISABLE=1), goal ≤ 1.2× glibc on every row:");
    for (w, workload) in workloads.iter().enumerate() {
        let t = get(w, FALLBACK).unwrap_or(f64::NAN) / get(w, GLIBC).unwrap_or(f64::NAN);
        println!(
            "  {:<44} {:>6.2}× {}",
            workload.title(),
            t,
            verdict(t <= 1.2)
        );
    }

    println!(
        "\nChart: each allocator's median ÷ glibc's (| marks 1.0; one # is 0.05×, capped at 3×)"
    );
    for (w, workload) in workloads.iter().enumerate() {
        println!("  {}", workload.title());
        let glibc = get(w, GLIBC).unwrap_or(f64::NAN);
        for a in &allocs {
            let r = get(w, a.name).unwrap_or(f64::NAN) / glibc;
            let n = ((r.min(3.0) / 0.05).round() as usize).min(60);
            let mut bar: String = "#".repeat(n);
            if bar.len() < 20 {
                bar.push_str(&" ".repeat(20 - bar.len()));
            }
            bar.insert(20, '|');
            println!("    {:<24}{:>6.2}× {}", a.name, r, bar.trim_end());
        }
    }
}

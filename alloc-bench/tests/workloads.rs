//! Every workload runs, at a small scale, under glibc's malloc and under `PerCpuAlloc` on rseq
//! and in its fallback. Each workload checks its own blocks (a block freed twice, handed out
//! twice or overwritten fails the run), so a broken allocator fails here; the benchmark itself
//! (`cargo bench -p rseq-alloc-bench`) runs them at full size.

use rseq_alloc_bench::{run_worker, Workload};
use std::process::Command;
use std::time::Duration;

const SCALE: &str = "0.02";

/// How long a run at the tests' scale may take before it is killed (a fraction of a second
/// here; the margin is for a loaded machine).
const LIMIT: Duration = Duration::from_secs(300);

fn run(exe: &str, workload: Workload, env: &[(&str, &str)]) -> (f64, String) {
    let out = run_worker(
        Command::new(exe)
            .arg(workload.name())
            .arg(SCALE)
            .envs(env.iter().copied()),
        LIMIT,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", workload.name()));
    assert!(
        out.status.success(),
        "{exe} {}: {}\n{}{}",
        workload.name(),
        out.status,
        out.stdout,
        out.stderr
    );
    let value = rseq_alloc_bench::printed_value(&out.stdout)
        .unwrap_or_else(|| panic!("{exe} {}: no value in {:?}", workload.name(), out.stdout));
    assert!(
        value > 0.0 && value.is_finite(),
        "{exe} {}: value {value}",
        workload.name()
    );
    (value, out.stdout)
}

#[test]
fn every_workload_runs_under_glibc() {
    for w in Workload::ALL {
        run(env!("CARGO_BIN_EXE_alloc-bench-glibc"), w, &[]);
    }
}

#[test]
fn every_workload_runs_under_percpu_alloc() {
    for w in Workload::ALL {
        run(env!("CARGO_BIN_EXE_alloc-bench-percpu"), w, &[]);
    }
}

#[test]
fn every_workload_runs_under_percpu_alloc_in_the_fallback() {
    for w in Workload::ALL {
        let (_, stdout) = run(
            env!("CARGO_BIN_EXE_alloc-bench-percpu"),
            w,
            &[("RSEQ_DISABLE", "1")],
        );
        assert!(
            stdout.contains("mode=Fallback("),
            "RSEQ_DISABLE=1 should force the fallback: {stdout}"
        );
    }
}

#[test]
fn a_workload_name_is_checked() {
    let out = run_worker(
        Command::new(env!("CARGO_BIN_EXE_alloc-bench-glibc")).arg("no-such-workload"),
        LIMIT,
    )
    .expect("the worker ends");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("workloads: pair batch"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_worker_that_does_not_end_is_killed_with_what_it_printed() {
    let start = std::time::Instant::now();
    let hung = run_worker(
        Command::new("sh").args(["-c", "echo started; exec sleep 600"]),
        Duration::from_millis(500),
    )
    .expect_err("the worker is killed");
    assert!(hung.contains("did not end within 500ms"), "{hung}");
    assert!(hung.contains("started"), "{hung}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_worker_that_cannot_start_is_an_error() {
    let e = run_worker(&mut Command::new("/nonexistent/alloc-bench-worker"), LIMIT)
        .expect_err("no such file");
    assert!(e.contains("cannot start"), "{e}");
}

#[test]
fn the_json_document_reaches_its_size_and_reads_back() {
    let doc = rseq_alloc_bench::json_document(50_000);
    assert!(doc.len() >= 50_000, "{} bytes", doc.len());
    let value: serde_json::Value = serde_json::from_str(&doc).expect("valid JSON");
    assert_eq!(serde_json::to_string(&value).unwrap(), doc);
}

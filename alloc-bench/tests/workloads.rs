//! Every workload runs, at a small scale, under glibc's malloc and under `PerCpuAlloc` on rseq
//! and in its fallback. Each workload checks its own blocks (a block freed twice, handed out
//! twice or overwritten fails the run), so a broken allocator fails here; the benchmark itself
//! (`cargo bench -p rseq-alloc-bench`) runs them at full size.

use rseq_alloc_bench::Workload;
use std::process::Command;

const SCALE: &str = "0.02";

fn run(exe: &str, workload: Workload, env: &[(&str, &str)]) -> (f64, String) {
    let out = Command::new(exe)
        .arg(workload.name())
        .arg(SCALE)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{exe} {}: {}\n{stdout}{}",
        workload.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let value = rseq_alloc_bench::printed_value(&stdout)
        .unwrap_or_else(|| panic!("{exe} {}: no value in {stdout:?}", workload.name()));
    assert!(
        value > 0.0 && value.is_finite(),
        "{exe} {}: value {value}",
        workload.name()
    );
    (value, stdout)
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
    let out = Command::new(env!("CARGO_BIN_EXE_alloc-bench-glibc"))
        .arg("no-such-workload")
        .output()
        .expect("the worker runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workloads: pair batch"), "{stderr}");
}

#[test]
fn the_json_document_reaches_its_size_and_reads_back() {
    let doc = rseq_alloc_bench::json_document(50_000);
    assert!(doc.len() >= 50_000, "{} bytes", doc.len());
    let value: serde_json::Value = serde_json::from_str(&doc).expect("valid JSON");
    assert_eq!(serde_json::to_string(&value).unwrap(), doc);
}

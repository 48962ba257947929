//! Critical sections written with `#[rseq::critical_section]`, one per librseq operation, run by
//! `rseq-stress` from more threads than the machine has CPUs, in each of the three modes (glibc's
//! registration, the library's own, the fallback). Each run checks an exact end state (see the
//! program's documentation); a last test shows that sections really abort and still end exact.
//!
//! Linux only. Where the kernel has no rseq, the rseq modes run the fallback: the results must
//! still be exact, and the abort test is skipped. A mode whose environment gives the same mode
//! as an earlier one (per `rseq-probe facts`) is not run twice: on musl the default is already
//! the library's own registration, and under qemu-user (no rseq) both rseq modes are the
//! fallback. Under an emulator (`RSEQ_TEST_EMULATOR`, set by `.ci/cross-test`) every run does
//! 1/200 of the operations, which still interleaves the threads many times;
//! `RSEQ_TEST_OPS_DIVISOR` divides them otherwise (see `rseq_tests::ops_divisor`).

use rseq_tests::{field, not_applicable, note, ops_divisor, run_in, RunMode};
use std::sync::{Once, OnceLock};

const STRESS: &str = env!("CARGO_BIN_EXE_rseq-stress");
const PROBE: &str = env!("CARGO_BIN_EXE_rseq-probe");

/// Threads per run: more than the CPUs this process may use (6 on the 2-CPU machines these
/// tests were tuned on).
fn threads() -> usize {
    (rseq_tests::allowed_cpus().len() * 2 + 2).clamp(6, 64)
}

/// Divides the operation counts under an emulator, where an operation costs 20–50 times more:
/// the million-operation runs do 5 000 per thread there, plenty for the fallback's exactness.
const EMULATED_DIVISOR: usize = 200;

/// `n` operations per thread, divided as `rseq_tests::ops_divisor` says (said once per run).
fn iters(n: usize) -> usize {
    let (divisor, why) = ops_divisor(EMULATED_DIVISOR);
    if divisor > 1 {
        static SAID: Once = Once::new();
        SAID.call_once(|| note(format_args!("operation counts divided by {divisor}: {why}")));
    }
    (n / divisor).max(1)
}

/// The run modes whose environments give different modes, in `RunMode::ALL` order; says which
/// ones are left out and why.
fn distinct_modes(of: &[RunMode]) -> Vec<RunMode> {
    let mut kept: Vec<RunMode> = Vec::new();
    for &mode in of {
        let got = probe_mode(mode);
        match kept.iter().find(|&&k| probe_mode(k) == got) {
            Some(same) => not_applicable(format_args!(
                "the run in {mode:?}: it gives {got}, as {same:?} does"
            )),
            None => kept.push(mode),
        }
    }
    kept
}

/// Runs `rseq-stress args…` in `mode`; asserts it succeeded with `result=ok`, in the mode the
/// probe reports for the same environment, and without aborts in the fallback.
fn stress(mode: RunMode, args: &[&str]) -> String {
    let out = run_in(mode, STRESS, args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && field(&stdout, "result") == Some("ok"),
        "rseq-stress {args:?} failed in {mode:?} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = probe_mode(mode);
    assert_eq!(field(&stdout, "mode"), Some(expected.as_str()), "{mode:?}");
    if expected.starts_with("Fallback") {
        assert_eq!(field(&stdout, "aborts"), Some("0"), "{mode:?}");
    }
    if mode == RunMode::Disabled {
        assert_eq!(expected, "Fallback(Disabled)");
    }
    stdout
}

/// The mode `rseq-probe facts` reports in `mode`'s environment (asked once per mode).
fn probe_mode(mode: RunMode) -> String {
    static MODES: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = RunMode::ALL.iter().position(|&m| m == mode).unwrap();
    MODES[i]
        .get_or_init(|| {
            let out = run_in(mode, PROBE, &["facts"]);
            assert!(out.status.success(), "rseq-probe facts failed in {mode:?}");
            let stdout = String::from_utf8(out.stdout).unwrap();
            field(&stdout, "mode").unwrap().to_string()
        })
        .clone()
}

fn number(stdout: &str, key: &str) -> u64 {
    field(stdout, key)
        .unwrap_or_else(|| panic!("no {key}= in the output"))
        .parse()
        .unwrap()
}

/// Runs `op` in every mode: plainly, under signals, with frequent yields, then (where the op
/// has an index) indexed by `mm_cid`. `exact_ops`: the op commits exactly `threads × iters`
/// operations.
fn every_mode(op: &str, iters_full: usize, exact_ops: bool, mm_cid: bool) {
    let threads = threads();
    let iters = iters(iters_full);
    let threads_arg = threads.to_string();
    let iters_arg = iters.to_string();
    let base = ["--threads", &threads_arg, "--iters", &iters_arg];
    let mut variants: Vec<Vec<&str>> = vec![vec![], vec!["--signals"], vec!["--yield-every", "16"]];
    if mm_cid {
        variants.push(vec!["--index", "mm_cid"]);
    }
    for mode in distinct_modes(&RunMode::ALL) {
        for extra in &variants {
            let args: Vec<&str> = [op].iter().chain(&base).chain(extra).copied().collect();
            let out = stress(mode, &args);
            assert_eq!(field(&out, "op"), Some(op));
            if exact_ops {
                assert_eq!(number(&out, "ops"), (threads * iters) as u64, "{args:?}");
            }
        }
    }
}

#[test]
fn counter_add() {
    every_mode("counter", 1_000_000, true, false);
}

#[test]
fn counter_add_by_mm_cid() {
    let out = stress(RunMode::Glibc, &["counter-mm-cid", "--iters", "1000"]);
    assert_eq!(field(&out, "index"), Some("mm_cid"));
    every_mode("counter-mm-cid", 1_000_000, true, false);
}

#[test]
fn cmpeq_store_increments() {
    every_mode("cmpxchg", 1_000_000, true, true);
}

#[test]
fn given_cpu_with_moved() {
    every_mode("given-cpu", 1_000_000, true, false);
}

#[test]
fn list_push_and_pop() {
    every_mode("list", 400_000, false, true);
}

#[test]
fn bounded_buffer_push_and_pop() {
    every_mode("buffer", 400_000, false, true);
}

#[test]
fn memcpy_publish_and_take() {
    every_mode("memcpy", 100_000, false, true);
}

#[test]
fn double_compare_store() {
    every_mode("double-cmp", 1_000_000, true, true);
}

#[test]
fn deref_add_with_fenced_pointer_moves() {
    every_mode("deref-add", 1_000_000, true, true);
    // The rotations happened (each one a fence) while the adds ran: the workers wait halfway for
    // the first one.
    let n = iters(300_000).to_string();
    let out = stress(RunMode::Own, &["deref-add", "--iters", &n]);
    assert!(number(&out, "rotations") > 0);
}

/// Signals sent to the workers at a high rate: whatever they interrupt, the total is exact and the
/// aborts the wrapper counted are the runtime's. How many sections a signal lands in is luck (a
/// handful per run here, sometimes none on a busy machine), so nothing is asserted on it: the
/// injection tests (`tests/injection.rs`, a delay loop inside the section makes every signal an
/// abort) and the every-instruction harness (`tests/abort_everywhere.rs`) make aborts certain.
#[test]
fn sections_under_signals_stay_exact() {
    let (threads, iters) = (threads() + 2, iters(5_000_000));
    let args = [
        "counter",
        "--threads",
        &threads.to_string(),
        "--iters",
        &iters.to_string(),
        "--signals",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for mode in distinct_modes(&[RunMode::Glibc, RunMode::Own]) {
        let out = stress(mode, &args);
        assert_eq!(number(&out, "ops"), (threads * iters) as u64);
        let aborts = number(&out, "aborts");
        assert_eq!(aborts, number(&out, "stats_aborts"));
        eprintln!(
            "{mode:?} ({}): {aborts} aborts, {} signals sent, {} ms",
            probe_mode(mode),
            number(&out, "signals_sent"),
            number(&out, "elapsed_ms")
        );
    }
}

/// `rseq-stress barrier`: the typed membarrier API next to sections, in every mode (the
/// barriers do not depend on the mode): the store-buffering outcome never appears with
/// `heavy()`, the counts are exact, `sync_core()` answers ok or the typed `Unsupported`.
#[test]
fn asymmetric_fences_next_to_sections() {
    for mode in distinct_modes(&RunMode::ALL) {
        let out = stress(mode, &["barrier", "--iters", "20000"]);
        assert_eq!(field(&out, "forbidden"), Some("0"), "{mode:?}");
        assert_eq!(field(&out, "ops"), Some("2000"), "{mode:?}");
        assert!(
            matches!(field(&out, "heavy"), Some("Membarrier" | "Mprotect")),
            "{mode:?}: {:?}",
            field(&out, "heavy")
        );
        assert!(
            matches!(field(&out, "sync_core"), Some("ok" | "unsupported")),
            "{mode:?}"
        );
    }
}

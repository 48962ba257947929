//! Abort at every instruction: runs `rseq-ptrace`, which makes the kernel abort each kind of
//! generated critical section at every instruction of its range (a breakpoint, then a signal
//! delivered there) and checks the effect is applied exactly once. Every instruction position of
//! every kind must be covered, with no failure, in glibc's registration and in the library's
//! own; and the harness must catch a deliberately broken section and a wrong abort target.
//!
//! x86_64 only: the harness plants `int3` and reads x86_64 registers and signal frames. Needs
//! ptrace (a process may always trace its own child) and `objdump` (binutils, installed by
//! `.ci/run`).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use rseq_tests::{field, output_watched};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const HARNESS: &str = env!("CARGO_BIN_EXE_rseq-ptrace");

/// Every kind of section the harness drives by default; none may go missing from its report.
const KINDS: [&str; 9] = [
    "counter-add",
    "cmpeq-store",
    "try-store",
    "list-push",
    "list-pop",
    "memcpy",
    "given-cpu",
    "mm-cid-add",
    "deref-add",
];

/// The harness's own watchdog; the whole run takes well under a second on an idle machine.
const TIMEOUT_SECS: u64 = 100;

fn run(args: &[&str]) -> (Output, String, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(HARNESS);
    cmd.args(args)
        .args(["--timeout", &TIMEOUT_SECS.to_string()])
        .env_remove("GLIBC_TUNABLES")
        .env_remove("RSEQ_DISABLE");
    // The harness stops itself after TIMEOUT_SECS; this deadline is for a harness that cannot.
    let out = output_watched(cmd, Duration::from_secs(4 * TIMEOUT_SECS))
        .unwrap_or_else(|_| panic!("{HARNESS} {args:?} ignored its own --timeout: killed"));
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- rseq-ptrace {args:?}: {} in {elapsed:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout, elapsed)
}

/// The summary line of `kind` in `mode`.
fn summary<'a>(stdout: &'a str, mode: &str, kind: &str) -> &'a str {
    let prefix = format!("mode={mode} kind={kind} ");
    stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary for kind {kind} in mode {mode}:\n{stdout}"))
}

fn number(line: &str, key: &str) -> usize {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn every_instruction_of_every_section_kind_is_aborted_in_both_registration_modes() {
    // musl has no glibc registration: the library registers its own area there.
    let (mode_arg, modes): (&str, &[&str]) = if cfg!(target_env = "gnu") {
        ("both", &["glibc", "own"])
    } else {
        ("own", &["own"])
    };
    let (out, stdout, elapsed) = run(&["--mode", mode_arg]);
    assert!(
        out.status.success() && field(&stdout, "result") == Some("ok"),
        "rseq-ptrace failed ({}):\n{stdout}",
        out.status
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for mode in modes {
        for kind in KINDS {
            let line = summary(&stdout, mode, kind);
            let positions = number(line, "positions");
            assert!(
                positions >= 5,
                "a section has at least 5 instructions: {line}"
            );
            assert_eq!(number(line, "covered"), positions, "{line}");
            assert_eq!(number(line, "failures"), 0, "{line}");
            // One confirmed abort per (position, input) that reached the position.
            assert!(number(line, "aborts") >= positions, "{line}");
        }
    }
    assert!(
        elapsed < Duration::from_secs(TIMEOUT_SECS),
        "took {elapsed:?}"
    );
}

/// A section whose visible effect is a speculative store before its commit: aborted at the
/// commit, the store stays and the retry applies it again. The harness must say so.
#[test]
fn an_effect_stored_before_the_commit_is_caught() {
    let (out, stdout, _) = run(&["--mode", "own", "--kinds", "early-store"]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(field(&stdout, "result"), Some("fail"), "{stdout}");
    let line = summary(&stdout, "own", "early-store");
    assert!(number(line, "failures") >= 1, "{line}");
    assert!(
        number(line, "covered") < number(line, "positions"),
        "{line}"
    );
    assert!(
        stdout.contains("FAIL mode=own kind=early-store position=")
            && stdout.contains("effect check failed: counters"),
        "the failure names the position and the double-applied counter:\n{stdout}"
    );
}

/// A descriptor whose `abort_ip` is another section's (signed, so the kernel accepts it): the
/// kernel sends the thread there, and the harness must notice.
#[test]
fn an_abort_ip_that_is_not_the_sections_own_is_caught() {
    let (out, stdout, _) = run(&[
        "--mode",
        "own",
        "--kinds",
        "counter-add",
        "--tamper-abort-target",
    ]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(field(&stdout, "result"), Some("fail"), "{stdout}");
    assert!(
        stdout.contains("not at the descriptor's abort_ip"),
        "the failure says where the kernel resumed the thread:\n{stdout}"
    );
}

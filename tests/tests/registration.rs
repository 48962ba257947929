//! Registration, accessors, fences and the process mode, each in a child process so that it gets
//! its own environment and its own once-per-process decision.
//!
//! Linux only (rseq is a Linux feature). The glibc-owned runs need glibc ≥ 2.35 and a kernel
//! with rseq; where glibc did not register (musl, qemu-user, old glibc) those checks adapt to
//! what `facts` reports instead of failing.

use rseq_tests::{field, run_in, RunMode};
use std::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_rseq-probe");

fn probe(mode: RunMode, args: &[&str]) -> String {
    let out = run_in(mode, PROBE, args);
    assert!(
        out.status.success(),
        "rseq-probe {args:?} failed in {mode:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What the kernel and libc under test can do, from a default-mode probe.
struct Host {
    kernel_rseq: bool,
    glibc_registers: bool,
}

fn host() -> Host {
    let facts = probe(RunMode::Own, &["facts"]);
    let default = probe(RunMode::Glibc, &["facts"]);
    Host {
        kernel_rseq: field(&facts, "mode") == Some("Rseq(Library)"),
        glibc_registers: field(&default, "owner") == Some("Some(Glibc)"),
    }
}

#[test]
fn each_mode_reports_itself() {
    let host = host();
    let glibc = probe(RunMode::Glibc, &["facts"]);
    let own = probe(RunMode::Own, &["facts"]);
    let disabled = probe(RunMode::Disabled, &["facts"]);
    if host.glibc_registers {
        assert_eq!(field(&glibc, "mode"), Some("Rseq(Glibc)"));
        assert_eq!(field(&glibc, "register"), Some("Ok(Glibc)"));
    }
    if host.kernel_rseq {
        assert_eq!(field(&own, "mode"), Some("Rseq(Library)"));
        assert_eq!(field(&own, "register"), Some("Ok(Library)"));
    }
    assert_eq!(field(&disabled, "mode"), Some("Fallback(Disabled)"));
    assert_eq!(field(&disabled, "register"), Some("Err(Disabled)"));
    assert_eq!(field(&disabled, "rseq"), Some("false"));
}

#[test]
fn features_come_from_the_auxiliary_vector() {
    let facts = probe(RunMode::Glibc, &["facts"]);
    let size: usize = field(&facts, "feature_size").unwrap().parse().unwrap();
    let align: usize = field(&facts, "align").unwrap().parse().unwrap();
    let len: usize = field(&facts, "registration_len").unwrap().parse().unwrap();
    // SAFETY: getauxval has no preconditions.
    let (aux_size, aux_align) =
        unsafe { (libc::getauxval(27) as usize, libc::getauxval(28) as usize) };
    assert_eq!(size, if aux_size == 0 { 20 } else { aux_size });
    assert_eq!(align, if aux_align == 0 { 32 } else { aux_align });
    assert!(
        len == 32 || (len >= size && len.is_multiple_of(align)),
        "registration length {len}"
    );
    assert_eq!(
        field(&facts, "node_id"),
        Some(if size >= 24 { "true" } else { "false" })
    );
    assert_eq!(
        field(&facts, "mm_cid"),
        Some(if size >= 28 { "true" } else { "false" })
    );
}

#[test]
fn accessors_match_the_kernel_on_every_cpu_in_every_mode() {
    for mode in RunMode::ALL {
        let out = probe(mode, &["pin-check"]);
        assert_eq!(field(&out, "pin_check"), Some("ok"), "{mode:?}");
    }
}

#[test]
fn the_kernels_errors_are_typed() {
    if !host().kernel_rseq {
        eprintln!("skipped: the kernel has no rseq here");
        return;
    }
    let out = probe(RunMode::Own, &["errors"]);
    assert_eq!(field(&out, "same_area"), Some("Err(AlreadyRegistered)"));
    assert_eq!(
        field(&out, "wrong_signature"),
        Some("Err(SignatureMismatch)")
    );
    assert_eq!(field(&out, "other_area"), Some("Err(RegisteredElsewhere)"));
    assert_eq!(
        field(&out, "foreign_thread"),
        Some("Err(RegisteredElsewhere)")
    );
    assert_eq!(
        field(&out, "mode_after"),
        Some("Fallback(Demoted(RegisteredElsewhere))")
    );
}

#[test]
fn seccomp_denials_select_the_fallback_with_the_reason() {
    for (arg, mode) in [
        ("seccomp-enosys", "Fallback(Registration(Unsupported))"),
        ("seccomp-eperm", "Fallback(Registration(SignatureMismatch))"),
    ] {
        let out = probe(RunMode::Own, &[arg]);
        assert_eq!(field(&out, "mode"), Some(mode));
        assert_eq!(field(&out, "seccomp"), Some("ok"));
    }
}

#[test]
fn ten_thousand_threads_register_and_unregister() {
    for mode in [RunMode::Own, RunMode::Glibc] {
        let out = probe(mode, &["churn", "10000"]);
        assert_eq!(field(&out, "churn"), Some("ok"), "{mode:?}");
    }
}

#[test]
fn sections_after_the_exit_hook_use_a_temporary_registration() {
    if !host().kernel_rseq {
        eprintln!("skipped: the kernel has no rseq here");
        return;
    }
    let out = probe(RunMode::Own, &["late-destructor"]);
    assert_eq!(field(&out, "late_destructor"), Some("ok"));
}

#[test]
fn fork_keeps_child_and_parent_working() {
    for mode in RunMode::ALL {
        let out = probe(mode, &["fork"]);
        assert_eq!(field(&out, "fork"), Some("ok"), "{mode:?}");
    }
}

#[test]
fn fences_work_in_every_mode() {
    for mode in RunMode::ALL {
        let out = probe(mode, &["fences"]);
        assert_eq!(field(&out, "fences"), Some("ok"), "{mode:?}");
    }
    let fallback = probe(RunMode::Disabled, &["fences"]);
    assert_eq!(field(&fallback, "fallback_fence_waited"), Some("true"));
}

/// valgrind answers ENOSYS to rseq, like an old kernel: the process must pick the fallback and
/// its accessors must still be right.
#[test]
fn under_valgrind_the_fallback_is_chosen() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("skipped: valgrind is not installed");
        return;
    }
    for args in [&["facts"][..], &["pin-check"][..]] {
        let out = Command::new("valgrind")
            .args(["-q", "--error-exitcode=9", PROBE])
            .args(args)
            .env_remove("RSEQ_DISABLE")
            .env_remove("GLIBC_TUNABLES")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "valgrind run failed: {}", out.status);
        if args[0] == "facts" {
            assert_eq!(
                field(&stdout, "mode"),
                Some("Fallback(Registration(Unsupported))")
            );
        } else {
            assert_eq!(field(&stdout, "pin_check"), Some("ok"));
        }
    }
}

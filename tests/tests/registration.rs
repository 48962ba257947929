//! Registration, accessors, fences and the process mode, each in a child process so that it gets
//! its own environment and its own once-per-process decision.
//!
//! Linux only (rseq is a Linux feature). What the system offers comes from `rseq-probe facts`
//! (`Platform`): whether the kernel implements rseq (qemu-user, valgrind and kernels before
//! 4.18 answer `ENOSYS`) and whether glibc registers threads (glibc ≥ 2.35; musl never does).
//! Each test checks the expectation that fits, and says so when a part does not apply.

use rseq_tests::{field, not_applicable, run_in, Platform, RunMode};
use std::process::Command;
use std::sync::OnceLock;

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

/// The system under test (probed once).
fn platform() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(|| {
        let p = Platform::probe(PROBE);
        eprintln!("platform: {p:?}");
        p
    })
}

/// Where the kernel has no rseq, says why the test's rseq part does not apply.
fn without_rseq(what: &str) -> bool {
    let p = platform();
    if !p.kernel_rseq {
        not_applicable(format_args!(
            "{what}: the kernel answers `{}` to rseq (qemu-user, valgrind or Linux < 4.18)",
            p.kernel_rseq_answer
        ));
    }
    !p.kernel_rseq
}

#[test]
fn each_mode_reports_itself() {
    let p = platform();
    if !p.glibc_registers {
        not_applicable(
            "Rseq(Glibc): glibc does not register threads here (musl, glibc < 2.35 or no rseq)",
        );
    }
    for mode in RunMode::ALL {
        let out = probe(mode, &["facts"]);
        let expected = p.expected_mode(mode);
        assert_eq!(field(&out, "mode"), Some(expected), "{mode:?} on {p:?}");
        let register = match expected {
            "Rseq(Glibc)" => "Ok(Glibc)",
            "Rseq(Library)" => "Ok(Library)",
            "Fallback(Disabled)" => "Err(Disabled)",
            _ => "Err(Unsupported)",
        };
        assert_eq!(field(&out, "register"), Some(register), "{mode:?}");
        assert_eq!(
            field(&out, "rseq"),
            Some(if expected.starts_with("Rseq") {
                "true"
            } else {
                "false"
            }),
            "{mode:?}"
        );
    }
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
    assert_eq!(
        field(&facts, "slice_ctrl"),
        Some(if size >= 32 { "true" } else { "false" })
    );
}

#[test]
fn accessors_match_the_kernel_on_every_cpu_in_every_mode() {
    for mode in RunMode::ALL {
        let out = probe(mode, &["pin-check"]);
        assert_eq!(field(&out, "pin_check"), Some("ok"), "{mode:?}");
    }
}

/// `index = given(cpu)` commits only on the CPU the thread runs on, in every mode: the fallback
/// used to lock the named slot and write it from anywhere.
#[test]
fn given_cpu_reports_moved_off_that_cpu_in_every_mode() {
    if rseq::possible_cpus() < 2 {
        not_applicable("one possible CPU: there is no other CPU to name");
    }
    for mode in RunMode::ALL {
        let out = probe(mode, &["given-cpu"]);
        assert_eq!(field(&out, "given_cpu"), Some("ok"), "{mode:?}");
        if rseq::possible_cpus() >= 2 {
            assert_ne!(field(&out, "given_cpu_elsewhere"), Some("0"), "{mode:?}");
        }
    }
}

#[test]
fn the_kernels_errors_are_typed() {
    if without_rseq("no registration to get errors from") {
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

/// Time-slice extension (`rseq::slice`): without an area it is `NotRegistered`; with one, what
/// the kernel answers is typed — and where a kernel has it, the probe's regions get extended
/// (the system test's own 7.2 kernel shows that). A seccomp filter on `prctl` makes each answer
/// the host's kernel does not give.
#[test]
fn slice_extension_errors_are_typed() {
    let facts = probe(RunMode::Glibc, &["facts"]);
    let own_len: usize = field(&probe(RunMode::Own, &["facts"]), "registration_len")
        .unwrap()
        .parse()
        .unwrap();
    // glibc publishes the size it registered beyond the original 32 bytes only from 2.40 on.
    let glibc_size: usize = field(&facts, "glibc")
        .and_then(|g| g.split("size: ").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for mode in RunMode::ALL {
        let expected = platform().expected_mode(mode);
        let out = probe(mode, &["slice-ext"]);
        let enable = field(&out, "slice_enable").unwrap();
        if !expected.starts_with("Rseq") {
            assert!(enable.starts_with("NotRegistered("), "{mode:?}: {enable}");
            assert_eq!(field(&out, "slice_available"), Some("false"), "{mode:?}");
            continue;
        }
        let legacy = match expected {
            "Rseq(Glibc)" => glibc_size <= 32,
            _ => own_len <= 32,
        };
        match enable {
            "ok" => {
                let yielded: u64 = field(&out, "slice_yielded").unwrap().parse().unwrap();
                assert!(yielded > 0, "{mode:?}: enabled, but no region was extended");
            }
            "Unsupported" => not_applicable(format_args!(
                "{mode:?}: regions extended: the kernel has no time-slice extension"
            )),
            "LegacyRegistration" => assert!(legacy, "{mode:?}: {out}"),
            "Disabled" => assert!(
                std::fs::read_to_string("/proc/cmdline")
                    .is_ok_and(|c| c.contains("rseq_slice_ext=0")),
                "{mode:?}: Disabled, but the kernel was not booted with rseq_slice_ext=0"
            ),
            other => panic!("{mode:?}: unexpected {other}"),
        }
        let switched_off =
            std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.contains("rseq_slice_ext=0"));
        for (errno, want) in [
            (
                "524",
                if legacy {
                    "LegacyRegistration"
                } else if switched_off {
                    "Disabled"
                } else {
                    "Unsupported"
                },
            ),
            ("22", "Unsupported"),
            ("1", "Os(1)"),
        ] {
            let out = probe(mode, &["slice-ext-deny", errno]);
            assert_eq!(
                field(&out, "slice_enable"),
                Some(want),
                "{mode:?}, errno {errno}"
            );
            assert!(
                field(&out, "slice_message").is_some_and(|m| m.len() > 40),
                "{mode:?}: the error has a message"
            );
        }
    }
}

/// A filter that denies rseq is only observable where the kernel implements it (and qemu-user,
/// which has no rseq, cannot install seccomp filters for its guest either).
#[test]
fn seccomp_denials_select_the_fallback_with_the_reason() {
    if without_rseq("there is no rseq for a seccomp filter to deny") {
        return;
    }
    for (arg, mode) in [
        ("seccomp-enosys", "Fallback(Registration(Unsupported))"),
        ("seccomp-eperm", "Fallback(Registration(SignatureMismatch))"),
    ] {
        let out = probe(RunMode::Own, &[arg]);
        assert_eq!(field(&out, "mode"), Some(mode));
        assert_eq!(field(&out, "seccomp"), Some("ok"));
    }
}

/// Without membarrier (a seccomp filter, as on Linux 4.18–5.9) both registration modes stay on
/// rseq and fence by moving the thread to every CPU, restoring its affinity; without
/// `sched_setaffinity` as well, the process takes the fallback with a reason that says so.
#[test]
fn without_membarrier_sections_stay_on_rseq() {
    if without_rseq("there is no rseq to stay on") {
        return;
    }
    for mode in [RunMode::Glibc, RunMode::Own] {
        let out = probe(mode, &["seccomp-no-membarrier"]);
        assert!(
            field(&out, "mode").is_some_and(|m| m.starts_with("Rseq(")),
            "{mode:?}: {out}"
        );
        assert_eq!(field(&out, "fence"), Some("Migration"), "{mode:?}");
        assert_eq!(field(&out, "seccomp"), Some("ok"), "{mode:?}");
        let out = probe(mode, &["seccomp-no-fences"]);
        assert_eq!(
            field(&out, "mode"),
            Some("Fallback(Membarrier(Unsupported))"),
            "{mode:?}"
        );
        assert_eq!(field(&out, "fence"), Some("SlotLocks"), "{mode:?}");
        assert!(
            field(&out, "message").is_some_and(|m| m.contains("sched_setaffinity")),
            "the reason names both ways: {out}"
        );
    }
}

/// 10 000 threads use rseq and exit, in each mode: the probe checks that every own registration
/// was undone, and resident memory may grow by 16 MiB at most. Where the kernel has no rseq
/// (qemu-user) nothing registers: 1 000 threads check the counts, once per distinct mode, and
/// the memory bound does not apply (it would measure the emulator's own memory, which keeps
/// 40–280 KiB per exited thread).
#[test]
fn ten_thousand_threads_register_and_unregister() {
    let p = platform();
    let (threads, bound_rss) = if without_rseq(
        "10 000 threads and the resident-memory bound: no thread registers, and the \
         emulator's own per-thread memory would swamp the library's",
    ) {
        ("1000", false)
    } else {
        ("10000", true)
    };
    let mut seen = Vec::new();
    for mode in RunMode::ALL {
        let expected = p.expected_mode(mode);
        if seen.contains(&expected) {
            not_applicable(format_args!(
                "the churn in {mode:?}: it gives {expected}, as an earlier mode does"
            ));
            continue;
        }
        seen.push(expected);
        let out = probe(mode, &["churn", threads]);
        assert_eq!(field(&out, "churn"), Some("ok"), "{mode:?}");
        assert_eq!(field(&out, "mode"), Some(expected), "{mode:?}");
        let growth: u64 = field(&out, "rss_growth_kib").unwrap().parse().unwrap();
        if bound_rss {
            assert!(
                growth < 16 * 1024,
                "{mode:?}: resident memory grew by {growth} KiB, more than 16 MiB"
            );
        }
    }
}

#[test]
fn sections_after_the_exit_hook_use_a_temporary_registration() {
    if without_rseq("no registration to lose at thread exit") {
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
        not_applicable("valgrind is not installed");
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
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{stdout}{stderr}");
        if let Some(why) = rseq::test_support::valgrind_cannot_run(&stderr) {
            not_applicable(why);
            return;
        }
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

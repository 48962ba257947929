//! A kernel before Linux 6.3 (no `mm_cid`): `mm_cid` sections must take the fallback and still
//! end exact, and `cpu_id` sections keep running on rseq. On a kernel that has `mm_cid`, the old
//! kernel is simulated by preloading a `getauxval` that hides the rseq feature size
//! (`fixtures/pre_6_3_kernel.c`), built with the target's C compiler: `RSEQ_TEST_CC` if set
//! (`.ci/cross-test` sets it), else `i686-linux-gnu-gcc` or `cc -m32` for i686, else `cc`.
//!
//! Not applicable, and the test log says so: where the kernel has no rseq at all (qemu-user:
//! there is no `mm_cid` to hide, and `sections.rs` covers the fallback), and in statically
//! linked programs (musl's default), which `LD_PRELOAD` cannot reach.

use rseq_tests::{
    field, not_applicable, output_watched, try_spawn_watched, Platform, CHILD_DEADLINE,
};
use std::path::PathBuf;
use std::process::Command;

const STRESS: &str = env!("CARGO_BIN_EXE_rseq-stress");
const PROBE: &str = env!("CARGO_BIN_EXE_rseq-probe");

/// C compilers for the target, in the order tried (a command and its first arguments).
fn target_cc() -> Vec<Vec<String>> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    if let Some(cc) = std::env::var("RSEQ_TEST_CC")
        .ok()
        .filter(|c| !c.trim().is_empty())
    {
        return vec![words(&cc)];
    }
    if cfg!(target_arch = "x86") {
        vec![words("i686-linux-gnu-gcc"), words("cc -m32")]
    } else {
        vec![words("cc")]
    }
}

/// Builds the preload library; `None` (with the reasons printed) if no compiler could.
fn preload() -> Option<PathBuf> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pre_6_3_kernel.c");
    let out = std::env::temp_dir().join(format!("rseq-pre-6-3-{}.so", std::process::id()));
    for cc in target_cc() {
        let mut build = Command::new(&cc[0]);
        build
            .args(&cc[1..])
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(src)
            .arg("-ldl");
        let built = try_spawn_watched(build).map(|child| child.output(CHILD_DEADLINE));
        match built {
            Ok(Ok(o)) if o.status.success() => {
                eprintln!("preload library built with {cc:?}");
                return Some(out);
            }
            Ok(Ok(o)) => eprintln!(
                "{cc:?} could not build the preload library: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(Err(_)) => eprintln!("{cc:?} still ran after {CHILD_DEADLINE:?}: killed"),
            Err(e) => eprintln!("{cc:?}: {e}"),
        }
    }
    None
}

/// Runs `program args…` with `LD_PRELOAD=preload` (if any); asserts success, returns stdout.
fn run(preload: Option<&PathBuf>, program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).env_remove("RSEQ_DISABLE");
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    let out = output_watched(cmd, CHILD_DEADLINE)
        .unwrap_or_else(|_| panic!("{program} {args:?} still ran after {CHILD_DEADLINE:?}"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    eprintln!(
        "{program} {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {}", out.status);
    stdout
}

#[test]
fn mm_cid_sections_fall_back_where_the_kernel_has_no_mm_cid() {
    let platform = Platform::probe(PROBE);
    if !platform.kernel_rseq {
        not_applicable(format_args!(
            "the kernel answers `{}` to rseq: no mm_cid to hide, every section \
             runs the fallback (sections.rs checks it)",
            platform.kernel_rseq_answer
        ));
        return;
    }
    let facts = run(None, PROBE, &["facts"]);
    let lib = if field(&facts, "mm_cid") == Some("false") {
        eprintln!("this kernel has no mm_cid: no simulation needed");
        None
    } else if cfg!(target_feature = "crt-static") {
        not_applicable(
            "the test programs are statically linked (musl's default), and LD_PRELOAD cannot \
             replace their getauxval",
        );
        return;
    } else {
        let Some(lib) = preload() else {
            not_applicable("no C compiler for the target to build the preload library");
            return;
        };
        let facts = run(Some(&lib), PROBE, &["facts"]);
        assert_eq!(
            field(&facts, "mm_cid"),
            Some("false"),
            "the preload must hide mm_cid (was it built for this target? see RSEQ_TEST_CC)"
        );
        Some(lib)
    };
    let probed = run(lib.as_ref(), PROBE, &["facts"]);
    assert!(
        field(&probed, "mode").is_some_and(|m| m.starts_with("Rseq(")),
        "cpu_id sections keep running on rseq"
    );
    // With a timeout of its own: the bug this guards against was an endless retry.
    for op in ["counter-mm-cid", "counter"] {
        let out = run(
            lib.as_ref(),
            "timeout",
            &["120", STRESS, op, "--threads", "4", "--iters", "20000"],
        );
        assert_eq!(field(&out, "result"), Some("ok"), "{op}");
        assert_eq!(field(&out, "mode"), field(&probed, "mode"), "{op}");
    }
    if let Some(lib) = lib {
        let _ = std::fs::remove_file(lib);
    }
}

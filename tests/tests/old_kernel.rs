//! A kernel before Linux 6.3 (no `mm_cid`), simulated by preloading a `getauxval` that hides
//! the rseq feature size: `mm_cid` sections must take the fallback and still end exact, and
//! `cpu_id` sections keep running on rseq. Needs `cc` to build the preload library; skipped
//! without it. glibc only (musl ignores `LD_PRELOAD` for static binaries).

use rseq_tests::field;
use std::process::Command;

const STRESS: &str = env!("CARGO_BIN_EXE_rseq-stress");
const PROBE: &str = env!("CARGO_BIN_EXE_rseq-probe");

fn preload() -> Option<std::path::PathBuf> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pre_6_3_kernel.c");
    let out = std::env::temp_dir().join(format!("rseq-pre-6-3-{}.so", std::process::id()));
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-ldl")
        .status();
    match built {
        Ok(s) if s.success() => Some(out),
        _ => None,
    }
}

#[test]
fn mm_cid_sections_fall_back_where_the_kernel_has_no_mm_cid() {
    let Some(lib) = preload() else {
        eprintln!("skipped: no C compiler to build the preload library");
        return;
    };
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .env("LD_PRELOAD", &lib)
            .env_remove("RSEQ_DISABLE")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        eprintln!(
            "{program} {args:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success());
        stdout
    };
    let facts = run(PROBE, &["facts"]);
    assert_eq!(
        field(&facts, "mm_cid"),
        Some("false"),
        "the preload must hide mm_cid"
    );
    // With a timeout of its own: the bug this guards against was an endless retry.
    let mm = run(
        "timeout",
        &[
            "120",
            STRESS,
            "counter-mm-cid",
            "--threads",
            "4",
            "--iters",
            "20000",
        ],
    );
    assert_eq!(field(&mm, "result"), Some("ok"));
    let cpu = run(
        "timeout",
        &[
            "120",
            STRESS,
            "counter",
            "--threads",
            "4",
            "--iters",
            "20000",
        ],
    );
    assert_eq!(field(&cpu, "result"), Some("ok"));
    let _ = std::fs::remove_file(&lib);
}

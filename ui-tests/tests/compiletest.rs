//! Compile-fail tests of the `critical_section` language: one mistake per file under
//! `tests/ui/<area>/`, each with the single error it must produce (`.stderr`), and a few valid
//! sections under `tests/pass/` that must compile and run.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p rseq-ui-tests`, then
//! read every changed `.stderr`: one error, pointing at the offending token.

// The generated asm exists for x86_64 only for now: elsewhere every section is a compile error.
#[cfg(target_arch = "x86_64")]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*/*.rs");
    t.pass("tests/pass/*.rs");
}

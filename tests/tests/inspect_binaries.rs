//! `rseq-inspect` (the project's ELF verifier) on this package's own programs: every descriptor
//! the macro emitted into them passes the kernel's checks and the project's stricter ones.

use rseq_inspect::{inspect_file_with, Options, Verbosity};

#[test]
fn every_program_passes_rseq_inspect() {
    for exe in [
        env!("CARGO_BIN_EXE_rseq-stress"),
        env!("CARGO_BIN_EXE_rseq-demo"),
        env!("CARGO_BIN_EXE_rseq-probe"),
    ] {
        let report = inspect_file_with(exe, Options { strict: true })
            .unwrap_or_else(|e| panic!("{exe}: {e}"));
        eprintln!("{exe}: {}", report.summary());
        assert!(report.is_ok(), "{}", report.render(Verbosity::Full));
    }
    // rseq-stress holds one section per operation at least.
    let stress = inspect_file_with(env!("CARGO_BIN_EXE_rseq-stress"), Options::default()).unwrap();
    assert!(stress.descriptors.len() >= 9, "{}", stress.summary());
}

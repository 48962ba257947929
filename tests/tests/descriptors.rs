//! What the generated code leaves in this very binary: every `struct rseq_cs` descriptor passes
//! the kernel's checks, every descriptor is listed in `__rseq_cs_ptr_array`, and every exit point
//! lies outside its section. Read in process through the linker's `__start_`/`__stop_` symbols.
//! x86_64 only: the only architecture the code generator supports so far.
#![cfg(target_arch = "x86_64")]

use rseq::{abi::RseqCs, critical_section, PerCpu};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[critical_section]
fn add(counters: &PerCpu<AtomicU64>, n: u64) {
    commit::add(counters[cpu], n);
}

#[critical_section]
fn cmpeq_store(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> bool {
    let seen = load(v[cpu]);
    if seen != expect {
        fail(false)
    }
    commit::store(v[cpu], new);
    true
}

extern "C" {
    static __start___rseq_cs: RseqCs;
    static __stop___rseq_cs: RseqCs;
    static __start___rseq_cs_ptr_array: u64;
    static __stop___rseq_cs_ptr_array: u64;
    static __start___rseq_exit_point_array: [u64; 2];
    static __stop___rseq_exit_point_array: [u64; 2];
}

fn table<T>(start: *const T, stop: *const T) -> &'static [T] {
    let len = (stop as usize - start as usize) / core::mem::size_of::<T>();
    // SAFETY: the linker places every input section's entries between the two symbols.
    unsafe { core::slice::from_raw_parts(start, len) }
}

#[test]
fn descriptors_pass_the_kernels_checks() {
    // Use both sections so nothing is optimised away.
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    add(&counters, 3);
    assert_eq!(
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>(),
        3
    );
    let words: PerCpu<AtomicUsize> = PerCpu::default();
    assert!(cmpeq_store(&words, 0, 1) || !cmpeq_store(&words, 0, 1));

    let descriptors = table(&raw const __start___rseq_cs, &raw const __stop___rseq_cs);
    assert!(
        descriptors.len() >= 2,
        "expected at least two descriptors, found {}",
        descriptors.len()
    );
    for d in descriptors {
        assert_eq!((d.version, d.flags), (0, 0), "{d:x?}");
        assert_eq!(
            d as *const RseqCs as usize % 32,
            0,
            "descriptor not 32-byte aligned"
        );
        let end = d
            .start_ip
            .checked_add(d.post_commit_offset)
            .expect("start + offset overflows");
        assert!(d.post_commit_offset > 0);
        assert!(
            d.abort_ip < d.start_ip || d.abort_ip >= end,
            "abort inside the section: {d:x?}"
        );
        // SAFETY: abort_ip points into this binary's __rseq_failure code; 4 bytes before it are
        // the signature.
        let signature = unsafe { ((d.abort_ip - 4) as *const u32).read_unaligned() };
        assert_eq!(
            signature,
            rseq::sys::SIGNATURE,
            "signature before abort of {d:x?}"
        );
        // SAFETY: as above; x86's ud1 prefix precedes the signature word.
        let prefix = unsafe { core::slice::from_raw_parts((d.abort_ip - 7) as *const u8, 3) };
        assert_eq!(
            prefix,
            [0x0f, 0xb9, 0x3d],
            "the signature must decode as ud1"
        );
    }

    let listed: HashSet<u64> = table(
        &raw const __start___rseq_cs_ptr_array,
        &raw const __stop___rseq_cs_ptr_array,
    )
    .iter()
    .copied()
    .collect();
    for d in descriptors {
        assert!(
            listed.contains(&(d as *const RseqCs as u64)),
            "descriptor missing from __rseq_cs_ptr_array"
        );
    }
    assert_eq!(listed.len(), descriptors.len());

    let exits = table(
        &raw const __start___rseq_exit_point_array,
        &raw const __stop___rseq_exit_point_array,
    );
    assert!(!exits.is_empty(), "cmpeq_store has a fail exit");
    for [start, exit] in exits {
        let d = descriptors
            .iter()
            .find(|d| d.start_ip == *start)
            .expect("exit point of an unknown section");
        assert!(
            *exit < d.start_ip || *exit >= d.start_ip + d.post_commit_offset,
            "exit inside the section"
        );
    }
}

/// The tables survive `--gc-sections` and carry the flags the design needs.
#[test]
fn sections_have_the_right_flags() {
    let exe = std::env::current_exe().unwrap();
    let Ok(out) = std::process::Command::new("readelf")
        .arg("-SW")
        .arg(&exe)
        .output()
    else {
        eprintln!("skipped: readelf is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let flags = |name: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("no section {name}:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        let at = cols.iter().position(|w| *w == name).unwrap();
        cols[at + 6].to_string()
    };
    assert_eq!(flags("__rseq_cs"), "WA");
    assert!(flags("__rseq_cs_ptr_array").starts_with("WA"));
    assert!(flags("__rseq_exit_point_array").starts_with("WA"));
    assert_eq!(flags("__rseq_failure"), "AX");
}

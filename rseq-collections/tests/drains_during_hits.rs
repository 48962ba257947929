//! `PerCpuAlloc`'s hit paths against its drains: four threads allocate, stamp, check and free
//! 48-byte blocks (one class, so every drain finds their cached blocks) while a fifth calls
//! `release_memory` and `release_idle` every 200 µs, each of which stops, empties and restarts
//! every CPU's cache behind fences. A block two parties own shows as a stamp that changed under
//! its owner, or as a corrupt free list (a crash). The same in a child on the library's own
//! registration (`GLIBC_TUNABLES=glibc.pthread.rseq=0`), where glibc registers threads; in the
//! fallback the caches are bypassed and the test only checks the blocks.
//!
//! This stress caught, within seconds, a version of the free's section that committed its new
//! top with an add to memory (`mixed_stress` took one CI run of several to show it). The add was
//! not the fault: the drain reopened a cache's limits right after its tops, with no fence
//! between, so a free that had loaded a stopped top (0) could load the reopened limit next and
//! push at slot 0; with the add, its commit also lifted the top over a stale slot, which handed a
//! block out twice. The injection test `a_drain_reopens_no_cache_under_a_running_free` makes
//! that window certain.

use rseq_collections::alloc::PerCpuAlloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: PerCpuAlloc<System> = PerCpuAlloc::new(System);

const CHILD_ENV: &str = "RSEQ_DRAINS_DURING_HITS_CHILD";
const SIZE: usize = 48;

/// Allocates, stamps with `mark`, checks and frees until `stop`.
fn churn(mark: u8, stop: &AtomicBool) {
    let layout = Layout::from_size_align(SIZE, 8).unwrap();
    let check = |p: *mut u8| {
        // SAFETY: a live block of `SIZE` bytes this thread stamped.
        let bytes = unsafe { std::slice::from_raw_parts(p, SIZE) };
        assert!(
            bytes.iter().all(|&b| b == mark),
            "block {p:?} changed under its owner: {bytes:?}"
        );
    };
    let mut live: Vec<*mut u8> = Vec::with_capacity(300);
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        n += 1;
        if n.wrapping_mul(2_654_435_761) % 7 < 4 || live.is_empty() {
            // SAFETY: a non-zero layout; the block is written within its size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(mark, SIZE) };
            live.push(p);
            if live.len() > 250 {
                for p in live.drain(..200) {
                    check(p);
                    // SAFETY: allocated above with `layout`.
                    unsafe { GLOBAL.dealloc(p, layout) };
                }
            }
        } else {
            let p = live.swap_remove(n as usize % live.len());
            check(p);
            // SAFETY: allocated above with `layout`.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
    for p in live {
        check(p);
        // SAFETY: allocated above with `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
}

fn stress(time: Duration) {
    let stop = AtomicBool::new(false);
    let drains = std::thread::scope(|s| {
        for t in 0..4u8 {
            let stop = &stop;
            s.spawn(move || churn(t + 1, stop));
        }
        let stop = &stop;
        let drainer = s.spawn(move || {
            let end = Instant::now() + time;
            let mut drains = 0u64;
            while Instant::now() < end {
                drains += 1;
                if drains.is_multiple_of(2) {
                    GLOBAL.release_memory();
                } else {
                    GLOBAL.release_idle();
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            stop.store(true, Relaxed);
            drains
        });
        drainer.join().unwrap()
    });
    println!(
        "{drains} drains in {time:?}, mode {:?}, {:?}",
        rseq_rt::mode(),
        GLOBAL.stats()
    );
}

#[test]
fn hits_and_drains_never_share_a_block() {
    if std::env::var_os(CHILD_ENV).is_some() {
        stress(Duration::from_secs(3));
        return;
    }
    stress(Duration::from_secs(3));
    if rseq_rt::mode() == rseq_rt::Mode::Rseq(rseq_rt::Owner::Glibc) {
        let out = rseq_rt::test_support::run_test_in_child_with(
            "hits_and_drains_never_share_a_block",
            &[
                ("GLIBC_TUNABLES", "glibc.pthread.rseq=0"),
                (CHILD_ENV, "library"),
            ],
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "the library-mode child failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

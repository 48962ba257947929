//! Fault injection (`--features inject`): `rseq-inject` spins inside every kind of section at one
//! injection point at a time while signals and preemption hit it. Under rseq every point must
//! see kernel aborts (the window covers that step), and every end state must be exact; in the
//! fallback the same end states, with no aborts.

use rseq::__private::run_unprotected;
use rseq::{critical_section, inject, PerCpu};
use rseq_tests::{field, run_in, RunMode};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

const PROGRAM: &str = env!("CARGO_BIN_EXE_rseq-inject");

fn run(mode: RunMode) {
    let rseq_here = matches!(rseq::mode(), rseq::Mode::Rseq(_));
    if mode != RunMode::Disabled && !rseq_here {
        // qemu-user, seccomp, valgrind: every mode is the fallback, which the Disabled run
        // covers.
        eprintln!(
            "no rseq in this process ({:?}): {mode:?} not applicable",
            rseq::mode()
        );
        return;
    }
    // The fallback spins while it holds its slot lock, so every thread waits for it: fewer
    // iterations keep that run short.
    let args: &[&str] = if mode == RunMode::Disabled {
        &["--iters", "600"]
    } else {
        &[]
    };
    let out = run_in(mode, PROGRAM, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rseq-inject failed in {mode:?}");
    assert_eq!(field(&stdout, "result"), Some("ok"));
    assert_eq!(field(&stdout, "failures"), Some("0"));
    let rseq = field(&stdout, "mode").is_some_and(|m| m.starts_with("Rseq"));
    let expected = mode != RunMode::Disabled;
    assert_eq!(rseq, expected, "mode line: {:?}", field(&stdout, "mode"));
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("workload="))
        .collect();
    // add 2 + rmw 4 + list 5 + memcpy 5 points.
    assert_eq!(lines.len(), 16, "one line per workload and point");
    for line in lines {
        let aborts: usize = field(&line.replace(' ', "\n"), "aborts")
            .and_then(|a| a.parse().ok())
            .expect("aborts=N");
        if rseq {
            assert!(aborts > 0, "no abort with a delay at this point: {line}");
        } else {
            assert_eq!(aborts, 0, "aborts counted in the fallback: {line}");
        }
    }
}

/// The child runs one at a time: the fence check needs a CPU where its worker spins undisturbed,
/// which the other runs' signal storms would not leave it.
static ONE_CHILD_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_child_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CHILD_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn every_point_aborts_under_glibc_registration() {
    let _serial = one_child_at_a_time();
    run(RunMode::Glibc);
}

#[test]
fn every_point_aborts_under_own_registration() {
    let _serial = one_child_at_a_time();
    run(RunMode::Own);
}

#[test]
fn fallback_gives_the_same_end_states() {
    let _serial = one_child_at_a_time();
    run(RunMode::Disabled);
}

/// `fence_cpu` and `fence_all` restart a section spinning on another CPU (`rseq-inject fence`,
/// five conclusive trials each), with membarrier and with membarrier denied by a seccomp filter
/// — as on Linux 4.18–5.9, where the fences move the thread to every CPU instead — in both
/// registration modes. A trial in which the worker was switched out (which restarts its section
/// too) is inconclusive and repeated, so a busy machine slows the check but does not fail it.
#[test]
fn fences_restart_a_running_section_with_and_without_membarrier() {
    let _serial = one_child_at_a_time();
    if !matches!(rseq::mode(), rseq::Mode::Rseq(_)) || rseq_tests::emulator().is_some() {
        eprintln!("no rseq here ({:?}): not applicable", rseq::mode());
        return;
    }
    for mode in [RunMode::Glibc, RunMode::Own] {
        for (args, mechanism) in [
            (&["fence"][..], "Membarrier"),
            (&["fence", "--deny-membarrier"][..], "Migration"),
        ] {
            let out = run_in(mode, PROGRAM, args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "rseq-inject {args:?} failed in {mode:?}"
            );
            assert_eq!(field(&stdout, "result"), Some("ok"));
            let lines: Vec<&str> = stdout
                .lines()
                .filter(|l| l.starts_with("fence_check="))
                .collect();
            if lines.iter().any(|l| l.contains("not-applicable")) {
                eprintln!("{lines:?}");
                continue;
            }
            assert_eq!(lines.len(), 2, "fence_cpu and fence_all: {stdout}");
            for line in lines {
                assert!(
                    line.contains(&format!("fence={mechanism} ")) && line.contains("trials=5"),
                    "{args:?} in {mode:?}: {line}"
                );
            }
        }
    }
}

#[critical_section]
fn rmw(c: &PerCpu<AtomicUsize>, n: usize) -> usize {
    let v = load(c[cpu]);
    let sum = add(v, n);
    commit::store(c[cpu], sum);
    v
}

#[repr(C)]
struct Node {
    next: *mut Node,
}

/// # Safety
/// `node` is valid.
#[critical_section]
unsafe fn push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
    let head = load(heads[cpu]);
    store((*node).next, head);
    commit::store_release(heads[cpu], node);
}

/// # Safety
/// `dst` and `src` are valid for `len` bytes.
#[critical_section]
unsafe fn copy_then_count(c: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8, len: usize) {
    memcpy(dst, src, len);
    commit::add(c[cpu], len);
}

/// The delay loops are instructions of every section: run them (with non-zero counts at every
/// point) on the asm path of a fake area — also under qemu-user, where this is the only way the
/// loops of other architectures execute — and check the sections' effects are unchanged.
/// The in-process tests that set delays: one at a time (the counts are the process's).
static DELAYS_IN_USE: Mutex<()> = Mutex::new(());

#[test]
fn sections_with_delays_have_their_exact_effects() {
    const { assert!(inject::ENABLED) };
    let _delays = DELAYS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    for point in 0..inject::POINTS {
        inject::set_delay(point, 50 + point as u32);
    }
    let cpus = rseq::possible_cpus().min(3);
    for cpu in 0..cpus {
        let c: PerCpu<AtomicUsize> = PerCpu::default();
        let heads: PerCpu<AtomicPtr<Node>> = PerCpu::default();
        let mut node = Node {
            next: std::ptr::null_mut(),
        };
        let src: Vec<u8> = (0..37).collect();
        let mut dst = vec![0u8; 37];
        let before = rseq::fallback::thread_fallback_sections();
        run_unprotected(cpu as u32, || {
            assert_eq!(rmw(&c, 5), 0);
            assert_eq!(rmw(&c, 6), 5);
            // SAFETY: valid node and buffers.
            unsafe {
                push(&heads, &mut node);
                copy_then_count(&c, dst.as_mut_ptr(), src.as_ptr(), src.len());
            }
        });
        assert_eq!(
            rseq::fallback::thread_fallback_sections(),
            before,
            "the fallback ran"
        );
        let counts: Vec<usize> = c.iter().map(|v| v.load(Relaxed)).collect();
        let mut want = vec![0; c.len()];
        want[cpu] = 11 + 37;
        assert_eq!(counts, want, "cpu {cpu}");
        assert_eq!(
            heads.get(cpu).map(|h| h.load(Relaxed)),
            Some(&mut node as *mut Node)
        );
        assert_eq!(dst, src);
    }
    inject::clear();
}

/// Adds `n` to the current CPU's slot, or returns false at once if the kernel aborts it;
/// `add_retrying` is the same, retried (and falling back).
#[critical_section(on_abort = false, retrying = add_retrying)]
fn add_or_give_up(c: &PerCpu<AtomicUsize>, n: usize) -> bool {
    let v = load(c[cpu]);
    let sum = add(v, n);
    commit::store(c[cpu], sum);
    true
}

extern "C" fn ignore(_: libc::c_int) {}

/// `on_abort = value`: a section the kernel aborts returns the value, with no effect and no
/// retry. A delay of about 10 ms at every point, with a thread signalling the caller every
/// 100 µs, makes aborts certain (each attempt sees many signals; a switch-out aborts it too); the
/// delays then cleared, the same section commits.
#[test]
fn on_abort_returns_its_value_when_the_kernel_aborts() {
    let _delays = DELAYS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    if !matches!(rseq::mode(), rseq::Mode::Rseq(_)) {
        // Without rseq the first attempt always fails its index check: the value, no effect.
        let c: PerCpu<AtomicUsize> = PerCpu::default();
        assert!(!add_or_give_up(&c, 1));
        assert_eq!(c.iter().map(|v| v.load(Relaxed)).sum::<usize>(), 0);
        // The twin falls back.
        assert!(add_retrying(&c, 1));
        assert_eq!(c.iter().map(|v| v.load(Relaxed)).sum::<usize>(), 1);
        eprintln!(
            "no rseq here ({:?}): only the fallback checked",
            rseq::mode()
        );
        return;
    }
    let c: PerCpu<AtomicUsize> = PerCpu::default();
    // Registers the thread (a first attempt on an unattached thread aborts by itself).
    rmw(&c, 0);
    let handler: extern "C" fn(libc::c_int) = ignore;
    // SAFETY: a handler that does nothing.
    unsafe { libc::signal(libc::SIGUSR2, handler as libc::sighandler_t) };
    // SAFETY: this thread's own id.
    let target = unsafe { libc::pthread_self() };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signaller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                // SAFETY: the target thread outlives this one (joined below).
                unsafe { libc::pthread_kill(target, libc::SIGUSR2) };
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        })
    };
    for point in 0..inject::POINTS {
        inject::set_delay(point, 10_000_000);
    }
    let given_up = (0..10).filter(|_| !add_or_give_up(&c, 1)).count();
    inject::clear();
    stop.store(true, Relaxed);
    signaller.join().unwrap();
    let sum = c.iter().map(|v| v.load(Relaxed)).sum::<usize>();
    assert_eq!(
        given_up, 10,
        "attempts that committed through the delays: {sum}"
    );
    assert_eq!(sum, 0, "an aborted attempt changed the slot");
    let committed = (0..100).filter(|_| add_or_give_up(&c, 1)).count();
    assert!(committed > 0, "no attempt committed without delays");
    assert_eq!(c.iter().map(|v| v.load(Relaxed)).sum::<usize>(), committed);
    // The twin retries until it commits.
    assert!((0..100).all(|_| add_retrying(&c, 1)));
    assert_eq!(
        c.iter().map(|v| v.load(Relaxed)).sum::<usize>(),
        committed + 100
    );
}

/// `PerCpuAlloc`'s drain reopens a stopped CPU cache only after a fence. A free's section loads
/// the class's top, then its limit; the drain restarts a stopped class by setting its top (from
/// 0 to the class's base), then its limit. Were the limit set right after the top, a section
/// that loaded the stopped top (0) and then the new limit would pass its check and push at
/// slot 0, below the class's stack: that block, and every later free on that CPU until the next
/// drain, would be lost (and with an add as the commit, the top would also rise over a stale
/// slot). A delay of about 20 µs between the two loads makes the window certain to be hit while
/// a thread drains every cache again and again; the blocks must all come back.
#[test]
fn a_drain_reopens_no_cache_under_a_running_free() {
    use rseq::collections::alloc::PerCpuAlloc;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    let _delays = DELAYS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    if !matches!(rseq::mode(), rseq::Mode::Rseq(_)) || rseq_tests::emulator().is_some() {
        // Without rseq the caches are bypassed: nothing to drain.
        eprintln!("no rseq here ({:?}): not applicable", rseq::mode());
        return;
    }
    let cache = PerCpuAlloc::new(System);
    let layout = Layout::from_size_align(48, 8).unwrap();
    let stop = AtomicBool::new(false);
    // Point 2: before the section's second load (the free's limit; a pop's check).
    inject::set_delay(2, 20_000);
    let drains = std::thread::scope(|s| {
        s.spawn(|| {
            let mut blocks = Vec::with_capacity(32);
            while !stop.load(Relaxed) {
                // SAFETY: a non-zero layout; each block is freed once, with it.
                blocks.extend((0..32).map(|_| unsafe { cache.alloc(layout) }));
                for block in blocks.drain(..) {
                    assert!(!block.is_null());
                    unsafe { cache.dealloc(block, layout) };
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(1);
        let mut drains = 0;
        while Instant::now() < end {
            cache.release_memory();
            drains += 1;
        }
        stop.store(true, Relaxed);
        drains
    });
    inject::clear();
    cache.release_memory();
    let stats = cache.stats();
    assert_eq!(
        (
            stats.cached_blocks,
            stats.transfer_blocks,
            stats.span_blocks_out,
            stats.spans
        ),
        (0, 0, 0, 0),
        "blocks lost after {drains} drains: {stats:?}"
    );
}

//! The fallback's signal handling, and `assume_no_sections_in_signal_handlers`: a thread that
//! holds no slot takes a CPU's slot with signals deliverable; a section nested in its own
//! thread's section (a signal handler's, or one inside `with_slot`'s body) blocks the
//! asynchronous signals and takes any free slot, the spare included, so a handler that
//! interrupts its own thread's section always finds a slot in the end (even when every thread's
//! handler runs one while its thread holds a slot, and when a second handler interrupts the
//! first one's section); after the promise nothing is blocked; a handler that breaks the
//! promise and waits in vain for a slot aborts the process with a message (run in child
//! processes: the promise is process-wide, and the last case aborts).

use rseq_rt::fallback::{
    assume_no_sections_in_signal_handlers, lock_slot_exact, signals_unblocked, slots,
    unmasked_holds, with_slot,
};
use rseq_rt::test_support::{run_test_in_child, set_fallback_nested_hook};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "RSEQ_RT_FALLBACK_SIGNALS_CHILD";

/// Blocks or unblocks (`how`) `sigs` on the calling thread.
fn set_blocked(sigs: &[libc::c_int], how: libc::c_int) {
    // SAFETY: a zeroed sigset_t filled by sigemptyset/sigaddset; pthread_sigmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in sigs {
            libc::sigaddset(&mut set, sig);
        }
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

/// Whether `sig` is blocked on the calling thread now.
fn blocked(sig: libc::c_int) -> bool {
    // SAFETY: queries the mask into a zeroed set (SIG_BLOCK with no set changes nothing).
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, sig) == 1
    }
}

/// Runs this test binary's `test` in a child with `CHILD_ENV=case` (killed, and failing, after
/// a minute: a hang fails the test instead of hanging it).
fn child(test: &str, case: &str) -> std::process::Output {
    run_test_in_child(test, CHILD_ENV, case, Duration::from_secs(60))
}

/// The number of CPU slots (the last slot, index `cpus()`, is the spare).
fn cpus() -> usize {
    slots() - 1
}

/// Threads holding CPU slots `1..n` until dropped.
struct Holders {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Holders {
    fn hold(n: usize) -> Holders {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads = (1..n)
            .map(|i| {
                let (tx, stop) = (tx.clone(), stop.clone());
                std::thread::spawn(move || {
                    let _g = lock_slot_exact(i).expect("slot");
                    tx.send(()).unwrap();
                    while !stop.load(SeqCst) {
                        std::thread::park();
                    }
                })
            })
            .collect::<Vec<_>>();
        for _ in 1..n {
            rx.recv().unwrap();
        }
        Holders { stop, threads }
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            t.join().unwrap();
        }
    }
}

/// Runs a child case (as `child`) that must exit successfully; `what` names it on failure.
fn child_succeeds(test: &str, case: &str, what: &str) {
    let out = child(test, case);
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn holds_leave_signals_deliverable_and_nested_ones_block_them_until_the_promise() {
    if std::env::var_os(CHILD_ENV).is_none() {
        child_succeeds(
            "holds_leave_signals_deliverable_and_nested_ones_block_them_until_the_promise",
            "mask",
            "child failed",
        );
        return;
    }
    assert!(!signals_unblocked());
    assert!(
        !blocked(libc::SIGUSR1),
        "SIGUSR1 blocked before any section"
    );
    let n = cpus();
    // Alone, a hold leaves signals deliverable.
    let inside = with_slot(0, |_| (blocked(libc::SIGUSR1), unmasked_holds()));
    assert_eq!(inside, (false, 1), "one hold: SIGUSR1 deliverable");
    assert_eq!(unmasked_holds(), 0, "none after the unlock");
    // With every other CPU slot held, too: no hold of a thread that holds none blocks signals.
    // A nested one does, and takes the only free slot, the spare. Signals the program blocked
    // itself (the highest real-time one too, the last bit of the kernel's mask that the hold
    // saves) stay blocked after it.
    let wanted = [libc::SIGUSR2, libc::SIGRTMAX()];
    set_blocked(&wanted, libc::SIG_BLOCK);
    // qemu-user keeps the top real-time signals for itself and ignores masks on them: check
    // the ones this process could block (SIGUSR2 everywhere).
    let own: Vec<libc::c_int> = wanted.into_iter().filter(|&sig| blocked(sig)).collect();
    assert!(own.contains(&libc::SIGUSR2), "SIGUSR2 could be blocked");
    let holders = Holders::hold(n);
    assert_eq!(unmasked_holds(), n - 1);
    let (outer, nested, after_nested) = with_slot(0, |outer| {
        let outer = (outer, blocked(libc::SIGUSR1), unmasked_holds());
        let nested = with_slot(0, |slot| {
            (
                slot,
                blocked(libc::SIGUSR1),
                blocked(libc::SIGSEGV),
                unmasked_holds(),
            )
        });
        (outer, nested, blocked(libc::SIGUSR1))
    });
    assert_eq!(
        outer,
        (0, false, n),
        "every CPU slot held: SIGUSR1 deliverable"
    );
    assert_eq!(
        nested,
        (n, true, false, n),
        "nested: the spare, SIGUSR1 blocked, SIGSEGV not, not an unmasked hold"
    );
    assert!(
        !after_nested,
        "the mask is restored after the nested unlock"
    );
    assert!(
        own.iter().all(|&sig| blocked(sig)),
        "the program's own blocked signals stay blocked after the unlock"
    );
    set_blocked(&own, libc::SIG_UNBLOCK);
    drop(holders);
    assert_eq!(unmasked_holds(), 0);
    assume_no_sections_in_signal_handlers();
    assert!(signals_unblocked());
    let inside = with_slot(0, |_| with_slot(0, |slot| (slot, blocked(libc::SIGUSR1))));
    assert!(
        inside.0 != 0 && !inside.1,
        "after the promise a nested hold leaves the mask alone: {inside:?}"
    );
}

static HANDLER_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
static HELD_SLOT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn section_in_handler(_: libc::c_int) {
    let slot = with_slot(HELD_SLOT.load(SeqCst), |slot| slot);
    HANDLER_SLOT.store(slot, SeqCst);
}

/// Installs `handler` for SIGUSR1 (each handler here only takes a slot lock and stores atomics).
fn on_sigusr1(handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with only the handler set; the handlers are async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Holds slot `held` on this thread and raises SIGUSR1, whose handler runs a section.
fn interrupt_own_section(held: usize) {
    HELD_SLOT.store(held, SeqCst);
    on_sigusr1(section_in_handler);
    let guard = lock_slot_exact(held).expect("slot");
    // SAFETY: signals this thread; the handler runs before pthread_kill returns (unblocked).
    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
    drop(guard);
}

#[test]
fn a_handler_after_the_promise_takes_a_free_slot_or_aborts_instead_of_hanging() {
    let Some(case) = std::env::var_os(CHILD_ENV) else {
        child_succeeds(
            "a_handler_after_the_promise_takes_a_free_slot_or_aborts_instead_of_hanging",
            "free",
            "the free-slot case failed",
        );
        let t0 = Instant::now();
        let out = child(
            "a_handler_after_the_promise_takes_a_free_slot_or_aborts_instead_of_hanging",
            "all-busy",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "the all-busy case must abort: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("assume_no_sections_in_signal_handlers() promised"),
            "the abort names the broken promise: {stderr}"
        );
        assert!(t0.elapsed() < Duration::from_secs(60), "aborted late");
        return;
    };
    assume_no_sections_in_signal_handlers();
    match case.to_str().unwrap() {
        // Another slot is free (the spare at least): the handler's section runs there.
        "free" => {
            interrupt_own_section(0);
            let got = HANDLER_SLOT.load(SeqCst);
            assert!(got != 0 && got < slots(), "the handler ran on slot {got}");
        }
        // Every other CPU slot is held for good by a parked thread, and this thread holds slot
        // 0 and, nested (signals deliverable under the promise), the spare: the handler can
        // never get a slot.
        "all-busy" => {
            let _holders = Holders::hold(cpus());
            on_sigusr1(section_in_handler);
            with_slot(0, |outer| {
                assert_eq!(outer, 0);
                with_slot(0, |spare| {
                    assert_eq!(spare, cpus(), "the nested hold took the spare");
                    // SAFETY: signals this thread; the handler runs before pthread_kill returns.
                    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
                })
            });
            panic!("the handler returned without a slot");
        }
        other => panic!("unknown case {other}"),
    }
}

/// Without the promise, a handler that interrupts its thread's section with every other CPU
/// slot held for good takes the spare at once; with a CPU slot free, that one.
#[test]
fn without_the_promise_a_handler_in_its_threads_section_gets_a_slot() {
    if std::env::var_os(CHILD_ENV).is_none() {
        child_succeeds(
            "without_the_promise_a_handler_in_its_threads_section_gets_a_slot",
            "all-busy",
            "child failed",
        );
        return;
    }
    let holders = Holders::hold(cpus());
    interrupt_own_section(0);
    assert_eq!(
        HANDLER_SLOT.load(SeqCst),
        cpus(),
        "the handler ran on the spare"
    );
    drop(holders);
    if cpus() >= 2 {
        HANDLER_SLOT.store(usize::MAX, SeqCst);
        interrupt_own_section(0);
        let got = HANDLER_SLOT.load(SeqCst);
        assert!(got != 0 && got < cpus(), "the handler ran on slot {got}");
    }
}

static HOOK_RAISED: AtomicBool = AtomicBool::new(false);
static SECOND_HANDLER_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
static SECOND_RAN_INSIDE_FIRST: AtomicBool = AtomicBool::new(false);
static FIRST_HOLDS: AtomicBool = AtomicBool::new(false);

/// The nested hook: raises SIGUSR2 on the calling thread, once, while the first handler's
/// section holds its slot.
fn raise_in_nested_hold() {
    if !HOOK_RAISED.swap(true, SeqCst) {
        // SAFETY: signals this thread; handled at once if deliverable, else at the unlock.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
    }
}

extern "C" fn first_handler(_: libc::c_int) {
    let slot = with_slot(0, |slot| {
        FIRST_HOLDS.store(true, SeqCst);
        let _ = blocked(libc::SIGUSR2);
        FIRST_HOLDS.store(false, SeqCst);
        slot
    });
    HANDLER_SLOT.store(slot, SeqCst);
}

extern "C" fn second_handler(_: libc::c_int) {
    SECOND_RAN_INSIDE_FIRST.store(FIRST_HOLDS.load(SeqCst), SeqCst);
    let slot = with_slot(0, |slot| slot);
    SECOND_HANDLER_SLOT.store(slot, SeqCst);
}

/// A handler chain on the spare: this thread holds slot 0, every other CPU slot is held for
/// good, a first handler's section takes the spare, and a second signal lands inside that hold
/// (the nested hook raises it there). The nested hold blocked the asynchronous signals, so the
/// second handler runs after the spare is given back and takes it in turn. Were the nested hold
/// made with signals deliverable, the second handler would wait for a slot forever (its thread
/// holds slot 0 and the spare; the child is killed).
#[test]
fn a_handler_interrupting_a_handlers_section_waits_until_the_spare_is_free() {
    if std::env::var_os(CHILD_ENV).is_none() {
        child_succeeds(
            "a_handler_interrupting_a_handlers_section_waits_until_the_spare_is_free",
            "chain",
            "child failed",
        );
        return;
    }
    let holders = Holders::hold(cpus());
    on_sigusr1(first_handler);
    // SAFETY: a zeroed sigaction with only the handler set; it takes a slot and stores atomics.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = second_handler as *const () as usize;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
    set_fallback_nested_hook(Some(raise_in_nested_hold));
    with_slot(0, |slot| {
        assert_eq!(slot, 0);
        // SAFETY: signals this thread; the first handler runs before pthread_kill returns.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
    });
    set_fallback_nested_hook(None);
    assert!(HOOK_RAISED.load(SeqCst), "the hook ran in the nested hold");
    assert_eq!(
        HANDLER_SLOT.load(SeqCst),
        cpus(),
        "the first handler took the spare"
    );
    assert_eq!(
        SECOND_HANDLER_SLOT.load(SeqCst),
        cpus(),
        "the second handler took the spare after the first gave it back"
    );
    assert!(
        !SECOND_RAN_INSIDE_FIRST.load(SeqCst),
        "the second handler ran inside the first one's hold"
    );
    drop(holders);
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn counting_section_in_handler(_: libc::c_int) {
    with_slot(0, |_| HANDLED.fetch_add(1, SeqCst));
}

/// One thread per CPU slot, each holding its slot while every other one is held, then
/// signalling itself: each handler runs a section, which must find a slot its thread does not
/// hold. Each takes the spare in turn (their holds of it block signals and wait for nothing).
/// Were the handlers to wait for a CPU slot, every one would wait forever (the child is
/// killed).
#[test]
fn every_holders_handler_runs_a_section() {
    if std::env::var_os(CHILD_ENV).is_none() {
        child_succeeds(
            "every_holders_handler_runs_a_section",
            "all",
            "child failed",
        );
        return;
    }
    on_sigusr1(counting_section_in_handler);
    let n = cpus();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let guard = lock_slot_exact(i).expect("slot");
                barrier.wait();
                // SAFETY: signals this thread; the handler runs before pthread_kill returns.
                unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
                drop(guard);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(HANDLED.load(SeqCst), n, "every handler ran its section");
}

/// `lock_slot_exact` names CPU slots only: the spare is not one, and a nested exact lock of a
/// slot its thread holds reports `None` instead of waiting.
#[test]
fn exact_locks_name_cpu_slots_and_never_wait_when_nested() {
    assert!(lock_slot_exact(cpus()).is_none(), "the spare is no CPU's");
    assert!(lock_slot_exact(usize::MAX).is_none());
    let inner = with_slot(0, |slot| (slot, lock_slot_exact(slot).is_none()));
    assert!(inner.1, "nested, its own slot: None, at once");
}

//! The fallback's signal handling, and `assume_no_sections_in_signal_handlers`: by default at
//! most `slots − 1` slot locks are held with signals deliverable and a thread past that holds
//! its lock with asynchronous signals blocked, so a handler that interrupts its own thread's
//! section always finds a slot in the end (even when every thread's handler runs one while its
//! thread holds a slot); a handler that interrupts its thread between taking a slot and
//! checking the others borrows that slot; after the promise nothing is counted or blocked; a
//! handler that breaks the promise and waits in vain for a slot aborts the process with a
//! message (run in child processes: the promise is process-wide, and the last case aborts).

use rseq_rt::fallback::{
    assume_no_sections_in_signal_handlers, lock_slot_exact, signals_unblocked, slots,
    unmasked_holds, with_slot,
};
use rseq_rt::test_support::{run_test_in_child, set_fallback_window_hook};
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

/// Threads holding slots `1..n` until dropped.
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
fn slot_locks_count_or_block_signals_until_the_promise() {
    if std::env::var_os(CHILD_ENV).is_none() {
        child_succeeds(
            "slot_locks_count_or_block_signals_until_the_promise",
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
    let n = slots();
    if n >= 2 {
        // Alone, a hold leaves signals deliverable and is counted.
        let inside = with_slot(0, |_| (blocked(libc::SIGUSR1), unmasked_holds()));
        assert_eq!(inside, (false, 1), "one hold: SIGUSR1 deliverable, counted");
        assert_eq!(unmasked_holds(), 0, "uncounted after the unlock");
    }
    // With the other n − 1 slots held (counted: the limit), the next hold blocks. Signals the
    // program blocked itself (the highest real-time one too, the last bit of the kernel's mask
    // that the hold saves) stay blocked after it.
    let wanted = [libc::SIGUSR2, libc::SIGRTMAX()];
    set_blocked(&wanted, libc::SIG_BLOCK);
    // qemu-user keeps the top real-time signals for itself and ignores masks on them: check
    // the ones this process could block (SIGUSR2 everywhere).
    let own: Vec<libc::c_int> = wanted.into_iter().filter(|&sig| blocked(sig)).collect();
    assert!(own.contains(&libc::SIGUSR2), "SIGUSR2 could be blocked");
    let holders = Holders::hold(n);
    assert_eq!(unmasked_holds(), n - 1);
    let inside = with_slot(0, |_| {
        (
            blocked(libc::SIGUSR1),
            blocked(libc::SIGSEGV),
            unmasked_holds(),
        )
    });
    assert_eq!(
        inside,
        (true, false, n - 1),
        "past the limit: SIGUSR1 blocked, SIGSEGV not, the hold not counted"
    );
    assert!(
        !blocked(libc::SIGUSR1),
        "the mask is restored after the unlock"
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
    let inside = with_slot(0, |_| (blocked(libc::SIGUSR1), unmasked_holds()));
    assert_eq!(
        inside,
        (false, 0),
        "after the promise a slot lock leaves the mask alone and counts nothing"
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
        if slots() < 2 {
            eprintln!("note: one fallback slot here: the free-slot case needs two");
        } else {
            child_succeeds(
                "a_handler_after_the_promise_takes_a_free_slot_or_aborts_instead_of_hanging",
                "free",
                "the free-slot case failed",
            );
        }
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
        // Another slot is free: the handler's section runs there.
        "free" => {
            interrupt_own_section(0);
            let got = HANDLER_SLOT.load(SeqCst);
            assert!(got != 0 && got < slots(), "the handler ran on slot {got}");
        }
        // Every other slot is held for good by a parked thread: the handler can never get one.
        "all-busy" => {
            let n = slots();
            let (tx, rx) = std::sync::mpsc::channel();
            for i in 1..n {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _g = lock_slot_exact(i).expect("slot");
                    tx.send(()).unwrap();
                    std::thread::park();
                });
            }
            for _ in 1..n {
                rx.recv().unwrap();
            }
            interrupt_own_section(0);
            panic!("the handler returned without a slot");
        }
        other => panic!("unknown case {other}"),
    }
}

/// Without the promise, the case that aborts above cannot arise: every other slot is held for
/// good (counted: the limit), so this thread's hold blocks SIGUSR1, whose handler runs after the
/// unlock and finds slot 0 free.
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
    let holders = Holders::hold(slots());
    interrupt_own_section(0);
    assert_eq!(HANDLER_SLOT.load(SeqCst), 0, "the handler ran on slot 0");
    drop(holders);
    if slots() >= 2 {
        // With a slot free, a counted hold: the handler interrupts it and takes the free one.
        HANDLER_SLOT.store(usize::MAX, SeqCst);
        interrupt_own_section(0);
        let got = HANDLER_SLOT.load(SeqCst);
        assert!(got != 0 && got < slots(), "the handler ran on slot {got}");
    }
}

static WINDOW_RAISED: AtomicBool = AtomicBool::new(false);
static HANDLER_SAW_BLOCKED: AtomicBool = AtomicBool::new(false);

/// The window hook: raises SIGUSR1 on the calling thread, once.
fn raise_in_window() {
    if !WINDOW_RAISED.swap(true, SeqCst) {
        // SAFETY: signals this thread; the handler runs before pthread_kill returns.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
    }
}

extern "C" fn section_in_handler_noting_the_mask(_: libc::c_int) {
    let (slot, masked) = with_slot(HELD_SLOT.load(SeqCst), |slot| {
        (slot, blocked(libc::SIGUSR2))
    });
    HANDLER_SLOT.store(slot, SeqCst);
    HANDLER_SAW_BLOCKED.store(masked, SeqCst);
}

/// A signal that lands between a thread taking its slot and checking the others (the window
/// hook raises it there), with every other slot held for good: the handler's section cannot
/// wait for a slot (none would come free: its own thread holds the last one), so it borrows the
/// one its thread has just taken, with signals blocked. Without the borrow it waits forever and
/// the child is killed.
#[test]
fn a_handler_in_the_window_borrows_its_threads_slot() {
    if std::env::var_os(CHILD_ENV).is_none() {
        if slots() < 2 {
            eprintln!(
                "note: one fallback slot here: every hold blocks signals, there is no window"
            );
            return;
        }
        child_succeeds(
            "a_handler_in_the_window_borrows_its_threads_slot",
            "window",
            "child failed",
        );
        return;
    }
    let holders = Holders::hold(slots());
    on_sigusr1(section_in_handler_noting_the_mask);
    HELD_SLOT.store(1, SeqCst);
    set_fallback_window_hook(Some(raise_in_window));
    let (slot, masked) = with_slot(0, |slot| (slot, blocked(libc::SIGUSR1)));
    set_fallback_window_hook(None);
    assert!(WINDOW_RAISED.load(SeqCst), "the hook ran in the window");
    assert_eq!(
        HANDLER_SLOT.load(SeqCst),
        0,
        "the handler ran its section on the slot its thread had just taken"
    );
    assert!(
        HANDLER_SAW_BLOCKED.load(SeqCst),
        "the borrowed slot is held with signals blocked"
    );
    assert_eq!(
        (slot, masked),
        (0, true),
        "every other slot held with signals deliverable: the thread's own hold blocks them"
    );
    drop(holders);
}

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn counting_section_in_handler(_: libc::c_int) {
    with_slot(0, |_| HANDLED.fetch_add(1, SeqCst));
}

/// One thread per slot, each holding its slot while every other one is held, then signalling
/// itself: each handler runs a section, which must find a slot its thread does not hold. The
/// holds check the others before keeping signals deliverable, so at least one of them blocks
/// them; its handler runs after its unlock, and that slot serves the others' handlers in turn.
/// Were every hold kept with signals deliverable, every handler would wait for a slot forever
/// (the child is killed).
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
    let n = slots();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let guard = lock_slot_exact(i).expect("slot");
                barrier.wait();
                // SAFETY: signals this thread (handled now, or at the unlock if blocked).
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

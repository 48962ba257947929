//! The fallback's signal masking, and `assume_no_sections_in_signal_handlers`: by default a
//! thread holds a slot lock with asynchronous signals blocked; after the promise it does not; a
//! handler that breaks the promise and waits in vain for a slot aborts the process with a
//! message (run in child processes: the promise is process-wide, and the last case aborts).

use rseq_rt::fallback::{
    assume_no_sections_in_signal_handlers, lock_slot_exact, signals_unblocked, slots, with_slot,
};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "RSEQ_RT_FALLBACK_SIGNALS_CHILD";

/// Whether `sig` is blocked on the calling thread now.
fn blocked(sig: libc::c_int) -> bool {
    // SAFETY: queries the mask into a zeroed set (SIG_BLOCK with no set changes nothing).
    unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        libc::sigismember(&cur, sig) == 1
    }
}

/// Runs this test binary's `test` in a child with `CHILD_ENV=case`; kills it (and fails) if it
/// is still running after a minute, so that a hang fails the test instead of hanging it.
fn child(test: &str, case: &str) -> std::process::Output {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the {case} child hung (killed after 60 s):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn slot_locks_block_signals_until_the_promise() {
    if std::env::var_os(CHILD_ENV).is_none() {
        let out = child("slot_locks_block_signals_until_the_promise", "mask");
        assert!(
            out.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(!signals_unblocked());
    assert!(
        !blocked(libc::SIGUSR1),
        "SIGUSR1 blocked before any section"
    );
    let inside = with_slot(0, |_| (blocked(libc::SIGUSR1), blocked(libc::SIGSEGV)));
    assert_eq!(
        inside,
        (true, false),
        "under a slot lock: SIGUSR1 blocked, SIGSEGV not"
    );
    assert!(
        !blocked(libc::SIGUSR1),
        "the mask is restored after the unlock"
    );
    assume_no_sections_in_signal_handlers();
    assert!(signals_unblocked());
    let inside = with_slot(0, |_| blocked(libc::SIGUSR1));
    assert!(
        !inside,
        "after the promise a slot lock leaves the mask alone"
    );
}

static HANDLER_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
static HELD_SLOT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn section_in_handler(_: libc::c_int) {
    let slot = with_slot(HELD_SLOT.load(SeqCst), |slot| slot);
    HANDLER_SLOT.store(slot, SeqCst);
}

/// Holds slot `held` on this thread and raises SIGUSR1, whose handler runs a section.
fn interrupt_own_section(held: usize) {
    HELD_SLOT.store(held, SeqCst);
    // SAFETY: installs a handler that only takes a slot lock and stores an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = section_in_handler as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
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
            let out = child(
                "a_handler_after_the_promise_takes_a_free_slot_or_aborts_instead_of_hanging",
                "free",
            );
            assert!(
                out.status.success(),
                "the free-slot case failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
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

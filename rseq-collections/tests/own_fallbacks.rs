//! The collections' own fallbacks (`fallback = path`) without rseq: `PerCpuCounter::add`
//! (`add_locked`) and `PerCpuBuffer`'s push and pop (`push_locked`, `pop_locked`). One test
//! per hazard their module documentation names, each made certain with the test hook that
//! pauses an operation inside its locked region, between reading what it changes and writing
//! it back. Each runs in a child with `RSEQ_DISABLE=1` (the fallback), killed if it hangs.

use rseq_collections::__test_hooks::{set_locked_hook, Locked};
use rseq_collections::buffer::PerCpuBuffer;
use rseq_collections::counter::PerCpuCounter;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

const HANG: Duration = Duration::from_secs(60);
/// How long a call that must wait is watched before it is released.
const WATCH: Duration = Duration::from_millis(100);

/// Marks the child process a test runs in (`RSEQ_DISABLE` alone cannot: set for the whole
/// run, it would have every test run in one process, sharing the hook and the statics).
const CHILD_ENV: &str = "RSEQ_OWN_FALLBACKS_CHILD";

/// In the parent: runs `test` in a child without rseq and checks that it passed. In the child:
/// returns true, and the test runs.
fn in_fallback_child(test: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        assert!(!rseq::mode().is_rseq(), "RSEQ_DISABLE=1 runs the fallback");
        return true;
    }
    let out = rseq_rt::test_support::run_test_in_child_with(
        test,
        &[("RSEQ_DISABLE", "1"), (CHILD_ENV, "fallback")],
        HANG,
    );
    assert!(
        out.status.success(),
        "the fallback child failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Adds that the hook pauses (the first `PAUSE` to arrive), how many arrived, and the release.
static PAUSE: AtomicUsize = AtomicUsize::new(0);
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
static RELEASE: AtomicBool = AtomicBool::new(false);

fn pause_the_first_adds(at: Locked) {
    if matches!(at, Locked::CounterAdd | Locked::BufferPush)
        && ARRIVED.fetch_add(1, SeqCst) < PAUSE.load(SeqCst)
    {
        while !RELEASE.load(SeqCst) {
            std::thread::yield_now();
        }
    }
}

fn wait_for_arrivals(n: usize) {
    while ARRIVED.load(SeqCst) < n {
        std::thread::yield_now();
    }
}

/// Pauses `operation` (on a thread of its own) inside its locked region, then runs `waiter` on
/// another thread, which must not finish (`what` otherwise) until the operation is released;
/// returns the waiter's result.
fn waits_for_a_paused_operation(
    operation: impl FnOnce() + Send,
    waiter: impl FnOnce() -> usize + Send,
    what: &str,
) -> usize {
    PAUSE.store(1, SeqCst);
    set_locked_hook(Some(pause_the_first_adds));
    let result = AtomicUsize::new(usize::MAX);
    std::thread::scope(|s| {
        s.spawn(operation);
        wait_for_arrivals(1);
        let waiting = s.spawn(|| result.store(waiter(), SeqCst));
        std::thread::sleep(WATCH);
        assert_eq!(result.load(SeqCst), usize::MAX, "{what}");
        RELEASE.store(true, SeqCst);
        waiting.join().unwrap();
    });
    set_locked_hook(None);
    result.load(SeqCst)
}

/// Every slot is held by a paused add: another add must wait, then count. Without the slot
/// lock it would finish at once, and the paused adds would write back stale counts over it.
#[test]
fn an_add_waits_while_every_slot_is_held() {
    if !in_fallback_child("an_add_waits_while_every_slot_is_held") {
        return;
    }
    let counter = PerCpuCounter::new();
    let slots = rseq::possible_cpus();
    PAUSE.store(slots, SeqCst);
    set_locked_hook(Some(pause_the_first_adds));
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..slots {
            s.spawn(|| counter.add(1));
        }
        wait_for_arrivals(slots);
        let late = s.spawn(|| {
            counter.add(1);
            done.store(true, SeqCst);
        });
        std::thread::sleep(WATCH);
        assert!(
            !done.load(SeqCst),
            "an add finished while all {slots} slots were held"
        );
        RELEASE.store(true, SeqCst);
        late.join().unwrap();
    });
    set_locked_hook(None);
    assert_eq!(counter.sum(), slots + 1);
    assert_eq!(counter.take(), slots + 1);
}

/// An add paused after reading the old bank: `take` (flip, fence, drain) must wait for it, and
/// return it. Without the wait it would drain first and return 0, and the add would land in a
/// bank no take drains until the one after next.
#[test]
fn take_waits_for_an_add_that_read_the_old_bank() {
    if !in_fallback_child("take_waits_for_an_add_that_read_the_old_bank") {
        return;
    }
    let counter = PerCpuCounter::new();
    let taken = waits_for_a_paused_operation(
        || counter.add(5),
        || counter.take(),
        "take returned while an add that read the old bank had not written it",
    );
    assert_eq!(taken, 5, "the take returns the add it waited for");
    assert_eq!(counter.sum(), 0);
}

static COUNTER: AtomicPtr<PerCpuCounter> = AtomicPtr::new(std::ptr::null_mut());

fn counter() -> &'static PerCpuCounter {
    // SAFETY: set (to a leaked counter) before any handler or hook can run.
    unsafe { &*COUNTER.load(SeqCst) }
}

extern "C" fn add_10(_: libc::c_int) {
    counter().add(10);
}

extern "C" fn add_100(_: libc::c_int) {
    counter().add(100);
}

/// On this thread's first locked add, `SIGUSR1` (whose handler adds 10); inside that handler's
/// nested add, `SIGUSR2` (whose handler adds 100). Paused adds on other threads hold every
/// other slot.
fn signal_inside(at: Locked) {
    let nested = at == Locked::CounterNested;
    static RAISED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
    if ARRIVED.load(SeqCst) >= PAUSE.load(SeqCst) && !RAISED[nested as usize].swap(true, SeqCst) {
        let sig = if nested { libc::SIGUSR2 } else { libc::SIGUSR1 };
        // SAFETY: raising a signal whose handler is installed.
        assert_eq!(unsafe { libc::raise(sig) }, 0);
        return;
    }
    pause_the_first_adds(at)
}

/// A signal handler adds while its thread holds a slot lock and every other slot is held: it
/// must neither wait for its own thread's lock nor for the others (its nested path), and a
/// signal inside that nested path must wait until it is done (signals blocked there). Without
/// either protection the child hangs.
#[test]
fn signal_handlers_add_inside_an_add() {
    if !in_fallback_child("signal_handlers_add_inside_an_add") {
        return;
    }
    COUNTER.store(Box::into_raw(Box::new(PerCpuCounter::new())), SeqCst);
    let handlers: [(libc::c_int, extern "C" fn(libc::c_int)); 2] =
        [(libc::SIGUSR1, add_10), (libc::SIGUSR2, add_100)];
    for (sig, handler) in handlers {
        // SAFETY: installs a handler that only adds to the counter (async-signal-safe without
        // rseq: locks of its own that no handler waits for, and `pthread_sigmask`).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as usize;
            assert_eq!(libc::sigaction(sig, &action, std::ptr::null_mut()), 0);
        }
    }
    let others = rseq::possible_cpus() - 1;
    PAUSE.store(others, SeqCst);
    set_locked_hook(Some(signal_inside));
    std::thread::scope(|s| {
        for _ in 0..others {
            s.spawn(|| counter().add(1));
        }
        wait_for_arrivals(others);
        counter().add(1);
        RELEASE.store(true, SeqCst);
    });
    set_locked_hook(None);
    let total = others + 1 + 10 + 100;
    assert_eq!(counter().sum(), total);
    assert_eq!(counter().take(), total);
    assert_eq!(counter().sum(), 0);
}

/// Every slot is held by a push paused after storing its item, before growing `len`: another
/// push must fail at once (the buffer is "full" for it), neither waiting (a signal handler in a
/// push could never get its own thread's slot) nor writing a held slot (it would store its
/// item at the same index, and the paused push would then lose it).
#[test]
fn a_push_fails_at_once_while_every_slot_is_held() {
    if !in_fallback_child("a_push_fails_at_once_while_every_slot_is_held") {
        return;
    }
    let buffer: PerCpuBuffer<4> = PerCpuBuffer::new();
    let slots = rseq::possible_cpus();
    let items: Vec<usize> = (0..=slots).map(|i| 0x1000 + i * 8).collect();
    let item = |i: usize| NonNull::new(items[i] as *mut u8).unwrap();
    PAUSE.store(slots, SeqCst);
    set_locked_hook(Some(pause_the_first_adds));
    std::thread::scope(|s| {
        for i in 0..slots {
            let buffer = &buffer;
            s.spawn(move || buffer.push(item(i)).unwrap());
        }
        wait_for_arrivals(slots);
        assert_eq!(
            buffer.push(item(slots)),
            Err(item(slots)),
            "a push succeeded while all {slots} slots were held"
        );
        RELEASE.store(true, SeqCst);
    });
    set_locked_hook(None);
    let mut drained = Vec::new();
    assert_eq!(
        buffer.drain_all(|p| drained.push(p.as_ptr() as usize)),
        Ok(slots)
    );
    drained.sort_unstable();
    assert_eq!(drained, items[..slots], "each paused push kept its item");
}

/// A push paused inside its locked region (its slot still open): `drain_cpu` must wait for
/// it, then collect its item. Without the wait the drain would find the slot empty, and the
/// push would then grow `len` under the drainer's feet.
#[test]
fn drain_waits_for_a_push_in_flight() {
    if !in_fallback_child("drain_waits_for_a_push_in_flight") {
        return;
    }
    let buffer: PerCpuBuffer<4> = PerCpuBuffer::new();
    let item = || NonNull::new(0x2000 as *mut u8).unwrap();
    let drained = waits_for_a_paused_operation(
        || buffer.push(item()).unwrap(),
        || buffer.drain_all(|p| assert_eq!(p, item())).unwrap(),
        "the drain finished while a push held a slot",
    );
    assert_eq!(drained, 1, "the drain collects the push it waited for");
    assert!(buffer.is_empty());
    assert_eq!(buffer.pop(), None);
}

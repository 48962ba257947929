//! Conservation under contention for every structure, in every mode.
//!
//! Each test body runs with more threads than the machine has CPUs. The test runs it in this
//! process (glibc's registration, unless the environment says otherwise), and re-executes the
//! test binary for the other modes: `GLIBC_TUNABLES=glibc.pthread.rseq=0` (the library
//! registers its own areas), `RSEQ_DISABLE=1` (the lock-based fallback), and this process's
//! mode with `membarrier(2)` denied by a seccomp filter (as on Linux 4.18–5.9: the fences move
//! the thread to every CPU instead). Every process checks
//! that it runs in the mode the facts of its environment imply (see `modes`); a child that
//! would only repeat this process's mode is not started, and the test log says why (musl has no
//! glibc registration to turn off; under qemu-user, which has no rseq, both rseq modes are the
//! fallback).

mod modes;

use rseq_collections::buffer::PerCpuBuffer;
use rseq_collections::counter::PerCpuCounter;
use rseq_collections::pool::PerCpuPool;
use rseq_collections::stack::{Link, Linked, PerCpuStack};
use rseq_rt::test_support::{spawn_watched, test_child, CHILD_DEADLINE};
use rseq_rt::{FallbackReason, Mode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Worker threads per test: more than the 2 CPUs of a small machine.
const THREADS: usize = 8;

/// Set in a child run to the mode it checks (`own` or `fallback`); a child does not recurse.
const CHILD_ENV: &str = "RSEQ_COLLECTIONS_TEST_CHILD";

/// Asserts that this process runs in the mode its environment implies, and returns it.
fn check_mode(who: &str) -> Mode {
    let expected = modes::expected_mode();
    assert_eq!(
        rseq_rt::mode(),
        expected.mode,
        "mode of {who} (expected because {})",
        expected.because
    );
    expected.mode
}

/// Runs `body` here and, unless this is a child, in a child process per other mode.
fn in_every_mode(name: &str, body: fn()) {
    if let Ok(child) = std::env::var(CHILD_ENV) {
        if child.starts_with("no-membarrier") {
            // Before anything decides the mode: as on Linux 4.18–5.9, rseq without membarrier.
            rseq_rt::test_support::deny_syscall_with(libc::SYS_membarrier, libc::ENOSYS)
                .expect("install the seccomp filter that denies membarrier");
        }
        let mode = check_mode(&format!("the `{child}` child"));
        if child.starts_with("no-membarrier") {
            assert_eq!(
                rseq_rt::fence_mechanism(),
                rseq_rt::FenceMechanism::Migration,
                "membarrier denied: fences move the thread between CPUs"
            );
        }
        let started = Instant::now();
        body();
        eprintln!(
            "summary {name}: {mode:?} in {:?}, {} aborts",
            started.elapsed(),
            rseq_rt::stats().aborts
        );
        return;
    }
    let here = check_mode("this process");
    // The children's modes (without RSEQ_DISABLE from this environment): skip the ones this
    // process covers already.
    let own = modes::own_registration();
    let mut children = Vec::new();
    const OWN: (&str, &str) = ("GLIBC_TUNABLES", "glibc.pthread.rseq=0");
    const DENY: (&str, &str) = ("RSEQ_COLLECTIONS_TEST_DENY", "membarrier");
    for (child, env, mode) in [
        ("own", &[OWN][..], own.mode),
        (
            "fallback",
            &[("RSEQ_DISABLE", "1")][..],
            Mode::Fallback(FallbackReason::Disabled),
        ),
        // Both rseq modes with membarrier denied by a seccomp filter: the fences must work
        // without it (only where sections run on rseq: the fallback does not use it, and
        // qemu-user cannot install filters for its guest).
        ("no-membarrier", &[DENY][..], here),
        ("no-membarrier-own", &[OWN, DENY][..], own.mode),
    ] {
        if child.starts_with("no-membarrier") {
            if !mode.is_rseq() {
                modes::not_applicable(format_args!(
                    "the `{child}` child: it would run in {mode:?}, which fences without membarrier"
                ));
                continue;
            }
            if child == "no-membarrier-own" && own.mode == here {
                modes::not_applicable(format_args!(
                    "the `{child}` child: the `no-membarrier` child runs in {here:?} already"
                ));
                continue;
            }
        } else if mode == here {
            let because = if child == "own" {
                own.because
            } else {
                "RSEQ_DISABLE is set"
            };
            modes::not_applicable(format_args!(
                "the `{child}` child: it would run in {mode:?} ({because}), as this process does"
            ));
            continue;
        }
        // Start the children first: they run while this process runs the body.
        let started = Instant::now();
        let mut cmd = test_child(name);
        cmd.env_remove("RSEQ_DISABLE")
            .env_remove("GLIBC_TUNABLES")
            .envs(env.iter().copied())
            .env(CHILD_ENV, child);
        let proc = spawn_watched(cmd);
        children.push((child, started, proc));
    }
    let started = Instant::now();
    body();
    eprintln!(
        "summary {name}: {here:?} in {:?}, {} aborts (process-wide)",
        started.elapsed(),
        rseq_rt::stats().aborts
    );
    for (child, started, proc) in children {
        let out = proc.output(CHILD_DEADLINE).unwrap_or_else(|_| {
            panic!("the `{child}` child of {name} still ran after {CHILD_DEADLINE:?}: killed")
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the `{child}` child of {name} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        for line in stderr.lines().filter(|l| l.starts_with("summary ")) {
            eprintln!("  [{child} child] {line}");
        }
        eprintln!("{name}: `{child}` child took {:?}", started.elapsed());
    }
}

/// How long each worker of a test body runs, at least.
const RUN_FOR: Duration = Duration::from_millis(400);
/// Operations of each worker, at least.
const MIN_ITERS: usize = 2_000;
/// Rounds of the background loop (drains, takes) that run while the workers run, at least:
/// on a loaded machine the background thread may get little CPU time.
const MIN_ROUNDS: usize = 200;

/// Items (nodes, objects, counts) the background rounds must have found in the structure,
/// at least, unless that takes longer than `GIVE_UP` (the test then fails).
const MIN_FOUND: usize = 20;
const GIVE_UP: Duration = Duration::from_secs(10);

/// When workers stop: past the deadline, after `MIN_ITERS` operations, `MIN_ROUNDS`
/// background rounds and `MIN_FOUND` items found by them.
struct Until {
    started: Instant,
    rounds: AtomicUsize,
    found: AtomicUsize,
    /// Set if the background loop panics: the workers stop at once.
    stop: AtomicBool,
}

impl Until {
    /// Whether a worker that has done `i` operations should do more.
    fn keep_going(&self, i: usize) -> bool {
        if self.stop.load(Relaxed) {
            return false;
        }
        if i < MIN_ITERS || !i.is_multiple_of(128) || self.rounds.load(Relaxed) < MIN_ROUNDS {
            return true;
        }
        let elapsed = self.started.elapsed();
        elapsed < RUN_FOR || (self.found.load(Relaxed) < MIN_FOUND && elapsed < GIVE_UP)
    }
}

/// Paces a background loop: busy for a few microseconds (sleeping would lose the CPU to the
/// workers for milliseconds; yielding, too).
fn pace() {
    let until = Instant::now() + Duration::from_micros(20);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// A small per-thread pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn new(seed: usize) -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15 ^ (seed as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs `work(t, until)` on `THREADS` threads and `background()` on this one until they are
/// done; `background` returns how many items it found in the structure.
fn run<R: Send>(
    work: impl Fn(usize, &Until) -> R + Sync,
    mut background: impl FnMut() -> usize,
) -> Vec<R> {
    let until = Until {
        started: Instant::now(),
        rounds: AtomicUsize::new(0),
        found: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    /// Stops the workers when dropped by a panic.
    struct StopOnPanic<'a>(&'a AtomicBool);
    impl Drop for StopOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, SeqCst);
            }
        }
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (work, until) = (&work, &until);
                s.spawn(move || work(t, until))
            })
            .collect();
        {
            // A panicking background stops the workers (the scope waits for them).
            let _stop = StopOnPanic(&until.stop);
            while handles.iter().any(|h| !h.is_finished()) {
                until.found.fetch_add(background(), Relaxed);
                until.rounds.fetch_add(1, Relaxed);
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Counter

fn counter_body() {
    let counter = PerCpuCounter::new();
    let mut taken = 0usize;
    let mut takes = 0usize;
    let added: Vec<(usize, usize)> = run(
        |t, until| {
            let mut mine = 0usize;
            let mut i = 0;
            while until.keep_going(i) {
                i += 1;
                let n = (i + t) % 7 + 1;
                if i % 5 == 4 {
                    counter.sub(n);
                    mine = mine.wrapping_sub(n);
                } else {
                    counter.add(n);
                    mine = mine.wrapping_add(n);
                }
            }
            (mine, i)
        },
        || {
            let got = counter.take();
            taken = taken.wrapping_add(got);
            takes += 1;
            let _ = counter.sum();
            pace();
            usize::from(got != 0)
        },
    );
    let total = added.iter().fold(0usize, |a, b| a.wrapping_add(b.0));
    let ops: usize = added.iter().map(|a| a.1).sum();
    eprintln!("summary counter: {ops} adds, {takes} concurrent takes");
    let left = counter.sum();
    assert_eq!(
        taken.wrapping_add(left),
        total,
        "takes ({takes} of them) + what is left must equal what was added"
    );
    assert!(takes > 1, "takes ran concurrently with the writers");
    // Quiescent: sum and take are exact.
    assert_eq!(counter.take(), left);
    assert_eq!(counter.sum(), 0);
    counter.add(3);
    assert_eq!(counter.per_cpu().iter().sum::<usize>(), 3);
    assert_eq!(counter.try_take(), Ok(3));
}

#[test]
fn counter_take_is_exact() {
    in_every_mode("counter_take_is_exact", counter_body);
}

// ---------------------------------------------------------------------------------------------
// Stack

#[repr(C)]
struct TestNode {
    id: usize,
    link: Link,
    /// Set by whoever holds the node (a popper or the drainer), cleared before it is pushed.
    held: AtomicBool,
}

// SAFETY: the offset of `TestNode::link`, a `Link`.
unsafe impl Linked for TestNode {
    const LINK_OFFSET: usize = core::mem::offset_of!(TestNode, link);
}

fn stack_body() {
    const PER_THREAD: usize = 8;
    let n = THREADS * PER_THREAD;
    let nodes: Box<[TestNode]> = (0..n)
        .map(|id| TestNode {
            id,
            link: Link::new(),
            held: AtomicBool::new(true),
        })
        .collect();
    let ptr = |i: usize| NonNull::from(&nodes[i]);
    let index_of = |p: NonNull<TestNode>| {
        let i = (p.as_ptr() as usize).wrapping_sub(nodes.as_ptr() as usize) / size_of::<TestNode>();
        assert!(i < n && ptr(i) == p, "{p:?} is no node");
        i
    };
    let mut stack: PerCpuStack<TestNode> = PerCpuStack::new();
    let (mut cpu, mut drains, mut drained) = (0, 0, 0);
    let hands: Vec<(Vec<usize>, usize)> = run(
        |t, until| {
            let mut rng = Rng::new(t);
            let mut hand: Vec<usize> = (0..PER_THREAD).map(|i| t * PER_THREAD + i).collect();
            let mut ops = 0;
            while until.keep_going(ops) {
                ops += 1;
                if !hand.is_empty() && rng.next() & 1 == 0 {
                    let i = hand.pop().unwrap();
                    assert!(
                        nodes[i].held.swap(false, SeqCst),
                        "node {i} in a hand not held"
                    );
                    // SAFETY: nodes outlive the stack's use; this one is ours and on no list.
                    unsafe { stack.push(ptr(i)) };
                } else if let Some(p) = stack.pop() {
                    let i = index_of(p);
                    assert_eq!(nodes[i].id, i);
                    assert!(
                        !nodes[i].held.swap(true, SeqCst),
                        "node {i} popped while held elsewhere"
                    );
                    hand.push(i);
                }
            }
            (hand, ops)
        },
        || {
            // Drain a CPU's list while the workers run, check, and push the nodes back.
            cpu = (cpu + 1) % rseq_rt::possible_cpus();
            let mine: Vec<_> = stack.pop_all_cpu(cpu).expect("pop_all_cpu").collect();
            for &p in &mine {
                let i = index_of(p);
                assert!(
                    !nodes[i].held.swap(true, SeqCst),
                    "node {i} drained while held elsewhere"
                );
            }
            drains += 1;
            drained += mine.len();
            let found = mine.len();
            for p in mine {
                nodes[index_of(p)].held.store(false, SeqCst);
                // SAFETY: drained, so ours; nodes outlive the stack's use.
                unsafe { stack.push(p) };
            }
            pace();
            found
        },
    );
    let ops: usize = hands.iter().map(|h| h.1).sum();
    eprintln!("summary stack: {ops} push+pop rounds, {drained} nodes found by {drains} drains");
    let mut seen = vec![0u32; n];
    for i in hands.into_iter().flat_map(|h| h.0) {
        assert!(nodes[i].held.load(SeqCst), "node {i} in a hand is not held");
        seen[i] += 1;
    }
    for p in stack.take_all() {
        let i = index_of(p);
        assert!(!nodes[i].held.load(SeqCst), "node {i} on a list is held");
        seen[i] += 1;
    }
    assert!(stack.is_empty());
    for (i, &count) in seen.iter().enumerate() {
        assert_eq!(count, 1, "node {i} found {count} times");
    }
    assert!(drained > 0, "the drains found nodes");
}

#[test]
fn stack_keeps_every_node_once() {
    in_every_mode("stack_keeps_every_node_once", stack_body);
}

// ---------------------------------------------------------------------------------------------
// Buffer

const BUF_CAP: usize = 8;

fn buffer_body() {
    const PER_THREAD: usize = 12;
    let n = THREADS * PER_THREAD;
    // Item `i` is the address of `backing[i]`; `held[i]`: in some hand.
    let backing = vec![0u8; n].into_boxed_slice();
    let held: Box<[AtomicBool]> = (0..n).map(|_| AtomicBool::new(true)).collect();
    let item = |i: usize| NonNull::from(&backing[i]);
    let index_of = |p: NonNull<u8>| {
        let i = (p.as_ptr() as usize).wrapping_sub(backing.as_ptr() as usize);
        assert!(i < n, "{p:?} is no item");
        i
    };
    let mut buf: PerCpuBuffer<BUF_CAP> = PerCpuBuffer::new();
    let cpus = rseq_rt::possible_cpus();
    let (mut cpu, mut drains, mut drained) = (0, 0, 0);
    let mut drainer_hand: Vec<usize> = Vec::new();
    let hands: Vec<(Vec<usize>, usize)> = run(
        |t, until| {
            let mut rng = Rng::new(t);
            let mut hand: Vec<usize> = (0..PER_THREAD).map(|i| t * PER_THREAD + i).collect();
            let mut ops = 0;
            while until.keep_going(ops) {
                ops += 1;
                if !hand.is_empty() && rng.next() & 1 == 0 {
                    let i = hand.pop().unwrap();
                    held[i].store(false, SeqCst);
                    if buf.push(item(i)).is_err() {
                        assert!(
                            !held[i].swap(true, SeqCst),
                            "item {i} taken after a failed push"
                        );
                        hand.push(i);
                    }
                } else if let Some(p) = buf.pop() {
                    let i = index_of(p);
                    assert!(!held[i].swap(true, SeqCst), "item {i} popped while held");
                    hand.push(i);
                }
            }
            (hand, ops)
        },
        || {
            // Bounds; a drain of one CPU's buffer; the items pushed back (where there is room).
            for c in 0..cpus {
                let len = buf.len_on(c);
                assert!(len <= BUF_CAP, "buffer {c} holds {len} > {BUF_CAP} items");
            }
            cpu = (cpu + 1) % cpus;
            let found = buf
                .drain_cpu(cpu, |p| {
                    let i = index_of(p);
                    assert!(!held[i].swap(true, SeqCst), "item {i} drained while held");
                    drainer_hand.push(i);
                })
                .expect("drain_cpu");
            drained += found;
            drains += 1;
            while let Some(i) = drainer_hand.pop() {
                held[i].store(false, SeqCst);
                if buf.push(item(i)).is_err() {
                    assert!(
                        !held[i].swap(true, SeqCst),
                        "item {i} taken after a failed push"
                    );
                    drainer_hand.push(i);
                    break;
                }
            }
            pace();
            found
        },
    );
    let ops: usize = hands.iter().map(|h| h.1).sum();
    eprintln!("summary buffer: {ops} operations, {drained} items found by {drains} drains");
    let mut all: Vec<usize> = hands.into_iter().flat_map(|h| h.0).collect();
    all.append(&mut drainer_hand);
    for &i in &all {
        assert!(held[i].load(SeqCst), "item {i} in a hand is not held");
    }
    for c in 0..cpus {
        assert!(buf.len_on(c) <= BUF_CAP);
    }
    buf.take_all(|p| {
        let i = index_of(p);
        assert!(!held[i].load(SeqCst), "item {i} in a buffer is held");
        all.push(i);
    });
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every item exactly once");
    assert!(buf.is_empty());
    assert!(drained > 0, "the drains found items");
}

#[test]
fn buffer_keeps_every_item_once_within_bounds() {
    in_every_mode("buffer_keeps_every_item_once_within_bounds", buffer_body);
}

#[test]
fn buffer_reopens_after_a_panicking_drain() {
    let buf: PerCpuBuffer<4> = PerCpuBuffer::new();
    let mut x = [0u8; 4];
    for b in &mut x {
        let _ = buf.push(NonNull::from(b));
    }
    let cpus = rseq_rt::possible_cpus();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for cpu in 0..cpus {
            buf.drain_cpu(cpu, |_| panic!("drain callback")).unwrap();
        }
    }));
    assert!(panicked.is_err());
    // Every slot is open again: a push succeeds (the current CPU's buffer was emptied or has
    // room unless it was not reached; drain it first to be sure).
    buf.drain_all(|_| {}).unwrap();
    assert!(buf.push(NonNull::from(&mut x[0])).is_ok());
    assert_eq!(buf.drain_all(|_| {}), Ok(1));
}

// ---------------------------------------------------------------------------------------------
// Pool

/// The pool's object type: its layout (alignment 256) is used by nothing else in this binary,
/// so the counting allocator below counts exactly the pool's objects.
#[repr(C, align(256))]
#[derive(Default)]
struct PoolObj {
    in_use: AtomicBool,
    /// Times handed out: the object is reused as it is.
    uses: AtomicUsize,
}

struct Counting;

static POOL_OBJ_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static POOL_OBJ_FREES: AtomicUsize = AtomicUsize::new(0);

fn is_pool_obj(layout: Layout) -> bool {
    layout == Layout::new::<PoolObj>()
}

// SAFETY: forwards to `System`, counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_pool_obj(layout) {
            POOL_OBJ_ALLOCS.fetch_add(1, SeqCst);
        }
        // SAFETY: the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_pool_obj(layout) {
            POOL_OBJ_FREES.fetch_add(1, SeqCst);
        }
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_pool_objs() -> usize {
    POOL_OBJ_ALLOCS.load(SeqCst) - POOL_OBJ_FREES.load(SeqCst)
}

fn pool_body(before: usize) {
    /// Objects a worker holds at most.
    const BURST: usize = 24;
    let pool: PerCpuPool<PoolObj, 16> = PerCpuPool::new();
    let cpus = rseq_rt::possible_cpus();
    let mut cpu = 0;
    let mut rounds = 0u64;
    let (mut drained, mut released) = (0usize, 0usize);
    let ops: Vec<usize> = run(
        |t, until| {
            let mut rng = Rng::new(t);
            let mut hand: Vec<NonNull<PoolObj>> = Vec::with_capacity(BURST);
            let mut ops = 0;
            while until.keep_going(ops) {
                // A burst of allocations, then the objects back in a random order.
                for _ in 0..=rng.below(BURST) {
                    let p = pool.alloc();
                    // SAFETY: handed out to us: a valid object nobody else uses.
                    let obj = unsafe { p.as_ref() };
                    assert!(!obj.in_use.swap(true, SeqCst), "object handed out twice");
                    obj.uses.fetch_add(1, Relaxed);
                    hand.push(p);
                    ops += 1;
                }
                while !hand.is_empty() {
                    let p = hand.swap_remove(rng.below(hand.len()));
                    // SAFETY: ours until freed.
                    let obj = unsafe { p.as_ref() };
                    assert!(obj.in_use.swap(false, SeqCst), "freeing a free object");
                    // SAFETY: from `pool.alloc`, given back once.
                    unsafe { pool.free(p) };
                    ops += 1;
                }
                // The safe handle, too.
                let b = pool.get();
                assert!(!b.in_use.swap(true, SeqCst), "object handed out twice");
                b.in_use.store(false, SeqCst);
            }
            ops
        },
        || {
            cpu = (cpu + 1) % cpus;
            let found = pool.drain_cpu(cpu).expect("drain_cpu");
            drained += found;
            rounds += 1;
            if rounds.is_multiple_of(256) {
                released += pool.shrink().expect("shrink");
            }
            pace();
            found
        },
    );
    let stats = pool.stats();
    assert_eq!(stats.in_use(), 0, "{stats:?}");
    assert_eq!(
        stats.objects,
        stats.global + stats.cached,
        "every object is free: {stats:?}"
    );
    assert!(drained > 0, "the drains found objects");
    assert_eq!(
        live_pool_objs() - before,
        stats.objects,
        "the pool's count matches the allocator's"
    );
    // Quiescent: every cache can be moved to the global list, which then holds every object.
    let moved: usize = (0..cpus).map(|c| pool.drain_cpu(c).unwrap()).sum();
    assert_eq!(moved, stats.cached);
    let after = pool.stats();
    assert_eq!(
        (after.cached, after.global),
        (0, stats.objects),
        "{after:?}"
    );
    eprintln!(
        "summary pool: {} operations, {stats:?}, {drained} found by {rounds} drains, {released} released by shrink",
        ops.iter().sum::<usize>()
    );
    drop(pool);
}

#[test]
fn pool_never_hands_out_twice_and_loses_nothing() {
    in_every_mode("pool_never_hands_out_twice_and_loses_nothing", || {
        // Only this test makes `PoolObj`s (a child process runs this test alone; in the parent
        // other tests make none).
        let lock = POOL_TEST.lock().unwrap();
        let before = live_pool_objs();
        pool_body(before);
        assert_eq!(
            live_pool_objs(),
            before,
            "the pool's drop freed every object"
        );
        drop(lock);
    });
}

/// Serializes the tests that count `PoolObj` allocations.
static POOL_TEST: Mutex<()> = Mutex::new(());

#[test]
fn pool_counts_match_the_allocator() {
    let _lock = POOL_TEST.lock().unwrap();
    let before = live_pool_objs();
    let pool: PerCpuPool<PoolObj, 4> = PerCpuPool::new();
    let held: Vec<_> = (0..100).map(|_| pool.alloc()).collect();
    assert_eq!(live_pool_objs() - before, pool.stats().objects);
    assert!(pool.stats().objects >= 100);
    for p in held {
        // SAFETY: from `pool.alloc`, freed once.
        unsafe { pool.free(p) };
    }
    assert_eq!(pool.stats().in_use(), 0);
    let released = pool.shrink().unwrap();
    assert!(released >= 100);
    assert_eq!(pool.stats().objects, 0);
    assert_eq!(live_pool_objs(), before);
    // Objects are created again on demand and freed by the drop.
    let b = pool.get();
    assert_eq!(b.uses.load(Relaxed), 0);
    drop(b);
    drop(pool);
    assert_eq!(live_pool_objs(), before);
}

#[test]
fn pool_of_zero_sized_objects() {
    let pool: PerCpuPool<(), 4> = PerCpuPool::new();
    let held: Vec<_> = (0..10).map(|_| pool.get()).collect();
    assert_eq!(pool.stats().in_use(), 10);
    drop(held);
    assert_eq!(pool.stats().in_use(), 0);
    assert_eq!(pool.shrink().map(|n| n > 0), Ok(true));
}

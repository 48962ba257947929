//! A stress program for critical sections written with `#[rseq::critical_section]`: each of
//! librseq's operations, run from more threads than the machine has CPUs, with an exact check of
//! the end state. The integration tests run it in child processes, once per mode (glibc's
//! registration, the library's own, `RSEQ_DISABLE=1`).
//!
//! ```text
//! rseq-stress <op> [--threads N] [--iters N] [--index cpu_id|mm_cid] [--yield-every N] [--signals]
//! ops: counter counter-mm-cid cmpxchg given-cpu list buffer memcpy double-cmp deref-add
//! ```
//!
//! Prints `key=value` lines (`op`, `mode`, `ops`, `aborts`, …) and `result=ok`; exits 1 with a
//! message on any mismatch, 2 on bad usage.

use rseq::{critical_section, PerCpu};
use std::cell::Cell;
use std::process::exit;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Every section below counts its kernel aborts here.
static ABORTS: AtomicUsize = AtomicUsize::new(0);

/// Capacity of a per-CPU buffer (`buffer`).
const CAP: usize = 16;
/// Size of an item copied by `memcpy`.
const ITEM: usize = 64;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("rseq-stress check failed: {msg}");
    println!("result=fail");
    exit(1)
}

fn check(cond: bool, msg: impl FnOnce() -> String) {
    if !cond {
        fail(msg())
    }
}

/// A node of a per-CPU list (`list`).
#[repr(C)]
pub struct Node {
    next: AtomicPtr<Node>,
    /// The node's index: unique, so the end state can be checked node by node.
    value: usize,
    /// Set by the thread that popped it, cleared before it is pushed back: a node popped by two
    /// threads at once (a broken section) is caught at once.
    taken: AtomicBool,
}

/// A bounded per-CPU buffer of words (`buffer`).
#[repr(C)]
#[derive(Default)]
pub struct Buf {
    len: AtomicUsize,
    items: [AtomicUsize; CAP],
}

/// Two words compared together (`double-cmp`).
#[repr(C)]
#[derive(Default)]
pub struct Pair {
    a: AtomicUsize,
    b: AtomicUsize,
}

/// What a `deref-add` slot points at; the counter is not the first field, so the field offset
/// matters.
#[repr(C)]
pub struct Target {
    id: usize,
    count: AtomicU64,
}

type Heads = PerCpu<AtomicPtr<Node>>;

/// `(slots, expected a, expected b, new) -> Ok or the (a, b) seen`.
type DoubleCmpStore = fn(&PerCpu<Pair>, usize, usize, usize) -> Result<(), (usize, usize)>;

/// One set of sections, for one index mode.
struct Ops {
    counter_add: fn(&PerCpu<AtomicU64>, u64),
    cmpeq_store: fn(&PerCpu<AtomicUsize>, usize, usize) -> Result<(), usize>,
    list_push: unsafe fn(&Heads, *mut Node),
    list_pop: unsafe fn(&Heads) -> Option<*mut Node>,
    buffer_push: unsafe fn(&PerCpu<Buf>, usize) -> bool,
    buffer_pop: unsafe fn(&PerCpu<Buf>) -> Option<usize>,
    publish: unsafe fn(&PerCpu<AtomicUsize>, *mut u8, *const u8, usize) -> bool,
    take: fn(&PerCpu<AtomicUsize>) -> Option<usize>,
    double_cmp_store_a: DoubleCmpStore,
    double_cmp_store_b: DoubleCmpStore,
    deref_add: unsafe fn(&PerCpu<AtomicPtr<Target>>, u64),
}

/// The same sections for `index = cpu_id` and `index = mm_cid`.
macro_rules! sections {
    ($index:ident) => {
        use super::*;

        /// add: `*v += n`.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn counter_add(counters: &PerCpu<AtomicU64>, n: u64) {
            commit::add(counters[cpu], n);
        }

        /// cmpeq-store: `if *v == expect { *v = new }`, else the value seen.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn cmpeq_store(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> Result<(), usize> {
            let seen = load(v[cpu]);
            if seen != expect {
                fail(Err(seen))
            }
            commit::store(v[cpu], new);
            Ok(())
        }

        /// push: `node->next = head` (speculative), then `head = node`.
        ///
        /// # Safety
        /// `node` is valid and on no list.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn list_push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
            let head = load(heads[cpu]);
            store((*node).next, head);
            commit::store_release(heads[cpu], node);
        }

        /// pop: `h = head; if h == null fail; head = h->next`.
        ///
        /// # Safety
        /// Every node on the lists is valid.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn list_pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
            let head: *mut Node = load(heads[cpu]);
            if head == null {
                fail(None)
            }
            let next = load((*head).next);
            commit::store(heads[cpu], next);
            Some(head)
        }

        /// try-store: `items[len] = item` (speculative), then `len += 1`, unless full.
        ///
        /// # Safety
        /// None beyond the bound checked in the section.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn buffer_push(bufs: &PerCpu<Buf>, item: usize) -> bool {
            let len = load(bufs[cpu].len);
            if len >= { CAP } {
                fail(false)
            }
            store(bufs[cpu].items[len], item);
            let grown = add(len, 1);
            commit::store_release(bufs[cpu].len, grown);
            true
        }

        /// pop: `len -= 1; items[len]`, unless empty.
        ///
        /// # Safety
        /// `len` never exceeds the capacity (only `buffer_push` grows it).
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn buffer_pop(bufs: &PerCpu<Buf>) -> Option<usize> {
            let len = load(bufs[cpu].len);
            if len == 0 {
                fail(None)
            }
            let last = add(len, { usize::MAX });
            let item = load(bufs[cpu].items[last]);
            commit::store(bufs[cpu].len, last);
            Some(item)
        }

        /// memcpy: copy `len` bytes into `dst`, then publish `dst` if the slot is empty.
        ///
        /// # Safety
        /// `src`/`dst` are valid for `len` bytes; `dst` is not visible to other threads.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn publish(
            slots: &PerCpu<AtomicUsize>,
            dst: *mut u8,
            src: *const u8,
            len: usize,
        ) -> bool {
            let current = load(slots[cpu]);
            if current != 0 {
                fail(false)
            }
            memcpy(dst, src, len);
            commit::store_release(slots[cpu], dst);
            true
        }

        /// Takes the published pointer: cmpeq-store of the value seen to 0.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn take(slots: &PerCpu<AtomicUsize>) -> Option<usize> {
            let p = load(slots[cpu]);
            if p == 0 {
                fail(None)
            }
            commit::store(slots[cpu], 0);
            Some(p)
        }

        /// double compare: `a == ea && b == eb` then `a = new`, else both values seen.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn double_cmp_store_a(
            p: &PerCpu<Pair>,
            ea: usize,
            eb: usize,
            new: usize,
        ) -> Result<(), (usize, usize)> {
            let a = load(p[cpu].a);
            let b = load(p[cpu].b);
            if a != ea {
                fail(Err((a, b)))
            }
            if b != eb {
                fail(Err((a, b)))
            }
            commit::store(p[cpu].a, new);
            Ok(())
        }

        /// double compare: `a == ea && b == eb` then `b = new`, else both values seen.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn double_cmp_store_b(
            p: &PerCpu<Pair>,
            ea: usize,
            eb: usize,
            new: usize,
        ) -> Result<(), (usize, usize)> {
            let a = load(p[cpu].a);
            let b = load(p[cpu].b);
            if a != ea {
                fail(Err((a, b)))
            }
            if b != eb {
                fail(Err((a, b)))
            }
            commit::store(p[cpu].b, new);
            Ok(())
        }

        /// deref-add: `(*slot)->count += n`.
        ///
        /// # Safety
        /// Every slot points at a valid `Target` that no other slot points at.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn deref_add(p: &PerCpu<AtomicPtr<Target>>, n: u64) {
            let target: *mut Target = load(p[cpu]);
            commit::add((*target).count, n);
        }

        pub(crate) const OPS: Ops = Ops {
            counter_add,
            cmpeq_store,
            list_push,
            list_pop,
            buffer_push,
            buffer_pop,
            publish,
            take,
            double_cmp_store_a,
            double_cmp_store_b,
            deref_add,
        };
    };
}

// The macro's expansion of a section that returns `()` ends in a `()` that clippy's
// `unused_unit` flags (a macro issue): allowed here until the macro allows it itself.
#[allow(clippy::unused_unit)]
mod by_cpu_id {
    sections!(cpu_id);
}
#[allow(clippy::unused_unit)]
mod by_mm_cid {
    sections!(mm_cid);
}

/// librseq's style: the caller computed the CPU; `false` if the thread is no longer on it.
#[critical_section(index = given(cpu), moved = false, aborts = ABORTS)]
fn add_on(counters: &PerCpu<AtomicU64>, cpu: usize, n: u64) -> bool {
    commit::add(counters[cpu], n);
    true
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Index {
    CpuId,
    MmCid,
}

struct Config {
    op: String,
    threads: usize,
    iters: usize,
    index: Index,
    yield_every: usize,
    signals: bool,
}

impl Config {
    fn ops(&self) -> &'static Ops {
        match self.index {
            Index::CpuId => &by_cpu_id::OPS,
            Index::MmCid => &by_mm_cid::OPS,
        }
    }
}

/// Yields every `every` operations (outside sections), if asked to.
struct Pacer {
    every: usize,
    n: Cell<usize>,
}

impl Pacer {
    fn tick(&self) {
        if self.every != 0 {
            self.n.set(self.n.get() + 1);
            if self.n.get().is_multiple_of(self.every) {
                std::thread::yield_now();
            }
        }
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
}

extern "C" fn on_signal(_: libc::c_int) {}

fn install_signal_handler() {
    // SAFETY: a zeroed sigaction with a handler that does nothing (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            fail(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
    }
}

/// Runs `work(thread, pacer)` on `cfg.threads` threads started together. Meanwhile the main
/// thread sends SIGUSR1 to every worker as fast as it can (with `--signals`) and calls
/// `background` repeatedly, until every worker is done.
fn run_workers<R: Send>(
    cfg: &Config,
    work: &(dyn Fn(usize, &Pacer) -> R + Sync),
    mut background: Option<&mut dyn FnMut()>,
) -> Vec<R> {
    let barrier = Barrier::new(cfg.threads + 1);
    let done = AtomicUsize::new(0);
    let release = AtomicBool::new(false);
    let tids = Mutex::new(Vec::new());
    let mut sent = 0u64;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (barrier, done, release, tids) = (&barrier, &done, &release, &tids);
                s.spawn(move || {
                    // SAFETY: no preconditions.
                    // Kept as an integer: on musl `pthread_t` is a pointer, which is not `Send`.
                    tids.lock()
                        .unwrap()
                        .push(unsafe { libc::pthread_self() } as usize);
                    barrier.wait();
                    let pacer = Pacer {
                        every: cfg.yield_every,
                        n: Cell::new(0),
                    };
                    let r = work(t, &pacer);
                    done.fetch_add(1, SeqCst);
                    // Stay alive until the signals stop: pthread_kill needs a live thread.
                    while !release.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    r
                })
            })
            .collect();
        barrier.wait();
        let tids = tids.lock().unwrap().clone();
        while done.load(SeqCst) < cfg.threads {
            if cfg.signals {
                for &tid in &tids {
                    // SAFETY: every worker is alive until `release` is set below.
                    let rc = unsafe { libc::pthread_kill(tid as libc::pthread_t, libc::SIGUSR1) };
                    check(rc == 0, || format!("pthread_kill: {rc}"));
                    sent += 1;
                }
            }
            match background.as_mut() {
                Some(f) => f(),
                // Signals as fast as this thread's share of the CPUs allows.
                None if cfg.signals => {}
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        release.store(true, SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| fail("a worker panicked")))
            .collect::<Vec<R>>()
    });
    if cfg.signals {
        println!("signals_sent={sent}");
    }
    results
}

/// What an op reports: its committed operations and extra `key=value` lines.
struct Report {
    ops: u64,
    extra: Vec<(&'static str, String)>,
}

fn sum(values: impl Iterator<Item = u64>) -> u64 {
    values.sum()
}

/// Per-CPU add; the sum over the slots is exact.
fn counter(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    let work = |_t: usize, pacer: &Pacer| {
        for _ in 0..cfg.iters {
            (ops.counter_add)(&counters, 1);
            pacer.tick();
        }
    };
    run_workers(cfg, &work, None);
    let total = sum(counters.iter().map(|c| c.load(SeqCst)));
    let expected = (cfg.threads * cfg.iters) as u64;
    check(total == expected, || {
        format!("counter total {total}, expected {expected} (slots {counters:?})")
    });
    let used = counters.iter().filter(|c| c.load(SeqCst) != 0).count();
    Report {
        ops: expected,
        extra: vec![("slots_used", used.to_string())],
    }
}

/// cmpeq-store increments, retried with the value seen until one commits.
fn cmpxchg(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let words: PerCpu<AtomicUsize> = PerCpu::default();
    let work = |_t: usize, pacer: &Pacer| {
        let mut guess = 0usize;
        let mut misses = 0u64;
        for _ in 0..cfg.iters {
            loop {
                match (ops.cmpeq_store)(&words, guess, guess + 1) {
                    Ok(()) => {
                        guess += 1;
                        break;
                    }
                    Err(seen) => {
                        misses += 1;
                        guess = seen;
                    }
                }
            }
            pacer.tick();
        }
        misses
    };
    let misses = sum(run_workers(cfg, &work, None).into_iter());
    let total: usize = words.iter().map(|w| w.load(SeqCst)).sum();
    let expected = cfg.threads * cfg.iters;
    check(total == expected, || {
        format!("cmpxchg total {total}, expected {expected} (slots {words:?})")
    });
    Report {
        ops: expected as u64,
        extra: vec![("compare_misses", misses.to_string())],
    }
}

/// `index = given(cpu)`: each thread records which slot each of its adds went to; every slot
/// must hold exactly the adds made for it.
fn given_cpu(cfg: &Config) -> Report {
    let counters: PerCpu<AtomicU64> = PerCpu::default();
    let slots = counters.len();
    let work = |_t: usize, pacer: &Pacer| {
        let mut mine = vec![0u64; slots];
        let mut moved = 0u64;
        for _ in 0..cfg.iters {
            loop {
                let cpu = rseq::current_cpu();
                if add_on(&counters, cpu, 1) {
                    mine[cpu] += 1;
                    break;
                }
                moved += 1;
            }
            pacer.tick();
        }
        (mine, moved)
    };
    let results = run_workers(cfg, &work, None);
    let moved = sum(results.iter().map(|r| r.1));
    for (cpu, slot) in counters.iter().enumerate() {
        let made = sum(results.iter().map(|r| r.0[cpu]));
        let got = slot.load(SeqCst);
        check(got == made, || {
            format!("slot {cpu} holds {got}, but {made} adds were committed for it")
        });
    }
    let total = sum(counters.iter().map(|c| c.load(SeqCst)));
    let expected = (cfg.threads * cfg.iters) as u64;
    check(total == expected, || {
        format!("given-cpu total {total}, expected {expected}")
    });
    Report {
        ops: expected,
        extra: vec![("moved", moved.to_string())],
    }
}

/// Nodes per thread for `list`.
const LIST_NODES: usize = 4;

/// Per-CPU lists: every thread pushes back what it pops; at the end every node is on exactly
/// one list (or in a thread's hand) exactly once.
fn list(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let n = cfg.threads * LIST_NODES;
    let nodes: Box<[Node]> = (0..n)
        .map(|value| Node {
            next: AtomicPtr::new(std::ptr::null_mut()),
            value,
            taken: AtomicBool::new(false),
        })
        .collect();
    let heads: Heads = PerCpu::new(|_| AtomicPtr::new(std::ptr::null_mut()));
    let ptr = |i: usize| &nodes[i] as *const Node as *mut Node;
    // The index of the node `p` points at, if it points at one.
    let index_of = |p: *mut Node| {
        (p as usize)
            .checked_sub(nodes.as_ptr() as usize)
            .map(|offset| offset / std::mem::size_of::<Node>())
            .filter(|&i| i < n && ptr(i) == p)
    };
    let work = |t: usize, pacer: &Pacer| {
        // One node in the hand, the others pushed.
        let mut hand = Some(ptr(t * LIST_NODES));
        nodes[t * LIST_NODES].taken.store(true, SeqCst);
        for i in 1..LIST_NODES {
            // SAFETY: the node is ours and on no list.
            unsafe { (ops.list_push)(&heads, ptr(t * LIST_NODES + i)) };
        }
        let (mut pushes, mut pops, mut empty) = (0u64, 0u64, 0u64);
        for _ in 0..cfg.iters {
            if let Some(node) = hand.take() {
                // SAFETY: nodes live as long as `nodes`; this one is in our hand.
                unsafe {
                    (*node).taken.store(false, SeqCst);
                    (ops.list_push)(&heads, node);
                }
                pushes += 1;
            }
            pacer.tick();
            // SAFETY: every node on the lists is one of `nodes`.
            match unsafe { (ops.list_pop)(&heads) } {
                Some(node) => {
                    let value = index_of(node).unwrap_or_else(|| {
                        fail(format!("popped a pointer that is no node: {node:?}"))
                    });
                    check(nodes[value].value == value, || {
                        format!("node {value} holds {}", nodes[value].value)
                    });
                    check(!nodes[value].taken.swap(true, SeqCst), || {
                        format!("node {value} popped while another thread held it")
                    });
                    hand = Some(node);
                    pops += 1;
                }
                None => empty += 1,
            }
            pacer.tick();
        }
        // SAFETY: as above.
        (hand.map(|h| unsafe { &*h }.value), pushes + pops, empty)
    };
    let results = run_workers(cfg, &work, None);
    let mut seen = vec![0u32; n];
    for (hand, _, _) in &results {
        if let Some(v) = *hand {
            seen[v] += 1;
            check(nodes[v].taken.load(SeqCst), || {
                format!("node {v} in a hand is not marked taken")
            });
        }
    }
    let mut on_lists = 0;
    for (cpu, head) in heads.iter().enumerate() {
        let mut p = head.load(SeqCst);
        let mut steps = 0;
        while !p.is_null() {
            steps += 1;
            check(steps <= n, || {
                format!("list {cpu} is longer than {n}: a cycle")
            });
            let i = index_of(p).unwrap_or_else(|| {
                fail(format!("list {cpu} holds a pointer that is no node: {p:?}"))
            });
            seen[i] += 1;
            check(!nodes[i].taken.load(SeqCst), || {
                format!("node {i} on list {cpu} is marked taken")
            });
            on_lists += 1;
            p = nodes[i].next.load(SeqCst);
        }
    }
    for (i, &count) in seen.iter().enumerate() {
        check(count == 1, || format!("node {i} found {count} times"));
    }
    let checksum: usize = (0..n).filter(|&i| seen[i] == 1).sum();
    check(checksum == n * (n - 1) / 2, || {
        format!("checksum {checksum}")
    });
    Report {
        ops: sum(results.iter().map(|r| r.1)),
        extra: vec![
            ("nodes", n.to_string()),
            ("on_lists", on_lists.to_string()),
            ("empty_pops", sum(results.iter().map(|r| r.2)).to_string()),
        ],
    }
}

/// Items per thread for `buffer`.
const BUFFER_ITEMS: usize = 8;

/// Bounded per-CPU buffers: threads move items between their hands and the buffers; at the end
/// the items are the initial ones, each exactly once.
fn buffer(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let n = cfg.threads * BUFFER_ITEMS;
    let bufs: PerCpu<Buf> = PerCpu::default();
    // taken[id]: in some thread's hand (items are 1..=n).
    let taken: Box<[AtomicBool]> = (0..=n).map(|_| AtomicBool::new(true)).collect();
    let work = |t: usize, pacer: &Pacer| {
        let mut rng = Rng::new(t);
        let mut hand: Vec<usize> = (1..=BUFFER_ITEMS).map(|i| t * BUFFER_ITEMS + i).collect();
        let (mut committed, mut full, mut empty) = (0u64, 0u64, 0u64);
        for _ in 0..cfg.iters {
            if !hand.is_empty() && rng.next() & 1 == 0 {
                let item = *hand.last().unwrap();
                taken[item].store(false, SeqCst);
                // SAFETY: the section checks the bound.
                if unsafe { (ops.buffer_push)(&bufs, item) } {
                    hand.pop();
                    committed += 1;
                } else {
                    check(!taken[item].swap(true, SeqCst), || {
                        format!("item {item} was taken although its push failed")
                    });
                    full += 1;
                }
            } else {
                // SAFETY: only `buffer_push` grows `len`, within the capacity.
                match unsafe { (ops.buffer_pop)(&bufs) } {
                    Some(item) => {
                        check((1..=n).contains(&item), || {
                            format!("popped {item:#x}, which is no item")
                        });
                        check(!taken[item].swap(true, SeqCst), || {
                            format!("item {item} popped while another thread held it")
                        });
                        hand.push(item);
                        committed += 1;
                    }
                    None => empty += 1,
                }
            }
            pacer.tick();
        }
        (hand, committed, full, empty)
    };
    let results = run_workers(cfg, &work, None);
    let mut all: Vec<usize> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let in_hands = all.len();
    for (cpu, buf) in bufs.iter().enumerate() {
        let len = buf.len.load(SeqCst);
        check(len <= CAP, || format!("buffer {cpu} has length {len}"));
        all.extend(buf.items[..len].iter().map(|i| i.load(SeqCst)));
    }
    all.sort_unstable();
    check(all == (1..=n).collect::<Vec<_>>(), || {
        format!("the items are not the initial ones: {all:?}")
    });
    Report {
        ops: sum(results.iter().map(|r| r.1)),
        extra: vec![
            ("items", n.to_string()),
            ("in_hands", in_hands.to_string()),
            ("full_pushes", sum(results.iter().map(|r| r.2)).to_string()),
            ("empty_pops", sum(results.iter().map(|r| r.3)).to_string()),
        ],
    }
}

/// The 64 bytes of item `id`: the id, then bytes derived from it.
fn pattern(id: u64) -> [u8; ITEM] {
    let mut bytes = [0u8; ITEM];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut bytes[8..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    bytes
}

/// Checks and frees a taken item; returns its id.
fn receive(p: usize, received: &[AtomicBool], iters: usize) -> u64 {
    // SAFETY: every published pointer came from `Box::into_raw` of a `[u8; ITEM]` and is taken
    // once (the caller removed it from its slot).
    let bytes = unsafe { Box::from_raw(p as *mut [u8; ITEM]) };
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let (t, seq) = ((id >> 32) as usize, (id & 0xffff_ffff) as usize);
    check(seq < iters && t * iters + seq < received.len(), || {
        format!("item with a bad id {id:#x}")
    });
    check(*bytes == pattern(id), || {
        format!("item {id:#x} arrived damaged: {:?}", &bytes[..])
    });
    check(!received[t * iters + seq].swap(true, SeqCst), || {
        format!("item {id:#x} received twice")
    });
    id
}

/// Producers copy items into fresh buffers and publish them in the per-CPU slot if empty;
/// consumers take them. Every published item arrives once, intact.
fn memcpy(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let slots: PerCpu<AtomicUsize> = PerCpu::default();
    let received: Box<[AtomicBool]> = (0..cfg.threads * cfg.iters)
        .map(|_| AtomicBool::new(false))
        .collect();
    let work = |t: usize, pacer: &Pacer| {
        let mut rng = Rng::new(t);
        let mut seq = 0u64;
        let mut src = pattern((t as u64) << 32);
        // A destination that failed to publish is reused for the same item.
        let mut pending: Option<*mut u8> = None;
        let (mut published, mut taken, mut full, mut empty) = (0u64, 0u64, 0u64, 0u64);
        for _ in 0..cfg.iters {
            if rng.next() & 1 == 0 && (seq as usize) < cfg.iters {
                let dst = pending
                    .take()
                    .unwrap_or_else(|| Box::into_raw(Box::new([0xAAu8; ITEM])).cast::<u8>());
                // SAFETY: `dst` is ours, unpublished, ITEM bytes; `src` is ITEM bytes.
                if unsafe { (ops.publish)(&slots, dst, src.as_ptr(), ITEM) } {
                    published += 1;
                    seq += 1;
                    src = pattern(((t as u64) << 32) | seq);
                } else {
                    pending = Some(dst);
                    full += 1;
                }
            } else {
                match (ops.take)(&slots) {
                    Some(p) => {
                        receive(p, &received, cfg.iters);
                        taken += 1;
                    }
                    None => empty += 1,
                }
            }
            pacer.tick();
        }
        if let Some(p) = pending {
            // SAFETY: made by `Box::into_raw` above and never published.
            drop(unsafe { Box::from_raw(p.cast::<[u8; ITEM]>()) });
        }
        (published, taken, full, empty)
    };
    let results = run_workers(cfg, &work, None);
    let mut drained = 0u64;
    for slot in slots.iter() {
        let p = slot.swap(0, SeqCst);
        if p != 0 {
            receive(p, &received, cfg.iters);
            drained += 1;
        }
    }
    let published: Vec<u64> = results.iter().map(|r| r.0).collect();
    for (t, &count) in published.iter().enumerate() {
        for seq in 0..cfg.iters {
            let got = received[t * cfg.iters + seq].load(SeqCst);
            check(got == (seq < count as usize), || {
                format!("item {seq} of thread {t}: received {got}, published {count}")
            });
        }
    }
    let taken = sum(results.iter().map(|r| r.1));
    let total = sum(published.iter().copied());
    check(taken + drained == total, || {
        format!("{taken} taken + {drained} left != {total} published")
    });
    Report {
        ops: total + taken,
        extra: vec![
            ("published", total.to_string()),
            ("drained", drained.to_string()),
            (
                "full_publishes",
                sum(results.iter().map(|r| r.2)).to_string(),
            ),
            ("empty_takes", sum(results.iter().map(|r| r.3)).to_string()),
        ],
    }
}

/// Each slot is a two-step counter: `a` advances when `a == b`, `b` when `a == b + 1`, each by
/// a double compare. If either compare were skipped a slot could reach `a == b + 2` or
/// `b == a + 1`; every slot must satisfy the invariant and `sum(a) + sum(b)` must equal the
/// number of committed steps.
fn double_cmp(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let pairs: PerCpu<Pair> = PerCpu::default();
    let invariant = |a: usize, b: usize| a == b || a == b + 1;
    let work = |_t: usize, pacer: &Pacer| {
        let (mut ga, mut gb) = (0usize, 0usize);
        let mut misses = 0u64;
        for _ in 0..cfg.iters {
            loop {
                let r = if ga == gb {
                    (ops.double_cmp_store_a)(&pairs, ga, gb, ga + 1)
                } else {
                    (ops.double_cmp_store_b)(&pairs, ga, gb, gb + 1)
                };
                match r {
                    Ok(()) if ga == gb => ga += 1,
                    Ok(()) => gb += 1,
                    Err((a, b)) => {
                        check(invariant(a, b), || format!("a slot holds a={a}, b={b}"));
                        (ga, gb) = (a, b);
                        misses += 1;
                        continue;
                    }
                }
                break;
            }
            pacer.tick();
        }
        misses
    };
    let misses = sum(run_workers(cfg, &work, None).into_iter());
    let mut total = 0;
    for (cpu, p) in pairs.iter().enumerate() {
        let (a, b) = (p.a.load(SeqCst), p.b.load(SeqCst));
        check(invariant(a, b), || {
            format!("slot {cpu} ends with a={a}, b={b}")
        });
        total += a + b;
    }
    let expected = cfg.threads * cfg.iters;
    check(total == expected, || {
        format!("double-cmp steps {total}, expected {expected}")
    });
    Report {
        ops: expected as u64,
        extra: vec![("compare_misses", misses.to_string())],
    }
}

/// Each slot points at a target; adds go through the pointer. Meanwhile the main thread keeps
/// moving a spare target into a slot, then retires the old one after `rseq::fence_all()` (no
/// section can still add to it). The sum over all targets is exact.
fn deref_add(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let slots_n = rseq::possible_cpus();
    let targets: Box<[Target]> = (0..=slots_n)
        .map(|id| Target {
            id,
            count: AtomicU64::new(0),
        })
        .collect();
    let ptr = |i: usize| &targets[i] as *const Target as *mut Target;
    let slots: PerCpu<AtomicPtr<Target>> = PerCpu::new(|i| AtomicPtr::new(ptr(i)));
    let work = |_t: usize, pacer: &Pacer| {
        for _ in 0..cfg.iters {
            // SAFETY: every slot points at one of `targets`, each in at most one slot once the
            // rotation's fence has returned.
            unsafe { (ops.deref_add)(&slots, 1) };
            pacer.tick();
        }
    };
    let mut spare = slots_n;
    let mut rotations = 0u64;
    let mut rotate = || {
        let slot = rotations as usize % slots_n;
        let old = slots.get(slot).unwrap().swap(ptr(spare), SeqCst);
        rseq::fence_all().unwrap_or_else(|e| fail(format!("fence_all: {e}")));
        // SAFETY: `old` is one of `targets`.
        spare = unsafe { &*old }.id;
        rotations += 1;
        std::thread::sleep(Duration::from_micros(200));
    };
    run_workers(cfg, &work, Some(&mut rotate));
    let total = sum(targets.iter().map(|t| t.count.load(SeqCst)));
    let expected = (cfg.threads * cfg.iters) as u64;
    check(total == expected, || {
        format!(
            "deref-add total {total}, expected {expected} (targets {:?})",
            targets
                .iter()
                .map(|t| t.count.load(SeqCst))
                .collect::<Vec<_>>()
        )
    });
    Report {
        ops: expected,
        extra: vec![("rotations", rotations.to_string())],
    }
}

const USAGE: &str = "usage: rseq-stress <op> [--threads N] [--iters N] [--index cpu_id|mm_cid] \
                     [--yield-every N] [--signals]\n\
                     ops: counter counter-mm-cid cmpxchg given-cpu list buffer memcpy double-cmp \
                     deref-add";

fn usage(msg: &str) -> ! {
    eprintln!("rseq-stress: {msg}\n{USAGE}");
    exit(2)
}

fn parse_args() -> Config {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| usage("missing op"));
    let mut cfg = Config {
        op,
        threads: 6,
        iters: 100_000,
        index: Index::CpuId,
        yield_every: 0,
        signals: false,
    };
    let mut index = None;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--threads" => cfg.threads = number("--threads").max(1),
            "--iters" => cfg.iters = number("--iters"),
            "--yield-every" => cfg.yield_every = number("--yield-every"),
            "--signals" => cfg.signals = true,
            "--index" => {
                index = Some(match args.next().as_deref() {
                    Some("cpu_id") => Index::CpuId,
                    Some("mm_cid") => Index::MmCid,
                    _ => usage("--index takes cpu_id or mm_cid"),
                })
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    match (cfg.op.as_str(), index) {
        ("counter-mm-cid", Some(Index::CpuId)) | ("given-cpu", Some(_)) => {
            usage(&format!("{} has a fixed index", cfg.op))
        }
        ("counter-mm-cid", _) => cfg.index = Index::MmCid,
        (_, Some(i)) => cfg.index = i,
        _ => {}
    }
    cfg
}

fn main() {
    // A panicking worker ends the run at once (the others would wait for it forever).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        println!("result=fail");
        exit(1)
    }));
    let cfg = parse_args();
    let run: fn(&Config) -> Report = match cfg.op.as_str() {
        "counter" | "counter-mm-cid" => counter,
        "cmpxchg" => cmpxchg,
        "given-cpu" => given_cpu,
        "list" => list,
        "buffer" => buffer,
        "memcpy" => memcpy,
        "double-cmp" => double_cmp,
        "deref-add" => deref_add,
        other => usage(&format!("unknown op {other}")),
    };
    if cfg.signals {
        install_signal_handler();
    }
    let mode = rseq::mode();
    println!("op={}", cfg.op);
    println!("mode={mode:?}");
    println!(
        "index={}",
        match (cfg.op.as_str(), cfg.index) {
            ("given-cpu", _) => "given",
            (_, Index::CpuId) => "cpu_id",
            (_, Index::MmCid) => "mm_cid",
        }
    );
    println!("threads={}", cfg.threads);
    println!("iters={}", cfg.iters);
    println!("cpus={}", rseq_tests::allowed_cpus().len());
    let start = Instant::now();
    let report = run(&cfg);
    let elapsed = start.elapsed();
    let aborts = ABORTS.load(Relaxed) as u64;
    let stats = rseq::stats();
    println!("ops={}", report.ops);
    for (key, value) in &report.extra {
        println!("{key}={value}");
    }
    println!("aborts={aborts}");
    println!("stats_aborts={}", stats.aborts);
    println!("elapsed_ms={}", elapsed.as_millis());
    // Every section of this program counts its aborts, as the runtime does.
    check(aborts == stats.aborts, || {
        format!(
            "the sections counted {aborts} aborts, the runtime {}",
            stats.aborts
        )
    });
    check(mode.is_rseq() || aborts == 0, || {
        format!("{aborts} aborts in {mode:?}")
    });
    check(rseq::mode() == mode, || {
        format!("the mode changed during the run: {:?}", rseq::mode())
    });
    println!("result=ok");
}

//! A stress program for critical sections written with `#[rseq::critical_section]`: each of
//! librseq's operations and each test of the kernel's `param_test` selftest, run from more
//! threads than the machine has CPUs, with an exact check of the end state, plus the hazards
//! around the sections: migrations, signal handlers that run sections, thread churn and
//! `fork`. The integration tests run it in child processes, once per mode (glibc's
//! registration, the library's own, `RSEQ_DISABLE=1`); `tests/tests/reliability.rs` runs a
//! whole matrix of ops and options.
//!
//! ```text
//! rseq-stress <op> [--threads N] [--iters N] [--index cpu_id|mm_cid] [--commit relaxed|release]
//!                  [--yield-every N] [--sleep-every N [--sleep-us U]] [--signal-every N]
//!                  [--signals] [--delay K=N[,K=N...] | --delay-all N] [--deny-membarrier]
//!                  [--slots N]
//! rseq-stress --list
//! ```
//!
//! | op | what it checks | after |
//! |---|---|---|
//! | `counter` (`counter-mm-cid`) | per-CPU add; the sum is exact | `param_test -T i` (increment) |
//! | `cmpxchg` | cmpeq-store increments; the sum is exact | |
//! | `given-cpu` | `index = given(cpu)`: each slot holds exactly the adds made for it | |
//! | `spinlock` | a per-CPU lock taken by a section, released by a release store, protecting a non-atomic counter; the counts are exact | `param_test -T s` |
//! | `list` | per-CPU linked lists, push and pop; every node ends up once somewhere | `param_test -T l` |
//! | `buffer` | bounded per-CPU buffers of words; every item once | `param_test -T b` |
//! | `memcpy` | items copied into fresh memory and published in a per-CPU slot; each arrives once, intact | |
//! | `memcpy-buffer` | bounded per-CPU buffers of 64-byte items copied in and out inside the sections; every item once, intact | `param_test -T m` |
//! | `double-cmp` | double compare, single store; an invariant per slot and an exact sum | |
//! | `membarrier` (alias `deref-add`) | adds through per-CPU pointers while the main thread swaps a pointer, fences (`fence_cpu`/`fence_all`) and checks that the retired target no longer changes; the sum is exact | `param_test -T r` |
//! | `barrier` | two threads run the store-buffering litmus with `rseq::barrier::light()` against `heavy()`, between counter sections: the forbidden outcome never appears, the counts are exact; prints the heavy fence's mechanism, `sync_core()`'s answer and the kernel's membarrier commands | membarrier selftests |
//! | `migration` | the main thread hops each worker from CPU to CPU (`sched_setaffinity`) under a sequence count; between two hops `current_cpu()` = `getcpu(2)` = the pinned CPU, a section touches that CPU's slot, `given(cpu)` commits; a minimum of checks across migrations; exact per-slot sums | KVM selftest `rseq_test` |
//! | `signal-handler` | a fast storm (always on) whose SIGUSR1 handler runs the workers' load-add-store section on the interrupted thread; the sum is the workers' plus the handler's increments exactly | |
//! | `churn` | per lane, 64 short-lived threads one after the other; exact sums; the runtime registered and unregistered each thread once (own registration), or none | |
//! | `fork` | a fork mid-run; the child checks its inherited registration (`current_cpu()` follows it, no second registration, fences work), runs its own workers and checks its copy's sums; the parent checks its own and the child's exit status | |
//!
//! Options: `--iters` is the repetitions per thread. `--commit` picks `commit::store` (relaxed)
//! or `commit::store_release` for the ops that commit with a store (pushes and publishes for the
//! container ops, the only commit for the others); without it each op uses its natural ordering
//! (release for publishing, relaxed otherwise). Ops that commit with `commit::add` take no
//! `--commit`; `given-cpu` and `migration` take no `--index`. Perturbations, all from outside
//! the sections: `--yield-every N` yields, `--sleep-every N` sleeps `--sleep-us` µs (default
//! 1000), `--signal-every N` sends SIGUSR1 to the next worker thread, every N iterations of each
//! thread; `--signals` makes the main thread send SIGUSR1 to every worker every few tens of µs
//! (a storm: faster would be slower, see `run_workers`). Fault injection, only when built with
//! this package's `inject` feature (otherwise a usage error): `--delay K=N,…` makes every
//! section spin N iterations at injection point K (`rseq::inject`), `--delay-all N` at every
//! point. `--deny-membarrier` installs a seccomp filter under which `membarrier(2)` fails before
//! the mode is decided, as on Linux 4.18–5.9: sections still run on rseq, and fences move the
//! fencing thread to every CPU (`fence=Migration`). `--slots N` gives the fallback N CPU slot locks
//! instead of one per possible CPU (N at most that), as on a machine or container with N CPUs
//! (`--slots 1`: a handler that interrupts its own thread has no other CPU slot to take, only
//! the spare).
//!
//! Prints `key=value` lines (`op`, `mode`, `index`, `commit`, `ops`, `aborts`, …; a forked
//! child's start with `child_`) and `result=ok`; exits 1 with `result=fail` and a message on any
//! mismatch, 2 on bad usage. `--list` prints the op names, one per line: each takes the
//! options above.
//!
//! Every word the sections touch is a `usize` (or a pointer), so the program builds on 32-bit
//! targets too.

use rseq::{critical_section, FenceError, PerCpu};
use std::cell::{Cell, UnsafeCell};
use std::process::exit;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicPtr, AtomicUsize};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Every section below counts its kernel aborts here.
static ABORTS: AtomicUsize = AtomicUsize::new(0);

/// SIGUSR1 sent by the workers to each other (`--signal-every`).
static PEER_SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// Capacity of a per-CPU buffer (`buffer`, `memcpy-buffer`).
const CAP: usize = 16;
/// Size of an item copied by `memcpy` and `memcpy-buffer`.
const ITEM: usize = 64;
const _: () = assert!(ITEM == 64, "copy_pop's memcpy length is written as 64");

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

/// A bounded per-CPU buffer of `ITEM`-byte items (`memcpy-buffer`), as in `param_test`: the
/// items are copied in and out inside the sections. Addresses rather than counts, because a
/// section can add but not multiply, and has few registers to spare.
#[repr(C)]
pub struct CopyBuf {
    /// The address of the next free item: from `start` to `end` in steps of `ITEM`.
    top: AtomicUsize,
    /// The address of this slot's `CAP * ITEM` bytes (allocated apart, never moved).
    start: usize,
    /// `start + CAP * ITEM`.
    end: usize,
}

/// Two words compared together (`double-cmp`).
#[repr(C)]
#[derive(Default)]
pub struct Pair {
    a: AtomicUsize,
    b: AtomicUsize,
}

/// What a `membarrier` slot points at; the counter is not the first field, so the field offset
/// matters.
#[repr(C)]
pub struct Target {
    id: usize,
    count: AtomicUsize,
}

/// A counter that knows its own slot (`migration`): a section returns the id of the slot it
/// added to.
#[repr(C)]
pub struct IdSlot {
    id: AtomicUsize,
    count: AtomicUsize,
}

/// A per-CPU spinlock and the counter it protects (`spinlock`).
#[repr(C)]
pub struct SpinSlot {
    /// 0 free, 1 held.
    lock: AtomicUsize,
    /// The slot's own index, loaded by the locking section: it tells the thread which slot it
    /// locked (the thread may be on another CPU by the time it uses it).
    id: AtomicUsize,
    /// Protected by `lock`: read and written with plain (non-atomic) accesses.
    count: UnsafeCell<usize>,
}

// SAFETY: `count` is only accessed by the thread holding `lock` (or after every worker joined).
unsafe impl Sync for SpinSlot {}

type Heads = PerCpu<AtomicPtr<Node>>;

/// `(slots, expected a, expected b, new) -> Ok or the (a, b) seen`.
type DoubleCmpStore = fn(&PerCpu<Pair>, usize, usize, usize) -> Result<(), (usize, usize)>;

/// One set of sections, for one index mode and one commit ordering.
struct Ops {
    counter_add: fn(&PerCpu<AtomicUsize>, usize),
    cmpeq_store: fn(&PerCpu<AtomicUsize>, usize, usize) -> Result<(), usize>,
    spin_trylock: fn(&PerCpu<SpinSlot>) -> Option<usize>,
    list_push: unsafe fn(&Heads, *mut Node),
    list_pop: unsafe fn(&Heads) -> Option<*mut Node>,
    buffer_push: unsafe fn(&PerCpu<Buf>, usize) -> bool,
    buffer_pop: unsafe fn(&PerCpu<Buf>) -> Option<usize>,
    publish: unsafe fn(&PerCpu<AtomicUsize>, *mut u8, *const u8, usize) -> bool,
    take: fn(&PerCpu<AtomicUsize>) -> Option<usize>,
    copy_push: unsafe fn(&PerCpu<CopyBuf>, *const u8) -> bool,
    copy_pop: unsafe fn(&PerCpu<CopyBuf>, *mut u8) -> bool,
    double_cmp_store_a: DoubleCmpStore,
    double_cmp_store_b: DoubleCmpStore,
    deref_add: unsafe fn(&PerCpu<AtomicPtr<Target>>, usize),
    slot_add: fn(&PerCpu<IdSlot>) -> usize,
    rmw_add: fn(&PerCpu<AtomicUsize>),
}

/// The sections whose commit does not depend on `--commit`, for one index mode.
macro_rules! index_sections {
    ($index:ident) => {
        use crate::*;

        /// add: `*v += n`.
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) fn counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
            commit::add(counters[cpu], n);
        }

        /// pop: `h = head; if h == null fail; head = h->next`.
        ///
        /// # Safety
        /// Every node on the lists is valid.
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) unsafe fn list_pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
            let head: *mut Node = load(heads[cpu]);
            if head == null {
                fail(None)
            }
            let next = load((*head).next);
            commit::store(heads[cpu], next);
            Some(head)
        }

        /// pop: `len -= 1; items[len]`, unless empty.
        ///
        /// # Safety
        /// `len` never exceeds the capacity (only `buffer_push` grows it).
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) unsafe fn buffer_pop(bufs: &PerCpu<Buf>) -> Option<usize> {
            let len = load(bufs[cpu].len);
            if len == 0 {
                fail(None)
            }
            let last = add(len, { usize::MAX });
            let item = load(bufs[cpu].items[last]);
            commit::store(bufs[cpu].len, last);
            Some(item)
        }

        /// Takes the published pointer: cmpeq-store of the value seen to 0.
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) fn take(slots: &PerCpu<AtomicUsize>) -> Option<usize> {
            let p = load(slots[cpu]);
            if p == 0 {
                fail(None)
            }
            commit::store(slots[cpu], 0);
            Some(p)
        }

        /// memcpy pop: copy the top item into `out`, then `top -= ITEM`, unless empty.
        ///
        /// # Safety
        /// `out` is valid for `ITEM` bytes; every slot's `top` is in its own array.
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) unsafe fn copy_pop(bufs: &PerCpu<CopyBuf>, out: *mut u8) -> bool {
            let top = load(bufs[cpu].top);
            let start = load(bufs[cpu].start);
            if top <= start {
                fail(false)
            }
            let last = add(top, { ITEM.wrapping_neg() });
            // The literal is `ITEM` (asserted below): an immediate needs no register of its
            // own, which keeps this section within s390x's 12.
            memcpy(out, last, 64);
            commit::store(bufs[cpu].top, last);
            true
        }

        /// deref-add: `(*slot)->count += n`.
        ///
        /// # Safety
        /// Every slot points at a valid `Target`.
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) unsafe fn deref_add(p: &PerCpu<AtomicPtr<Target>>, n: usize) {
            let target: *mut Target = load(p[cpu]);
            commit::add((*target).count, n);
        }

        /// `count += 1` in the current slot, returning the slot's id: which slot the section
        /// really touched (`migration`).
        #[critical_section(index = $index, aborts = ABORTS)]
        pub(crate) fn slot_add(slots: &PerCpu<IdSlot>) -> usize {
            let id = load(slots[cpu].id);
            commit::add(slots[cpu].count, 1);
            id
        }
    };
}

/// The sections whose commit is `commit::$commit` (`store` or `store_release`), for one index
/// mode.
macro_rules! ordered_sections {
    ($index:ident, $commit:ident) => {
        use crate::*;

        /// cmpeq-store: `if *v == expect { *v = new }`, else the value seen.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn cmpeq_store(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> Result<(), usize> {
            let seen = load(v[cpu]);
            if seen != expect {
                fail(Err(seen))
            }
            commit::$commit(v[cpu], new);
            Ok(())
        }

        /// Spinlock acquire (`param_test`'s cmpeqv-storev of the lock word): `if lock == 0
        /// { lock = 1 }`; the index of the slot locked, or `None` if it is held.
        #[critical_section(index = $index, aborts = ABORTS)]
        fn spin_trylock(locks: &PerCpu<SpinSlot>) -> Option<usize> {
            let id = load(locks[cpu].id);
            let held = load(locks[cpu].lock);
            if held != 0 {
                fail(None)
            }
            commit::$commit(locks[cpu].lock, 1);
            Some(id)
        }

        /// push: `node->next = head` (speculative), then `head = node`.
        ///
        /// # Safety
        /// `node` is valid and on no list.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn list_push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
            let head = load(heads[cpu]);
            store((*node).next, head);
            commit::$commit(heads[cpu], node);
        }

        /// push: `items[len] = item` (speculative), then `len += 1`, unless full.
        ///
        /// # Safety
        /// None beyond the bound checked in the section (indexing needs an `unsafe fn`).
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn buffer_push(bufs: &PerCpu<Buf>, item: usize) -> bool {
            let len = load(bufs[cpu].len);
            if len >= { CAP } {
                fail(false)
            }
            store(bufs[cpu].items[len], item);
            let grown = add(len, 1);
            commit::$commit(bufs[cpu].len, grown);
            true
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
            commit::$commit(slots[cpu], dst);
            true
        }

        /// memcpy push: copy `item` to the top of the buffer (speculative), then
        /// `top += ITEM`, unless full.
        ///
        /// # Safety
        /// `item` is valid for `ITEM` bytes; every slot's `top` is in its own array.
        #[critical_section(index = $index, aborts = ABORTS)]
        unsafe fn copy_push(bufs: &PerCpu<CopyBuf>, item: *const u8) -> bool {
            let top = load(bufs[cpu].top);
            let end = load(bufs[cpu].end);
            if top >= end {
                fail(false)
            }
            memcpy(top, item, { ITEM });
            let grown = add(top, { ITEM });
            commit::$commit(bufs[cpu].top, grown);
            true
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
            commit::$commit(p[cpu].a, new);
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
            commit::$commit(p[cpu].b, new);
            Ok(())
        }

        /// Increment through a register: `v = *c; *c = v + 1`. Exact only because a section
        /// interrupted between its load and its commit restarts (`signal-handler`, `churn`).
        #[critical_section(index = $index, aborts = ABORTS)]
        fn rmw_add(c: &PerCpu<AtomicUsize>) {
            let v = load(c[cpu]);
            let n = add(v, 1);
            commit::$commit(c[cpu], n);
        }

        /// This ordering's sections with the index mode's others.
        pub(crate) const OPS: Ops = Ops {
            counter_add: super::counter_add,
            cmpeq_store,
            spin_trylock,
            list_push,
            list_pop: super::list_pop,
            buffer_push,
            buffer_pop: super::buffer_pop,
            publish,
            take: super::take,
            copy_push,
            copy_pop: super::copy_pop,
            double_cmp_store_a,
            double_cmp_store_b,
            deref_add: super::deref_add,
            slot_add: super::slot_add,
            rmw_add,
        };
    };
}

mod by_cpu_id {
    index_sections!(cpu_id);
    pub(crate) mod relaxed {
        ordered_sections!(cpu_id, store);
    }
    pub(crate) mod release {
        ordered_sections!(cpu_id, store_release);
    }
}
mod by_mm_cid {
    index_sections!(mm_cid);
    pub(crate) mod relaxed {
        ordered_sections!(mm_cid, store);
    }
    pub(crate) mod release {
        ordered_sections!(mm_cid, store_release);
    }
}

/// librseq's style: the caller computed the CPU; `false` if the thread is no longer on it.
#[critical_section(index = given(cpu), moved = false, aborts = ABORTS)]
fn add_on(counters: &PerCpu<AtomicUsize>, cpu: usize, n: usize) -> bool {
    commit::add(counters[cpu], n);
    true
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Index {
    CpuId,
    MmCid,
}

/// The ordering of the commit store (`--commit`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Commit {
    /// `commit::store`.
    Relaxed,
    /// `commit::store_release`.
    Release,
}

/// One op of the program.
struct OpSpec {
    name: &'static str,
    run: fn(&Config) -> Report,
    /// The commit ordering without `--commit`; `None` for ops that commit with `commit::add`
    /// (they take no `--commit`).
    commit: Option<Commit>,
}

/// The ops, in `--list` order.
const OP_SPECS: &[OpSpec] = &[
    OpSpec {
        name: "counter",
        run: counter,
        commit: None,
    },
    OpSpec {
        name: "counter-mm-cid",
        run: counter,
        commit: None,
    },
    OpSpec {
        name: "cmpxchg",
        run: cmpxchg,
        commit: Some(Commit::Relaxed),
    },
    OpSpec {
        name: "given-cpu",
        run: given_cpu,
        commit: None,
    },
    OpSpec {
        name: "spinlock",
        run: spinlock,
        commit: Some(Commit::Relaxed),
    },
    OpSpec {
        name: "list",
        run: list,
        commit: Some(Commit::Release),
    },
    OpSpec {
        name: "buffer",
        run: buffer,
        commit: Some(Commit::Release),
    },
    OpSpec {
        name: "memcpy",
        run: memcpy,
        commit: Some(Commit::Release),
    },
    OpSpec {
        name: "memcpy-buffer",
        run: memcpy_buffer,
        commit: Some(Commit::Release),
    },
    OpSpec {
        name: "double-cmp",
        run: double_cmp,
        commit: Some(Commit::Relaxed),
    },
    OpSpec {
        name: "membarrier",
        run: membarrier,
        commit: None,
    },
    OpSpec {
        name: "barrier",
        run: barrier,
        commit: None,
    },
    OpSpec {
        name: "migration",
        run: migration,
        commit: None,
    },
    OpSpec {
        name: "signal-handler",
        run: signal_handler,
        commit: Some(Commit::Relaxed),
    },
    OpSpec {
        name: "churn",
        run: churn,
        commit: Some(Commit::Relaxed),
    },
    OpSpec {
        name: "fork",
        run: fork_op,
        commit: None,
    },
];

/// Older names still accepted (not listed): `deref-add` is `membarrier`.
const OP_ALIASES: &[(&str, &str)] = &[("deref-add", "membarrier")];

struct Config {
    op: String,
    threads: usize,
    iters: usize,
    index: Index,
    /// `None` for ops that commit with `commit::add`.
    commit: Option<Commit>,
    yield_every: usize,
    sleep_every: usize,
    sleep: Duration,
    signal_every: usize,
    signals: bool,
    /// The main thread's pause between two rounds of `--signals`.
    storm_pause: Duration,
    /// `--delay`/`--delay-all`: loop counts per injection point (`inject` feature only).
    delays: Vec<(usize, u32)>,
    /// `--deny-membarrier`: a seccomp filter makes `membarrier(2)` fail (Linux 4.18–5.9).
    deny_membarrier: bool,
    /// `--slots N`: the fallback's CPU slot locks (0: one per possible CPU), besides the spare.
    slots: usize,
}

impl Config {
    fn ops(&self) -> &'static Ops {
        match (self.index, self.commit.unwrap_or(Commit::Relaxed)) {
            (Index::CpuId, Commit::Relaxed) => &by_cpu_id::relaxed::OPS,
            (Index::CpuId, Commit::Release) => &by_cpu_id::release::OPS,
            (Index::MmCid, Commit::Relaxed) => &by_mm_cid::relaxed::OPS,
            (Index::MmCid, Commit::Release) => &by_mm_cid::release::OPS,
        }
    }
}

/// Where a worker's `--signal-every` signals go.
#[derive(Clone, Copy)]
enum Peer<'a> {
    /// A worker thread that outlives every sender (`run_workers` keeps them all alive until
    /// the last one is done): `pthread_kill`. As an integer: on musl `pthread_t` is a pointer.
    Thread(usize),
    /// Whichever thread currently runs in a `churn` lane: its kernel thread id, 0 between two
    /// threads. It may exit at any moment, so `tgkill` may find it gone (`ESRCH`).
    Lane(&'a AtomicI32),
}

/// A worker's perturbations, applied between operations (never inside a section): yield,
/// sleep, or signal a peer every N operations.
struct Pacer<'a> {
    yield_every: usize,
    sleep_every: usize,
    sleep: Duration,
    signal_every: usize,
    peer: Peer<'a>,
    n: Cell<usize>,
}

impl<'a> Pacer<'a> {
    fn new(cfg: &Config, peer: Peer<'a>) -> Pacer<'a> {
        Pacer {
            yield_every: cfg.yield_every,
            sleep_every: cfg.sleep_every,
            sleep: cfg.sleep,
            signal_every: cfg.signal_every,
            peer,
            n: Cell::new(0),
        }
    }

    fn tick(&self) {
        let n = self.n.get() + 1;
        self.n.set(n);
        if self.yield_every != 0 && n.is_multiple_of(self.yield_every) {
            std::thread::yield_now();
        }
        if self.sleep_every != 0 && n.is_multiple_of(self.sleep_every) {
            std::thread::sleep(self.sleep);
        }
        if self.signal_every != 0 && n.is_multiple_of(self.signal_every) {
            match self.peer {
                Peer::Thread(peer) => {
                    // SAFETY: every worker stays alive until all of them are done
                    // (`run_workers`).
                    let rc = unsafe { libc::pthread_kill(peer as libc::pthread_t, libc::SIGUSR1) };
                    check(rc == 0, || format!("pthread_kill of a peer: {rc}"));
                    PEER_SIGNALS.fetch_add(1, Relaxed);
                }
                Peer::Lane(tid) => {
                    if signal_tid(tid.load(SeqCst)) {
                        PEER_SIGNALS.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// The calling thread's kernel thread id.
fn gettid() -> libc::pid_t {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Sends SIGUSR1 to thread `tid` of this process (0: none) with `tgkill`, which never reaches
/// another process even if the id was reused. Returns whether it was sent: the thread may have
/// exited (`ESRCH`), which is expected for `churn`'s short-lived threads.
fn signal_tid(tid: libc::pid_t) -> bool {
    if tid == 0 {
        return false;
    }
    // SAFETY: plain system call on integers.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    check(rc == 0 || errno == Some(libc::ESRCH), || {
        format!(
            "tgkill of thread {tid}: {}",
            std::io::Error::last_os_error()
        )
    });
    rc == 0
}

/// The CPU the kernel says the calling thread runs on, from the `getcpu` system call itself:
/// glibc's `sched_getcpu` reads glibc's rseq area when it registered one, which is what
/// `current_cpu()` reads too, so it would not be an independent witness.
fn getcpu_syscall() -> usize {
    let mut cpu = 0u32;
    // SAFETY: `cpu` is a live local; the node and cache pointers may be null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            std::ptr::null_mut::<u32>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    check(rc == 0, || {
        format!("getcpu: {}", std::io::Error::last_os_error())
    });
    cpu as usize
}

/// Set in a forked child (`fork`): its `key=value` lines start with `child_`, so that they
/// cannot be taken for the parent's on the shared output.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Prints a `key=value` line (`child_key=value` in a forked child).
fn say(key: &str, value: impl std::fmt::Display) {
    let prefix = if IN_CHILD.load(Relaxed) { "child_" } else { "" };
    println!("{prefix}{key}={value}");
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

/// The sections the SIGUSR1 handler runs (`signal-handler`; null for the other ops: the
/// handler then does nothing).
static HANDLER_SECTIONS: AtomicPtr<Ops> = AtomicPtr::new(std::ptr::null_mut());
/// The counters the handler's sections increment.
static HANDLER_WORDS: AtomicPtr<PerCpu<AtomicUsize>> = AtomicPtr::new(std::ptr::null_mut());
/// Increments committed by the handler, all threads together.
static HANDLER_OPS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread may run sections in the handler: it has run one outside it (so it is
    /// attached, and a handler never does the first registration, which allocates).
    /// Constant-initialized and without a destructor, so the handler may read it.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Sections the handler ran on this thread.
    static HANDLED_HERE: Cell<u64> = const { Cell::new(0) };
}

/// SIGUSR1 deliveries, to any thread (a signal sent while one is pending is lost).
static SIGNALS_HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS_HANDLED.fetch_add(1, Relaxed);
    let words = HANDLER_WORDS.load(Acquire);
    if words.is_null() || !ARMED.with(Cell::get) {
        return;
    }
    // A fallback section may wait on its slot lock (futex calls): keep the interrupted code's
    // errno.
    // SAFETY: the calling thread's errno location.
    let errno = unsafe { *libc::__errno_location() };
    run_handler_section(words);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The handler's section (`signal-handler`). In the fallback every handler runs its section
/// too: one that interrupts its own thread's section takes another slot, with signals blocked,
/// the spare included, whose holders cannot be interrupted, so such a wait always ends (with 4
/// threads on 2 slots, that wait was a deadlock before the runtime bounded it).
fn run_handler_section(words: *mut PerCpu<AtomicUsize>) {
    // SAFETY: both are published before the workers start and stay valid until every worker
    // has joined (`signal_handler` clears them only then); `Ops` tables are constants.
    let (ops, words) = unsafe { (&*HANDLER_SECTIONS.load(Acquire), &*words) };
    (ops.rmw_add)(words);
    HANDLER_OPS.fetch_add(1, Relaxed);
    HANDLED_HERE.with(|n| n.set(n.get() + 1));
}

fn install_signal_handler() {
    // SAFETY: a zeroed sigaction with a handler that only runs critical sections and atomic
    // increments (async-signal-safe).
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

/// The main thread's pause between two rounds of `--signals`.
const STORM_PAUSE: Duration = Duration::from_micros(20);

/// The main thread's pause between two rounds of signals in `signal-handler`, whose storm is
/// faster (and whose main thread sleeps with a timer slack of 1 µs instead of 50).
const FAST_STORM_PAUSE: Duration = Duration::from_micros(5);

/// Sleeps between two rounds of the main thread's loop: `cfg.storm_pause` under `--signals`,
/// else `idle`.
fn pause(cfg: &Config, idle: Duration) {
    std::thread::sleep(if cfg.signals { cfg.storm_pause } else { idle });
}

/// Runs `work(thread, pacer)` on `cfg.threads` threads started together. Meanwhile the main
/// thread sends SIGUSR1 to every worker every few tens of µs (with `--signals`) — or, when
/// `lanes` is given, to every thread whose kernel id is in `lanes` (`churn`'s short-lived
/// threads) — and calls `background` repeatedly (which then paces the loop, see [`pause`]),
/// until every worker is done.
/// Sections the workers of `run_workers` ran through the fallback (printed as
/// `fallback_sections`): all of them in `Fallback` mode, and in `Rseq` mode those whose index
/// the kernel lacks (`mm_cid` before Linux 6.3).
static WORKER_FALLBACK_SECTIONS: AtomicUsize = AtomicUsize::new(0);

fn run_workers<R: Send>(
    cfg: &Config,
    work: &(dyn Fn(usize, &Pacer) -> R + Sync),
    mut background: Option<&mut dyn FnMut()>,
    lanes: Option<&[AtomicI32]>,
) -> Vec<R> {
    let barrier = Barrier::new(cfg.threads + 1);
    let done = AtomicUsize::new(0);
    let release = AtomicBool::new(false);
    // Thread ids, kept as integers: on musl `pthread_t` is a pointer, which is not `Send`.
    let tids: Box<[AtomicUsize]> = (0..cfg.threads).map(|_| AtomicUsize::new(0)).collect();
    let mut sent = 0u64;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (barrier, done, release, tids) = (&barrier, &done, &release, &tids);
                s.spawn(move || {
                    // SAFETY: no preconditions.
                    tids[t].store(unsafe { libc::pthread_self() } as usize, SeqCst);
                    barrier.wait();
                    let peer = Peer::Thread(tids[(t + 1) % cfg.threads].load(SeqCst));
                    let before = rseq::fallback::thread_fallback_sections();
                    let r = work(t, &Pacer::new(cfg, peer));
                    WORKER_FALLBACK_SECTIONS.fetch_add(
                        (rseq::fallback::thread_fallback_sections() - before) as usize,
                        SeqCst,
                    );
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
        let tids: Vec<usize> = tids.iter().map(|t| t.load(SeqCst)).collect();
        while done.load(SeqCst) < cfg.threads {
            if cfg.signals {
                match lanes {
                    Some(lanes) => {
                        for lane in lanes {
                            sent += u64::from(signal_tid(lane.load(SeqCst)));
                        }
                    }
                    None => {
                        for &tid in &tids {
                            // SAFETY: every worker is alive until `release` is set below.
                            let rc = unsafe {
                                libc::pthread_kill(tid as libc::pthread_t, libc::SIGUSR1)
                            };
                            check(rc == 0, || format!("pthread_kill: {rc}"));
                            sent += 1;
                        }
                    }
                }
            }
            match background.as_mut() {
                Some(f) => f(),
                // A short pause between rounds: a signal sent while the last one is still
                // pending is lost, and one that becomes pending while the handler runs is
                // delivered on the way out of it, where no section is running. Sent back to
                // back, almost none would land inside a section.
                None => pause(cfg, Duration::from_millis(1)),
            }
        }
        release.store(true, SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| fail("a worker panicked")))
            .collect::<Vec<R>>()
    });
    if cfg.signals {
        say("signals_sent", sent);
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
    let counters: PerCpu<AtomicUsize> = PerCpu::default();
    let work = |_t: usize, pacer: &Pacer| {
        for _ in 0..cfg.iters {
            (ops.counter_add)(&counters, 1);
            pacer.tick();
        }
    };
    run_workers(cfg, &work, None, None);
    let total = sum(counters.iter().map(|c| c.load(SeqCst) as u64));
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
    let misses = sum(run_workers(cfg, &work, None, None).into_iter());
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
    let counters: PerCpu<AtomicUsize> = PerCpu::default();
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
    let results = run_workers(cfg, &work, None, None);
    let moved = sum(results.iter().map(|r| r.1));
    for (cpu, slot) in counters.iter().enumerate() {
        let made = sum(results.iter().map(|r| r.0[cpu]));
        let got = slot.load(SeqCst) as u64;
        check(got == made, || {
            format!("slot {cpu} holds {got}, but {made} adds were committed for it")
        });
    }
    let total = sum(counters.iter().map(|c| c.load(SeqCst) as u64));
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
    let results = run_workers(cfg, &work, None, None);
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
    let results = run_workers(cfg, &work, None, None);
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
    let results = run_workers(cfg, &work, None, None);
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
    let misses = sum(run_workers(cfg, &work, None, None).into_iter());
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

/// `param_test`'s spinlock: a per-CPU lock word taken by a section (`if lock == 0 { lock = 1 }`,
/// which also says which slot it locked) and released by a release store outside any section,
/// protecting a plain counter that is read and written non-atomically. Each thread increments
/// `--iters` times; the counters must add up exactly (a lost update shows a broken lock) and
/// every lock must end free.
fn spinlock(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let slots: PerCpu<SpinSlot> = PerCpu::new(|id| SpinSlot {
        lock: AtomicUsize::new(0),
        id: AtomicUsize::new(id),
        count: UnsafeCell::new(0),
    });
    let work = |_t: usize, pacer: &Pacer| {
        let mut busy = 0u64;
        for _ in 0..cfg.iters {
            let id = loop {
                if let Some(id) = (ops.spin_trylock)(&slots) {
                    break id;
                }
                // Held, maybe by a thread that was preempted or migrated while holding it.
                busy += 1;
                if busy.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            };
            // The section's load saw the release store of the last holder: order the critical
            // region after it (`param_test`'s acquire after the control dependency).
            fence(Acquire);
            let slot = slots
                .get(id)
                .unwrap_or_else(|| fail(format!("the lock section returned slot {id}")));
            check(slot.lock.load(Relaxed) == 1, || {
                format!("slot {id} locked by this thread reads as free")
            });
            // SAFETY: this thread holds the slot's lock. The read and the write are separate
            // volatile accesses, so a second holder would lose updates.
            unsafe {
                let count = slot.count.get();
                count.write_volatile(count.read_volatile() + 1);
            }
            slot.lock.store(0, Release);
            pacer.tick();
        }
        busy
    };
    let busy = sum(run_workers(cfg, &work, None, None).into_iter());
    for (cpu, slot) in slots.iter().enumerate() {
        let lock = slot.lock.load(SeqCst);
        check(lock == 0, || format!("lock {cpu} ends held ({lock})"));
    }
    // SAFETY: every worker has joined; nobody holds a lock.
    let counts: Vec<usize> = slots.iter().map(|s| unsafe { *s.count.get() }).collect();
    let total = sum(counts.iter().map(|&c| c as u64));
    let expected = (cfg.threads * cfg.iters) as u64;
    check(total == expected, || {
        format!("spinlock-protected counts add up to {total}, expected {expected} ({counts:?})")
    });
    Report {
        ops: expected,
        extra: vec![("busy_retries", busy.to_string())],
    }
}

/// The id written in an item's first bytes (`pattern`).
fn item_id(item: &[u8; ITEM]) -> u64 {
    u64::from_le_bytes(item[..8].try_into().unwrap())
}

/// `param_test`'s memcpy buffer: bounded per-CPU buffers of `ITEM`-byte items, each copied in
/// and out inside the sections (an abort can land in the middle of a copy). Threads move items
/// between their hands and the buffers; every item popped must be intact and held by one
/// thread only, and at the end the items are the initial ones, each exactly once.
fn memcpy_buffer(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let n = cfg.threads * BUFFER_ITEMS;
    let bytes = CAP * ITEM;
    let bufs: PerCpu<CopyBuf> = PerCpu::new(|_| {
        let start = Box::into_raw(vec![0u8; bytes].into_boxed_slice()).cast::<u8>() as usize;
        CopyBuf {
            top: AtomicUsize::new(start),
            start,
            end: start + bytes,
        }
    });
    // taken[id]: in some thread's hand (items are 1..=n).
    let taken: Box<[AtomicBool]> = (0..=n).map(|_| AtomicBool::new(true)).collect();
    let work = |t: usize, pacer: &Pacer| {
        let mut rng = Rng::new(t);
        let mut hand: Vec<[u8; ITEM]> = (1..=BUFFER_ITEMS)
            .map(|i| pattern((t * BUFFER_ITEMS + i) as u64))
            .collect();
        let (mut committed, mut full, mut empty) = (0u64, 0u64, 0u64);
        for _ in 0..cfg.iters {
            if !hand.is_empty() && rng.next() & 1 == 0 {
                let item = hand.last().unwrap();
                let id = item_id(item) as usize;
                taken[id].store(false, SeqCst);
                // SAFETY: `item` is ITEM bytes; every slot's `top` is in its own array.
                if unsafe { (ops.copy_push)(&bufs, item.as_ptr()) } {
                    hand.pop();
                    committed += 1;
                } else {
                    check(!taken[id].swap(true, SeqCst), || {
                        format!("item {id} was taken although its push failed")
                    });
                    full += 1;
                }
            } else {
                let mut out = [0xA5u8; ITEM];
                // SAFETY: `out` is ITEM bytes; every slot's `top` is in its own array.
                if unsafe { (ops.copy_pop)(&bufs, out.as_mut_ptr()) } {
                    let id = item_id(&out);
                    check((1..=n as u64).contains(&id), || {
                        format!("popped an item with id {id:#x}, which is no item: {out:?}")
                    });
                    check(out == pattern(id), || {
                        format!("item {id} arrived damaged: {out:?}")
                    });
                    check(!taken[id as usize].swap(true, SeqCst), || {
                        format!("item {id} popped while another thread held it")
                    });
                    hand.push(out);
                    committed += 1;
                } else {
                    empty += 1;
                }
            }
            pacer.tick();
        }
        (hand, committed, full, empty)
    };
    let results = run_workers(cfg, &work, None, None);
    let mut all: Vec<u64> = results
        .iter()
        .flat_map(|r| r.0.iter().map(item_id))
        .collect();
    let in_hands = all.len();
    for (cpu, buf) in bufs.iter().enumerate() {
        let used = buf.top.load(SeqCst).wrapping_sub(buf.start);
        check(used <= bytes && used.is_multiple_of(ITEM), || {
            format!("buffer {cpu} has {used} bytes in use")
        });
        let start = buf.start as *const [u8; ITEM];
        for k in 0..used / ITEM {
            // SAFETY: the array holds CAP items; every worker has joined.
            let item = unsafe { start.add(k).read() };
            let id = item_id(&item);
            check(item == pattern(id), || {
                format!("item {k} of buffer {cpu} (id {id:#x}) is damaged: {item:?}")
            });
            all.push(id);
        }
    }
    for buf in bufs.iter() {
        // SAFETY: made by `Box::into_raw` of a CAP * ITEM slice above; no section runs now.
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                buf.start as *mut u8,
                bytes,
            ))
        });
    }
    all.sort_unstable();
    check(all == (1..=n as u64).collect::<Vec<_>>(), || {
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

/// Asymmetric fences (`rseq::barrier`) on this kernel: two workers run the store-buffering
/// litmus `--iters / 100` times (at least 1000), `x = 1; light(); r1 = y` against
/// `y = 1; heavy(); r2 = x`, each round between two per-CPU counter adds (sections), and `r1 == r2 == 0` must never appear. Also reports the
/// supported commands, the heavy fence's mechanism and what `sync_core()` answers (ok, or the
/// typed `Unsupported` where the architecture has no core-serialising command). The op checks
/// the API on each kernel the system test boots; the ordering check bites only while the two
/// threads run at once (with `light()` in place of `heavy()`, three runs on this loaded 2-CPU
/// machine saw no forbidden outcome): `rseq-rt`'s litmus tests are the ones that catch a weak
/// heavy fence.
fn barrier(cfg: &Config) -> Report {
    use rseq::barrier::{self as b, BarrierError, Command};
    let ops = cfg.ops();
    let query = b::query().unwrap_or_else(|e| fail(format!("barrier::query: {e}")));
    b::heavy().unwrap_or_else(|e| fail(format!("barrier::heavy: {e}")));
    let mechanism = b::heavy_mechanism().unwrap_or_else(|e| fail(format!("heavy_mechanism: {e}")));
    let sync_core = match b::sync_core() {
        Ok(()) => "ok".to_string(),
        Err(BarrierError::Unsupported(Command::PrivateExpeditedSyncCore)) => "unsupported".into(),
        Err(e) => fail(format!("barrier::sync_core: {e}")),
    };
    let counters: PerCpu<AtomicUsize> = PerCpu::default();
    // One pair of threads: the two sides must run at once on two CPUs for a missing fence to
    // show (more pairs than CPUs would mostly take turns).
    let rounds = (cfg.iters / 100).max(1000);
    let forbidden = rseq::test_support::store_buffering(
        rounds,
        || b::heavy().unwrap_or_else(|e| fail(format!("barrier::heavy: {e}"))),
        || (ops.counter_add)(&counters, 1),
    );
    check(forbidden == 0, || {
        format!(
            "the store-buffering outcome appeared {forbidden} times with heavy() ({mechanism:?})"
        )
    });
    let total = sum(counters.iter().map(|c| c.load(SeqCst) as u64));
    let expected = (2 * rounds) as u64;
    check(total == expected, || {
        format!("counter total {total}, expected {expected}")
    });
    Report {
        ops: expected,
        extra: vec![
            ("litmus_rounds", rounds.to_string()),
            ("forbidden", forbidden.to_string()),
            ("heavy", format!("{mechanism:?}")),
            ("sync_core", sync_core),
            ("membarrier_commands", format!("{query:?}").replace(' ', "")),
        ],
    }
}

/// `param_test`'s membarrier test, on per-CPU pointers (`deref-add`): each slot points at a
/// target and the workers add through the pointer. Meanwhile the main thread moves the spare
/// target into one slot, fences — `fence_cpu(slot)` on every other rotation when slots are
/// CPUs, else `fence_all()` — and notes the count of the target it took out: no section can
/// add to that one any more, so when it goes back into a slot its count must be unchanged.
/// The sum over all targets is exact.
fn membarrier(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let slots_n = rseq::possible_cpus();
    let targets: Box<[Target]> = (0..=slots_n)
        .map(|id| Target {
            id,
            count: AtomicUsize::new(0),
        })
        .collect();
    let ptr = |i: usize| &targets[i] as *const Target as *mut Target;
    let slots: PerCpu<AtomicPtr<Target>> = PerCpu::new(|i| AtomicPtr::new(ptr(i)));
    // Rotations so far, for the workers: each waits halfway through its adds until the first
    // one, so that every run fences while sections run (fast workers could otherwise finish
    // before the main thread's first rotation).
    let rotated = AtomicUsize::new(0);
    let work = |_t: usize, pacer: &Pacer| {
        for i in 0..cfg.iters {
            if i == cfg.iters / 2 {
                while rotated.load(SeqCst) == 0 {
                    std::thread::yield_now();
                }
            }
            // SAFETY: every slot points at one of `targets`, which outlive the workers.
            unsafe { (ops.deref_add)(&slots, 1) };
            pacer.tick();
        }
    };
    // The target in no slot, and its count when it was taken out (after the fence).
    let (mut spare, mut settled) = (slots_n, 0usize);
    let (mut rotations, mut cpu_fences) = (0u64, 0u64);
    let unchanged = |spare: usize, settled: usize| {
        let now = targets[spare].count.load(SeqCst);
        check(now == settled, || {
            format!(
                "target {spare} went from {settled} to {now} after it was taken out of its slot \
                 and fenced: a section added through the stale pointer"
            )
        });
    };
    let mut rotate = || {
        unchanged(spare, settled);
        let slot = rotations as usize % slots_n;
        let old = slots.get(slot).unwrap().swap(ptr(spare), SeqCst);
        // With `cpu_id`, only sections running on CPU `slot` use slot `slot`: fencing that CPU
        // is enough. `mm_cid` slots are used from any CPU.
        let fenced = if cfg.index == Index::CpuId && rotations.is_multiple_of(2) {
            cpu_fences += 1;
            rseq::fence_cpu(slot)
        } else {
            rseq::fence_all()
        };
        fenced.unwrap_or_else(|e: FenceError| fail(format!("fence: {e}")));
        // SAFETY: `old` is one of `targets`.
        spare = unsafe { &*old }.id;
        settled = targets[spare].count.load(SeqCst);
        rotations += 1;
        rotated.store(rotations as usize, SeqCst);
        std::thread::sleep(Duration::from_micros(200));
    };
    run_workers(cfg, &work, Some(&mut rotate), None);
    unchanged(spare, settled);
    let total = sum(targets.iter().map(|t| t.count.load(SeqCst) as u64));
    let expected = (cfg.threads * cfg.iters) as u64;
    check(total == expected, || {
        format!(
            "membarrier total {total}, expected {expected} (targets {:?})",
            targets
                .iter()
                .map(|t| t.count.load(SeqCst))
                .collect::<Vec<_>>()
        )
    });
    Report {
        ops: expected,
        extra: vec![
            ("rotations", rotations.to_string()),
            ("cpu_fences", cpu_fences.to_string()),
        ],
    }
}

/// Migrations of itself each `migration` reader must have checked across, on a machine with
/// two CPUs or more.
const MIN_MIGRATIONS_SEEN: u64 = 10;

/// How long a `migration` reader that has done its `--iters` waits for the migrator to move it
/// (the clock restarts at each move) before it fails: longer means the migrator stalled.
const MIGRATION_PATIENCE: Duration = Duration::from_secs(20);

/// How often the migrator may move a `migration` reader that has done its `--iters` without
/// the reader seeing one of those moves in a read that fell between two of them: more means
/// its reads never do, which is a failure of the op, not slowness.
const MAX_UNSEEN_MOVES: usize = 200;

/// How long a `migration` reader that has done its `--iters` sleeps between reads: it waits for
/// the migrator instead of competing with it (and with the readers still running sections)
/// for the CPUs. With 66 readers on 32 vCPUs, spinning readers left the migrator one move of
/// a reader per 20 s.
const MIGRATION_IDLE_READ: Duration = Duration::from_micros(200);

/// After the kernel's KVM `rseq_test`: the main thread hops every worker from CPU to CPU with
/// `sched_setaffinity`, making the worker's sequence count odd before each change and even
/// after it, while the workers read `current_cpu()`, ask the kernel (`getcpu(2)`), and run two
/// sections: one that adds to the current slot and returns that slot's id, and a `given(cpu)`
/// add on the CPU `current_cpu()` gave. When a worker's count is the same even number before
/// and after its reads, it sat on one CPU — the one it was last pinned to — all along, so
/// `current_cpu()`, `getcpu(2)` and the pin must agree, the `given` add must not report the
/// thread moved, and (under rseq) the slot the section touched must be that CPU: a stale CPU id
/// anywhere fails the run. Every worker runs the sections in its first `--iters` reads and
/// reads on until it has checked across `MIN_MIGRATIONS_SEEN` migrations of itself, sleeping
/// between those later reads (`MIGRATION_IDLE_READ`), so they check a thread that was moved
/// while it slept as the first ones check a thread moved while it ran. Each slot
/// must hold exactly the adds made for it. How many reads were comparable depends on scheduling
/// (a preempted migrator leaves a worker's count odd for a whole time slice), so it is
/// reported, not required.
fn migration(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let cpus = rseq_tests::allowed_cpus();
    let on_rseq = rseq::mode().is_rseq();
    let slots: PerCpu<IdSlot> = PerCpu::new(|id| IdSlot {
        id: AtomicUsize::new(id),
        count: AtomicUsize::new(0),
    });
    let given: PerCpu<AtomicUsize> = PerCpu::default();
    let n = slots.len();
    let per_thread =
        || -> Box<[AtomicUsize]> { (0..cfg.threads).map(|_| AtomicUsize::new(0)).collect() };
    // Per worker: the sequence count, the CPU it was last pinned to (`UNPINNED` before the
    // first hop), its kernel id while it reads (0 once it is done).
    const UNPINNED: usize = usize::MAX;
    let (seq, pinned) = (per_thread(), per_thread());
    pinned.iter().for_each(|p| p.store(UNPINNED, SeqCst));
    let tids: Box<[AtomicI32]> = (0..cfg.threads).map(|_| AtomicI32::new(0)).collect();
    // Per worker: how often the migrator moved it (for the patience message).
    let hopped = per_thread();
    let work = |t: usize, pacer: &Pacer| {
        tids[t].store(gettid(), SeqCst);
        let mut by_slot = vec![0u64; n];
        let mut by_given = vec![0u64; n];
        let (mut moved, mut checks, mut unstable, mut seen) = (0u64, 0u64, 0u64, 0u64);
        let mut last_pin = UNPINNED;
        let mut reads = 0usize;
        // After `--iters`: the move count at the last migration seen, and when the migrator
        // last moved the thread (with its count then).
        let mut overtime: Option<(usize, (Instant, usize))> = None;
        loop {
            let s0 = seq[t].load(SeqCst);
            let pin = pinned[t].load(SeqCst);
            let cpu = rseq::current_cpu();
            let kernel = getcpu_syscall();
            // The sections run for the first `--iters` reads; later reads only compare.
            let sections = (reads < cfg.iters).then(|| {
                let slot = (ops.slot_add)(&slots);
                let committed = add_on(&given, cpu, 1);
                (slot, committed)
            });
            fence(SeqCst);
            let s1 = seq[t].load(SeqCst);
            if let Some((slot, committed)) = sections {
                check(slot < n, || {
                    format!("the section returned slot {slot} of {n}")
                });
                by_slot[slot] += 1;
                if committed {
                    by_given[cpu] += 1;
                } else {
                    moved += 1;
                }
            }
            if s0 % 2 == 0 && s0 == s1 && pin != UNPINNED {
                checks += 1;
                check(cpu == kernel && cpu == pin, || {
                    format!(
                        "stale CPU id: thread {t} is pinned to CPU {pin} (sequence {s0} before \
                         and after its reads), current_cpu() says {cpu}, getcpu(2) says {kernel}"
                    )
                });
                if let Some((slot, committed)) = sections {
                    check(!on_rseq || slot == cpu, || {
                        format!("thread {t} pinned to CPU {cpu}: its section touched slot {slot}")
                    });
                    check(committed, || {
                        format!("thread {t} pinned to CPU {cpu}: add_on({cpu}) says it moved")
                    });
                }
                if pin != last_pin {
                    if last_pin != UNPINNED {
                        seen += 1;
                        // Patience is for the next migration.
                        overtime = None;
                    }
                    last_pin = pin;
                }
            } else {
                unstable += 1;
            }
            reads += 1;
            if reads >= cfg.iters {
                if seen >= MIN_MIGRATIONS_SEEN || cpus.len() < 2 {
                    break;
                }
                // Patience: the migrator must keep moving this thread, and some read must fall
                // between two of its moves.
                let now = hopped[t].load(SeqCst);
                let (unseen_since, last_move) =
                    overtime.get_or_insert_with(|| (now, (Instant::now(), now)));
                if now != last_move.1 {
                    *last_move = (Instant::now(), now);
                }
                let unseen = now - *unseen_since;
                check(
                    last_move.0.elapsed() < MIGRATION_PATIENCE && unseen < MAX_UNSEEN_MOVES,
                    || {
                        format!(
                            "thread {t} saw {seen} migrations of itself in {reads} reads, then \
                             none while the migrator moved it {unseen} times{}",
                            if unseen < MAX_UNSEEN_MOVES {
                                format!(
                                    " and then not at all for {MIGRATION_PATIENCE:?}: the \
                                     migrator stalled"
                                )
                            } else {
                                ": its reads never fell between two moves".to_string()
                            }
                        )
                    },
                );
                std::thread::sleep(MIGRATION_IDLE_READ);
            }
            pacer.tick();
        }
        tids[t].store(0, SeqCst);
        (by_slot, by_given, moved, checks, unstable, seen, reads)
    };
    let (mut hops, mut round) = (0u64, 0usize);
    let mut migrate = || {
        // One worker per call, to the next of the allowed CPUs, then 1-10 µs of rest as in
        // `rseq_test` (the sleep lasts longer: the timer slack).
        let t = round % cfg.threads;
        let tid = tids[t].load(SeqCst);
        if tid != 0 {
            let cpu = cpus[(t + round / cfg.threads) % cpus.len()];
            // SAFETY: a zeroed cpu_set_t is the empty set; the worker `tid` is alive (it clears
            // its id before it finishes, and stays alive until every worker is done).
            let rc = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                seq[t].fetch_add(1, SeqCst);
                let rc = libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set);
                pinned[t].store(cpu, SeqCst);
                seq[t].fetch_add(1, SeqCst);
                rc
            };
            check(rc == 0, || {
                format!(
                    "sched_setaffinity of thread {tid} to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                )
            });
            hops += 1;
            hopped[t].fetch_add(1, SeqCst);
        }
        round += 1;
        if cfg.signals {
            pause(cfg, Duration::ZERO);
        } else {
            std::thread::sleep(Duration::from_micros(round as u64 % 10 + 1));
        }
    };
    let results = run_workers(cfg, &work, Some(&mut migrate), None);
    for cpu in 0..n {
        let made = sum(results.iter().map(|r| r.0[cpu]));
        let got = slots.get(cpu).unwrap().count.load(SeqCst) as u64;
        check(got == made, || {
            format!("slot {cpu} holds {got}, but the sections said {made} adds went to it")
        });
        let made = sum(results.iter().map(|r| r.1[cpu]));
        let got = given.get(cpu).unwrap().load(SeqCst) as u64;
        check(got == made, || {
            format!("given slot {cpu} holds {got}, but {made} adds were committed for it")
        });
    }
    let total = sum(slots.iter().map(|s| s.count.load(SeqCst) as u64));
    let expected = (cfg.threads * cfg.iters) as u64;
    check(total == expected, || {
        format!("migration total {total}, expected {expected}")
    });
    let checks = sum(results.iter().map(|r| r.3));
    let reads = sum(results.iter().map(|r| r.6 as u64));
    check(checks > 0, || {
        "no read fell between two migrations".to_string()
    });
    Report {
        ops: expected,
        extra: vec![
            ("checks", checks.to_string()),
            ("reads", reads.to_string()),
            (
                "unstable_reads",
                sum(results.iter().map(|r| r.4)).to_string(),
            ),
            ("hops", hops.to_string()),
            (
                "migrations_seen",
                sum(results.iter().map(|r| r.5)).to_string(),
            ),
            ("moved", sum(results.iter().map(|r| r.2)).to_string()),
        ],
    }
}

/// Sections each `signal-handler` worker's handler must have run while the worker was at
/// work before the worker stops.
const MIN_HANDLED: u64 = 10;

/// How long a `signal-handler` worker that has done its `--iters` may go on until its handler
/// has run `MIN_HANDLED` sections: longer means the storm did not reach it.
const HANDLER_PATIENCE: Duration = Duration::from_secs(60);

/// Signal storms whose handler runs sections: the main thread sends SIGUSR1 to every worker
/// still at work every few µs (the storm is always on, `FAST_STORM_PAUSE`), and the handler
/// increments the current slot with the same load-add-store section the workers run on the
/// same counters, on the thread it interrupted — often in the middle of that thread's own
/// section, which must then restart rather than commit a value it loaded before the handler's
/// increment (in the fallback: the handler takes another slot lock than the one its thread
/// holds). Each worker runs its `--iters` increments and goes on until its handler has run
/// `MIN_HANDLED` sections while it worked. The sum over the slots must be the workers'
/// increments plus the handler's, exactly.
fn signal_handler(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let words: PerCpu<AtomicUsize> = PerCpu::default();
    HANDLER_SECTIONS.store(ops as *const Ops as *mut Ops, Release);
    HANDLER_WORDS.store(&words as *const _ as *mut _, Release);
    let min_handled = MIN_HANDLED;
    // The storm goes to the workers still at work (their kernel ids, 0 once done), not to
    // those waiting for the others.
    let working: Box<[AtomicI32]> = (0..cfg.threads).map(|_| AtomicI32::new(0)).collect();
    let work = |t: usize, pacer: &Pacer| {
        let mut done = 0u64;
        let mut overtime: Option<Instant> = None;
        while done < cfg.iters as u64 || HANDLED_HERE.with(Cell::get) < min_handled {
            (ops.rmw_add)(&words);
            done += 1;
            if done == 1 {
                ARMED.with(|a| a.set(true));
                working[t].store(gettid(), SeqCst);
            }
            if done >= cfg.iters as u64 {
                let since = *overtime.get_or_insert_with(Instant::now);
                check(since.elapsed() < HANDLER_PATIENCE, || {
                    format!(
                        "worker {t}'s handler ran {} sections in {done} increments and \
                         {HANDLER_PATIENCE:?} of storm: the storm does not reach it",
                        HANDLED_HERE.with(Cell::get)
                    )
                });
            }
            pacer.tick();
        }
        working[t].store(0, SeqCst);
        ARMED.with(|a| a.set(false));
        (done, HANDLED_HERE.with(Cell::get))
    };
    let results = run_workers(cfg, &work, None, Some(&working));
    HANDLER_WORDS.store(std::ptr::null_mut(), Release);
    let handler_ops = HANDLER_OPS.load(SeqCst) as u64;
    let handled = sum(results.iter().map(|r| r.1));
    check(handler_ops == handled, || {
        format!("the handler counted {handler_ops} sections, the threads {handled}")
    });
    let worker_ops = sum(results.iter().map(|r| r.0));
    let total = sum(words.iter().map(|w| w.load(SeqCst) as u64));
    check(total == worker_ops + handler_ops, || {
        format!(
            "the counters add up to {total}, expected {worker_ops} by the workers + \
             {handler_ops} by the handler = {}",
            worker_ops + handler_ops
        )
    });
    Report {
        ops: worker_ops,
        extra: vec![("handler_ops", handler_ops.to_string())],
    }
}

/// Threads each `churn` lane starts one after the other.
const CHURN_GENERATIONS: usize = 64;

/// Thread churn: each of the `--threads` lanes runs its `--iters` increments in
/// `CHURN_GENERATIONS` short-lived threads, one after the other, each exiting in the middle of
/// the workload and replaced by a fresh one (hundreds of thread lifetimes in all). The threads
/// alternate a `commit::add` and a load-add-store increment on two sets of counters; both sums
/// are exact. `--signals` and `--signal-every` reach the live threads through their kernel ids,
/// also while they start and exit. The runtime's statistics must account for every thread: in
/// the library's own registration, every thread that ran a section registered once and
/// unregistered at its exit, without failures or temporary areas; with glibc's registration or
/// the fallback, the library registered nothing.
fn churn(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let adds: PerCpu<AtomicUsize> = PerCpu::default();
    let rmws: PerCpu<AtomicUsize> = PerCpu::default();
    let lanes: Box<[AtomicI32]> = (0..cfg.threads).map(|_| AtomicI32::new(0)).collect();
    let before = rseq::stats();
    let work = |lane: usize, _: &Pacer| {
        let (mut add_count, mut rmw_count, mut lives, mut with_sections) = (0u64, 0u64, 0u64, 0u64);
        for g in 0..CHURN_GENERATIONS {
            let chunk =
                cfg.iters / CHURN_GENERATIONS + usize::from(g < cfg.iters % CHURN_GENERATIONS);
            let (a, r) = std::thread::scope(|s| {
                let life = std::thread::Builder::new()
                    .spawn_scoped(s, || {
                        lanes[lane].store(gettid(), SeqCst);
                        let pacer = Pacer::new(cfg, Peer::Lane(&lanes[(lane + 1) % cfg.threads]));
                        let (mut a, mut r) = (0u64, 0u64);
                        for i in 0..chunk {
                            if i % 2 == 0 {
                                (ops.counter_add)(&adds, 1);
                                a += 1;
                            } else {
                                (ops.rmw_add)(&rmws);
                                r += 1;
                            }
                            pacer.tick();
                        }
                        lanes[lane].store(0, SeqCst);
                        (a, r)
                    })
                    .unwrap_or_else(|e| fail(format!("cannot start a thread: {e}")));
                life.join()
                    .unwrap_or_else(|_| fail("a churn thread panicked"))
            });
            add_count += a;
            rmw_count += r;
            lives += 1;
            with_sections += u64::from(chunk > 0);
        }
        (add_count, rmw_count, lives, with_sections)
    };
    let results = run_workers(cfg, &work, None, Some(&lanes));
    let after = rseq::stats();
    for (name, slots, made) in [
        ("commit::add", &adds, sum(results.iter().map(|r| r.0))),
        ("load-add-store", &rmws, sum(results.iter().map(|r| r.1))),
    ] {
        let got = sum(slots.iter().map(|w| w.load(SeqCst) as u64));
        check(got == made, || {
            format!("{name} counters add up to {got}, expected {made}")
        });
    }
    let lifetimes = sum(results.iter().map(|r| r.2));
    let with_sections = sum(results.iter().map(|r| r.3));
    let registrations = after.registrations - before.registrations;
    let unregistrations = after.unregistrations - before.unregistrations;
    let failures = after.unregistration_failures - before.unregistration_failures;
    let temporary = after.temporary_registrations - before.temporary_registrations;
    let own = rseq::mode() == rseq::Mode::Rseq(rseq::Owner::Library);
    let want = if own { with_sections } else { 0 };
    check(
        registrations == want && unregistrations == want && failures == 0 && temporary == 0,
        || {
            format!(
                "{lifetimes} threads ({with_sections} ran sections) in {:?}: the runtime \
                 registered {registrations} areas and unregistered {unregistrations} \
                 ({failures} failures, {temporary} temporary); expected {want} and {want}",
                rseq::mode()
            )
        },
    );
    Report {
        ops: (cfg.threads * cfg.iters) as u64,
        extra: vec![
            ("lifetimes", lifetimes.to_string()),
            ("registrations", registrations.to_string()),
            ("unregistrations", unregistrations.to_string()),
            ("unregistration_failures", failures.to_string()),
        ],
    }
}

/// Sections the main thread runs before `fork`, so that it has a registration to pass on.
const MAIN_OPS: usize = 1000;

/// `fork` in the middle of a run: the workers add to per-CPU counters while the main thread
/// forks once half of their work is done. The child — only the forking thread survives — has
/// its own copy of the counters and of the main thread's registration: it checks that
/// `current_cpu()` follows it as it pins itself to each allowed CPU (the kernel updates the
/// inherited area) and, under rseq with `cpu_id`, that its sections touch that CPU's slot, that
/// the library did not register it again, that a fence works (membarrier registers anew in the
/// child), then runs `--threads` workers of its own for half the iterations under the same
/// perturbations; its counters must hold exactly its copy plus its own adds, and in the
/// library's own registration each of its threads must have registered and unregistered once.
/// It prints `child_…` lines and exits 0 or 1. The parent's counters must hold exactly its
/// own adds (nothing from the child), and the child's exit status must be 0.
///
/// In the fallback, the workers wait between two sections while the main thread forks: a slot
/// lock held by another thread at `fork` stays held in the child (as the runtime documents),
/// so this op cannot fork through a fallback section. Under rseq they run on through the fork.
fn fork_op(cfg: &Config) -> Report {
    let ops = cfg.ops();
    let counters: PerCpu<AtomicUsize> = PerCpu::default();
    for _ in 0..MAIN_OPS {
        (ops.counter_add)(&counters, 1);
    }
    let on_rseq = rseq::mode().is_rseq();
    // Work done by all workers, in steps of `STEP` (to decide when to fork).
    const STEP: usize = 64;
    let progress = AtomicUsize::new(0);
    let (gate, parked, finished) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    // Control counters, one per worker, written with a plain load and store (no rseq, no
    // atomic read-modify-write) next to every section. If the parent's sections come up short
    // after the fork, these tell whether plain writes were lost too: then the environment (the
    // kernel's copy-on-write, or an emulator's TLB) lost writes across the fork, not the
    // sections.
    let control: Vec<rseq::CachePadded<AtomicUsize>> = (0..cfg.threads)
        .map(|_| rseq::CachePadded::new(AtomicUsize::new(0)))
        .collect();
    let work = |t: usize, pacer: &Pacer| {
        let mine = &*control[t];
        for i in 0..cfg.iters {
            if gate.load(SeqCst) {
                parked.fetch_add(1, SeqCst);
                while gate.load(SeqCst) {
                    std::hint::spin_loop();
                }
                parked.fetch_sub(1, SeqCst);
            }
            (ops.counter_add)(&counters, 1);
            mine.store(mine.load(Relaxed) + 1, Relaxed);
            if i % STEP == STEP - 1 {
                progress.fetch_add(STEP, SeqCst);
            }
            pacer.tick();
        }
        finished.fetch_add(1, SeqCst);
    };
    let half = cfg.threads * cfg.iters / 2;
    // Forks; returns the child's id and the workers' progress at the fork.
    let fork_now = |running: bool| {
        if !on_rseq {
            gate.store(true, SeqCst);
            while running && parked.load(SeqCst) + finished.load(SeqCst) < cfg.threads {
                std::hint::spin_loop();
            }
        }
        let done = progress.load(SeqCst);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        // SAFETY: the child only uses what survives a fork of a multithreaded process here:
        // memory it owns, glibc (which makes malloc usable in the child) and new threads; no
        // lock another thread could hold (see above for the fallback's).
        let pid = match unsafe { libc::fork() } {
            -1 => fail(format!("fork: {}", std::io::Error::last_os_error())),
            0 => fork_child(cfg, &counters, &control),
            pid => pid,
        };
        gate.store(false, SeqCst);
        (pid, done)
    };
    let mut child: Option<(libc::pid_t, usize)> = None;
    let mut background = || {
        if child.is_none() && progress.load(SeqCst) >= half {
            child = Some(fork_now(true));
        }
        pause(cfg, Duration::from_micros(200));
    };
    run_workers(cfg, &work, Some(&mut background), None);
    // If the workers were faster than the main thread's polling, fork now, after the run.
    let (pid, at_fork) = child.unwrap_or_else(|| fork_now(false));
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a live local.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    check(rc == pid, || {
        format!("waitpid: {}", std::io::Error::last_os_error())
    });
    check(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        || format!("the forked child failed (wait status {status:#x}); its output is above"),
    );
    let total = sum(counters.iter().map(|c| c.load(SeqCst) as u64));
    let expected = (MAIN_OPS + cfg.threads * cfg.iters) as u64;
    let control_total = sum(control.iter().map(|c| c.load(SeqCst) as u64));
    let control_expected = (cfg.threads * cfg.iters) as u64;
    check(
        total == expected && control_total == control_expected,
        || {
            let control = if control_total == control_expected {
                "the control counters (plain stores, no rseq) are exact".to_string()
            } else {
                format!(
                    "the control counters (plain stores, no rseq) add up to {control_total}, \
                 expected {control_expected}: writes were lost across the fork whatever \
                 wrote them"
                )
            };
            format!(
                "the parent's counters add up to {total}, expected {expected} ({MAIN_OPS} by the \
             main thread); {control}"
            )
        },
    );
    Report {
        ops: (cfg.threads * cfg.iters) as u64,
        extra: vec![
            ("main_ops", MAIN_OPS.to_string()),
            ("forked_at_ops", at_fork.to_string()),
            ("child_exit", "0".into()),
        ],
    }
}

/// The forked child of `fork_op`: never returns.
fn fork_child(
    cfg: &Config,
    counters: &PerCpu<AtomicUsize>,
    control: &[rseq::CachePadded<AtomicUsize>],
) -> ! {
    IN_CHILD.store(true, SeqCst);
    let ops = cfg.ops();
    let sum_now = || sum(counters.iter().map(|c| c.load(SeqCst) as u64));
    let copy = sum_now();
    // Nobody writes the child's copy of the parent's control counters.
    let control_now = || sum(control.iter().map(|c| c.load(SeqCst) as u64));
    let control_copy = control_now();
    let before = rseq::stats();
    let aborts_before = ABORTS.load(SeqCst);
    let mode = rseq::mode();
    // The inherited registration: current_cpu() must follow the thread from CPU to CPU.
    let cpus = rseq_tests::allowed_cpus();
    let mut pin_ops = 0u64;
    for &cpu in &cpus {
        check(rseq_tests::pin_to_cpu(cpu), || {
            format!("child: cannot pin to CPU {cpu}")
        });
        let (current, kernel) = (rseq::current_cpu(), getcpu_syscall());
        check(current == cpu && kernel == cpu, || {
            format!("child pinned to CPU {cpu}: current_cpu() says {current}, getcpu(2) {kernel}")
        });
        let slot_before = counters.get(cpu).unwrap().load(SeqCst);
        (ops.counter_add)(counters, 1);
        pin_ops += 1;
        if mode.is_rseq() && cfg.index == Index::CpuId {
            let slot_after = counters.get(cpu).unwrap().load(SeqCst);
            check(slot_after == slot_before + 1, || {
                format!(
                    "child pinned to CPU {cpu}: its add went elsewhere (slot {cpu}: \
                     {slot_before} -> {slot_after})"
                )
            });
        }
    }
    rseq_tests::allow_cpus(&cpus);
    let registered = rseq::stats().registrations - before.registrations;
    check(registered == 0, || {
        format!(
            "the child's main thread registered {registered} times: it should have inherited \
             its registration"
        )
    });
    rseq::fence_all().unwrap_or_else(|e| fail(format!("child: fence_all: {e}")));
    let child_cfg = Config {
        op: cfg.op.clone(),
        iters: cfg.iters / 2,
        delays: Vec::new(),
        ..*cfg
    };
    let work = |_t: usize, pacer: &Pacer| {
        for _ in 0..child_cfg.iters {
            (ops.counter_add)(counters, 1);
            pacer.tick();
        }
    };
    run_workers(&child_cfg, &work, None, None);
    let child_ops = (child_cfg.threads * child_cfg.iters) as u64;
    let total = sum_now();
    let control_total = control_now();
    check(
        total == copy + pin_ops + child_ops && control_total == control_copy,
        || {
            let control = if control_total == control_copy {
                "its copy of the parent's control counters (plain stores, no rseq) is unchanged"
                    .to_string()
            } else {
                format!(
                    "its copy of the parent's control counters (plain stores, no rseq), which \
                     nobody writes in the child, went from {control_copy} to {control_total}: \
                     the parent's writes reached the child's memory"
                )
            };
            format!(
                "the child's counters add up to {total}, expected {copy} (its copy) + \
                 {pin_ops} + {child_ops} (its own adds); {control}"
            )
        },
    );
    let after = rseq::stats();
    let own = mode == rseq::Mode::Rseq(rseq::Owner::Library);
    let want = if own && child_cfg.iters > 0 {
        child_cfg.threads as u64
    } else {
        0
    };
    let (registrations, unregistrations) = (
        after.registrations - before.registrations,
        after.unregistrations - before.unregistrations,
    );
    check(registrations == want && unregistrations == want, || {
        format!(
            "the child's {} threads registered {registrations} areas and unregistered \
             {unregistrations} in {mode:?}; expected {want} each",
            child_cfg.threads
        )
    });
    // Differences: at the fork another thread may have been between its two counts of an abort.
    let aborts = (ABORTS.load(SeqCst) - aborts_before) as u64;
    let runtime_aborts = after.aborts - before.aborts;
    check(mode.is_rseq() || aborts == 0, || {
        format!("child: {aborts} aborts in {mode:?}")
    });
    check(aborts == runtime_aborts, || {
        format!("child: the sections counted {aborts} aborts, the runtime {runtime_aborts}")
    });
    say("copy", copy);
    say("ops", child_ops + pin_ops);
    say("aborts", aborts);
    say("result", "ok");
    exit(0)
}

const USAGE: &str = "usage: rseq-stress <op> [--threads N] [--iters N] [--index cpu_id|mm_cid] \
                     [--commit relaxed|release] [--yield-every N] [--sleep-every N \
                     [--sleep-us U]] [--signal-every N] [--signals] \
                     [--delay K=N[,K=N...] | --delay-all N] [--deny-membarrier] [--slots N]\n       \
                     rseq-stress --list   (prints the ops)";

fn usage(msg: &str) -> ! {
    let ops: Vec<&str> = OP_SPECS.iter().map(|s| s.name).collect();
    eprintln!("rseq-stress: {msg}\n{USAGE}\nops: {}", ops.join(" "));
    exit(2)
}

fn parse_args() -> (Config, &'static OpSpec) {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| usage("missing op"));
    if op == "--list" {
        if let Some(extra) = args.next() {
            usage(&format!("--list takes no arguments, found {extra}"));
        }
        for spec in OP_SPECS {
            println!("{}", spec.name);
        }
        exit(0);
    }
    let name = OP_ALIASES
        .iter()
        .find(|(alias, _)| *alias == op)
        .map_or(op.as_str(), |(_, name)| name);
    let spec = OP_SPECS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| usage(&format!("unknown op {op}")));
    let mut cfg = Config {
        op,
        threads: 6,
        iters: 100_000,
        index: Index::CpuId,
        commit: spec.commit,
        yield_every: 0,
        sleep_every: 0,
        sleep: Duration::from_millis(1),
        signal_every: 0,
        signals: false,
        storm_pause: STORM_PAUSE,
        delays: Vec::new(),
        deny_membarrier: false,
        slots: 0,
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
            "--sleep-every" => cfg.sleep_every = number("--sleep-every"),
            "--sleep-us" => cfg.sleep = Duration::from_micros(number("--sleep-us") as u64),
            "--signal-every" => cfg.signal_every = number("--signal-every"),
            "--signals" => cfg.signals = true,
            "--deny-membarrier" => cfg.deny_membarrier = true,
            "--slots" => cfg.slots = number("--slots").max(1),
            "--index" => {
                index = Some(match args.next().as_deref() {
                    Some("cpu_id") => Index::CpuId,
                    Some("mm_cid") => Index::MmCid,
                    _ => usage("--index takes cpu_id or mm_cid"),
                })
            }
            "--commit" => {
                let commit = match args.next().as_deref() {
                    Some("relaxed") => Commit::Relaxed,
                    Some("release") => Commit::Release,
                    _ => usage("--commit takes relaxed or release"),
                };
                if spec.commit.is_none() {
                    usage(&format!(
                        "{} commits with `commit::add`: --commit does not apply",
                        cfg.op
                    ));
                }
                cfg.commit = Some(commit);
            }
            "--delay" | "--delay-all" => {
                let value = args
                    .next()
                    .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
                cfg.delays.extend(parse_delays(&arg, &value));
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    match (spec.name, index) {
        ("counter-mm-cid", Some(Index::CpuId)) | ("given-cpu" | "migration", Some(_)) => {
            usage(&format!("{} has a fixed index", cfg.op))
        }
        ("counter-mm-cid", _) => cfg.index = Index::MmCid,
        (_, Some(i)) => cfg.index = i,
        _ => {}
    }
    if spec.name == "signal-handler" {
        // The op is the storm: always on, and faster than `--signals` alone.
        cfg.signals = true;
        cfg.storm_pause = FAST_STORM_PAUSE;
    }
    (cfg, spec)
}

/// `--delay K=N[,K=N...]` or `--delay-all N`: loop counts per injection point.
#[cfg(feature = "inject")]
fn parse_delays(option: &str, value: &str) -> Vec<(usize, u32)> {
    let count = |n: &str| {
        n.parse::<u32>()
            .unwrap_or_else(|_| usage(&format!("{option}: {n:?} is not a loop count")))
    };
    if option == "--delay-all" {
        let n = count(value);
        return (0..rseq::inject::POINTS).map(|k| (k, n)).collect();
    }
    value
        .split(',')
        .map(|pair| {
            let (k, n) = pair
                .split_once('=')
                .unwrap_or_else(|| usage(&format!("--delay takes K=N pairs, found {pair:?}")));
            let k = k
                .parse::<usize>()
                .ok()
                .filter(|&k| k < rseq::inject::POINTS)
                .unwrap_or_else(|| {
                    usage(&format!(
                        "--delay: {k:?} is no injection point (0 to {})",
                        rseq::inject::POINTS - 1
                    ))
                });
            (k, count(n))
        })
        .collect()
}

/// Without the `inject` feature the sections have no injection points: a usage error.
#[cfg(not(feature = "inject"))]
fn parse_delays(option: &str, _value: &str) -> Vec<(usize, u32)> {
    usage(&format!(
        "{option} needs the sections' injection points: build rseq-stress with the `inject` \
         feature (cargo run -p rseq-tests --features inject --bin rseq-stress -- ...)"
    ))
}

fn main() {
    // A panicking worker ends the run at once (the others would wait for it forever).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        println!("result=fail");
        exit(1)
    }));
    let (cfg, spec) = parse_args();
    if cfg.deny_membarrier {
        // Before the mode is decided: fences must then work without membarrier.
        rseq_tests::deny_membarrier().unwrap_or_else(|e| {
            println!("result=fail");
            eprintln!("cannot install the seccomp filter that denies membarrier: {e}");
            exit(1)
        });
    }
    if cfg.slots != 0 {
        if let Err(e) = rseq::test_support::set_fallback_slots(cfg.slots) {
            println!("result=fail");
            eprintln!("--slots {}: {e}", cfg.slots);
            exit(1)
        }
    }
    if cfg.signals || cfg.signal_every != 0 {
        install_signal_handler();
    }
    if cfg.storm_pause < STORM_PAUSE {
        // A timer slack of 1 µs, so that the main thread's short sleeps stay short.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    }
    #[cfg(feature = "inject")]
    for &(point, loops) in &cfg.delays {
        rseq::inject::set_delay(point, loops);
    }
    let mode = rseq::mode();
    println!("op={}", cfg.op);
    println!("mode={mode:?}");
    println!("fence={:?}", rseq::fence_mechanism());
    // CPU slots, as `--slots` sets them (the table has the spare besides).
    println!("fallback_slots={}", rseq::fallback::slots() - 1);
    println!(
        "index={}",
        match (spec.name, cfg.index) {
            ("given-cpu", _) => "given",
            (_, Index::CpuId) => "cpu_id",
            (_, Index::MmCid) => "mm_cid",
        }
    );
    println!(
        "commit={}",
        match cfg.commit {
            None => "add",
            Some(Commit::Relaxed) => "relaxed",
            Some(Commit::Release) => "release",
        }
    );
    println!("threads={}", cfg.threads);
    println!("iters={}", cfg.iters);
    println!("cpus={}", rseq_tests::allowed_cpus().len());
    for (key, every) in [
        ("yield_every", cfg.yield_every),
        ("sleep_every", cfg.sleep_every),
        ("signal_every", cfg.signal_every),
    ] {
        if every != 0 {
            println!("{key}={every}");
        }
    }
    if cfg.sleep_every != 0 {
        println!("sleep_us={}", cfg.sleep.as_micros());
    }
    if cfg.signals {
        println!("storm_pause_us={}", cfg.storm_pause.as_micros());
    }
    if !cfg.delays.is_empty() {
        let delays: Vec<String> = (0..rseq::inject::POINTS)
            .map(|k| format!("{k}:{}", rseq::inject::delay(k)))
            .collect();
        println!("delays={}", delays.join(","));
    }
    let start = Instant::now();
    let report = (spec.run)(&cfg);
    let elapsed = start.elapsed();
    let aborts = ABORTS.load(Relaxed) as u64;
    let stats = rseq::stats();
    println!("ops={}", report.ops);
    for (key, value) in &report.extra {
        println!("{key}={value}");
    }
    if cfg.signal_every != 0 {
        println!("peer_signals={}", PEER_SIGNALS.load(Relaxed));
    }
    if cfg.signals || cfg.signal_every != 0 {
        println!("signals_handled={}", SIGNALS_HANDLED.load(Relaxed));
    }
    println!("aborts={aborts}");
    println!("stats_aborts={}", stats.aborts);
    println!(
        "fallback_sections={}",
        WORKER_FALLBACK_SECTIONS.load(SeqCst)
    );
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

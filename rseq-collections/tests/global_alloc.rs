//! `PerCpuAlloc` as the global allocator of this test binary, over a checking inner allocator.
//!
//! The inner allocator (`CountingInner`, over `System`) counts live blocks and bytes and keeps
//! a small header before each block with the layout it was allocated with and a liveness mark,
//! so a block freed with another layout than it was allocated with, or freed twice, is counted
//! (and the tests check both counts stay 0).
//!
//! Each test runs in this process (in whatever mode the environment gives, alongside the other
//! tests), and `every_test_in_every_mode` runs each of them again alone in a child process (this
//! binary, `--exact <test>`) in each of the three modes: glibc's registration, the library's own
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`) and the fallback (`RSEQ_DISABLE=1`), as far as the
//! system has them (see `modes`). The exact leak check (the inner allocator's live blocks come
//! back to where they were, give or take the blocks sitting in the caches) only runs in those
//! children, where no other test allocates meanwhile. Under an emulator the workloads are a
//! twentieth of their size (`modes::rounds`).

mod modes;

use rseq_collections::alloc::{
    block_size, max_cached_blocks, AllocStats, PerCpuAlloc, MAX_SMALL_SIZE, SIZE_CLASSES,
};
use rseq_rt::test_support::{output_watched, test_child, test_child_under, CHILD_DEADLINE};
use rseq_rt::{FallbackReason, Mode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;

/// Counts and checks what reaches the inner allocator.
struct CountingInner {
    live_blocks: AtomicIsize,
    live_bytes: AtomicIsize,
    allocs: AtomicUsize,
    /// Frees whose layout differs from the block's allocation.
    mismatches: AtomicUsize,
    /// Frees of a block already freed (as far as its header can tell).
    double_frees: AtomicUsize,
}

thread_local! {
    /// Requests this thread made to the inner allocator with a small layout that is not a
    /// class layout (the front-end should never do that, except once for its own state).
    static ODD_SMALL: Cell<u64> = const { Cell::new(0) };
    /// The last layout this thread asked the inner allocator for: (size, align).
    static LAST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Header marks (XORed with log2 of the alignment, in the low bits); the low half on 32-bit targets.
const LIVE: usize = 0x5eed_0000_a110_c8ed_u64 as usize;
const FREED: usize = 0xdead_0000_f4ee_d000_u64 as usize;

impl CountingInner {
    const fn new() -> Self {
        CountingInner {
            live_blocks: AtomicIsize::new(0),
            live_bytes: AtomicIsize::new(0),
            allocs: AtomicUsize::new(0),
            mismatches: AtomicUsize::new(0),
            double_frees: AtomicUsize::new(0),
        }
    }

    /// The layout of the underlying `System` block and the header's length.
    fn outer(layout: Layout) -> (Layout, usize) {
        let head = layout.align().max(16);
        let outer = Layout::from_size_align(layout.size() + head, head).unwrap();
        (outer, head)
    }
}

// SAFETY: forwards to `System` with room for a header in front of each block.
unsafe impl GlobalAlloc for CountingInner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (outer, head) = Self::outer(layout);
        let raw = System.alloc(outer);
        if raw.is_null() {
            return raw;
        }
        let user = raw.add(head);
        let words = user.cast::<usize>().sub(2);
        words.write(layout.size());
        words
            .add(1)
            .write(layout.align().trailing_zeros() as usize ^ LIVE);
        self.live_blocks.fetch_add(1, Relaxed);
        self.live_bytes.fetch_add(layout.size() as isize, Relaxed);
        self.allocs.fetch_add(1, Relaxed);
        let is_class = layout.align() == 16 && SIZE_CLASSES.contains(&layout.size());
        if layout.size() <= MAX_SMALL_SIZE && layout.align() <= 16 && !is_class {
            ODD_SMALL.set(ODD_SMALL.get() + 1);
        }
        LAST.set((layout.size(), layout.align()));
        user
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let words = ptr.cast::<usize>().sub(2);
        let (size, mark) = (words.read(), words.add(1).read());
        if mark == (layout.align().trailing_zeros() as usize ^ FREED)
            || mark & !0xffff != LIVE & !0xffff
        {
            // Freed already (or not ours): leave it alone.
            self.double_frees.fetch_add(1, Relaxed);
            return;
        }
        let stored = Layout::from_size_align(size, 1 << (mark ^ LIVE)).unwrap();
        if stored != layout {
            self.mismatches.fetch_add(1, Relaxed);
        }
        words
            .add(1)
            .write(stored.align().trailing_zeros() as usize ^ FREED);
        self.live_blocks.fetch_sub(1, Relaxed);
        self.live_bytes.fetch_sub(stored.size() as isize, Relaxed);
        let (outer, head) = Self::outer(stored);
        System.dealloc(ptr.sub(head), outer);
    }
}

#[global_allocator]
static GLOBAL: PerCpuAlloc<CountingInner> = PerCpuAlloc::new(CountingInner::new());

/// Set in the child processes, to the mode they run in (`glibc`, `library` or `fallback`).
const CHILD_ENV: &str = "RSEQ_COLLECTIONS_GLOBAL_ALLOC_CHILD";

/// Set in the child processes that run with membarrier denied by a seccomp filter, which
/// [`deny_before_main`] installs.
const DENY_ENV: &str = match DENY_ENV_C.to_str() {
    Ok(name) => name,
    Err(_) => panic!("a UTF-8 name"),
};

/// [`DENY_ENV`] for `getenv` (before `main`, `std::env` would allocate).
const DENY_ENV_C: &std::ffi::CStr = c"RSEQ_COLLECTIONS_TEST_DENY";

/// The errno with which [`deny_before_main`] failed to install its filter (0: it did not fail).
static DENY_FAILED: AtomicI32 = AtomicI32::new(0);

/// In a process with [`DENY_ENV`] set, denies membarrier (as on Linux 4.18–5.9, rseq without
/// membarrier) before `main`, so before the allocator decides the mode at the first allocation.
/// A constructor rather than a `pre_exec` hook: a hook makes `Command::spawn` fork and wait for
/// the exec, and a child stuck before its exec (a qemu-user deadlock) would hang inside `spawn`,
/// out of the watcher's reach.
#[used]
#[unsafe(link_section = ".init_array")]
static DENY_BEFORE_MAIN: extern "C" fn() = deny_before_main;

extern "C" fn deny_before_main() {
    // SAFETY: a NUL-terminated name; nothing else runs before `main` that sets the environment.
    let set = unsafe { !libc::getenv(DENY_ENV_C.as_ptr()).is_null() };
    if set {
        if let Err(e) = rseq_rt::test_support::deny_syscall_with(libc::SYS_membarrier, libc::ENOSYS)
        {
            DENY_FAILED.store(e.raw_os_error().unwrap_or(-1), Relaxed);
        }
    }
}

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Checks that the process runs in the mode its environment implies, and prints it for the
/// parent, with the counters.
fn report(test: &str) {
    let expected = modes::expected_mode();
    assert_eq!(
        rseq_rt::mode(),
        expected.mode,
        "{test}: mode (expected because {})",
        expected.because
    );
    let deny_failed = DENY_FAILED.load(Relaxed);
    assert_eq!(
        deny_failed, 0,
        "{test}: the seccomp filter that denies membarrier failed with errno {deny_failed}"
    );
    if std::env::var_os(DENY_ENV).is_some() && rseq_rt::mode().is_rseq() {
        assert_eq!(
            rseq_rt::fence_mechanism(),
            rseq_rt::FenceMechanism::Migration,
            "{test}: membarrier is denied, fences must move the thread between CPUs"
        );
    }
    // On a line of its own: the test harness has printed `test name ... ` without a newline.
    println!("\nmode={:?}", rseq_rt::mode());
    println!("fence={:?}", rseq_rt::fence_mechanism());
    println!("{test}: alloc {:?}", GLOBAL.stats());
    println!("{test}: runtime {:?}", rseq_rt::stats());
}

/// The inner allocator's live blocks that belong to users (not sitting in a cache). Exact when
/// no other thread allocates.
fn user_live_blocks() -> isize {
    program_blocks(GLOBAL.inner(), GLOBAL.stats())
}

/// The blocks a program holds, from the inner allocator's live count and the front-end's
/// stats: the inner allocator's blocks that are not the front-end's own (its state, spans …)
/// nor cached, and the blocks out of spans that are not cached.
fn program_blocks(inner: &CountingInner, stats: AllocStats) -> isize {
    inner.live_blocks.load(Relaxed) - stats.own_allocations as isize
        + stats.span_blocks_out as isize
        - stats.cached_blocks as isize
        - stats.transfer_blocks as isize
}

/// [`user_live_blocks`] once it holds still: the same over two reads 20 ms apart. Right after
/// the test thread starts, libtest's main thread is still allocating (it then waits on a
/// channel); if it is in the middle of a cache refill (16 blocks counted live, then 15 pushed
/// to the cache one by one), a single read of `live - cached` is off by up to a batch. Seen
/// under qemu-user: 405 instead of 422 before a workload, about once in 150 child runs.
fn settled_user_live_blocks() -> isize {
    let mut last = user_live_blocks();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = user_live_blocks();
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the allocator's live block count did not settle in 2 s (other threads allocating?)");
}

/// In a child, where only the one test runs: the program holds as many blocks after the
/// workload as before it, give or take the few the test harness's own thread may hold.
fn assert_no_leak(before: isize, after: isize) {
    assert!(
        (after - before).abs() <= 8,
        "leak: {before} user blocks before the workload, {after} after"
    );
}

fn assert_no_misuse() {
    let inner = GLOBAL.inner();
    assert_eq!(
        inner.mismatches.load(Relaxed),
        0,
        "blocks freed with another layout"
    );
    assert_eq!(inner.double_frees.load(Relaxed), 0, "blocks freed twice");
    let cached = GLOBAL.stats().cached_blocks;
    // One cache per slot (the CPUs' and the fallback's spare), each class's stack at most its
    // bound.
    let per_cpu: usize = SIZE_CLASSES
        .iter()
        .map(|&size| max_cached_blocks(Layout::from_size_align(size, 16).unwrap()).unwrap())
        .sum();
    let bound = (rseq_rt::possible_cpus() + 1) * per_cpu;
    assert!(cached <= bound, "{cached} cached blocks, more than {bound}");
}

/// A tiny deterministic generator.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// An object that crosses threads.
enum Obj {
    Text(String),
    Bytes(Box<[u8]>),
    Tree(BTreeMap<u32, String>),
}

impl Obj {
    fn check(&self) {
        match self {
            Obj::Text(s) => assert!(s.starts_with("obj ")),
            Obj::Bytes(b) => assert!(b.iter().all(|&x| x == b.len() as u8)),
            Obj::Tree(t) => assert!(t.iter().all(|(k, v)| *v == k.to_string())),
        }
    }
}

/// One thread's part of the workload: collections of every size, half of what it makes sent to
/// the next thread (which frees it), what the previous thread sent checked and freed.
fn worker(id: usize, rounds: usize, next: mpsc::Sender<Vec<Obj>>, prev: mpsc::Receiver<Vec<Obj>>) {
    let mut rng = Lcg(id as u64 + 1);
    for round in 0..rounds {
        let mut map: HashMap<u64, String> = HashMap::new();
        for k in 0..32 {
            map.insert(k, format!("{id}-{k}-{round}"));
        }
        let mut tree: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for k in 0..32usize {
            tree.insert(format!("key {k}"), vec![k as u8; (k * 11) % 300]);
        }
        let mut outgoing = Vec::new();
        for _ in 0..16 {
            let len = 1 + rng.next() as usize % 400;
            outgoing.push(match rng.next() % 3 {
                0 => Obj::Text(format!("obj {id} {round} {}", "x".repeat(len % 100))),
                1 => Obj::Bytes(vec![len as u8; len].into_boxed_slice()),
                _ => Obj::Tree((0..len as u32 % 20).map(|k| (k, k.to_string())).collect()),
            });
        }
        for k in 0..32 {
            assert_eq!(map[&k], format!("{id}-{k}-{round}"));
        }
        for (k, (key, v)) in tree.iter().enumerate() {
            assert!(key.starts_with("key "));
            assert!(
                v.iter().all(|&b| b == v.first().copied().unwrap_or(0)),
                "{k}"
            );
        }
        let keep = outgoing.split_off(outgoing.len() / 2);
        next.send(outgoing).unwrap();
        keep.iter().for_each(Obj::check);
        while let Ok(objs) = prev.try_recv() {
            objs.iter().for_each(Obj::check);
        }
    }
    drop(next);
    for objs in prev {
        objs.iter().for_each(Obj::check);
    }
}

/// `threads` workers in a ring.
fn ring(threads: usize, rounds: usize) {
    let (mut senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel()).unzip();
    // Worker `id` sends to worker `id + 1` and receives from worker `id - 1`.
    senders.rotate_left(1);
    let mut receivers: Vec<Option<mpsc::Receiver<Vec<Obj>>>> =
        receivers.into_iter().map(Some).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(id, next)| {
                let prev = receivers[id].take().unwrap();
                s.spawn(move || worker(id, rounds, next, prev))
            })
            .collect();
        join_all(workers);
    });
}

/// Joins scoped threads one by one. The leak checks need this: a scope's own wait returns once
/// the threads' closures are done, possibly before their thread-local destructors (and the
/// runtime's exit hook) have run and freed their blocks; `join` waits for the threads to exit.
fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) {
    for h in handles {
        h.join().unwrap();
    }
}

/// Allocates (and frees) in a thread-local destructor. Rust's thread-local destructors run
/// before the runtime's exit hook here (it was registered first, by the thread's first free).
struct AllocOnDrop(Vec<String>);
impl Drop for AllocOnDrop {
    fn drop(&mut self) {
        let joined = self.0.join(",");
        let boxed: Vec<Box<[u8; 24]>> = (0..8).map(|i| Box::new([i; 24])).collect();
        assert_eq!(
            joined.len(),
            self.0.iter().map(|s| s.len() + 1).sum::<usize>() - 1
        );
        drop(boxed);
    }
}

thread_local! {
    static LATE: RefCell<AllocOnDrop> = const { RefCell::new(AllocOnDrop(Vec::new())) };
}

// glibc runs pthread key destructors after every Rust thread-local destructor, so after the
// runtime's exit hook: sections there run under a temporary registration (library mode).
#[allow(non_camel_case_types)]
type pthread_key_t = std::ffi::c_uint;
extern "C" {
    fn pthread_key_create(
        key: *mut pthread_key_t,
        dtor: Option<unsafe extern "C" fn(*mut std::ffi::c_void)>,
    ) -> std::ffi::c_int;
    fn pthread_setspecific(key: pthread_key_t, value: *const std::ffi::c_void) -> std::ffi::c_int;
}

/// Frees the strings it was given and allocates more, after the exit hook.
unsafe extern "C" fn after_exit_hook(value: *mut std::ffi::c_void) {
    // SAFETY: set by `arm_after_exit_hook`, run once.
    let strings = unsafe { Box::from_raw(value.cast::<Vec<String>>()) };
    let more: Vec<String> = strings.iter().map(|s| format!("{s}!")).collect();
    assert!(more.iter().all(|s| s.ends_with('!')));
    drop((strings, more));
}

fn arm_after_exit_hook(strings: Vec<String>) {
    static KEY: std::sync::OnceLock<pthread_key_t> = std::sync::OnceLock::new();
    let key = *KEY.get_or_init(|| {
        let mut key = 0;
        // SAFETY: a valid out-pointer and destructor.
        assert_eq!(
            unsafe { pthread_key_create(&mut key, Some(after_exit_hook)) },
            0
        );
        key
    });
    let value = Box::into_raw(Box::new(strings));
    // SAFETY: a key of this process; the destructor takes the value back.
    assert_eq!(unsafe { pthread_setspecific(key, value.cast()) }, 0);
}

/// Short-lived threads: allocate, hand objects to the joiner (freed there), allocate in
/// thread-local destructors, before and after the runtime's exit hook.
fn churn(waves: usize, per_wave: usize) {
    for wave in 0..waves {
        let handles: Vec<_> = (0..per_wave)
            .map(|i| {
                std::thread::spawn(move || {
                    LATE.with(|l| {
                        l.borrow_mut()
                            .0
                            .extend((0..4).map(|k| format!("{wave}.{i}.{k}")))
                    });
                    arm_after_exit_hook((0..6).map(|k| format!("late {k}")).collect());
                    let v: Vec<String> = (0..20).map(|k| k.to_string()).collect();
                    let b = Box::new([wave as u8; 100]);
                    (v, b)
                })
            })
            .collect();
        for h in handles {
            let (v, b) = h.join().unwrap();
            assert_eq!(v[19], "19");
            assert!(b.iter().all(|&x| x == wave as u8));
        }
    }
}

#[test]
fn collections_workload() {
    let threads = (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).max(8);
    // Warm up: std's lazily allocated globals, the allocator's state.
    ring(threads, 5);
    churn(1, 4);
    let before = settled_user_live_blocks();
    ring(threads, modes::rounds(800));
    churn(modes::rounds(40), 8);
    let after = settled_user_live_blocks();
    assert_no_misuse();
    report("collections_workload");
    println!("collections_workload: user-live inner blocks before {before}, after {after}");
    if in_child() {
        // Only this test runs in the child: every block is freed or cached.
        assert_no_leak(before, after);
        if rseq_rt::mode() == rseq_rt::Mode::Rseq(rseq_rt::Owner::Library) {
            // The pthread key destructors ran sections after the exit hook.
            assert!(rseq_rt::stats().temporary_registrations > 0);
        }
    }
}

/// Allocates `count` blocks of each size from `threads` threads at once, writes a pattern into
/// each, and checks, while all are live, that no two overlap and every pattern is intact.
fn all_live_blocks_are_distinct(threads: usize, count: usize) {
    let sizes = [
        1, 8, 15, 16, 17, 24, 32, 33, 48, 50, 64, 65, 96, 100, 128, 129, 192, 200, 255, 256, 257,
    ];
    let blocks: Vec<(usize, usize, u8)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for (i, &size) in sizes.iter().enumerate() {
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        for n in 0..count {
                            // SAFETY: non-zero size.
                            let p = unsafe { std::alloc::alloc(layout) };
                            assert!(!p.is_null());
                            assert_eq!(p as usize % 8, 0);
                            let mark = (t * 31 + i * 7 + n) as u8;
                            // SAFETY: `size` bytes were just allocated.
                            unsafe { p.write_bytes(mark, size) };
                            mine.push((p as usize, size, mark));
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = blocks.clone();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        let (a, a_size, _) = pair[0];
        let (b, _, _) = pair[1];
        let a_block = block_size(Layout::from_size_align(a_size, 8).unwrap()).unwrap_or(a_size);
        assert!(
            a + a_block <= b,
            "blocks {a:#x}+{a_block} and {b:#x} overlap"
        );
    }
    // Free them from other threads than the ones that allocated them.
    std::thread::scope(|s| {
        let freers: Vec<_> = blocks
            .chunks(blocks.len().div_ceil(threads))
            .map(|chunk| {
                s.spawn(move || {
                    for &(p, size, mark) in chunk.iter().rev() {
                        let p = p as *mut u8;
                        // SAFETY: allocated above with this layout, written with `mark`.
                        unsafe {
                            let bytes = std::slice::from_raw_parts(p, size);
                            assert!(bytes.iter().all(|&x| x == mark), "block {p:?} overwritten");
                            std::alloc::dealloc(p, Layout::from_size_align(size, 8).unwrap());
                        }
                    }
                })
            })
            .collect();
        join_all(freers);
    });
}

#[test]
fn no_block_is_handed_out_twice() {
    let before = settled_user_live_blocks();
    // Fill and overflow the caches, several rounds: later rounds reuse cached blocks.
    for _ in 0..3 {
        all_live_blocks_are_distinct(1, 600);
        all_live_blocks_are_distinct(6, 300);
    }
    // Alloc/free pairs bounce blocks through the caches, in many threads at once.
    std::thread::scope(|s| {
        let bouncers: Vec<_> = (0..6)
            .map(|t| {
                s.spawn(move || {
                    let mut held: Vec<Box<[u8; 40]>> = Vec::new();
                    for i in 0..modes::rounds(20_000) {
                        if i % 3 == 2 {
                            let b = held.pop().unwrap();
                            assert!(b.iter().all(|&x| x == b[0]));
                        } else {
                            held.push(Box::new([(t + i) as u8; 40]));
                        }
                    }
                })
            })
            .collect();
        join_all(bouncers);
    });
    let after = settled_user_live_blocks();
    assert_no_misuse();
    report("no_block_is_handed_out_twice");
    if in_child() {
        assert_no_leak(before, after);
    }
}

#[test]
fn requests_go_where_their_layout_says() {
    let inner = GLOBAL.inner();
    // Make sure the state exists and this thread is registered.
    drop(Box::new(1u64));
    let odd_before = ODD_SMALL.get();
    // SAFETY: non-zero sizes; each block freed with its layout.
    unsafe {
        // Large and over-aligned requests reach the inner allocator with their own layout.
        for layout in [
            Layout::from_size_align(MAX_SMALL_SIZE + 1, 8).unwrap(),
            Layout::from_size_align(100_000, 8).unwrap(),
            Layout::from_size_align(64, 64).unwrap(),
            Layout::from_size_align(8, 32).unwrap(),
        ] {
            // `black_box`: the optimiser may otherwise drop an allocation it sees freed unused.
            let p = std::hint::black_box(std::alloc::alloc(layout));
            assert_eq!(LAST.get(), (layout.size(), layout.align()));
            assert_eq!(p as usize % layout.align(), 0);
            p.write_bytes(0xab, layout.size());
            std::alloc::dealloc(p, layout);
        }
        // Small ones never do: the inner allocator only sees class layouts. Every size to
        // 1100, then every class size and its neighbours, and a stride through the rest.
        let sizes = (1..=1100)
            .chain(SIZE_CLASSES.iter().flat_map(|&c| [c - 1, c, c + 1]))
            .chain((1100..MAX_SMALL_SIZE).step_by(97))
            .filter(|&size| size <= MAX_SMALL_SIZE);
        let small: Vec<_> = sizes
            .flat_map(|size| [1, 2, 4, 8, 16].map(|a| Layout::from_size_align(size, a).unwrap()))
            .map(|l| (std::hint::black_box(std::alloc::alloc_zeroed(l)), l))
            .collect();
        for &(p, l) in &small {
            assert!(!p.is_null() && (p as usize).is_multiple_of(l.align()));
            assert!(std::slice::from_raw_parts(p, l.size())
                .iter()
                .all(|&b| b == 0));
        }
        for (p, l) in small {
            std::alloc::dealloc(p, l);
        }
    }
    assert_eq!(
        ODD_SMALL.get(),
        odd_before,
        "a small request reached the inner allocator"
    );

    // realloc across classes, into and out of the large sizes, keeps the contents.
    let mut v: Vec<u8> = Vec::new();
    for i in 0..5000usize {
        v.push(i as u8);
    }
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
    v.truncate(100);
    v.shrink_to_fit();
    v.truncate(3);
    v.shrink_to_fit();
    assert_eq!(v, [0, 1, 2]);
    let mut s = String::new();
    for i in 0..300 {
        s.push(char::from(b'a' + (i % 26) as u8));
        let t = s.clone();
        assert_eq!(t, s);
    }
    drop((v, s));
    // Within a class, realloc keeps the block.
    let l = Layout::from_size_align(20, 4).unwrap();
    // SAFETY: as above.
    unsafe {
        let p = std::hint::black_box(std::alloc::alloc(l));
        let q = std::hint::black_box(std::alloc::realloc(p, l, 30));
        assert_eq!(p, q, "20 → 30 bytes stays in the 32-byte class");
        std::alloc::dealloc(q, Layout::from_size_align(30, 4).unwrap());
    }
    assert!(inner.allocs.load(Relaxed) > 0);
    assert_no_misuse();
    report("requests_go_where_their_layout_says");
}

/// An inner allocator that counts in a `CountingInner` it does not own, to look at the counts
/// after the front-end is dropped.
struct ByRef(&'static CountingInner);

// SAFETY: forwards to a `CountingInner`.
unsafe impl GlobalAlloc for ByRef {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.0.dealloc(ptr, layout)
    }
}

#[test]
fn a_dropped_allocator_returns_every_block() {
    let counts: &'static CountingInner = Box::leak(Box::new(CountingInner::new()));
    let local = PerCpuAlloc::new(ByRef(counts));
    let layouts: Vec<Layout> = [8, 24, 40, 64, 100, 128, 150, 256, 300, 5000]
        .into_iter()
        .map(|size| Layout::from_size_align(size, 8).unwrap())
        .collect();
    let churn = |a: &PerCpuAlloc<ByRef>, rounds: usize| {
        let mut held = Vec::new();
        for i in 0..rounds {
            let l = layouts[i % layouts.len()];
            // SAFETY: non-zero sizes; blocks freed below with their layouts.
            unsafe {
                let p = a.alloc(l);
                p.write_bytes(i as u8, l.size());
                held.push((p, l));
                if i % 3 == 0 {
                    let (p, l) = held.swap_remove(held.len() / 2);
                    a.dealloc(p, l);
                }
            }
        }
        for (p, l) in held {
            // SAFETY: allocated above with `l`.
            unsafe { a.dealloc(p, l) };
        }
    };
    churn(&local, 2000);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| churn(&local, 2000));
        }
    });
    // Moved after use: the state keeps no pointer to the old place that it uses later.
    let moved = Box::new(local);
    churn(&moved, 2000);
    let stats = moved.stats();
    println!("a_dropped_allocator_returns_every_block: local {stats:?}");
    if rseq_rt::sections_run_on_rseq() {
        assert!(stats.misses > 0 && stats.overflows > 0, "{stats:?}");
    } else {
        // In the fallback, small requests go straight to the inner allocator: only the first
        // one, which built the state, went through a cache.
        assert!(stats.misses <= 1 && stats.overflows == 0, "{stats:?}");
    }
    // Every block is back: cached, or in its span.
    assert_eq!(program_blocks(counts, stats), 0, "{stats:?}");
    drop(moved);
    assert_eq!(counts.live_blocks.load(Relaxed), 0);
    assert_eq!(counts.live_bytes.load(Relaxed), 0);
    assert_eq!(counts.mismatches.load(Relaxed), 0);
    assert_eq!(counts.double_frees.load(Relaxed), 0);
    report("a_dropped_allocator_returns_every_block");
}

/// How long `mixed_stress` runs: `ALLOC_STRESS_MS`, else 1.5 s in a child process, 0.3 s in
/// the parent's own run (alongside the other tests).
fn stress_time() -> std::time::Duration {
    let ms = std::env::var("ALLOC_STRESS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if in_child() { 1500 } else { 300 });
    std::time::Duration::from_millis(ms)
}

/// A block of the stress: its bytes all hold `mark`.
struct Stamped {
    ptr: *mut u8,
    layout: Layout,
    mark: u8,
}

// SAFETY: the block is owned by the `Stamped`, which is sent whole.
unsafe impl Send for Stamped {}

impl Stamped {
    fn new(layout: Layout, mark: u8) -> Stamped {
        // SAFETY: non-zero size (the stress never asks for 0 bytes).
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "{layout:?}");
        assert!(
            (ptr as usize).is_multiple_of(layout.align()),
            "{ptr:?} {layout:?}"
        );
        // SAFETY: `layout.size()` bytes were just allocated.
        unsafe { ptr.write_bytes(mark, layout.size()) };
        Stamped { ptr, layout, mark }
    }

    fn check(&self) {
        // SAFETY: the block is live and was written whole.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) };
        if let Some(at) = bytes.iter().position(|&b| b != self.mark) {
            panic!(
                "block {:?} ({:?}) corrupted at byte {at}: {:#x}, not {:#x}",
                self.ptr, self.layout, bytes[at], self.mark
            );
        }
    }

    /// Grows or shrinks the block with `realloc`; the kept prefix must survive.
    fn resize(&mut self, size: usize, mark: u8) {
        self.check();
        // SAFETY: the block was allocated with `layout`; `size` is non-zero and small.
        let ptr = unsafe { std::alloc::realloc(self.ptr, self.layout, size) };
        assert!(!ptr.is_null());
        let kept = self.layout.size().min(size);
        // SAFETY: `size` bytes are live at `ptr`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, size) };
        assert!(
            bytes[..kept].iter().all(|&b| b == self.mark),
            "realloc lost the contents"
        );
        bytes.fill(mark);
        self.ptr = ptr;
        self.layout = Layout::from_size_align(size, self.layout.align()).unwrap();
        self.mark = mark;
    }
}

impl Drop for Stamped {
    fn drop(&mut self) {
        self.check();
        // SAFETY: allocated with `layout` (kept current by `resize`).
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// A size for the stress: mostly small, some medium, a few past the largest class.
fn stress_size(rng: &mut Lcg) -> usize {
    match rng.next() % 100 {
        0..=69 => 1 + rng.next() as usize % 256,
        70..=94 => 257 + rng.next() as usize % 3840,
        95..=98 => 4097 + rng.next() as usize % (MAX_SMALL_SIZE - 4096),
        _ => MAX_SMALL_SIZE + 1 + rng.next() as usize % 30_000,
    }
}

/// A mixed workload for a fixed time: four threads allocate blocks of every size and a few
/// alignments, keep them for a random while, resize some, free most themselves and send the
/// rest in batches to the next thread, which frees them; every block's bytes are checked before
/// its free. Meanwhile a fifth thread runs an idle pass (`release_idle`) every few milliseconds
/// and hands every cache back with `release_memory` every eighth time, so drains race with the
/// sections; every fourth time it first allocates, checks and frees a burst of large blocks, so
/// that spans empty, have their pages returned by the passes, and are reused by the next burst
/// while the other threads run. Then every block is freed and, in a child, the inner allocator
/// must hold exactly what it held before, give or take the caches.
#[test]
fn mixed_stress() {
    const THREADS: usize = 4;
    let before = settled_user_live_blocks();
    let released_before = GLOBAL.stats().released_bytes;
    let deadline = std::time::Instant::now() + stress_time();
    let (mut senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<Vec<Stamped>>())
        .unzip();
    senders.rotate_left(1);
    let ops = AtomicUsize::new(0);
    let releases = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (id, (next, prev)) in senders.into_iter().zip(receivers).enumerate() {
            let ops = &ops;
            handles.push(s.spawn(move || {
                let mut rng = Lcg(0x5eed + id as u64);
                let mut live: Vec<Stamped> = Vec::new();
                let mut outgoing: Vec<Stamped> = Vec::new();
                let mut n = 0usize;
                while std::time::Instant::now() < deadline {
                    for _ in 0..64 {
                        n += 1;
                        let mark = (n % 251) as u8 + 1;
                        match rng.next() % 16 {
                            0..=6 => {
                                let align = [1, 8, 16, 16, 32][rng.next() as usize % 5];
                                let layout =
                                    Layout::from_size_align(stress_size(&mut rng), align).unwrap();
                                live.push(Stamped::new(layout, mark));
                            }
                            7..=10 if !live.is_empty() => {
                                let at = rng.next() as usize % live.len();
                                drop(live.swap_remove(at));
                            }
                            11 if !live.is_empty() => {
                                let at = rng.next() as usize % live.len();
                                live[at].resize(stress_size(&mut rng), mark);
                            }
                            12..=13 if !live.is_empty() => {
                                let at = rng.next() as usize % live.len();
                                outgoing.push(live.swap_remove(at));
                                if outgoing.len() >= 32 {
                                    next.send(std::mem::take(&mut outgoing)).unwrap();
                                }
                            }
                            _ => {
                                while let Ok(batch) = prev.try_recv() {
                                    drop(batch);
                                }
                            }
                        }
                        // Bound the live set (its lifetimes stay random).
                        if live.len() > 2000 {
                            live.truncate(1000);
                        }
                    }
                }
                ops.fetch_add(n, Relaxed);
                next.send(outgoing).unwrap();
                drop(next);
                live.iter().for_each(Stamped::check);
                drop(live);
                for batch in prev {
                    drop(batch);
                }
            }));
        }
        let releases = &releases;
        handles.push(s.spawn(move || {
            // At least once, even if the deadline passed before this thread ran (valgrind
            // runs one thread at a time).
            for i in 0.. {
                if i % 4 == 0 {
                    // 200 blocks of 20 KiB (17 spans' worth, far more than the caches hold),
                    // stamped, checked and freed: their spans empty, the next idle passes
                    // return their pages, and the next burst takes them back from the class
                    // or the pool while the other threads' sections run.
                    let layout = Layout::from_size_align(20 * 1024, 8).unwrap();
                    let burst: Vec<Stamped> = (0..200)
                        .map(|k| Stamped::new(layout, (k % 251) as u8 + 1))
                        .collect();
                    drop(burst);
                }
                if i % 8 == 7 {
                    GLOBAL.release_memory();
                } else {
                    GLOBAL.release_idle();
                }
                releases.fetch_add(1, Relaxed);
                if std::time::Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        }));
        join_all(handles);
    });
    let idle = GLOBAL.stats();
    println!(
        "mixed_stress: {} operations, {} releases in {:?}; idle passes {}, drains {}, \
         {} bytes returned to the system",
        ops.load(Relaxed),
        releases.load(Relaxed),
        stress_time(),
        idle.idle_passes,
        idle.idle_drains,
        idle.returned_bytes
    );
    assert!(releases.load(Relaxed) > 0);
    assert!(GLOBAL.stats().idle_passes > 0);
    let after = settled_user_live_blocks();
    assert_no_misuse();
    report("mixed_stress");
    if in_child() {
        assert_no_leak(before, after);
        // Everything cached goes back to the inner allocator on request.
        let released = GLOBAL.release_memory();
        let now = GLOBAL.stats();
        assert_eq!((now.cached_blocks, now.transfer_blocks), (0, 0), "{now:?}");
        assert!(now.released_bytes >= released_before + released as u64);
        assert_eq!(settled_user_live_blocks(), after);
    }
}

/// `mixed_stress` under valgrind (which has no rseq: the fallback, so the pass-through and the
/// inner allocator's side of every block), with valgrind's checks of every access.
#[test]
fn mixed_stress_under_valgrind() {
    if in_child() {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        modes::not_applicable("valgrind is not installed");
        return;
    }
    if cfg!(target_env = "musl") {
        // The inner allocator is musl's own malloc, linked into the static program, where
        // valgrind cannot replace it: it reports musl's malloc reading its own uninitialised
        // metadata (`enframe`), whatever the program does.
        modes::not_applicable(
            "musl's malloc is linked statically, valgrind cannot replace it and reports its \
             internals",
        );
        return;
    }
    let out = test_child_under(&["valgrind", "-q", "--error-exitcode=9"], "mixed_stress")
        .env_remove("RSEQ_DISABLE")
        .env_remove("GLIBC_TUNABLES")
        .env(CHILD_ENV, "valgrind")
        .env("ALLOC_STRESS_MS", "2000")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(why) = rseq_rt::test_support::valgrind_cannot_run(&stderr) {
        modes::not_applicable(why);
        return;
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "mixed_stress under valgrind ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
}

/// The tests above, each alone in a child process, in each mode: the environment without
/// `RSEQ_DISABLE` and `GLIBC_TUNABLES` (glibc's registration where there is one), the library's
/// own registration (`GLIBC_TUNABLES=glibc.pthread.rseq=0`) and the fallback (`RSEQ_DISABLE=1`).
/// Each child checks that it runs in the mode the facts of its environment imply (see
/// `modes`); the library's runs are left out, saying why, where they would repeat the mode of
/// the first ones (musl registers nothing itself; qemu-user has no rseq at all).
#[test]
fn every_test_in_every_mode() {
    if in_child() {
        return;
    }
    let tests = [
        "collections_workload",
        "no_block_is_handed_out_twice",
        "requests_go_where_their_layout_says",
        "a_dropped_allocator_returns_every_block",
        "mixed_stress",
    ];
    let own = modes::own_registration();
    // Each run's environment, and the mode it must give where the parent can tell (with why).
    type Run<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<(Mode, &'a str)>);
    const OWN: (&str, &str) = ("GLIBC_TUNABLES", "glibc.pthread.rseq=0");
    const DENY: (&str, &str) = (DENY_ENV, "membarrier");
    let runs: [Run; 5] = [
        ("glibc", &[], None),
        ("library", &[OWN], Some((own.mode, own.because))),
        (
            "fallback",
            &[("RSEQ_DISABLE", "1")],
            Some((
                Mode::Fallback(FallbackReason::Disabled),
                "RSEQ_DISABLE is set",
            )),
        ),
        // The rseq modes again with membarrier denied (as on Linux 4.18–5.9): same modes,
        // fences by moving the thread between CPUs, same exact results.
        ("glibc-no-membarrier", &[DENY], None),
        (
            "library-no-membarrier",
            &[OWN, DENY],
            Some((own.mode, own.because)),
        ),
    ];
    let mut covered: Vec<String> = Vec::new();
    let mut covered_without_membarrier: Vec<String> = Vec::new();
    for (run, env, expected) in runs {
        let deny = env.contains(&DENY);
        if deny && !modes::kernel_has_rseq() {
            modes::not_applicable(format_args!(
                "the {run} run: no rseq here, and the fallback does not use membarrier"
            ));
            continue;
        }
        let covered = if deny {
            &mut covered_without_membarrier
        } else {
            &mut covered
        };
        if let Some((mode, because)) = expected.filter(|(m, _)| covered.contains(&format!("{m:?}")))
        {
            modes::not_applicable(format_args!(
                "the {run} run: it would run in {mode:?} ({because}), as the runs before did"
            ));
            continue;
        }
        let mut seen = Vec::new();
        for test in tests {
            let mut cmd = test_child(test);
            cmd.env_remove("RSEQ_DISABLE")
                .env_remove("GLIBC_TUNABLES")
                .env(CHILD_ENV, run);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out = output_watched(cmd, CHILD_DEADLINE).unwrap_or_else(|_| {
                panic!("{test} still ran after {CHILD_DEADLINE:?} in the {run} run: killed")
            });
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{test} failed in the {run} run ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("1 passed"),
                "{test} did not run in the {run} run:\n{stdout}"
            );
            // The child checked its mode against its environment's facts (`report`).
            let got = stdout
                .lines()
                .find_map(|l| l.strip_prefix("mode="))
                .unwrap_or_else(|| panic!("no mode= from {test} in the {run} run:\n{stdout}"))
                .to_string();
            println!("{run}: {test}: {got}");
            for line in stdout.lines().filter(|l| l.starts_with(test)) {
                println!("    {line}");
            }
            if let Some((mode, because)) = expected {
                assert_eq!(
                    got,
                    format!("{mode:?}"),
                    "{test} in the {run} run ({because})"
                );
            }
            seen.push(got);
        }
        seen.dedup();
        assert_eq!(
            seen.len(),
            1,
            "the {run} run's tests ran in different modes"
        );
        covered.append(&mut seen);
    }
}

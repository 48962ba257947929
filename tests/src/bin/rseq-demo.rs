//! The project's demonstration and benchmark report: what the runtime found on this machine,
//! then every per-CPU structure measured side by side with the alternatives, in one run, as a
//! table of ns/op and ratios and a PNG chart — and the same table for the fallback (a child run
//! with `RSEQ_DISABLE=1`), so users know what they lose under valgrind or qemu.
//!
//! `cargo run --release -p rseq-tests --bin rseq-demo [-- --quick] [--chart PATH]`
//!
//! Ratios come from the same run on a noisy shared machine: compare them, don't quote the ns.

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use rseq::collections::alloc::PerCpuAlloc;
use rseq::collections::counter::PerCpuCounter;
use rseq::collections::pool::PerCpuPool;
use rseq::sys::sched_getcpu;
use rseq::{critical_section, PerCpu};
use rseq_tests::bench::{compare, compare_threads, print_table, Measured};
use rseq_tests::chart::{write_png, Group};
use rseq_tests::reference;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

/// The showcase: a per-CPU counter add, no atomic instruction. Words are `usize`, the word a
/// section commits on every target (64-bit on 64-bit targets).
#[critical_section]
fn counter_add(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

/// The same add with a fallback of its own (`fallback = path`): where sections cannot run on
/// rseq it is an atomic add on the current CPU's slot, exact since every access to these slots
/// is this add or a load.
#[critical_section(fallback = counter_add_atomic)]
fn counter_add_own_fallback(counters: &PerCpu<AtomicUsize>, n: usize) {
    commit::add(counters[cpu], n);
}

fn counter_add_atomic(counters: &PerCpu<AtomicUsize>, n: usize) {
    let slot = counters
        .get(rseq::current_cpu())
        .expect("a slot per possible CPU");
    slot.fetch_add(n, Ordering::Relaxed);
}

/// Two words of a slot: a bounded count and a running total.
#[repr(C)]
#[derive(Default)]
struct Tally {
    count: AtomicUsize,
    total: AtomicUsize,
}

/// A multi-step section: two loads, a bound check, a speculative store and a commit.
#[critical_section]
fn tally(slots: &PerCpu<Tally>, n: usize) -> bool {
    let count = load(slots[cpu].count);
    if count >= { usize::MAX / 2 } {
        fail(false)
    }
    let total = load(slots[cpu].total);
    let grown = add(total, n);
    store(slots[cpu].total, grown);
    let next = add(count, 1);
    commit::store(slots[cpu].count, next);
    true
}

/// The same steps under an uncontended `Mutex` (one thread).
fn tally_locked(slot: &Mutex<(usize, usize)>, n: usize) -> bool {
    let mut slot = slot.lock().unwrap();
    if slot.0 >= usize::MAX / 2 {
        return false;
    }
    slot.1 = slot.1.wrapping_add(n);
    slot.0 += 1;
    true
}

fn multi_step(s: &Settings) -> Group {
    let slots: PerCpu<Tally> = PerCpu::default();
    let locked = Mutex::new((0usize, 0usize));
    let rows = compare(
        s.rounds,
        s.ops,
        &mut [
            ("rseq tally (2 loads, check, store, commit)", &mut |n| {
                for _ in 0..n {
                    black_box(tally(black_box(&slots), 1));
                }
            }),
            ("the same steps under a Mutex", &mut |n| {
                for _ in 0..n {
                    black_box(tally_locked(black_box(&locked), 1));
                }
            }),
        ],
    );
    Group {
        title: "Multi-step section, 1 thread".into(),
        rows,
    }
}

/// The generated code against hand-written `asm!` doing what librseq's loops do (see
/// `rseq_tests::reference`). `None` where the references cannot run.
fn zero_overhead(s: &Settings) -> Option<Group> {
    let rows = reference::side_by_side(s.rounds, s.ops)?;
    Some(Group {
        title: "Zero overhead: generated vs hand-written (librseq's loops), 1 thread".into(),
        rows,
    })
}

/// The value behind the read-mostly cells of `read_mostly`.
struct Config {
    a: usize,
    b: usize,
}

/// Reader slots of the hazard-pointer cell (`read_mostly`): more than the threads that read.
const READER_SLOTS: usize = 64;

/// Gives each thread its own announcement slot (`read_mostly`).
static NEXT_READER: AtomicUsize = AtomicUsize::new(0);

/// The read side of a read-mostly value whose readers pay no atomic read-modify-write: a reader
/// announces the pointer it read with a plain store to its own cache line and a compiler fence
/// (`rseq::barrier::light`), re-reads the pointer to check it was not replaced meanwhile, reads
/// the value, and clears its slot. A writer (not measured here; see `cargo run -p rseq-rt
/// --example read_mostly`) would swap the pointer, call `rseq::barrier::heavy()` and free the
/// old value once no slot announces it. Measured against `RwLock` and `arc_swap::ArcSwap::load`
/// with every thread reading at once.
fn read_mostly(s: &Settings, threads: usize) -> Group {
    #[repr(align(128))]
    struct Slot(AtomicPtr<Config>);
    let value = Box::into_raw(Box::new(Config { a: 1, b: 2 }));
    let current = AtomicPtr::new(value);
    let slots: Vec<Slot> = (0..READER_SLOTS)
        .map(|_| Slot(AtomicPtr::new(std::ptr::null_mut())))
        .collect();
    let locked = RwLock::new(Config { a: 1, b: 2 });
    let swapped = ArcSwap::from_pointee(Config { a: 1, b: 2 });
    let rows = compare_threads(
        s.rounds,
        threads,
        s.ops,
        &[
            ("announce + light() + check (rseq::barrier)", &|n| {
                thread_local! {
                    static SLOT: usize = NEXT_READER.fetch_add(1, Ordering::Relaxed) % READER_SLOTS;
                }
                let slot = &slots[SLOT.with(|s| *s)].0;
                for _ in 0..n {
                    let mut p = current.load(Ordering::Acquire);
                    loop {
                        slot.store(p, Ordering::Relaxed);
                        rseq::barrier::light();
                        let now = current.load(Ordering::Acquire);
                        if now == p {
                            break;
                        }
                        p = now;
                    }
                    // SAFETY: `p` is announced and was current after the announcement, so a
                    // writer's heavy fence would see it before freeing it; here none frees.
                    let v = unsafe { &*p };
                    black_box(v.a + v.b);
                    slot.store(std::ptr::null_mut(), Ordering::Relaxed);
                }
            }),
            ("RwLock::read", &|n| {
                for _ in 0..n {
                    let v = black_box(&locked).read().unwrap();
                    black_box(v.a + v.b);
                }
            }),
            ("ArcSwap::load (arc-swap 1)", &|n| {
                for _ in 0..n {
                    let v = black_box(&swapped).load();
                    black_box(v.a + v.b);
                }
            }),
        ],
    );
    // SAFETY: made above by Box::into_raw; the readers have finished.
    drop(unsafe { Box::from_raw(value) });
    Group {
        title: format!("Read-mostly value, read side, {threads} thread(s)"),
        rows,
    }
}

thread_local! {
    static LOCAL: Cell<usize> = const { Cell::new(0) };
    // A free list of separately allocated objects, like the pool's: the boxes are the point.
    #[allow(clippy::vec_box)]
    static LOCAL_FREE: RefCell<Vec<Box<Object>>> = const { RefCell::new(Vec::new()) };
}

/// The pooled object of the pool benchmarks.
type Object = [u64; 8];

struct Settings {
    rounds: usize,
    ops: u64,
}

fn ratio(rows: &[Measured], name: &str) -> f64 {
    rows.iter()
        .find(|r| r.name == name)
        .map_or(f64::NAN, |r| r.ns_per_op / rows[0].ns_per_op)
}

fn accessors(s: &Settings) -> Group {
    let rows = compare(
        s.rounds,
        s.ops,
        &mut [
            ("rseq::current_cpu()", &mut |n| {
                for _ in 0..n {
                    black_box(rseq::current_cpu());
                }
            }),
            ("libc::sched_getcpu()", &mut |n| {
                for _ in 0..n {
                    black_box(sched_getcpu());
                }
            }),
            ("rseq::current_mm_cid()", &mut |n| {
                for _ in 0..n {
                    black_box(rseq::current_mm_cid());
                }
            }),
        ],
    );
    Group {
        title: "CPU id, 1 thread".into(),
        rows,
    }
}

fn counters(s: &Settings, threads: usize) -> Group {
    let ours: PerCpu<AtomicUsize> = PerCpu::default();
    let own_fallback: PerCpu<AtomicUsize> = PerCpu::default();
    let counter = PerCpuCounter::new();
    let sharded: PerCpu<AtomicUsize> = PerCpu::default();
    let shared = AtomicUsize::new(0);
    let mutex = Mutex::new(0usize);
    let rows = compare_threads(
        s.rounds,
        threads,
        s.ops,
        &[
            ("rseq counter_add (DSL)", &|n| {
                for _ in 0..n {
                    counter_add(black_box(&ours), 1);
                }
            }),
            ("PerCpuCounter::add (exact take)", &|n| {
                for _ in 0..n {
                    black_box(&counter).add(1);
                }
            }),
            ("thread-local Cell<usize> (floor)", &|n| {
                for _ in 0..n {
                    LOCAL.with(|c| c.set(black_box(c.get()) + 1));
                }
            }),
            ("shared AtomicUsize::fetch_add", &|n| {
                for _ in 0..n {
                    black_box(&shared).fetch_add(1, Ordering::Relaxed);
                }
            }),
            ("sched_getcpu + per-CPU fetch_add", &|n| {
                for _ in 0..n {
                    black_box(&sharded)
                        .get(sched_getcpu())
                        .unwrap()
                        .fetch_add(1, Ordering::Relaxed);
                }
            }),
            ("Mutex<usize>", &|n| {
                for _ in 0..n {
                    *black_box(&mutex).lock().unwrap() += 1;
                }
            }),
            ("rseq counter_add (DSL, fallback = fetch_add)", &|n| {
                for _ in 0..n {
                    counter_add_own_fallback(black_box(&own_fallback), 1);
                }
            }),
        ],
    );
    // Counts are modulo 2^usize::BITS (they could pass 2³² on a 32-bit target with many cores).
    let total = ours
        .iter()
        .fold(0usize, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)));
    let per_thread = s.rounds as u64 * s.ops + s.ops / 10 + 1;
    let expected = (per_thread * threads as u64) as usize;
    assert_eq!(total, expected, "the per-CPU counter lost or invented adds");
    let total = own_fallback
        .iter()
        .fold(0usize, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)));
    assert_eq!(
        total, expected,
        "the counter with its own fallback lost or invented adds"
    );
    assert_eq!(
        counter.sum(),
        expected,
        "PerCpuCounter lost or invented adds"
    );
    Group {
        title: format!("Counter add, {threads} thread(s)"),
        rows,
    }
}

fn pools(s: &Settings, threads: usize) -> Group {
    let pool: PerCpuPool<Object> = PerCpuPool::new();
    let locked: PerCpu<Mutex<Vec<Box<Object>>>> = PerCpu::new(|_| Mutex::new(Vec::new()));
    let queue: ArrayQueue<Box<Object>> = ArrayQueue::new(4096);
    let fresh = || Box::new([0u64; 8]);
    let rows = compare_threads(
        s.rounds,
        threads,
        s.ops / 4,
        &[
            ("PerCpuPool alloc+free (rseq)", &|n| {
                for _ in 0..n {
                    let o = pool.alloc();
                    black_box(o);
                    // SAFETY: the object just allocated, freed once.
                    unsafe { pool.free(o) };
                }
            }),
            ("per-CPU Mutex<Vec> (sched_getcpu)", &|n| {
                for _ in 0..n {
                    let cpu = sched_getcpu();
                    let o = locked
                        .get(cpu)
                        .unwrap()
                        .lock()
                        .unwrap()
                        .pop()
                        .unwrap_or_else(fresh);
                    black_box(&o);
                    locked.get(sched_getcpu()).unwrap().lock().unwrap().push(o);
                }
            }),
            ("thread-local free list", &|n| {
                for _ in 0..n {
                    let o = LOCAL_FREE
                        .with(|l| l.borrow_mut().pop())
                        .unwrap_or_else(fresh);
                    black_box(&o);
                    LOCAL_FREE.with(|l| l.borrow_mut().push(o));
                }
            }),
            ("global lock-free ArrayQueue", &|n| {
                for _ in 0..n {
                    let o = queue.pop().unwrap_or_else(fresh);
                    black_box(&o);
                    let _ = queue.push(o);
                }
            }),
        ],
    );
    let stats = pool.stats();
    assert_eq!(
        stats.in_use(),
        0,
        "the pool lost track of an object: {stats:?}"
    );
    Group {
        title: format!("Object pool alloc+free, {threads} thread(s)"),
        rows,
    }
}

static FRONT: PerCpuAlloc<System> = PerCpuAlloc::new(System);

fn allocators(s: &Settings, threads: usize) -> Vec<Group> {
    [32usize, 256]
        .iter()
        .map(|&size| {
            let layout = Layout::from_size_align(size, 8).unwrap();
            let churn = |a: &dyn GlobalAlloc, n: u64| {
                let mut live = [std::ptr::null_mut::<u8>(); 8];
                for i in 0..n as usize {
                    let slot = &mut live[i % 8];
                    // SAFETY: blocks are freed with the layout they were allocated with.
                    unsafe {
                        if !slot.is_null() {
                            a.dealloc(*slot, layout);
                        }
                        *slot = a.alloc(layout);
                        slot.write(i as u8);
                    }
                }
                for p in live.into_iter().filter(|p| !p.is_null()) {
                    unsafe { a.dealloc(p, layout) };
                }
            };
            let rows = compare_threads(
                s.rounds,
                threads,
                s.ops / 4,
                &[
                    ("PerCpuAlloc<System> (rseq caches)", &|n| churn(&FRONT, n)),
                    ("System (glibc malloc)", &|n| churn(&System, n)),
                ],
            );
            Group {
                title: format!("GlobalAlloc churn, {size}-byte blocks, {threads} threads"),
                rows,
            }
        })
        .collect()
}

fn verdict(value: f64, goal: f64) -> &'static str {
    if value >= goal {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rows_only = args.iter().any(|a| a == "--rows-only");
    let chart = args
        .iter()
        .position(|a| a == "--chart")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "target/rseq-report.png".into());
    let s = if quick {
        Settings {
            rounds: 3,
            ops: 200_000,
        }
    } else {
        Settings {
            rounds: 9,
            ops: 2_000_000,
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    if !rows_only {
        println!("rseq runtime on this machine");
        println!("  mode              {:?}", rseq::mode());
        println!("  thread            {:?}", rseq::register_current_thread());
        println!("  kernel features   {:?}", rseq::features());
        println!(
            "  possible cpus     {} ({cores} usable)",
            rseq::possible_cpus()
        );
        println!(
            "  current cpu       {} (mm_cid {}, node {})",
            rseq::current_cpu(),
            rseq::current_mm_cid(),
            rseq::current_node()
        );
        let fenced = std::time::Instant::now();
        let fence = rseq::fence_all();
        println!(
            "  fence_all         {fence:?} in {:?}, by {}",
            fenced.elapsed(),
            match rseq::fence_mechanism() {
                rseq::FenceMechanism::Membarrier => "membarrier(PRIVATE_EXPEDITED_RSEQ)",
                rseq::FenceMechanism::Migration =>
                    "running on every CPU in turn (no membarrier RSEQ command: Linux < 5.10)",
                rseq::FenceMechanism::SlotLocks => "taking every slot lock (fallback)",
            }
        );
    }

    let mut groups = vec![accessors(&s)];
    for threads in [1, cores, 2 * cores] {
        groups.push(counters(&s, threads));
    }
    groups.push(pools(&s, cores));
    groups.extend(allocators(&s, 2 * cores));
    groups.push(multi_step(&s));
    groups.extend(zero_overhead(&s));
    if !rows_only {
        // Not rseq: the fallback's child run leaves it out.
        for threads in [1, cores] {
            groups.push(read_mostly(&s, threads));
        }
    }

    if rows_only {
        // Machine-readable, for the parent run: group<TAB>candidate<TAB>ns.
        for g in &groups {
            for r in &g.rows {
                println!("{}\t{}\t{}", g.title, r.name, r.ns_per_op);
            }
        }
        return;
    }
    for g in &groups {
        print_table(&g.title, &g.rows);
    }

    // The fallback's numbers, from a child process with rseq disabled.
    let mut fallback_groups = Vec::new();
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe);
    child.arg("--rows-only").env("RSEQ_DISABLE", "1");
    if quick {
        child.arg("--quick");
    }
    match child.output() {
        Ok(out) if out.status.success() => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut parts = line.split('\t');
                let (Some(g), Some(n), Some(ns)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let title = format!("{g} — fallback (RSEQ_DISABLE=1)");
                if fallback_groups
                    .last()
                    .is_none_or(|x: &Group| x.title != title)
                {
                    fallback_groups.push(Group {
                        title,
                        rows: Vec::new(),
                    });
                }
                let row = Measured {
                    name: n.to_string(),
                    ns_per_op: ns.parse().unwrap_or(f64::NAN),
                };
                fallback_groups.last_mut().unwrap().rows.push(row);
            }
            println!("\n== The same measurements with rseq disabled (the fallback: valgrind, qemu-user, old kernels)");
            for g in fallback_groups
                .iter()
                .filter(|g| !g.title.starts_with("CPU id"))
            {
                print_table(&g.title, &g.rows);
            }
        }
        other => println!("\n(fallback run failed: {other:?})"),
    }

    let by_title = |t: &str| {
        groups
            .iter()
            .find(|g| g.title.starts_with(t))
            .map(|g| g.rows.as_slice())
            .unwrap_or(&[])
    };
    let all_cores = by_title(&format!("Counter add, {cores} thread"));
    let cpu_ratio = ratio(by_title("CPU id"), "libc::sched_getcpu()");
    let vs_atomic = ratio(all_cores, "shared AtomicUsize::fetch_add");
    let vs_sharded = ratio(all_cores, "sched_getcpu + per-CPU fetch_add");
    let floor = 1.0 / ratio(all_cores, "thread-local Cell<usize> (floor)");
    let pool_ratio = ratio(by_title("Object pool"), "per-CPU Mutex<Vec> (sched_getcpu)");
    let small = ratio(
        by_title("GlobalAlloc churn, 32-byte"),
        "System (glibc malloc)",
    );
    let large = ratio(
        by_title("GlobalAlloc churn, 256-byte"),
        "System (glibc malloc)",
    );
    println!("\nGoals (ratios from this run; ≥ 1 means ours is faster by that factor)");
    println!(
        "  current_cpu() vs sched_getcpu():                {cpu_ratio:6.2}× (goal ≥ 5:   {})",
        verdict(cpu_ratio, 5.0)
    );
    println!(
        "  counter add vs shared atomic, all cores:        {vs_atomic:6.2}× (goal ≥ 10:  {})",
        verdict(vs_atomic, 10.0)
    );
    println!(
        "  counter add vs sched_getcpu + atomic:           {vs_sharded:6.2}× (goal ≥ 3.5: {})",
        verdict(vs_sharded, 3.5)
    );
    println!("  counter add vs thread-local add (the floor):    {floor:6.2}× the floor's time");
    println!(
        "  pool pair vs per-CPU Mutex<Vec>:                {pool_ratio:6.2}× (goal ≥ 3:   {})",
        verdict(pool_ratio, 3.0)
    );
    println!(
        "  GlobalAlloc front-end vs System, 32 B:          {small:6.2}× (goal > 1:   {})",
        verdict(small, 1.0 + f64::EPSILON)
    );
    println!(
        "  GlobalAlloc front-end vs System, 256 B:         {large:6.2}× (goal > 1:   {})",
        verdict(large, 1.0 + f64::EPSILON)
    );
    for threads in [1, cores] {
        let rows = by_title(&format!(
            "Read-mostly value, read side, {threads} thread(s)"
        ));
        println!(
            "  read-mostly read, {threads} thread(s): light() {:5.2}× faster than RwLock::read, {:5.2}× than ArcSwap::load",
            ratio(rows, "RwLock::read"),
            ratio(rows, "ArcSwap::load (arc-swap 1)")
        );
    }
    // The wrapper's cost: generated code in multiples of the hand-written reference's time.
    let zero = by_title("Zero overhead");
    if !zero.is_empty() {
        reference::print_goals(zero);
    }
    // The fallback's goals: its cost against what a user would write without the library.
    if !fallback_groups.is_empty() {
        let fallback = |t: &str| {
            fallback_groups
                .iter()
                .find(|g| g.title.starts_with(t))
                .map(|g| g.rows.as_slice())
                .unwrap_or(&[])
        };
        // Time of the group's first row (ours) over the named row's.
        let times = |rows: &[Measured], name: &str| 1.0 / ratio(rows, name);
        println!("\nFallback goals (RSEQ_DISABLE=1; ours in multiples of the alternative's time)");
        for threads in [1, cores, 2 * cores] {
            let rows = fallback(&format!("Counter add, {threads} thread"));
            let baseline = "sched_getcpu + per-CPU fetch_add";
            let t = times(rows, baseline);
            println!(
                "  counter add, {threads} thread(s) vs sched_getcpu + fetch_add: {t:8.2}× (goal ≤ 2:   {})",
                verdict(2.0, t)
            );
            // With fallbacks of their own (`fallback = path`): the DSL add naming an atomic
            // add, and the collection's (a lock per slot, for its exact take).
            for (row, label) in [
                (
                    "rseq counter_add (DSL, fallback = fetch_add)",
                    "DSL, fallback = fetch_add",
                ),
                (
                    "PerCpuCounter::add (exact take)",
                    "PerCpuCounter::add        ",
                ),
            ] {
                let t = ratio(rows, row) / ratio(rows, baseline);
                println!(
                    "    {label}, same baseline:   {t:8.2}× (goal ≤ 2:   {})",
                    verdict(2.0, t)
                );
            }
        }
        let t = times(fallback("Object pool"), "per-CPU Mutex<Vec> (sched_getcpu)");
        println!(
            "  pool pair vs per-CPU Mutex<Vec>:                 {t:8.2}× (goal ≤ 1.5: {})",
            verdict(1.5, t)
        );
        for size in [32, 256] {
            let t = times(
                fallback(&format!("GlobalAlloc churn, {size}-byte")),
                "System (glibc malloc)",
            );
            println!(
                "  PerCpuAlloc vs its inner allocator, {size:3} B:       {t:8.2}× (goal ≤ 1.2: {})",
                verdict(1.2, t)
            );
        }
        let t = times(
            fallback("Multi-step section"),
            "the same steps under a Mutex",
        );
        println!(
            "  multi-step section vs the steps under a Mutex:   {t:8.2}× (goal ≤ 3:   {})",
            verdict(3.0, t)
        );
    }
    println!("\n  runtime stats     {:?}", rseq::stats());

    let mut all = groups;
    all.extend(fallback_groups);
    match write_png(
        std::path::Path::new(&chart),
        "rseq: ns/op, side by side in one run",
        &all,
    ) {
        Ok(()) => println!("  chart             {chart}"),
        Err(e) => println!("  chart             not written: {e}"),
    }
}

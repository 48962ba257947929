//! Fault injection: every kind of section, with a delay loop spinning at one injection point at a
//! time, from more threads than CPUs, under a storm of signals. Built only with the `inject`
//! feature of this package (which turns on the `critical_section` macro's `inject-delays`).
//!
//! ```text
//! rseq-inject [--threads N] [--iters N] [--loops N] [--no-signals]
//! rseq-inject fence [--deny-membarrier]
//! ```
//!
//! `fence` checks instead that `fence_cpu` and `fence_all` restart a section that spins on
//! another CPU (see `fence_check`), with membarrier, or with it denied by a seccomp filter (the
//! fences then move the thread to every CPU).
//!
//! For each workload and each of its injection points, prints one line
//! `workload=… point=k ops=… aborts=… result=ok|fail`, then `points=…`, `failures=…` and
//! `result=ok`; exits 1 on any wrong end state, 2 on bad usage. Aborts are counted per workload
//! by the sections' `aborts = …` counters.

use rseq::{critical_section, inject, PerCpu};
use std::process::exit;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize};
use std::sync::Barrier;
use std::time::Duration;

static ADD_ABORTS: AtomicUsize = AtomicUsize::new(0);
static RMW_ABORTS: AtomicUsize = AtomicUsize::new(0);
static LIST_ABORTS: AtomicUsize = AtomicUsize::new(0);
static COPY_ABORTS: AtomicUsize = AtomicUsize::new(0);

/// `commit::add`: points 0 (before the index is read) and 1 (before the add).
#[critical_section(aborts = ADD_ABORTS)]
fn add(c: &PerCpu<AtomicUsize>) {
    commit::add(c[cpu], 1);
}

/// A read-modify-write through a register: points 0–3 (index, load, add, commit). A lost update
/// shows as a short total.
#[critical_section(aborts = RMW_ABORTS)]
fn rmw(c: &PerCpu<AtomicUsize>) {
    let v = load(c[cpu]);
    let n = add(v, 1);
    commit::store(c[cpu], n);
}

/// A node of the per-CPU lists.
#[repr(C)]
struct Node {
    next: AtomicPtr<Node>,
    value: usize,
    /// Set while a thread holds the node: a node popped twice is caught at once.
    taken: AtomicBool,
}

/// Pop: points 0–4 (index, load head, null check, load next, commit).
///
/// # Safety
/// Every node on the lists is valid.
#[critical_section(aborts = LIST_ABORTS)]
unsafe fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
    let head: *mut Node = load(heads[cpu]);
    if head == null {
        fail(None)
    }
    let next = load((*head).next);
    commit::store(heads[cpu], next);
    Some(head)
}

/// Push: points 0–3 (index, load head, speculative link, release commit).
///
/// # Safety
/// `node` is valid and on no list.
#[critical_section(aborts = LIST_ABORTS)]
unsafe fn push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
    let head = load(heads[cpu]);
    store((*node).next, head);
    commit::store_release(heads[cpu], node);
}

/// Bytes copied by `publish`.
const ITEM: usize = 48;

/// Copy an item into a fresh buffer and publish its address in the CPU's slot, if empty: points
/// 0–4 (index, load slot, empty check, copy, release commit).
///
/// # Safety
/// `dst` and `src` are valid for `ITEM` bytes; `dst` is not visible to other threads.
#[critical_section(aborts = COPY_ABORTS)]
unsafe fn publish(slots: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8) -> bool {
    let current = load(slots[cpu]);
    if current != 0 {
        fail(false)
    }
    memcpy(dst, src, { ITEM });
    commit::store_release(slots[cpu], dst);
    true
}

/// Take the published address: points 0–3 (index, load slot, empty check, commit).
#[critical_section(aborts = COPY_ABORTS)]
fn take(slots: &PerCpu<AtomicUsize>) -> Option<usize> {
    let item = load(slots[cpu]);
    if item == 0 {
        fail(None)
    }
    commit::store(slots[cpu], 0);
    Some(item)
}

static FENCED_ABORTS: AtomicUsize = AtomicUsize::new(0);

/// The section `fence_check` holds a thread inside: point 1 spins before the add.
#[critical_section(aborts = FENCED_ABORTS)]
fn fenced_add(c: &PerCpu<AtomicUsize>) {
    commit::add(c[cpu], 1);
}

/// How long the worker must spin inside the section without an abort before a trial fences.
const QUIET: Duration = Duration::from_millis(100);
/// How soon after the fence returns the section must have completed (a fence takes 0.1–4 ms
/// here; the spin, seconds).
const PROMPT: Duration = Duration::from_millis(20);
/// Trials per fence: each must end promptly. Nothing else restarts the spinning section within
/// `PROMPT` of a quiet `QUIET`, except by chance (a preemption by another task on its CPU, seen
/// here about every 0.05–0.3 s on a busy machine), so a fence that restarted nothing would pass
/// all five trials by chance only about once in 10⁴ runs.
const TRIALS: usize = 5;

/// A fence restarts a section that is running on another CPU: a worker pinned to one CPU spins
/// at point 1 of `fenced_add` for `u32::MAX` iterations (seconds; the count is read once per
/// attempt). Once it has spun `QUIET` without an abort, the count goes to 0 and the main thread,
/// pinned to another CPU, fences (`fence_cpu` of the worker's CPU, or `fence_all`). Only a
/// restart ends the spin early: the section must complete within `PROMPT`, after one more
/// abort, in each of `TRIALS` trials. Prints `fence_check=<how> fence=<mechanism> trials=N
/// slowest_us=N`.
fn fence_check(all: bool) -> Result<(), String> {
    let cpus = rseq_tests::allowed_cpus();
    if cpus.len() < 2 {
        println!("fence_check=not-applicable (one CPU allowed)");
        return Ok(());
    }
    if !rseq::mode().is_rseq() {
        println!("fence_check=not-applicable ({:?})", rseq::mode());
        return Ok(());
    }
    let (worker_cpu, main_cpu) = (cpus[0], cpus[1]);
    let mut slowest = Duration::ZERO;
    let result = (|| -> Result<(), String> {
        for trial in 0..TRIALS {
            let elapsed = fence_trial(all, worker_cpu, main_cpu)
                .map_err(|e| format!("trial {trial}: {e}"))?;
            slowest = slowest.max(elapsed);
        }
        Ok(())
    })();
    rseq_tests::allow_cpus(&cpus);
    inject::clear();
    result?;
    println!(
        "fence_check={} fence={:?} trials={TRIALS} slowest_us={}",
        if all { "fence_all" } else { "fence_cpu" },
        rseq::fence_mechanism(),
        slowest.as_micros()
    );
    Ok(())
}

/// One trial of `fence_check`: how long the section took to complete after the fence.
fn fence_trial(all: bool, worker_cpu: usize, main_cpu: usize) -> Result<Duration, String> {
    let counts: PerCpu<AtomicUsize> = PerCpu::default();
    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    inject::clear();
    inject::set_delay(1, u32::MAX);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(rseq_tests::pin_to_cpu(worker_cpu), "pin to {worker_cpu}");
            started.store(true, SeqCst);
            fenced_add(&counts);
            done.store(true, SeqCst);
        });
        assert!(rseq_tests::pin_to_cpu(main_cpu), "pin to {main_cpu}");
        while !started.load(SeqCst) {
            std::thread::yield_now();
        }
        // Wait until the worker has spun inside the section for `QUIET` without a restart.
        let mut before = FENCED_ABORTS.load(SeqCst);
        let mut quiet = false;
        for _ in 0..100 {
            std::thread::sleep(QUIET);
            let now = FENCED_ABORTS.load(SeqCst);
            if now == before && !done.load(SeqCst) {
                quiet = true;
                break;
            }
            before = now;
        }
        // From here the retry finds a count of 0: only a restart ends the current spin early.
        inject::clear();
        if !quiet {
            return Err("the worker never spun without an abort (machine too busy)".into());
        }
        let fenced = std::time::Instant::now();
        let fence = if all {
            rseq::fence_all()
        } else {
            rseq::fence_cpu(worker_cpu)
        };
        fence.map_err(|e| format!("the fence failed: {e}"))?;
        while !done.load(SeqCst) && fenced.elapsed() < PROMPT {
            std::thread::yield_now();
        }
        let elapsed = fenced.elapsed();
        let aborts = FENCED_ABORTS.load(SeqCst) - before;
        if !done.load(SeqCst) || aborts == 0 {
            return Err(format!(
                "the fence did not restart the spinning section: completed={}, {aborts} aborts, {elapsed:?} after the fence",
                done.load(SeqCst)
            ));
        }
        Ok(elapsed)
    })
    .and_then(|elapsed| {
        let total: usize = counts.iter().map(|c| c.load(SeqCst)).sum();
        if total == 1 {
            Ok(elapsed)
        } else {
            Err(format!("the section committed {total} times, not once"))
        }
    })
}

struct Config {
    threads: usize,
    iters: usize,
    loops: u32,
    signals: bool,
}

/// The end of a run of one workload at one point.
struct Outcome {
    ops: usize,
    aborts: usize,
    error: Option<String>,
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Runs `work(thread)` on `threads` threads while (optionally) another thread sends SIGUSR1 to
/// all of them every few microseconds.
fn run_threads(cfg: &Config, work: &(dyn Fn(usize) + Sync)) {
    let done = AtomicBool::new(false);
    let tids: Vec<AtomicUsize> = (0..cfg.threads).map(|_| AtomicUsize::new(0)).collect();
    let start = Barrier::new(cfg.threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (start, tids) = (&start, &tids);
                s.spawn(move || {
                    // SAFETY: pthread_self has no preconditions.
                    tids[t].store(unsafe { libc::pthread_self() } as usize, SeqCst);
                    start.wait();
                    work(t);
                })
            })
            .collect();
        start.wait();
        if cfg.signals {
            s.spawn(|| {
                while !done.load(Relaxed) {
                    for tid in &tids {
                        // SAFETY: the workers are alive until `done` is set (it is set only
                        // after every worker was joined).
                        unsafe {
                            libc::pthread_kill(tid.load(SeqCst) as libc::pthread_t, libc::SIGUSR1)
                        };
                    }
                    std::thread::sleep(Duration::from_micros(5));
                }
            });
        }
        for w in workers {
            w.join().expect("worker panicked");
        }
        done.store(true, Relaxed);
    });
}

fn counter_run(cfg: &Config, section: fn(&PerCpu<AtomicUsize>), aborts: &AtomicUsize) -> Outcome {
    let counters: PerCpu<AtomicUsize> = PerCpu::default();
    let before = aborts.load(SeqCst);
    run_threads(cfg, &|_| {
        for _ in 0..cfg.iters {
            section(&counters);
        }
    });
    let total: usize = counters.iter().map(|c| c.load(SeqCst)).sum();
    let expected = cfg.threads * cfg.iters;
    Outcome {
        ops: expected,
        aborts: aborts.load(SeqCst) - before,
        error: (total != expected).then(|| format!("total {total}, expected {expected}")),
    }
}

fn list_run(cfg: &Config) -> Outcome {
    let heads: PerCpu<AtomicPtr<Node>> = PerCpu::default();
    let nodes: Vec<*mut Node> = (0..2 * cfg.threads)
        .map(|value| {
            Box::into_raw(Box::new(Node {
                next: AtomicPtr::new(std::ptr::null_mut()),
                value,
                taken: AtomicBool::new(false),
            }))
        })
        .collect();
    let errors = AtomicUsize::new(0);
    let moved = AtomicUsize::new(0);
    let before = LIST_ABORTS.load(SeqCst);
    let addrs: Vec<usize> = nodes.iter().map(|&n| n as usize).collect();
    run_threads(cfg, &|t| {
        // Each thread brings two nodes, onto the list of the CPU it starts on.
        for &n in &addrs[2 * t..2 * t + 2] {
            // SAFETY: fresh nodes, on no list.
            unsafe { push(&heads, n as *mut Node) };
        }
        for _ in 0..cfg.iters {
            // SAFETY: the lists hold only the valid nodes above.
            let Some(node) = (unsafe { pop(&heads) }) else {
                // This CPU's list is empty (the other CPUs' lists hold the nodes).
                std::thread::yield_now();
                continue;
            };
            moved.fetch_add(1, Relaxed);
            // SAFETY: popped, so this thread owns it until the push.
            let node_ref = unsafe { &*node };
            if node_ref.taken.swap(true, SeqCst) {
                errors.fetch_add(1, SeqCst);
            }
            node_ref.taken.store(false, SeqCst);
            // SAFETY: the node is valid and on no list.
            unsafe { push(&heads, node) };
        }
    });
    // Every node is on exactly one list, once.
    let mut seen = vec![0usize; nodes.len()];
    for head in heads.iter() {
        let mut p = head.load(SeqCst);
        while !p.is_null() && seen.iter().sum::<usize>() <= nodes.len() {
            // SAFETY: list nodes are valid.
            let n = unsafe { &*p };
            seen[n.value] += 1;
            p = n.next.load(SeqCst);
        }
    }
    let error = if errors.load(SeqCst) > 0 {
        Some(format!("{} nodes were popped twice", errors.load(SeqCst)))
    } else if seen.iter().any(|&c| c != 1) {
        Some(format!(
            "nodes on the lists, by value: {seen:?} (each must be 1)"
        ))
    } else {
        None
    };
    for n in nodes {
        // SAFETY: every node came from Box::into_raw and is no longer on a list.
        drop(unsafe { Box::from_raw(n) });
    }
    Outcome {
        ops: 2 * moved.load(SeqCst),
        aborts: LIST_ABORTS.load(SeqCst) - before,
        error,
    }
}

/// The bytes of item `id`: no two items share a byte position's value.
fn pattern(id: usize) -> [u8; ITEM] {
    std::array::from_fn(|i| (id.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
}

fn copy_run(cfg: &Config) -> Outcome {
    let slots: PerCpu<AtomicUsize> = PerCpu::default();
    let errors = AtomicUsize::new(0);
    let published = AtomicUsize::new(0);
    let received = AtomicUsize::new(0);
    let before = COPY_ABORTS.load(SeqCst);
    let check = |addr: usize| {
        // SAFETY: published addresses are leaked [u8; ITEM + 8] boxes: the id, then the item.
        let buf = unsafe { Box::from_raw(addr as *mut [u8; ITEM + 8]) };
        let id = usize::from_ne_bytes(
            buf[ITEM..ITEM + std::mem::size_of::<usize>()]
                .try_into()
                .unwrap(),
        );
        if buf[..ITEM] != pattern(id) {
            errors.fetch_add(1, SeqCst);
        }
        received.fetch_add(1, SeqCst);
    };
    run_threads(cfg, &|t| {
        for i in 0..cfg.iters {
            {
                let id = t * cfg.iters + i;
                let src = pattern(id);
                let mut buf = Box::new([0u8; ITEM + 8]);
                buf[ITEM..ITEM + std::mem::size_of::<usize>()].copy_from_slice(&id.to_ne_bytes());
                let dst = Box::into_raw(buf) as *mut u8;
                // SAFETY: dst and src are valid for ITEM bytes; dst is private until published.
                if unsafe { publish(&slots, dst, src.as_ptr()) } {
                    published.fetch_add(1, SeqCst);
                } else {
                    // SAFETY: not published: still ours.
                    drop(unsafe { Box::from_raw(dst as *mut [u8; ITEM + 8]) });
                }
            }
            if let Some(addr) = take(&slots) {
                check(addr);
            }
        }
    });
    for slot in slots.iter() {
        let addr = slot.swap(0, SeqCst);
        if addr != 0 {
            check(addr);
        }
    }
    let (p, r) = (published.load(SeqCst), received.load(SeqCst));
    let error = if errors.load(SeqCst) > 0 {
        Some(format!("{} items arrived damaged", errors.load(SeqCst)))
    } else if p != r {
        Some(format!("{p} items published, {r} received"))
    } else {
        None
    };
    Outcome {
        ops: p + r,
        aborts: COPY_ABORTS.load(SeqCst) - before,
        error,
    }
}

/// A workload: its name, its number of injection points, and how to run it.
type Workload = (&'static str, usize, fn(&Config) -> Outcome);

const WORKLOADS: [Workload; 4] = [
    ("add", 2, |cfg| counter_run(cfg, add, &ADD_ABORTS)),
    ("rmw", 4, |cfg| counter_run(cfg, rmw, &RMW_ABORTS)),
    ("list", 5, list_run),
    ("memcpy", 5, copy_run),
];

const USAGE: &str = "usage: rseq-inject [--threads N] [--iters N] [--loops N] [--no-signals]\n       rseq-inject fence [--deny-membarrier]";

fn main() {
    let mut cfg = Config {
        threads: 4,
        iters: 3000,
        loops: 20_000,
        signals: true,
    };
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("fence") {
        // `rseq-inject fence [--deny-membarrier]`: the fence checks only.
        args.next();
        let deny = match args.next().as_deref() {
            None => false,
            Some("--deny-membarrier") => true,
            Some(other) => {
                eprintln!("unknown argument '{other}'\n{USAGE}");
                exit(2)
            }
        };
        if !inject::ENABLED {
            eprintln!("rseq-inject: built without injection (build with --features inject)");
            exit(2)
        }
        if deny {
            rseq_tests::deny_membarrier().unwrap_or_else(|e| {
                eprintln!("cannot deny membarrier: {e}");
                exit(1)
            });
        }
        println!("mode={:?}", rseq::mode());
        for all in [false, true] {
            if let Err(e) = fence_check(all) {
                eprintln!("rseq-inject fence: {e}");
                println!("result=fail");
                exit(1)
            }
        }
        println!("result=ok");
        return;
    }
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} takes a number\n{USAGE}");
                exit(2)
            })
        };
        match arg.as_str() {
            "--threads" => cfg.threads = number("--threads").max(1),
            "--iters" => cfg.iters = number("--iters"),
            "--loops" => cfg.loops = number("--loops").min(u32::MAX as usize) as u32,
            "--no-signals" => cfg.signals = false,
            _ => {
                eprintln!("unknown argument '{arg}'\n{USAGE}");
                exit(2)
            }
        }
    }
    if !inject::ENABLED {
        eprintln!("rseq-inject: built without injection (build with --features inject)");
        exit(2)
    }
    // SAFETY: installs a handler that does nothing, for the signal storm.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    println!("mode={:?}", rseq::mode());
    let (mut points, mut failures) = (0, 0);
    for (name, count, run) in WORKLOADS {
        for point in 0..count {
            inject::clear();
            inject::set_delay(point, cfg.loops);
            let out = run(&cfg);
            points += 1;
            let result = match &out.error {
                None => "ok",
                Some(e) => {
                    failures += 1;
                    eprintln!("rseq-inject: {name} at point {point}: {e}");
                    "fail"
                }
            };
            println!(
                "workload={name} point={point} ops={} aborts={} result={result}",
                out.ops, out.aborts
            );
        }
    }
    inject::clear();
    println!("points={points}");
    println!("failures={failures}");
    if failures > 0 {
        println!("result=fail");
        exit(1)
    }
    println!("result=ok");
}

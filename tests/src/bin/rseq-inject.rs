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
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
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

/// The window in which the worker must run on its CPU without a switch or an abort before a
/// trial fences.
const WINDOW: Duration = Duration::from_millis(1);
/// How long a trial waits for such a window (a loaded machine shares the worker's CPU with other
/// tasks in slices of a few milliseconds; it finds one within tens of milliseconds).
const PATIENCE: Duration = Duration::from_secs(20);
/// How soon after the fence returns the section must have completed (a fence takes 0.1–4 ms
/// here; the spin, seconds; a worker switched out by a migration fence may wait for its CPU).
const PROMPT: Duration = Duration::from_millis(500);
/// Conclusive trials per fence, and attempts allowed to reach them.
const TRIALS: usize = 5;
const ATTEMPTS: usize = 200;

/// What the main thread sees of the worker thread: its context switches
/// (`/proc/self/task/<tid>/status`) and its CPU time (its thread CPU clock, which the kernel
/// brings up to date when read, even while the thread runs).
struct Worker {
    tid: libc::pid_t,
    clock: libc::clockid_t,
}

impl Worker {
    /// The calling thread.
    fn this_thread() -> Worker {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: gettid has no preconditions; pthread_getcpuclockid writes the clock id of a
        // live thread (this one) to our local.
        unsafe {
            assert_eq!(
                libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock),
                0
            );
            Worker {
                tid: libc::gettid(),
                clock,
            }
        }
    }

    /// Voluntary plus involuntary context switches so far (`None` once the thread has exited).
    fn switches(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/self/task/{}/status", self.tid)).ok()?;
        Some(
            status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .map(|n| n.trim().parse::<u64>().expect("a switch count"))
                .sum(),
        )
    }

    /// CPU time so far (`None` once the thread has exited).
    fn cpu_time(&self) -> Option<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes to our local (and fails with EINVAL for a thread that
        // has exited).
        (unsafe { libc::clock_gettime(self.clock, &mut ts) } == 0)
            .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

/// A fence restarts a section that is running on another CPU: a worker pinned to one CPU spins
/// at point 1 of `fenced_add` for `u32::MAX` iterations (seconds; the count is read once per
/// attempt), and the main thread, pinned to another CPU, fences it (`fence_cpu` of the worker's
/// CPU, or `fence_all`). Only a restart ends the spin early, so the section must complete within
/// `PROMPT` of the fence, after one more abort.
///
/// What else could restart it is ruled out per trial rather than hoped away, so a busy machine
/// makes trials inconclusive (and repeated), not failed:
/// - the worker ran during the last `WINDOW` before the fence (its CPU time grew) and was not
///   switched out since, so it is spinning on its CPU when the delay is cleared;
/// - it is still not switched out, and not done, just before the fence call;
/// - with membarrier, it is still not switched out when the section has completed: nothing but
///   the fence's interrupt can have restarted it. With migration, it must have been switched
///   out by the time the fence returns (the fencing thread took its CPU); a preemption by
///   another task between the last check and the fencing thread's arrival on that CPU would
///   pass for the fence (a fence that does nothing fails every trial).
///
/// Prints `fence_check=<how> fence=<mechanism> trials=N inconclusive=N slowest_us=N`.
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
    let mut inconclusive = 0;
    let result = (|| -> Result<(), String> {
        let mut trials = 0;
        for attempt in 0..ATTEMPTS {
            match fence_trial(all, worker_cpu, main_cpu)
                .map_err(|e| format!("attempt {attempt}: {e}"))?
            {
                Some(elapsed) => {
                    slowest = slowest.max(elapsed);
                    trials += 1;
                    if trials == TRIALS {
                        return Ok(());
                    }
                }
                None => inconclusive += 1,
            }
        }
        Err(format!(
            "only {trials} of {ATTEMPTS} trials were conclusive: in the others the worker was switched out before its section completed (which restarts it too)"
        ))
    })();
    rseq_tests::allow_cpus(&cpus);
    inject::clear();
    result?;
    println!(
        "fence_check={} fence={:?} trials={TRIALS} inconclusive={inconclusive} slowest_us={}",
        if all { "fence_all" } else { "fence_cpu" },
        rseq::fence_mechanism(),
        slowest.as_micros()
    );
    Ok(())
}

/// One trial of `fence_check`: how long the section took to complete after the fence, or `None`
/// if something other than the fence may have restarted it.
fn fence_trial(all: bool, worker_cpu: usize, main_cpu: usize) -> Result<Option<Duration>, String> {
    let counts: PerCpu<AtomicUsize> = PerCpu::default();
    let worker: std::sync::OnceLock<Worker> = std::sync::OnceLock::new();
    let done = AtomicBool::new(false);
    // The worker's switch count when its section completed, read by itself (it may exit before
    // the main thread looks).
    let switches_at_end = AtomicU64::new(u64::MAX);
    // Keeps the worker alive (spinning, after its section) until the main thread has looked.
    let release = AtomicBool::new(false);
    let migration = rseq::fence_mechanism() == rseq::FenceMechanism::Migration;
    inject::clear();
    inject::set_delay(1, u32::MAX);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(rseq_tests::pin_to_cpu(worker_cpu), "pin to {worker_cpu}");
            let _ = worker.set(Worker::this_thread());
            fenced_add(&counts);
            let own = worker.get().and_then(Worker::switches);
            switches_at_end.store(own.unwrap_or(u64::MAX), SeqCst);
            done.store(true, SeqCst);
            while !release.load(SeqCst) {
                core::hint::spin_loop();
            }
        });
        let _release = Release(&release);
        assert!(rseq_tests::pin_to_cpu(main_cpu), "pin to {main_cpu}");
        let worker = loop {
            match worker.get() {
                Some(w) => break w,
                None => std::thread::yield_now(),
            }
        };
        // Wait for a window in which the worker ran and was neither switched out nor restarted.
        let waited = std::time::Instant::now();
        let (mut time, mut switches, mut aborts) = (
            worker.cpu_time(),
            worker.switches(),
            FENCED_ABORTS.load(SeqCst),
        );
        let mut start = std::time::Instant::now();
        let running = loop {
            std::thread::sleep(WINDOW);
            let (t, sw, a) = (
                worker.cpu_time(),
                worker.switches(),
                FENCED_ABORTS.load(SeqCst),
            );
            let ran = match (time, t) {
                (Some(before), Some(now)) => now.saturating_sub(before) * 2 >= start.elapsed(),
                _ => false,
            };
            if ran && sw.is_some() && sw == switches && a == aborts && !done.load(SeqCst) {
                break true;
            }
            if done.load(SeqCst) || waited.elapsed() > PATIENCE {
                break false;
            }
            (time, switches, aborts, start) = (t, sw, a, std::time::Instant::now());
        };
        // From here the retry finds a count of 0: only a restart ends the current spin early.
        inject::clear();
        if !running && done.load(SeqCst) {
            // It spun its whole count without a switch: nothing to fence any more.
            return Ok(None);
        }
        if !running {
            return Err(format!(
                "the worker never ran {WINDOW:?} undisturbed on its CPU in {PATIENCE:?}"
            ));
        }
        if done.load(SeqCst) || worker.switches() != switches {
            // Completed or switched out already (restarted by its scheduler, not the fence).
            return Ok(None);
        }
        let fenced = std::time::Instant::now();
        let fence = if all {
            rseq::fence_all()
        } else {
            rseq::fence_cpu(worker_cpu)
        };
        fence.map_err(|e| format!("the fence failed: {e}"))?;
        let switched_by_fence = worker.switches() != switches;
        while !done.load(SeqCst) && fenced.elapsed() < PROMPT {
            std::thread::yield_now();
        }
        let elapsed = fenced.elapsed();
        let restarts = FENCED_ABORTS.load(SeqCst) - aborts;
        let finished = done.load(SeqCst);
        let switched = finished && Some(switches_at_end.load(SeqCst)) != switches;
        if !finished || restarts == 0 {
            return Err(format!(
                "the fence did not restart the spinning section: completed={finished}, {restarts} aborts, {elapsed:?} after the fence"
            ));
        }
        if migration && !switched_by_fence {
            return Err("the migration fence returned without having switched the worker out".into());
        }
        Ok((migration || !switched).then_some(elapsed))
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

/// Signals handled by `count_signal` (the `abort-rate` measurement).
static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Relaxed);
}

/// The delays (spins at point 1 of `add`) that `abort-rate` measures.
const RATE_DELAYS: [u32; 6] = [0, 10, 100, 1_000, 10_000, 100_000];
/// How long each delay runs under signals.
const RATE_RUN: Duration = Duration::from_millis(400);

/// `rseq-inject abort-rate`: how often a signal or a preemption lands inside a section, against
/// the share of its time the thread spends there. One worker, pinned to a CPU, calls `add` in a
/// loop with a delay of `d` spins at point 1 (inside the section, before the add):
/// - a timing pass without signals gives ns per call, `t(d)`, and so the share of time in the
///   delay, `(t(d) - t(0)) / t(d)` (a lower bound of the time inside the section);
/// - a signal pass: another thread, on another CPU, sends SIGUSR1 to the worker every 20 µs
///   (a handler counts them) while the section's `aborts` counter counts restarts;
/// - the same with a second thread spinning on the worker's CPU, so that signals often find the
///   worker switched out: such a signal is delivered when it runs again, at the point where it
///   was switched out (a section there restarts once, for both);
/// - a preemption pass: a second thread spins on the worker's CPU, so the scheduler switches
///   between them every few milliseconds; restarts against involuntary switches.
///
/// If signals and preemptions land uniformly in the thread's time, the aborts per handled signal
/// and per involuntary switch equal the share (measured: they do). Prints one line per delay.
fn abort_rate() -> Result<(), String> {
    let cpus = rseq_tests::allowed_cpus();
    if cpus.len() < 2 || !rseq::mode().is_rseq() {
        println!(
            "abort_rate=not-applicable ({} CPUs, {:?})",
            cpus.len(),
            rseq::mode()
        );
        return Ok(());
    }
    let (worker_cpu, sender_cpu) = (cpus[0], cpus[1]);
    // SAFETY: the handler only increments an atomic.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    let counter: PerCpu<AtomicUsize> = PerCpu::default();
    // The delay is set once per line, in the loop below; `per_call` needs it for its count.
    let per_call = |delay: u32| -> f64 {
        let calls = (20_000_000 / (u64::from(delay) + 50)).clamp(200, 2_000_000);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(rseq_tests::pin_to_cpu(worker_cpu));
                let start = std::time::Instant::now();
                for _ in 0..calls {
                    add(&counter);
                }
                start.elapsed().as_nanos() as f64 / calls as f64
            })
            .join()
            .expect("timing worker")
        })
    };
    // The fastest of a few runs: the first runs also warm the caches and the CPU's clock.
    let fastest = |delay: u32| (0..3).map(|_| per_call(delay)).fold(f64::MAX, f64::min);
    inject::clear();
    let base = fastest(0);
    println!(
        "abort_rate build={} base_ns_per_call={base:.1}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for delay in RATE_DELAYS {
        inject::set_delay(1, delay);
        let ns = fastest(delay);
        let share = ((ns - base) / ns).max(0.0);
        let signals = under_signals(&counter, worker_cpu, sender_cpu, false);
        let crowded = under_signals(&counter, worker_cpu, sender_cpu, true);
        let preemption = under_preemption(&counter, worker_cpu);
        let per = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        println!(
            "delay={delay} ns_per_call={ns:.1} share={share:.4} handled={} signal_aborts={} aborts_per_signal={:.4} shared_cpu_aborts_per_signal={:.4} switches={} preemption_aborts={} aborts_per_switch={:.4}",
            signals.0,
            signals.1,
            per(signals.1, signals.0),
            per(crowded.1, crowded.0),
            preemption.0,
            preemption.1,
            per(preemption.1, preemption.0),
        );
    }
    inject::clear();
    Ok(())
}

/// The worker's involuntary context switches so far (from `/proc/thread-self/status`).
fn involuntary_switches() -> usize {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The signal pass of `abort_rate`: (signals handled, aborts) in `RATE_RUN`, at the delay the caller set; `crowded`: with a
/// spinning thread sharing the worker's CPU, so that signals often find the worker switched out.
fn under_signals(
    counter: &PerCpu<AtomicUsize>,
    worker_cpu: usize,
    sender_cpu: usize,
    crowded: bool,
) -> (usize, usize) {
    let stop = AtomicBool::new(false);
    let tid = AtomicUsize::new(0);
    let result = std::thread::scope(|s| {
        if crowded {
            crowd(s, worker_cpu, &stop);
        }
        let worker = s.spawn(|| {
            assert!(rseq_tests::pin_to_cpu(worker_cpu));
            // SAFETY: pthread_self has no preconditions.
            tid.store(unsafe { libc::pthread_self() } as usize, SeqCst);
            let (handled, aborts) = (HANDLED.load(SeqCst), ADD_ABORTS.load(SeqCst));
            while !stop.load(Relaxed) {
                add(counter);
            }
            // Only this thread gets the signals: count before it exits, then let the sender stop.
            (
                HANDLED.load(SeqCst) - handled,
                ADD_ABORTS.load(SeqCst) - aborts,
            )
        });
        s.spawn(|| {
            assert!(rseq_tests::pin_to_cpu(sender_cpu));
            while tid.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            let start = std::time::Instant::now();
            while start.elapsed() < RATE_RUN {
                // SAFETY: the worker runs until `stop`, which only this thread sets, below.
                unsafe { libc::pthread_kill(tid.load(SeqCst) as libc::pthread_t, libc::SIGUSR1) };
                std::thread::sleep(Duration::from_micros(20));
            }
            stop.store(true, SeqCst);
        });
        worker.join().expect("signal worker")
    });
    result
}

/// Starts a thread that spins on `cpu` until `stop`, sharing that CPU with the worker of an
/// `abort_rate` pass.
fn crowd<'scope>(s: &'scope std::thread::Scope<'scope, '_>, cpu: usize, stop: &'scope AtomicBool) {
    s.spawn(move || {
        assert!(rseq_tests::pin_to_cpu(cpu));
        while !stop.load(Relaxed) {
            core::hint::spin_loop();
        }
    });
}

/// The preemption pass of `abort_rate`: (involuntary switches, aborts) in `RATE_RUN`, with a
/// spinning thread sharing the worker's CPU, at the delay the caller set.
fn under_preemption(counter: &PerCpu<AtomicUsize>, worker_cpu: usize) -> (usize, usize) {
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        crowd(s, worker_cpu, &stop);
        let worker = s.spawn(|| {
            assert!(rseq_tests::pin_to_cpu(worker_cpu));
            let (switches, aborts) = (involuntary_switches(), ADD_ABORTS.load(SeqCst));
            let start = std::time::Instant::now();
            while start.elapsed() < RATE_RUN {
                for _ in 0..64 {
                    add(counter);
                }
            }
            (
                involuntary_switches() - switches,
                ADD_ABORTS.load(SeqCst) - aborts,
            )
        });
        let result = worker.join().expect("preemption worker");
        stop.store(true, SeqCst);
        result
    });
    result
}

/// Sets its flag when dropped: lets a `fence_trial` worker exit however the trial ends.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
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

const USAGE: &str = "usage: rseq-inject [--threads N] [--iters N] [--loops N] [--no-signals]\n       rseq-inject fence [--deny-membarrier]\n       rseq-inject abort-rate";

fn main() {
    let mut cfg = Config {
        threads: 4,
        iters: 3000,
        loops: 20_000,
        signals: true,
    };
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("abort-rate") {
        if !inject::ENABLED {
            eprintln!("rseq-inject: built without injection (build with --features inject)");
            exit(2)
        }
        println!("mode={:?}", rseq::mode());
        if let Err(e) = abort_rate() {
            eprintln!("rseq-inject abort-rate: {e}");
            exit(1)
        }
        return;
    }
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

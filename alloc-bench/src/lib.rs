//! Allocator workloads for `PerCpuAlloc` as a `#[global_allocator]`, measured against what a
//! user would install instead: glibc's malloc and, with `--features others`, mimalloc,
//! jemalloc and snmalloc.
//!
//! A process has one global allocator, so each allocator gets a worker binary of its own
//! (`alloc-bench-<name>`, a `main` that declares the allocator and calls [`worker_main`]).
//! A worker runs one workload per process, so that peak RSS is that workload's alone, and
//! prints one `key=value` line. The driver, `cargo bench -p rseq-alloc-bench --bench
//! allocators`, runs the workers alternately in batches and prints medians, ratios, the goals
//! and a chart; `ALLOC_BENCH_BATCHES` and `ALLOC_BENCH_SCALE` shorten it.
//!
//! Each workload checks its own result (a lost or corrupted block fails the run), and
//! `tests/workloads.rs` runs every one of them at a small scale under each worker.

use std::alloc::{alloc, dealloc, Layout};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// One workload: its name on the command line, what it measures, and its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A 32-byte allocation and its free, back to back, on one thread.
    Pair,
    /// 1000 32-byte blocks allocated, then freed newest first.
    Batch,
    /// [`Workload::Pair`] on two threads at once: wall time per pair of either.
    Pair2,
    /// A producer thread allocates 32-byte blocks and sends them in batches of 256 to the main
    /// thread, which frees them.
    CrossFree,
    /// A 10 MB JSON document parsed into `serde_json::Value` and serialized again, 20 times.
    Json,
    /// A `BTreeMap<String, Vec<u32>>` of a million entries built in scrambled order, then
    /// dropped.
    BTree,
    /// 256 threads alive together, each allocating 10 000 blocks of 16–256 bytes while keeping
    /// 100 live: the process's peak RSS.
    Rss,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Pair,
        Workload::Batch,
        Workload::Pair2,
        Workload::CrossFree,
        Workload::Json,
        Workload::BTree,
        Workload::Rss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Pair => "pair",
            Workload::Batch => "batch",
            Workload::Pair2 => "pair-2-threads",
            Workload::CrossFree => "cross-thread-free",
            Workload::Json => "serde-json",
            Workload::BTree => "btreemap",
            Workload::Rss => "rss-256-threads",
        }
    }

    /// What a value of this workload is, for tables.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Pair | Workload::Pair2 => "ns/pair",
            Workload::Batch | Workload::CrossFree => "ns/block",
            Workload::Json | Workload::BTree => "ms",
            Workload::Rss => "MiB peak",
        }
    }

    /// A longer description, for the driver's table.
    pub fn title(self) -> &'static str {
        match self {
            Workload::Pair => "32 B alloc+free pair, 1 thread",
            Workload::Batch => "1000 × 32 B, then free all, LIFO",
            Workload::Pair2 => "2 threads, 32 B pairs (aggregate)",
            Workload::CrossFree => "producer → consumer, cross-thread frees",
            Workload::Json => "serde_json: parse + serialize 10 MB × 20",
            Workload::BTree => "BTreeMap<String, Vec<u32>>, 1 M, build+drop",
            Workload::Rss => "256 threads × 10 000 blocks, peak RSS",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Runs the workload at `scale` (1.0: the sizes above; smaller for tests) and returns its
    /// value, or what went wrong.
    pub fn run(self, scale: f64) -> Result<f64, String> {
        let scaled = |n: usize, min: usize| ((n as f64 * scale) as usize).max(min);
        match self {
            Workload::Pair => Ok(pairs(scaled(4_000_000, 1000))),
            Workload::Batch => batch(scaled(4000, 2)),
            Workload::Pair2 => Ok(pairs_on_two_threads(scaled(4_000_000, 1000))),
            Workload::CrossFree => cross_thread_frees(scaled(2_000_000, 1024)),
            Workload::Json => json(scaled(10_000_000, 10_000), 20),
            Workload::BTree => btree(scaled(1_000_000, 1000)),
            Workload::Rss => rss(scaled(256, 4), scaled(10_000, 200)),
        }
    }
}

const SMALL: Layout = match Layout::from_size_align(32, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

fn ns_per(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

/// `n` allocation + free pairs of 32 bytes; ns per pair.
fn pairs(n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        // SAFETY: a non-zero-sized layout; the block is freed with it, once.
        unsafe {
            let p = alloc(SMALL);
            if p.is_null() {
                std::alloc::handle_alloc_error(SMALL);
            }
            p.write(i as u8);
            dealloc(black_box(p), SMALL);
        }
    }
    ns_per(start, n)
}

/// `rounds` of 1000 allocations of 32 bytes, then their frees, newest first; ns per block.
/// Every block is stamped with its round and index and checked before it is freed.
fn batch(rounds: usize) -> Result<f64, String> {
    const BLOCKS: usize = 1000;
    let mut live: Vec<*mut u64> = Vec::with_capacity(BLOCKS);
    let start = Instant::now();
    for round in 0..rounds {
        for i in 0..BLOCKS {
            // SAFETY: as in `pairs`; the block is 32 bytes, aligned for a u64.
            unsafe {
                let p = alloc(SMALL).cast::<u64>();
                if p.is_null() {
                    std::alloc::handle_alloc_error(SMALL);
                }
                p.write((round * BLOCKS + i) as u64);
                live.push(p);
            }
        }
        let mut i = BLOCKS;
        while let Some(p) = live.pop() {
            i -= 1;
            // SAFETY: allocated above with `SMALL`, freed once.
            unsafe {
                if p.read() != (round * BLOCKS + i) as u64 {
                    return Err(format!(
                        "batch: block {i} of round {round} holds {} (two owners?)",
                        p.read()
                    ));
                }
                dealloc(p.cast(), SMALL);
            }
        }
    }
    Ok(ns_per(start, rounds * BLOCKS))
}

/// [`pairs`] on two threads started together; wall time per pair of either, from the first
/// thread's start to the last one's end (each thread reads the clock itself: the spawning
/// thread may not run again until they are done).
fn pairs_on_two_threads(n: usize) -> f64 {
    let go = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let go = Arc::clone(&go);
            thread::spawn(move || {
                go.wait();
                let start = Instant::now();
                pairs(n);
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = workers
        .into_iter()
        .map(|w| w.join().expect("a pair thread panicked"))
        .collect();
    let first = spans.iter().map(|s| s.0).min().expect("two threads");
    let last = spans.iter().map(|s| s.1).max().expect("two threads");
    (last - first).as_nanos() as f64 / (2 * n) as f64
}

/// A producer allocates `n` blocks of 32 bytes and sends them in batches of 256 to this thread,
/// which checks and frees them; ns per block.
fn cross_thread_frees(n: usize) -> Result<f64, String> {
    const BATCH: usize = 256;
    let (tx, rx) = mpsc::sync_channel::<Vec<usize>>(16);
    let start = Instant::now();
    let producer = thread::spawn(move || {
        let mut sent = 0;
        while sent < n {
            let k = BATCH.min(n - sent);
            let mut batch = Vec::with_capacity(k);
            for i in 0..k {
                // SAFETY: as in `pairs`; the consumer frees it with the same layout.
                unsafe {
                    let p = alloc(SMALL).cast::<u64>();
                    if p.is_null() {
                        std::alloc::handle_alloc_error(SMALL);
                    }
                    p.write((sent + i) as u64);
                    batch.push(p as usize);
                }
            }
            sent += k;
            if tx.send(batch).is_err() {
                return;
            }
        }
    });
    let mut expected = 0u64;
    for batch in rx {
        for p in batch {
            let p = p as *mut u64;
            // SAFETY: the producer allocated it with `SMALL` and gave it up.
            unsafe {
                if p.read() != expected {
                    return Err(format!(
                        "cross-thread-free: block {expected} holds {}",
                        p.read()
                    ));
                }
                dealloc(p.cast(), SMALL);
            }
            expected += 1;
        }
    }
    let elapsed = ns_per(start, n);
    producer.join().map_err(|_| "the producer panicked")?;
    if expected != n as u64 {
        return Err(format!(
            "cross-thread-free: {expected} of {n} blocks arrived"
        ));
    }
    Ok(elapsed)
}

/// A deterministic pseudo-random sequence (a 64-bit LCG's high bits).
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

/// A JSON document of at least `bytes` bytes: an array of records with strings, numbers,
/// arrays and nested objects, in serde_json's compact form.
pub fn json_document(bytes: usize) -> String {
    use serde_json::{json, Value};
    let mut rng = Lcg(42);
    let mut records = Vec::new();
    let mut size = 2;
    while size < bytes {
        let id = rng.next();
        let tags: Vec<Value> = (0..rng.next() % 6)
            .map(|t| Value::String(format!("tag-{}", (id + t) % 97)))
            .collect();
        let record = json!({
            "id": id,
            "name": format!("user-{id:x}"),
            "active": id.is_multiple_of(3),
            // Eighths: short decimals that every float parser reads back exactly.
            "score": (id % 10_000) as f64 / 8.0,
            "tags": tags,
            "address": {
                "street": format!("{} Main Street", id % 1000),
                "zip": format!("{:05}", id % 100_000),
                "geo": [(id % 180) as f64 - 90.0, (id % 360) as f64 - 180.0],
            },
            "history": (0..rng.next() % 8).map(|k| k * id % 1000).collect::<Vec<u64>>(),
        });
        size += record.to_string().len() + 1;
        records.push(record);
    }
    Value::Array(records).to_string()
}

/// `times` rounds of parsing a document of `bytes` bytes into a `Value` and serializing it
/// again (the result must equal the document); ms in all.
fn json(bytes: usize, times: usize) -> Result<f64, String> {
    let doc = json_document(bytes);
    let start = Instant::now();
    for round in 0..times {
        let value: serde_json::Value =
            serde_json::from_str(&doc).map_err(|e| format!("serde-json: parse: {e}"))?;
        let text = serde_json::to_string(&value).map_err(|e| format!("serde-json: {e}"))?;
        if text != doc {
            return Err(format!(
                "serde-json: round {round} serialized {} bytes that differ from the {} parsed",
                text.len(),
                doc.len()
            ));
        }
        black_box(text);
    }
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// A `BTreeMap<String, Vec<u32>>` of `n` entries inserted in a scrambled order, checked, then
/// dropped; ms in all.
fn btree(n: usize) -> Result<f64, String> {
    // A step coprime with `n` visits every index once.
    let step = (1_000_003..).find(|s| gcd(*s, n) == 1).unwrap_or(1);
    let start = Instant::now();
    let mut map = BTreeMap::new();
    for i in 0..n {
        let k = (i * step) % n;
        map.insert(format!("key-{k:08}"), vec![k as u32; k % 7 + 1]);
    }
    if map.len() != n {
        return Err(format!("btreemap: {} entries of {n}", map.len()));
    }
    for k in [0, n / 2, n - 1] {
        match map.get(&format!("key-{k:08}")) {
            Some(v) if v.len() == k % 7 + 1 && v.iter().all(|&x| x == k as u32) => {}
            other => return Err(format!("btreemap: key {k} holds {other:?}")),
        }
    }
    drop(black_box(map));
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `threads` threads alive together, each allocating `blocks` blocks of 16–256 bytes while
/// keeping the last 100 live (each checked before its free); the peak RSS in MiB once all
/// have ended.
fn rss(threads: usize, blocks: usize) -> Result<f64, String> {
    const LIVE: usize = 100;
    let started = Arc::new(Barrier::new(threads));
    let done = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (started, done) = (Arc::clone(&started), Arc::clone(&done));
            thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || -> Result<(), String> {
                    started.wait();
                    let mut ring: Vec<(*mut u8, Layout, u8)> = Vec::with_capacity(LIVE);
                    let mut outcome = Ok(());
                    for i in 0..blocks {
                        let layout = Layout::from_size_align(16 * (1 + (i + t) % 16), 8)
                            .expect("a valid layout");
                        let stamp = (i ^ t) as u8;
                        // SAFETY: non-zero sizes; each block is freed once, with its layout.
                        unsafe {
                            let p = alloc(layout);
                            if p.is_null() {
                                std::alloc::handle_alloc_error(layout);
                            }
                            p.write_bytes(stamp, layout.size());
                            if ring.len() == LIVE {
                                let (old, old_layout, old_stamp) = ring.swap_remove(i % LIVE);
                                if *old.add(old_layout.size() - 1) != old_stamp {
                                    outcome = Err(format!("rss: thread {t}: a block changed"));
                                }
                                dealloc(old, old_layout);
                            }
                            ring.push((p, layout, stamp));
                        }
                    }
                    // Every thread's blocks and caches are alive together here.
                    done.wait();
                    for (p, layout, _) in ring {
                        // SAFETY: allocated above with `layout`, freed once.
                        unsafe { dealloc(p, layout) };
                    }
                    outcome
                })
                .map_err(|e| format!("rss: cannot start thread {t}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for w in workers {
        w.join().map_err(|_| "rss: a thread panicked")??;
    }
    peak_rss_mib()
}

/// `VmHWM` of this process, in MiB.
pub fn peak_rss_mib() -> Result<f64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| "no VmHWM line in /proc/self/status".to_string())
}

/// The `value=` a worker printed (what [`worker_main`] writes), if any.
pub fn printed_value(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.split(' ').find_map(|w| w.strip_prefix("value=")))
        .and_then(|v| v.parse::<f64>().ok())
}

/// How a worker run ended: its status and what it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` (a worker) to its end with its output captured, like `Command::output`,
/// but kills it if it has not ended within `limit`: a worker that hangs (an allocator that
/// deadlocks) is then an error that names it, with what it had printed, rather than a
/// benchmark or test that never ends. Stdin is closed.
///
/// ```
/// # use std::process::Command;
/// # use std::time::Duration;
/// let done = rseq_alloc_bench::run_worker(
///     Command::new("echo").arg("value=1"),
///     Duration::from_secs(60),
/// )
/// .unwrap();
/// assert!(done.status.success());
/// assert_eq!(rseq_alloc_bench::printed_value(&done.stdout), Some(1.0));
///
/// let hung = rseq_alloc_bench::run_worker(
///     Command::new("sleep").arg("60"),
///     Duration::from_millis(100),
/// );
/// assert!(hung.unwrap_err().contains("did not end within"));
/// ```
pub fn run_worker(command: &mut Command, limit: Duration) -> Result<Finished, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    // Both pipes are drained while the worker runs, so that it never blocks on a full one.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                // A read error ends the capture; what was read is kept.
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let ended = loop {
        let why = match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() < limit => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Ok(None) => format!("did not end within {limit:?}"),
            Err(e) => format!("could not be waited for ({e})"),
        };
        // The worker dies with its pipes' write ends, so the drains end too.
        let _ = child.kill();
        let _ = child.wait();
        break Err(format!("{why} and was killed"));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match ended {
        Ok(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        Err(why) => Err(format!(
            "{command:?} {why}; it had printed:\n{stdout}{stderr}"
        )),
    }
}

/// A worker's `main`: `alloc-bench-<name> WORKLOAD [SCALE]` runs one workload and prints
/// `workload=<name> value=<number> unit=<unit>`, then `info` (what the allocator reports about
/// itself, if anything); exits with 1 and the reason if the workload failed, 2 on a usage
/// error.
pub fn worker_main(info: impl FnOnce() -> String) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
        eprintln!("usage: {} WORKLOAD [SCALE]", env_name());
        eprintln!("workloads: {}", names.join(" "));
        std::process::exit(2)
    };
    let Some(workload) = args.first().and_then(|a| Workload::from_name(a)) else {
        usage()
    };
    let scale = match args.get(1).map(|s| s.parse::<f64>()) {
        None => 1.0,
        Some(Ok(s)) if s > 0.0 && s.is_finite() => s,
        Some(_) => usage(),
    };
    match workload.run(scale) {
        Ok(value) => {
            println!(
                "workload={} value={value:.3} unit={}",
                workload.name(),
                workload.unit().replace(' ', "_")
            );
            println!("info {}", info());
        }
        Err(e) => {
            eprintln!("{}: {}: {e}", env_name(), workload.name());
            std::process::exit(1);
        }
    }
}

fn env_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "alloc-bench".to_string())
}

//! A read-mostly value whose readers pay no atomic read-modify-write and no fence instruction:
//! hazard pointers with an asymmetric fence.
//!
//! Each reader owns a slot. To read, it announces the pointer it is about to use in its slot
//! (a plain store), runs `barrier::light()` (a compiler fence) and checks the pointer is still
//! the published one. The writer publishes a new value, runs `barrier::heavy()` and then looks
//! at the slots: that is the store-buffering pattern, so either the reader sees the new pointer
//! (and retries with it) or the writer sees the announcement (and waits for the reader to clear
//! it before freeing the old value). A symmetric design would need a `SeqCst` fence, a full
//! barrier instruction, on every read.
//!
//! ```text
//! cargo run -p rseq-rt --example read_mostly
//! ```

use rseq_rt::barrier;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

/// The value readers see: `b` is always `2 * a`, and `a` only grows.
struct Config {
    a: u64,
    b: u64,
}

/// A published value and the readers' announcement slots (one per reader, fixed here; a
/// library would hand slots out once per thread).
struct ReadMostly<T, const READERS: usize> {
    current: AtomicPtr<T>,
    slots: [AtomicPtr<T>; READERS],
}

impl<T, const READERS: usize> ReadMostly<T, READERS> {
    fn new(value: T) -> Self {
        ReadMostly {
            current: AtomicPtr::new(Box::into_raw(Box::new(value))),
            slots: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
        }
    }

    /// Runs `f` on the current value as reader `slot` (each slot used by one thread at a time).
    fn read<R>(&self, slot: usize, f: impl FnOnce(&T) -> R) -> R {
        let announce = &self.slots[slot];
        let mut p = self.current.load(Acquire);
        loop {
            announce.store(p, Relaxed);
            barrier::light();
            let now = self.current.load(Acquire);
            if now == p {
                break;
            }
            p = now;
        }
        // SAFETY: `p` was published (from a Box) and is announced in our slot; the writer
        // frees a replaced value only after `heavy()` and after seeing no slot announce it,
        // and the store-buffering guarantee means it saw our announcement if we saw `p` still
        // published after announcing it.
        let result = f(unsafe { &*p });
        // Release: our reads of `*p` happen before the writer's acquire load sees the slot
        // cleared, and so before it frees the value.
        announce.store(std::ptr::null_mut(), Release);
        result
    }

    /// Publishes `value` and frees the one it replaces once no reader uses it (one writer at a
    /// time: `&mut`-free for the example, so callers keep to a single writer thread).
    fn replace(&self, value: T) -> Result<(), barrier::BarrierError> {
        let old = self.current.swap(Box::into_raw(Box::new(value)), AcqRel);
        barrier::heavy()?;
        for slot in &self.slots {
            while slot.load(Acquire) == old {
                std::thread::yield_now();
            }
        }
        // SAFETY: `old` came from Box::into_raw, is no longer published, and no reader
        // announces it (a reader that announces it later sees it unpublished and retries
        // without dereferencing it).
        drop(unsafe { Box::from_raw(old) });
        Ok(())
    }
}

impl<T, const READERS: usize> Drop for ReadMostly<T, READERS> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader is running; the pointer came from Box::into_raw.
        drop(unsafe { Box::from_raw(*self.current.get_mut()) });
    }
}

fn main() {
    const READERS: usize = 3;
    let shared = ReadMostly::<Config, READERS>::new(Config { a: 0, b: 0 });
    let done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let started = AtomicUsize::new(0);
    println!("heavy fences use {:?}", barrier::heavy_mechanism());
    std::thread::scope(|s| {
        for slot in 0..READERS {
            let (shared, done, reads, started) = (&shared, &done, &reads, &started);
            s.spawn(move || {
                started.fetch_add(1, Relaxed);
                let (mut last, mut n) = (0, 0usize);
                while !done.load(Relaxed) {
                    let (a, b) = shared.read(slot, |c| (c.a, c.b));
                    assert_eq!(b, 2 * a, "a torn or freed value");
                    assert!(a >= last, "went back from {last} to {a}");
                    last = a;
                    n += 1;
                }
                reads.fetch_add(n, Relaxed);
            });
        }
        // Every reader runs before the first replacement, so that reads and replacements
        // interleave.
        while started.load(Relaxed) < READERS {
            std::thread::yield_now();
        }
        for a in 1..=2_000 {
            shared
                .replace(Config { a, b: 2 * a })
                .expect("no heavy fence on this system");
        }
        done.store(true, Relaxed);
    });
    let last = shared.read(0, |c| c.a);
    println!(
        "2000 replacements, {} reads by {READERS} readers, last value {last}",
        reads.load(Relaxed)
    );
    assert_eq!(last, 2_000);
}

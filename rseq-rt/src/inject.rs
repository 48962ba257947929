//! Fault injection: delay loops inside critical sections, for stress tests.
//!
//! When the `critical_section` macro is built with the `inject-delays` feature (the `rseq`
//! crate's feature of the same name turns it on), every generated section spins between each
//! pair of its steps: at *point* `k` (before the section's `k`-th step, counting the read of the
//! CPU index as step 0) it counts down [`delay`]`(k)` iterations. With a few thousand
//! iterations the window in which the kernel can preempt, migrate or signal the thread — and so
//! abort the section — covers every step, not only the few nanoseconds a section normally
//! lasts. The fallback path (no rseq) spins at the same points while it holds its slot lock.
//!
//! The counts are process-wide and shared by every section: point `k` of a counter and point
//! `k` of a list pop read the same count. Points beyond [`POINTS`]` - 1` use the last count.
//!
//! Without the feature, the macro emits nothing for these points: the counts below exist but
//! no code reads them.
//!
//! ```
//! // Spin 1000 times after the index check and 500 times before the commit of a two-step
//! // section (a load, then the commit).
//! rseq::inject::set_delay(0, 1000);
//! rseq::inject::set_delay(2, 500);
//! assert_eq!(rseq::inject::delay(2), 500);
//! rseq::inject::clear();
//! assert_eq!(rseq::inject::delay(0), 0);
//! ```

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// How many distinct injection points there are.
pub const POINTS: usize = 16;

/// Whether this build of the runtime was asked for injection (`rseq-rt`'s `inject-delays`
/// feature, which the `rseq` crate's feature of the same name enables together with the
/// macro's). Sections only spin when the *macro* was built with the feature.
pub const ENABLED: bool = cfg!(feature = "inject-delays");

/// The loop counts the generated sections read (by symbol, from their `asm!`).
#[doc(hidden)]
pub static DELAYS: [AtomicU32; POINTS] = [const { AtomicU32::new(0) }; POINTS];

/// Sets the number of loop iterations at `point` (clamped to the last point).
pub fn set_delay(point: usize, loops: u32) {
    DELAYS[point.min(POINTS - 1)].store(loops, Relaxed);
}

/// The number of loop iterations at `point` (clamped to the last point).
pub fn delay(point: usize) -> u32 {
    DELAYS[point.min(POINTS - 1)].load(Relaxed)
}

/// Sets every point's count to 0.
pub fn clear() {
    for d in &DELAYS {
        d.store(0, Relaxed);
    }
}

/// Spins for the count of `point`: what the fallback path of a section runs at each point.
#[doc(hidden)]
#[inline(never)]
pub fn spin(point: usize) {
    // The same plain count-down as the asm loops (no `pause`: it costs tens of cycles).
    let mut n = delay(point);
    while core::hint::black_box(n) > 0 {
        n -= 1;
    }
}

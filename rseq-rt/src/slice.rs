//! Time-slice extension (Linux 7.0+): a thread asks the scheduler to let it finish a short
//! critical region — a spinlock held in user space, say — before it is preempted.
//!
//! A thread opts in once with [`SliceExtension::enable`]. Around each short region it then
//! calls [`SliceExtension::request`], which sets the `request` byte of its rseq area, and
//! [`Request::finish`] at the end. If an interrupt arrives meanwhile and the scheduler wants
//! the CPU for another task, the kernel grants an extension instead of preempting: it clears
//! `request`, sets `granted`, and returns to the thread with a timer armed (by default 5 µs;
//! `/sys/kernel/debug/rseq/slice_ext_nsec` sets it). `finish` sees the grant and gives the CPU
//! back at once with the `rseq_slice_yield` system call; a thread that overstays is preempted
//! by the timer. Regions that must not block others for long — lock holders, above all — are
//! the use: a holder preempted inside one makes every waiter spin or sleep for a whole time
//! slice.
//!
//! What the kernel needs:
//! - Linux ≥ 7.0 built with `CONFIG_RSEQ_SLICE_EXTENSION` (not set in Debian's 7.x kernels),
//!   not booted with `rseq_slice_ext=0`;
//! - an architecture with the generic entry code (x86_64, s390x, riscv64, loongarch64, …);
//! - a registration of the thread's rseq area that is longer than the original 32 bytes, which
//!   7.x serves with its "V2" ABI. The library's own registration (`Rseq(Library)`) is; glibc
//!   2.35–2.39 registers 32 bytes, so under glibc's registration [`SliceExtension::enable`]
//!   fails with [`SliceError::LegacyRegistration`]: set `GLIBC_TUNABLES=glibc.pthread.rseq=0`
//!   so that the library registers its threads.
//!
//! Nothing here changes how critical sections run; the two are independent.
//!
//! ```no_run
//! use rseq::slice::{Finish, SliceExtension};
//! use std::sync::atomic::{AtomicBool, Ordering};
//!
//! static LOCKED: AtomicBool = AtomicBool::new(false);
//!
//! match SliceExtension::enable() {
//!     Ok(ext) => {
//!         let request = ext.request();
//!         while LOCKED.swap(true, Ordering::Acquire) {
//!             std::hint::spin_loop();
//!         }
//!         // ... the short work under the lock ...
//!         LOCKED.store(false, Ordering::Release);
//!         match request.finish() {
//!             Finish::NotNeeded => {}
//!             Finish::Yielded => println!("the kernel extended the slice; the CPU was given back"),
//!             Finish::Revoked => println!("extended, but preempted before the end"),
//!         }
//!     }
//!     Err(e) => println!("no time-slice extension: {e}"),
//! }
//! ```

use crate::abi::{self, RseqArea};
use crate::registration;
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{compiler_fence, Ordering};

/// Why the calling thread cannot use time-slice extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SliceError {
    /// The thread has no rseq area: the process runs in the fallback, or this thread could not
    /// register (the error says why).
    NotRegistered(crate::RegistrationError),
    /// The kernel has no time-slice extension: `EINVAL` from `prctl` before Linux 7.0 and on
    /// architectures without the generic entry code, `ENOTSUPP` from 7.x kernels built without
    /// `CONFIG_RSEQ_SLICE_EXTENSION` (Debian's).
    Unsupported,
    /// `ENOTSUPP` from `prctl` for a 32-byte registration (glibc 2.35–2.39's): Linux serves it
    /// with the original ABI, which has no time-slice extension (whether or not the kernel has
    /// it for longer registrations).
    LegacyRegistration,
    /// `ENOTSUPP` from `prctl` for a longer registration on a kernel booted with
    /// `rseq_slice_ext=0`.
    Disabled,
    /// Any other error number from `prctl`.
    Os(i32),
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRegistered(e) => write!(
                f,
                "time-slice extension needs the thread's rseq area, and this thread has none: {e}"
            ),
            Self::Unsupported => f.write_str(
                "the kernel has no time-slice extension: it needs Linux 7.0 or later built with \
                 CONFIG_RSEQ_SLICE_EXTENSION (Debian's 7.x kernels are not), on an architecture \
                 with the generic entry code (x86_64, s390x, riscv64, loongarch64)",
            ),
            Self::LegacyRegistration => f.write_str(
                "the thread's rseq area is registered with the original 32 bytes (glibc's \
                 registration), which Linux serves without time-slice extension (ENOTSUPP); run \
                 with GLIBC_TUNABLES=glibc.pthread.rseq=0 so that the library registers the whole \
                 area (the kernel must also be built with CONFIG_RSEQ_SLICE_EXTENSION)",
            ),
            Self::Disabled => f.write_str(
                "time-slice extension is switched off on the kernel command line (ENOTSUPP); boot \
                 without rseq_slice_ext=0",
            ),
            Self::Os(e) => write!(
                f,
                "prctl(PR_RSEQ_SLICE_EXTENSION) failed: {}",
                std::io::Error::from_raw_os_error(*e)
            ),
        }
    }
}

impl std::error::Error for SliceError {}

/// The calling thread's live rseq area, registering it first if need be.
fn live_area() -> Result<*mut RseqArea, SliceError> {
    registration::register_current_thread().map_err(SliceError::NotRegistered)?;
    Ok(registration::area_ptr())
}

fn prctl(cmd: libc::c_ulong, arg: libc::c_ulong) -> Result<libc::c_int, i32> {
    // SAFETY: PR_RSEQ_SLICE_EXTENSION takes integers only.
    let ret = unsafe {
        libc::prctl(
            abi::PR_RSEQ_SLICE_EXTENSION,
            cmd,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret >= 0 {
        Ok(ret)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Whether the kernel offers time-slice extension to the calling thread's registration (the
/// `RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE` bit it sets in the area's `flags`); registers the thread
/// first. `false` without an area.
pub fn available() -> bool {
    match live_area() {
        // SAFETY: a live area of this thread; a volatile read of a field the kernel writes.
        Ok(area) => unsafe {
            core::ptr::addr_of!((*area).flags).read_volatile()
                & abi::RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE
                != 0
        },
        Err(_) => false,
    }
}

/// Whether time-slice extension is enabled for the calling thread (`PR_RSEQ_SLICE_EXTENSION_GET`).
pub fn enabled() -> Result<bool, SliceError> {
    live_area()?;
    prctl(abi::PR_RSEQ_SLICE_EXTENSION_GET, 0)
        .map(|r| r as libc::c_ulong & abi::PR_RSEQ_SLICE_EXT_ENABLE != 0)
        .map_err(|e| from_errno(e, false))
}

/// Whether the calling thread's area is registered with the original 32 bytes, which Linux 7.x
/// serves with its legacy ABI: glibc's registration when glibc publishes a size of at most 32
/// (2.35–2.39 publish 20 and register 32), the library's when its length is 32.
fn legacy_registration() -> bool {
    match registration::owner() {
        Some(registration::Owner::Glibc) => {
            crate::sys::glibc_rseq().is_none_or(|g| g.size as usize <= abi::ORIG_RSEQ_SIZE)
        }
        Some(registration::Owner::Library) => {
            registration::features().registration_len <= abi::ORIG_RSEQ_SIZE
        }
        None => false,
    }
}

/// Maps `prctl`'s error. Linux 7.x answers `ENOTSUPP` alike for a kernel built without the
/// extension, one booted with `rseq_slice_ext=0`, and a legacy registration: the registration's
/// length and the kernel command line tell them apart.
fn from_errno(errno: i32, legacy: bool) -> SliceError {
    match errno {
        libc::EINVAL => SliceError::Unsupported,
        abi::ENOTSUPP if legacy => SliceError::LegacyRegistration,
        abi::ENOTSUPP if switched_off_at_boot() => SliceError::Disabled,
        abi::ENOTSUPP => SliceError::Unsupported,
        other => SliceError::Os(other),
    }
}

/// Whether the kernel command line switches time-slice extension off (`rseq_slice_ext=` with a
/// value the kernel reads as false: `0`, `n`, `f`, `off`).
fn switched_off_at_boot() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|line| {
        line.split_whitespace()
            .filter_map(|w| w.strip_prefix("rseq_slice_ext="))
            .next_back()
            .is_some_and(|v| {
                v.eq_ignore_ascii_case("off") || v.starts_with(['0', 'n', 'N', 'f', 'F'])
            })
    })
}

/// Time-slice extension, enabled for the thread that holds it (it is neither `Send` nor
/// `Sync`: the kernel's switch and the area are per thread).
#[derive(Debug)]
pub struct SliceExtension {
    _thread: PhantomData<*mut ()>,
}

impl SliceExtension {
    /// Enables time-slice extension for the calling thread (`PR_RSEQ_SLICE_EXTENSION_SET`),
    /// registering its rseq area first if need be. Each thread enables it for itself.
    pub fn enable() -> Result<SliceExtension, SliceError> {
        live_area()?;
        prctl(
            abi::PR_RSEQ_SLICE_EXTENSION_SET,
            abi::PR_RSEQ_SLICE_EXT_ENABLE,
        )
        .map_err(|e| from_errno(e, legacy_registration()))?;
        Ok(SliceExtension {
            _thread: PhantomData,
        })
    }

    /// Disables it again for the calling thread.
    pub fn disable(self) -> Result<(), SliceError> {
        live_area()?;
        prctl(abi::PR_RSEQ_SLICE_EXTENSION_SET, 0)
            .map(|_| ())
            .map_err(|e| from_errno(e, false))
    }

    /// Asks for an extension should the thread be preempted before [`Request::finish`] (or the
    /// request's drop). Keep the region short: the kernel grants microseconds. Requests do not
    /// nest: finishing an inner one ends the outer one's request too (the outer then finishes
    /// as [`Finish::Revoked`]).
    #[inline]
    pub fn request(&self) -> Request<'_> {
        let area = registration::area_ptr();
        // The area can only be missing if it was unregistered since `enable` (a thread-local
        // destructor after the library's exit hook): then there is nothing to ask.
        let live = registration::area_is_live(area);
        if live {
            // SAFETY: this thread's live area; the kernel reads `request` on the way back to
            // user space, on this CPU, so a plain byte store is the whole protocol.
            unsafe { request_byte(area).write_volatile(1) };
        }
        compiler_fence(Ordering::SeqCst);
        Request {
            area: live.then_some(area),
            _ext: PhantomData,
        }
    }
}

/// The `request` byte of `slice_ctrl`; `granted` is the next one.
fn request_byte(area: *mut RseqArea) -> *mut u8 {
    area.cast::<u8>().wrapping_add(abi::OFFSET_SLICE_CTRL)
}

/// How a region under [`SliceExtension::request`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The request was still set: no preemption was due during the region.
    NotNeeded,
    /// The kernel extended the slice, and the CPU was given back (`rseq_slice_yield` said the
    /// thread yielded within its extension).
    Yielded,
    /// The request was cleared but the thread was scheduled out before the end: the extension
    /// ran out, the thread made a system call, or the kernel withdrew it (a migration).
    Revoked,
}

/// An extension asked for; [`finish`](Request::finish) it when the region ends (dropping it
/// does the same and ignores the outcome).
#[must_use = "the request stays set until it is finished or dropped"]
#[derive(Debug)]
pub struct Request<'a> {
    area: Option<*mut RseqArea>,
    _ext: PhantomData<&'a SliceExtension>,
}

impl Request<'_> {
    /// Ends the region: clears the request and, if the kernel extended the slice meanwhile,
    /// gives the CPU back with `rseq_slice_yield`.
    #[inline]
    pub fn finish(mut self) -> Finish {
        self.end()
    }

    fn end(&mut self) -> Finish {
        compiler_fence(Ordering::SeqCst);
        let Some(area) = self.area.take() else {
            return Finish::Revoked;
        };
        // Still the thread's live area (see `request`)?
        if area != registration::area_ptr() || !registration::area_is_live(area) {
            return Finish::Revoked;
        }
        let request = request_byte(area);
        // SAFETY: this thread's live area; volatile byte accesses of `slice_ctrl`, which only
        // this thread and the kernel on its behalf touch.
        let (was_requested, granted) = unsafe {
            let was = request.read_volatile();
            request.write_volatile(0);
            (was != 0, request.wrapping_add(1).read_volatile() != 0)
        };
        if granted {
            // SAFETY: rseq_slice_yield takes no arguments.
            let yielded = unsafe { libc::syscall(abi::SYS_RSEQ_SLICE_YIELD) };
            return if yielded == 1 {
                Finish::Yielded
            } else {
                Finish::Revoked
            };
        }
        if was_requested {
            Finish::NotNeeded
        } else {
            Finish::Revoked
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if self.area.is_some() {
            self.end();
        }
    }
}

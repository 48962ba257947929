//! Raw system calls and process facts: `rseq(2)`, `membarrier(2)`, `getauxval(3)`, glibc's
//! published registration, the thread pointer and the set of possible CPUs.

use crate::abi::{self, RseqArea};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The abort signature this build registers and emits (from `rseq-arch`).
pub const SIGNATURE: u32 = rseq_arch::current.signature;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `rseq(area, len, flags, sig)`, returning the `errno` on failure.
///
/// # Safety
/// On success with `flags == 0` the kernel writes into `area` on every return to user space
/// until the thread unregisters or exits: `area` must stay valid (and be `len` bytes of
/// writable memory) for that long.
pub unsafe fn rseq(area: *mut RseqArea, len: u32, flags: i32, sig: u32) -> Result<(), i32> {
    let ret = libc::syscall(libc::SYS_rseq, area, len, flags, sig);
    if ret == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `membarrier(cmd, flags, cpu_id)`.
pub fn membarrier(cmd: libc::c_int, flags: libc::c_uint, cpu: libc::c_int) -> Result<i64, i32> {
    // SAFETY: membarrier takes no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, cmd, flags, cpu) };
    if ret >= 0 {
        Ok(ret as i64)
    } else {
        Err(errno())
    }
}

/// What the kernel says of the area it needs, from the auxiliary vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Bytes of `struct rseq` the kernel fills (20 on kernels that predate the auxv entry).
    pub feature_size: usize,
    /// Alignment it requires of a registered area (32 on such kernels).
    pub align: usize,
}

impl KernelFeatures {
    /// Reads `AT_RSEQ_FEATURE_SIZE` and `AT_RSEQ_ALIGN`; both are 0 before Linux 6.3.
    pub fn read() -> Self {
        // SAFETY: getauxval has no preconditions.
        let (size, align) = unsafe {
            (
                libc::getauxval(abi::AT_RSEQ_FEATURE_SIZE) as usize,
                libc::getauxval(abi::AT_RSEQ_ALIGN) as usize,
            )
        };
        KernelFeatures {
            feature_size: if size == 0 {
                abi::ORIG_FEATURE_SIZE
            } else {
                size
            },
            align: if align == 0 {
                abi::ORIG_RSEQ_SIZE
            } else {
                align
            },
        }
    }

    /// The length to register an own area with: the original 32 bytes while that covers every
    /// feature (the kernel always accepts it), else the feature size rounded up to the alignment.
    pub fn registration_len(&self) -> usize {
        if self.feature_size <= abi::ORIG_RSEQ_SIZE {
            abi::ORIG_RSEQ_SIZE
        } else {
            self.feature_size.next_multiple_of(self.align)
        }
    }

    /// The alignment an own area needs.
    pub fn area_align(&self) -> usize {
        self.align.max(abi::ORIG_RSEQ_SIZE)
    }
}

/// glibc's published registration (`__rseq_offset`, `__rseq_size`, `__rseq_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlibcRseq {
    /// Offset of each thread's area from the thread pointer.
    pub offset: isize,
    /// Registered size; 0 when glibc did not register (tunable off, or failure).
    pub size: u32,
    /// Registration flags (always 0).
    pub flags: u32,
}

/// Looks glibc's symbols up at run time, so the binary also loads on musl and glibc < 2.35.
/// `None` when they are absent.
#[cfg(not(all(target_env = "gnu", target_feature = "crt-static")))]
pub fn glibc_rseq() -> Option<GlibcRseq> {
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; the symbols, when present, are
    // glibc's `const ptrdiff_t` / `const unsigned int` objects, set before `main` and never
    // changed.
    unsafe {
        let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        let flags = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_flags".as_ptr());
        if offset.is_null() || size.is_null() {
            return None;
        }
        Some(GlibcRseq {
            offset: *(offset as *const isize),
            size: *(size as *const u32),
            flags: if flags.is_null() {
                0
            } else {
                *(flags as *const u32)
            },
        })
    }
}

/// A statically linked glibc program cannot `dlsym` its own libc; it links the symbols, which
/// needs a static glibc ≥ 2.35.
#[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
pub fn glibc_rseq() -> Option<GlibcRseq> {
    extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
        static __rseq_flags: u32;
    }
    // SAFETY: glibc sets these before `main` and never changes them.
    unsafe {
        Some(GlibcRseq {
            offset: core::ptr::read_volatile(&raw const __rseq_offset),
            size: core::ptr::read_volatile(&raw const __rseq_size),
            flags: core::ptr::read_volatile(&raw const __rseq_flags),
        })
    }
}

/// The thread pointer, as glibc's `__rseq_offset` is relative to it.
#[inline]
pub fn thread_pointer() -> *mut u8 {
    let tp: *mut u8;
    // SAFETY: each sequence only reads the thread-pointer register of the current thread.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
        #[cfg(target_arch = "x86")]
        core::arch::asm!("mov {}, dword ptr gs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
        #[cfg(target_arch = "arm")]
        core::arch::asm!("mrc p15, 0, {}, c13, c0, 3", out(reg) tp, options(nostack, nomem, preserves_flags));
        #[cfg(target_arch = "powerpc64")]
        core::arch::asm!("mr {}, 13", out(reg) tp, options(nostack, nomem, preserves_flags));
        #[cfg(target_arch = "powerpc")]
        core::arch::asm!("mr {}, 2", out(reg) tp, options(nostack, nomem, preserves_flags));
        #[cfg(target_arch = "riscv64")]
        core::arch::asm!("mv {}, tp", out(reg) tp, options(nostack, nomem, preserves_flags));
        #[cfg(target_arch = "s390x")]
        core::arch::asm!(
            "ear {0}, %a0",
            "sllg {0}, {0}, 32",
            "ear {0}, %a1",
            out(reg) tp,
            options(nostack, nomem, preserves_flags)
        );
        #[cfg(target_arch = "loongarch64")]
        core::arch::asm!("move {}, $tp", out(reg) tp, options(nostack, nomem, preserves_flags));
    }
    tp
}

/// Highest possible CPU id + 1, from `/sys/devices/system/cpu/possible` (ids may be sparse),
/// else `sysconf(_SC_NPROCESSORS_CONF)`. Computed once; every `cpu_id` and `mm_cid` the kernel
/// reports is below it.
pub fn possible_cpus() -> usize {
    static CACHE: AtomicUsize = AtomicUsize::new(0);
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let n = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
            if n > 0 {
                n as usize
            } else {
                1
            }
        });
    CACHE.store(n, Ordering::Relaxed);
    n
}

/// Parses a kernel CPU list such as `0-3,8,10-11` and returns the highest id + 1.
pub fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut highest: Option<usize> = None;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let last = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (
                    lo.trim().parse::<usize>().ok()?,
                    hi.trim().parse::<usize>().ok()?,
                );
                if hi < lo {
                    return None;
                }
                hi
            }
            None => part.trim().parse::<usize>().ok()?,
        };
        highest = Some(highest.map_or(last, |h| h.max(last)));
    }
    highest.map(|h| h + 1)
}

/// A CPU mask as `sched_{get,set}affinity(2)` take it: one bit per CPU, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask(pub Vec<libc::c_ulong>);

impl CpuMask {
    const BITS: usize = libc::c_ulong::BITS as usize;

    /// The mask with only `cpu` set, large enough for `words` words.
    pub fn single(cpu: usize, words: usize) -> CpuMask {
        let mut mask = CpuMask(vec![0; words]);
        mask.insert(cpu);
        mask
    }

    /// Adds `cpu` to the mask, growing it if needed.
    pub fn insert(&mut self, cpu: usize) {
        let word = cpu / Self::BITS;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (cpu % Self::BITS);
    }

    /// Whether `cpu` is in the mask.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0
            .get(cpu / Self::BITS)
            .is_some_and(|w| w & (1 << (cpu % Self::BITS)) != 0)
    }

    /// The CPUs in the mask, in order.
    pub fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.0.len() * Self::BITS).filter(|&c| self.contains(c))
    }
}

/// The calling thread's CPU affinity (`sched_getaffinity(0)`, raw, so that machines with more
/// CPUs than `cpu_set_t` holds work too).
pub fn thread_affinity() -> Result<CpuMask, i32> {
    let mut words = possible_cpus().div_ceil(CpuMask::BITS).max(16);
    loop {
        let mut mask = vec![0 as libc::c_ulong; words];
        // SAFETY: the kernel writes at most `words * size_of::<c_ulong>()` bytes into `mask`.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_sched_getaffinity,
                0,
                words * core::mem::size_of::<libc::c_ulong>(),
                mask.as_mut_ptr(),
            )
        };
        match ret {
            r if r >= 0 => return Ok(CpuMask(mask)),
            _ if errno() == libc::EINVAL && words < 1 << 16 => words *= 2,
            _ => return Err(errno()),
        }
    }
}

/// Sets the calling thread's CPU affinity (`sched_setaffinity(0)`). When the calling thread is
/// not on a CPU of the new mask, the kernel moves it before the call returns.
pub fn set_thread_affinity(mask: &CpuMask) -> Result<(), i32> {
    // SAFETY: the kernel reads `mask.0.len() * size_of::<c_ulong>()` bytes from `mask`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            mask.0.len() * core::mem::size_of::<libc::c_ulong>(),
            mask.0.as_ptr(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `sched_getcpu()`, or 0 if it fails.
pub fn sched_getcpu() -> usize {
    // SAFETY: no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu >= 0 {
        cpu as usize
    } else {
        0
    }
}

/// The NUMA node of the current CPU, from `getcpu(2)`.
pub fn getcpu_node() -> usize {
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: both pointers are to live locals; the third argument is unused since 2.6.24.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            core::ptr::null_mut::<u8>(),
        )
    };
    if ret == 0 {
        node as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_give_highest_plus_one() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(12));
        assert_eq!(parse_cpu_list("4,2"), Some(5));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn registration_len_follows_the_kernel_rules() {
        let old = KernelFeatures {
            feature_size: 20,
            align: 32,
        };
        assert_eq!(old.registration_len(), 32);
        let here = KernelFeatures {
            feature_size: 28,
            align: 32,
        };
        assert_eq!(here.registration_len(), 32);
        let newer = KernelFeatures {
            feature_size: 33,
            align: 64,
        };
        assert_eq!(newer.registration_len(), 64);
        assert_eq!(newer.area_align(), 64);
    }

    #[test]
    fn possible_cpus_covers_the_current_cpu() {
        assert!(sched_getcpu() < possible_cpus());
    }
}

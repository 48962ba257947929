//! The kernel's rseq ABI: the thread area, the critical-section descriptor and the constants of
//! `rseq(2)`, `getauxval(3)` and `membarrier(2)`. Offsets are checked by tests against the
//! numbers of the UAPI header `linux/rseq.h`.

use core::mem::offset_of;

/// `struct rseq`, the per-thread area the kernel keeps up to date.
///
/// Only `rseq_cs` (and `flags`, which must stay 0) belong to user space. Every other field is
/// written by the kernel on each return to user space; the library only ever *reads* them
/// (Linux 7.1 kills a process that writes them).
///
/// The kernel may extend the area: its size and alignment come from
/// [`AT_RSEQ_FEATURE_SIZE`] and [`AT_RSEQ_ALIGN`], never from `size_of::<RseqArea>()`.
#[repr(C, align(32))]
#[derive(Debug)]
pub struct RseqArea {
    /// CPU number, always valid (0 before registration).
    pub cpu_id_start: u32,
    /// CPU number, or [`CPU_ID_UNINITIALIZED`] / [`CPU_ID_REGISTRATION_FAILED`].
    pub cpu_id: u32,
    /// Address of the running critical section's descriptor (a 64-bit field on every target).
    pub rseq_cs: u64,
    /// Deprecated restart flags, which user space leaves 0; Linux 7.x sets its time-slice
    /// extension bits here ([`RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE`],
    /// [`RSEQ_CS_FLAG_SLICE_EXT_ENABLED`]).
    pub flags: u32,
    /// NUMA node of `cpu_id` (feature size ≥ 24).
    pub node_id: u32,
    /// Concurrency id: dense, below the number of possible CPUs (feature size ≥ 28).
    pub mm_cid: u32,
    /// Time-slice extension control (feature size ≥ 32, Linux 7.0): the `request` byte, which
    /// user space sets, then the `granted` byte, which only the kernel sets (see
    /// [`slice`](crate::slice)).
    pub slice_ctrl: u32,
}

impl RseqArea {
    /// An area as it must look before registration: `cpu_id` is [`CPU_ID_UNINITIALIZED`], so a
    /// critical section that reads it sees an out-of-range index and aborts.
    pub const UNREGISTERED: RseqArea = RseqArea {
        cpu_id_start: 0,
        cpu_id: CPU_ID_UNINITIALIZED,
        rseq_cs: 0,
        flags: 0,
        node_id: 0,
        mm_cid: 0,
        slice_ctrl: 0,
    };
}

/// `struct rseq_cs`, the descriptor of one critical section (in the `__rseq_cs` section).
/// 32 bytes, 32-byte aligned; on 32-bit targets each `u64` holds a pointer and a zero word.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RseqCs {
    /// Always 0.
    pub version: u32,
    /// Always 0.
    pub flags: u32,
    /// First instruction of the section.
    pub start_ip: u64,
    /// Bytes from `start_ip` to the first instruction after the commit.
    pub post_commit_offset: u64,
    /// Where the kernel resumes the thread on abort; preceded by the signature.
    pub abort_ip: u64,
}

/// `cpu_id` before the thread is registered (`RSEQ_CPU_ID_UNINITIALIZED`, −1).
pub const CPU_ID_UNINITIALIZED: u32 = -1i32 as u32;
/// `cpu_id` after a failed registration (`RSEQ_CPU_ID_REGISTRATION_FAILED`, −2; glibc sets it).
pub const CPU_ID_REGISTRATION_FAILED: u32 = -2i32 as u32;
/// `RSEQ_FLAG_UNREGISTER`, the only flag of `rseq(2)`.
pub const RSEQ_FLAG_UNREGISTER: i32 = 1;
/// The size of the original (Linux 4.18) area; always accepted as a registration length.
pub const ORIG_RSEQ_SIZE: usize = 32;
/// The feature size a kernel that predates the auxv entries implements (through `flags`).
pub const ORIG_FEATURE_SIZE: usize = 20;

/// `AT_RSEQ_FEATURE_SIZE` (`linux/auxvec.h`, Linux 6.3): bytes of `struct rseq` the kernel fills.
pub const AT_RSEQ_FEATURE_SIZE: libc::c_ulong = 27;
/// `AT_RSEQ_ALIGN` (`linux/auxvec.h`, Linux 6.3): alignment the kernel requires of the area.
pub const AT_RSEQ_ALIGN: libc::c_ulong = 28;

/// Byte offsets of the area's fields, for the code generator's templates.
pub const OFFSET_CPU_ID_START: usize = offset_of!(RseqArea, cpu_id_start);
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_CPU_ID: usize = offset_of!(RseqArea, cpu_id);
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_RSEQ_CS: usize = offset_of!(RseqArea, rseq_cs);
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_FLAGS: usize = offset_of!(RseqArea, flags);
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_NODE_ID: usize = offset_of!(RseqArea, node_id);
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_MM_CID: usize = offset_of!(RseqArea, mm_cid);
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_SLICE_CTRL: usize = offset_of!(RseqArea, slice_ctrl);

/// Feature size from which `node_id` is filled in.
pub const FEATURE_SIZE_NODE_ID: usize = OFFSET_NODE_ID + 4;
/// Feature size from which `mm_cid` is filled in.
pub const FEATURE_SIZE_MM_CID: usize = OFFSET_MM_CID + 4;
/// Feature size from which `slice_ctrl` exists (Linux 7.0 reports 33: one reserved byte more).
pub const FEATURE_SIZE_SLICE_CTRL: usize = OFFSET_SLICE_CTRL + 4;

// Time-slice extension (Linux 7.0): `linux/prctl.h`, `linux/rseq.h`, the system call tables.

/// `PR_RSEQ_SLICE_EXTENSION`, the `prctl` option that switches it per thread.
pub const PR_RSEQ_SLICE_EXTENSION: libc::c_int = 79;
/// `PR_RSEQ_SLICE_EXTENSION_GET`: answers [`PR_RSEQ_SLICE_EXT_ENABLE`] or 0.
pub const PR_RSEQ_SLICE_EXTENSION_GET: libc::c_ulong = 1;
/// `PR_RSEQ_SLICE_EXTENSION_SET`: its argument is [`PR_RSEQ_SLICE_EXT_ENABLE`] or 0.
pub const PR_RSEQ_SLICE_EXTENSION_SET: libc::c_ulong = 2;
/// `PR_RSEQ_SLICE_EXT_ENABLE`.
pub const PR_RSEQ_SLICE_EXT_ENABLE: libc::c_ulong = 1;
/// Bit of the area's `flags`: the kernel offers time-slice extension to this registration.
pub const RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE: u32 = 1 << 4;
/// Bit of the area's `flags`: time-slice extension is enabled for the thread.
pub const RSEQ_CS_FLAG_SLICE_EXT_ENABLED: u32 = 1 << 5;
/// `rseq_slice_yield(2)`: the same number on every architecture the library supports.
pub const SYS_RSEQ_SLICE_YIELD: libc::c_long = 471;
/// `ENOTSUPP`, a kernel-internal error number that `prctl` returns for time-slice extension.
pub const ENOTSUPP: i32 = 524;

// `membarrier(2)` commands: `enum membarrier_cmd` in the UAPI header `linux/membarrier.h`.
// Each is one bit, so that `MEMBARRIER_CMD_QUERY` can answer with the set it supports.

/// `MEMBARRIER_CMD_QUERY` (Linux 4.3): the bit set of supported commands.
pub const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
/// `MEMBARRIER_CMD_GLOBAL` (Linux 4.3, named `MEMBARRIER_CMD_SHARED` until 4.16): a barrier on
/// every running thread of every process, through `synchronize_rcu` (slow, blocks).
pub const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1 << 0;
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (Linux 4.16): IPIs the CPUs running a process that
/// registered with [`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`].
pub const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` (Linux 4.16).
pub const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (Linux 4.14): IPIs the CPUs running this process's
/// threads; `EPERM` until the process registered.
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` (Linux 4.14).
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE` (Linux 4.16): as `PRIVATE_EXPEDITED`, and each
/// interrupted CPU executes a core-serialising instruction before returning to user space.
/// Only on architectures that select `ARCH_HAS_MEMBARRIER_SYNC_CORE`.
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE` (Linux 4.16).
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ` (Linux 5.10): restarts the rseq critical sections
/// running on the interrupted CPUs.
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ` (Linux 5.10).
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;
/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3): the bit set of commands this process
/// registered for.
pub const MEMBARRIER_CMD_GET_REGISTRATIONS: libc::c_int = 1 << 9;
/// `MEMBARRIER_CMD_FLAG_CPU` (`enum membarrier_cmd_flag`, Linux 5.10): target the CPU given as
/// the third argument (only with `PRIVATE_EXPEDITED_RSEQ`; other commands answer `EINVAL`).
pub const MEMBARRIER_CMD_FLAG_CPU: libc::c_uint = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn area_layout_matches_the_uapi() {
        assert_eq!(OFFSET_CPU_ID_START, 0);
        assert_eq!(OFFSET_CPU_ID, 4);
        assert_eq!(OFFSET_RSEQ_CS, 8);
        assert_eq!(OFFSET_FLAGS, 16);
        assert_eq!(OFFSET_NODE_ID, 20);
        assert_eq!(OFFSET_MM_CID, 24);
        assert_eq!(OFFSET_SLICE_CTRL, 28);
        assert_eq!(size_of::<RseqArea>(), ORIG_RSEQ_SIZE);
        assert_eq!(align_of::<RseqArea>(), 32);
        assert_eq!(FEATURE_SIZE_NODE_ID, 24);
        assert_eq!(FEATURE_SIZE_MM_CID, 28);
        assert_eq!(FEATURE_SIZE_SLICE_CTRL, 32);
    }

    #[test]
    fn descriptor_layout_matches_the_uapi() {
        assert_eq!(offset_of!(RseqCs, version), 0);
        assert_eq!(offset_of!(RseqCs, flags), 4);
        assert_eq!(offset_of!(RseqCs, start_ip), 8);
        assert_eq!(offset_of!(RseqCs, post_commit_offset), 16);
        assert_eq!(offset_of!(RseqCs, abort_ip), 24);
        assert_eq!(size_of::<RseqCs>(), 32);
        assert_eq!(align_of::<RseqCs>(), 32);
    }

    #[test]
    fn sentinel_cpu_ids_are_the_kernels() {
        assert_eq!(CPU_ID_UNINITIALIZED, 0xffff_ffff);
        assert_eq!(CPU_ID_REGISTRATION_FAILED, 0xffff_fffe);
        assert_eq!(RseqArea::UNREGISTERED.cpu_id, CPU_ID_UNINITIALIZED);
    }

    #[test]
    fn membarrier_commands_are_the_uapi_numbers() {
        assert_eq!(MEMBARRIER_CMD_QUERY, 0);
        assert_eq!(MEMBARRIER_CMD_GLOBAL, 0x1);
        assert_eq!(MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0x2);
        assert_eq!(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0x4);
        assert_eq!(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0x8);
        assert_eq!(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0x10);
        assert_eq!(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0x20);
        assert_eq!(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0x40);
        assert_eq!(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0x80);
        assert_eq!(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0x100);
        assert_eq!(MEMBARRIER_CMD_GET_REGISTRATIONS, 0x200);
        assert_eq!(MEMBARRIER_CMD_FLAG_CPU, 1);
    }
}

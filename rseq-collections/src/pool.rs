//! [`PerCpuPool`]: an object pool in the style of tcmalloc's per-CPU caches.
//!
//! # Design
//!
//! The pool owns objects of one type `T`, each in its own allocation of the global allocator
//! (a `Box<T>`). Free objects sit in two tiers:
//!
//! - a **per-CPU cache**: a [`PerCpuBuffer`] of up to `CAP` free pointers per CPU.
//!   [`alloc`](PerCpuPool::alloc) pops from the current CPU's cache and
//!   [`free`](PerCpuPool::free) pushes onto it: one critical section each, no atomic
//!   instruction, no lock, no shared cache line;
//! - a **global free list** (a mutex-protected `Vec`), which caches refill from and drain to
//!   in batches of `CAP / 2`: when the current cache is empty, `alloc` moves a batch from the
//!   global list (creating new objects with the pool's initializer when the global list is
//!   empty too); when it is full, `free` moves a batch to the global list.
//!
//! Objects are *type-stable*: a `T` is created once (by the initializer) when the pool first
//! needs it and dropped only when the pool releases it ([`shrink`](PerCpuPool::shrink) or the
//! pool's drop). In between it is handed out and returned any number of times *as it is*:
//! [`alloc`](PerCpuPool::alloc) hands out a valid `T` in the state its last user left it (like
//! a slab cache with a constructor), which makes the pool suited to recycling buffers and
//! other objects that are expensive to set up. [`PerCpuPool::get`] wraps this in a safe
//! handle.
//!
//! Each object is in exactly one place at a time — a cache, the global list, or a user's
//! hands — since every move is a committed section or happens under the global mutex, so an
//! object is never handed out twice, and the pool's drop finds every free object.
//!
//! # Draining another CPU's cache
//!
//! A thread cannot run a section on another CPU, and writing another CPU's cache from outside
//! would race with the sections running there. [`drain_cpu`](PerCpuPool::drain_cpu) uses
//! [`PerCpuBuffer::drain_cpu`]: it sets that cache's limit to 0 (a word every push and pop
//! section loads, so they fail and take the slow paths through the global list), calls
//! [`rseq_rt::fence_cpu`] (after which every section on that CPU has committed or been
//! restarted; in `Fallback` mode, it takes that slot's lock), moves the now quiescent cache
//! to the global list, fences again and restores the limit. See the
//! [`buffer`](crate::buffer) module for the ordering argument.

use crate::buffer::PerCpuBuffer;
use rseq_rt::FenceError;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counts of a pool's objects ([`PerCpuPool::stats`]): a snapshot, exact when no thread
/// allocates or frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Objects the pool owns: created and not yet released (free or handed out).
    pub objects: usize,
    /// Free objects in the global list.
    pub global: usize,
    /// Free objects in the per-CPU caches.
    pub cached: usize,
}

impl PoolStats {
    /// Objects handed out and not yet returned: `objects - global - cached`.
    pub fn in_use(&self) -> usize {
        self.objects.saturating_sub(self.global + self.cached)
    }
}

/// How a pool makes new objects (a plain function needs no `T: 'static`).
enum Init<T> {
    Plain(fn() -> T),
    Boxed(Box<dyn Fn() -> T + Send + Sync>),
}

/// An object pool with per-CPU caches of up to `CAP` free objects (tcmalloc's design, see the
/// [module documentation](self)): [`get`](Self::get) and dropping the handle cost one critical
/// section each on the fast path.
///
/// ```
/// use rseq::collections::pool::PerCpuPool;
///
/// // Recycled buffers: a returned Vec keeps its capacity for the next user.
/// let buffers: PerCpuPool<Vec<u8>> = PerCpuPool::new();
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| {
///             for i in 0..1000 {
///                 let mut buf = buffers.get();
///                 buf.clear();
///                 buf.extend_from_slice(&[i as u8; 64]);
///                 assert_eq!(buf.len(), 64);
///             } // returned to the current CPU's cache here
///         });
///     }
/// });
/// let stats = buffers.stats();
/// assert_eq!(stats.in_use(), 0);
/// assert!(stats.objects <= 4 * 64, "objects are reused");
/// ```
pub struct PerCpuPool<T, const CAP: usize = 64> {
    cache: PerCpuBuffer<CAP>,
    global: Mutex<Vec<NonNull<T>>>,
    init: Init<T>,
    /// Objects created and not yet dropped.
    objects: AtomicUsize,
    _owns: PhantomData<T>,
}

// SAFETY: the pool moves `T`s between threads (one user at a time), which `T: Send` allows;
// the initializer is `Send + Sync`.
unsafe impl<T: Send, const CAP: usize> Send for PerCpuPool<T, CAP> {}
// SAFETY: shared access hands each object to one user at a time (never twice), moving it
// between threads: `T: Send` suffices, as for a `Mutex<T>`.
unsafe impl<T: Send, const CAP: usize> Sync for PerCpuPool<T, CAP> {}

impl<T: Default, const CAP: usize> PerCpuPool<T, CAP> {
    /// An empty pool whose new objects are `T::default()`.
    ///
    /// ```
    /// let pool: rseq::collections::pool::PerCpuPool<String> =
    ///     rseq::collections::pool::PerCpuPool::new();
    /// assert_eq!(*pool.get(), "");
    /// ```
    pub fn new() -> Self {
        Self::build(Init::Plain(T::default))
    }
}

impl<T: Default, const CAP: usize> Default for PerCpuPool<T, CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const CAP: usize> PerCpuPool<T, CAP> {
    /// Objects moved between a cache and the global list at a time.
    const BATCH: usize = if CAP / 2 == 0 { 1 } else { CAP / 2 };

    /// An empty pool whose new objects are made by `init` (called when the pool needs one
    /// more object, not on every [`get`](Self::get)).
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<Vec<u8>, 16> = PerCpuPool::with_init(|| Vec::with_capacity(4096));
    /// assert!(pool.get().capacity() >= 4096);
    /// ```
    pub fn with_init(init: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::build(Init::Boxed(Box::new(init)))
    }

    fn build(init: Init<T>) -> Self {
        PerCpuPool {
            cache: PerCpuBuffer::new(),
            global: Mutex::new(Vec::new()),
            init,
            objects: AtomicUsize::new(0),
            _owns: PhantomData,
        }
    }

    /// The capacity of each CPU's cache: `CAP`.
    ///
    /// ```
    /// let pool: rseq::collections::pool::PerCpuPool<u64, 32> =
    ///     rseq::collections::pool::PerCpuPool::new();
    /// assert_eq!(pool.cache_capacity(), 32);
    /// ```
    pub const fn cache_capacity(&self) -> usize {
        CAP
    }

    fn lock_global(&self) -> MutexGuard<'_, Vec<NonNull<T>>> {
        self.global.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new object from the initializer, in its own allocation.
    fn create(&self) -> NonNull<T> {
        let value = match &self.init {
            Init::Plain(f) => f(),
            Init::Boxed(f) => f(),
        };
        let object = NonNull::from(Box::leak(Box::new(value)));
        self.objects.fetch_add(1, Ordering::Relaxed);
        object
    }

    /// Drops a free object and releases its memory.
    ///
    /// # Safety
    /// `object` came from `create` and is free (in no cache, list or hands).
    unsafe fn destroy(&self, object: NonNull<T>) {
        // SAFETY: made by `Box::leak` in `create`, owned by nobody else.
        drop(unsafe { Box::from_raw(object.as_ptr()) });
        self.objects.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hands out a free object, which the caller then owns until it gives it back with
    /// [`free`](Self::free): a valid `T`, in the state its last user left it (or fresh from
    /// the initializer). One critical section when the current CPU's cache has one.
    ///
    /// Not giving it back is a leak, not an error; prefer [`get`](Self::get).
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<u64> = PerCpuPool::new();
    /// let object = pool.alloc();
    /// // SAFETY: ours until freed; a valid `u64`.
    /// unsafe {
    ///     *object.as_ptr() = 5;
    ///     pool.free(object);
    /// }
    /// ```
    #[inline]
    pub fn alloc(&self) -> NonNull<T> {
        match self.cache.pop() {
            Some(object) => object.cast(),
            None => self.refill(),
        }
    }

    /// The current CPU's cache was empty (or being drained): take a batch from the global list,
    /// or create one, keep one object and cache the others.
    #[cold]
    fn refill(&self) -> NonNull<T> {
        let mut global = self.lock_global();
        if let Some(object) = global.pop() {
            for _ in 1..Self::BATCH {
                let Some(extra) = global.pop() else { break };
                if let Err(extra) = self.cache.push(extra.cast()) {
                    global.push(extra.cast());
                    break;
                }
            }
            return object;
        }
        drop(global);
        // The extras first, so that a panicking initializer loses nothing.
        for _ in 1..Self::BATCH {
            let extra = self.create();
            if let Err(extra) = self.cache.push(extra.cast()) {
                self.lock_global().push(extra.cast());
                break;
            }
        }
        self.create()
    }

    /// Gives back an object from [`alloc`](Self::alloc): one critical section when the current
    /// CPU's cache has room. The object is not dropped: the next user gets it as it is.
    ///
    /// # Safety
    /// `object` came from this pool's `alloc` (or [`PoolBox::into_raw`]) and has not been
    /// given back since; it holds a valid `T`; the caller no longer uses it.
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<[u8; 32]> = PerCpuPool::new();
    /// let a = pool.alloc();
    /// // SAFETY: from `pool.alloc`, given back once.
    /// unsafe { pool.free(a) };
    /// assert_eq!(pool.stats().in_use(), 0);
    /// ```
    #[inline]
    pub unsafe fn free(&self, object: NonNull<T>) {
        if let Err(object) = self.cache.push(object.cast()) {
            self.spill(object.cast());
        }
    }

    /// The current CPU's cache was full (or being drained): move `object` and a batch from the
    /// cache to the global list.
    #[cold]
    fn spill(&self, object: NonNull<T>) {
        let mut global = self.lock_global();
        global.push(object);
        for _ in 1..Self::BATCH {
            match self.cache.pop() {
                Some(extra) => global.push(extra.cast()),
                None => break,
            }
        }
    }

    /// Hands out a free object in a handle that gives it back when dropped (see
    /// [`alloc`](Self::alloc): the object is in the state its last user left it).
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<Vec<u32>> = PerCpuPool::new();
    /// {
    ///     let mut v = pool.get();
    ///     v.push(1);
    /// }
    /// assert_eq!(pool.stats().in_use(), 0);
    /// ```
    #[inline]
    pub fn get(&self) -> PoolBox<'_, T, CAP> {
        PoolBox {
            object: self.alloc(),
            pool: self,
        }
    }

    /// Moves CPU `cpu`'s cache to the global list, while other threads allocate and free
    /// (meanwhile, their operations on that CPU take the slow paths); returns how many objects
    /// moved. Uses the fence protocol of the [module documentation](self).
    ///
    /// # Errors
    /// [`FenceError::InvalidCpu`] if `cpu` is above [`rseq::possible_cpus`](rseq_rt::possible_cpus) (that index itself
    /// is the slot every `PerCpu` has for the generic fallback's spare lock, which this
    /// structure's own fallback never uses); another error if the fence fails, in which case
    /// nothing moved.
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<u64> = PerCpuPool::new();
    /// drop(pool.get());
    /// for cpu in 0..rseq::possible_cpus() {
    ///     pool.drain_cpu(cpu).unwrap();
    /// }
    /// let stats = pool.stats();
    /// assert_eq!((stats.cached, stats.global), (0, stats.objects));
    /// ```
    pub fn drain_cpu(&self, cpu: usize) -> Result<usize, FenceError> {
        let mut global = self.lock_global();
        global.reserve(CAP);
        self.cache
            .drain_cpu(cpu, |object| global.push(object.cast()))
    }

    /// Moves every CPU's cache to the global list, then drops and deallocates every object in
    /// the global list; returns how many objects were released. Objects handed out are not
    /// affected.
    ///
    /// # Errors
    /// The first fence error (which cannot happen in `Fallback` mode); the global list is then
    /// released all the same, the caches of the CPUs not reached stay in place.
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<u64> = PerCpuPool::new();
    /// let kept = pool.get();
    /// pool.shrink().unwrap();
    /// assert_eq!(pool.stats().objects, 1);
    /// drop(kept);
    /// ```
    pub fn shrink(&self) -> Result<usize, FenceError> {
        let drained =
            (0..rseq_rt::possible_cpus()).try_for_each(|cpu| self.drain_cpu(cpu).map(drop));
        let free = std::mem::take(&mut *self.lock_global());
        let released = free.len();
        for object in free {
            // SAFETY: taken from the global list: free, made by `create`.
            unsafe { self.destroy(object) };
        }
        drained.map(|()| released)
    }

    /// Counts of objects (see [`PoolStats`]).
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<u64> = PerCpuPool::new();
    /// let a = pool.get();
    /// assert_eq!(pool.stats().in_use(), 1);
    /// ```
    pub fn stats(&self) -> PoolStats {
        let global = self.lock_global().len();
        PoolStats {
            objects: self.objects.load(Ordering::Relaxed),
            global,
            cached: self.cache.len(),
        }
    }
}

impl<T, const CAP: usize> Drop for PerCpuPool<T, CAP> {
    /// Drops and deallocates every free object: those in the caches and in the global list.
    /// (Objects handed out through [`alloc`](Self::alloc) and never given back are leaked.)
    fn drop(&mut self) {
        let mut free = std::mem::take(self.global.get_mut().unwrap_or_else(|p| p.into_inner()));
        self.cache.take_all(|object| free.push(object.cast()));
        for object in free {
            // SAFETY: free objects made by `create`, each in one place only.
            unsafe { self.destroy(object) };
        }
    }
}

impl<T, const CAP: usize> fmt::Debug for PerCpuPool<T, CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuPool")
            .field("cache_capacity", &CAP)
            .field("stats", &self.stats())
            .finish()
    }
}

/// An object from a [`PerCpuPool`], given back to the pool when dropped (not dropped itself:
/// the next user gets it as it is).
///
/// ```
/// use rseq::collections::pool::PerCpuPool;
/// let pool: PerCpuPool<String> = PerCpuPool::new();
/// let mut s = pool.get();
/// s.clear();
/// s.push_str("hello");
/// assert_eq!(&*s, "hello");
/// ```
pub struct PoolBox<'a, T, const CAP: usize = 64> {
    object: NonNull<T>,
    pool: &'a PerCpuPool<T, CAP>,
}

// SAFETY: the handle owns its object like a `Box<T>`, and the pool is `Sync` for `T: Send`.
unsafe impl<T: Send, const CAP: usize> Send for PoolBox<'_, T, CAP> {}
// SAFETY: shared access gives `&T` only.
unsafe impl<T: Sync + Send, const CAP: usize> Sync for PoolBox<'_, T, CAP> {}

impl<'a, T, const CAP: usize> PoolBox<'a, T, CAP> {
    /// Gives up the handle without giving the object back: the caller owns it, and must give
    /// it back with [`PerCpuPool::free`] (or leak it).
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<u8> = PerCpuPool::new();
    /// let raw = pool.get().into_raw();
    /// // SAFETY: from this pool, given back once.
    /// unsafe { pool.free(raw) };
    /// ```
    pub fn into_raw(self) -> NonNull<T> {
        ManuallyDrop::new(self).object
    }

    /// The pool the object belongs to.
    ///
    /// ```
    /// use rseq::collections::pool::PerCpuPool;
    /// let pool: PerCpuPool<u8> = PerCpuPool::new();
    /// let b = pool.get();
    /// assert!(std::ptr::eq(b.pool(), &pool));
    /// ```
    pub fn pool(&self) -> &'a PerCpuPool<T, CAP> {
        self.pool
    }
}

impl<T, const CAP: usize> Deref for PoolBox<'_, T, CAP> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the handle owns a valid object.
        unsafe { self.object.as_ref() }
    }
}

impl<T, const CAP: usize> DerefMut for PoolBox<'_, T, CAP> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the handle owns a valid object, exclusively.
        unsafe { self.object.as_mut() }
    }
}

impl<T, const CAP: usize> Drop for PoolBox<'_, T, CAP> {
    fn drop(&mut self) {
        // SAFETY: from `pool.alloc`, given back once (here).
        unsafe { self.pool.free(self.object) }
    }
}

impl<T: fmt::Debug, const CAP: usize> fmt::Debug for PoolBox<'_, T, CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

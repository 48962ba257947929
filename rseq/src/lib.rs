//! Restartable sequences (rseq) for Rust: per-CPU critical sections without atomics.
//!
//! A critical section is a short list of steps on per-CPU data. The kernel restarts it from the
//! beginning if the thread is preempted, migrated or signalled before its final *commit*, so the
//! steps need no atomic instructions and no locks. Write the steps with [`critical_section`];
//! the macro checks them at compile time and generates the assembly, the descriptor the kernel
//! reads, the abort handler, the retry loop and a lock-based fallback for systems without rseq.
//!
//! Everything from the runtime ([`rseq_rt`]: [`PerCpu`], [`current_cpu`], [`fence_all`],
//! [`mode`], …) is re-exported here, so this is the one dependency users add.
//!
//! ```
//! use rseq::{critical_section, PerCpu};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! /// Adds `n` to the current CPU's counter: no atomic instruction, no lock.
//! #[critical_section]
//! fn add(counters: &PerCpu<AtomicUsize>, n: usize) {
//!     commit::add(counters[cpu], n);
//! }
//!
//! let counters: PerCpu<AtomicUsize> = PerCpu::default();
//! std::thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| (0..10_000).for_each(|_| add(&counters, 1)));
//!     }
//! });
//! let total: usize = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
//! assert_eq!(total, 40_000);
//! ```

pub use rseq_rt::*;

/// Per-CPU counters, stacks, buffers, object pools and a caching allocator, built with the
/// language below.
#[doc(inline)]
pub use rseq_collections as collections;

/// Turns a function whose body is a list of per-CPU steps into a restartable sequence.
///
/// # The language
///
/// The body is a list of **steps**, then an optional **result** expression:
///
/// | step | meaning |
/// |---|---|
/// | `let x = load(place);` | read a word into the value `x` (`let x: *mut Node = …` gives it a type) |
/// | `let y = add(x, n);` | a word sum, computed in a register (wrapping) |
/// | `let y = sub(x, n);` | a word difference (wrapping); `n` is not a loaded value (it is negated before the section) |
/// | `if a == b { fail(value) }` | leave the section, returning `value` (also `!=`, and unsigned `<` `<=` `>` `>=`) |
/// | `store(place, value);` | a speculative store to memory that is not yet published |
/// | `memcpy(dst, src, len);` | a speculative copy of `len` bytes |
/// | `commit::store(place, value);` | the commit: one word store, the last step |
/// | `commit::store_release(place, value);` | the commit, ordered after every earlier store (for publishing) |
/// | `commit::add(place, value);` | the commit: add to a word |
/// | `commit::sub(place, value);` | the commit: subtract from a word (`value` as for `sub`) |
///
/// After the commit, the body may end with an expression: the function's value when the section
/// commits. It (and each `fail` value) can use the loaded values.
///
/// **Places** (memory locations of one word):
/// - `p[cpu]` — the current CPU's slot of a parameter `p: &PerCpu<T>`; `p[cpu].field.sub` — a
///   field of it (by `offset_of!`); `p[cpu].array[i]` — an element of a word array, indexed by a
///   value `i`;
/// - `*ptr`, `*(ptr + offset)` — through a pointer (a parameter or a loaded value; `offset` in
///   bytes);
/// - `(*ptr).field` — a field through a pointer whose type is known (a `*mut T` parameter, or a
///   value loaded with `let ptr: *mut T = load(..)`).
///
/// A section cannot be a generic function (its stride and offsets are constants of the asm), but
/// it can sit in a generic `impl` and use the impl's type and const parameters, e.g.
/// `&PerCpu<Slot<CAP>>` inside `impl<const CAP: usize> Buffer<CAP>`.
///
/// The `PerCpu` parameter must be written as `&PerCpu<T>` (any path ending in `PerCpu`): the
/// macro sees only the tokens, so a type alias of it is not recognised.
///
/// Places are words, and what a section may do with one depends on its type (the traits of
/// [`word`] say which; any other type is a compile error on the place):
/// - a section **loads** any word: `usize`, `isize`, `u64`/`i64` on 64-bit targets, raw
///   pointers, `NonNull<T>`, `Option<NonNull<T>>`, or an atomic word;
/// - it **writes a `PerCpu` slot** (`p[cpu]`, `p[cpu].field`, `p[cpu].array[i]`) only if that is
///   an atomic word (`AtomicUsize`, `AtomicIsize`, `AtomicU64`/`AtomicI64`, `AtomicPtr<T>`):
///   the `PerCpu` is shared, and other code may hold a `&T` to the slot (from
///   [`PerCpu::iter`](crate::PerCpu::iter)) while the section writes it;
/// - it **writes through a pointer** (`*ptr`, `(*ptr).field`) a word that every bit pattern is
///   valid for (plain integers and raw pointers too: its `unsafe fn`'s callers vouch that no
///   reference to the place is live), never a `NonNull<T>`, which a section could set to null.
///
/// **Values**: a loaded value, a parameter (cast to a word with `as usize`), an integer, `null`
/// (0), a constant (`BUF_CAP`, `Self::CAPACITY`: a path, or a name written in capitals, that
/// is neither a parameter nor a loaded value), or `{ expression }` — any Rust expression,
/// evaluated once before the section (so it cannot use loaded values).
///
/// # What makes a section safe
///
/// A section is a safe `fn` when nothing it does can break Rust's rules, whatever its arguments:
/// - its places are `PerCpu` slots and their fields, reached by the CPU index the section reads
///   and checks against the number of slots every `PerCpu` has;
/// - it writes only atomic words there (see above), so writing never changes memory behind a
///   shared reference, and never stores a word its type cannot hold;
/// - its `{ expression }` operands and results are ordinary Rust, checked by the compiler as
///   written (an `unsafe` operation in them still needs its own `unsafe` block).
///
/// Places through raw pointers, element indexing (`p[cpu].array[i]`, where `i` is a loaded value
/// the macro cannot bound) and `memcpy` reach memory the macro cannot check: those sections
/// must be `unsafe fn`, and say in their `# Safety` section what callers guarantee.
///
/// # Methods
///
/// A section cannot be a method, nor reach places through `self`: the macro reads each
/// `PerCpu`'s element type from the parameter's tokens (for the stride and field offsets), which
/// it cannot do for a field. Write the section as a function and call it from the method:
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// #[derive(Default)]
/// pub struct Stats { hits: PerCpu<AtomicUsize> }
///
/// #[critical_section]
/// fn count_hit(hits: &PerCpu<AtomicUsize>) {
///     commit::add(hits[cpu], 1);
/// }
///
/// impl Stats {
///     pub fn hit(&self) { count_hit(&self.hits) }
///     pub fn hits(&self) -> usize { self.hits.iter().map(|h| h.load(Ordering::Relaxed)).sum() }
/// }
///
/// let stats = Stats::default();
/// stats.hit();
/// assert_eq!(stats.hits(), 1);
/// ```
///
/// # Registers
///
/// Every value a section keeps lives in a register from where it is loaded or computed to its
/// last use: loaded values and `add`/`sub` results, parameters and `{ expression }`s used as
/// values, `PerCpu` parameters (their bases), the rseq area and the index, plus the target's
/// scratch registers. Values never live at the same time share a register (no value is moved
/// to memory for it), so a section takes as many registers as it has values live at its
/// busiest step: each one is a register the compiler cannot use for the code around the
/// section, which then saves fewer. A section that needs more than **13** (what x86_64 offers a
/// section) is rejected on every target, with the count in the message; targets that offer
/// fewer check again when compiled for them:
///
/// | target | registers for a section |
/// |---|---|
/// | x86_64, armv7/Thumb-2 | 13 |
/// | s390x | 12 |
/// | aarch64 | 24 |
/// | riscv64, powerpc64, powerpc | 22 |
/// | i686 | 5, with values kept in a stack frame when a section needs more |
///
/// # Options
///
/// - `index = cpu_id` (default): slots are indexed by the CPU number.
/// - `index = mm_cid`: by the concurrency id (dense; fewer slots in use when a process runs on
///   few CPUs of a large machine). Where the kernel lacks `mm_cid` (before Linux 6.3), such
///   sections use the fallback, and fences also wait for the slot locks.
/// - `index = given(cpu), moved = value`: librseq's style: the caller passes the CPU it
///   computed (a `usize` parameter); if the thread is not on it, the section returns `value`
///   without effect. The same holds in the fallback: the section locks that CPU's slot, then
///   checks that the thread runs on that CPU and returns `value` if not (the thread may still
///   migrate during the steps, which rseq would abort; the lock keeps them exclusive on that
///   slot, so only locality is lost). A parameter named `cpu` without this option is an error,
///   since `p[cpu]` would still mean the CPU the section runs on.
/// - `crate = path`: where the generated code finds this crate (default `::rseq`), for crates
///   that re-export it under another name.
/// - `aborts = STATIC`: add 1 to an `AtomicUsize` each time the kernel aborts the section (aborts
///   are otherwise invisible: the section simply runs again).
/// - `fallback = path`: where sections cannot run on rseq, call this function (same parameters,
///   same result) instead of the generated slot-locked body, for a structure that has a cheaper
///   algorithm without rseq (see below).
/// - `on_abort = value`: when the first attempt aborts, return `value` at once: no retry, no
///   registration, no fallback (so not with `fallback = path`). For a hot path that hands
///   every other case to a slow path of its own (see below).
/// - `retrying = name` (with `on_abort`): also generate the function `name`, the same section
///   without `on_abort` (same parameters, result and attributes; its own documentation line),
///   for that slow path.
///
/// # A fallback of your own
///
/// Without rseq (the process in `Fallback` mode, or an `index = mm_cid` section on a kernel
/// without `mm_cid`), a section runs its steps under a lock of the runtime's slot table, with the
/// care signal handlers need: tens of nanoseconds, where the section on rseq costs about one. A structure whose
/// data only its own code touches can do better: a per-CPU counter can `fetch_add`. With
/// `fallback = path` the section calls `path(arguments…)` instead, every time it would have
/// taken the lock. What the runtime promises, and what it leaves to you:
///
/// - `path` runs only when no section of the process runs on rseq (after a demotion's fence), or,
///   for `index = mm_cid` sections, when every such section takes its fallback. So it never races
///   with the rseq path of a section on the same data.
/// - It is on its own otherwise: the runtime's [`fence_all`] and [`fence_cpu`] wait for the slot
///   locks, not for it. Whatever your fallbacks share (with each other, with a signal handler
///   that interrupts one, with the code that drains or fences) they synchronize themselves.
/// - An `unsafe fn` section may name an `unsafe fn` (its callers' promises carry over); a safe
///   section must name a safe function.
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// /// Every access to these slots is this add or an atomic load, so without rseq an atomic
/// /// add on any slot is exact.
/// #[critical_section(fallback = hits_add_atomic)]
/// fn hits_add(hits: &PerCpu<AtomicUsize>, n: usize) {
///     commit::add(hits[cpu], n);
/// }
///
/// fn hits_add_atomic(hits: &PerCpu<AtomicUsize>, n: usize) {
///     let slot = hits.get(rseq::current_cpu()).expect("one slot per possible CPU");
///     slot.fetch_add(n, Ordering::Relaxed);
/// }
///
/// let hits: PerCpu<AtomicUsize> = PerCpu::default();
/// hits_add(&hits, 2);
/// hits_add(&hits, 3);
/// assert_eq!(hits.iter().map(|h| h.load(Ordering::Relaxed)).sum::<usize>(), 5);
/// ```
///
/// `rseq::collections::counter::PerCpuCounter` does this with a lock of its own per slot, so
/// that its exact `take` can wait for adds in flight.
///
/// # A hit path that calls nothing
///
/// The retries, the registration and the fallback are one out-of-line call after an abort; a
/// value the caller still needs after the section (to handle a miss, say) is live across that
/// call, so the caller keeps it in a register the call preserves, and saves and restores that
/// register on every call, hit or miss. With `on_abort = value` the section calls nothing: it
/// commits, fails, or returns `value`. A caller that sends the misses and the aborts to a
/// function of its own, which runs the same steps in a section without `on_abort` (it retries,
/// registers the thread and falls back as usual), keeps nothing alive across a call on its hit
/// path; `retrying = name` generates that section from the same steps. The first attempt of a thread the runtime has not attached yet aborts, and so does
/// every attempt where sections run in the fallback: the slow path handles both. `PerCpuAlloc`'s
/// allocation and free work this way.
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// #[derive(Default)]
/// #[repr(C)]
/// pub struct Stack {
///     len: AtomicUsize,
///     items: [AtomicUsize; 32],
/// }
///
/// /// Pops the current CPU's top item; 0 when the stack is empty or the attempt aborted.
/// /// `pop_any` is the same, retried: 0 only when the stack is empty.
/// /// # Safety
/// /// `len` stays within `items` (0 to 32).
/// #[critical_section(on_abort = 0, retrying = pop_any)]
/// #[inline(always)]
/// unsafe fn pop_hit(stacks: &PerCpu<Stack>) -> usize {
///     let len = load(stacks[cpu].len);
///     if len == 0 {
///         fail(0)
///     }
///     let last = sub(len, 1);
///     let item = load(stacks[cpu].items[last]);
///     commit::store(stacks[cpu].len, last);
///     item
/// }
///
/// /// # Safety
/// /// As `pop_hit`.
/// #[critical_section]
/// unsafe fn push(stacks: &PerCpu<Stack>, item: usize) -> bool {
///     let len = load(stacks[cpu].len);
///     if len == 32 {
///         fail(false)
///     }
///     store(stacks[cpu].items[len], item);
///     commit::add(stacks[cpu].len, 1);
///     true
/// }
///
/// /// Items are never 0: 0 is `pop_hit`'s "no item".
/// fn pop(stacks: &PerCpu<Stack>, refill: impl FnOnce() -> usize) -> usize {
///     // SAFETY: every section keeps `len` within 0..=32.
///     match unsafe { pop_hit(stacks) } {
///         0 => pop_slow(stacks, refill),
///         item => item,
///     }
/// }
///
/// #[inline(never)]
/// fn pop_slow(stacks: &PerCpu<Stack>, refill: impl FnOnce() -> usize) -> usize {
///     // SAFETY: as above.
///     match unsafe { pop_any(stacks) } {
///         0 => refill(),
///         item => item,
///     }
/// }
///
/// let stacks: PerCpu<Stack> = PerCpu::default();
/// // SAFETY: as above.
/// assert!(unsafe { push(&stacks, 7) });
/// // Whichever path pops it (a first attempt may abort), the item comes back once; unless
/// // the thread moved to another CPU after the push, where the stack is empty.
/// let got = pop(&stacks, || 99);
/// let left: usize = stacks.iter().map(|s| s.len.load(Ordering::Relaxed)).sum();
/// assert!((got, left) == (7, 0) || (got, left) == (99, 1));
/// ```
///
/// # What it generates
///
/// The index is read inside the section and checked against a limit the runtime controls, which
/// covers an unregistered thread, a failed registration and the fallback mode with no extra
/// instruction. On abort the function retries by itself; the first section of a thread
/// registers it. Where rseq is unusable (valgrind, qemu-user, seccomp, old kernels,
/// `RSEQ_DISABLE=1`), the same steps run in plain Rust under a per-slot lock, with the same
/// results.
///
/// The success path is the section and nothing else: retries, registration and the fallback are
/// one out-of-line call made only after an abort, so no value is kept in memory for them. The
/// function is `#[inline]` unless it carries an `inline` attribute of its own, so a section
/// called from another crate inlines into its caller's loop. A counter add inlined so costs no
/// more than the same loop written by hand in `asm!` the way librseq's helpers work (the demo
/// and `cargo bench` measure both side by side).
///
/// # Examples: librseq's operations
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
///
/// // cmpeq-store: if *v == expect then *v = new, else fail.
/// #[critical_section]
/// fn cmpeq_store(v: &PerCpu<AtomicUsize>, expect: usize, new: usize) -> Result<(), usize> {
///     let seen = load(v[cpu]);
///     if seen != expect { fail(Err(seen)) }
///     commit::store(v[cpu], new);
///     Ok(())
/// }
///
/// // add: *v += n.
/// #[critical_section]
/// fn add(v: &PerCpu<AtomicUsize>, n: usize) {
///     commit::add(v[cpu], n);
/// }
///
/// // double compare: *v == e and *v2 == e2, then *v = new.
/// #[repr(C)]
/// struct Pair { a: AtomicUsize, b: AtomicUsize }
/// #[critical_section]
/// fn double_cmp_store(p: &PerCpu<Pair>, e: usize, e2: usize, new: usize) -> bool {
///     let a = load(p[cpu].a);
///     if a != e { fail(false) }
///     let b = load(p[cpu].b);
///     if b != e2 { fail(false) }
///     commit::store(p[cpu].a, new);
///     true
/// }
///
/// // pop: h = *v; if h == null fail; *v = h->next.
/// #[repr(C)]
/// struct Node { next: *mut Node, value: usize }
/// /// # Safety
/// /// Every node on the lists is valid and owned by the lists.
/// #[critical_section]
/// unsafe fn pop(heads: &PerCpu<AtomicPtr<Node>>) -> Option<*mut Node> {
///     let head: *mut Node = load(heads[cpu]);
///     if head == null { fail(None) }
///     let next = load((*head).next);
///     commit::store(heads[cpu], next);
///     Some(head)
/// }
///
/// // push: node->next = *v (speculative), then *v = node.
/// /// # Safety
/// /// `node` is valid and not on any list.
/// #[critical_section]
/// unsafe fn push(heads: &PerCpu<AtomicPtr<Node>>, node: *mut Node) {
///     let head = load(heads[cpu]);
///     store((*node).next, head);
///     commit::store_release(heads[cpu], node);
/// }
///
/// // deref-add: *(*p + off) += n.
/// /// # Safety
/// /// Every slot points at a valid `Node`.
/// #[critical_section]
/// unsafe fn deref_add(p: &PerCpu<AtomicPtr<Node>>, n: usize) {
///     let node: *mut Node = load(p[cpu]);
///     commit::add((*node).value, n);
/// }
///
/// let heads: PerCpu<AtomicPtr<Node>> = PerCpu::new(|_| AtomicPtr::new(std::ptr::null_mut()));
/// let node = Box::into_raw(Box::new(Node { next: std::ptr::null_mut(), value: 7 }));
/// unsafe {
///     push(&heads, node);
///     let got = loop {
///         // The thread may have moved to another CPU between the calls: look everywhere.
///         if let Some(n) = pop(&heads) { break n; }
///         let n = heads.iter().find(|h| !h.load(Ordering::Relaxed).is_null());
///         assert!(n.is_some(), "the node is on some CPU's list");
///     };
///     assert_eq!((*got).value, 7);
///     drop(Box::from_raw(got));
/// }
/// let v: PerCpu<AtomicUsize> = PerCpu::default();
/// assert_eq!(cmpeq_store(&v, 0, 5), Ok(()));
/// ```
///
/// `given(cpu)`: the caller reads the CPU once, works on it, and retries (or goes elsewhere)
/// when the section reports that the thread moved:
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// #[critical_section(index = given(cpu), moved = false)]
/// fn add_on(counters: &PerCpu<AtomicUsize>, cpu: usize, n: usize) -> bool {
///     commit::add(counters[cpu], n);
///     true
/// }
///
/// let counters: PerCpu<AtomicUsize> = PerCpu::default();
/// let mut cpu = rseq::current_cpu();
/// while !add_on(&counters, cpu, 1) {
///     // Moved: this thread runs on another CPU now; work on that one.
///     cpu = rseq::current_cpu();
/// }
/// assert_eq!(counters.iter().nth(cpu).unwrap().load(Ordering::Relaxed), 1);
/// ```
///
/// Decrementing: `sub` and `commit::sub` take a parameter, an integer or a constant:
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::AtomicUsize;
///
/// /// Takes `n` from the current CPU's budget, or fails with what is left.
/// #[critical_section]
/// fn take(budget: &PerCpu<AtomicUsize>, n: usize) -> Result<usize, usize> {
///     let left = load(budget[cpu]);
///     if left < n { fail(Err(left)) }
///     let after = sub(left, n);
///     commit::sub(budget[cpu], n);
///     Ok(after)
/// }
///
/// let budget: PerCpu<AtomicUsize> = PerCpu::new(|_| AtomicUsize::new(10));
/// assert_eq!(take(&budget, 3), Ok(7));
/// # let _ = take;
/// ```
///
/// try-store and memcpy (a speculative store or copy into memory that is not yet published,
/// then the commit that publishes it) look like this:
///
/// ```
/// use rseq::{critical_section, PerCpu};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// const CAPACITY: usize = 16;
/// #[repr(C)]
/// struct Buffer { len: AtomicUsize, items: [AtomicUsize; CAPACITY] }
///
/// /// Pushes `item` unless the current CPU's buffer is full.
/// /// # Safety
/// /// None beyond the bound checked in the section (indexing needs an `unsafe fn`).
/// #[critical_section]
/// unsafe fn buffer_push(bufs: &PerCpu<Buffer>, item: usize) -> bool {
///     let len = load(bufs[cpu].len);
///     if len >= CAPACITY { fail(false) }
///     store(bufs[cpu].items[len], item);
///     let grown = add(len, 1);
///     commit::store_release(bufs[cpu].len, grown);
///     true
/// }
///
/// /// Pops the current CPU's last item, if any.
/// /// # Safety
/// /// None beyond the bound checked in the section (indexing needs an `unsafe fn`).
/// #[critical_section]
/// unsafe fn buffer_pop(bufs: &PerCpu<Buffer>) -> Option<usize> {
///     let len = load(bufs[cpu].len);
///     if len == 0 { fail(None) }
///     if len > CAPACITY { fail(None) }
///     let last = sub(len, 1);
///     let item = load(bufs[cpu].items[last]);
///     commit::store(bufs[cpu].len, last);
///     Some(item)
/// }
///
/// /// Copies `len` bytes from `src` to `dst`, then publishes `dst` in the current CPU's slot if
/// /// the slot is still empty.
/// /// # Safety
/// /// `src`/`dst` are valid for `len` bytes; `dst` is not yet visible to other threads.
/// #[critical_section]
/// unsafe fn copy_and_publish(slots: &PerCpu<AtomicUsize>, dst: *mut u8, src: *const u8, len: usize) -> bool {
///     let current = load(slots[cpu]);
///     if current != 0 { fail(false) }
///     memcpy(dst, src, len);
///     commit::store(slots[cpu], dst);
///     true
/// }
/// let bufs: PerCpu<Buffer> = PerCpu::new(|_| Buffer {
///     len: AtomicUsize::new(0),
///     items: std::array::from_fn(|_| AtomicUsize::new(0)),
/// });
/// // SAFETY: the sections check their bounds; nothing else is required.
/// unsafe {
///     assert!(buffer_push(&bufs, 42));
///     match buffer_pop(&bufs) {
///         Some(item) => assert_eq!(item, 42),
///         // The thread moved between the calls: the item waits in the other CPU's buffer.
///         None => assert!(bufs.iter().any(|b| b.len.load(Ordering::Relaxed) == 1)),
///     }
/// }
/// # let _ = copy_and_publish;
/// ```
pub use rseq_macros::critical_section;

/// The README's example, compiled and run as a doctest so it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

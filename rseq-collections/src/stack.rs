//! [`PerCpuStack`]: per-CPU intrusive LIFO lists of raw nodes (librseq's per-CPU list test).
//!
//! # Design
//!
//! Each CPU slot holds the head of a singly linked list of [`Link`]s embedded in the nodes
//! (see [`Linked`]), and a `closed` word used by the drain protocol. Push and pop are critical
//! sections on the current CPU's slot:
//!
//! ```text
//! push: if closed != 0 fail; head = load(heads[cpu].head); node.next = head (speculative);
//!       commit: store_release(heads[cpu].head, node)
//! pop:  if closed != 0 fail; head = load(heads[cpu].head); if head == null fail;
//!       next = load(head.next); commit: store(heads[cpu].head, next)
//! ```
//!
//! # Why there is no ABA problem
//!
//! A lock-free stack built on compare-and-swap suffers ABA: a pop reads `head = A` and
//! `next = B`, another thread pops `A` and `B` and pushes `A` back, and the first pop's CAS
//! (`head == A`) succeeds and installs the stale `B`. Here a CPU's list is only modified by
//! sections running on that CPU (or by a drainer, only while the sections of that CPU are
//! excluded, see below). Between the section's load of `head` and its commit, the only things
//! that can run on that CPU before the commit are preemption, migration and signal delivery,
//! and the kernel restarts the section on each of them. So no other modification of that list
//! can fall between the load and the commit: the commit always applies to the list it read.
//! In `Fallback` mode the section holds the slot's lock from its first load to its commit.
//!
//! # Memory ordering
//!
//! The push's commit is a release store, ordered after the speculative `node.next` store and
//! everything the pusher wrote to the node before. A pop that finds the node runs on the same
//! CPU afterwards (and loads on x86_64 are acquire loads; a migration between the two threads
//! is a full barrier), or, in `Fallback` mode, under the same lock; a drainer reads the list
//! after a `membarrier` fence. The popper therefore sees the node as the pusher left it.
//!
//! # Draining another CPU's list
//!
//! A thread cannot run a section on another CPU, and a plain atomic swap of that CPU's head
//! would race with a section in flight there (the section's commit would then write back a
//! stale `next`, putting drained nodes back on the list). [`PerCpuStack::pop_all_cpu`] uses a
//! fence instead:
//!
//! 1. `closed = 1`: sections that load it fail (push retries, pop reports nothing);
//! 2. [`rseq_rt::fence_cpu`]`(cpu)`: every section that ran on that CPU before has committed
//!    or been restarted, and every later one sees `closed` (in `Fallback` mode: that slot's
//!    lock was taken after the store);
//! 3. the list is quiescent: swap its head to null, detaching the whole chain;
//! 4. a second `fence_cpu(cpu)`, so that a section that sees the reopening (`closed = 0`)
//!    also sees the null head (this orders the two stores for the fallback's relaxed loads
//!    and on weakly ordered CPUs);
//! 5. `closed = 0`.
//!
//! Drainers are serialized by a mutex. Exclusive access (`&mut self`, e.g. at teardown) needs
//! none of this: [`PerCpuStack::take_all`].

use rseq_macros::critical_section;
use rseq_rt::{FenceError, PerCpu};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The link a node embeds to be on a [`PerCpuStack`]: one pointer, owned by the stack while
/// the node is on it.
#[repr(C)]
#[derive(Default)]
pub struct Link {
    next: AtomicPtr<Link>,
}

impl Link {
    /// An unlinked link.
    ///
    /// ```
    /// let link = rseq::collections::stack::Link::new();
    /// # let _ = link;
    /// ```
    pub const fn new() -> Self {
        Link {
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Link")
    }
}

/// A node type that embeds a [`Link`] at byte offset [`LINK_OFFSET`](Self::LINK_OFFSET).
///
/// # Safety
/// `LINK_OFFSET` is the offset of a field of type [`Link`] inside `Self` (use
/// `core::mem::offset_of!`), so that `node + LINK_OFFSET` is that link and
/// `link - LINK_OFFSET` is its node.
///
/// ```
/// use rseq::collections::stack::{Link, Linked};
///
/// struct Job {
///     id: u32,
///     link: Link,
/// }
/// // SAFETY: the offset of `Job::link`, a `Link`.
/// unsafe impl Linked for Job {
///     const LINK_OFFSET: usize = core::mem::offset_of!(Job, link);
/// }
/// # let _ = Job { id: 1, link: Link::new() }.id;
/// ```
pub unsafe trait Linked {
    /// Bytes from the start of the node to its [`Link`].
    const LINK_OFFSET: usize;
}

/// A ready-made node: a [`Link`] and a value.
///
/// ```
/// use rseq::collections::stack::{Node, PerCpuStack};
/// use std::ptr::NonNull;
///
/// let stack: PerCpuStack<Node<u32>> = PerCpuStack::new();
/// let node = NonNull::from(Box::leak(Box::new(Node::new(42))));
/// // SAFETY: the node is valid, on no stack, and ours to hand over.
/// unsafe { stack.push(node) };
/// let all: Vec<_> = stack.pop_all().unwrap().collect();
/// assert_eq!(all, [node]);
/// // SAFETY: we own it again; it came from `Box::leak`.
/// let node = unsafe { Box::from_raw(all[0].as_ptr()) };
/// assert_eq!(node.value, 42);
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct Node<T> {
    link: Link,
    /// The payload.
    pub value: T,
}

impl<T> Node<T> {
    /// An unlinked node holding `value`.
    ///
    /// ```
    /// let n = rseq::collections::stack::Node::new("job");
    /// assert_eq!(n.value, "job");
    /// ```
    pub const fn new(value: T) -> Self {
        Node {
            link: Link::new(),
            value,
        }
    }
}

// SAFETY: `link` is a `Link` field of `Node<T>`.
unsafe impl<T> Linked for Node<T> {
    const LINK_OFFSET: usize = core::mem::offset_of!(Node<T>, link);
}

/// One CPU's list: its head and the drain flag, side by side on the slot's cache line.
#[repr(C)]
#[derive(Default)]
struct Head {
    head: AtomicPtr<Link>,
    /// Nonzero while a drainer owns this list: sections fail without touching it.
    closed: AtomicUsize,
}

/// push: `node.next = head; head = node`, unless the list is closed.
///
/// # Safety
/// `node` is a valid `Link` on no list, which the list takes over.
#[critical_section(crate = ::rseq_rt)]
unsafe fn push_link(heads: &PerCpu<Head>, node: *mut Link) -> bool {
    let closed = load(heads[cpu].closed);
    if closed != 0 {
        fail(false)
    }
    let head = load(heads[cpu].head);
    store((*node).next, head);
    commit::store_release(heads[cpu].head, node);
    true
}

/// pop: `h = head; head = h.next`, unless the list is closed or empty.
///
/// # Safety
/// Every link on the lists is valid.
#[critical_section(crate = ::rseq_rt)]
unsafe fn pop_link(heads: &PerCpu<Head>) -> Option<NonNull<Link>> {
    let closed = load(heads[cpu].closed);
    if closed != 0 {
        fail(None)
    }
    let head: *mut Link = load(heads[cpu].head);
    if head == null {
        fail(None)
    }
    let next = load((*head).next);
    commit::store(heads[cpu].head, next);
    NonNull::new(head)
}

fn to_link<T: Linked>(node: NonNull<T>) -> NonNull<Link> {
    // SAFETY: `Linked` promises a `Link` at that offset inside the node.
    unsafe { node.byte_add(T::LINK_OFFSET).cast() }
}

fn from_link<T: Linked>(link: NonNull<Link>) -> NonNull<T> {
    // SAFETY: every link on a `PerCpuStack<T>` is inside a `T`, `LINK_OFFSET` bytes in.
    unsafe { link.byte_sub(T::LINK_OFFSET).cast() }
}

/// Per-CPU stacks of intrusive nodes: [`push`](Self::push) and [`pop`](Self::pop) work on the
/// current CPU's list with one critical section each, without atomic instructions and without
/// the ABA problem (see the [module documentation](self)).
///
/// The stack does not own the nodes' memory: a pushed node belongs to the stack until it is
/// popped (or drained), then to whoever popped it. Nodes still on the lists when the stack is
/// dropped are forgotten (not freed); drain them first with [`take_all`](Self::take_all) if
/// they need freeing.
///
/// `pop` only looks at the current CPU's list: it returns `None` when that list is empty even
/// if other CPUs' lists hold nodes (the thread may also move right after). Use
/// [`pop_all_cpu`](Self::pop_all_cpu) to collect another CPU's nodes.
///
/// ```
/// use rseq::collections::stack::{Node, PerCpuStack};
/// use std::ptr::NonNull;
///
/// let free: PerCpuStack<Node<usize>> = PerCpuStack::new();
/// std::thread::scope(|s| {
///     for t in 0..4 {
///         let free = &free;
///         s.spawn(move || {
///             for i in 0..100 {
///                 let node = NonNull::from(Box::leak(Box::new(Node::new(t * 100 + i))));
///                 // SAFETY: a fresh node, handed over to the stack.
///                 unsafe { free.push(node) };
///                 if let Some(n) = free.pop() {
///                     // SAFETY: popped, so ours; every node came from `Box::leak`.
///                     unsafe { free.push(n) };
///                 }
///             }
///         });
///     }
/// });
/// let mut values: Vec<usize> = free
///     .pop_all()
///     .unwrap()
///     // SAFETY: drained, so ours; every node came from `Box::leak`.
///     .map(|n| unsafe { Box::from_raw(n.as_ptr()) }.value)
///     .collect();
/// values.sort_unstable();
/// assert_eq!(values, (0..400).collect::<Vec<_>>());
/// ```
pub struct PerCpuStack<T: Linked> {
    heads: PerCpu<Head>,
    /// Serializes the drainers of `pop_all_cpu`.
    drainers: Mutex<()>,
    _nodes: PhantomData<NonNull<T>>,
}

// SAFETY: the stack moves nodes (pointers to `T`) between threads, which `T: Send` allows; it
// never reads or writes the nodes' `T` contents, only their links.
unsafe impl<T: Linked + Send> Send for PerCpuStack<T> {}
// SAFETY: as above; shared access only pushes and pops through critical sections.
unsafe impl<T: Linked + Send> Sync for PerCpuStack<T> {}

impl<T: Linked> PerCpuStack<T> {
    /// Empty lists, one per possible CPU.
    ///
    /// ```
    /// use rseq::collections::stack::{Node, PerCpuStack};
    /// let s: PerCpuStack<Node<()>> = PerCpuStack::new();
    /// assert!(s.is_empty());
    /// ```
    pub fn new() -> Self {
        PerCpuStack {
            heads: PerCpu::default(),
            drainers: Mutex::new(()),
            _nodes: PhantomData,
        }
    }

    /// Pushes `node` on the current CPU's list. If that list is being drained
    /// ([`pop_all_cpu`](Self::pop_all_cpu)), yields and retries (the drain is short).
    ///
    /// # Safety
    /// `node` points at a valid `T` that is on no list, and stays valid (neither moved nor
    /// freed nor accessed through its link) until it is popped or drained: the stack takes it
    /// over. The `T` may be read by others while on the stack only through shared, `Sync` means
    /// that do not touch its [`Link`].
    ///
    /// ```
    /// use rseq::collections::stack::{Node, PerCpuStack};
    /// use std::ptr::NonNull;
    ///
    /// let s: PerCpuStack<Node<u8>> = PerCpuStack::new();
    /// let mut node = Node::new(1);
    /// // SAFETY: `node` outlives its time on the stack (it is drained below).
    /// unsafe { s.push(NonNull::from(&mut node)) };
    /// assert_eq!(s.pop_all().unwrap().count(), 1);
    /// ```
    pub unsafe fn push(&self, node: NonNull<T>) {
        let link = to_link(node).as_ptr();
        // SAFETY: the caller hands over a valid node on no list.
        while !unsafe { push_link(&self.heads, link) } {
            std::thread::yield_now();
        }
    }

    /// Pops the most recently pushed node of the current CPU's list: `None` if that list is
    /// empty (or being drained). The caller owns the node returned.
    ///
    /// ```
    /// use rseq::collections::stack::{Node, PerCpuStack};
    /// use std::ptr::NonNull;
    ///
    /// let s: PerCpuStack<Node<u8>> = PerCpuStack::new();
    /// let node = NonNull::from(Box::leak(Box::new(Node::new(9))));
    /// // SAFETY: a fresh node, handed over.
    /// unsafe { s.push(node) };
    /// // The thread may have moved to another CPU since the push: then this pop finds
    /// // nothing, and the node is still on the other CPU's list.
    /// let popped = s.pop().or_else(|| s.pop_all().unwrap().next());
    /// assert_eq!(popped, Some(node));
    /// // SAFETY: popped, so ours; from `Box::leak`.
    /// drop(unsafe { Box::from_raw(node.as_ptr()) });
    /// ```
    pub fn pop(&self) -> Option<NonNull<T>> {
        // SAFETY: every link on the lists belongs to a valid node (`push`'s contract).
        unsafe { pop_link(&self.heads) }.map(from_link::<T>)
    }

    /// Detaches CPU `cpu`'s whole list, while other threads push and pop, and returns its
    /// nodes (most recently pushed first), now owned by the caller. Uses the fence protocol of
    /// the [module documentation](self): two [`rseq_rt::fence_cpu`] calls.
    ///
    /// # Errors
    /// [`FenceError::InvalidCpu`] if `cpu` is above [`rseq::possible_cpus`](rseq_rt::possible_cpus); that index itself is
    /// the fallback's spare slot, where nodes pushed by signal handlers that interrupted their
    /// own thread's fallback section land ([`PerCpu`]). Another error if the
    /// first fence fails, in which case nothing was detached.
    ///
    /// ```
    /// use rseq::collections::stack::{Node, PerCpuStack};
    /// use std::ptr::NonNull;
    ///
    /// let s: PerCpuStack<Node<u8>> = PerCpuStack::new();
    /// let mut node = Node::new(3);
    /// // SAFETY: `node` outlives its time on the stack.
    /// unsafe { s.push(NonNull::from(&mut node)) };
    /// let found: usize = (0..=rseq::possible_cpus())
    ///     .map(|cpu| s.pop_all_cpu(cpu).unwrap().count())
    ///     .sum();
    /// assert_eq!(found, 1);
    /// assert!(s.pop_all_cpu(usize::MAX).is_err());
    /// ```
    pub fn pop_all_cpu(&self, cpu: usize) -> Result<Chain<T>, FenceError> {
        let slot = self.heads.get(cpu).ok_or(FenceError::InvalidCpu(cpu))?;
        let _drainers = self.drainers.lock().unwrap_or_else(|p| p.into_inner());
        slot.closed.store(1, Ordering::SeqCst);
        if let Err(e) = rseq_rt::fence_cpu(cpu) {
            slot.closed.store(0, Ordering::SeqCst);
            return Err(e);
        }
        // Quiescent: no section on `cpu` is between its load and its commit, and every later
        // one fails on `closed`.
        let head = slot.head.swap(ptr::null_mut(), Ordering::SeqCst);
        // Orders the null head before the reopening for sections that see `closed == 0`. It
        // cannot fail where the first one succeeded (same CPU; `Fallback` mode fences never
        // fail); if it did anyway, reopening is still correct on x86_64, whose loads are not
        // reordered with each other.
        let _ = rseq_rt::fence_cpu(cpu);
        slot.closed.store(0, Ordering::SeqCst);
        Ok(Chain::new(head))
    }

    /// Detaches every CPU's list ([`pop_all_cpu`](Self::pop_all_cpu) for each) and returns all
    /// their nodes, now owned by the caller.
    ///
    /// # Errors
    /// The first fence error (which cannot happen in `Fallback` mode). No node is lost: those
    /// already detached are pushed back (on the current CPU's list) before returning it.
    pub fn pop_all(&self) -> Result<Chain<T>, FenceError> {
        let mut all = Chain::new(ptr::null_mut());
        for cpu in 0..self.heads.len() {
            match self.pop_all_cpu(cpu) {
                Ok(chain) => all.append(chain),
                Err(e) => {
                    for node in all {
                        // SAFETY: detached from this stack, so valid and on no list.
                        unsafe { self.push(node) };
                    }
                    return Err(e);
                }
            }
        }
        Ok(all)
    }

    /// Detaches every list through exclusive access: no fence, no section can run. For
    /// teardown.
    ///
    /// ```
    /// use rseq::collections::stack::{Node, PerCpuStack};
    /// use std::ptr::NonNull;
    ///
    /// let mut s: PerCpuStack<Node<u8>> = PerCpuStack::new();
    /// for i in 0..3 {
    ///     // SAFETY: fresh nodes, handed over.
    ///     unsafe { s.push(NonNull::from(Box::leak(Box::new(Node::new(i))))) };
    /// }
    /// for node in s.take_all() {
    ///     // SAFETY: drained, so ours; from `Box::leak`.
    ///     drop(unsafe { Box::from_raw(node.as_ptr()) });
    /// }
    /// assert!(s.is_empty());
    /// ```
    pub fn take_all(&mut self) -> Chain<T> {
        let mut all = Chain::new(ptr::null_mut());
        for slot in self.heads.iter_mut() {
            let head = std::mem::replace(slot.head.get_mut(), ptr::null_mut());
            all.append(Chain::new(head));
        }
        all
    }

    /// Whether every list is empty: a snapshot, exact when no thread pushes concurrently.
    ///
    /// ```
    /// use rseq::collections::stack::{Node, PerCpuStack};
    /// assert!(PerCpuStack::<Node<u8>>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.heads
            .iter()
            .all(|h| h.head.load(Ordering::Acquire).is_null())
    }
}

impl<T: Linked> Default for PerCpuStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Linked> fmt::Debug for PerCpuStack<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuStack")
            .field("is_empty", &self.is_empty())
            .finish()
    }
}

/// A detached chain of nodes, owned by the holder: an iterator that yields each node once
/// (unlinking it as it goes). Nodes left in a chain that is dropped are forgotten, not freed.
///
/// ```
/// use rseq::collections::stack::{Node, PerCpuStack};
/// use std::ptr::NonNull;
///
/// let s: PerCpuStack<Node<u8>> = PerCpuStack::new();
/// let mut nodes = [Node::new(1), Node::new(2)];
/// for n in &mut nodes {
///     // SAFETY: `nodes` outlives its time on the stack.
///     unsafe { s.push(NonNull::from(n)) };
/// }
/// let chain = s.pop_all().unwrap();
/// assert_eq!(chain.count(), 2);
/// ```
pub struct Chain<T: Linked> {
    head: *mut Link,
    tail: *mut Link,
    _nodes: PhantomData<NonNull<T>>,
}

// SAFETY: a chain owns its nodes like a `Vec<Box<T>>` would.
unsafe impl<T: Linked + Send> Send for Chain<T> {}

impl<T: Linked> Chain<T> {
    /// A chain from a detached list `head` (owned by the caller).
    fn new(head: *mut Link) -> Self {
        Chain {
            head,
            tail: ptr::null_mut(),
            _nodes: PhantomData,
        }
    }

    /// The last link (walks the chain once, then remembers it).
    fn tail(&mut self) -> *mut Link {
        if self.tail.is_null() && !self.head.is_null() {
            let mut p = self.head;
            // SAFETY: a detached chain of valid links, owned by `self`.
            unsafe {
                loop {
                    let next = (*p).next.load(Ordering::Relaxed);
                    if next.is_null() {
                        break;
                    }
                    p = next;
                }
            }
            self.tail = p;
        }
        self.tail
    }

    /// Puts `other`'s nodes after this chain's.
    fn append(&mut self, mut other: Chain<T>) {
        if other.head.is_null() {
            return;
        }
        let other_tail = other.tail();
        if self.head.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: our tail is a valid link owned by this chain.
            unsafe { (*self.tail()).next.store(other.head, Ordering::Relaxed) };
        }
        self.tail = other_tail;
    }
}

impl<T: Linked> Iterator for Chain<T> {
    type Item = NonNull<T>;

    fn next(&mut self) -> Option<NonNull<T>> {
        let link = NonNull::new(self.head)?;
        // SAFETY: a valid link owned by this chain; unlinked before it is handed out.
        unsafe {
            self.head = link.as_ref().next.swap(ptr::null_mut(), Ordering::Relaxed);
        }
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        Some(from_link::<T>(link))
    }
}

impl<T: Linked> fmt::Debug for Chain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("is_empty", &self.head.is_null())
            .finish()
    }
}

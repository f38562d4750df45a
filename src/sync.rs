//! Every lock in pinfs, and the one order they are taken in. The primitives are std's, or
//! shuttle's when built with `--cfg shuttle` (see tests/model/shuttle_leases.rs), so that the
//! checker controls every interleaving of the code that uses them, and time moves only when a
//! modelled thread moves it. In debug builds each lock also checks the order below, and a
//! thread that takes a lock out of order panics at once, naming both locks and where each was
//! taken, instead of deadlocking some day against another thread.
//!
//! # The lock order
//!
//! A thread may take a lock only when every lock it already holds comes earlier in this
//! list ([`Rank`]), outermost first:
//!
//! 1. [`Rank::Hub`]: the holder server's connections and their queues (a new watcher
//!    reads the recent lease events under it, so that the notifier cannot pass between the
//!    events it is sent and the ones it is notified of);
//! 2. [`Rank::Detaching`]: the filesystem's window-detaching drain (`Fs::finish_releases`),
//!    taken with no other lock held, one thread at a time;
//! 3. [`Rank::Gate`]: shared by every operation that changes metadata, exclusive for a
//!    checkpoint;
//! 4. [`Rank::Namespace`]: operations that change directories, serialised;
//! 5. [`Rank::Inode`]: an inode's lock. A thread holds several only under the namespace lock
//!    (the set one operation changes) or the gate held exclusively (a checkpoint reads them
//!    all), else at most one;
//! 6. [`Rank::Lease`]: the lease manager's state (a pin holds its inode's lock, then this; the
//!    lease manager calls back into the filesystem with it held, and that path takes only
//!    the allocator);
//! 7. [`Rank::Journal`]: the metadata journal (a transaction is applied and appended under it;
//!    it is made durable under it, then the frees it recorded settled under the allocator);
//! 8. [`Rank::Alloc`]: the allocator;
//! 9. [`Rank::Superblock`]: the superblock as in memory (a checkpoint holds the journal,
//!    the allocator and this while it writes the blob and switches the superblock);
//! 10. [`Rank::Windows`]: the DAX windows' runs (taken under an inode lock, the allocator or
//!     the superblock, to write windowed blocks back or to detach them);
//! 11. [`Rank::FuzzModel`], then [`Rank::FuzzLedger`]: the concurrent fuzzer's model of a
//!     file (a worker's step on it is serialised under it) and its ledger;
//! 12. [`Rank::RemoteRegion`]: a soft NIC's memory region (`crate::remote::nic`), held
//!     shared for one remote access to the pin's memory and exclusive to invalidate it (an
//!     invalidation waits for the accesses in flight); nothing is taken inside it;
//! 13. [`Rank::Leaf`]: everything else, held only to read or change one value, with
//!     nothing taken inside: the inode table's shards, open handles, directory streams, the
//!     release list, the waiter count, the reclaim set, lease configuration, the daemon's
//!     phase, the fuzzer's log and violations, a soft NIC's table of regions and peers and
//!     each peer's outgoing queue, the filesystem's ordered data ranges and its sizes not
//!     yet journaled (both also taken inside the journal lock, by the flush that writes
//!     them).
//!
//! This module builds without the `daemon` feature: the holder side (`crate::remote`) takes
//! its locks here too.
//!
//! No lock is held across a FUSE notification, a wait on a holder or I/O to a client or a
//! remote peer; a
//! [`Condvar`] wait releases its own mutex and keeps the thread's place in the order.

#[cfg(not(shuttle))]
use std::sync as imp;

#[cfg(shuttle)]
use shuttle::sync as imp;

pub use imp::WaitTimeoutResult;
pub use std::sync::{LockResult, PoisonError};

/// A lock's place in the order (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Rank {
    /// The holder server's hub (connections, queues, watchers).
    Hub,
    /// The filesystem's drain of released windows.
    Detaching,
    /// The metadata gate.
    Gate,
    /// The namespace lock.
    Namespace,
    /// An inode's lock (several at once only under [`Rank::Namespace`]).
    Inode,
    /// The lease manager's state.
    Lease,
    /// The journal.
    Journal,
    /// The allocator.
    Alloc,
    /// The superblock as in memory (a checkpoint switches it, writing windows back).
    Superblock,
    /// The DAX windows.
    Windows,
    /// The concurrent fuzzer's model of one file (its steps on the file are serialised).
    FuzzModel,
    /// The concurrent fuzzer's ledger of pins and breakers.
    FuzzLedger,
    /// A soft NIC's memory region (one remote access, or its invalidation).
    RemoteRegion,
    /// A lock with nothing taken inside it.
    #[default]
    Leaf,
}

/// The order check: which locks this thread holds (debug builds, not under shuttle, whose
/// modelled threads share one OS thread).
#[cfg(all(debug_assertions, not(shuttle)))]
mod order {
    use super::Rank;
    use std::cell::RefCell;
    use std::panic::Location;

    thread_local! {
        static HELD: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }

    /// A lock this thread holds: its rank, its address, whether exclusively, where taken.
    type Entry = (Rank, usize, bool, &'static Location<'static>);

    /// One held lock, forgotten when dropped.
    #[derive(Debug)]
    pub struct Token {
        rank: Rank,
        lock: usize,
    }

    /// Records that this thread takes `lock` of `rank`, `exclusive`ly or shared (before it
    /// blocks on it: an order violation panics instead of deadlocking).
    #[track_caller]
    pub fn enter(rank: Rank, lock: usize, exclusive: bool) -> Token {
        let here = Location::caller();
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            // Several inode locks: under the namespace lock, or the gate held exclusively
            // (a checkpoint reads every inode).
            let serialised = held
                .iter()
                .any(|h| h.0 == Rank::Namespace || (h.0 == Rank::Gate && h.2));
            if let Some(&(r, _, _, at)) = held.iter().max_by_key(|h| h.0) {
                let nested_inodes = r == Rank::Inode && rank == Rank::Inode && serialised;
                if r >= rank && !nested_inodes && !std::thread::panicking() {
                    let msg = format!(
                        "lock order violated: {rank:?} lock taken at {here} while holding the \
                         {r:?} lock taken at {at} (see crate::sync for the order)"
                    );
                    drop(held);
                    violated(msg);
                }
            }
            held.push((rank, lock, exclusive, here));
        });
        Token { rank, lock }
    }

    /// A violation ends the process: a panic would end only its thread (a request thread
    /// whose reply is lost, a server worker whose client waits forever), and the bug would
    /// surface as a hang somewhere else. The unit tests below see it as a panic.
    fn violated(msg: String) -> ! {
        if cfg!(test) {
            panic!("{msg}");
        }
        eprintln!("pinfs: {msg}");
        std::process::abort();
    }

    impl Drop for Token {
        fn drop(&mut self) {
            let _ = HELD.try_with(|held| {
                let mut held = held.borrow_mut();
                if let Some(i) = held
                    .iter()
                    .rposition(|h| h.0 == self.rank && h.1 == self.lock)
                {
                    held.remove(i);
                }
            });
        }
    }
}

#[cfg(not(all(debug_assertions, not(shuttle))))]
mod order {
    use super::Rank;

    /// Nothing to record in release builds.
    #[derive(Debug)]
    pub struct Token;

    #[inline(always)]
    pub fn enter(_rank: Rank, _lock: usize, _exclusive: bool) -> Token {
        Token
    }
}

use order::Token;

fn relock<G, H>(r: LockResult<G>, wrap: impl FnOnce(G) -> H) -> LockResult<H> {
    match r {
        Ok(g) => Ok(wrap(g)),
        Err(e) => Err(PoisonError::new(wrap(e.into_inner()))),
    }
}

/// A mutex with a place in the lock order.
#[derive(Debug, Default)]
pub struct Mutex<T> {
    rank: Rank,
    inner: imp::Mutex<T>,
}

/// A held [`Mutex`].
#[derive(Debug)]
pub struct MutexGuard<'a, T> {
    // Field order: the lock is released before the thread forgets holding it.
    guard: imp::MutexGuard<'a, T>,
    _held: Token,
}

impl<T> Mutex<T> {
    /// A [`Rank::Leaf`] mutex.
    pub fn new(value: T) -> Mutex<T> {
        Mutex::ranked(Rank::Leaf, value)
    }

    /// A mutex of `rank`.
    pub fn ranked(rank: Rank, value: T) -> Mutex<T> {
        Mutex {
            rank,
            inner: imp::Mutex::new(value),
        }
    }

    /// Takes the lock (checking the order in debug builds).
    #[track_caller]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let held = order::enter(self.rank, self as *const Self as usize, true);
        relock(self.inner.lock(), |guard| MutexGuard { guard, _held: held })
    }

    /// The value, the mutex gone.
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T> std::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A reader-writer lock with a place in the lock order.
#[derive(Debug, Default)]
pub struct RwLock<T> {
    rank: Rank,
    inner: imp::RwLock<T>,
}

/// A [`RwLock`] held for reading.
#[derive(Debug)]
pub struct RwLockReadGuard<'a, T> {
    guard: imp::RwLockReadGuard<'a, T>,
    _held: Token,
}

/// A [`RwLock`] held for writing.
#[derive(Debug)]
pub struct RwLockWriteGuard<'a, T> {
    guard: imp::RwLockWriteGuard<'a, T>,
    _held: Token,
}

impl<T> RwLock<T> {
    /// A [`Rank::Leaf`] lock.
    pub fn new(value: T) -> RwLock<T> {
        RwLock::ranked(Rank::Leaf, value)
    }

    /// A lock of `rank`.
    pub fn ranked(rank: Rank, value: T) -> RwLock<T> {
        RwLock {
            rank,
            inner: imp::RwLock::new(value),
        }
    }

    /// Takes the lock shared.
    #[track_caller]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let held = order::enter(self.rank, self as *const Self as usize, false);
        relock(self.inner.read(), |guard| RwLockReadGuard {
            guard,
            _held: held,
        })
    }

    /// Takes the lock exclusive.
    #[track_caller]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let held = order::enter(self.rank, self as *const Self as usize, true);
        relock(self.inner.write(), |guard| RwLockWriteGuard {
            guard,
            _held: held,
        })
    }
}

impl<T> std::ops::Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A condition variable for a [`Mutex`]: waiting releases the mutex and takes it back; the
/// thread keeps its place in the order meanwhile.
#[derive(Debug, Default)]
pub struct Condvar {
    inner: imp::Condvar,
}

impl Condvar {
    /// A condition variable.
    pub fn new() -> Condvar {
        Condvar {
            inner: imp::Condvar::new(),
        }
    }

    /// Waits for a notification.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let MutexGuard { guard, _held } = guard;
        relock(self.inner.wait(guard), |guard| MutexGuard { guard, _held })
    }

    /// Waits for a notification or `timeout`.
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let MutexGuard { guard, _held } = guard;
        relock(self.inner.wait_timeout(guard, timeout), |(guard, t)| {
            (MutexGuard { guard, _held }, t)
        })
    }

    /// Waits while `condition` holds, for at most `timeout` in all; the guard, and whether
    /// the time ran out with the condition still holding. (A poisoned mutex is taken as it
    /// is: the callers' state stays consistent under a panic.)
    pub fn wait_timeout_while<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, bool) {
        let deadline = std::time::Instant::now() + timeout;
        while condition(&mut guard) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return (guard, true);
            }
            guard = self
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        (guard, false)
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.inner.notify_one()
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.inner.notify_all()
    }
}

/// The monotonic clock the lease manager reads.
#[cfg(not(shuttle))]
#[derive(Debug, Default)]
pub struct Clock;

#[cfg(not(shuttle))]
impl Clock {
    /// The clock.
    pub fn new() -> Clock {
        Clock
    }

    /// Now.
    pub fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// A virtual clock: it stands still until [`Clock::advance`]. (A plain atomic: the checker
/// runs one modelled thread at a time, so its value is part of the schedule.)
#[cfg(shuttle)]
#[derive(Debug)]
pub struct Clock {
    base: std::time::Instant,
    nanos: std::sync::atomic::AtomicU64,
}

#[cfg(shuttle)]
impl Default for Clock {
    fn default() -> Clock {
        Clock {
            base: std::time::Instant::now(),
            nanos: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

#[cfg(shuttle)]
impl Clock {
    /// A clock at zero.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// The virtual now.
    pub fn now(&self) -> std::time::Instant {
        self.base
            + std::time::Duration::from_nanos(self.nanos.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Moves the clock on.
    pub fn advance(&self, by: std::time::Duration) {
        self.nanos
            .fetch_add(by.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(all(test, debug_assertions, not(shuttle)))]
mod tests {
    use super::*;

    #[test]
    fn locks_in_order_are_fine_and_out_of_order_panics_naming_both() {
        let gate = RwLock::ranked(Rank::Gate, ());
        let alloc = Mutex::ranked(Rank::Alloc, ());
        {
            let _g = gate.read().unwrap();
            let _a = alloc.lock().unwrap();
        }
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                let _a = alloc.lock().unwrap();
                let _g = gate.write().unwrap();
            })
            .join()
        });
        let msg = out.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("Gate lock taken at") && msg.contains("while holding the Alloc lock"),
            "{msg}"
        );
    }

    #[test]
    fn a_released_lock_is_forgotten_and_a_condvar_wait_keeps_the_place() {
        let journal = Mutex::ranked(Rank::Journal, 0);
        let leaf = Mutex::new(());
        let cv = Condvar::new();
        let g = journal.lock().unwrap();
        let (g, _) = cv
            .wait_timeout(g, std::time::Duration::from_millis(1))
            .unwrap();
        drop(leaf.lock().unwrap());
        drop(g);
        // Nothing held: any order is fine again.
        let _l = leaf.lock().unwrap();
    }

    #[test]
    fn several_inode_locks_only_under_the_namespace_lock() {
        let ns = Mutex::ranked(Rank::Namespace, ());
        let (a, b) = (
            RwLock::ranked(Rank::Inode, 1),
            RwLock::ranked(Rank::Inode, 2),
        );
        {
            let _n = ns.lock().unwrap();
            let _a = a.write().unwrap();
            let _b = b.write().unwrap();
        }
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                let _a = a.write().unwrap();
                let _b = b.write().unwrap();
            })
            .join()
        });
        assert!(out.is_err(), "two inode locks without the namespace lock");
    }
}

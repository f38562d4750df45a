//! The lock primitives and the clock of the parts that are model-checked: std's normally,
//! shuttle's when built with `--cfg shuttle` (see tests/model/shuttle_leases.rs), so that the
//! checker controls every interleaving of the lease manager, and time moves only when a
//! modelled thread moves it.

#[cfg(not(shuttle))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(shuttle)]
pub use shuttle::sync::{Condvar, Mutex, MutexGuard};

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

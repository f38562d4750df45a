//! The lock primitives of the parts that are model-checked: std's normally, shuttle's when
//! built with `--cfg shuttle` (see tests/shuttle_leases.rs), so that the checker controls
//! every interleaving of the lease manager.

#[cfg(not(shuttle))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(shuttle)]
pub use shuttle::sync::{Condvar, Mutex, MutexGuard};

//! What users see of lease transitions: events (kept in a ring for `status --events` and
//! sent to watchers), counters since mount, and the notices sent to one holder.

use super::*;

/// A lease transition, as users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the mount's sequence of events (1, 2, ...).
    pub seq: u64,
    /// When.
    pub at: SystemTime,
    /// The holder concerned.
    pub holder: HolderId,
    /// The pin, if the event concerns one.
    pub pin: Option<PinId>,
    /// The file.
    pub ino: u64,
    /// File byte range start.
    pub offset: u64,
    /// File byte range length.
    pub len: u64,
    /// What happened.
    pub kind: EventKind,
}

/// Kinds of [`Event`]: the protocol's own, so that the daemon and its clients name them
/// alike.
pub use crate::holder::protocol::EventKind;

/// Counters of lease transitions since mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Leases moved to breaking.
    pub breaks: u64,
    /// Leases released by their holders.
    pub releases: u64,
    /// Deadlines that passed.
    pub timeouts: u64,
    /// Breakers refused (`ETXTBSY`).
    pub refusals: u64,
    /// Leases revoked.
    pub revocations: u64,
    /// Holders fenced.
    pub fences: u64,
}

/// A notification for one holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// To whom.
    pub holder: HolderId,
    /// What.
    pub event: Event,
}

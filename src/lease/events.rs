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

/// Kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A pin was granted.
    Granted,
    /// A breaker wants the range back; the holder must release before `deadline_ms` from now
    /// (`None`: no deadline).
    Break {
        /// Milliseconds left.
        deadline_ms: Option<u64>,
    },
    /// The holder released the pin.
    Released,
    /// The lease was taken away (deadline under `revoke`, or a fence).
    Revoked,
    /// At the deadline under `refuse`: the breaker failed, the lease stays.
    Refused,
    /// The holder was fenced.
    Fenced,
    /// The holder went away; its pins were released.
    HolderGone,
}

impl EventKind {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Granted => "granted",
            EventKind::Break { .. } => "break",
            EventKind::Released => "released",
            EventKind::Revoked => "revoked",
            EventKind::Refused => "refused",
            EventKind::Fenced => "fenced",
            EventKind::HolderGone => "holder_gone",
        }
    }
}

/// Counters of lease transitions since mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

//! A mount's lease settings: what happens at a break deadline (the policy), how long a
//! holder has, and the per-user limit of pinned bytes.

use super::*;

/// What happens at a lease's break deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No deadline: the breaker waits for the holder (option 1, "truncate waits").
    Wait,
    /// The breaker fails with `ETXTBSY` and the lease stays.
    Refuse,
    /// The lease is revoked and its blocks kept busy (options 3 and 4).
    Revoke,
}

impl Policy {
    /// Parses `wait`, `refuse` or `revoke`.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "wait" => Some(Policy::Wait),
            "refuse" => Some(Policy::Refuse),
            "revoke" => Some(Policy::Revoke),
            _ => None,
        }
    }
    /// The option value.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Wait => "wait",
            Policy::Refuse => "refuse",
            Policy::Revoke => "revoke",
        }
    }
}

/// The lease settings of a mount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// Time a holder has to release a breaking lease; `None`: never expires.
    pub break_time: Option<Duration>,
    /// What happens at the deadline.
    pub policy: Policy,
    /// Keep revoked pinned blocks busy (true), or free them at once (false: only to show
    /// the corruption that follows).
    pub busy_blocks: bool,
    /// Detach a DAX window's pages once no pin covers them (true), or keep them attached for
    /// the life of the mount (false: only to show that a holder which keeps its mapping after
    /// its pin is gone then reaches whatever file gets those blocks next).
    pub detach_windows: bool,
    /// Most bytes the holders of one user (root excepted) may have pinned at once; `None`:
    /// each holder's own `RLIMIT_MEMLOCK`, as RDMA memory registration counts pinned pages.
    pub max_pinned: Option<PinLimit>,
    /// The deadline of a guest lease's break when the mount gives none (`wait`, or
    /// `lease_break_time=0`): guests never hold a breaker forever.
    pub guest_break_time: Duration,
    /// Anyone may take unbreakable pins (`allow_unbreakable`); otherwise only root.
    pub allow_unbreakable: bool,
}

/// A mount's limit of pinned bytes per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinLimit {
    /// At most this many bytes.
    Bytes(u64),
    /// No limit.
    Unlimited,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            break_time: Some(Duration::from_secs(45)),
            policy: Policy::Revoke,
            busy_blocks: true,
            detach_windows: true,
            max_pinned: None,
            guest_break_time: Duration::from_secs(45),
            allow_unbreakable: false,
        }
    }
}

//! Layout leases: the state machine that stands between pin holders and the operations that
//! change a file's block layout (breakers).
//!
//! Every pin is covered by a lease on its file range. A lease is `Granted` until a breaker
//! (truncate down, punch, zero range, freeing an unlinked inode) overlaps it; then it is
//! `Breaking` with a deadline, and its holder is told. The holder answers by unpinning
//! (`Released`). At the deadline the mount's policy decides:
//!
//! | policy | at the deadline |
//! |---|---|
//! | `wait` | there is none: the breaker waits for the release (or an administrator's fence) |
//! | `refuse` | the lease goes back to `Granted`, the breaker fails with `ETXTBSY` |
//! | `revoke` | the lease is `Revoked`, its holder fenced and told; its blocks stay pinned, so the allocator keeps them busy once the file lets go of them |
//!
//! Unbreakable leases make breakers fail at once (`ETXTBSY`); only root may take one, unless
//! the mount allows it for all (`allow_unbreakable`); others get `EPERM`. A breaker that holds
//! an overlapping lease itself fails with `EDEADLK`; a breaker on an `O_NONBLOCK` descriptor
//! gets `EWOULDBLOCK` at once while the break goes on. While a break is in progress on a range
//! (from its start until the breaker has changed the layout), new pins on that range are
//! refused with `EAGAIN`.
//!
//! **Guest leases.** A lease whose holder is neither root nor the file's owner is a *guest*
//! lease (Linux lets only the owner, or `CAP_LEASE`, take a lease: fcntl(2)). A guest may not
//! hold other users' breakers forever nor refuse them: whatever the policy, its break has a
//! deadline (`lease_break_time`; under `wait`, or when that is 0, `guest_break_time`) and at
//! the deadline it is revoked, as under `revoke`:
//!
//! | lease | `wait` | `refuse` | `revoke` |
//! |---|---|---|---|
//! | owner's or root's | no deadline; the breaker waits | `ETXTBSY` at `lease_break_time` | revoked at `lease_break_time` |
//! | guest's | revoked at `guest_break_time` | revoked at `lease_break_time` (or `guest_break_time` if 0) | revoked at `lease_break_time` (or `guest_break_time` if 0) |
//!
//! **Waiting off the request threads.** [`Leases::try_break_layout`] breaks like
//! [`Leases::break_layout`] when that needs no wait for a holder, and otherwise returns
//! [`LeaseError::MustWait`] having changed nothing; the caller then runs the waiting break on
//! a thread that may wait. The check and the marker that keeps new pins off the range are
//! taken in one critical section, so a pin granted after the check cannot make the inline
//! breaker wait. [`Leases::close`] (unmount, SIGTERM) ends every wait with
//! [`LeaseError::Closed`] (`EIO`, what a dead mount gives) and makes later ones fail at once.
//!
//! Every transition is an [`Event`]: logged with `tracing` at info level, kept in a ring for
//! `status --events`, and sent to the holder it concerns through the notification channel
//! (whose receiver writes to holders without holding any lock here).
//!
//! Locking: one mutex for the whole state, with a condvar that breakers wait on; it is never
//! held across a wait for a holder or any I/O. Callers may hold an inode lock when they take
//! it (pinning does), never the other way round. The allocator lock is taken inside it.

use crate::sync::{Clock, Condvar, Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crossbeam::channel::Sender;
use pinfs_allocator::Extent;

mod events;
mod policy;

pub use events::{Counters, Event, EventKind, Notice};
pub use policy::{LeaseConfig, PinLimit, Policy};

/// Who a holder is to the file it pins: what its lease may do to other users' breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Standing {
    /// The superuser.
    #[default]
    Root,
    /// The file's owner.
    Owner,
    /// Anyone else (who may read or write the file): a guest lease, always revocable at a
    /// bounded deadline.
    Guest,
}

impl Standing {
    /// The name `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            Standing::Root => "root",
            Standing::Owner => "owner",
            Standing::Guest => "guest",
        }
    }
}

/// Identifies a holder.
pub type HolderId = u64;
/// Identifies a pin (and its lease).
pub type PinId = u64;

/// A lease's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// In force.
    Granted,
    /// A breaker waits for the release, until `deadline` (if any).
    Breaking {
        /// When the policy applies.
        deadline: Option<Instant>,
    },
    /// Given back by the holder.
    Released,
    /// Taken away at a deadline or by a fence.
    Revoked,
}

impl LeaseState {
    /// The name `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Granted => "granted",
            LeaseState::Breaking { .. } => "breaking",
            LeaseState::Released => "released",
            LeaseState::Revoked => "revoked",
        }
    }
}

/// Who holds pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    /// Process id (from the kernel, not from the holder).
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// A pin and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Its id.
    pub id: PinId,
    /// Its holder.
    pub holder: HolderId,
    /// The file.
    pub ino: u64,
    /// First file block.
    pub first_block: u64,
    /// Blocks.
    pub blocks: u64,
    /// The image blocks pinned in the allocator, in file order: (file block, extent).
    pub extents: Vec<(u64, Extent)>,
    /// May the holder write?
    pub writable: bool,
    /// Does every breaker fail at once?
    pub unbreakable: bool,
    /// Who the holder is to the file (a guest's lease is revoked at a bounded deadline,
    /// whatever the policy).
    pub standing: Standing,
    /// Lease state.
    pub state: LeaseState,
    /// The allocator references are still held.
    pub pinned: bool,
}

impl Pin {
    fn overlaps(&self, ino: u64, first: u64, end: u64) -> bool {
        self.ino == ino && self.first_block < end && first < self.first_block + self.blocks
    }
    /// Granted or breaking: the holder still has its range.
    pub fn live(&self) -> bool {
        matches!(
            self.state,
            LeaseState::Granted | LeaseState::Breaking { .. }
        )
    }
}

/// Why a lease operation failed; each maps to the errno the semantics give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// An unbreakable lease, or a refused break (`ETXTBSY`).
    #[error("the range is pinned and its lease was not given back")]
    Busy,
    /// The breaker holds the lease itself (`EDEADLK`).
    #[error("the caller holds a lease it would have to break")]
    Deadlock,
    /// Non-blocking breaker: the break goes on without it (`EWOULDBLOCK`).
    #[error("the break is in progress")]
    WouldBlock,
    /// A new pin on a range being broken (`EAGAIN`).
    #[error("the range is being broken; try again")]
    Again,
    /// No such pin, or not the caller's.
    #[error("no such pin")]
    NoSuchPin,
    /// No such holder.
    #[error("no such holder")]
    NoSuchHolder,
    /// A fenced holder asking for a pin: its session is over; it must reconnect (`EPERM`).
    #[error("this holder was fenced (one of its leases was revoked); reconnect to pin again")]
    Fenced,
    /// The pin would pass its user's limit of pinned bytes (`ENOMEM`).
    #[error("the pin would pass its user's limit of pinned bytes")]
    OverLimit,
    /// An unbreakable pin asked for by someone other than root on a mount without
    /// `allow_unbreakable` (`EPERM`).
    #[error("only root may take an unbreakable pin (unless the mount has allow_unbreakable)")]
    UnbreakableNeedsRoot,
    /// The breaker would have to wait for a holder and was asked not to; nothing changed. The
    /// caller runs the break again where it may wait. Never reaches a client (`EIO` if it
    /// did).
    #[error("the breaker would have to wait for a holder")]
    MustWait,
    /// The mount is going away (unmount, SIGTERM): waits for holders end, and no new ones or
    /// new pins begin (`EIO`, as on a dead mount).
    #[error("the mount is shutting down")]
    Closed,
}

impl LeaseError {
    /// The errno.
    pub fn errno(self) -> i32 {
        match self {
            LeaseError::Busy => libc::ETXTBSY,
            LeaseError::Deadlock => libc::EDEADLK,
            LeaseError::WouldBlock => libc::EWOULDBLOCK,
            LeaseError::Again => libc::EAGAIN,
            LeaseError::NoSuchPin | LeaseError::NoSuchHolder => libc::ENOENT,
            LeaseError::Fenced | LeaseError::UnbreakableNeedsRoot => libc::EPERM,
            LeaseError::MustWait | LeaseError::Closed => libc::EIO,
            LeaseError::OverLimit => libc::ENOMEM,
        }
    }
}

/// A holder's request for a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinRequest {
    /// The holder.
    pub holder: HolderId,
    /// The file.
    pub ino: u64,
    /// First byte.
    pub offset: u64,
    /// Bytes (the pin covers the whole blocks they touch).
    pub len: u64,
    /// Write access (needs write permission on the file).
    pub writable: bool,
    /// Breakers fail at once instead of breaking the lease.
    pub unbreakable: bool,
}

impl PinRequest {
    /// The file blocks covered: first, and one past the last.
    pub fn blocks(&self) -> (u64, u64) {
        (
            self.offset / 4096,
            self.offset.saturating_add(self.len).div_ceil(4096),
        )
    }
}

/// The process (thread group) of thread `tid`: FUSE requests carry the calling thread's id,
/// holders are identified by process. A tid that /proc does not know is taken as is.
fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(tid)
}

/// Who breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// The calling thread (a breaker whose process holds an overlapping lease gets
    /// `EDEADLK`).
    pub pid: u32,
    /// The breaker's descriptor is `O_NONBLOCK`.
    pub nonblock: bool,
}

struct Holder {
    info: HolderInfo,
    fenced: bool,
}

struct Marker {
    id: u64,
    ino: u64,
    first: u64,
    end: u64,
}

#[derive(Default)]
struct State {
    holders: HashMap<HolderId, Holder>,
    pins: BTreeMap<PinId, Pin>,
    markers: Vec<Marker>,
    counters: Counters,
    events: VecDeque<Event>,
    /// Events emitted so far.
    emitted: u64,
    next_id: u64,
    /// Set by [`Leases::close`]: no more waits.
    closed: bool,
}

impl State {
    /// Notes a layout change in progress on file blocks `first..end` of `ino` (new pins there
    /// are refused until the returned marker is removed).
    fn add_marker(&mut self, ino: u64, first: u64, end: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.markers.push(Marker {
            id,
            ino,
            first,
            end,
        });
        id
    }
}

const EVENT_RING: usize = 1024;

/// What the allocator side of a lease transition needs: dropping the allocator references
/// of a pin. The filesystem implements it (it owns the allocator and scrubs freed blocks).
pub trait Unpinner: Sync {
    /// Drops one allocator reference from each extent.
    fn unpin(&self, extents: &[(u64, Extent)]);
    /// A pin of `ino` is gone (released, or its holder gone): whatever gave direct access to
    /// its blocks must stop reaching them, then its allocator references (if it still holds
    /// them: `pinned`) go. Called under the lease lock: an implementation that must take
    /// other locks for this queues the work and does it once the lease lock is dropped.
    fn released(&self, _ino: u64, extents: &[(u64, Extent)], pinned: bool) {
        if pinned {
            self.unpin(extents);
        }
    }
    /// A lease on `ino` was revoked: its blocks that are still in the file must leave it
    /// (the fenced holder may go on storing into them). Called under the lease lock: only
    /// queue the work.
    fn revoked(&self, _ino: u64) {}
}

/// The lease manager of one mount.
pub struct Leases {
    /// The settings; a leaf lock (taken for a copy, inside the state lock or alone), so a
    /// remount can change the live ones ([`Leases::set_live`]).
    config: Mutex<LeaseConfig>,
    state: Mutex<State>,
    changed: Condvar,
    notices: Option<Sender<Notice>>,
    clock: Clock,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

/// Held by a breaker from the start of its break until its layout change is done; new pins
/// on the range are refused meanwhile.
pub struct BreakGuard<'a> {
    leases: &'a Leases,
    marker: Option<u64>,
}

impl Drop for BreakGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.marker {
            let mut st = self.leases.lock();
            st.markers.retain(|m| m.id != id);
            drop(st);
            self.leases.changed.notify_all();
        }
    }
}

/// A snapshot of the lease state, for `status`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Holders: id, info, fenced.
    pub holders: Vec<(HolderId, HolderInfo, bool)>,
    /// Pins with their lease state.
    pub pins: Vec<Pin>,
    /// Counters.
    pub counters: Counters,
    /// The mount's lease settings.
    pub config: LeaseConfig,
}

impl Leases {
    /// A lease manager; `notices` receives every event addressed to a holder.
    pub fn new(config: LeaseConfig, notices: Option<Sender<Notice>>) -> Leases {
        Leases {
            config: Mutex::new(config),
            state: Mutex::ranked(
                crate::sync::Rank::Lease,
                State {
                    next_id: 1,
                    ..Default::default()
                },
            ),
            changed: Condvar::new(),
            clock: Clock::new(),
            notices,
        }
    }

    /// The settings.
    pub fn config(&self) -> LeaseConfig {
        *self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the settings a remount may change: the break time, the policy and the guest
    /// break time. Breaks already under way keep the deadline they were given.
    pub fn set_live(&self, break_time: Option<Duration>, policy: Policy, guest: Duration) {
        let mut c = self.config.lock().unwrap_or_else(|e| e.into_inner());
        c.break_time = break_time;
        c.policy = policy;
        c.guest_break_time = guest;
    }

    #[track_caller]
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, st: &mut State, holder: HolderId, pin: Option<&Pin>, ino: u64, kind: EventKind) {
        let (offset, len) = pin
            .map(|p| (p.first_block * 4096, p.blocks * 4096))
            .unwrap_or((0, 0));
        st.emitted += 1;
        let event = Event {
            seq: st.emitted,
            at: SystemTime::now(),
            holder,
            pin: pin.map(|p| p.id),
            ino,
            offset,
            len,
            kind,
        };
        tracing::info!(holder, pin = ?event.pin, ino, offset, len, event = kind.name(), "lease");
        if st.events.len() == EVENT_RING {
            st.events.pop_front();
        }
        st.events.push_back(event.clone());
        if let Some(tx) = &self.notices {
            let _ = tx.send(Notice { holder, event });
        }
    }

    /// Registers a holder.
    pub fn add_holder(&self, info: HolderInfo) -> HolderId {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.holders.insert(
            id,
            Holder {
                info,
                fenced: false,
            },
        );
        id
    }

    /// Grants a pin to a holder the caller vouches for (root's standing): see
    /// [`Leases::grant_as`].
    pub fn grant<E>(
        &self,
        req: &PinRequest,
        make: impl FnOnce() -> Result<Vec<(u64, Extent)>, E>,
    ) -> Result<Result<PinId, E>, LeaseError> {
        self.grant_as(req, Standing::Root, None, make)
    }

    /// Bytes pinned by the holders of user `uid` (every pin not yet removed: live, breaking
    /// or revoked, since all of them still hold blocks).
    fn pinned_by_user(st: &State, uid: u32) -> u64 {
        st.pins
            .values()
            .filter(|p| st.holders.get(&p.holder).is_some_and(|h| h.info.uid == uid))
            .map(|p| p.blocks * 4096)
            .sum()
    }

    /// Bytes pinned by the holders of user `uid`.
    pub fn pinned_bytes(&self, uid: u32) -> u64 {
        Self::pinned_by_user(&self.lock(), uid)
    }

    /// May a holder of `standing` ask for this pin at all? Unbreakable pins are root's,
    /// unless the mount has `allow_unbreakable` (`EPERM`). Checked again at the grant.
    pub fn may_pin(&self, req: &PinRequest, standing: Standing) -> Result<(), LeaseError> {
        if req.unbreakable && standing != Standing::Root && !self.config().allow_unbreakable {
            return Err(LeaseError::UnbreakableNeedsRoot);
        }
        Ok(())
    }

    /// Grants a pin to a holder of `standing` towards the file: `make` runs under the lease
    /// lock (so no break can start in between), pins the blocks in the allocator and returns
    /// their extents. Refused with `EAGAIN` while a break is in progress on the range, with
    /// `EPERM` for fenced holders and for unbreakable pins of holders other than root
    /// (unless `allow_unbreakable`), with `ENOENT` for unknown holders and `EIO` once closed,
    /// and with `ENOMEM` ([`LeaseError::OverLimit`]) when `limit` (user, bytes) says the
    /// holder's user would then have more than that many bytes pinned. The limit check and
    /// the grant are one step under the lease lock, so concurrent pins of one user cannot
    /// pass the limit together.
    pub fn grant_as<E>(
        &self,
        req: &PinRequest,
        standing: Standing,
        limit: Option<(u32, u64)>,
        make: impl FnOnce() -> Result<Vec<(u64, Extent)>, E>,
    ) -> Result<Result<PinId, E>, LeaseError> {
        let (holder, ino) = (req.holder, req.ino);
        let (first_block, end) = req.blocks();
        let blocks = end - first_block;
        let (writable, unbreakable) = (req.writable, req.unbreakable);
        self.may_pin(req, standing)?;
        let mut st = self.lock();
        if st.closed {
            return Err(LeaseError::Closed);
        }
        match st.holders.get(&holder) {
            Some(h) if h.fenced => return Err(LeaseError::Fenced),
            Some(_) => {}
            None => return Err(LeaseError::NoSuchHolder),
        }
        let end = first_block + blocks;
        let breaking = st
            .markers
            .iter()
            .any(|m| m.ino == ino && m.first < end && first_block < m.end)
            || st.pins.values().any(|p| {
                p.overlaps(ino, first_block, end) && matches!(p.state, LeaseState::Breaking { .. })
            });
        if breaking {
            return Err(LeaseError::Again);
        }
        if let Some((uid, max)) = limit {
            if Self::pinned_by_user(&st, uid).saturating_add(blocks * 4096) > max {
                return Err(LeaseError::OverLimit);
            }
        }
        let extents = match make() {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        let id = st.next_id;
        st.next_id += 1;
        let pin = Pin {
            id,
            holder,
            ino,
            first_block,
            blocks,
            extents,
            writable,
            unbreakable,
            standing,
            state: LeaseState::Granted,
            pinned: true,
        };
        self.emit(&mut st, holder, Some(&pin), ino, EventKind::Granted);
        st.pins.insert(id, pin);
        Ok(Ok(id))
    }

    /// The holder gives a pin back. The allocator references go (busy blocks whose last
    /// reference this was become free), waiting breakers are woken.
    pub fn release(
        &self,
        holder: HolderId,
        pin: PinId,
        unpinner: &dyn Unpinner,
    ) -> Result<(), LeaseError> {
        let mut st = self.lock();
        let p = st
            .pins
            .get(&pin)
            .filter(|p| p.holder == holder)
            .cloned()
            .ok_or(LeaseError::NoSuchPin)?;
        st.pins.remove(&pin);
        unpinner.released(p.ino, &p.extents, p.pinned);
        if p.live() {
            st.counters.releases += 1;
            let mut shown = p.clone();
            shown.state = LeaseState::Released;
            self.emit(&mut st, holder, Some(&shown), p.ino, EventKind::Released);
        }
        drop(st);
        self.changed.notify_all();
        Ok(())
    }

    /// The holder is gone (exited, killed, disconnected): all its pins are released.
    pub fn holder_gone(&self, holder: HolderId, unpinner: &dyn Unpinner) {
        let mut st = self.lock();
        let Some(_) = st.holders.remove(&holder) else {
            return;
        };
        let ids: Vec<PinId> = st
            .pins
            .values()
            .filter(|p| p.holder == holder)
            .map(|p| p.id)
            .collect();
        for id in ids {
            let p = st.pins.remove(&id).expect("listed");
            unpinner.released(p.ino, &p.extents, p.pinned);
            if p.live() {
                st.counters.releases += 1;
            }
        }
        self.emit(&mut st, holder, None, 0, EventKind::HolderGone);
        drop(st);
        self.changed.notify_all();
    }

    fn revoke(&self, st: &mut State, id: PinId, unpinner: &dyn Unpinner) {
        let Some(p) = st.pins.get_mut(&id) else {
            return;
        };
        p.state = LeaseState::Revoked;
        if !self.config().busy_blocks && p.pinned {
            // The dangerous demonstration: the blocks follow the file's fate at once.
            p.pinned = false;
            unpinner.unpin(&p.extents);
        }
        let p = p.clone();
        st.counters.revocations += 1;
        if let Some(h) = st.holders.get_mut(&p.holder) {
            if !h.fenced {
                h.fenced = true;
                st.counters.fences += 1;
            }
        }
        self.emit(st, p.holder, Some(&p), p.ino, EventKind::Revoked);
        unpinner.revoked(p.ino);
    }

    /// An administrator fences a holder: every live lease of it is revoked now, whatever the
    /// policy. Returns the number of leases revoked.
    pub fn fence(&self, holder: HolderId, unpinner: &dyn Unpinner) -> Result<usize, LeaseError> {
        let mut st = self.lock();
        if !st.holders.contains_key(&holder) {
            return Err(LeaseError::NoSuchHolder);
        }
        let ids: Vec<PinId> = st
            .pins
            .values()
            .filter(|p| p.holder == holder && p.live())
            .map(|p| p.id)
            .collect();
        for &id in &ids {
            self.revoke(&mut st, id, unpinner);
        }
        let h = st.holders.get_mut(&holder).expect("checked");
        if !h.fenced {
            h.fenced = true;
            st.counters.fences += 1;
        }
        self.emit(&mut st, holder, None, 0, EventKind::Fenced);
        drop(st);
        self.changed.notify_all();
        Ok(ids.len())
    }

    /// Applies the policy to breaking leases whose deadline has passed; returns the earliest
    /// deadline still pending.
    fn expire(&self, st: &mut State, now: Instant, unpinner: &dyn Unpinner) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let due: Vec<PinId> = st
            .pins
            .values()
            .filter_map(|p| match p.state {
                LeaseState::Breaking { deadline: Some(d) } if d <= now => Some(p.id),
                LeaseState::Breaking { deadline: Some(d) } => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                    None
                }
                _ => None,
            })
            .collect();
        for id in due {
            st.counters.timeouts += 1;
            // A guest lease is revoked at its deadline whatever the policy: a guest never
            // refuses another user's breaker.
            let guest = st
                .pins
                .get(&id)
                .is_some_and(|p| p.standing == Standing::Guest);
            match self.config().policy {
                Policy::Refuse if !guest => {
                    let p = st.pins.get_mut(&id).expect("due");
                    p.state = LeaseState::Granted;
                    let p = p.clone();
                    st.counters.refusals += 1;
                    self.emit(st, p.holder, Some(&p), p.ino, EventKind::Refused);
                }
                _ => self.revoke(st, id, unpinner),
            }
        }
        next
    }

    /// Runs deadlines until `stop` returns true; the daemon runs this on a thread of its own
    /// so that leases expire on time even when no breaker is waiting.
    pub fn run_deadlines(&self, unpinner: &dyn Unpinner, stop: &dyn Fn() -> bool) {
        let mut st = self.lock();
        while !stop() {
            let next = self.expire(&mut st, self.clock.now(), unpinner);
            let wait = next.map_or(Duration::from_millis(200), |n| {
                n.saturating_duration_since(self.clock.now())
                    .min(Duration::from_millis(200))
            });
            st = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Moves the model checker's virtual clock on by `by` and applies the policy to the
    /// deadlines that passed (what the deadline thread does in a real mount). Shuttle never
    /// times a wait out, so tests make a deadline pass with this, at whatever point of the
    /// interleaving the checker picks.
    #[cfg(shuttle)]
    pub fn advance_clock(&self, by: Duration, unpinner: &dyn Unpinner) {
        self.clock.advance(by);
        let mut st = self.lock();
        self.expire(&mut st, self.clock.now(), unpinner);
        drop(st);
        self.changed.notify_all();
    }

    /// The file `ino` has a new owner, `uid`: a lease its holder held as the owner becomes a
    /// guest's if the holder is not the new owner (a chown takes the owner's terms away),
    /// and a break of it already waiting with no deadline gets the guest's.
    pub fn owner_changed(&self, ino: u64, uid: u32) {
        let mut st = self.lock();
        let now = self.clock.now();
        let State { pins, holders, .. } = &mut *st;
        let mut changed = false;
        for p in pins.values_mut() {
            if p.ino != ino || p.standing != Standing::Owner {
                continue;
            }
            if holders.get(&p.holder).is_some_and(|h| h.info.uid == uid) {
                continue;
            }
            p.standing = Standing::Guest;
            changed = true;
            if let LeaseState::Breaking { deadline } = p.state {
                let guest = self.deadline_for(Standing::Guest, now);
                p.state = LeaseState::Breaking {
                    deadline: match (deadline, guest) {
                        (Some(d), Some(g)) => Some(d.min(g)),
                        (d, g) => d.or(g),
                    },
                };
            }
        }
        drop(st);
        if changed {
            self.changed.notify_all();
        }
    }

    /// The deadline of a break that starts at `now` on a lease of `standing`: the mount's,
    /// except that a guest's is never unbounded.
    fn deadline_for(&self, standing: Standing, now: Instant) -> Option<Instant> {
        let c = &self.config();
        match (standing, c.policy) {
            (Standing::Guest, Policy::Wait) => Some(now + c.guest_break_time),
            (Standing::Guest, _) => Some(now + c.break_time.unwrap_or(c.guest_break_time)),
            (_, Policy::Wait) => None,
            _ => c.break_time.map(|t| now + t),
        }
    }

    /// Breaks the leases that overlap file blocks `first..end` of `ino` before a layout
    /// change, as the policy says, waiting for holders if it must (never call this on a
    /// thread that serves requests: see [`Leases::try_break_layout`]). On success the returned
    /// guard keeps new pins off the range until the caller has changed the layout and drops
    /// it. Costs one lock and a scan of the file's pins when nothing is pinned. A wait ends
    /// with the release, the deadline, a fence, or [`Leases::close`] (`EIO`).
    pub fn break_layout(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        breaker: Breaker,
        unpinner: &dyn Unpinner,
    ) -> Result<BreakGuard<'_>, LeaseError> {
        self.break_inner(ino, first, end, breaker, Some(unpinner))
    }

    /// [`Leases::break_layout`] for a thread that must not wait: the same outcome whenever no
    /// wait for a holder is needed (nothing live pinned in the range, unbreakable `ETXTBSY`,
    /// `EDEADLK`, a non-blocking breaker's `EWOULDBLOCK`), and otherwise
    /// [`LeaseError::MustWait`] with nothing changed (no lease moved to breaking, no event,
    /// no counter). The check and the guard's marker are one critical section: a pin asked
    /// for after the check is refused (`EAGAIN`) until the guard goes.
    pub fn try_break_layout(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        breaker: Breaker,
    ) -> Result<BreakGuard<'_>, LeaseError> {
        self.break_inner(ino, first, end, breaker, None)
    }

    /// Both breaks: `wait` is the unpinner for deadlines when the caller may wait, `None`
    /// when it may not.
    fn break_inner(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        breaker: Breaker,
        wait: Option<&dyn Unpinner>,
    ) -> Result<BreakGuard<'_>, LeaseError> {
        let mut st = self.lock();
        let overlapping = |st: &State| -> Vec<PinId> {
            st.pins
                .values()
                .filter(|p| p.overlaps(ino, first, end) && p.live())
                .map(|p| p.id)
                .collect()
        };
        let live = if first < end {
            overlapping(&st)
        } else {
            Vec::new()
        };
        if live.is_empty() {
            // The fast path: nothing live in the way (revoked pins keep their blocks busy
            // and wait for nobody).
            let id = st.add_marker(ino, first, end);
            return Ok(BreakGuard {
                leases: self,
                marker: Some(id),
            });
        }
        if live.iter().any(|id| st.pins[id].unbreakable) {
            st.counters.refusals += 1;
            return Err(LeaseError::Busy);
        }
        let breaker_process = process_of(breaker.pid);
        if live.iter().any(|id| {
            st.holders
                .get(&st.pins[id].holder)
                .is_some_and(|h| h.info.pid == breaker_process)
        }) {
            return Err(LeaseError::Deadlock);
        }
        if st.closed {
            return Err(LeaseError::Closed);
        }
        if wait.is_none() && !breaker.nonblock {
            return Err(LeaseError::MustWait);
        }
        let now = self.clock.now();
        for id in &live {
            let p = st.pins.get_mut(id).expect("live");
            if p.state == LeaseState::Granted {
                let deadline = self.deadline_for(p.standing, now);
                p.state = LeaseState::Breaking { deadline };
                let p = p.clone();
                st.counters.breaks += 1;
                let deadline_ms =
                    deadline.map(|d| d.saturating_duration_since(now).as_millis() as u64);
                self.emit(
                    &mut st,
                    p.holder,
                    Some(&p),
                    ino,
                    EventKind::Break { deadline_ms },
                );
            }
        }
        self.changed.notify_all();
        // A non-blocking breaker leaves the break to go on without it (the deadline thread
        // applies the policy); so does the one that may not wait, which cannot get here.
        let Some(unpinner) = wait.filter(|_| !breaker.nonblock) else {
            return Err(LeaseError::WouldBlock);
        };
        let guard_id = st.add_marker(ino, first, end);
        loop {
            if st.closed {
                st.markers.retain(|m| m.id != guard_id);
                drop(st);
                self.changed.notify_all();
                return Err(LeaseError::Closed);
            }
            let next = self.expire(&mut st, self.clock.now(), unpinner);
            let still: Vec<PinId> = overlapping(&st);
            if still.is_empty() {
                break;
            }
            if still
                .iter()
                .any(|id| st.pins[id].state == LeaseState::Granted)
            {
                // Refused at the deadline (only `refuse` puts a breaking lease back).
                st.markers.retain(|m| m.id != guard_id);
                drop(st);
                self.changed.notify_all();
                return Err(LeaseError::Busy);
            }
            st = match next {
                Some(n) => {
                    self.changed
                        .wait_timeout(st, n.saturating_duration_since(self.clock.now()))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
        Ok(BreakGuard {
            leases: self,
            marker: Some(guard_id),
        })
    }

    /// Ends every wait for a holder with [`LeaseError::Closed`] and makes later breaks that
    /// would wait, and new pins, fail the same way (unmount, SIGTERM). Releases, holder
    /// deaths, fences and breaks that need no wait go on as before.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Has [`Leases::close`] run?
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The extents of revoked pins on `ino`: (file block, image extent) as pinned.
    pub fn revoked_extents(&self, ino: u64) -> Vec<(u64, Extent)> {
        let st = self.lock();
        st.pins
            .values()
            .filter(|p| p.ino == ino && p.state == LeaseState::Revoked)
            .flat_map(|p| p.extents.iter().copied())
            .collect()
    }

    /// The image blocks live leases pin in `ino`, as extents.
    pub fn live_extents(&self, ino: u64) -> Vec<Extent> {
        let st = self.lock();
        st.pins
            .values()
            .filter(|p| p.ino == ino && p.live())
            .flat_map(|p| p.extents.iter().map(|(_, e)| *e))
            .collect()
    }

    /// The files a holder has pins on.
    pub fn files_of(&self, holder: HolderId) -> Vec<u64> {
        let st = self.lock();
        let mut v: Vec<u64> = st
            .pins
            .values()
            .filter(|p| p.holder == holder)
            .map(|p| p.ino)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Does any live lease cover blocks of `ino`? (Reclaiming an unlinked inode then needs a
    /// break first.)
    pub fn has_pins(&self, ino: u64) -> bool {
        self.lock().pins.values().any(|p| p.ino == ino && p.live())
    }

    /// Does a live writable lease cover blocks of `ino`? (Its holder stores into them with no
    /// request the filesystem sees, so the file may not become immutable or append-only.)
    pub fn has_writable_pins(&self, ino: u64) -> bool {
        self.lock()
            .pins
            .values()
            .any(|p| p.ino == ino && p.writable && p.live())
    }

    /// The holder of pin `pin`, while the lease manager has it (in any state).
    pub fn pin_holder(&self, pin: PinId) -> Option<HolderId> {
        self.lock().pins.get(&pin).map(|p| p.holder)
    }

    /// The ids of every pin the lease manager has.
    pub fn pin_ids(&self) -> std::collections::BTreeSet<PinId> {
        self.lock().pins.keys().copied().collect()
    }

    /// The state, for `status`.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        let mut holders: Vec<_> = st
            .holders
            .iter()
            .map(|(id, h)| (*id, h.info.clone(), h.fenced))
            .collect();
        holders.sort_by_key(|h| h.0);
        Snapshot {
            holders,
            pins: st.pins.values().cloned().collect(),
            counters: st.counters,
            config: self.config(),
        }
    }

    /// The most recent events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.iter().cloned().collect()
    }

    /// The holder that keeps each pinned extent, for busy-block accounting.
    pub fn extent_holders(&self) -> Vec<(Extent, HolderId)> {
        let st = self.lock();
        st.pins
            .values()
            .filter(|p| p.pinned)
            .flat_map(|p| p.extents.iter().map(move |(_, e)| (*e, p.holder)))
            .collect()
    }
}

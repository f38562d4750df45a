//! What `pinfs status` shows: holders, leases, busy blocks, space, counters and failed requests
//! per errno, as one JSON
//! object or as a readable table, and the recent lease events. The JSON object is
//! [`Status`] (serde), which a tool or test reads back with serde_json; events are
//! [`crate::holder::protocol::Event`]s.
//!
//! What a caller may see: root sees everything. Any other caller (a [`Viewer`]) sees its own
//! holders (same uid) fully; of other users' holders, the pid and command are hidden (`null`
//! in JSON, `-` in the table), and so is the path of their leases' files unless the viewer
//! could find it by listing directories from the root (read and search permission on every
//! directory above it, for its uid, gid and supplementary groups, by the directory's access
//! ACL where the mount has ACLs; search alone, as in a 0711
//! directory, reaches a file whose name one knows but tells no names): otherwise the lease's
//! `path` is `null` (`ino:N` in the table) and only its inode number tells which file it is.
//! Everything else (ids, ranges, states, busy extents, counters) is the same for every
//! caller. Events carry no pid, command or path. The table escapes control characters in
//! paths and commands (see `printable`): any user names its files and its processes.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::fs::Fs;
use crate::holder::protocol;
use crate::lease::{Event, EventKind, LeaseState};
use crate::output::printable;
use crate::store::image::BLOCK_SIZE;

/// A caller who is not root, as far as visibility goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// User.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Viewer {
    /// Could this viewer list and search (read the names of, and pass through) directory
    /// `d`: by its access ACL where the mount has ACLs (`acl`) and `d` one, as the kernel
    /// checks (a named user's entry denies what the mode's other bits allow), else by its
    /// mode bits.
    fn may_list(&self, d: &crate::meta::inode::Inode, acl: bool) -> bool {
        use crate::fs::acl::{Acl, ACCESS};
        if let Some(a) = acl
            .then(|| d.xattrs.get(ACCESS))
            .flatten()
            .and_then(|v| Acl::parse(v).ok())
        {
            let in_group = |g: u32| g == self.gid || self.groups.contains(&g);
            return a.permits(d.uid, d.gid, self.uid, in_group, 0o5);
        }
        let bits = if self.uid == d.uid {
            d.perm >> 6
        } else if self.gid == d.gid || self.groups.contains(&d.gid) {
            d.perm >> 3
        } else {
            d.perm
        };
        bits & 0o5 == 0o5
    }
}

/// The supplementary groups of process `pid` (the `Groups:` line of `/proc/PID/status`);
/// empty if it cannot be read (the process went): the viewer then counts with its primary
/// group only, which can only hide more.
pub fn groups_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The status document, as `status --json` writes it and a tool reads it back (with
/// serde_json): every field below is a JSON field of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The holders (connections that pinned, or said `hello`).
    pub holders: Vec<HolderStatus>,
    /// Every lease (pin) of the mount.
    pub leases: Vec<LeaseStatus>,
    /// Blocks that left the files but stay pinned.
    pub busy: BusyStatus,
    /// Space, in blocks.
    pub space: SpaceStatus,
    /// Lease transitions since mount.
    pub counters: Counters,
    /// The lease settings.
    pub policy: PolicyStatus,
    /// Breakers waiting for holders to release.
    pub waiting_breakers: u64,
    /// Whether the mount is up.
    pub mount: MountState,
    /// Requests that failed since mount, per errno by name (`{"ENOENT": 3, "ENOSPC": 1}`);
    /// errnos never met are left out. Absent from a daemon older than this field: empty.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// The journal and what made things durable since mount. Absent from a daemon older
    /// than this field: zeros.
    #[serde(default)]
    pub journal: JournalStatus,
}

/// The journal in [`Status`]: its fill, and the persistence points since mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    /// Bytes of entries since the last checkpoint.
    pub used_bytes: u64,
    /// The journal's size.
    pub capacity_bytes: u64,
    /// Checkpoints written since mount (each empties the journal).
    pub checkpoints: u64,
    /// Journal flushes since mount that made new entries durable (fsync, the flusher's
    /// tick, an allocation that settled freed blocks).
    pub flushes: u64,
    /// Sizes grown and not in the journal yet (with a volatile cache, until the next
    /// flush: see the README, "What is durable").
    pub sizes_pending: u64,
}

/// A holder in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderStatus {
    /// Holder id.
    pub id: u64,
    /// Process (`null`: hidden from the caller).
    pub pid: Option<u32>,
    /// Command (`null`: hidden from the caller).
    pub comm: Option<String>,
    /// Fenced: its pins are refused.
    pub fenced: bool,
}

/// A lease in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The holder.
    pub holder: u64,
    /// The pin.
    pub pin: u64,
    /// The file's inode.
    pub ino: u64,
    /// The file's path (`(unlinked)` for a file with no name; `null`: hidden).
    pub path: Option<String>,
    /// First byte (block-aligned).
    pub offset: u64,
    /// Bytes (whole blocks).
    pub len: u64,
    /// `granted`, `breaking`, `released` or `revoked`.
    pub state: String,
    /// For a breaking lease: milliseconds left (`null`: no deadline, or not breaking).
    pub deadline_ms: Option<u64>,
    /// Breakers fail instead of breaking it.
    pub unbreakable: bool,
    /// A writable pin.
    pub writable: bool,
    /// `root`, `owner` or `guest` (a guest's lease is revoked at its deadline whatever the
    /// policy).
    pub standing: String,
    /// The pin's export to remote peers, as its holder reports it (absent: not exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStatus>,
}

/// An exported pin in [`LeaseStatus`]: who reaches it from other nodes, on whose behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// The holder's soft NIC (`ADDRESS:PORT`).
    pub nic: String,
    /// The region's key, 16 hex digits (`null`: hidden, the caller is not the holder's user
    /// nor root: the key is what grants access).
    pub rkey: Option<String>,
    /// The remote peers holding references (at most
    /// [`crate::holder::protocol::MAX_REMOTE_PEERS`]).
    pub peers: Vec<RemotePeerStatus>,
    /// How many peers the holder reported (more than `peers` lists when over the bound).
    pub peers_total: u64,
}

/// A remote peer in [`RemoteStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePeerStatus {
    /// The peer's address (`ADDRESS:PORT`).
    pub addr: String,
    /// `connected`, `recalling` (recalled, no ack yet) or `acked`.
    pub state: String,
}

/// The busy blocks in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyStatus {
    /// How many.
    pub blocks: u64,
    /// Where, and for which holder.
    pub extents: Vec<BusyExtent>,
}

/// A busy extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyExtent {
    /// First block.
    pub start: u64,
    /// Blocks.
    pub len: u64,
    /// The holder whose pin keeps it (`null`: none known).
    pub holder: Option<u64>,
}

/// Space in [`Status`], in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceStatus {
    /// Bytes per block.
    pub block_size: u64,
    /// All blocks.
    pub total_blocks: u64,
    /// Free blocks, freed blocks whose journal entry is not durable yet included (they are
    /// free once it is, and an allocation that needs them makes it so).
    pub free_blocks: u64,
    /// Free blocks outside the metadata reserve.
    pub available_blocks: u64,
    /// Blocks in use (neither free nor busy).
    pub used_blocks: u64,
    /// Busy blocks (kept by pins; pending frees are not busy but free).
    pub busy_blocks: u64,
}

/// Lease transitions since mount, in [`Status`]: the lease manager's own counters.
pub use crate::lease::Counters;

/// The lease settings in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// `wait`, `refuse` or `revoke`.
    pub break_policy: String,
    /// Time a holder has to release (`null`: never expires).
    pub lease_break_time_ms: Option<u64>,
    /// Freed blocks that are pinned stay busy.
    pub busy_blocks: bool,
    /// A guest's time to release.
    pub guest_break_time_ms: u64,
    /// Anyone may pin unbreakably (not only root).
    pub allow_unbreakable: bool,
}

/// Whether the mount is up, in [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountState {
    /// Serving.
    Up,
    /// Shut down (a host failure, or on request): every operation fails with EIO.
    ShutDown,
}

/// `value` as compact JSON. The documents of this crate always serialize (string keys, no
/// failing `Serialize`); were one not to, the text says why instead of panicking.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        format!(
            "{{\"error\":{}}}",
            serde_json::Value::String(format!("cannot write JSON: {e}"))
        )
    })
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The status as `viewer` may see it (`None`: root, everything).
pub fn status_for(fs: &Fs, viewer: Option<&Viewer>) -> Status {
    let snap = fs.leases().snapshot();
    let now = Instant::now();
    let mut inos: Vec<u64> = snap.pins.iter().map(|p| p.ino).collect();
    inos.sort_unstable();
    inos.dedup();
    let paths = match viewer {
        None => fs.paths_seen(&inos, &|_| true),
        Some(v) => fs.paths_seen(&inos, &|d| v.may_list(d, fs.acl())),
    };
    // Whose holder is each: the viewer's own holders are shown fully.
    let own: std::collections::HashSet<u64> = snap
        .holders
        .iter()
        .filter(|(_, info, _)| viewer.is_none_or(|v| v.uid == info.uid))
        .map(|(id, _, _)| *id)
        .collect();
    let live: std::collections::HashSet<u64> = snap.pins.iter().map(|p| p.id).collect();
    let exports = fs.exports_of(&live);
    let leases = snap
        .pins
        .iter()
        .map(|p| LeaseStatus {
            remote: exports.get(&p.id).map(|e| RemoteStatus {
                nic: e.addr.to_string(),
                rkey: own
                    .contains(&p.holder)
                    .then(|| crate::remote::protocol::rkey_text(e.rkey)),
                peers: e
                    .peers
                    .iter()
                    .map(|r| RemotePeerStatus {
                        addr: r.addr.to_string(),
                        state: r.state.name().into(),
                    })
                    .collect(),
                peers_total: e.total,
            }),
            holder: p.holder,
            pin: p.id,
            ino: p.ino,
            path: match paths.get(&p.ino) {
                None => Some("(unlinked)".into()),
                Some((full, _)) if own.contains(&p.holder) => Some(full.clone()),
                Some((_, seen)) => seen.clone(),
            },
            offset: p.first_block * BLOCK_SIZE,
            len: p.blocks * BLOCK_SIZE,
            state: p.state.name().into(),
            deadline_ms: match p.state {
                LeaseState::Breaking { deadline: Some(d) } => {
                    Some(millis(d.saturating_duration_since(now)))
                }
                _ => None,
            },
            unbreakable: p.unbreakable,
            writable: p.writable,
            standing: p.standing.name().into(),
        })
        .collect();
    let owners = fs.leases().extent_holders();
    let (extents, busy_blocks) = fs.allocator_locked(|a| {
        let busy = a
            .busy_extents()
            .into_iter()
            .map(|b| BusyExtent {
                start: b.extent.start,
                len: b.extent.len,
                holder: owners
                    .iter()
                    .find(|(e, _)| e.start < b.extent.end() && b.extent.start < e.end())
                    .map(|(_, h)| *h),
            })
            .collect();
        (busy, a.busy_blocks())
    });
    let st = fs.statfs();
    let c = snap.counters;
    Status {
        holders: snap
            .holders
            .iter()
            .map(|(id, info, fenced)| {
                let mine = own.contains(id);
                HolderStatus {
                    id: *id,
                    pid: mine.then_some(info.pid),
                    comm: mine.then(|| info.comm.clone()),
                    fenced: *fenced,
                }
            })
            .collect(),
        leases,
        busy: BusyStatus {
            blocks: busy_blocks,
            extents,
        },
        space: SpaceStatus {
            block_size: BLOCK_SIZE,
            total_blocks: st.blocks,
            free_blocks: st.free,
            available_blocks: st.available,
            used_blocks: st
                .blocks
                .saturating_sub(st.free)
                .saturating_sub(busy_blocks),
            busy_blocks,
        },
        counters: Counters {
            breaks: c.breaks,
            releases: c.releases,
            timeouts: c.timeouts,
            refusals: c.refusals,
            revocations: c.revocations,
            fences: c.fences,
        },
        policy: PolicyStatus {
            break_policy: snap.config.policy.name().into(),
            lease_break_time_ms: snap.config.break_time.map(millis),
            busy_blocks: snap.config.busy_blocks,
            guest_break_time_ms: millis(snap.config.guest_break_time),
            allow_unbreakable: snap.config.allow_unbreakable,
        },
        waiting_breakers: fs.waiting_breakers() as u64,
        mount: if fs.is_shut_down() {
            MountState::ShutDown
        } else {
            MountState::Up
        },
        errors: fs.errors.snapshot(),
        journal: fs.journal_status(),
    }
}

impl Fs {
    /// Failed requests per errno since mount: the FUSE adapter counts each error reply here,
    /// and `status` shows them.
    pub fn errors(&self) -> &crate::error::ErrnoCounts {
        &self.errors
    }
}

/// `ENOENT 3, ENOSPC 1`, or `none`.
fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

/// The status as one JSON object, all of it (root's view).
pub fn json(fs: &Fs) -> String {
    json_for(fs, None)
}

/// The status as one JSON object, as `viewer` may see it (`None`: root).
pub fn json_for(fs: &Fs, viewer: Option<&Viewer>) -> String {
    to_json(&status_for(fs, viewer))
}

/// The status as a table for people, all of it (root's view).
pub fn table(fs: &Fs) -> String {
    table_for(fs, None)
}

/// The status as a table for people, as `viewer` may see it (`None`: root).
pub fn table_for(fs: &Fs, viewer: Option<&Viewer>) -> String {
    let v = status_for(fs, viewer);
    let mut out = String::new();
    let (c, p, sp) = (&v.counters, &v.policy, &v.space);
    if v.mount == MountState::ShutDown {
        let why = match fs.shutdown_by() {
            Some(flush) => format!("on request (flush {})", flush.name()),
            None => "after a host failure".into(),
        };
        out.push_str(&format!("state: SHUT DOWN {why}: every operation fails with EIO; unmount it (the image keeps its last durable state)\n"));
    }
    out.push_str(&format!(
        "policy {} (lease_break_time {}, busy_blocks {}, guest_break_time {:.3}s, unbreakable pins: {})\n",
        p.break_policy,
        p.lease_break_time_ms
            .map_or("never".into(), |ms| format!("{:.3}s", ms as f64 / 1000.0)),
        if p.busy_blocks { "on" } else { "off" },
        p.guest_break_time_ms as f64 / 1000.0,
        if p.allow_unbreakable { "anyone" } else { "root only" }
    ));
    out.push_str(&format!(
        "breakers waiting for holders: {}\n",
        v.waiting_breakers
    ));
    out.push_str(&format!(
        "space: {} blocks of {}: {} free ({} for data, the rest kept for metadata), {} used, {} busy\n",
        sp.total_blocks,
        sp.block_size,
        sp.free_blocks,
        sp.available_blocks,
        sp.used_blocks,
        sp.busy_blocks
    ));
    out.push_str(&format!(
        "counters: {} breaks, {} releases, {} timeouts, {} refusals, {} revocations, {} fences\n",
        c.breaks, c.releases, c.timeouts, c.refusals, c.revocations, c.fences
    ));
    let j = &v.journal;
    out.push_str(&format!(
        "journal: {} of {} bytes used; {} checkpoints and {} flushes since mount; {} grown sizes not journaled yet\n",
        j.used_bytes, j.capacity_bytes, j.checkpoints, j.flushes, j.sizes_pending
    ));
    out.push_str(&format!("failed requests: {}\n", errors_line(&v.errors)));
    out.push_str("\nHOLDER  PID      COMM             FENCED\n");
    for h in &v.holders {
        let pid = h.pid.map_or("-".into(), |p| p.to_string());
        let comm = h.comm.as_deref().map_or("-".into(), printable);
        out.push_str(&format!(
            "{:<7} {pid:<8} {comm:<16} {}\n",
            h.id,
            if h.fenced { "yes" } else { "no" }
        ));
    }
    out.push_str(
        "\nPIN     HOLDER  STATE     DEADLINE   MODE  AS     OFFSET       LEN          PATH\n",
    );
    for l in &v.leases {
        let mode = format!(
            "{}{}",
            if l.writable { "rw" } else { "ro" },
            if l.unbreakable { "!" } else { "" }
        );
        let deadline = l.deadline_ms.map_or("-".into(), |ms| format!("{ms}ms"));
        out.push_str(&format!(
            "{:<7} {:<7} {:<9} {:<10} {:<5} {:<6} {:<12} {:<12} {}\n",
            l.pin,
            l.holder,
            l.state,
            deadline,
            mode,
            l.standing,
            l.offset,
            l.len,
            l.path
                .as_deref()
                .map_or_else(|| format!("ino:{}", l.ino), printable)
        ));
    }
    if v.leases.iter().any(|l| l.remote.is_some()) {
        out.push_str("\nEXPORTED PIN  NIC                     PEER                    STATE\n");
        for l in &v.leases {
            let Some(r) = &l.remote else { continue };
            if r.peers.is_empty() {
                out.push_str(&format!("{:<13} {:<23} -\n", l.pin, r.nic));
            }
            for p in &r.peers {
                out.push_str(&format!(
                    "{:<13} {:<23} {:<23} {}\n",
                    l.pin, r.nic, p.addr, p.state
                ));
            }
            if r.peers_total > r.peers.len() as u64 {
                out.push_str(&format!(
                    "{:<13} {:<23} (and {} more peers, not kept)\n",
                    l.pin,
                    r.nic,
                    r.peers_total - r.peers.len() as u64
                ));
            }
        }
    }
    out.push_str("\nBUSY START   LEN      HOLDER\n");
    for b in &v.busy.extents {
        out.push_str(&format!("{:<12} {:<8} {}\n", b.start, b.len, opt(b.holder)));
    }
    out
}

/// A lease event of the core as the protocol carries it (notifications and JSON alike).
pub fn wire_event(e: &Event) -> protocol::Event {
    protocol::Event::Lease(protocol::LeaseEvent {
        kind: match e.kind {
            EventKind::Granted => protocol::EventKind::Granted,
            EventKind::Break { deadline_ms } => protocol::EventKind::Break { deadline_ms },
            EventKind::Released => protocol::EventKind::Released,
            EventKind::Revoked => protocol::EventKind::Revoked,
            EventKind::Refused => protocol::EventKind::Refused,
            EventKind::Fenced => protocol::EventKind::Fenced,
            EventKind::HolderGone => protocol::EventKind::HolderGone,
        },
        holder: e.holder,
        pin: e.pin,
        ino: e.ino,
        offset: e.offset,
        len: e.len,
        time: protocol::Timestamp::of(e.at),
    })
}

/// The recent events as a JSON array, oldest first (each as [`protocol::Event`] writes it).
pub fn events_json(fs: &Fs) -> String {
    let list: Vec<protocol::Event> = fs.leases().events().iter().map(wire_event).collect();
    to_json(&list)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document has the fields, order and `null`s that the hand-written encoder gave
    /// (which tools and tests read), and reads back as itself.
    #[test]
    fn the_status_document_keeps_its_shape() {
        let s = Status {
            holders: vec![
                HolderStatus {
                    id: 1,
                    pid: Some(42),
                    comm: Some("nic \"x\"".into()),
                    fenced: false,
                },
                HolderStatus {
                    id: 2,
                    pid: None,
                    comm: None,
                    fenced: true,
                },
            ],
            leases: vec![LeaseStatus {
                holder: 2,
                pin: 7,
                ino: 9,
                path: None,
                offset: 4096,
                len: 8192,
                state: "breaking".into(),
                deadline_ms: None,
                unbreakable: false,
                writable: true,
                standing: "guest".into(),
                remote: None,
            }],
            busy: BusyStatus {
                blocks: 2,
                extents: vec![BusyExtent {
                    start: 300,
                    len: 2,
                    holder: None,
                }],
            },
            space: SpaceStatus {
                block_size: 4096,
                total_blocks: 100,
                free_blocks: 50,
                available_blocks: 40,
                used_blocks: 48,
                busy_blocks: 2,
            },
            counters: Counters {
                breaks: 1,
                releases: 2,
                timeouts: 3,
                refusals: 4,
                revocations: 5,
                fences: 6,
            },
            policy: PolicyStatus {
                break_policy: "wait".into(),
                lease_break_time_ms: None,
                busy_blocks: true,
                guest_break_time_ms: 500,
                allow_unbreakable: false,
            },
            waiting_breakers: 1,
            mount: MountState::ShutDown,
            errors: [("EEXIST".to_string(), 1), ("ENOENT".to_string(), 2)].into(),
            journal: JournalStatus {
                used_bytes: 96,
                capacity_bytes: 1 << 20,
                checkpoints: 3,
                flushes: 7,
                sizes_pending: 1,
            },
        };
        let json = to_json(&s);
        assert_eq!(
            json,
            concat!(
                r#"{"holders":[{"id":1,"pid":42,"comm":"nic \"x\"","fenced":false},{"id":2,"pid":null,"comm":null,"fenced":true}],"#,
                r#""leases":[{"holder":2,"pin":7,"ino":9,"path":null,"offset":4096,"len":8192,"state":"breaking","deadline_ms":null,"unbreakable":false,"writable":true,"standing":"guest"}],"#,
                r#""busy":{"blocks":2,"extents":[{"start":300,"len":2,"holder":null}]},"#,
                r#""space":{"block_size":4096,"total_blocks":100,"free_blocks":50,"available_blocks":40,"used_blocks":48,"busy_blocks":2},"#,
                r#""counters":{"breaks":1,"releases":2,"timeouts":3,"refusals":4,"revocations":5,"fences":6},"#,
                r#""policy":{"break_policy":"wait","lease_break_time_ms":null,"busy_blocks":true,"guest_break_time_ms":500,"allow_unbreakable":false},"#,
                r#""waiting_breakers":1,"mount":"shut_down","errors":{"EEXIST":1,"ENOENT":2},"#,
                r#""journal":{"used_bytes":96,"capacity_bytes":1048576,"checkpoints":3,"flushes":7,"sizes_pending":1}}"#
            )
        );
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        // A document without the newer fields reads back with no errors and a zero journal.
        let old = json.replace(r#","errors":{"EEXIST":1,"ENOENT":2}"#, "");
        let old = old.split(r#","journal":"#).next().unwrap().to_string() + "}";
        let read = serde_json::from_str::<Status>(&old).unwrap();
        assert!(read.errors.is_empty());
        assert_eq!(read.journal, JournalStatus::default());
        assert_eq!(errors_line(&s.errors), "EEXIST 1, ENOENT 2");
        assert_eq!(errors_line(&read.errors), "none");
    }
}

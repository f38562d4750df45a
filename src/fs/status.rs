//! What `pinfs status` shows: holders, leases, busy blocks, space and counters, as one JSON
//! object or as a readable table, and the recent lease events.
//!
//! What a caller may see: root sees everything. Any other caller (a [`Viewer`]) sees its own
//! holders (same uid) fully; of other users' holders, the pid and command are hidden (`null`
//! in JSON, `-` in the table), and so is the path of their leases' files unless the viewer
//! could `stat` it (search permission on every directory above it, for its uid, gid and
//! supplementary groups): then the lease's `path` is `null` (`ino:N` in the table) and only
//! its inode number tells which file it is. Everything else (ids, ranges, states, busy
//! extents, counters) is the same for every caller. Events carry no pid, command or path.

use std::time::{Instant, UNIX_EPOCH};

use crate::fs::Fs;
use crate::fsck::json_str;
use crate::lease::{Event, EventKind, LeaseState};
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
    /// Could this viewer search (pass through) directory `d`, by its mode bits?
    fn may_search(&self, d: &crate::meta::inode::Inode) -> bool {
        let bits = if self.uid == d.uid {
            d.perm >> 6
        } else if self.gid == d.gid || self.groups.contains(&d.gid) {
            d.perm >> 3
        } else {
            d.perm
        };
        bits & 1 != 0
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

struct Lease {
    holder: u64,
    pin: u64,
    ino: u64,
    /// `None`: hidden from this viewer.
    path: Option<String>,
    offset: u64,
    len: u64,
    state: &'static str,
    deadline_ms: Option<u64>,
    unbreakable: bool,
    writable: bool,
    /// `root`, `owner` or `guest` (a guest's lease is revoked at its deadline whatever the
    /// policy).
    standing: &'static str,
}

struct Busy {
    start: u64,
    len: u64,
    holder: Option<u64>,
}

/// A holder's pid and command; `None` where hidden from the viewer.
type Who = Option<(u32, String)>;

struct View {
    /// id, pid and command, fenced.
    holders: Vec<(u64, Who, bool)>,
    leases: Vec<Lease>,
    busy: Vec<Busy>,
    busy_blocks: u64,
    total: u64,
    free: u64,
    /// Free blocks outside the metadata reserve.
    available: u64,
    /// A host failure shut the mount down.
    shut_down: bool,
    counters: crate::lease::Counters,
    policy: &'static str,
    break_time_ms: Option<u128>,
    busy_on: bool,
    guest_break_time_ms: u128,
    allow_unbreakable: bool,
    waiting_breakers: usize,
}

/// The status as `viewer` may see it (`None`: root, everything).
fn view(fs: &Fs, viewer: Option<&Viewer>) -> View {
    let snap = fs.leases().snapshot();
    let now = Instant::now();
    let mut inos: Vec<u64> = snap.pins.iter().map(|p| p.ino).collect();
    inos.sort_unstable();
    inos.dedup();
    let paths = match viewer {
        None => fs.paths_seen(&inos, &|_| true),
        Some(v) => fs.paths_seen(&inos, &|d| v.may_search(d)),
    };
    // Whose holder is each: the viewer's own holders are shown fully.
    let own: std::collections::HashSet<u64> = snap
        .holders
        .iter()
        .filter(|(_, info, _)| viewer.is_none_or(|v| v.uid == info.uid))
        .map(|(id, _, _)| *id)
        .collect();
    let leases = snap
        .pins
        .iter()
        .map(|p| Lease {
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
            state: p.state.name(),
            deadline_ms: match p.state {
                LeaseState::Breaking { deadline: Some(d) } => {
                    Some(d.saturating_duration_since(now).as_millis() as u64)
                }
                _ => None,
            },
            unbreakable: p.unbreakable,
            writable: p.writable,
            standing: p.standing.name(),
        })
        .collect();
    let owners = fs.leases().extent_holders();
    let (busy, busy_blocks) = fs.with_allocator(|a| {
        let busy = a
            .busy_extents()
            .into_iter()
            .map(|b| Busy {
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
    View {
        holders: snap
            .holders
            .iter()
            .map(|(id, info, fenced)| {
                let who = own.contains(id).then(|| (info.pid, info.comm.clone()));
                (*id, who, *fenced)
            })
            .collect(),
        leases,
        busy,
        busy_blocks,
        total: st.blocks,
        free: st.free,
        available: st.available,
        shut_down: fs.is_shut_down(),
        counters: snap.counters,
        policy: snap.config.policy.name(),
        break_time_ms: snap.config.break_time.map(|d| d.as_millis()),
        busy_on: snap.config.busy_blocks,
        guest_break_time_ms: snap.config.guest_break_time.as_millis(),
        allow_unbreakable: snap.config.allow_unbreakable,
        waiting_breakers: fs.waiting_breakers(),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

/// The number after `"key":` in a status JSON document (a reader for tools and tests that
/// need one counter, not a JSON parser).
pub fn json_number(json: &str, key: &str) -> Option<u64> {
    let rest = json.split(&format!("\"{key}\":")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The raw text of the first value of `key` in `json`, when it is a number or a literal
/// (up to the next `,` or `}`).
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let rest = json.split(&format!("\"{key}\":")).nth(1)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// The status as one JSON object, all of it (root's view).
pub fn json(fs: &Fs) -> String {
    json_for(fs, None)
}

/// The status as one JSON object, as `viewer` may see it (`None`: root).
pub fn json_for(fs: &Fs, viewer: Option<&Viewer>) -> String {
    let v = view(fs, viewer);
    let holders: Vec<String> = v
        .holders
        .iter()
        .map(|(id, who, fenced)| {
            let (pid, comm) = match who {
                Some((pid, comm)) => (pid.to_string(), json_str(comm)),
                None => ("null".into(), "null".into()),
            };
            format!("{{\"id\":{id},\"pid\":{pid},\"comm\":{comm},\"fenced\":{fenced}}}")
        })
        .collect();
    let leases: Vec<String> = v
        .leases
        .iter()
        .map(|l| {
            format!(
                "{{\"holder\":{},\"pin\":{},\"ino\":{},\"path\":{},\"offset\":{},\"len\":{},\"state\":\"{}\",\"deadline_ms\":{},\"unbreakable\":{},\"writable\":{},\"standing\":\"{}\"}}",
                l.holder,
                l.pin,
                l.ino,
                l.path.as_deref().map_or("null".into(), json_str),
                l.offset,
                l.len,
                l.state,
                opt(l.deadline_ms),
                l.unbreakable,
                l.writable,
                l.standing
            )
        })
        .collect();
    let busy: Vec<String> = v
        .busy
        .iter()
        .map(|b| {
            format!(
                "{{\"start\":{},\"len\":{},\"holder\":{}}}",
                b.start,
                b.len,
                opt(b.holder)
            )
        })
        .collect();
    let c = v.counters;
    format!(
        "{{\"holders\":[{}],\"leases\":[{}],\"busy\":{{\"blocks\":{},\"extents\":[{}]}},\"space\":{{\"block_size\":{BLOCK_SIZE},\"total_blocks\":{},\"free_blocks\":{},\"available_blocks\":{},\"used_blocks\":{},\"busy_blocks\":{}}},\"counters\":{{\"breaks\":{},\"releases\":{},\"timeouts\":{},\"refusals\":{},\"revocations\":{},\"fences\":{}}},\"policy\":{{\"break_policy\":\"{}\",\"lease_break_time_ms\":{},\"busy_blocks\":{},\"guest_break_time_ms\":{},\"allow_unbreakable\":{}}},\"waiting_breakers\":{},\"mount\":\"{}\"}}",
        holders.join(","),
        leases.join(","),
        v.busy_blocks,
        busy.join(","),
        v.total,
        v.free,
        v.available,
        v.total - v.free - v.busy_blocks,
        v.busy_blocks,
        c.breaks,
        c.releases,
        c.timeouts,
        c.refusals,
        c.revocations,
        c.fences,
        v.policy,
        opt(v.break_time_ms),
        v.busy_on,
        v.guest_break_time_ms,
        v.allow_unbreakable,
        v.waiting_breakers,
        if v.shut_down { "shut_down" } else { "up" }
    )
}

/// The status as a table for people, all of it (root's view).
pub fn table(fs: &Fs) -> String {
    table_for(fs, None)
}

/// The status as a table for people, as `viewer` may see it (`None`: root).
pub fn table_for(fs: &Fs, viewer: Option<&Viewer>) -> String {
    let v = view(fs, viewer);
    let mut out = String::new();
    let c = v.counters;
    if v.shut_down {
        out.push_str("state: SHUT DOWN after a host failure: every change fails with EIO; unmount it (the image keeps its last durable state)\n");
    }
    out.push_str(&format!(
        "policy {} (lease_break_time {}, busy_blocks {}, guest_break_time {:.3}s, unbreakable pins: {})\n",
        v.policy,
        v.break_time_ms
            .map_or("never".into(), |ms| format!("{:.3}s", ms as f64 / 1000.0)),
        if v.busy_on { "on" } else { "off" },
        v.guest_break_time_ms as f64 / 1000.0,
        if v.allow_unbreakable { "anyone" } else { "root only" }
    ));
    out.push_str(&format!(
        "breakers waiting for holders: {}\n",
        v.waiting_breakers
    ));
    out.push_str(&format!(
        "space: {} blocks of {BLOCK_SIZE}: {} free ({} for data, the rest kept for metadata), {} used, {} busy\n",
        v.total,
        v.free,
        v.available,
        v.total - v.free - v.busy_blocks,
        v.busy_blocks
    ));
    out.push_str(&format!(
        "counters: {} breaks, {} releases, {} timeouts, {} refusals, {} revocations, {} fences\n",
        c.breaks, c.releases, c.timeouts, c.refusals, c.revocations, c.fences
    ));
    out.push_str("\nHOLDER  PID      COMM             FENCED\n");
    for (id, who, fenced) in &v.holders {
        let (pid, comm) = match who {
            Some((pid, comm)) => (pid.to_string(), comm.as_str()),
            None => ("-".into(), "-"),
        };
        out.push_str(&format!(
            "{id:<7} {pid:<8} {comm:<16} {}\n",
            if *fenced { "yes" } else { "no" }
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
            l.path.clone().unwrap_or_else(|| format!("ino:{}", l.ino))
        ));
    }
    out.push_str("\nBUSY START   LEN      HOLDER\n");
    for b in &v.busy {
        out.push_str(&format!("{:<12} {:<8} {}\n", b.start, b.len, opt(b.holder)));
    }
    out
}

/// One event as JSON.
pub fn event_json(e: &Event) -> String {
    let at = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let deadline = match e.kind {
        EventKind::Break { deadline_ms } => format!(",\"deadline_ms\":{}", opt(deadline_ms)),
        _ => String::new(),
    };
    format!(
        "{{\"time\":{}.{:09},\"event\":\"{}\",\"holder\":{},\"pin\":{},\"ino\":{},\"offset\":{},\"len\":{}{deadline}}}",
        at.as_secs(),
        at.subsec_nanos(),
        e.kind.name(),
        e.holder,
        opt(e.pin),
        e.ino,
        e.offset,
        e.len
    )
}

/// The recent events as a JSON array, oldest first.
pub fn events_json(fs: &Fs) -> String {
    let list: Vec<String> = fs.leases().events().iter().map(event_json).collect();
    format!("[{}]", list.join(","))
}

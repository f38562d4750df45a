//! The holder server: accepts pin holders on the mount's socket, turns their requests
//! ([`crate::protocol`]) into calls on the filesystem core, and delivers lease notifications.
//!
//! Threads: one accepts; each connection has a reader (requests in, replies queued) and a
//! writer (the only one that sends on that socket); one notifier moves lease events from the
//! core into the writers' queues: each event to the holder it concerns, and every event to
//! every *watcher* (a connection that sent `watch`, as `pinfs status --follow` does: it gets
//! the recent events first, then each new one, none twice, by their sequence numbers). No lock
//! is held while sending to a holder. A holder that stops reading only fills its own queue;
//! a watcher that stops reading loses events once its queue holds [`WATCH_BACKLOG`], and is
//! told how many (`event lost count=N`) when it catches up.
//!
//! Identity is the kernel's: pid, uid and gid from `SO_PEERCRED`, the command name from
//! `/proc/PID/comm`. A file to pin is passed as a descriptor, so the kernel has already
//! checked that the holder may open it (for writing, for a writable pin).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crossbeam::channel::{unbounded, Sender};

use crate::dax::WindowPiece;
use crate::fs::{Caller, Fs, PinAccess};
use crate::lease::{EventKind, HolderId, HolderInfo, PinRequest};
use crate::protocol::{socket_path, Message, Packet, PeerCred};

/// Something to send to a holder.
struct Outgoing {
    text: String,
    fds: Vec<Arc<OwnedFd>>,
}

type Queues = Arc<Mutex<HashMap<HolderId, Sender<Outgoing>>>>;

/// Events a watcher may have queued before the next ones are dropped (and counted).
pub const WATCH_BACKLOG: usize = 10_000;

/// A connection that asked for every lease event of the mount.
struct Watcher {
    /// Which connection (to remove it when the connection ends).
    conn: u64,
    /// The last event it was given with the recent ones; later events only follow.
    after: u64,
    tx: Sender<Outgoing>,
    /// Events dropped since the last one it got.
    lost: u64,
}

type Watchers = Arc<Mutex<Vec<Watcher>>>;

/// Queues event number `seq` for every watcher that has not had it; drops the watchers whose
/// connection has ended.
fn tell_watchers(watchers: &Watchers, seq: u64, text: &str) {
    let mut ws = watchers.lock().unwrap_or_else(|e| e.into_inner());
    ws.retain_mut(|w| {
        if seq <= w.after {
            return true;
        }
        if w.tx.len() >= WATCH_BACKLOG {
            w.lost += 1;
            return true;
        }
        if w.lost > 0 {
            let lost = Outgoing {
                text: format!("event lost count={}", w.lost),
                fds: Vec::new(),
            };
            if w.tx.send(lost).is_err() {
                return false;
            }
            w.lost = 0;
        }
        w.tx.send(Outgoing {
            text: text.to_string(),
            fds: Vec::new(),
        })
        .is_ok()
    });
}

/// The running server of one mount.
pub struct Server {
    path: PathBuf,
    listener: Packet,
    /// The socket file's inode: device numbers of FUSE mounts are reused as soon as a mount
    /// goes, so by the time this daemon stops, the path may be a newer mount's socket.
    ino: Option<u64>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

impl Server {
    /// Starts serving holders of the mount whose device number is `dev`.
    pub fn start(fs: Arc<Fs>, dev: u64) -> std::io::Result<Server> {
        let path = socket_path(dev);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = Packet::listen(&path)?;
        let queues: Queues = Arc::new(Mutex::new(HashMap::new()));
        let watchers: Watchers = Arc::new(Mutex::new(Vec::new()));
        if let Some(notices) = fs.take_notices() {
            let (queues, watchers) = (queues.clone(), watchers.clone());
            std::thread::Builder::new()
                .name("pinfs-notifier".into())
                .spawn(move || {
                    for n in notices {
                        let text = event_text(&n.event);
                        let tx = queues
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&n.holder)
                            .cloned();
                        if let Some(tx) = tx {
                            let _ = tx.send(Outgoing {
                                text: text.clone(),
                                fds: Vec::new(),
                            });
                        }
                        tell_watchers(&watchers, n.event.seq, &text);
                    }
                })?;
        }
        let accept = listener.try_clone()?;
        std::thread::Builder::new()
            .name("pinfs-holders".into())
            .spawn(move || {
                let mut next_conn = 0u64;
                while let Ok(conn) = accept.accept() {
                    next_conn += 1;
                    let id = next_conn;
                    let (fs, queues, watchers) = (fs.clone(), queues.clone(), watchers.clone());
                    let _ = std::thread::Builder::new()
                        .name("pinfs-holder".into())
                        .spawn(move || serve(fs, conn, id, queues, watchers));
                }
            })?;
        tracing::info!(socket = %path.display(), "holder socket ready");
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&path).ok().map(|m| m.ino());
        Ok(Server {
            path,
            listener,
            ino,
        })
    }

    /// Stops accepting and removes the socket.
    pub fn stop(&self) {
        use std::os::unix::fs::MetadataExt;
        self.listener.shutdown();
        // Remove the socket only if it is still ours (see `ino`).
        if std::fs::metadata(&self.path).ok().map(|m| m.ino()) == self.ino {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn event_text(e: &crate::lease::Event) -> String {
    let at =
        e.at.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
    let mut t = format!(
        "event {} holder={} pin={} ino={} offset={} len={} time={}.{:09}",
        e.kind.name(),
        e.holder,
        e.pin.map_or("-".into(), |p| p.to_string()),
        e.ino,
        e.offset,
        e.len,
        at.as_secs(),
        at.subsec_nanos()
    );
    if let EventKind::Break { deadline_ms } = e.kind {
        t.push_str(&format!(
            " deadline_ms={}",
            deadline_ms.map_or("never".into(), |d| d.to_string())
        ));
    }
    t
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn serve(fs: Arc<Fs>, conn: Packet, conn_id: u64, queues: Queues, watchers: Watchers) {
    let Ok(peer) = conn.peer() else { return };
    let (tx, rx) = unbounded::<Outgoing>();
    // A connection becomes a holder with its first pin (or `hello`): status and fence
    // queries are not holders.
    let mut holder: Option<HolderId> = None;
    let Ok(out) = conn.try_clone() else { return };
    let writer = std::thread::Builder::new()
        .name("pinfs-holder-out".into())
        .spawn(move || {
            for m in rx {
                let raw: Vec<RawFd> = m.fds.iter().map(|f| f.as_raw_fd()).collect();
                if out.send(&m.text, &raw).is_err() {
                    break;
                }
            }
        });
    loop {
        match conn.recv() {
            Ok(Some((bytes, fds))) => {
                let reply = match Message::parse(&bytes) {
                    Err(e) => err("?", libc::EINVAL, e),
                    Ok(msg) if msg.verb == "watch" => {
                        // The recent events, then (from the notifier) each later one. Under
                        // the watchers' lock, the notifier cannot pass between the two.
                        let mut ws = watchers.lock().unwrap_or_else(|e| e.into_inner());
                        let recent = fs.leases().events();
                        for e in &recent {
                            let _ = tx.send(Outgoing {
                                text: event_text(e),
                                fds: Vec::new(),
                            });
                        }
                        ws.push(Watcher {
                            conn: conn_id,
                            after: recent.last().map_or(0, |e| e.seq),
                            tx: tx.clone(),
                            lost: 0,
                        });
                        ok(&msg.id, String::new(), Vec::new())
                    }
                    Ok(msg) => {
                        if holder.is_none() && matches!(msg.verb.as_str(), "pin" | "hello") {
                            holder = Some(register(&fs, peer, &queues, &tx));
                        }
                        handle(&fs, holder, peer, &msg, fds)
                    }
                };
                if tx.send(reply).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                // An oversized or malformed packet: say so and go on with the next one.
                if tx
                    .send(Outgoing {
                        text: format!("? err errno={} {e}", libc::EMSGSIZE),
                        fds: Vec::new(),
                    })
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    if let Some(h) = holder {
        queues.lock().unwrap_or_else(|e| e.into_inner()).remove(&h);
        fs.holder_gone(h);
    }
    watchers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|w| w.conn != conn_id);
    drop(tx);
    if let Ok(w) = writer {
        let _ = w.join();
    }
}

/// Handles one message from a holder connection without descriptors and returns the reply's
/// text: the daemon's request path, for the protocol fuzz target and its regression tests.
pub fn reply_to(fs: &Fs, holder: Option<HolderId>, peer: PeerCred, bytes: &[u8]) -> String {
    match Message::parse(bytes) {
        Ok(msg) => handle(fs, holder, peer, &msg, Vec::new()).text,
        Err(e) => err("?", libc::EINVAL, e).text,
    }
}

fn err(id: &str, errno: i32, msg: impl std::fmt::Display) -> Outgoing {
    Outgoing {
        text: format!("{id} err errno={errno} {msg}"),
        fds: Vec::new(),
    }
}

fn ok(id: &str, rest: String, fds: Vec<Arc<OwnedFd>>) -> Outgoing {
    Outgoing {
        text: if rest.is_empty() {
            format!("{id} ok")
        } else {
            format!("{id} ok {rest}")
        },
        fds,
    }
}

/// A connection becomes a holder with its first pin (or `hello`).
fn register(fs: &Fs, peer: PeerCred, queues: &Queues, tx: &Sender<Outgoing>) -> HolderId {
    let id = fs.add_holder(HolderInfo {
        pid: peer.pid,
        comm: comm_of(peer.pid),
        uid: peer.uid,
        gid: peer.gid,
    });
    queues
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, tx.clone());
    id
}

fn handle(
    fs: &Fs,
    holder: Option<HolderId>,
    peer: PeerCred,
    msg: &Message,
    mut fds: Vec<OwnedFd>,
) -> Outgoing {
    let id = msg.id.as_str();
    let caller = Caller {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid,
    };
    match msg.verb.as_str() {
        "pin" => {
            if fds.len() != 1 {
                return err(id, libc::EBADF, "pin needs exactly one file descriptor");
            }
            let file = fds.pop().expect("one");
            let (offset, len) = match (msg.num("offset"), msg.num("len")) {
                (Ok(o), Ok(l)) => (o, l),
                (Err(e), _) | (_, Err(e)) => return err(id, libc::EINVAL, e),
            };
            let Some(holder) = holder else {
                return err(id, libc::EIO, "no holder for this connection");
            };
            match pin(
                fs,
                holder,
                caller,
                &file,
                offset,
                len,
                msg.has("ro"),
                msg.has("unbreakable"),
            ) {
                Ok(out) => ok(id, out.0, out.1),
                Err((errno, m)) => err(id, errno, m),
            }
        }
        "unpin" => match msg.num("pin") {
            Ok(p) => match holder
                .ok_or(crate::error::FsError::Lease(
                    crate::lease::LeaseError::NoSuchPin,
                ))
                .and_then(|h| fs.unpin(h, p))
            {
                Ok(()) => ok(id, String::new(), Vec::new()),
                Err(e) => err(id, e.errno(), e),
            },
            Err(e) => err(id, libc::EINVAL, e),
        },
        "raw" if peer.uid != 0 => err(id, libc::EPERM, "only root may map the raw image"),
        "raw" => match fs.image().raw_fd() {
            Ok(f) => ok(id, String::new(), vec![Arc::new(f)]),
            Err(e) => err(id, libc::EIO, e),
        },
        "status" => {
            let body = if msg.has("table") {
                crate::status::table(fs)
            } else {
                crate::status::json(fs)
            };
            ok(id, format!("\n{body}"), Vec::new())
        }
        "events" => ok(
            id,
            format!("\n{}", crate::status::events_json(fs)),
            Vec::new(),
        ),
        "fence" if peer.uid != 0 => err(id, libc::EPERM, "only root may fence a holder"),
        "fence" => match msg.num("holder") {
            Ok(h) => match fs.fence(h) {
                Ok(n) => ok(id, format!("revoked={n}"), Vec::new()),
                Err(e) => err(id, e.errno(), e),
            },
            Err(e) => err(id, libc::EINVAL, e),
        },
        "hello" => ok(id, format!("holder={}", holder.unwrap_or(0)), Vec::new()),
        "check" if peer.uid != 0 => err(id, libc::EPERM, "only root may check the mount"),
        "check" => match fs.check_space() {
            Ok(blocks) => ok(id, format!("mapped_blocks={blocks}"), Vec::new()),
            Err(e) => err(id, libc::EUCLEAN, e),
        },
        other => err(id, libc::EINVAL, format!("unknown request '{other}'")),
    }
}

type PinReply = (String, Vec<Arc<OwnedFd>>);

#[allow(clippy::too_many_arguments)]
fn pin(
    fs: &Fs,
    holder: HolderId,
    caller: Caller,
    file: &OwnedFd,
    offset: u64,
    len: u64,
    ro: bool,
    unbreakable: bool,
) -> Result<PinReply, (i32, String)> {
    // SAFETY: fstat and fcntl(F_GETFL) on a descriptor we own.
    let (st, flags) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(file.as_raw_fd(), &mut st) != 0 {
            return Err((libc::EBADF, "cannot stat the descriptor".into()));
        }
        (st, libc::fcntl(file.as_raw_fd(), libc::F_GETFL))
    };
    let mount_dev = fs.mount_dev();
    if Some(st.st_dev) != mount_dev {
        return Err((libc::EXDEV, "the file is not on this pinfs mount".into()));
    }
    // The descriptor's access mode is what the kernel checked when the holder opened the
    // file (its uid, all its groups, ACLs, a read-only mount). An O_PATH descriptor was
    // checked for nothing.
    if flags < 0 || flags & libc::O_PATH != 0 {
        return Err((
            libc::EBADF,
            "pin needs a descriptor opened for reading (an O_PATH descriptor grants no access)"
                .into(),
        ));
    }
    let mode = flags & libc::O_ACCMODE;
    let access = PinAccess::Descriptor {
        read: mode == libc::O_RDONLY || mode == libc::O_RDWR,
        write: mode == libc::O_WRONLY || mode == libc::O_RDWR,
    };
    let req = PinRequest {
        holder,
        ino: st.st_ino,
        offset,
        len,
        writable: !ro,
        unbreakable,
    };
    let grant = fs
        .pin_with(&req, caller, access)
        .map_err(|e| (e.errno(), e.to_string()))?;
    // Each window goes to the holder as a description of its own, read-only for a read-only
    // pin (a shared writable mapping of it then fails with EACCES).
    let mut fds = Vec::with_capacity(grant.windows.len());
    for w in &grant.windows {
        match w.descriptor(!ro) {
            Ok(fd) => fds.push(Arc::new(fd)),
            Err(e) => {
                let _ = fs.unpin(holder, grant.id);
                let errno = match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE) => libc::EMFILE,
                    _ => libc::ENOMEM,
                };
                return Err((errno, e.to_string()));
            }
        }
    }
    let extents: Vec<String> = grant
        .extents
        .iter()
        .map(|e| format!("{}:{}:{}", e.file_offset, e.image_offset, e.len))
        .collect();
    let windows: Vec<String> = grant
        .windows
        .iter()
        .map(|w: &WindowPiece| format!("{}:{}:{}", w.image_offset, w.len, w.fd_offset))
        .collect();
    Ok((
        format!(
            "pin={} holder={holder} extents={} windows={}",
            grant.id,
            extents.join(","),
            windows.join(",")
        ),
        fds,
    ))
}

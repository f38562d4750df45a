//! The holder server: accepts pin holders on the mount's socket, turns their requests
//! ([`crate::holder::protocol`]) into calls on the filesystem core, and delivers lease notifications.
//! Holders are untrusted (another user's program, a buggy driver), so the server bounds what
//! any of them can cost it: threads, descriptors, memory.
//!
//! # Threads
//!
//! - The **poller** (`pinfs-holders`) owns the listening socket and every connection's
//!   socket, all nonblocking. It alone accepts, reads and sends, waiting in poll(2) on all of
//!   them and on an eventfd that the other threads write to wake it. An idle connection costs
//!   a descriptor and a few hundred bytes, never a thread.
//! - [`WORKERS`] **workers** (`pinfs-requests`) run every request (requests take filesystem
//!   locks and may do I/O: the poller never runs one) and release a holder's pins when its
//!   connection ends (`holder_gone`). A connection has at most one request in flight: the
//!   poller reads its next request only once the previous one's reply is queued, so replies
//!   keep their order, and a holder that floods requests only waits behind itself.
//! - The **notifier** (`pinfs-notifier`) moves lease events from the core into the queues of
//!   the holder concerned and of every *watcher* (a connection that sent `watch`, as
//!   `pinfs status --follow` does: it gets the recent events first, then each new one, none
//!   twice, by their sequence numbers), and wakes the poller.
//!
//! # The hub and its lock
//!
//! The hub (`Hub`, one mutex) holds every connection's outgoing queue, the map from holder to
//! connection, and the news for the poller (answered requests, queues with something to
//! send, connections to drop). Lock order: the hub, then the lease manager's lock (a `watch`
//! reads the recent events under the hub, so that the notifier cannot pass between them);
//! nothing takes the hub while holding a filesystem lock. No lock is held while sending: the
//! poller takes a packet out of its queue under the hub, sends it without, and puts it back
//! at the front if the socket had no room.
//!
//! # Bounds
//!
//! - Who connects: on a mount that admits only its mounter (see
//!   `MountOptions::others_allowed`) the socket file is 0600 (the daemon's user, and
//!   root), and the poller checks `SO_PEERCRED` at accept: anyone else gets
//!   `? err errno=13 ...` and is closed. Otherwise the socket is 0666.
//! - At most [`MAX_CONNS_PER_UID`] connections per user (root exempt); the next one gets
//!   `? err errno=11 too many connections for uid U (limit N)` and is closed.
//! - A connection whose queue holds more than [`QUEUE_BYTES`] bytes or [`QUEUE_PACKETS`]
//!   packets when another reply or event is due has stopped reading: it is disconnected
//!   (logged) and its pins released as at any disconnect. An emptier queue takes one reply of
//!   any size, so a holder that reads its replies is never cut off by a big one.
//! - A watcher that stops reading loses events once its queue holds [`WATCH_BACKLOG`], and is
//!   told how many (`event lost count=N`) when it catches up; it is not disconnected for that.
//! - When accept fails for want of descriptors (EMFILE, ENFILE), the poller leaves the
//!   listening socket alone for [`ACCEPT_BACKOFF`] (instead of spinning on it) and goes on
//!   serving the connections it has.
//!
//! Identity is the kernel's: pid, uid and gid from `SO_PEERCRED`, supplementary groups from
//! `SO_PEERGROUPS`, both as they were at connect (a process may change its groups later, and
//! its pid may go to another process; for what `status` may show a caller, see
//! [`crate::fs::status`]), and the command name from `/proc/PID/comm`. A file to pin is passed as a descriptor, so the
//! kernel has already checked that the holder may open it (for writing, for a writable pin).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver, Sender};
use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::fs::{Caller, Fs, PinAccess};
use crate::holder::protocol::{
    frames, poll_ms, socket_path, Event, Grant, Packet, PeerCred, PinExtent, Reply, Request,
    WindowExtent,
};
use crate::lease::{HolderId, HolderInfo, PinId, PinRequest};
use crate::store::windows::WindowPiece;

/// Threads that run requests.
pub const WORKERS: usize = 4;
/// Connections one user (other than root) may have open at once.
pub const MAX_CONNS_PER_UID: usize = 64;
/// A connection whose queue holds more than this many bytes when the next reply or event is
/// due is disconnected (a 10,000-pin status is about 2 MiB, and fits in an empty queue).
pub const QUEUE_BYTES: usize = 4 << 20;
/// ... or more than this many packets (room for a full watcher's backlog and its replies).
pub const QUEUE_PACKETS: usize = 2 * WATCH_BACKLOG;
/// Events a watcher may have queued before the next ones are dropped (and counted).
pub const WATCH_BACKLOG: usize = 10_000;
/// How long the poller leaves the listening socket alone after accept ran out of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections accepted in one turn of the poller (the others wait for the next turn, so
/// that a connection storm does not starve the connections already served).
const ACCEPT_BATCH: usize = 64;

/// Something to send to a holder.
struct Outgoing {
    text: String,
    fds: Vec<Arc<OwnedFd>>,
}

/// What a watcher has had.
struct Watch {
    /// The last event it was given with the recent ones; later events only follow.
    after: u64,
    /// Events dropped since the last one it got.
    lost: u64,
}

/// One connection's side of the hub.
#[derive(Default)]
struct Queue {
    out: VecDeque<Outgoing>,
    /// Bytes of text in `out`.
    bytes: usize,
    /// The holder this connection became (with its first `pin` or `hello`).
    holder: Option<HolderId>,
    watch: Option<Watch>,
    /// Past its bounds: emptied, and the poller drops the connection.
    overflowed: bool,
}

impl Queue {
    fn over(&self) -> bool {
        self.bytes > QUEUE_BYTES || self.out.len() > QUEUE_PACKETS
    }

    fn put(&mut self, o: Outgoing) {
        self.bytes += o.text.len();
        self.out.push_back(o);
    }
}

/// State shared by the poller, the workers and the notifier (see the module's documentation
/// for the lock order).
#[derive(Default)]
struct Hub {
    queues: HashMap<u64, Queue>,
    holders: HashMap<HolderId, u64>,
    /// Connections whose request is answered (their reply is queued).
    done: Vec<u64>,
    /// Connections with something new to send.
    ready: Vec<u64>,
    /// Connections past their queue bounds.
    overflowed: Vec<u64>,
}

impl Hub {
    /// Queues `packets` for connection `conn`, unless its queue is already past its bounds:
    /// then the queue is emptied (its memory goes back now) and the connection marked to be
    /// dropped.
    fn push(&mut self, conn: u64, packets: Vec<Outgoing>) {
        let Some(q) = self.queues.get_mut(&conn) else {
            return;
        };
        if q.overflowed || packets.is_empty() {
            return;
        }
        if q.over() {
            q.overflowed = true;
            q.out.clear();
            q.bytes = 0;
            self.overflowed.push(conn);
            return;
        }
        for p in packets {
            q.put(p);
        }
        self.ready.push(conn);
    }

    /// Queues event number `seq` for every watcher that has not had it.
    fn tell_watchers(&mut self, seq: u64, text: &str) {
        for (id, q) in self.queues.iter_mut() {
            let Some(w) = q.watch.as_mut() else {
                continue;
            };
            if seq <= w.after || q.overflowed {
                continue;
            }
            if q.out.len() >= WATCH_BACKLOG {
                w.lost += 1;
                continue;
            }
            if w.lost > 0 {
                let text = Event::Lost { count: w.lost }.encode();
                w.lost = 0;
                q.put(Outgoing {
                    text,
                    fds: Vec::new(),
                });
            }
            q.put(Outgoing {
                text: text.to_string(),
                fds: Vec::new(),
            });
            self.ready.push(*id);
        }
    }
}

/// Wakes the poller out of poll(2): an eventfd.
struct Waker {
    fd: OwnedFd,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Waker { fd })
    }

    fn wake(&self) {
        // It can only fail when the counter is saturated, and then the poller is woken anyway.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    fn drain(&self) {
        let mut n = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut n);
    }
}

struct Shared {
    hub: Mutex<Hub>,
    waker: Waker,
}

impl Shared {
    #[track_caller]
    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Work for the workers.
enum Job {
    /// A request of connection `conn` (which reads no other until this one is answered).
    Request {
        conn: u64,
        peer: PeerCred,
        /// The peer's supplementary groups when it connected.
        groups: Arc<[u32]>,
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    /// The connection of this holder ended: release its pins, then close the socket (so a
    /// holder that shut its end and reads end-of-stream knows its pins are gone).
    Gone(HolderId, Packet),
}

/// The running server of one mount.
pub struct Server {
    path: PathBuf,
    /// The socket file's inode: device numbers of FUSE mounts are reused as soon as a mount
    /// goes, so by the time this daemon stops, the path may be a newer mount's socket.
    ino: Option<u64>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

/// Lets this process have as many descriptors as its hard limit allows: every connection is
/// one (the per-user bound keeps other users from taking them all).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let r = getrlimit(Resource::Nofile);
    if r.current < r.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: r.maximum,
                maximum: r.maximum,
            },
        );
    }
}

impl Server {
    /// Starts serving holders of the mount whose device number is `dev`; `allow_other`:
    /// whether users other than the daemon's (and root) may use the mount, and so connect.
    pub fn start(fs: Arc<Fs>, dev: u64, allow_other: bool) -> std::io::Result<Server> {
        let path = socket_path(dev);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        raise_fd_limit();
        let listener = Packet::listen(&path, if allow_other { 0o666 } else { 0o600 })?;
        let shared = Arc::new(Shared {
            hub: Mutex::ranked(crate::sync::Rank::Hub, Hub::default()),
            waker: Waker::new()?,
        });
        let (jobs, job_rx) = unbounded::<Job>();
        for _ in 0..WORKERS {
            let (fs, shared, rx) = (fs.clone(), shared.clone(), job_rx.clone());
            std::thread::Builder::new()
                .name("pinfs-requests".into())
                .spawn(move || work(&fs, &shared, rx))?;
        }
        if let Some(notices) = fs.take_notices() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("pinfs-notifier".into())
                .spawn(move || {
                    for n in notices {
                        let text = crate::fs::status::wire_event(&n.event).encode();
                        let mut hub = shared.hub();
                        if let Some(conn) = hub.holders.get(&n.holder).copied() {
                            hub.push(
                                conn,
                                vec![Outgoing {
                                    text: text.clone(),
                                    fds: Vec::new(),
                                }],
                            );
                        }
                        hub.tell_watchers(n.event.seq, &text);
                        drop(hub);
                        shared.waker.wake();
                    }
                })?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let poller = Poller {
            shared: shared.clone(),
            jobs,
            listener: Some(listener),
            stop: stop.clone(),
            allow_other,
            owner: rustix::process::geteuid().as_raw(),
            conns: HashMap::new(),
            per_uid: HashMap::new(),
            next_conn: 0,
            paused_until: None,
        };
        std::thread::Builder::new()
            .name("pinfs-holders".into())
            .spawn(move || poller.run())?;
        tracing::info!(socket = %path.display(), allow_other, "holder socket ready");
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&path).ok().map(|m| m.ino());
        Ok(Server {
            path,
            ino,
            stop,
            shared,
        })
    }

    /// Stops accepting and removes the socket (connections already made go on being served
    /// until the daemon exits).
    pub fn stop(&self) {
        use std::os::unix::fs::MetadataExt;
        self.stop.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
        // Remove the socket only if it is still ours (see `ino`).
        if std::fs::metadata(&self.path).ok().map(|m| m.ino()) == self.ino {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A connection, as the poller knows it.
struct Conn {
    sock: Packet,
    peer: PeerCred,
    /// Its supplementary groups when it connected (what `status` may show it depends on
    /// them; none if the kernel does not say).
    groups: Arc<[u32]>,
    /// A request of this connection is with a worker.
    busy: bool,
    /// To be dropped (the peer hung up, or its queue overflowed) once its request in flight
    /// is answered; not polled meanwhile (a hung-up socket would wake poll(2) forever).
    gone: bool,
    /// Its queue has packets the socket had no room for: poll for POLLOUT.
    blocked: bool,
}

/// How flushing a queue ended.
enum Flushed {
    /// Everything sent, or the socket is full for now.
    Ok,
    /// The socket failed: drop the connection.
    Dead(std::io::Error),
}

struct Poller {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    /// `None` once the server stops accepting.
    listener: Option<Packet>,
    stop: Arc<AtomicBool>,
    allow_other: bool,
    /// The daemon's uid: without `allow_other`, only it and root may connect.
    owner: u32,
    conns: HashMap<u64, Conn>,
    per_uid: HashMap<u32, usize>,
    next_conn: u64,
    /// Accept ran out of descriptors: leave the listener alone until then.
    paused_until: Option<Instant>,
}

impl Poller {
    fn run(mut self) {
        let mut revents: Vec<libc::c_short> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.listener = None;
            }
            self.take_news();
            if self.paused_until.is_some_and(|t| Instant::now() >= t) {
                self.paused_until = None;
            }
            ids.clear();
            let mut pollfds = Vec::with_capacity(2 + self.conns.len());
            pollfds.push(PollFd::new(&self.shared.waker.fd, PollFlags::IN));
            let listening = match (&self.listener, self.paused_until) {
                (Some(l), None) => {
                    pollfds.push(PollFd::new(l, PollFlags::IN));
                    true
                }
                _ => false,
            };
            let first_conn = pollfds.len();
            for (id, c) in &self.conns {
                if c.gone {
                    continue;
                }
                let mut events = PollFlags::empty();
                if !c.busy {
                    events |= PollFlags::IN | PollFlags::RDHUP;
                }
                if c.blocked {
                    events |= PollFlags::OUT;
                }
                // Even with no events asked, poll reports a hang-up, which marks it gone.
                pollfds.push(PollFd::new(&c.sock, events));
                ids.push(*id);
            }
            let timeout = self.paused_until.map_or(-1, |t| {
                t.saturating_duration_since(Instant::now()).as_millis() as i32 + 1
            });
            if let Err(e) = poll_ms(&mut pollfds, timeout) {
                if e != rustix::io::Errno::INTR {
                    tracing::error!("holder socket: poll: {}; retrying", std::io::Error::from(e));
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            revents.clear();
            revents.extend(pollfds.iter().map(|p| p.revents().bits() as libc::c_short));
            drop(pollfds);
            if revents[0] != 0 {
                self.shared.waker.drain();
            }
            if listening && revents[1] != 0 {
                self.accept_some();
            }
            for (&r, id) in revents[first_conn..].iter().zip(&ids) {
                if r != 0 {
                    self.on_ready(*id, r);
                }
            }
        }
    }

    /// Takes what the workers and the notifier left in the hub: answered requests, queues
    /// to flush, connections past their bounds.
    fn take_news(&mut self) {
        let (done, mut ready, overflowed) = {
            let mut hub = self.shared.hub();
            (
                std::mem::take(&mut hub.done),
                std::mem::take(&mut hub.ready),
                std::mem::take(&mut hub.overflowed),
            )
        };
        for id in overflowed {
            if let Some(c) = self.conns.get(&id) {
                tracing::warn!(
                    conn = id,
                    pid = c.peer.pid,
                    uid = c.peer.uid,
                    "holder connection dropped: it does not read its replies and events (more than {QUEUE_BYTES} bytes or {QUEUE_PACKETS} packets queued)"
                );
            }
            self.close(id);
        }
        for id in done {
            if let Some(c) = self.conns.get_mut(&id) {
                c.busy = false;
                if c.gone {
                    self.close(id);
                }
            }
        }
        ready.sort_unstable();
        ready.dedup();
        for id in ready {
            self.flush_or_close(id);
        }
    }

    fn accept_some(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let Some(l) = &self.listener else { return };
            match l.accept() {
                Ok(sock) => self.admit(sock),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO)
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: nothing to do but wait for some to
                    // come back; the connections already made go on being served.
                    tracing::warn!(
                        "holder socket: {e}; not accepting for {} ms (connections open: {})",
                        ACCEPT_BACKOFF.as_millis(),
                        self.conns.len()
                    );
                    self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Takes a new connection, or refuses it with one packet saying why.
    fn admit(&mut self, sock: Packet) {
        let Ok(peer) = sock.peer() else { return };
        if !self.allow_other && peer.uid != 0 && peer.uid != self.owner {
            refuse(
                &sock,
                libc::EACCES,
                &format!(
                    "uid {} may not use this mount (it admits only uid {} and root; mount it with allow_other to admit others)",
                    peer.uid, self.owner
                ),
            );
            return;
        }
        let n = self.per_uid.entry(peer.uid).or_default();
        if peer.uid != 0 && *n >= MAX_CONNS_PER_UID {
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                "holder connection refused: too many"
            );
            refuse(
                &sock,
                libc::EAGAIN,
                &format!(
                    "too many connections for uid {} (limit {MAX_CONNS_PER_UID}); close some",
                    peer.uid
                ),
            );
            return;
        }
        *n += 1;
        let groups = sock.peer_groups().unwrap_or_default().into();
        self.next_conn += 1;
        let id = self.next_conn;
        self.shared.hub().queues.insert(id, Queue::default());
        self.conns.insert(
            id,
            Conn {
                sock,
                peer,
                groups,
                busy: false,
                gone: false,
                blocked: false,
            },
        );
    }

    fn on_ready(&mut self, id: u64, revents: libc::c_short) {
        if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            self.close(id);
            return;
        }
        if revents & libc::POLLOUT != 0 {
            self.flush_or_close(id);
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.busy {
            if revents & libc::POLLHUP != 0 {
                c.gone = true;
            }
            return;
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLRDHUP) == 0 {
            return;
        }
        let hung_up = revents & (libc::POLLHUP | libc::POLLRDHUP) != 0;
        match c.sock.try_recv() {
            // Zero bytes and no descriptors is the end of the stream only if the peer hung
            // up; otherwise it is an empty packet, a malformed request like any other.
            Ok((bytes, fds)) if bytes.is_empty() && fds.is_empty() && hung_up => self.close(id),
            Ok((bytes, fds)) => {
                c.busy = true;
                let job = Job::Request {
                    conn: id,
                    peer: c.peer,
                    groups: c.groups.clone(),
                    bytes,
                    fds,
                };
                if self.jobs.send(job).is_err() {
                    // No workers (cannot happen while the poller runs): say so, go on.
                    c.busy = false;
                    tracing::error!("holder socket: no worker threads");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error().is_none() => {
                // Too large (its descriptors are closed already): say so, read the next.
                let reply = err("?", libc::EMSGSIZE, e);
                self.shared.hub().push(id, vec![reply]);
                self.flush_or_close(id);
            }
            Err(_) => self.close(id),
        }
    }

    /// Sends what connection `id` has queued, as far as its socket takes it.
    fn flush_or_close(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Flushed::Dead(e) = flush(&self.shared, id, c) {
            tracing::debug!(conn = id, "holder connection: send: {e}");
            self.close(id);
        }
    }

    /// Drops connection `id` (once its request in flight, if any, is answered): its queue,
    /// and its holder's pins (on a worker: releasing takes filesystem locks).
    fn close(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.busy {
            c.gone = true;
            return;
        }
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_uid.get_mut(&c.peer.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_uid.remove(&c.peer.uid);
            }
        }
        let holder = {
            let mut hub = self.shared.hub();
            let holder = hub.queues.remove(&id).and_then(|q| q.holder);
            if let Some(h) = holder {
                hub.holders.remove(&h);
            }
            holder
        };
        // A holder's socket is closed by the worker once its pins are released; any other's
        // closes here, as `c` goes.
        if let Some(h) = holder {
            let _ = self.jobs.send(Job::Gone(h, c.sock));
        }
    }
}

/// Sends connection `id`'s queued packets until the queue is empty or the socket full. The
/// hub is locked only to take a packet out (or put it back), never while sending.
fn flush(shared: &Shared, id: u64, c: &mut Conn) -> Flushed {
    loop {
        let next = {
            let mut hub = shared.hub();
            hub.queues.get_mut(&id).and_then(|q| {
                // A watcher that has read everything it was queued learns now what it
                // lost, not only with the next event (which may never come).
                if q.out.is_empty() {
                    if let Some(w) = q.watch.as_mut().filter(|w| w.lost > 0) {
                        let text = Event::Lost { count: w.lost }.encode();
                        w.lost = 0;
                        q.put(Outgoing {
                            text,
                            fds: Vec::new(),
                        });
                    }
                }
                let p = q.out.pop_front()?;
                q.bytes -= p.text.len();
                Some(p)
            })
        };
        let Some(p) = next else {
            c.blocked = false;
            return Flushed::Ok;
        };
        let raw: Vec<RawFd> = p.fds.iter().map(|f| f.as_raw_fd()).collect();
        match c.sock.try_send(&p.text, &raw) {
            Ok(true) => {}
            Ok(false) => {
                if let Some(q) = shared.hub().queues.get_mut(&id) {
                    q.bytes += p.text.len();
                    q.out.push_front(p);
                }
                c.blocked = true;
                return Flushed::Ok;
            }
            Err(e) => return Flushed::Dead(e),
        }
    }
}

/// Tells a refused connection why, then closes it. The socket is shut first and whatever it
/// sent is discarded: closing a socket with unread packets would reset the peer, which
/// would then never read the reason.
fn refuse(sock: &Packet, errno: i32, why: &str) {
    let _ = sock.try_send(&err("?", errno, why).text, &[]);
    sock.shutdown();
    for _ in 0..64 {
        match sock.try_recv() {
            Ok((b, f)) if !(b.is_empty() && f.is_empty()) => {}
            _ => break,
        }
    }
}

/// A worker: runs requests and releases, until the server goes.
fn work(fs: &Fs, shared: &Shared, jobs: Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Gone(h, sock) => {
                fs.holder_gone(h);
                drop(sock);
            }
            Job::Request {
                conn,
                peer,
                groups,
                bytes,
                fds,
            } => {
                let reply = answer(fs, shared, conn, peer, &groups, &bytes, fds);
                let packets = framed(reply);
                let mut hub = shared.hub();
                hub.push(conn, packets);
                hub.done.push(conn);
                drop(hub);
                shared.waker.wake();
            }
        }
    }
}

/// The reply to one request of connection `conn`.
fn answer(
    fs: &Fs,
    shared: &Shared,
    conn: u64,
    peer: PeerCred,
    groups: &[u32],
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Outgoing {
    match Request::parse(bytes) {
        Err(e) => err(e.id.as_deref().unwrap_or("?"), libc::EINVAL, e.message),
        Ok((id, Request::Watch)) => {
            // The recent events, then (from the notifier) each later one. Under the hub's
            // lock, the notifier cannot pass between the two.
            let mut hub = shared.hub();
            let recent = fs.leases().events();
            let after = recent.last().map_or(0, |e| e.seq);
            let packets = recent
                .iter()
                .map(|e| Outgoing {
                    text: crate::fs::status::wire_event(e).encode(),
                    fds: Vec::new(),
                })
                .collect();
            hub.push(conn, packets);
            if let Some(q) = hub.queues.get_mut(&conn) {
                q.watch = Some(Watch { after, lost: 0 });
            }
            reply(&id, Ok((Reply::Done, Vec::new())))
        }
        Ok((id, req)) => {
            // A connection becomes a holder with its first pin (or `hello`): status and
            // fence queries are not holders. One request in flight per connection, so no
            // other worker registers this one meanwhile.
            let mut holder = shared.hub().queues.get(&conn).and_then(|q| q.holder);
            if holder.is_none() && matches!(req, Request::Pin { .. } | Request::Hello) {
                let h = register(fs, peer);
                let mut hub = shared.hub();
                if let Some(q) = hub.queues.get_mut(&conn) {
                    q.holder = Some(h);
                }
                hub.holders.insert(h, conn);
                holder = Some(h);
            }
            if let (Some(h), Request::Peers { pin, total, peers }) = (holder, &req) {
                return peers_reported(fs, shared, h, *pin, *total, peers, &id);
            }
            reply(&id, respond(fs, holder, peer, groups, &req, fds))
        }
    }
}

/// A holder's `peers` report: recorded, and each change told to the watchers as
/// `event remote` (not kept in the lease events: a watcher gets those that come after it
/// started watching).
fn peers_reported(
    fs: &Fs,
    shared: &Shared,
    holder: HolderId,
    pin: PinId,
    total: u64,
    peers: &[crate::holder::protocol::RemotePeer],
    id: &str,
) -> Outgoing {
    use crate::holder::protocol::{RemoteEvent, Timestamp};
    let changes = match fs.report_peers(holder, pin, total, peers) {
        Ok(c) => c,
        Err(e) => {
            return err(
                id,
                e.errno(),
                format!("peers of pin {pin}: {e} (export it first)"),
            )
        }
    };
    if !changes.is_empty() {
        let time = Timestamp::of(std::time::SystemTime::now());
        let mut hub = shared.hub();
        for (peer, state) in changes {
            let text = Event::Remote(RemoteEvent {
                holder,
                pin,
                peer,
                state,
                time,
            })
            .encode();
            // Past every sequence number: remote events are not in the lease event log,
            // so every watcher gets them.
            hub.tell_watchers(u64::MAX, &text);
        }
        drop(hub);
        shared.waker.wake();
    }
    reply(id, Ok((Reply::Done, Vec::new())))
}

/// A reply as the packets that carry it (several for a long one, see [`frames`]); the
/// descriptors travel with the last.
fn framed(reply: Outgoing) -> Vec<Outgoing> {
    let id = reply.text.split(' ').next().unwrap_or("?");
    let mut texts = frames(id, &reply.text);
    let last = texts.pop().unwrap_or_default();
    let mut out: Vec<Outgoing> = texts
        .into_iter()
        .map(|text| Outgoing {
            text,
            fds: Vec::new(),
        })
        .collect();
    out.push(Outgoing {
        text: last,
        fds: reply.fds,
    });
    out
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Handles one message from a holder connection without descriptors and returns the reply's
/// text: the daemon's request path, for the protocol fuzz target and its regression tests.
pub fn reply_to(fs: &Fs, holder: Option<HolderId>, peer: PeerCred, bytes: &[u8]) -> String {
    match Request::parse(bytes) {
        Ok((id, req)) => reply(&id, respond(fs, holder, peer, &[], &req, Vec::new())).text,
        Err(e) => err(e.id.as_deref().unwrap_or("?"), libc::EINVAL, e.message).text,
    }
}

/// What a request gets: a reply and the descriptors that go with it, or an errno and why.
type Answer = Result<(Reply, Vec<Arc<OwnedFd>>), (i32, String)>;

/// The message that carries `answer` to request `id`.
fn reply(id: &str, answer: Answer) -> Outgoing {
    match answer {
        Ok((r, fds)) => Outgoing {
            text: r.encode(id),
            fds,
        },
        Err((errno, message)) => err(id, errno, message),
    }
}

fn err(id: &str, errno: i32, msg: impl std::fmt::Display) -> Outgoing {
    let failed = Reply::Failed {
        errno,
        message: msg.to_string(),
    };
    Outgoing {
        text: failed.encode(id),
        fds: Vec::new(),
    }
}

/// A connection becomes a holder with its first pin (or `hello`).
fn register(fs: &Fs, peer: PeerCred) -> HolderId {
    fs.add_holder(HolderInfo {
        pid: peer.pid,
        comm: comm_of(peer.pid),
        uid: peer.uid,
        gid: peer.gid,
    })
}

/// Runs one request (all but `watch`, which needs the hub: see [`answer`]).
fn respond(
    fs: &Fs,
    holder: Option<HolderId>,
    peer: PeerCred,
    groups: &[u32],
    req: &Request,
    mut fds: Vec<OwnedFd>,
) -> Answer {
    let caller = Caller {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid,
    };
    let root = peer.uid == 0;
    let only_root = |what: &str| -> Answer { Err((libc::EPERM, format!("only root may {what}"))) };
    let done = |r: Reply| -> Answer { Ok((r, Vec::new())) };
    let failed = |e: crate::error::FsError| -> Answer { Err((e.errno(), e.to_string())) };
    match req {
        &Request::Pin {
            offset,
            len,
            read_only,
            unbreakable,
        } => {
            let (Some(file), true) = (fds.pop(), fds.is_empty()) else {
                return Err((libc::EBADF, "pin needs exactly one file descriptor".into()));
            };
            let Some(holder) = holder else {
                return Err((libc::EIO, "no holder for this connection".into()));
            };
            pin(
                fs,
                holder,
                caller,
                &file,
                offset,
                len,
                read_only,
                unbreakable,
            )
        }
        &Request::Unpin { pin } => match holder
            .ok_or(crate::error::FsError::Lease(
                crate::lease::LeaseError::NoSuchPin,
            ))
            .and_then(|h| fs.unpin(h, pin))
        {
            Ok(()) => done(Reply::Done),
            Err(e) => failed(e),
        },
        Request::Raw if !root => only_root("map the raw image"),
        Request::Raw => match fs.image().raw_fd() {
            Ok(f) => Ok((Reply::Done, vec![Arc::new(f)])),
            Err(e) => Err((libc::EIO, e.to_string())),
        },
        &Request::Status { table } => {
            // Root sees everything; anyone else what crate::fs::status lets a viewer see.
            let viewer = (!root).then(|| crate::fs::status::Viewer {
                uid: peer.uid,
                gid: peer.gid,
                groups: groups.to_vec(),
            });
            done(Reply::Document(if table {
                crate::fs::status::table_for(fs, viewer.as_ref())
            } else {
                crate::fs::status::json_for(fs, viewer.as_ref())
            }))
        }
        Request::Events => done(Reply::Document(crate::fs::status::events_json(fs))),
        Request::Fence { .. } if !root => only_root("fence a holder"),
        &Request::Fence { holder: h } => match fs.fence(h) {
            Ok(n) => done(Reply::Revoked { count: n as u64 }),
            Err(e) => failed(e),
        },
        Request::Hello => done(Reply::Holder {
            id: holder.unwrap_or(0),
        }),
        Request::Remount { .. } if !root => only_root("remount"),
        Request::Remount { options } => {
            crate::daemon::remount::apply(fs, &fs.mount_options(), options)?;
            done(Reply::Done)
        }
        Request::Share { .. } if !root => only_root("share the mount"),
        &Request::Share {
            dev,
            ino,
            ref options,
        } => {
            if fs.image().identity().ok() != Some((dev, ino)) {
                return Err((libc::EXDEV, "this daemon serves another image".into()));
            }
            crate::daemon::remount::check_share(fs, &fs.mount_options(), options)?;
            done(Reply::Done)
        }
        Request::Check if !root => only_root("check the mount"),
        Request::Check => match fs.check_space() {
            Ok(mapped_blocks) => done(Reply::Checked { mapped_blocks }),
            Err(e) => Err((libc::EUCLEAN, e)),
        },
        &Request::Export { pin, rkey, addr } => {
            let Some(holder) = holder else {
                return Err((libc::ENOENT, "export: this connection holds no pins".into()));
            };
            match fs.export_pin(holder, pin, rkey, addr) {
                Ok(()) => done(Reply::Done),
                Err(e) => Err((e.errno(), format!("export pin {pin}: {e}"))),
            }
        }
        Request::Peers {
            pin,
            total,
            ref peers,
        } => {
            let Some(holder) = holder else {
                return Err((libc::ENOENT, "peers: this connection holds no pins".into()));
            };
            match fs.report_peers(holder, *pin, *total, peers) {
                Ok(_) => done(Reply::Done),
                Err(e) => Err((
                    e.errno(),
                    format!("peers of pin {pin}: {e} (export it first)"),
                )),
            }
        }
        Request::Watch => Err((
            libc::EOPNOTSUPP,
            "watch needs a connection to the daemon's socket".into(),
        )),
    }
}

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
) -> Answer {
    let Ok(st) = rustix::fs::fstat(file) else {
        return Err((libc::EBADF, "cannot stat the descriptor".into()));
    };
    let flags = rustix::fs::fcntl_getfl(file).map_or(-1, |f| f.bits() as libc::c_int);
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
    let grant = Grant {
        pin: grant.id,
        holder,
        extents: grant
            .extents
            .iter()
            .map(|e| PinExtent {
                file_offset: e.file_offset,
                image_offset: e.image_offset,
                len: e.len,
            })
            .collect(),
        windows: grant
            .windows
            .iter()
            .map(|w: &WindowPiece| WindowExtent {
                image_offset: w.image_offset,
                len: w.len,
                fd_offset: w.fd_offset,
            })
            .collect(),
    };
    Ok((Reply::Pinned(grant), fds))
}

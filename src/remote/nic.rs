//! The soft NIC: a holder's pinned ranges exported as memory regions that remote peers read,
//! write and compare-and-swap over TCP, straight into the pin's mapping, on the NIC's own
//! threads (the daemon is not in the data path). The way soft-RoCE is an RDMA NIC in
//! software, this is one for pins.
//!
//! **Regions.** [`Nic::export`] takes a [`Pin`] and gives back its key (64 random bits from
//! the kernel). The region is the pin's whole mapping, offset 0 at the pin's first block.
//! The NIC owns the pin from then on, so its mapping cannot go while an access runs:
//! [`Nic::withdraw`] invalidates the region (waiting for accesses in flight, under the
//! region's lock, [`Rank::RemoteRegion`]) and only then hands the pin back. After that, and
//! for a key nobody exported, every access is refused with `BAD_KEY` and touches nothing.
//!
//! **References.** A peer holds a reference on a region from its first access with the key
//! that succeeded (as a remote node holds an rkey once it uses it) until it acks a recall
//! of it or disconnects. [`Nic::start_recall`] sends `RECALL` to every peer holding one and
//! refuses new references (`BAD_KEY`: being recalled); a peer's `ACK` ends its reference, and
//! from then on the key is invalid for that peer. [`Nic::recall`] waits for the acks, within
//! a bound. A peer that never acks keeps its reference, and the region stays valid for it:
//! a real NIC's remote key cannot be taken back from a remote node that does not answer
//! either, which is what the mount's break policy is for (under `revoke`, the blocks the
//! peer still reaches are busy, in no file).
//!
//! **On demand** (as ODP NICs): [`Nic::fault`] takes the mapping out at once, recalling
//! nothing, and keeps the key; accesses then wait (up to 2 s, no lock held) until
//! [`Nic::remap`] maps the region onto the range pinned again, or fail with `BAD_KEY`.
//!
//! **Limits against hostile peers.** At most [`NicOptions::max_peers`] connections (the next
//! gets `BUSY` and is closed); a peer must say `HELLO` within [`NicOptions::hello_timeout`];
//! a frame over the protocol's maximum is `TOO_LARGE` and the connection closed; a peer whose
//! unread answers pass [`NicOptions::max_queued`] bytes is `SLOW` and closed. Each
//! connection has one thread, which alone reads and writes its socket (nonblocking, in
//! poll(2)); no lock is held across socket I/O: a recall puts its frame on the peer's
//! queue and wakes that thread.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, EventfdFlags, PollFd, PollFlags, Timespec};

use crate::holder::client::Pin;
use crate::remote::protocol::{self, ErrorCode, Frame, Split, MAX_DATA, MAX_FRAME, VERSION};
use crate::sync::{Condvar, Mutex, MutexGuard, Rank, RwLock};

/// The NIC's limits.
#[derive(Debug, Clone, Copy)]
pub struct NicOptions {
    /// Most peers connected at once.
    pub max_peers: usize,
    /// Time a new connection has to say `HELLO`.
    pub hello_timeout: Duration,
    /// Most bytes of answers waiting for a peer to read them.
    pub max_queued: usize,
}

impl Default for NicOptions {
    fn default() -> Self {
        NicOptions {
            max_peers: 64,
            hello_timeout: Duration::from_secs(5),
            max_queued: 4 << 20,
        }
    }
}

/// Where a peer's reference on a region stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerState {
    /// It uses the key.
    Connected,
    /// It was sent `RECALL` and has not acked.
    Recalling,
    /// It acked: the key is invalid for it.
    Acked,
}

impl PeerState {
    /// The name status shows.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Connected => "connected",
            PeerState::Recalling => "recalling",
            PeerState::Acked => "acked",
        }
    }
}

/// A peer's reference on a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRef {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Where its reference stands.
    pub state: PeerState,
}

/// What a recall came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallOutcome {
    /// Peers that acked (or disconnected).
    pub acked: usize,
    /// Peers that had not acked when the wait ended.
    pub unacked: Vec<SocketAddr>,
}

/// A failed NIC call.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// No region has this key.
    #[error("no exported region has key {0:016x}")]
    NoSuchKey(u64),
    /// The socket or a thread could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A pin's mapping, shared by the NIC's threads.
struct Mapping(Pin);

// SAFETY: through `&Mapping` the NIC's threads only read the mapping's address and length and
// copy bytes to and from it (or run atomic compare-and-swaps on it). That memory is shared
// with the daemon and other holders' processes anyway, which store into it concurrently: it
// is DMA memory, never a Rust value, and no reference into it outlives one copy.
unsafe impl Sync for Mapping {}

struct Region {
    len: u64,
    writable: bool,
    /// `None` once invalidated: nothing reaches the memory any more.
    mem: RwLock<Option<Mapping>>,
    /// Faulted (on-demand mode): the mapping is out while the holder finds the range's
    /// current blocks; accesses wait for it (a bounded time) instead of failing.
    faulted: AtomicBool,
}

/// How long an access to a faulted region waits for the holder to map the range again.
const FAULT_WAIT: Duration = Duration::from_secs(2);

struct Entry {
    region: Arc<Region>,
    recalling: bool,
}

/// A connection's queue of frames to send, filled by other threads (recalls), and the
/// descriptor that wakes its thread.
struct Outbox {
    frames: Mutex<VecDeque<Vec<u8>>>,
    wake: OwnedFd,
}

impl Outbox {
    fn push(&self, frame: Vec<u8>) {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(frame);
        self.poke();
    }

    fn poke(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

struct Conn {
    addr: SocketAddr,
    outbox: Arc<Outbox>,
}

#[derive(Default)]
struct State {
    regions: HashMap<u64, Entry>,
    conns: HashMap<u64, Conn>,
    refs: HashMap<(u64, u64), PeerState>,
    next_conn: u64,
    /// Bumped at every change of a reference (for [`Nic::generation`]).
    generation: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a reference ends or acks.
    changed: Condvar,
    stop: AtomicBool,
    opts: NicOptions,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Requests served (for benchmarks and tests).
    served: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A soft NIC serving exported regions on one TCP address.
pub struct Nic {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Nic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nic").field("addr", &self.addr).finish()
    }
}

/// 64 bits from the kernel's random source.
fn random_key() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        // SAFETY: getrandom(2) writes at most the length given into the buffer's rest.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), 8 - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        got += n as usize;
    }
    Ok(u64::from_ne_bytes(b))
}

impl Nic {
    /// A NIC listening on `addr` (port 0: one the kernel picks; see [`Nic::addr`]).
    pub fn bind(addr: SocketAddr, opts: NicOptions) -> Result<Nic, NicError> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            opts,
            threads: Mutex::new(Vec::new()),
            served: AtomicU64::new(0),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("pinfs-nic".into())
            .spawn(move || accept_loop(&s, listener))?;
        Ok(Nic {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The address the NIC listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Exports `pin` as a region; its key.
    pub fn export(&self, pin: Pin) -> Result<u64, NicError> {
        let region = Arc::new(Region {
            len: pin.len() as u64,
            writable: !pin.is_read_only(),
            mem: RwLock::ranked(Rank::RemoteRegion, Some(Mapping(pin))),
            faulted: AtomicBool::new(false),
        });
        let mut st = self.shared.state();
        let rkey = loop {
            let k = random_key()?;
            if k != 0 && !st.regions.contains_key(&k) {
                break k;
            }
        };
        st.regions.insert(
            rkey,
            Entry {
                region,
                recalling: false,
            },
        );
        st.generation += 1;
        Ok(rkey)
    }

    /// Invalidates region `rkey` (after the accesses in flight) and gives its pin back:
    /// from now on every access with the key is refused.
    pub fn withdraw(&self, rkey: u64) -> Result<Pin, NicError> {
        let entry = {
            let mut st = self.shared.state();
            let entry = st.regions.remove(&rkey).ok_or(NicError::NoSuchKey(rkey))?;
            st.refs.retain(|(k, _), _| *k != rkey);
            st.generation += 1;
            entry
        };
        self.shared.changed.notify_all();
        entry.region.faulted.store(false, Ordering::SeqCst);
        let mapping = entry
            .region
            .mem
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        mapping.map(|m| m.0).ok_or(NicError::NoSuchKey(rkey))
    }

    /// On-demand mode: invalidates region `rkey`'s mapping at once (after the accesses in
    /// flight) without recalling anything, and gives its pin back. The key and the peers'
    /// references stay: an access from now on waits (up to 2 s) for [`Nic::remap`], then
    /// reaches the new mapping, or gets `BAD_KEY` if none came (or [`Nic::withdraw`] ended
    /// the region meanwhile).
    pub fn fault(&self, rkey: u64) -> Result<Pin, NicError> {
        let region = self.region(rkey)?;
        region.faulted.store(true, Ordering::SeqCst);
        let mapping = region.mem.write().unwrap_or_else(|e| e.into_inner()).take();
        mapping.map(|m| m.0).ok_or(NicError::NoSuchKey(rkey))
    }

    /// On-demand mode: maps faulted region `rkey` onto `pin` (the same range pinned again,
    /// its current blocks); waiting accesses go on into it. A pin of another length or
    /// access mode is refused and handed back.
    pub fn remap(&self, rkey: u64, pin: Pin) -> Result<(), (NicError, Pin)> {
        let region = match self.region(rkey) {
            Ok(r) => r,
            Err(e) => return Err((e, pin)),
        };
        if pin.len() as u64 != region.len || pin.is_read_only() == region.writable {
            let e = std::io::Error::other(format!(
                "remap of {rkey:016x}: a pin of {} bytes for a region of {}",
                pin.len(),
                region.len
            ));
            return Err((NicError::Io(e), pin));
        }
        *region.mem.write().unwrap_or_else(|e| e.into_inner()) = Some(Mapping(pin));
        region.faulted.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn region(&self, rkey: u64) -> Result<Arc<Region>, NicError> {
        let st = self.shared.state();
        st.regions
            .get(&rkey)
            .map(|e| e.region.clone())
            .ok_or(NicError::NoSuchKey(rkey))
    }

    /// Sends `RECALL` for `rkey` to every peer holding a reference (new references are
    /// refused from now on); the peers recalled, by address.
    pub fn start_recall(&self, rkey: u64) -> Result<Vec<SocketAddr>, NicError> {
        let (frame, boxes) = {
            let mut st = self.shared.state();
            let entry = st.regions.get_mut(&rkey).ok_or(NicError::NoSuchKey(rkey))?;
            entry.recalling = true;
            let mut conns = Vec::new();
            for ((k, c), s) in st.refs.iter_mut() {
                if *k == rkey && *s == PeerState::Connected {
                    *s = PeerState::Recalling;
                    conns.push(*c);
                }
            }
            st.generation += 1;
            let boxes: Vec<(SocketAddr, Arc<Outbox>)> = conns
                .iter()
                .filter_map(|c| st.conns.get(c).map(|c| (c.addr, c.outbox.clone())))
                .collect();
            (Frame::Recall { rkey }.encode(), boxes)
        };
        for (_, b) in &boxes {
            b.push(frame.clone());
        }
        let mut peers: Vec<SocketAddr> = boxes.into_iter().map(|(a, _)| a).collect();
        peers.sort();
        Ok(peers)
    }

    /// The peers that were recalled from `rkey` and have not acked.
    pub fn unacked(&self, rkey: u64) -> Vec<SocketAddr> {
        let st = self.shared.state();
        unacked_of(&st, rkey)
    }

    /// Recalls `rkey` and waits up to `timeout` (`None`: until they all answer) for every
    /// peer to ack or disconnect.
    pub fn recall(&self, rkey: u64, timeout: Option<Duration>) -> Result<RecallOutcome, NicError> {
        let recalled = self.start_recall(rkey)?.len();
        let until = timeout.map(|t| Instant::now() + t);
        let mut st = self.shared.state();
        loop {
            let unacked = unacked_of(&st, rkey);
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if unacked.is_empty() || left.is_some_and(|l| l.is_zero()) {
                return Ok(RecallOutcome {
                    acked: recalled.saturating_sub(unacked.len()),
                    unacked,
                });
            }
            let wait = left.unwrap_or(Duration::from_secs(1));
            st = self
                .shared
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for every peer recalled from `rkey` to ack or go; whether they
    /// all did.
    pub fn wait_acked(&self, rkey: u64, timeout: Duration) -> bool {
        let st = self.shared.state();
        let (st, timed_out) = self
            .shared
            .changed
            .wait_timeout_while(st, timeout, |st| !unacked_of(st, rkey).is_empty());
        drop(st);
        !timed_out
    }

    /// The references on region `rkey`, sorted by address.
    pub fn peers(&self, rkey: u64) -> Vec<PeerRef> {
        let st = self.shared.state();
        let mut v: Vec<PeerRef> = st
            .refs
            .iter()
            .filter(|((k, _), _)| *k == rkey)
            .filter_map(|((_, c), s)| {
                st.conns.get(c).map(|c| PeerRef {
                    addr: c.addr,
                    state: *s,
                })
            })
            .collect();
        v.sort_by_key(|p| (p.addr, p.state));
        v
    }

    /// A number that changes whenever a reference starts, is recalled, acks or ends: a
    /// holder that reports peers to the daemon does so when it moved.
    pub fn generation(&self) -> u64 {
        self.shared.state().generation
    }

    /// Peers connected now.
    pub fn connections(&self) -> usize {
        self.shared.state().conns.len()
    }

    /// Requests served since the NIC started.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }
}

fn unacked_of(st: &State, rkey: u64) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = st
        .refs
        .iter()
        .filter(|((k, _), s)| *k == rkey && **s == PeerState::Recalling)
        .filter_map(|((_, c), _)| st.conns.get(c).map(|c| c.addr))
        .collect();
    v.sort();
    v
}

impl Drop for Nic {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let (entries, boxes): (Vec<Entry>, Vec<Arc<Outbox>>) = {
            let mut st = self.shared.state();
            st.refs.clear();
            (
                st.regions.drain().map(|(_, e)| e).collect(),
                st.conns.values().map(|c| c.outbox.clone()).collect(),
            )
        };
        // Invalidate every region before its pin unmaps, after the accesses in flight.
        for e in entries {
            e.region
                .mem
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        for b in boxes {
            b.poke();
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

fn poll_ms(fds: &mut [PollFd<'_>], ms: u64) -> std::io::Result<usize> {
    let t = Timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    };
    match poll(fds, Some(&t)) {
        Ok(n) => Ok(n),
        Err(rustix::io::Errno::INTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        let mut p = [PollFd::new(&listener, PollFlags::IN)];
        if poll_ms(&mut p, 100).unwrap_or(0) == 0 {
            continue;
        }
        let (stream, addr) = match listener.accept() {
            Ok(s) => s,
            Err(_) => continue,
        };
        // Finished connection threads are joined here, so they do not pile up.
        {
            let mut threads = shared.threads.lock().unwrap_or_else(|e| e.into_inner());
            let (done, live): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
                .into_iter()
                .partition(|t| t.is_finished());
            *threads = live;
            drop(threads);
            for t in done {
                let _ = t.join();
            }
        }
        let admitted = {
            let mut st = shared.state();
            if st.conns.len() >= shared.opts.max_peers {
                None
            } else {
                match rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK) {
                    Ok(wake) => {
                        st.next_conn += 1;
                        let id = st.next_conn;
                        let outbox = Arc::new(Outbox {
                            frames: Mutex::new(VecDeque::new()),
                            wake,
                        });
                        st.conns.insert(
                            id,
                            Conn {
                                addr,
                                outbox: outbox.clone(),
                            },
                        );
                        Some((id, outbox))
                    }
                    Err(_) => None,
                }
            }
        };
        let Some((id, outbox)) = admitted else {
            refuse_busy(stream, shared.opts.max_peers);
            continue;
        };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("pinfs-nic-peer".into())
            .spawn(move || {
                serve(&s, id, stream, &outbox);
                drop_conn(&s, id);
            });
        match spawned {
            Ok(t) => shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(t),
            Err(_) => drop_conn(shared, id),
        }
    }
}

/// Tells a peer over the limit why it is closed (best effort: it may not read).
fn refuse_busy(stream: TcpStream, max: usize) {
    let _ = stream.set_nonblocking(true);
    let f = Frame::Error {
        tag: 0,
        code: ErrorCode::Busy,
        message: format!("this NIC serves at most {max} peers; try again later"),
    };
    let _ = (&stream).write(&f.encode());
}

fn drop_conn(shared: &Shared, id: u64) {
    {
        let mut st = shared.state();
        st.conns.remove(&id);
        st.refs.retain(|(_, c), _| *c != id);
        st.generation += 1;
    }
    shared.changed.notify_all();
}

/// How long a connection that is being closed has to read its last answers.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One connection's buffers.
struct Wire {
    input: Vec<u8>,
    /// Consumed bytes at the front of `input`.
    start: usize,
    output: VecDeque<u8>,
    hello: bool,
    /// Close once the output is sent (or at once if it cannot be).
    closing: bool,
}

impl Wire {
    fn send(&mut self, f: &Frame) {
        self.output.extend(f.encode());
    }

    fn error(&mut self, tag: u64, code: ErrorCode, message: impl Into<String>) {
        self.send(&Frame::Error {
            tag,
            code,
            message: message.into(),
        });
    }
}

/// Serves one peer until it goes, breaks the protocol beyond repair, or the NIC stops.
fn serve(shared: &Shared, id: u64, mut stream: TcpStream, outbox: &Outbox) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut w = Wire {
        input: Vec::new(),
        start: 0,
        output: VecDeque::new(),
        hello: false,
        closing: false,
    };
    let hello_by = Instant::now() + shared.opts.hello_timeout;
    let mut close_by: Option<Instant> = None;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if !w.hello && Instant::now() >= hello_by {
            w.error(0, ErrorCode::NotHello, "no HELLO in time");
            let _ = flush(&mut stream, &mut w);
            close_gently(stream);
            return;
        }
        // A closing connection reads no more (polling for input it will not read would
        // spin) and gets a moment to take its last answers.
        if w.closing {
            let by = *close_by.get_or_insert_with(|| Instant::now() + CLOSE_GRACE);
            if Instant::now() >= by {
                return;
            }
        }
        let mut flags = if w.closing {
            PollFlags::empty()
        } else {
            PollFlags::IN
        };
        if !w.output.is_empty() {
            flags |= PollFlags::OUT;
        }
        let (readable, writable) = {
            let mut p = [
                PollFd::new(&stream, flags),
                PollFd::new(&outbox.wake, PollFlags::IN),
            ];
            if poll_ms(&mut p, 100).is_err() {
                return;
            }
            let r = p[0].revents();
            if p[1].revents().contains(PollFlags::IN) {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&outbox.wake, &mut b);
            }
            (
                r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR),
                r.contains(PollFlags::OUT),
            )
        };
        // Frames other threads queued (recalls).
        let queued: Vec<Vec<u8>> = outbox
            .frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for f in queued {
            w.output.extend(f);
        }
        if readable && !w.closing {
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => w.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
            handle_input(shared, id, &mut w);
        }
        if w.output.len() > shared.opts.max_queued {
            // Best effort: a peer that does not read will not see it.
            let mut note = Wire {
                input: Vec::new(),
                start: 0,
                output: VecDeque::new(),
                hello: true,
                closing: true,
            };
            note.error(
                0,
                ErrorCode::Slow,
                format!(
                    "more than {} bytes of answers unread: disconnected",
                    shared.opts.max_queued
                ),
            );
            let _ = flush(&mut stream, &mut note);
            return;
        }
        if (writable || !w.output.is_empty()) && flush(&mut stream, &mut w).is_err() {
            return;
        }
        if w.closing && w.output.is_empty() {
            close_gently(stream);
            return;
        }
    }
}

/// Ends a connection whose answers are all sent: a FIN, then what the peer still sends is
/// read and dropped for a moment, so that the close does not reset the connection (a reset
/// can make the peer's kernel drop the last error frame before it reads it).
fn close_gently(stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 16 * 1024];
    let mut dropped = 0usize;
    while Instant::now() < until && dropped < MAX_FRAME {
        let mut p = [PollFd::new(&stream, PollFlags::IN)];
        if poll_ms(&mut p, 50).unwrap_or(0) == 0 {
            continue;
        }
        match (&stream).read(&mut sink) {
            Ok(0) => return,
            Ok(n) => dropped += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Writes what the socket takes now.
fn flush(stream: &mut TcpStream, w: &mut Wire) -> std::io::Result<()> {
    while !w.output.is_empty() {
        let (a, _) = w.output.as_slices();
        match stream.write(a) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                w.output.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers every whole frame in the input.
fn handle_input(shared: &Shared, id: u64, w: &mut Wire) {
    while !w.closing {
        match protocol::split(&w.input[w.start..]) {
            Split::Incomplete => break,
            Split::Empty => {
                w.start += 4;
                w.error(0, ErrorCode::BadFrame, "empty frame (length 0)");
            }
            Split::TooLarge { len } => {
                w.error(
                    0,
                    ErrorCode::TooLarge,
                    format!("frame of {len} bytes (at most {MAX_FRAME}): disconnected"),
                );
                w.closing = true;
            }
            Split::Frame { len } => {
                let body_at = w.start + 4;
                let decoded = Frame::decode(&w.input[body_at..body_at + len]);
                w.start = body_at + len;
                shared.served.fetch_add(1, Ordering::Relaxed);
                match decoded {
                    Ok(f) => handle(shared, id, w, f),
                    Err(e) => w.error(0, e.code, e.message),
                }
            }
        }
    }
    if w.start > 0 && (w.start == w.input.len() || w.start > MAX_FRAME) {
        w.input.drain(..w.start);
        w.start = 0;
    }
}

/// Takes a reference on `rkey` for connection `id` (or checks the one it has): the region.
fn reach(shared: &Shared, id: u64, rkey: u64) -> Result<Arc<Region>, (ErrorCode, String)> {
    let mut st = shared.state();
    let Some(entry) = st.regions.get(&rkey) else {
        return Err((
            ErrorCode::BadKey,
            format!("no region has key {rkey:016x} (never exported, or invalidated)"),
        ));
    };
    let (region, recalling) = (entry.region.clone(), entry.recalling);
    match st.refs.get(&(rkey, id)) {
        Some(PeerState::Acked) => Err((
            ErrorCode::BadKey,
            "this peer acked the recall of this key: it is invalid for it".into(),
        )),
        Some(_) => Ok(region),
        None if recalling => Err((
            ErrorCode::BadKey,
            "the key is being recalled: no new references".into(),
        )),
        None => {
            st.refs.insert((rkey, id), PeerState::Connected);
            st.generation += 1;
            Ok(region)
        }
    }
}

/// The range `offset..offset + len` of a region of `size` bytes, if it is inside.
fn inside(offset: u64, len: u64, size: u64) -> Result<usize, (ErrorCode, String)> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset as usize),
        _ => Err((
            ErrorCode::OutOfRange,
            format!("bytes {offset}+{len} are outside the region of {size} bytes"),
        )),
    }
}

/// Runs `f` on the region's memory, unless it was invalidated. An access to a faulted
/// region waits for the remap (no lock held while it waits).
fn with_memory<T>(region: &Region, f: impl FnOnce(*mut u8) -> T) -> Result<T, (ErrorCode, String)> {
    let until = Instant::now() + FAULT_WAIT;
    let mut f = Some(f);
    loop {
        {
            let mem = region.mem.read().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = mem.as_ref() {
                if let Some(f) = f.take() {
                    return Ok(f(m.0.base()));
                }
            }
        }
        if !region.faulted.load(Ordering::SeqCst) {
            return Err((ErrorCode::BadKey, "the region was invalidated".to_string()));
        }
        if Instant::now() >= until {
            return Err((
                ErrorCode::BadKey,
                "the region faulted and its range did not come back".to_string(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn access(shared: &Shared, id: u64, f: Frame) -> Result<Frame, (u64, ErrorCode, String)> {
    let tag = match &f {
        Frame::Read { tag, .. } | Frame::Write { tag, .. } | Frame::Cas { tag, .. } => *tag,
        _ => 0,
    };
    let r = (|| match f {
        Frame::Read {
            tag,
            rkey,
            offset,
            len,
        } => {
            if len as usize > MAX_DATA {
                return Err((
                    ErrorCode::TooLarge,
                    format!("READ of {len} bytes (at most {MAX_DATA})"),
                ));
            }
            let region = reach(shared, id, rkey)?;
            let at = inside(offset, len as u64, region.len)?;
            let mut data = vec![0u8; len as usize];
            // SAFETY: `at + len` is inside the mapping (checked against its length), which
            // the read guard keeps mapped; the copy goes to a buffer of its own.
            with_memory(&region, |base| unsafe {
                std::ptr::copy_nonoverlapping(base.add(at), data.as_mut_ptr(), data.len())
            })?;
            Ok(Frame::ReadOk { tag, data })
        }
        Frame::Write {
            tag,
            rkey,
            offset,
            data,
        } => {
            if data.len() > MAX_DATA {
                return Err((
                    ErrorCode::TooLarge,
                    format!("WRITE of {} bytes (at most {MAX_DATA})", data.len()),
                ));
            }
            let region = reach(shared, id, rkey)?;
            if !region.writable {
                return Err((ErrorCode::ReadOnly, "the region is read-only".into()));
            }
            let at = inside(offset, data.len() as u64, region.len)?;
            // SAFETY: as for READ; the mapping is writable (checked above).
            with_memory(&region, |base| unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(at), data.len())
            })?;
            Ok(Frame::WriteOk { tag })
        }
        Frame::Cas {
            tag,
            rkey,
            offset,
            expect,
            new,
        } => {
            if offset % 8 != 0 {
                return Err((
                    ErrorCode::Misaligned,
                    format!("CAS at {offset}, which is not a multiple of 8"),
                ));
            }
            let region = reach(shared, id, rkey)?;
            if !region.writable {
                return Err((ErrorCode::ReadOnly, "the region is read-only".into()));
            }
            let at = inside(offset, 8, region.len)?;
            // SAFETY: the 8 bytes are inside the mapping, which the guard keeps mapped, and
            // aligned (the mapping starts on a page and `at` is a multiple of 8); all the
            // NIC's accesses to them are atomic ones.
            let old = with_memory(&region, |base| unsafe {
                let word = AtomicU64::from_ptr(base.add(at).cast::<u64>());
                match word.compare_exchange(expect, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                }
            })?;
            Ok(Frame::CasOk { tag, old })
        }
        _ => Err((ErrorCode::BadFrame, "not an access".into())),
    })();
    r.map_err(|(c, m)| (tag, c, m))
}

fn handle(shared: &Shared, id: u64, w: &mut Wire, f: Frame) {
    if !w.hello {
        match f {
            Frame::Hello { version } if version == VERSION => {
                w.hello = true;
                w.send(&Frame::HelloOk {
                    version: VERSION,
                    max_frame: MAX_FRAME as u32,
                });
            }
            Frame::Hello { version } => {
                w.error(
                    0,
                    ErrorCode::BadVersion,
                    format!("version {version} is not spoken here (this NIC speaks {VERSION})"),
                );
                w.closing = true;
            }
            other => {
                w.error(
                    0,
                    ErrorCode::NotHello,
                    format!("{} before HELLO: disconnected", other.name()),
                );
                w.closing = true;
            }
        }
        return;
    }
    match f {
        Frame::Read { .. } | Frame::Write { .. } | Frame::Cas { .. } => {
            match access(shared, id, f) {
                Ok(reply) => w.send(&reply),
                Err((tag, code, message)) => w.error(tag, code, message),
            }
        }
        Frame::Ack { rkey } => {
            let known = {
                let mut st = shared.state();
                match st.refs.get_mut(&(rkey, id)) {
                    Some(s) => {
                        *s = PeerState::Acked;
                        st.generation += 1;
                        true
                    }
                    None => false,
                }
            };
            if known {
                shared.changed.notify_all();
                w.send(&Frame::AckOk { rkey });
            } else {
                w.error(
                    0,
                    ErrorCode::BadKey,
                    format!("ACK of {rkey:016x}, which this peer holds no reference on"),
                );
            }
        }
        Frame::Hello { .. } => w.error(0, ErrorCode::BadFrame, "HELLO twice"),
        other => w.error(
            0,
            ErrorCode::BadFrame,
            format!("{} is not a peer's frame", other.name()),
        ),
    }
}

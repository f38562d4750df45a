//! The holder client: what a program uses to pin ranges of files on a pinfs mount, get direct
//! (DAX-like) access to the pinned blocks, and hear about lease breaks.
//!
//! ```no_run
//! use pinfs::holder::client::{Connection, PinOptions};
//! let file = std::fs::OpenOptions::new().read(true).write(true).open("/mnt/pinfs/buf")?;
//! let mut conn = Connection::for_file(&file)?;
//! let mut pin = conn.pin(&file, 0, 1 << 20, PinOptions::default())?;
//! pin.as_mut_slice()[..5].copy_from_slice(b"hello"); // no FUSE round trip
//! if let Some(ev) = conn.next_event(Some(std::time::Duration::from_secs(1)))? {
//!     if ev.name() == "break" { conn.unpin(&pin)?; }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::holder::protocol::{socket_path, Incoming, Packet, Reassembly, Reply, Request};
pub use crate::holder::protocol::{Event, EventKind, LeaseEvent, PinExtent};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon refused, with this errno.
    #[error("{message} (errno {errno})")]
    Refused {
        /// The errno.
        errno: i32,
        /// The daemon's explanation.
        message: String,
    },
    /// Talking to the daemon failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The daemon said something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The errno of a refusal, if it is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ClientError::Refused { errno, .. } => Some(*errno),
            ClientError::Io(e) => e.raw_os_error(),
            ClientError::Protocol(_) => None,
        }
    }
}

/// Options of a pin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinOptions {
    /// Read-only pin (needs only read access).
    pub read_only: bool,
    /// Breakers fail with `ETXTBSY` instead of breaking the lease.
    pub unbreakable: bool,
}

/// A granted pin with its blocks mapped into this process.
#[derive(Debug)]
pub struct Pin {
    /// The pin's id.
    pub id: u64,
    /// The holder id the daemon gave this connection.
    pub holder: u64,
    /// The pinned range piece by piece, in file order (whole blocks).
    pub extents: Vec<PinExtent>,
    map: *mut u8,
    len: usize,
    read_only: bool,
    windows: Vec<OwnedFd>,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it between threads
// is as safe as moving a Vec.
unsafe impl Send for Pin {}

impl Pin {
    /// The pinned bytes, from the first pinned block: direct access, no FUSE round trip.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `map` is a live mapping of `len` bytes owned by this value.
        unsafe { std::slice::from_raw_parts_mut(self.map, self.len) }
    }

    /// The descriptors of the pin's windows, in the order of its pieces (read-only ones for
    /// a read-only pin).
    pub fn window_descriptors(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.windows.iter().map(|f| f.as_fd())
    }

    /// Bytes mapped (whole blocks, from [`Pin::file_offset`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing mapped (never so for a granted pin).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A read-only pin (its mapping refuses stores).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The first mapped byte, for a soft NIC that reaches the memory while this value lives
    /// (see [`crate::remote::nic`]): the mapping is `len()` bytes, writable unless read-only.
    pub(crate) fn base(&self) -> *mut u8 {
        self.map
    }

    /// File offset of the first pinned byte (block-aligned).
    pub fn file_offset(&self) -> u64 {
        self.extents.first().map_or(0, |e| e.file_offset)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        // SAFETY: unmapping the region this value mapped.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

/// A connection to a mount's daemon: one holder.
#[derive(Debug)]
pub struct Connection {
    sock: Packet,
    next_id: u64,
    events: VecDeque<Event>,
    /// The pieces of a long reply received so far (events may come between them).
    pieces: Reassembly,
}

fn dev_of(st: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    st.dev()
}

impl Connection {
    /// Connects to the daemon of the mount that holds `path`.
    pub fn for_path(path: &Path) -> Result<Connection, ClientError> {
        match std::fs::metadata(path) {
            Ok(md) => Self::for_dev(dev_of(&md)),
            // A mount that was shut down answers every stat with EIO: its mount point is
            // still in the mount table, with the device number.
            Err(e) => match crate::holder::mounts::mount_dev_at(
                &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            ) {
                Some(dev) if e.raw_os_error() == Some(libc::EIO) => Self::for_dev(dev),
                _ => Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())).into()),
            },
        }
    }

    /// Connects to the daemon of the mount that holds `file`.
    pub fn for_file(file: &std::fs::File) -> Result<Connection, ClientError> {
        Self::for_dev(dev_of(&file.metadata()?))
    }

    /// Connects to the daemon of the mount whose device number is `dev`.
    pub(crate) fn for_dev(dev: u64) -> Result<Connection, ClientError> {
        let sock = Packet::connect(&socket_path(dev))?;
        Ok(Connection {
            sock,
            next_id: 1,
            events: VecDeque::new(),
            pieces: Reassembly::default(),
        })
    }

    fn request(
        &mut self,
        req: &Request,
        fds: &[i32],
    ) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) = self.sock.send(&req.encode(&id.to_string()), fds) {
            // A refused connection (not allowed, too many) is shut by the daemon at once:
            // the reason may be waiting to be read.
            if let Ok((b, _)) = self.sock.try_recv() {
                if let Ok((refuser, r)) = Reply::parse(&b) {
                    if let Some(refused) = refusal(&r).filter(|_| refuser == "?") {
                        return Err(refused);
                    }
                }
            }
            return Err(e.into());
        }
        loop {
            let (bytes, fds) = self.next_message()?;
            let (from, reply) = match Incoming::parse(&bytes).map_err(|e| protocol_error(&e))? {
                Incoming::Event(e) => {
                    self.events.push_back(e);
                    continue;
                }
                Incoming::Reply(from, reply) => (from, reply),
            };
            // `?` answers a request the daemon could not read, or refuses the connection
            // (too many of this user's, not allowed to use the mount): with one request in
            // flight, it is this one's answer.
            let failed = matches!(reply, Reply::Failed { .. });
            if from != id.to_string() && !(from == "?" && failed) {
                return Err(ClientError::Protocol(format!(
                    "reply to request {from} while waiting for {id}"
                )));
            }
            if let Some(refused) = refusal(&reply) {
                return Err(refused);
            }
            return Ok((reply, fds));
        }
    }

    /// The next whole message from the daemon and its descriptors: a long reply comes in
    /// pieces (see crate::holder::protocol), its descriptors with the last one.
    fn next_message(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), ClientError> {
        loop {
            let (packet, fds) = self
                .sock
                .recv()?
                .ok_or_else(|| ClientError::Protocol("the daemon closed the connection".into()))?;
            if let Some(bytes) = self.pieces.take(&packet).map_err(ClientError::Protocol)? {
                return Ok((bytes, fds));
            }
        }
    }

    /// Pins `len` bytes of `file` from `offset`, and maps them.
    pub fn pin(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        opts: PinOptions,
    ) -> Result<Pin, ClientError> {
        let req = Request::Pin {
            offset,
            len,
            read_only: opts.read_only,
            unbreakable: opts.unbreakable,
        };
        let (reply, fds) = self.request(&req, &[file.as_raw_fd()])?;
        let Reply::Pinned(grant) = reply else {
            return Err(unexpected("pin", &reply));
        };
        let windows = grant.windows;
        if windows.len() != fds.len() {
            return Err(ClientError::Protocol(format!(
                "bad pin reply: {} windows but {} descriptors",
                windows.len(),
                fds.len()
            )));
        }
        let total: u64 = windows.iter().map(|w| w.len).sum();
        // SAFETY: reserve address space for the whole pin, then map each window piece in
        // place with MAP_FIXED inside that reservation; every result is checked.
        let map = unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                total as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error().into());
            }
            let mut at = 0usize;
            for (w, fd) in windows.iter().zip(&fds) {
                let p = libc::mmap(
                    (base as *mut u8).add(at).cast(),
                    w.len as usize,
                    if opts.read_only {
                        libc::PROT_READ
                    } else {
                        libc::PROT_READ | libc::PROT_WRITE
                    },
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    w.fd_offset as libc::off_t,
                );
                if p == libc::MAP_FAILED {
                    let e = std::io::Error::last_os_error();
                    libc::munmap(base, total as usize);
                    return Err(e.into());
                }
                at += w.len as usize;
            }
            base as *mut u8
        };
        Ok(Pin {
            id: grant.pin,
            holder: grant.holder,
            extents: grant.extents,
            map,
            len: total as usize,
            read_only: opts.read_only,
            windows: fds,
        })
    }

    /// Ends the connection (its pins go, as when the holder exits) and waits up to `timeout`
    /// for the daemon to close its end: it does so only after it has let go of every pin
    /// of the connection, their windows detached. `Ok(true)`: the daemon's end is closed;
    /// `Ok(false)`: it was still open at the timeout. Mappings of the pins stay as they are.
    /// Any other copy of this connection's socket (a forked child's) keeps it open.
    pub fn close_and_wait(self, timeout: Duration) -> Result<bool, ClientError> {
        let until = Instant::now() + timeout;
        self.sock.shutdown_write();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.sock.wait_readable(Some(left))? {
                return Ok(false);
            }
            // Replies and events still on their way are dropped; the end reads as `None`.
            if self.sock.recv()?.is_none() {
                return Ok(true);
            }
        }
    }

    /// Gives a pin back.
    pub fn unpin(&mut self, pin: &Pin) -> Result<(), ClientError> {
        self.unpin_id(pin.id)
    }

    /// Gives a pin back by id.
    pub fn unpin_id(&mut self, id: u64) -> Result<(), ClientError> {
        self.done(&Request::Unpin { pin: id })
    }

    /// Sends `req`, whose answer is a plain `ok`.
    fn done(&mut self, req: &Request) -> Result<(), ClientError> {
        match self.request(req, &[])? {
            (Reply::Done, _) => Ok(()),
            (other, _) => Err(unexpected(req.verb(), &other)),
        }
    }

    /// Sends `req`, whose answer is a document.
    fn document(&mut self, req: &Request) -> Result<String, ClientError> {
        match self.request(req, &[])? {
            (Reply::Document(text), _) => Ok(text),
            (other, _) => Err(unexpected(req.verb(), &other)),
        }
    }

    /// The next notification, waiting up to `timeout` (`None`: forever).
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.sock.wait_readable(left)? {
                return Ok(None);
            }
            let (bytes, _) = self
                .sock
                .recv()?
                .ok_or_else(|| ClientError::Protocol("the daemon closed the connection".into()))?;
            if let Incoming::Event(e) = Incoming::parse(&bytes).map_err(|e| protocol_error(&e))? {
                return Ok(Some(e));
            }
        }
    }

    /// The mount's status as JSON (or the readable table).
    pub fn status(&mut self, table: bool) -> Result<String, ClientError> {
        self.document(&Request::Status { table })
    }

    /// The recent lease events as a JSON array.
    pub fn events(&mut self) -> Result<String, ClientError> {
        self.document(&Request::Events)
    }

    /// From now on, every lease event of the mount (not only this connection's) arrives
    /// through [`Connection::next_event`].
    pub fn watch(&mut self) -> Result<(), ClientError> {
        self.done(&Request::Watch)
    }

    /// Fences `holder` (root only); returns the number of leases revoked.
    pub fn fence(&mut self, holder: u64) -> Result<u64, ClientError> {
        match self.request(&Request::Fence { holder }, &[])? {
            (Reply::Revoked { count }, _) => Ok(count),
            (other, _) => Err(unexpected("fence", &other)),
        }
    }

    /// Checks the mount's block accounting now (root only): `Ok` with the blocks files map,
    /// or a refusal with `EUCLEAN` saying what is inconsistent.
    pub fn check(&mut self) -> Result<u64, ClientError> {
        match self.request(&Request::Check, &[])? {
            (Reply::Checked { mapped_blocks }, _) => Ok(mapped_blocks),
            (other, _) => Err(unexpected("check", &other)),
        }
    }

    /// Remounts with a mount option list (root only; see [`crate::daemon::remount`]): the daemon's
    /// side only, the kernel's flags are the caller's.
    pub fn remount(&mut self, options: &str) -> Result<(), ClientError> {
        self.done(&Request::Remount {
            options: options.to_string(),
        })
    }

    /// Asks whether the daemon serves the image file with device and inode numbers
    /// `(dev, ino)`, and whether a second mount of it with this option list may share the
    /// mounted filesystem (root only; see [`crate::daemon::share`]). Changes nothing.
    pub fn share(&mut self, (dev, ino): (u64, u64), options: &str) -> Result<(), ClientError> {
        self.done(&Request::Share {
            dev,
            ino,
            options: options.to_string(),
        })
    }

    /// The raw image file (root only).
    pub fn raw_image(&mut self) -> Result<OwnedFd, ClientError> {
        match self.request(&Request::Raw, &[])? {
            (Reply::Done, mut fds) => fds
                .pop()
                .ok_or_else(|| ClientError::Protocol("no descriptor with the raw image".into())),
            (other, _) => Err(unexpected("raw", &other)),
        }
    }

    /// Tells the daemon that pin `pin` is exported as region `rkey` through a soft NIC on
    /// `addr` (see [`crate::remote`]), so that `status` shows it.
    pub fn report_export(
        &mut self,
        pin: u64,
        rkey: u64,
        addr: std::net::SocketAddr,
    ) -> Result<(), ClientError> {
        self.done(&Request::Export { pin, rkey, addr })
    }

    /// Tells the daemon which remote peers hold references on pin `pin`'s export now (it
    /// keeps the first [`crate::holder::protocol::MAX_REMOTE_PEERS`] and the count).
    pub fn report_peers(
        &mut self,
        pin: u64,
        peers: &[crate::remote::PeerRef],
    ) -> Result<(), ClientError> {
        let shown = &peers[..peers.len().min(crate::holder::protocol::MAX_REMOTE_PEERS)];
        self.done(&Request::Peers {
            pin,
            total: peers.len() as u64,
            peers: shown
                .iter()
                .map(|p| crate::holder::protocol::RemotePeer {
                    addr: p.addr,
                    state: p.state,
                })
                .collect(),
        })
    }

    /// This connection's holder id.
    pub fn holder_id(&mut self) -> Result<u64, ClientError> {
        match self.request(&Request::Hello, &[])? {
            (Reply::Holder { id }, _) => Ok(id),
            (other, _) => Err(unexpected("hello", &other)),
        }
    }

    /// Sends raw bytes as one message and returns the raw reply, reassembled if it came in
    /// pieces (for protocol tests; an empty `bytes` sends an empty packet).
    pub fn raw_exchange(&mut self, bytes: &[u8]) -> Result<String, ClientError> {
        self.sock
            .send(std::str::from_utf8(bytes).unwrap_or("\u{fffd}"), &[])?;
        loop {
            let (b, _) = self.next_message()?;
            let text = String::from_utf8_lossy(&b).into_owned();
            if !text.starts_with("event ") {
                return Ok(text);
            }
        }
    }
}

/// The daemon's refusal in `r` (`ID err errno=E message`), if it is one.
fn refusal(r: &Reply) -> Option<ClientError> {
    match r {
        Reply::Failed { errno, message } => Some(ClientError::Refused {
            errno: *errno,
            message: message.clone(),
        }),
        _ => None,
    }
}

fn protocol_error(e: &crate::holder::protocol::ParseError) -> ClientError {
    ClientError::Protocol(format!("unreadable message from the daemon: {e}"))
}

fn unexpected(verb: &str, r: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply to {verb}: {r:?}"))
}

//! The holder protocol: messages between pin holders and the daemon, over a `SOCK_SEQPACKET`
//! Unix socket per mount (one message per packet, descriptors passed with `SCM_RIGHTS`).
//!
//! The socket is `RUN_DIR/<st_dev>.sock`, where `st_dev` is the device number of the mount
//! (as `stat` reports it for any file on it) and `RUN_DIR` is `/run/pinfs` (or
//! `$PINFS_RUN_DIR`). A message is one line of UTF-8 text: space-separated words, the
//! first being a request id chosen by the client (or `event` for notifications), then a verb
//! or `ok`/`err`, then `key=value` arguments.
//!
//! | request | descriptors sent | reply |
//! |---|---|---|
//! | `ID pin offset=N len=N [ro] [unbreakable]` | the file, open for reading (`ro`) or for reading and writing | `ID ok pin=P holder=H extents=FO:IO:LEN,... windows=IO:LEN:FDOFF,...` with one memfd descriptor per window piece, in file order (read-only for `ro`) |
//! | `ID unpin pin=P` | | `ID ok` |
//! | `ID raw` (root only) | | `ID ok` with the image file |
//! | `ID status [table]` | | `ID ok`, a newline, then one JSON object (or the readable table) |
//! | `ID events` | | `ID ok`, a newline, then a JSON array of recent events |
//! | `ID fence holder=H` (root only) | | `ID ok revoked=N` |
//! | `ID watch` | | `ID ok`; from then on every lease event of the mount, as notifications (and `event lost count=N` after a watcher fell behind) |
//! | `ID remount`, a newline, then a mount option list (root only) | | `ID ok`, or an error with nothing changed (see [`crate::daemon::remount`]) |
//! | `ID check` (root only) | | `ID ok mapped_blocks=N`, or `ID err errno=EUCLEAN <what is inconsistent>` |
//! | (any reply over [`PACKET_PAYLOAD`] bytes) | | `ID more` packets, then `ID end` (see below) |
//!
//! **Long replies.** A packet carries at most [`MAX_MESSAGE`] bytes, but a reply (a `status`
//! with thousands of pins, a pin of a fragmented range) may be longer. A reply whose text is
//! longer than [`PACKET_PAYLOAD`] bytes is cut, at character boundaries, into pieces of at
//! most [`PACKET_PAYLOAD`] bytes. Every piece but the last travels as `ID more` + newline +
//! piece; the last as `ID end` + newline + piece, with the reply's descriptors. The
//! concatenation of the pieces is the reply exactly as it would have been sent in one packet
//! (`ID ok ...` or `ID err ...`). The pieces of one reply are consecutive, but
//! notifications (`event ...`) may come between them. A short reply is one packet, as before.
//!
//! **What a caller sees.** Root sees everything. Another caller sees its own holders fully;
//! of other users' holders, `status` hides the pid and command (`null` in JSON, `-` in the
//! table), and the path of their leases' files unless the caller could reach the file itself
//! (search permission on every directory above it, with its uid, gid and supplementary groups):
//! then the path is `null` (the table says `ino:N`) and only the inode number is shown. Events
//! (`events`, `watch`, notifications) carry holder ids and inode numbers, never a pid, a
//! command or a path, so they are the same for every caller.
//!
//! **An empty packet** is a malformed request (`? err errno=22 empty message`), not the end
//! of the session; the end is the peer's hang-up, which the daemon reads from the socket's
//! state (`POLLHUP`/`POLLRDHUP`), not from a zero-length read. The daemon closes its end of
//! a holder's connection only once it has released every pin of it and detached their
//! windows: a holder that shuts down its sending side and reads end-of-stream knows that
//! from then on nothing it kept reaches a file.
//!
//! Errors are `ID err errno=E <message>` (a fenced holder's pins get `EPERM`: it must
//! reconnect). Notifications are
//! `event K holder=H pin=P ino=I offset=O len=L time=S.N [deadline_ms=D]`, with `K` one of
//! `granted`, `break`, `released`, `revoked`, `refused`, `fenced`, `holder_gone`
//! (`deadline_ms=never` when a break has no deadline).
//!
//! Parsing is total: any byte string either parses or is an error; nothing in a message can
//! make the daemon allocate more than the packet it came in.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, Shutdown, SocketAddrUnix, SocketFlags,
    SocketType,
};

/// Largest packet, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most bytes of a reply in one packet: a longer reply travels in pieces of this size (see
/// the module's documentation), so that its packets stay well below [`MAX_MESSAGE`] (room
/// for the `ID more` line) and below the socket's send buffer.
pub const PACKET_PAYLOAD: usize = 32 * 1024;
/// Most descriptors in one message.
pub const MAX_FDS: usize = 253;

/// The directory of the holder sockets.
pub fn run_dir() -> PathBuf {
    std::env::var_os("PINFS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/pinfs"))
}

/// The socket of the mount whose device number is `dev`.
pub fn socket_path(dev: u64) -> PathBuf {
    run_dir().join(format!("{dev}.sock"))
}

/// A parsed message: id (or `event`), verb, arguments and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request id, or "event".
    pub id: String,
    /// Verb (`pin`, `ok`, `err`, ...).
    pub verb: String,
    /// `key=value` arguments, in order.
    pub args: Vec<(String, String)>,
    /// Bare words after the verb.
    pub flags: Vec<String>,
    /// Everything after the first line (replies that carry a document).
    pub body: String,
}

impl Message {
    /// Parses one message.
    pub fn parse(bytes: &[u8]) -> Result<Message, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "message is not UTF-8".to_string())?;
        let (text, body) = text.split_once('\n').unwrap_or((text, ""));
        let mut words = text.split(' ').filter(|w| !w.is_empty());
        let id = words.next().ok_or("empty message")?.to_string();
        let verb = words.next().ok_or("message without a verb")?.to_string();
        if id.len() > 32 || verb.len() > 32 {
            return Err("id or verb too long".into());
        }
        let mut args = Vec::new();
        let mut flags = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) => args.push((k.to_string(), v.to_string())),
                None => flags.push(w.to_string()),
            }
        }
        Ok(Message {
            id,
            verb,
            args,
            flags,
            body: body.to_string(),
        })
    }

    /// The value of argument `key`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Argument `key` as a number.
    pub fn num(&self, key: &str) -> Result<u64, String> {
        let v = self.arg(key).ok_or_else(|| format!("missing {key}="))?;
        v.parse().map_err(|_| format!("{key}={v} is not a number"))
    }

    /// Does the message carry the bare word `flag`?
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// A `SOCK_SEQPACKET` Unix socket.
#[derive(Debug)]
pub struct Packet {
    fd: OwnedFd,
}

impl AsFd for Packet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The control buffer of a received packet: room for exactly one `SCM_RIGHTS` message of
/// [`MAX_FDS`] descriptors (`CMSG_SPACE`), aligned for `cmsghdr` so that rustix uses all of
/// it. A packet that carries more gets `MSG_CTRUNC` from the kernel.
#[repr(C, align(8))]
struct RecvControl([std::mem::MaybeUninit<u8>; RECV_CONTROL]);

/// `CMSG_SPACE(MAX_FDS * 4)`: `cmsg_space!` adds the alignment of `cmsghdr` for buffers that
/// are not aligned; [`RecvControl`] is, so that slack is taken off again.
const RECV_CONTROL: usize =
    rustix::cmsg_space!(ScmRights(MAX_FDS)) - std::mem::align_of::<libc::cmsghdr>();

/// `what: ERROR`, keeping the error's kind (as every socket error of this module reads).
fn with_context(e: impl Into<io::Error>, what: &str) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn sockaddr(path: &std::path::Path) -> io::Result<SocketAddrUnix> {
    let bytes = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("socket path has a NUL"))?;
    // The path and its NUL must fit in `sun_path` (rustix would also take a path that fills
    // it without the NUL, which not every peer reads back).
    if bytes.as_bytes_with_nul().len() > SUN_PATH_LEN {
        return Err(io::Error::other(format!(
            "socket path {} is too long",
            path.display()
        )));
    }
    SocketAddrUnix::new(bytes.as_c_str()).map_err(|e| with_context(e, "socket address"))
}

/// Bytes of `sockaddr_un::sun_path`.
const SUN_PATH_LEN: usize =
    std::mem::size_of::<libc::sockaddr_un>() - std::mem::offset_of!(libc::sockaddr_un, sun_path);

fn new_socket() -> io::Result<OwnedFd> {
    net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| with_context(e, "socket"))
}

/// The identity of the peer, from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process.
    pub pid: u32,
    /// User.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Packet {
    /// Listens on `path` (replacing a stale socket file), nonblocking, with the socket file's
    /// permissions `mode` (0600: only the daemon's user, and root; 0666: anyone). The mode is
    /// set on the socket before `bind`, so the file never exists with wider permissions; the
    /// server also checks each peer's credentials at accept.
    pub fn listen(path: &std::path::Path, mode: u32) -> io::Result<Packet> {
        let _ = std::fs::remove_file(path);
        let fd = new_socket()?;
        let addr = sockaddr(path)?;
        // On Linux the socket file is created with the socket inode's mode (less the umask);
        // where fchmod of a socket is not supported, the chmod below still runs.
        let _ = rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode));
        net::bind(&fd, &addr).map_err(|e| with_context(e, "bind"))?;
        net::listen(&fd, 128).map_err(|e| with_context(e, "listen"))?;
        rustix::fs::fcntl_getfl(&fd)
            .and_then(|fl| rustix::fs::fcntl_setfl(&fd, fl | rustix::fs::OFlags::NONBLOCK))
            .map_err(|e| with_context(e, "fcntl(O_NONBLOCK)"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(Packet { fd })
    }

    /// Connects to `path`.
    pub fn connect(path: &std::path::Path) -> io::Result<Packet> {
        let fd = new_socket()?;
        let addr = sockaddr(path)?;
        net::connect(&fd, &addr).map_err(|e| {
            let e = with_context(e, "connect");
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        })?;
        Ok(Packet { fd })
    }

    /// Accepts a connection (the new socket is nonblocking); on a nonblocking listener,
    /// `WouldBlock` when nobody is waiting.
    pub fn accept(&self) -> io::Result<Packet> {
        let fd = net::accept_with(&self.fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
            .map_err(|e| with_context(e, "accept"))?;
        Ok(Packet { fd })
    }

    /// The connected peer's credentials.
    pub fn peer(&self) -> io::Result<PeerCred> {
        // Not rustix's `socket_peercred`: its `UCred` holds the pid as a nonzero `Pid`, and
        // the kernel reports pid 0 for a peer in a pid namespace this process cannot see.
        // SAFETY: getsockopt(SO_PEERCRED) into a ucred of the size we pass; an all-zero
        // ucred is valid.
        unsafe {
            let mut cred: libc::ucred = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            if libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            ) < 0
            {
                return Err(with_context(io::Error::last_os_error(), "SO_PEERCRED"));
            }
            Ok(PeerCred {
                pid: cred.pid as u32,
                uid: cred.uid,
                gid: cred.gid,
            })
        }
    }

    /// Sends one message with descriptors, waiting for room if need be.
    pub fn send(&self, text: &str, fds: &[RawFd]) -> io::Result<()> {
        self.send_flags(text, fds, SendFlags::empty())
    }

    /// Sends one message with descriptors if the socket has room now: `Ok(false)` when it
    /// has not (nothing was sent; try again once it is writable).
    pub fn try_send(&self, text: &str, fds: &[RawFd]) -> io::Result<bool> {
        match self.send_flags(text, fds, SendFlags::DONTWAIT) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn send_flags(&self, text: &str, fds: &[RawFd], flags: SendFlags) -> io::Result<()> {
        if text.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(io::Error::other("message too large"));
        }
        // SAFETY: the caller's descriptors stay open for this call (a number that is not an
        // open descriptor makes sendmsg fail with EBADF, as it did when it took raw numbers).
        let borrowed: Vec<BorrowedFd<'_>> = fds
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        let mut space = vec![std::mem::MaybeUninit::uninit(); cmsg_space(fds.len())];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(io::Error::other(
                "descriptors do not fit the control buffer",
            ));
        }
        net::sendmsg(
            &self.fd,
            &[io::IoSlice::new(text.as_bytes())],
            &mut control,
            SendFlags::NOSIGNAL | flags,
        )
        .map_err(|e| with_context(e, "sendmsg"))?;
        Ok(())
    }

    /// Receives one message and its descriptors, waiting for one; `Ok(None)` at end of
    /// stream (or an empty packet, which a daemon never sends: for clients). A message that
    /// does not fit, or that carries too many descriptors, is an error (its descriptors are
    /// closed).
    pub fn recv(&self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let (bytes, fds) = self.recv_flags(RecvFlags::empty())?;
        if bytes.is_empty() && fds.is_empty() {
            return Ok(None);
        }
        Ok(Some((bytes, fds)))
    }

    /// Receives one packet if one is waiting (`WouldBlock` if not). An empty packet and the
    /// end of stream both read as no bytes and no descriptors: the caller tells them apart
    /// by the socket's hang-up state (see [`Packet::hung_up`]).
    pub fn try_recv(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        self.recv_flags(RecvFlags::DONTWAIT)
    }

    fn recv_flags(&self, flags: RecvFlags) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = RecvControl([std::mem::MaybeUninit::uninit(); RECV_CONTROL]);
        let mut control = RecvAncillaryBuffer::new(&mut space.0);
        let got = net::recvmsg(
            &self.fd,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | flags,
        )?;
        // Every descriptor received becomes an OwnedFd (those of other control messages, if
        // any, are closed as the buffer drops).
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if got
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        {
            // `fds` drops here: the descriptors of a refused message are closed.
            return Err(io::Error::other(format!(
                "message too large (at most {MAX_MESSAGE} bytes and {MAX_FDS} descriptors)"
            )));
        }
        buf.truncate(got.bytes);
        Ok((buf, fds))
    }

    /// Waits up to `timeout` for a message to arrive (`false`: none yet).
    pub fn wait_readable(&self, timeout: Option<std::time::Duration>) -> io::Result<bool> {
        let mut p = [PollFd::new(&self.fd, PollFlags::IN)];
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let n = poll_ms(&mut p, ms).map_err(|e| with_context(e, "poll"))?;
        Ok(n > 0)
    }

    /// Has the peer hung up (closed, or shut down its sending side)? Asked without waiting,
    /// from the socket's state: on a connected `SOCK_SEQPACKET` socket the kernel marks the
    /// survivor's receiving side shut when the peer goes, which is how an end of stream is
    /// told from an empty packet (both read as zero bytes).
    pub fn hung_up(&self) -> bool {
        let mut p = [PollFd::new(&self.fd, PollFlags::RDHUP)];
        let n = poll_ms(&mut p, 0).unwrap_or(0);
        n > 0 && p[0].revents().intersects(PollFlags::RDHUP | PollFlags::HUP)
    }

    /// The descriptor, for poll(2).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Shuts the connection down in both directions (wakes a reader blocked on it).
    pub fn shutdown(&self) {
        let _ = net::shutdown(&self.fd, Shutdown::Both);
    }

    /// Shuts the sending direction down: the peer reads the end of the connection, and
    /// this side can still receive what the peer sends until it closes its end.
    pub fn shutdown_write(&self) {
        let _ = net::shutdown(&self.fd, Shutdown::Write);
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Packet> {
        Ok(Packet {
            fd: self.fd.try_clone()?,
        })
    }
}

/// Room for one `SCM_RIGHTS` message of `n` descriptors (none when `n` is 0), as
/// [`SendAncillaryBuffer`] wants it.
fn cmsg_space(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rustix::cmsg_space!(ScmRights(n))
    }
}

/// `poll(2)` of `fds` for up to `ms` milliseconds (negative: no limit), as libc's `poll`
/// counts them: the number of descriptors with events, `EINTR` as an error.
pub(crate) fn poll_ms(fds: &mut [PollFd<'_>], ms: i32) -> rustix::io::Result<usize> {
    let timeout = (ms >= 0).then(|| Timespec {
        tv_sec: (ms / 1000).into(),
        tv_nsec: ((ms % 1000) * 1_000_000).into(),
    });
    poll(fds, timeout.as_ref())
}

/// The packets of reply `text` to request `id`: `text` itself when it fits in
/// [`PACKET_PAYLOAD`] bytes, otherwise `ID more` pieces and a last `ID end` piece (see the
/// module's documentation). Pieces end on character boundaries.
pub fn frames(id: &str, text: &str) -> Vec<String> {
    if text.len() <= PACKET_PAYLOAD {
        return vec![text.to_string()];
    }
    let mut out = Vec::with_capacity(text.len() / PACKET_PAYLOAD + 1);
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(PACKET_PAYLOAD);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        let verb = if tail.is_empty() { "end" } else { "more" };
        out.push(format!("{id} {verb}\n{piece}"));
        rest = tail;
    }
    out
}

/// Gathers the pieces of long replies (see [`frames`]) on the client side.
#[derive(Debug, Default)]
pub struct Reassembly {
    id: Option<String>,
    text: String,
}

/// A long reply may not grow past this many bytes on the client: far more than any status
/// of a real mount, and a bound against a daemon that never ends one.
pub const MAX_REPLY: usize = 1 << 30;

impl Reassembly {
    /// Takes one received packet: `Ok(None)` if it was a piece of a reply still incomplete,
    /// otherwise the whole message text (the packet itself when it was not a piece).
    pub fn take(&mut self, packet: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let head_end = packet.iter().position(|&b| b == b'\n');
        let head = &packet[..head_end.unwrap_or(packet.len())];
        let mut words = head.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let (id, verb) = (words.next(), words.next());
        let piece_verb = matches!(verb, Some(b"more") | Some(b"end")) && words.next().is_none();
        let (Some(id), true, Some(nl)) = (id, piece_verb, head_end) else {
            if self.id.is_some() && !head.starts_with(b"event ") {
                return Err("a reply arrived in the middle of another, long one".into());
            }
            return Ok(Some(packet.to_vec()));
        };
        let id = String::from_utf8_lossy(id).into_owned();
        match &self.id {
            Some(cur) if *cur != id => {
                return Err(format!(
                    "a piece of reply {id} in the middle of reply {cur}"
                ))
            }
            _ => {}
        }
        let piece = std::str::from_utf8(&packet[nl + 1..])
            .map_err(|_| format!("a piece of reply {id} is not UTF-8"))?;
        if self.text.len() + piece.len() > MAX_REPLY {
            return Err(format!("reply {id} is longer than {MAX_REPLY} bytes"));
        }
        self.text.push_str(piece);
        if verb == Some(b"end") {
            self.id = None;
            return Ok(Some(std::mem::take(&mut self.text).into_bytes()));
        }
        self.id = Some(id);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_total() {
        let m = Message::parse(b"7 pin offset=4096 len=10 ro\n").unwrap();
        assert_eq!((m.id.as_str(), m.verb.as_str()), ("7", "pin"));
        assert_eq!(m.num("offset"), Ok(4096));
        assert!(m.has("ro") && !m.has("unbreakable"));
        assert!(m.num("nope").is_err());
        for bad in [&b""[..], b"\xff\xfe", b"only", b"   ", &[b'x'; 100]] {
            assert!(Message::parse(bad).is_err(), "{bad:?}");
        }
        let m = Message::parse(b"1 pin offset=99999999999999999999999").unwrap();
        assert!(m.num("offset").is_err());
    }

    /// The kernel sets `MSG_CTRUNC` (and the packet is refused) exactly when a packet has
    /// more than [`MAX_FDS`] descriptors: the buffer must be `CMSG_SPACE` of that many.
    #[test]
    fn receive_control_buffer_holds_exactly_max_fds() {
        let header = std::mem::size_of::<libc::cmsghdr>();
        let data = (MAX_FDS * std::mem::size_of::<RawFd>()).next_multiple_of(8);
        assert_eq!(RECV_CONTROL, header + data);
        assert_eq!(SUN_PATH_LEN, 108);
    }

    /// A connected pair: (client, server side).
    fn pair(dir: &std::path::Path) -> (Packet, Packet) {
        let path = dir.join("s.sock");
        let l = Packet::listen(&path, 0o600).unwrap();
        let c = Packet::connect(&path).unwrap();
        loop {
            match l.accept() {
                Ok(s) => return (c, s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    l.wait_readable(None).map(|_| ()).unwrap()
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Sends `text` with every group of `groups` as an `SCM_RIGHTS` message of its own,
    /// past the checks of [`Packet::send`] (as a hostile client could).
    fn send_raw(p: &Packet, text: &[u8], groups: &[Vec<BorrowedFd<'_>>]) -> rustix::io::Result<()> {
        let room: usize = groups.iter().map(|g| cmsg_space(g.len())).sum();
        let mut space = vec![std::mem::MaybeUninit::uninit(); room];
        let mut control = SendAncillaryBuffer::new(&mut space);
        for g in groups {
            assert!(control.push(SendAncillaryMessage::ScmRights(g)));
        }
        net::sendmsg(
            p,
            &[io::IoSlice::new(text)],
            &mut control,
            SendFlags::empty(),
        )
        .map(|_| ())
    }

    /// Every copy of `write_end` that travelled is closed once the receiver refused the
    /// packet: with ours gone too, the pipe's read end sees the hang-up.
    fn assert_all_closed(read_end: &OwnedFd, write_end: OwnedFd) {
        drop(write_end);
        let mut p = [PollFd::new(read_end, PollFlags::IN)];
        assert_eq!(
            poll_ms(&mut p, 5000).unwrap(),
            1,
            "a received copy is still open"
        );
        assert!(p[0].revents().contains(PollFlags::HUP));
    }

    #[test]
    fn a_refused_packet_has_all_its_descriptors_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (c, s) = pair(dir.path());

        // Text longer than a message may be (MSG_TRUNC), with as many descriptors as a
        // packet can carry.
        let (rd, wr) = rustix::pipe::pipe().unwrap();
        send_raw(
            &c,
            &vec![b'x'; MAX_MESSAGE + 1],
            &[vec![wr.as_fd(); MAX_FDS]],
        )
        .unwrap();
        let e = s.recv().unwrap_err();
        assert!(e.to_string().starts_with("message too large"), "{e}");
        assert_all_closed(&rd, wr);

        // More than MAX_FDS (the kernel's SCM_MAX_FD) in one packet, even split over two
        // control messages, never arrives: the receive buffer need hold no more.
        let (_rd, wr) = rustix::pipe::pipe().unwrap();
        let split = [vec![wr.as_fd(); MAX_FDS], vec![wr.as_fd(); 1]];
        assert_eq!(
            send_raw(&c, b"1 hello", &split),
            Err(rustix::io::Errno::INVAL)
        );

        // The connection goes on, and a packet of exactly MAX_FDS passes.
        c.send("2 hello", &vec![wr.as_raw_fd(); MAX_FDS]).unwrap();
        let (msg, fds) = s.recv().unwrap().unwrap();
        assert_eq!((msg.as_slice(), fds.len()), (&b"2 hello"[..], MAX_FDS));
    }

    #[test]
    fn packets_carry_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = Packet::listen(&path, 0o600).unwrap();
        let c = Packet::connect(&path).unwrap();
        let s = loop {
            match l.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    l.wait_readable(None).map(|_| ()).unwrap()
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert_eq!(s.peer().unwrap().pid, std::process::id());
        let f = std::fs::File::open("/dev/null").unwrap();
        c.send("1 hello", &[f.as_raw_fd()]).unwrap();
        let (msg, fds) = s.recv().unwrap().unwrap();
        assert_eq!(msg, b"1 hello");
        assert_eq!(fds.len(), 1);
        // An empty packet is not the end of the stream: the hang-up state says which is which.
        c.send("", &[]).unwrap();
        let (msg, fds) = s.try_recv().unwrap();
        assert!(msg.is_empty() && fds.is_empty());
        assert!(!s.hung_up(), "an empty packet is no hang-up");
        drop(c);
        assert!(s.hung_up(), "the peer closed");
        assert!(s.recv().unwrap().is_none(), "end of stream");
    }

    #[test]
    fn long_replies_come_back_whole() {
        let body: String = (0..100_000)
            .map(|i| if i % 7 == 0 { '\u{e9}' } else { 'x' })
            .collect();
        let text = format!("5 ok\n{body}");
        let packets = frames("5", &text);
        assert!(packets.len() > 3);
        assert!(packets.iter().all(|p| p.len() <= PACKET_PAYLOAD + 16));
        let mut r = Reassembly::default();
        let mut whole = None;
        for (i, p) in packets.iter().enumerate() {
            if i == 1 {
                // A notification between pieces passes through.
                assert_eq!(
                    r.take(b"event granted holder=1").unwrap().unwrap(),
                    b"event granted holder=1"
                );
            }
            whole = r.take(p.as_bytes()).unwrap();
        }
        assert_eq!(whole.unwrap(), text.as_bytes());
        assert_eq!(frames("1", "1 ok"), vec!["1 ok".to_string()]);
        assert_eq!(r.take(b"1 ok").unwrap().unwrap(), b"1 ok");
    }
}

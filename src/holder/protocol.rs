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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

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

fn cvt(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

fn sockaddr(path: &std::path::Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is valid; we fill family and path below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("socket path has a NUL"))?;
    let bytes = bytes.as_bytes_with_nul();
    if bytes.len() > addr.sun_path.len() {
        return Err(io::Error::other(format!(
            "socket path {} is too long",
            path.display()
        )));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok((
        addr,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    ))
}

fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() with constant arguments; the result is checked.
    let fd = cvt(
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) },
        "socket",
    )?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
        let (addr, len) = sockaddr(path)?;
        // SAFETY: fchmod, bind and listen on our socket with a valid address of `len` bytes;
        // fcntl(F_SETFL) on a descriptor we own.
        unsafe {
            // On Linux the socket file is created with the socket inode's mode (less the
            // umask); where fchmod of a socket is not supported, the chmod below still runs.
            libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t);
            cvt(
                libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                ),
                "bind",
            )?;
            cvt(libc::listen(fd.as_raw_fd(), 128), "listen")?;
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            cvt(
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK),
                "fcntl(O_NONBLOCK)",
            )?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(Packet { fd })
    }

    /// Connects to `path`.
    pub fn connect(path: &std::path::Path) -> io::Result<Packet> {
        let fd = new_socket()?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: connect our socket to a valid address of `len` bytes.
        cvt(
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                )
            },
            "connect",
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Packet { fd })
    }

    /// Accepts a connection (the new socket is nonblocking); on a nonblocking listener,
    /// `WouldBlock` when nobody is waiting.
    pub fn accept(&self) -> io::Result<Packet> {
        // SAFETY: accept4 on our listening socket, no address wanted.
        let fd = cvt(
            unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            },
            "accept",
        )?;
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Packet {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The connected peer's credentials.
    pub fn peer(&self) -> io::Result<PeerCred> {
        // SAFETY: getsockopt(SO_PEERCRED) into a ucred of the size we pass.
        unsafe {
            let mut cred: libc::ucred = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            cvt(
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    (&mut cred as *mut libc::ucred).cast(),
                    &mut len,
                ),
                "SO_PEERCRED",
            )?;
            Ok(PeerCred {
                pid: cred.pid as u32,
                uid: cred.uid,
                gid: cred.gid,
            })
        }
    }

    /// Sends one message with descriptors, waiting for room if need be.
    pub fn send(&self, text: &str, fds: &[RawFd]) -> io::Result<()> {
        self.send_flags(text, fds, 0)
    }

    /// Sends one message with descriptors if the socket has room now: `Ok(false)` when it
    /// has not (nothing was sent; try again once it is writable).
    pub fn try_send(&self, text: &str, fds: &[RawFd]) -> io::Result<bool> {
        match self.send_flags(text, fds, libc::MSG_DONTWAIT) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn send_flags(&self, text: &str, fds: &[RawFd], flags: libc::c_int) -> io::Result<()> {
        if text.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(io::Error::other("message too large"));
        }
        let mut iov = libc::iovec {
            iov_base: text.as_ptr() as *mut libc::c_void,
            iov_len: text.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) } as usize;
        let mut cbuf = vec![0u8; if fds.is_empty() { 0 } else { space }];
        // SAFETY: msghdr is plain data; an all-zero value is valid and filled in below. The
        // control buffer holds exactly one SCM_RIGHTS header with `fds.len()` descriptors,
        // written through the CMSG macros within its `space` bytes.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if !fds.is_empty() {
                msg.msg_control = cbuf.as_mut_ptr().cast();
                msg.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr(),
                    libc::CMSG_DATA(c).cast::<RawFd>(),
                    fds.len(),
                );
            }
            cvt(
                libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | flags) as libc::c_int,
                "sendmsg",
            )?;
        }
        Ok(())
    }

    /// Receives one message and its descriptors, waiting for one; `Ok(None)` at end of
    /// stream (or an empty packet, which a daemon never sends: for clients). A message that
    /// does not fit, or that carries too many descriptors, is an error (its descriptors are
    /// closed).
    pub fn recv(&self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let (bytes, fds) = self.recv_flags(0)?;
        if bytes.is_empty() && fds.is_empty() {
            return Ok(None);
        }
        Ok(Some((bytes, fds)))
    }

    /// Receives one packet if one is waiting (`WouldBlock` if not). An empty packet and the
    /// end of stream both read as no bytes and no descriptors: the caller tells them apart
    /// by the socket's hang-up state (see [`Packet::hung_up`]).
    pub fn try_recv(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        self.recv_flags(libc::MSG_DONTWAIT)
    }

    fn recv_flags(&self, flags: libc::c_int) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: pure size computation.
        let space =
            unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
        let mut cbuf = vec![0u8; space];
        // SAFETY: recvmsg into our buffers of the sizes given; the control messages are then
        // walked with the CMSG macros, which stay inside `msg_controllen` bytes; every
        // descriptor received is wrapped in an OwnedFd exactly once.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let n = libc::recvmsg(
                self.fd.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | flags,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut fds = Vec::new();
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                // `fds` drops here: the descriptors of a refused message are closed.
                return Err(io::Error::other(format!(
                    "message too large (at most {MAX_MESSAGE} bytes and {MAX_FDS} descriptors)"
                )));
            }
            buf.truncate(n as usize);
            Ok((buf, fds))
        }
    }

    /// Waits up to `timeout` for a message to arrive (`false`: none yet).
    pub fn wait_readable(&self, timeout: Option<std::time::Duration>) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: poll on one pollfd on our stack.
        let n = cvt(unsafe { libc::poll(&mut p, 1, ms) }, "poll")?;
        Ok(n > 0)
    }

    /// Has the peer hung up (closed, or shut down its sending side)? Asked without waiting,
    /// from the socket's state: on a connected `SOCK_SEQPACKET` socket the kernel marks the
    /// survivor's receiving side shut when the peer goes, which is how an end of stream is
    /// told from an empty packet (both read as zero bytes).
    pub fn hung_up(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll on one pollfd on our stack, without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
    }

    /// The descriptor, for poll(2).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Shuts the connection down in both directions (wakes a reader blocked on it).
    pub fn shutdown(&self) {
        // SAFETY: shutdown on our socket.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Shuts the sending direction down: the peer reads the end of the connection, and
    /// this side can still receive what the peer sends until it closes its end.
    pub fn shutdown_write(&self) {
        // SAFETY: shutdown on our socket.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Packet> {
        Ok(Packet {
            fd: self.fd.try_clone()?,
        })
    }
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

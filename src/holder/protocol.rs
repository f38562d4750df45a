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
//! | `ID share-image dev=D ino=I`, a newline, then a mount option list (root only) | | `ID ok` when the daemon serves the image file with these device and inode numbers and a second mount of it with these options may share its filesystem; `errno=EXDEV` when it serves another image; otherwise an error saying which option differs (see [`crate::daemon::share`]). Changes nothing |
//! | `ID check` (root only) | | `ID ok mapped_blocks=N`, or `ID err errno=EUCLEAN <what is inconsistent>` |
//! | `ID hello` | | `ID ok holder=H` (the connection becomes a holder, as with its first pin) |
//! | `ID export pin=P rkey=K addr=A:PORT` | | `ID ok`: the holder says it exported its pin `P` as a remote memory region with key `K` (16 hex digits) through a soft NIC on `A:PORT` (see [`crate::remote`]); `ENOENT` for a pin that is not this holder's |
//! | `ID peers pin=P total=N peers=A:PORT/STATE,...` | | `ID ok`: the remote peers that hold references on pin `P`'s export now (`STATE`: `connected`, `recalling`, `acked`), replacing the last list; the daemon keeps the first [`MAX_REMOTE_PEERS`] and `total` |
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
//! table), and the path of their leases' files unless the caller could find the file itself
//! (read and search permission on every directory above it, with its uid, gid and
//! supplementary groups): otherwise the path is `null` (the table says `ino:N`) and only the
//! inode number is shown. Events
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
//! **Remote peers.** Watchers (`watch`) also get `event remote holder=H pin=P peer=A:PORT
//! state=S time=S.N` whenever a holder's `peers` report changes a peer's state on an
//! exported pin: `S` is `connected` (the peer took a reference), `recalling` (the holder sent
//! it a recall), `acked` (it acked the recall), or `gone` (it left the list: it disconnected,
//! or the holder withdrew the export). The daemon only passes on what the holder reports
//! (it is not in the data path); these events are not kept in `events` and a holder's own
//! connection does not get them.
//!
//! [`Request`], [`Reply`] and [`Event`] are these messages as types, each with `encode` (the
//! text above) and `parse`, which the daemon and every client share. Parsing is total: any
//! byte string either parses or is an error, never a panic; nothing in a message can make
//! the daemon allocate more than the packet it came in. Arguments a message does not use
//! are ignored; a key given twice (`offset=0 ... offset=99`) makes the message malformed.

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

/// Most remote peers per exported pin the daemon keeps (a holder may report more: `status`
/// then shows this many and the holder's total).
pub const MAX_REMOTE_PEERS: usize = 64;

/// A remote peer's reference on an exported pin, as a holder reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePeer {
    /// The peer's address.
    pub addr: std::net::SocketAddr,
    /// Where its reference stands.
    pub state: crate::remote::PeerState,
}

/// Longest request id (and verb), in bytes.
pub const MAX_ID: usize = 32;

/// A message that could not be read, and the id to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The request id, when the message got that far (`None`: answer `?`).
    pub id: Option<String>,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    fn anonymous(message: impl Into<String>) -> ParseError {
        ParseError {
            id: None,
            message: message.into(),
        }
    }

    fn of(id: &str, message: impl Into<String>) -> ParseError {
        ParseError {
            id: Some(id.to_string()),
            message: message.into(),
        }
    }
}

/// The first two words of a message and everything after the second: `(id, verb, rest)`.
/// Words are separated by runs of spaces and end at the first newline; an id or verb is
/// at most [`MAX_ID`] bytes.
fn head(bytes: &[u8]) -> Result<(&str, &str, &str), ParseError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ParseError::anonymous("message is not UTF-8"))?;
    let word = |t: &str| -> (usize, usize) {
        let start = t.len() - t.trim_start_matches(' ').len();
        let end = t[start..].find([' ', '\n']).map_or(t.len(), |e| start + e);
        (start, end)
    };
    let (s, e) = word(text);
    let id = &text[s..e];
    if id.is_empty() {
        return Err(ParseError::anonymous("empty message"));
    }
    let after_id = &text[e..];
    let (s, e) = word(after_id);
    let verb = &after_id[s..e];
    if verb.is_empty() {
        return Err(ParseError::anonymous("message without a verb"));
    }
    if id.len() > MAX_ID || verb.len() > MAX_ID {
        return Err(ParseError::anonymous("id or verb too long"));
    }
    Ok((id, verb, &after_id[e..]))
}

/// The `key=value` arguments and bare words of a message's first line (after the verb),
/// and the text after that line.
struct Words<'a> {
    args: Vec<(&'a str, &'a str)>,
    flags: Vec<&'a str>,
    body: &'a str,
}

impl<'a> Words<'a> {
    /// The words of `rest`; a key given twice is an error (which of its values counts would
    /// be a guess, and two readers could guess differently).
    fn of(rest: &'a str) -> Result<Words<'a>, String> {
        let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
        let mut args: Vec<(&str, &str)> = Vec::new();
        let mut flags = Vec::new();
        for w in line.split(' ').filter(|w| !w.is_empty()) {
            match w.split_once('=') {
                Some((k, _)) if args.iter().any(|(seen, _)| *seen == k) => {
                    return Err(format!("{k}= given twice"));
                }
                Some(kv) => args.push(kv),
                None => flags.push(w),
            }
        }
        Ok(Words { args, flags, body })
    }

    /// The value of `key`.
    fn arg(&self, key: &str) -> Option<&'a str> {
        self.args.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn num(&self, key: &str) -> Result<u64, String> {
        let v = self.arg(key).ok_or_else(|| format!("missing {key}="))?;
        v.parse().map_err(|_| format!("{key}={v} is not a number"))
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }
}

/// A request from a holder (see the module's table for each one's wire form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `pin offset=N len=N [ro] [unbreakable]`, with the file's descriptor.
    Pin {
        /// First byte of the range.
        offset: u64,
        /// Bytes.
        len: u64,
        /// A read-only pin (`ro`).
        read_only: bool,
        /// Breakers fail instead of breaking the lease (`unbreakable`).
        unbreakable: bool,
    },
    /// `unpin pin=P`.
    Unpin {
        /// The pin to give back.
        pin: u64,
    },
    /// `raw`: the image file (root only).
    Raw,
    /// `status [table]`.
    Status {
        /// The readable table instead of JSON.
        table: bool,
    },
    /// `events`: the recent events as a JSON array.
    Events,
    /// `fence holder=H` (root only).
    Fence {
        /// The holder to fence.
        holder: u64,
    },
    /// `watch`: every lease event of the mount from now on.
    Watch,
    /// `remount` and, after a newline, a mount option list (root only).
    Remount {
        /// The option list.
        options: String,
    },
    /// `share-image dev=D ino=I` and, after a newline, the option list of a second mount of the
    /// image file with those numbers (root only): may that mount share this filesystem?
    Share {
        /// The image file's device number.
        dev: u64,
        /// The image file's inode number.
        ino: u64,
        /// The option list.
        options: String,
    },
    /// `check`: the daemon's check of its block accounting (root only).
    Check,
    /// `hello`: makes the connection a holder and says its id.
    Hello,
    /// `export pin=P rkey=K addr=A:PORT`: the holder exported pin `P`.
    Export {
        /// The pin.
        pin: u64,
        /// The region's key.
        rkey: u64,
        /// The soft NIC's address.
        addr: std::net::SocketAddr,
    },
    /// `peers pin=P total=N peers=A:PORT/STATE,...`: the remote peers of pin `P`'s export.
    Peers {
        /// The pin.
        pin: u64,
        /// How many peers the holder has (the list may be shorter).
        total: u64,
        /// The peers.
        peers: Vec<RemotePeer>,
    },
}

impl Request {
    /// The verb of the request.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Pin { .. } => "pin",
            Request::Unpin { .. } => "unpin",
            Request::Raw => "raw",
            Request::Status { .. } => "status",
            Request::Events => "events",
            Request::Fence { .. } => "fence",
            Request::Watch => "watch",
            Request::Remount { .. } => "remount",
            Request::Share { .. } => "share-image",
            Request::Check => "check",
            Request::Hello => "hello",
            Request::Export { .. } => "export",
            Request::Peers { .. } => "peers",
        }
    }

    /// The request as sent with id `id` (a word of at most [`MAX_ID`] bytes).
    pub fn encode(&self, id: &str) -> String {
        let verb = self.verb();
        match self {
            Request::Pin {
                offset,
                len,
                read_only,
                unbreakable,
            } => format!(
                "{id} {verb} offset={offset} len={len}{}{}",
                if *read_only { " ro" } else { "" },
                if *unbreakable { " unbreakable" } else { "" }
            ),
            Request::Unpin { pin } => format!("{id} {verb} pin={pin}"),
            Request::Status { table: true } => format!("{id} {verb} table"),
            Request::Fence { holder } => format!("{id} {verb} holder={holder}"),
            Request::Export { pin, rkey, addr } => format!(
                "{id} {verb} pin={pin} rkey={} addr={addr}",
                crate::remote::protocol::rkey_text(*rkey)
            ),
            Request::Peers { pin, total, peers } => {
                let list: Vec<String> = peers
                    .iter()
                    .map(|p| format!("{}/{}", p.addr, p.state.name()))
                    .collect();
                format!(
                    "{id} {verb} pin={pin} total={total} peers={}",
                    list.join(",")
                )
            }
            Request::Remount { options } => format!("{id} {verb}\n{options}"),
            Request::Share { dev, ino, options } => {
                format!("{id} {verb} dev={dev} ino={ino}\n{options}")
            }
            Request::Raw
            | Request::Status { table: false }
            | Request::Events
            | Request::Watch
            | Request::Check
            | Request::Hello => format!("{id} {verb}"),
        }
    }

    /// Parses a request: its id and what it asks. Arguments and words a request does not
    /// use are ignored, and so is text after the first line except for `remount`'s and
    /// `share`'s; a key
    /// given twice is an error.
    pub fn parse(bytes: &[u8]) -> Result<(String, Request), ParseError> {
        let (id, verb, rest) = head(bytes)?;
        let bad = |m: String| ParseError::of(id, m);
        let w = Words::of(rest).map_err(bad)?;
        let req = match verb {
            "pin" => Request::Pin {
                offset: w.num("offset").map_err(bad)?,
                len: w.num("len").map_err(bad)?,
                read_only: w.has("ro"),
                unbreakable: w.has("unbreakable"),
            },
            "unpin" => Request::Unpin {
                pin: w.num("pin").map_err(bad)?,
            },
            "raw" => Request::Raw,
            "status" => Request::Status {
                table: w.has("table"),
            },
            "events" => Request::Events,
            "fence" => Request::Fence {
                holder: w.num("holder").map_err(bad)?,
            },
            "watch" => Request::Watch,
            "remount" => Request::Remount {
                options: w.body.to_string(),
            },
            "share-image" => Request::Share {
                dev: w.num("dev").map_err(bad)?,
                ino: w.num("ino").map_err(bad)?,
                options: w.body.to_string(),
            },
            "check" => Request::Check,
            "hello" => Request::Hello,
            "export" => Request::Export {
                pin: w.num("pin").map_err(bad)?,
                rkey: crate::remote::protocol::parse_rkey(
                    w.arg("rkey").ok_or_else(|| bad("missing rkey=".into()))?,
                )
                .map_err(bad)?,
                addr: {
                    let a = w.arg("addr").ok_or_else(|| bad("missing addr=".into()))?;
                    a.parse()
                        .map_err(|_| bad(format!("addr={a} is not an address and port")))?
                },
            },
            "peers" => Request::Peers {
                pin: w.num("pin").map_err(bad)?,
                total: w.num("total").map_err(bad)?,
                peers: remote_peers(w.arg("peers").unwrap_or("")).map_err(bad)?,
            },
            other => return Err(bad(format!("unknown request '{other}'"))),
        };
        Ok((id.to_string(), req))
    }
}

/// Where a piece of a pin lives (as JSON: `file_offset`, `image_offset`, `len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinExtent {
    /// Byte offset in the file.
    pub file_offset: u64,
    /// Byte offset in the image.
    pub image_offset: u64,
    /// Bytes.
    pub len: u64,
}

/// A window piece of a pin: `len` bytes of the image from `image_offset`, at `fd_offset` in
/// the memfd descriptor that comes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowExtent {
    /// Byte offset in the image.
    pub image_offset: u64,
    /// Bytes.
    pub len: u64,
    /// Byte offset in the window's descriptor.
    pub fd_offset: u64,
}

/// What a granted pin's reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The pin's id.
    pub pin: u64,
    /// The holder the connection is.
    pub holder: u64,
    /// The pinned range piece by piece, in file order.
    pub extents: Vec<PinExtent>,
    /// The window pieces, in file order: one descriptor each comes with the reply.
    pub windows: Vec<WindowExtent>,
}

/// A reply of the daemon (pieces of a long reply are put together first, see
/// [`Reassembly`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `ID ok`: done (`unpin`, `raw` with its descriptor, `watch`, `remount`, `share-image`).
    Done,
    /// `ID ok pin=P holder=H extents=FO:IO:LEN,... windows=IO:LEN:FDOFF,...`.
    Pinned(Grant),
    /// `ID ok`, a newline, then a document (`status`, `events`).
    Document(String),
    /// `ID ok revoked=N` (`fence`).
    Revoked {
        /// Leases revoked.
        count: u64,
    },
    /// `ID ok mapped_blocks=N` (`check`).
    Checked {
        /// Blocks that files map.
        mapped_blocks: u64,
    },
    /// `ID ok holder=H` (`hello`).
    Holder {
        /// The connection's holder id.
        id: u64,
    },
    /// `ID err errno=E message`: refused.
    Failed {
        /// The errno.
        errno: i32,
        /// Why, for people (the rest of the message, newlines and all).
        message: String,
    },
}

/// `A:PORT/STATE,...` as remote peers.
fn remote_peers(list: &str) -> Result<Vec<RemotePeer>, String> {
    use crate::remote::PeerState;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|p| {
            let (addr, state) = p
                .rsplit_once('/')
                .ok_or_else(|| format!("peers: '{p}' is not ADDRESS:PORT/STATE"))?;
            let addr = addr
                .parse()
                .map_err(|_| format!("peers: '{addr}' is not an address and port"))?;
            let state = match state {
                "connected" => PeerState::Connected,
                "recalling" => PeerState::Recalling,
                "acked" => PeerState::Acked,
                other => return Err(format!("peers: unknown state '{other}'")),
            };
            Ok(RemotePeer { addr, state })
        })
        .collect()
}

fn triples(list: &str, key: &str) -> Result<Vec<[u64; 3]>, String> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|t| {
            let mut it = t.split(':').map(str::parse::<u64>);
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok([a, b, c]),
                _ => Err(format!("{key}: '{t}' is not three numbers")),
            }
        })
        .collect()
}

impl Reply {
    /// The reply as sent to request `id` (before any cutting into pieces, see [`frames`]).
    pub fn encode(&self, id: &str) -> String {
        match self {
            Reply::Done => format!("{id} ok"),
            Reply::Pinned(g) => {
                let extents: Vec<String> = g
                    .extents
                    .iter()
                    .map(|e| format!("{}:{}:{}", e.file_offset, e.image_offset, e.len))
                    .collect();
                let windows: Vec<String> = g
                    .windows
                    .iter()
                    .map(|w| format!("{}:{}:{}", w.image_offset, w.len, w.fd_offset))
                    .collect();
                format!(
                    "{id} ok pin={} holder={} extents={} windows={}",
                    g.pin,
                    g.holder,
                    extents.join(","),
                    windows.join(",")
                )
            }
            Reply::Document(text) => format!("{id} ok\n{text}"),
            Reply::Revoked { count } => format!("{id} ok revoked={count}"),
            Reply::Checked { mapped_blocks } => format!("{id} ok mapped_blocks={mapped_blocks}"),
            Reply::Holder { id: h } => format!("{id} ok holder={h}"),
            Reply::Failed { errno, message } => format!("{id} err errno={errno} {message}"),
        }
    }

    /// Parses a whole reply: the id it answers and what it says.
    pub fn parse(bytes: &[u8]) -> Result<(String, Reply), ParseError> {
        let (id, verb, rest) = head(bytes)?;
        let bad = |m: String| ParseError::of(id, m);
        let reply = match verb {
            "err" => {
                let e = rest
                    .strip_prefix(" errno=")
                    .ok_or_else(|| bad("an error without errno=".into()))?;
                let (num, message) = e.split_once(' ').unwrap_or((e, ""));
                Reply::Failed {
                    errno: num
                        .parse()
                        .map_err(|_| bad(format!("errno={num} is not a number")))?,
                    message: message.to_string(),
                }
            }
            "ok" => {
                if let Some((line, doc)) = rest.split_once('\n') {
                    if !line.trim_start_matches(' ').is_empty() {
                        return Err(bad("a document reply with arguments".into()));
                    }
                    return Ok((id.to_string(), Reply::Document(doc.to_string())));
                }
                let w = Words::of(rest).map_err(bad)?;
                if w.arg("pin").is_some() {
                    let extents =
                        triples(w.arg("extents").unwrap_or(""), "extents").map_err(bad)?;
                    let windows =
                        triples(w.arg("windows").unwrap_or(""), "windows").map_err(bad)?;
                    Reply::Pinned(Grant {
                        pin: w.num("pin").map_err(bad)?,
                        holder: w.num("holder").map_err(bad)?,
                        extents: extents
                            .into_iter()
                            .map(|[f, i, l]| PinExtent {
                                file_offset: f,
                                image_offset: i,
                                len: l,
                            })
                            .collect(),
                        windows: windows
                            .into_iter()
                            .map(|[i, l, o]| WindowExtent {
                                image_offset: i,
                                len: l,
                                fd_offset: o,
                            })
                            .collect(),
                    })
                } else if w.arg("revoked").is_some() {
                    Reply::Revoked {
                        count: w.num("revoked").map_err(bad)?,
                    }
                } else if w.arg("mapped_blocks").is_some() {
                    Reply::Checked {
                        mapped_blocks: w.num("mapped_blocks").map_err(bad)?,
                    }
                } else if w.arg("holder").is_some() {
                    Reply::Holder {
                        id: w.num("holder").map_err(bad)?,
                    }
                } else {
                    Reply::Done
                }
            }
            other => return Err(bad(format!("unknown reply '{other}'"))),
        };
        Ok((id.to_string(), reply))
    }
}

/// What happened to a lease, as events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `granted`: a pin was granted.
    Granted,
    /// `break`: a breaker wants the range back; the holder must release within
    /// `deadline_ms` (`None`: no deadline, `deadline_ms=never`).
    Break {
        /// Milliseconds left when the event was made.
        deadline_ms: Option<u64>,
    },
    /// `released`: the holder gave the pin back.
    Released,
    /// `revoked`: the lease was taken away.
    Revoked,
    /// `refused`: a breaker failed at the deadline; the lease stays.
    Refused,
    /// `fenced`: the holder was fenced.
    Fenced,
    /// `holder_gone`: the holder went away; its pins were released.
    HolderGone,
}

impl EventKind {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Granted => "granted",
            EventKind::Break { .. } => "break",
            EventKind::Released => "released",
            EventKind::Revoked => "revoked",
            EventKind::Refused => "refused",
            EventKind::Fenced => "fenced",
            EventKind::HolderGone => "holder_gone",
        }
    }
}

/// A time as events carry it: seconds and nanoseconds since the epoch (`S.NNNNNNNNN` on the
/// wire, and as a JSON number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds.
    pub secs: u64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

impl Timestamp {
    /// The time `at` (the epoch for a time before it).
    pub fn of(at: std::time::SystemTime) -> Timestamp {
        let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    fn parse(s: &str) -> Option<Timestamp> {
        let (secs, nanos) = s.split_once('.')?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(secs) || nanos.len() != 9 || !digits(nanos) {
            return None;
        }
        Some(Timestamp {
            secs: secs.parse().ok()?,
            nanos: nanos.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

impl serde::Serialize for Timestamp {
    /// A JSON number with all nine decimals (a float would lose the last ones).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::value::RawValue::from_string(self.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

/// A lease event of the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEvent {
    /// What happened.
    pub kind: EventKind,
    /// The holder concerned.
    pub holder: u64,
    /// The pin, if the event concerns one.
    pub pin: Option<u64>,
    /// The file's inode.
    pub ino: u64,
    /// Byte range start.
    pub offset: u64,
    /// Byte range length.
    pub len: u64,
    /// When it happened.
    pub time: Timestamp,
}

/// Where a remote peer's reference went, as `event remote` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteState {
    /// `connected`: the peer holds a reference.
    Connected,
    /// `recalling`: the holder sent it a recall, not yet acked.
    Recalling,
    /// `acked`: it acked the recall; the key is invalid for it.
    Acked,
    /// `gone`: it left the holder's list (disconnected, or the export was withdrawn).
    Gone,
}

impl RemoteState {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            RemoteState::Connected => "connected",
            RemoteState::Recalling => "recalling",
            RemoteState::Acked => "acked",
            RemoteState::Gone => "gone",
        }
    }

    /// A reference's state as a holder reports it.
    pub fn of(state: crate::remote::PeerState) -> RemoteState {
        match state {
            crate::remote::PeerState::Connected => RemoteState::Connected,
            crate::remote::PeerState::Recalling => RemoteState::Recalling,
            crate::remote::PeerState::Acked => RemoteState::Acked,
        }
    }
}

/// A change of a remote peer's reference on an exported pin, as its holder reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEvent {
    /// The holder that exported the pin.
    pub holder: u64,
    /// The exported pin.
    pub pin: u64,
    /// The peer's address.
    pub peer: std::net::SocketAddr,
    /// Where its reference went.
    pub state: RemoteState,
    /// When the daemon got the report.
    pub time: Timestamp,
}

/// A notification from the daemon (a message whose id is `event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `event K holder=H pin=P ino=I offset=O len=L time=S.N [deadline_ms=D]`.
    Lease(LeaseEvent),
    /// `event remote holder=H pin=P peer=A:PORT state=S time=S.N` (watchers only).
    Remote(RemoteEvent),
    /// `event lost count=N`: a watcher fell behind and missed this many events.
    Lost {
        /// Events missed.
        count: u64,
    },
}

impl Event {
    /// The event's name: its kind's, or `lost`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Lease(e) => e.kind.name(),
            Event::Remote(_) => "remote",
            Event::Lost { .. } => "lost",
        }
    }

    /// The lease event, unless this is a `lost`.
    pub fn lease(&self) -> Option<&LeaseEvent> {
        match self {
            Event::Lease(e) => Some(e),
            Event::Remote(_) | Event::Lost { .. } => None,
        }
    }

    /// The event as sent.
    pub fn encode(&self) -> String {
        let e = match self {
            Event::Lost { count } => return format!("event lost count={count}"),
            Event::Remote(r) => {
                return format!(
                    "event remote holder={} pin={} peer={} state={} time={}",
                    r.holder,
                    r.pin,
                    r.peer,
                    r.state.name(),
                    r.time
                )
            }
            Event::Lease(e) => e,
        };
        let mut t = format!(
            "event {} holder={} pin={} ino={} offset={} len={} time={}",
            e.kind.name(),
            e.holder,
            e.pin.map_or("-".into(), |p| p.to_string()),
            e.ino,
            e.offset,
            e.len,
            e.time
        );
        if let EventKind::Break { deadline_ms } = e.kind {
            t.push_str(&format!(
                " deadline_ms={}",
                deadline_ms.map_or("never".into(), |d| d.to_string())
            ));
        }
        t
    }

    /// Parses a notification.
    pub fn parse(bytes: &[u8]) -> Result<Event, ParseError> {
        let (id, verb, rest) = head(bytes)?;
        let bad = |m: String| ParseError::of(id, m);
        if id != "event" {
            return Err(bad(format!("'{id}' is not an event")));
        }
        let w = Words::of(rest).map_err(bad)?;
        let kind = match verb {
            "lost" => {
                return Ok(Event::Lost {
                    count: w.num("count").map_err(bad)?,
                })
            }
            "remote" => {
                let time = w.arg("time").ok_or_else(|| bad("missing time=".into()))?;
                let peer = w.arg("peer").ok_or_else(|| bad("missing peer=".into()))?;
                return Ok(Event::Remote(RemoteEvent {
                    holder: w.num("holder").map_err(bad)?,
                    pin: w.num("pin").map_err(bad)?,
                    peer: peer
                        .parse()
                        .map_err(|_| bad(format!("peer={peer} is not ADDR:PORT")))?,
                    state: match w.arg("state") {
                        Some("connected") => RemoteState::Connected,
                        Some("recalling") => RemoteState::Recalling,
                        Some("acked") => RemoteState::Acked,
                        Some("gone") => RemoteState::Gone,
                        other => {
                            return Err(bad(format!(
                                "state={} is not connected, recalling, acked or gone",
                                other.unwrap_or("(missing)")
                            )))
                        }
                    },
                    time: Timestamp::parse(time)
                        .ok_or_else(|| bad(format!("time={time} is not S.NNNNNNNNN")))?,
                }));
            }
            "granted" => EventKind::Granted,
            "break" => EventKind::Break {
                deadline_ms: match w.arg("deadline_ms") {
                    Some("never") => None,
                    _ => Some(w.num("deadline_ms").map_err(bad)?),
                },
            },
            "released" => EventKind::Released,
            "revoked" => EventKind::Revoked,
            "refused" => EventKind::Refused,
            "fenced" => EventKind::Fenced,
            "holder_gone" => EventKind::HolderGone,
            other => return Err(bad(format!("unknown event '{other}'"))),
        };
        let time = w.arg("time").ok_or_else(|| bad("missing time=".into()))?;
        Ok(Event::Lease(LeaseEvent {
            kind,
            holder: w.num("holder").map_err(bad)?,
            pin: match w.arg("pin") {
                Some("-") => None,
                _ => Some(w.num("pin").map_err(bad)?),
            },
            ino: w.num("ino").map_err(bad)?,
            offset: w.num("offset").map_err(bad)?,
            len: w.num("len").map_err(bad)?,
            time: Timestamp::parse(time)
                .ok_or_else(|| bad(format!("time={time} is not S.NNNNNNNNN")))?,
        }))
    }
}

/// An event as JSON (`status --events`, `status --follow`, `pinfs pin`): `time`, `event`,
/// `holder`, `pin` (`null`: none), `ino`, `offset`, `len`, and for a break `deadline_ms`
/// (`null`: no deadline); a `lost` is `{"event":"lost","count":N}`; a `remote` is
/// `{"time":T,"event":"remote","holder":H,"pin":P,"peer":"A:PORT","state":S}`.
#[derive(serde::Serialize)]
struct EventJson {
    time: Timestamp,
    event: &'static str,
    holder: u64,
    pin: Option<u64>,
    ino: u64,
    offset: u64,
    len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_ms: Option<Option<u64>>,
}

#[derive(serde::Serialize)]
struct RemoteJson {
    time: Timestamp,
    event: &'static str,
    holder: u64,
    pin: u64,
    peer: String,
    state: &'static str,
}

#[derive(serde::Serialize)]
struct LostJson {
    event: &'static str,
    count: u64,
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Event::Lost { count } => LostJson {
                event: "lost",
                count: *count,
            }
            .serialize(s),
            Event::Remote(r) => RemoteJson {
                time: r.time,
                event: "remote",
                holder: r.holder,
                pin: r.pin,
                peer: r.peer.to_string(),
                state: r.state.name(),
            }
            .serialize(s),
            Event::Lease(e) => EventJson {
                time: e.time,
                event: e.kind.name(),
                holder: e.holder,
                pin: e.pin,
                ino: e.ino,
                offset: e.offset,
                len: e.len,
                deadline_ms: match e.kind {
                    EventKind::Break { deadline_ms } => Some(deadline_ms),
                    _ => None,
                },
            }
            .serialize(s),
        }
    }
}

/// A whole message from the daemon: a reply or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The reply to the request with this id.
    Reply(String, Reply),
    /// A notification.
    Event(Event),
}

impl Incoming {
    /// Parses a whole message from the daemon (a message whose first word is `event` is a
    /// notification).
    pub fn parse(bytes: &[u8]) -> Result<Incoming, ParseError> {
        if bytes.starts_with(b"event ") {
            return Event::parse(bytes).map(Incoming::Event);
        }
        Reply::parse(bytes).map(|(id, r)| Incoming::Reply(id, r))
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

    /// The connected peer's supplementary groups, as they were when it connected
    /// (`SO_PEERGROUPS`, Linux 4.13): unlike `/proc/PID/status`, they cannot change with what
    /// the process does later, or with another process taking its pid.
    pub fn peer_groups(&self) -> io::Result<Vec<u32>> {
        // From the kernel's asm/socket.h (the libc crate does not export it for Linux):
        // 59, but on sparc, which numbers its socket options its own way.
        #[cfg(not(target_arch = "sparc64"))]
        const SO_PEERGROUPS: libc::c_int = 59;
        #[cfg(target_arch = "sparc64")]
        const SO_PEERGROUPS: libc::c_int = 0x3d;
        let mut groups: Vec<libc::gid_t> = vec![0; 32];
        loop {
            let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
            // SAFETY: getsockopt(SO_PEERGROUPS) into a buffer of the length we pass; the
            // kernel writes at most `len` bytes, and says how many.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let n = len as usize / std::mem::size_of::<libc::gid_t>();
            if rc == 0 {
                groups.truncate(n);
                return Ok(groups);
            }
            let e = io::Error::last_os_error();
            // ERANGE: the buffer was short, and `len` says what it takes (at most
            // NGROUPS_MAX groups).
            if e.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > 65536 {
                return Err(with_context(e, "SO_PEERGROUPS"));
            }
            groups.resize(n, 0);
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
    use proptest::prelude::*;

    #[test]
    fn requests_parse_as_before() {
        let (id, r) = Request::parse(b"7 pin offset=4096 len=10 ro\n").unwrap();
        assert_eq!(id, "7");
        assert_eq!(
            r,
            Request::Pin {
                offset: 4096,
                len: 10,
                read_only: true,
                unbreakable: false
            }
        );
        // Runs of spaces separate words; unknown arguments and words are ignored.
        let (_, r) = Request::parse(b"  x   status  table extra=1").unwrap();
        assert_eq!(r, Request::Status { table: true });
        let (_, r) = Request::parse(b"1 remount\nlease_break_time=2").unwrap();
        assert_eq!(
            r,
            Request::Remount {
                options: "lease_break_time=2".into()
            }
        );
        // What cannot be read as a message is answered `?`; a bad request by its id.
        for (bad, id, why) in [
            (&b""[..], None, "empty message"),
            (b"\xff\xfe", None, "message is not UTF-8"),
            (b"only", None, "message without a verb"),
            (b"   ", None, "empty message"),
            (b"1\npin offset=1 len=1", None, "message without a verb"),
            (&[b'x'; 40][..], None, "message without a verb"),
            (
                b"1 pin offset=99999999999999999999999 len=1",
                Some("1"),
                "offset=99999999999999999999999 is not a number",
            ),
            (b"2 pin len=1", Some("2"), "missing offset="),
            (b"3 frobnicate", Some("3"), "unknown request 'frobnicate'"),
            (
                b"4 fence holder=abc",
                Some("4"),
                "holder=abc is not a number",
            ),
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert_eq!((e.id.as_deref(), e.message.as_str()), (id, why), "{bad:?}");
        }
        let long = format!("1 {}", "v".repeat(MAX_ID + 1));
        assert_eq!(
            Request::parse(long.as_bytes()).unwrap_err().message,
            "id or verb too long"
        );
    }

    #[test]
    fn replies_and_events_read_as_the_daemon_writes_them() {
        let (id, r) = Reply::parse(
            b"3 ok pin=5 holder=2 extents=0:8192:4096,4096:16384:4096 windows=8192:8192:0",
        )
        .unwrap();
        assert_eq!(id, "3");
        let Reply::Pinned(g) = r else {
            panic!("not a grant: {r:?}")
        };
        assert_eq!((g.pin, g.holder, g.extents.len()), (5, 2, 2));
        assert_eq!(
            g.windows,
            [WindowExtent {
                image_offset: 8192,
                len: 8192,
                fd_offset: 0
            }]
        );
        assert_eq!(
            Reply::parse(b"? err errno=11 too many connections for uid 7 (limit 64); close some")
                .unwrap(),
            (
                "?".to_string(),
                Reply::Failed {
                    errno: 11,
                    message: "too many connections for uid 7 (limit 64); close some".into()
                }
            )
        );
        assert!(Reply::parse(b"3 ok pin=5 holder=2 extents=1:2 windows=").is_err());
        assert!(Reply::parse(b"3 more\nxx").is_err());
        let e = Event::parse(
            b"event break holder=1 pin=- ino=9 offset=0 len=4096 time=12.000000034 deadline_ms=never",
        )
        .unwrap();
        let l = e.lease().unwrap();
        assert_eq!(l.kind, EventKind::Break { deadline_ms: None });
        assert_eq!((l.pin, l.time.secs, l.time.nanos), (None, 12, 34));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"time":12.000000034,"event":"break","holder":1,"pin":null,"ino":9,"offset":0,"len":4096,"deadline_ms":null}"#
        );
        let granted = Event::Lease(LeaseEvent {
            kind: EventKind::Granted,
            ..l.clone()
        });
        let json: serde_json::Value = serde_json::to_value(&granted).unwrap();
        assert!(json.get("deadline_ms").is_none(), "{json}");
        assert_eq!(
            serde_json::to_string(&Event::Lost { count: 3 }).unwrap(),
            r#"{"event":"lost","count":3}"#
        );
        assert!(
            Event::parse(b"event granted holder=1 pin=2 ino=3 offset=4 len=5 time=1.5").is_err()
        );
        assert!(Event::parse(b"7 granted").is_err());
        let r = Event::parse(
            b"event remote holder=2 pin=5 peer=127.0.0.1:4000 state=acked time=3.000000001",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"time":3.000000001,"event":"remote","holder":2,"pin":5,"peer":"127.0.0.1:4000","state":"acked"}"#
        );
        assert!(r.lease().is_none());
        assert!(Event::parse(
            b"event remote holder=2 pin=5 peer=127.0.0.1:4000 state=lost time=3.000000001"
        )
        .is_err());
        assert!(
            Event::parse(b"event remote holder=2 pin=5 peer=nowhere state=acked time=3.0").is_err()
        );
    }

    fn id() -> impl Strategy<Value = String> {
        "[0-9A-Za-z?_-]{1,32}".prop_filter("the id of notifications", |s| s != "event")
    }

    /// Addresses as a holder reports them (no IPv6 flow label, which they do not print).
    fn sock_addr() -> impl Strategy<Value = std::net::SocketAddr> {
        (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(i, p)| std::net::SocketAddr::new(i, p))
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
                |(offset, len, read_only, unbreakable)| Request::Pin {
                    offset,
                    len,
                    read_only,
                    unbreakable
                }
            ),
            any::<u64>().prop_map(|pin| Request::Unpin { pin }),
            Just(Request::Raw),
            any::<bool>().prop_map(|table| Request::Status { table }),
            Just(Request::Events),
            any::<u64>().prop_map(|holder| Request::Fence { holder }),
            Just(Request::Watch),
            any::<String>().prop_map(|options| Request::Remount { options }),
            (any::<u64>(), any::<u64>(), any::<String>())
                .prop_map(|(dev, ino, options)| Request::Share { dev, ino, options }),
            Just(Request::Check),
            Just(Request::Hello),
            (any::<u64>(), any::<u64>(), sock_addr())
                .prop_map(|(pin, rkey, addr)| Request::Export { pin, rkey, addr }),
            (
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec((sock_addr(), 0..3u8), 0..5)
            )
                .prop_map(|(pin, total, peers)| Request::Peers {
                    pin,
                    total,
                    peers: peers
                        .into_iter()
                        .map(|(addr, s)| RemotePeer {
                            addr,
                            state: match s {
                                0 => crate::remote::PeerState::Connected,
                                1 => crate::remote::PeerState::Recalling,
                                _ => crate::remote::PeerState::Acked,
                            },
                        })
                        .collect(),
                }),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let extents = prop::collection::vec(any::<[u64; 3]>(), 0..5);
        prop_oneof![
            Just(Reply::Done),
            (any::<u64>(), any::<u64>(), extents.clone(), extents).prop_map(
                |(pin, holder, e, w)| Reply::Pinned(Grant {
                    pin,
                    holder,
                    extents: e
                        .into_iter()
                        .map(|[a, b, c]| PinExtent {
                            file_offset: a,
                            image_offset: b,
                            len: c
                        })
                        .collect(),
                    windows: w
                        .into_iter()
                        .map(|[a, b, c]| WindowExtent {
                            image_offset: a,
                            len: b,
                            fd_offset: c
                        })
                        .collect(),
                })
            ),
            any::<String>().prop_map(Reply::Document),
            any::<u64>().prop_map(|count| Reply::Revoked { count }),
            any::<u64>().prop_map(|mapped_blocks| Reply::Checked { mapped_blocks }),
            any::<u64>().prop_map(|id| Reply::Holder { id }),
            (any::<i32>(), any::<String>())
                .prop_map(|(errno, message)| Reply::Failed { errno, message }),
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        let kind = prop_oneof![
            Just(EventKind::Granted),
            any::<Option<u64>>().prop_map(|deadline_ms| EventKind::Break { deadline_ms }),
            Just(EventKind::Released),
            Just(EventKind::Revoked),
            Just(EventKind::Refused),
            Just(EventKind::Fenced),
            Just(EventKind::HolderGone),
        ];
        prop_oneof![
            any::<u64>().prop_map(|count| Event::Lost { count }),
            (
                kind,
                any::<[u64; 4]>(),
                any::<Option<u64>>(),
                any::<u64>(),
                0..1_000_000_000u32
            )
                .prop_map(|(kind, [holder, ino, offset, len], pin, secs, nanos)| {
                    Event::Lease(LeaseEvent {
                        kind,
                        holder,
                        pin,
                        ino,
                        offset,
                        len,
                        time: Timestamp { secs, nanos },
                    })
                }),
            (any::<[u64; 3]>(), sock_addr(), 0..4u8, 0..1_000_000_000u32).prop_map(
                |([holder, pin, secs], peer, s, nanos)| {
                    Event::Remote(RemoteEvent {
                        holder,
                        pin,
                        peer,
                        state: match s {
                            0 => RemoteState::Connected,
                            1 => RemoteState::Recalling,
                            2 => RemoteState::Acked,
                            _ => RemoteState::Gone,
                        },
                        time: Timestamp { secs, nanos },
                    })
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(id in id(), r in request()) {
            prop_assert_eq!(Request::parse(r.encode(&id).as_bytes()), Ok((id, r)));
        }

        #[test]
        fn replies_round_trip(id in id(), r in reply()) {
            let text = r.encode(&id);
            prop_assert_eq!(Reply::parse(text.as_bytes()), Ok((id.clone(), r.clone())));
            // A reply cut into pieces comes back whole, and then parses the same.
            let mut whole = None;
            let mut re = Reassembly::default();
            for p in frames(&id, &text) {
                whole = re.take(p.as_bytes()).unwrap();
            }
            prop_assert_eq!(Incoming::parse(&whole.unwrap()), Ok(Incoming::Reply(id, r)));
        }

        #[test]
        fn events_round_trip(e in event()) {
            prop_assert_eq!(Incoming::parse(e.encode().as_bytes()), Ok(Incoming::Event(e.clone())));
            let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            prop_assert_eq!(json["event"].as_str(), Some(e.name()));
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::parse(&bytes);
            let _ = Reply::parse(&bytes);
            let _ = Event::parse(&bytes);
            let _ = Incoming::parse(&bytes);
            let _ = Reassembly::default().take(&bytes);
        }

        #[test]
        fn protocol_shaped_text_parses_or_fails_without_panic(
            words in prop::collection::vec(
                prop_oneof![
                    Just("1".to_string()), Just("event".to_string()), Just("ok".to_string()),
                    Just("err".to_string()), Just("pin".to_string()), Just("break".to_string()),
                    Just("errno=".to_string()), Just("pin=-".to_string()), Just("\n".to_string()),
                    Just("deadline_ms=never".to_string()), Just("time=1.000000001".to_string()),
                    "[a-z_]{1,12}=[0-9:,.-]{0,24}",
                    "\\PC{0,8}",
                ],
                0..12,
            )
        ) {
            let text = words.join(" ");
            let _ = Request::parse(text.as_bytes());
            let _ = Incoming::parse(text.as_bytes());
        }
    }

    /// The kernel sets `MSG_CTRUNC` (and the packet is refused) exactly when a packet has
    /// more than [`MAX_FDS`] descriptors: the buffer must be `CMSG_SPACE` of that many.
    /// `pin offset=0 len=4096 offset=99`: which offset? Neither: the request is refused,
    /// with its id, and so is a reply or an event with a key twice.
    #[test]
    fn a_key_given_twice_is_malformed() {
        for bytes in [
            &b"7 pin offset=0 len=4096 offset=99"[..],
            b"7 pin offset=0 len=4096 len=4096",
            b"7 unpin pin=1 pin=2",
            b"7 fence holder=1 holder=2",
        ] {
            let e = Request::parse(bytes).unwrap_err();
            assert_eq!(e.id.as_deref(), Some("7"), "{e}");
            assert!(e.message.contains("given twice"), "{e}");
        }
        assert!(Reply::parse(b"7 ok holder=1 holder=2").is_err());
        assert!(Event::parse(
            b"event granted holder=1 holder=2 pin=1 ino=2 offset=0 len=1 time=1.000000000"
        )
        .is_err());
        // Flags twice, and keys a request does not use, are still fine.
        assert!(Request::parse(b"7 pin offset=0 len=1 ro ro future=1").is_ok());
    }

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

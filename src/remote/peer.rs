//! A remote peer: what a node that was given a key uses to reach an exported region through
//! a holder's soft NIC (one TCP connection, one request in flight, recalls queued as they
//! arrive between answers).
//!
//! ```no_run
//! use pinfs::remote::Peer;
//! let mut peer = Peer::connect("127.0.0.1:47000")?;
//! let rkey = 0x0123_4567_89ab_cdef; // as `pinfs pin --export` printed it
//! peer.write(rkey, 0, b"hello")?;
//! if let Some(k) = peer.next_recall(Some(std::time::Duration::from_secs(1)))? {
//!     peer.ack(k)?; // the key is invalid for this peer from now on
//! }
//! # Ok::<(), pinfs::remote::RemoteError>(())
//! ```

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::remote::protocol::{ErrorCode, Frame, Split, MAX_FRAME, VERSION};

/// A failed remote access.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The NIC refused, with this code.
    #[error("{} ({}): {message}", code.name(), code.code())]
    Refused {
        /// Why.
        code: ErrorCode,
        /// The NIC's explanation.
        message: String,
    },
    /// The connection failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The NIC said something this peer cannot read.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl RemoteError {
    /// The code of a refusal.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RemoteError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A connection to a soft NIC.
#[derive(Debug)]
pub struct Peer {
    stream: TcpStream,
    input: Vec<u8>,
    next_tag: u64,
    recalls: VecDeque<u64>,
    /// The NIC's largest frame body.
    pub max_frame: u32,
}

impl Peer {
    /// Connects to the NIC at `addr` and says `HELLO`.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Peer, RemoteError> {
        let mut p = Peer::connect_raw(addr)?;
        p.send(&Frame::Hello { version: VERSION })?;
        match p.recv(None)? {
            Some(Frame::HelloOk { max_frame, .. }) => {
                p.max_frame = max_frame;
                Ok(p)
            }
            Some(Frame::Error { code, message, .. }) => Err(RemoteError::Refused { code, message }),
            Some(other) => Err(RemoteError::Protocol(format!(
                "{} in answer to HELLO",
                other.name()
            ))),
            None => Err(RemoteError::Protocol("no answer to HELLO".into())),
        }
    }

    /// Connects without saying `HELLO` (for protocol tests: then [`Peer::send_raw`]).
    pub fn connect_raw(addr: impl ToSocketAddrs) -> Result<Peer, RemoteError> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        Ok(Peer {
            stream,
            input: Vec::new(),
            next_tag: 1,
            recalls: VecDeque::new(),
            max_frame: MAX_FRAME as u32,
        })
    }

    /// This end's address (as the NIC sees it, on one machine).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    fn send(&mut self, f: &Frame) -> Result<(), RemoteError> {
        self.stream.write_all(&f.encode())?;
        Ok(())
    }

    /// Sends raw bytes (anything at all: for protocol tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), RemoteError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next frame from the NIC, waiting up to `timeout` (`None`: forever); `Ok(None)`
    /// when none came in time. End of stream is an error.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Frame>, RemoteError> {
        let until = timeout.map(|t| Instant::now() + t);
        loop {
            match crate::remote::protocol::split(&self.input) {
                Split::Frame { len } => {
                    let f = Frame::decode(&self.input[4..4 + len])
                        .map_err(|e| RemoteError::Protocol(e.to_string()));
                    self.input.drain(..4 + len);
                    return f.map(Some);
                }
                Split::Empty => {
                    return Err(RemoteError::Protocol("an empty frame from the NIC".into()))
                }
                Split::TooLarge { len } => {
                    return Err(RemoteError::Protocol(format!(
                        "a frame of {len} bytes from the NIC"
                    )))
                }
                Split::Incomplete => {}
            }
            let left = match until {
                Some(u) => {
                    let l = u.saturating_duration_since(Instant::now());
                    if l.is_zero() {
                        return Ok(None);
                    }
                    Some(l)
                }
                None => None,
            };
            self.stream.set_read_timeout(left)?;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(RemoteError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the NIC closed the connection",
                    )))
                }
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends request `f` (tagged `tag`) and waits for its answer; recalls that come first are
    /// queued for [`Peer::next_recall`].
    fn call(&mut self, tag: u64, f: &Frame) -> Result<Frame, RemoteError> {
        self.send(f)?;
        loop {
            match self.recv(None)? {
                Some(Frame::Recall { rkey }) => self.recalls.push_back(rkey),
                Some(Frame::Error {
                    tag: t,
                    code,
                    message,
                }) if t == tag || t == 0 => return Err(RemoteError::Refused { code, message }),
                Some(reply) => return Ok(reply),
                None => {}
            }
        }
    }

    fn tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// Reads `len` bytes of region `rkey` from `offset`.
    pub fn read(&mut self, rkey: u64, offset: u64, len: u32) -> Result<Vec<u8>, RemoteError> {
        let tag = self.tag();
        let req = Frame::Read {
            tag,
            rkey,
            offset,
            len,
        };
        match self.call(tag, &req)? {
            Frame::ReadOk { tag: t, data } if t == tag => Ok(data),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// Writes `data` into region `rkey` at `offset`.
    pub fn write(&mut self, rkey: u64, offset: u64, data: &[u8]) -> Result<(), RemoteError> {
        let tag = self.tag();
        let req = Frame::Write {
            tag,
            rkey,
            offset,
            data: data.to_vec(),
        };
        match self.call(tag, &req)? {
            Frame::WriteOk { tag: t } if t == tag => Ok(()),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// Compare-and-swap of the 8 bytes at `offset` (a multiple of 8) of region `rkey`: the
    /// value found (the swap happened iff it is `expect`).
    pub fn cas(
        &mut self,
        rkey: u64,
        offset: u64,
        expect: u64,
        new: u64,
    ) -> Result<u64, RemoteError> {
        let tag = self.tag();
        let req = Frame::Cas {
            tag,
            rkey,
            offset,
            expect,
            new,
        };
        match self.call(tag, &req)? {
            Frame::CasOk { tag: t, old } if t == tag => Ok(old),
            other => Err(unexpected(&req, &other)),
        }
    }

    /// The next key the holder recalled, waiting up to `timeout` (`None`: forever).
    pub fn next_recall(&mut self, timeout: Option<Duration>) -> Result<Option<u64>, RemoteError> {
        if let Some(k) = self.recalls.pop_front() {
            return Ok(Some(k));
        }
        match self.recv(timeout)? {
            Some(Frame::Recall { rkey }) => Ok(Some(rkey)),
            Some(Frame::Error { code, message, .. }) => Err(RemoteError::Refused { code, message }),
            Some(other) => Err(RemoteError::Protocol(format!(
                "{} while waiting for a recall",
                other.name()
            ))),
            None => Ok(None),
        }
    }

    /// Acks the recall of `rkey`: this peer stops using it (the NIC refuses it from now on).
    pub fn ack(&mut self, rkey: u64) -> Result<(), RemoteError> {
        let req = Frame::Ack { rkey };
        match self.call(0, &req)? {
            Frame::AckOk { rkey: k } if k == rkey => Ok(()),
            other => Err(unexpected(&req, &other)),
        }
    }
}

fn unexpected(req: &Frame, got: &Frame) -> RemoteError {
    RemoteError::Protocol(format!("{} in answer to {}", got.name(), req.name()))
}

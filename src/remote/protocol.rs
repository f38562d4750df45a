//! The remote-access wire protocol: the frames a soft NIC ([`crate::remote::nic`]) and its
//! peers ([`crate::remote::peer`]) exchange over TCP, their encoding and their limits.
//!
//! **Framing.** A stream of frames; each is a 4-byte little-endian length `L`, then `L` bytes
//! of body, `1 <= L <=` [`MAX_FRAME`]. The body's first byte is the opcode; the fields follow
//! in the order listed, integers little-endian, with no padding. A length of 0 (an empty
//! frame) gets an error and the stream goes on; a length over [`MAX_FRAME`] gets an error
//! and the connection is closed (the rest of the stream cannot be trusted to be framed).
//!
//! | opcode | frame | from | fields | answer |
//! |---|---|---|---|---|
//! | `0x01` | `HELLO` | peer | `version: u16` | `HELLO_OK` or `ERROR` (`BAD_VERSION`: then closed) |
//! | `0x81` | `HELLO_OK` | NIC | `version: u16, max_frame: u32` | |
//! | `0x02` | `READ` | peer | `tag: u64, rkey: u64, offset: u64, len: u32` | `READ_OK` or `ERROR` |
//! | `0x82` | `READ_OK` | NIC | `tag: u64`, then the bytes read | |
//! | `0x03` | `WRITE` | peer | `tag: u64, rkey: u64, offset: u64`, then the bytes to write | `WRITE_OK` or `ERROR` |
//! | `0x83` | `WRITE_OK` | NIC | `tag: u64` | |
//! | `0x04` | `CAS` | peer | `tag: u64, rkey: u64, offset: u64, expect: u64, new: u64` | `CAS_OK` or `ERROR` |
//! | `0x84` | `CAS_OK` | NIC | `tag: u64, old: u64` (the swap happened iff `old == expect`) | |
//! | `0x05` | `RECALL` | NIC | `rkey: u64` | the peer stops using the key, then `ACK` |
//! | `0x06` | `ACK` | peer | `rkey: u64` | `ACK_OK` |
//! | `0x86` | `ACK_OK` | NIC | `rkey: u64` | |
//! | `0x7f` | `ERROR` | NIC | `tag: u64, code: u16`, then a UTF-8 message (at most [`MAX_MESSAGE`] bytes) | |
//!
//! A peer's first frame must be `HELLO` with [`VERSION`]; anything else first is
//! `NOT_HELLO` and the connection is closed. `tag` is the peer's, echoed in the answer (an
//! `ERROR` that answers no request has tag 0). `offset` counts from the first byte of the
//! memory region that `rkey` names (the pinned range, from its first block). `READ` and
//! `WRITE` move at most [`MAX_DATA`] bytes; `CAS` works on 8 aligned bytes, native order in
//! memory (little-endian on the machines pinfs runs on), atomically with respect to other
//! `CAS`es. `RECALL` says the holder wants the region back: from the peer's `ACK` on, the key
//! is invalid for that peer (every access gets `BAD_KEY`). The key (`rkey`) is 64 random
//! bits: a peer that does not know it cannot name the region.
//!
//! Error codes ([`ErrorCode`]): 1 `BAD_VERSION`, 2 `BAD_FRAME` (unknown opcode, wrong length
//! for its opcode, empty), 3 `BAD_KEY` (no such region, or invalidated, recalled or acked),
//! 4 `OUT_OF_RANGE`, 5 `MISALIGNED` (a `CAS` offset not a multiple of 8), 6 `READ_ONLY`,
//! 7 `TOO_LARGE` (a frame over [`MAX_FRAME`], or a `READ` over [`MAX_DATA`]), 8 `NOT_HELLO`,
//! 9 `BUSY` (too many peers: then closed), 10 `SLOW` (the peer does not read its answers:
//! then closed). Codes this version does not know decode as [`ErrorCode::Other`].
//!
//! Decoding is total: any byte string decodes or is an error, never a panic, and allocates at
//! most the frame it was given.

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Most bytes a `READ` or `WRITE` moves.
pub const MAX_DATA: usize = 1 << 20;
/// Most bytes of a frame's body (a `WRITE` of [`MAX_DATA`] bytes and its header fit).
pub const MAX_FRAME: usize = MAX_DATA + 64;
/// Most bytes of an `ERROR`'s message.
pub const MAX_MESSAGE: usize = 256;

/// Why a request failed (the `code` of an `ERROR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the peer speaks another version.
    BadVersion,
    /// 2: a frame this version cannot read.
    BadFrame,
    /// 3: no such region, or it is invalid for this peer.
    BadKey,
    /// 4: outside the region.
    OutOfRange,
    /// 5: a `CAS` offset that is not a multiple of 8.
    Misaligned,
    /// 6: a write to a read-only region.
    ReadOnly,
    /// 7: a frame or a read over the limits.
    TooLarge,
    /// 8: a request before `HELLO`.
    NotHello,
    /// 9: the NIC serves as many peers as it may.
    Busy,
    /// 10: the peer does not read its answers.
    Slow,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::BadVersion => 1,
            ErrorCode::BadFrame => 2,
            ErrorCode::BadKey => 3,
            ErrorCode::OutOfRange => 4,
            ErrorCode::Misaligned => 5,
            ErrorCode::ReadOnly => 6,
            ErrorCode::TooLarge => 7,
            ErrorCode::NotHello => 8,
            ErrorCode::Busy => 9,
            ErrorCode::Slow => 10,
            ErrorCode::Other(c) => c,
        }
    }

    /// The code numbered `c`.
    pub fn of(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::BadVersion,
            2 => ErrorCode::BadFrame,
            3 => ErrorCode::BadKey,
            4 => ErrorCode::OutOfRange,
            5 => ErrorCode::Misaligned,
            6 => ErrorCode::ReadOnly,
            7 => ErrorCode::TooLarge,
            8 => ErrorCode::NotHello,
            9 => ErrorCode::Busy,
            10 => ErrorCode::Slow,
            c => ErrorCode::Other(c),
        }
    }

    /// The name the module's table gives it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadVersion => "BAD_VERSION",
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::BadKey => "BAD_KEY",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::Misaligned => "MISALIGNED",
            ErrorCode::ReadOnly => "READ_ONLY",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::NotHello => "NOT_HELLO",
            ErrorCode::Busy => "BUSY",
            ErrorCode::Slow => "SLOW",
            ErrorCode::Other(_) => "UNKNOWN",
        }
    }
}

/// One frame (see the module's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `HELLO`.
    Hello {
        /// The peer's version.
        version: u16,
    },
    /// `HELLO_OK`.
    HelloOk {
        /// The NIC's version.
        version: u16,
        /// The NIC's largest frame body.
        max_frame: u32,
    },
    /// `READ`.
    Read {
        /// The peer's tag.
        tag: u64,
        /// The region.
        rkey: u64,
        /// From the region's first byte.
        offset: u64,
        /// Bytes.
        len: u32,
    },
    /// `READ_OK`.
    ReadOk {
        /// The request's tag.
        tag: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `WRITE`.
    Write {
        /// The peer's tag.
        tag: u64,
        /// The region.
        rkey: u64,
        /// From the region's first byte.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `WRITE_OK`.
    WriteOk {
        /// The request's tag.
        tag: u64,
    },
    /// `CAS`.
    Cas {
        /// The peer's tag.
        tag: u64,
        /// The region.
        rkey: u64,
        /// From the region's first byte (a multiple of 8).
        offset: u64,
        /// The value expected.
        expect: u64,
        /// The value to store if it is there.
        new: u64,
    },
    /// `CAS_OK`.
    CasOk {
        /// The request's tag.
        tag: u64,
        /// The value found.
        old: u64,
    },
    /// `RECALL`.
    Recall {
        /// The region wanted back.
        rkey: u64,
    },
    /// `ACK`.
    Ack {
        /// The region given back.
        rkey: u64,
    },
    /// `ACK_OK`.
    AckOk {
        /// The region given back.
        rkey: u64,
    },
    /// `ERROR`.
    Error {
        /// The request's tag (0: none).
        tag: u64,
        /// Why.
        code: ErrorCode,
        /// For people.
        message: String,
    },
}

/// A frame that cannot be read, and how bad that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The code to answer with.
    pub code: ErrorCode,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for DecodeError {}

fn bad(message: impl Into<String>) -> DecodeError {
    DecodeError {
        code: ErrorCode::BadFrame,
        message: message.into(),
    }
}

/// Reads the fixed fields of a body.
struct Fields<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        if self.rest.len() < N {
            return Err(bad(format!("{} frame too short", self.what)));
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    /// The fields end here.
    fn end(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(bad(format!(
                "{} frame has {} bytes too many",
                self.what,
                self.rest.len()
            )))
        }
    }
    /// The bytes after the fields.
    fn tail(self) -> &'a [u8] {
        self.rest
    }
}

impl Frame {
    /// The frame's name, as the module's table gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "HELLO",
            Frame::HelloOk { .. } => "HELLO_OK",
            Frame::Read { .. } => "READ",
            Frame::ReadOk { .. } => "READ_OK",
            Frame::Write { .. } => "WRITE",
            Frame::WriteOk { .. } => "WRITE_OK",
            Frame::Cas { .. } => "CAS",
            Frame::CasOk { .. } => "CAS_OK",
            Frame::Recall { .. } => "RECALL",
            Frame::Ack { .. } => "ACK",
            Frame::AckOk { .. } => "ACK_OK",
            Frame::Error { .. } => "ERROR",
        }
    }

    /// The frame as sent: its length, then its body. A body over [`MAX_FRAME`] is the
    /// caller's mistake (data over [`MAX_DATA`]); the peer will refuse it.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&[0; 4]);
        let mut put = |bytes: &[u8]| b.extend_from_slice(bytes);
        match self {
            Frame::Hello { version } => {
                put(&[0x01]);
                put(&version.to_le_bytes());
            }
            Frame::HelloOk { version, max_frame } => {
                put(&[0x81]);
                put(&version.to_le_bytes());
                put(&max_frame.to_le_bytes());
            }
            Frame::Read {
                tag,
                rkey,
                offset,
                len,
            } => {
                put(&[0x02]);
                put(&tag.to_le_bytes());
                put(&rkey.to_le_bytes());
                put(&offset.to_le_bytes());
                put(&len.to_le_bytes());
            }
            Frame::ReadOk { tag, data } => {
                put(&[0x82]);
                put(&tag.to_le_bytes());
                put(data);
            }
            Frame::Write {
                tag,
                rkey,
                offset,
                data,
            } => {
                put(&[0x03]);
                put(&tag.to_le_bytes());
                put(&rkey.to_le_bytes());
                put(&offset.to_le_bytes());
                put(data);
            }
            Frame::WriteOk { tag } => {
                put(&[0x83]);
                put(&tag.to_le_bytes());
            }
            Frame::Cas {
                tag,
                rkey,
                offset,
                expect,
                new,
            } => {
                put(&[0x04]);
                put(&tag.to_le_bytes());
                put(&rkey.to_le_bytes());
                put(&offset.to_le_bytes());
                put(&expect.to_le_bytes());
                put(&new.to_le_bytes());
            }
            Frame::CasOk { tag, old } => {
                put(&[0x84]);
                put(&tag.to_le_bytes());
                put(&old.to_le_bytes());
            }
            Frame::Recall { rkey } => {
                put(&[0x05]);
                put(&rkey.to_le_bytes());
            }
            Frame::Ack { rkey } => {
                put(&[0x06]);
                put(&rkey.to_le_bytes());
            }
            Frame::AckOk { rkey } => {
                put(&[0x86]);
                put(&rkey.to_le_bytes());
            }
            Frame::Error { tag, code, message } => {
                put(&[0x7f]);
                put(&tag.to_le_bytes());
                put(&code.code().to_le_bytes());
                put(truncated(message, MAX_MESSAGE).as_bytes());
            }
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        b
    }

    /// Decodes one frame's body (without its length).
    pub fn decode(body: &[u8]) -> Result<Frame, DecodeError> {
        let Some((&op, rest)) = body.split_first() else {
            return Err(bad("empty frame"));
        };
        if body.len() > MAX_FRAME {
            return Err(DecodeError {
                code: ErrorCode::TooLarge,
                message: format!("frame of {} bytes (at most {MAX_FRAME})", body.len()),
            });
        }
        let f = |what| Fields { rest, what };
        let frame = match op {
            0x01 => {
                let mut r = f("HELLO");
                let version = r.u16()?;
                r.end()?;
                Frame::Hello { version }
            }
            0x81 => {
                let mut r = f("HELLO_OK");
                let version = r.u16()?;
                let max_frame = r.u32()?;
                r.end()?;
                Frame::HelloOk { version, max_frame }
            }
            0x02 => {
                let mut r = f("READ");
                let (tag, rkey, offset, len) = (r.u64()?, r.u64()?, r.u64()?, r.u32()?);
                r.end()?;
                Frame::Read {
                    tag,
                    rkey,
                    offset,
                    len,
                }
            }
            0x82 => {
                let mut r = f("READ_OK");
                let tag = r.u64()?;
                Frame::ReadOk {
                    tag,
                    data: r.tail().to_vec(),
                }
            }
            0x03 => {
                let mut r = f("WRITE");
                let (tag, rkey, offset) = (r.u64()?, r.u64()?, r.u64()?);
                Frame::Write {
                    tag,
                    rkey,
                    offset,
                    data: r.tail().to_vec(),
                }
            }
            0x83 => {
                let mut r = f("WRITE_OK");
                let tag = r.u64()?;
                r.end()?;
                Frame::WriteOk { tag }
            }
            0x04 => {
                let mut r = f("CAS");
                let (tag, rkey, offset, expect, new) =
                    (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                r.end()?;
                Frame::Cas {
                    tag,
                    rkey,
                    offset,
                    expect,
                    new,
                }
            }
            0x84 => {
                let mut r = f("CAS_OK");
                let (tag, old) = (r.u64()?, r.u64()?);
                r.end()?;
                Frame::CasOk { tag, old }
            }
            0x05 | 0x06 | 0x86 => {
                let mut r = f("RECALL/ACK");
                let rkey = r.u64()?;
                r.end()?;
                match op {
                    0x05 => Frame::Recall { rkey },
                    0x06 => Frame::Ack { rkey },
                    _ => Frame::AckOk { rkey },
                }
            }
            0x7f => {
                let mut r = f("ERROR");
                let (tag, code) = (r.u64()?, r.u16()?);
                let text = r.tail();
                if text.len() > MAX_MESSAGE {
                    return Err(bad("ERROR message too long"));
                }
                Frame::Error {
                    tag,
                    code: ErrorCode::of(code),
                    message: String::from_utf8_lossy(text).into_owned(),
                }
            }
            other => return Err(bad(format!("unknown opcode 0x{other:02x}"))),
        };
        Ok(frame)
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where the next frame of a byte stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// More bytes are needed.
    Incomplete,
    /// A frame's body is `buf[4..4 + len]`; the frame takes `4 + len` bytes.
    Frame {
        /// Bytes of the body.
        len: usize,
    },
    /// A frame of length 0: 4 bytes to skip, then go on.
    Empty,
    /// A length over [`MAX_FRAME`]: the stream cannot go on.
    TooLarge {
        /// The length announced.
        len: u64,
    },
}

/// The next frame at the start of `buf`.
pub fn split(buf: &[u8]) -> Split {
    let Some(head) = buf.get(..4) else {
        return Split::Incomplete;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 {
        Split::Empty
    } else if len > MAX_FRAME {
        Split::TooLarge { len: len as u64 }
    } else if buf.len() < 4 + len {
        Split::Incomplete
    } else {
        Split::Frame { len }
    }
}

/// Formats a key as the CLI and the holder protocol write it: 16 hex digits.
pub fn rkey_text(rkey: u64) -> String {
    format!("{rkey:016x}")
}

/// Reads a key written by [`rkey_text`] (an optional `0x`, 1 to 16 hex digits).
pub fn parse_rkey(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "'{s}' is not a remote key (up to 16 hex digits, as `pinfs pin --export` prints it)"
        ));
    }
    u64::from_str_radix(digits, 16).map_err(|e| format!("'{s}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Frame> {
        let data = proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            any::<u16>().prop_map(|version| Frame::Hello { version }),
            (any::<u16>(), any::<u32>())
                .prop_map(|(version, max_frame)| Frame::HelloOk { version, max_frame }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
                |(tag, rkey, offset, len)| Frame::Read {
                    tag,
                    rkey,
                    offset,
                    len
                }
            ),
            (any::<u64>(), data.clone()).prop_map(|(tag, data)| Frame::ReadOk { tag, data }),
            (any::<u64>(), any::<u64>(), any::<u64>(), data).prop_map(
                |(tag, rkey, offset, data)| Frame::Write {
                    tag,
                    rkey,
                    offset,
                    data
                }
            ),
            any::<u64>().prop_map(|tag| Frame::WriteOk { tag }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(tag, rkey, offset, expect, new)| Frame::Cas {
                    tag,
                    rkey,
                    offset,
                    expect,
                    new
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(tag, old)| Frame::CasOk { tag, old }),
            any::<u64>().prop_map(|rkey| Frame::Recall { rkey }),
            any::<u64>().prop_map(|rkey| Frame::Ack { rkey }),
            any::<u64>().prop_map(|rkey| Frame::AckOk { rkey }),
            (any::<u64>(), 1u16..=10, "[a-z ]{0,40}").prop_map(|(tag, c, message)| {
                Frame::Error {
                    tag,
                    code: ErrorCode::of(c),
                    message,
                }
            }),
        ]
    }

    proptest! {
        /// Every frame reads back as itself, its length prefix saying how long it is.
        #[test]
        fn frames_round_trip(f in frames()) {
            let bytes = f.encode();
            prop_assert_eq!(split(&bytes), Split::Frame { len: bytes.len() - 4 });
            prop_assert_eq!(Frame::decode(&bytes[4..]).unwrap(), f);
        }

        /// Any bytes decode or fail, never panic; a failure is BAD_FRAME.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Err(e) = Frame::decode(&bytes) {
                prop_assert_eq!(e.code, ErrorCode::BadFrame);
            }
            let _ = split(&bytes);
        }

        /// A cut frame is incomplete, never another frame.
        #[test]
        fn a_cut_frame_is_incomplete(f in frames(), cut in 0usize..100) {
            let bytes = f.encode();
            let cut = cut % bytes.len();
            prop_assert_eq!(split(&bytes[..cut]), Split::Incomplete);
        }

        /// Keys print and parse back.
        #[test]
        fn keys_round_trip(k in any::<u64>()) {
            prop_assert_eq!(parse_rkey(&rkey_text(k)).unwrap(), k);
        }
    }

    #[test]
    fn limits_hold() {
        assert_eq!(split(&[0, 0, 0, 0]), Split::Empty);
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert_eq!(
            split(&huge),
            Split::TooLarge {
                len: MAX_FRAME as u64 + 1
            }
        );
        assert_eq!(
            split(&u32::MAX.to_le_bytes()),
            Split::TooLarge {
                len: u32::MAX as u64
            }
        );
        // Trailing bytes after fixed fields are a bad frame, not ignored.
        let mut b = Frame::Ack { rkey: 7 }.encode();
        b.push(0);
        assert_eq!(
            Frame::decode(&b[4..]).unwrap_err().code,
            ErrorCode::BadFrame
        );
        assert_eq!(Frame::decode(&[]).unwrap_err().code, ErrorCode::BadFrame);
        // An error message is cut to MAX_MESSAGE at a character boundary.
        let long = Frame::Error {
            tag: 1,
            code: ErrorCode::Busy,
            message: "é".repeat(MAX_MESSAGE),
        };
        let Frame::Error { message, .. } = Frame::decode(&long.encode()[4..]).unwrap() else {
            panic!("not an error")
        };
        assert!(message.len() <= MAX_MESSAGE && message.starts_with('é'));
        assert!(parse_rkey("").is_err() && parse_rkey("0x12345678901234567").is_err());
        assert!(parse_rkey("xyz").is_err());
    }
}

//! The C ABI of the holder client: every struct and constant `src/holder/pinfs.h` declares,
//! as Rust sees them. Only `std` here: tests/mount/c_holder.rs compiles this very file to
//! compare it with what a C compiler makes of the header.

use std::ffi::{c_int, c_void};

/// `PINFS_PIN_RO`: a read-only pin (the file needs only be open for reading; the mapping is
/// `PROT_READ`).
pub const PINFS_PIN_RO: c_int = 1;
/// `PINFS_PIN_UNBREAKABLE`: breakers fail with `ETXTBSY` instead of breaking the lease.
pub const PINFS_PIN_UNBREAKABLE: c_int = 2;

/// `PINFS_EVENT_GRANTED`: a pin was granted.
pub const PINFS_EVENT_GRANTED: i32 = 1;
/// `PINFS_EVENT_BREAK`: a breaker wants the range back; release it before the deadline.
pub const PINFS_EVENT_BREAK: i32 = 2;
/// `PINFS_EVENT_RELEASED`: the holder gave the pin back.
pub const PINFS_EVENT_RELEASED: i32 = 3;
/// `PINFS_EVENT_REVOKED`: the lease was taken away.
pub const PINFS_EVENT_REVOKED: i32 = 4;
/// `PINFS_EVENT_REFUSED`: a breaker failed at the deadline; the lease stays.
pub const PINFS_EVENT_REFUSED: i32 = 5;
/// `PINFS_EVENT_FENCED`: the holder was fenced (its session is over: reconnect).
pub const PINFS_EVENT_FENCED: i32 = 6;
/// `PINFS_EVENT_HOLDER_GONE`: the holder went away; its pins were released.
pub const PINFS_EVENT_HOLDER_GONE: i32 = 7;
/// `PINFS_EVENT_LOST`: a watcher fell behind; `lost` events were missed.
pub const PINFS_EVENT_LOST: i32 = 8;

/// `PINFS_EVENT_HAS_PIN`: the event's `pin` field is set.
pub const PINFS_EVENT_HAS_PIN: u32 = 1;
/// `PINFS_EVENT_HAS_DEADLINE`: a break with a deadline: `deadline_ms` is set (a break
/// without this flag never expires).
pub const PINFS_EVENT_HAS_DEADLINE: u32 = 2;

/// `struct pinfs_pin`: a granted pin as the C caller sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PinfsPin {
    /// The pin's id (for `pinfs_unpin` and to match events).
    pub id: u64,
    /// The holder id of the connection.
    pub holder: u64,
    /// File offset of `addr`: the start of the block holding the first requested byte.
    pub file_offset: u64,
    /// Bytes mapped at `addr` (whole blocks).
    pub len: u64,
    /// The pinned bytes, contiguous in this process whatever the image layout.
    pub addr: *mut c_void,
    /// Pieces of the pin in the image (`pinfs_pin_piece` indexes them).
    pub pieces: u32,
    /// The `PINFS_PIN_*` flags it was made with.
    pub flags: u32,
}

/// `struct pinfs_piece`: one piece of a pin, contiguous in the image.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PinfsPiece {
    /// Byte offset in the file.
    pub file_offset: u64,
    /// Byte offset in the image.
    pub image_offset: u64,
    /// Bytes.
    pub len: u64,
    /// Where the piece starts in the pin's mapping.
    pub addr: *mut c_void,
}

/// `struct pinfs_event`: a notification from the daemon.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PinfsEvent {
    /// One of the `PINFS_EVENT_*` kinds.
    pub kind: i32,
    /// `PINFS_EVENT_HAS_PIN`, `PINFS_EVENT_HAS_DEADLINE`.
    pub flags: u32,
    /// The holder concerned.
    pub holder: u64,
    /// The pin (with `PINFS_EVENT_HAS_PIN`), else 0.
    pub pin: u64,
    /// The file's inode number.
    pub ino: u64,
    /// Byte range start.
    pub offset: u64,
    /// Byte range length.
    pub len: u64,
    /// A break's deadline: milliseconds left at `time` (with `PINFS_EVENT_HAS_DEADLINE`).
    pub deadline_ms: u64,
    /// When it happened: seconds since the epoch.
    pub time_sec: u64,
    /// Nanoseconds of `time_sec`.
    pub time_nsec: u32,
    /// Zero.
    pub reserved: u32,
    /// `PINFS_EVENT_LOST`: how many events were missed.
    pub lost: u64,
}

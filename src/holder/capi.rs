//! The C API of the holder client (feature `capi`): what `src/holder/pinfs.h` declares, for
//! holders written in C. Each function wraps [`Connection`] and [`Pin`].
//!
//! Conventions (the header says the same to C callers):
//! - Functions that can fail return a negative errno (`-ENOENT`, `-EAGAIN`, ...), as the
//!   kernel and liburing do; [`pinfs_last_error`] then gives the message (the daemon's, when
//!   the daemon refused). [`pinfs_connect`] returns NULL and sets `errno`.
//! - Every pointer argument is checked for NULL (`-EINVAL`, or `-EFAULT` for an output).
//! - No panic crosses the boundary: each entry point runs under `catch_unwind` and turns a
//!   panic into `-EIO` ("internal error"); the connection should then be closed.
//! - A handle is used by one thread at a time (the C caller's lock, as for a `FILE *`).
//!
//! **The mapped bytes.** [`Connection::pin`] maps every window piece of a pin, in file order,
//! into one reservation of address space, so the whole pinned range is one contiguous run of
//! bytes in the holder even when its blocks are fragmented in the image. The C API therefore
//! gives one pointer: `addr` covers `len` bytes from `file_offset`, the start of the block
//! holding the first requested byte (so the byte at file offset `o` is
//! `addr + (o - file_offset)`). [`pinfs_pin_piece`] gives each piece's place in the image and
//! where it starts inside that run, for callers that care about the layout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use crate::holder::client::{ClientError, Connection, Pin, PinOptions};
use crate::holder::protocol::{Event, EventKind};

mod abi;
pub use abi::*;

/// `struct pinfs_conn`: the opaque handle, a connection and the pins made through it.
#[derive(Debug)]
pub struct PinfsConn {
    conn: Connection,
    /// Every pin made through this handle and not yet given back, mapped.
    pins: HashMap<u64, Pin>,
    /// The message of the last failed call.
    last_error: CString,
}

/// A failure on its way to C: the errno (positive) and the message.
struct Failure {
    errno: i32,
    message: String,
}

impl Failure {
    fn new(errno: i32, message: impl Into<String>) -> Failure {
        Failure {
            errno,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let errno = match &e {
            ClientError::Refused { errno, .. } => *errno,
            ClientError::Io(io) => io
                .raw_os_error()
                .unwrap_or_else(|| errno_of_kind(io.kind())),
            ClientError::Protocol(_) => libc::EPROTO,
        };
        let message = match e {
            // The daemon's own words, as the brief for pinfs_last_error says.
            ClientError::Refused { message, .. } => message,
            other => other.to_string(),
        };
        Failure { errno, message }
    }
}

/// An errno for an I/O error that carries none (a wrapped one, with a path in its message).
fn errno_of_kind(kind: std::io::ErrorKind) -> i32 {
    use std::io::ErrorKind as K;
    match kind {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::ConnectionReset => libc::ECONNRESET,
        K::BrokenPipe => libc::EPIPE,
        K::TimedOut => libc::ETIMEDOUT,
        K::WouldBlock => libc::EAGAIN,
        K::InvalidInput => libc::EINVAL,
        K::OutOfMemory => libc::ENOMEM,
        K::NotADirectory => libc::ENOTDIR,
        K::Interrupted => libc::EINTR,
        _ => libc::EIO,
    }
}

/// Text for a C string: a NUL inside the message (never expected) becomes U+FFFD.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{fffd}")).unwrap_or_default()
}

/// The message of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

thread_local! {
    /// The message of the last failed [`pinfs_connect`] (or call with a NULL handle) on this
    /// thread: what [`pinfs_last_error`] gives for a NULL handle.
    static NO_HANDLE_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_no_handle_error(message: &str) {
    // try_with: no panic even while the thread is being torn down (the message is lost).
    let _ = NO_HANDLE_ERROR.try_with(|e| *e.borrow_mut() = c_string(message));
}

/// Runs `f` on the handle behind `conn`: the C return value is `f`'s (0 or more) or a
/// negative errno, the message kept in the handle; a NULL handle is `-EINVAL` and a panic
/// `-EIO`, never an unwind into C.
fn with_conn(
    conn: *mut PinfsConn,
    what: &str,
    f: impl FnOnce(&mut PinfsConn) -> Result<c_int, Failure>,
) -> c_int {
    // SAFETY: a non-NULL `conn` comes from pinfs_connect and is not yet closed (the header's
    // contract), and the caller lets one thread use it at a time: a unique reference.
    let Some(c) = (unsafe { conn.as_mut() }) else {
        set_no_handle_error(&format!("{what}: the connection is NULL"));
        return -libc::EINVAL;
    };
    let failure = match catch_unwind(AssertUnwindSafe(|| f(c))) {
        Ok(Ok(n)) => return n,
        Ok(Err(f)) => f,
        Err(payload) => Failure::new(
            libc::EIO,
            format!(
                "internal error in pinfs (please report it; close this connection): {}",
                panic_message(payload.as_ref())
            ),
        ),
    };
    c.last_error = c_string(&format!("{what}: {}", failure.message));
    -failure.errno.abs().max(1)
}

/// Connects to the daemon of the pinfs mount that holds `path_on_mount` (any path on the
/// mount, its mount point included). NULL on failure, with `errno` set and the message in
/// `pinfs_last_error(NULL)` (this thread's).
///
/// # Safety
/// `path_on_mount` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pinfs_connect(path_on_mount: *const c_char) -> *mut PinfsConn {
    let result = catch_unwind(|| {
        if path_on_mount.is_null() {
            return Err(Failure::new(libc::EINVAL, "the path is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated, by this function's contract.
        let path = unsafe { CStr::from_ptr(path_on_mount) };
        let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
        let conn = Connection::for_path(path).map_err(|e| {
            let mut f = Failure::from(e);
            f.message = format!("{}: {}", path.display(), f.message);
            f
        })?;
        Ok(Box::new(PinfsConn {
            conn,
            pins: HashMap::new(),
            last_error: CString::default(),
        }))
    });
    let failure = match result {
        Ok(Ok(handle)) => return Box::into_raw(handle),
        Ok(Err(f)) => f,
        Err(payload) => Failure::new(
            libc::EIO,
            format!(
                "internal error in pinfs (please report it): {}",
                panic_message(payload.as_ref())
            ),
        ),
    };
    set_no_handle_error(&format!("pinfs_connect: {}", failure.message));
    // SAFETY: __errno_location returns this thread's errno, always valid to write.
    unsafe { *libc::__errno_location() = failure.errno };
    std::ptr::null_mut()
}

/// The C view of a pin kept in the handle.
fn view(pin: &mut Pin, flags: c_int) -> PinfsPin {
    let (id, holder, file_offset) = (pin.id, pin.holder, pin.file_offset());
    let pieces = u32::try_from(pin.extents.len()).unwrap_or(u32::MAX);
    let bytes = pin.as_mut_slice();
    PinfsPin {
        id,
        holder,
        file_offset,
        len: bytes.len() as u64,
        addr: bytes.as_mut_ptr().cast(),
        pieces,
        flags: flags as u32,
    }
}

/// Pins `len` bytes of the file open as `fd` from `offset`, maps them, and fills `*out`
/// (see the header for what `addr` covers). 0 or a negative errno.
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`]; `out` is NULL or points to a
/// writable `struct pinfs_pin`.
#[no_mangle]
pub unsafe extern "C" fn pinfs_pin(
    conn: *mut PinfsConn,
    fd: c_int,
    offset: u64,
    len: u64,
    flags: c_int,
    out: *mut PinfsPin,
) -> c_int {
    with_conn(conn, "pinfs_pin", |c| {
        if out.is_null() {
            return Err(Failure::new(libc::EFAULT, "out is NULL"));
        }
        if flags & !(PINFS_PIN_RO | PINFS_PIN_UNBREAKABLE) != 0 {
            return Err(Failure::new(
                libc::EINVAL,
                format!("unknown flags {flags:#x} (PINFS_PIN_RO and PINFS_PIN_UNBREAKABLE are)"),
            ));
        }
        // SAFETY: F_GETFD reads a descriptor's flags and has no effect on any descriptor,
        // open or not; it tells an open one from a closed one before we borrow it.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Failure::new(
                libc::EBADF,
                format!("{fd} is not an open file descriptor"),
            ));
        }
        // SAFETY: `fd` is open (checked above) and stays the caller's: ManuallyDrop never
        // closes it, and the File lives only for this call.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let opts = PinOptions {
            read_only: flags & PINFS_PIN_RO != 0,
            unbreakable: flags & PINFS_PIN_UNBREAKABLE != 0,
        };
        let mut pin = c.conn.pin(&file, offset, len, opts)?;
        let v = view(&mut pin, flags);
        c.pins.insert(pin.id, pin);
        // SAFETY: `out` is non-NULL (checked) and writable, by this function's contract.
        unsafe { out.write(v) };
        Ok(0)
    })
}

/// Fills `*out` with piece `index` (from 0 to `pieces - 1`) of pin `pin`. 0 or a negative
/// errno (`-ENOENT`: no such pin on this connection; `-ERANGE`: no such piece).
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`]; `out` is NULL or points to a
/// writable `struct pinfs_piece`.
#[no_mangle]
pub unsafe extern "C" fn pinfs_pin_piece(
    conn: *mut PinfsConn,
    pin: u64,
    index: u32,
    out: *mut PinfsPiece,
) -> c_int {
    with_conn(conn, "pinfs_pin_piece", |c| {
        if out.is_null() {
            return Err(Failure::new(libc::EFAULT, "out is NULL"));
        }
        let p = c.pins.get_mut(&pin).ok_or_else(|| {
            Failure::new(libc::ENOENT, format!("no pin {pin} on this connection"))
        })?;
        let index = index as usize;
        let Some(piece) = p.extents.get(index).copied() else {
            return Err(Failure::new(
                libc::ERANGE,
                format!(
                    "pin {pin} has {} pieces, not {}",
                    p.extents.len(),
                    index + 1
                ),
            ));
        };
        // The pieces are consecutive in the file and in the mapping.
        let start = piece.file_offset - p.file_offset();
        let bytes = p.as_mut_slice();
        if start.saturating_add(piece.len) > bytes.len() as u64 {
            return Err(Failure::new(
                libc::EPROTO,
                format!(
                    "piece {index} of pin {pin} (file bytes {}+{}) is outside its mapping of {} bytes",
                    piece.file_offset,
                    piece.len,
                    bytes.len()
                ),
            ));
        }
        let v = PinfsPiece {
            file_offset: piece.file_offset,
            image_offset: piece.image_offset,
            len: piece.len,
            // In bounds: checked just above.
            addr: bytes[start as usize..].as_mut_ptr().cast(),
        };
        // SAFETY: `out` is non-NULL (checked) and writable, by this function's contract.
        unsafe { out.write(v) };
        Ok(0)
    })
}

/// Gives pin `pin` back. On success its mapping is gone (`addr` must not be used again); on
/// failure the pin stays mapped and known to the handle until a later `pinfs_unpin`
/// succeeds or [`pinfs_close`]. 0 or a negative errno (`-ENOENT`: no such pin).
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`].
#[no_mangle]
pub unsafe extern "C" fn pinfs_unpin(conn: *mut PinfsConn, pin: u64) -> c_int {
    with_conn(conn, "pinfs_unpin", |c| {
        if !c.pins.contains_key(&pin) {
            return Err(Failure::new(
                libc::ENOENT,
                format!("no pin {pin} on this connection"),
            ));
        }
        c.conn.unpin_id(pin)?;
        // Dropping the Pin unmaps it.
        c.pins.remove(&pin);
        Ok(0)
    })
}

/// The C form of an event.
fn event_view(e: &Event) -> PinfsEvent {
    let l = match e {
        Event::Lost { count } => {
            return PinfsEvent {
                kind: PINFS_EVENT_LOST,
                lost: *count,
                ..PinfsEvent::default()
            }
        }
        Event::Lease(l) => l,
        Event::Remote(_) => return PinfsEvent::default(),
    };
    let (kind, deadline) = match l.kind {
        EventKind::Granted => (PINFS_EVENT_GRANTED, None),
        EventKind::Break { deadline_ms } => (PINFS_EVENT_BREAK, deadline_ms),
        EventKind::Released => (PINFS_EVENT_RELEASED, None),
        EventKind::Revoked => (PINFS_EVENT_REVOKED, None),
        EventKind::Refused => (PINFS_EVENT_REFUSED, None),
        EventKind::Fenced => (PINFS_EVENT_FENCED, None),
        EventKind::HolderGone => (PINFS_EVENT_HOLDER_GONE, None),
    };
    let mut flags = 0;
    if l.pin.is_some() {
        flags |= PINFS_EVENT_HAS_PIN;
    }
    if deadline.is_some() {
        flags |= PINFS_EVENT_HAS_DEADLINE;
    }
    PinfsEvent {
        kind,
        flags,
        holder: l.holder,
        pin: l.pin.unwrap_or(0),
        ino: l.ino,
        offset: l.offset,
        len: l.len,
        deadline_ms: deadline.unwrap_or(0),
        time_sec: l.time.secs,
        time_nsec: l.time.nanos,
        reserved: 0,
        lost: 0,
    }
}

/// Waits up to `timeout_ms` milliseconds (negative: forever; 0: just looks) for the next
/// notification. 1 with `*out` filled, 0 at the timeout, or a negative errno.
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`]; `out` is NULL or points to a
/// writable `struct pinfs_event`.
#[no_mangle]
pub unsafe extern "C" fn pinfs_next_event(
    conn: *mut PinfsConn,
    timeout_ms: c_int,
    out: *mut PinfsEvent,
) -> c_int {
    with_conn(conn, "pinfs_next_event", |c| {
        if out.is_null() {
            return Err(Failure::new(libc::EFAULT, "out is NULL"));
        }
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let Some(e) = c.conn.next_event(timeout)? else {
            return Ok(0);
        };
        // Remote-peer events go to watchers only, never to a holder's connection; should
        // one come, it is not a lease event and is not reported as one.
        if matches!(e, Event::Remote(_)) {
            return Ok(0);
        }
        // SAFETY: `out` is non-NULL (checked) and writable, by this function's contract.
        unsafe { out.write(event_view(&e)) };
        Ok(1)
    })
}

/// The mount's status as one JSON object (what `pinfs status --json` prints), in `*out`,
/// to be freed with [`pinfs_free_string`]. 0 or a negative errno.
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`]; `out` is NULL or points to a
/// writable `char *`.
#[no_mangle]
pub unsafe extern "C" fn pinfs_status_json(conn: *mut PinfsConn, out: *mut *mut c_char) -> c_int {
    with_conn(conn, "pinfs_status_json", |c| {
        if out.is_null() {
            return Err(Failure::new(libc::EFAULT, "out is NULL"));
        }
        let json = c.conn.status(false)?;
        let s = CString::new(json)
            .map_err(|_| Failure::new(libc::EPROTO, "the daemon's status holds a NUL byte"))?;
        // SAFETY: `out` is non-NULL (checked) and writable, by this function's contract.
        unsafe { out.write(s.into_raw()) };
        Ok(0)
    })
}

/// Frees a string this library returned ([`pinfs_status_json`]); NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn pinfs_free_string(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    // SAFETY: `s` came from CString::into_raw in this library and is freed once, by this
    // function's contract. Dropping a CString cannot panic.
    drop(unsafe { CString::from_raw(s) });
}

/// The message of the last failed call on `conn` (`""` if none failed), valid until the
/// next call on `conn`; with a NULL `conn`, that of this thread's last failed
/// [`pinfs_connect`] (or call made with a NULL handle). Never NULL.
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`].
#[no_mangle]
pub unsafe extern "C" fn pinfs_last_error(conn: *const PinfsConn) -> *const c_char {
    // SAFETY: a non-NULL `conn` is a live handle, by this function's contract.
    match unsafe { conn.as_ref() } {
        Some(c) => c.last_error.as_ptr(),
        // The thread-local lives as long as the thread; its buffer changes only on the next
        // failure without a handle on this thread, which the contract allows.
        None => NO_HANDLE_ERROR
            .try_with(|e| e.borrow().as_ptr())
            .unwrap_or(c"".as_ptr()),
    }
}

/// The name of an event kind (`"break"`, `"lost"`, ...), `"unknown"` for anything else. A
/// static string.
#[no_mangle]
pub extern "C" fn pinfs_event_name(kind: c_int) -> *const c_char {
    let name: &'static CStr = match kind {
        PINFS_EVENT_GRANTED => c"granted",
        PINFS_EVENT_BREAK => c"break",
        PINFS_EVENT_RELEASED => c"released",
        PINFS_EVENT_REVOKED => c"revoked",
        PINFS_EVENT_REFUSED => c"refused",
        PINFS_EVENT_FENCED => c"fenced",
        PINFS_EVENT_HOLDER_GONE => c"holder_gone",
        PINFS_EVENT_LOST => c"lost",
        _ => c"unknown",
    };
    name.as_ptr()
}

/// Ends the connection and frees the handle (in every case; `conn` must not be used again).
/// The daemon releases every pin of the connection, as when a holder exits; this waits up to
/// `timeout_ms` milliseconds (negative: 10 s) for it to say it has let go of them all, then
/// unmaps the pins. 1: the daemon has let go; 0: not confirmed within the timeout (always
/// with 0); a negative errno if talking to the daemon failed. NULL is ignored (0).
///
/// # Safety
/// `conn` is NULL or a live handle from [`pinfs_connect`], not used after this call.
#[no_mangle]
pub unsafe extern "C" fn pinfs_close(conn: *mut PinfsConn, timeout_ms: c_int) -> c_int {
    if conn.is_null() {
        return 0;
    }
    // SAFETY: `conn` came from Box::into_raw in pinfs_connect and is closed once, by this
    // function's contract.
    let handle = unsafe { Box::from_raw(conn) };
    let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(10_000));
    let result = catch_unwind(AssertUnwindSafe(move || {
        let PinfsConn { conn, pins, .. } = *handle;
        let r = conn.close_and_wait(timeout);
        // The mappings go after the daemon let go (or gave up waiting).
        drop(pins);
        r
    }));
    match result {
        Ok(Ok(true)) => 1,
        Ok(Ok(false)) => 0,
        Ok(Err(e)) => {
            let f = Failure::from(e);
            set_no_handle_error(&format!("pinfs_close: {}", f.message));
            -f.errno.abs().max(1)
        }
        Err(payload) => {
            set_no_handle_error(&format!(
                "pinfs_close: internal error in pinfs (please report it): {}",
                panic_message(payload.as_ref())
            ));
            -libc::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    //! The entry points called from Rust (tests/mount/c_holder.rs calls them from C and
    //! checks the header's layout against [`super::abi`]).

    use super::*;

    #[test]
    fn null_pointers_and_bad_arguments_are_errors_not_crashes() {
        // SAFETY: every pointer passed is NULL or valid; that is what is being tested.
        unsafe {
            assert!(pinfs_connect(std::ptr::null()).is_null());
            assert_eq!(*libc::__errno_location(), libc::EINVAL);
            let msg = CStr::from_ptr(pinfs_last_error(std::ptr::null()));
            assert!(msg.to_string_lossy().contains("NULL"), "{msg:?}");
            let missing = c"/nonexistent/pinfs-capi-test";
            assert!(pinfs_connect(missing.as_ptr()).is_null());
            assert_eq!(*libc::__errno_location(), libc::ENOENT);
            let msg = CStr::from_ptr(pinfs_last_error(std::ptr::null())).to_string_lossy();
            assert!(msg.contains("/nonexistent/pinfs-capi-test"), "{msg}");
            let mut pin = std::mem::MaybeUninit::<PinfsPin>::uninit();
            assert_eq!(
                pinfs_pin(std::ptr::null_mut(), 0, 0, 1, 0, pin.as_mut_ptr()),
                -libc::EINVAL
            );
            let mut ev = PinfsEvent::default();
            assert_eq!(
                pinfs_next_event(std::ptr::null_mut(), 0, &mut ev),
                -libc::EINVAL
            );
            assert_eq!(pinfs_unpin(std::ptr::null_mut(), 1), -libc::EINVAL);
            let mut s = std::ptr::null_mut();
            assert_eq!(
                pinfs_status_json(std::ptr::null_mut(), &mut s),
                -libc::EINVAL
            );
            assert!(s.is_null());
            pinfs_free_string(std::ptr::null_mut());
            assert_eq!(pinfs_close(std::ptr::null_mut(), 0), 0);
            assert_eq!(
                CStr::from_ptr(pinfs_event_name(PINFS_EVENT_BREAK)),
                c"break"
            );
            assert_eq!(CStr::from_ptr(pinfs_event_name(99)), c"unknown");
        }
    }

    #[test]
    fn events_keep_every_field() {
        use crate::holder::protocol::{LeaseEvent, Timestamp};
        let e = Event::Lease(LeaseEvent {
            kind: EventKind::Break {
                deadline_ms: Some(1500),
            },
            holder: 3,
            pin: Some(7),
            ino: 12,
            offset: 4096,
            len: 8192,
            time: Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            },
        });
        let v = event_view(&e);
        assert_eq!(
            (v.kind, v.flags, v.holder, v.pin, v.ino, v.offset, v.len),
            (
                PINFS_EVENT_BREAK,
                PINFS_EVENT_HAS_PIN | PINFS_EVENT_HAS_DEADLINE,
                3,
                7,
                12,
                4096,
                8192
            )
        );
        assert_eq!(
            (v.deadline_ms, v.time_sec, v.time_nsec),
            (1500, 1_700_000_000, 5)
        );
        let never = Event::Lease(LeaseEvent {
            kind: EventKind::Break { deadline_ms: None },
            pin: None,
            ..e.lease().unwrap().clone()
        });
        assert_eq!(event_view(&never).flags, 0);
        let lost = event_view(&Event::Lost { count: 9 });
        assert_eq!((lost.kind, lost.lost), (PINFS_EVENT_LOST, 9));
    }
}

//! The filesystem's errors, each with the one errno a Linux local filesystem gives for it,
//! the level at which a failed request logs it, and the per-errno counts that `status` shows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::format::codec::DecodeError;
use crate::lease::LeaseError;
use crate::store::image::ImageError;

/// A failed filesystem operation.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// The name exists.
    #[error("file exists")]
    Exists,
    /// A directory was needed.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was needed.
    #[error("is a directory")]
    IsDir,
    /// Directory not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// A name is longer than 255 bytes.
    #[error("file name too long")]
    NameTooLong,
    /// No free blocks (or no journal space).
    #[error("no space left on device")]
    NoSpace,
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Not permitted.
    #[error("operation not permitted")]
    NotPermitted,
    /// An ioctl's argument is not readable in the caller's memory: `EFAULT`.
    #[error("bad address: the ioctl's argument cannot be read")]
    Fault,
    /// Not permitted by the inode's flags (`chattr +i`, `+a`): `EPERM`.
    #[error("operation not permitted: {0}")]
    Flagged(&'static str),
    /// Permission denied.
    #[error("permission denied")]
    Access,
    /// A rename or link across filesystems.
    #[error("cross-device link")]
    CrossDevice,
    /// A file would grow past the largest size.
    #[error("file too large")]
    FileTooBig,
    /// Too many links.
    #[error("too many links")]
    TooManyLinks,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoData,
    /// A buffer is too small.
    #[error("result too large for the buffer")]
    Range,
    /// An attribute value is too large.
    #[error("argument list too long")]
    TooBig,
    /// Not supported here.
    #[error("operation not supported")]
    NotSupported,
    /// An ioctl this filesystem does not know (`ENOTTY`).
    #[error("inappropriate ioctl for this filesystem")]
    NoTty,
    /// In use in a way that forbids the operation (`EBUSY`).
    #[error("device or resource busy: {0}")]
    Busy(&'static str),
    /// Read-only mount.
    #[error("read-only filesystem")]
    ReadOnly,
    /// `SEEK_DATA`/`SEEK_HOLE` past the end.
    #[error("no such device or address")]
    NoSuchOffset,
    /// Metadata that cannot be right.
    #[error("filesystem corrupt: {0}; run `pinfs fsck --repair`")]
    Corrupt(String),
    /// The image could not be used.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Mount found what fsck reports as errors in the image (the message says which, and
    /// how to repair it).
    #[error("{0}")]
    Refused(String),
    /// The filesystem is being unmounted.
    #[error("the filesystem is being unmounted")]
    Unmounting,
    /// A layout lease stood in the way.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Permission denied, with the reason a holder needs to hear.
    #[error("permission denied: {0}")]
    Denied(&'static str),
    /// A pin would pass its user's limit of pinned memory (`ENOMEM`, as RDMA memory
    /// registration fails past `RLIMIT_MEMLOCK`).
    #[error("{0}")]
    PinLimit(String),
    /// The daemon ran out of descriptors (`EMFILE`) or memory (`ENOMEM`) making a DAX window.
    #[error("no DAX window for the pin: {message}")]
    Resources {
        /// The errno that says what ran out.
        errno: i32,
        /// What failed.
        message: String,
    },
    /// The host filesystem under the image failed an I/O (`EIO`; `ENOSPC` when the host is
    /// full): what was being made durable is not.
    #[error("{}", host_message(what, source))]
    Host {
        /// What was being done.
        what: &'static str,
        /// The host's error.
        source: std::io::Error,
    },
    /// The filesystem is shut down: an earlier host failure left metadata that may not be
    /// durable, or a shutdown was asked for (`FS_IOC_SHUTDOWN`, `pinfs shutdown`). It takes
    /// nothing more (`EIO`, as XFS and ext4 after a forced shutdown). Unmount it; the image
    /// keeps its last durable state, which the next mount replays.
    #[error("the filesystem is shut down (its host failed, or a shutdown was asked for); unmount it, and the next mount replays its journal")]
    ShutDown,
}

/// What a [`FsError::Host`] says: a full host is not a failing one, and the way out is to
/// make room on it.
fn host_message(what: &str, source: &std::io::Error) -> String {
    if source.raw_os_error() == Some(libc::ENOSPC) {
        format!(
            "the image's host filesystem is full: {what}: {source}; free space on the filesystem that holds the image"
        )
    } else {
        format!("the image's host filesystem failed: {what}: {source}")
    }
}

impl From<DecodeError> for FsError {
    fn from(e: DecodeError) -> Self {
        FsError::Corrupt(e.0)
    }
}

impl FsError {
    /// This error, if it is a host failure other than a full host (`ENOSPC` leaves nothing
    /// half-done: it comes from provisioning, before any store).
    pub fn as_host_failure(&self) -> Option<&FsError> {
        match self {
            FsError::Host { source, .. } if source.raw_os_error() != Some(libc::ENOSPC) => {
                Some(self)
            }
            _ => None,
        }
    }

    /// A host I/O error while doing `what`.
    pub fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> FsError {
        move |source| FsError::Host { what, source }
    }

    /// The errno for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::Fault => libc::EFAULT,
            FsError::NotPermitted | FsError::Flagged(_) => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::CrossDevice => libc::EXDEV,
            FsError::FileTooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NoTty => libc::ENOTTY,
            FsError::ReadOnly => libc::EROFS,
            FsError::Busy(_) => libc::EBUSY,
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::Corrupt(_) | FsError::Image(_) | FsError::Refused(_) => libc::EIO,
            FsError::Lease(e) => e.errno(),
            FsError::Denied(_) => libc::EACCES,
            FsError::PinLimit(_) => libc::ENOMEM,
            FsError::Resources { errno, .. } => *errno,
            FsError::Unmounting => libc::ENODEV,
            FsError::Host { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                libc::ENOSPC
            }
            FsError::Host { .. } | FsError::ShutDown => libc::EIO,
        }
    }
}

impl FsError {
    /// The level at which a request that failed with this error logs it (once, where the
    /// reply is sent). Errors of normal operation (a lookup of a missing name, an exclusive
    /// create of an existing one, a permission check, a lease that stood in the way) are
    /// `DEBUG`; a filesystem, host or pin limit running out (`ENOSPC`, `ENOMEM`, `EMFILE`)
    /// is `INFO` or `WARN`; what should not happen (corrupt metadata, a host that failed, the
    /// shut-down state) is `ERROR`.
    pub fn log_level(&self) -> tracing::Level {
        use tracing::Level;
        match self {
            // A holder's own limit of pinned memory (RLIMIT_MEMLOCK, as RDMA registration).
            FsError::PinLimit(_) | FsError::Lease(LeaseError::OverLimit) => Level::INFO,
            FsError::NotFound
            | FsError::Exists
            | FsError::NotDir
            | FsError::IsDir
            | FsError::NotEmpty
            | FsError::NameTooLong
            | FsError::Invalid(_)
            | FsError::NotPermitted
            | FsError::Fault
            | FsError::Flagged(_)
            | FsError::Access
            | FsError::Denied(_)
            | FsError::CrossDevice
            | FsError::FileTooBig
            | FsError::TooManyLinks
            | FsError::NoData
            | FsError::Range
            | FsError::TooBig
            | FsError::NotSupported
            | FsError::NoTty
            | FsError::Busy(_)
            | FsError::ReadOnly
            | FsError::NoSuchOffset
            // The unmount in progress says so itself.
            | FsError::Unmounting
            // Busy, would block, again, deadlock, no such pin, fenced, closed on unmount: the
            // lease rules at work.
            | FsError::Lease(_) => Level::DEBUG,
            FsError::NoSpace | FsError::Resources { .. } => Level::WARN,
            FsError::Host { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Level::WARN
            }
            FsError::Corrupt(_)
            | FsError::Image(_)
            | FsError::Refused(_)
            | FsError::Host { .. }
            | FsError::ShutDown => Level::ERROR,
        }
    }
}

/// The name of errno `n` (`"ENOENT"`), for logs and `status`; `"errno N"` for one that has
/// no name here. `EWOULDBLOCK` is `EAGAIN`, `ENOTSUP` is `EOPNOTSUPP` and `EDEADLOCK` is
/// `EDEADLK` on Linux.
pub fn errno_name(n: i32) -> std::borrow::Cow<'static, str> {
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESTALE => "ESTALE",
        libc::EUCLEAN => "EUCLEAN",
        libc::EDQUOT => "EDQUOT",
        _ => return format!("errno {n}").into(),
    };
    name.into()
}

/// How many requests failed with each errno since mount. Counting is one relaxed atomic
/// add; nothing is locked.
#[derive(Debug)]
pub struct ErrnoCounts {
    /// Slot `n` counts errno `n` (Linux errnos run from 1 to 133); slot 0 counts any other.
    slots: [AtomicU64; ERRNO_SLOTS],
}

/// One slot per Linux errno, and slot 0.
const ERRNO_SLOTS: usize = 134;

impl Default for ErrnoCounts {
    fn default() -> Self {
        ErrnoCounts {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl ErrnoCounts {
    /// Counts one failure with `errno`; returns how many there have been with it, this one
    /// included.
    pub fn add(&self, errno: i32) -> u64 {
        let slot = usize::try_from(errno)
            .ok()
            .filter(|&n| n < ERRNO_SLOTS)
            .unwrap_or(0);
        self.slots[slot].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The errnos met so far, by name (`"ENOENT"`), with their counts; errnos never met are
    /// left out. Out-of-range errnos are counted together under `"other"`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(n, c)| {
                let c = c.load(Ordering::Relaxed);
                (c > 0).then(|| {
                    let name = if n == 0 {
                        "other".to_string()
                    } else {
                        errno_name(n as i32).into_owned()
                    };
                    (name, c)
                })
            })
            .collect()
    }
}

/// Shorthand for results of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

/// An error from storing into provisioned blocks and syncing the image (a checkpoint, moved
/// blocks). Its `ENOSPC` is not a full host refusing blocks (those were provisioned
/// before): it is the host reporting a write-back that failed, maybe of pages of other files
/// that it has dropped, and it is reported once. It is made an I/O error (`EIO`), so that
/// the filesystem shuts down as on any failed flush; a refusal for space would let a later
/// `fsync` of those files succeed.
pub(crate) fn lost_write_back(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        std::io::Error::other(format!("the host lost written data ({e})"))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// Normal-operation errnos are quiet, exhaustion is heard, failures are loud.
    #[test]
    fn each_kind_of_error_logs_at_its_level() {
        let host = |errno| FsError::Host {
            what: "syncing",
            source: std::io::Error::from_raw_os_error(errno),
        };
        let cases = [
            (FsError::NotFound, Level::DEBUG),
            (FsError::Exists, Level::DEBUG),
            (FsError::NotEmpty, Level::DEBUG),
            (FsError::NoData, Level::DEBUG),
            (FsError::Range, Level::DEBUG),
            (FsError::Access, Level::DEBUG),
            (FsError::NotPermitted, Level::DEBUG),
            (FsError::Flagged("immutable"), Level::DEBUG),
            (FsError::Denied("not yours"), Level::DEBUG),
            (FsError::Lease(LeaseError::Again), Level::DEBUG),
            (FsError::Lease(LeaseError::WouldBlock), Level::DEBUG),
            (FsError::Unmounting, Level::DEBUG),
            (FsError::Lease(LeaseError::Busy), Level::DEBUG),
            (FsError::PinLimit("over RLIMIT_MEMLOCK".into()), Level::INFO),
            (FsError::Lease(LeaseError::OverLimit), Level::INFO),
            (FsError::NoSpace, Level::WARN),
            (host(libc::ENOSPC), Level::WARN),
            (
                FsError::Resources {
                    errno: libc::EMFILE,
                    message: "memfd".into(),
                },
                Level::WARN,
            ),
            (host(libc::EIO), Level::ERROR),
            (FsError::ShutDown, Level::ERROR),
            (FsError::Corrupt("bad extent".into()), Level::ERROR),
        ];
        for (e, level) in cases {
            assert_eq!(e.log_level(), level, "{e:?}");
        }
    }

    #[test]
    fn errnos_are_counted_by_name() {
        let c = ErrnoCounts::default();
        assert_eq!(c.add(libc::ENOENT), 1);
        assert_eq!(c.add(libc::ENOENT), 2);
        assert_eq!(c.add(libc::EEXIST), 1);
        assert_eq!(c.add(-3), 1);
        assert_eq!(c.add(9999), 2);
        let snap = c.snapshot();
        let want: BTreeMap<String, u64> = [("EEXIST", 1), ("ENOENT", 2), ("other", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(snap, want);
        assert_eq!(errno_name(libc::EUCLEAN), "EUCLEAN");
        assert_eq!(errno_name(libc::EWOULDBLOCK), "EAGAIN");
        assert_eq!(errno_name(200), "errno 200");
    }
}

//! The filesystem's errors, each with the one errno a Linux local filesystem gives for it.

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
    /// An earlier host failure left metadata that may not be durable: the filesystem takes
    /// no more changes (`EIO`, as XFS and ext4 after a forced shutdown). Unmount it; the image
    /// keeps its last durable state, which the next mount replays.
    #[error("the filesystem was shut down after its host failed; unmount it and run `pinfs fsck`")]
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
            FsError::NotPermitted => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::CrossDevice => libc::EXDEV,
            FsError::FileTooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooBig => libc::E2BIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
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

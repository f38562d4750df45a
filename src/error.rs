//! The filesystem's errors, each with the one errno a Linux local filesystem gives for it.

use crate::codec::DecodeError;
use crate::image::ImageError;
use crate::lease::LeaseError;

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
}

impl From<DecodeError> for FsError {
    fn from(e: DecodeError) -> Self {
        FsError::Corrupt(e.0)
    }
}

impl FsError {
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
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::Corrupt(_) | FsError::Image(_) | FsError::Refused(_) => libc::EIO,
            FsError::Lease(e) => e.errno(),
            FsError::Denied(_) => libc::EACCES,
            FsError::PinLimit(_) => libc::ENOMEM,
            FsError::Resources { errno, .. } => *errno,
            FsError::Unmounting => libc::ENODEV,
        }
    }
}

/// Shorthand for results of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

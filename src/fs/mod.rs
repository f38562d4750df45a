//! The filesystem core: POSIX operations on inodes, with no FUSE in it.
//!
//! This file holds the types and the [`Fs`] struct; the operations are split by concern:
//! `mount` (open, unmount, remount, shutdown state), `commit` (transactions and the journal
//! retry), `space` (allocation, admission checks, checkpoint triggering, statfs), `table`
//! (the inode table), `namespace` (lookup, create, link, remove, rename, directories),
//! `attr` (getattr, setattr, permissions), `data` (open, read, write, fsync), `fallocate`
//! (fallocate, seek, copy_file_range), `xattr`, `pins` (pins and layout leases),
//! `background` (the worker and waits off request threads), [`options`] (mount options) and
//! [`status`] (what `pinfs status` shows).
//!
//! # Concurrency
//!
//! Inodes live in a sharded table, each behind its own lock. Every lock here (the gate, the
//! namespace lock, inode locks, the journal, the allocator, the superblock, and the leaves)
//! has its place in the one lock order of the daemon, documented and checked in
//! [`crate::sync`]; the reasons, in the core's terms: the `gate` is shared by every
//! operation that changes metadata and exclusive for a checkpoint; the `namespace` lock
//! serialises directory changes, so that the several inode locks they take can never
//! deadlock against each other; the lease lock comes after the inode locks (a pin holds its
//! inode's lock, then the lease lock, which takes the allocator inside through
//! [`Unpinner`]). `released` (pins the lease manager removed whose windows and allocator
//! references are still to go) is pushed to under the lease lock and drained with no lock
//! held (`Fs::finish_releases`), one thread at a time under `detaching`. The lease lock is
//! never held across a wait for a holder; breakers break before they take any lock here.
//!
//! # Breakers never wait on request threads
//!
//! A breaker (truncate down, punch, zero range) first tries its break without waiting
//! ([`Fs::try_setattr`], [`Fs::try_fallocate`]): ranges nobody pinned, and every outcome
//! that needs no holder's answer, complete inline. One that would have to wait for a holder
//! comes back undone (`None`), and the FUSE adapter moves its reply to a thread of its own
//! ([`Fs::wait_elsewhere`]) that runs the blocking operation, so a stuck holder never
//! occupies a request thread. Freeing a pinned unlinked inode works the same way off the
//! background worker: each one that must wait gets its own thread. At unmount (or SIGTERM,
//! [`Fs::end_waits`]) every such wait ends with `EIO`.
//!
//! The data path (`read`, and `write` over blocks that are already allocated and inside the
//! file) takes only its inode's lock: no global lock. Such writes change timestamps only in
//! memory (journalled at fsync, close or the next checkpoint, like `lazytime`). No lock is
//! held across I/O to a client: the FUSE adapter replies after the core returns.
//!
//! # Crash consistency
//!
//! Every metadata change is a transaction of [`Record`]s applied under the journal lock and
//! appended to the journal in the same critical section, so the journal's order is the order
//! in which the allocator saw frees and claims. A killed daemon leaves a journal whose valid
//! prefix replays to a consistent filesystem. Free blocks read as zeros: freed blocks are
//! punched out of the image, and a mount after a crash punches all free space again (data
//! written into blocks whose mapping never reached the journal).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinfs_allocator::{Allocator, Extent};

use crate::error::{FsError, FsResult};
use crate::format::record::{apply, encode_transaction, InodeSet, Record, Space};
use crate::lease::{
    Breaker, HolderId, HolderInfo, LeaseConfig, LeaseError, Leases, Notice, PinId, PinRequest,
    Unpinner,
};
use crate::log::checkpoint;
use crate::log::journal::Journal;
use crate::meta::extent_map::{ExtentMap, Mapping};
use crate::meta::inode::{
    Inode, Kind, Time, FIRST_COOKIE, MAX_FILE_SIZE, NAME_MAX, ROOT_INO, SYMLINK_MAX,
    XATTR_NAME_MAX, XATTR_VALUE_MAX,
};
use crate::store::image::{Image, Superblock, BLOCK_SIZE};
use crate::sync::{Condvar, Mutex, MutexGuard, Rank, RwLock, RwLockReadGuard, RwLockWriteGuard};
use crossbeam::channel::{Receiver, Sender};

/// When reads update the access time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtimeMode {
    /// Every read.
    Strict,
    /// When atime is older than mtime or ctime, or more than a day old (Linux's default).
    #[default]
    Relative,
    /// Never.
    Never,
}

/// Options of the core (the mount options that concern it).
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// No changes at all, not even to the superblock.
    pub read_only: bool,
    /// Access-time policy.
    pub atime: AtimeMode,
    /// How long to wait for the image lock held by a daemon that is still exiting.
    pub lock_wait: Duration,
    /// Layout lease settings.
    pub leases: LeaseConfig,
    /// POSIX ACLs (`system.posix_acl_access`/`_default`, see `acl.rs`): the kernel checks
    /// access against them (`FUSE_POSIX_ACL`), the core keeps the mode in step and applies
    /// default ACLs and the umask at create. Off (`noacl`): those names are `EOPNOTSUPP`.
    pub acl: bool,
    /// The image's mapping is a volatile cache (see `Image::make_volatile`): the image file
    /// holds only what was made durable, so that a shutdown without flush is a real power cut.
    pub volatile_cache: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            read_only: false,
            atime: AtimeMode::Relative,
            lock_wait: Duration::from_secs(10),
            leases: LeaseConfig::default(),
            acl: true,
            volatile_cache: false,
        }
    }
}

/// Who is asking (from the FUSE request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// User.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Process.
    pub pid: u32,
}

impl Caller {
    /// The superuser.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// Attributes as `stat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Kind.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u32,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number.
    pub rdev: u32,
    /// Bytes.
    pub size: u64,
    /// 512-byte units allocated.
    pub blocks: u64,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Change time.
    pub ctime: Time,
    /// Creation time.
    pub crtime: Time,
}

impl Attr {
    /// The inode's generation for file handles: from its creation time, so a number reused
    /// after a crash (an inode created and removed after the last checkpoint) gets another
    /// generation and an old handle gets `ESTALE`, not the new file. (The kernel keeps 32
    /// bits of it.)
    pub fn generation(&self) -> u64 {
        let g = (self.crtime.secs as u64).wrapping_mul(1_000_000_007) ^ self.crtime.nsecs as u64;
        g & 0xffff_ffff
    }

    fn of(i: &Inode) -> Attr {
        Attr {
            ino: i.ino,
            kind: i.kind,
            perm: i.perm,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            rdev: i.rdev,
            size: i.size,
            blocks: i.extents.blocks() * (BLOCK_SIZE / 512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
        }
    }
}

/// Attributes as `statx(2)` reports them: [`Attr`] (whose `crtime` is the birth time) and
/// the `STATX_ATTR_*` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statx {
    /// What `stat` reports.
    pub attr: Attr,
    /// `stx_attributes`: the `STATX_ATTR_*` bits set on the inode.
    pub attributes: u64,
    /// `stx_attributes_mask`: the `STATX_ATTR_*` bits pinfs reports, set or not.
    pub attributes_mask: u64,
}

/// A time to set: a given one or the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// This time.
    At(Time),
    /// The current time.
    Now,
}

/// The attribute changes of one `setattr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    /// New mode (permission bits).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// New change time.
    pub ctime: Option<Time>,
    /// The open file handle the change came through, if any (ftruncate).
    pub handle: Option<u64>,
}

/// One directory entry as `readdir` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode.
    pub ino: u64,
    /// Offset of the entry after this one.
    pub next: u64,
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: Vec<u8>,
}

/// Filesystem-wide counts for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Blocks in the data area.
    pub blocks: u64,
    /// Free blocks, pending frees included (see [`Fs::statfs`]).
    pub free: u64,
    /// Free blocks that data may have: those outside the metadata reserve (`f_bavail`).
    pub available: u64,
    /// Busy blocks (counted as used).
    pub busy: u64,
    /// Inodes in use.
    pub files: u64,
    /// Inodes that could still be made (one per data block, less those in use).
    pub files_free: u64,
}

pub(crate) mod acl;
mod attr;
mod background;
mod commit;
mod data;
pub mod exports;
mod fallocate;
pub(crate) mod flags;
mod mount;
mod namespace;
pub mod options;
mod pins;
mod shutdown;
mod space;
pub mod status;
mod table;
mod xattr;

use attr::{kill_privs, may_access, set_attr_record};
pub use pins::{PinAccess, PinGrant, PinnedExtent};
pub use shutdown::ShutdownFlush;
use space::{owned_ranges, used_extents};
use table::{Cell, Held, Table};

/// `fallocate` modes the kernel forwards.
pub mod falloc {
    /// Do not change the size.
    pub const KEEP_SIZE: i32 = 0x01;
    /// Deallocate the range.
    pub const PUNCH_HOLE: i32 = 0x02;
    /// Make the range read as zeros, keeping it allocated.
    pub const ZERO_RANGE: i32 = 0x10;
}

/// `renameat2` flags.
pub mod rename_flags {
    /// Fail if the target exists.
    pub const NOREPLACE: u32 = 1;
    /// Swap source and target.
    pub const EXCHANGE: u32 = 2;
    /// Leave a whiteout at the source: a character device 0:0 with mode 0, as overlayfs
    /// reads it, owned by the caller (since Linux 5.8 anyone may ask).
    pub const WHITEOUT: u32 = 4;
}

#[track_caller]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mounted filesystem core.
pub struct Fs {
    image: Image,
    sb: Mutex<Superblock>,
    table: Table,
    gate: RwLock<()>,
    namespace: Mutex<()>,
    journal: Mutex<Journal>,
    /// Image ranges of data that transactions not yet durable expose (an extending write's
    /// bytes, zeros past an old end of file, blocks a write just mapped): flushed before the
    /// journal is, so that no crash shows a size or a mapping without its data (ordered
    /// data, as ext4's `data=ordered`). Start -> end, merged (taken alone, or inside the
    /// journal lock; nothing is taken inside it).
    ordered: Mutex<BTreeMap<u64, u64>>,
    /// With a volatile cache: sizes that operations grew and the journal does not have yet,
    /// inode -> size. The flush that makes the journal durable appends them as `Grow`
    /// records after the ordered data is durable ([`Fs::flush_journal`]), so no crash state
    /// has a size whose data is not there, however the cache's lines were lost. An operation
    /// that journals the inode's size or frees it takes its entry out first (taken alone,
    /// or inside the journal lock; nothing is taken inside it).
    sizes: Mutex<BTreeMap<u64, u64>>,
    /// Sizes were taken out of `sizes` for a journal with no room: only a checkpoint makes
    /// them durable now (cleared by one).
    growth_unjournaled: AtomicBool,
    /// Checkpoints and journal flushes (that had new entries) since mount, for `status`.
    checkpoints: AtomicU64,
    journal_flushes: AtomicU64,
    alloc: Mutex<Allocator>,
    next_ino: AtomicU64,
    opts: FsOptions,
    checkpoint_wanted: AtomicBool,
    leases: Leases,
    notices: Mutex<Option<Receiver<Notice>>>,
    handles: Mutex<HashMap<u64, OpenHandle>>,
    next_fh: AtomicU64,
    work: (Sender<Work>, Receiver<Work>),
    /// Stops the journal flusher ([`Fs::start_background`]).
    flusher: (Sender<()>, Receiver<()>),
    stopping: AtomicBool,
    mount_dev: Mutex<Option<u64>>,
    stale: (Sender<Stale>, Receiver<Stale>),
    /// A kernel mount takes the stale notices (the core alone keeps none).
    kernel_listens: AtomicBool,
    /// Pins the lease manager removed whose windows and allocator references are still to go
    /// (lock order: taken alone, or inside the lease lock; nothing is taken inside it).
    released: Mutex<Vec<pins::Released>>,
    /// Held by the one thread draining `released`, across the detaching (taken with no
    /// other lock held; inode, allocator and window locks are taken inside it).
    detaching: Mutex<()>,
    /// Threads running breakers that wait for holders (see [`Fs::wait_elsewhere`]), and
    /// its condvar, signalled when the count drops.
    waiters: (Mutex<usize>, Condvar),
    /// Pinned unlinked inodes whose freeing waits on a thread of its own (one thread per
    /// inode however often it is asked for).
    reclaiming: Mutex<HashSet<u64>>,
    /// Set when the host failed to make metadata durable (journal, superblock, checkpoint):
    /// from then on no change is taken ([`FsError::ShutDown`]) and unmount writes no
    /// checkpoint, so the image keeps its last durable state.
    shut_down: AtomicBool,
    /// How a requested shutdown ([`Fs::shutdown`]) flushed (taken alone).
    shutdown_by: Mutex<Option<ShutdownFlush>>,
    /// Read-only now (`ro` at mount, or a remount since).
    read_only: AtomicBool,
    /// POSIX ACLs served: the option, unless the kernel turned `FUSE_POSIX_ACL` down.
    acl: AtomicBool,
    /// The mount-time writable set-up ran (provisioning, the superblock marked in use,
    /// orphans freed): a read-only mount does it at its first remount read-write.
    opened_rw: AtomicBool,
    /// The options the daemon mounted with, for a remount to compare against (taken alone).
    mounted_with: Mutex<Option<crate::fs::options::MountOptions>>,
    /// Open directory streams: handle -> the end cookie of the listing (taken alone).
    dir_streams: Mutex<HashMap<u64, u64>>,
    /// Why the last unmount could not leave a clean image, for the daemon's exit status.
    unmount_error: Mutex<Option<String>>,
    /// Commits still to be refused as if the journal were full ([`Fs::fail_next_commits`]).
    failing_commits: AtomicU32,
    /// Commits to let through before `failing_commits` applies ([`Fs::fail_commits_after`]).
    passing_commits: AtomicU32,
    /// Failed requests per errno since mount, for `status` ([`Fs::errors`]; atomics, no lock).
    errors: crate::error::ErrnoCounts,
    /// What holders exported to remote peers, as they report it (taken alone).
    exports: Mutex<exports::Exports>,
}

/// How long an unmount waits for the threads of breakers whose waits it ended.
const WAITER_DRAIN: Duration = Duration::from_secs(10);

/// Counts a waiter thread while it lives (also when its job panics).
struct WaiterSlot<'a>(&'a Fs);

impl Drop for WaiterSlot<'_> {
    fn drop(&mut self) {
        let (count, cv) = &self.0.waiters;
        let mut n = lock(count);
        *n = n.saturating_sub(1);
        drop(n);
        cv.notify_all();
    }
}

/// `None` for a breaker that would have to wait for a holder (it changed nothing), else its
/// result.
fn unless_waiting<T>(r: FsResult<T>) -> Option<FsResult<T>> {
    match r {
        Err(FsError::Lease(LeaseError::MustWait)) => None,
        r => Some(r),
    }
}

/// What the background worker does (operations that may wait for holders, off the FUSE
/// threads).
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Free a pinned unlinked inode, after breaking its leases.
    Reclaim(u64),
    /// Move the still-mapped blocks of revoked pins out of a file.
    Relocate(u64),
    /// End the worker.
    Stop,
}

/// What to do once the kernel has a [`Stale::Store`]'s bytes.
pub struct Then(pub Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for Then {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Then")
    }
}

/// What the kernel may hold cached that changed behind its back, for the daemon to tell it
/// (from a thread of its own: kernel notifications block).
#[derive(Debug)]
pub enum Stale {
    /// An inode's attributes (set-id bits cleared by a write, flags set by an ioctl), and
    /// what to run once the kernel has dropped them (the FUSE adapter answers a `chattr`
    /// there, so that a `stat` after it sees the new change time).
    Attributes(u64, Option<Then>),
    /// Bytes a direct write put at `offset` of an inode, to be copied into the pages of
    /// them that the kernel's page cache holds for shared mappings (`FUSE_NOTIFY_STORE`):
    /// a page a mapping faulted in while the write was on its way would otherwise keep
    /// the old bytes, and its write-back would later put them over the written ones.
    Store {
        /// The inode.
        ino: u64,
        /// First byte.
        offset: u64,
        /// The bytes written.
        data: Vec<u8>,
        /// Run once the kernel has them (the FUSE adapter answers the write there, so no
        /// request thread waits); dropped unrun if the notices end first.
        then: Then,
    },
    /// Bytes `offset..offset+len` of an inode's data: a pin's range when the pin is granted
    /// and when it goes, so that pages a shared mapping cached are read again and show what
    /// holders stored.
    Data {
        /// The inode.
        ino: u64,
        /// First byte.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Told (or dropped) once the kernel has done it.
        done: Option<Sender<()>>,
    },
}

/// An open file handle: what breakers need to know about the descriptor they came through.
#[derive(Debug, Clone, Copy)]
struct OpenHandle {
    ino: u64,
    flags: i32,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

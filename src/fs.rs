//! The filesystem core: POSIX operations on inodes, with no FUSE in it.
//!
//! # Concurrency
//!
//! Inodes live in a sharded table, each behind its own `RwLock`. Lock order, outermost first:
//!
//! 1. `gate` (shared by every operation that changes metadata, exclusive for a checkpoint);
//! 2. `namespace` (operations that change directories; serialises them, so that the several
//!    inode locks they take can never deadlock against each other);
//! 3. inode locks (at most one outside the namespace lock);
//! 4. `journal`; 5. `alloc`; then the handle and table shard locks, which are leaves.
//!
//! The lease lock sits between the inode locks and `alloc` (a pin holds its inode's lock,
//! then the lease lock, which takes `alloc` inside). The DAX windows' lock ([`crate::dax`])
//! comes after all of these: it is taken under an inode lock (opening and detaching windows)
//! or under `alloc` (punching freed blocks), and nothing is taken inside it. `released` (pins
//! the lease manager removed whose windows and allocator references are still to go) is a
//! leaf, pushed to under the lease lock and drained with no lock held (`Fs::finish_releases`),
//! by one thread at a time: `detaching` is held across the drain, taken with no other lock
//! held, and the inode, allocator and window locks are taken inside it.
//!
//! The waiter count and the set of inodes being reclaimed (`waiters`, `reclaiming`) are leaves
//! too, held only to count or to insert and remove. The lease lock ([`crate::lease`]) is
//! never held across a wait for a holder; breakers take it before any lock here.
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use pinfs_allocator::{Allocator, Extent};

use crate::checkpoint;
use crate::error::{FsError, FsResult};
use crate::extent_map::{ExtentMap, Mapping};
use crate::image::{Image, Superblock, BLOCK_SIZE};
use crate::inode::{
    Inode, Kind, Time, FIRST_COOKIE, MAX_FILE_SIZE, NAME_MAX, ROOT_INO, SYMLINK_MAX,
    XATTR_NAME_MAX, XATTR_VALUE_MAX,
};
use crate::journal::Journal;
use crate::lease::{
    Breaker, HolderId, HolderInfo, LeaseConfig, LeaseError, Leases, Notice, PinId, PinRequest,
    Unpinner,
};
use crate::record::{apply, encode_transaction, InodeSet, Record, Space};
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
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            read_only: false,
            atime: AtimeMode::Relative,
            lock_wait: Duration::from_secs(10),
            leases: LeaseConfig::default(),
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
    /// Free blocks.
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

/// `fallocate` modes the kernel forwards.
mod pins;
pub use pins::{PinAccess, PinGrant, PinnedExtent};

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
    /// Leave a whiteout (not supported).
    pub const WHITEOUT: u32 = 4;
}

/// An inode and its kernel reference counts.
#[derive(Debug)]
pub struct Cell {
    inode: RwLock<Inode>,
    lookups: AtomicU64,
    opens: AtomicU32,
}

impl Cell {
    fn read(&self) -> RwLockReadGuard<'_, Inode> {
        self.inode.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Inode> {
        self.inode.write().unwrap_or_else(|e| e.into_inner())
    }
}

const SHARDS: usize = 64;

/// The inode table, sharded so that lookups of different inodes do not contend.
struct Table {
    shards: Vec<RwLock<HashMap<u64, Arc<Cell>>>>,
}

impl Table {
    fn new(inodes: HashMap<u64, Inode>) -> Table {
        let t = Table {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        };
        for (_, i) in inodes {
            t.insert(i);
        }
        t
    }
    fn shard(&self, ino: u64) -> &RwLock<HashMap<u64, Arc<Cell>>> {
        &self.shards[(ino as usize) % SHARDS]
    }
    fn get(&self, ino: u64) -> FsResult<Arc<Cell>> {
        self.shard(ino)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned()
            .ok_or(FsError::NotFound)
    }
    fn insert(&self, i: Inode) -> Arc<Cell> {
        let cell = Arc::new(Cell {
            inode: RwLock::new(i),
            lookups: AtomicU64::new(0),
            opens: AtomicU32::new(0),
        });
        let ino = cell.read().ino;
        self.shard(ino)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino, cell.clone());
        cell
    }
    fn remove(&self, ino: u64) {
        self.shard(ino)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
    }
    fn all(&self) -> Vec<Arc<Cell>> {
        let mut v: Vec<(u64, Arc<Cell>)> = Vec::new();
        for s in &self.shards {
            v.extend(
                s.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(k, c)| (*k, c.clone())),
            );
        }
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, c)| c).collect()
    }
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The inodes one operation holds write locks on.
struct Held<'a> {
    guards: Vec<RwLockWriteGuard<'a, Inode>>,
    added: Vec<Inode>,
    removed: Vec<u64>,
}

impl<'a> Held<'a> {
    /// Write-locks `cells` (duplicates once) in address order. Any fixed order would do:
    /// operations that lock several inodes all hold the namespace lock.
    fn lock(cells: &'a [Arc<Cell>]) -> Held<'a> {
        let mut order: Vec<&'a Arc<Cell>> = cells.iter().collect();
        order.sort_by_key(|c| Arc::as_ptr(c) as usize);
        order.dedup_by_key(|c| Arc::as_ptr(c) as usize);
        let mut guards: Vec<RwLockWriteGuard<'a, Inode>> =
            order.into_iter().map(|c| c.write()).collect();
        guards.sort_by_key(|g| g.ino);
        Held {
            guards,
            added: Vec::new(),
            removed: Vec::new(),
        }
    }
    fn get(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.guards
            .iter_mut()
            .find(|g| g.ino == ino)
            .map(|g| &mut **g)
            .ok_or(FsError::NotFound)
    }
}

impl InodeSet for Held<'_> {
    fn inode(&mut self, ino: u64) -> FsResult<&mut Inode> {
        if let Some(pos) = self.added.iter().position(|i| i.ino == ino) {
            return Ok(&mut self.added[pos]);
        }
        self.get(ino)
            .map_err(|_| FsError::Corrupt(format!("inode {ino} changed without its lock")))
    }
    fn add(&mut self, inode: Inode) {
        self.added.push(inode);
    }
    fn remove(&mut self, ino: u64) -> FsResult<Inode> {
        let i = self.inode(ino)?;
        let taken = i.clone();
        i.extents = Default::default();
        self.removed.push(ino);
        Ok(taken)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Can `name` be added to directory `p`?
fn check_new_name(p: &Inode, name: &[u8]) -> FsResult<()> {
    if p.kind != Kind::Dir {
        return Err(FsError::NotDir);
    }
    if p.nlink == 0 {
        return Err(FsError::NotFound); // the directory was removed
    }
    if p.dir.get(name).is_some() {
        return Err(FsError::Exists);
    }
    Ok(())
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(FsError::Invalid("bad file name"));
    }
    Ok(())
}

/// Permission bits after a write, truncate or fallocate by `caller` of a file whose group is
/// `gid` (the kernel leaves clearing set-uid/set-gid to us: `FUSE_HANDLE_KILLPRIV`). As in
/// Linux (`setattr_should_drop_suidgid`), for a caller other than root: set-uid goes; set-gid
/// goes with group execute, and without it when the caller is not in the file's group (its
/// supplementary groups read from /proc, FUSE giving only the primary one).
fn kill_privs(perm: u32, gid: u32, caller: Caller) -> u32 {
    if caller.uid == 0 || perm & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return perm;
    }
    let mut p = perm & !libc::S_ISUID;
    if p & libc::S_ISGID != 0
        && (p & libc::S_IXGRP != 0
            || (caller.gid != gid && !crate::status::groups_of(caller.pid).contains(&gid)))
    {
        p &= !libc::S_ISGID;
    }
    p
}

fn set_attr_record(i: &Inode) -> Record {
    Record::SetAttr {
        ino: i.ino,
        perm: i.perm,
        uid: i.uid,
        gid: i.gid,
        atime: i.atime,
        mtime: i.mtime,
        ctime: i.ctime,
    }
}

/// The mounted filesystem core.
pub struct Fs {
    image: Image,
    sb: Mutex<Superblock>,
    table: Table,
    gate: RwLock<()>,
    namespace: Mutex<()>,
    journal: Mutex<Journal>,
    alloc: Mutex<Allocator>,
    next_ino: AtomicU64,
    opts: FsOptions,
    checkpoint_wanted: AtomicBool,
    leases: Leases,
    notices: Mutex<Option<Receiver<Notice>>>,
    handles: Mutex<HashMap<u64, OpenHandle>>,
    next_fh: AtomicU64,
    work: (Sender<Work>, Receiver<Work>),
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
    /// Read-only now (`ro` at mount, or a remount since).
    read_only: AtomicBool,
    /// The mount-time writable set-up ran (provisioning, the superblock marked in use,
    /// orphans freed): a read-only mount does it at its first remount read-write.
    opened_rw: AtomicBool,
    /// The options the daemon mounted with, for a remount to compare against (taken alone).
    mounted_with: Mutex<Option<crate::options::MountOptions>>,
    /// Open directory streams: handle -> the end cookie of the listing (taken alone).
    dir_streams: Mutex<HashMap<u64, u64>>,
    /// Inodes the kernel's page cache may hold pages of: it read some for a mapping (file
    /// data is otherwise direct I/O), and has not forgotten the inode since. A direct write
    /// to one is stored into those pages too ([`Fs::store_for_mappings`]). Taken alone.
    page_cached: Mutex<HashSet<u64>>,
    /// Why the last unmount could not leave a clean image, for the daemon's exit status.
    unmount_error: Mutex<Option<String>>,
    /// Commits still to be refused as if the journal were full ([`Fs::fail_next_commits`]).
    failing_commits: AtomicU32,
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

/// What the kernel may hold cached that changed behind its back, for the daemon to tell it
/// (from a thread of its own: kernel notifications block).
#[derive(Debug, Clone)]
pub enum Stale {
    /// An inode's attributes (set-id bits cleared by a write).
    Attributes(u64),
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
        /// Told (or dropped) once the kernel has them.
        done: Sender<()>,
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

impl Fs {
    /// Formats `path` as an empty filesystem of `size` bytes.
    pub fn mkfs(path: &Path, size: u64, force: bool) -> FsResult<()> {
        Image::create(path, size, force)?;
        let fs = Fs::open(
            path,
            FsOptions {
                lock_wait: Duration::ZERO,
                ..Default::default()
            },
        )?;
        fs.unmount()
    }

    /// Opens an image: loads its checkpoint, replays its journal, validates the result with
    /// fsck's own pass ([`crate::fsck::examine`]) and refuses it on any error that pass
    /// reports (but a stale free list), then frees orphans. The allocator comes from what
    /// owns blocks, not from the stored free list.
    pub fn open(path: &Path, opts: FsOptions) -> FsResult<Fs> {
        let (image, mut sb) = Image::open(path, opts.lock_wait)?;
        let mut loaded =
            checkpoint::load(&image, &sb).map_err(|e| {
                match crate::fsck::with_damage(&image, e) {
                    FsError::Corrupt(why) => FsError::Corrupt(format!("{}: {why}", path.display())),
                    other => other,
                }
            })?;
        let report = crate::fsck::examine(&image, &sb, &mut loaded, false);
        let errors = report.refused_by_mount();
        if !errors.is_empty() {
            let n = errors.len();
            let shown: Vec<&str> = errors.iter().take(3).map(|e| e.as_str()).collect();
            return Err(FsError::Refused(format!(
                "{}: the image has {n} error{} that fsck reports: {}{}; mount refused, run `pinfs fsck --repair {}`",
                path.display(),
                if n == 1 { "" } else { "s" },
                shown.join("; "),
                if n > 3 { format!("; and {} more", n - 3) } else { String::new() },
                path.display()
            )));
        }
        // The allocator is what ownership says (what examine just compared the stored free
        // list with), never the stored list: after an unclean shutdown that list holds the
        // busy blocks of holders that are gone, and after a clean one it can only be wrong.
        loaded.alloc = checkpoint::allocator_from_owners(&sb, loaded.inodes.values());
        let was_clean = sb.clean;
        let read_only = opts.read_only;
        let (notice_tx, notice_rx) = crossbeam::channel::unbounded();
        if !opts.read_only {
            provision_in_use(&image, &sb, &loaded.alloc)?;
            sb.generation += 1;
            sb.clean = false;
            image
                .write_superblock(&sb)
                .map_err(FsError::host("writing the superblock"))?;
        }
        let fs = Fs {
            image,
            sb: Mutex::new(sb),
            table: Table::new(loaded.inodes),
            gate: RwLock::new(()),
            namespace: Mutex::new(()),
            journal: Mutex::new(loaded.journal),
            alloc: Mutex::new(loaded.alloc),
            next_ino: AtomicU64::new(loaded.next_ino),
            checkpoint_wanted: AtomicBool::new(false),
            leases: Leases::new(opts.leases, Some(notice_tx)),
            opts,
            notices: Mutex::new(Some(notice_rx)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            work: crossbeam::channel::unbounded(),
            stopping: AtomicBool::new(false),
            mount_dev: Mutex::new(None),
            stale: crossbeam::channel::unbounded(),
            kernel_listens: AtomicBool::new(false),
            released: Mutex::new(Vec::new()),
            detaching: Mutex::new(()),
            waiters: (Mutex::new(0), Condvar::new()),
            reclaiming: Mutex::new(HashSet::new()),
            shut_down: AtomicBool::new(false),
            read_only: AtomicBool::new(read_only),
            opened_rw: AtomicBool::new(!read_only),
            dir_streams: Mutex::new(HashMap::new()),
            page_cached: Mutex::new(HashSet::new()),
            mounted_with: Mutex::new(None),
            unmount_error: Mutex::new(None),
            failing_commits: AtomicU32::new(0),
        };
        // Data allocations leave room for the next checkpoint from the start.
        lock(&fs.alloc).set_reserve(checkpoint::reserve_for(&lock(&fs.sb)));
        if !fs.ro() {
            if !was_clean {
                let alloc = lock(&fs.alloc);
                for e in alloc.free_extents() {
                    fs.image.discard(e.start * BLOCK_SIZE, e.len * BLOCK_SIZE);
                }
            }
            fs.reclaim_all_orphans()?;
        }
        tracing::info!(image = %path.display(), replayed = loaded.replayed, clean = was_clean, "mounted");
        Ok(fs)
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Records who holds the image.
    pub fn set_owner(&self, mountpoint: &str) {
        if !self.ro() {
            self.image.write_owner_note(std::process::id(), mountpoint);
        }
    }

    /// Frees orphans and writes a clean checkpoint. The filesystem must not be used after.
    /// On failure the image keeps its previous consistent state (the next mount replays the
    /// journal), and [`Fs::unmount_error`] says why.
    pub fn unmount(&self) -> FsResult<()> {
        let r = self.unmount_now();
        if let Err(e) = &r {
            tracing::error!(
                image = %self.image.path().display(),
                "the unmount could not write a clean image: {e}; the image keeps its previous consistent state, which the next mount replays"
            );
            *lock(&self.unmount_error) = Some(e.to_string());
        }
        r
    }

    /// Why the last [`Fs::unmount`] failed, if it did.
    pub fn unmount_error(&self) -> Option<String> {
        lock(&self.unmount_error).clone()
    }

    fn unmount_now(&self) -> FsResult<()> {
        // Breakers still waiting for holders get EIO, and their threads are gone before
        // anything below changes the filesystem under them.
        self.end_waits();
        self.drain_waiters(WAITER_DRAIN);
        if self.ro() {
            return Ok(());
        }
        self.stop_background();
        for (holder, _, _) in self.leases.snapshot().holders {
            self.leases.holder_gone(holder, self);
        }
        self.finish_releases();
        for c in self.table.all() {
            c.lookups.store(0, Ordering::SeqCst);
            c.opens.store(0, Ordering::SeqCst);
        }
        self.is_up()?;
        self.reclaim_all_orphans()?;
        // The owner note stays: until this process exits and the lock is free, a refused
        // mount can still say who is finishing an unmount.
        self.make_clean()
    }

    fn reclaim_all_orphans(&self) -> FsResult<()> {
        let orphans: Vec<u64> = self
            .table
            .all()
            .iter()
            .map(|c| c.read())
            .filter(|i| i.nlink == 0)
            .map(|i| i.ino)
            .collect();
        for ino in orphans {
            self.maybe_reclaim(ino)?;
        }
        Ok(())
    }

    /// Checks, with the filesystem live, what the block accounting must always keep: the
    /// allocator's own invariants (free + used + busy = total; no block both free and
    /// pinned), and against the files: no image block mapped twice, none mapped and free,
    /// none mapped and busy. Takes the gate like a checkpoint (metadata changes wait
    /// meanwhile). Returns the blocks that files map.
    pub fn check_space(&self) -> Result<u64, String> {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let cells = self.table.all();
        let mut mapped: Vec<(u64, u64, u64)> = Vec::new(); // (image block, blocks, inode)
        for c in &cells {
            let i = c.read();
            mapped.extend(i.extents.iter().map(|m| (m.image_block, m.len, i.ino)));
        }
        mapped.sort_unstable();
        for w in mapped.windows(2) {
            let ((a, alen, ai), (b, _, bi)) = (w[0], w[1]);
            if b < a + alen {
                return Err(format!(
                    "image block {b} is mapped twice (inodes {ai} and {bi})"
                ));
            }
        }
        let alloc = lock(&self.alloc);
        alloc.check().map_err(|e| format!("allocator: {e}"))?;
        let busy = alloc.busy_extents();
        for &(start, len, ino) in &mapped {
            let e = Extent { start, len };
            if alloc.is_any_free(e) {
                return Err(format!(
                    "inode {ino} maps image blocks {start}+{len}, and some of them are free"
                ));
            }
            if let Some(b) = busy
                .iter()
                .find(|b| b.extent.start < e.end() && e.start < b.extent.end())
            {
                return Err(format!(
                    "inode {ino} maps image blocks {start}+{len}, and blocks {}+{} of them are busy",
                    b.extent.start, b.extent.len
                ));
            }
        }
        Ok(mapped.iter().map(|m| m.1).sum())
    }

    /// Test hook: the next `n` transactions are refused as if the journal had no room for
    /// them (`ENOSPC`, nothing applied), the failure that operations must survive with
    /// nothing changed but that the metadata reserve and the journal's soft limit make hard
    /// to reach on purpose.
    pub fn fail_next_commits(&self, n: u32) {
        self.failing_commits.store(n, Ordering::SeqCst);
    }

    /// Runs an operation that changes metadata. When its transaction found the journal full
    /// (the operation changed nothing, since the fallible part comes first, and asked for a
    /// checkpoint), writes the checkpoint and runs it once more: the soft limit normally
    /// checkpoints before the journal fills, but operations already past their admission can
    /// fill the rest, and a delete must not fail for that.
    fn with_journal_room<T>(&self, mut op: impl FnMut() -> FsResult<T>) -> FsResult<T> {
        match op() {
            Err(FsError::NoSpace) if self.checkpoint_wanted.load(Ordering::SeqCst) => {
                self.checkpoint(false).and_then(|()| op())
            }
            r => r,
        }
    }

    /// Writes a checkpoint now.
    pub fn checkpoint(&self, clean: bool) -> FsResult<()> {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let cells = self.table.all();
        let guards: Vec<RwLockReadGuard<'_, Inode>> = cells.iter().map(|c| c.read()).collect();
        let mut journal = lock(&self.journal);
        let mut alloc = lock(&self.alloc);
        let mut sb = lock(&self.sb);
        self.is_up()?;
        checkpoint::write(
            &self.image,
            &mut sb,
            &mut alloc,
            &mut journal,
            self.next_ino.load(Ordering::SeqCst),
            guards.iter().map(|g| &**g),
            clean,
        )
        .inspect_err(|e| {
            // A full host refused the blob's blocks before anything changed; any other
            // host failure may have lost what the image's page cache held, or left the
            // superblock switch unconfirmed: nothing more may be stored on top of that.
            if let Some(FsError::Host { what, source }) = e.as_host_failure() {
                self.shut_down.store(true, Ordering::SeqCst);
                tracing::error!(
                    "checkpoint failed ({what}: {source}): the filesystem is shut down"
                );
            }
        })?;
        self.checkpoint_wanted.store(false, Ordering::SeqCst);
        tracing::debug!(generation = sb.generation, "checkpoint written");
        Ok(())
    }

    /// Writes the checkpoint the journal wants. One that finds no room (an image from before
    /// the metadata reserve, or space fragmented past it) does not stop the operation: it
    /// still goes to the journal while that has room, so deletes and truncates that would
    /// make the room still work.
    fn maybe_checkpoint(&self) -> FsResult<()> {
        if self.checkpoint_wanted.load(Ordering::Relaxed) {
            match self.checkpoint(false) {
                Err(FsError::NoSpace) => {
                    tracing::warn!("no room for a checkpoint; the journal takes what it can")
                }
                r => r?,
            }
        }
        Ok(())
    }

    fn writable(&self) -> FsResult<()> {
        if self.ro() {
            return Err(FsError::ReadOnly);
        }
        self.is_up()?;
        self.maybe_checkpoint()
    }

    /// Records the options the mount was made with (see [`crate::remount`]).
    pub fn set_mount_options(&self, o: crate::options::MountOptions) {
        *lock(&self.mounted_with) = Some(o);
    }

    /// The options the mount was made with (the defaults if none were recorded).
    pub fn mount_options(&self) -> crate::options::MountOptions {
        lock(&self.mounted_with).clone().unwrap_or_default()
    }

    /// Read-only now?
    fn ro(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    /// Remounts read-only or read-write (the mount's kernel flag is the caller's to change).
    ///
    /// Read-only: refused with `EBUSY` while a writable pin is granted (its holder may store
    /// into the file); otherwise new changes fail with `EROFS` from now on, the changes in
    /// flight finish, and a clean checkpoint makes the image what an unmount would leave.
    /// Read-write: the superblock is marked in use again (and, for a mount that was made
    /// read-only, the set-up a writable mount does at open runs now).
    pub fn remount(&self, read_only: bool) -> FsResult<()> {
        self.is_up()?;
        if read_only {
            if self.ro() {
                return Ok(());
            }
            if self
                .leases
                .snapshot()
                .pins
                .iter()
                .any(|p| p.writable && p.live())
            {
                return Err(FsError::Busy("a writable pin is granted"));
            }
            self.read_only.store(true, Ordering::SeqCst);
            let done = self.make_clean();
            if done.is_err() {
                self.read_only.store(false, Ordering::SeqCst);
            }
            return done;
        }
        if !self.ro() {
            return Ok(());
        }
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut sb = lock(&self.sb);
        if !self.opened_rw.load(Ordering::SeqCst) {
            provision_in_use(&self.image, &sb, &lock(&self.alloc))?;
        }
        let mut next = sb.clone();
        next.generation += 1;
        next.clean = false;
        self.image
            .write_superblock(&next)
            .map_err(|e| self.host_failed("writing the superblock", e))?;
        *sb = next;
        drop(sb);
        drop(_gate);
        self.read_only.store(false, Ordering::SeqCst);
        if !self.opened_rw.swap(true, Ordering::SeqCst) {
            self.reclaim_all_orphans()?;
        }
        Ok(())
    }

    /// Leaves the image as an unmount would, the mount staying: windowed blocks written
    /// back, everything in the image's page cache on the device, a clean checkpoint.
    fn make_clean(&self) -> FsResult<()> {
        {
            // Windowed blocks that files own go back into the image file; free ones stay zero.
            let alloc = lock(&self.alloc);
            let free: Vec<Extent> = alloc.free_extents().collect();
            self.image
                .write_back_windows(|off, len| owned_ranges(&free, off, len))
                .and_then(|()| self.image.sync_host())
                .map_err(|e| self.host_failed("making the image durable", e))?;
        }
        self.checkpoint(true)
    }

    /// [`Fs::writable`] for changes that give space back (unlink, rmdir, truncate): a due
    /// checkpoint that cannot get its blocks (the image or the host under it is full) does
    /// not stop them. They go into the journal room left past its soft limit, and the space
    /// they free (punched back to the host) is what lets the next checkpoint be written;
    /// refusing them would leave a full filesystem where nothing can be deleted.
    fn writable_to_free(&self) -> FsResult<()> {
        match self.writable() {
            Err(FsError::NoSpace) => Ok(()),
            Err(e @ FsError::Host { .. }) if e.as_host_failure().is_none() => Ok(()),
            r => r,
        }
    }

    /// The error for an allocation that came up short: `ENOSPC`, or `EIO` when it was the
    /// host that failed (and shut the filesystem down).
    fn short_allocation(&self) -> FsError {
        if self.is_shut_down() {
            FsError::ShutDown
        } else {
            FsError::NoSpace
        }
    }

    /// `Err(ShutDown)` once a host failure shut the filesystem down.
    pub(crate) fn is_up(&self) -> FsResult<()> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(FsError::ShutDown);
        }
        Ok(())
    }

    /// The host failed to make something durable: shuts the filesystem down (a write-back
    /// error is reported once, so no later success can be trusted) and returns the error for
    /// the caller (`EIO`).
    fn host_failed(&self, what: &'static str, source: std::io::Error) -> FsError {
        // Flushes are of provisioned blocks: an ENOSPC from one is a write-back the host
        // lost, not a full host (`EIO` to the caller).
        let source = crate::error::lost_write_back(source);
        if !self.shut_down.swap(true, Ordering::SeqCst) {
            tracing::error!(
                image = %self.image.path().display(),
                "{what} failed: {source}; the filesystem is shut down (every change fails with EIO), the image keeps its last durable state"
            );
        }
        FsError::Host { what, source }
    }

    /// Whether a host failure shut the filesystem down.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Operations that grow the metadata (new inodes, names, extended attributes) need room
    /// for the checkpoints that will hold them ([`checkpoint::growth_needs`]): without it,
    /// a later checkpoint might not fit, and then deletes and unmount would fail too. When
    /// space is short, a checkpoint now (which empties the journal) may make the room;
    /// otherwise `ENOSPC`, as when a filesystem runs out of inodes. Called with no lock held.
    fn room_to_grow(&self) -> FsResult<()> {
        let fits = || {
            let used = lock(&self.journal).used();
            let needs = checkpoint::growth_needs(&lock(&self.sb), used);
            (used, lock(&self.alloc).holds(needs))
        };
        match fits() {
            (_, true) => Ok(()),
            (0, false) => Err(FsError::NoSpace),
            (_, false) => {
                self.checkpoint(false)?;
                match fits() {
                    (_, true) => Ok(()),
                    _ => Err(FsError::NoSpace),
                }
            }
        }
    }

    fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies and journals one transaction. The caller holds the gate and the inode locks.
    fn commit(&self, held: &mut Held<'_>, records: &[Record]) -> FsResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.is_up()?;
        let payload = encode_transaction(records);
        let mut journal = lock(&self.journal);
        let injected = self
            .failing_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected || !journal.has_room(payload.len()) {
            self.checkpoint_wanted.store(true, Ordering::SeqCst);
            return Err(FsError::NoSpace);
        }
        {
            let mut alloc = lock(&self.alloc);
            let mut space = Space {
                alloc: &mut alloc,
                image: &self.image,
                replay: false,
            };
            for rec in records {
                apply(rec, held, &mut space)?;
            }
        }
        // Cannot fail: room was checked under the same lock. NoSpace from commit always
        // means nothing was applied.
        journal
            .append(&self.image, &payload)
            .map_err(|_| FsError::Corrupt("journal filled under its lock".into()))?;
        if journal.wants_checkpoint() {
            self.checkpoint_wanted.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn publish(&self, held: &mut Held<'_>) -> Vec<Arc<Cell>> {
        let added = std::mem::take(&mut held.added)
            .into_iter()
            .map(|i| self.table.insert(i))
            .collect();
        for ino in std::mem::take(&mut held.removed) {
            self.table.remove(ino);
        }
        added
    }

    // ----- attributes and lookup -----

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        Ok(Attr::of(&self.table.get(ino)?.read()))
    }

    /// Looks `name` up in `parent` and takes a kernel reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let ino = {
            let p = self.table.get(parent)?;
            let p = p.read();
            // "." of any inode is the inode itself: the kernel asks for it to resolve a file
            // handle whose inode it no longer caches (FUSE_EXPORT_SUPPORT).
            if p.kind != Kind::Dir && name != b"." {
                return Err(FsError::NotDir);
            }
            match name {
                b"." => p.ino,
                b".." => p.parent,
                _ => p.dir.get(name).ok_or(FsError::NotFound)?.ino,
            }
        };
        let cell = self.table.get(ino)?;
        let i = cell.read();
        if i.nlink == 0 {
            return Err(FsError::NotFound);
        }
        cell.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(Attr::of(&i))
    }

    /// Drops `n` kernel references on `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if let Ok(cell) = self.table.get(ino) {
            let left = cell
                .lookups
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                    Some(l.saturating_sub(n))
                });
            if left.is_ok_and(|l| l <= n) {
                // The kernel evicted the inode, and its page cache with it.
                lock(&self.page_cached).remove(&ino);
            }
            if left.is_ok_and(|l| l <= n) && !self.ro() {
                if let Err(e) = self.maybe_reclaim(ino) {
                    tracing::error!(ino, "freeing an orphan failed: {e}");
                }
            }
        }
    }

    /// Frees `ino` if it has no links, no open handles and no kernel references.
    fn maybe_reclaim(&self, ino: u64) -> FsResult<()> {
        match self.table.get(ino) {
            Ok(cell) if Self::reclaimable(&cell) => {}
            _ => return Ok(()),
        }
        if self.leases.has_pins(ino) && !self.stopping.load(Ordering::SeqCst) {
            // Freeing the blocks breaks the leases on them, which may wait for holders: not
            // on this (FUSE request) thread; the worker tries, and hands a wait to a thread
            // of its own.
            let _ = self.work.0.send(Work::Reclaim(ino));
            return Ok(());
        }
        self.reclaim_now(ino)
    }

    /// No names, no open handles, no kernel references: the inode's storage can go.
    fn reclaimable(cell: &Cell) -> bool {
        cell.read().nlink == 0
            && cell.lookups.load(Ordering::SeqCst) == 0
            && cell.opens.load(Ordering::SeqCst) == 0
    }

    fn reclaim_now(&self, ino: u64) -> FsResult<()> {
        let _gate = self.gate();
        let _ns = lock(&self.namespace);
        let Ok(cell) = self.table.get(ino) else {
            return Ok(());
        };
        if !Self::reclaimable(&cell) {
            return Ok(());
        }
        let cells = [cell];
        let mut held = Held::lock(&cells);
        self.commit(&mut held, &[Record::Free { ino }])?;
        self.publish(&mut held);
        Ok(())
    }

    /// Changes attributes (chmod, chown, truncate, utimensat). A truncate down may wait for
    /// holders: not on a request thread (see [`Fs::try_setattr`]).
    pub fn setattr(&self, ino: u64, req: SetAttr, caller: Caller) -> FsResult<Attr> {
        self.setattr_as(ino, req, caller, true)
    }

    /// [`Fs::setattr`] that never waits for a holder: `None` when the truncate would have to
    /// (nothing was changed); the caller then runs [`Fs::setattr`] where it may wait.
    pub fn try_setattr(&self, ino: u64, req: SetAttr, caller: Caller) -> Option<FsResult<Attr>> {
        unless_waiting(self.setattr_as(ino, req, caller, false))
    }

    fn setattr_as(&self, ino: u64, req: SetAttr, caller: Caller, wait: bool) -> FsResult<Attr> {
        self.with_journal_room(|| self.setattr_as_once(ino, req, caller, wait))
    }

    fn setattr_as_once(
        &self,
        ino: u64,
        req: SetAttr,
        caller: Caller,
        wait: bool,
    ) -> FsResult<Attr> {
        // Truncating gives space back: a checkpoint refused for space does not stop it.
        if req.size.is_some() {
            self.writable_to_free()?;
        } else {
            self.writable()?;
        }
        // Truncating down changes the layout of the blocks past the new end: break the leases
        // on them first, before any lock is taken (the break may wait for holders).
        let _break = match req.size {
            Some(size) if size < self.table.get(ino)?.read().size => Some(self.break_layout(
                ino,
                size.div_ceil(BLOCK_SIZE),
                u64::MAX,
                caller,
                req.handle,
                wait,
            )?),
            _ => None,
        };
        if _break.is_some() {
            self.relocate_revoked(ino)?;
        }
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        let now = Time::now();
        let mut records = Vec::new();
        let (mut perm, mut uid, mut gid) = (i.perm, i.uid, i.gid);
        if let Some(mode) = req.mode {
            perm = mode & 0o7777;
        }
        let owner_change =
            req.uid.is_some_and(|u| u != i.uid) || req.gid.is_some_and(|g| g != i.gid);
        uid = req.uid.unwrap_or(uid);
        gid = req.gid.unwrap_or(gid);
        if (req.uid.is_some() || req.gid.is_some()) && i.kind != Kind::Dir && req.mode.is_none() {
            // chown(2) of a non-directory, by anyone and even to the same owner (Linux since
            // 2.2.13; the kernel leaves it to a daemon with FUSE_HANDLE_KILLPRIV): set-uid
            // goes; set-gid goes when group-exec makes it a set-gid executable, or when the
            // caller is neither in the file's group nor privileged (the kernel's
            // `setattr_should_drop_sgid`). Set-gid without group-exec is mandatory locking's
            // mark, which stays.
            perm &= !libc::S_ISUID;
            let in_group = caller.uid == 0
                || caller.gid == i.gid
                || crate::status::groups_of(caller.pid).contains(&i.gid);
            if perm & libc::S_IXGRP != 0 || !in_group {
                perm &= !libc::S_ISGID;
            }
        }
        let (mut mtime, mut atime) = (i.mtime, i.atime);
        let mut zero = (0, 0);
        if let Some(size) = req.size {
            match i.kind {
                Kind::File => {}
                Kind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("truncate of a non-regular file")),
            }
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            // Bytes past the end of file in its last block must read as zeros once the file
            // reaches them: when shrinking, past the new end; when growing, past the old one
            // (a holder or a mapping may have stored there). Zeroed once the transaction is
            // in: a truncate that fails changes no byte.
            zero = if size < i.size {
                (size, i.size.min(size.next_multiple_of(BLOCK_SIZE)))
            } else {
                (i.size, size.min(i.size.next_multiple_of(BLOCK_SIZE)))
            };
            if size != i.size {
                records.push(Record::SetSize { ino, size });
            }
            mtime = now;
            if req.mode.is_none() {
                perm = kill_privs(perm, i.gid, caller);
            }
        }
        match req.atime {
            Some(SetTime::At(t)) => atime = t,
            Some(SetTime::Now) => atime = now,
            None => {}
        }
        match req.mtime {
            Some(SetTime::At(t)) => mtime = t,
            Some(SetTime::Now) => mtime = now,
            None => {}
        }
        let ctime = req.ctime.unwrap_or(now);
        records.push(Record::SetAttr {
            ino,
            perm,
            uid,
            gid,
            atime,
            mtime,
            ctime,
        });
        self.commit(&mut held, &records)?;
        let i = held.get(ino)?;
        self.zero_bytes(i, zero.0, zero.1);
        i.rt.times_dirty = false;
        if owner_change {
            self.leases.owner_changed(ino, uid);
        }
        Ok(Attr::of(i))
    }

    // ----- namespace -----

    /// Creates a file, directory, device node, FIFO or socket (`mode` carries the type), or a
    /// symlink to `target`.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        target: Option<&[u8]>,
        caller: Caller,
    ) -> FsResult<Attr> {
        self.with_journal_room(|| self.create_once(parent, name, mode, rdev, target, caller))
    }

    fn create_once(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        target: Option<&[u8]>,
        caller: Caller,
    ) -> FsResult<Attr> {
        check_name(name)?;
        let kind = if target.is_some() {
            Kind::Symlink
        } else {
            Kind::from_mode(mode).ok_or(FsError::Invalid("unknown file type"))?
        };
        if let Some(t) = target {
            if t.len() > SYMLINK_MAX {
                return Err(FsError::NameTooLong);
            }
            if t.is_empty() {
                return Err(FsError::NotFound);
            }
        }
        self.writable()?;
        self.room_to_grow()?;
        let _gate = self.gate();
        let _ns = lock(&self.namespace);
        let cells = [self.table.get(parent)?];
        let mut held = Held::lock(&cells);
        let p = held.get(parent)?;
        check_new_name(p, name)?;
        let mut perm = if kind == Kind::Symlink {
            0o777
        } else {
            mode & 0o7777
        };
        let gid = if p.perm & libc::S_ISGID != 0 {
            if kind == Kind::Dir {
                perm |= libc::S_ISGID;
            }
            p.gid
        } else {
            caller.gid
        };
        // Inode numbers run out like inodes (ENOSPC): the next number stays below
        // MAX_INO, or the checkpoint would hold one that load refuses.
        let ino = self
            .next_ino
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n + 1 < crate::inode::MAX_INO).then_some(n + 1)
            })
            .map_err(|_| FsError::NoSpace)?;
        let rec = Record::Create {
            parent,
            name: name.to_vec(),
            ino,
            kind,
            perm,
            uid: caller.uid,
            gid,
            rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) {
                rdev
            } else {
                0
            },
            target: target.unwrap_or_default().to_vec(),
            time: Time::now(),
        };
        self.commit(&mut held, &[rec])?;
        let added = self.publish(&mut held);
        let cell = &added[0];
        cell.lookups.fetch_add(1, Ordering::SeqCst);
        let attr = Attr::of(&cell.read());
        Ok(attr)
    }

    /// Adds the name `name` in `parent` for `ino`.
    pub fn link(&self, ino: u64, parent: u64, name: &[u8]) -> FsResult<Attr> {
        self.with_journal_room(|| self.link_once(ino, parent, name))
    }

    fn link_once(&self, ino: u64, parent: u64, name: &[u8]) -> FsResult<Attr> {
        check_name(name)?;
        self.writable()?;
        self.room_to_grow()?;
        let _gate = self.gate();
        let _ns = lock(&self.namespace);
        let cells = [self.table.get(parent)?, self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let p = held.get(parent)?;
        check_new_name(p, name)?;
        let child = held.get(ino)?;
        if child.kind == Kind::Dir {
            return Err(FsError::NotPermitted);
        }
        if child.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if child.nlink >= u32::MAX - 1 {
            return Err(FsError::TooManyLinks);
        }
        self.commit(
            &mut held,
            &[Record::Link {
                parent,
                name: name.to_vec(),
                ino,
                time: Time::now(),
            }],
        )?;
        cells[1].lookups.fetch_add(1, Ordering::SeqCst);
        Ok(Attr::of(held.get(ino)?))
    }

    /// Removes a name: `unlink` (`dir` false) or `rmdir` (`dir` true).
    pub fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        self.with_journal_room(|| self.remove_once(parent, name, dir))
    }

    fn remove_once(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        if name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if dir && name == b"." {
            return Err(FsError::Invalid("rmdir of ."));
        }
        if dir && name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.writable_to_free()?;
        let child_ino;
        {
            let _gate = self.gate();
            let _ns = lock(&self.namespace);
            let pc = self.table.get(parent)?;
            let entry = {
                let p = pc.read();
                if p.kind != Kind::Dir {
                    return Err(FsError::NotDir);
                }
                p.dir.get(name).ok_or(FsError::NotFound)?
            };
            let cells = [pc, self.table.get(entry.ino)?];
            let mut held = Held::lock(&cells);
            let child = held.get(entry.ino)?;
            match (dir, child.kind == Kind::Dir) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                (true, true) if !child.dir.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            self.commit(
                &mut held,
                &[Record::Unlink {
                    parent,
                    name: name.to_vec(),
                    time: Time::now(),
                }],
            )?;
            child_ino = entry.ino;
        }
        self.maybe_reclaim(child_ino)
    }

    /// Is `ancestor` on the path from `dir` up to the root?
    fn is_ancestor(&self, ancestor: u64, mut dir: u64) -> FsResult<bool> {
        for _ in 0..1_000_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = self.table.get(dir)?.read().parent;
        }
        Err(FsError::Corrupt(
            "directory parent chain does not reach the root".into(),
        ))
    }

    /// rename(2) with `renameat2` flags.
    pub fn rename(
        &self,
        from_parent: u64,
        from_name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.with_journal_room(|| {
            self.rename_once(from_parent, from_name, to_parent, to_name, flags)
        })
    }

    fn rename_once(
        &self,
        from_parent: u64,
        from_name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        check_name(to_name)?;
        if from_name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let exchange = flags & rename_flags::EXCHANGE != 0;
        if flags & !(rename_flags::NOREPLACE | rename_flags::EXCHANGE) != 0
            || (exchange && flags & rename_flags::NOREPLACE != 0)
        {
            return Err(FsError::Invalid("unsupported rename flags"));
        }
        self.writable()?;
        // A longer name grows the metadata as a create does, so it needs the same room
        // (an exchange keeps both names where they are).
        if !exchange && to_name.len() > from_name.len() {
            self.room_to_grow()?;
        }
        let victim;
        {
            let _gate = self.gate();
            let _ns = lock(&self.namespace);
            let (fp, tp) = (self.table.get(from_parent)?, self.table.get(to_parent)?);
            let (src, dst) = {
                let f = fp.read();
                if f.kind != Kind::Dir {
                    return Err(FsError::NotDir);
                }
                let src = f.dir.get(from_name).ok_or(FsError::NotFound)?;
                drop(f);
                let t = tp.read();
                if t.kind != Kind::Dir {
                    return Err(FsError::NotDir);
                }
                if t.nlink == 0 {
                    return Err(FsError::NotFound);
                }
                (src, t.dir.get(to_name))
            };
            match dst {
                None if exchange => return Err(FsError::NotFound),
                Some(_) if flags & rename_flags::NOREPLACE != 0 => return Err(FsError::Exists),
                Some(d) if d.ino == src.ino => return Ok(()),
                _ => {}
            }
            if src.kind == Kind::Dir && self.is_ancestor(src.ino, to_parent)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if let Some(d) = dst {
                if exchange && d.kind == Kind::Dir && self.is_ancestor(d.ino, from_parent)? {
                    return Err(FsError::Invalid("cannot move a directory into itself"));
                }
                if !exchange {
                    match (src.kind == Kind::Dir, d.kind == Kind::Dir) {
                        (true, false) => return Err(FsError::NotDir),
                        (false, true) => return Err(FsError::IsDir),
                        _ => {}
                    }
                }
            }
            let mut cells = vec![fp, tp, self.table.get(src.ino)?];
            if let Some(d) = dst {
                cells.push(self.table.get(d.ino)?);
            }
            let mut held = Held::lock(&cells);
            if let Some(d) = dst {
                if !exchange && d.kind == Kind::Dir && !held.get(d.ino)?.dir.is_empty() {
                    return Err(FsError::NotEmpty);
                }
            }
            let rec = Record::Rename {
                from_parent,
                from_name: from_name.to_vec(),
                to_parent,
                to_name: to_name.to_vec(),
                exchange,
                time: Time::now(),
            };
            self.commit(&mut held, &[rec])?;
            victim = dst.filter(|_| !exchange).map(|d| d.ino);
        }
        if let Some(v) = victim {
            self.maybe_reclaim(v)?;
        }
        Ok(())
    }

    /// A path from the root (the first name found) for each of `inos` that has one, in one
    /// walk of the namespace: for status displays, not for the data path.
    pub fn paths_of(&self, inos: &[u64]) -> HashMap<u64, String> {
        self.paths_seen(inos, &|_| true)
            .into_iter()
            .map(|(ino, (path, _))| (ino, path))
            .collect()
    }

    /// For each of `inos` that has a name: its first path found, and the first path through
    /// directories that all pass `may_search` (the root included), if any: what a given user
    /// could `stat`. One walk of the namespace, for status displays.
    pub fn paths_seen(
        &self,
        inos: &[u64],
        may_search: &dyn Fn(&Inode) -> bool,
    ) -> HashMap<u64, (String, Option<String>)> {
        let wanted: HashSet<u64> = inos.iter().copied().collect();
        let mut found: HashMap<u64, (String, Option<String>)> = HashMap::new();
        let mut visible = 0;
        if wanted.contains(&ROOT_INO) {
            found.insert(ROOT_INO, ("/".to_string(), Some("/".to_string())));
            visible += 1;
        }
        // (directory, its path, may the user search every directory above it)
        let mut stack = vec![(ROOT_INO, String::new(), true)];
        while let Some((dir, prefix, reachable)) = stack.pop() {
            if visible == wanted.len() {
                break;
            }
            let Ok(cell) = self.table.get(dir) else {
                continue;
            }; // removed meanwhile
            let d = cell.read();
            let searchable = reachable && may_search(&d);
            for (name, e) in d.dir.iter() {
                let path = format!("{prefix}/{}", String::from_utf8_lossy(name));
                if wanted.contains(&e.ino) {
                    let entry = found.entry(e.ino).or_insert_with(|| (path.clone(), None));
                    if searchable && entry.1.is_none() {
                        entry.1 = Some(path.clone());
                        visible += 1;
                    }
                }
                if e.kind == Kind::Dir {
                    stack.push((e.ino, path, searchable));
                }
            }
        }
        found
    }

    /// The image block behind `file_block` of `ino`, if mapped (for the fuzzer's oracles
    /// and tools; not a data path).
    pub fn image_block_of(&self, ino: u64, file_block: u64) -> Option<u64> {
        let c = self.table.get(ino).ok()?;
        let i = c.read();
        i.extents
            .lookup(file_block)
            .map(|m| m.image_block + (file_block - m.file_block))
    }

    /// The target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let c = self.table.get(ino)?;
        let i = c.read();
        if i.kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(i.target.clone())
    }

    /// Directory entries after offset `offset` ("." and ".." first).
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        self.list_dir(ino, offset, max, u64::MAX)
    }

    /// Opens a directory stream (opendir(3)); returns its handle for [`Fs::readdir_stream`].
    pub fn open_dir(&self, ino: u64) -> FsResult<u64> {
        let end = {
            let c = self.table.get(ino)?;
            let d = c.read();
            if d.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
            d.dir.end_cookie()
        };
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        lock(&self.dir_streams).insert(fh, end);
        Ok(fh)
    }

    /// Closes a directory stream.
    pub fn release_dir(&self, fh: u64) {
        lock(&self.dir_streams).remove(&fh);
    }

    /// Reads a directory stream from `offset`. A stream lists the entries that were there
    /// when it started (at opendir, and again at each rewind to offset 0): an entry renamed
    /// or created meanwhile gets a cookie past that end and is not listed by this stream
    /// (POSIX leaves it unspecified), so a listing that renames what it reads ends, and
    /// lists each entry at most once. Unknown handles list everything.
    pub fn readdir_stream(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> FsResult<Vec<DirEntry>> {
        let end = if offset == 0 {
            let end = {
                let c = self.table.get(ino)?;
                let d = c.read();
                d.dir.end_cookie()
            };
            if let Some(e) = lock(&self.dir_streams).get_mut(&fh) {
                *e = end;
            }
            end
        } else {
            lock(&self.dir_streams)
                .get(&fh)
                .copied()
                .unwrap_or(u64::MAX)
        };
        self.list_dir(ino, offset, max, end)
    }

    fn list_dir(&self, ino: u64, offset: u64, max: usize, end: u64) -> FsResult<Vec<DirEntry>> {
        let c = self.table.get(ino)?;
        let d = c.read();
        if d.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry {
                ino: d.ino,
                next: 1,
                kind: Kind::Dir,
                name: b".".to_vec(),
            });
        }
        if offset < 2 {
            out.push(DirEntry {
                ino: d.parent,
                next: 2,
                kind: Kind::Dir,
                name: b"..".to_vec(),
            });
        }
        for (name, e) in d.dir.from_cookie((offset + 1).max(FIRST_COOKIE)) {
            if out.len() >= max || e.cookie >= end {
                break;
            }
            out.push(DirEntry {
                ino: e.ino,
                next: e.cookie,
                kind: e.kind,
                name: name.to_vec(),
            });
        }
        Ok(out)
    }

    // ----- open files and data -----

    /// Opens `ino` with open(2) `flags`; returns the handle.
    pub fn open_file(&self, ino: u64, flags: i32) -> FsResult<u64> {
        let c = self.table.get(ino)?;
        c.opens.fetch_add(1, Ordering::SeqCst);
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        lock(&self.handles).insert(fh, OpenHandle { ino, flags });
        Ok(fh)
    }

    /// Closes a handle: journals timestamps the data path changed, frees an orphan.
    pub fn release(&self, ino: u64, fh: u64) -> FsResult<()> {
        lock(&self.handles).remove(&fh);
        let c = self.table.get(ino)?;
        let left = c
            .opens
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                Some(o.saturating_sub(1))
            });
        if self.ro() {
            return Ok(());
        }
        self.flush_times(ino)?;
        if left.is_ok_and(|o| o <= 1) {
            self.maybe_reclaim(ino)?;
        }
        Ok(())
    }

    fn flush_times(&self, ino: u64) -> FsResult<()> {
        if !self.table.get(ino)?.read().rt.times_dirty {
            return Ok(());
        }
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        if i.rt.times_dirty && i.nlink > 0 {
            let rec = set_attr_record(i);
            self.commit(&mut held, &[rec])?;
        }
        held.get(ino)?.rt.times_dirty = false;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset`.
    pub fn read(&self, ino: u64, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        self.read_as(ino, None, offset, len)
    }

    /// Reads up to `len` bytes at `offset` through open handle `fh`: a handle opened with
    /// `O_NOATIME` leaves the access time alone (the kernel let only the owner or root open
    /// it so).
    pub fn read_handle(&self, ino: u64, fh: u64, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        self.read_as(ino, Some(fh), offset, len)
    }

    fn read_as(&self, ino: u64, fh: Option<u64>, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        // After a host failure the image's pages may be unreadable (a fault on one is SIGBUS).
        self.is_up()?;
        let c = self.table.get(ino)?;
        let needs_atime;
        let buf = {
            let i = c.read();
            match i.kind {
                Kind::File => {}
                Kind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("read of a special file")),
            }
            if offset >= i.size {
                return Ok(Vec::new());
            }
            let n = (len as u64).min(i.size - offset) as usize;
            let mut buf = vec![0u8; n];
            self.copy_out(&i, offset, &mut buf);
            let now = Time::now();
            needs_atime = match self.opts.atime {
                AtimeMode::Never => false,
                AtimeMode::Strict => true,
                AtimeMode::Relative => {
                    i.atime <= i.mtime || i.atime <= i.ctime || i.atime.secs + 86400 <= now.secs
                }
            } && !self.ro()
                && !fh.is_some_and(|fh| {
                    lock(&self.handles)
                        .get(&fh)
                        .is_some_and(|h| h.flags & libc::O_NOATIME != 0)
                });
            buf
        };
        if needs_atime {
            let mut i = c.write();
            i.atime = Time::now();
            i.rt.times_dirty = true;
        }
        Ok(buf)
    }

    fn copy_out(&self, i: &Inode, offset: u64, buf: &mut [u8]) {
        let first = offset / BLOCK_SIZE;
        let last = (offset + buf.len() as u64).div_ceil(BLOCK_SIZE);
        for m in i.extents.mappings_in(first, last - first) {
            let start = (m.file_block * BLOCK_SIZE).max(offset);
            let end = ((m.file_block + m.len) * BLOCK_SIZE).min(offset + buf.len() as u64);
            let img = m.image_block * BLOCK_SIZE + (start - m.file_block * BLOCK_SIZE);
            self.image.read(
                img,
                &mut buf[(start - offset) as usize..(end - offset) as usize],
            );
        }
    }

    /// Copies `data`, which belongs at file offset `offset`, into the image through `maps`
    /// (mappings in file order; unmapped parts are skipped), and notes the image ranges
    /// written in `dirty` for the next fsync.
    fn store(&self, maps: &[Mapping], offset: u64, data: &[u8], dirty: &mut BTreeMap<u64, u64>) {
        let data_end = offset + data.len() as u64;
        for m in maps {
            let start = (m.file_block * BLOCK_SIZE).max(offset);
            let end = ((m.file_block + m.len) * BLOCK_SIZE).min(data_end);
            if start >= end {
                continue;
            }
            let img = m.image_block * BLOCK_SIZE + (start - m.file_block * BLOCK_SIZE);
            self.image.write(
                img,
                &data[(start - offset) as usize..(end - offset) as usize],
            );
            let e = dirty.entry(img).or_insert(img);
            *e = (*e).max(img + (end - start));
        }
    }

    fn mappings_covering(i: &Inode, offset: u64, len: u64) -> Vec<Mapping> {
        let first = offset / BLOCK_SIZE;
        let last = (offset + len).div_ceil(BLOCK_SIZE);
        i.extents.mappings_in(first, last - first)
    }

    fn copy_in(&self, i: &mut Inode, offset: u64, data: &[u8]) {
        let maps = Self::mappings_covering(i, offset, data.len() as u64);
        self.store(&maps, offset, data, &mut i.rt.dirty);
    }

    /// Stores zeros over the mapped bytes of `from..to` (at most a block or two: the partial
    /// blocks at the edges of a truncation, an extension or a punched range).
    fn zero_bytes(&self, i: &mut Inode, from: u64, to: u64) {
        if from < to {
            self.copy_in(i, from, &vec![0u8; (to - from) as usize]);
        }
    }

    fn fully_mapped(i: &Inode, first: u64, count: u64) -> bool {
        i.extents
            .mappings_in(first, count)
            .iter()
            .map(|m| m.len)
            .sum::<u64>()
            == count
    }

    /// Allocates image blocks for the unmapped blocks of `first..first+count`, in order,
    /// stopping at the first block that cannot be had. Returns the new mappings as records.
    fn allocate_range(&self, ino: u64, extents: &ExtentMap, first: u64, count: u64) -> Vec<Record> {
        let mut records = Vec::new();
        let mut alloc = lock(&self.alloc);
        let mut cur = first;
        let end = first + count;
        while cur < end {
            let next = extents.next_mapping(cur);
            let hole_end = match next {
                Some(m) if m.file_block <= cur => {
                    cur = m.file_block + m.len;
                    continue;
                }
                Some(m) => m.file_block.min(end),
                None => end,
            };
            let goal = cur
                .checked_sub(1)
                .and_then(|b| extents.lookup(b))
                .map(|m| m.image_block + (cur - m.file_block));
            let mut goal = goal.or_else(|| {
                records.last().map(|r| match r {
                    Record::Map {
                        image_block, len, ..
                    } => image_block + len,
                    _ => 0,
                })
            });
            while cur < hole_end {
                match alloc.allocate_data(hole_end - cur, goal) {
                    Ok(e) => {
                        // The host backs the blocks before anything is stored into them: a
                        // full host is a short allocation (ENOSPC), not a SIGBUS later.
                        if let Err(err) = self
                            .image
                            .provision_new(e.start * BLOCK_SIZE, e.len * BLOCK_SIZE)
                        {
                            let _ = alloc.free(e);
                            if err.raw_os_error() == Some(libc::ENOSPC) {
                                tracing::warn!(
                                    blocks = e.len,
                                    "the image's host cannot back new blocks: {err}"
                                );
                            } else {
                                // Not a full host: the host failed, and may fail what was
                                // stored before too (callers answer EIO, see
                                // `short_allocation`).
                                self.host_failed("allocating blocks on the host", err);
                            }
                            return records;
                        }
                        records.push(Record::Map {
                            ino,
                            file_block: cur,
                            image_block: e.start,
                            len: e.len,
                        });
                        cur += e.len;
                        goal = Some(e.end());
                    }
                    Err(_) => return records,
                }
            }
        }
        records
    }

    /// Returns blocks that `allocate_range` handed out and that will not be used; they may
    /// have been written, so they are scrubbed (free blocks read as zeros).
    fn unallocate(&self, records: &[Record]) {
        let mut alloc = lock(&self.alloc);
        for m in records.iter().filter_map(Record::as_mapping) {
            if alloc
                .free(Extent {
                    start: m.image_block,
                    len: m.len,
                })
                .is_ok()
            {
                self.image
                    .discard(m.image_block * BLOCK_SIZE, m.len * BLOCK_SIZE);
            }
        }
    }

    /// Commits a transaction that maps blocks `allocate_range` handed out; when it is refused
    /// before anything was applied (no journal room), the blocks go back.
    fn commit_allocation(&self, held: &mut Held<'_>, records: &[Record]) -> FsResult<()> {
        let r = self.commit(held, records);
        if let Err(FsError::NoSpace) = r {
            self.unallocate(records);
        }
        r
    }

    /// Writes `data` at `offset`; returns the bytes written (short only when space ran out).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8], caller: Caller) -> FsResult<u32> {
        self.with_journal_room(|| self.write_once(ino, offset, data, caller))
    }

    fn write_once(&self, ino: u64, offset: u64, data: &[u8], caller: Caller) -> FsResult<u32> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let c = self.table.get(ino)?;
        let first = offset / BLOCK_SIZE;
        let count = end.div_ceil(BLOCK_SIZE) - first;
        {
            // Fast path: overwrite inside the file, of blocks it already has.
            let mut i = c.write();
            match i.kind {
                Kind::File => {}
                Kind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("write to a special file")),
            }
            if self.ro() {
                return Err(FsError::ReadOnly);
            }
            self.is_up()?;
            if end <= i.size
                && Self::fully_mapped(&i, first, count)
                && kill_privs(i.perm, i.gid, caller) == i.perm
            {
                self.copy_in(&mut i, offset, data);
                let now = Time::now();
                i.mtime = now;
                i.ctime = now;
                i.rt.times_dirty = true;
                return Ok(data.len() as u32);
            }
        }
        self.maybe_checkpoint()?;
        let _gate = self.gate();
        let cells = [c];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        let mut records = self.allocate_range(ino, &i.extents, first, count);
        // The blocks this write goes to: those the file has and those just allocated.
        let mut maps = i.extents.mappings_in(first, count);
        maps.extend(records.iter().filter_map(Record::as_mapping));
        maps.sort_by_key(|m| m.file_block);
        let mut covered = first;
        for m in &maps {
            if m.file_block > covered {
                break;
            }
            covered = covered.max(m.file_block + m.len);
        }
        let mut written = data.len() as u64;
        if covered < first + count {
            written = (covered * BLOCK_SIZE).saturating_sub(offset).min(written);
            if written == 0 {
                self.unallocate(&records);
                return Err(self.short_allocation());
            }
        }
        let data = &data[..written as usize];
        let end = offset + written;
        let old_size = i.size;
        if end > i.size {
            records.push(Record::SetSize { ino, size: end });
        }
        let now = Time::now();
        let perm = kill_privs(i.perm, i.gid, caller);
        let privs_killed = perm != i.perm;
        records.push(Record::SetAttr {
            ino,
            perm,
            uid: i.uid,
            gid: i.gid,
            atime: i.atime,
            mtime: now,
            ctime: now,
        });
        // The transaction first: a write it refuses stores nothing, also not into blocks the
        // file already had.
        self.commit_allocation(&mut held, &records)?;
        let i = held.get(ino)?;
        // Bytes between the old end of file and this write, in the old last block, must read
        // as zeros (a holder or mmap may have left bytes past EOF there).
        self.zero_bytes(
            i,
            old_size,
            offset.min(old_size.next_multiple_of(BLOCK_SIZE)),
        );
        self.store(&maps, offset, data, &mut i.rt.dirty);
        i.rt.times_dirty = false;
        if privs_killed {
            self.tell_kernel(Stale::Attributes(ino));
        }
        Ok(written as u32)
    }

    /// Makes the file's data (and with `!datasync` its metadata) durable on the host. A
    /// host failure is `EIO` and shuts the filesystem down ([`FsError::ShutDown`]).
    pub fn fsync(&self, ino: u64, datasync: bool) -> FsResult<()> {
        self.is_up()?;
        let c = self.table.get(ino)?;
        let (dirty, mapped) = {
            let mut i = c.write();
            let mapped: Vec<(u64, u64)> = i
                .extents
                .iter()
                .map(|m| (m.image_block * BLOCK_SIZE, m.len * BLOCK_SIZE))
                .collect();
            (std::mem::take(&mut i.rt.dirty), mapped)
        };
        let mut failed = None;
        let mut still_dirty = BTreeMap::new();
        for (s, e) in dirty {
            if let Err(err) = self.image.flush(s, e - s) {
                still_dirty.insert(s, e);
                failed.get_or_insert(err);
            }
        }
        // Holders store into DAX windows without the filesystem seeing it: whatever of this
        // file is behind a window goes back to the image file too, then to the device.
        // (The dirty ranges were msync'd above, a data sync of those ranges whatever stored
        // into them; only bytes copied out of windows need the image-wide fdatasync.)
        let mut windowed = Ok(0u64);
        for (s, l) in mapped {
            windowed = windowed.and_then(|n| Ok(n + self.image.write_back_windowed(s, l)?));
        }
        let synced = match windowed {
            Ok(0) => Ok(()),
            Ok(_) => self.image.sync_host(),
            Err(e) => Err(e),
        };
        if let Err(err) = synced {
            failed.get_or_insert(err);
        }
        if let Some(err) = failed {
            let mut i = c.write();
            for (s, e) in still_dirty {
                let end = i.rt.dirty.get(&s).copied().unwrap_or(e).max(e);
                i.rt.dirty.insert(s, end);
            }
            drop(i);
            // The host reports a write-back error once per open file, and may have dropped
            // other dirty pages of the image (journal, other files) in the same pass: no
            // later success can be trusted, so the filesystem stops here.
            return Err(self.host_failed("writing the file's data to the image", err));
        }
        if !self.ro() && (!datasync || c.read().rt.times_dirty) {
            self.flush_times(ino)?;
        }
        self.sync_metadata()
    }

    /// Makes all metadata durable (the journal's new entries). A failure shuts the
    /// filesystem down: later entries would sit on top of ones the host lost.
    pub fn sync_metadata(&self) -> FsResult<()> {
        self.is_up()?;
        lock(&self.journal)
            .flush(&self.image)
            .map_err(|e| self.host_failed("making the journal durable", e))
    }

    /// fallocate(2) with the modes the kernel forwards. Punching and zeroing may wait for
    /// holders: not on a request thread (see [`Fs::try_fallocate`]).
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
    ) -> FsResult<()> {
        self.fallocate_as(ino, offset, len, mode, caller, handle, true)
    }

    /// [`Fs::fallocate`] that never waits for a holder: `None` when the punch or zeroing
    /// would have to (nothing was changed); the caller then runs [`Fs::fallocate`] where it
    /// may wait.
    pub fn try_fallocate(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
    ) -> Option<FsResult<()>> {
        unless_waiting(self.fallocate_as(ino, offset, len, mode, caller, handle, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn fallocate_as(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
        wait: bool,
    ) -> FsResult<()> {
        self.with_journal_room(|| {
            self.fallocate_as_once(ino, offset, len, mode, caller, handle, wait)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn fallocate_as_once(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
        handle: Option<u64>,
        wait: bool,
    ) -> FsResult<()> {
        use falloc::*;
        if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 {
            return Err(FsError::NotSupported);
        }
        if len == 0 {
            return Err(FsError::Invalid("fallocate of zero bytes"));
        }
        if mode & PUNCH_HOLE != 0 && (mode & KEEP_SIZE == 0 || mode & ZERO_RANGE != 0) {
            return Err(FsError::NotSupported);
        }
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        self.writable()?;
        // Punching and zeroing unmap the whole blocks inside the range: break leases first.
        let _break = if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            Some(self.break_layout(
                ino,
                offset.div_ceil(BLOCK_SIZE),
                end / BLOCK_SIZE,
                caller,
                handle,
                wait,
            )?)
        } else {
            None
        };
        if _break.is_some() {
            self.relocate_revoked(ino)?;
        }
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        match i.kind {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsDir),
            _ => return Err(FsError::NotSupported),
        }
        let now = Time::now();
        let mut records = Vec::new();
        // Byte ranges zeroed in place once the transaction is in (a fallocate that fails
        // changes nothing), and the new times.
        let mut zero: Vec<(u64, u64)> = Vec::new();
        let (mut mtime, mut ctime) = (i.mtime, i.ctime);
        if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            // Partial blocks at the edges are zeroed in place; whole blocks are unmapped.
            let whole_first = offset.div_ceil(BLOCK_SIZE);
            let whole_end = end / BLOCK_SIZE;
            if whole_first > whole_end {
                zero.push((offset, end));
            } else {
                zero.push((offset, (whole_first * BLOCK_SIZE).min(end)));
                zero.push(((whole_end * BLOCK_SIZE).max(offset), end));
                if whole_end > whole_first
                    && !i
                        .extents
                        .mappings_in(whole_first, whole_end - whole_first)
                        .is_empty()
                {
                    records.push(Record::Unmap {
                        ino,
                        file_block: whole_first,
                        len: whole_end - whole_first,
                    });
                }
            }
            (mtime, ctime) = (now, now);
        }
        if mode & PUNCH_HOLE == 0 {
            let first = offset / BLOCK_SIZE;
            let count = end.div_ceil(BLOCK_SIZE) - first;
            // The layout once the records so far (an Unmap of ZERO_RANGE) are applied.
            let mut probe = i.extents.clone();
            for r in &records {
                if let Record::Unmap {
                    file_block, len, ..
                } = r
                {
                    probe.remove(*file_block, *len);
                }
            }
            let maps = self.allocate_range(ino, &probe, first, count);
            let got: u64 = maps
                .iter()
                .filter_map(Record::as_mapping)
                .map(|m| m.len)
                .sum();
            let needed = count
                - probe
                    .mappings_in(first, count)
                    .iter()
                    .map(|m| m.len)
                    .sum::<u64>();
            if got < needed {
                self.unallocate(&maps);
                return Err(self.short_allocation());
            }
            records.extend(maps);
            if mode & KEEP_SIZE == 0 && end > i.size {
                zero.push((i.size, end.min(i.size.next_multiple_of(BLOCK_SIZE))));
                records.push(Record::SetSize { ino, size: end });
                (mtime, ctime) = (now, now);
            }
        }
        let perm = kill_privs(i.perm, i.gid, caller);
        let privs_killed = perm != i.perm;
        records.push(Record::SetAttr {
            ino,
            perm,
            uid: i.uid,
            gid: i.gid,
            atime: i.atime,
            mtime,
            ctime,
        });
        self.commit_allocation(&mut held, &records)?;
        let i = held.get(ino)?;
        for (from, to) in zero {
            self.zero_bytes(i, from, to);
        }
        drop(held);
        if privs_killed {
            // The kernel caches the mode: it must see the set-id bits go (xfstests 683-685).
            self.tell_kernel(Stale::Attributes(ino));
        }
        Ok(())
    }

    /// `lseek` with `SEEK_DATA` (3) or `SEEK_HOLE` (4); other kinds are the kernel's.
    pub fn seek(&self, ino: u64, offset: u64, whence: i32) -> FsResult<u64> {
        let c = self.table.get(ino)?;
        let i = c.read();
        if offset >= i.size {
            return Err(FsError::NoSuchOffset);
        }
        let block = offset / BLOCK_SIZE;
        match whence {
            libc::SEEK_DATA => {
                let m = i.extents.next_mapping(block).ok_or(FsError::NoSuchOffset)?;
                let at = (m.file_block * BLOCK_SIZE).max(offset);
                if at >= i.size {
                    return Err(FsError::NoSuchOffset);
                }
                Ok(at)
            }
            libc::SEEK_HOLE => {
                let mut b = block;
                while let Some(m) = i.extents.lookup(b) {
                    b = m.file_block + m.len;
                }
                Ok((b * BLOCK_SIZE).max(offset).min(i.size))
            }
            _ => Err(FsError::Invalid("lseek whence")),
        }
    }

    /// copy_file_range(2): copies through the image, block-sized pieces at a time.
    pub fn copy_range(
        &self,
        src: u64,
        src_off: u64,
        dst: u64,
        dst_off: u64,
        len: u64,
        caller: Caller,
    ) -> FsResult<u64> {
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(1 << 20) as u32;
            let data = self.read(src, src_off + done, chunk)?;
            if data.is_empty() {
                break;
            }
            let n = self.write(dst, dst_off + done, &data, caller)?;
            done += n as u64;
            if (n as usize) < data.len() {
                break;
            }
        }
        Ok(done)
    }

    // ----- extended attributes -----

    fn check_xattr_name(name: &[u8]) -> FsResult<()> {
        if name.len() > XATTR_NAME_MAX || name.is_empty() {
            return Err(FsError::Range);
        }
        let ok = [&b"user."[..], b"trusted.", b"security."]
            .iter()
            .any(|p| name.starts_with(p) && name.len() > p.len());
        if !ok {
            return Err(FsError::NotSupported);
        }
        Ok(())
    }

    /// Sets an extended attribute (`flags`: `XATTR_CREATE` 1, `XATTR_REPLACE` 2).
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.with_journal_room(|| self.setxattr_once(ino, name, value, flags))
    }

    fn setxattr_once(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        Self::check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::TooBig);
        }
        self.writable()?;
        self.room_to_grow()?;
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let exists = held.get(ino)?.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoData);
        }
        self.commit(
            &mut held,
            &[Record::SetXattr {
                ino,
                name: name.to_vec(),
                value: value.to_vec(),
                time: Time::now(),
            }],
        )
    }

    /// An extended attribute's value.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        let c = self.table.get(ino)?;
        let i = c.read();
        i.xattrs.get(name).cloned().ok_or(FsError::NoData)
    }

    /// All extended attribute names, each followed by a NUL.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let c = self.table.get(ino)?;
        let i = c.read();
        let mut out = Vec::new();
        for k in i.xattrs.keys() {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.with_journal_room(|| self.removexattr_once(ino, name))
    }

    fn removexattr_once(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        Self::check_xattr_name(name)?;
        self.writable()?;
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        if !held.get(ino)?.xattrs.contains_key(name) {
            return Err(FsError::NoData);
        }
        self.commit(
            &mut held,
            &[Record::RemoveXattr {
                ino,
                name: name.to_vec(),
                time: Time::now(),
            }],
        )
    }

    // ----- pins and layout leases: see pins.rs -----

    /// Records the device number the kernel gave the mount (files passed by holders must be
    /// on it).
    pub fn set_mount_dev(&self, dev: u64) {
        *lock(&self.mount_dev) = Some(dev);
    }

    /// The mount's device number, once mounted.
    pub fn mount_dev(&self) -> Option<u64> {
        *lock(&self.mount_dev)
    }

    /// The kernel is reading `ino` into its page cache (for a mapping: a read that is not
    /// direct I/O). Called before the bytes are read, so that a direct write that lands
    /// after them sees the mark and stores its bytes into the cached pages.
    pub fn note_page_cache_read(&self, ino: u64) {
        lock(&self.page_cached).insert(ino);
    }

    /// After a direct write of `data` at `offset` of `ino` (the bytes it wrote): when the
    /// kernel's page cache may hold pages of `ino`, queues their store into those pages
    /// ([`Stale::Store`]) and returns what tells when the kernel has them; the caller waits
    /// for it (bounded) before it answers the write, so that a store through a mapping made
    /// after the write returns lands on a page that has the written bytes.
    pub fn store_for_mappings(&self, ino: u64, offset: u64, data: &[u8]) -> Option<Receiver<()>> {
        if data.is_empty()
            || !self.kernel_listens.load(Ordering::SeqCst)
            || !lock(&self.page_cached).contains(&ino)
        {
            return None;
        }
        let (tx, rx) = crossbeam::channel::bounded(1);
        self.tell_kernel(Stale::Store {
            ino,
            offset,
            data: data.to_vec(),
            done: tx,
        });
        Some(rx)
    }

    /// Queues a notice for the kernel, if a mount listens.
    pub(crate) fn tell_kernel(&self, what: Stale) {
        if self.kernel_listens.load(Ordering::SeqCst) {
            let _ = self.stale.0.send(what);
        }
    }

    /// What the kernel cached that changed behind its back ([`Stale`]): the daemon tells the
    /// kernel to drop it, from a thread of its own.
    pub fn stale_notices(&self) -> Receiver<Stale> {
        self.kernel_listens.store(true, Ordering::SeqCst);
        self.stale.1.clone()
    }

    /// The lease manager (status, events).
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The receiver of holder notifications (once; the daemon's notifier takes it).
    pub fn take_notices(&self) -> Option<Receiver<Notice>> {
        lock(&self.notices).take()
    }

    /// Starts the mount's background work: lease deadlines (so leases expire on time with no
    /// breaker waiting) and the reclaimer (frees pinned unlinked inodes after breaking their
    /// leases). Both end at unmount.
    pub fn start_background(self: &Arc<Self>) {
        let fs = self.clone();
        std::thread::Builder::new()
            .name("pinfs-deadlines".into())
            .spawn(move || {
                fs.leases
                    .run_deadlines(&*fs, &|| fs.stopping.load(Ordering::SeqCst))
            })
            .expect("spawn the deadline thread");
        let fs = self.clone();
        let rx = self.work.1.clone();
        std::thread::Builder::new()
            .name("pinfs-worker".into())
            .spawn(move || {
                for work in rx {
                    let r = match work {
                        Work::Stop => break,
                        Work::Relocate(ino) => fs.relocate_revoked(ino),
                        Work::Reclaim(ino) => fs.reclaim_pinned(ino),
                    };
                    if let Err(e) = r {
                        tracing::warn!(?work, "background work failed: {e}");
                    }
                }
            })
            .expect("spawn the worker");
    }

    /// Frees pinned unlinked inode `ino` after breaking its leases: at once when no holder
    /// must answer, else on a thread of its own, so that each such inode waits for its own
    /// holders only and is freed as soon as they release.
    fn reclaim_pinned(self: &Arc<Self>, ino: u64) -> FsResult<()> {
        const ALL: Breaker = Breaker {
            pid: 0,
            nonblock: false,
        };
        match self.leases.try_break_layout(ino, 0, u64::MAX, ALL) {
            Ok(_guard) => return self.reclaim_now(ino),
            Err(LeaseError::MustWait) => {}
            Err(e) => return Err(e.into()),
        }
        if !lock(&self.reclaiming).insert(ino) {
            return Ok(()); // its thread is on it
        }
        let started = self.wait_elsewhere("pinfs-reclaim", move |fs| {
            let r = fs
                .leases
                .break_layout(ino, 0, u64::MAX, ALL, fs)
                .map_err(FsError::from)
                .and_then(|_guard| fs.reclaim_now(ino));
            lock(&fs.reclaiming).remove(&ino);
            if let Err(e) = r {
                tracing::warn!(ino, "freeing a pinned unlinked inode: {e}");
            }
        });
        if !started {
            lock(&self.reclaiming).remove(&ino);
        }
        Ok(())
    }

    /// Runs `job` on a thread of its own, where it may wait for holders: where breakers that
    /// would wait go, so that no request thread ever does (one thread per waiting breaker:
    /// stuck holders cannot exhaust a pool). Returns false, having dropped `job` (a FUSE
    /// reply dropped answers `EIO`), when no thread can be started.
    pub fn wait_elsewhere(
        self: &Arc<Self>,
        name: &str,
        job: impl FnOnce(&Fs) + Send + 'static,
    ) -> bool {
        *lock(&self.waiters.0) += 1;
        let fs = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .stack_size(512 << 10)
            .spawn(move || {
                let _slot = WaiterSlot(&fs);
                job(&fs);
            });
        match spawned {
            Ok(_) => true,
            Err(e) => {
                drop(WaiterSlot(self));
                tracing::error!("cannot start a thread for a waiting breaker: {e}");
                false
            }
        }
    }

    /// Breakers waiting for holders on threads of their own now.
    pub fn waiting_breakers(&self) -> usize {
        *lock(&self.waiters.0)
    }

    /// Ends every breaker's wait for a holder with `EIO` and makes later ones fail at once
    /// (SIGTERM, a lazy unmount, the unmount itself). Pins are refused from then on.
    pub fn end_waits(&self) {
        if !self.leases.is_closed() {
            tracing::info!(
                waiting = self.waiting_breakers(),
                "ending the waits of breakers"
            );
        }
        self.leases.close();
    }

    /// Waits (at most `limit`) until no waiter thread runs.
    fn drain_waiters(&self, limit: Duration) {
        let (count, cv) = &self.waiters;
        let (n, timeout) = cv
            .wait_timeout_while(lock(count), limit, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            tracing::warn!(left = *n, "waiting breakers did not end in time");
        }
    }

    fn stop_background(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.work.0.send(Work::Stop);
    }

    // ----- filesystem-wide -----

    /// Space and inode counts.
    pub fn statfs(&self) -> StatFs {
        let (total, data_start) = {
            let sb = lock(&self.sb);
            (sb.total_blocks, sb.data_start())
        };
        let alloc = lock(&self.alloc);
        let files = self.table.len() as u64;
        let blocks = total - data_start;
        // Inodes live in memory and in checkpoints, not in a fixed table: report one possible
        // inode per data block, so that `df -i` means something and data does not change it.
        StatFs {
            blocks,
            free: alloc.free_blocks(),
            available: alloc.available_blocks(),
            busy: alloc.busy_blocks(),
            files,
            files_free: blocks.saturating_sub(files),
        }
    }

    /// Runs `f` with the allocator locked (for status and checks).
    pub fn with_allocator<R>(&self, f: impl FnOnce(&mut Allocator) -> R) -> R {
        f(&mut lock(&self.alloc))
    }
}

/// May `caller` access `i` for `want` (4 read, 2 write, 1 execute), by its mode bits? Root
/// may always read and write.
fn may_access(i: &Inode, caller: Caller, want: u32) -> bool {
    if caller.uid == 0 {
        return true;
    }
    let bits = if caller.uid == i.uid {
        i.perm >> 6
    } else if caller.gid == i.gid {
        i.perm >> 3
    } else {
        i.perm
    };
    bits & want == want
}

/// The byte ranges of `off..off+len` that are not in `free` (block extents, sorted).
fn owned_ranges(free: &[Extent], off: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cursor = off;
    let end = off + len;
    for f in free {
        let (fs, fe) = (f.start * BLOCK_SIZE, f.end() * BLOCK_SIZE);
        if fe <= cursor {
            continue;
        }
        if fs >= end {
            break;
        }
        if fs > cursor {
            out.push((cursor, fs - cursor));
        }
        cursor = cursor.max(fe);
    }
    if cursor < end {
        out.push((cursor, end - cursor));
    }
    out
}

/// Extents the allocator does not have free (metadata, checkpoint, files, busy blocks).
fn used_extents(alloc: &Allocator) -> Vec<Extent> {
    let mut used = Vec::new();
    let mut cursor = 0;
    for f in alloc.free_extents() {
        if f.start > cursor {
            used.push(Extent {
                start: cursor,
                len: f.start - cursor,
            });
        }
        cursor = f.end();
    }
    if cursor < alloc.total_blocks() {
        used.push(Extent {
            start: cursor,
            len: alloc.total_blocks() - cursor,
        });
    }
    used
}

/// Has the host back what is stored into through the mapping (see `Image::provision`): the
/// metadata area and every block in use, for images made before blocks were provisioned at
/// allocation (cheap where already backed).
fn provision_in_use(image: &Image, sb: &Superblock, alloc: &Allocator) -> FsResult<()> {
    image
        .provision(0, sb.data_start() * BLOCK_SIZE)
        .map_err(FsError::host(
            "allocating the image's superblocks and journal on the host",
        ))?;
    for e in used_extents(alloc) {
        image
            .provision(e.start * BLOCK_SIZE, e.len * BLOCK_SIZE)
            .map_err(FsError::host(
                "allocating the image's used blocks on the host",
            ))?;
    }
    Ok(())
}

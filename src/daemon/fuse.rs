//! The fuser adapter: translates FUSE requests into calls on [`crate::fs::Fs`] and its errors
//! into errnos. It holds no locks of its own and decides nothing about the filesystem.
//!
//! Each request is handled inside a `DEBUG` tracing span (request id, operation, inode,
//! process), and a failed one is counted by errno and logged here, once (`fail`).
//!
//! Breakers (truncate, punch, zero range) call the core's `try_` variant on the request
//! thread; when the core says the breaker would have to wait for a holder, the reply (fuser's
//! replies are `Send`) moves to a thread of the core's ([`Fs::wait_elsewhere`]) that runs the
//! waiting operation and answers, and the request thread goes back to serve.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyStatx, ReplyWrite, ReplyXattr, Request,
    StatxAttr, TimeOrNow, WriteFlags,
};

use crate::error::{errno_name, FsError};
use crate::fs::{Attr, Caller, Fs, SetAttr, SetTime, Statx};
use crate::meta::inode::{Kind, Time, NAME_MAX};
use crate::store::image::BLOCK_SIZE;
use tracing::Level;

/// How long the kernel may cache names and attributes. Everything that changes them passes
/// through the kernel, which invalidates what it cached.
const TTL: Duration = Duration::from_secs(1);

/// A write's answer, given when dropped: after its bytes were stored into mapped pages, or
/// when the notice thread ended first (unmount), where the write itself still happened.
struct Written(Option<(ReplyWrite, u32)>);

impl Drop for Written {
    fn drop(&mut self) {
        if let Some((reply, n)) = self.0.take() {
            reply.written(n);
        }
    }
}

/// The adapter.
#[derive(Debug)]
pub struct FuseFs {
    fs: Arc<Fs>,
}

impl FuseFs {
    /// Wraps a filesystem core.
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        FuseFs { fs }
    }
}

/// The level of the `nth` failure of one errno, whose kind logs at `level`: the 1st, 2nd,
/// 4th, 8th... at `level`, the others at `DEBUG` (see [`fail`]).
fn storm_level(level: Level, nth: u64) -> Level {
    if level == Level::TRACE || level == Level::DEBUG || nth.is_power_of_two() {
        level
    } else {
        Level::DEBUG
    }
}

/// The span of one request, entered for all of its handling, reply included (also on the
/// thread a waiting breaker moves to): every event logged meanwhile carries the request's id,
/// operation, inode and process. At `DEBUG`, so that a daemon logging less pays only the
/// check of a cached level per request.
fn request_span(req: &Request, op: &'static str, ino: u64) -> tracing::Span {
    tracing::debug_span!("fuse", req = req.unique().0, op, ino, pid = req.pid())
}

/// A failed request's error: counted by errno for `status`, logged (here only: the core
/// returns errors to its callers without logging them) at the level its kind calls for
/// ([`FsError::log_level`]), and made the errno of the reply.
///
/// Running out and failing come in storms (every write to a full filesystem, every change to
/// a shut-down one): of one errno, the 1st, 2nd, 4th, 8th... failure is logged at its level
/// with its count since mount, the others at `DEBUG`; `status` has every count.
fn fail(fs: &Fs, e: FsError) -> Errno {
    let errno = e.errno();
    let nth = fs.errors().add(errno);
    match storm_level(e.log_level(), nth) {
        Level::ERROR => tracing::error!(errno = %errno_name(errno), nth, "{e}"),
        Level::WARN => tracing::warn!(errno = %errno_name(errno), nth, "{e}"),
        Level::INFO => tracing::info!(errno = %errno_name(errno), nth, "{e}"),
        _ => tracing::debug!(errno = %errno_name(errno), nth, "{e}"),
    }
    Errno::from_i32(errno)
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.crtime.to_system(),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK_SIZE as u32,
        flags: 0,
    }
}

fn statx_attr(s: &Statx) -> StatxAttr {
    StatxAttr {
        attr: file_attr(&s.attr),
        btime: Some(s.attr.crtime.to_system()),
        attributes: s.attributes,
        attributes_mask: s.attributes_mask,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(t) => SetTime::At(Time::from_system(t)),
        TimeOrNow::Now => SetTime::Now,
    }
}

/// File data bypasses the kernel page cache, so that what a pin holder writes straight into
/// the image is what the next read returns; shared mmap still works (the kernel caches pages
/// for mappings only). `close` sends no FLUSH: there is nothing to flush, and POSIX locks are
/// the kernel's.
fn open_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO
        | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        | FopenFlags::FOPEN_NOFLUSH
}

impl FuseFs {
    fn entry(&self, reply: ReplyEntry, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(a.generation())),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }
    /// Whether `ino` has set-uid or set-gid, which a write or fallocate may clear.
    fn setid(&self, ino: u64) -> bool {
        self.fs
            .getattr(ino)
            .is_ok_and(|a| a.perm & (libc::S_ISUID | libc::S_ISGID) != 0)
    }

    /// [`FuseFs::empty`] for an operation that may have cleared set-id bits (`setid`): the
    /// success is answered once the kernel has dropped the attributes it cached.
    fn empty_told(fs: &Fs, ino: u64, setid: bool, reply: ReplyEmpty, r: Result<(), FsError>) {
        match r {
            Ok(()) if setid => fs.attributes_then(ino, Box::new(move || reply.ok())),
            r => Self::empty(fs, reply, r),
        }
    }

    fn empty(fs: &Fs, reply: ReplyEmpty, r: Result<(), FsError>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail(fs, e)),
        }
    }
    fn attr(fs: &Fs, reply: ReplyAttr, r: Result<Attr, FsError>) {
        match r {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(fail(fs, e)),
        }
    }
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // One capability at a time: add_capabilities refuses a set if any bit is unsupported.
        for cap in [
            InitFlags::FUSE_HANDLE_KILLPRIV,
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_MAX_PAGES,
            // File handles (name_to_handle_at, NFS export): the kernel then resolves a handle
            // whose inode it no longer caches with LOOKUP(ino, ".") and a directory's parent
            // with LOOKUP(ino, ".."), checking the generation.
            InitFlags::FUSE_EXPORT_SUPPORT,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::info!("kernel lacks {cap:?}");
            }
        }
        // POSIX ACLs: the kernel checks access against them and hands the daemon the umask
        // (FUSE_DONT_MASK), which applies only where no default ACL does.
        if self.fs.acl() {
            let both = config
                .add_capabilities(InitFlags::FUSE_POSIX_ACL)
                .and_then(|_| config.add_capabilities(InitFlags::FUSE_DONT_MASK));
            if both.is_err() {
                tracing::warn!("kernel lacks FUSE_POSIX_ACL or FUSE_DONT_MASK: no POSIX ACLs");
                self.fs.without_acl();
            }
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn destroy(&mut self) {
        // A failure is logged by the core and makes the daemon exit non-zero.
        let _ = self.fs.unmount();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _span = request_span(req, "lookup", parent.0).entered();
        self.entry(reply, self.fs.lookup(parent.0, name.as_bytes()))
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        let _span = request_span(req, "forget", ino.0).entered();
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = request_span(req, "getattr", ino.0).entered();
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    // Sent by the kernel for a statx(2) that wants more than `stat` gives (the birth time),
    // when its cached attributes will not do.
    fn statx(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        _flags: u32,
        _mask: u32,
        reply: ReplyStatx,
    ) {
        let _span = request_span(req, "statx", ino.0).entered();
        match self.fs.statx(ino.0) {
            Ok(s) => reply.statx(&TTL, &statx_attr(&s)),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _span = request_span(req, "setattr", ino.0).entered();
        let req_attr = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(Time::from_system),
            handle: fh.map(|h| h.0),
        };
        let (ino, who) = (ino.0, caller(req));
        match self.fs.try_setattr(ino, req_attr, who) {
            Some(r) => Self::attr(&self.fs, reply, r),
            None => {
                // The reply, and the request's span with it, go to the waiting thread.
                let span = tracing::Span::current();
                self.fs.wait_elsewhere("pinfs-breaker", move |fs| {
                    span.in_scope(|| Self::attr(fs, reply, fs.setattr(ino, req_attr, who)))
                });
            }
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _span = request_span(req, "readlink", ino.0).entered();
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _span = request_span(req, "mknod", parent.0).entered();
        let who = caller(req);
        self.entry(
            reply,
            self.fs
                .create_masked(parent.0, name.as_bytes(), mode, umask, rdev, None, who),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _span = request_span(req, "mkdir", parent.0).entered();
        let mode = (mode & 0o7777) | libc::S_IFDIR;
        let who = caller(req);
        self.entry(
            reply,
            self.fs
                .create_masked(parent.0, name.as_bytes(), mode, umask, 0, None, who),
        )
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = request_span(req, "unlink", parent.0).entered();
        Self::empty(
            &self.fs,
            reply,
            self.fs.remove(parent.0, name.as_bytes(), false),
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = request_span(req, "rmdir", parent.0).entered();
        Self::empty(
            &self.fs,
            reply,
            self.fs.remove(parent.0, name.as_bytes(), true),
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _span = request_span(req, "symlink", parent.0).entered();
        let t = target.as_os_str().as_bytes();
        self.entry(
            reply,
            self.fs.create(
                parent.0,
                link_name.as_bytes(),
                libc::S_IFLNK | 0o777,
                0,
                Some(t),
                caller(req),
            ),
        )
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "rename", parent.0).entered();
        Self::empty(
            &self.fs,
            reply,
            self.fs.rename_by(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
                caller(req),
            ),
        )
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _span = request_span(req, "link", ino.0).entered();
        self.entry(reply, self.fs.link(ino.0, newparent.0, newname.as_bytes()))
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _span = request_span(req, "open", ino.0).entered();
        match self.fs.open_file(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), open_flags()),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = request_span(req, "read", ino.0).entered();
        // Direct reads carry the reader's lock owner; the page cache's reads (faults of
        // mappings, their readahead) carry none.
        if lock.is_none() {
            self.fs.note_page_cache_read(ino.0);
        }
        match self.fs.read_handle(ino.0, fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _span = request_span(req, "write", ino.0).entered();
        let setid = self.setid(ino.0);
        match self
            .fs
            .write_flagged(ino.0, offset, data, caller(req), flags.0)
        {
            Ok(n) if setid => {
                // The write may have cleared set-uid or set-gid. The kernel drops only the
                // size and times it caches after a write, so a stat that asks for the mode
                // alone (`stat -c %a`) would see the old bits: answered once the notice
                // thread has told the kernel.
                let answer = Written(Some((reply, n)));
                if !wf.contains(WriteFlags::FUSE_WRITE_CACHE) && self.fs.wants_store(ino.0) {
                    let written = data[..(n as usize).min(data.len())].to_vec();
                    self.fs.store_then(ino.0, offset, written, Box::new(|| {}));
                }
                self.fs
                    .attributes_then(ino.0, Box::new(move || drop(answer)));
            }
            Ok(n) => {
                // A direct write (not the page cache's write-back) also goes into the pages
                // that mappings cached, before the writer learns it is done: the notice
                // thread answers it once the kernel has the bytes.
                if !wf.contains(WriteFlags::FUSE_WRITE_CACHE) && self.fs.wants_store(ino.0) {
                    let written = data[..(n as usize).min(data.len())].to_vec();
                    let answer = Written(Some((reply, n)));
                    self.fs
                        .store_then(ino.0, offset, written, Box::new(move || drop(answer)));
                    return;
                }
                reply.written(n)
            }
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "flush", ino.0).entered();
        reply.ok()
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "release", ino.0).entered();
        Self::empty(&self.fs, reply, self.fs.release(ino.0, fh.0))
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "fsync", ino.0).entered();
        Self::empty(&self.fs, reply, self.fs.fsync(ino.0, datasync))
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = request_span(req, "opendir", ino.0).entered();
        match self.fs.open_dir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "releasedir", ino.0).entered();
        self.fs.release_dir(fh.0);
        reply.ok()
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _span = request_span(req, "readdir", ino.0).entered();
        match self.fs.readdir_stream(ino.0, fh.0, offset, 512) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.next,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "fsyncdir", ino.0).entered();
        Self::empty(&self.fs, reply, self.fs.sync_metadata())
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _span = request_span(req, "statfs", ino.0).entered();
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            s.free,
            s.available,
            s.files + s.files_free,
            s.files_free,
            BLOCK_SIZE as u32,
            NAME_MAX as u32,
            BLOCK_SIZE as u32,
        )
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "setxattr", ino.0).entered();
        Self::empty(
            &self.fs,
            reply,
            self.fs
                .setxattr_by(ino.0, name.as_bytes(), value, flags, caller(req)),
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _span = request_span(req, "getxattr", ino.0).entered();
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(fail(&self.fs, FsError::Range)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _span = request_span(req, "listxattr", ino.0).entered();
        match self.fs.listxattr(ino.0) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(fail(&self.fs, FsError::Range)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _span = request_span(req, "removexattr", ino.0).entered();
        Self::empty(&self.fs, reply, self.fs.removexattr(ino.0, name.as_bytes()))
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _span = request_span(req, "access", ino.0).entered();
        // Mounted with default_permissions: the kernel checks access itself.
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _span = request_span(req, "create", parent.0).entered();
        let r = self
            .fs
            .create_masked(parent.0, name.as_bytes(), mode, umask, 0, None, caller(req))
            .and_then(|a| self.fs.open_file(a.ino, flags).map(|fh| (a, fh)));
        match r {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(a.generation()),
                FileHandle(fh),
                open_flags(),
            ),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    /// `O_TMPFILE` (the vendored fuser's `FUSE_TMPFILE`): a file with no name, created and
    /// opened at once; `linkat` of its descriptor comes as a `link` of it.
    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _span = request_span(req, "tmpfile", parent.0).entered();
        // With FUSE_DONT_MASK the daemon applies the umask, as to a create.
        match self.fs.tmpfile(parent.0, mode, umask, flags, caller(req)) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                Generation(a.generation()),
                FileHandle(fh),
                open_flags(),
            ),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _span = request_span(req, "fallocate", ino.0).entered();
        let (ino, who, fh) = (ino.0, caller(req), Some(fh.0));
        let setid = self.setid(ino);
        match self.fs.try_fallocate(ino, offset, length, mode, who, fh) {
            Some(r) => Self::empty_told(&self.fs, ino, setid, reply, r),
            None => {
                let span = tracing::Span::current();
                self.fs.wait_elsewhere("pinfs-breaker", move |fs| {
                    span.in_scope(|| {
                        let r = fs.fallocate(ino, offset, length, mode, who, fh);
                        Self::empty_told(fs, ino, setid, reply, r)
                    })
                });
            }
        }
    }

    /// The inode-flag ioctls the kernel sends for `chattr`/`lsattr` and `xfs_io chattr`
    /// (`fuse_fileattr_get`/`_set`, after its own owner and `CAP_LINUX_IMMUTABLE` checks);
    /// any other is `ENOTTY`.
    fn ioctl_with_arg(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        arg: u64,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let _span = request_span(req, "ioctl", ino.0).entered();
        if cmd == crate::daemon::ioctl::FS_IOC_SHUTDOWN {
            match crate::daemon::ioctl::shutdown_ioctl(&self.fs, arg, caller(req)) {
                Ok(()) => reply.ioctl(0, &[]),
                Err(e) => reply.error(fail(&self.fs, e)),
            }
            return;
        }
        match crate::daemon::ioctl::flag_ioctl(&self.fs, ino.0, cmd, in_data, out_size, caller(req))
        {
            // A change of flags moved the change time the kernel caches: it is answered once
            // the kernel has dropped the attributes (from the notice thread, so that no
            // request thread waits).
            Ok(None) => self
                .fs
                .attributes_then(ino.0, Box::new(move || reply.ioctl(0, &[]))),
            Ok(Some(out)) => reply.ioctl(0, &out),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _span = request_span(req, "lseek", ino.0).entered();
        if offset < 0 {
            return reply.error(fail(&self.fs, FsError::NoSuchOffset));
        }
        match self.fs.seek(ino.0, offset as u64, whence) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _span = request_span(req, "copy_file_range", ino_in.0).entered();
        let len = len.min(u32::MAX as u64 & !(BLOCK_SIZE - 1));
        let setid = self.setid(ino_out.0);
        match self
            .fs
            .copy_range(ino_in.0, offset_in, ino_out.0, offset_out, len, caller(req))
        {
            Ok(n) if setid => {
                let answer = Written(Some((reply, n as u32)));
                self.fs
                    .attributes_then(ino_out.0, Box::new(move || drop(answer)));
            }
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(fail(&self.fs, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_one_errno_is_heard_at_powers_of_two() {
        let heard: Vec<u64> = (1..=40)
            .filter(|&n| storm_level(Level::WARN, n) == Level::WARN)
            .collect();
        assert_eq!(heard, [1, 2, 4, 8, 16, 32]);
        assert_eq!(storm_level(Level::ERROR, 3), Level::DEBUG);
        assert_eq!(storm_level(Level::ERROR, 64), Level::ERROR);
        assert_eq!(storm_level(Level::INFO, 1), Level::INFO);
        assert!((1..100).all(|n| storm_level(Level::DEBUG, n) == Level::DEBUG));
    }
}

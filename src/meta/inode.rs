//! Inodes: attributes, the extent map of regular files, directory entries, symlink targets
//! and extended attributes, with their encoding in checkpoints.
//!
//! Directory entries carry a *cookie*, a per-directory number that only grows, so a
//! `readdir` offset stays valid while entries come and go: entries that exist for the whole
//! listing are returned exactly once.

use std::collections::BTreeMap;

use crate::format::codec::{DecodeError, Reader, Writer};
use crate::meta::extent_map::ExtentMap;

/// Inode number of the root directory (FUSE's `FUSE_ROOT_ID`).
pub const ROOT_INO: u64 = 1;
/// Longest name in a directory, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes.
pub const SYMLINK_MAX: usize = 4095;
/// Longest extended attribute name, in bytes.
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value, in bytes.
pub const XATTR_VALUE_MAX: usize = 65536;
/// The namespaces of extended attribute names that users reach through the kernel.
pub const XATTR_NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// The POSIX ACLs' xattrs (see `fs/acl.rs`), the only `system.` names stored.
pub const ACL_XATTRS: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];

/// Could `setxattr(2)` have made an extended attribute of this name: at most
/// [`XATTR_NAME_MAX`] bytes, no NUL (listxattr separates names with it), in one of
/// [`XATTR_NAMESPACES`] with something after the prefix, or one of [`ACL_XATTRS`].
pub fn xattr_name_ok(name: &[u8]) -> bool {
    ACL_XATTRS.contains(&name)
        || (name.len() <= XATTR_NAME_MAX
            && !name.contains(&0)
            && XATTR_NAMESPACES
                .iter()
                .any(|p| name.starts_with(p) && name.len() > p.len()))
}
/// Largest file: 2^63 - 1 bytes, like other 64-bit Linux filesystems (offsets are signed).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Inode numbers are below this: they are counted up while the filesystem runs, so an image
/// must leave room to count.
pub const MAX_INO: u64 = 1 << 62;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Unix socket.
    Socket,
}

impl Kind {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Result<Kind, DecodeError> {
        Ok(match c {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            3 => Kind::Fifo,
            4 => Kind::CharDev,
            5 => Kind::BlockDev,
            6 => Kind::Socket,
            _ => return Err(DecodeError(format!("unknown inode kind {c}"))),
        })
    }
    /// The kind from the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }
}

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time {
    /// Seconds (may be negative).
    pub secs: i64,
    /// Nanoseconds, below 10^9.
    pub nsecs: u32,
}

impl Time {
    /// The current time.
    pub fn now() -> Time {
        Time::from_system(std::time::SystemTime::now())
    }
    /// From a `SystemTime`.
    pub fn from_system(t: std::time::SystemTime) -> Time {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Time {
                        secs: -(d.as_secs() as i64),
                        nsecs: 0,
                    }
                } else {
                    Time {
                        secs: -(d.as_secs() as i64) - 1,
                        nsecs: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }
    /// To a `SystemTime`. Seconds come from the image and may be any `i64`; one the host's
    /// time type cannot hold becomes a representable time on the same side of the epoch
    /// (never a panic on a request thread).
    pub fn to_system(self) -> std::time::SystemTime {
        use std::time::Duration;
        let base = std::time::UNIX_EPOCH;
        let nanos = Duration::from_nanos(self.nsecs.min(999_999_999) as u64);
        let t = if self.secs >= 0 {
            base.checked_add(Duration::from_secs(self.secs as u64))
                .and_then(|t| t.checked_add(nanos))
        } else {
            base.checked_sub(Duration::from_secs(self.secs.unsigned_abs()))
                .and_then(|t| t.checked_add(nanos))
        };
        t.unwrap_or_else(|| {
            // Halve the span until it is representable (at the latest at the epoch).
            let mut span = Duration::from_secs(self.secs.unsigned_abs());
            loop {
                span /= 2;
                let t = if self.secs >= 0 {
                    base.checked_add(span)
                } else {
                    base.checked_sub(span)
                };
                if let Some(t) = t {
                    return t;
                }
            }
        })
    }
    fn put(self, w: &mut Writer) {
        w.i64(self.secs).u32(self.nsecs);
    }
    fn get(r: &mut Reader<'_>) -> Result<Time, DecodeError> {
        let secs = r.i64()?;
        let nsecs = r.u32()?;
        if nsecs >= 1_000_000_000 {
            return Err(DecodeError(format!("nanoseconds {nsecs} out of range")));
        }
        Ok(Time { secs, nsecs })
    }
}

/// A directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The inode it names.
    pub ino: u64,
    /// That inode's kind (for `readdir`).
    pub kind: Kind,
    /// Position for `readdir` offsets.
    pub cookie: u64,
}

/// The entries of a directory ("." and ".." are implicit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dir {
    entries: BTreeMap<Vec<u8>, Entry>,
    by_cookie: BTreeMap<u64, Vec<u8>>,
    next_cookie: u64,
}

/// The first cookie of a real entry: offsets 1 and 2 are "." and "..".
pub const FIRST_COOKIE: u64 = 3;

impl Dir {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The entry called `name`.
    pub fn get(&self, name: &[u8]) -> Option<Entry> {
        self.entries.get(name).copied()
    }
    /// Adds `name` (which must not exist).
    pub fn insert(&mut self, name: &[u8], ino: u64, kind: Kind) {
        let cookie = self.next_cookie.max(FIRST_COOKIE);
        self.next_cookie = cookie + 1;
        let old = self
            .entries
            .insert(name.to_vec(), Entry { ino, kind, cookie });
        debug_assert!(old.is_none(), "directory entry inserted twice");
        self.by_cookie.insert(cookie, name.to_vec());
    }
    /// Removes `name`.
    pub fn remove(&mut self, name: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(name)?;
        self.by_cookie.remove(&e.cookie);
        Some(e)
    }
    /// Entries whose cookie is at least `from`, in cookie order.
    pub fn from_cookie(&self, from: u64) -> impl Iterator<Item = (&[u8], Entry)> + '_ {
        self.by_cookie
            .range(from..)
            .map(move |(_, name)| (name.as_slice(), self.entries[name]))
    }
    /// The cookie the next inserted entry will get: every entry there now is below it.
    pub fn end_cookie(&self) -> u64 {
        self.next_cookie.max(FIRST_COOKIE)
    }
    /// All entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Entry)> + '_ {
        self.entries.iter().map(|(n, e)| (n.as_slice(), *e))
    }
}

/// Per-inode state that lives only while the daemon runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    /// Timestamps changed by the data path and not yet journalled.
    pub times_dirty: bool,
    /// Image byte ranges written since the last fsync (start -> end).
    pub dirty: BTreeMap<u64, u64>,
}

/// Inode flags, as `chattr(1)` sets them through `FS_IOC_SETFLAGS` (values of Linux's
/// `FS_*_FL`, which are also what is stored). The daemon enforces them: the kernel leaves a
/// FUSE inode's `S_IMMUTABLE` and `S_APPEND` unset, so none of the VFS's own checks fire.
pub mod flags {
    use super::Kind;

    /// `S`: writes and metadata changes are durable before they return.
    pub const SYNC: u32 = 0x0000_0008;
    /// `i`: nothing changes: data, attributes, names, xattrs; only the flag itself may be
    /// cleared (with `CAP_LINUX_IMMUTABLE`, checked by the kernel).
    pub const IMMUTABLE: u32 = 0x0000_0010;
    /// `a`: data may only be appended; no truncate, rename, unlink, link, chmod, chown or
    /// xattr change; a directory's entries may be added, never removed.
    pub const APPEND: u32 = 0x0000_0020;
    /// `d`: not for dump(8); stored and reported only.
    pub const NODUMP: u32 = 0x0000_0040;
    /// `A`: reads leave the access time alone.
    pub const NOATIME: u32 = 0x0000_0080;
    /// Every flag pinfs stores; `FS_IOC_SETFLAGS` with any other is `EOPNOTSUPP`.
    pub const SUPPORTED: u32 = SYNC | IMMUTABLE | APPEND | NODUMP | NOATIME;

    /// `Err` when `flags` cannot be on an inode of `kind`.
    pub fn check(kind: Kind, flags: u32) -> Result<(), String> {
        if flags & !SUPPORTED != 0 {
            return Err(format!("unknown inode flags {:#x}", flags & !SUPPORTED));
        }
        if flags != 0 && !matches!(kind, Kind::File | Kind::Dir) {
            return Err(format!("inode flags {flags:#x} on a {kind:?}"));
        }
        Ok(())
    }

    /// The `FS_IOC_FSGETXATTR` form (`FS_XFLAG_*`) of `flags`.
    pub fn to_xflags(flags: u32) -> u32 {
        XFLAGS
            .iter()
            .filter(|(f, _)| flags & f != 0)
            .fold(0, |x, (_, xf)| x | xf)
    }

    /// The flags of an `FS_IOC_FSSETXATTR`'s `FS_XFLAG_*`; `None` when it names one pinfs
    /// does not store.
    pub fn from_xflags(xflags: u32) -> Option<u32> {
        let known = XFLAGS.iter().fold(0, |x, (_, xf)| x | xf);
        (xflags & !known == 0).then(|| {
            XFLAGS
                .iter()
                .filter(|(_, xf)| xflags & xf != 0)
                .fold(0, |f, (fl, _)| f | fl)
        })
    }

    /// Each flag beside its `FS_XFLAG_*` twin.
    const XFLAGS: [(u32, u32); 5] = [
        (IMMUTABLE, 0x08),
        (APPEND, 0x10),
        (SYNC, 0x20),
        (NOATIME, 0x40),
        (NODUMP, 0x80),
    ];
}

/// An inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// What it is.
    pub kind: Kind,
    /// Permission bits with set-uid, set-gid and sticky (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Size in bytes (directories: entry count, for `stat`).
    pub size: u64,
    /// Last access.
    pub atime: Time,
    /// Last data change.
    pub mtime: Time,
    /// Last inode change.
    pub ctime: Time,
    /// Creation.
    pub crtime: Time,
    /// Device number (device nodes).
    pub rdev: u32,
    /// Parent directory (directories only; the root is its own parent).
    pub parent: u64,
    /// Data blocks (regular files).
    pub extents: ExtentMap,
    /// Entries (directories).
    pub dir: Dir,
    /// Target (symlinks).
    pub target: Vec<u8>,
    /// Extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Inode flags (`chattr`): a subset of [`flags::SUPPORTED`], on files and directories.
    pub flags: u32,
    /// Not persisted.
    pub rt: Runtime,
}

impl Inode {
    /// A new inode with all timestamps `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ino: u64,
        kind: Kind,
        perm: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        parent: u64,
        now: Time,
    ) -> Inode {
        Inode {
            ino,
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev,
            parent,
            extents: ExtentMap::default(),
            dir: Dir::default(),
            target: Vec::new(),
            xattrs: BTreeMap::new(),
            flags: 0,
            rt: Runtime::default(),
        }
    }

    /// The image byte ranges (offset, length) of a regular file's mapped bytes past its end:
    /// the rest of its last block and the blocks allocated past it. After an unclean
    /// shutdown they may hold a write whose size was lost, and are zeroed before the image
    /// is used (or called clean) again.
    pub fn past_end(&self) -> Vec<(u64, u64)> {
        const BLOCK: u64 = crate::store::image::BLOCK_SIZE;
        if self.kind != Kind::File {
            return Vec::new();
        }
        let from = self.size / BLOCK;
        self.extents
            .mappings_in(from, u64::MAX - from)
            .into_iter()
            .map(|m| {
                let start = (m.file_block * BLOCK).max(self.size);
                let end = (m.file_block + m.len) * BLOCK;
                (
                    m.image_block * BLOCK + (start - m.file_block * BLOCK),
                    end - start,
                )
            })
            .collect()
    }

    /// Mode bits as `stat` reports them (type and permissions).
    pub fn mode(&self) -> u32 {
        let t = match self.kind {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        };
        t | self.perm
    }

    /// Appends the persistent part of the inode to `w`.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.ino)
            .u8(self.kind.code())
            .u32(self.perm)
            .u32(self.uid)
            .u32(self.gid);
        w.u32(self.nlink).u64(self.size);
        for t in [self.atime, self.mtime, self.ctime, self.crtime] {
            t.put(w);
        }
        w.u32(self.rdev).u64(self.parent);
        w.u64(self.extents.iter().count() as u64);
        for m in self.extents.iter() {
            w.u64(m.file_block).u64(m.image_block).u64(m.len);
        }
        w.u64(self.dir.len() as u64);
        for (name, e) in self.dir.iter() {
            w.bytes(name).u64(e.ino).u8(e.kind.code());
        }
        w.bytes(&self.target);
        w.u64(self.xattrs.len() as u64);
        for (k, v) in &self.xattrs {
            w.bytes(k).bytes(v);
        }
        w.u32(self.flags);
    }

    /// Reads an inode written by [`Inode::encode`]; validates what a later use relies on.
    pub fn decode(r: &mut Reader<'_>) -> Result<Inode, DecodeError> {
        let ino = r.u64()?;
        let kind = Kind::from_code(r.u8()?)?;
        let perm = r.u32()?;
        let (uid, gid, nlink, size) = (r.u32()?, r.u32()?, r.u32()?, r.u64()?);
        let (atime, mtime, ctime, crtime) =
            (Time::get(r)?, Time::get(r)?, Time::get(r)?, Time::get(r)?);
        let (rdev, parent) = (r.u32()?, r.u64()?);
        let mut inode = Inode::new(ino, kind, perm, uid, gid, rdev, parent, atime);
        inode.nlink = nlink;
        inode.size = size;
        inode.mtime = mtime;
        inode.ctime = ctime;
        inode.crtime = crtime;
        let n = r.count(24)?;
        let mut prev_end = 0u64;
        for i in 0..n {
            let (f, im, l) = (r.u64()?, r.u64()?, r.u64()?);
            if l == 0
                || f.checked_add(l).is_none()
                || im.checked_add(l).is_none()
                || (i > 0 && f < prev_end)
            {
                return Err(DecodeError(format!(
                    "inode {ino}: bad or overlapping extent {f}+{l}"
                )));
            }
            prev_end = f + l;
            inode.extents.insert(f, im, l);
        }
        let n = r.count(13)?;
        for _ in 0..n {
            let name = r.bytes(NAME_MAX)?;
            let (child, ck) = (r.u64()?, Kind::from_code(r.u8()?)?);
            if name.is_empty()
                || name.contains(&b'/')
                || name.contains(&0)
                || inode.dir.get(&name).is_some()
                || name == b"."
                || name == b".."
            {
                return Err(DecodeError(format!(
                    "inode {ino}: bad or duplicate entry name {:?}",
                    String::from_utf8_lossy(&name)
                )));
            }
            inode.dir.insert(&name, child, ck);
        }
        inode.target = r.bytes(SYMLINK_MAX)?;
        let n = r.count(8)?;
        for _ in 0..n {
            let k = r.bytes(XATTR_NAME_MAX)?;
            let v = r.bytes(XATTR_VALUE_MAX)?;
            inode.xattrs.insert(k, v);
        }
        inode.flags = r.u32()?;
        flags::check(kind, inode.flags).map_err(|e| DecodeError(format!("inode {ino}: {e}")))?;
        Ok(inode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let now = Time { secs: -5, nsecs: 7 };
        let mut i = Inode::new(42, Kind::Dir, 0o2755, 1000, 100, 0, 1, now);
        i.dir.insert(b"a", 43, Kind::File);
        i.dir.insert(b"b", 44, Kind::Symlink);
        i.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
        let mut f = Inode::new(43, Kind::File, 0o644, 0, 0, 0, 0, now);
        f.extents.insert(0, 100, 3);
        f.extents.insert(10, 200, 1);
        for inode in [i, f] {
            let mut w = Writer::new();
            inode.encode(&mut w);
            let back = Inode::decode(&mut Reader::new(&w.buf)).unwrap();
            assert_eq!(back.extents, inode.extents);
            assert_eq!(back.dir.iter().collect::<Vec<_>>().len(), inode.dir.len());
            assert_eq!(
                (back.perm, back.uid, back.gid, back.mtime),
                (inode.perm, inode.uid, inode.gid, inode.mtime)
            );
        }
    }

    #[test]
    fn cookies_survive_removal() {
        let mut d = Dir::default();
        d.insert(b"x", 2, Kind::File);
        d.insert(b"y", 3, Kind::File);
        d.insert(b"z", 4, Kind::File);
        let first: Vec<_> = d
            .from_cookie(FIRST_COOKIE)
            .map(|(n, e)| (n.to_vec(), e.cookie))
            .collect();
        d.remove(b"x");
        let rest: Vec<_> = d.from_cookie(first[1].1).map(|(n, _)| n.to_vec()).collect();
        assert_eq!(rest, vec![b"y".to_vec(), b"z".to_vec()]);
    }

    #[test]
    fn negative_times_round_trip_through_system_time() {
        for t in [
            Time {
                secs: -1,
                nsecs: 500,
            },
            Time {
                secs: 1_700_000_000,
                nsecs: 999_999_999,
            },
        ] {
            assert_eq!(Time::from_system(t.to_system()), t);
        }
    }
}

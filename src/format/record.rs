//! Journal records and how they change metadata.
//!
//! A record is a logical redo step. [`apply`] is the only code that changes persistent
//! metadata: live operations validate, build records and apply them under their locks; mount
//! replays the journal by applying the same records in order. So a replayed filesystem is the
//! one the daemon had, as far as the journal reached.

use crate::error::{FsError, FsResult};
use crate::format::codec::{DecodeError, Reader, Writer};
use crate::meta::inode::{
    Inode, Kind, Time, MAX_FILE_SIZE, MAX_INO, NAME_MAX, ROOT_INO, SYMLINK_MAX, XATTR_NAME_MAX,
    XATTR_VALUE_MAX,
};
use crate::store::image::{Image, Superblock, BLOCK_SIZE};
use pinfs_allocator::{Allocator, Extent};

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A new inode named `name` in `parent`.
    Create {
        /// Directory.
        parent: u64,
        /// Name.
        name: Vec<u8>,
        /// New inode number.
        ino: u64,
        /// Kind.
        kind: Kind,
        /// Permission bits.
        perm: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Device number.
        rdev: u32,
        /// Symlink target (empty otherwise).
        target: Vec<u8>,
        /// When.
        time: Time,
    },
    /// A new regular file with no name (`O_TMPFILE`): no links, owned as a create in
    /// directory `parent` makes it, whose times it leaves alone. It is an orphan (freed at the
    /// next mount after a crash) until a [`Record::Link`] names it.
    Tmpfile {
        /// The directory it was made in.
        parent: u64,
        /// New inode number.
        ino: u64,
        /// Permission bits.
        perm: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// When.
        time: Time,
    },
    /// A new name for an existing inode.
    Link {
        /// Directory.
        parent: u64,
        /// Name.
        name: Vec<u8>,
        /// Inode.
        ino: u64,
        /// When.
        time: Time,
    },
    /// A name goes away (unlink and rmdir).
    Unlink {
        /// Directory.
        parent: u64,
        /// Name.
        name: Vec<u8>,
        /// When.
        time: Time,
    },
    /// rename(2), including `RENAME_EXCHANGE`.
    Rename {
        /// Source directory.
        from_parent: u64,
        /// Source name.
        from_name: Vec<u8>,
        /// Destination directory.
        to_parent: u64,
        /// Destination name.
        to_name: Vec<u8>,
        /// Swap the two names.
        exchange: bool,
        /// When.
        time: Time,
    },
    /// All settable attributes of an inode.
    SetAttr {
        /// Inode.
        ino: u64,
        /// Permission bits.
        perm: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Access time.
        atime: Time,
        /// Modification time.
        mtime: Time,
        /// Change time.
        ctime: Time,
    },
    /// A new size; blocks wholly past it are freed.
    SetSize {
        /// Inode.
        ino: u64,
        /// Bytes.
        size: u64,
    },
    /// The size grows to `size` (a write, a truncate or a `fallocate` past the end); one
    /// already larger stays. Frees nothing: blocks allocated past the end stay. (Format
    /// version 3.)
    Grow {
        /// Inode.
        ino: u64,
        /// Bytes.
        size: u64,
    },
    /// File blocks get image blocks.
    Map {
        /// Inode.
        ino: u64,
        /// First file block.
        file_block: u64,
        /// First image block.
        image_block: u64,
        /// Blocks.
        len: u64,
    },
    /// File blocks lose their image blocks (hole punching).
    Unmap {
        /// Inode.
        ino: u64,
        /// First file block.
        file_block: u64,
        /// Blocks.
        len: u64,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// Inode.
        ino: u64,
        /// Name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// When.
        time: Time,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// Inode.
        ino: u64,
        /// Name.
        name: Vec<u8>,
        /// When.
        time: Time,
    },
    /// New inode flags (`chattr`).
    SetFlags {
        /// Inode.
        ino: u64,
        /// The flags, a subset of [`crate::meta::inode::flags::SUPPORTED`].
        flags: u32,
        /// When (the inode's new change time).
        time: Time,
    },
    /// An unlinked, unreferenced inode and its blocks go away.
    Free {
        /// Inode.
        ino: u64,
    },
}

fn put_kind(w: &mut Writer, k: Kind) {
    w.u8(k as u8);
}

fn put_time(w: &mut Writer, t: Time) {
    w.i64(t.secs).u32(t.nsecs);
}

fn get_time(r: &mut Reader<'_>) -> Result<Time, DecodeError> {
    Ok(Time {
        secs: r.i64()?,
        nsecs: r.u32()?.min(999_999_999),
    })
}

fn get_kind(r: &mut Reader<'_>) -> Result<Kind, DecodeError> {
    let c = r.u8()?;
    [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::Fifo,
        Kind::CharDev,
        Kind::BlockDev,
        Kind::Socket,
    ]
    .get(c as usize)
    .copied()
    .ok_or_else(|| DecodeError(format!("unknown kind {c} in journal record")))
}

/// File blocks a file may have: enough for [`MAX_FILE_SIZE`] bytes.
pub const MAX_FILE_BLOCKS: u64 = MAX_FILE_SIZE.div_ceil(BLOCK_SIZE);

fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(format!(
            "impossible name {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

fn check_ino(ino: u64) -> Result<(), String> {
    if ino == 0 || ino >= MAX_INO {
        return Err(format!("impossible inode number {ino}"));
    }
    Ok(())
}

impl Record {
    /// Checks what a record read from the journal must satisfy before it is applied, its
    /// checksum notwithstanding: inode numbers and names that can exist, mappings of file
    /// blocks a file can have onto image blocks of the data area, sizes a file can have.
    /// Live operations only ever build records that pass.
    pub fn check_geometry(&self, sb: &Superblock) -> Result<(), String> {
        let file_range = |file_block: u64, len: u64| -> Result<(), String> {
            if file_block
                .checked_add(len)
                .is_none_or(|e| e > MAX_FILE_BLOCKS)
            {
                return Err(format!(
                    "file blocks {file_block}+{len} lie past the largest file"
                ));
            }
            Ok(())
        };
        match self {
            Record::Create {
                parent, name, ino, ..
            } => {
                check_ino(*parent)?;
                check_ino(*ino)?;
                if *ino == ROOT_INO {
                    return Err("a record creates the root directory".into());
                }
                check_name(name)
            }
            Record::Tmpfile { parent, ino, .. } => {
                check_ino(*parent)?;
                check_ino(*ino)?;
                if *ino == ROOT_INO {
                    return Err("a record creates the root directory".into());
                }
                Ok(())
            }
            Record::Link {
                parent, name, ino, ..
            } => {
                check_ino(*parent)?;
                check_ino(*ino)?;
                check_name(name)
            }
            Record::Unlink { parent, name, .. } => {
                check_ino(*parent)?;
                check_name(name)
            }
            Record::Rename {
                from_parent,
                from_name,
                to_parent,
                to_name,
                ..
            } => {
                check_ino(*from_parent)?;
                check_ino(*to_parent)?;
                check_name(from_name)?;
                check_name(to_name)
            }
            Record::SetAttr { ino, .. }
            | Record::SetXattr { ino, .. }
            | Record::RemoveXattr { ino, .. } => check_ino(*ino),
            Record::SetFlags { ino, flags, .. } => {
                check_ino(*ino)?;
                if flags & !crate::meta::inode::flags::SUPPORTED != 0 {
                    return Err(format!("inode {ino}: unknown inode flags {flags:#x}"));
                }
                Ok(())
            }
            Record::Free { ino } => {
                check_ino(*ino)?;
                if *ino == ROOT_INO {
                    return Err("a record frees the root directory".into());
                }
                Ok(())
            }
            Record::SetSize { ino, size } | Record::Grow { ino, size } => {
                check_ino(*ino)?;
                if *size > MAX_FILE_SIZE {
                    return Err(format!("inode {ino}: size {size} past the largest file"));
                }
                Ok(())
            }
            Record::Map {
                ino,
                file_block,
                image_block,
                len,
            } => {
                check_ino(*ino)?;
                if *len == 0 {
                    return Err(format!("inode {ino}: an empty mapping"));
                }
                file_range(*file_block, *len)?;
                if *image_block < sb.data_start()
                    || image_block
                        .checked_add(*len)
                        .is_none_or(|e| e > sb.total_blocks)
                {
                    return Err(format!(
                        "inode {ino}: image blocks {image_block}+{len} lie outside the data area"
                    ));
                }
                Ok(())
            }
            Record::Unmap {
                ino,
                file_block,
                len,
            } => {
                check_ino(*ino)?;
                file_range(*file_block, *len)
            }
        }
    }

    /// The mapping a `Map` record adds.
    pub fn as_mapping(&self) -> Option<crate::meta::extent_map::Mapping> {
        match *self {
            Record::Map {
                file_block,
                image_block,
                len,
                ..
            } => Some(crate::meta::extent_map::Mapping {
                file_block,
                image_block,
                len,
            }),
            _ => None,
        }
    }

    /// Appends the record to `w`.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Record::Create {
                parent,
                name,
                ino,
                kind,
                perm,
                uid,
                gid,
                rdev,
                target,
                time,
            } => {
                w.u8(1).u64(*parent).bytes(name).u64(*ino);
                put_kind(w, *kind);
                w.u32(*perm).u32(*uid).u32(*gid).u32(*rdev).bytes(target);
                put_time(w, *time);
            }
            Record::Link {
                parent,
                name,
                ino,
                time,
            } => {
                w.u8(2).u64(*parent).bytes(name).u64(*ino);
                put_time(w, *time);
            }
            Record::Unlink { parent, name, time } => {
                w.u8(3).u64(*parent).bytes(name);
                put_time(w, *time);
            }
            Record::Rename {
                from_parent,
                from_name,
                to_parent,
                to_name,
                exchange,
                time,
            } => {
                w.u8(4)
                    .u64(*from_parent)
                    .bytes(from_name)
                    .u64(*to_parent)
                    .bytes(to_name)
                    .u8(*exchange as u8);
                put_time(w, *time);
            }
            Record::SetAttr {
                ino,
                perm,
                uid,
                gid,
                atime,
                mtime,
                ctime,
            } => {
                w.u8(5).u64(*ino).u32(*perm).u32(*uid).u32(*gid);
                for t in [atime, mtime, ctime] {
                    put_time(w, *t);
                }
            }
            Record::SetSize { ino, size } => {
                w.u8(6).u64(*ino).u64(*size);
            }
            Record::Grow { ino, size } => {
                w.u8(14).u64(*ino).u64(*size);
            }
            Record::Map {
                ino,
                file_block,
                image_block,
                len,
            } => {
                w.u8(7)
                    .u64(*ino)
                    .u64(*file_block)
                    .u64(*image_block)
                    .u64(*len);
            }
            Record::Unmap {
                ino,
                file_block,
                len,
            } => {
                w.u8(8).u64(*ino).u64(*file_block).u64(*len);
            }
            Record::SetXattr {
                ino,
                name,
                value,
                time,
            } => {
                w.u8(9).u64(*ino).bytes(name).bytes(value);
                put_time(w, *time);
            }
            Record::RemoveXattr { ino, name, time } => {
                w.u8(10).u64(*ino).bytes(name);
                put_time(w, *time);
            }
            Record::Free { ino } => {
                w.u8(11).u64(*ino);
            }
            Record::SetFlags { ino, flags, time } => {
                w.u8(12).u64(*ino).u32(*flags);
                put_time(w, *time);
            }
            Record::Tmpfile {
                parent,
                ino,
                perm,
                uid,
                gid,
                time,
            } => {
                w.u8(13).u64(*parent).u64(*ino);
                w.u32(*perm).u32(*uid).u32(*gid);
                put_time(w, *time);
            }
        }
    }

    /// Reads one record.
    pub fn decode(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
        Ok(match r.u8()? {
            1 => Record::Create {
                parent: r.u64()?,
                name: r.bytes(NAME_MAX)?,
                ino: r.u64()?,
                kind: get_kind(r)?,
                perm: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                rdev: r.u32()?,
                target: r.bytes(SYMLINK_MAX)?,
                time: get_time(r)?,
            },
            2 => Record::Link {
                parent: r.u64()?,
                name: r.bytes(NAME_MAX)?,
                ino: r.u64()?,
                time: get_time(r)?,
            },
            3 => Record::Unlink {
                parent: r.u64()?,
                name: r.bytes(NAME_MAX)?,
                time: get_time(r)?,
            },
            4 => Record::Rename {
                from_parent: r.u64()?,
                from_name: r.bytes(NAME_MAX)?,
                to_parent: r.u64()?,
                to_name: r.bytes(NAME_MAX)?,
                exchange: r.u8()? != 0,
                time: get_time(r)?,
            },
            5 => Record::SetAttr {
                ino: r.u64()?,
                perm: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                atime: get_time(r)?,
                mtime: get_time(r)?,
                ctime: get_time(r)?,
            },
            6 => Record::SetSize {
                ino: r.u64()?,
                size: r.u64()?,
            },
            7 => Record::Map {
                ino: r.u64()?,
                file_block: r.u64()?,
                image_block: r.u64()?,
                len: r.u64()?,
            },
            8 => Record::Unmap {
                ino: r.u64()?,
                file_block: r.u64()?,
                len: r.u64()?,
            },
            9 => Record::SetXattr {
                ino: r.u64()?,
                name: r.bytes(XATTR_NAME_MAX)?,
                value: r.bytes(XATTR_VALUE_MAX)?,
                time: get_time(r)?,
            },
            10 => Record::RemoveXattr {
                ino: r.u64()?,
                name: r.bytes(XATTR_NAME_MAX)?,
                time: get_time(r)?,
            },
            11 => Record::Free { ino: r.u64()? },
            14 => Record::Grow {
                ino: r.u64()?,
                size: r.u64()?,
            },
            12 => Record::SetFlags {
                ino: r.u64()?,
                flags: r.u32()?,
                time: get_time(r)?,
            },
            13 => Record::Tmpfile {
                parent: r.u64()?,
                ino: r.u64()?,
                perm: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                time: get_time(r)?,
            },
            t => return Err(DecodeError(format!("unknown journal record type {t}"))),
        })
    }
}

/// Encodes a transaction (the records of one operation) as one journal payload.
pub fn encode_transaction(records: &[Record]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(records.len() as u32);
    for rec in records {
        rec.encode(&mut w);
    }
    w.buf
}

/// Decodes a journal payload.
pub fn decode_transaction(payload: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut r = Reader::new(payload);
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(payload.len()));
    for _ in 0..n {
        out.push(Record::decode(&mut r)?);
    }
    Ok(out)
}

/// The inodes a record may touch, as the applier sees them: locked inodes during live
/// operation, the whole table during replay.
pub trait InodeSet {
    /// The inode `ino`, for changing.
    fn inode(&mut self, ino: u64) -> FsResult<&mut Inode>;
    /// Adds a new inode.
    fn add(&mut self, inode: Inode);
    /// Removes `ino` and returns it.
    fn remove(&mut self, ino: u64) -> FsResult<Inode>;
}

impl InodeSet for std::collections::HashMap<u64, Inode> {
    fn inode(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.get_mut(&ino)
            .ok_or_else(|| FsError::Corrupt(format!("record names missing inode {ino}")))
    }
    fn add(&mut self, inode: Inode) {
        self.insert(inode.ino, inode);
    }
    fn remove(&mut self, ino: u64) -> FsResult<Inode> {
        std::collections::HashMap::remove(self, &ino)
            .ok_or_else(|| FsError::Corrupt(format!("record frees missing inode {ino}")))
    }
}

/// What [`apply`] works on besides the inodes.
pub struct Space<'a> {
    /// The allocator (locked by the caller).
    pub alloc: &'a mut Allocator,
    /// The image, to scrub freed blocks.
    pub image: &'a Image,
    /// Replaying the journal: claim mapped blocks from the allocator (live operations
    /// allocated them already), and do not scrub freed blocks, whose later owners' data in
    /// the image is newer than this record.
    pub replay: bool,
    /// Live: the sequence number of the journal entry this transaction goes to. The blocks
    /// it lets go of stay pending in the allocator ([`Allocator::free_pending`]) until that
    /// entry is durable: a power failure before would bring the file back with its blocks
    /// punched out or given to another file. Whoever makes the journal durable settles them
    /// ([`Space::settle`]).
    pub seq: u64,
}

impl Space<'_> {
    /// Frees blocks a file let go of. Pinned blocks stay busy in the allocator. Live, the
    /// rest stay out of the free space too until [`Space::settle`]; in replay they become
    /// free at once (and are not scrubbed).
    pub fn release(&mut self, ext: Extent) -> FsResult<()> {
        let corrupt =
            |e| FsError::Corrupt(format!("freeing blocks {}+{}: {e}", ext.start, ext.len));
        if self.replay {
            self.alloc.free(ext).map_err(corrupt)?;
        } else {
            self.alloc.free_pending(ext, self.seq).map_err(corrupt)?;
        }
        Ok(())
    }

    /// The journal entries of sequence numbers below `durable` are durable: the blocks they
    /// freed that no pin of a holder keeps become free, scrubbed so that whoever gets them
    /// next reads zeros. Returns whether any pending free was settled.
    pub fn settle(alloc: &mut Allocator, image: &Image, durable: u64) -> bool {
        if !alloc.has_pending() {
            return false;
        }
        for f in alloc.settle(durable) {
            image.discard(f.start * BLOCK_SIZE, f.len * BLOCK_SIZE);
        }
        true
    }
}

fn corrupt(what: String) -> FsError {
    FsError::Corrupt(what)
}

fn touch_dir(dir: &mut Inode, time: Time) {
    dir.mtime = time;
    dir.ctime = time;
    dir.size = dir.dir.len() as u64;
}

/// Applies one record. Live callers have validated it; in replay an impossible record is
/// reported as corruption.
pub fn apply(rec: &Record, set: &mut impl InodeSet, space: &mut Space<'_>) -> FsResult<()> {
    match rec {
        Record::Create {
            parent,
            name,
            ino,
            kind,
            perm,
            uid,
            gid,
            rdev,
            target,
            time,
        } => {
            if space.replay && set.inode(*ino).is_ok() {
                return Err(corrupt(format!("create of inode {ino}, which exists")));
            }
            let p = set.inode(*parent)?;
            if p.kind != Kind::Dir || p.dir.get(name).is_some() {
                return Err(corrupt(format!(
                    "create of {:?} in inode {parent}",
                    String::from_utf8_lossy(name)
                )));
            }
            p.dir.insert(name, *ino, *kind);
            if *kind == Kind::Dir {
                p.nlink = p.nlink.saturating_add(1);
            }
            touch_dir(p, *time);
            let mut inode = Inode::new(*ino, *kind, *perm, *uid, *gid, *rdev, *parent, *time);
            if *kind == Kind::Symlink {
                inode.target = target.clone();
                inode.size = target.len() as u64;
            }
            set.add(inode);
        }
        Record::Tmpfile {
            parent,
            ino,
            perm,
            uid,
            gid,
            time,
        } => {
            if space.replay && set.inode(*ino).is_ok() {
                return Err(corrupt(format!("tmpfile of inode {ino}, which exists")));
            }
            if set.inode(*parent)?.kind != Kind::Dir {
                return Err(corrupt(format!("tmpfile in inode {parent}, no directory")));
            }
            let mut inode = Inode::new(*ino, Kind::File, *perm, *uid, *gid, 0, *parent, *time);
            inode.nlink = 0;
            set.add(inode);
        }
        Record::Link {
            parent,
            name,
            ino,
            time,
        } => {
            let child = set.inode(*ino)?;
            if child.kind == Kind::Dir {
                return Err(corrupt(format!("hard link to directory {ino}")));
            }
            child.nlink = child.nlink.saturating_add(1);
            child.ctime = *time;
            let kind = child.kind;
            let p = set.inode(*parent)?;
            if p.kind != Kind::Dir || p.dir.get(name).is_some() {
                return Err(corrupt(format!(
                    "link over existing name in inode {parent}"
                )));
            }
            p.dir.insert(name, *ino, kind);
            touch_dir(p, *time);
        }
        Record::Unlink { parent, name, time } => {
            let p = set.inode(*parent)?;
            let e = p
                .dir
                .remove(name)
                .ok_or_else(|| corrupt(format!("unlink of missing name in inode {parent}")))?;
            if e.kind == Kind::Dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            touch_dir(p, *time);
            let child = set.inode(e.ino)?;
            child.nlink = if e.kind == Kind::Dir {
                0
            } else {
                child.nlink.saturating_sub(1)
            };
            child.ctime = *time;
        }
        Record::Rename {
            from_parent,
            from_name,
            to_parent,
            to_name,
            exchange,
            time,
        } => {
            let missing = || corrupt(format!("rename of missing name in inode {from_parent}"));
            let src = set
                .inode(*from_parent)?
                .dir
                .remove(from_name)
                .ok_or_else(missing)?;
            let dst = set.inode(*to_parent)?.dir.remove(to_name);
            if *exchange {
                let dst = dst.ok_or_else(|| corrupt("exchange with a missing name".into()))?;
                set.inode(*from_parent)?
                    .dir
                    .insert(from_name, dst.ino, dst.kind);
                set.inode(*to_parent)?
                    .dir
                    .insert(to_name, src.ino, src.kind);
                for (e, from, to) in [
                    (src, *from_parent, *to_parent),
                    (dst, *to_parent, *from_parent),
                ] {
                    let child = set.inode(e.ino)?;
                    child.ctime = *time;
                    if e.kind == Kind::Dir && from != to {
                        child.parent = to;
                        let f = set.inode(from)?;
                        f.nlink = f.nlink.saturating_sub(1);
                        let t = set.inode(to)?;
                        t.nlink = t.nlink.saturating_add(1);
                    }
                }
            } else {
                if let Some(old) = dst {
                    let victim = set.inode(old.ino)?;
                    victim.ctime = *time;
                    if old.kind == Kind::Dir {
                        victim.nlink = 0;
                        let t = set.inode(*to_parent)?;
                        t.nlink = t.nlink.saturating_sub(1);
                    } else {
                        victim.nlink = victim.nlink.saturating_sub(1);
                    }
                }
                set.inode(*to_parent)?
                    .dir
                    .insert(to_name, src.ino, src.kind);
                let child = set.inode(src.ino)?;
                child.ctime = *time;
                if src.kind == Kind::Dir && from_parent != to_parent {
                    child.parent = *to_parent;
                    let f = set.inode(*from_parent)?;
                    f.nlink = f.nlink.saturating_sub(1);
                    let t = set.inode(*to_parent)?;
                    t.nlink = t.nlink.saturating_add(1);
                }
            }
            touch_dir(set.inode(*from_parent)?, *time);
            touch_dir(set.inode(*to_parent)?, *time);
        }
        Record::SetAttr {
            ino,
            perm,
            uid,
            gid,
            atime,
            mtime,
            ctime,
        } => {
            let i = set.inode(*ino)?;
            i.perm = perm & 0o7777;
            i.uid = *uid;
            i.gid = *gid;
            i.atime = *atime;
            i.mtime = *mtime;
            i.ctime = *ctime;
        }
        Record::SetSize { ino, size } => {
            let i = set.inode(*ino)?;
            let keep = size.div_ceil(BLOCK_SIZE);
            let freed = i.extents.remove(keep, u64::MAX - keep);
            i.size = *size;
            for ext in freed {
                space.release(ext)?;
            }
        }
        Record::Grow { ino, size } => {
            let i = set.inode(*ino)?;
            i.size = i.size.max(*size);
        }
        Record::Map {
            ino,
            file_block,
            image_block,
            len,
        } => {
            let ext = Extent {
                start: *image_block,
                len: *len,
            };
            if space.replay {
                space.alloc.claim(ext).map_err(|e| {
                    corrupt(format!("inode {ino} maps blocks that are not free: {e}"))
                })?;
            }
            let i = set.inode(*ino)?;
            if !i.extents.mappings_in(*file_block, *len).is_empty() {
                return Err(corrupt(format!(
                    "inode {ino}: file blocks {file_block}+{len} mapped twice"
                )));
            }
            i.extents.insert(*file_block, *image_block, *len);
        }
        Record::Unmap {
            ino,
            file_block,
            len,
        } => {
            let freed = set.inode(*ino)?.extents.remove(*file_block, *len);
            for ext in freed {
                space.release(ext)?;
            }
        }
        Record::SetXattr {
            ino,
            name,
            value,
            time,
        } => {
            let i = set.inode(*ino)?;
            i.xattrs.insert(name.clone(), value.clone());
            i.ctime = *time;
        }
        Record::RemoveXattr { ino, name, time } => {
            let i = set.inode(*ino)?;
            i.xattrs.remove(name);
            i.ctime = *time;
        }
        Record::SetFlags { ino, flags, time } => {
            let i = set.inode(*ino)?;
            crate::meta::inode::flags::check(i.kind, *flags)
                .map_err(|e| corrupt(format!("inode {ino}: {e}")))?;
            i.flags = *flags;
            i.ctime = *time;
        }
        Record::Free { ino } => {
            let i = set.remove(*ino)?;
            if i.nlink != 0 {
                return Err(corrupt(format!("inode {ino} freed with {} links", i.nlink)));
            }
            for m in i.extents.iter() {
                space.release(Extent {
                    start: m.image_block,
                    len: m.len,
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips() {
        let t = Time { secs: 1, nsecs: 2 };
        let recs = vec![
            Record::Create {
                parent: 1,
                name: b"a".to_vec(),
                ino: 5,
                kind: Kind::Symlink,
                perm: 0o777,
                uid: 1,
                gid: 2,
                rdev: 0,
                target: b"t".to_vec(),
                time: t,
            },
            Record::Link {
                parent: 1,
                name: b"b".to_vec(),
                ino: 5,
                time: t,
            },
            Record::Unlink {
                parent: 1,
                name: b"a".to_vec(),
                time: t,
            },
            Record::Rename {
                from_parent: 1,
                from_name: b"b".to_vec(),
                to_parent: 2,
                to_name: b"c".to_vec(),
                exchange: true,
                time: t,
            },
            Record::SetAttr {
                ino: 5,
                perm: 0o4755,
                uid: 3,
                gid: 4,
                atime: t,
                mtime: t,
                ctime: t,
            },
            Record::SetSize { ino: 5, size: 99 },
            Record::Grow { ino: 5, size: 7 },
            Record::Map {
                ino: 5,
                file_block: 1,
                image_block: 2,
                len: 3,
            },
            Record::Unmap {
                ino: 5,
                file_block: 1,
                len: 3,
            },
            Record::SetXattr {
                ino: 5,
                name: b"user.x".to_vec(),
                value: vec![0; 10],
                time: t,
            },
            Record::RemoveXattr {
                ino: 5,
                name: b"user.x".to_vec(),
                time: t,
            },
            Record::SetFlags {
                ino: 5,
                flags: 0x30,
                time: t,
            },
            Record::Free { ino: 5 },
            Record::Tmpfile {
                parent: 1,
                ino: 6,
                perm: 0o2640,
                uid: 7,
                gid: 8,
                time: t,
            },
        ];
        assert_eq!(
            decode_transaction(&encode_transaction(&recs)).unwrap(),
            recs
        );
        let payload = encode_transaction(&recs);
        for cut in 0..payload.len() {
            assert!(
                decode_transaction(&payload[..cut]).is_err(),
                "a transaction cut at {cut} must not decode"
            );
        }
    }
}

//! Attributes and permissions: getattr, setattr (truncate included, as a breaker), the
//! set-id rules and the mode-bit access check.

use super::*;

/// Permission bits after a write, truncate or fallocate by `caller` of a file whose group is
/// `gid` (the kernel leaves clearing set-uid/set-gid to us: `FUSE_HANDLE_KILLPRIV`). As in
/// Linux (`setattr_should_drop_suidgid`), for a caller other than root: set-uid goes; set-gid
/// goes with group execute, and without it when the caller is not in the file's group (its
/// supplementary groups read from /proc, FUSE giving only the primary one).
pub(super) fn kill_privs(perm: u32, gid: u32, caller: Caller) -> u32 {
    if caller.uid == 0 || perm & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return perm;
    }
    let mut p = perm & !libc::S_ISUID;
    if p & libc::S_ISGID != 0
        && (p & libc::S_IXGRP != 0
            || (caller.gid != gid && !crate::fs::status::groups_of(caller.pid).contains(&gid)))
    {
        p &= !libc::S_ISGID;
    }
    p
}

pub(super) fn set_attr_record(i: &Inode) -> Record {
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

impl Fs {
    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.is_up()?;
        Ok(Attr::of(&self.table.get(ino)?.read()))
    }

    /// Attributes of `ino` for `statx(2)`: [`Fs::getattr`]'s, and the `STATX_ATTR_*` bits of
    /// its flags with their mask (`flags::statx_attributes`), read together.
    pub fn statx(&self, ino: u64) -> FsResult<Statx> {
        self.is_up()?;
        let cell = self.table.get(ino)?;
        let i = cell.read();
        let (attributes, attributes_mask) = flags::statx_attributes(i.flags);
        Ok(Statx {
            attr: Attr::of(&i),
            attributes,
            attributes_mask,
        })
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
        let change = req.flag_change();
        // Refused by the inode's flags before any lease is broken for it; checked again
        // under the inode's lock, where it counts.
        flags::check(&self.table.get(ino)?.read(), change)?;
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
        flags::check(i, change)?;
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
                || crate::fs::status::groups_of(caller.pid).contains(&i.gid);
            if perm & libc::S_IXGRP != 0 || !in_group {
                perm &= !libc::S_ISGID;
            }
        }
        let (mut mtime, mut atime) = (i.mtime, i.atime);
        let mut zero = (0, 0);
        let (mut grown, mut shrinks) = (None, false);
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
            // reaches them (a holder or a mapping may have stored there): growing zeros them
            // past the old end, before the transaction and ordered before it, so that no
            // crash shows the new size over the old bytes. (Shrinking leaves the bytes past
            // its end alone: whatever grows the file again zeros them, and a crash that
            // keeps the old size shows them as they were.)
            if size > i.size {
                zero = (i.size, size.min(i.size.next_multiple_of(BLOCK_SIZE)));
                // Growing keeps the blocks allocated past the end, as on XFS and ext4.
                if self.defers_growth() {
                    grown = Some(size);
                } else {
                    records.push(Record::Grow { ino, size });
                }
            } else if size < i.size {
                records.push(Record::SetSize { ino, size });
                shrinks = true;
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
        // chmod rewrites the access ACL's owner, mask (or group) and other entries, as
        // Linux's posix_acl_chmod (the kernel leaves it to a FUSE daemon).
        if req.mode.is_some() {
            if let Some(mut a) = i
                .xattrs
                .get(acl::ACCESS)
                .and_then(|v| acl::Acl::parse(v).ok())
            {
                a.chmod(perm);
                records.push(acl::record(ino, acl::ACCESS, Some(&a), ctime));
            }
        }
        records.push(Record::SetAttr {
            ino,
            perm,
            uid,
            gid,
            atime,
            mtime,
            ctime,
        });
        self.zero_exposed(held.get(ino)?, zero.0, zero.1);
        // A size not yet journaled would undo the shrink if it came after it.
        let unjournaled = if shrinks {
            self.forget_growth(ino)
        } else {
            None
        };
        if let Err(e) = self.commit(&mut held, &records) {
            self.restore_growth(ino, unjournaled);
            return Err(e);
        }
        let i = held.get(ino)?;
        if let Some(size) = grown {
            i.size = size;
            self.note_growth(ino, size);
        }
        i.rt.times_dirty = false;
        if owner_change {
            self.leases.owner_changed(ino, uid);
        }
        let attr = Attr::of(i);
        drop(held);
        drop(_gate);
        self.sync_if_flagged(ino)?;
        Ok(attr)
    }
}

impl SetAttr {
    /// What this change does, for the inode flags' check: a size is data; a mode, an owner
    /// or a given time is attributes; times set to now are a touch.
    fn flag_change(&self) -> flags::Change {
        let given = |t: &Option<SetTime>| matches!(t, Some(SetTime::At(_)));
        if self.size.is_some() {
            flags::Change::Data
        } else if self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || given(&self.atime)
            || given(&self.mtime)
        {
            flags::Change::Attributes
        } else {
            flags::Change::Touch
        }
    }
}

/// May `caller` access `i` for `want` (4 read, 2 write, 1 execute), by its mode bits? Root
/// may always read and write.
pub(super) fn may_access(i: &Inode, caller: Caller, want: u32) -> bool {
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

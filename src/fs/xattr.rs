//! Extended attributes.

use super::acl::{self, Acl};
use super::*;

impl Fs {
    fn check_xattr_name(&self, name: &[u8]) -> FsResult<()> {
        if name.len() > XATTR_NAME_MAX || name.is_empty() {
            return Err(FsError::Range);
        }
        if acl::is_acl(name) {
            return if self.acl() {
                Ok(())
            } else {
                Err(FsError::NotSupported)
            };
        }
        if !crate::meta::inode::xattr_name_ok(name) {
            return Err(FsError::NotSupported);
        }
        Ok(())
    }

    /// Sets an extended attribute (`flags`: `XATTR_CREATE` 1, `XATTR_REPLACE` 2), as root.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.setxattr_by(ino, name, value, flags, Caller::ROOT)
    }

    /// Sets an extended attribute for `caller`. An access ACL also sets the mode's bits from
    /// it (and set-gid goes when the caller is neither in the file's group nor root, as
    /// Linux's `posix_acl_update_mode`); an ACL the mode says all of is not stored.
    pub fn setxattr_by(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> FsResult<()> {
        self.with_journal_room(|| self.setxattr_once(ino, name, value, flags, caller))
    }

    fn setxattr_once(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> FsResult<()> {
        self.check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::TooBig);
        }
        self.writable()?;
        // A new attribute or a longer value grows the metadata, and needs room as a create
        // does; a value no longer than the one it replaces does not (so a full filesystem
        // can still shrink one). The inode's lock decides: an attribute that went or grew
        // meanwhile sends this back for the room.
        let grows = |i: &Inode| i.xattrs.get(name).is_none_or(|v| value.len() > v.len());
        let mut room = false;
        loop {
            if !room && grows(&self.table.get(ino)?.read()) {
                self.room_to_grow()?;
                room = true;
            }
            let _gate = self.gate();
            let cells = [self.table.get(ino)?];
            let mut held = Held::lock(&cells);
            if !room && grows(held.get(ino)?) {
                continue;
            }
            return self.set_xattr_locked(&mut held, ino, name, value, flags, caller);
        }
    }

    fn set_xattr_locked(
        &self,
        held: &mut Held<'_>,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> FsResult<()> {
        flags::check(held.get(ino)?, flags::Change::Xattr)?;
        let exists = held.get(ino)?.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoData);
        }
        if acl::is_acl(name) {
            return self.set_acl(held, ino, name, value, caller);
        }
        self.commit(
            held,
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
        self.is_up()?;
        if name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        if acl::is_acl(name) && !self.acl() {
            return Err(FsError::NotSupported);
        }
        let c = self.table.get(ino)?;
        let i = c.read();
        i.xattrs.get(name).cloned().ok_or(FsError::NoData)
    }

    /// All extended attribute names, each followed by a NUL; on a `noacl` mount not the
    /// stored ACLs', whose getxattr is `EOPNOTSUPP` there (as ext4 mounted `noacl` lists
    /// them not).
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.is_up()?;
        let c = self.table.get(ino)?;
        let i = c.read();
        let mut out = Vec::new();
        let acl = self.acl();
        for k in i.xattrs.keys().filter(|k| acl || !acl::is_acl(k)) {
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
        self.check_xattr_name(name)?;
        self.writable()?;
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        flags::check(held.get(ino)?, flags::Change::Xattr)?;
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

    /// An ACL xattr set under the inode's lock: parsed (`EINVAL` if it is not one), the
    /// mode kept in step for an access ACL, in one transaction.
    fn set_acl(
        &self,
        held: &mut Held<'_>,
        ino: u64,
        name: &[u8],
        value: &[u8],
        caller: Caller,
    ) -> FsResult<()> {
        let parsed = Acl::parse(value)?;
        let i = held.get(ino)?;
        let now = Time::now();
        let mut records = Vec::new();
        let stored = if name == acl::ACCESS {
            let (bits, equiv) = parsed.mode_bits();
            let mut perm = (i.perm & !0o777) | bits;
            let in_group = caller.uid == 0
                || caller.gid == i.gid
                || crate::fs::status::groups_of(caller.pid).contains(&i.gid);
            if !in_group {
                perm &= !libc::S_ISGID;
            }
            records.push(Record::SetAttr {
                ino,
                perm,
                uid: i.uid,
                gid: i.gid,
                atime: i.atime,
                mtime: i.mtime,
                ctime: now,
            });
            (!equiv).then_some(&parsed)
        } else {
            if i.kind != Kind::Dir {
                return Err(FsError::Access);
            }
            Some(&parsed)
        };
        if stored.is_some() || i.xattrs.contains_key(name) {
            records.push(acl::record(ino, name, stored, now));
        }
        self.commit(held, &records)
    }
}

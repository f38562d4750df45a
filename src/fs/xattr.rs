//! Extended attributes.

use super::*;

impl Fs {
    fn check_xattr_name(name: &[u8]) -> FsResult<()> {
        if name.len() > XATTR_NAME_MAX || name.is_empty() {
            return Err(FsError::Range);
        }
        if !crate::meta::inode::xattr_name_ok(name) {
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
            return self.set_xattr_locked(&mut held, ino, name, value, flags);
        }
    }

    fn set_xattr_locked(
        &self,
        held: &mut Held<'_>,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        let exists = held.get(ino)?.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoData);
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
}

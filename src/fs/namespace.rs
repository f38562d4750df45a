//! The namespace: lookup and the kernel's references (forget, reclaim of unlinked inodes),
//! create, link, remove, rename, symlinks, and directory listings with stable cookies.

use super::*;

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

/// How a new inode is owned ([`Fs::new_owner`]).
struct NewOwner {
    perm: u32,
    gid: u32,
    /// The directory's default ACL, if it has one (and ACLs are on).
    default_acl: Option<acl::Acl>,
    /// The access ACL the new inode inherits from it, if any.
    access_acl: Option<acl::Acl>,
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

impl Fs {
    /// Looks `name` up in `parent` and takes a kernel reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        self.is_up()?;
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
                cell.page_cached.store(false, Ordering::SeqCst);
            }
            if left.is_ok_and(|l| l <= n) && !self.ro() {
                if let Err(e) = self.maybe_reclaim(ino) {
                    tracing::error!(ino, "freeing an orphan failed: {e}");
                }
            }
        }
    }

    /// Frees `ino` if it has no links, no open handles and no kernel references.
    pub(super) fn maybe_reclaim(&self, ino: u64) -> FsResult<()> {
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

    pub(super) fn reclaim_now(&self, ino: u64) -> FsResult<()> {
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
        // A size not yet journaled must not come after the inode is gone.
        let unjournaled = self.forget_growth(ino);
        if let Err(e) = self.commit(&mut held, &[Record::Free { ino }]) {
            self.restore_growth(ino, unjournaled);
            return Err(e);
        }
        self.publish(&mut held);
        Ok(())
    }

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
        self.create_masked(parent, name, mode, 0, rdev, target, caller)
    }

    /// [`Fs::create`] with the creator's `umask`, which applies unless the directory has a
    /// default ACL; with one, the new inode inherits it (see `acl.rs`).
    #[allow(clippy::too_many_arguments)]
    pub fn create_masked(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        target: Option<&[u8]>,
        caller: Caller,
    ) -> FsResult<Attr> {
        self.with_journal_room(|| self.create_once(parent, name, mode, umask, rdev, target, caller))
    }

    #[allow(clippy::too_many_arguments)]
    fn create_once(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
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
        flags::check(p, flags::Change::AddEntry)?;
        let NewOwner {
            perm,
            gid,
            default_acl,
            access_acl,
        } = self.new_owner(p, kind, mode, umask, caller);
        let ino = self.new_ino()?;
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
        let time = Time::now();
        let mut records = vec![rec];
        if let Some(a) = &access_acl {
            records.push(acl::record(ino, acl::ACCESS, Some(a), time));
        }
        if let (Some(d), Kind::Dir) = (&default_acl, kind) {
            records.push(acl::record(ino, acl::DEFAULT, Some(d), time));
        }
        self.commit(&mut held, &records)?;
        let added = self.publish(&mut held);
        let cell = &added[0];
        cell.lookups.fetch_add(1, Ordering::SeqCst);
        let attr = Attr::of(&cell.read());
        Ok(attr)
    }

    /// The permission bits, group and ACLs of a new inode of `kind` made in directory `p` with
    /// `mode` by `caller` whose umask is `umask`: a default ACL of the directory is inherited
    /// (and the umask ignored), else the umask applies; a set-gid directory gives its group
    /// (and, to a directory, its set-gid bit).
    fn new_owner(&self, p: &Inode, kind: Kind, mode: u32, umask: u32, caller: Caller) -> NewOwner {
        let mut perm = if kind == Kind::Symlink {
            0o777
        } else {
            mode & 0o7777
        };
        let default_acl = if self.acl() && kind != Kind::Symlink {
            p.xattrs
                .get(acl::DEFAULT)
                .and_then(|v| acl::Acl::parse(v).ok())
        } else {
            None
        };
        let access_acl = match &default_acl {
            Some(d) => {
                let (bits, access) = d.inherit(perm);
                perm = bits;
                access
            }
            None if kind != Kind::Symlink => {
                perm &= !(umask & 0o777);
                None
            }
            None => None,
        };
        let gid = if p.perm & libc::S_ISGID != 0 {
            if kind == Kind::Dir {
                perm |= libc::S_ISGID;
            }
            p.gid
        } else {
            caller.gid
        };
        NewOwner {
            perm,
            gid,
            default_acl,
            access_acl,
        }
    }

    /// A new inode number. Inode numbers run out like inodes (ENOSPC): the next number stays
    /// below MAX_INO, or the checkpoint would hold one that load refuses.
    fn new_ino(&self) -> FsResult<u64> {
        self.next_ino
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n + 1 < crate::meta::inode::MAX_INO).then_some(n + 1)
            })
            .map_err(|_| FsError::NoSpace)
    }

    /// `open(parent, O_TMPFILE | flags, mode)`: creates a regular file with no name and no
    /// links in directory `parent`, owned as [`Fs::create_masked`] would own it there
    /// (`mode`'s permission bits less the `umask` or after the directory's default ACL, which
    /// it inherits; the caller's user; the group of a set-gid directory), and opens it
    /// with `flags`. Returns its attributes (a kernel reference, as a create's) and the
    /// handle. Until [`Fs::link`] names it (allowed unless `flags` has `O_EXCL`), it is an
    /// orphan: freed when its last handle and reference go, or at the next mount after a
    /// crash. The directory's times do not change.
    pub fn tmpfile(
        &self,
        parent: u64,
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        let attr =
            self.with_journal_room(|| self.tmpfile_once(parent, mode, umask, flags, caller))?;
        // The kernel reference taken above keeps the inode until the handle holds it too.
        let fh = self.open_file(attr.ino, flags)?;
        Ok((attr, fh))
    }

    fn tmpfile_once(
        &self,
        parent: u64,
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::Invalid("O_TMPFILE makes regular files only"));
        }
        self.writable()?;
        self.room_to_grow()?;
        let _gate = self.gate();
        let _ns = lock(&self.namespace);
        let cells = [self.table.get(parent)?];
        let mut held = Held::lock(&cells);
        let p = held.get(parent)?;
        if p.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if p.nlink == 0 {
            return Err(FsError::NotFound); // the directory was removed
        }
        flags::check(p, flags::Change::AddEntry)?;
        let owner = self.new_owner(p, Kind::File, mode, umask, caller);
        let ino = self.new_ino()?;
        let time = Time::now();
        let mut records = vec![Record::Tmpfile {
            parent,
            ino,
            perm: owner.perm,
            uid: caller.uid,
            gid: owner.gid,
            time,
        }];
        if let Some(a) = &owner.access_acl {
            records.push(acl::record(ino, acl::ACCESS, Some(a), time));
        }
        self.commit(&mut held, &records)?;
        let added = self.publish(&mut held);
        let cell = &added[0];
        // Under the namespace lock, so that no reclaim sees it unreferenced.
        cell.lookups.fetch_add(1, Ordering::SeqCst);
        cell.linkable
            .store(flags & libc::O_EXCL == 0, Ordering::SeqCst);
        let attr = Attr::of(&cell.read());
        Ok(attr)
    }

    /// Adds the name `name` in `parent` for `ino`. An inode with no links takes a name only
    /// if it is a file made by [`Fs::tmpfile`] without `O_EXCL` that has had none yet
    /// (`linkat` of an `O_TMPFILE` descriptor); any other gets `ENOENT`, as the kernel
    /// answers for an unlinked file.
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
        flags::check(p, flags::Change::AddEntry)?;
        let child = held.get(ino)?;
        flags::check(child, flags::Change::Name)?;
        if child.kind == Kind::Dir {
            return Err(FsError::NotPermitted);
        }
        if child.nlink == 0 && !cells[1].linkable.load(Ordering::SeqCst) {
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
        cells[1].linkable.store(false, Ordering::SeqCst);
        cells[1].lookups.fetch_add(1, Ordering::SeqCst);
        Ok(Attr::of(held.get(ino)?))
    }

    /// Removes a name: `unlink` (`dir` false) or `rmdir` (`dir` true).
    pub fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        let child = self.with_journal_room(|| self.remove_once(parent, name, dir))?;
        self.free_unlinked(child);
        Ok(())
    }

    /// Frees `ino` if the name an unlink or a rename just removed was its last (the second
    /// transaction of the operation, retried after a checkpoint as the first was). The name
    /// is gone already, so the operation has succeeded whatever happens here: a freeing
    /// that still fails leaves an orphan, freed at the next unmount or mount, and is logged,
    /// never reported as the operation's failure (running the operation again would answer
    /// `ENOENT` for the name it removed).
    fn free_unlinked(&self, ino: u64) {
        if let Err(e) = self.with_journal_room(|| self.maybe_reclaim(ino)) {
            tracing::error!(
                ino,
                "freeing an unlinked inode failed: {e}; it is freed at the next unmount or mount"
            );
        }
    }

    /// Removes the name; returns the inode it named.
    fn remove_once(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<u64> {
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
            flags::check(held.get(parent)?, flags::Change::RemoveEntry)?;
            let child = held.get(entry.ino)?;
            flags::check(child, flags::Change::Name)?;
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
        Ok(child_ino)
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
        let root = Caller {
            uid: 0,
            gid: 0,
            pid: 0,
        };
        self.rename_by(from_parent, from_name, to_parent, to_name, flags, root)
    }

    /// [`Fs::rename`] by `caller`, who owns the whiteout that [`rename_flags::WHITEOUT`]
    /// leaves at the source.
    pub fn rename_by(
        &self,
        from_parent: u64,
        from_name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<()> {
        let victim = self.with_journal_room(|| {
            self.rename_once(from_parent, from_name, to_parent, to_name, flags, caller)
        })?;
        if let Some(v) = victim {
            self.free_unlinked(v);
        }
        Ok(())
    }

    fn rename_once(
        &self,
        from_parent: u64,
        from_name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<Option<u64>> {
        check_name(to_name)?;
        if from_name.len() > NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let exchange = flags & rename_flags::EXCHANGE != 0;
        let whiteout = flags & rename_flags::WHITEOUT != 0;
        if flags & !(rename_flags::NOREPLACE | rename_flags::EXCHANGE | rename_flags::WHITEOUT) != 0
            || (exchange && flags & (rename_flags::NOREPLACE | rename_flags::WHITEOUT) != 0)
        {
            return Err(FsError::Invalid("unsupported rename flags"));
        }
        self.writable()?;
        if whiteout {
            // The whiteout is one more inode and keeps the source's name: room as a create.
            self.room_to_grow()?;
        }
        // A longer new name grows the metadata as a create does, so it needs the same room;
        // a rename over an existing name does not (that entry keeps its name, the source's
        // goes), nor does an exchange (both names stay where they are). Whether the target
        // exists is known for sure only under the namespace lock, where no checkpoint can be
        // written: a target that went meanwhile sends the rename back here for the room.
        let longer = !exchange && to_name.len() > from_name.len();
        let mut room = whiteout;
        loop {
            if longer && !room && !self.has_name(to_parent, to_name) {
                self.room_to_grow()?;
                room = true;
            }
            let done = self.rename_locked(
                from_parent,
                from_name,
                to_parent,
                to_name,
                flags,
                room || !longer,
                caller,
            )?;
            // None: the target went meanwhile, and this rename adds a name after all.
            if let Some(victim) = done {
                return Ok(victim);
            }
        }
    }

    /// Does directory `parent` hold `name` now?
    fn has_name(&self, parent: u64, name: &[u8]) -> bool {
        self.table
            .get(parent)
            .is_ok_and(|p| p.read().dir.get(name).is_some())
    }

    /// The rename itself, under the gate and the namespace lock: `None` (nothing changed)
    /// when it would add a longer name than it removes and `may_grow` is false, else the
    /// inode a rename over an existing name unlinked, if any.
    #[allow(clippy::too_many_arguments)]
    fn rename_locked(
        &self,
        from_parent: u64,
        from_name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        flags: u32,
        may_grow: bool,
        caller: Caller,
    ) -> FsResult<Option<Option<u64>>> {
        let exchange = flags & rename_flags::EXCHANGE != 0;
        let whiteout = flags & rename_flags::WHITEOUT != 0;
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
                None if !may_grow && to_name.len() > from_name.len() => return Ok(None),
                Some(_) if flags & rename_flags::NOREPLACE != 0 => return Err(FsError::Exists),
                Some(d) if d.ino == src.ino => return Ok(Some(None)),
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
            // As the VFS's may_delete and may_create would: the source leaves its directory,
            // a replaced or exchanged target leaves its own, or the name is added.
            flags::check(held.get(from_parent)?, flags::Change::RemoveEntry)?;
            flags::check(held.get(src.ino)?, flags::Change::Name)?;
            match dst {
                Some(d) => {
                    flags::check(held.get(to_parent)?, flags::Change::RemoveEntry)?;
                    flags::check(held.get(d.ino)?, flags::Change::Name)?;
                }
                None => flags::check(held.get(to_parent)?, flags::Change::AddEntry)?,
            }
            if let Some(d) = dst {
                if !exchange && d.kind == Kind::Dir && !held.get(d.ino)?.dir.is_empty() {
                    return Err(FsError::NotEmpty);
                }
            }
            let time = Time::now();
            let mut records = vec![Record::Rename {
                from_parent,
                from_name: from_name.to_vec(),
                to_parent,
                to_name: to_name.to_vec(),
                exchange,
                time,
            }];
            if whiteout {
                // In the same transaction: the source's name never goes missing.
                records.push(Record::Create {
                    parent: from_parent,
                    name: from_name.to_vec(),
                    ino: self.new_ino()?,
                    kind: Kind::CharDev,
                    perm: 0,
                    uid: caller.uid,
                    gid: caller.gid,
                    rdev: 0,
                    target: Vec::new(),
                    time,
                });
            }
            self.commit(&mut held, &records)?;
            self.publish(&mut held);
            victim = dst.filter(|_| !exchange).map(|d| d.ino);
        }
        Ok(Some(victim))
    }

    /// For each of `inos` that has a name: its first path found, and the first path through
    /// directories that all pass `may_search` (the root included), if any: for status
    /// displays, what a given user could find. One walk of the namespace.
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

    /// The target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.is_up()?;
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
        self.is_up()?;
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
        self.is_up()?;
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
}

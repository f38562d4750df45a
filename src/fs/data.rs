//! The data path: open files, read and write through the image mapping (with DAX windows
//! in the way where blocks are pinned), and fsync.

use super::*;

impl Fs {
    /// The image block behind `file_block` of `ino`, if mapped (for the fuzzer's oracles
    /// and tools; not a data path).
    pub fn image_block_of(&self, ino: u64, file_block: u64) -> Option<u64> {
        let c = self.table.get(ino).ok()?;
        let i = c.read();
        i.extents
            .lookup(file_block)
            .map(|m| m.image_block + (file_block - m.file_block))
    }

    /// Opens `ino` with open(2) `flags`; returns the handle.
    pub fn open_file(&self, ino: u64, flags: i32) -> FsResult<u64> {
        self.is_up()?;
        let c = self.table.get(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            let append = flags & libc::O_APPEND != 0 && flags & libc::O_TRUNC == 0;
            flags::check(&c.read(), flags::Change::OpenWrite { append })?;
        }
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

    /// Journals the times the data path changed only in memory. A metadata change like any
    /// other: the checkpoint the journal wants comes first, and a transaction refused for a
    /// full journal runs again after one (overwrites and fsyncs alone would otherwise fill
    /// the journal, nothing else asking for its checkpoint, and fsync would fail `ENOSPC`).
    fn flush_times(&self, ino: u64) -> FsResult<()> {
        if !self.table.get(ino)?.read().rt.times_dirty {
            return Ok(());
        }
        self.maybe_checkpoint()?;
        self.with_journal_room(|| self.flush_times_once(ino))
    }

    fn flush_times_once(&self, ino: u64) -> FsResult<()> {
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
        self.is_up()?;
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
                && i.flags & crate::meta::inode::flags::NOATIME == 0
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
    pub(super) fn store(
        &self,
        maps: &[Mapping],
        offset: u64,
        data: &[u8],
        dirty: &mut BTreeMap<u64, u64>,
    ) {
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

    /// [`Fs::store`] of the part of `data` (which belongs at file offset `offset`) that falls
    /// in the file range `lo..hi`.
    fn store_within(
        &self,
        maps: &[Mapping],
        offset: u64,
        data: &[u8],
        lo: u64,
        hi: u64,
        dirty: &mut BTreeMap<u64, u64>,
    ) {
        let a = lo.max(offset);
        let b = hi.min(offset + data.len() as u64);
        if a < b {
            let part = &data[(a - offset) as usize..(b - offset) as usize];
            self.store(maps, a, part, dirty);
        }
    }

    /// Stores zeros over the mapped bytes of `from..to`, past the end of file, before the
    /// transaction that makes the file reach them: ordered before it (see [`Fs::order_data`])
    /// and dirty for the next fsync.
    pub(super) fn zero_exposed(&self, i: &mut Inode, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let maps = Self::mappings_covering(i, from, to - from);
        let mut exposed = BTreeMap::new();
        self.store(&maps, from, &vec![0u8; (to - from) as usize], &mut exposed);
        self.order_data(&exposed);
        for (s, e) in exposed {
            let end = i.rt.dirty.get(&s).map_or(e, |&d| d.max(e));
            i.rt.dirty.insert(s, end);
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
    pub(super) fn zero_bytes(&self, i: &mut Inode, from: u64, to: u64) {
        if from < to {
            self.copy_in(i, from, &vec![0u8; (to - from) as usize]);
        }
    }

    pub(super) fn fully_mapped(i: &Inode, first: u64, count: u64) -> bool {
        i.extents
            .mappings_in(first, count)
            .iter()
            .map(|m| m.len)
            .sum::<u64>()
            == count
    }

    /// A write through a descriptor with `open_flags`, as the kernel passes them with each
    /// write (the descriptor's `O_SYNC`/`O_DSYNC`, and `RWF_SYNC`/`RWF_DSYNC` of the call):
    /// with either, the written data (and with `O_SYNC` the metadata too) is durable when it
    /// returns, as an `fsync` (`fdatasync`) right after it would make it.
    pub fn write_flagged(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        caller: Caller,
        open_flags: i32,
    ) -> FsResult<u32> {
        let n = self.write(ino, offset, data, caller)?;
        if open_flags & libc::O_DSYNC != 0 {
            self.fsync(ino, open_flags & libc::O_SYNC != libc::O_SYNC)?;
        }
        Ok(n)
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
            let at_end = offset >= i.size;
            flags::check(&i, flags::Change::Write { at_end })?;
            if i.flags & crate::meta::inode::flags::SYNC == 0
                && end <= i.size
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
        let at_end = offset >= i.size;
        flags::check(i, flags::Change::Write { at_end })?;
        let mut records = self.allocate_range(ino, &i.extents, first, count);
        // The blocks this write goes to: those the file has and those just allocated.
        let had = i.extents.mappings_in(first, count);
        let fresh: Vec<Mapping> = records.iter().filter_map(Record::as_mapping).collect();
        let mut maps: Vec<Mapping> = had.iter().chain(&fresh).copied().collect();
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
        let grows = end > old_size;
        if grows && !self.defers_growth() {
            records.push(Record::Grow { ino, size: end });
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
        // What the transaction exposes goes in before it: the bytes past the old end of file
        // (zeros from there to this write, in the old last block, where a holder or a mapping
        // may have left bytes; then the data) and the blocks it maps. Nobody sees them before
        // the transaction is in, and they are ordered before the size (made durable before
        // the journal flush that makes it durable; with a volatile cache, before the size is
        // journaled at all), so no crash shows the new size without its data.
        let mut exposed = BTreeMap::new();
        let tail_end = offset.min(old_size.next_multiple_of(BLOCK_SIZE));
        if old_size < tail_end {
            let tail = Self::mappings_covering(i, old_size, tail_end - old_size);
            let zeros = vec![0u8; (tail_end - old_size) as usize];
            self.store(&tail, old_size, &zeros, &mut exposed);
        }
        self.store_within(&fresh, offset, data, offset, end, &mut exposed);
        self.store_within(&had, offset, data, old_size, end, &mut exposed);
        self.order_data(&exposed);
        // Then the transaction: a write it refuses stores nothing the file shows, also not
        // into blocks the file already had. (The bytes past its end read as zeros again, and
        // refused blocks go back scrubbed.)
        if let Err(e) = self.commit_allocation(&mut held, &records) {
            for (&s, &e) in &exposed {
                self.image.zero(s, e - s);
            }
            return Err(e);
        }
        let i = held.get(ino)?;
        if grows && self.defers_growth() {
            i.size = end;
            self.note_growth(ino, end);
        }
        self.store_within(&had, offset, data, offset, old_size, &mut i.rt.dirty);
        for (s, e) in exposed {
            let end = i.rt.dirty.get(&s).map_or(e, |&d| d.max(e));
            i.rt.dirty.insert(s, end);
        }
        i.rt.times_dirty = false;
        if privs_killed {
            self.tell_kernel(Stale::Attributes(ino, None));
        }
        drop(held);
        drop(_gate);
        self.sync_if_flagged(ino)?;
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
        // The ordered data first without the journal lock, so that commits go on during its
        // I/O; what is noted after is flushed under the lock, before the journal.
        self.flush_ordered()?;
        self.flush_journal(&mut lock(&self.journal))?;
        if self.growth_unjournaled.load(Ordering::SeqCst) {
            // The journal had no room for grown sizes: the checkpoint records them.
            self.checkpoint(false)?;
        }
        Ok(())
    }
}

//! Space: block allocation for files, the admission checks that keep room for metadata,
//! checkpoint triggering, and what `statfs` and the space check report.

use super::*;

impl Fs {
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
        let pending: Vec<Extent> = alloc.pending_extents().collect();
        for &(start, len, ino) in &mapped {
            let e = Extent { start, len };
            if let Some(p) = pending
                .iter()
                .find(|p| p.start < e.end() && e.start < p.end())
            {
                return Err(format!(
                    "inode {ino} maps image blocks {start}+{len}, and blocks {}+{} of them are freed (pending)",
                    p.start, p.len
                ));
            }
        }
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

    /// Writes a checkpoint now.
    pub fn checkpoint(&self, clean: bool) -> FsResult<()> {
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.checkpoint_gated(clean)
    }

    /// [`Fs::checkpoint`] for a caller that holds the gate exclusively already.
    pub(super) fn checkpoint_gated(&self, clean: bool) -> FsResult<()> {
        let cells = self.table.all();
        let guards: Vec<RwLockReadGuard<'_, Inode>> = cells.iter().map(|c| c.read()).collect();
        let mut journal = lock(&self.journal);
        let mut alloc = lock(&self.alloc);
        let mut sb = lock(&self.sb);
        self.is_up()?;
        // The checkpoint records every size and mapping: the data they expose first.
        self.flush_ordered()?;
        // The checkpoint records what is free: pending frees are settled first (the journal
        // made durable), so that the blob's free list has them (a clean one is trusted at
        // mount) and the blob's own allocation may use them.
        if alloc.has_pending() {
            let durable = journal
                .flush(&self.image)
                .map_err(|e| self.host_failed("making the journal durable", e))?;
            Space::settle(&mut alloc, &self.image, durable);
        }
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
        // The blob holds every size as it is: the growth not yet journaled is in it.
        lock(&self.sizes).clear();
        self.growth_unjournaled.store(false, Ordering::SeqCst);
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(generation = sb.generation, "checkpoint written");
        Ok(())
    }

    /// Writes the checkpoint the journal wants. One that finds no room (an image from before
    /// the metadata reserve, or space fragmented past it) does not stop the operation: it
    /// still goes to the journal while that has room, so deletes and truncates that would
    /// make the room still work.
    pub(super) fn maybe_checkpoint(&self) -> FsResult<()> {
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

    /// [`Fs::writable`] for changes that give space back (unlink, rmdir, truncate): a due
    /// checkpoint that cannot get its blocks (the image or the host under it is full) does
    /// not stop them. They go into the journal room left past its soft limit, and the space
    /// they free (punched back to the host) is what lets the next checkpoint be written;
    /// refusing them would leave a full filesystem where nothing can be deleted.
    pub(super) fn writable_to_free(&self) -> FsResult<()> {
        match self.writable() {
            Err(FsError::NoSpace) => Ok(()),
            Err(e @ FsError::Host { .. }) if e.as_host_failure().is_none() => Ok(()),
            r => r,
        }
    }

    /// The error for an allocation that came up short: `ENOSPC`, or `EIO` when it was the
    /// host that failed (and shut the filesystem down).
    pub(super) fn short_allocation(&self) -> FsError {
        if self.is_shut_down() {
            FsError::ShutDown
        } else {
            FsError::NoSpace
        }
    }

    /// Operations that grow the metadata (new inodes, names, extended attributes) need room
    /// for the checkpoints that will hold them ([`checkpoint::growth_needs`]): without it,
    /// a later checkpoint might not fit, and then deletes and unmount would fail too. When
    /// space is short, a checkpoint now (which empties the journal) may make the room;
    /// otherwise `ENOSPC`, as when a filesystem runs out of inodes. Called with no lock held.
    pub(super) fn room_to_grow(&self) -> FsResult<()> {
        let fits = || {
            let used = lock(&self.journal).used();
            let needs = checkpoint::growth_needs(&lock(&self.sb), used);
            (used, lock(&self.alloc).holds(needs))
        };
        // Pending frees are space once the journal is durable.
        let fits = || match fits() {
            (_, false) if self.settle_pending() => fits(),
            r => r,
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

    /// Allocates image blocks for the unmapped blocks of `first..first+count`, in order,
    /// stopping at the first block that cannot be had. Returns the new mappings as records.
    pub(super) fn allocate_range(
        &self,
        ino: u64,
        extents: &ExtentMap,
        first: u64,
        count: u64,
    ) -> Vec<Record> {
        let mut records = Vec::new();
        let mut alloc = lock(&self.alloc);
        // An allocation that comes up short while frees are pending makes the journal
        // durable, which settles them, and tries once more (XFS forces its log for busy
        // extents the same way). The host may be short too: settling punches the freed
        // blocks out of the image, which gives the host room back.
        let mut settled = false;
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
                            let host_full = err.raw_os_error() == Some(libc::ENOSPC);
                            if host_full && !settled && alloc.has_pending() {
                                drop(alloc);
                                settled = self.settle_pending();
                                alloc = lock(&self.alloc);
                                if settled {
                                    continue;
                                }
                            }
                            if host_full {
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
                    Err(_) if !settled && alloc.has_pending() => {
                        drop(alloc);
                        settled = self.settle_pending();
                        alloc = lock(&self.alloc);
                        if !settled {
                            return records;
                        }
                    }
                    Err(_) => return records,
                }
            }
        }
        records
    }

    /// Returns blocks that `allocate_range` handed out and that will not be used; they may
    /// have been written, so they are scrubbed (free blocks read as zeros).
    pub(super) fn unallocate(&self, records: &[Record]) {
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
    pub(super) fn commit_allocation(
        &self,
        held: &mut Held<'_>,
        records: &[Record],
    ) -> FsResult<()> {
        let r = self.commit(held, records);
        if let Err(FsError::NoSpace) = r {
            self.unallocate(records);
        }
        r
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> StatFs {
        let (total, data_start) = {
            let sb = lock(&self.sb);
            (sb.total_blocks, sb.data_start())
        };
        let alloc = lock(&self.alloc);
        let files = self.table.len() as u64;
        let blocks = total - data_start;
        // Pending frees count as free: they are, once the journal is next durable, and an
        // allocation that needs them makes it so (`allocate_range`). XFS counts its busy
        // extents as free the same way.
        let pending = alloc.pending_blocks();
        // Inodes live in memory and in checkpoints, not in a fixed table: report one possible
        // inode per data block, so that `df -i` means something and data does not change it.
        StatFs {
            blocks,
            free: alloc.free_blocks() + pending,
            available: alloc.available_blocks() + pending,
            busy: alloc.busy_blocks(),
            files,
            files_free: blocks.saturating_sub(files),
        }
    }

    /// Runs `f` with the allocator locked (for status).
    pub(crate) fn allocator_locked<R>(&self, f: impl FnOnce(&mut Allocator) -> R) -> R {
        f(&mut lock(&self.alloc))
    }

    /// Runs `f` with the allocator locked: a test hook (the `testing` feature) for checking
    /// the allocator against the files.
    #[cfg(feature = "testing")]
    pub fn with_allocator<R>(&self, f: impl FnOnce(&mut Allocator) -> R) -> R {
        self.allocator_locked(f)
    }
}

/// The byte ranges of `off..off+len` that are not in `free` (block extents, sorted).
pub(super) fn owned_ranges(free: &[Extent], off: u64, len: u64) -> Vec<(u64, u64)> {
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
pub(super) fn used_extents(alloc: &Allocator) -> Vec<Extent> {
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

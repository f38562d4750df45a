//! Transactions: how a metadata change reaches the journal (the gate, commit, publishing
//! the new inodes) and the retry that runs an operation again after a checkpoint made room.

use super::*;

impl Fs {
    /// Test hook: the next `n` transactions are refused as if the journal had no room for
    /// them (`ENOSPC`, nothing applied), the failure that operations must survive with
    /// nothing changed but that the metadata reserve and the journal's soft limit make hard
    /// to reach on purpose. (With the `testing` feature only.)
    #[cfg(feature = "testing")]
    pub fn fail_next_commits(&self, n: u32) {
        self.passing_commits.store(0, Ordering::SeqCst);
        self.failing_commits.store(n, Ordering::SeqCst);
    }

    /// Test hook: the next `pass` transactions go through, then the `n` after them are
    /// refused as [`Fs::fail_next_commits`] refuses them: the journal filling between the
    /// steps of one operation (an unlink's name, then the freeing of its inode). (With the
    /// `testing` feature only.)
    #[cfg(feature = "testing")]
    pub fn fail_commits_after(&self, pass: u32, n: u32) {
        self.failing_commits.store(n, Ordering::SeqCst);
        self.passing_commits.store(pass, Ordering::SeqCst);
    }

    /// Runs an operation that changes metadata. When its transaction found the journal full
    /// (the operation changed nothing, since the fallible part comes first, and asked for a
    /// checkpoint), writes the checkpoint and runs it once more: the soft limit normally
    /// checkpoints before the journal fills, but operations already past their admission can
    /// fill the rest, and a delete must not fail for that.
    pub(super) fn with_journal_room<T>(&self, mut op: impl FnMut() -> FsResult<T>) -> FsResult<T> {
        match op() {
            Err(FsError::NoSpace) if self.checkpoint_wanted.load(Ordering::SeqCst) => {
                self.checkpoint(false).and_then(|()| op())
            }
            r => r,
        }
    }

    pub(super) fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies and journals one transaction. The caller holds the gate and the inode locks.
    pub(super) fn commit(&self, held: &mut Held<'_>, records: &[Record]) -> FsResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.is_up()?;
        let payload = encode_transaction(records);
        let mut journal = lock(&self.journal);
        let injected = self
            .passing_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
            && self
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
                seq: journal.next_seq(),
            };
            // Blocks the transaction lets go of stay pending until its entry is durable (the
            // host makes a punched hole durable at its next commit, and a power failure
            // before the entry got there would bring the file back over holes, or over
            // another file's data). The journal is not made durable here: whoever flushes it
            // next settles them ([`Fs::flush_journal`]), as XFS keeps freed extents busy
            // until its log commits. A transaction that fails half-applied leaves its frees
            // pending too, settled once the entry that next takes its sequence number is.
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

    /// Makes the journal durable, then settles the frees its entries recorded (the blocks
    /// become free, scrubbed, reusable): the one place the journal is flushed, so that
    /// whatever made it durable (an fsync, a checkpoint, the flusher, an allocation that
    /// came up short) lets the freed blocks go. The caller holds the journal lock, and no
    /// allocator lock; the allocator is taken only after the host I/O. A failure shuts the
    /// filesystem down: later entries would sit on top of ones the host lost.
    pub(super) fn flush_journal(&self, journal: &mut Journal) -> FsResult<()> {
        let grown = std::mem::take(&mut *lock(&self.sizes));
        if journal.has_unsynced() || !grown.is_empty() {
            self.flush_ordered()?;
        }
        self.journal_growth(journal, grown);
        if journal.has_unsynced() {
            self.journal_flushes.fetch_add(1, Ordering::Relaxed);
        }
        let durable = journal
            .flush(&self.image)
            .map_err(|e| self.host_failed("making the journal durable", e))?;
        Space::settle(&mut lock(&self.alloc), &self.image, durable);
        Ok(())
    }

    /// Notes image ranges that a transaction about to commit exposes (an extension's bytes,
    /// newly mapped blocks): they are made durable before the journal next is
    /// ([`Fs::flush_ordered`]). The caller stored them already, so whichever flush takes them
    /// has them whole; one that takes them before the transaction is in makes them durable
    /// early, which a crash may do to any store.
    pub(super) fn order_data(&self, ranges: &BTreeMap<u64, u64>) {
        if ranges.is_empty() {
            return;
        }
        let mut ordered = lock(&self.ordered);
        for (&s, &e) in ranges {
            add_range(&mut ordered, s, e);
        }
    }

    /// Makes the ordered data durable: called before the journal or a checkpoint is (with
    /// the journal lock held, so that every transaction the flush will make durable noted
    /// its data before). One persistence point, before the journal's own: a crash between
    /// them shows the data without the metadata, never the reverse. A failure shuts the
    /// filesystem down, as the journal's does.
    pub(super) fn flush_ordered(&self) -> FsResult<()> {
        let ranges: Vec<(u64, u64)> = std::mem::take(&mut *lock(&self.ordered))
            .into_iter()
            .map(|(s, e)| (s, e - s))
            .collect();
        if ranges.is_empty() || crate::log::journal::debug_drop_flush("ordered") {
            return Ok(());
        }
        self.image
            .flush_ranges(&ranges)
            .map_err(|e| self.host_failed("making the data new metadata exposes durable", e))
    }

    /// Whether a growing size goes to the journal only after its data is durable: with a
    /// volatile cache, where a power cut may keep any of the cache's unflushed lines, the
    /// journal's among them. Without one the size is in the operation's own transaction, so
    /// that a killed daemon (whose stores all reach the image) loses none.
    pub(super) fn defers_growth(&self) -> bool {
        self.image.is_volatile()
    }

    /// A size that an operation grew to `size` without journaling it
    /// ([`Fs::defers_growth`]): the next journal flush appends it. Called under the inode's
    /// lock, after the operation's transaction is in (its mappings come first in the
    /// journal).
    pub(super) fn note_growth(&self, ino: u64, size: u64) {
        let mut sizes = lock(&self.sizes);
        let s = sizes.entry(ino).or_insert(size);
        *s = (*s).max(size);
    }

    /// Takes `ino`'s unjournaled size out, before a transaction that sets its size or frees
    /// it: appended after that transaction it would undo it. Returns it, for
    /// [`Fs::restore_growth`] when the transaction is refused.
    pub(super) fn forget_growth(&self, ino: u64) -> Option<u64> {
        lock(&self.sizes).remove(&ino)
    }

    /// Puts back what [`Fs::forget_growth`] took, when the transaction was refused.
    pub(super) fn restore_growth(&self, ino: u64, size: Option<u64>) {
        if let Some(size) = size {
            self.note_growth(ino, size);
        }
    }

    /// Appends the unjournaled sizes as `Grow` records (their data was made durable just
    /// before). Without room they are left to the checkpoint, which records every size.
    fn journal_growth(&self, journal: &mut Journal, grown: BTreeMap<u64, u64>) {
        let records: Vec<Record> = grown
            .iter()
            .map(|(&ino, &size)| Record::Grow { ino, size })
            .collect();
        let mut left = Vec::new();
        for chunk in records.chunks(1024) {
            let payload = encode_transaction(chunk);
            if !left.is_empty()
                || !journal.has_room(payload.len())
                || journal.append(&self.image, &payload).is_err()
            {
                left.extend_from_slice(chunk);
            }
        }
        if !left.is_empty() {
            // Not noted again: a truncate may have taken its entry out meanwhile (its
            // transaction waits for this lock), and a later `Grow` would undo it. The
            // checkpoint, which records every size as it is, is due instead, and an fsync
            // writes it before it returns ([`Fs::sync_metadata`]).
            self.growth_unjournaled.store(true, Ordering::SeqCst);
            self.checkpoint_wanted.store(true, Ordering::SeqCst);
        }
    }

    /// The journal's part of `status`.
    pub fn journal_status(&self) -> crate::fs::status::JournalStatus {
        let (used_bytes, capacity_bytes) = {
            let j = lock(&self.journal);
            (j.used(), j.capacity())
        };
        crate::fs::status::JournalStatus {
            used_bytes,
            capacity_bytes,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            flushes: self.journal_flushes.load(Ordering::Relaxed),
            sizes_pending: lock(&self.sizes).len() as u64,
        }
    }

    /// When frees are pending: makes the journal durable and settles them. Returns whether
    /// any were (so an allocation that came up short may try once more). Called with
    /// neither the journal nor the allocator locked.
    pub(super) fn settle_pending(&self) -> bool {
        if !lock(&self.alloc).has_pending() || self.is_up().is_err() {
            return false;
        }
        let mut journal = lock(&self.journal);
        match self.flush_journal(&mut journal) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("settling freed blocks: {e}");
                false
            }
        }
    }

    pub(super) fn publish(&self, held: &mut Held<'_>) -> Vec<Arc<Cell>> {
        let added = std::mem::take(&mut held.added)
            .into_iter()
            .map(|i| self.table.insert(i))
            .collect();
        for ino in std::mem::take(&mut held.removed) {
            self.table.remove(ino);
        }
        added
    }
}

/// Adds `start..end` to a set of disjoint ranges (start -> end), merging it with those it
/// overlaps or touches.
fn add_range(set: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let (mut start, mut end) = (start, end);
    if let Some((&s, &e)) = set.range(..=start).next_back() {
        if e >= start {
            start = s;
            end = end.max(e);
        }
    }
    while let Some((&s, &e)) = set.range(start..).next() {
        if s > end {
            break;
        }
        end = end.max(e);
        set.remove(&s);
    }
    set.insert(start, end);
}

#[cfg(test)]
mod tests {
    use super::add_range;
    use std::collections::BTreeMap;

    #[test]
    fn ranges_merge_when_they_overlap_or_touch_and_stay_apart_otherwise() {
        let mut set = BTreeMap::new();
        add_range(&mut set, 100, 200);
        add_range(&mut set, 300, 400);
        add_range(&mut set, 200, 250);
        assert_eq!(set, BTreeMap::from([(100, 250), (300, 400)]));
        add_range(&mut set, 50, 320);
        assert_eq!(set, BTreeMap::from([(50, 400)]));
        add_range(&mut set, 120, 130);
        assert_eq!(set, BTreeMap::from([(50, 400)]));
        add_range(&mut set, 401, 500);
        assert_eq!(set, BTreeMap::from([(50, 400), (401, 500)]));
    }
}

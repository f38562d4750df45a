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
        let durable = journal
            .flush(&self.image)
            .map_err(|e| self.host_failed("making the journal durable", e))?;
        Space::settle(&mut lock(&self.alloc), &self.image, durable);
        Ok(())
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

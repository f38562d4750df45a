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
        self.failing_commits.store(n, Ordering::SeqCst);
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
            .failing_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected || !journal.has_room(payload.len()) {
            self.checkpoint_wanted.store(true, Ordering::SeqCst);
            return Err(FsError::NoSpace);
        }
        let freed = {
            let mut alloc = lock(&self.alloc);
            let mut space = Space {
                alloc: &mut alloc,
                image: &self.image,
                replay: false,
                held: Vec::new(),
            };
            let applied = records
                .iter()
                .try_for_each(|rec| apply(rec, held, &mut space));
            if let Err(e) = applied {
                let freed = std::mem::take(&mut space.held);
                Space::settle(&mut alloc, &self.image, freed);
                return Err(e);
            }
            space.held
        };
        // Cannot fail: room was checked under the same lock. NoSpace from commit always
        // means nothing was applied.
        journal
            .append(&self.image, &payload)
            .map_err(|_| FsError::Corrupt("journal filled under its lock".into()))?;
        if journal.wants_checkpoint() {
            self.checkpoint_wanted.store(true, Ordering::SeqCst);
        }
        if !freed.is_empty() {
            // Blocks the file let go of are punched and reused only once the record that
            // frees them is durable: the host makes a punched hole durable at its next
            // commit, and a power failure before the record got there would bring the file
            // back over holes (or over another file's data). If the journal cannot be made
            // durable the filesystem shuts down, and the blocks stay busy until unmount.
            if let Err(e) = journal.flush(&self.image) {
                drop(journal);
                return Err(self.host_failed("making the journal durable", e));
            }
            Space::settle(&mut lock(&self.alloc), &self.image, freed);
        }
        Ok(())
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

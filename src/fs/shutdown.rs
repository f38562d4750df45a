//! Shutting the filesystem down on request (`FS_IOC_SHUTDOWN`, `pinfs shutdown`), as XFS's
//! and ext4's shutdown ioctl does: what is made durable first, and what holds afterwards.
//!
//! Lifecycle: [`Fs::shutdown`] first makes durable what its [`ShutdownFlush`] asks for (all
//! data and metadata, the journal only, or nothing), then marks the filesystem shut down, so
//! that every operation from then on fails with `EIO` (changes, and also lookups, reads and
//! listings: the adapter's entry points check [`Fs::is_up`]), and, with a volatile cache,
//! cuts the power: nothing more reaches the image file. Breakers waiting for holders get
//! `EIO`. Every holder is fenced (its leases revoked, an event sent) and every DAX window is
//! cut off from the image, so that no store of a holder reaches a block from then on.
//! Unmount then writes nothing: the next mount replays the journal from the state the
//! shutdown left, which is, with a volatile cache, exactly what was durable at that moment
//! (without one, the host's page cache also keeps every later store: see the README's
//! "What is durable").
//!
//! A shutdown is final for the mount; a second one changes nothing and succeeds.

use super::*;

/// What a shutdown makes durable before it stops everything (the flags of
/// `FS_IOC_SHUTDOWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownFlush {
    /// `FS_SHUTDOWN_FLAGS_DEFAULT` (0): data and metadata, as `syncfs` would.
    All,
    /// `FS_SHUTDOWN_FLAGS_LOGFLUSH` (1): the journal (metadata) only.
    Log,
    /// `FS_SHUTDOWN_FLAGS_NOLOGFLUSH` (2): nothing: a power cut.
    Nothing,
}

impl ShutdownFlush {
    /// The ioctl's flag value, if it is one of the three.
    pub fn from_ioctl(flag: u32) -> Option<ShutdownFlush> {
        match flag {
            0 => Some(ShutdownFlush::All),
            1 => Some(ShutdownFlush::Log),
            2 => Some(ShutdownFlush::Nothing),
            _ => None,
        }
    }

    /// The name `pinfs shutdown --flush` takes and `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownFlush::All => "data",
            ShutdownFlush::Log => "log",
            ShutdownFlush::Nothing => "none",
        }
    }
}

impl Fs {
    /// Shuts the filesystem down after making durable what `flush` says (see the module
    /// docs). An error of that flush is returned after the shutdown happened all the same
    /// (what it could not make durable is lost, as on a host failure).
    pub fn shutdown(&self, flush: ShutdownFlush) -> FsResult<()> {
        if self.is_shut_down() {
            return Ok(());
        }
        // Breakers waiting for holders answer EIO now: nothing they wait for will come.
        self.end_waits();
        let flushed = {
            // No transaction is half-way through while the journal (and with it the state
            // to keep) is made durable.
            let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
            // A journal with no room for the grown sizes leaves them to a checkpoint, as
            // fsync does ([`Fs::sync_metadata`]): written here, under the gate already held.
            let journal = || {
                self.flush_journal(&mut lock(&self.journal))?;
                if self.growth_unjournaled.load(Ordering::SeqCst) {
                    self.checkpoint_gated(false)?;
                }
                Ok(())
            };
            let flushed = match flush {
                ShutdownFlush::Nothing => Ok(()),
                ShutdownFlush::Log => journal(),
                ShutdownFlush::All => {
                    journal().and_then(|()| {
                        // Holders' stores are data too: the windowed blocks that files own
                        // go back into the image (free ones stay zero), as at unmount.
                        let free: Vec<Extent> = lock(&self.alloc).free_extents().collect();
                        self.image
                            .write_back_windows(|off, len| owned_ranges(&free, off, len))
                            .and_then(|()| self.image.persist_all())
                            .map_err(|e| self.host_failed("making the image durable", e))
                    })
                }
            };
            *lock(&self.shutdown_by) = Some(flush);
            self.shut_down.store(true, Ordering::SeqCst);
            self.image.cut_power();
            flushed
        };
        tracing::warn!(
            image = %self.image.path().display(),
            flush = flush.name(),
            "shut down on request: every operation fails with EIO; unmount it"
        );
        // Holders are told (their leases revoked, a fence event) and cut off from every
        // block: what they store from now on reaches no file and no image.
        for (holder, _, _) in self.leases.snapshot().holders {
            if let Err(e) = self.leases.fence(holder, self) {
                tracing::debug!(holder, "fencing at shutdown: {e}");
            }
        }
        if !self.image.cut_off_windows() {
            tracing::error!("some DAX windows could not be cut off at shutdown");
        }
        flushed
    }

    /// How a requested shutdown flushed, if one happened (`None` also after a host failure,
    /// which shuts down without being asked).
    pub fn shutdown_by(&self) -> Option<ShutdownFlush> {
        *lock(&self.shutdown_by)
    }
}

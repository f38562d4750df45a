//! Background work and waits off the request threads: the worker that reclaims unlinked
//! inodes, breakers that wait for holders on threads of their own, and the notices the FUSE
//! adapter turns into kernel cache invalidations.

use super::*;

/// How long a freed block waits at most (with the background running) for the journal to be
/// made durable, after which it is free again: the flusher's period.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl Fs {
    /// The kernel is reading `ino` into its page cache (for a mapping: a read that is not
    /// direct I/O). Called before the bytes are read, so that a direct write that lands
    /// after them sees the mark and stores its bytes into the cached pages.
    pub fn note_page_cache_read(&self, ino: u64) {
        if let Ok(cell) = self.table.get(ino) {
            cell.page_cached.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a direct write to `ino` must also reach pages the kernel's page cache holds
    /// for mappings ([`Fs::store_then`]).
    pub fn wants_store(&self, ino: u64) -> bool {
        self.kernel_listens.load(Ordering::SeqCst)
            && self
                .table
                .get(ino)
                .is_ok_and(|c| c.page_cached.load(Ordering::SeqCst))
    }

    /// After a direct write of `data` at `offset` of `ino`: queues the store of those bytes
    /// into the pages the kernel cached ([`Stale::Store`]), and `then` to run once the kernel
    /// has them. The adapter answers the write in `then`, so that a store through a mapping
    /// made after the write returns lands on a page that has the written bytes, and no
    /// request thread waits meanwhile.
    pub fn store_then(&self, ino: u64, offset: u64, data: Vec<u8>, then: Box<dyn FnOnce() + Send>) {
        self.tell_kernel(Stale::Store {
            ino,
            offset,
            data,
            then: Then(then),
        });
    }

    /// Tells the kernel that `ino`'s attributes changed, then runs `then` (dropped unrun when
    /// no mount listens or the notices end first).
    pub fn attributes_then(&self, ino: u64, then: Box<dyn FnOnce() + Send>) {
        self.tell_kernel(Stale::Attributes(ino, Some(Then(then))));
    }

    /// Queues a notice for the kernel, if a mount listens.
    pub(crate) fn tell_kernel(&self, what: Stale) {
        if self.kernel_listens.load(Ordering::SeqCst) {
            let _ = self.stale.0.send(what);
        }
    }

    /// What the kernel cached that changed behind its back ([`Stale`]): the daemon tells the
    /// kernel to drop it, from a thread of its own.
    pub fn stale_notices(&self) -> Receiver<Stale> {
        self.kernel_listens.store(true, Ordering::SeqCst);
        self.stale.1.clone()
    }

    /// The lease manager (status, events).
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The receiver of holder notifications (once; the daemon's notifier takes it).
    pub fn take_notices(&self) -> Option<Receiver<Notice>> {
        lock(&self.notices).take()
    }

    /// Starts the mount's background work: lease deadlines (so leases expire on time with no
    /// breaker waiting), the reclaimer (frees pinned unlinked inodes after breaking their
    /// leases) and the journal flusher (pending frees are settled within about
    /// `FLUSH_INTERVAL` (1 s) of their commit, when nothing else made the journal durable
    /// sooner). All end at unmount.
    pub fn start_background(self: &Arc<Self>) {
        let fs = self.clone();
        let stop = self.flusher.1.clone();
        std::thread::Builder::new()
            .name("pinfs-flusher".into())
            .spawn(move || {
                while let Err(crossbeam::channel::RecvTimeoutError::Timeout) =
                    stop.recv_timeout(FLUSH_INTERVAL)
                {
                    fs.settle_pending();
                }
            })
            .expect("spawn the journal flusher");
        let fs = self.clone();
        std::thread::Builder::new()
            .name("pinfs-deadlines".into())
            .spawn(move || {
                fs.leases
                    .run_deadlines(&*fs, &|| fs.stopping.load(Ordering::SeqCst))
            })
            .expect("spawn the deadline thread");
        let fs = self.clone();
        let rx = self.work.1.clone();
        std::thread::Builder::new()
            .name("pinfs-worker".into())
            .spawn(move || {
                for work in rx {
                    let r = match work {
                        Work::Stop => break,
                        Work::Relocate(ino) => fs.relocate_revoked(ino),
                        Work::Reclaim(ino) => fs.reclaim_pinned(ino),
                    };
                    if let Err(e) = r {
                        tracing::warn!(?work, "background work failed: {e}");
                    }
                }
            })
            .expect("spawn the worker");
    }

    /// Frees pinned unlinked inode `ino` after breaking its leases: at once when no holder
    /// must answer, else on a thread of its own, so that each such inode waits for its own
    /// holders only and is freed as soon as they release.
    fn reclaim_pinned(self: &Arc<Self>, ino: u64) -> FsResult<()> {
        const ALL: Breaker = Breaker {
            pid: 0,
            nonblock: false,
        };
        match self.leases.try_break_layout(ino, 0, u64::MAX, ALL) {
            Ok(_guard) => return self.reclaim_now(ino),
            Err(LeaseError::MustWait) => {}
            Err(e) => return Err(e.into()),
        }
        if !lock(&self.reclaiming).insert(ino) {
            return Ok(()); // its thread is on it
        }
        let started = self.wait_elsewhere("pinfs-reclaim", move |fs| {
            let r = fs
                .leases
                .break_layout(ino, 0, u64::MAX, ALL, fs)
                .map_err(FsError::from)
                .and_then(|_guard| fs.reclaim_now(ino));
            lock(&fs.reclaiming).remove(&ino);
            if let Err(e) = r {
                tracing::warn!(ino, "freeing a pinned unlinked inode: {e}");
            }
        });
        if !started {
            lock(&self.reclaiming).remove(&ino);
        }
        Ok(())
    }

    /// Runs `job` on a thread of its own, where it may wait for holders: where breakers that
    /// would wait go, so that no request thread ever does (one thread per waiting breaker:
    /// stuck holders cannot exhaust a pool). Returns false, having dropped `job` (a FUSE
    /// reply dropped answers `EIO`), when no thread can be started.
    pub fn wait_elsewhere(
        self: &Arc<Self>,
        name: &str,
        job: impl FnOnce(&Fs) + Send + 'static,
    ) -> bool {
        *lock(&self.waiters.0) += 1;
        let fs = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .stack_size(512 << 10)
            .spawn(move || {
                let _slot = WaiterSlot(&fs);
                job(&fs);
            });
        match spawned {
            Ok(_) => true,
            Err(e) => {
                drop(WaiterSlot(self));
                tracing::error!("cannot start a thread for a waiting breaker: {e}");
                false
            }
        }
    }

    /// Breakers waiting for holders on threads of their own now.
    pub fn waiting_breakers(&self) -> usize {
        *lock(&self.waiters.0)
    }

    /// Ends every breaker's wait for a holder with `EIO` and makes later ones fail at once
    /// (SIGTERM, a lazy unmount, the unmount itself). Pins are refused from then on.
    pub fn end_waits(&self) {
        if !self.leases.is_closed() {
            tracing::info!(
                waiting = self.waiting_breakers(),
                "ending the waits of breakers"
            );
        }
        self.leases.close();
    }

    /// Waits (at most `limit`) until no waiter thread runs.
    pub(super) fn drain_waiters(&self, limit: Duration) {
        let (count, cv) = &self.waiters;
        let (n, timed_out) = cv.wait_timeout_while(lock(count), limit, |n| *n > 0);
        if timed_out {
            tracing::warn!(left = *n, "waiting breakers did not end in time");
        }
    }

    pub(super) fn stop_background(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.work.0.send(Work::Stop);
        let _ = self.flusher.0.try_send(());
    }
}

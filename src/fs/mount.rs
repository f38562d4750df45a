//! Mounting and unmounting the core: mkfs, open (with fsck's checks), unmount and remount
//! (each leaving a clean image), and the shutdown state after a host failure.

use super::*;

impl Fs {
    /// Formats `path` as an empty filesystem of `size` bytes.
    pub fn mkfs(path: &Path, size: u64, force: bool) -> FsResult<()> {
        Image::create(path, size, force)?;
        // The image was just made, under its lock: a lock seen now is a copy of that
        // descriptor in a child another thread forked meanwhile (it goes at the child's exec
        // or exit), not a daemon. Wait for it as a mount would, briefly.
        let fs = Fs::open(
            path,
            FsOptions {
                lock_wait: Duration::from_secs(5),
                ..Default::default()
            },
        )?;
        fs.unmount()
    }

    /// Opens an image: loads its checkpoint, replays its journal, validates the result with
    /// fsck's own pass ([`crate::fsck::examine`]) and refuses it on any error that pass
    /// reports (but a stale free list), then frees orphans. The allocator comes from what
    /// owns blocks, not from the stored free list.
    pub fn open(path: &Path, opts: FsOptions) -> FsResult<Fs> {
        let (mut image, mut sb) = Image::open(path, opts.lock_wait)?;
        if opts.volatile_cache && !opts.read_only {
            image.make_volatile()?;
        }
        let mut loaded =
            checkpoint::load(&image, &sb).map_err(|e| {
                match crate::fsck::with_damage(&image, e) {
                    FsError::Corrupt(why) => FsError::Corrupt(format!("{}: {why}", path.display())),
                    other => other,
                }
            })?;
        let report = crate::fsck::examine(&image, &sb, &mut loaded, false);
        let errors = report.refused_by_mount();
        if !errors.is_empty() {
            let n = errors.len();
            let shown: Vec<&str> = errors.iter().take(3).map(|e| e.as_str()).collect();
            return Err(FsError::Refused(format!(
                "{}: the image has {n} error{} that fsck reports: {}{}; mount refused, run `pinfs fsck --repair {}`",
                path.display(),
                if n == 1 { "" } else { "s" },
                shown.join("; "),
                if n > 3 { format!("; and {} more", n - 3) } else { String::new() },
                path.display()
            )));
        }
        // The allocator is what ownership says (what examine just compared the stored free
        // list with), never the stored list: after an unclean shutdown that list holds the
        // busy blocks of holders that are gone, and after a clean one it can only be wrong.
        loaded.alloc = checkpoint::allocator_from_owners(&sb, loaded.inodes.values());
        let was_clean = sb.clean;
        let read_only = opts.read_only;
        let (notice_tx, notice_rx) = crossbeam::channel::unbounded();
        if !opts.read_only {
            provision_in_use(&image, &sb, &loaded.alloc)?;
            sb.generation += 1;
            sb.clean = false;
            image
                .write_superblock(&sb)
                .map_err(FsError::host("writing the superblock"))?;
        }
        let fs = Fs {
            image,
            sb: Mutex::ranked(Rank::Superblock, sb),
            table: Table::new(loaded.inodes),
            gate: RwLock::ranked(Rank::Gate, ()),
            namespace: Mutex::ranked(Rank::Namespace, ()),
            journal: Mutex::ranked(Rank::Journal, loaded.journal),
            ordered: Mutex::new(BTreeMap::new()),
            sizes: Mutex::new(BTreeMap::new()),
            growth_unjournaled: AtomicBool::new(false),
            checkpoints: AtomicU64::new(0),
            journal_flushes: AtomicU64::new(0),
            alloc: Mutex::ranked(Rank::Alloc, loaded.alloc),
            next_ino: AtomicU64::new(loaded.next_ino),
            checkpoint_wanted: AtomicBool::new(false),
            leases: Leases::new(opts.leases, Some(notice_tx)),
            acl: AtomicBool::new(opts.acl),
            opts,
            notices: Mutex::new(Some(notice_rx)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            work: crossbeam::channel::unbounded(),
            flusher: crossbeam::channel::bounded(1),
            stopping: AtomicBool::new(false),
            mount_dev: Mutex::new(None),
            stale: crossbeam::channel::unbounded(),
            kernel_listens: AtomicBool::new(false),
            released: Mutex::new(Vec::new()),
            detaching: Mutex::ranked(Rank::Detaching, ()),
            waiters: (Mutex::new(0), Condvar::new()),
            reclaiming: Mutex::new(HashSet::new()),
            shut_down: AtomicBool::new(false),
            shutdown_by: Mutex::new(None),
            read_only: AtomicBool::new(read_only),
            opened_rw: AtomicBool::new(!read_only),
            dir_streams: Mutex::new(HashMap::new()),
            mounted_with: Mutex::new(None),
            unmount_error: Mutex::new(None),
            failing_commits: AtomicU32::new(0),
            passing_commits: AtomicU32::new(0),
            errors: Default::default(),
            exports: Mutex::new(Default::default()),
        };
        // Data allocations leave room for the next checkpoint from the start.
        lock(&fs.alloc).set_reserve(checkpoint::reserve_for(&lock(&fs.sb)));
        if !fs.ro() {
            if !was_clean {
                let alloc = lock(&fs.alloc);
                for e in alloc.free_extents() {
                    fs.image.discard(e.start * BLOCK_SIZE, e.len * BLOCK_SIZE);
                }
                drop(alloc);
                fs.zero_past_ends()?;
            }
            fs.reclaim_all_orphans()?;
        }
        tracing::info!(image = %path.display(), replayed = loaded.replayed, clean = was_clean, "mounted");
        Ok(fs)
    }

    /// After an unclean shutdown: zeros every file's bytes past its end, in its partial last
    /// block and in blocks allocated past it, and makes them durable. A crash can keep the
    /// mappings of an extending write and lose its size (with a volatile cache the size goes
    /// to the journal only after the data: [`Fs::defers_growth`]); the data left past the
    /// end must not reappear when the file grows over it again, as blocks allocated past
    /// the end read as zeros.
    fn zero_past_ends(&self) -> FsResult<()> {
        // Partial last blocks (stored as zeros, then flushed), and whole blocks past the end
        // (preallocations can be large: zeroed by the host, see `zero_blocks_durably`).
        let (mut tails, mut blocks) = (Vec::new(), Vec::new());
        for c in self.table.all() {
            let i = c.read();
            if i.kind != Kind::File {
                continue;
            }
            let from = i.size / BLOCK_SIZE;
            for m in i
                .extents
                .mappings_in(from, MAX_FILE_SIZE / BLOCK_SIZE + 1 - from)
            {
                let mut first = m.file_block;
                if first * BLOCK_SIZE < i.size {
                    let img = m.image_block * BLOCK_SIZE;
                    let at = i.size % BLOCK_SIZE;
                    tails.push((img + at, BLOCK_SIZE - at));
                    first += 1;
                }
                let end = m.file_block + m.len;
                if first < end {
                    let img = m.image_block + (first - m.file_block);
                    blocks.push((img * BLOCK_SIZE, (end - first) * BLOCK_SIZE));
                }
            }
        }
        for &(off, len) in &tails {
            self.image.zero(off, len);
        }
        let what = "zeroing bytes past the ends of files";
        self.image
            .flush_ranges(&tails)
            .map_err(FsError::host(what))?;
        self.image
            .zero_blocks_durably(&blocks)
            .map_err(FsError::host(what))
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Records who holds the image.
    pub fn set_owner(&self, mountpoint: &str) {
        if !self.ro() {
            self.image.write_owner_note(std::process::id(), mountpoint);
        }
    }

    /// Frees orphans and writes a clean checkpoint. The filesystem must not be used after.
    /// On failure the image keeps its previous consistent state (the next mount replays the
    /// journal), and [`Fs::unmount_error`] says why.
    pub fn unmount(&self) -> FsResult<()> {
        let r = self.unmount_now();
        if let Err(e) = &r {
            tracing::error!(
                image = %self.image.path().display(),
                "the unmount could not write a clean image: {e}; the image keeps its previous consistent state, which the next mount replays"
            );
            *lock(&self.unmount_error) = Some(e.to_string());
        }
        r
    }

    /// Why the last [`Fs::unmount`] failed, if it did.
    pub fn unmount_error(&self) -> Option<String> {
        lock(&self.unmount_error).clone()
    }

    fn unmount_now(&self) -> FsResult<()> {
        // Breakers still waiting for holders get EIO, and their threads are gone before
        // anything below changes the filesystem under them.
        self.end_waits();
        self.drain_waiters(WAITER_DRAIN);
        if self.ro() {
            return Ok(());
        }
        self.stop_background();
        if self.shutdown_by().is_some() {
            // Shut down on request: the image keeps what the shutdown left (not even freed
            // blocks are returned to the host), and the next mount replays its journal.
            return Ok(());
        }
        for (holder, _, _) in self.leases.snapshot().holders {
            self.leases.holder_gone(holder, self);
        }
        self.finish_releases();
        for c in self.table.all() {
            c.lookups.store(0, Ordering::SeqCst);
            c.opens.store(0, Ordering::SeqCst);
        }
        self.is_up()?;
        self.reclaim_all_orphans()?;
        // The owner note stays: until this process exits and the lock is free, a refused
        // mount can still say who is finishing an unmount.
        self.make_clean()
    }

    fn reclaim_all_orphans(&self) -> FsResult<()> {
        let orphans: Vec<u64> = self
            .table
            .all()
            .iter()
            .map(|c| c.read())
            .filter(|i| i.nlink == 0)
            .map(|i| i.ino)
            .collect();
        for ino in orphans {
            self.maybe_reclaim(ino)?;
        }
        Ok(())
    }

    pub(super) fn writable(&self) -> FsResult<()> {
        if self.ro() {
            return Err(FsError::ReadOnly);
        }
        self.is_up()?;
        self.maybe_checkpoint()
    }

    /// Records the options the mount was made with (see [`crate::daemon::remount`]).
    pub fn set_mount_options(&self, o: crate::fs::options::MountOptions) {
        *lock(&self.mounted_with) = Some(o);
    }

    /// The options the mount was made with (the defaults if none were recorded).
    pub fn mount_options(&self) -> crate::fs::options::MountOptions {
        lock(&self.mounted_with).clone().unwrap_or_default()
    }

    /// Whether POSIX ACLs are served (see `acl.rs`).
    pub fn acl(&self) -> bool {
        self.acl.load(Ordering::SeqCst)
    }

    /// The kernel does not enforce POSIX ACLs: their xattrs are refused from now on, as on
    /// a `noacl` mount (stored ones stay, unused).
    pub fn without_acl(&self) {
        self.acl.store(false, Ordering::SeqCst);
    }

    /// Read-only now (a remount may have changed what the mount was made with)?
    pub fn ro(&self) -> bool {
        self.read_only.load(Ordering::SeqCst)
    }

    /// Remounts read-only or read-write (the mount's kernel flag is the caller's to change).
    ///
    /// Read-only: refused with `EBUSY` while a writable pin is granted (its holder may store
    /// into the file); otherwise new changes fail with `EROFS` from now on, the changes in
    /// flight finish, and a clean checkpoint makes the image what an unmount would leave.
    /// Read-write: the superblock is marked in use again (and, for a mount that was made
    /// read-only, the set-up a writable mount does at open runs now).
    pub fn remount(&self, read_only: bool) -> FsResult<()> {
        self.is_up()?;
        if read_only {
            if self.ro() {
                return Ok(());
            }
            if self
                .leases
                .snapshot()
                .pins
                .iter()
                .any(|p| p.writable && p.live())
            {
                return Err(FsError::Busy("a writable pin is granted"));
            }
            self.read_only.store(true, Ordering::SeqCst);
            let done = self.make_clean();
            if done.is_err() {
                self.read_only.store(false, Ordering::SeqCst);
            }
            return done;
        }
        if !self.ro() {
            return Ok(());
        }
        let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
        if !self.opened_rw.load(Ordering::SeqCst) {
            // The allocator before the superblock, as a checkpoint takes them.
            let alloc = lock(&self.alloc);
            provision_in_use(&self.image, &lock(&self.sb), &alloc)?;
        }
        let mut sb = lock(&self.sb);
        let mut next = sb.clone();
        next.generation += 1;
        next.clean = false;
        self.image
            .write_superblock(&next)
            .map_err(|e| self.host_failed("writing the superblock", e))?;
        *sb = next;
        drop(sb);
        drop(_gate);
        self.read_only.store(false, Ordering::SeqCst);
        if !self.opened_rw.swap(true, Ordering::SeqCst) {
            self.reclaim_all_orphans()?;
        }
        Ok(())
    }

    /// Leaves the image as an unmount would, the mount staying: windowed blocks written
    /// back, everything in the image's page cache on the device, a clean checkpoint.
    fn make_clean(&self) -> FsResult<()> {
        {
            // Windowed blocks that files own go back into the image file; free ones stay zero.
            let alloc = lock(&self.alloc);
            let free: Vec<Extent> = alloc.free_extents().collect();
            self.image
                .write_back_windows(|off, len| owned_ranges(&free, off, len))
                .and_then(|()| self.image.persist_all())
                .map_err(|e| self.host_failed("making the image durable", e))?;
        }
        self.checkpoint(true)
    }

    /// `Err(ShutDown)` once the filesystem was shut down (a host failure, or on request).
    pub(crate) fn is_up(&self) -> FsResult<()> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(FsError::ShutDown);
        }
        Ok(())
    }

    /// The host failed to make something durable: shuts the filesystem down (a write-back
    /// error is reported once, so no later success can be trusted) and returns the error for
    /// the caller (`EIO`).
    pub(super) fn host_failed(&self, what: &'static str, source: std::io::Error) -> FsError {
        // Flushes are of provisioned blocks: an ENOSPC from one is a write-back the host
        // lost, not a full host (`EIO` to the caller).
        let source = crate::error::lost_write_back(source);
        if !self.shut_down.swap(true, Ordering::SeqCst) {
            tracing::error!(
                image = %self.image.path().display(),
                "{what} failed: {source}; the filesystem is shut down (every change fails with EIO), the image keeps its last durable state"
            );
        }
        FsError::Host { what, source }
    }

    /// Whether a host failure shut the filesystem down.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Records the device number the kernel gave the mount (files passed by holders must be
    /// on it).
    pub fn set_mount_dev(&self, dev: u64) {
        *lock(&self.mount_dev) = Some(dev);
    }

    /// The mount's device number, once mounted.
    pub fn mount_dev(&self) -> Option<u64> {
        *lock(&self.mount_dev)
    }
}

/// Has the host back what is stored into through the mapping (see `Image::provision`): the
/// metadata area and every block in use, for images made before blocks were provisioned at
/// allocation (cheap where already backed).
fn provision_in_use(image: &Image, sb: &Superblock, alloc: &Allocator) -> FsResult<()> {
    image
        .provision(0, sb.data_start() * BLOCK_SIZE)
        .map_err(FsError::host(
            "allocating the image's superblocks and journal on the host",
        ))?;
    for e in used_extents(alloc) {
        image
            .provision(e.start * BLOCK_SIZE, e.len * BLOCK_SIZE)
            .map_err(FsError::host(
                "allocating the image's used blocks on the host",
            ))?;
    }
    Ok(())
}

//! Pins and layout leases in the filesystem core: a pin allocates what is not yet allocated
//! (like a DAX write fault), pins the blocks in the allocator under a lease and hands out the
//! DAX windows over them; breakers break leases before they change a layout; revocation
//! moves a revoked pin's blocks out of its file; a release or a holder's death lets them go.
//! The lease state machine itself is [`crate::lease`]; this is where it meets the files.
//!
//! Locks as in the core (see [`crate::fs`]): a breaker breaks before it takes any lock, a pin
//! takes the gate and its inode's lock and then the lease lock, and the lease manager calls
//! back into [`Unpinner`] with its own lock held, so that path takes only the allocator lock.

use super::*;

/// A granted pin: its id, where its bytes are in the image, and the DAX windows that give
/// direct access to exactly those bytes.
#[derive(Debug, Clone)]
pub struct PinGrant {
    /// The pin (and lease) id.
    pub id: PinId,
    /// The pinned range, piece by piece, in file order.
    pub extents: Vec<PinnedExtent>,
    /// Memfd windows covering the pinned image bytes.
    pub windows: Vec<crate::store::windows::WindowPiece>,
}

/// What a holder gets for a pin: where each piece of the pinned range lives in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedExtent {
    /// Byte offset in the file.
    pub file_offset: u64,
    /// Byte offset in the image.
    pub image_offset: u64,
    /// Bytes.
    pub len: u64,
}

/// How a holder showed that it may access the file it pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinAccess {
    /// The file's mode bits decide, for the caller's uid and primary gid (callers of the core
    /// that have no descriptor: tests and the serial fuzzer).
    ModeBits,
    /// The holder passed a descriptor of the file that the kernel opened for it, with this
    /// access: the kernel already checked the holder's uid, groups (supplementary ones
    /// included), ACLs and the mount's own read-only state.
    Descriptor {
        /// Opened for reading.
        read: bool,
        /// Opened for writing.
        write: bool,
    },
}

/// A pin that the lease manager has removed, whose windows and allocator references still
/// have to go (see [`Fs::finish_releases`]).
#[derive(Debug)]
pub(crate) struct Released {
    ino: u64,
    extents: Vec<(u64, Extent)>,
    pinned: bool,
}

impl Fs {
    /// Breaks the leases on file blocks `first..end` of `ino` for a layout change by `caller`
    /// (through `handle`, whose `O_NONBLOCK` makes the break not wait). Where the caller may
    /// not wait (`wait` false: a request thread), a break that would wait for a holder fails
    /// with [`LeaseError::MustWait`](crate::lease::LeaseError::MustWait), having changed
    /// nothing.
    pub(super) fn break_layout(
        &self,
        ino: u64,
        first: u64,
        end: u64,
        caller: Caller,
        handle: Option<u64>,
        wait: bool,
    ) -> FsResult<crate::lease::BreakGuard<'_>> {
        let nonblock = handle
            .and_then(|fh| lock(&self.handles).get(&fh).copied())
            .is_some_and(|h| h.ino == ino && h.flags & libc::O_NONBLOCK != 0);
        let breaker = Breaker {
            pid: caller.pid,
            nonblock,
        };
        Ok(if wait {
            self.leases.break_layout(ino, first, end, breaker, self)?
        } else {
            self.leases.try_break_layout(ino, first, end, breaker)?
        })
    }

    /// Registers a holder (its identity comes from the kernel, never from the holder).
    pub fn add_holder(&self, info: HolderInfo) -> HolderId {
        self.leases.add_holder(info)
    }

    /// The holder has gone: all its pins are released; busy blocks it kept become free.
    pub fn holder_gone(&self, holder: HolderId) {
        let files = self.leases.files_of(holder);
        self.leases.holder_gone(holder, self);
        self.finish_releases();
        self.after_release(&files);
    }

    /// Finishes what the lease manager started when it removed pins (it runs under its own
    /// lock and cannot take inode locks): first each pin's DAX windows let go of its blocks,
    /// under the lock of the file that owns them, so that no write of the daemon's slips
    /// between the copy back and the remap; then the allocator references go, so a block is
    /// handed to another file only once nothing a holder was given can reach it. Called by
    /// every path that removes pins, after the lease call and with no lock held.
    pub(crate) fn finish_releases(&self) -> Vec<crossbeam::channel::Receiver<()>> {
        let mut told = Vec::new();
        // One drainer at a time: a caller that finds the queue empty because another thread
        // took its entry waits here until that thread is done with it, so that when this
        // returns (and the holder hears `ok`), the pin's pages are detached.
        let _one = lock(&self.detaching);
        loop {
            let batch = std::mem::take(&mut *lock(&self.released));
            if batch.is_empty() {
                return told;
            }
            for r in batch {
                let mut stuck = Vec::new();
                if self.opts.leases.detach_windows {
                    let cell = self.table.get(r.ino).ok();
                    let mut owner = cell.as_ref().map(|c| c.write());
                    for (_, e) in &r.extents {
                        let (off, len) = (e.start * BLOCK_SIZE, e.len * BLOCK_SIZE);
                        stuck.extend(self.image.unwindow(off, len));
                        // What the holder stored now sits in the image's page cache: the
                        // file's next fsync must flush it, as it would have written the
                        // window back. (For blocks the file no longer maps this only costs
                        // an msync.)
                        if let Some(i) = owner.as_mut() {
                            let end = i.rt.dirty.entry(off).or_insert(off);
                            *end = (*end).max(off + len);
                        }
                    }
                }
                // And what shared mappings cached of the range is read again, with the
                // holder's last stores in it.
                if let (Some((first, _)), Some((last, e))) = (r.extents.first(), r.extents.last()) {
                    let (tx, rx) = crossbeam::channel::bounded(1);
                    self.tell_kernel(Stale::Data {
                        ino: r.ino,
                        offset: first * BLOCK_SIZE,
                        len: (last + e.len - first) * BLOCK_SIZE,
                        done: Some(tx),
                    });
                    told.push(rx);
                }
                if !r.pinned {
                    continue;
                }
                // An extent part of which could not be detached keeps its allocator pin:
                // its blocks are never reused while a holder may reach them.
                let (keep, go): (Vec<_>, Vec<_>) = r.extents.iter().partition(|(_, e)| {
                    stuck.iter().any(|&(a, l)| {
                        a < (e.start + e.len) * BLOCK_SIZE && e.start * BLOCK_SIZE < a + l
                    })
                });
                for (_, e) in &keep {
                    tracing::error!(
                        start = e.start,
                        len = e.len,
                        "blocks stay pinned until unmount: their DAX window could not be detached, nor its holder cut off"
                    );
                }
                <Fs as Unpinner>::unpin(self, &go);
            }
        }
    }

    /// Blocks that a released live pin shared with revoked ones no longer need to stay in
    /// their files: move them out now.
    pub(super) fn after_release(&self, files: &[u64]) {
        for &ino in files {
            if let Err(e) = self.relocate_revoked(ino) {
                tracing::warn!(ino, "moving revoked pinned blocks out of the file: {e}");
            }
        }
    }

    /// An administrator revokes every lease of `holder` now; its blocks leave their files.
    pub fn fence(&self, holder: HolderId) -> FsResult<usize> {
        let files = self.leases.files_of(holder);
        let n = self.leases.fence(holder, self)?;
        // Every file's revoked blocks are dealt with, whatever happens to one of them.
        let mut result = Ok(n);
        for ino in files {
            if let Err(e) = self.relocate_revoked(ino) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Moves the blocks of revoked pins that `ino` still maps to new blocks (with their
    /// data), so that a fenced holder that goes on storing reaches only blocks no file owns:
    /// busy ones, or with `busy_blocks=off`, free ones (the demonstrated danger). Idempotent.
    ///
    /// The revocation has already happened when this runs, so it does not fail for want of
    /// space or journal room: blocks it cannot move (no blocks outside the metadata reserve,
    /// a transaction refused) stay in the file, and the revoked holders are cut off from them
    /// instead. It fails only if that is impossible too.
    pub(super) fn relocate_revoked(&self, ino: u64) -> FsResult<()> {
        let revoked = self.leases.revoked_extents(ino);
        if revoked.is_empty() || self.ro() {
            return Ok(());
        }
        if let Err(e) = self.maybe_checkpoint() {
            tracing::warn!(ino, "checkpoint before moving revoked pinned blocks: {e}");
        }
        let _gate = self.gate();
        let Ok(cell) = self.table.get(ino) else {
            return Ok(());
        };
        let cells = [cell];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        // File blocks that still map the image blocks a revoked pin pinned. Pins may overlap:
        // merge the file ranges first, so that each block moves once.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (first, ext) in revoked {
            for m in i.extents.mappings_in(first, ext.len) {
                if m.image_block == ext.start + (m.file_block - first) {
                    ranges.push((m.file_block, m.file_block + m.len));
                }
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        // Blocks that a live lease also pins stay: moving them would cut that holder off
        // without telling it. (The revoked holder, fenced and told, can still reach them.)
        let live = self.leases.live_extents(ino);
        let shared = |img: u64| live.iter().any(|e| e.start <= img && img < e.end());
        let mut moves: Vec<Mapping> = Vec::new();
        for m in merged
            .iter()
            .flat_map(|&(a, b)| i.extents.mappings_in(a, b - a))
        {
            for k in 0..m.len {
                let (f, img) = (m.file_block + k, m.image_block + k);
                if shared(img) {
                    continue;
                }
                match moves.last_mut() {
                    Some(l) if l.file_block + l.len == f && l.image_block + l.len == img => {
                        l.len += 1
                    }
                    _ => moves.push(Mapping {
                        file_block: f,
                        image_block: img,
                        len: 1,
                    }),
                }
            }
        }
        if moves.is_empty() {
            return Ok(());
        }
        let mut probe = i.extents.clone();
        let mut records = Vec::new();
        for m in &moves {
            probe.remove(m.file_block, m.len);
            records.push(Record::Unmap {
                ino,
                file_block: m.file_block,
                len: m.len,
            });
        }
        let mut maps = Vec::new();
        for m in &moves {
            maps.extend(self.allocate_range(ino, &probe, m.file_block, m.len));
        }
        let got: u64 = maps
            .iter()
            .filter_map(Record::as_mapping)
            .map(|m| m.len)
            .sum();
        // No room to move them: the blocks stay, and the revoked holders are cut off from
        // them instead (the revocation must hold, space or not). They stay pinned by the
        // revoked pins, so the file's later frees still keep them busy.
        let cut_off = |why: &str| {
            let cut = moves.iter().all(|m| {
                self.image
                    .rekey_windows(m.image_block * BLOCK_SIZE, m.len * BLOCK_SIZE)
            });
            if cut {
                tracing::warn!(
                    ino,
                    "{why}: the revoked holders were cut off from their pinned blocks instead"
                );
                Ok(())
            } else {
                tracing::error!(
                    ino,
                    "{why}, and the revoked holders could not be cut off from their pinned blocks"
                );
                Err(FsError::NoSpace)
            }
        };
        if got < moves.iter().map(|m| m.len).sum::<u64>() {
            self.unallocate(&maps);
            return cut_off("no space to move revoked pinned blocks out of the file");
        }
        // Copy the data over before the new blocks become the file's.
        let new: Vec<Mapping> = maps.iter().filter_map(Record::as_mapping).collect();
        for m in &moves {
            let mut data = vec![0u8; (m.len * BLOCK_SIZE) as usize];
            self.image.read(m.image_block * BLOCK_SIZE, &mut data);
            self.store(&new, m.file_block * BLOCK_SIZE, &data, &mut i.rt.dirty);
        }
        // The copies are durable before the records that point the file at them can be:
        // the old blocks held data that may have been fsync'd.
        for m in &new {
            if let Err(e) = self
                .image
                .flush(m.image_block * BLOCK_SIZE, m.len * BLOCK_SIZE)
            {
                self.unallocate(&maps);
                // The host reports a failed write-back once: the filesystem shuts down here
                // as on any other flush, or a later fsync would pass over lost pages.
                return Err(self.host_failed("making moved blocks durable", e));
            }
        }
        records.extend(maps);
        match self.commit_allocation(&mut held, &records) {
            // Refused before anything was applied: the new blocks went back.
            Err(FsError::NoSpace) => cut_off("no journal room to move revoked pinned blocks"),
            r => r,
        }
    }

    /// Pins bytes `offset..offset+len` of `ino` for `holder`, the file's mode bits deciding
    /// access ([`PinAccess::ModeBits`]); see [`Fs::pin_with`].
    pub fn pin(&self, req: &PinRequest, caller: Caller) -> FsResult<PinGrant> {
        self.pin_with(req, caller, PinAccess::ModeBits)
    }

    /// The most bytes `caller`'s user may have pinned: none for root; else the mount's
    /// `max_pinned=`, or the holder's own `RLIMIT_MEMLOCK` (as RDMA memory registration).
    fn pin_limit(&self, caller: Caller) -> Option<u64> {
        use crate::lease::PinLimit;
        if caller.uid == 0 {
            return None;
        }
        match self.opts.leases.max_pinned {
            Some(PinLimit::Unlimited) => None,
            Some(PinLimit::Bytes(b)) => Some(b),
            // The holder's limits file (readable by all, unlike prlimit(2) of another user's
            // process, which needs CAP_SYS_RESOURCE). A process that is gone (or was never
            // there) may pin nothing.
            None => memlock_from_proc(caller.pid).unwrap_or(Some(0)),
        }
    }

    /// Pins bytes `offset..offset+len` of `ino` for `holder`, allocating what is not yet
    /// allocated (like a write fault on DAX), under a new layout lease. A writable pin needs
    /// read and write access (its window shows the blocks' contents), a read-only pin read
    /// access; `access` says how the holder showed it. Holes are filled only for a holder
    /// that may write the file (or root): a reader cannot make space be taken. Pinned bytes
    /// per user are bounded (the holder's `RLIMIT_MEMLOCK` or the mount option
    /// `max_pinned`; `ENOMEM` beyond). Returns the pin and where its bytes are in the image
    /// (whole blocks).
    pub fn pin_with(
        &self,
        req: &PinRequest,
        caller: Caller,
        access: PinAccess,
    ) -> FsResult<PinGrant> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(FsError::Unmounting);
        }
        self.is_up()?;
        let PinRequest {
            ino,
            offset,
            len,
            writable,
            ..
        } = *req;
        if len == 0 {
            return Err(FsError::Invalid("pin of zero bytes"));
        }
        let end_byte = offset
            .checked_add(len)
            .ok_or(FsError::Invalid("pin range overflows"))?;
        let first = offset / BLOCK_SIZE;
        let end = end_byte.div_ceil(BLOCK_SIZE);
        let c = self.table.get(ino)?;
        let (may_fill, standing) = {
            let i = c.read();
            match i.kind {
                Kind::File => {}
                Kind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("pin of a special file")),
            }
            let (may_read, may_write) = match access {
                PinAccess::ModeBits => (may_access(&i, caller, 4), may_access(&i, caller, 2)),
                // As mmap(2): a shared writable mapping needs a descriptor open for both,
                // whoever the caller is.
                PinAccess::Descriptor { read, write } => (read, write),
            };
            if !may_read {
                return Err(FsError::Denied(
                    "a pin shows the file's contents: it needs a descriptor opened for reading",
                ));
            }
            if writable && !may_write {
                return Err(FsError::Denied(
                    "a writable pin needs the file opened for reading and writing",
                ));
            }
            if writable {
                flags::check(&i, flags::Change::WritablePin)?;
            }
            if end_byte > i.size.next_multiple_of(BLOCK_SIZE) {
                return Err(FsError::Invalid("pin past the end of the file"));
            }
            // Only the owner (or root) holds leases that may keep other users' breakers
            // waiting or refused; anyone else's is a guest lease (see crate::lease).
            let standing = match caller.uid {
                0 => crate::lease::Standing::Root,
                u if u == i.uid => crate::lease::Standing::Owner,
                _ => crate::lease::Standing::Guest,
            };
            // Root may fill holes through any descriptor, as it may write any file; nobody
            // may in an immutable file.
            let flags_allow = flags::forbidden(i.flags, flags::Change::Allocate).is_none();
            ((may_write || caller.uid == 0) && flags_allow, standing)
        };
        self.leases.may_pin(req, standing)?;
        if writable && self.ro() {
            return Err(FsError::ReadOnly);
        }
        let limit = self.pin_limit(caller).map(|l| (caller.uid, l));
        let over_limit = |limit: Option<(u32, u64)>| -> FsResult<()> {
            match limit {
                Some((uid, max))
                    if self
                        .leases
                        .pinned_bytes(uid)
                        .saturating_add((end - first) * BLOCK_SIZE)
                        > max =>
                {
                    Err(FsError::PinLimit(format!(
                        "uid {uid} has {} bytes pinned; {} more would pass its limit of {max} \
                         bytes (the holder's RLIMIT_MEMLOCK, or the mount option max_pinned)",
                        self.leases.pinned_bytes(uid),
                        (end - first) * BLOCK_SIZE
                    )))
                }
                _ => Ok(()),
            }
        };
        // Checked before any hole is filled, so that a pin refused for the limit allocates
        // nothing; checked again, atomically, at the grant.
        over_limit(limit)?;
        for _ in 0..8 {
            if !Self::fully_mapped(&c.read(), first, end - first) {
                if self.ro() {
                    return Err(FsError::ReadOnly);
                }
                if !may_fill {
                    return Err(FsError::Denied(
                        "the range has holes, and only a holder that may write the file may \
                         fill them: pin through a descriptor opened for writing",
                    ));
                }
                // The write fault: give the holes of the range blocks first.
                self.maybe_checkpoint()?;
                let _gate = self.gate();
                let cells = [c.clone()];
                let mut held = Held::lock(&cells);
                let i = held.get(ino)?;
                let records = self.allocate_range(ino, &i.extents, first, end - first);
                let got: u64 = records
                    .iter()
                    .filter_map(Record::as_mapping)
                    .map(|m| m.len)
                    .sum();
                let had: u64 = i
                    .extents
                    .mappings_in(first, end - first)
                    .iter()
                    .map(|m| m.len)
                    .sum();
                if got + had < end - first {
                    self.unallocate(&records);
                    return Err(self.short_allocation());
                }
                self.commit_allocation(&mut held, &records)?;
            }
            let i = c.read();
            if writable {
                // Again under the lock set_flags takes: a `chattr +i` or `+a` since the first
                // check refuses the pin here, as it refuses itself while a writable pin is live.
                flags::check(&i, flags::Change::WritablePin)?;
            }
            let maps = i.extents.mappings_in(first, end - first);
            if maps.iter().map(|m| m.len).sum::<u64>() < end - first {
                continue; // a punch got in between: allocate again
            }
            let extents: Vec<(u64, Extent)> = maps
                .iter()
                .map(|m| {
                    (
                        m.file_block,
                        Extent {
                            start: m.image_block,
                            len: m.len,
                        },
                    )
                })
                .collect();
            let granted = self.leases.grant_as(req, standing, limit, || {
                let mut alloc = lock(&self.alloc);
                for (n, (_, e)) in extents.iter().enumerate() {
                    if let Err(err) = alloc.pin(*e) {
                        for (_, done) in &extents[..n] {
                            let _ = alloc.unpin(*done);
                        }
                        return Err(FsError::Corrupt(format!(
                            "pinning blocks {}+{}: {err}",
                            e.start, e.len
                        )));
                    }
                }
                Ok(extents.clone())
            });
            let id = match granted {
                Ok(g) => g?,
                Err(crate::lease::LeaseError::OverLimit) => {
                    // Another pin of the same user got in first: say by how much.
                    over_limit(limit)?;
                    return Err(crate::lease::LeaseError::OverLimit.into());
                }
                Err(e) => return Err(e.into()),
            };
            let extents: Vec<PinnedExtent> = maps
                .iter()
                .map(|m| PinnedExtent {
                    file_offset: m.file_block * BLOCK_SIZE,
                    image_offset: m.image_block * BLOCK_SIZE,
                    len: m.len * BLOCK_SIZE,
                })
                .collect();
            // Still under the inode lock: no write can slip in while blocks move behind
            // their windows. Each extent's window references are counted as it opens; a
            // failure gives back the ones opened so far, then the pin.
            let mut windows = Vec::new();
            for (n, e) in extents.iter().enumerate() {
                match self.image.window(e.image_offset, e.len) {
                    Ok(w) => windows.extend(w),
                    Err(err) => {
                        for done in &extents[..n] {
                            self.image.unwindow(done.image_offset, done.len);
                        }
                        // The pin's own references are gone: the release only unpins.
                        drop(i);
                        let _ = self.leases.release(req.holder, id, &NoWindows(self));
                        tracing::error!("no DAX window for a pin: {err}");
                        let errno = match err.raw_os_error() {
                            Some(libc::EMFILE | libc::ENFILE) => libc::EMFILE,
                            _ => libc::ENOMEM,
                        };
                        return Err(FsError::Resources {
                            errno,
                            message: err.to_string(),
                        });
                    }
                }
            }
            // Pages of the range that shared mappings cached are read again from now on:
            // through the window, where the holder stores.
            self.tell_kernel(Stale::Data {
                ino,
                offset: first * BLOCK_SIZE,
                len: (end - first) * BLOCK_SIZE,
                done: None,
            });
            return Ok(PinGrant {
                id,
                extents,
                windows,
            });
        }
        Err(FsError::Lease(crate::lease::LeaseError::Again))
    }

    /// The holder gives pin `pin` back.
    pub fn unpin(&self, holder: HolderId, pin: PinId) -> FsResult<()> {
        let files = self.leases.files_of(holder);
        let r = self.leases.release(holder, pin, self);
        // The holder hears `ok` once the kernel dropped what shared mappings cached of the
        // range (bounded: a kernel that does not answer, or no mount, costs at most that).
        for told in self.finish_releases() {
            let _ = told.recv_timeout(Duration::from_secs(1));
        }
        r?;
        self.after_release(&files);
        Ok(())
    }
}

impl Unpinner for Fs {
    fn revoked(&self, ino: u64) {
        let _ = self.work.0.send(Work::Relocate(ino));
    }

    fn released(&self, ino: u64, extents: &[(u64, Extent)], pinned: bool) {
        lock(&self.released).push(Released {
            ino,
            extents: extents.to_vec(),
            pinned,
        });
    }

    fn unpin(&self, extents: &[(u64, Extent)]) {
        let mut alloc = lock(&self.alloc);
        for (_, e) in extents {
            match alloc.unpin(*e) {
                Ok(freed) => {
                    // Busy blocks whose last pin this was: the holder may have written into
                    // them; whoever gets them next must read zeros.
                    for f in freed {
                        self.image.discard(f.start * BLOCK_SIZE, f.len * BLOCK_SIZE);
                    }
                }
                Err(err) => tracing::error!("unpin of blocks {}+{}: {err}", e.start, e.len),
            }
        }
    }
}

/// The release of a pin whose windows were never (or are already no longer) counted: only
/// its allocator references go.
struct NoWindows<'a>(&'a Fs);

impl Unpinner for NoWindows<'_> {
    fn unpin(&self, extents: &[(u64, Extent)]) {
        <Fs as Unpinner>::unpin(self.0, extents)
    }
}

/// The soft `RLIMIT_MEMLOCK` of process `pid` from `/proc/PID/limits` (`Some(None)`:
/// unlimited; `None`: unreadable).
fn memlock_from_proc(pid: u32) -> Option<Option<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line["Max locked memory".len()..]
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

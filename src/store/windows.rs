//! DAX windows: direct access for pin holders to exactly the blocks they pinned, for exactly
//! as long as they are pinned.
//!
//! A holder must be able to load and store into its pinned blocks without a FUSE round trip,
//! and reach nothing else (unless it is root and asks for the raw image). A descriptor of the
//! image file would give it everything, so pinned blocks are moved behind a *window*: a
//! memfd, filled with the blocks' contents and mapped with `MAP_FIXED` over their place in
//! the daemon's image mapping. From then on the daemon's own reads and writes of those blocks
//! go to the memfd as well, so what a holder stores is what the next `read()` through the
//! mount returns, and what the daemon writes is what the holder sees.
//!
//! Lifecycle of a page of the image (page = block = 4096 bytes):
//! 1. *unwindowed*: the daemon's mapping is the image file.
//! 2. *attached*: [`Windows::open`] for a pin either finds the page attached to a window
//!    already (another pin of the same block) and counts one more reference, or makes a new
//!    window for it (a memfd sized to the gap, filled from the image, sealed against
//!    resizing, mode 0600) and maps it over the page.
//! 3. [`Windows::release`] drops a reference; at the last one the page is *detached*: its
//!    contents go back into the image file, the image file is mapped over the page again,
//!    and the memfd's page is punched. Whatever a holder still maps of that memfd page is
//!    orphaned memory from then on: it reaches no block of the image, now or later.
//! 4. Once no page of a window is attached, the daemon closes the memfd.
//!
//! The references are pins (the caller counts one per pin and page), so a page is attached
//! exactly while some pin still covers it. The caller keeps the blocks' allocator pins until
//! their pages are detached, so a block is never handed to another file while a window can
//! still reach it. A holder receives its own open file description of each window
//! ([`WindowPiece::descriptor`]): read-only for read-only pins, so a `PROT_WRITE` shared
//! mapping of it fails with `EACCES`, and the memfd's mode (0600, owned by the daemon) keeps
//! an unprivileged holder from reopening it through `/proc` for writing. A window is born
//! sized to the pin that made it; a later pin inside it shares it, and so reaches the other
//! attached pages of that window: pages that live pins of the same blocks' file cover,
//! never a page no pin covers (those are detached).
//!
//! When the contents cannot go back into the image file (the host is out of space), the
//! holder is cut off all the same: the pages move to a new window that only the daemon has
//! (their contents copied into it, the holder's memfd pages punched), with no reference. Such
//! a page is written back by `fsync` and at unmount, and detached again when a later pin of
//! it goes; when its block is freed it is detached at once (it reads as zeros anyway).
//!
//! Invariant: attached runs are page-aligned, lie inside the image, and do not overlap; a run
//! with no reference is behind a window of the daemon's own, whose memfd no holder was given,
//! and covers only blocks that are not free.
//!
//! Locks: one mutex over the runs, taken inside the inode and allocator locks (order: inode,
//! lease, allocator, windows); it is held across the copies and `mmap` calls of opening and
//! detaching, never across anything that waits for a holder.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::sync::{Mutex, MutexGuard};

use rustix::fs::{FallocateFlags, MemfdFlags, Mode, OFlags, SealFlags};

const PAGE: u64 = 4096;

/// One piece of a pinned range, as a holder maps it: `len` bytes at image offset
/// `image_offset` are bytes `fd_offset..` of `fd`.
#[derive(Debug, Clone)]
pub struct WindowPiece {
    /// Where the bytes are in the image.
    pub image_offset: u64,
    /// How many.
    pub len: u64,
    /// The window's memfd (the daemon's own descriptor: hand a holder
    /// [`WindowPiece::descriptor`] instead).
    pub fd: Arc<OwnedFd>,
    /// Where they are in the memfd.
    pub fd_offset: u64,
}

impl WindowPiece {
    /// A new open file description of the window for a holder: read-only unless `writable`.
    /// It shares nothing with the daemon's own (file status flags such as `O_APPEND` are per
    /// description).
    pub fn descriptor(&self, writable: bool) -> std::io::Result<OwnedFd> {
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let mode = if writable {
            OFlags::RDWR
        } else {
            OFlags::RDONLY
        };
        rustix::fs::open(path.as_str(), mode | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| os_error("reopening a DAX window for a holder", e))
    }
}

/// An attached run of pages: `len` bytes of the image, bytes `fd_offset..` of `fd`, each
/// page referenced by `refs` pins.
#[derive(Debug, Clone)]
struct Run {
    len: u64,
    fd: Arc<OwnedFd>,
    fd_offset: u64,
    refs: u32,
}

impl Run {
    /// This run, starting at image offset `at`, as a holder's piece.
    fn piece(&self, at: u64) -> WindowPiece {
        WindowPiece {
            image_offset: at,
            len: self.len,
            fd: self.fd.clone(),
            fd_offset: self.fd_offset,
        }
    }
}

impl WindowPiece {
    /// Does `next` continue this piece, in the image and in the same memfd?
    fn continued_by(&self, next: &WindowPiece) -> bool {
        Arc::ptr_eq(&self.fd, &next.fd)
            && self.image_offset + self.len == next.image_offset
            && self.fd_offset + self.len == next.fd_offset
    }
}

/// The windows of one image mapping.
#[derive(Debug)]
pub struct Windows {
    /// Attached runs by image offset.
    runs: Mutex<BTreeMap<u64, Run>>,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows {
            runs: Mutex::ranked(crate::sync::Rank::Windows, BTreeMap::new()),
        }
    }
}

/// What [`Windows::write_back`] did: bytes copied from windows into the image file, and the
/// parts of the range that no window covers (the caller msyncs those).
#[derive(Debug, Default)]
pub struct WrittenBack {
    /// Bytes written from windows into the image file (not yet durable).
    pub windowed: u64,
    /// Parts of the range that are the image mapping itself: (offset, length).
    pub rest: Vec<(u64, u64)>,
}

/// The last OS error, errno kept (callers tell `EMFILE` from `ENOMEM` by it); what failed
/// goes to the log.
fn io_error(what: &str) -> std::io::Error {
    os_error(what, std::io::Error::last_os_error())
}

/// `e`, logged with `what` was being done.
fn os_error(what: &str, e: impl Into<std::io::Error>) -> std::io::Error {
    let e = e.into();
    tracing::warn!("{what}: {e}");
    e
}

/// Splits the run that strictly contains `at`, if any, so that a run starts at `at`.
fn split_at(map: &mut BTreeMap<u64, Run>, at: u64) {
    let Some((&s, r)) = map.range(..at).next_back() else {
        return;
    };
    if s + r.len <= at {
        return;
    }
    let mut tail = r.clone();
    let head = at - s;
    tail.len -= head;
    tail.fd_offset += head;
    map.get_mut(&s).expect("found").len = head;
    map.insert(at, tail);
}

/// Joins neighbours in `from..to` that continue each other (same memfd, contiguous, same
/// count), so that the map stays as small as the pins' shapes allow.
fn coalesce(map: &mut BTreeMap<u64, Run>, from: u64, to: u64) {
    let start = map.range(..from).next_back().map_or(from, |(&s, _)| s);
    let keys: Vec<u64> = map.range(start..=to).map(|(&s, _)| s).collect();
    let mut prev: Option<u64> = None;
    for k in keys {
        if let Some(p) = prev {
            let (a, b) = (&map[&p], &map[&k]);
            if a.refs == b.refs && a.piece(p).continued_by(&b.piece(k)) {
                let add = b.len;
                map.remove(&k);
                map.get_mut(&p).expect("kept").len += add;
                continue;
            }
        }
        prev = Some(k);
    }
}

/// A sealed memfd of `len` bytes holding `src` (a live mapping of `len` bytes).
///
/// # Safety
/// `src` must be readable for `len` bytes.
unsafe fn new_window(src: *const u8, len: u64) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        c"pinfs-window",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| os_error("memfd_create", e))?;
    // Through a raw pointer, not a slice: a holder may be storing into these pages while
    // the kernel copies them.
    // SAFETY: pwrite copies `len` readable bytes (caller's contract) into the memfd at 0;
    // the result is checked.
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), src.cast(), len as usize, 0) };
    if n != len as isize {
        return Err(io_error("filling a DAX window"));
    }
    // Only the daemon (and root) may open it anew: a holder cannot turn its read-only
    // descriptor into a writable one through /proc/PID/fd.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))
        .map_err(|e| os_error("fchmod of a DAX window", e))?;
    // A holder with a writable descriptor must not shrink the memfd under the daemon's
    // mapping (a SIGBUS in the daemon) nor grow it (memory nobody asked for).
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(|e| os_error("sealing a DAX window", e))?;
    Ok(fd)
}

impl Windows {
    #[track_caller]
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The attached parts of `off..off+len`: (image offset, length, run start).
    fn covered(map: &BTreeMap<u64, Run>, off: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let end = off + len;
        let first = map
            .range(..=off)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(off);
        map.range(first..end)
            .filter_map(|(&s, r)| {
                let (a, b) = (s.max(off), (s + r.len).min(end));
                (a < b).then(|| (a, b - a, s))
            })
            .collect()
    }

    /// Counts one more reference (one pin) on every page of `off..off+len` of the mapping at
    /// `base`, attaching new windows to the pages that have none (their current contents
    /// are copied in), and returns the pieces that give direct access to the range.
    ///
    /// # Safety
    /// `base` must be the start of a live shared mapping of at least `off + len` bytes, and no
    /// other thread may write the range while this runs (the caller holds the owning inode's
    /// lock).
    pub unsafe fn open(
        &self,
        base: *mut u8,
        file: &std::fs::File,
        off: u64,
        len: u64,
    ) -> std::io::Result<Vec<WindowPiece>> {
        debug_assert!(off.is_multiple_of(PAGE) && len.is_multiple_of(PAGE));
        let end = off + len;
        let mut map = self.lock();
        let mut gaps = Vec::new();
        let mut cursor = off;
        for (a, l, _) in Self::covered(&map, off, len) {
            if a > cursor {
                gaps.push((cursor, a - cursor));
            }
            cursor = a + l;
        }
        if cursor < end {
            gaps.push((cursor, end - cursor));
        }
        // Make every new window before touching the map, so that a failure changes nothing.
        let mut made = Vec::new();
        for &(g, glen) in &gaps {
            // SAFETY: the gap lies inside the mapping (caller's contract).
            made.push((g, glen, unsafe { new_window(base.add(g as usize), glen) }?));
        }
        let mut inserted = Vec::new();
        for (g, glen, fd) in made {
            // SAFETY: the target range is page-aligned and inside our mapping (caller's
            // contract), so MAP_FIXED replaces only pages of the image mapping we own; the
            // memfd holds `glen` bytes.
            let p = unsafe {
                libc::mmap(
                    base.add(g as usize).cast(),
                    glen as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                // MAP_FIXED failing leaves the old mapping in place (the kernel checks before
                // it unmaps). The windows attached above for this pin, which have no
                // reference yet, go back: the pin fails as a whole.
                let err = io_error("mapping a DAX window");
                for s in inserted {
                    let l = map.get(&s).map_or(0, |r: &Run| r.len);
                    // SAFETY: as in `release`: our mapping of `file`, one whole run.
                    unsafe { Self::detach(&mut map, base, file, s, l) };
                }
                return Err(err);
            }
            inserted.push(g);
            map.insert(
                g,
                Run {
                    len: glen,
                    fd: Arc::new(fd),
                    fd_offset: 0,
                    refs: 0,
                },
            );
        }
        split_at(&mut map, off);
        split_at(&mut map, end);
        let keys: Vec<u64> = map.range(off..end).map(|(&s, _)| s).collect();
        for k in &keys {
            map.get_mut(k).expect("listed").refs += 1;
        }
        // One piece per memfd stretch (whatever the counts of its parts).
        let mut pieces: Vec<WindowPiece> = Vec::new();
        for (&s, r) in map.range(off..end) {
            let p = r.piece(s);
            match pieces.last_mut() {
                Some(l) if l.continued_by(&p) => l.len += p.len,
                _ => pieces.push(p),
            }
        }
        coalesce(&mut map, off, end);
        Ok(pieces)
    }

    /// Detaches the run `a..a+l`: its contents go back into `file`, the image file is mapped
    /// over it again, and the memfd part is punched. When the contents cannot be written,
    /// the run moves to a window of the daemon's own instead (see the module's documentation)
    /// and stays attached with no reference. Returns false when not even that could be done:
    /// the run then stays as it was, reachable by whoever holds its memfd.
    ///
    /// # Safety
    /// As for [`Windows::open`]; `a..a+l` must be exactly one run of `map`.
    unsafe fn detach(
        map: &mut BTreeMap<u64, Run>,
        base: *mut u8,
        file: &std::fs::File,
        a: u64,
        l: u64,
    ) -> bool {
        debug_assert_eq!(map[&a].len, l);
        // Into the image file's page cache, straight from the daemon's mapping of the window
        // (one copy). Not synced: the image mapping that takes over sees the page cache, and
        // durability is fsync's business, as for any written block.
        // SAFETY: `a..a+l` lies inside the daemon's live mapping (caller's contract), which
        // maps the window there.
        if let Err(e) = unsafe { pwrite_all(file, base.add(a as usize), l, a) } {
            tracing::error!(
                offset = a,
                len = l,
                "a released DAX window cannot be written back ({e}): the daemon keeps its \
                 contents until fsync or unmount can write them"
            );
            // SAFETY: as above.
            return unsafe { Self::cut_off(map, base, a, l, 0) };
        }
        // SAFETY: as above.
        unsafe { Self::restore(map, base, file, a, l) }
    }

    /// Maps the image file over run `a..a+l` again and drops the run (its memfd pages
    /// punched), without writing anything back. False (nothing changed) if the kernel
    /// refuses the mapping.
    ///
    /// # Safety
    /// As for [`Windows::detach`].
    unsafe fn restore(
        map: &mut BTreeMap<u64, Run>,
        base: *mut u8,
        file: &std::fs::File,
        a: u64,
        l: u64,
    ) -> bool {
        let run = map[&a].clone();
        // SAFETY: the range is page-aligned and inside the daemon's own shared mapping of
        // `file` (caller's contract); MAP_FIXED puts the file back where it was.
        let p = unsafe {
            libc::mmap(
                base.add(a as usize).cast(),
                l as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                a as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            tracing::error!(
                offset = a,
                len = l,
                "a released DAX window stays attached: {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
        // The orphaned pages go back to the system (a holder that still maps them gets fresh
        // zero pages, its own).
        punch(&run.fd, run.fd_offset, l);
        map.remove(&a);
        true
    }

    /// Moves run `a..a+l` to a new window that no holder was given (its current contents
    /// copied in), punches the old memfd's pages, and keeps the run attached with `refs`
    /// references. False (nothing changed) when no new window can be made.
    ///
    /// # Safety
    /// As for [`Windows::detach`].
    unsafe fn cut_off(
        map: &mut BTreeMap<u64, Run>,
        base: *mut u8,
        a: u64,
        l: u64,
        refs: u32,
    ) -> bool {
        let old = map[&a].clone();
        // SAFETY: the run lies inside the mapping (caller's contract).
        let fd = match unsafe { new_window(base.add(a as usize), l) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(offset = a, len = l, "a DAX window stays as it was: {e}");
                return false;
            }
        };
        // SAFETY: page-aligned, inside the daemon's own mapping (caller's contract); the new
        // memfd holds `l` bytes.
        let p = unsafe {
            libc::mmap(
                base.add(a as usize).cast(),
                l as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            tracing::error!(
                offset = a,
                len = l,
                "a DAX window stays as it was: {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
        punch(&old.fd, old.fd_offset, l);
        map.insert(
            a,
            Run {
                len: l,
                fd: Arc::new(fd),
                fd_offset: 0,
                refs,
            },
        );
        true
    }

    /// Cuts every holder that was given a window over `off..off+len` of the mapping at
    /// `base` off from it: the pages move to new windows with the same contents and the same
    /// references, which no holder was given. For revoked pins whose blocks cannot be moved
    /// out of their file (no space): what a device could not do without ODP, software can.
    /// Returns false if some page could not be moved (its holders still reach it).
    ///
    /// # Safety
    /// As for [`Windows::release`].
    pub unsafe fn rekey(&self, base: *mut u8, off: u64, len: u64) -> bool {
        let end = off + len;
        let mut map = self.lock();
        split_at(&mut map, off);
        split_at(&mut map, end);
        let runs: Vec<(u64, u64, u32)> = map
            .range(off..end)
            .map(|(&s, r)| (s, r.len, r.refs))
            .collect();
        let mut all = true;
        for (a, l, refs) in runs {
            // SAFETY: caller's contract; `a..a+l` is exactly one run.
            all &= unsafe { Self::cut_off(&mut map, base, a, l, refs) };
        }
        all
    }

    /// Drops one reference from every attached page of `off..off+len` of the mapping at
    /// `base` (a mapping of `file`); pages whose last reference this was are detached: their
    /// contents go back into `file`, and nothing a holder was given reaches them any more.
    /// Returns the parts that could not be detached (their contents could not be written:
    /// the caller must keep their blocks from being reused).
    ///
    /// # Safety
    /// `base` must be the start of a live shared mapping of `file`, at least `off + len`
    /// bytes long, and no other thread may write the range while this runs (the caller holds
    /// the lock of the inode that owns the blocks, if any does).
    pub unsafe fn release(
        &self,
        base: *mut u8,
        file: &std::fs::File,
        off: u64,
        len: u64,
    ) -> Vec<(u64, u64)> {
        let end = off + len;
        let mut map = self.lock();
        split_at(&mut map, off);
        split_at(&mut map, end);
        let keys: Vec<u64> = map.range(off..end).map(|(&s, _)| s).collect();
        let mut stuck = Vec::new();
        for k in keys {
            let r = map.get_mut(&k).expect("listed");
            if r.refs > 1 {
                r.refs -= 1;
                continue;
            }
            // The last reference (or none: a daemon's own window a pin never counted, which
            // only happens if the caller releases what it did not open): detach.
            r.refs = 0;
            let l = r.len;
            // SAFETY: caller's contract; `k` is exactly one run.
            if !unsafe { Self::detach(&mut map, base, file, k, l) } {
                map.get_mut(&k).expect("kept").refs = 1;
                stuck.push((k, l));
            }
        }
        coalesce(&mut map, off, end);
        stuck
    }

    /// Freed blocks `off..off+len` of the mapping at `base` (a mapping of `file`, whose
    /// range the caller has just punched) read as zeros: their windowed parts are punched,
    /// and a window of the daemon's own over them goes (nothing of it needs writing back).
    ///
    /// # Safety
    /// As for [`Windows::release`].
    pub unsafe fn discard(&self, base: *mut u8, file: &std::fs::File, off: u64, len: u64) {
        let mut map = self.lock();
        let end = off + len;
        for (a, l, s) in Self::covered(&map, off, len) {
            let r = &map[&s];
            if r.refs > 0 {
                // Still pinned (only when busy blocks or detaching are switched off).
                punch(&r.fd, r.fd_offset + (a - s), l);
                continue;
            }
            split_at(&mut map, a);
            split_at(&mut map, a + l);
            // SAFETY: caller's contract; `a..a+l` is now exactly one run. The image file
            // there was punched: the mapping of it reads zeros, as a freed block must.
            if !unsafe { Self::restore(&mut map, base, file, a, l) } {
                let r = &map[&a];
                punch(&r.fd, r.fd_offset, l);
            }
        }
        coalesce(&mut map, off, end);
    }

    /// Copies the windowed parts of `off..off+len` of the mapping at `base` into `file` (the
    /// image file behind them), into the host's page cache: the caller makes them durable
    /// (`fdatasync` of the image). Returns the parts that are not windowed, for the caller
    /// to msync, or the first error (after trying every part).
    ///
    /// # Safety
    /// `base` must be the start of a live mapping of at least `off + len` bytes.
    pub unsafe fn write_back(
        &self,
        base: *const u8,
        file: &std::fs::File,
        off: u64,
        len: u64,
    ) -> std::io::Result<WrittenBack> {
        let map = self.lock();
        let mut done = WrittenBack::default();
        let mut failed = None;
        let mut cursor = off;
        for (a, l, _) in Self::covered(&map, off, len) {
            if a > cursor {
                done.rest.push((cursor, a - cursor));
            }
            // SAFETY: `a..a+l` lies inside the mapping (caller's contract), which maps the
            // window there.
            match unsafe { pwrite_all(file, base.add(a as usize), l, a) } {
                Ok(()) => done.windowed += l,
                Err(e) => {
                    tracing::error!(
                        offset = a,
                        len = l,
                        "writing a DAX window back to the image failed: {e}"
                    );
                    failed.get_or_insert(e);
                }
            }
            cursor = a + l;
        }
        if cursor < off + len {
            done.rest.push((cursor, off + len - cursor));
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// All attached runs: (image offset, length).
    pub fn list(&self) -> Vec<(u64, u64)> {
        self.lock().iter().map(|(&s, r)| (s, r.len)).collect()
    }

    /// The distinct memfds the daemon keeps open for windows.
    pub fn descriptors(&self) -> usize {
        let map = self.lock();
        let mut fds: Vec<i32> = map.values().map(|r| r.fd.as_raw_fd()).collect();
        fds.sort_unstable();
        fds.dedup();
        fds.len()
    }
}

/// Writes `len` bytes from `src` into `file` at `offset`.
///
/// # Safety
/// `src` must be readable for `len` bytes.
unsafe fn pwrite_all(
    file: &std::fs::File,
    src: *const u8,
    len: u64,
    offset: u64,
) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        // SAFETY: the rest of the source range is readable (caller's contract).
        let n = unsafe {
            libc::pwrite(
                file.as_raw_fd(),
                src.add(done as usize).cast(),
                (len - done) as usize,
                (offset + done) as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the image file took no bytes",
            ));
        }
        done += n as u64;
    }
    Ok(())
}

/// Punches `len` bytes at `off` of a window's memfd (they read as zeros after, in every
/// mapping of it).
fn punch(fd: &OwnedFd, off: u64, len: u64) {
    let _ = rustix::fs::fallocate(
        fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        off,
        len,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Maps `len` bytes of `fd` at `off` shared and writable, as a holder does.
    fn holder_map(fd: &OwnedFd, off: u64, len: u64) -> *mut u8 {
        // SAFETY: a new shared mapping chosen by the kernel; the tests leak it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off as libc::off_t,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    #[test]
    fn a_window_that_cannot_be_written_back_still_cuts_its_holder_off() {
        const LEN: u64 = 4 * PAGE;
        let file = tempfile::tempfile().unwrap();
        file.set_len(LEN).unwrap();
        file.write_all_at(&[b'a'; LEN as usize], 0).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(LEN as usize)
            .map_raw(&file)
            .unwrap();
        let base = map.as_mut_ptr();
        let w = Windows::default();
        // SAFETY: `base` maps the whole file; nothing else writes it in this test.
        let pieces = unsafe { w.open(base, &file, PAGE, PAGE) }.unwrap();
        let held = holder_map(&pieces[0].fd, pieces[0].fd_offset, PAGE);
        // SAFETY: storing into the holder's live mapping of one page.
        unsafe { held.write_bytes(b'h', PAGE as usize) };
        // The write-back fails (a descriptor the image cannot be written through, as when
        // the host is full): the holder must be cut off all the same.
        let read_only = std::fs::File::open("/proc/self/exe").unwrap();
        // SAFETY: as above.
        let stuck = unsafe { w.release(base, &read_only, PAGE, PAGE) };
        assert!(stuck.is_empty(), "cut off, not stuck: {stuck:?}");
        // SAFETY: storing into the holder's (now orphaned) mapping, reading the daemon's.
        let seen = unsafe {
            held.write_bytes(b'x', PAGE as usize);
            std::slice::from_raw_parts(base.add(PAGE as usize), PAGE as usize).to_vec()
        };
        assert!(
            seen.iter().all(|&b| b == b'h'),
            "the daemon keeps what was stored under the pin, and nothing stored after it"
        );
        assert_eq!(
            w.list(),
            vec![(PAGE, PAGE)],
            "behind a window of the daemon's own"
        );
        // A later pin of the page gets that window, and its release writes the page back.
        // SAFETY: as above.
        unsafe { w.open(base, &file, PAGE, PAGE) }.unwrap();
        // SAFETY: as above.
        assert!(unsafe { w.release(base, &file, PAGE, PAGE) }.is_empty());
        assert!(w.list().is_empty());
        let mut back = vec![0u8; PAGE as usize];
        file.read_exact_at(&mut back, PAGE).unwrap();
        assert!(back.iter().all(|&b| b == b'h'), "written back at last");
    }

    #[test]
    fn a_freed_block_behind_the_daemons_own_window_reads_zeros() {
        const LEN: u64 = 2 * PAGE;
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(&[b'a'; LEN as usize], 0).unwrap();
        let map = memmap2::MmapOptions::new()
            .len(LEN as usize)
            .map_raw(&file)
            .unwrap();
        let base = map.as_mut_ptr();
        let w = Windows::default();
        let read_only = std::fs::File::open("/proc/self/exe").unwrap();
        // SAFETY: `base` maps the whole file; nothing else writes it in this test.
        unsafe {
            w.open(base, &file, 0, PAGE).unwrap();
            assert!(w.release(base, &read_only, 0, PAGE).is_empty());
            // The block is freed: the image file is punched there, then the windows hear.
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                PAGE as libc::off_t,
            );
            w.discard(base, &file, 0, PAGE);
        }
        assert!(
            w.list().is_empty(),
            "nothing of a freed block needs writing back"
        );
        // SAFETY: reading the daemon's mapping.
        let seen = unsafe { std::slice::from_raw_parts(base, PAGE as usize) };
        assert!(seen.iter().all(|&b| b == 0), "a freed block reads as zeros");
    }
}

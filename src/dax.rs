//! DAX windows: direct access for pin holders to exactly the blocks they pinned.
//!
//! A holder must be able to load and store into its pinned blocks without a FUSE round trip,
//! and reach nothing else (unless it is root and asks for the raw image). A descriptor of the
//! image file would give it everything, so pinned blocks are moved behind a *window*: a
//! memfd, filled with the blocks' contents and mapped with `MAP_FIXED` over their place in
//! the daemon's image mapping. From then on the daemon's own reads and writes of those blocks
//! go to the memfd as well, so what a holder stores is what the next `read()` through the
//! mount returns, and what the daemon writes is what the holder sees. A holder receives the
//! memfds that cover its pin, nothing more.
//!
//! Lifecycle: a window is made the first time any of its blocks is pinned and stays for the
//! life of the mount (tearing one down while a revoked holder may still write into it would
//! need the exclusion the busy-block machinery exists to avoid). Windows never overlap: a pin
//! over blocks partly behind windows gets new windows for the gaps only. When windowed blocks
//! are freed, the memfd part is punched too, so they read as zeros. The image file behind a
//! window is brought up to date by `fsync` of the file owning the blocks (write-back) and at
//! unmount; a daemon killed in between loses what was written there since (unsynced data, as
//! on any filesystem).
//!
//! Invariant: windows are page-aligned, lie inside the image, and do not overlap.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

/// One piece of a pinned range, as a holder maps it: `len` bytes at image offset
/// `image_offset` are bytes `fd_offset..` of `fd`.
#[derive(Debug, Clone)]
pub struct WindowPiece {
    /// Where the bytes are in the image.
    pub image_offset: u64,
    /// How many.
    pub len: u64,
    /// The window's memfd.
    pub fd: Arc<OwnedFd>,
    /// Where they are in the memfd.
    pub fd_offset: u64,
}

#[derive(Debug)]
struct Window {
    len: u64,
    fd: Arc<OwnedFd>,
}

/// The windows of one image mapping.
#[derive(Debug, Default)]
pub struct Windows {
    by_start: Mutex<BTreeMap<u64, Window>>,
}

fn io_error(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Windows {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Window>> {
        self.by_start.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The windowed parts of `off..off+len`: (image offset, length, window start).
    fn covered(map: &BTreeMap<u64, Window>, off: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let end = off + len;
        let first = map
            .range(..=off)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(off);
        map.range(first..end)
            .filter_map(|(&s, w)| {
                let (a, b) = (s.max(off), (s + w.len).min(end));
                (a < b).then(|| (a, b - a, s))
            })
            .collect()
    }

    /// The pieces that give direct access to `off..off+len` of the mapping at `base`, making
    /// windows for the parts that have none yet (their current contents are copied in).
    ///
    /// # Safety
    /// `base` must be the start of a live shared mapping of at least `off + len` bytes, and no
    /// other thread may write the range while this runs (the caller holds the owning inode's
    /// lock).
    pub unsafe fn open(
        &self,
        base: *mut u8,
        off: u64,
        len: u64,
    ) -> std::io::Result<Vec<WindowPiece>> {
        debug_assert!(off.is_multiple_of(4096) && len.is_multiple_of(4096));
        let mut map = self.lock();
        let mut gaps = Vec::new();
        let mut cursor = off;
        for (a, l, _) in Self::covered(&map, off, len) {
            if a > cursor {
                gaps.push((cursor, a - cursor));
            }
            cursor = a + l;
        }
        if cursor < off + len {
            gaps.push((cursor, off + len - cursor));
        }
        for (g, glen) in gaps {
            let name = CString::new(format!("pinfs-window-{g}")).expect("no NUL");
            // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
            let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            if raw < 0 {
                return Err(io_error("memfd_create"));
            }
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: the source range lies inside the mapping (caller's contract); pwrite
            // copies it into the memfd at offset 0.
            let n = unsafe {
                libc::pwrite(
                    fd.as_raw_fd(),
                    base.add(g as usize).cast(),
                    glen as usize,
                    0,
                )
            };
            if n != glen as isize {
                return Err(io_error("filling a DAX window"));
            }
            // SAFETY: the target range is page-aligned and inside our mapping (caller's
            // contract), so MAP_FIXED replaces only pages of the image mapping we own.
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
                return Err(io_error("mapping a DAX window"));
            }
            map.insert(
                g,
                Window {
                    len: glen,
                    fd: Arc::new(fd),
                },
            );
        }
        Ok(Self::covered(&map, off, len)
            .into_iter()
            .map(|(a, l, s)| WindowPiece {
                image_offset: a,
                len: l,
                fd: map[&s].fd.clone(),
                fd_offset: a - s,
            })
            .collect())
    }

    /// Punches the windowed parts of `off..off+len` (freed blocks read as zeros).
    pub fn discard(&self, off: u64, len: u64) {
        let map = self.lock();
        for (a, l, s) in Self::covered(&map, off, len) {
            // SAFETY: fallocate on a memfd we own, inside its size.
            unsafe {
                libc::fallocate(
                    map[&s].fd.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (a - s) as libc::off_t,
                    l as libc::off_t,
                );
            }
        }
    }

    /// Copies the windowed parts of `off..off+len` into `file` (the image file behind them)
    /// and makes them durable; returns the parts that are not windowed, for the caller to
    /// msync.
    pub fn write_back(&self, file: &std::fs::File, off: u64, len: u64) -> Vec<(u64, u64)> {
        let map = self.lock();
        let mut rest = Vec::new();
        let mut cursor = off;
        for (a, l, s) in Self::covered(&map, off, len) {
            if a > cursor {
                rest.push((cursor, a - cursor));
            }
            let mut buf = vec![0u8; l as usize];
            // SAFETY: pread into a buffer of `l` bytes from a memfd we own; pwrite of the same
            // buffer into the image file; sync_file_range on that file. All results checked.
            unsafe {
                let r = libc::pread(
                    map[&s].fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    l as usize,
                    (a - s) as libc::off_t,
                );
                let w = libc::pwrite(
                    file.as_raw_fd(),
                    buf.as_ptr().cast(),
                    l as usize,
                    a as libc::off_t,
                );
                let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                if r != l as isize
                    || w != l as isize
                    || libc::sync_file_range(file.as_raw_fd(), a as i64, l as i64, flags) != 0
                {
                    tracing::error!(
                        offset = a,
                        len = l,
                        "writing a DAX window back to the image failed: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            cursor = a + l;
        }
        if cursor < off + len {
            rest.push((cursor, off + len - cursor));
        }
        rest
    }

    /// All windows: (image offset, length).
    pub fn list(&self) -> Vec<(u64, u64)> {
        self.lock().iter().map(|(&s, w)| (s, w.len)).collect()
    }
}

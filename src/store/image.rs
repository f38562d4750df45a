//! The image file: emulated persistent memory. Owns the shared mapping, the superblocks, the
//! exclusive lock that keeps a second daemon away, and persistence ordering.
//!
//! Layout (block size 4096):
//!
//! | blocks | content |
//! |---|---|
//! | 0, 1 | superblock copies A and B; the valid one with the higher generation is current |
//! | 2 .. 2+J | the metadata journal ([`crate::log::journal`]) |
//! | the rest | data and checkpoint blocks, managed by the allocator |
//!
//! A copy that fails its checksum is what a torn superblock store leaves, so the other copy is
//! used without complaint. A copy whose checksum matches but whose contents are impossible
//! (a geometry that overflows, counters without room, a missing checkpoint after the journal
//! began), or two copies that disagree on the layout, pinfs never writes: [`Image::open`]
//! works around such damage where it can (the layout never changes after mkfs, so a newer
//! damaged copy takes it from the other) and records it for fsck to report and mount to
//! refuse ([`Image::damaged_superblocks`]).
//!
//! Block 0 also carries, past its superblock, the *owner note*: the pid and mount point of the
//! daemon that holds the lock, so that a refused second mount can name them, and whether that
//! mount was detached (files on it still open: the lock goes when the last closes).
//!
//! Persistence ordering: stores go to the shared mapping, so they survive the daemon being
//! killed (they are in the host page cache). [`Image::flush`] makes a range durable against a
//! host crash (`msync(MS_SYNC)`, which is a data sync of that file range; for parts behind DAX
//! windows, `pwrite` and `fdatasync`); callers flush data before the journal records that
//! reference it, and a checkpoint before the superblock that points at it. Every flush
//! reports its error: the caller answers `EIO` and does not go on as if it were durable.
//!
//! **Volatile cache** ([`Image::make_volatile`], mount option `volatile_cache`): the mapping
//! stands for the CPU cache of real persistent memory, where a store is durable only once
//! flushed. The daemon maps a copy of the image (a memfd, "the cache") instead of the image
//! file, and the image file receives exactly the ranges made durable: [`Image::flush`],
//! [`Image::write_file`], window write-backs, and at a clean unmount everything
//! ([`Image::persist_all`]). [`Image::cut_power`] drops every later write to the image file,
//! so that the file holds what a power cut would leave: the last durable state, and nothing
//! stored after it. The cost: the image's data in memory once more (the cache), and each
//! persistence point's bytes copied once more.
//!
//! Host space: the image is sparse. A store through a shared mapping into a page the host has
//! no room for kills the process with `SIGBUS`, so blocks are [`Image::provision`]ed (host
//! `fallocate`) before they are handed out, and the metadata area at mkfs and mount; a full
//! host is then `ENOSPC` at allocation time.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::FallocateFlags;

use crate::format::codec::{Reader, Writer};
pub use crate::store::superblock::{
    journal_blocks_for, CopyProblem, Superblock, MAX_CHECKPOINT_EXTENTS,
};
use crate::store::superblock::{MAGIC, SUPERBLOCK_BYTES};
use crate::store::windows::{WindowPiece, Windows};

/// Bytes per block.
pub const BLOCK_SIZE: u64 = 4096;
/// On-image format version this build writes (the superblock says it from the first write
/// on). Version 3 added the journal's `Grow` record.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this build reads: a version-2 image is one whose journal holds
/// no `Grow` records, which this build replays as it is, and writes as version 3.
pub const OLDEST_FORMAT_VERSION: u32 = 2;
const OWNER_NOTE_OFFSET: u64 = 2048;
/// The byte after the owner note's mount point when that mount was detached (0 otherwise).
const DETACHED_MARK: u8 = 0xde;
/// Smallest image `mkfs` accepts.
pub const MIN_IMAGE_BYTES: u64 = 4 << 20;

/// Why an image could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O error on the image file.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a pinfs image (or not one this build can read).
    #[error("{path}: {problem}")]
    Invalid {
        /// The image.
        path: PathBuf,
        /// The problem, with what to do about it.
        problem: String,
    },
    /// Another daemon holds the image.
    #[error("{path}: the image is in use by {holder}; unmount it first (`umount {mount}`)")]
    Busy {
        /// The image.
        path: PathBuf,
        /// Who holds it.
        holder: String,
        /// Where it is mounted, if known.
        mount: String,
    },
    /// A daemon whose mount was detached (`umount -l`) still holds the image: files on the
    /// detached mount stay open, and the image is released when the last of them closes.
    #[error("{path}: the image is still in use by a detached mount with open files (pinfs process {pid}, detached from {mount}); it is released when the last file open on it is closed, or at once by `kill {pid}` (those files then fail with ENOTCONN)")]
    BusyDetached {
        /// The image.
        path: PathBuf,
        /// The daemon holding it.
        pid: u32,
        /// Where it was mounted.
        mount: String,
    },
}

/// An open, mapped, locked image.
pub struct Image {
    path: PathBuf,
    /// The file the mapping maps: the image file, or with a volatile cache the cache.
    file: File,
    /// With a volatile cache: the image file (locked), which holds only what was made durable.
    durable: Option<Durable>,
    map: MmapRaw,
    len: u64,
    windows: Windows,
    /// Superblock copies that check out by their checksum but not by their contents.
    damaged_copies: Vec<String>,
    /// False when the damage leaves no way to tell which superblock is right.
    repairable: bool,
    /// The copy that checked out, when a newer damaged copy was chosen over it.
    fallback: Option<Superblock>,
    /// Called at the start of every persistence point (see [`Image::set_persist_hook`]).
    persist_hook: OnceLock<PersistHook>,
}

/// What [`Image::set_persist_hook`] installs: called with the image at the start of every
/// persistence point, before any byte of it reaches the image file.
pub type PersistHook = Box<dyn Fn(&Image) + Send + Sync>;

/// The image file behind a volatile cache.
struct Durable {
    /// The image file, open for reading and writing, holding the image's lock.
    file: File,
    /// The power was cut ([`Image::cut_power`]): nothing more reaches the file.
    cut: AtomicBool,
}

impl Durable {
    fn check(&self) -> io::Result<&File> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(io::Error::other(
                "the power was cut: nothing more reaches the image file",
            ));
        }
        Ok(&self.file)
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn invalid(path: &Path, problem: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Parses sizes like `4096`, `64M`, `4G`, `1T` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("size '{s}': unknown unit '{c}' (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size '{s}' is not a number with an optional K/M/G/T unit"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut u).is_ok() {
            return u;
        }
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    u.copy_from_slice(&t.to_le_bytes());
    u
}

impl Image {
    /// Creates (or, with `force`, re-formats) an image of `size` bytes: sparse, with an empty
    /// journal and no checkpoint. Refuses to overwrite a file that is not a pinfs image, and a
    /// pinfs image unless `force`.
    pub fn create(path: &Path, size: u64, force: bool) -> Result<Superblock, ImageError> {
        if size < MIN_IMAGE_BYTES {
            return Err(invalid(
                path,
                format!("size {size} is below the minimum of {MIN_IMAGE_BYTES} bytes (4M)"),
            ));
        }
        if size > i64::MAX as u64 {
            return Err(invalid(
                path,
                format!(
                    "size {size} is above the largest file Linux can have ({} bytes, 8E)",
                    i64::MAX
                ),
            ));
        }
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(invalid(
                    path,
                    "exists and is not a regular file; refusing to format it",
                ));
            }
            if meta.len() > 0 {
                let is_pinfs = Self::peek_magic(path).unwrap_or(false);
                if !is_pinfs {
                    return Err(invalid(path, "exists and is not a pinfs image; refusing to overwrite it (remove it first)"));
                }
                if !force {
                    return Err(invalid(path, "already holds a pinfs image; pass --force to re-format it (all its data is lost)"));
                }
            }
        }
        let total_blocks = size / BLOCK_SIZE;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path, "cannot create"))?;
        Self::try_lock(&file, path)?;
        // Shares the open file description, and so the lock, until the cleanup below is done.
        let locked = file.try_clone().map_err(io_err(path, "cannot create"))?;
        // Whether the host filesystem takes a file of this size (EFBIG), found out before
        // an old image is emptied: a refused re-format leaves it as it was.
        let len = file.metadata().map_or(0, |m| m.len());
        if total_blocks * BLOCK_SIZE > len {
            if let Err(e) = file.set_len(total_blocks * BLOCK_SIZE) {
                let _ = file.set_len(len);
                if !existed {
                    let _ = std::fs::remove_file(path);
                }
                return Err(io_err(path, "cannot size")(e));
            }
        }
        Self::format(path, file, total_blocks).inspect_err(|_| {
            // A failed mkfs leaves no file that is not an image: the file it made goes, and
            // one it re-formatted (whose old contents are gone already) is left empty, so
            // that a later mkfs takes it without --force.
            if existed {
                let _ = locked.set_len(0);
            } else {
                let _ = std::fs::remove_file(path);
            }
            drop(locked);
        })
    }

    /// Sizes a locked, new or re-formatted image file and writes an empty filesystem into it.
    fn format(path: &Path, file: File, total_blocks: u64) -> Result<Superblock, ImageError> {
        file.set_len(0).map_err(io_err(path, "cannot truncate"))?;
        file.set_len(total_blocks * BLOCK_SIZE)
            .map_err(io_err(path, "cannot size"))?;
        let journal_blocks = journal_blocks_for(total_blocks);
        let sb = Superblock {
            total_blocks,
            journal_start: 2,
            journal_blocks,
            generation: 1,
            journal_seq: 1,
            checkpoint_len: 0,
            checkpoint_crc: 0,
            checkpoint_extents: Vec::new(),
            clean: true,
            uuid: random_uuid(),
        };
        let img = Image::map(path, file)?;
        // The superblocks and the journal are stored into through the mapping from the first
        // mount on: the host backs them now, or mkfs fails here with its ENOSPC.
        img.provision_new(0, sb.data_start() * BLOCK_SIZE)
            .map_err(io_err(
                path,
                "cannot allocate the metadata area on the host",
            ))?;
        img.write_superblock(&sb)
            .map_err(io_err(path, "cannot write the superblock"))?;
        Ok(sb)
    }

    fn peek_magic(path: &Path) -> io::Result<bool> {
        use std::io::Read;
        let mut b = [0u8; 8];
        let mut f = File::open(path)?;
        Ok(f.read_exact(&mut b).is_ok() && &b == MAGIC)
    }

    fn map(path: &Path, file: File) -> Result<Image, ImageError> {
        let len = file.metadata().map_err(io_err(path, "cannot stat"))?.len();
        // The mapping is shared: stores reach the file (the emulated persistent memory).
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .map_err(io_err(path, "cannot map"))?;
        Ok(Image {
            path: path.to_path_buf(),
            file,
            durable: None,
            map,
            len,
            windows: Windows::default(),
            damaged_copies: Vec::new(),
            repairable: true,
            fallback: None,
            persist_hook: OnceLock::new(),
        })
    }

    /// Takes the image lock if it is free (held while `file` stays open).
    fn lock_now(file: &File) -> bool {
        rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
    }

    /// Waits up to `wait` until no daemon holds the image at `path` (a daemon releases it
    /// only after writing its last checkpoint, some time after `umount` returns). True when
    /// the image is free.
    pub fn wait_until_free(path: &Path, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if File::open(path).is_ok_and(|f| Self::lock_now(&f)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_lock(file: &File, path: &Path) -> Result<(), ImageError> {
        if Self::lock_now(file) {
            return Ok(());
        }
        if let Some((pid, mount)) = Self::read_detached_note(path) {
            return Err(ImageError::BusyDetached {
                path: path.to_path_buf(),
                pid,
                mount,
            });
        }
        let (holder, mount) = Self::read_owner_note(path);
        Err(ImageError::Busy {
            path: path.to_path_buf(),
            holder,
            mount,
        })
    }

    /// The owner note's pid and mount point when it says the mount was detached and that
    /// process still runs (a note left by a daemon that is gone says nothing about whoever
    /// took the lock since, before writing its own).
    fn read_detached_note(path: &Path) -> Option<(u32, String)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = vec![0u8; 1024];
        let mut f = File::open(path).ok()?;
        f.seek(SeekFrom::Start(OWNER_NOTE_OFFSET)).ok()?;
        f.read_exact(&mut buf).ok()?;
        let mut r = Reader::new(&buf);
        let (pid, mnt, mark) = (r.u32().ok()?, r.bytes(1000).ok()?, r.u8().ok()?);
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        (pid != 0 && mark == DETACHED_MARK && alive)
            .then(|| (pid, String::from_utf8_lossy(&mnt).into()))
    }

    fn read_owner_note(path: &Path) -> (String, String) {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = vec![0u8; 1024];
        let note = File::open(path).and_then(|mut f| {
            f.seek(SeekFrom::Start(OWNER_NOTE_OFFSET))?;
            f.read_exact(&mut buf)
        });
        if note.is_ok() {
            let mut r = Reader::new(&buf);
            if let (Ok(pid), Ok(mnt)) = (r.u32(), r.bytes(1000)) {
                if pid != 0 {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let mnt = String::from_utf8_lossy(&mnt).into_owned();
                    return (
                        format!("process {pid} ({}) mounted at {mnt}", comm.trim()),
                        mnt,
                    );
                }
            }
        }
        (
            "another process (no owner note)".into(),
            "MOUNTPOINT".into(),
        )
    }

    /// Opens and locks an existing image and reads its current superblock. When the lock is
    /// taken, retries for `lock_wait` (a daemon that was just unmounted may still be exiting)
    /// before giving up with [`ImageError::Busy`].
    pub fn open(path: &Path, lock_wait: Duration) -> Result<(Image, Superblock), ImageError> {
        let meta = std::fs::metadata(path).map_err(io_err(path, "cannot open image"))?;
        if !meta.is_file() {
            return Err(invalid(
                path,
                "is not a regular file; a pinfs image is a file made by `pinfs mkfs`",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "cannot open image"))?;
        let deadline = Instant::now() + lock_wait;
        loop {
            match Self::try_lock(&file, path) {
                Ok(()) => break,
                Err(e @ (ImageError::Busy { .. } | ImageError::BusyDetached { .. }))
                    if Instant::now() >= deadline =>
                {
                    return Err(e)
                }
                Err(ImageError::Busy { .. } | ImageError::BusyDetached { .. }) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e),
            }
        }
        if meta.len() < 2 * BLOCK_SIZE {
            if Self::peek_magic(path).unwrap_or(false) {
                return Err(invalid(
                    path,
                    format!(
                        "image is truncated ({} bytes); restore it from a copy",
                        meta.len()
                    ),
                ));
            }
            return Err(invalid(path, "is not a pinfs image (too small, no pinfs magic); create one with `pinfs mkfs IMAGE --size SIZE`"));
        }
        let mut img = Image::map(path, file)?;
        let mut copies: Vec<Superblock> = Vec::new();
        let mut torn = Vec::new();
        let mut damaged: Vec<(&str, String, Option<Box<Superblock>>)> = Vec::new();
        let mut magic_seen = false;
        for b in 0..2u64 {
            let name = ["A", "B"][b as usize];
            let mut buf = vec![0u8; SUPERBLOCK_BYTES];
            img.read(b * BLOCK_SIZE, &mut buf);
            match Superblock::decode(&buf) {
                Ok(Some(sb)) => {
                    magic_seen = true;
                    copies.push(sb)
                }
                Ok(None) => {}
                Err(CopyProblem::Torn(p)) => {
                    magic_seen = true;
                    torn.push(format!("superblock {name}: {p}"))
                }
                Err(CopyProblem::Damaged { problem, sb }) => {
                    magic_seen = true;
                    damaged.push((name, problem, sb))
                }
            }
        }
        if !magic_seen {
            return Err(invalid(path, "is not a pinfs image (no pinfs magic in either superblock); create one with `pinfs mkfs IMAGE --size SIZE`"));
        }
        if let [a, b] = &copies[..] {
            if !a.same_layout(b) {
                img.damaged_copies.push(format!(
                    "superblocks A and B disagree on the layout ({} and {} blocks, journals of {} and {} blocks, or their filesystem ids), and either may be the damaged one",
                    a.total_blocks, b.total_blocks, a.journal_blocks, b.journal_blocks
                ));
                img.repairable = false;
            }
        }
        let Some(mut sb) = copies.into_iter().max_by_key(|s| s.generation) else {
            let problems: Vec<String> = damaged
                .iter()
                .map(|(name, p, _)| format!("superblock {name}: {p}"))
                .chain(torn)
                .collect();
            return Err(invalid(path, format!("{}; run `pinfs fsck --repair` only if you have a copy, the superblocks cannot be rebuilt", problems.join("; "))));
        };
        for (name, problem, copy) in damaged {
            // A copy newer than the one that checks out keeps the pointer to the current
            // checkpoint; the layout never changes after mkfs, so it comes from the good copy
            // (and the checkpoint's checksum then vouches for the rest).
            let salvaged = copy
                .filter(|c| c.generation > sb.generation)
                .map(|c| Superblock {
                    total_blocks: sb.total_blocks,
                    journal_start: sb.journal_start,
                    journal_blocks: sb.journal_blocks,
                    uuid: sb.uuid,
                    ..*c
                })
                .filter(|c| c.check_geometry().is_ok());
            let other = if name == "A" { "B" } else { "A" };
            match salvaged {
                Some(s) => {
                    img.damaged_copies.push(format!(
                        "superblock {name}: {problem} (its layout is taken from superblock {other})"
                    ));
                    img.fallback = Some(std::mem::replace(&mut sb, s));
                }
                None => img.damaged_copies.push(format!(
                    "superblock {name}: {problem} (superblock {other} is used)"
                )),
            }
        }
        let size = sb.total_blocks.checked_mul(BLOCK_SIZE);
        if size.is_none_or(|s| s > img.len) {
            return Err(invalid(path, format!(
                "image is truncated: the superblock says {} blocks of {BLOCK_SIZE} bytes, the file has {} bytes; restore it from a copy",
                sb.total_blocks,
                img.len
            )));
        }
        Ok((img, sb))
    }

    /// Damage [`Image::open`] found in the superblocks and worked around: copies whose
    /// checksum matches but whose contents are impossible, and copies that disagree. pinfs
    /// never writes these (a torn store fails its checksum instead), so fsck reports them as
    /// errors and mount refuses the image.
    pub fn damaged_superblocks(&self) -> &[String] {
        &self.damaged_copies
    }

    /// Can `fsck --repair` rewrite the superblocks from the one [`Image::open`] chose? False
    /// when two copies that check out disagree on the layout: either may be the damaged one.
    pub fn superblocks_repairable(&self) -> bool {
        self.repairable
    }

    /// The older copy that checks out, when [`Image::open`] chose a newer damaged copy with
    /// the layout taken from it: what fsck falls back to if the damaged copy's checkpoint
    /// does not load.
    pub fn superblock_fallback(&self) -> Option<&Superblock> {
        self.fallback.as_ref()
    }

    /// The image path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records who holds the image (see the module docs).
    pub fn write_owner_note(&self, pid: u32, mountpoint: &str) {
        self.write_note(pid, mountpoint, 0);
    }

    /// Records that the holder's mount was detached while files on it stay open (a mount
    /// refused meanwhile says so).
    pub fn write_owner_note_detached(&self, pid: u32, mountpoint: &str) {
        self.write_note(pid, mountpoint, DETACHED_MARK);
    }

    fn write_note(&self, pid: u32, mountpoint: &str, mark: u8) {
        let mut w = Writer::new();
        w.u32(pid)
            .bytes(&mountpoint.as_bytes()[..mountpoint.len().min(1000)])
            .u8(mark);
        self.write(OWNER_NOTE_OFFSET, &w.buf);
        // The note is for other processes, which read the image file: past a volatile cache
        // it goes there at once (it is not filesystem state, and a power cut does not stop it).
        if let Some(d) = &self.durable {
            let _ = d.file.write_all_at(&w.buf, OWNER_NOTE_OFFSET);
        }
    }

    /// Writes `sb` into the copy its generation selects (odd: A, even: B), so the other copy
    /// stays intact if this store is torn.
    ///
    /// The copy is durable on the host when this returns `Ok`: everything stored before it
    /// (journal, checkpoint, data) that the caller flushed is ordered before it.
    pub fn write_superblock(&self, sb: &Superblock) -> io::Result<()> {
        let bytes = sb.encode();
        let off = (sb.generation % 2) * BLOCK_SIZE;
        self.write(off, &bytes);
        self.flush(off, BLOCK_SIZE)
    }

    fn check_range(&self, off: u64, len: usize) {
        assert!(
            off.checked_add(len as u64).is_some_and(|e| e <= self.len),
            "image access {off}+{len} outside the {}-byte image",
            self.len
        );
    }

    /// Copies bytes out of the image.
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        self.check_range(off, buf.len());
        // SAFETY: the range lies inside the mapping (checked above), which lives as long as
        // `self`. Raw copies form no Rust reference to the mapped bytes, which pin holders may
        // write concurrently (as a device would); concurrent stores by the daemon itself to
        // the same file range are excluded by the inode locks.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(off as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    }

    /// Copies bytes into the image.
    pub fn write(&self, off: u64, data: &[u8]) {
        self.check_range(off, data.len());
        // SAFETY: as in `read`; the mapping is writable and shared.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(off as usize),
                data.len(),
            )
        }
    }

    /// Stores zeros.
    pub fn zero(&self, off: u64, len: u64) {
        self.check_range(off, len as usize);
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(off as usize), 0, len as usize) }
    }

    /// Returns whole blocks to the host as a hole: they read as zeros afterwards, in every
    /// mapping. Falls back to storing zeros where the host cannot punch.
    pub fn discard(&self, off: u64, len: u64) {
        self.check_range(off, len as usize);
        let punched = rustix::fs::fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            off,
            len,
        );
        if let Some(f) = self.durable.as_ref().and_then(|d| d.check().ok()) {
            self.persistence_point();
            // Freed blocks are free in the durable state too (a free waits for the journal
            // entry that makes it to be durable): they must not keep an old file's bytes
            // there, where a crash could show them to the block's next owner.
            let r = rustix::fs::fallocate(
                f,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                off,
                len,
            );
            if r.is_err() {
                let zeros = vec![0u8; len.min(1 << 20) as usize];
                let mut at = off;
                while at < off + len {
                    let n = (off + len - at).min(zeros.len() as u64) as usize;
                    if f.write_all_at(&zeros[..n], at).is_err() {
                        break;
                    }
                    at += n as u64;
                }
            }
        }
        if punched.is_err() {
            // A host that cannot punch (ext2, ...): zeros through the file, not the mapping,
            // so that a hole met on a full host is an error here (it reads as zeros anyway,
            // which is all a freed block needs), never a SIGBUS.
            if let Err(e) = self.zero_file(off, len) {
                tracing::debug!(offset = off, len, "zeroing freed blocks: {e}");
            }
        }
        // SAFETY: the range is inside our live shared mapping of `self.file` (checked above),
        // and freed blocks are written by nobody.
        unsafe {
            self.windows
                .discard(self.map.as_mut_ptr(), &self.file, off, len)
        };
    }

    /// Makes whole blocks that stay in use read as zeros, durably, cheaply however many
    /// they are: the image file's range is zeroed by the host (`FALLOC_FL_ZERO_RANGE`, which
    /// keeps its space; zeros written where the host cannot), a volatile cache's range is
    /// punched (memory, given back until stored into again), and the file synced. For
    /// blocks nobody stores into meanwhile (a mount's set-up).
    pub fn zero_blocks_durably(&self, ranges: &[(u64, u64)]) -> io::Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        self.persistence_point();
        for &(off, len) in ranges {
            self.check_range(off, len as usize);
            debug_assert!(off % BLOCK_SIZE == 0 && len % BLOCK_SIZE == 0);
            let host = match &self.durable {
                Some(d) => {
                    let punched = rustix::fs::fallocate(
                        &self.file,
                        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                        off,
                        len,
                    );
                    if punched.is_err() {
                        self.zero(off, len);
                    }
                    d.check()?
                }
                None => &self.file,
            };
            let zeroed = rustix::fs::fallocate(
                host,
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                off,
                len,
            );
            if zeroed.is_err() {
                let zeros = vec![0u8; len.min(1 << 20) as usize];
                let mut at = off;
                while at < off + len {
                    let n = (off + len - at).min(zeros.len() as u64) as usize;
                    host.write_all_at(&zeros[..n], at).map_err(full_host)?;
                    at += n as u64;
                }
            }
        }
        self.sync_host()
    }

    /// Makes `off..off+len` durable on the host: the parts behind DAX windows are written
    /// into the image file and the file is `fdatasync`ed; the rest is `msync(MS_SYNC)`ed
    /// (which the kernel implements as a data sync of that file range: it writes the pages,
    /// the host metadata they need, and flushes the device's cache). The first error is
    /// returned after every part was tried; the caller reports it (`EIO`) and keeps the
    /// range dirty.
    pub fn flush(&self, off: u64, len: u64) -> io::Result<()> {
        self.flush_ranges(&[(off, len)])
    }

    /// Makes each `(offset, len)` of `ranges` durable as [`Image::flush`] does one: a single
    /// persistence point, and one host sync for all of them where one is needed.
    pub fn flush_ranges(&self, ranges: &[(u64, u64)]) -> io::Result<()> {
        let ranges: Vec<(u64, u64)> = ranges
            .iter()
            .filter_map(|&(off, len)| {
                let start = off & !(BLOCK_SIZE - 1);
                let end = off.saturating_add(len).min(self.len);
                (end > start).then_some((start, end - start))
            })
            .collect();
        if ranges.is_empty() {
            return Ok(());
        }
        self.persistence_point();
        let mut failed = None;
        let mut rest = Vec::new();
        let mut windowed = 0;
        for &(start, len) in &ranges {
            // SAFETY: the range is inside our live mapping (clamped to its length above).
            match unsafe {
                self.windows
                    .write_back(self.map.as_ptr(), &self.file, start, len)
            } {
                Ok(d) => {
                    windowed += d.windowed;
                    rest.extend(d.rest);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if windowed > 0 {
            if let Err(e) = self.sync_host() {
                failed.get_or_insert(e);
            }
        }
        if self.durable.is_some() {
            // The cache is memory: the ranges are durable once they are in the image file.
            if failed.is_none() {
                let copied = ranges
                    .iter()
                    .try_for_each(|&(start, len)| self.persist(start, len));
                if let Err(e) = copied.and_then(|()| self.sync_host()) {
                    failed.get_or_insert(e);
                }
            }
        } else {
            for (s, l) in rest {
                if let Err(e) = self.map.flush_range(s as usize, l as usize) {
                    tracing::error!(image = %self.path.display(), offset = s, len = l, "msync failed: {e}");
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// With a volatile cache: copies `off..off+len` as the mapping shows it (DAX windows
    /// included) into the image file (not durable until [`Image::sync_host`]). Nothing
    /// without one.
    fn persist(&self, off: u64, len: u64) -> io::Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let f = d.check()?;
        let end = off.saturating_add(len).min(self.len);
        let mut buf = vec![0u8; (end.saturating_sub(off)).min(1 << 20) as usize];
        let mut at = off;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            self.read(at, &mut buf[..n]);
            f.write_all_at(&buf[..n], at).map_err(full_host)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Makes everything the mapping holds durable: with a volatile cache, every byte of the
    /// cache that holds data, and what DAX windows show, is copied into the image file, which
    /// is then synced (the state a clean unmount leaves); without one, the image file is
    /// synced (every store through the shared mapping is in it already).
    pub fn persist_all(&self) -> io::Result<()> {
        if self.durable.is_some() {
            self.persistence_point();
            let mut ranges = Vec::new();
            let mut at = 0u64;
            while at < self.len {
                let data = match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(at)) {
                    Ok(d) => d,
                    Err(rustix::io::Errno::NXIO) => break,
                    Err(e) => return Err(e.into()),
                };
                let hole = rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Hole(data))
                    .map_err(io::Error::from)?
                    .min(self.len);
                ranges.push((data, hole - data));
                at = hole;
            }
            ranges.extend(self.windows.list());
            for (s, l) in ranges {
                self.persist(s, l)?;
            }
        }
        self.sync_host()
    }

    /// Switches to a volatile cache (see the module docs): the image's contents are copied
    /// into a memfd, which is mapped in place of the image file. Called on a freshly opened
    /// image (no DAX window yet). The image file stays open, with its lock.
    pub fn make_volatile(&mut self) -> Result<(), ImageError> {
        assert!(
            self.windows.list().is_empty(),
            "a volatile cache is made before any window"
        );
        let fail = |what: &'static str| io_err(&self.path, what);
        let cache: File =
            rustix::fs::memfd_create("pinfs-volatile-cache", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(io::Error::from)
                .map_err(fail("cannot make the volatile cache"))?
                .into();
        cache
            .set_len(self.len)
            .map_err(fail("cannot size the volatile cache"))?;
        // Only the image's data: its holes stay holes (zeros) in the cache.
        let mut at = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        while at < self.len {
            let data = match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(at)) {
                Ok(d) => d,
                Err(_) => break,
            };
            let hole = rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Hole(data))
                .map(|h| h.min(self.len))
                .unwrap_or(self.len);
            let mut p = data;
            while p < hole {
                let n = (hole - p).min(buf.len() as u64) as usize;
                self.file
                    .read_exact_at(&mut buf[..n], p)
                    .map_err(fail("cannot read the image into the volatile cache"))?;
                cache
                    .write_all_at(&buf[..n], p)
                    .map_err(fail("cannot fill the volatile cache"))?;
                p += n as u64;
            }
            at = hole;
        }
        let map = MmapOptions::new()
            .len(self.len as usize)
            .map_raw(&cache)
            .map_err(fail("cannot map the volatile cache"))?;
        let image = std::mem::replace(&mut self.file, cache);
        self.map = map;
        self.durable = Some(Durable {
            file: image,
            cut: AtomicBool::new(false),
        });
        Ok(())
    }

    /// Installs `hook`, called with the image at the start of every persistence point past
    /// a volatile cache ([`Image::flush`], [`Image::write_file`], window write-backs,
    /// [`Image::persist_all`], and the punch of freed blocks in the image file), before any
    /// byte of it reaches the image file, and never after [`Image::cut_power`]: what
    /// [`Image::read_durable`] shows then is the durable state, and where the mapping
    /// differs from it, the stores not yet durable. For the crash-state explorer
    /// ([`crate::fuzzer::crashes`]); one hook per image (false if one is installed). With
    /// none, a persistence point pays one atomic load.
    pub fn set_persist_hook(&self, hook: PersistHook) -> bool {
        self.persist_hook.set(hook).is_ok()
    }

    fn persistence_point(&self) {
        if let Some(hook) = self.persist_hook.get() {
            if self
                .durable
                .as_ref()
                .is_some_and(|d| !d.cut.load(Ordering::SeqCst))
            {
                hook(self);
            }
        }
    }

    /// With a volatile cache: copies bytes out of the image file (the durable state), not
    /// the mapping. `Ok(false)` without one.
    pub fn read_durable(&self, off: u64, buf: &mut [u8]) -> io::Result<bool> {
        self.check_range(off, buf.len());
        match &self.durable {
            Some(d) => d.file.read_exact_at(buf, off).map(|()| true),
            None => Ok(false),
        }
    }

    /// Whether a volatile cache stands between the mapping and the image file.
    pub fn is_volatile(&self) -> bool {
        self.durable.is_some()
    }

    /// A power cut: from now on nothing reaches the image file, which keeps the last durable
    /// state. Only with a volatile cache (false without one: every store is in the image
    /// file already, as the host's page cache holds it).
    pub fn cut_power(&self) -> bool {
        match &self.durable {
            Some(d) => {
                d.cut.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The image file's identity (device and inode numbers), whatever the mapping maps.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let md = self.host_file().metadata()?;
        Ok((md.dev(), md.ino()))
    }

    /// The file that holds the image on the host: the image file (behind the cache, if any).
    fn host_file(&self) -> &File {
        self.durable.as_ref().map_or(&self.file, |d| &d.file)
    }

    /// `fdatasync` of the image file: whatever was written into it (by `pwrite` or through
    /// the mapping) is on the device, with the host metadata needed to read it back.
    pub fn sync_host(&self) -> io::Result<()> {
        let file = match &self.durable {
            Some(d) => d.check()?,
            None => &self.file,
        };
        file.sync_data().inspect_err(
            |e| tracing::error!(image = %self.path.display(), "fdatasync of the image failed: {e}"),
        )
    }

    /// Has the host allocate `off..off+len` of the image file (`fallocate` mode 0), so that
    /// later stores through the mapping cannot meet a full host filesystem: a store into an
    /// unbacked page of a shared mapping is `SIGBUS`, while this answers `ENOSPC`. Blocks
    /// the host already backs are left as they are. A host filesystem that cannot
    /// preallocate is accepted (stores there keep the host's behaviour).
    pub fn provision(&self, off: u64, len: u64) -> io::Result<()> {
        match self.fallocate(off, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            r => r,
        }
    }

    /// [`Image::provision`] for blocks that hold nothing yet (just allocated, or a new
    /// image's metadata area): where the host cannot preallocate (ext2, some network and
    /// FUSE filesystems), zeros are written through the file instead, which allocates them
    /// the same way and answers `ENOSPC` the same way. (Free blocks read as zeros, so this
    /// changes no byte.)
    pub fn provision_new(&self, off: u64, len: u64) -> io::Result<()> {
        match self.fallocate(off, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.zero_file(off, len),
            r => r,
        }
    }

    /// Stores zeros into `off..off+len` of the image file with `pwrite` (not durable).
    fn zero_file(&self, off: u64, len: u64) -> io::Result<()> {
        self.check_range(off, len as usize);
        // Host space is the image file's; a volatile cache is memory.
        let file = self.host_file();
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut at = off;
        while at < off + len {
            let n = (off + len - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at).map_err(full_host)?;
            at += n as u64;
        }
        Ok(())
    }

    /// `fallocate` mode 0 of `off..off+len`; a host quota is a full host.
    fn fallocate(&self, off: u64, len: u64) -> io::Result<()> {
        self.check_range(off, len as usize);
        if len == 0 {
            return Ok(());
        }
        loop {
            match rustix::fs::fallocate(self.host_file(), FallocateFlags::empty(), off, len) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(full_host(e.into())),
            }
        }
    }

    /// Writes back into the image file the parts of `off..off+len` that are behind DAX
    /// windows (stores by holders, which the filesystem does not see), and nothing else.
    /// Not durable until [`Image::sync_host`].
    /// Returns the bytes written (0: no window covers the range, nothing to sync).
    pub fn write_back_windowed(&self, off: u64, len: u64) -> io::Result<u64> {
        self.check_range(off, len as usize);
        // SAFETY: the range is inside our live mapping (checked above).
        let done = unsafe {
            self.windows
                .write_back(self.map.as_ptr(), &self.file, off, len)
        }?;
        if self.durable.is_some() && done.windowed > 0 {
            // Past a volatile cache, the windowed pieces (the range but its `rest`) go on
            // into the image file.
            self.persistence_point();
            let mut cursor = off;
            for &(s, l) in done.rest.iter().chain(std::iter::once(&(off + len, 0))) {
                if s > cursor {
                    self.persist(cursor, s - cursor)?;
                }
                cursor = s + l;
            }
        }
        Ok(done.windowed)
    }

    /// Writes bytes into the image *file* and makes them durable (`pwrite`, `fdatasync`),
    /// bypassing the mapping (and so any DAX window over those blocks): for checkpoints,
    /// which must reach the file even where a window still covers blocks that were pinned
    /// once. A full host answers `ENOSPC` here, never `SIGBUS`.
    pub fn write_file(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        self.check_range(off, data.len());
        self.persistence_point();
        self.file.write_all_at(data, off)?;
        if let Some(d) = &self.durable {
            d.check()?.write_all_at(data, off).map_err(full_host)?;
        }
        self.sync_host()
    }

    /// Direct access to `off..off+len` (whole blocks) for a pin holder: the DAX window pieces
    /// that cover it. The caller holds the lock of the inode that owns the blocks.
    pub fn window(&self, off: u64, len: u64) -> std::io::Result<Vec<WindowPiece>> {
        self.check_range(off, len as usize);
        // SAFETY: the range is inside our live shared mapping (checked above); the caller
        // excludes concurrent writes to it by holding the owning inode's lock.
        unsafe {
            self.windows
                .open(self.map.as_mut_ptr(), &self.file, off, len)
        }
    }

    /// A pin of `off..off+len` (whole blocks) is gone: drops its references on the DAX
    /// windows there; pages no pin covers any more are detached (their contents go back into
    /// the image file; what holders still map of them reaches nothing). Returns the parts that
    /// stay attached because their contents could not be saved. The caller holds the lock of
    /// the inode that owns the blocks, if one does, and still holds their allocator pins.
    pub fn unwindow(&self, off: u64, len: u64) -> Vec<(u64, u64)> {
        self.check_range(off, len as usize);
        // SAFETY: the range is inside our live shared mapping of `self.file` (checked above);
        // the caller excludes concurrent writes to it.
        unsafe {
            self.windows
                .release(self.map.as_mut_ptr(), &self.file, off, len)
        }
    }

    /// Cuts the holders given windows over `off..off+len` (whole blocks) off from them, the
    /// blocks staying where they are ([`crate::store::windows::Windows::rekey`]); false if some page could
    /// not be. The caller holds the lock of the inode that owns the blocks, if one does.
    pub fn rekey_windows(&self, off: u64, len: u64) -> bool {
        self.check_range(off, len as usize);
        // SAFETY: the range is inside our live mapping (checked above); the caller excludes
        // concurrent writes to it.
        unsafe { self.windows.rekey(self.map.as_mut_ptr(), off, len) }
    }

    /// Cuts every holder off from every DAX window (see [`Image::rekey_windows`]), at a
    /// shutdown: nothing a holder stores from then on reaches the image. False if some page
    /// could not be.
    pub fn cut_off_windows(&self) -> bool {
        let mut all = true;
        for (s, l) in self.windows.list() {
            // SAFETY: an attached run lies inside our live mapping; the filesystem is shut
            // down, so the daemon stores into none of it any more.
            all &= unsafe { self.windows.rekey(self.map.as_mut_ptr(), s, l) };
        }
        all
    }

    /// How many memfds the daemon keeps open for DAX windows (for status and tests).
    pub fn window_descriptors(&self) -> usize {
        self.windows.descriptors()
    }

    /// Brings the image file up to date behind every DAX window, for the blocks `keep` says
    /// are owned (freed blocks must stay zero in the file).
    /// Not durable until [`Image::sync_host`]; the first error is returned after every
    /// window was tried.
    pub fn write_back_windows(&self, keep: impl Fn(u64, u64) -> Vec<(u64, u64)>) -> io::Result<()> {
        let mut failed = None;
        for (s, l) in self.windows.list() {
            for (a, n) in keep(s, l) {
                // SAFETY: a part of an attached run, inside our live mapping.
                if let Err(e) =
                    unsafe { self.windows.write_back(self.map.as_ptr(), &self.file, a, n) }
                {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A new descriptor of the image file (for root holders that ask for the raw image).
    pub fn raw_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty mapping (never for an opened image).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A host quota that ran out is, for the image, a full host: `ENOSPC`.
fn full_host(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EDQUOT) {
        io::Error::from_raw_os_error(libc::ENOSPC)
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::superblock::{MAX_COUNTER, SUPERBLOCK_FIXED_BYTES};

    /// A superblock naming as many checkpoint extents as decoding accepts fits its area
    /// (encoding it must not panic) and decodes back to itself.
    #[test]
    fn a_superblock_with_the_most_checkpoint_extents_fits_and_round_trips() {
        let total_blocks = 1 << 40;
        let sb = Superblock {
            total_blocks,
            journal_start: 2,
            journal_blocks: 256,
            // The largest counters decoding accepts: the encoding's size does not depend on
            // them, and a superblock past them is damage.
            generation: MAX_COUNTER - 1,
            journal_seq: MAX_COUNTER - 1,
            checkpoint_len: MAX_CHECKPOINT_EXTENTS as u64 * BLOCK_SIZE,
            checkpoint_crc: u32::MAX,
            checkpoint_extents: (0..MAX_CHECKPOINT_EXTENTS as u64)
                .map(|k| (1000 + 2 * k, 1))
                .collect(),
            clean: true,
            uuid: [0xff; 16],
        };
        let bytes = sb.encode();
        assert!(bytes.len() <= SUPERBLOCK_BYTES, "{}", bytes.len());
        assert_eq!(
            bytes.len(),
            SUPERBLOCK_FIXED_BYTES + 16 * MAX_CHECKPOINT_EXTENTS
        );
        let mut area = vec![0u8; SUPERBLOCK_BYTES];
        area[..bytes.len()].copy_from_slice(&bytes);
        assert_eq!(Superblock::decode(&area).unwrap(), Some(sb));
    }
}

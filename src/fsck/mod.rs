//! Checking and repairing an image offline: every invariant the filesystem relies on.
//!
//! The checks are one pass, [`examine`], which mount runs too ([`crate::fs::Fs::open`]) and
//! which makes it refuse any image it reports errors for: what fsck rejects never mounts. The
//! one exception is a stored free list that differs from ownership: mount never uses it (it
//! rebuilds the allocator from what owns blocks), so it fixes that itself.
//!
//! What is checked: the superblocks (a copy whose checksum matches but whose contents are
//! impossible, copies that disagree on the layout; a copy that fails its checksum is a torn
//! store, not damage) and that the checkpoint loads and the journal replays, each record
//! within the geometry; the root is a directory; inode numbers, file sizes and file blocks
//! within their bounds; no directory entries outside directories, no symlink target outside
//! symlinks; every directory entry names an existing inode of the kind it says; every
//! directory has one name, its `..` matches, and it leads up to the root; link counts; lost
//! inodes (links but no name); every image block is owned at most once and lies in the data
//! area; the allocator's free list is exactly the blocks nobody owns; the allocator's own
//! invariants; symlink and directory sizes.
//!
//! Orphans (no links, but still open when the daemon stopped) are not errors: like the
//! journal, they are crash recovery, which mount performs; they are counted, and `--repair`
//! frees them. After an unclean shutdown the stored free list is not compared: busy blocks
//! of holders that died with the daemon are in it as used, and mount rebuilds the allocator
//! from ownership instead ([`checkpoint::load`]).
//!
//! What `--repair` does: frees orphans, moves lost inodes to `/lost+found`, fixes link
//! counts, sizes and `..`, drops entries that name missing inodes, drops the later owner's
//! mapping of a block owned twice or outside the data area, rebuilds the allocator from the
//! extent maps, after an unclean shutdown zeros the bytes past each file's end (as mount
//! would: the checkpoint being clean, the next mount does not), writes the result as a new
//! clean checkpoint, and rewrites a damaged superblock copy from the one that checks out.
//! It never makes an image worse: when it
//! cannot tell which superblock is right, or the checkpoint does not load, it changes nothing
//! and fails. Exit codes follow e2fsck: 0 clean, 1 repaired, 4 errors left (8 from the CLI
//! when the image cannot be checked at all).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use pinfs_allocator::{Allocator, Extent};

use crate::error::FsError;
use crate::format::record::MAX_FILE_BLOCKS;
use crate::log::checkpoint::{self, Loaded};
use crate::meta::inode::{Inode, Kind, Time, MAX_FILE_SIZE, ROOT_INO};
use crate::store::image::{Image, Superblock, BLOCK_SIZE};

mod passes;
mod repair;
mod report;

pub use passes::examine;
pub use report::{failure_json, Report};

/// How long fsck waits for a daemon that is finishing its unmount to release the image.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Checks (and with `repair`, repairs) the image at `path`. Refuses a mounted image (after
/// [`LOCK_WAIT`], in case the daemon is still writing its final checkpoint). A repair that
/// cannot tell what is right changes nothing and fails.
pub fn check(path: &Path, repair: bool) -> Result<Report, FsError> {
    let (image, mut sb) = Image::open(path, LOCK_WAIT)?;
    if repair && !image.superblocks_repairable() {
        return Err(FsError::Corrupt(format!(
            "{}: {}; nothing was changed",
            path.display(),
            image.damaged_superblocks().join("; ")
        )));
    }
    let mut loaded = match checkpoint::load(&image, &sb) {
        Ok(l) => l,
        Err(e) => {
            // A damaged newer superblock whose checkpoint does not load: the older copy
            // that checks out may still name one that does.
            let older = image
                .superblock_fallback()
                .and_then(|fb| Some((fb.clone(), checkpoint::load(&image, fb).ok()?)));
            let Some((fb, l)) = older else {
                return Err(with_damage(&image, e));
            };
            sb = fb;
            l
        }
    };
    let report = examine(&image, &sb, &mut loaded, repair);
    let freed_orphans = repair && !report.orphans.is_empty();
    if repair && (freed_orphans || !report.repaired.is_empty()) {
        // Rebuild the allocator from ownership as it now stands (after the fixes).
        let mut alloc = checkpoint::allocator_from_owners(&sb, loaded.inodes.values());
        let mut list: Vec<&Inode> = loaded.inodes.values().collect();
        list.sort_by_key(|i| i.ino);
        if !sb.clean {
            // The checkpoint below is clean, so the next mount will not zero what an unclean
            // shutdown may have left past the ends of files (a write whose size was lost):
            // zeroed here, and durable before the checkpoint is.
            let ranges: Vec<(u64, u64)> = list.iter().flat_map(|i| i.past_end()).collect();
            image
                .zero_durably(&ranges)
                .map_err(FsError::host("zeroing bytes past the ends of files"))?;
        }
        checkpoint::write(
            &image,
            &mut sb,
            &mut alloc,
            &mut loaded.journal,
            loaded.next_ino,
            list.into_iter(),
            true,
        )?;
        if !image.damaged_superblocks().is_empty() {
            // The other copy gets the same contents one generation back, so neither copy
            // is the damaged one any more.
            let mut twin = sb.clone();
            twin.generation -= 1;
            image
                .write_superblock(&twin)
                .map_err(FsError::host("writing the repaired superblock copy"))?;
        }
        for e in alloc.free_extents() {
            image.discard(e.start * BLOCK_SIZE, e.len * BLOCK_SIZE);
        }
    }
    Ok(report)
}

/// A load failure, with the superblock damage that may explain it.
pub fn with_damage(image: &Image, e: FsError) -> FsError {
    match e {
        FsError::Corrupt(why) if !image.damaged_superblocks().is_empty() => FsError::Corrupt(
            format!("{why} ({})", image.damaged_superblocks().join("; ")),
        ),
        other => other,
    }
}

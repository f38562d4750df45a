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
//! extent maps, writes the result as a new clean checkpoint, and rewrites a damaged
//! superblock copy from the one that checks out. It never makes an image worse: when it
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

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems found.
    pub errors: Vec<String>,
    /// Problems fixed (with `--repair`).
    pub repaired: Vec<String>,
    /// Inodes in the filesystem.
    pub inodes: usize,
    /// Blocks owned by files.
    pub file_blocks: u64,
    /// Journal transactions replayed.
    pub replayed: usize,
    /// Inodes without links that were still open or referenced when the daemon stopped
    /// (normal after a crash: mount frees them, as does `--repair`; not an error).
    pub orphans: Vec<u64>,
    /// The errors (among `errors`) that mount fixes by itself: a stored free list that
    /// differs from ownership, which mount never uses (it rebuilds the allocator from what
    /// owns blocks). Mount refuses an image for any other error.
    pub fixed_by_mount: Vec<String>,
}

impl Report {
    /// Errors that make mount refuse the image.
    pub fn refused_by_mount(&self) -> Vec<&String> {
        self.errors
            .iter()
            .filter(|e| !self.fixed_by_mount.contains(e))
            .collect()
    }
}

impl Report {
    /// e2fsck-style exit code.
    pub fn exit_code(&self) -> i32 {
        if self.errors.len() > self.repaired.len() {
            4
        } else if !self.repaired.is_empty() {
            1
        } else {
            0
        }
    }

    /// The report as one JSON object (`fsck --json`).
    pub fn to_json(&self, image: &Path) -> String {
        crate::fs::status::to_json(&ReportJson {
            image: image.display().to_string(),
            exit_code: self.exit_code(),
            clean: self.errors.is_empty(),
            inodes: self.inodes,
            file_blocks: self.file_blocks,
            journal_replayed: self.replayed,
            orphans: self.orphans.len(),
            errors: &self.errors,
            repaired: &self.repaired,
        })
    }
}

/// `fsck --json` of an image that could not be checked at all (exit code 8).
pub fn failure_json(image: &Path, error: &str) -> String {
    #[derive(serde::Serialize)]
    struct FailureJson<'a> {
        image: String,
        exit_code: i32,
        error: &'a str,
    }
    crate::fs::status::to_json(&FailureJson {
        image: image.display().to_string(),
        exit_code: 8,
        error,
    })
}

/// `fsck --json`: the report in the form scripts read.
#[derive(serde::Serialize)]
struct ReportJson<'a> {
    image: String,
    exit_code: i32,
    clean: bool,
    inodes: usize,
    file_blocks: u64,
    journal_replayed: usize,
    /// How many (the list is in the text output).
    orphans: usize,
    errors: &'a [String],
    repaired: &'a [String],
}

struct Checker {
    report: Report,
    repair: bool,
}

impl Checker {
    fn problem(&mut self, what: String, fixed: bool) {
        if fixed && self.repair {
            self.report.repaired.push(what.clone());
        }
        self.report.errors.push(what);
    }
}

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

/// The one validation pass fsck and mount share: checks `loaded` (as [`checkpoint::load`]
/// made it from `image`, whose current superblock is `sb`) against every invariant of the
/// module docs and, with `repair`, fixes what it can in `loaded`. Mount refuses an image for
/// which this reports any error but those it fixes itself ([`Report::fixed_by_mount`]);
/// orphans are not errors (mount frees them).
pub fn examine(image: &Image, sb: &Superblock, loaded: &mut Loaded, repair: bool) -> Report {
    let mut c = Checker {
        report: Report {
            replayed: loaded.replayed,
            ..Default::default()
        },
        repair,
    };
    for p in image.damaged_superblocks() {
        c.problem(p.clone(), image.superblocks_repairable());
    }
    let inodes = &mut loaded.inodes;

    // What each inode is on its own: a number that can exist, a size a file can have, no
    // parts of another kind.
    let mut inos: Vec<u64> = inodes.keys().copied().collect();
    inos.sort_unstable();
    for ino in inos {
        if ino == 0 {
            c.problem("inode 0 exists (inode numbers start at 1)".into(), true);
            if repair {
                inodes.remove(&0);
            }
            continue;
        }
        let i = inodes.get_mut(&ino).expect("inode");
        if i.kind == Kind::File && i.size > MAX_FILE_SIZE {
            c.problem(
                format!("inode {ino}: size {} is past the largest file", i.size),
                true,
            );
            if repair {
                i.size = MAX_FILE_SIZE;
            }
        }
        if i.kind != Kind::Dir && !i.dir.is_empty() {
            c.problem(
                format!("inode {ino}: a {:?} holds directory entries", i.kind),
                true,
            );
            if repair {
                i.dir = Default::default();
            }
        }
        if i.kind != Kind::Symlink && !i.target.is_empty() {
            c.problem(
                format!("inode {ino}: a {:?} has a symlink target", i.kind),
                true,
            );
            if repair {
                i.target.clear();
            }
        }
    }

    // Directory entries: targets exist, kinds match, directories have one name.
    let mut refs: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut dir_parent: HashMap<u64, u64> = HashMap::new();
    let dirs: Vec<u64> = inodes
        .values()
        .filter(|i| i.kind == Kind::Dir)
        .map(|i| i.ino)
        .collect();
    for d in dirs {
        let entries: Vec<(Vec<u8>, u64, Kind)> = inodes[&d]
            .dir
            .iter()
            .map(|(n, e)| (n.to_vec(), e.ino, e.kind))
            .collect();
        for (name, ino, kind) in entries {
            let shown = String::from_utf8_lossy(&name).into_owned();
            let Some(tkind) = inodes.get(&ino).map(|t| t.kind) else {
                c.problem(
                    format!("directory {d}: entry '{shown}' names missing inode {ino}"),
                    true,
                );
                if repair {
                    inodes.get_mut(&d).expect("dir").dir.remove(&name);
                }
                continue;
            };
            if tkind != kind {
                c.problem(
                    format!(
                        "directory {d}: entry '{shown}' says {kind:?}, inode {ino} is {tkind:?}"
                    ),
                    true,
                );
                if repair {
                    let dir = &mut inodes.get_mut(&d).expect("dir").dir;
                    dir.remove(&name);
                    dir.insert(&name, ino, tkind);
                }
            }
            if tkind == Kind::Dir {
                if ino == ROOT_INO || dir_parent.contains_key(&ino) {
                    c.problem(
                        format!("directory {ino} has a second name '{shown}' in directory {d}"),
                        true,
                    );
                    if repair {
                        inodes.get_mut(&d).expect("dir").dir.remove(&name);
                    }
                    continue;
                }
                dir_parent.insert(ino, d);
                *subdirs.entry(d).or_default() += 1;
            }
            *refs.entry(ino).or_default() += 1;
        }
    }

    // Orphans and lost inodes.
    let mut lost = Vec::new();
    let mut orphans = Vec::new();
    for i in inodes.values() {
        if i.ino == ROOT_INO {
            continue;
        }
        if refs.get(&i.ino).copied().unwrap_or(0) == 0 {
            // A directory that still holds entries is no leftover of an rmdir (which needs
            // it empty): its entries would be lost with it.
            if i.nlink == 0 && (i.kind != Kind::Dir || i.dir.is_empty()) {
                orphans.push(i.ino);
            } else {
                lost.push(i.ino);
            }
        }
    }
    orphans.sort_unstable();
    lost.sort_unstable();
    // Orphans are crash leftovers that mount frees; with --repair, free them here.
    if repair {
        for ino in &orphans {
            // As mount would: the inode goes, and its blocks are free again.
            if let Some(gone) = inodes.remove(ino) {
                for m in gone.extents.iter() {
                    let _ = loaded.alloc.free(Extent {
                        start: m.image_block,
                        len: m.len,
                    });
                }
            }
        }
    }
    let orphan_set: std::collections::HashSet<u64> = orphans.iter().copied().collect();
    c.report.orphans = orphans;
    if !lost.is_empty() {
        let lf = if repair {
            Some(lost_and_found(inodes, &loaded.next_ino))
        } else {
            None
        };
        if let Some(lf) = lf {
            if lf >= loaded.next_ino {
                loaded.next_ino = lf + 1;
            }
            // A /lost+found that was there already was counted with the root's entries.
            if let std::collections::hash_map::Entry::Vacant(e) = dir_parent.entry(lf) {
                e.insert(ROOT_INO);
                *refs.entry(lf).or_default() += 1;
                *subdirs.entry(ROOT_INO).or_default() += 1;
            }
        }
        for ino in lost {
            let what = if inodes[&ino].nlink == 0 {
                format!("directory {ino} holds entries but has no name")
            } else {
                format!("inode {ino} has links but no name")
            };
            c.problem(what, true);
            if let Some(lf) = lf {
                let kind = inodes[&ino].kind;
                let name = free_name(&inodes[&lf].dir, &format!("#{ino}"));
                inodes
                    .get_mut(&lf)
                    .expect("lost+found")
                    .dir
                    .insert(&name, ino, kind);
                *refs.entry(ino).or_default() += 1;
                if kind == Kind::Dir {
                    dir_parent.insert(ino, lf);
                    *subdirs.entry(lf).or_default() += 1;
                }
            }
        }
    }

    // Link counts, parents, sizes.
    let inos: Vec<u64> = inodes.keys().copied().collect();
    for ino in inos {
        if orphan_set.contains(&ino) {
            continue; // no name, no links: nothing to count or attach
        }
        let i = inodes.get_mut(&ino).expect("inode");
        let want = if i.kind == Kind::Dir {
            2 + subdirs.get(&ino).copied().unwrap_or(0)
        } else {
            refs.get(&ino).copied().unwrap_or(0)
        };
        if i.nlink != want {
            c.problem(
                format!("inode {ino}: link count {} should be {want}", i.nlink),
                true,
            );
            if repair {
                i.nlink = want;
            }
        }
        if i.kind == Kind::Dir {
            // A directory without a name (lost, not repaired) has no parent to compare with.
            let parent = if ino == ROOT_INO {
                Some(ROOT_INO)
            } else {
                dir_parent.get(&ino).copied()
            };
            if let Some(parent) = parent.filter(|&p| p != i.parent) {
                c.problem(
                    format!(
                        "directory {ino}: '..' is {} but its name is in {parent}",
                        i.parent
                    ),
                    true,
                );
                if repair {
                    i.parent = parent;
                }
            }
            if i.size != i.dir.len() as u64 {
                c.problem(
                    format!("directory {ino}: size {} should be {}", i.size, i.dir.len()),
                    true,
                );
                if repair {
                    i.size = i.dir.len() as u64;
                }
            }
        }
        if i.kind == Kind::Symlink && i.size != i.target.len() as u64 {
            c.problem(
                format!(
                    "symlink {ino}: size {} should be {}",
                    i.size,
                    i.target.len()
                ),
                true,
            );
            if repair {
                i.size = i.target.len() as u64;
            }
        }
        if i.kind != Kind::File && i.extents.blocks() > 0 {
            c.problem(
                format!("inode {ino}: a {:?} owns data blocks", i.kind),
                true,
            );
            if repair {
                i.extents = Default::default();
            }
        }
    }

    // Every named directory leads up to the root (a loop of directories does not).
    let mut named: Vec<u64> = dir_parent.keys().copied().collect();
    named.sort_unstable();
    for d in named {
        let (mut at, mut steps) = (d, 0usize);
        while at != ROOT_INO && steps <= dir_parent.len() {
            match dir_parent.get(&at) {
                Some(&p) => at = p,
                None => break, // under a lost directory, reported above
            }
            steps += 1;
        }
        if steps > dir_parent.len() {
            c.problem(
                format!("directory {d} is in a loop of directories, not under the root"),
                true,
            );
            if repair {
                cut_loop(inodes, &mut loaded.next_ino, &mut dir_parent, d);
            }
        }
    }

    // Block ownership: the metadata area, the checkpoint, and each file's mappings.
    let total = sb.total_blocks;
    let mut owners: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // start -> (len, owner ino; 0 = metadata)
    owners.insert(0, (sb.data_start(), 0));
    for &(s, l) in &sb.checkpoint_extents {
        owners.insert(s, (l, 0));
    }
    let mut files: Vec<u64> = inodes.keys().copied().collect();
    files.sort_unstable();
    for ino in files {
        let maps: Vec<_> = inodes[&ino].extents.iter().collect();
        for m in maps {
            let bad_range = m.image_block < sb.data_start()
                || m.image_block.checked_add(m.len).is_none_or(|e| e > total)
                || m.file_block
                    .checked_add(m.len)
                    .is_none_or(|e| e > MAX_FILE_BLOCKS);
            let clash = !bad_range && overlaps(&owners, m.image_block, m.len);
            if bad_range || clash {
                let why = if bad_range {
                    "outside the data area".to_string()
                } else {
                    "already owned".to_string()
                };
                c.problem(
                    format!(
                        "inode {ino}: file blocks {}+{} map image blocks {}+{} {why}",
                        m.file_block, m.len, m.image_block, m.len
                    ),
                    true,
                );
                if repair {
                    inodes
                        .get_mut(&ino)
                        .expect("inode")
                        .extents
                        .remove(m.file_block, m.len);
                }
                continue;
            }
            owners.insert(m.image_block, (m.len, ino));
            c.report.file_blocks += m.len;
        }
    }
    let expected = Allocator::from_used(
        total,
        owners
            .iter()
            .map(|(&start, &(len, _))| Extent { start, len }),
    );
    // The stored free list: mount rebuilds the allocator from ownership, so a list that
    // differs is an error here (it should not) but no reason to refuse a mount.
    let mut allocator_problems = Vec::new();
    if let Err(e) = loaded.alloc.check() {
        allocator_problems.push(format!("allocator: {e}"));
    }
    let have: Vec<Extent> = loaded.alloc.free_extents().collect();
    let want: Vec<Extent> = expected.free_extents().collect();
    if have != want {
        let (hf, wf) = (loaded.alloc.free_blocks(), expected.free_blocks());
        allocator_problems.push(format!("allocator free space ({hf} blocks in {} extents) differs from the blocks nobody owns ({wf} in {})", have.len(), want.len()));
    }
    for p in allocator_problems {
        c.report.fixed_by_mount.push(p.clone());
        c.problem(p, true);
    }
    c.report.inodes = inodes.len();
    c.report
}

fn overlaps(owners: &BTreeMap<u64, (u64, u64)>, start: u64, len: u64) -> bool {
    if let Some((&s, &(l, _))) = owners.range(..start + len).next_back() {
        if s + l > start {
            return true;
        }
    }
    false
}

/// Cuts the loop of directories that `d` is in or under: its smallest member leaves its
/// parent in the loop for `/lost+found` (as `#ino`), with the link counts, sizes and
/// `..` of the directories involved kept right, so everything in the loop is reachable
/// again.
fn cut_loop(
    inodes: &mut HashMap<u64, Inode>,
    next_ino: &mut u64,
    dir_parent: &mut HashMap<u64, u64>,
    d: u64,
) {
    let mut path = vec![d];
    let start = loop {
        let Some(&p) = dir_parent.get(path.last().expect("path")) else {
            return; // reaches a directory without a name: not a loop
        };
        if p == ROOT_INO {
            return; // an earlier cut already made it reachable
        }
        if let Some(i) = path.iter().position(|&x| x == p) {
            break i;
        }
        path.push(p);
    };
    let x = *path[start..].iter().min().expect("a loop");
    let p = dir_parent[&x];
    let parent = inodes.get_mut(&p).expect("parent in the loop");
    let names: Vec<Vec<u8>> = parent
        .dir
        .iter()
        .filter(|(_, e)| e.ino == x)
        .map(|(n, _)| n.to_vec())
        .collect();
    for n in &names {
        parent.dir.remove(n);
    }
    parent.nlink = parent.nlink.saturating_sub(1);
    parent.size = parent.dir.len() as u64;
    let existed = inodes[&ROOT_INO].dir.iter().count();
    let lf = lost_and_found(inodes, next_ino);
    if inodes[&ROOT_INO].dir.iter().count() != existed {
        // A new /lost+found: one more subdirectory of the root.
        inodes.get_mut(&ROOT_INO).expect("root").nlink += 1;
        dir_parent.insert(lf, ROOT_INO);
    }
    if lf >= *next_ino {
        *next_ino = lf + 1;
    }
    let l = inodes.get_mut(&lf).expect("lost+found");
    let name = free_name(&l.dir, &format!("#{x}"));
    l.dir.insert(&name, x, Kind::Dir);
    l.nlink += 1;
    l.size = l.dir.len() as u64;
    inodes.get_mut(&x).expect("loop member").parent = lf;
    dir_parent.insert(x, lf);
}

/// `base`, or when `dir` holds that name already, the first free `base.N`.
fn free_name(dir: &crate::meta::inode::Dir, base: &str) -> Vec<u8> {
    std::iter::once(base.to_string())
        .chain((1u64..).map(|n| format!("{base}.{n}")))
        .map(String::into_bytes)
        .find(|n| dir.get(n).is_none())
        .expect("a free name")
}

/// Finds or makes `/lost+found`; returns its inode number. When the name is taken by
/// something that is not a directory (a user's file), that keeps its name and the directory
/// is made as `/lost+found.N`, the first such name that is free (or reused, a directory
/// already).
fn lost_and_found(inodes: &mut HashMap<u64, Inode>, next_ino: &u64) -> u64 {
    let root = &inodes[&ROOT_INO].dir;
    let mut name = b"lost+found".to_vec();
    if let Some(e) = root.get(&name) {
        if e.kind == Kind::Dir {
            return e.ino;
        }
        name = (1u64..)
            .map(|n| format!("lost+found.{n}").into_bytes())
            .find(|n| root.get(n).is_none_or(|e| e.kind == Kind::Dir))
            .expect("a free name");
        if let Some(e) = root.get(&name) {
            return e.ino; // made by an earlier repair
        }
    }
    let ino = (*next_ino).max(inodes.keys().max().copied().unwrap_or(ROOT_INO) + 1);
    let now = Time::now();
    inodes.insert(
        ino,
        Inode::new(ino, Kind::Dir, 0o700, 0, 0, 0, ROOT_INO, now),
    );
    let root = inodes.get_mut(&ROOT_INO).expect("root");
    root.dir.insert(&name, ino, Kind::Dir);
    root.size = root.dir.len() as u64;
    ino
}

//! The one validation pass, [`examine`]: every invariant of the module documentation of
//! [`crate::fsck`], checked against a loaded checkpoint (and repaired, with `repair`).

use super::repair::{cut_loop, free_name, lost_and_found};
use super::*;

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
        let bad_names: Vec<Vec<u8>> = i
            .xattrs
            .keys()
            .filter(|k| !crate::meta::inode::xattr_name_ok(k))
            .cloned()
            .collect();
        for name in bad_names {
            c.problem(
                format!(
                    "inode {ino}: extended attribute name '{}' is not one setxattr could make",
                    crate::output::printable(&String::from_utf8_lossy(&name))
                ),
                true,
            );
            if repair {
                i.xattrs.remove(&name);
            }
        }
        // An ACL the kernel could not parse would make the file unreachable (its access
        // check fails); a default ACL is a directory's only.
        let bad_acls: Vec<Vec<u8>> = i
            .xattrs
            .iter()
            .filter(|(k, v)| {
                crate::fs::acl::is_acl(k)
                    && (crate::fs::acl::Acl::parse(v).is_err()
                        || (k.as_slice() == crate::fs::acl::DEFAULT && i.kind != Kind::Dir))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for name in bad_acls {
            c.problem(
                format!(
                    "inode {ino}: '{}' is not a POSIX ACL a {:?} can have",
                    String::from_utf8_lossy(&name),
                    i.kind
                ),
                true,
            );
            if repair {
                i.xattrs.remove(&name);
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
            let shown = crate::output::printable(&String::from_utf8_lossy(&name));
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

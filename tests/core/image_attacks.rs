//! Images crafted through the checkpoint writer itself (so every checksum and layout is
//! right): directory loops cut off from the root, a directory that holds itself, a file
//! with links but no name. fsck must report what would be lost, mount must refuse what fsck
//! refuses, and `fsck --repair` must make the image clean (run twice: the second run finds
//! nothing) with every file still reachable and its data intact.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use pinfs::fs::{Caller, Fs, FsOptions};
use pinfs::log::checkpoint;
use pinfs::meta::inode::{Inode, Kind, ROOT_INO};
use pinfs::store::image::Image;

const REG: u32 = libc::S_IFREG | 0o644;
const DIR: u32 = libc::S_IFDIR | 0o755;

fn opts() -> FsOptions {
    FsOptions {
        lock_wait: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A clean image with /a/b/c (directories) and /a/f, /a/b/g (files with data).
fn base(path: &Path) -> HashMap<&'static str, u64> {
    Fs::mkfs(path, 4 << 20, true).unwrap();
    let fs = Fs::open(path, opts()).unwrap();
    let r = Caller::ROOT;
    let a = fs.create(ROOT_INO, b"a", DIR, 0, None, r).unwrap().ino;
    let b = fs.create(a, b"b", DIR, 0, None, r).unwrap().ino;
    let c = fs.create(b, b"c", DIR, 0, None, r).unwrap().ino;
    let f = fs.create(a, b"f", REG, 0, None, r).unwrap().ino;
    let g = fs.create(b, b"g", REG, 0, None, r).unwrap().ino;
    fs.write(f, 0, &[0x46; 5000], r).unwrap();
    fs.write(g, 0, &[0x47; 5000], r).unwrap();
    fs.unmount().unwrap();
    drop(fs);
    HashMap::from([("a", a), ("b", b), ("c", c), ("f", f), ("g", g)])
}

/// Rewrites the image's metadata through `edit` and writes it as a new clean checkpoint.
fn craft(path: &Path, edit: impl FnOnce(&mut HashMap<u64, Inode>)) {
    let (image, mut sb) = Image::open(path, Duration::from_secs(5)).unwrap();
    let mut loaded = checkpoint::load(&image, &sb).unwrap();
    edit(&mut loaded.inodes);
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
    )
    .unwrap();
}

/// fsck's errors (exit code and messages) on the image.
fn fsck(path: &Path, repair: bool) -> (i32, Vec<String>) {
    match pinfs::fsck::check(path, repair) {
        Ok(r) => (r.exit_code(), r.errors),
        Err(e) => (8, vec![e.to_string()]),
    }
}

/// Every file reachable from the root, by walking the mounted image: (path, size).
fn walk(fs: &Fs) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![(ROOT_INO, String::new())];
    while let Some((d, at)) = todo.pop() {
        for e in fs.readdir(d, 0, 10_000).unwrap() {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let p = format!("{at}/{}", String::from_utf8_lossy(&e.name));
            let a = fs.getattr(e.ino).unwrap();
            match a.kind {
                Kind::Dir => todo.push((e.ino, p)),
                _ => out.push((p, a.size)),
            }
        }
    }
    out.sort();
    out
}

/// What a repaired image must be: a second repair finds nothing, mount works, and both
/// files are reachable with their data.
fn assert_repaired_keeps_files(path: &Path) {
    let (code, errors) = fsck(path, false);
    assert_eq!(code, 0, "fsck after --repair: {errors:?}");
    let (code, errors) = fsck(path, true);
    assert_eq!(code, 0, "a second --repair: {errors:?}");
    let fs = Fs::open(path, opts()).expect("mount after --repair");
    let files = walk(&fs);
    let sizes: Vec<u64> = files.iter().map(|f| f.1).collect();
    assert_eq!(sizes, vec![5000, 5000], "files after --repair: {files:?}");
    fs.unmount().unwrap();
}

/// a and b hold each other, nothing in the root names either: the files under them are
/// unreachable. fsck says so, mount refuses, --repair reattaches them under /lost+found.
#[test]
fn a_loop_of_directories_cut_off_from_the_root_is_reported_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let n = base(&path);
    let (a, b, c) = (n["a"], n["b"], n["c"]);
    craft(&path, |inodes| {
        // root loses "a"; b's subdirectory c is replaced by a (c goes, empty and unlinked).
        let root = inodes.get_mut(&ROOT_INO).unwrap();
        root.dir.remove(b"a");
        root.nlink -= 1;
        root.size -= 1;
        let bd = inodes.get_mut(&b).unwrap();
        bd.dir.remove(b"c");
        bd.dir.insert(b"a", a, Kind::Dir);
        inodes.remove(&c);
        inodes.get_mut(&a).unwrap().parent = b;
    });
    let (code, errors) = fsck(&path, false);
    assert_ne!(code, 0, "fsck calls a cut-off loop clean: {errors:?}");
    assert!(
        Fs::open(&path, opts()).is_err(),
        "mount accepts a loop fsck rejects"
    );
    let (code, errors) = fsck(&path, true);
    assert_eq!(code, 1, "--repair: {errors:?}");
    assert_repaired_keeps_files(&path);
}

/// A directory whose only name is an entry in itself: reported, refused, reattached.
#[test]
fn a_directory_that_holds_itself_is_reported_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let n = base(&path);
    let (a, b) = (n["a"], n["b"]);
    craft(&path, |inodes| {
        // b leaves a and becomes its own entry "me".
        let ad = inodes.get_mut(&a).unwrap();
        ad.dir.remove(b"b");
        ad.nlink -= 1;
        ad.size -= 1;
        let bd = inodes.get_mut(&b).unwrap();
        bd.dir.insert(b"me", b, Kind::Dir);
        bd.parent = b;
        bd.nlink += 1;
        bd.size += 1;
    });
    let (code, errors) = fsck(&path, false);
    assert_ne!(
        code, 0,
        "fsck calls a self-holding directory clean: {errors:?}"
    );
    assert!(
        Fs::open(&path, opts()).is_err(),
        "mount accepts a self-holding directory fsck rejects"
    );
    let (code, errors) = fsck(&path, true);
    assert_eq!(code, 1, "--repair: {errors:?}");
    assert_repaired_keeps_files(&path);
}

/// A file with a link count but no name goes to lost+found, once; the second repair finds
/// nothing.
#[test]
fn a_nameless_file_is_repaired_once_into_lost_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let n = base(&path);
    let a = n["a"];
    craft(&path, |inodes| {
        let ad = inodes.get_mut(&a).unwrap();
        ad.dir.remove(b"f");
        ad.size -= 1;
    });
    let (code, errors) = fsck(&path, false);
    assert_eq!(code, 4, "{errors:?}");
    let (code, errors) = fsck(&path, true);
    assert_eq!(code, 1, "{errors:?}");
    assert_repaired_keeps_files(&path);
}

/// `/lost+found` is a regular file of the user's when a repair needs the directory: the
/// file must keep its name (and data), and the repair must still make the image clean.
#[test]
fn a_repair_keeps_a_file_named_lost_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let n = base(&path);
    let a = n["a"];
    {
        let fs = Fs::open(&path, opts()).unwrap();
        let lf = fs
            .create(ROOT_INO, b"lost+found", REG, 0, None, Caller::ROOT)
            .unwrap();
        fs.write(lf.ino, 0, &[0x4c; 5000], Caller::ROOT).unwrap();
        fs.unmount().unwrap();
    }
    craft(&path, |inodes| {
        let ad = inodes.get_mut(&a).unwrap();
        ad.dir.remove(b"f");
        ad.size -= 1;
    });
    let (code, errors) = fsck(&path, true);
    assert_eq!(code, 1, "{errors:?}");
    let (code, errors) = fsck(&path, false);
    assert_eq!(code, 0, "fsck after --repair: {errors:?}");
    let fs = Fs::open(&path, opts()).expect("mount after --repair");
    let files = walk(&fs);
    let sizes: Vec<u64> = files.iter().map(|f| f.1).collect();
    assert_eq!(sizes.len(), 3, "files after --repair: {files:?}");
    assert!(sizes.iter().all(|&s| s == 5000), "{files:?}");
    fs.unmount().unwrap();
}

/// `/lost+found` already holds a name `#ino` for the inode a repair puts there: both keep
/// a name.
#[test]
fn a_repair_does_not_overwrite_a_name_in_lost_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let n = base(&path);
    let (a, f) = (n["a"], n["f"]);
    {
        let fs = Fs::open(&path, opts()).unwrap();
        let lf = fs
            .create(ROOT_INO, b"lost+found", DIR, 0, None, Caller::ROOT)
            .unwrap();
        let x = fs
            .create(
                lf.ino,
                format!("#{f}").as_bytes(),
                REG,
                0,
                None,
                Caller::ROOT,
            )
            .unwrap();
        fs.write(x.ino, 0, &[0x58; 5000], Caller::ROOT).unwrap();
        fs.unmount().unwrap();
    }
    craft(&path, |inodes| {
        let ad = inodes.get_mut(&a).unwrap();
        ad.dir.remove(b"f");
        ad.size -= 1;
    });
    let (code, errors) = fsck(&path, true);
    assert_eq!(code, 1, "{errors:?}");
    let (code, errors) = fsck(&path, false);
    assert_eq!(code, 0, "fsck after --repair: {errors:?}");
    let fs = Fs::open(&path, opts()).expect("mount after --repair");
    let files = walk(&fs);
    assert_eq!(files.len(), 3, "files after --repair: {files:?}");
    assert!(files.iter().all(|f| f.1 == 5000), "{files:?}");
    fs.unmount().unwrap();
}

/// Every crafted image of the mutator's sweep that mounts is then changed all the way:
/// a file made in every directory, every file truncated, linked, renamed and unlinked, every
/// directory removed bottom up. Each step may fail with an errno but never panic, and the
/// unmount leaves an image fsck calls clean. (A next_ino just below the largest once let
/// creates hand out numbers past it: the unmount then wrote a checkpoint mount refuses.)
#[test]
fn crafted_images_that_mount_survive_every_namespace_change() {
    use pinfs::error::FsError;
    use pinfs::fuzzer::image::{base_images, fields, fix_checksums, hostile_values, write_image};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.img");
    let mut failures = Vec::new();
    let mut mounted = 0;
    // The clean base only (the crashed one adds its journal and doubles the run time).
    for (b, base) in base_images().iter().enumerate().take(1) {
        let all = fields(base);
        for f in &all {
            for v in hostile_values(base, &all, f) {
                let mut img = base.clone();
                f.set(&mut img, v);
                fix_checksums(&mut img);
                write_image(&path, &img).unwrap();
                let Ok(fs) = Fs::open(&path, opts()) else {
                    continue;
                };
                mounted += 1;
                let what = format!("base {b}, {}: {} -> {v}", f.name, f.get(base));
                let r = Caller::ROOT;
                // Directories, deepest last.
                let mut dirs = vec![ROOT_INO];
                let mut i = 0;
                while i < dirs.len() {
                    for e in fs.readdir(dirs[i], 0, 10_000).unwrap_or_default() {
                        if e.kind == Kind::Dir && e.name != b"." && e.name != b".." {
                            dirs.push(e.ino);
                        }
                    }
                    i += 1;
                }
                let ok = |res: Result<(), FsError>, step: &str, fails: &mut Vec<String>| {
                    if let Err(e) = res {
                        if !matches!(e, FsError::NoSpace) {
                            fails.push(format!("{what}: {step}: {e}"));
                        }
                    }
                };
                for &d in &dirs {
                    ok(
                        fs.create(d, b"new", REG, 0, None, r).map(drop),
                        "create",
                        &mut failures,
                    );
                }
                for &d in dirs.iter().rev() {
                    for e in fs.readdir(d, 0, 10_000).unwrap_or_default() {
                        if e.name == b"." || e.name == b".." {
                            continue;
                        }
                        if e.kind == Kind::Dir {
                            ok(fs.remove(d, &e.name, true), "rmdir", &mut failures);
                            continue;
                        }
                        if e.kind == Kind::File {
                            let t = pinfs::fs::SetAttr {
                                size: Some(1),
                                ..Default::default()
                            };
                            ok(fs.setattr(e.ino, t, r).map(drop), "truncate", &mut failures);
                            ok(
                                fs.link(e.ino, d, b"linked").map(drop),
                                "link",
                                &mut failures,
                            );
                            ok(fs.remove(d, b"linked", false), "unlink link", &mut failures);
                        }
                        ok(
                            fs.rename(d, &e.name, ROOT_INO, b"moved", 0),
                            "rename",
                            &mut failures,
                        );
                        ok(
                            fs.remove(ROOT_INO, b"moved", false),
                            "unlink",
                            &mut failures,
                        );
                    }
                }
                if let Err(e) = fs.unmount() {
                    failures.push(format!("{what}: unmount: {e}"));
                }
                drop(fs);
                match pinfs::fsck::check(&path, false) {
                    Ok(rep) if rep.exit_code() == 0 => {}
                    Ok(rep) => failures.push(format!("{what}: fsck after: {:?}", rep.errors)),
                    Err(e) => failures.push(format!("{what}: fsck after: {e}")),
                }
            }
        }
    }
    assert!(mounted > 100, "only {mounted} mounted");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}

/// next_ino one below the largest inode number: a create is ENOSPC (no numbers left), and
/// the unmount leaves an image that mounts again.
#[test]
fn creates_past_the_last_inode_number_are_enospc_and_the_image_stays_mountable() {
    use pinfs::error::FsError;
    use pinfs::fuzzer::image::{fields, fix_checksums};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    base(&path);
    let mut img = std::fs::read(&path).unwrap();
    let all = fields(&img);
    let f = all
        .iter()
        .find(|f| f.name.ends_with("next_ino"))
        .expect("the next_ino field");
    f.set(&mut img, pinfs::meta::inode::MAX_INO - 1);
    fix_checksums(&mut img);
    std::fs::write(&path, &img).unwrap();
    let fs = Fs::open(&path, opts()).expect("mount");
    match fs.create(ROOT_INO, b"n", REG, 0, None, Caller::ROOT) {
        Err(FsError::NoSpace) => {}
        other => panic!("create with no inode numbers left: {other:?}"),
    }
    fs.unmount().unwrap();
    drop(fs);
    let (code, errors) = fsck(&path, false);
    assert_eq!(code, 0, "{errors:?}");
    Fs::open(&path, opts()).expect("mount after the unmount");
}

/// The last bytes a file can have: a write at the largest offset, a truncate there, a hole
/// punched at the end; each works or is an errno, and the image stays clean and mountable.
#[test]
fn the_largest_offsets_keep_the_image_clean() {
    use pinfs::fs::{falloc, SetAttr};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    base(&path);
    let fs = Fs::open(&path, opts()).unwrap();
    let r = Caller::ROOT;
    let f = fs.create(ROOT_INO, b"huge", REG, 0, None, r).unwrap().ino;
    let max = i64::MAX as u64;
    let size = |s: u64| SetAttr {
        size: Some(s),
        ..Default::default()
    };
    let mut results = Vec::new();
    results.push(format!("{:?}", fs.write(f, max - 1, b"z", r)));
    results.push(format!("{:?}", fs.write(f, max - 4097, &[7u8; 8192], r)));
    results.push(format!("{:?}", fs.write(f, max, b"z", r)));
    results.push(format!("{:?}", fs.read(f, max - 10, 100).map(|b| b.len())));
    results.push(format!("{:?}", fs.setattr(f, size(max), r).map(|a| a.size)));
    results.push(format!("{:?}", fs.seek(f, max - 5000, libc::SEEK_DATA)));
    results.push(format!(
        "{:?}",
        fs.fallocate(
            f,
            max - 8192,
            8192,
            falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
            r,
            None
        )
    ));
    results.push(format!(
        "{:?}",
        fs.fallocate(f, max - 20000, 20000, 0, r, None)
    ));
    results.push(format!(
        "{:?}",
        fs.setattr(f, size(max - 3), r).map(|a| a.size)
    ));
    eprintln!("{results:#?}");
    fs.unmount().unwrap();
    drop(fs);
    let (code, errors) = fsck(&path, false);
    assert_eq!(code, 0, "{errors:?}; results {results:?}");
    let fs = Fs::open(&path, opts()).expect("mount again");
    assert_eq!(fs.getattr(f).unwrap().size, max - 3);
    fs.unmount().unwrap();
}

/// `fsck --repair` on every crafted image of the mutator's sweep that fsck finds errors in:
/// a repair that says it repaired (exit 1) leaves an image fsck calls clean and mount takes;
/// one that refuses (exit 4 or 8) changes nothing.
#[test]
fn repair_of_every_crafted_image_is_clean_or_changes_nothing() {
    use pinfs::fuzzer::image::{base_images, fields, fix_checksums, hostile_values, write_image};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.img");
    let (mut failures, mut repaired, mut refused) = (Vec::new(), 0, 0);
    // The crashed base (its journal too); both bases passed when this was written, the
    // clean one is left out to halve the run time (about 25 s).
    for (b, base) in base_images().iter().enumerate().skip(1) {
        let all = fields(base);
        for f in &all {
            for v in hostile_values(base, &all, f) {
                let mut img = base.clone();
                f.set(&mut img, v);
                fix_checksums(&mut img);
                write_image(&path, &img).unwrap();
                let (code, _) = fsck(&path, false);
                if code == 0 {
                    continue;
                }
                let what = format!("base {b}, {}: {} -> {v}", f.name, f.get(base));
                let before = std::fs::read(&path).unwrap();
                let (code, errors) = fsck(&path, true);
                if code == 1 {
                    repaired += 1;
                    let (after, errs) = fsck(&path, false);
                    if after != 0 {
                        failures.push(format!(
                            "{what}: repaired ({errors:?}), then fsck {after}: {errs:?}"
                        ));
                    } else if let Err(e) = Fs::open(&path, opts()).and_then(|fs| fs.unmount()) {
                        failures.push(format!("{what}: repaired, fsck clean, mount: {e}"));
                    }
                } else {
                    refused += 1;
                    if std::fs::read(&path).unwrap() != before {
                        failures.push(format!("{what}: --repair exit {code} changed the image"));
                    }
                }
            }
        }
    }
    eprintln!("{repaired} repaired, {refused} refused");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}

/// Extended attribute names no user could have set, behind valid checksums: one with a NUL
/// in it (listxattr shows it as two names, neither of which getxattr finds), an empty one,
/// one outside the user, trusted and security namespaces (neither readable nor removable
/// through the kernel). fsck calls them errors, mount refuses the image with fsck's
/// message, and `--repair` drops them and keeps the valid one. (fsck called the image
/// clean, and mount served names that listxattr and getxattr disagree on.)
#[test]
fn xattr_names_no_user_could_set_are_reported_refused_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let inos = base(&path);
    let f = inos["f"];
    craft(&path, |m| {
        let x = &mut m.get_mut(&f).unwrap().xattrs;
        x.insert(b"user.kept".to_vec(), b"v".to_vec());
        x.insert(b"user.a\0user.b".to_vec(), b"nul".to_vec());
        x.insert(Vec::new(), b"empty".to_vec());
        x.insert(b"bogus.name".to_vec(), b"ns".to_vec());
        x.insert(b"user.".to_vec(), b"prefix only".to_vec());
    });
    let (code, errors) = fsck(&path, false);
    assert_eq!(code, 4, "{errors:?}");
    let bad: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains("extended attribute"))
        .collect();
    assert_eq!(bad.len(), 4, "{errors:?}");
    let refused = Fs::open(&path, opts())
        .expect_err("mount refuses the image")
        .to_string();
    assert!(refused.contains(bad[0].as_str()), "{refused}");
    let (code, _) = fsck(&path, true);
    assert_eq!(code, 1);
    assert_repaired_keeps_files(&path);
    let fs = Fs::open(&path, opts()).unwrap();
    assert_eq!(fs.listxattr(f).unwrap(), b"user.kept\0");
    assert_eq!(fs.getxattr(f, b"user.kept").unwrap(), b"v");
    fs.unmount().unwrap();
}

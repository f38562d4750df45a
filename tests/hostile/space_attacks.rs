//! Hostile filling of a small filesystem, through the core (no FUSE): an unprivileged user
//! takes every data block and then as much metadata as it is given (long names, 4 KiB
//! symlinks, 64 KiB xattrs, journal churn); free space cut into single blocks. Whatever the
//! user did, root can still delete, truncate, chmod and rename everything, and the unmount
//! leaves an image fsck calls clean with nothing to replay. (Renames to longer names once
//! grew the metadata without asking for room: the journal then filled with no room for its
//! checkpoint and root's unlinks failed with ENOSPC.)

use std::path::Path;
use std::time::Duration;

use pinfs::error::FsError;
use pinfs::fs::{Caller, Fs, FsOptions, SetAttr};
use pinfs::meta::inode::ROOT_INO;

const NOBODY: Caller = Caller {
    uid: 65534,
    gid: 65534,
    pid: 4242,
};
const REG: u32 = libc::S_IFREG | 0o644;

fn open(path: &Path) -> Fs {
    Fs::open(
        path,
        FsOptions {
            lock_wait: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .expect("open")
}

fn chmod(fs: &Fs, ino: u64, mode: u32, who: Caller) -> Result<(), FsError> {
    fs.setattr(
        ino,
        SetAttr {
            mode: Some(mode),
            ..Default::default()
        },
        who,
    )
    .map(drop)
}

fn truncate(fs: &Fs, ino: u64, size: u64) -> Result<(), FsError> {
    fs.setattr(
        ino,
        SetAttr {
            size: Some(size),
            ..Default::default()
        },
        Caller::ROOT,
    )
    .map(drop)
}

/// The image after unmount: fsck exit 0 and no journal transaction to replay.
fn assert_clean(path: &Path) {
    let r = pinfs::fsck::check(path, false).expect("fsck");
    assert_eq!(
        (r.exit_code(), r.replayed),
        (0, 0),
        "fsck after unmount: {:?}",
        r.errors
    );
}

/// A directory owned by nobody, for the user's files.
fn user_dir(fs: &Fs, name: &[u8]) -> u64 {
    let d = fs
        .create(ROOT_INO, name, libc::S_IFDIR | 0o755, 0, None, Caller::ROOT)
        .expect("mkdir");
    fs.setattr(
        d.ino,
        SetAttr {
            uid: Some(NOBODY.uid),
            gid: Some(NOBODY.gid),
            ..Default::default()
        },
        Caller::ROOT,
    )
    .expect("chown");
    d.ino
}

/// Writes 64 KiB chunks (then single blocks) into `ino` until ENOSPC.
fn fill_data(fs: &Fs, ino: u64, who: Caller) -> u64 {
    let mut off = 0u64;
    for chunk in [64 << 10, 4096] {
        let buf = vec![0x77u8; chunk];
        loop {
            match fs.write(ino, off, &buf, who) {
                Ok(n) => off += n as u64,
                Err(FsError::NoSpace) => break,
                Err(e) => panic!("write at {off}: {e}"),
            }
        }
    }
    eprintln!("fill_data: {off} bytes");
    off
}

/// The user grows the metadata every way it can, until each way is refused. Returns the
/// inodes it made.
fn fill_metadata(fs: &Fs, dir: u64, who: Caller, tag: char) -> Vec<(Vec<u8>, u64)> {
    let mut made = Vec::new();
    // Files with the longest names.
    for i in 0..20_000u32 {
        let mut name = format!("{tag}{i:08}-").into_bytes();
        name.resize(255, b'n');
        match fs.create(dir, &name, REG, 0, None, who) {
            Ok(a) => made.push((name, a.ino)),
            Err(FsError::NoSpace) => break,
            Err(e) => panic!("create {i}: {e}"),
        }
    }
    // Symlinks with the longest targets.
    let target = vec![b't'; 4095];
    for i in 0..2000u32 {
        let name = format!("l{tag}{i}").into_bytes();
        match fs.create(dir, &name, libc::S_IFLNK | 0o777, 0, Some(&target), who) {
            Ok(a) => made.push((name, a.ino)),
            Err(FsError::NoSpace) => break,
            Err(e) => panic!("symlink {i}: {e}"),
        }
    }
    // The largest xattrs on its files.
    let value = vec![0x58u8; 64 << 10];
    'x: for &(_, ino) in made.iter().filter(|(n, _)| n.len() == 255) {
        for k in 0..4 {
            match fs.setxattr(ino, format!("user.big{k}").as_bytes(), &value, 0) {
                Ok(()) => {}
                Err(FsError::NoSpace) => break 'x,
                Err(e) => panic!("setxattr: {e}"),
            }
        }
    }
    eprintln!(
        "fill_metadata {tag}: {} inodes, {} xattrs; statfs {:?}",
        made.len(),
        made.iter()
            .filter(|(n, _)| n.len() == 255)
            .map(|&(_, i)| fs
                .listxattr(i)
                .map_or(0, |l| l.iter().filter(|&&b| b == 0).count()))
            .sum::<usize>(),
        fs.statfs()
    );
    made
}

/// What root must still be able to do on the filled filesystem, then a clean unmount.
fn root_cleans_up(fs: Fs, path: &Path, dir: u64, big: u64, made: &[(Vec<u8>, u64)]) {
    let r = Caller::ROOT;
    // Journal churn on a full filesystem: thousands of chmods (each a journal record).
    let mut chmod_failures = 0;
    for i in 0..9000u32 {
        if chmod(&fs, big, 0o600 | (i & 0o7), r).is_err() {
            chmod_failures += 1;
        }
    }
    eprintln!("chmod failures: {chmod_failures}");
    truncate(&fs, big, 4096).expect("truncate of the big file on a full filesystem");
    // A rename that does not lengthen the name needs no room.
    let mut to = made[0].0.clone();
    to[0] = b'R';
    fs.rename(dir, &made[0].0, dir, &to, 0)
        .expect("rename on a full filesystem");
    fs.remove(dir, &to, false)
        .expect("unlink of the renamed file");
    for (name, _) in &made[1..] {
        fs.remove(dir, name, false)
            .unwrap_or_else(|e| panic!("unlink on a full filesystem: {e}"));
    }
    fs.remove(dir, b"big", false)
        .expect("unlink of the big file");
    fs.remove(ROOT_INO, b"u", true).expect("rmdir");
    fs.unmount().expect("unmount");
    drop(fs);
    assert_clean(path);
    // chmod may be refused while the journal is full (the checkpoint needs room the user
    // took); all 9,000 refused is the case 3.
    assert!(
        chmod_failures < 9000,
        "every chmod failed on a full filesystem"
    );
}

/// nobody takes every data block, then every bit of metadata it is allowed; root then
/// deletes it all, on the smallest image.
#[test]
fn a_user_filling_data_and_metadata_cannot_stop_root_cleaning_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    let big = fs.create(u, b"big", REG, 0, None, NOBODY).unwrap();
    let wrote = fill_data(&fs, big.ino, NOBODY);
    assert!(wrote > 0);
    let made = fill_metadata(&fs, u, NOBODY, 'a');
    assert!(!made.is_empty(), "the user could create nothing");
    root_cleans_up(fs, &path, u, big.ino, &made);
}

/// The same, metadata first (the user grows the checkpoint while blocks are free), then data.
#[test]
fn a_user_filling_metadata_first_cannot_stop_root_cleaning_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    let big = fs.create(u, b"big", REG, 0, None, NOBODY).unwrap();
    let made = fill_metadata(&fs, u, NOBODY, 'a');
    fill_data(&fs, big.ino, NOBODY);
    // And once more: what the data left for metadata.
    let more = fill_metadata(&fs, u, NOBODY, 'b');
    let mut all = made;
    all.extend(more);
    root_cleans_up(fs, &path, u, big.ino, &all);
}

/// Free space in single blocks: one-block files fill the image, every other one goes, a
/// big file takes the holes (one extent per block), then metadata churn and cleanup.
#[test]
fn fragmented_free_space_then_full_still_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    let mut small = Vec::new();
    for i in 0..4000u32 {
        let name = format!("s{i}").into_bytes();
        let a = match fs.create(u, &name, REG, 0, None, NOBODY) {
            Ok(a) => a,
            Err(FsError::NoSpace) => break,
            Err(e) => panic!("create: {e}"),
        };
        match fs.write(a.ino, 0, &[1u8; 4096], NOBODY) {
            Ok(_) => small.push((name, a.ino)),
            Err(FsError::NoSpace) => {
                fs.remove(u, &name, false).unwrap();
                break;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(small.len() > 100, "only {} one-block files", small.len());
    let mut kept = Vec::new();
    for (k, (name, ino)) in small.into_iter().enumerate() {
        if k % 2 == 0 {
            fs.remove(u, &name, false).unwrap();
        } else {
            kept.push((name, ino));
        }
    }
    let big = fs.create(u, b"big", REG, 0, None, NOBODY).unwrap();
    fill_data(&fs, big.ino, NOBODY);
    let more = fill_metadata(&fs, u, NOBODY, 'a');
    kept.extend(more);
    root_cleans_up(fs, &path, u, big.ino, &kept);
}

/// Renames grow the metadata too (a one-byte name becomes 255 bytes): the user makes many
/// short-named files while there is room, fills the data, then lengthens every name.
#[test]
fn renames_to_long_names_on_a_full_filesystem_cannot_stop_root_cleaning_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    let mut names = Vec::new();
    for i in 0..20_000u32 {
        let name = format!("{i:x}").into_bytes();
        match fs.create(u, &name, REG, 0, None, NOBODY) {
            Ok(_) => names.push(name),
            Err(FsError::NoSpace) => break,
            Err(e) => panic!("create: {e}"),
        }
    }
    let big = fs.create(u, b"big", REG, 0, None, NOBODY);
    let big = match big {
        Ok(a) => a.ino,
        Err(_) => {
            // No room for one more inode: the user's first file takes the data.
            fs.lookup(u, &names[0]).unwrap().ino
        }
    };
    fill_data(&fs, big, NOBODY);
    let (mut renamed, mut refused) = (Vec::new(), 0);
    for name in &names {
        let mut long = name.clone();
        long.push(b'-');
        long.resize(255, b'r');
        match fs.rename(u, name, u, &long, 0) {
            Ok(()) => renamed.push(long),
            Err(FsError::NoSpace) => {
                // Refused with nothing changed: the rest keep their short names.
                refused += 1;
                renamed.push(name.clone());
                if refused > 20 {
                    break;
                }
            }
            Err(e) => panic!("rename: {e}"),
        }
    }
    eprintln!(
        "{} files, {refused} renames refused; statfs {:?}",
        names.len(),
        fs.statfs()
    );
    renamed.extend(names[renamed.len()..].iter().cloned());
    for name in &renamed {
        if fs.lookup(u, name).is_ok() {
            fs.remove(u, name, false)
                .unwrap_or_else(|e| panic!("unlink by root on a full filesystem: {e}"));
        }
    }
    let _ = fs.remove(u, b"big", false);
    fs.remove(ROOT_INO, b"u", true).expect("rmdir");
    fs.unmount().expect("unmount");
    drop(fs);
    assert_clean(&path);
}

/// Writers, creators and deleters at once on a nearly full filesystem (as the user and as
/// root), then an unmount: every failure is ENOSPC, and the image is clean.
#[test]
fn concurrent_writers_and_deleters_on_a_full_filesystem_unmount_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    std::thread::scope(|s| {
        for t in 0..6u32 {
            let fs = &fs;
            s.spawn(move || {
                let who = if t % 2 == 0 { NOBODY } else { Caller::ROOT };
                let value = vec![t as u8; 3000];
                for i in 0..400u32 {
                    let mut name = format!("t{t}-{i}-").into_bytes();
                    name.resize(40 + (i as usize * 7) % 200, b'x');
                    let a = match fs.create(u, &name, REG, 0, None, who) {
                        Ok(a) => a,
                        Err(FsError::NoSpace) => continue,
                        Err(e) => panic!("create: {e}"),
                    };
                    let len = 1000 + (i as usize * 4099) % 60_000;
                    match fs.write(a.ino, (i as u64 % 5) * 8192, &vec![1u8; len], who) {
                        Ok(_) | Err(FsError::NoSpace) => {}
                        Err(e) => panic!("write: {e}"),
                    }
                    match fs.setxattr(a.ino, b"user.v", &value, 0) {
                        Ok(()) | Err(FsError::NoSpace) => {}
                        Err(e) => panic!("setxattr: {e}"),
                    }
                    if i % 3 != 0 {
                        fs.remove(u, &name, false)
                            .unwrap_or_else(|e| panic!("unlink on a full filesystem: {e}"));
                    } else {
                        match chmod(fs, a.ino, 0o600, Caller::ROOT) {
                            Ok(()) | Err(FsError::NoSpace) => {}
                            Err(e) => panic!("chmod: {e}"),
                        }
                    }
                }
            });
        }
    });
    eprintln!("after the threads: {:?}", fs.statfs());
    for e in fs.readdir(u, 0, 100_000).unwrap() {
        if e.name != b"." && e.name != b".." {
            fs.remove(u, &e.name, false)
                .unwrap_or_else(|err| panic!("unlink after the threads: {err}"));
        }
    }
    fs.remove(ROOT_INO, b"u", true).expect("rmdir");
    fs.unmount().expect("unmount");
    drop(fs);
    assert_clean(&path);
}

/// df's available count is what a writer really gets: one file takes at least all of it
/// (the journal's checkpoints on the way may only give more back).
#[test]
fn f_bavail_is_what_can_be_written() {
    for size in [4u64 << 20, 16 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.img");
        Fs::mkfs(&path, size, true).unwrap();
        let fs = open(&path);
        let f = fs
            .create(ROOT_INO, b"f", REG, 0, None, Caller::ROOT)
            .unwrap();
        let before = fs.statfs();
        let wrote = fill_data(&fs, f.ino, Caller::ROOT);
        let after = fs.statfs();
        eprintln!(
            "{size}: before {before:?}, wrote {} blocks, after {after:?}",
            wrote / 4096
        );
        assert!(
            wrote >= before.available * 4096,
            "df said {} blocks available, {} could be written",
            before.available,
            wrote / 4096
        );
        assert_eq!(after.available, 0, "ENOSPC with blocks available");
        fs.unmount().unwrap();
        drop(fs);
        assert_clean(&path);
    }
}

/// Through the kernel, on the smallest image: nobody fills it with files, long renames and
/// data; root then removes everything and unmounts; fsck is clean with nothing to replay.
#[test]
fn through_fuse_a_user_filling_the_smallest_image_cannot_stop_root() {
    #[path = "../common/mod.rs"]
    #[allow(clippy::duplicate_mod)]
    mod common;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    if common::skip_without_fuse("through_fuse_a_user_filling_the_smallest_image_cannot_stop_root")
    {
        return;
    }
    let mut m = common::Mount::new("4M", "allow_other");
    let u = m.path("u");
    std::fs::create_dir(&u).unwrap();
    std::os::unix::fs::chown(&u, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&u, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ud = u.clone();
    assert!(common::as_nobody(move || {
        let mut names = Vec::new();
        for i in 0..3000 {
            let p = ud.join(format!("{i:x}"));
            if std::fs::File::create(&p).is_err() {
                break;
            }
            names.push(p);
        }
        for p in &names {
            let mut long = p.as_os_str().to_owned();
            long.push("-".repeat(200));
            if std::fs::rename(p, &long).is_err() {
                break;
            }
        }
        if let Ok(mut f) = std::fs::File::create(ud.join("big")) {
            let buf = vec![1u8; 65536];
            while f.write_all(&buf).is_ok() {}
        }
        !names.is_empty()
    }));
    std::fs::remove_dir_all(&u).expect("root removes everything the user made");
    m.umount();
    let r = pinfs::fsck::check(&m.image, false).expect("fsck");
    assert_eq!((r.exit_code(), r.replayed), (0, 0), "{:?}", r.errors);
}

/// A rename over an existing name grows nothing (the target's entry keeps its name and the
/// source's entry goes), however long the target name is: after nobody took every data
/// block and all the metadata room it was allowed, root's `mv a LONG` over an existing
/// file, within a directory and across directories, works and replaces the target. (It
/// asked for room as a create does whenever the new name was longer, and so failed with
/// `ENOSPC` on a full filesystem.)
#[test]
fn a_rename_over_a_longer_existing_name_works_on_a_full_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    let r = Caller::ROOT;
    let other = fs
        .create(ROOT_INO, b"o", libc::S_IFDIR | 0o755, 0, None, r)
        .unwrap()
        .ino;
    let short = fs.create(u, b"s", REG, 0, None, r).unwrap().ino;
    let short2 = fs.create(other, b"t", REG, 0, None, r).unwrap().ino;
    fs.write(short, 0, b"new contents", r).unwrap();
    let big = fs.create(u, b"big", REG, 0, None, NOBODY).unwrap();
    fill_data(&fs, big.ino, NOBODY);
    let made = fill_metadata(&fs, u, NOBODY, 'a');
    let long = made
        .iter()
        .find(|(n, _)| n.len() == 255)
        .expect("a long name");
    let long2 = made
        .iter()
        .rev()
        .find(|(n, _)| n.len() == 255)
        .expect("another long name");
    assert_ne!(long.1, long2.1);
    assert_eq!(
        fs.create(u, b"x", REG, 0, None, r)
            .map(drop)
            .map_err(|e| e.errno()),
        Err(libc::ENOSPC),
        "the metadata room is used up"
    );
    fs.rename(u, b"s", u, &long.0, 0)
        .expect("rename over a longer name in the same directory");
    assert_eq!(fs.lookup(u, &long.0).unwrap().ino, short);
    assert_eq!(fs.read(short, 0, 100).unwrap(), b"new contents");
    assert!(fs.lookup(u, b"s").is_err());
    fs.rename(other, b"t", u, &long2.0, 0)
        .expect("rename over a longer name across directories");
    assert_eq!(fs.lookup(u, &long2.0).unwrap().ino, short2);
    fs.check_space().unwrap();
    fs.unmount().expect("unmount");
    drop(fs);
    assert_clean(&path);
}

/// Replacing an extended attribute's value with one no longer than it grows nothing: after
/// nobody took every data block and all the metadata room it was allowed, root can still
/// shrink or rewrite in place an attribute (it asked for room whatever the new value, and
/// failed with `ENOSPC`); a longer value may still be refused, with nothing changed.
#[test]
fn replacing_an_xattr_with_a_shorter_value_works_on_a_full_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    Fs::mkfs(&path, 4 << 20, true).unwrap();
    let fs = open(&path);
    let u = user_dir(&fs, b"u");
    let r = Caller::ROOT;
    let f = fs.create(ROOT_INO, b"f", REG, 0, None, r).unwrap().ino;
    fs.setxattr(f, b"user.k", &[0x61; 1000], 0).unwrap();
    let big = fs.create(u, b"big", REG, 0, None, NOBODY).unwrap();
    fill_data(&fs, big.ino, NOBODY);
    fill_metadata(&fs, u, NOBODY, 'a');
    assert_eq!(
        fs.setxattr(f, b"user.new", b"v", 0).map_err(|e| e.errno()),
        Err(libc::ENOSPC),
        "the metadata room is used up"
    );
    fs.setxattr(f, b"user.k", &[0x62; 1000], libc::XATTR_REPLACE)
        .expect("rewriting a value of the same length");
    fs.setxattr(f, b"user.k", b"short", 0)
        .expect("replacing a value with a shorter one");
    assert_eq!(fs.getxattr(f, b"user.k").unwrap(), b"short");
    fs.check_space().unwrap();
    fs.unmount().expect("unmount");
    drop(fs);
    assert_clean(&path);
}

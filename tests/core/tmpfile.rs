//! `O_TMPFILE` in the filesystem core (no FUSE): which inodes with no links may be linked,
//! what a refused tmpfile changes (nothing), and what a crash leaves: an unnamed tmpfile is
//! an orphan that the next open frees, blocks and all; a named one is a file like any other.

use std::path::{Path, PathBuf};

use pinfs::error::FsError;
use pinfs::fs::{Caller, Fs, FsOptions};
use pinfs::meta::inode::ROOT_INO;

const REG: u32 = libc::S_IFREG;

fn image(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("img");
    Fs::mkfs(&path, 64 << 20, false).unwrap();
    path
}

fn open(path: &Path) -> Fs {
    Fs::open(path, FsOptions::default()).unwrap()
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("expected an error").errno()
}

#[test]
fn only_a_tmpfile_made_without_o_excl_takes_a_first_name() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&image(&dir));
    let (a, fh) = fs
        .tmpfile(
            ROOT_INO,
            REG | 0o600,
            0,
            libc::O_RDWR | libc::O_EXCL,
            Caller::ROOT,
        )
        .unwrap();
    assert_eq!(a.nlink, 0);
    assert_eq!(
        errno(fs.link(a.ino, ROOT_INO, b"x")),
        libc::ENOENT,
        "O_EXCL"
    );
    fs.release(a.ino, fh).unwrap();
    fs.forget(a.ino, 1);
    assert_eq!(
        errno(fs.getattr(a.ino)),
        libc::ENOENT,
        "freed at its last close"
    );

    let (a, fh) = fs
        .tmpfile(ROOT_INO, REG | 0o600, 0, libc::O_RDWR, Caller::ROOT)
        .unwrap();
    assert_eq!(fs.link(a.ino, ROOT_INO, b"x").unwrap().nlink, 1);
    fs.remove(ROOT_INO, b"x", false).unwrap();
    assert_eq!(
        errno(fs.link(a.ino, ROOT_INO, b"y")),
        libc::ENOENT,
        "named once and unlinked: an unlinked file like any other"
    );
    fs.release(a.ino, fh).unwrap();
    fs.forget(a.ino, 2);

    // A file unlinked while open never takes a name either.
    let f = fs
        .create(ROOT_INO, b"f", REG | 0o644, 0, None, Caller::ROOT)
        .unwrap();
    let fh = fs.open_file(f.ino, libc::O_RDWR).unwrap();
    fs.remove(ROOT_INO, b"f", false).unwrap();
    assert_eq!(errno(fs.link(f.ino, ROOT_INO, b"f2")), libc::ENOENT);
    fs.release(f.ino, fh).unwrap();
    fs.forget(f.ino, 1);
    assert!(
        fs.readdir(ROOT_INO, 0, 100).unwrap().len() == 2,
        "only . and .."
    );
    fs.unmount().unwrap();
}

#[test]
fn a_refused_tmpfile_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(&image(&dir));
    let f = fs
        .create(ROOT_INO, b"file", REG | 0o644, 0, None, Caller::ROOT)
        .unwrap();
    let files = fs.statfs().files;
    let root = fs.getattr(ROOT_INO).unwrap();
    for (parent, mode, want) in [
        (ROOT_INO, libc::S_IFDIR | 0o755, libc::EINVAL),
        (ROOT_INO, libc::S_IFIFO | 0o644, libc::EINVAL),
        (f.ino, REG | 0o644, libc::ENOTDIR),
        (999_999, REG | 0o644, libc::ENOENT),
    ] {
        assert_eq!(
            errno(fs.tmpfile(parent, mode, 0, libc::O_RDWR, Caller::ROOT)),
            want,
            "parent {parent}, mode {mode:o}"
        );
    }
    assert_eq!(fs.statfs().files, files);
    // Nor does a good one touch its directory.
    let (t, fh) = fs
        .tmpfile(ROOT_INO, REG | 0o644, 0, libc::O_RDWR, Caller::ROOT)
        .unwrap();
    assert_eq!(
        fs.getattr(ROOT_INO).unwrap(),
        root,
        "the directory is unchanged"
    );
    assert_eq!(fs.statfs().files, files + 1);
    fs.release(t.ino, fh).unwrap();
    fs.forget(t.ino, 1);
    fs.unmount().unwrap();
}

#[test]
fn after_a_crash_an_unnamed_tmpfile_is_freed_and_a_named_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir);
    let fs = open(&path);
    let free0 = fs.statfs().free;
    let caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    let (named, _) = fs
        .tmpfile(ROOT_INO, REG | 0o640, 0, libc::O_RDWR, caller)
        .unwrap();
    fs.write(named.ino, 0, &[0x11; 3 * 4096], caller).unwrap();
    fs.link(named.ino, ROOT_INO, b"named").unwrap();
    let (unnamed, _) = fs
        .tmpfile(ROOT_INO, REG | 0o600, 0, libc::O_RDWR, caller)
        .unwrap();
    fs.write(unnamed.ino, 0, &[0x22; 100 * 4096], caller)
        .unwrap();
    assert_eq!(fs.statfs().free, free0 - 103);
    drop(fs); // a crash: no unmount, both still open

    let report = pinfs::fsck::check(&path, false).unwrap();
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(
        report.orphans,
        vec![unnamed.ino],
        "the unnamed one is an orphan"
    );
    let fs = open(&path);
    assert_eq!(
        errno(fs.getattr(unnamed.ino)),
        libc::ENOENT,
        "freed at mount"
    );
    assert_eq!(fs.statfs().free, free0 - 3, "with its blocks");
    let a = fs.lookup(ROOT_INO, b"named").unwrap();
    assert_eq!((a.ino, a.nlink, a.uid, a.perm), (named.ino, 1, 1000, 0o640));
    assert_eq!(fs.read(a.ino, 0, 3 * 4096).unwrap(), vec![0x11; 3 * 4096]);
    fs.unmount().unwrap();
    drop(fs);
    let report = pinfs::fsck::check(&path, false).unwrap();
    assert_eq!((report.errors.len(), report.orphans.len()), (0, 0));
}

#[test]
fn a_tmpfile_outlives_its_directory_through_checkpoints_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir);
    let fs = open(&path);
    let d = fs
        .create(ROOT_INO, b"d", libc::S_IFDIR | 0o755, 0, None, Caller::ROOT)
        .unwrap();
    let (kept, _) = fs
        .tmpfile(d.ino, REG | 0o644, 0, libc::O_RDWR, Caller::ROOT)
        .unwrap();
    let (lost, _) = fs
        .tmpfile(d.ino, REG | 0o644, 0, libc::O_RDWR, Caller::ROOT)
        .unwrap();
    fs.write(kept.ino, 0, b"kept", Caller::ROOT).unwrap();
    fs.write(lost.ino, 0, b"lost", Caller::ROOT).unwrap();
    // The directory holds no name of theirs: it can go, and a checkpoint holds both files.
    fs.remove(ROOT_INO, b"d", true).unwrap();
    fs.forget(d.ino, 1);
    assert_eq!(
        errno(fs.tmpfile(d.ino, REG | 0o644, 0, libc::O_RDWR, Caller::ROOT)),
        libc::ENOENT,
        "a removed directory takes no tmpfile"
    );
    fs.checkpoint(false).unwrap();
    fs.link(kept.ino, ROOT_INO, b"kept").unwrap();
    drop(fs); // a crash after the checkpoint
    let report = pinfs::fsck::check(&path, false).unwrap();
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(report.orphans, vec![lost.ino]);
    let fs = open(&path);
    assert_eq!(fs.read(kept.ino, 0, 10).unwrap(), b"kept");
    assert_eq!(errno(fs.getattr(lost.ino)), libc::ENOENT);
    fs.unmount().unwrap();
    drop(fs);
    let report = pinfs::fsck::check(&path, false).unwrap();
    assert_eq!((report.errors.len(), report.orphans.len()), (0, 0));
}

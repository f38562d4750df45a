//! A second mount of a mounted image: the same filesystem at a second mount point (one
//! daemon, one FUSE connection, as a kernel filesystem gives a second mount of its device the
//! same superblock; xfstests generic/732), its own per-mount flags, refusals that mount
//! nothing, and the end of the filesystem with its last mount.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use pinfs::holder::client::{Connection, PinOptions};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A second mount point: lazily unmounted when dropped, whatever the test did (a second
/// mount left behind would keep the daemon, and so the first mount's image, alive).
struct Second(PathBuf);

impl std::ops::Deref for Second {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Second {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if is_mount_point(&self.0) {
            let c = cstr(&self.0);
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// `pinfs mount IMAGE DIR -o OPTIONS` for a new directory `name` beside the first mount.
fn mount_again(m: &Mount, name: &str, options: &str) -> (Second, std::process::Output) {
    let dir = m.dir.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    let mut args = vec!["mount", m.image.to_str().unwrap(), dir.to_str().unwrap()];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    let out = pinfs(&args);
    (Second(dir), out)
}

fn umount(p: &Path) -> i32 {
    let c = cstr(p);
    // SAFETY: umount2 with a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        0
    } else {
        errno()
    }
}

/// Is something mounted at `p` (its device differs from its parent's)?
fn is_mount_point(p: &Path) -> bool {
    fs::metadata(p).unwrap().dev() != fs::metadata(p.parent().unwrap()).unwrap().dev()
}

fn statvfs_flags(p: &Path) -> u64 {
    let c = cstr(p);
    // SAFETY: statvfs into a zeroed struct of the right type, with a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_flag
}

#[test]
fn a_second_mount_shows_the_same_filesystem_and_outlives_the_first() {
    if skip_without_fuse("a_second_mount_shows_the_same_filesystem_and_outlives_the_first") {
        return;
    }
    let mut m = Mount::new("64M", "");
    let (two, out) = mount_again(&m, "two", "");
    assert!(out.status.success(), "second mount: {}", stderr(&out));
    let (a, b) = (&m.mnt, &two);
    assert_eq!(
        fs::metadata(a).unwrap().dev(),
        fs::metadata(b).unwrap().dev(),
        "one filesystem: the same device number"
    );
    assert_eq!(m.daemon_pid(), daemon_pid(b), "one daemon serves both");
    // generic/732: renames through one mount point are seen at once through the other.
    fs::create_dir(a.join("A")).unwrap();
    fs::create_dir(a.join("B")).unwrap();
    fs::write(a.join("A/f"), b"732").unwrap();
    fs::rename(a.join("A/f"), a.join("B/f")).unwrap();
    assert_eq!(fs::read(b.join("B/f")).unwrap(), b"732");
    fs::rename(b.join("B/f"), b.join("A/f")).unwrap();
    assert_eq!(fs::read(a.join("A/f")).unwrap(), b"732");
    fs::rename(a.join("A/f"), a.join("B/f")).unwrap();
    assert_eq!(
        err_of(fs::metadata(b.join("A/f"))),
        libc::ENOENT,
        "the name moved away is gone through the other mount point"
    );
    assert_eq!(
        fs::metadata(a.join("B/f")).unwrap().ino(),
        fs::metadata(b.join("B/f")).unwrap().ino()
    );
    // A hard link across the two mount points is a link within one filesystem, but the
    // kernel refuses links and renames between two mounts (EXDEV), as it does for any
    // filesystem mounted twice.
    assert_eq!(
        err_of(fs::hard_link(a.join("B/f"), b.join("g"))),
        libc::EXDEV
    );
    // Pins reach the daemon through either mount point.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(b.join("B/f"))
        .unwrap();
    let mut conn = Connection::for_path(b).unwrap();
    let pin = conn.pin(&f, 0, 4096, PinOptions::default()).unwrap();
    conn.unpin(&pin).unwrap();
    drop((conn, f));
    // The first mount goes; the filesystem stays, served at the second.
    m.umount_keeping_daemon();
    fs::write(b.join("after"), b"still served").unwrap();
    assert_eq!(fs::read(b.join("B/f")).unwrap(), b"732");
    // With the last mount the daemon ends, leaving a clean image with everything in it.
    assert_eq!(umount(b), 0);
    wait_unlocked(&m.image);
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(0), "fsck: {}", stderr(&out));
    m.mount("");
    assert_eq!(fs::read(m.path("after")).unwrap(), b"still served");
    assert_eq!(fs::read(m.path("B/f")).unwrap(), b"732");
}

#[test]
fn a_second_mounts_kernel_flags_are_its_own() {
    if skip_without_fuse("a_second_mounts_kernel_flags_are_its_own") {
        return;
    }
    let m = Mount::new("32M", "");
    let (two, out) = mount_again(&m, "two", "noexec");
    assert!(out.status.success(), "second mount: {}", stderr(&out));
    assert_ne!(statvfs_flags(&two) & libc::ST_NOEXEC, 0);
    assert_eq!(statvfs_flags(&m.mnt) & libc::ST_NOEXEC, 0);
    fs::write(m.path("run"), b"#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(
        m.path("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let through = |dir: &Path| {
        std::process::Command::new(dir.join("run"))
            .status()
            .map(|s| s.code())
            .map_err(|e| e.raw_os_error())
    };
    assert_eq!(through(&m.mnt), Ok(Some(0)));
    assert_eq!(through(&two), Err(Some(libc::EACCES)));
    assert_eq!(umount(&two), 0);
}

#[test]
fn a_second_mount_that_would_change_the_filesystem_is_refused_and_mounts_nothing() {
    if skip_without_fuse(
        "a_second_mount_that_would_change_the_filesystem_is_refused_and_mounts_nothing",
    ) {
        return;
    }
    let mut m = Mount::new("32M", "break_policy=refuse");
    for (options, words) in [
        ("ro", "cannot be read-only"),
        ("break_policy=wait", "'break_policy' differs"),
        ("busy_blocks=off", "'busy_blocks' differs"),
        ("noacl", "'noacl' differs"),
        ("bogus=1", "unknown mount option 'bogus=1'"),
    ] {
        let (dir, out) = mount_again(&m, "two", options);
        let e = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "-o {options}: {e}");
        assert!(e.contains(words), "-o {options}: {e}");
        assert!(!is_mount_point(&dir), "-o {options} mounted something");
    }
    // The same settings are a second mount.
    let (dir, out) = mount_again(&m, "two", "break_policy=refuse,busy_blocks=on");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(umount(&dir), 0);
    // A read-only filesystem takes only read-only second mounts.
    m.remount("ro");
    let (dir, out) = mount_again(&m, "two", "");
    assert!(
        stderr(&out).contains("cannot be read-write"),
        "{}",
        stderr(&out)
    );
    assert!(!is_mount_point(&dir));
    let (dir, out) = mount_again(&m, "two", "ro");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(err_of(fs::write(dir.join("x"), b"x")), libc::EROFS);
    assert_eq!(umount(&dir), 0);
}

#[test]
fn sigterm_ends_every_mount_of_the_image() {
    if skip_without_fuse("sigterm_ends_every_mount_of_the_image") {
        return;
    }
    let mut m = Mount::new("32M", "");
    let (two, out) = mount_again(&m, "two", "");
    assert!(out.status.success(), "{}", stderr(&out));
    let (three, out) = mount_again(&m, "three", "");
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(two.join("kept"), b"written before the signal").unwrap();
    // A file open on one of the second mounts keeps it busy: the signal ends it anyway.
    let open = fs::File::open(three.join("kept")).unwrap();
    let pid = m.daemon_pid();
    // SAFETY: kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_unlocked(&m.image);
    drop(open);
    for p in [&m.mnt, &two, &three] {
        assert!(!is_mount_point(p), "{} is still mounted", p.display());
    }
    m.forget_mount();
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(0), "fsck: {}", stderr(&out));
    m.mount("");
    assert_eq!(
        fs::read(m.path("kept")).unwrap(),
        b"written before the signal"
    );
}

#[test]
fn a_mount_with_a_volatile_cache_is_shared_too() {
    if skip_without_fuse("a_mount_with_a_volatile_cache_is_shared_too") {
        return;
    }
    // The daemon maps a copy of the image: the image file is recognised all the same.
    let m = Mount::new("32M", "volatile_cache");
    let (two, out) = mount_again(&m, "two", "");
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(two.join("f"), b"through the second").unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"through the second");
    assert_eq!(umount(&two), 0);
}

#[test]
fn a_bind_of_a_subdirectory_is_never_shared_as_the_filesystem_root() {
    if skip_without_fuse("a_bind_of_a_subdirectory_is_never_shared_as_the_filesystem_root") {
        return;
    }
    let mut m = Mount::new("64M", "");
    fs::create_dir(m.path("sub")).unwrap();
    fs::write(m.path("sub/inner"), b"in sub").unwrap();
    fs::write(m.path("top"), b"at the root").unwrap();
    // `mount --bind MNT/sub B`, then the first mount goes: the filesystem lives on at B, whose
    // root is the directory `sub`.
    let b = Second(m.dir.path().join("b"));
    fs::create_dir_all(&*b).unwrap();
    let (src, dst) = (cstr(&m.path("sub")), cstr(&b));
    // SAFETY: mount(2) with NUL-terminated paths, no type or data: a bind mount.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    m.umount_keeping_daemon();
    // A mount of the image must show its root or nothing: not `sub` as if it were the root.
    let (c, out) = mount_again(&m, "c", "");
    assert!(
        !c.join("inner").exists(),
        "the second mount shows the subdirectory as its root"
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(!is_mount_point(&c), "a refused mount mounts nothing");
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    // With the bind gone the daemon ends, and the image mounts again with both files.
    assert_eq!(umount(&b), 0);
    wait_unlocked(&m.image);
    m.mount("");
    assert_eq!(fs::read(m.path("top")).unwrap(), b"at the root");
    assert_eq!(fs::read(m.path("sub/inner")).unwrap(), b"in sub");
}

//! Inode flags through the kernel (`FS_IOC_GETFLAGS`/`SETFLAGS`, what `chattr` and `lsattr`
//! use, and `FS_IOC_FSGETXATTR`/`FSSETXATTR`, what `xfs_io chattr` uses): immutable and
//! append-only refuse what they refuse on ext4 or XFS, with `EPERM`; the flags persist
//! across unmount and kill -9; only the owner or root may set them, and only with
//! `CAP_LINUX_IMMUTABLE` the `i` and `a` flags.

#[path = "../common/mod.rs"]
mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

const GETFLAGS: libc::c_ulong = 0x8008_6601;
const SETFLAGS: libc::c_ulong = 0x4008_6602;
const FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FSSETXATTR: libc::c_ulong = 0x401c_5820;
const SYNC: i32 = 0x8;
const IMMUTABLE: i32 = 0x10;
const APPEND: i32 = 0x20;
const NODUMP: i32 = 0x40;
const NOATIME: i32 = 0x80;
/// `FS_COMPR_FL`: a flag pinfs does not store.
const COMPR: i32 = 0x4;

/// The flags of `p` (opened read-only, as lsattr does), or the errno.
fn get_flags(p: &Path) -> Result<i32, i32> {
    let f = fs::File::open(p).map_err(|e| e.raw_os_error().unwrap())?;
    let mut flags: i32 = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), GETFLAGS, &mut flags as *mut i32) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(flags)
}

/// Sets the flags of `p` as chattr does; the errno on failure.
fn set_flags(p: &Path, flags: i32) -> Result<(), i32> {
    let f = fs::File::open(p).map_err(|e| e.raw_os_error().unwrap())?;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), SETFLAGS, &flags as *const i32) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(())
}

/// `struct fsxattr` of `p` as xfs_io reads it: its xflags.
fn get_xflags(p: &Path) -> u32 {
    let f = fs::File::open(p).unwrap();
    let mut buf = [0u8; 28];
    // SAFETY: FS_IOC_FSGETXATTR writes a 28-byte struct fsxattr into the buffer.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FSGETXATTR, buf.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "FS_IOC_FSGETXATTR: {}",
        std::io::Error::last_os_error()
    );
    u32::from_ne_bytes(buf[..4].try_into().unwrap())
}

fn set_xflags(p: &Path, xflags: u32) -> Result<(), i32> {
    let f = fs::File::open(p).unwrap();
    let mut buf = [0u8; 28];
    buf[..4].copy_from_slice(&xflags.to_ne_bytes());
    // SAFETY: FS_IOC_FSSETXATTR reads a 28-byte struct fsxattr from the buffer.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FSSETXATTR, buf.as_ptr()) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(())
}

fn removexattr(p: &Path, name: &str) -> i32 {
    let (p, n) = (cstr(p), std::ffi::CString::new(name).unwrap());
    // SAFETY: NUL-terminated path and name.
    let rc = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if rc < 0 {
        errno()
    } else {
        0
    }
}

/// `utimensat(path, NULL)`: times to now (a touch), or the errno.
fn touch(p: &Path) -> i32 {
    let p = cstr(p);
    // SAFETY: NUL-terminated path; a null times pointer means now.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) };
    if rc < 0 {
        errno()
    } else {
        0
    }
}

/// `utimensat` to a given time, or the errno.
fn set_times(p: &Path) -> i32 {
    let p = cstr(p);
    let t = [libc::timespec {
        tv_sec: 1000,
        tv_nsec: 0,
    }; 2];
    // SAFETY: NUL-terminated path and two valid timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t.as_ptr(), 0) };
    if rc < 0 {
        errno()
    } else {
        0
    }
}

fn fallocate(f: &fs::File, mode: i32, off: i64, len: i64) -> i32 {
    // SAFETY: fallocate on an open descriptor.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) };
    if rc < 0 {
        errno()
    } else {
        0
    }
}

fn open_errno(p: &Path, flags: i32) -> i32 {
    let p = cstr(p);
    // SAFETY: NUL-terminated path; the descriptor, if any, is closed at once.
    let fd = unsafe { libc::open(p.as_ptr(), flags) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: fd was just opened here.
    unsafe { libc::close(fd) };
    0
}

/// Every change an immutable file or directory refuses, each with EPERM; reads still work.
fn assert_immutable(m: &Mount, before: &fs::File) {
    let (f, d) = (m.path("f"), m.path("d"));
    let perm = libc::EPERM;
    assert_eq!(open_errno(&f, libc::O_WRONLY), perm, "open for writing");
    assert_eq!(
        open_errno(&f, libc::O_RDWR | libc::O_APPEND),
        perm,
        "open to append"
    );
    assert_eq!(
        err_of(OpenOptions::new().write(true).truncate(true).open(&f)),
        perm
    );
    assert_eq!(err_of(fs::File::options().write(true).open(&f)), perm);
    assert_eq!(err_of(nix_truncate(&f, 1)), perm, "truncate");
    assert_eq!(
        err_of(fs::set_permissions(&f, fs::Permissions::from_mode(0o600))),
        perm
    );
    assert_eq!(
        err_of(std::os::unix::fs::chown(&f, Some(7), None)),
        perm,
        "chown"
    );
    assert_eq!(touch(&f), perm, "touch");
    assert_eq!(set_times(&f), perm, "utimes");
    assert_eq!(setxattr(&f, "user.b", b"2", 0), perm, "setxattr");
    assert_eq!(removexattr(&f, "user.a"), perm, "removexattr");
    assert_eq!(err_of(fs::remove_file(&f)), perm, "unlink");
    assert_eq!(err_of(fs::rename(&f, m.path("g"))), perm, "rename");
    assert_eq!(err_of(fs::hard_link(&f, m.path("h"))), perm, "link");
    fs::write(m.path("other"), b"o").unwrap();
    assert_eq!(
        err_of(fs::rename(m.path("other"), &f)),
        perm,
        "rename over it"
    );
    // A descriptor opened for writing before the flag was set writes nothing.
    assert_eq!(
        err_of(before.write_at(b"x", 0)),
        perm,
        "write through an older descriptor"
    );
    assert_eq!(
        err_of(before.write_at(b"x", 3)),
        perm,
        "append through an older descriptor"
    );
    assert_eq!(fallocate(before, 0, 0, 8192), perm, "fallocate");
    assert_eq!(fallocate(before, 3, 0, 1), perm, "punch");
    // The directory: no entry added or removed.
    assert_eq!(err_of(fs::write(d.join("new"), b"")), perm, "create in it");
    assert_eq!(err_of(fs::create_dir(d.join("sub"))), perm, "mkdir in it");
    assert_eq!(err_of(fs::remove_file(d.join("x"))), perm, "unlink in it");
    assert_eq!(
        err_of(fs::rename(d.join("x"), m.path("x2"))),
        perm,
        "rename out of it"
    );
    assert_eq!(err_of(fs::remove_dir(&d)), perm, "rmdir");
    // Nothing changed, and reading works.
    assert_eq!(fs::read(&f).unwrap(), b"abc");
    assert_eq!(fs::read(d.join("x")).unwrap(), b"x");
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.len(), md.mode() & 0o7777, md.nlink()), (3, 0o644, 1));
    assert!(!m.path("g").exists() && !m.path("h").exists());
}

fn nix_truncate(p: &Path, len: i64) -> std::io::Result<()> {
    let p = cstr(p);
    // SAFETY: NUL-terminated path.
    if unsafe { libc::truncate(p.as_ptr(), len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn immutable_setup(m: &Mount) -> fs::File {
    fs::write(m.path("f"), b"abc").unwrap();
    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(setxattr(&m.path("f"), "user.a", b"1", 0), 0);
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/x"), b"x").unwrap();
    let before = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    assert_eq!(get_flags(&m.path("f")), Ok(0));
    set_flags(&m.path("f"), IMMUTABLE).unwrap();
    set_flags(&m.path("d"), IMMUTABLE).unwrap();
    assert_eq!(get_flags(&m.path("f")), Ok(IMMUTABLE));
    before
}

#[test]
fn an_immutable_file_refuses_every_change_and_stays_so_across_remount() {
    if skip_without_fuse("flags") {
        return;
    }
    let mut m = Mount::new("32M", "");
    let before = immutable_setup(&m);
    assert_immutable(&m, &before);
    drop(before);
    m.remount("");
    assert_eq!(get_flags(&m.path("f")), Ok(IMMUTABLE), "after a remount");
    let before = fs::File::open(m.path("f")).unwrap();
    assert_eq!(open_errno(&m.path("f"), libc::O_WRONLY), libc::EPERM);
    // Clearing the flag is the one change allowed, and then everything works again.
    set_flags(&m.path("f"), 0).unwrap();
    set_flags(&m.path("d"), 0).unwrap();
    drop(before);
    fs::write(m.path("f"), b"new").unwrap();
    fs::remove_file(m.path("d/x")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    fs::remove_file(m.path("f")).unwrap();
    m.umount();
    let out = m.fsck();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn flags_survive_kill_9() {
    if skip_without_fuse("flags") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (image, mnt) = (dir.path().join("i.img"), dir.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    mkfs(&image, "32M");
    let mut daemon = start_daemon(&image, &mnt, "");
    fs::write(mnt.join("a"), b"a").unwrap();
    fs::write(mnt.join("i"), b"i").unwrap();
    set_flags(&mnt.join("a"), APPEND | NODUMP).unwrap();
    set_flags(&mnt.join("i"), IMMUTABLE | NOATIME).unwrap();
    // chattr's journal entry is durable once an fsync of anything has returned.
    fs::File::open(mnt.join("a")).unwrap().sync_all().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let c = cstr(&mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    wait_unlocked(&image);
    let (code, report) = fsck_report(&image);
    assert_eq!(code, 0, "{report}");
    let mut daemon = start_daemon(&image, &mnt, "");
    assert_eq!(get_flags(&mnt.join("a")), Ok(APPEND | NODUMP));
    assert_eq!(get_flags(&mnt.join("i")), Ok(IMMUTABLE | NOATIME));
    assert_eq!(err_of(fs::remove_file(mnt.join("i"))), libc::EPERM);
    assert_eq!(err_of(fs::remove_file(mnt.join("a"))), libc::EPERM);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    assert!(daemon.wait().unwrap().success());
}

#[test]
fn an_append_only_file_takes_appends_and_nothing_else() {
    if skip_without_fuse("flags") {
        return;
    }
    let m = Mount::new("32M", "");
    let f = m.path("log");
    fs::write(&f, b"one\n").unwrap();
    let before = OpenOptions::new().write(true).open(&f).unwrap();
    set_flags(&f, APPEND).unwrap();
    let perm = libc::EPERM;
    assert_eq!(
        open_errno(&f, libc::O_WRONLY),
        perm,
        "open for writing without O_APPEND"
    );
    assert_eq!(
        open_errno(&f, libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC),
        perm
    );
    let mut log = OpenOptions::new().append(true).open(&f).unwrap();
    log.write_all(b"two\n").unwrap();
    assert_eq!(err_of(before.write_at(b"X", 0)), perm, "an overwrite");
    assert_eq!(err_of(nix_truncate(&f, 0)), perm, "truncate");
    assert_eq!(err_of(before.set_len(1)), perm, "ftruncate");
    assert_eq!(fallocate(&before, 3, 0, 4), perm, "punch");
    assert_eq!(fallocate(&before, 0x10, 0, 4), perm, "zero range");
    assert_eq!(
        fallocate(&before, 1, 0, 1 << 20),
        0,
        "preallocation is allowed"
    );
    assert_eq!(
        err_of(fs::set_permissions(&f, fs::Permissions::from_mode(0o600))),
        perm
    );
    assert_eq!(set_times(&f), perm, "utimes to a given time");
    assert_eq!(touch(&f), 0, "a touch is allowed");
    assert_eq!(setxattr(&f, "user.x", b"1", 0), perm);
    assert_eq!(err_of(fs::remove_file(&f)), perm, "unlink");
    assert_eq!(err_of(fs::rename(&f, m.path("moved"))), perm, "rename");
    assert_eq!(err_of(fs::hard_link(&f, m.path("l"))), perm, "link");
    let mut s = String::new();
    fs::File::open(&f).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "one\ntwo\n");
    // An append-only directory gains entries and loses none.
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/old"), b"").unwrap();
    set_flags(&m.path("d"), APPEND).unwrap();
    fs::write(m.path("d/new"), b"n").unwrap();
    assert_eq!(
        err_of(fs::remove_file(m.path("d/new"))),
        perm,
        "unlink in it"
    );
    assert_eq!(
        err_of(fs::rename(m.path("d/old"), m.path("out"))),
        perm,
        "rename out"
    );
    assert!(m.path("d/old").exists() && m.path("d/new").exists());
}

#[test]
fn xfs_io_style_xflags_and_unknown_flags() {
    if skip_without_fuse("flags") {
        return;
    }
    let m = Mount::new("32M", "");
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    // FS_XFLAG_IMMUTABLE | FS_XFLAG_NODUMP: the same flags as chattr's i and d.
    set_xflags(&f, 0x08 | 0x80).unwrap();
    assert_eq!(get_flags(&f), Ok(IMMUTABLE | NODUMP));
    assert_eq!(get_xflags(&f), 0x08 | 0x80);
    set_flags(&f, SYNC | NOATIME).unwrap();
    assert_eq!(get_xflags(&f), 0x20 | 0x40);
    // A flag pinfs does not store: EOPNOTSUPP, and nothing changes.
    assert_eq!(set_flags(&f, SYNC | COMPR), Err(libc::EOPNOTSUPP));
    assert_eq!(
        set_xflags(&f, 0x1),
        Err(libc::EOPNOTSUPP),
        "FS_XFLAG_REALTIME"
    );
    assert_eq!(get_flags(&f), Ok(SYNC | NOATIME));
    // A sync file still takes writes (each one durable before it returns).
    fs::write(&f, b"synced").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"synced");
    // chattr's ctime moves, as xfstests generic/277 checks.
    let before = fs::metadata(&f).unwrap().ctime_nsec();
    let before_s = fs::metadata(&f).unwrap().ctime();
    std::thread::sleep(std::time::Duration::from_millis(20));
    set_flags(&f, 0).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert!(
        (md.ctime(), md.ctime_nsec()) > (before_s, before),
        "ctime after chattr"
    );
}

#[test]
fn only_the_owner_sets_flags_and_immutable_needs_the_capability() {
    if skip_without_fuse("flags") {
        return;
    }
    let m = Mount::new("32M", "");
    fs::create_dir(m.path("tmp")).unwrap();
    fs::set_permissions(m.path("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(m.path("tmp/roots"), b"r").unwrap();
    fs::set_permissions(m.path("tmp/roots"), fs::Permissions::from_mode(0o666)).unwrap();
    let (tmp, roots) = (m.path("tmp"), m.path("tmp/roots"));
    assert!(as_nobody(move || {
        let mine = tmp.join("mine");
        fs::write(&mine, b"m").is_ok()
            && set_flags(&mine, NODUMP).is_ok()
            && get_flags(&mine) == Ok(NODUMP)
            && set_flags(&mine, IMMUTABLE) == Err(libc::EPERM)
            && set_flags(&mine, APPEND) == Err(libc::EPERM)
            && set_flags(&roots, NODUMP) == Err(libc::EPERM)
            && get_flags(&roots) == Ok(0)
    }));
    // Root's immutable file keeps nobody out too, whatever its mode.
    set_flags(&m.path("tmp/roots"), IMMUTABLE).unwrap();
    let roots = m.path("tmp/roots");
    assert!(as_nobody(move || {
        err_of(OpenOptions::new().write(true).open(&roots)) == libc::EPERM
            && err_of(fs::remove_file(&roots)) == libc::EPERM
    }));
    set_flags(&m.path("tmp/roots"), 0).unwrap();
}

#[test]
fn a_noatime_file_keeps_its_access_time() {
    if skip_without_fuse("flags") {
        return;
    }
    let m = Mount::new("32M", "strictatime");
    let f = m.path("f");
    fs::write(&f, b"data").unwrap();
    set_flags(&f, NOATIME).unwrap();
    let atime = |p: &Path| {
        let md = fs::metadata(p).unwrap();
        (md.atime(), md.atime_nsec())
    };
    let before = atime(&f);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut s = String::new();
    fs::File::open(&f).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(
        atime(&f),
        before,
        "chattr +A: a read leaves the access time"
    );
    set_flags(&f, 0).unwrap();
    let before = atime(&f);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut s = String::new();
    fs::File::open(&f).unwrap().read_to_string(&mut s).unwrap();
    assert_ne!(
        atime(&f),
        before,
        "without +A the read under strictatime updates it"
    );
}

#[test]
fn the_32_bit_ioctl_numbers_do_not_bypass_the_kernels_capability_check() {
    // A 64-bit process's ioctl with the 32-bit numbers (`FS_IOC32_SETFLAGS`,
    // `_IOW('f', 2, int)`) is not the VFS's: FUSE forwards it to the daemon as it is, with
    // none of the kernel's owner or `CAP_LINUX_IMMUTABLE` checks. An owner without the
    // capability could clear root's `chattr +i` through it (and set `i` or `a` itself).
    if skip_without_fuse("flags") {
        return;
    }
    const SETFLAGS32: libc::c_ulong = 0x4004_6602;
    const GETFLAGS32: libc::c_ulong = 0x8004_6601;
    fn ioctl32(p: &Path, cmd: libc::c_ulong, flags: &mut i32) -> i32 {
        let Ok(f) = fs::File::open(p) else {
            return -1;
        };
        // SAFETY: the 32-bit flag ioctls read or write one int through the pointer, which
        // is valid.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), cmd, flags as *mut i32) };
        if rc < 0 {
            errno()
        } else {
            0
        }
    }
    let m = Mount::new("32M", "");
    fs::create_dir(m.path("tmp")).unwrap();
    fs::set_permissions(m.path("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let theirs = m.path("tmp/theirs");
    fs::write(&theirs, b"kept").unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    set_flags(&theirs, IMMUTABLE).unwrap();
    let (t, tmp) = (theirs.clone(), m.path("tmp"));
    assert!(as_nobody(move || {
        let mine = tmp.join("mine");
        fs::write(&mine, b"m").is_ok()
            && ioctl32(&t, SETFLAGS32, &mut 0) == libc::ENOTTY
            && ioctl32(&t, GETFLAGS32, &mut 0) == libc::ENOTTY
            && ioctl32(&mine, SETFLAGS32, &mut IMMUTABLE.clone()) == libc::ENOTTY
            && ioctl32(&mine, SETFLAGS32, &mut APPEND.clone()) == libc::ENOTTY
            && get_flags(&mine) == Ok(0)
            && err_of(OpenOptions::new().write(true).open(&t)) == libc::EPERM
    }));
    assert_eq!(get_flags(&theirs), Ok(IMMUTABLE));
    assert_eq!(fs::read(&theirs).unwrap(), b"kept");
    set_flags(&theirs, 0).unwrap();
}

#[test]
fn chattr_i_or_a_waits_for_the_writable_pins_to_go() {
    // A writable pin's holder stores into the file's blocks with no request the daemon sees:
    // `chattr +i` while one is live left an "immutable" file its holder kept changing (on
    // ext4 the next store through a shared mapping of it faults). It is EBUSY until the
    // writable pins are gone, and a read-only pin does not stand in the way.
    if skip_without_fuse("flags") {
        return;
    }
    use std::io::BufRead;
    let m = Mount::new("32M", "");
    let path = m.path("dev");
    fs::write(&path, vec![0u8; 8192]).unwrap();
    let pin = |extra: &[&str]| {
        let mut holder = std::process::Command::new(BIN)
            .args(["pin", path.to_str().unwrap(), "--len", "4096"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("\"extents\""), "pin prints its grant: {line}");
        holder
    };
    let mut writer = pin(&["--write-byte", "0x58", "--every", "10"]);
    assert_eq!(set_flags(&path, IMMUTABLE), Err(libc::EBUSY));
    assert_eq!(set_flags(&path, APPEND), Err(libc::EBUSY));
    assert_eq!(get_flags(&path), Ok(0), "a refused chattr changes nothing");
    assert_eq!(
        set_flags(&path, NODUMP),
        Ok(()),
        "other flags are not in its way"
    );
    writer.kill().unwrap();
    writer.wait().unwrap();
    // The daemon hears of the holder's end when its connection closes: wait for that.
    let mut tries = 0;
    while set_flags(&path, NODUMP | IMMUTABLE) == Err(libc::EBUSY) && tries < 500 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        tries += 1;
    }
    assert_eq!(get_flags(&path), Ok(NODUMP | IMMUTABLE));
    set_flags(&path, 0).unwrap();
    let mut reader = pin(&["--read-only"]);
    assert_eq!(set_flags(&path, IMMUTABLE), Ok(()));
    set_flags(&path, 0).unwrap();
    reader.kill().unwrap();
    reader.wait().unwrap();
}

#[test]
fn an_immutable_files_other_flags_stay_until_immutable_goes() {
    // As ext4 (`ext4_ioctl_check_immutable`): while `i` stays set, no other flag changes,
    // for root too, and the change time stays; clearing `i` may change others with it.
    if skip_without_fuse("flags") {
        return;
    }
    let m = Mount::new("32M", "");
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    set_flags(&f, IMMUTABLE).unwrap();
    let before = fs::metadata(&f).unwrap();
    for other in [NODUMP, SYNC, NOATIME] {
        assert_eq!(
            set_flags(&f, IMMUTABLE | other),
            Err(libc::EPERM),
            "{other:#x}"
        );
    }
    assert_eq!(get_flags(&f), Ok(IMMUTABLE));
    let after = fs::metadata(&f).unwrap();
    assert_eq!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );
    assert_eq!(set_flags(&f, NODUMP), Ok(()));
    assert_eq!(get_flags(&f), Ok(NODUMP));
    assert_eq!(set_flags(&f, NODUMP | IMMUTABLE), Ok(()));
    assert_eq!(set_flags(&f, 0), Ok(()));
}

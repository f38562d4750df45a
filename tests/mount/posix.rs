//! POSIX behaviour on a real mount, errno included.

#[path = "../common/mod.rs"]
mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use common::*;

macro_rules! mount_or_skip {
    ($size:expr, $opts:expr) => {{
        if skip_without_fuse(module_path!()) {
            return;
        }
        Mount::new($size, $opts)
    }};
}

#[test]
fn data_and_names_survive_remount() {
    let mut m = mount_or_skip!("64M", "");
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/f"), b"persistent").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(m.path("big"), &big).unwrap();
    std::os::unix::fs::symlink("a/b/f", m.path("link")).unwrap();
    m.remount("");
    assert_eq!(fs::read(m.path("a/b/f")).unwrap(), b"persistent");
    assert_eq!(fs::read(m.path("big")).unwrap(), big);
    assert_eq!(
        fs::read_link(m.path("link")).unwrap().to_str(),
        Some("a/b/f")
    );
    assert_eq!(fs::read(m.path("link")).unwrap(), b"persistent");
    m.umount();
    let out = m.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn directory_errors() {
    let m = mount_or_skip!("32M", "");
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), b"x").unwrap();
    assert_eq!(err_of(fs::create_dir(m.path("d"))), libc::EEXIST);
    assert_eq!(err_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    assert_eq!(err_of(fs::remove_dir(m.path("d/f"))), libc::ENOTDIR);
    assert_eq!(err_of(fs::remove_file(m.path("d"))), libc::EISDIR);
    assert_eq!(err_of(fs::read(m.path("nope"))), libc::ENOENT);
    assert_eq!(err_of(fs::write(m.path("d/f/g"), b"")), libc::ENOTDIR);
    let long = "x".repeat(256);
    assert_eq!(err_of(fs::write(m.path(&long), b"")), libc::ENAMETOOLONG);
    let ok = "y".repeat(255);
    fs::write(m.path(&ok), b"").unwrap();
    let md = fs::metadata(m.path("d")).unwrap();
    assert_eq!(md.nlink(), 2);
    fs::create_dir(m.path("d/sub")).unwrap();
    assert_eq!(
        fs::metadata(m.path("d")).unwrap().nlink(),
        3,
        "a subdirectory adds a link to its parent"
    );
    fs::remove_dir(m.path("d/sub")).unwrap();
    fs::remove_file(m.path("d/f")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
}

fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> i32 {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: renameat2 with NUL-terminated paths relative to the cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

#[test]
fn rename_variants() {
    let m = mount_or_skip!("32M", "");
    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("b"), b"B").unwrap();
    assert_eq!(
        renameat2(&m.path("a"), &m.path("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(
        renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE),
        0
    );
    assert_eq!(fs::read(m.path("a")).unwrap(), b"B");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"A");
    assert_eq!(
        renameat2(&m.path("a"), &m.path("zz"), libc::RENAME_EXCHANGE),
        libc::ENOENT
    );
    fs::rename(m.path("a"), m.path("b")).unwrap();
    assert_eq!(fs::read(m.path("b")).unwrap(), b"B");
    assert!(!m.path("a").exists());
    fs::create_dir_all(m.path("d1/d2")).unwrap();
    fs::create_dir(m.path("e")).unwrap();
    fs::write(m.path("e/f"), b"").unwrap();
    assert_eq!(
        err_of(fs::rename(m.path("d1"), m.path("d1/d2/d3"))),
        libc::EINVAL
    );
    assert_eq!(
        err_of(fs::rename(m.path("d1"), m.path("e"))),
        libc::ENOTEMPTY
    );
    assert_eq!(err_of(fs::rename(m.path("b"), m.path("d1"))), libc::EISDIR);
    assert_eq!(err_of(fs::rename(m.path("d1"), m.path("b"))), libc::ENOTDIR);
    assert_eq!(
        err_of(fs::rename(m.path("b"), "/tmp/pinfs-exdev-target")),
        libc::EXDEV
    );
    // A directory moved to another parent: link counts follow.
    fs::rename(m.path("d1/d2"), m.path("e/d2")).unwrap();
    assert_eq!(fs::metadata(m.path("d1")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.path("e")).unwrap().nlink(), 3);
    // Exchange of a directory and a file across parents.
    assert_eq!(
        renameat2(&m.path("e/d2"), &m.path("b"), libc::RENAME_EXCHANGE),
        0
    );
    assert!(m.path("b").is_dir() && m.path("e/d2").is_file());
    assert_eq!(fs::metadata(m.path("e")).unwrap().nlink(), 2);
}

#[test]
fn rename_whiteout_leaves_a_whiteout_at_the_source_in_the_same_step() {
    let mut m = mount_or_skip!("32M", "");
    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("over"), b"old").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::create_dir(m.path("sub")).unwrap();
    fs::set_permissions(m.path("sub"), fs::Permissions::from_mode(0o777)).unwrap();
    for (from, to) in [("a", "b"), ("b", "over"), ("d", "d2")] {
        assert_eq!(
            renameat2(&m.path(from), &m.path(to), libc::RENAME_WHITEOUT),
            0,
            "{from} -> {to}"
        );
        // overlayfs's whiteout: a character device 0:0 with mode 0, owned by the caller.
        let w = fs::symlink_metadata(m.path(from)).unwrap();
        assert_eq!(w.mode(), libc::S_IFCHR, "{from}: mode {:o}", w.mode());
        assert_eq!((w.rdev(), w.uid(), w.nlink()), (0, 0, 1), "{from}");
    }
    assert_eq!(fs::read(m.path("over")).unwrap(), b"A");
    assert!(m.path("d2").is_dir());
    // With a flag it cannot be combined with, it is refused and nothing changes.
    fs::write(m.path("sub/x"), b"x").unwrap();
    assert_eq!(
        renameat2(
            &m.path("over"),
            &m.path("b"),
            libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE
        ),
        libc::EINVAL
    );
    assert_eq!(fs::read(m.path("over")).unwrap(), b"A");
    // Since Linux 5.8 anyone may leave a whiteout (it needs no CAP_MKNOD): the caller owns it.
    fs::set_permissions(m.path("sub/x"), fs::Permissions::from_mode(0o666)).unwrap();
    let (x, y) = (m.path("sub/x"), m.path("sub/y"));
    assert!(as_nobody(
        move || renameat2(&x, &y, libc::RENAME_WHITEOUT) == 0
    ));
    assert_eq!(fs::read(m.path("sub/y")).unwrap(), b"x");
    let w = fs::symlink_metadata(m.path("sub/x")).unwrap();
    assert_eq!((w.mode(), w.uid()), (libc::S_IFCHR, 65534));
    // Whiteouts are inodes like others: they survive a remount, and fsck is clean.
    m.remount("");
    assert_eq!(
        fs::symlink_metadata(m.path("a")).unwrap().mode(),
        libc::S_IFCHR
    );
    assert_eq!(fs::read(m.path("over")).unwrap(), b"A");
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

#[test]
fn hard_links_and_unlinked_open_files() {
    let m = mount_or_skip!("32M", "");
    fs::write(m.path("f"), b"data").unwrap();
    fs::hard_link(m.path("f"), m.path("g")).unwrap();
    assert_eq!(fs::metadata(m.path("f")).unwrap().nlink(), 2);
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(
        err_of(fs::hard_link(m.path("d"), m.path("d2"))),
        libc::EPERM
    );
    assert_eq!(
        err_of(fs::hard_link(m.path("f"), m.path("g"))),
        libc::EEXIST
    );
    fs::remove_file(m.path("f")).unwrap();
    assert_eq!(fs::metadata(m.path("g")).unwrap().nlink(), 1);

    let payload = vec![0x5a_u8; 8 << 20];
    fs::write(m.path("victim"), &payload).unwrap();
    let free_before = statvfs_free(&m.mnt);
    let mut f = File::open(m.path("victim")).unwrap();
    fs::remove_file(m.path("victim")).unwrap();
    assert!(!m.path("victim").exists());
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, payload, "an unlinked file stays readable while open");
    assert_eq!(
        statvfs_free(&m.mnt),
        free_before,
        "its blocks stay allocated while open"
    );
    drop(f);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while statvfs_free(&m.mnt) < free_before + 2048 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        statvfs_free(&m.mnt) >= free_before + 2048,
        "blocks come back after the last close"
    );
}

fn statvfs_free(p: &std::path::Path) -> u64 {
    let c = cstr(p);
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bfree as u64
    }
}

#[test]
fn symlinks_and_special_files() {
    let m = mount_or_skip!("32M", "dev");
    std::os::unix::fs::symlink("loop", m.path("loop")).unwrap();
    assert_eq!(err_of(File::open(m.path("loop"))), libc::ELOOP);
    let target = "t".repeat(4000);
    std::os::unix::fs::symlink(&target, m.path("long")).unwrap();
    assert_eq!(
        fs::read_link(m.path("long")).unwrap().to_str().unwrap(),
        target
    );
    assert_eq!(fs::symlink_metadata(m.path("long")).unwrap().len(), 4000);
    let fifo = cstr(&m.path("fifo"));
    let chr = cstr(&m.path("null"));
    let sock = cstr(&m.path("sock"));
    // SAFETY: mknod with NUL-terminated paths.
    unsafe {
        assert_eq!(libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0), 0);
        assert_eq!(
            libc::mknod(chr.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
            0
        );
        assert_eq!(libc::mknod(sock.as_ptr(), libc::S_IFSOCK | 0o644, 0), 0);
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(m.path("fifo")).unwrap().file_type().is_fifo());
    assert!(fs::metadata(m.path("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    let md = fs::metadata(m.path("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    // With the dev option the node works: writes to /dev/null vanish.
    fs::write(m.path("null"), b"gone").unwrap();
}

fn utimens(p: &std::path::Path, a: (i64, i64), mt: (i64, i64)) {
    let c = cstr(p);
    let ts = [
        libc::timespec {
            tv_sec: a.0,
            tv_nsec: a.1,
        },
        libc::timespec {
            tv_sec: mt.0,
            tv_nsec: mt.1,
        },
    ];
    // SAFETY: utimensat with a NUL-terminated path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
        0
    );
}

#[test]
fn attributes_and_timestamps() {
    let mut m = mount_or_skip!("32M", "");
    fs::write(m.path("f"), b"x").unwrap();
    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(m.path("f")).unwrap().mode() & 0o7777, 0o4751);
    std::os::unix::fs::chown(m.path("f"), Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(m.path("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.mode() & 0o7777, 0o0751, "chown clears set-uid");
    utimens(
        &m.path("f"),
        (1_000_000_000, 123_456_789),
        (1_100_000_000, 987_654_321),
    );
    let md = fs::metadata(m.path("f")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_100_000_000, 987_654_321));
    let ctime_before = (md.ctime(), md.ctime_nsec());
    std::thread::sleep(std::time::Duration::from_millis(20));
    OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap()
        .write_all(b"y")
        .unwrap();
    let md = fs::metadata(m.path("f")).unwrap();
    assert!(md.mtime() > 1_100_000_000, "a write updates mtime");
    assert!(
        (md.ctime(), md.ctime_nsec()) > ctime_before,
        "a write updates ctime"
    );
    let dir_m = fs::metadata(&m.mnt).unwrap().mtime_nsec();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(m.path("g"), b"").unwrap();
    let md_root = fs::metadata(&m.mnt).unwrap();
    assert!(
        md_root.mtime_nsec() != dir_m || md_root.mtime() > 0,
        "creating a name changes the directory's mtime"
    );
    // Timestamps and ownership survive a remount.
    utimens(&m.path("g"), (5, 6), (7, 8));
    m.remount("");
    let md = fs::metadata(m.path("g")).unwrap();
    assert_eq!(
        (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec()),
        (5, 6, 7, 8)
    );
    let md = fs::metadata(m.path("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
}

#[test]
fn permissions_for_other_users() {
    let m = mount_or_skip!("32M", "allow_other");
    fs::write(m.path("root-file"), b"secret").unwrap();
    fs::set_permissions(m.path("root-file"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.path("tmp")).unwrap();
    fs::set_permissions(m.path("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(m.path("tmp/roots"), b"").unwrap();
    fs::create_dir(m.path("sgid")).unwrap();
    std::os::unix::fs::chown(m.path("sgid"), Some(0), Some(4242)).unwrap();
    fs::set_permissions(m.path("sgid"), fs::Permissions::from_mode(0o2777)).unwrap();
    let (rootfile, sticky_victim, tmp, sgid) = (
        m.path("root-file"),
        m.path("tmp/roots"),
        m.path("tmp"),
        m.path("sgid"),
    );
    assert!(as_nobody(|| {
        let write_denied = err_of(OpenOptions::new().write(true).open(&rootfile)) == libc::EACCES;
        let sticky = err_of(fs::remove_file(&sticky_victim)) == libc::EPERM;
        let own = fs::write(tmp.join("mine"), b"m").is_ok();
        let md = fs::metadata(tmp.join("mine")).unwrap();
        let owner = md.uid() == 65534 && md.gid() == 65534;
        let removable = fs::remove_file(tmp.join("mine")).is_ok();
        let inherits = fs::write(sgid.join("f"), b"").is_ok()
            && fs::metadata(sgid.join("f")).unwrap().gid() == 4242;
        let dir_inherits = fs::create_dir(sgid.join("d")).is_ok()
            && fs::metadata(sgid.join("d")).unwrap().mode() & 0o2000 != 0;
        let chmod_denied = err_of(fs::set_permissions(
            &rootfile,
            fs::Permissions::from_mode(0o777),
        )) == libc::EPERM;
        write_denied
            && sticky
            && own
            && owner
            && removable
            && inherits
            && dir_inherits
            && chmod_denied
    }));
    // A write by another user clears set-uid and set-gid (with group execute).
    fs::write(m.path("tmp/suid"), b"").unwrap();
    fs::set_permissions(m.path("tmp/suid"), fs::Permissions::from_mode(0o6777)).unwrap();
    let suid = m.path("tmp/suid");
    assert!(as_nobody(|| OpenOptions::new()
        .write(true)
        .open(&suid)
        .and_then(|mut f| f.write_all(b"x"))
        .is_ok()));
    assert_eq!(
        fs::metadata(m.path("tmp/suid")).unwrap().mode() & 0o7777,
        0o0777
    );
}

fn getxattr(p: &std::path::Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: getxattr into a buffer of `size` bytes.
    let rc = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if rc < 0 {
        return Err(errno());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

#[test]
fn extended_attributes() {
    let mut m = mount_or_skip!("32M", "");
    let f = m.path("f");
    fs::write(&f, b"").unwrap();
    assert_eq!(setxattr(&f, "user.a", b"1", 0), 0);
    assert_eq!(setxattr(&f, "trusted.b", b"22", 0), 0);
    assert_eq!(setxattr(&f, "security.c", b"333", 0), 0);
    assert_eq!(
        setxattr(&f, "user.a", b"x", libc::XATTR_CREATE),
        libc::EEXIST
    );
    assert_eq!(
        setxattr(&f, "user.new", b"x", libc::XATTR_REPLACE),
        libc::ENODATA
    );
    assert_eq!(setxattr(&f, "bogus.ns", b"x", 0), libc::EOPNOTSUPP);
    assert_eq!(setxattr(&f, "user.big", &vec![0u8; 65537], 0), libc::E2BIG);
    assert_eq!(setxattr(&f, "user.max", &vec![7u8; 65536], 0), 0);
    assert_eq!(getxattr(&f, "trusted.b", 100), Ok(b"22".to_vec()));
    assert_eq!(getxattr(&f, "security.c", 1), Err(libc::ERANGE));
    assert_eq!(getxattr(&f, "user.none", 10), Err(libc::ENODATA));
    m.remount("");
    let f = m.path("f");
    assert_eq!(getxattr(&f, "user.max", 70000).unwrap().len(), 65536);
    let c = cstr(&f);
    let mut buf = vec![0u8; 1000];
    // SAFETY: listxattr into a 1000-byte buffer.
    let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let names: Vec<&[u8]> = buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(names.len(), 4);
    let n = CString::new("user.a").unwrap();
    // SAFETY: removexattr with NUL-terminated strings.
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }, 0);
    assert_eq!(getxattr(&f, "user.a", 10), Err(libc::ENODATA));
}

fn seek(f: &File, off: i64, whence: i32) -> Result<i64, i32> {
    // SAFETY: lseek on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> i32 {
    // SAFETY: fallocate on an open descriptor.
    if unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) } == 0 {
        0
    } else {
        errno()
    }
}

#[test]
fn sparse_files_and_seek_data_hole() {
    let m = mount_or_skip!("64M", "");
    let f = new_file(m.path("sparse"));
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", (1 << 30) + 5).unwrap();
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), (1 << 30) + 9);
    assert_eq!(md.blocks(), 16, "only the two written blocks are allocated");
    let mut buf = vec![1u8; 8192];
    f.read_exact_at(&mut buf, 1 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "holes read as zeros");
    assert_eq!(seek(&f, 0, libc::SEEK_DATA), Ok(0));
    assert_eq!(seek(&f, 0, libc::SEEK_HOLE), Ok(4096));
    assert_eq!(seek(&f, 5000, libc::SEEK_DATA), Ok(1 << 30));
    assert_eq!(seek(&f, (1 << 30) + 2, libc::SEEK_HOLE), Ok((1 << 30) + 9));
    assert_eq!(seek(&f, (1 << 30) + 9, libc::SEEK_DATA), Err(libc::ENXIO));
    assert_eq!(seek(&f, (1 << 30) + 9, libc::SEEK_HOLE), Err(libc::ENXIO));
}

#[test]
fn fallocate_modes() {
    let m = mount_or_skip!("64M", "");
    let f = new_file(m.path("f"));
    assert_eq!(fallocate(&f, 0, 0, 1 << 20), 0);
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    assert_eq!(f.metadata().unwrap().blocks(), 2048);
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20),
        0
    );
    assert_eq!(
        f.metadata().unwrap().len(),
        1 << 20,
        "KEEP_SIZE keeps the size"
    );
    assert_eq!(f.metadata().unwrap().blocks(), 4096);
    f.write_all_at(&vec![0xab; 1 << 20], 0).unwrap();
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
        libc::EOPNOTSUPP,
        "punch needs KEEP_SIZE"
    );
    assert_eq!(
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            1000,
            10000
        ),
        0
    );
    let mut buf = vec![0u8; 12000];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..1000].iter().all(|&b| b == 0xab));
    assert!(
        buf[1000..11000].iter().all(|&b| b == 0),
        "the punched range reads as zeros"
    );
    assert!(buf[11000..].iter().all(|&b| b == 0xab));
    assert_eq!(
        f.metadata().unwrap().blocks(),
        4096 - 8,
        "the one whole block inside is freed"
    );
    assert_eq!(seek(&f, 4096, libc::SEEK_HOLE), Ok(4096));
    assert_eq!(fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 20000, 100000), 0);
    let mut buf = vec![1u8; 100000];
    f.read_exact_at(&mut buf, 20000).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, (1 << 20) - 10, 100),
        0
    );
    assert_eq!(
        f.metadata().unwrap().len(),
        (1 << 20) + 90,
        "ZERO_RANGE without KEEP_SIZE extends"
    );
    assert_eq!(
        fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        fallocate(&f, 0, 0, 1 << 30),
        libc::ENOSPC,
        "more than the filesystem has"
    );
}

#[test]
fn truncate_zeroes_what_it_cuts() {
    let m = mount_or_skip!("32M", "");
    let f = new_file(m.path("t"));
    f.write_all_at(&[0xff; 10000], 0).unwrap();
    f.set_len(5000).unwrap();
    f.set_len(10000).unwrap();
    let mut buf = vec![0u8; 10000];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..5000].iter().all(|&b| b == 0xff));
    assert!(
        buf[5000..].iter().all(|&b| b == 0),
        "bytes past a truncation read as zeros after growing back"
    );
    assert_eq!(f.metadata().unwrap().blocks(), 16);
    f.set_len(0).unwrap();
    assert_eq!(f.metadata().unwrap().blocks(), 0);
}

#[test]
fn copy_append_direct_and_large_offsets() {
    let m = mount_or_skip!("64M", "");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.path("src"), &data).unwrap();
    let src = File::open(m.path("src")).unwrap();
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.path("dst"))
        .unwrap();
    let (mut off_in, mut off_out) = (0i64, 0i64);
    // SAFETY: copy_file_range between two open descriptors with offsets on our stack.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            data.len(),
            0,
        )
    };
    assert_eq!(n, data.len() as isize);
    drop(dst);
    assert_eq!(fs::read(m.path("dst")).unwrap(), data);

    let mut a = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path("log"))
        .unwrap();
    a.write_all(b"one\n").unwrap();
    let mut b = OpenOptions::new().append(true).open(m.path("log")).unwrap();
    b.write_all(b"two\n").unwrap();
    a.write_all(b"three\n").unwrap();
    assert_eq!(fs::read(m.path("log")).unwrap(), b"one\ntwo\nthree\n");

    let mut d = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.path("direct"))
        .unwrap();
    let layout = std::alloc::Layout::from_size_align(1 << 16, 4096).unwrap();
    // SAFETY: an aligned allocation for O_DIRECT, freed below.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    // SAFETY: p points to 64 KiB we own.
    let buf = unsafe { std::slice::from_raw_parts_mut(p, 1 << 16) };
    buf.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 7) as u8);
    d.write_all(buf).unwrap();
    d.seek(SeekFrom::Start(0)).unwrap();
    let expect = buf.to_vec();
    buf.fill(0);
    d.read_exact(buf).unwrap();
    assert_eq!(&buf[..], &expect[..]);
    // SAFETY: freeing what we allocated with the same layout.
    unsafe { std::alloc::dealloc(p, layout) };

    let big = new_file(m.path("big"));
    let at = 5u64 << 30;
    big.write_all_at(b"past 4 GiB", at).unwrap();
    let mut back = [0u8; 10];
    big.read_exact_at(&mut back, at).unwrap();
    assert_eq!(&back, b"past 4 GiB");
    assert_eq!(big.metadata().unwrap().len(), at + 10);
    assert_eq!(
        fallocate(&big, 0, i64::MAX - 10, 100),
        libc::EFBIG,
        "past the largest file size"
    );
    // SAFETY: ftruncate on an open descriptor.
    assert_eq!(unsafe { libc::ftruncate(big.as_raw_fd(), -1) }, -1);
    assert_eq!(errno(), libc::EINVAL);
}

#[test]
fn shared_writable_mmap() {
    let m = mount_or_skip!("32M", "");
    let f = new_file(m.path("mm"));
    f.set_len(3 * 4096).unwrap();
    // SAFETY: a shared mapping of 3 pages of an open file; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: p maps 3 pages.
    let s = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, 3 * 4096) };
    s[4096..4096 + 11].copy_from_slice(b"via mapping");
    // SAFETY: msync and munmap of our mapping.
    unsafe {
        assert_eq!(libc::msync(p, 3 * 4096, libc::MS_SYNC), 0);
    }
    let mut buf = [0u8; 11];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(
        &buf, b"via mapping",
        "read() sees stores made through a shared mapping"
    );
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 3 * 4096) };
    // SAFETY: map again to see a write() made through the file.
    f.write_all_at(b"via write", 8192).unwrap();
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * 4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: p maps 3 pages.
    let s = unsafe { std::slice::from_raw_parts(p as *const u8, 3 * 4096) };
    assert_eq!(&s[8192..8192 + 9], b"via write");
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, 3 * 4096) };
}

/// A page that a shared mapping faults in while a direct write of it is on its way (the
/// kernel dropped the mapping's pages of the range before sending the write) must show the
/// written bytes once the write returns, and keep them (xfstests generic/346: a `pwrite`
/// lost beside stores through a mapping). One large write is sent in chunks after one
/// invalidation, so a thread storing into the range's end over and over meanwhile faults
/// its pages in from the image before their chunk lands; the kernel's invalidation after
/// the write then writes such a dirty page back, old bytes and all, over the written ones.
#[test]
fn a_write_reaches_pages_mapped_while_it_was_on_its_way() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = mount_or_skip!("256M", "");
    const LEN: usize = 64 << 20;
    const PAGE: usize = 4096;
    let f = new_file(m.path("mapped"));
    f.set_len(LEN as u64).unwrap();
    // SAFETY: a shared read-write mapping of LEN bytes of an open file; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let base = p as usize;
    // The last 8 MiB of the range: the chunks the write sends last.
    let tail = (LEN - (8 << 20))..LEN;
    let mut lost = 0;
    for round in 0..3u8 {
        let fill = 0xa0 + round;
        let writing = AtomicBool::new(true);
        std::thread::scope(|s| {
            // Stores the byte the write puts there too, so that every byte of the file
            // must end as `fill` whichever lands last.
            let storer = s.spawn(|| {
                while writing.load(Ordering::SeqCst) {
                    for off in tail.clone().step_by(PAGE) {
                        // SAFETY: off < LEN, inside the shared writable mapping.
                        unsafe { std::ptr::write_volatile((base + off) as *mut u8, fill) };
                    }
                }
            });
            f.write_all_at(&vec![fill; LEN], 0).unwrap();
            writing.store(false, Ordering::SeqCst);
            storer.join().unwrap();
        });
        // SAFETY: the mapping is LEN bytes long and still mapped.
        let seen = unsafe { std::slice::from_raw_parts(base as *const u8, LEN) };
        lost += seen
            .chunks(PAGE)
            .filter(|pg| pg.iter().any(|&b| b != fill))
            .count();
        // What the image has (a direct read writes dirty pages back first).
        let mut back = vec![0u8; LEN];
        f.read_exact_at(&mut back, 0).unwrap();
        lost += back
            .chunks(PAGE)
            .filter(|pg| pg.iter().any(|&b| b != fill))
            .count();
    }
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, LEN) };
    assert_eq!(
        lost, 0,
        "pages of a shared mapping missed bytes of a write that had returned"
    );
}

#[test]
fn statfs_counts_are_real() {
    let m = mount_or_skip!("64M", "");
    let c = cstr(&m.mnt);
    let stat = || {
        // SAFETY: statvfs into a zeroed struct.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
            s
        }
    };
    let before = stat();
    assert_eq!(before.f_bsize, 4096);
    assert!(before.f_blocks > 15000 && before.f_blocks <= 16384);
    fs::write(m.path("f"), vec![1u8; 10 << 20]).unwrap();
    let after = stat();
    assert_eq!(
        before.f_bfree - after.f_bfree,
        2560,
        "10 MiB is 2560 blocks"
    );
    assert_eq!(before.f_ffree - after.f_ffree, 1);
    fs::remove_file(m.path("f")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(stat().f_bfree, before.f_bfree);
}

#[test]
fn enospc_leaves_a_consistent_filesystem() {
    let mut m = mount_or_skip!("16M", "");
    let chunk = vec![0x11u8; 1 << 20];
    let mut f = File::create(m.path("fill")).unwrap();
    let mut written = 0usize;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    assert!(
        written > 10 << 20,
        "most of the 16 MiB is usable ({written} bytes)"
    );
    drop(f);
    assert_eq!(err_of(fs::write(m.path("more"), &chunk)), libc::ENOSPC);
    fs::remove_file(m.path("fill")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    fs::write(m.path("after"), &chunk).unwrap();
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

#[test]
fn many_entries_are_listed_once() {
    let m = mount_or_skip!("64M", "");
    for i in 0..2000 {
        File::create(m.path(&format!("e{i:05}"))).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2000);
    names.dedup();
    assert_eq!(names.len(), 2000);
}

/// What a pin holder writes straight into the image is what the next read() returns: the
/// kernel page cache does not keep file data (direct I/O).
#[test]
fn writes_into_the_image_are_visible_to_the_next_read() {
    let m = mount_or_skip!("32M", "");
    let marker: Vec<u8> = b"PINFS-UNIQUE-MARKER-"
        .iter()
        .cycle()
        .take(4096)
        .copied()
        .collect();
    fs::write(m.path("f"), &marker).unwrap();
    assert_eq!(
        fs::read(m.path("f")).unwrap(),
        marker,
        "first read (would populate a page cache)"
    );
    let img = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&m.image)
        .unwrap();
    let len = img.metadata().unwrap().len();
    let mut at = None;
    let mut block = vec![0u8; 4096];
    for off in (0..len).step_by(4096) {
        img.read_exact_at(&mut block, off).unwrap();
        if block == marker {
            at = Some(off);
            break;
        }
    }
    let at = at.expect("the file's block is in the image");
    img.write_all_at(b"written by a device", at).unwrap();
    let back = fs::read(m.path("f")).unwrap();
    assert_eq!(&back[..19], b"written by a device");
}

/// xfstests generic/736: a listing that renames each entry it reads ends, and lists each
/// entry at most once (a renamed entry is new to the directory and comes after the end of
/// the listing that began before it). A rewind starts a listing that sees the new names.
#[test]
fn a_listing_that_renames_what_it_reads_ends() {
    let m = mount_or_skip!("64M", "");
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    const N: usize = 5000;
    for i in 0..N {
        File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let c = cstr(&dir);
    // SAFETY: opendir of a NUL-terminated path; the stream is closed below.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!d.is_null(), "opendir: {}", std::io::Error::last_os_error());
    let mut seen = 0usize;
    let mut names = std::collections::HashMap::<String, usize>::new();
    loop {
        // SAFETY: readdir of the live stream; the entry is read before the next call.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the entry readdir returned.
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if name == "." || name == ".." {
            continue;
        }
        seen += 1;
        assert!(seen <= N, "the listing passed {N} entries: it does not end");
        *names.entry(name.clone()).or_default() += 1;
        let to = match name.strip_suffix("_r") {
            Some(base) => base.to_string(),
            None => format!("{name}_r"),
        };
        fs::rename(dir.join(&name), dir.join(&to)).unwrap();
    }
    assert_eq!(seen, N, "each entry that was there at opendir is listed");
    assert!(names.values().all(|&n| n == 1), "no entry listed twice");
    // After a rewind the listing sees the new names.
    // SAFETY: rewinddir and closedir of the live stream, which is not used after.
    let renamed = unsafe {
        libc::rewinddir(d);
        let mut n = 0;
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            if std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_bytes()
                .ends_with(b"_r")
            {
                n += 1;
            }
        }
        libc::closedir(d);
        n
    };
    assert_eq!(renamed, N, "after rewinddir every renamed entry is listed");
}

/// chown(2) of a non-directory clears set-uid, even to the same owner and by root, and
/// clears set-gid only with group-exec or for a caller outside the file's group (xfstests
/// generic/193; the kernel's `setattr_should_drop_sgid`).
#[test]
fn chown_clears_set_id_bits_as_the_kernel_does() {
    let m = mount_or_skip!("64M", "allow_other");
    let mode_of = |p: &std::path::Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let chown = |p: &std::path::Path, uid: u32, gid: u32| {
        let c = cstr(p);
        // SAFETY: chown of a NUL-terminated path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0, "chown");
    };
    let cases = [
        // (mode, new owner, mode after), all as root
        (0o2644, (65534, 65534), 0o2644), // -rw-r-Sr--: set-gid without group-exec stays
        (0o2754, (65534, 65534), 0o0754), // set-gid with group-exec goes
        (0o4755, (0, 0), 0o0755),         // set-uid goes, even chown to the same owner
        (0o6755, (0, 65534), 0o0755),     // both go (group-exec)
        (0o6644, (65534, 0), 0o2644),     // set-uid goes, set-gid stays
    ];
    for (k, (mode, (uid, gid), want)) in cases.into_iter().enumerate() {
        let p = m.path(&format!("f{k}"));
        File::create(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        chown(&p, uid, gid);
        assert_eq!(
            mode_of(&p),
            want,
            "mode {mode:o} after chown to {uid}:{gid}"
        );
    }
    // An unprivileged owner in the file's group keeps set-gid; set-uid goes.
    let p = m.path("mine");
    File::create(&p).unwrap();
    chown(&p, 65534, 65534);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o6644)).unwrap();
    let pc = p.clone();
    assert!(as_nobody(move || {
        let c = cstr(&pc);
        // SAFETY: chown of a NUL-terminated path.
        unsafe { libc::chown(c.as_ptr(), 65534, 65534) == 0 }
    }));
    assert_eq!(mode_of(&p), 0o2644);
    // Directories keep both.
    let d = m.path("dir");
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o6755)).unwrap();
    chown(&d, 65534, 65534);
    assert_eq!(mode_of(&d), 0o6755);
}

/// A file handle from name_to_handle_at(2), held in a buffer of the largest size.
struct Handle {
    buf: Vec<u64>,
}

impl Handle {
    fn of(p: &std::path::Path) -> Handle {
        let mut buf = vec![0u64; 17]; // 8 header bytes + MAX_HANDLE_SZ (128)
        buf[0] = 128; // handle_bytes (u32), handle_type (i32) = 0
        let mut mount_id = 0;
        let c = cstr(p);
        // SAFETY: the buffer is a file_handle with room for 128 handle bytes; the path is
        // NUL-terminated.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut mount_id,
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        Handle { buf }
    }

    /// open_by_handle_at(2) through any descriptor on the mount: the file, or the errno.
    fn open(&mut self, mnt: &std::path::Path) -> Result<File, i32> {
        let m = File::open(mnt).unwrap();
        // SAFETY: the buffer holds the handle name_to_handle_at filled in.
        let fd = unsafe {
            libc::open_by_handle_at(m.as_raw_fd(), self.buf.as_mut_ptr().cast(), libc::O_RDONLY)
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: a new descriptor we own.
        Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }
}

fn drop_caches() {
    // Syncs nothing the tests need; evicts dentries and inodes the kernel does not use.
    fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
}

/// xfstests generic/426, 467, 477: file handles resolve after the kernel dropped the inode
/// and after a remount (LOOKUP of "." and "..", FUSE_EXPORT_SUPPORT); a removed file's handle
/// is ESTALE, also when its inode number is used again.
#[test]
fn file_handles_survive_cache_eviction_and_remount() {
    let mut m = mount_or_skip!("64M", "");
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), b"by handle").unwrap();
    fs::write(m.path("gone"), b"x").unwrap();
    let mut f = Handle::of(&m.path("d/f"));
    let mut d = Handle::of(&m.path("d"));
    let mut g = Handle::of(&m.path("gone"));
    let read = |file: File| {
        let mut s = String::new();
        let mut file = file;
        file.read_to_string(&mut s).unwrap();
        s
    };
    assert_eq!(read(f.open(&m.mnt).unwrap()), "by handle");
    drop_caches();
    assert_eq!(
        read(f.open(&m.mnt).unwrap()),
        "by handle",
        "after the kernel dropped the inode"
    );
    assert!(d.open(&m.mnt).is_ok(), "a directory's handle");
    fs::remove_file(m.path("gone")).unwrap();
    drop_caches();
    assert_eq!(
        g.open(&m.mnt).map(|_| ()),
        Err(libc::ESTALE),
        "a removed file's handle"
    );
    m.remount("");
    assert_eq!(
        read(f.open(&m.mnt).unwrap()),
        "by handle",
        "after a remount"
    );
    let dir = d.open(&m.mnt).unwrap();
    let c = CString::new("f").unwrap();
    // SAFETY: openat relative to the directory opened by handle, with a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "a name under a directory opened by handle");
    // SAFETY: closing the descriptor openat returned.
    unsafe { libc::close(fd) };
    assert_eq!(g.open(&m.mnt).map(|_| ()), Err(libc::ESTALE));
}

/// xfstests generic/683, 684, 685: fallocate, punch hole and zero range by an unprivileged
/// user clear set-uid, and set-gid with group-exec, as a write does; root's do not.
#[test]
fn fallocate_punch_and_zero_range_by_a_user_clear_set_id_bits() {
    let m = mount_or_skip!("64M", "allow_other");
    const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    for (k, mode) in [0, PUNCH, libc::FALLOC_FL_ZERO_RANGE]
        .into_iter()
        .enumerate()
    {
        let p = m.path(&format!("f{k}"));
        fs::write(&p, vec![1u8; 16384]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)).unwrap();
        let pc = p.clone();
        assert!(as_nobody(move || {
            let f = OpenOptions::new().write(true).open(&pc).unwrap();
            // SAFETY: fallocate on a descriptor we own.
            unsafe { libc::fallocate(f.as_raw_fd(), mode, 0, 8192) == 0 }
        }));
        assert_eq!(
            fs::metadata(&p).unwrap().mode() & 0o7777,
            0o0777,
            "fallocate mode {mode:#x} by a user"
        );
        // Root keeps them.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)).unwrap();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        // SAFETY: fallocate on a descriptor we own.
        assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), mode, 0, 8192) }, 0);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o6777);
    }
}

/// A read through an O_NOATIME descriptor leaves atime alone, even under strictatime; only the
/// owner or root may open so (EPERM otherwise, the kernel's check).
#[test]
fn o_noatime_reads_leave_atime_alone() {
    let m = mount_or_skip!("64M", "strictatime,allow_other");
    let p = m.path("f");
    fs::write(&p, b"data").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let atime = |p: &std::path::Path| {
        let md = fs::metadata(p).unwrap();
        (md.atime(), md.atime_nsec())
    };
    let before = atime(&p);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(&p)
        .unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    drop(f);
    assert_eq!(atime(&p), before, "an O_NOATIME read");
    let mut s = String::new();
    File::open(&p).unwrap().read_to_string(&mut s).unwrap();
    assert_ne!(atime(&p), before, "a plain read under strictatime");
    let pc = p.clone();
    assert!(as_nobody(move || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(&pc)
            .err()
            .and_then(|e| e.raw_os_error())
            == Some(libc::EPERM)
    }));
}

/// `statx` of the mode alone: served from the kernel's attribute cache while it is valid.
fn mode_alone(p: &std::path::Path) -> u32 {
    let c = cstr(p);
    // SAFETY: a zeroed statx is a valid buffer for statx to fill.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and a valid statx buffer.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MODE, &mut stx) };
    assert_eq!(rc, 0, "statx: {}", std::io::Error::last_os_error());
    stx.stx_mode as u32 & 0o7777
}

/// A write or fallocate by another user clears set-id bits in the daemon, and the mode
/// the kernel cached must say so by the time the call returns: a `stat` right after it sees
/// the bits gone (the harness's generic/026 once saw 2767 under load).
#[test]
fn set_id_bits_a_write_clears_are_gone_in_the_next_stat() {
    let m = mount_or_skip!("32M", "");
    fs::create_dir(m.path("d")).unwrap();
    fs::set_permissions(m.path("d"), fs::Permissions::from_mode(0o777)).unwrap();
    let g = m.path("d/g");
    fs::write(&g, b"x").unwrap();
    for round in 0..100 {
        fs::set_permissions(&g, fs::Permissions::from_mode(0o2767)).unwrap();
        // The kernel caches the mode it was just told.
        assert_eq!(mode_alone(&g), 0o2767);
        let p = g.clone();
        let how = round % 3;
        assert!(
            as_nobody(move || {
                let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
                let done = match how {
                    0 => f.write_at(b"y", 1).is_ok(),
                    1 => {
                        // SAFETY: fallocate on an open descriptor.
                        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 8192) };
                        rc == 0
                    }
                    _ => f.write_at(b"zz", 4096).is_ok(),
                };
                // As `stat -c %a` asks: the mode alone, which the kernel does not drop from
                // its cache after a write.
                done && mode_alone(&p) == 0o767
            }),
            "round {round}: after a write by uid 65534 the next stat shows 0767"
        );
    }
}

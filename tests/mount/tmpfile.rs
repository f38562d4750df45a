//! `O_TMPFILE` on a real mount: a file with no name, open; `linkat` of its descriptor names
//! it (unless it was opened with `O_EXCL`); one that is never named is freed at its last
//! close, and after a crash at the next mount; a named one survives kill -9. Pins on it
//! work as on any open file.

#[path = "../common/mod.rs"]
mod common;

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use pinfs::holder::client::{Connection, PinOptions};

macro_rules! mount_or_skip {
    ($size:expr, $opts:expr) => {{
        if skip_without_fuse(module_path!()) {
            return;
        }
        Mount::new($size, $opts)
    }};
}

/// `open(dir, O_TMPFILE | flags, mode)`: the file, or the errno.
fn tmpfile(dir: &Path, flags: i32, mode: u32) -> Result<File, i32> {
    let c = cstr(dir);
    // SAFETY: open with a NUL-terminated path; a descriptor it returns is ours to own.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | flags, mode) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `linkat` of an open file to `to` through `/proc/self/fd` (what needs no capability):
/// 0 or the errno.
fn link_proc(f: &File, to: &Path) -> i32 {
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
    let to = cstr(to);
    // SAFETY: linkat with NUL-terminated paths relative to the cwd.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

/// `linkat(fd, "", AT_FDCWD, to, AT_EMPTY_PATH)` (needs CAP_DAC_READ_SEARCH): 0 or the errno.
fn link_empty_path(f: &File, to: &Path) -> i32 {
    let to = cstr(to);
    // SAFETY: linkat of an open descriptor with an empty (NUL-terminated) path.
    let rc = unsafe {
        libc::linkat(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn free_blocks(p: &Path) -> u64 {
    let c = cstr(p);
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bfree as u64
    }
}

/// Waits (at most 5 s) until `mnt` has at least `want` free blocks (a close and the kernel's
/// FORGET reach the daemon after close(2) returns); returns the count then.
fn await_free(mnt: &Path, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while free_blocks(mnt) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    free_blocks(mnt)
}

/// A daemon started by the test, killed (SIGKILL) and its mount detached if the test ends
/// before it does, so that a failing test leaves no mount behind.
struct Daemon(std::process::Child, std::path::PathBuf);

impl Daemon {
    fn start(image: &Path, mnt: &Path) -> Daemon {
        Daemon(start_daemon(image, mnt, ""), mnt.to_path_buf())
    }
    /// kill -9, and the dead daemon's mount detached (it answers ENOTCONN).
    fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let c = cstr(&self.1);
        // SAFETY: umount2 with a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    /// A clean unmount, and the daemon's exit.
    fn umount(mut self) {
        let c = cstr(&self.1);
        // SAFETY: umount2 with a NUL-terminated path.
        assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
        assert!(self.0.wait().unwrap().success(), "the daemon exits cleanly");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.kill_9();
        }
    }
}

fn fsck_ok(image: &Path) -> serde_json::Value {
    let out = pinfs(&["fsck", "--json", image.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck --json: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(0), "fsck: {json}");
    json
}

#[test]
fn o_tmpfile_is_an_open_file_with_no_name_that_linkat_names() {
    let mut m = mount_or_skip!("64M", "");
    fs::write(m.path("existing"), b"x").unwrap();
    let f = tmpfile(&m.mnt, libc::O_RDWR, 0o640).expect("O_TMPFILE");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    f.write_all_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(back == data, "a tmpfile reads back what was written");
    let md = f.metadata().unwrap();
    assert_eq!(md.nlink(), 0, "a tmpfile has no links");
    assert_eq!(
        md.mode(),
        libc::S_IFREG | 0o640,
        "a regular file, with the mode asked for"
    );
    assert_eq!((md.uid(), md.len()), (0, data.len() as u64));
    assert_eq!(names(&m.mnt), ["existing"], "a tmpfile is in no directory");

    assert_eq!(link_proc(&f, &m.path("named")), 0, "linkat names it");
    assert_eq!(names(&m.mnt), ["existing", "named"]);
    assert_eq!(f.metadata().unwrap().nlink(), 1);
    assert!(
        fs::read(m.path("named")).unwrap() == data,
        "the name shows its data"
    );
    assert_eq!(
        fs::metadata(m.path("named")).unwrap().ino(),
        md.ino(),
        "the same inode"
    );
    // Once named, it is a file like any other.
    assert_eq!(link_proc(&f, &m.path("named")), libc::EEXIST);
    assert_eq!(link_empty_path(&f, &m.path("second")), 0);
    assert_eq!(f.metadata().unwrap().nlink(), 2);
    drop(f);
    m.remount("");
    assert!(
        fs::read(m.path("named")).unwrap() == data,
        "it survives a remount"
    );
    assert_eq!(fs::metadata(m.path("second")).unwrap().nlink(), 2);
    m.umount();
    let json = fsck_ok(&m.image);
    assert_eq!(json["orphans"], 0, "{json}");
}

#[test]
fn o_tmpfile_errnos() {
    let m = mount_or_skip!("64M", "allow_other");
    // O_EXCL: the file may never get a name.
    let f = tmpfile(&m.mnt, libc::O_RDWR | libc::O_EXCL, 0o600).unwrap();
    f.write_all_at(b"secret", 0).unwrap();
    assert_eq!(link_proc(&f, &m.path("x")), libc::ENOENT);
    assert_eq!(link_empty_path(&f, &m.path("x")), libc::ENOENT);
    assert!(names(&m.mnt).is_empty());
    drop(f);
    // Named once, then unlinked while open: like any unlinked file, no second first name.
    let f = tmpfile(&m.mnt, libc::O_WRONLY, 0o600).unwrap();
    assert_eq!(link_proc(&f, &m.path("a")), 0);
    fs::remove_file(m.path("a")).unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    assert_eq!(link_proc(&f, &m.path("b")), libc::ENOENT);
    drop(f);
    // What the kernel refuses: no write access asked for, a parent that is no directory, a
    // name that is taken.
    assert_eq!(
        tmpfile(&m.mnt, libc::O_RDONLY, 0o600).unwrap_err(),
        libc::EINVAL
    );
    fs::write(m.path("file"), b"").unwrap();
    assert_eq!(
        tmpfile(&m.path("file"), libc::O_RDWR, 0o600).unwrap_err(),
        libc::ENOTDIR
    );
    let f = tmpfile(&m.mnt, libc::O_RDWR, 0o600).unwrap();
    assert_eq!(link_proc(&f, &m.path("file")), libc::EEXIST);
    assert_eq!(
        f.metadata().unwrap().nlink(),
        0,
        "a failed link changes nothing"
    );
    drop(f);
    // A removed directory takes no new file.
    fs::create_dir(m.path("gone")).unwrap();
    let dir = File::open(m.path("gone")).unwrap();
    fs::remove_dir(m.path("gone")).unwrap();
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    assert_eq!(
        tmpfile(Path::new(&path), libc::O_RDWR, 0o600).unwrap_err(),
        libc::ENOENT
    );
    // Permissions are a create's: write and search on the directory.
    fs::create_dir(m.path("ro")).unwrap();
    fs::set_permissions(m.path("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    let ro = m.path("ro");
    assert!(
        as_nobody(|| tmpfile(&ro, libc::O_RDWR, 0o600).err() == Some(libc::EACCES)),
        "nobody may not make a file in a directory it cannot write"
    );
    assert_eq!(names(&m.mnt), ["file", "ro"], "nothing appeared");
}

#[test]
fn o_tmpfile_is_owned_as_a_create_in_its_directory() {
    let m = mount_or_skip!("64M", "allow_other");
    fs::create_dir(m.path("sgid")).unwrap();
    let c = cstr(&m.path("sgid"));
    // SAFETY: chown with a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 4321) }, 0);
    fs::set_permissions(m.path("sgid"), fs::Permissions::from_mode(0o2777)).unwrap();
    let f = tmpfile(&m.path("sgid"), libc::O_RDWR, 0o2755).unwrap();
    let md = f.metadata().unwrap();
    assert_eq!(md.gid(), 4321, "the group of a set-gid directory");
    assert_eq!(
        md.mode() & 0o7777,
        0o2755,
        "root keeps the set-gid bit it asked for"
    );
    let created = new_file(m.path("sgid/created"));
    assert_eq!(created.metadata().unwrap().gid(), md.gid(), "as a create");
    // Another user's file: its user, the directory's group, and no set-gid bit for a group
    // that user is not in (the kernel strips it), as a create gets; the umask applies as to
    // a create (in the child: the umask is the process's).
    let dir = m.path("sgid");
    assert!(
        as_nobody(|| {
            // SAFETY: umask only changes the mask of this (forked) process.
            unsafe { libc::umask(0o027) };
            let Ok(f) = tmpfile(&dir, libc::O_RDWR, 0o2777) else {
                return false;
            };
            let t = f.metadata().unwrap();
            let c = cstr(&dir.join("by-nobody"));
            // SAFETY: open with a NUL-terminated path; the descriptor is closed at once.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o2777) };
            if fd < 0 {
                return false;
            }
            // SAFETY: fd was just opened and is ours.
            let created = unsafe { File::from_raw_fd(fd) }.metadata().unwrap();
            (t.uid(), t.gid(), t.mode()) == (65534, 4321, libc::S_IFREG | 0o750)
                && (created.uid(), created.gid(), created.mode()) == (t.uid(), t.gid(), t.mode())
        }),
        "nobody's tmpfile in a set-gid directory is owned as its create"
    );
}

#[test]
fn an_unnamed_tmpfile_gives_its_blocks_back_at_its_last_close() {
    let m = mount_or_skip!("64M", "");
    let free0 = free_blocks(&m.mnt);
    let f = tmpfile(&m.mnt, libc::O_RDWR, 0o600).unwrap();
    f.write_all_at(&vec![0x5a; 8 << 20], 0).unwrap();
    f.sync_all().unwrap();
    assert!(
        free_blocks(&m.mnt) <= free0 - 2048,
        "its blocks are taken while open"
    );
    drop(f);
    assert!(
        await_free(&m.mnt, free0) >= free0,
        "and come back at its last close"
    );
}

#[test]
fn kill_9_frees_an_unnamed_tmpfile_and_keeps_a_named_one() {
    if skip_without_fuse("tmpfile_kill_9") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-tmpfile")
        .tempdir()
        .unwrap();
    let image = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    mkfs(&image, "128M");
    let mut daemon = Daemon::start(&image, &mnt);
    let free0 = free_blocks(&mnt);
    let kept: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 253) as u8).collect();
    let named = tmpfile(&mnt, libc::O_RDWR, 0o644).unwrap();
    named.write_all_at(&kept, 0).unwrap();
    assert_eq!(link_proc(&named, &mnt.join("kept")), 0);
    named.sync_all().unwrap();
    let unnamed = tmpfile(&mnt, libc::O_RDWR, 0o600).unwrap();
    unnamed.write_all_at(&vec![0xa5; 16 << 20], 0).unwrap();
    unnamed.sync_all().unwrap();
    let taken = free0 - free_blocks(&mnt);
    assert!(taken >= 256 + 4096, "both files hold their blocks: {taken}");
    daemon.kill_9(); // both files still open
    drop((named, unnamed));
    wait_unlocked(&image);
    let json = fsck_ok(&image);
    assert_eq!(
        json["orphans"], 1,
        "the unnamed tmpfile is a crash's orphan: {json}"
    );

    let daemon = Daemon::start(&image, &mnt);
    assert!(
        fs::read(mnt.join("kept")).unwrap() == kept,
        "the named tmpfile survives"
    );
    assert_eq!(names(&mnt), ["kept"]);
    assert_eq!(
        free0 - free_blocks(&mnt),
        256,
        "the unnamed one's 4096 blocks are free again; the named one keeps its 256"
    );
    daemon.umount();
    let json = fsck_ok(&image);
    assert_eq!(json["orphans"], 0, "{json}");
}

#[test]
fn a_pin_on_a_tmpfile_works_as_on_any_open_file() {
    let m = mount_or_skip!("64M", "");
    let f = tmpfile(&m.mnt, libc::O_RDWR, 0o600).unwrap();
    f.write_all_at(&vec![b'.'; 2 * 4096], 0).unwrap();
    let mut c = Connection::for_file(&f).unwrap();
    let mut pin = c.pin(&f, 4096, 4096, PinOptions::default()).unwrap();
    pin.as_mut_slice()[..8].copy_from_slice(b"from DMA");
    let mut buf = [0u8; 8];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(&buf, b"from DMA", "a read sees the holder's store");
    let path = |m: &Mount| {
        let json = Connection::for_path(&m.mnt).unwrap().status(false).unwrap();
        let s: pinfs::fs::status::Status = serde_json::from_str(&json).unwrap();
        assert_eq!(s.leases.len(), 1, "{json}");
        s.leases[0].path.clone()
    };
    assert_eq!(path(&m).as_deref(), Some("(unlinked)"));
    assert_eq!(link_proc(&f, &m.path("named")), 0);
    assert_eq!(
        path(&m).as_deref(),
        Some("/named"),
        "the pin's file now has a name"
    );
    assert_eq!(&fs::read(m.path("named")).unwrap()[4096..4104], b"from DMA");
    c.unpin(&pin).unwrap();
}

/// The kernel's xattr form of an ACL: (tag, perm, id) entries.
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// An xattr of an open file, or the errno.
fn fgetxattr(f: &File, name: &str) -> Result<Vec<u8>, i32> {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated name; the buffer's pointer and length come from one Vec.
    let rc = unsafe {
        libc::fgetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        return Err(errno());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

#[test]
fn a_tmpfile_inherits_its_directorys_default_acl_as_a_create_does() {
    let m = mount_or_skip!("64M", "");
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    let none = u32::MAX; // ACL_UNDEFINED_ID, for entries that name nobody
    let default = acl_xattr(&[
        (0x01, 7, none),
        (0x02, 7, 65534),
        (0x04, 5, none),
        (0x10, 7, none),
        (0x20, 0, none),
    ]);
    let (p, n) = (cstr(&d), CString::new("system.posix_acl_default").unwrap());
    // SAFETY: NUL-terminated path and name; the value's pointer and length from one Vec.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            default.as_ptr().cast(),
            default.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    // 0666 under this process's umask (022) would be 0644; the default ACL gives 0660.
    let f = tmpfile(&d, libc::O_RDWR, 0o666).unwrap();
    assert_eq!(
        f.metadata().unwrap().mode() & 0o7777,
        0o660,
        "the default ACL, not the umask"
    );
    let access = acl_xattr(&[
        (0x01, 6, none),
        (0x02, 7, 65534),
        (0x04, 5, none),
        (0x10, 6, none),
        (0x20, 0, none),
    ]);
    assert_eq!(fgetxattr(&f, "system.posix_acl_access").unwrap(), access);
    assert_eq!(link_proc(&f, &d.join("linked")), 0);
    let created = new_file(d.join("created"));
    assert_eq!(
        fgetxattr(&created, "system.posix_acl_access").unwrap(),
        fgetxattr(&f, "system.posix_acl_access").unwrap(),
        "the same ACL as a file created there"
    );
    // Without a default ACL, the umask applies (the daemon applies it: FUSE_DONT_MASK).
    let f = tmpfile(&m.mnt, libc::O_RDWR, 0o666).unwrap();
    assert_eq!(f.metadata().unwrap().mode() & 0o7777, 0o644);
    assert_eq!(fgetxattr(&f, "system.posix_acl_access"), Err(libc::ENODATA));
}

#[test]
fn an_immutable_directory_takes_no_tmpfile() {
    let m = mount_or_skip!("64M", "");
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    let set_flags = |flags: i32| {
        let dir = File::open(&d).unwrap();
        // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which is valid.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), 0x4008_6602, &flags as *const i32) };
        assert_eq!(rc, 0, "chattr: {}", std::io::Error::last_os_error());
    };
    set_flags(0x10); // FS_IMMUTABLE_FL
    assert_eq!(tmpfile(&d, libc::O_RDWR, 0o600).unwrap_err(), libc::EPERM);
    set_flags(0);
    let f = tmpfile(&d, libc::O_RDWR, 0o600).unwrap();
    set_flags(0x10);
    assert_eq!(link_proc(&f, &d.join("x")), libc::EPERM, "nor a name in it");
    set_flags(0);
    assert_eq!(link_proc(&f, &d.join("x")), 0);
}

//! Shutting a mount down (`FS_IOC_SHUTDOWN`, as xfstests' godown and `xfs_io -c shutdown`
//! send it, and `pinfs shutdown`): what each flag makes durable, what a volatile cache loses
//! (a power cut), `EIO` for every operation afterwards, holders fenced and cut off, and who
//! may ask.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;
use pinfs::daemon::ioctl::FS_IOC_SHUTDOWN;
use pinfs::holder::client::{Connection, PinOptions};

/// The shutdown ioctl on the mount's root with `flag`: 0 or the errno.
fn shutdown_ioctl(m: &Mount, flag: u32) -> i32 {
    let dir = fs::File::open(&m.mnt).unwrap();
    // SAFETY: ioctl on a descriptor we own, with a pointer to a u32 that outlives the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN as _, &flag as *const u32) };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

/// Files `synced` (written and fsync'd), `unsynced` (written after, never synced) and a
/// directory `dir` made after the last fsync.
fn write_files(m: &Mount) {
    let mut f = new_file(m.path("synced"));
    f.write_all(b"made durable by fsync").unwrap();
    f.sync_all().unwrap();
    let mut g = new_file(m.path("unsynced"));
    g.write_all(b"never synced").unwrap();
    fs::create_dir(m.path("dir")).unwrap();
}

/// After the shutdown: unmount, fsck clean, mount again.
fn cycle(m: &mut Mount) {
    m.umount();
    let out = m.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck after the shutdown: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.mount("volatile_cache");
}

#[test]
fn with_a_volatile_cache_each_flag_keeps_exactly_what_it_makes_durable() {
    if skip_without_fuse("with_a_volatile_cache_each_flag_keeps_exactly_what_it_makes_durable") {
        return;
    }
    let mut m = Mount::new("64M", "volatile_cache");
    // NOLOGFLUSH: a power cut. Only what fsync made durable is there.
    write_files(&m);
    assert_eq!(shutdown_ioctl(&m, 2), 0);
    cycle(&mut m);
    assert_eq!(
        fs::read(m.path("synced")).unwrap(),
        b"made durable by fsync"
    );
    assert_eq!(err_of(fs::metadata(m.path("unsynced"))), libc::ENOENT);
    assert_eq!(err_of(fs::metadata(m.path("dir"))), libc::ENOENT);
    // LOGFLUSH: the journal is made durable: the names and sizes are there, and a size
    // comes with the data it exposes (ordered before it), never over zeros.
    write_files(&m);
    assert_eq!(shutdown_ioctl(&m, 1), 0);
    cycle(&mut m);
    assert_eq!(
        fs::read(m.path("synced")).unwrap(),
        b"made durable by fsync"
    );
    assert!(fs::metadata(m.path("dir")).unwrap().is_dir());
    assert_eq!(fs::read(m.path("unsynced")).unwrap(), b"never synced");
    // DEFAULT: data and metadata, as syncfs would.
    fs::remove_file(m.path("unsynced")).unwrap();
    fs::remove_dir(m.path("dir")).unwrap();
    write_files(&m);
    assert_eq!(shutdown_ioctl(&m, 0), 0);
    cycle(&mut m);
    assert_eq!(fs::read(m.path("unsynced")).unwrap(), b"never synced");
    assert!(fs::metadata(m.path("dir")).unwrap().is_dir());
}

#[test]
fn with_a_volatile_cache_a_size_made_durable_by_another_fsync_comes_with_its_data() {
    if skip_without_fuse(
        "with_a_volatile_cache_a_size_made_durable_by_another_fsync_comes_with_its_data",
    ) {
        return;
    }
    let mut m = Mount::new("64M", "volatile_cache");
    // Two files, durable as they are.
    let appended = new_file(m.path("appended"));
    appended.write_all_at(&[b'a'; 1000], 0).unwrap();
    let grown = new_file(m.path("grown"));
    let other = new_file(m.path("other"));
    appended.sync_all().unwrap();
    grown.sync_all().unwrap();
    // Extended and never synced themselves: a write past the end (a new block), and a
    // truncate up followed by a write into the grown range.
    appended.write_all_at(&[b'b'; 20000], 1000).unwrap();
    grown.set_len(12288).unwrap();
    grown.write_all_at(b"inside", 8192).unwrap();
    // Another file's fsync flushes the journal, the new sizes with it: their data first.
    other.write_all_at(b"x", 0).unwrap();
    other.sync_all().unwrap();
    drop((appended, grown, other));
    assert_eq!(shutdown_ioctl(&m, 2), 0);
    cycle(&mut m);
    let got = fs::read(m.path("appended")).unwrap();
    assert_eq!(got.len(), 21000, "the appended size was made durable");
    let first_zero = got.iter().position(|&b| b == 0);
    assert_eq!(first_zero, None, "the appended size came without its data");
    assert_eq!(&got[..1000], &[b'a'; 1000][..]);
    assert_eq!(&got[1000..], &[b'b'; 20000][..]);
    let got = fs::read(m.path("grown")).unwrap();
    assert_eq!(got.len(), 12288);
    assert_eq!(&got[8192..8198], b"inside");
}

#[test]
fn after_a_shutdown_every_operation_fails_with_eio_and_umount_works() {
    if skip_without_fuse("after_a_shutdown_every_operation_fails_with_eio_and_umount_works") {
        return;
    }
    let mut m = Mount::new("64M", "");
    fs::write(m.path("f"), b"before").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    let open = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    let root = fs::File::open(&m.mnt).unwrap();
    let out = pinfs(&["shutdown", m.mnt.to_str().unwrap(), "--flush", "log"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The attributes the kernel cached before may answer for their second of validity.
    std::thread::sleep(Duration::from_millis(1100));
    let mut buf = [0u8; 4];
    assert_eq!(err_of(open.read_at(&mut buf, 0)), libc::EIO, "read");
    assert_eq!(err_of(open.write_at(b"x", 0)), libc::EIO, "write");
    assert_eq!(err_of(open.sync_all()), libc::EIO, "fsync");
    assert_eq!(err_of(fs::metadata(m.path("f"))), libc::EIO, "stat");
    assert_eq!(err_of(fs::metadata(m.path("new"))), libc::EIO, "lookup");
    assert_eq!(err_of(fs::File::open(m.path("f"))), libc::EIO, "open");
    assert_eq!(err_of(fs::read_dir(m.path("d"))), libc::EIO, "opendir");
    assert_eq!(err_of(fs::create_dir(m.path("e"))), libc::EIO, "mkdir");
    assert_eq!(err_of(fs::write(m.path("g"), b"x")), libc::EIO, "create");
    // A second shutdown (through a descriptor opened before: opening the mount point is EIO
    // now, as on XFS) changes nothing and succeeds.
    let flag = 2u32;
    // SAFETY: as in shutdown_ioctl.
    let rc = unsafe { libc::ioctl(root.as_raw_fd(), FS_IOC_SHUTDOWN as _, &flag as *const u32) };
    assert_eq!(rc, 0);
    drop(root);
    let table = pinfs(&["status", m.mnt.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("SHUT DOWN on request (flush log)"),
        "{table}"
    );
    drop(open);
    m.umount();
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(0));
    m.mount("");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"before");
}

#[test]
fn only_root_shuts_a_mount_down_and_bad_flags_change_nothing() {
    if skip_without_fuse("only_root_shuts_a_mount_down_and_bad_flags_change_nothing") {
        return;
    }
    let m = Mount::new("64M", "");
    let mnt = m.mnt.clone();
    let refused = as_nobody(move || {
        let dir = fs::File::open(&mnt).unwrap();
        let flag = 2u32;
        // SAFETY: as in shutdown_ioctl.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN as _, &flag as *const u32) };
        rc == -1 && errno() == libc::EPERM
    });
    assert!(refused, "an unprivileged shutdown is EPERM");
    assert_eq!(shutdown_ioctl(&m, 3), libc::EINVAL, "an unknown flag");
    // An address that is not the caller's memory: EFAULT.
    let dir = fs::File::open(&m.mnt).unwrap();
    // SAFETY: the kernel passes the address on without touching it; the daemon's read of
    // it fails.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN as _, 8usize) };
    assert_eq!((rc, errno()), (-1, libc::EFAULT));
    // The filesystem is up.
    fs::write(m.path("still"), b"up").unwrap();
    assert_eq!(fs::read(m.path("still")).unwrap(), b"up");
    // `pinfs shutdown` of a path that is no pinfs mount shuts nothing down (XFS and ext4
    // take the same ioctl).
    let out = pinfs(&["shutdown", m.dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a pinfs mount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` in a child process that is uid 0 with no capabilities at all (a container's
/// root without `CAP_SYS_ADMIN`): whether it returned true.
fn as_root_without_capabilities(f: impl FnOnce() -> bool) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: fork in a test process; the child drops every capability from its bounding
    // set (prctl) and then from its sets with capset (on
    // structs of the kernel's layout, version 3: two data words), runs `f` and leaves with
    // _exit, never returning into the test harness.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut hdr = Header {
                version: 0x2008_0522,
                pid: 0,
            };
            let none = [Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            // Out of the bounding set too, or an exec as uid 0 would get them all back.
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            if libc::syscall(libc::SYS_capset, &mut hdr, none.as_ptr()) != 0 || libc::getuid() != 0
            {
                libc::_exit(3);
            }
            libc::_exit(if f() { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(libc::WIFEXITED(status), "child died");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, 3, "the child could not drop its capabilities");
        code == 0
    }
}

#[test]
fn uid_0_without_cap_sys_admin_cannot_shut_a_mount_down() {
    if skip_without_fuse("uid_0_without_cap_sys_admin_cannot_shut_a_mount_down") {
        return;
    }
    let m = Mount::new("64M", "");
    fs::write(m.path("f"), b"up").unwrap();
    let file = m.path("f");
    // As XFS and ext4 (capable(CAP_SYS_ADMIN)): uid 0 alone is not enough, through a
    // regular file as through the root directory, by the ioctl or by `pinfs shutdown`.
    let refused = as_root_without_capabilities(move || {
        let f = fs::File::open(&file).unwrap();
        let flag = 2u32;
        // SAFETY: as in shutdown_ioctl.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SHUTDOWN as _, &flag as *const u32) };
        rc == -1 && errno() == libc::EPERM
    });
    assert!(
        refused,
        "a shutdown by uid 0 without CAP_SYS_ADMIN is EPERM"
    );
    let mnt = m.mnt.clone();
    let refused = as_root_without_capabilities(move || {
        let out = pinfs(&["shutdown", mnt.to_str().unwrap(), "--flush", "none"]);
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted")
    });
    assert!(refused, "pinfs shutdown without CAP_SYS_ADMIN is refused");
    // Nothing was shut down.
    assert_eq!(fs::read(m.path("f")).unwrap(), b"up");
    fs::write(m.path("g"), b"still up").unwrap();
    // Root with the capability may.
    assert_eq!(shutdown_ioctl(&m, 0), 0);
    assert_eq!(err_of(fs::read(m.path("f"))), libc::EIO);
}

#[test]
fn a_shutdown_fences_holders_and_their_later_stores_reach_nothing() {
    if skip_without_fuse("a_shutdown_fences_holders_and_their_later_stores_reach_nothing") {
        return;
    }
    for options in ["volatile_cache", ""] {
        let mut m = Mount::new("64M", options);
        let f = new_file(m.path("pinned"));
        f.write_all_at(&[b'a'; 8192], 0).unwrap();
        f.sync_all().unwrap();
        let mut c = Connection::for_file(&f).unwrap();
        let mut pin = c.pin(&f, 0, 8192, PinOptions::default()).unwrap();
        pin.as_mut_slice()[..4].copy_from_slice(b"pre!");
        // The holder's stores before the shutdown are data: DEFAULT makes them durable.
        assert_eq!(shutdown_ioctl(&m, 0), 0);
        loop {
            let e = c
                .next_event(Some(Duration::from_secs(10)))
                .unwrap()
                .expect("an event within 10 s");
            if e.name() == "fenced" {
                break;
            }
        }
        // Stores after the shutdown go to memory no block shares any more.
        pin.as_mut_slice()[4096..4100].copy_from_slice(b"late");
        drop(pin);
        drop(c);
        drop(f);
        m.umount();
        assert_eq!(m.fsck().status.code(), Some(0));
        m.mount("");
        let data = fs::read(m.path("pinned")).unwrap();
        assert_eq!(
            &data[..4],
            b"pre!",
            "-o {options}: stored before the shutdown"
        );
        assert_eq!(
            &data[4096..4100],
            b"aaaa",
            "-o {options}: a store after the shutdown reached the file"
        );
    }
}

#[test]
fn without_a_volatile_cache_a_shutdown_keeps_at_least_what_was_durable() {
    if skip_without_fuse("without_a_volatile_cache_a_shutdown_keeps_at_least_what_was_durable") {
        return;
    }
    let mut m = Mount::new("64M", "");
    write_files(&m);
    assert_eq!(shutdown_ioctl(&m, 2), 0);
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
    m.mount("");
    assert_eq!(
        fs::read(m.path("synced")).unwrap(),
        b"made durable by fsync"
    );
}

#[test]
fn o_sync_and_o_dsync_writes_are_durable_when_they_return() {
    if skip_without_fuse("o_sync_and_o_dsync_writes_are_durable_when_they_return") {
        return;
    }
    // xfstests generic/737: a new file written with O_SYNC (buffered, O_DIRECT) is there,
    // with its data, after a power cut. With a volatile cache that is exactly what was made
    // durable.
    use std::os::unix::fs::OpenOptionsExt;
    let mut m = Mount::new("64M", "volatile_cache");
    for (name, flag) in [("sync", libc::O_SYNC), ("dsync", libc::O_DSYNC)] {
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(flag)
            .open(m.path(name))
            .unwrap();
        f.write_all_at(name.as_bytes(), 0).unwrap();
        f.write_all_at(&[b'z'; 8192], 4096).unwrap();
    }
    // RWF_DSYNC on one call, through a descriptor opened without either flag.
    let f = new_file(m.path("rwf"));
    let buf = b"rwf_dsync";
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: pwritev2 of one iovec over a buffer that lives across the call.
    let n = unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, 0, libc::RWF_DSYNC) };
    assert_eq!(n, buf.len() as isize);
    drop(f);
    assert_eq!(shutdown_ioctl(&m, 2), 0);
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
    m.mount("");
    for name in ["sync", "dsync"] {
        let data = fs::read(m.path(name)).unwrap();
        assert_eq!(data.len(), 4096 + 8192, "{name}");
        assert_eq!(&data[..name.len()], name.as_bytes(), "{name}");
        assert!(data[4096..].iter().all(|&b| b == b'z'), "{name}");
    }
    assert_eq!(fs::read(m.path("rwf")).unwrap(), b"rwf_dsync");
}

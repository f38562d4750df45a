//! The host under the image fails: it fills up, or its filesystem stops taking I/O. pinfs must
//! answer what a filesystem answers (`ENOSPC`, `EIO`), never die of `SIGBUS`, never report a
//! failed flush as durable, and leave an image that the next mount and fsck accept.

#[path = "../common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A host filesystem mounted in a temporary directory for one test, unmounted on drop.
struct Host {
    dir: tempfile::TempDir,
    at: PathBuf,
    mounted: bool,
}

impl Host {
    /// A tmpfs of `size` (a host that fills up).
    fn tmpfs(size: &str) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-host")
            .tempdir()
            .unwrap();
        let at = dir.path().join("host");
        std::fs::create_dir(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Host {
            dir,
            at,
            mounted: true,
        }
    }

    /// An ext4 of `size` on a loop device (a host that can be shut down).
    fn ext4(size: u64) -> Host {
        Host::on_loop("mkfs.ext4", size)
    }

    /// An ext2 of `size` on a loop device: a host that cannot preallocate (its `fallocate`
    /// answers EOPNOTSUPP) nor punch holes.
    fn ext2(size: u64) -> Host {
        Host::on_loop("mkfs.ext2", size)
    }

    fn on_loop(mkfs: &str, size: u64) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-host")
            .tempdir()
            .unwrap();
        let disk = dir.path().join("disk");
        std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
        let st = Command::new(mkfs).arg("-q").arg(&disk).status().unwrap();
        assert!(st.success(), "{mkfs}");
        let at = dir.path().join("host");
        std::fs::create_dir(&at).unwrap();
        let mut h = Host {
            dir,
            at,
            mounted: false,
        };
        h.mount_ext4();
        h
    }

    fn mount_ext4(&mut self) {
        let st = Command::new("mount")
            .args(["-o", "loop"])
            .arg(self.dir.path().join("disk"))
            .arg(&self.at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o loop");
        self.mounted = true;
    }

    /// Unmounts the host; retried while busy (a daemon that is exiting still has the image
    /// open for a moment).
    fn umount(&mut self) {
        if self.mounted {
            for _ in 0..200 {
                let st = Command::new("umount").arg(&self.at).status().unwrap();
                if st.success() {
                    self.mounted = false;
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            panic!("umount {}: still busy after 20 s", self.at.display());
        }
    }

    /// `EXT4_IOC_SHUTDOWN` (the number of `XFS_IOC_GOINGDOWN`) with `NOLOGFLUSH`: from now
    /// on every write, fsync and page fault that needs I/O on the host fails, as when its
    /// disk goes away.
    fn shut_down(&self) {
        let d = std::fs::File::open(&self.at).unwrap();
        let flag: u32 = 2; // EXT4_GOING_FLAGS_NOLOGFLUSH
        let req = (2u64 << 30) | (4 << 16) | ((b'X' as u64) << 8) | 125;
        // SAFETY: the ioctl reads one u32 from a live local.
        let rc = unsafe { libc::ioctl(d.as_raw_fd(), req as _, &flag) };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// A pinfs mount on an image inside `host`, unmounted (lazily) on drop.
struct OnHost {
    image: PathBuf,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
    mounted: bool,
}

impl OnHost {
    fn new(host: &Host, size: &str) -> OnHost {
        OnHost::with_options(host, size, &[])
    }

    /// With `pinfs mount` arguments `extra` (such as `-o OPTIONS`).
    fn with_options(host: &Host, size: &str, extra: &[&str]) -> OnHost {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-mnt")
            .tempdir()
            .unwrap();
        let image = host.at.join("test.img");
        mkfs(&image, size);
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut args = vec!["mount", image.to_str().unwrap(), mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = pinfs(&args);
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OnHost {
            image,
            mnt,
            _dir: dir,
            mounted: true,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `umount` succeeds, and the daemon lets go of the image.
    fn umount(&mut self) {
        self.detach();
        wait_unlocked(&self.image);
    }

    /// `umount` succeeds.
    fn detach(&mut self) {
        let c = cstr(&self.mnt);
        let mut rc = -1;
        // EBUSY is retried a while: a process another test spawns may hold a copy of a
        // descriptor on the mount for a moment.
        for _ in 0..100 {
            // SAFETY: umount2 with a NUL-terminated path.
            rc = unsafe { libc::umount2(c.as_ptr(), 0) };
            if rc == 0 || errno() != libc::EBUSY {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(rc, 0, "umount: {}", std::io::Error::last_os_error());
        self.mounted = false;
    }

    /// The daemon still answers (a dead daemon's mount answers ENOTCONN).
    /// The daemon still answers: a shut-down mount answers every request with EIO, a dead
    /// daemon's mount with ENOTCONN.
    fn alive(&self) -> bool {
        let answers = |r: std::io::Result<()>| match r {
            Ok(()) => true,
            Err(e) => e.raw_os_error() == Some(libc::EIO),
        };
        answers(std::fs::metadata(&self.mnt).map(|_| ()))
            && answers(std::fs::read_dir(&self.mnt).map(|_| ()))
    }
}

impl Drop for OnHost {
    fn drop(&mut self) {
        if self.mounted {
            let c = cstr(&self.mnt);
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            let _ = pinfs::store::image::Image::wait_until_free(
                &self.image,
                std::time::Duration::from_secs(20),
            );
        }
    }
}

/// Writes `chunk`-sized pieces to `path` until a write fails; returns the bytes written and
/// the errno that stopped it.
fn fill(path: &Path, chunk: usize, max: u64) -> (u64, i32) {
    let mut f = new_file(path);
    let buf = vec![0x5au8; chunk];
    let mut done = 0u64;
    while done < max {
        match f.write(&buf) {
            Ok(n) => done += n as u64,
            Err(e) => return (done, e.raw_os_error().unwrap_or(0)),
        }
    }
    (done, 0)
}

#[test]
fn a_full_host_answers_enospc_and_the_daemon_lives() {
    if skip_without_fuse("a_full_host_answers_enospc_and_the_daemon_lives") {
        return;
    }
    // A 64 MiB sparse image on a 12 MiB host: the host fills long before the image does.
    let host = Host::tmpfs("12m");
    let mut m = OnHost::new(&host, "64M");
    let (written, errno) = fill(&m.path("big"), 1 << 20, 64 << 20);
    assert_eq!(
        errno,
        libc::ENOSPC,
        "the write that found the host full must fail with ENOSPC (wrote {written} bytes first)"
    );
    assert!(m.alive(), "the daemon died when the host filled up");
    assert!(written >= 4 << 20, "only {written} bytes fitted");
    // What was written reads back, and space comes back when the file goes.
    let mut back = Vec::new();
    std::fs::File::open(m.path("big"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back.len() as u64, written);
    assert!(back.iter().all(|&b| b == 0x5a), "written data reads back");
    std::fs::remove_file(m.path("big")).unwrap();
    // The blocks go when the kernel forgets the inode, a moment after the unlink.
    let mut waited = 0;
    while host_free(&host) < 4 << 20 {
        assert!(
            waited < 200,
            "the unlinked file's blocks never went back to the host"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    let (again, errno) = fill(&m.path("again"), 1 << 20, 4 << 20);
    assert_eq!(
        (again, errno),
        (4 << 20, 0),
        "after the unlink the space is back"
    );
    let f = std::fs::File::open(m.path("again")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.umount();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck after a full host: {out}");
}

#[test]
fn a_full_host_refuses_a_pin_that_fills_holes() {
    if skip_without_fuse("a_full_host_refuses_a_pin_that_fills_holes") {
        return;
    }
    let host = Host::tmpfs("12m");
    let mut m = OnHost::new(&host, "64M");
    // Leave the host nearly full, then pin a sparse 16 MiB range: the pin must fill the
    // holes, and the host cannot back them.
    let (_, errno) = fill(&m.path("filler"), 1 << 20, 64 << 20);
    assert_eq!(errno, libc::ENOSPC);
    let f = new_file(m.path("sparse"));
    f.set_len(16 << 20).unwrap();
    drop(f);
    let out = pinfs(&[
        "pin",
        m.path("sparse").to_str().unwrap(),
        "--len",
        "16M",
        "--hold",
        "0",
    ]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a pin the host cannot back must fail: {text}"
    );
    assert!(
        text.contains("No space left") || text.contains("ENOSPC") || text.contains("errno=28"),
        "the pin's failure says the space ran out: {text}"
    );
    assert!(
        m.alive(),
        "the daemon died filling a pin's holes on a full host"
    );
    m.umount();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck: {out}");
}

#[test]
fn fsync_on_a_failed_host_is_eio_and_the_mount_shuts_down() {
    if skip_without_fuse("fsync_on_a_failed_host_is_eio_and_the_mount_shuts_down") {
        return;
    }
    let mut host = Host::ext4(96 << 20);
    let mut m = OnHost::new(&host, "32M");
    // Durable before the failure: a file written and fsync'd.
    let mut kept = new_file(m.path("kept"));
    kept.write_all(&vec![0x11u8; 256 << 10]).unwrap();
    kept.sync_all().unwrap();
    drop(kept);
    // Not durable: written, then the host goes away before the fsync.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(0)
        .open(m.path("lost"))
        .unwrap();
    f.write_all(&vec![0x22u8; 256 << 10]).unwrap();
    host.shut_down();
    let e = f
        .sync_all()
        .expect_err("fsync must not succeed when the host failed");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "fsync's errno: {e}");
    // A second fsync must not pretend the data got there after all.
    let e = f.sync_all().expect_err("a second fsync must fail too");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    drop(f);
    // The mount is shut down: changes fail with EIO, and the daemon still answers.
    let e = std::fs::File::create(m.path("new")).expect_err("create after a host failure");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "create's errno: {e}");
    assert!(m.alive(), "the daemon died when its host failed");
    let e = std::fs::read(m.path("kept")).expect_err("a read after a host failure");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "read's errno: {e}");
    // Status says so.
    let st = pinfs(&["status", m.mnt.to_str().unwrap(), "--json"]);
    let st = String::from_utf8_lossy(&st.stdout);
    let doc: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
    assert_eq!(doc["mount"], "shut_down", "status: {st}");
    let st = pinfs(&["status", m.mnt.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&st.stdout).starts_with("state: SHUT DOWN after a host failure"),
        "status: {}",
        String::from_utf8_lossy(&st.stdout)
    );
    // The background daemon has no terminal: the kernel log says what happened.
    let log = Command::new("dmesg").output().unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.lines().any(|l| l.contains("pinfs[")
            && l.contains("the filesystem is shut down")
            && l.contains(m.image.to_str().unwrap())),
        "the shutdown is in the kernel log"
    );
    // (The image cannot be opened on the failed host to see its lock: the host's own
    // unmount below waits for the daemon to close it.)
    m.detach();
    // The unmount wrote nothing on top of the failed host, and said so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let log = Command::new("dmesg").output().unwrap();
        let log = String::from_utf8_lossy(&log.stdout).into_owned();
        if log.lines().any(|l| {
            l.contains("pinfs[")
                && l.contains("the unmount could not write a clean image")
                && l.contains(m.image.to_str().unwrap())
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed unmount is not in the kernel log"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Back on a working host, the image holds what was durable.
    host.umount();
    host.mount_ext4();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck after a host failure: {out}");
    let out = pinfs(&["mount", m.image.to_str().unwrap(), m.mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "remount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.mounted = true;
    let back = std::fs::read(m.path("kept")).unwrap();
    assert_eq!(
        back,
        vec![0x11u8; 256 << 10],
        "the fsync'd file survives the host failure"
    );
    m.umount();
}

/// Fills the host's free space with a file of its own (not the image's), until the host
/// answers ENOSPC.
fn fill_host(host: &Host) -> PathBuf {
    let p = host.at.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let buf = vec![0u8; 64 << 10];
    let e = loop {
        if let Err(e) = f.write_all(&buf) {
            break e;
        }
    };
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "filling the host: {e}"
    );
    // Whatever page the last short write left: the host has no block to spare.
    let _ = f.write_all(&[0u8; 1]);
    p
}

/// Bytes free on the host filesystem.
fn host_free(host: &Host) -> u64 {
    let c = cstr(&host.at);
    // SAFETY: statvfs is plain data; all zeros is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs of a NUL-terminated path into a live local.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs of the host");
    st.f_bavail as u64 * st.f_frsize as u64
}

#[test]
fn a_full_host_can_still_delete_after_a_checkpoint_is_refused() {
    if skip_without_fuse("a_full_host_can_still_delete_after_a_checkpoint_is_refused") {
        return;
    }
    let host = Host::tmpfs("12m");
    let mut m = OnHost::new(&host, "64M");
    let mut victim = new_file(m.path("victim"));
    victim.write_all(&vec![0x33u8; 4 << 20]).unwrap();
    victim.sync_all().unwrap();
    drop(victim);
    drop(new_file(m.path("c")));
    let filler = fill_host(&host);
    // Metadata work until the journal wants a checkpoint that the full host cannot back:
    // the change that finds it so is refused with ENOSPC.
    let c = cstr(&m.path("c"));
    let mut refused = None;
    for n in 0..20_000u32 {
        // SAFETY: chmod with a NUL-terminated path.
        if unsafe { libc::chmod(c.as_ptr(), 0o600 | (n % 7)) } != 0 {
            refused = Some((n, errno()));
            break;
        }
    }
    let (n, e) = refused.expect("a checkpoint on a full host must be refused at some point");
    assert_eq!(e, libc::ENOSPC, "chmod {n} on a full host: errno {e}");
    // Deleting gives the space back (to the image and to the host): it must not be refused
    // because the checkpoint was. Before, every unlink failed with ENOSPC from here on.
    std::fs::remove_file(m.path("victim"))
        .expect("unlink on a full host after a refused checkpoint");
    // The blocks go when the kernel forgets the inode (a moment after the unlink), and are
    // punched back to the host; that space lets the checkpoint through: changes work again.
    let mut waited = 0;
    while host_free(&host) < 1 << 20 {
        assert!(
            waited < 200,
            "the unlinked file's blocks never went back to the host"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    // SAFETY: as above.
    let rc = unsafe { libc::chmod(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "chmod after the unlink: errno {}", errno());
    assert!(m.alive());
    std::fs::remove_file(filler).unwrap();
    m.umount();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck: {out}");
    assert!(
        out.contains(" 0 journal transactions replayed"),
        "the unmount wrote a checkpoint: {out}"
    );
}

#[test]
fn a_write_onto_a_failed_host_is_eio_and_the_mount_shuts_down() {
    if skip_without_fuse("a_write_onto_a_failed_host_is_eio_and_the_mount_shuts_down") {
        return;
    }
    let mut host = Host::ext4(96 << 20);
    let mut m = OnHost::new(&host, "32M");
    let mut kept = new_file(m.path("kept"));
    kept.write_all(&vec![0x44u8; 64 << 10]).unwrap();
    kept.sync_all().unwrap();
    drop(kept);
    let mut f = new_file(m.path("new"));
    host.shut_down();
    // The write needs new blocks, which the failed host cannot allocate: that is the host's
    // I/O error, not a full filesystem (before: ENOSPC, and the mount went on taking changes).
    let e = f
        .write_all(&vec![0x55u8; 64 << 10])
        .expect_err("a write that needs blocks on a failed host");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "write's errno: {e}");
    drop(f);
    let e = std::fs::File::create(m.path("after")).expect_err("create after the failure");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "create's errno: {e}");
    // SAFETY: chmod with a NUL-terminated path.
    let rc = unsafe { libc::chmod(cstr(&m.path("kept")).as_ptr(), 0o600) };
    assert_eq!((rc, errno()), (-1, libc::EIO), "chmod after the failure");
    assert!(m.alive(), "the daemon died when its host failed");
    m.detach();
    host.umount();
    host.mount_ext4();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck after a host failure: {out}");
    let out = pinfs(&["mount", m.image.to_str().unwrap(), m.mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "remount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.mounted = true;
    assert_eq!(
        std::fs::read(m.path("kept")).unwrap(),
        vec![0x44u8; 64 << 10]
    );
    m.umount();
}

#[test]
fn an_image_with_a_sparse_journal_on_a_full_host_is_refused_clearly() {
    if skip_without_fuse("an_image_with_a_sparse_journal_on_a_full_host_is_refused_clearly") {
        return;
    }
    let host = Host::tmpfs("12m");
    let dir = tempfile::tempdir().unwrap();
    let image = host.at.join("old.img");
    mkfs(&image, "64M");
    // Images made before blocks were provisioned have a sparse journal (blocks 2.. of a
    // 64 MiB image; the checkpoint follows it): punch it out again to make one.
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        // SAFETY: fallocate on a descriptor we own, inside the file.
        let rc = unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                2 * 4096,
                256 * 4096,
            )
        };
        assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
    }
    let (code, out) = fsck_report(&image);
    assert_eq!(code, 0, "the sparse-journal image is a valid image: {out}");
    let before = std::fs::read(&image).unwrap();
    let filler = fill_host(&host);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = pinfs(&["mount", image.to_str().unwrap(), mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "mount on a full host: {err}");
    // What went wrong (the host is full, not failing) and what to do.
    assert!(
        err.contains("the image's host filesystem is full")
            && err.contains("journal")
            && err.contains("free space on the filesystem that holds the image"),
        "the refusal says the host is full and what to do: {err}"
    );
    assert!(
        std::fs::read(&image).unwrap() == before,
        "a refused mount changes nothing in the image"
    );
    std::fs::remove_file(filler).unwrap();
    let out = pinfs(&["mount", image.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "mount once the host has room: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = cstr(&mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    wait_unlocked(&image);
    let (code, out) = fsck_report(&image);
    assert_eq!(code, 0, "fsck: {out}");
}

#[test]
fn mkfs_on_a_full_host_fails_and_leaves_no_file() {
    if skip_without_fuse("mkfs_on_a_full_host_fails_and_leaves_no_file") {
        return;
    }
    let host = Host::tmpfs("4m");
    let filler = fill_host(&host);
    let image = host.at.join("new.img");
    let out = pinfs(&["mkfs", image.to_str().unwrap(), "--size", "64M"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "mkfs on a full host: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    // Before, a 64 MiB file of zeros stayed behind: not an image, and in the way of the
    // next mkfs ("exists and is not a pinfs image").
    assert!(
        !image.exists(),
        "a failed mkfs leaves no file behind: {}",
        image.display()
    );
    std::fs::remove_file(filler).unwrap();
    mkfs(&image, "4M");
    let (code, out) = fsck_report(&image);
    assert_eq!(code, 0, "fsck: {out}");
}

/// An ext4 host on a loop device whose backing file lives on a small tmpfs: blocks of the
/// backing file punched out fail their next write (the tmpfs is full) until space is made,
/// as a thin-provisioned disk fails. The ext4 itself stays up (its own blocks are backed).
struct ThinHost {
    host: Host,
    under: Host,
    disk: PathBuf,
}

impl ThinHost {
    fn new() -> ThinHost {
        let under = Host::tmpfs("300m");
        let disk = under.at.join("disk");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        let st = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-b",
                "4096",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            ])
            .arg(&disk)
            .status()
            .unwrap();
        assert!(st.success(), "mkfs.ext4");
        // mkfs zeroes by punching: back every block of the disk on the tmpfs.
        Self::fallocate(&disk, 0, 0, 128 << 20);
        let dir = tempfile::Builder::new()
            .prefix("pinfs-host")
            .tempdir()
            .unwrap();
        let at = dir.path().join("host");
        std::fs::create_dir(&at).unwrap();
        let st = Command::new("mount")
            .args(["-o", "loop,nodiscard"])
            .arg(&disk)
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o loop");
        ThinHost {
            host: Host {
                dir,
                at,
                mounted: true,
            },
            under,
            disk,
        }
    }

    fn fallocate(path: &Path, mode: i32, off: u64, len: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        // SAFETY: fallocate on a descriptor we own.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
        assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    }

    /// Writes 1 MiB into a new file `name` of `m` (not fsync'd) and has the host lose it:
    /// the disk loses the blocks the host gave the file and cannot take them back, the
    /// host's write-back fails and drops those pages; then the disk works again. The host
    /// reports the failure once, to whichever sync of the image comes next.
    fn lose_pages_of(&self, m: &OnHost, name: &str) {
        let before = ThinHost::blocks_of(&m.image);
        let mut a = new_file(m.path(name));
        a.write_all(&vec![b'A'; 1 << 20]).unwrap();
        drop(a);
        for (b, p) in ThinHost::blocks_of(&m.image) {
            if !before.contains_key(&b) {
                ThinHost::fallocate(
                    &self.disk,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    p * 4096,
                    4096,
                );
            }
        }
        let filler = fill_host(&self.under);
        write_back_image(&m.image);
        std::fs::remove_file(filler).unwrap();
    }

    /// The image's 4 KiB blocks and where each lies on the disk (`filefrag`).
    fn blocks_of(image: &Path) -> std::collections::BTreeMap<u64, u64> {
        let out = Command::new("filefrag")
            .args(["-v", "-b4096"])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "filefrag");
        let mut map = std::collections::BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "   3:      262..     517:       2560..      2815:    256: ..."
            let f: Vec<&str> = line
                .split([':', ' ', '.'])
                .filter(|s| !s.is_empty())
                .collect();
            if f.len() < 5 || f[0].parse::<u64>().is_err() {
                continue;
            }
            let (Ok(l0), Ok(l1), Ok(p0)) = (
                f[1].parse::<u64>(),
                f[2].parse::<u64>(),
                f[3].parse::<u64>(),
            ) else {
                continue;
            };
            for b in l0..=l1 {
                map.insert(b, p0 + (b - l0));
            }
        }
        map
    }
}

/// Has the host write the image's dirty pages back now, and nothing else of its own
/// metadata (on a full backing store the host would fail its superblock too); the write-back
/// must fail.
fn write_back_image(image: &Path) {
    let img = std::fs::File::open(image).unwrap();
    // SAFETY: sync_file_range on a descriptor we own, the whole file.
    let rc = unsafe {
        libc::sync_file_range(
            img.as_raw_fd(),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    assert_eq!(rc, -1, "the host's write-back of the image must fail");
}

#[test]
fn a_write_back_error_that_a_checkpoint_sees_shuts_the_mount_down() {
    if skip_without_fuse("a_write_back_error_that_a_checkpoint_sees_shuts_the_mount_down") {
        return;
    }
    let mut thin = ThinHost::new();
    let mut m = OnHost::new(&thin.host, "32M");
    drop(new_file(m.path("c")));
    thin.lose_pages_of(&m, "A");
    // The disk works again. Metadata work until a checkpoint: its sync is the first to hear
    // of the failed write-back (the host reports it once, as ENOSPC).
    let c = cstr(&m.path("c"));
    let mut refused = None;
    for n in 0..20_000u32 {
        // SAFETY: chmod with a NUL-terminated path.
        if unsafe { libc::chmod(c.as_ptr(), 0o600 | (n % 7)) } != 0 {
            refused = Some(errno());
            break;
        }
    }
    assert_eq!(
        refused,
        Some(libc::EIO),
        "the checkpoint that heard of lost pages fails with EIO"
    );
    // A's pages are gone: its fsync must not say they are durable. Before, it returned 0
    // (the checkpoint had taken the host's report as a full host), and A read back as zeros.
    // (The mount is shut down: opening A is EIO already, which says no more either.)
    let e = match std::fs::File::open(m.path("A")) {
        Ok(f) => f
            .sync_all()
            .expect_err("fsync of a file whose pages the host lost"),
        Err(e) => e,
    };
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "fsync's errno: {e}");
    assert!(m.alive());
    m.detach();
    thin.host.umount();
    let st = Command::new("mount")
        .args(["-o", "loop,nodiscard"])
        .arg(&thin.disk)
        .arg(&thin.host.at)
        .status()
        .unwrap();
    assert!(st.success());
    thin.host.mounted = true;
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck after the host recovered: {out}");
}

#[test]
fn a_write_back_error_that_a_relocation_sees_shuts_the_mount_down() {
    if skip_without_fuse("a_write_back_error_that_a_relocation_sees_shuts_the_mount_down") {
        return;
    }
    let mut thin = ThinHost::new();
    let m = OnHost::with_options(
        &thin.host,
        "32M",
        &["-o", "allow_other,break_policy=revoke,lease_break_time=0.3"],
    );
    let mut f = new_file(m.path("F"));
    f.write_all(&vec![0x66u8; 1 << 20]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::set_permissions(
        m.path("F"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    // An unprivileged holder pins all of F and ignores breaks: a truncate of F's tail
    // revokes its lease and moves F's remaining blocks away from it.
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "pin",
        ])
        .arg(m.path("F"))
        .args(["--len", "1M", "--ignore-breaks"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let grant: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert!(grant["extents"].is_array(), "the holder's grant: {line}");
    // As in the checkpoint case: A's pages are lost at the host's write-back, which the
    // host reports once, to whichever sync of the image comes next.
    thin.lose_pages_of(&m, "A");
    // The revocation's flush of the moved copies is the next sync of the image.
    let r = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("F"))
        .and_then(|f| f.set_len(512 << 10));
    holder.kill().ok();
    holder.wait().ok();
    // Whatever the truncate answered, A's pages are gone: fsync must not say otherwise.
    // Before, the relocation took the report without shutting down, and this returned 0.
    // (The mount is shut down: opening A is EIO already, which says no more either.)
    let e = match std::fs::File::open(m.path("A")) {
        Ok(f) => f.sync_all().expect_err(&format!(
            "fsync of a file whose pages the host lost (truncate: {r:?})"
        )),
        Err(e) => e,
    };
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "fsync's errno: {e}");
    assert!(m.alive());
    drop(m);
    thin.host.umount();
}

#[test]
fn a_write_back_error_that_fsync_sees_is_eio() {
    if skip_without_fuse("a_write_back_error_that_fsync_sees_is_eio") {
        return;
    }
    let thin = ThinHost::new();
    let m = OnHost::new(&thin.host, "32M");
    thin.lose_pages_of(&m, "A");
    // The host answers ENOSPC for pages it lost; the caller hears EIO, as the README
    // promises for any host failure (before: ENOSPC, as if the write could be retried).
    let f = std::fs::File::open(m.path("A")).unwrap();
    let e = f
        .sync_all()
        .expect_err("fsync of a file whose pages the host lost");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "fsync's errno: {e}");
    let e = f.sync_all().expect_err("a second fsync");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "the second fsync's errno: {e}"
    );
    drop(f);
    assert!(m.alive());
}

#[test]
fn a_pin_that_fills_holes_on_a_failed_host_is_eio() {
    if skip_without_fuse("a_pin_that_fills_holes_on_a_failed_host_is_eio") {
        return;
    }
    let host = Host::ext4(96 << 20);
    let mut m = OnHost::new(&host, "32M");
    new_file(m.path("sparse")).set_len(1 << 20).unwrap();
    host.shut_down();
    let out = pinfs(&[
        "pin",
        m.path("sparse").to_str().unwrap(),
        "--len",
        "1M",
        "--hold",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "a pin on a failed host: {err}");
    // Before: "no space left on device", and the mount went on taking changes.
    assert!(
        err.contains("Input/output error") && err.contains("shut down"),
        "the pin's failure is the host's, and the mount is shut down: {err}"
    );
    let e = std::fs::File::create(m.path("after")).expect_err("create after the failure");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "create's errno: {e}");
    assert!(m.alive());
    // (The image's lock cannot be watched on the failed host.)
    m.detach();
}

/// A host that cannot preallocate (ext2: fallocate is EOPNOTSUPP): new blocks are backed by
/// writing zeros instead, so a full host is still ENOSPC to the writer, not a SIGBUS that
/// kills the daemon; freed blocks are zeroed through the file (ext2 cannot punch either).
#[test]
fn a_host_that_cannot_preallocate_still_answers_enospc() {
    if skip_without_fuse("a_host_that_cannot_preallocate_still_answers_enospc") {
        return;
    }
    let host = Host::ext2(24 << 20);
    let mut m = OnHost::new(&host, "64M");
    let (written, errno) = fill(&m.path("big"), 1 << 20, 64 << 20);
    assert_eq!(
        errno,
        libc::ENOSPC,
        "the write that found the host full (after {written} bytes)"
    );
    assert!(
        m.alive(),
        "the daemon died on a full host that cannot preallocate"
    );
    let back = std::fs::read(m.path("big")).unwrap();
    assert_eq!(back.len() as u64, written);
    assert!(back.iter().all(|&b| b == 0x5a));
    drop(back);
    std::fs::remove_file(m.path("big")).unwrap();
    let f = new_file(m.path("small"));
    f.write_all_at(b"after the unlink", 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.umount();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck: {out}");
}

/// Has the host commit its own journal (the metadata of every change made on it so far, such
/// as holes punched in the image) and nothing of the image's dirty pages: an fsync of
/// another, new file of the host. What a host does by itself every few seconds.
fn commit_host_journal(host: &Host) {
    let p = host.at.join("other");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"another file of the host").unwrap();
    f.sync_all().unwrap();
}

/// The host loses power now: shut down without flushing anything more, `m` unmounted (its
/// daemon cannot write its checkpoint and exits), the host mounted again. The image then
/// holds what was durable on the host, as after a power failure; fsck must accept it.
fn power_loss(host: &mut Host, m: &mut OnHost) {
    host.shut_down();
    m.detach();
    host.umount();
    host.mount_ext4();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck after the power loss: {out}");
    let out = pinfs(&["mount", m.image.to_str().unwrap(), m.mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "mount after the power loss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.mounted = true;
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// A truncate that was not made durable may be lost in a power failure, but the file then
/// comes back as it was fsync'd, not with its blocks gone. Before, the truncate punched the
/// freed blocks out of the image at once, the host made the punch durable with its next
/// commit, and the record of the truncate never got there: the file came back at its full
/// size, all zeros.
#[test]
fn a_truncate_lost_in_a_power_failure_leaves_the_fsynced_data() {
    if skip_without_fuse("a_truncate_lost_in_a_power_failure_leaves_the_fsynced_data") {
        return;
    }
    let mut host = Host::ext4(96 << 20);
    let mut m = OnHost::new(&host, "32M");
    let data = pattern(1 << 20, 9);
    let f = new_file(m.path("A"));
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    f.set_len(0).unwrap();
    drop(f);
    commit_host_journal(&host);
    power_loss(&mut host, &mut m);
    let back = std::fs::read(m.path("A")).unwrap();
    assert!(
        back.is_empty() || back == data,
        "A after the power loss: {} bytes, {} of them zeros (fsync'd: {} bytes)",
        back.len(),
        back.iter().filter(|&&b| b == 0).count(),
        data.len()
    );
    m.umount();
}

/// A fence moves a pinned file's blocks to new ones; the holder then lets go, and the old
/// blocks are freed. The move's record must be durable before the old blocks are punched:
/// before, a power failure left the file pointing at the punched blocks (all zeros).
#[test]
fn fsynced_data_moved_by_a_fence_survives_a_power_failure() {
    if skip_without_fuse("fsynced_data_moved_by_a_fence_survives_a_power_failure") {
        return;
    }
    let mut host = Host::ext4(96 << 20);
    let mut m = OnHost::with_options(&host, "32M", &["-o", "break_policy=revoke"]);
    let data = pattern(1 << 20, 11);
    let f = new_file(m.path("F"));
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    let mut c = pinfs::holder::client::Connection::for_file(&f).unwrap();
    let pin = c
        .pin(&f, 0, 1 << 20, pinfs::holder::client::PinOptions::default())
        .unwrap();
    let me = c.holder_id().unwrap();
    let out = pinfs(&["fence", m.mnt.to_str().unwrap(), &me.to_string()]);
    assert!(
        out.status.success(),
        "fence: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The fenced holder lets go: its blocks, busy since the move, are freed.
    drop(pin);
    drop(c);
    drop(f);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let st = pinfs(&["status", m.mnt.to_str().unwrap(), "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        if doc["holders"].as_array().is_some_and(|h| h.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never went"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    commit_host_journal(&host);
    power_loss(&mut host, &mut m);
    let back = std::fs::read(m.path("F")).unwrap();
    assert!(
        back == data,
        "F after the power loss: {} bytes, {} of them zeros",
        back.len(),
        back.iter().filter(|&&b| b == 0).count()
    );
    m.umount();
}

/// The editor's save: write a new version, fsync it, rename it over the old one. A power
/// failure before the rename is durable may bring back either version, whole. Before, the
/// old version's blocks were punched as soon as the kernel forgot it, and it came back as
/// zeros.
#[test]
fn a_rename_over_lost_in_a_power_failure_leaves_a_whole_version() {
    if skip_without_fuse("a_rename_over_lost_in_a_power_failure_leaves_a_whole_version") {
        return;
    }
    let mut host = Host::ext4(96 << 20);
    let mut m = OnHost::new(&host, "32M");
    let old = pattern(256 << 10, 21);
    let new = pattern(128 << 10, 22);
    for (name, data) in [("doc", &old), ("doc.tmp", &new)] {
        let f = new_file(m.path(name));
        f.write_all_at(data, 0).unwrap();
        f.sync_all().unwrap();
    }
    let host_bytes = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&m.image).unwrap().blocks() * 512
    };
    let before = host_bytes();
    std::fs::rename(m.path("doc.tmp"), m.path("doc")).unwrap();
    // The replaced inode's blocks go (punched out of the image) when the kernel forgets it,
    // a moment after the rename.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while host_bytes() + (256 << 10) > before {
        assert!(
            std::time::Instant::now() < deadline,
            "the old version's blocks never went back to the host"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    commit_host_journal(&host);
    power_loss(&mut host, &mut m);
    let back = std::fs::read(m.path("doc")).unwrap();
    assert!(
        back == old || back == new,
        "doc after the power loss: {} bytes, {} of them zeros",
        back.len(),
        back.iter().filter(|&&b| b == 0).count()
    );
    m.umount();
}

/// What a holder stored through its pin is the file's data: an fsync of the file after the
/// stores (with the pin still held, or after it was let go) makes it durable, power failure
/// or not.
#[test]
fn a_holders_stores_fsynced_survive_a_power_failure() {
    if skip_without_fuse("a_holders_stores_fsynced_survive_a_power_failure") {
        return;
    }
    let mut host = Host::ext4(96 << 20);
    let mut m = OnHost::new(&host, "32M");
    let mut want = Vec::new();
    let mut c = None;
    let mut kept = Vec::new();
    for (name, seed, unpin_first) in [("held", 31u8, false), ("released", 32, true)] {
        let f = new_file(m.path(name));
        f.write_all_at(&pattern(512 << 10, seed), 0).unwrap();
        f.sync_all().unwrap();
        let conn =
            c.get_or_insert_with(|| pinfs::holder::client::Connection::for_file(&f).unwrap());
        let mut pin = conn
            .pin(
                &f,
                0,
                512 << 10,
                pinfs::holder::client::PinOptions::default(),
            )
            .unwrap();
        let stored = pattern(512 << 10, seed.wrapping_add(100));
        pin.as_mut_slice().copy_from_slice(&stored);
        if unpin_first {
            conn.unpin(&pin).unwrap();
        } else {
            kept.push(pin);
        }
        f.sync_all().unwrap();
        want.push((name, stored));
    }
    commit_host_journal(&host);
    host.shut_down();
    drop(kept);
    drop(c);
    m.detach();
    host.umount();
    host.mount_ext4();
    let (code, out) = fsck_report(&m.image);
    assert_eq!(code, 0, "fsck after the power loss: {out}");
    let out = pinfs(&["mount", m.image.to_str().unwrap(), m.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "mount after the power loss");
    m.mounted = true;
    for (name, stored) in want {
        let back = std::fs::read(m.path(name)).unwrap();
        assert!(
            back == stored,
            "{name}: the holder's fsync'd stores came back wrong ({} of {} bytes differ)",
            back.iter().zip(&stored).filter(|(a, b)| a != b).count(),
            stored.len()
        );
    }
    m.umount();
}

//! The daemon's life and the mount options that change behaviour: read-only mounts, access
//! times, exit on umount and on SIGTERM, and many threads at once.

#[path = "../common/mod.rs"]
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn wait_mounted(mnt: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let m = fs::read_to_string("/proc/self/mounts").unwrap();
        if m.lines()
            .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} was not mounted", mnt.display());
}

#[test]
fn read_only_mounts_refuse_changes_and_leave_the_image_alone() {
    if skip_without_fuse("read_only") {
        return;
    }
    let mut m = Mount::new("32M", "");
    fs::write(m.path("f"), b"keep").unwrap();
    m.umount();
    let before = fs::read(&m.image).unwrap();
    m.mount("ro");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"keep");
    assert_eq!(err_of(fs::write(m.path("g"), b"")), libc::EROFS);
    assert_eq!(
        err_of(OpenOptions::new().write(true).open(m.path("f"))),
        libc::EROFS
    );
    assert_eq!(err_of(fs::remove_file(m.path("f"))), libc::EROFS);
    m.umount();
    assert!(
        fs::read(&m.image).unwrap() == before,
        "a read-only mount writes nothing to the image"
    );
}

#[test]
fn access_times_follow_the_mount_option() {
    if skip_without_fuse("atime") {
        return;
    }
    let mut m = Mount::new("32M", "");
    let old = libc::timespec {
        tv_sec: 1_000_000,
        tv_nsec: 0,
    };
    let set_times = |p: &std::path::Path| {
        fs::write(p, b"data").unwrap();
        let c = cstr(p);
        let ts = [
            old,
            libc::timespec {
                tv_sec: 2_000_000,
                tv_nsec: 0,
            },
        ];
        // SAFETY: utimensat with a NUL-terminated path and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
            0
        );
    };
    let read = |p: &std::path::Path| {
        let mut s = String::new();
        File::open(p).unwrap().read_to_string(&mut s).unwrap();
    };
    // relatime (default): an atime older than mtime is updated by a read; a fresh one is not.
    set_times(&m.path("r"));
    read(&m.path("r"));
    let a1 = fs::metadata(m.path("r")).unwrap().atime();
    assert!(a1 > 2_000_000, "relatime updates an atime older than mtime");
    std::thread::sleep(Duration::from_millis(1100));
    read(&m.path("r"));
    assert_eq!(
        fs::metadata(m.path("r")).unwrap().atime(),
        a1,
        "relatime leaves a fresh atime"
    );
    m.remount("noatime");
    set_times(&m.path("n"));
    read(&m.path("n"));
    assert_eq!(
        fs::metadata(m.path("n")).unwrap().atime(),
        1_000_000,
        "noatime never updates"
    );
    m.remount("strictatime");
    read(&m.path("r"));
    assert!(
        fs::metadata(m.path("r")).unwrap().atime() > a1,
        "strictatime updates on every read"
    );
}

#[test]
fn daemon_exits_zero_on_umount_and_on_sigterm() {
    if skip_without_fuse("daemon_exit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    mkfs(&img, "32M");
    let spawn = || {
        Command::new(BIN)
            .args([
                "mount",
                img.to_str().unwrap(),
                mnt.to_str().unwrap(),
                "--foreground",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut d = spawn();
    wait_mounted(&mnt);
    fs::write(mnt.join("a"), b"1").unwrap();
    let c = cstr(&mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    assert_eq!(
        d.wait().unwrap().code(),
        Some(0),
        "umount ends the daemon with exit 0"
    );

    let mut d = spawn();
    wait_mounted(&mnt);
    fs::write(mnt.join("b"), b"2").unwrap();
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    assert_eq!(
        d.wait().unwrap().code(),
        Some(0),
        "SIGTERM unmounts and exits 0"
    );
    let m = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!m.contains(mnt.to_str().unwrap()), "the mount is gone");
    let out = pinfs(&["fsck", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("0 journal transactions replayed"),
        "a clean unmount leaves a checkpoint, no journal: {text}"
    );
    let mut d = spawn();
    wait_mounted(&mnt);
    assert_eq!(fs::read(mnt.join("a")).unwrap(), b"1");
    assert_eq!(fs::read(mnt.join("b")).unwrap(), b"2");
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    assert_eq!(d.wait().unwrap().code(), Some(0));
}

/// A lazy unmount (`umount -l`) while a file stays open works as on any filesystem: the
/// detached mount lives on for the open file, and the image with it; a new mount meanwhile
/// is refused with a message that says so and names the daemon; when the last open file
/// closes, the daemon writes its clean checkpoint, releases the image and exits.
#[test]
fn a_detached_mount_keeps_the_image_until_its_last_open_file_closes() {
    if skip_without_fuse("detached_open") {
        return;
    }
    let m = Mount::new("32M", "");
    fs::write(m.path("f"), b"still here").unwrap();
    let mut kept = File::open(m.path("f")).unwrap();
    let c = cstr(&m.mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    let other = m.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let try_mount = || {
        pinfs(&[
            "mount",
            m.image.to_str().unwrap(),
            other.to_str().unwrap(),
            "-o",
            "lock_wait=0",
        ])
    };
    // The daemon notices the detach in a moment (it watches the mount table).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        let out = try_mount();
        assert_eq!(out.status.code(), Some(1), "the image is still in use");
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        if e.contains("detached") || std::time::Instant::now() > end {
            break e;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        refusal.contains("still in use by a detached mount with open files"),
        "{refusal}"
    );
    let pid: u32 = refusal
        .split("pinfs process ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the message names the daemon's pid: {refusal}"));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(m.image.to_str().unwrap()),
        "process {pid} is the daemon of the image"
    );
    assert!(refusal.contains(&format!("kill {pid}")), "{refusal}");
    // The detached mount still serves its open file.
    let mut text = String::new();
    kept.read_to_string(&mut text).unwrap();
    assert_eq!(text, "still here");
    drop(kept);
    wait_unlocked(&m.image);
    // And the daemon exits (or is a zombie until its new parent reaps it).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let running = || {
        fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && !l.contains("zombie"))
        })
    };
    while running() {
        assert!(
            std::time::Instant::now() < end,
            "the daemon {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = m.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = pinfs(&["mount", m.image.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(other.join("f")).unwrap(), b"still here");
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(cstr(&other).as_ptr(), 0) }, 0);
    wait_unlocked(&m.image);
}

/// A daemon waiting for the image lock (here up to an hour: another daemon holds it) ends on
/// SIGTERM at once, without a mount, and leaves the other mount alone.
#[test]
fn sigterm_ends_a_daemon_waiting_for_the_image_lock() {
    if skip_without_fuse("sigterm_lock_wait") {
        return;
    }
    // The lock is held by another process's open of the image, not by a mounted daemon:
    // a mounted one would take the new mount as a second mount of its filesystem.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("test.img");
    mkfs(&image, "32M");
    let held = File::open(&image).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    /// Kills and reaps the daemon whatever happens (it must not mount later, once the lock is
    /// free).
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut d = Reaped(
        Command::new(BIN)
            .args(["mount", image.to_str().unwrap(), other.to_str().unwrap()])
            .args(["-o", "lock_wait=3600", "--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // It has the image open: it is waiting for the lock, with its signals in its own hands.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let has_image = || {
        fs::read_dir(format!("/proc/{}/fd", d.0.id()))
            .map(|fds| {
                fds.flatten()
                    .any(|e| fs::read_link(e.path()).is_ok_and(|p| p == image))
            })
            .unwrap_or(false)
    };
    while !has_image() {
        assert!(
            std::time::Instant::now() < end,
            "the daemon never opened the image"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = std::time::Instant::now();
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
    let mut status = None;
    while status.is_none() && t.elapsed() < Duration::from_secs(5) {
        status = d.0.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = status.expect("the daemon waiting for the lock ends on SIGTERM");
    eprintln!(
        "daemon waiting for the lock gone {:?} after SIGTERM",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(other.to_str().unwrap()),
        "no mount was made"
    );
    drop(held);
    let out = pinfs(&["fsck", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "the image is untouched");
}

#[test]
fn many_threads_at_once_stay_consistent() {
    if skip_without_fuse("many_threads") {
        return;
    }
    let mut m = Mount::new("256M", "threads=4");
    let root = m.mnt.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let mut expect = Vec::new();
                while std::time::Instant::now() < deadline {
                    n += 1;
                    let name = root.join(format!("t{t}-{}", n % 16));
                    let data: Vec<u8> =
                        (0..(n % 7) * 5000 + 1).map(|i| (i + n + t) as u8).collect();
                    match n % 5 {
                        0 => {
                            let _ = fs::remove_file(&name);
                        }
                        1 => {
                            let _ = fs::rename(&name, root.join(format!("t{t}-{}", (n + 1) % 16)));
                        }
                        2 => {
                            // A shared file: concurrent appends of whole records.
                            let mut f = OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(root.join("shared"))
                                .unwrap();
                            f.write_all(&[t as u8; 64]).unwrap();
                        }
                        _ => {
                            fs::write(&name, &data).unwrap();
                            let back = fs::read(&name).unwrap();
                            assert_eq!(back, data, "a file only this thread writes reads back");
                            expect.push(name);
                        }
                    }
                }
                n
            })
        })
        .collect();
    let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let shared = fs::read(m.path("shared")).unwrap();
    assert_eq!(
        shared.len() % 64,
        0,
        "appends never interleave inside a record"
    );
    for rec in shared.chunks(64) {
        assert!(rec.iter().all(|&b| b == rec[0]));
    }
    m.umount();
    let out = m.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{ops} operations from 8 threads");
}

/// A failed request is counted by errno in `status` and logged once, at debug for the errors
/// of normal operation, inside the request's span (operation, inode, process).
#[test]
fn failed_requests_are_counted_per_errno_and_logged_once_in_their_span() {
    if skip_without_fuse("errors_per_errno") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-trace")
        .tempdir()
        .unwrap();
    let img = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    let log_path = dir.path().join("daemon.log");
    fs::create_dir(&mnt).unwrap();
    mkfs(&img, "32M");
    let mut d = Command::new(BIN)
        .args([
            "mount",
            img.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--foreground",
        ])
        .env("PINFS_LOG", "debug")
        .stdin(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_mounted(&mnt);

    // EEXIST once: an exclusive create of an attribute the root already has (the kernel
    // knows nothing of attributes, so the daemon answers; an existing name would be refused
    // by the kernel's dentry cache without a request).
    let root = cstr(&mnt);
    let set = |flags| {
        // SAFETY: setxattr with NUL-terminated path and name, and a value of the length given.
        unsafe {
            libc::setxattr(
                root.as_ptr(),
                c"user.trace".as_ptr(),
                b"1".as_ptr().cast(),
                1,
                flags,
            )
        }
    };
    assert_eq!(
        set(libc::XATTR_CREATE),
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    assert_eq!(set(libc::XATTR_CREATE), -1);
    assert_eq!(errno(), libc::EEXIST);
    // ENOENT twice: lookups of missing names (a failed lookup is not cached).
    assert_eq!(err_of(fs::metadata(mnt.join("missing-1"))), libc::ENOENT);
    assert_eq!(err_of(fs::metadata(mnt.join("missing-2"))), libc::ENOENT);
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };

    let out = pinfs(&["status", mnt.to_str().unwrap(), "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    let st: pinfs::fs::status::Status =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("status --json: {e}: {json}"));
    let want: std::collections::BTreeMap<String, u64> =
        [("EEXIST".to_string(), 1), ("ENOENT".to_string(), 2)].into();
    assert_eq!(st.errors, want, "status: {json}");
    let out = pinfs(&["status", mnt.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("failed requests: EEXIST 1, ENOENT 2\n"),
        "status table: {table}"
    );

    let c = cstr(&mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    assert_eq!(d.wait().unwrap().code(), Some(0));
    let log = fs::read_to_string(&log_path).unwrap();
    // Each failing lookup: one line, in the request's span, with the errno.
    let lookups: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no such file or directory"))
        .collect();
    assert_eq!(lookups.len(), 2, "one line per failed lookup: {log}");
    for l in &lookups {
        assert!(
            l.contains("DEBUG")
                && l.contains(" op=\"lookup\" ino=1 ")
                && l.contains(&format!(" pid={tid}}}"))
                && l.contains("fuse{req=")
                && l.contains("errno=ENOENT"),
            "the lookup's line has its span and errno: {l}"
        );
    }
    let exists: Vec<&str> = log.lines().filter(|l| l.contains("file exists")).collect();
    assert_eq!(exists.len(), 1, "the EEXIST is logged once: {log}");
    assert!(
        exists[0].contains(" op=\"setxattr\" ino=1 ") && exists[0].contains("errno=EEXIST"),
        "{}",
        exists[0]
    );
}

/// A breaker that waits for a holder answers from another thread, in its request's span:
/// the EIO it gets when SIGTERM ends the wait is logged with the truncate's op and process.
#[test]
fn a_waiting_breaker_logs_in_its_request_span() {
    use std::io::BufRead;
    if skip_without_fuse("breaker_span") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-trace")
        .tempdir()
        .unwrap();
    let img = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    let log_path = dir.path().join("daemon.log");
    fs::create_dir(&mnt).unwrap();
    mkfs(&img, "32M");
    let mut d = Command::new(BIN)
        .args([
            "mount",
            img.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--foreground",
            "-o",
            "lease_break_time=30",
        ])
        .env("PINFS_LOG", "debug")
        .stdin(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_mounted(&mnt);
    let path = mnt.join("buf");
    fs::write(&path, vec![b'.'; 4 * 4096]).unwrap();
    // A holder in another process that ignores the break: the truncate waits.
    let mut holder = Command::new(BIN)
        .arg("pin")
        .arg(&path)
        .args(["--len", "4096", "--ignore-breaks"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"pin\""), "the holder's grant: {line}");
    let breaker = {
        let path = path.clone();
        std::thread::spawn(move || {
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::gettid() };
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            (tid, f.set_len(0).map_err(|e| e.raw_os_error()))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = pinfs(&["status", mnt.to_str().unwrap(), "--json"]);
        let st: pinfs::fs::status::Status =
            serde_json::from_slice(&out.stdout).expect("status --json");
        if st.waiting_breakers == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the truncate never waited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let (tid, r) = breaker.join().unwrap();
    assert_eq!(r, Err(Some(libc::EIO)), "the ended wait's errno");
    assert_eq!(d.wait().unwrap().code(), Some(0));
    holder.kill().ok();
    holder.wait().ok();
    let log = fs::read_to_string(&log_path).unwrap();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("errno=EIO")).collect();
    assert_eq!(failed.len(), 1, "the EIO is logged once: {log}");
    assert!(
        failed[0].contains(" op=\"setattr\" ") && failed[0].contains(&format!(" pid={tid}}}")),
        "the EIO is logged in the truncate's span: {}",
        failed[0]
    );
}

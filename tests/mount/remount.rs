//! Remounting a live mount (`pinfs mount IMAGE MOUNTPOINT -o remount,...`, which is also what
//! mount(8) runs for `mount -t fuse.pinfs -o remount,...`): read-only and back, live
//! options, and refusals that change nothing.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::*;
use pinfs::holder::client::{Connection, PinOptions};

fn remount(m: &Mount, options: &str) -> std::process::Output {
    pinfs(&[
        "mount",
        m.image.to_str().unwrap(),
        m.mnt.to_str().unwrap(),
        "-o",
        &format!("remount,{options}"),
    ])
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn erofs(m: &Mount, name: &str) -> i32 {
    err_of(fs::write(m.path(name), b"x"))
}

#[test]
fn remount_read_only_leaves_a_clean_image_and_refuses_writes() {
    if skip_without_fuse("remount_read_only_leaves_a_clean_image_and_refuses_writes") {
        return;
    }
    let mut m = Mount::new("64M", "");
    let mut f = new_file(m.path("kept"));
    f.write_all(b"kept across the remount").unwrap();
    drop(f);
    for k in 0..50 {
        fs::create_dir(m.path(&format!("d{k}"))).unwrap();
    }
    let out = remount(&m, "ro");
    assert!(out.status.success(), "remount,ro: {}", stderr(&out));
    assert_eq!(erofs(&m, "new"), libc::EROFS);
    assert_eq!(
        fs::read(m.path("kept")).unwrap(),
        b"kept across the remount"
    );
    // The image is what an unmount would leave: kill the daemon and nothing is replayed.
    let pid = m.daemon_pid();
    // SAFETY: kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let c = cstr(&m.mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    wait_unlocked(&m.image);
    let out = m.fsck();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "fsck: {report}{}", stderr(&out));
    assert_eq!(
        replayed(&report),
        0,
        "a read-only remount writes a clean checkpoint: {report}"
    );
    m.mount("");
    assert_eq!(
        fs::read(m.path("kept")).unwrap(),
        b"kept across the remount"
    );
    assert!(m.path("d49").is_dir());
}

#[test]
fn a_read_only_mount_remounted_read_write_takes_changes() {
    if skip_without_fuse("a_read_only_mount_remounted_read_write_takes_changes") {
        return;
    }
    let mut m = Mount::new("64M", "");
    fs::write(m.path("a"), b"a").unwrap();
    m.remount("ro");
    assert_eq!(erofs(&m, "b"), libc::EROFS);
    let out = remount(&m, "rw");
    assert!(out.status.success(), "remount,rw: {}", stderr(&out));
    fs::write(m.path("b"), b"b").unwrap();
    fs::remove_file(m.path("a")).unwrap();
    m.umount();
    let out = m.fsck();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.mount("");
    assert_eq!(fs::read(m.path("b")).unwrap(), b"b");
    assert!(!m.path("a").exists());
}

#[test]
fn remount_changes_live_options_and_refuses_the_rest_with_nothing_changed() {
    if skip_without_fuse("remount_changes_live_options_and_refuses_the_rest") {
        return;
    }
    let m = Mount::new("64M", "lease_break_time=45");
    let status = || {
        let json = Connection::for_path(&m.mnt).unwrap().status(false).unwrap();
        serde_json::from_str::<pinfs::fs::status::Status>(&json).unwrap()
    };
    let out = remount(&m, "lease_break_time=2,break_policy=refuse");
    assert!(out.status.success(), "{}", stderr(&out));
    let s = status();
    assert!(
        s.policy.lease_break_time_ms == Some(2000) && s.policy.break_policy == "refuse",
        "{s:?}"
    );
    // Options fixed for the mount's life are refused by name; nothing changes.
    // An option list that does not parse is a usage error (exit 2), as for a new mount.
    for (bad, code) in [
        ("threads=3,ro", 1),
        ("busy_blocks=off,ro", 1),
        ("lease_break_time=abc,ro", 2),
        ("no_such_option,ro", 2),
    ] {
        let out = remount(&m, bad);
        assert_eq!(out.status.code(), Some(code), "{bad}: {}", stderr(&out));
        let name = bad.split(['=', ',']).next().unwrap();
        assert!(stderr(&out).contains(name), "{bad}: {}", stderr(&out));
        fs::write(m.path("still-rw"), b"x").unwrap();
    }
    assert_eq!(status().policy.lease_break_time_ms, Some(2000));
    // A file open for writing keeps the mount read-write (the kernel's EBUSY).
    let w = new_file(m.path("open"));
    let out = remount(&m, "ro");
    assert!(
        !out.status.success(),
        "remount,ro with a file open for writing"
    );
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    w.write_all_at(b"y", 0).unwrap();
    drop(w);
    // A writable pin too (its holder may store into the file); the kernel flag goes back.
    let f = new_file(m.path("pinned"));
    f.set_len(4096).unwrap();
    let mut c = Connection::for_file(&f).unwrap();
    let pin = c.pin(&f, 0, 4096, PinOptions::default()).unwrap();
    drop(f);
    let out = remount(&m, "ro");
    assert!(!out.status.success(), "remount,ro with a writable pin");
    assert!(stderr(&out).contains("writable pin"), "{}", stderr(&out));
    fs::write(m.path("after-pin"), b"x").unwrap();
    c.unpin(&pin).unwrap();
    drop(c);
    let out = remount(&m, "ro");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(erofs(&m, "now-ro"), libc::EROFS);
}

//! Moves of data under faults: a revocation or fence that moves pinned blocks out of a file,
//! and checkpoints, in blocks that an old DAX window once covered; then kill -9 or a full
//! filesystem and umount. fsync'd data must come back, and the image must stay mountable.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use pinfs::holder::client::{Connection, PinOptions};

/// kill -9, detach the dead mount, wait for the lock to go.
fn kill_9(mut daemon: Child, image: &Path, mnt: &Path) {
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let c = cstr(mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    wait_unlocked(image);
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Pins and unpins all of a 4 MiB file W, then unlinks it: its blocks, once behind a DAX
/// window, are free for the next allocation.
fn old_window(mnt: &Path) {
    let w = new_file(mnt.join("W"));
    w.write_all_at(&pattern(4 << 20, 7), 0).unwrap();
    w.sync_all().unwrap();
    let mut c = Connection::for_file(&w).unwrap();
    let mut pin = c.pin(&w, 0, 4 << 20, PinOptions::default()).unwrap();
    pin.as_mut_slice()[..6].copy_from_slice(b"window");
    c.unpin(&pin).unwrap();
    drop(c);
    drop(w);
    fs::remove_file(mnt.join("W")).unwrap();
}

struct Dirs {
    _dir: tempfile::TempDir,
    image: std::path::PathBuf,
    mnt: std::path::PathBuf,
}

fn dirs(size: &str) -> Dirs {
    let dir = tempfile::Builder::new()
        .prefix("pinfs-reloc")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let image = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    mkfs(&image, size);
    Dirs {
        _dir: dir,
        image,
        mnt,
    }
}

/// After the kill: fsck is clean, and F holds exactly what was fsync'd.
fn check_after_kill(d: &Dirs, f_len: usize, want: &[u8]) {
    let (code, out) = fsck_report(&d.image);
    assert_eq!(code, 0, "fsck after the kill: {out}");
    let daemon = start_daemon(&d.image, &d.mnt, "");
    let back = fs::read(d.mnt.join("F")).unwrap();
    assert_eq!(back.len(), f_len, "F's size");
    assert!(
        back == want,
        "F's fsync'd data came back wrong ({} of {} bytes differ; zeros: {})",
        back.iter().zip(want).filter(|(a, b)| a != b).count(),
        want.len(),
        back.iter().all(|&b| b == 0)
    );
    kill_9(daemon, &d.image, &d.mnt);
}

#[test]
fn fsynced_data_moved_by_a_fence_survives_kill_9() {
    if skip_without_fuse("fsynced_data_moved_by_a_fence_survives_kill_9") {
        return;
    }
    let d = dirs("64M");
    let daemon = start_daemon(&d.image, &d.mnt, "break_policy=revoke");
    let data = pattern(1 << 20, 3);
    let f = new_file(d.mnt.join("F"));
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    old_window(&d.mnt);
    let mut c = Connection::for_file(&f).unwrap();
    let _pin = c.pin(&f, 0, 1 << 20, PinOptions::default()).unwrap();
    let me = c.holder_id().unwrap();
    // The fence moves F's pinned blocks to new ones (W's old blocks are the free ones).
    let before: Vec<u64> = (0..256).map(|b| block_of(&f, b)).collect();
    let out = pinfs(&["fence", d.mnt.to_str().unwrap(), &me.to_string()]);
    assert!(
        out.status.success(),
        "fence: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: Vec<u64> = (0..256).map(|b| block_of(&f, b)).collect();
    assert_ne!(before, after, "the fence moved F's blocks");
    std::thread::sleep(Duration::from_secs(1));
    kill_9(daemon, &d.image, &d.mnt);
    drop(c);
    check_after_kill(&d, 1 << 20, &data);
}

#[test]
fn fsynced_data_moved_by_a_revocation_survives_kill_9() {
    if skip_without_fuse("fsynced_data_moved_by_a_revocation_survives_kill_9") {
        return;
    }
    let d = dirs("64M");
    let daemon = start_daemon(
        &d.image,
        &d.mnt,
        "allow_other,break_policy=revoke,lease_break_time=0.3",
    );
    let data = pattern(1 << 20, 5);
    let f = new_file(d.mnt.join("F"));
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    fs::set_permissions(d.mnt.join("F"), fs::Permissions::from_mode(0o666)).unwrap();
    old_window(&d.mnt);
    // An unprivileged holder pins all of F and ignores the break of a truncate of F's tail.
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "pin",
        ])
        .arg(d.mnt.join("F"))
        .args(["--len", "1M", "--ignore-breaks"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let grant: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert!(grant["extents"].is_array(), "the holder's grant: {line}");
    let before = block_of(&f, 0);
    // The truncate waits out the deadline; the revocation then moves the pinned blocks that
    // stay in F (its first half) away from the holder.
    f.set_len(512 << 10).unwrap();
    let after = block_of(&f, 0);
    assert_ne!(before, after, "the revocation moved F's remaining blocks");
    std::thread::sleep(Duration::from_secs(1));
    kill_9(daemon, &d.image, &d.mnt);
    holder.kill().ok();
    holder.wait().ok();
    check_after_kill(&d, 512 << 10, &data[..512 << 10]);
}

#[test]
fn a_checkpoint_in_an_old_window_then_a_full_fs_and_umount_leave_a_clean_image() {
    if skip_without_fuse("a_checkpoint_in_an_old_window_then_a_full_fs_and_umount") {
        return;
    }
    let d = dirs("64M");
    let daemon = start_daemon(&d.image, &d.mnt, "");
    old_window(&d.mnt);
    // Enough chmods for several checkpoints; each goes to the lowest free blocks, which are
    // W's old ones.
    let p = d.mnt.join("c");
    fs::write(&p, b"x").unwrap();
    for k in 0..20_000u32 {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600 | (k & 0o77))).unwrap();
    }
    // Fill the filesystem.
    let big = new_file(d.mnt.join("big"));
    let chunk = vec![0xeeu8; 1 << 20];
    let mut off = 0u64;
    while big.write_all_at(&chunk, off).is_ok() {
        off += 1 << 20;
    }
    drop(big);
    let c = cstr(&d.mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0, "umount");
    let mut daemon = daemon;
    let status = daemon.wait().unwrap();
    assert!(status.success(), "the daemon's unmount failed: {status}");
    wait_unlocked(&d.image);
    let (code, out) = fsck_report(&d.image);
    assert_eq!(code, 0, "fsck after the umount: {out}");
    assert_eq!(
        replayed(&out),
        0,
        "the umount wrote its final checkpoint (nothing left to replay): {out}"
    );
    let daemon = start_daemon(&d.image, &d.mnt, "");
    assert_eq!(fs::read(&p).unwrap(), b"x");
    kill_9(daemon, &d.image, &d.mnt);
}

/// The image block behind file block `b` of `f`, as a short read-only pin's grant names it.
fn block_of(f: &fs::File, b: u64) -> u64 {
    let mut c = Connection::for_file(f).unwrap();
    let opts = PinOptions {
        read_only: true,
        ..Default::default()
    };
    let pin = c.pin(f, b * 4096, 4096, opts).unwrap();
    let blk = pin.extents[0].image_offset / 4096;
    c.unpin(&pin).unwrap();
    blk
}

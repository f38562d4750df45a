//! `statx(2)` through the kernel: the birth time (`STATX_BTIME`) is the inode's creation
//! time, which nothing but creating the inode sets, and it survives unmount. The kernel
//! asks the daemon with `FUSE_STATX` (Linux 6.6+) for a caller that wants more than `stat`
//! gives; without it the kernel has no birth time to give.

#[path = "../common/mod.rs"]
mod common;

use std::ffi::CString;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

/// `statx(path, flags, STATX_BASIC_STATS | STATX_BTIME)`: the result mask and the birth time
/// in nanoseconds since the epoch.
fn btime(p: &Path, flags: i32) -> (u32, i128) {
    let c = CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and a valid, writable struct statx.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut sx,
        )
    };
    assert_eq!(
        rc,
        0,
        "statx {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    let t = sx.stx_btime.tv_sec as i128 * 1_000_000_000 + sx.stx_btime.tv_nsec as i128;
    (sx.stx_mask, t)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// The birth time of `p`, asserting that statx reports one, both from the daemon
/// (`AT_STATX_FORCE_SYNC`) and as the kernel cached it (`AT_STATX_SYNC_AS_STAT`).
fn reported_btime(p: &Path) -> i128 {
    let (mask, forced) = btime(p, libc::AT_STATX_FORCE_SYNC);
    assert_ne!(
        mask & libc::STATX_BTIME,
        0,
        "{}: no STATX_BTIME ({mask:#x})",
        p.display()
    );
    let (mask, cached) = btime(p, libc::AT_STATX_SYNC_AS_STAT);
    assert_ne!(
        mask & libc::STATX_BTIME,
        0,
        "{}: no STATX_BTIME ({mask:#x})",
        p.display()
    );
    assert_eq!(forced, cached, "{}", p.display());
    forced
}

#[test]
fn statx_birth_time_is_the_creation_time_and_survives_changes_and_unmount() {
    if skip_without_fuse("statx_birth_time_is_the_creation_time_and_survives_changes_and_unmount") {
        return;
    }
    let mut m = Mount::new("64M", "");
    let before = now_ns();
    let file = m.path("f");
    std::fs::write(&file, b"x").unwrap();
    let dir = m.path("d");
    std::fs::create_dir(&dir).unwrap();
    let after = now_ns();
    let born_file = reported_btime(&file);
    let born_dir = reported_btime(&dir);
    for (p, born) in [(&file, born_file), (&dir, born_dir)] {
        assert!(
            before <= born && born <= after,
            "{}: birth time {born} not within creation [{before}, {after}]",
            p.display()
        );
    }

    // Writing, chmod, setting the times and a rename change other times, never this one.
    std::fs::write(&file, b"more").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let c = cstr(&file);
    let t = [libc::timespec {
        tv_sec: 1000,
        tv_nsec: 0,
    }; 2];
    // SAFETY: NUL-terminated path and two valid timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) },
        0
    );
    let moved = m.path("d/g");
    std::fs::rename(&file, &moved).unwrap();
    assert_eq!(reported_btime(&moved), born_file);
    assert_eq!(reported_btime(&dir), born_dir);

    m.umount();
    m.mount("");
    assert_eq!(reported_btime(&moved), born_file);
    assert_eq!(reported_btime(&dir), born_dir);
}

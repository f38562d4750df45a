//! A second mount of an image that a daemon already serves: the new mount point shows the
//! same filesystem, as a kernel filesystem gives a second mount of its block device the same
//! superblock (xfstests generic/732).
//!
//! A daemon holds its image's lock for its life, so a second daemon could never open the
//! image; and two daemons would be two filesystems with two caches. Instead, the mount
//! command finds the daemon that serves the image and binds that mount's root at the new
//! mount point: one FUSE connection, one superblock, one dentry and page cache, seen at two
//! places, which is exactly what the kernel makes of a second mount of a device. A change
//! through either mount point is seen at once through the other; the filesystem lives until
//! its last mount goes (the FUSE connection ends when the superblock does).
//!
//! What a second mount may ask for, as for a kernel filesystem: the kernel's per-mount flags
//! (`nosuid`, `nodev`, `noexec`) are its own; `ro`/`rw` must match the filesystem's state
//! (the kernel refuses a second mount that would change it, with `EBUSY`); every pinfs option
//! named must equal the filesystem's current setting. The daemon checks the list
//! ([`crate::daemon::remount::check_share`]) before anything is mounted, and a refused
//! second mount leaves nothing behind.
//!
//! Who may: root only. A bind mount needs `CAP_SYS_ADMIN`, and asking the daemon which image
//! it serves needs its raw image (root only). Anyone else gets the image's lock error, which
//! names the mount that holds it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use crate::fs::options::MountOptions;
use crate::holder::client::Connection;

/// When the image at `image` is locked by a live daemon that serves it at a mount point in
/// this mount namespace, and the caller is root, mounts that filesystem at `mountpoint`
/// too, with the per-mount flags of the option list `list`: `Some` with the outcome (on an
/// error nothing is mounted). `None` when there is no such mount: the mount then goes on as
/// a first mount, and a held lock is reported as it always is.
pub fn share_if_served(image: &Path, mountpoint: &Path, list: &str) -> Option<Result<(), String>> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let file = std::fs::File::open(image).ok()?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        // Nobody holds it: a first mount (the lock goes with `file`).
        return None;
    }
    let md = file.metadata().ok()?;
    let identity = (md.dev(), md.ino());
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut seen = Vec::new();
    for entry in table.lines().filter_map(MountEntry::parse) {
        // Only a mount of the filesystem's root can give the root: a bind mount of one of
        // its directories (the first mount may be gone while it lives on) would show that
        // directory as the second mount's root.
        if !entry.fstype.starts_with("fuse") || entry.root != Path::new("/") {
            continue;
        }
        if seen.contains(&entry.dev) {
            continue;
        }
        seen.push(entry.dev);
        // By device number, not by path: a `stat` of the mount point would ask that mount's
        // daemon, which may be anyone's and may not answer. The daemon compares the image
        // file's numbers with its own (a volatile cache maps a copy: only it knows).
        let Ok(mut conn) = Connection::for_dev(entry.dev) else {
            continue;
        };
        let first = entry.mountpoint.display().to_string();
        return Some(match conn.share(identity, list) {
            Err(e) if e.errno() == Some(libc::EXDEV) => continue,
            // A daemon of an older pinfs, which does not check the image's identity (the
            // request's name is new so that such a daemon refuses it rather than answer `ok`
            // for any image): it may serve another image, so it is never shared.
            Err(e) if is_unknown_request(&e) => continue,
            Err(e) => Err(format!(
                "{}: already mounted at {first}, and a second mount shares that filesystem: {e}",
                image.display()
            )),
            Ok(()) => bind(&entry, image, mountpoint, list),
        });
    }
    None
}

/// Is `e` a daemon's refusal of a request it does not know?
fn is_unknown_request(e: &crate::holder::client::ClientError) -> bool {
    matches!(
        e,
        crate::holder::client::ClientError::Refused { errno, message }
            if *errno == libc::EINVAL && message.starts_with("unknown request")
    )
}

/// Binds the root of the mount at `first` at `mountpoint`, with the per-mount flags of the
/// option list `list`. On an error nothing is mounted.
///
/// The mount is bound through a descriptor of its root, checked to be that very mount (its
/// mount id, or its device number where the kernel gives no mount id): the first mount may be
/// unmounted meanwhile, and a bind by path would then mount the directory under it.
fn bind(entry: &MountEntry, image: &Path, mountpoint: &Path, list: &str) -> Result<(), String> {
    use rustix::fs::{AtFlags, OFlags, StatxFlags};
    let first = &entry.mountpoint;
    let opts = MountOptions::parse(list)?;
    let gone = || {
        format!(
            "{}: the mount at {} went away while this mount was made; mount again",
            image.display(),
            first.display()
        )
    };
    let root = rustix::fs::open(
        first,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    )
    .map_err(|_| gone())?;
    // Without a sync: the attributes the kernel has (a mount id and a device number need no
    // daemon).
    let st = rustix::fs::statx(
        &root,
        "",
        AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
        StatxFlags::MNT_ID,
    )
    .map_err(|_| gone())?;
    let same = if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
        st.stx_mnt_id == entry.id
    } else {
        libc::makedev(st.stx_dev_major, st.stx_dev_minor) == entry.dev
    };
    if !same {
        return Err(gone());
    }
    use std::os::fd::AsRawFd;
    let source = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
    rustix::mount::mount_bind(&source, mountpoint).map_err(|e| {
        format!(
            "{}: cannot mount the filesystem mounted at {} on {} too: {}",
            image.display(),
            first.display(),
            mountpoint.display(),
            std::io::Error::from(e)
        )
    })?;
    let mut flags = MountFlags::BIND;
    for (on, flag) in [
        (opts.read_only, MountFlags::RDONLY),
        (!opts.suid, MountFlags::NOSUID),
        (!opts.dev, MountFlags::NODEV),
        (!opts.exec, MountFlags::NOEXEC),
        (
            opts.atime == crate::fs::AtimeMode::Never,
            MountFlags::NOATIME,
        ),
    ] {
        if on {
            flags |= flag;
        }
    }
    if let Err(e) = rustix::mount::mount_remount(mountpoint, flags, c"") {
        // Nothing stays mounted when the flags cannot be had.
        let _ = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH);
        return Err(format!(
            "{}: cannot set the flags of the second mount: {}",
            mountpoint.display(),
            std::io::Error::from(e)
        ));
    }
    Ok(())
}

/// The device number of the mount whose mount point is `path` exactly (the topmost, if
/// several), from this namespace's mount table: no request reaches any mount's daemon (a
/// `stat` of the mount point would ask it, and a daemon that does not serve yet, or was
/// shut down, cannot answer).
pub(crate) fn mount_dev_at(path: &Path) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table
        .lines()
        .rev()
        .filter_map(MountEntry::parse)
        .find(|e| e.mountpoint == path)
        .map(|e| e.dev)
}

/// One line of `/proc/self/mountinfo`: what this module and the daemon read of it.
pub(crate) struct MountEntry {
    /// The mount's id (`statx`'s `stx_mnt_id`).
    pub id: u64,
    /// The mount's device number (`st_dev` of every file on it).
    pub dev: u64,
    /// The directory of the filesystem that is the mount's root (`/` but for a bind mount
    /// of a directory).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its filesystem type (`fuse` for pinfs: the kernel shows no subtype).
    pub fstype: String,
}

impl MountEntry {
    /// Parses a line: `ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE SOURCE
    /// SUPER-OPTIONS`, with spaces, tabs, newlines and backslashes in paths as octal escapes.
    pub(crate) fn parse(line: &str) -> Option<MountEntry> {
        let f: Vec<&str> = line.split(' ').collect();
        let id = f.first()?.parse().ok()?;
        let (ma, mi) = f.get(2)?.split_once(':')?;
        let dev = libc::makedev(ma.parse().ok()?, mi.parse().ok()?);
        let root = PathBuf::from(unescape(f.get(3)?));
        let mountpoint = PathBuf::from(unescape(f.get(4)?));
        let dash = f.iter().position(|w| *w == "-")?;
        let fstype = f.get(dash + 1)?.to_string();
        Some(MountEntry {
            id,
            dev,
            root,
            mountpoint,
            fstype,
        })
    }
}

/// A mountinfo path with its `\NNN` octal escapes undone.
fn unescape(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = (b[i] == b'\\')
            .then(|| b.get(i + 1..i + 4))
            .flatten()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_mount_point_and_type() {
        let e = MountEntry::parse(
            "36 35 0:52 / /tmp/a\\040b\\134c rw,nosuid shared:1 - fuse /img rw,user_id=0",
        )
        .unwrap();
        assert_eq!(e.dev, libc::makedev(0, 52));
        assert_eq!(e.mountpoint, Path::new("/tmp/a b\\c"));
        assert_eq!(e.root, Path::new("/"));
        assert_eq!(e.id, 36);
        let e = MountEntry::parse("37 35 0:52 /sub\\040dir /tmp/b rw - fuse /img rw").unwrap();
        assert_eq!(e.root, Path::new("/sub dir"));
        assert_eq!(e.fstype, "fuse");
        // No optional tags.
        let e = MountEntry::parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw").unwrap();
        assert_eq!(
            (e.mountpoint.as_path(), e.fstype.as_str()),
            (Path::new("/"), "ext4")
        );
        assert!(MountEntry::parse("garbage").is_none());
        assert!(MountEntry::parse("1 0 x:1 / / rw - ext4 a b").is_none());
    }
}

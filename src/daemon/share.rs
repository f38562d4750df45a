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
use crate::holder::mounts::MountEntry;

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

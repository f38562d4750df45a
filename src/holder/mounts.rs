//! The mount table as this process sees it (`/proc/self/mountinfo`): which mount is where,
//! with its device number, read without a request to any mount's daemon (a `stat` of a FUSE
//! mount point asks its daemon, which may not serve yet, may be shut down, or may be anyone's).

use std::path::{Path, PathBuf};

/// The device number of the mount whose mount point is `path` exactly (the topmost, if
/// several), from this namespace's mount table: no request reaches any mount's daemon (a
/// `stat` of the mount point would ask it, and a daemon that does not serve yet, or was
/// shut down, cannot answer).
pub fn mount_dev_at(path: &Path) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table
        .lines()
        .rev()
        .filter_map(MountEntry::parse)
        .find(|e| e.mountpoint == path)
        .map(|e| e.dev)
}

/// One line of `/proc/self/mountinfo`: what pinfs reads of it.
pub struct MountEntry {
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
    pub fn parse(line: &str) -> Option<MountEntry> {
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

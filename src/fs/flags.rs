//! Inode flags (`chattr`/`lsattr`): reading and setting them, and the one check through
//! which every operation honours immutable and append-only.
//!
//! A FUSE inode never has the kernel's `S_IMMUTABLE` or `S_APPEND`, so none of the VFS's own
//! refusals (`may_open`, `may_setattr`, `may_delete`, `vfs_link`, `xattr_permission`,
//! `vfs_fallocate`) fire: each operation here states what it does to an inode as a
//! [`Change`], and [`forbidden`] answers as those VFS checks would, with `EPERM`. The kernel
//! still checks who may *set* the flags (owner or `CAP_FOWNER`; `CAP_LINUX_IMMUTABLE` to
//! change `i` or `a`) before the ioctl reaches the daemon.

use super::*;
use crate::meta::inode::flags as fl;

/// What an operation does to one inode, for [`forbidden`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Opened for writing; `append`: with `O_APPEND` and without `O_TRUNC`.
    OpenWrite {
        /// `O_APPEND` and no `O_TRUNC`.
        append: bool,
    },
    /// Bytes stored; `at_end`: all at or past the end of file.
    Write {
        /// The write starts at or past the end of file.
        at_end: bool,
    },
    /// Space allocated without changing bytes (`fallocate` mode 0 or `KEEP_SIZE`).
    Allocate,
    /// Bytes changed or dropped other than by appending: truncate, punch, zero range.
    Data,
    /// chmod, chown, or times set to given values.
    Attributes,
    /// Times set to now (`utimensat` with `NULL`/`UTIME_NOW`), which append-only allows.
    Touch,
    /// The inode loses or gains a name: unlink, rmdir, rename of it or over it, link to it.
    Name,
    /// An extended attribute set or removed.
    Xattr,
    /// An entry added to this directory.
    AddEntry,
    /// An entry removed from (or replaced in) this directory.
    RemoveEntry,
    /// A writable pin (a shared writable mapping of the file's blocks).
    WritablePin,
}

/// `Some(reason)` when `flags` forbid `change`, as Linux forbids it on an ext4 or XFS
/// inode with those flags.
pub(crate) fn forbidden(flags: u32, change: Change) -> Option<&'static str> {
    if flags & fl::IMMUTABLE != 0 {
        return Some("the file is immutable (chattr +i)");
    }
    if flags & fl::APPEND == 0 {
        return None;
    }
    let allowed = match change {
        Change::OpenWrite { append } => append,
        Change::Write { at_end } => at_end,
        Change::Allocate | Change::Touch | Change::AddEntry => true,
        Change::Data
        | Change::Attributes
        | Change::Name
        | Change::Xattr
        | Change::RemoveEntry
        | Change::WritablePin => false,
    };
    (!allowed).then_some("the file is append-only (chattr +a)")
}

/// `STATX_ATTR_IMMUTABLE` (`stx_attributes`): the file is `chattr +i`.
pub const STATX_ATTR_IMMUTABLE: u64 = 0x0000_0010;
/// `STATX_ATTR_APPEND`: the file is `chattr +a`.
pub const STATX_ATTR_APPEND: u64 = 0x0000_0020;
/// `STATX_ATTR_NODUMP`: the file is `chattr +d`.
pub const STATX_ATTR_NODUMP: u64 = 0x0000_0040;

/// The `STATX_ATTR_*` bits of an inode with `flags`, and the mask of those pinfs reports at
/// all (`stx_attributes_mask`: set or not, they are true), as ext4 reports them.
pub fn statx_attributes(flags: u32) -> (u64, u64) {
    let mut attributes = 0;
    for (flag, attr) in [
        (fl::IMMUTABLE, STATX_ATTR_IMMUTABLE),
        (fl::APPEND, STATX_ATTR_APPEND),
        (fl::NODUMP, STATX_ATTR_NODUMP),
    ] {
        if flags & flag != 0 {
            attributes |= attr;
        }
    }
    (
        attributes,
        STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND | STATX_ATTR_NODUMP,
    )
}

/// [`forbidden`] as a result.
pub(crate) fn check(i: &Inode, change: Change) -> FsResult<()> {
    match forbidden(i.flags, change) {
        Some(why) => Err(FsError::Flagged(why)),
        None => Ok(()),
    }
}

impl Fs {
    /// The inode's flags (`FS_IOC_GETFLAGS`).
    pub fn flags(&self, ino: u64) -> FsResult<u32> {
        self.is_up()?;
        Ok(self.table.get(ino)?.read().flags)
    }

    /// Sets the inode's flags (`FS_IOC_SETFLAGS`): `EOPNOTSUPP` for a flag pinfs does not
    /// store or an inode that is not a file or directory, `EPERM` for a caller who is not
    /// the owner or root (the kernel checks this first, with capabilities), or for a change of
    /// other flags of a file that stays immutable, `EBUSY` for
    /// adding `i` or `a` to a file with live writable pins. The change
    /// time moves, as on ext4.
    pub fn set_flags(&self, ino: u64, flags: u32, caller: Caller) -> FsResult<()> {
        self.with_journal_room(|| self.set_flags_once(ino, flags, caller))
    }

    fn set_flags_once(&self, ino: u64, flags: u32, caller: Caller) -> FsResult<()> {
        self.writable()?;
        let _gate = self.gate();
        let cells = [self.table.get(ino)?];
        let mut held = Held::lock(&cells);
        let i = held.get(ino)?;
        if fl::check(i.kind, flags).is_err() {
            return Err(FsError::NotSupported);
        }
        if caller.uid != 0 && caller.uid != i.uid {
            return Err(FsError::NotPermitted);
        }
        // As ext4 (`ext4_ioctl_check_immutable`): while `i` stays, no other flag changes.
        if i.flags & flags & fl::IMMUTABLE != 0 && i.flags != flags {
            return Err(FsError::Flagged(
                "the file is immutable (chattr +i): clear it to change other flags",
            ));
        }
        // A writable pin's holder stores straight into the blocks, which no flag stops (on
        // ext4 the next store through a shared mapping of an immutable file faults): `i` or
        // `a` waits until the writable pins are gone (unpinned or fenced). Checked under the
        // inode's lock, which a pin's grant takes to check the flags again.
        let locking = fl::IMMUTABLE | fl::APPEND;
        if flags & locking & !i.flags != 0 && self.leases.has_writable_pins(ino) {
            return Err(FsError::Busy(
                "the file has writable pins: unpin or fence them before chattr +i or +a",
            ));
        }
        let sync = (i.flags | flags) & fl::SYNC != 0;
        self.commit(
            &mut held,
            &[Record::SetFlags {
                ino,
                flags,
                time: Time::now(),
            }],
        )?;
        drop(held);
        if sync {
            self.sync_metadata()?;
        }
        Ok(())
    }

    /// For an inode with `chattr +S`: makes what an operation just did to it durable before
    /// the operation returns, as a `sync` inode on ext4 is written through.
    pub(super) fn sync_if_flagged(&self, ino: u64) -> FsResult<()> {
        let sync = self
            .table
            .get(ino)
            .is_ok_and(|c| c.read().flags & fl::SYNC != 0);
        if sync {
            self.fsync(ino, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_forbids_everything_append_only_all_but_appending() {
        let all = [
            Change::OpenWrite { append: true },
            Change::OpenWrite { append: false },
            Change::Write { at_end: true },
            Change::Write { at_end: false },
            Change::Allocate,
            Change::Data,
            Change::Attributes,
            Change::Touch,
            Change::Name,
            Change::Xattr,
            Change::AddEntry,
            Change::RemoveEntry,
            Change::WritablePin,
        ];
        for c in all {
            assert!(forbidden(fl::IMMUTABLE, c).is_some(), "{c:?}");
            assert!(forbidden(fl::IMMUTABLE | fl::APPEND, c).is_some(), "{c:?}");
            assert!(
                forbidden(fl::NODUMP | fl::NOATIME | fl::SYNC, c).is_none(),
                "{c:?}"
            );
        }
        let appendable = [
            Change::OpenWrite { append: true },
            Change::Write { at_end: true },
            Change::Allocate,
            Change::Touch,
            Change::AddEntry,
        ];
        for c in all {
            assert_eq!(
                forbidden(fl::APPEND, c).is_none(),
                appendable.contains(&c),
                "{c:?}"
            );
        }
    }

    #[test]
    fn statx_attributes_are_the_flags_statx_has_bits_for() {
        let mask = STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND | STATX_ATTR_NODUMP;
        assert_eq!(statx_attributes(0), (0, mask));
        assert_eq!(
            statx_attributes(fl::IMMUTABLE),
            (STATX_ATTR_IMMUTABLE, mask)
        );
        assert_eq!(statx_attributes(fl::APPEND), (STATX_ATTR_APPEND, mask));
        assert_eq!(statx_attributes(fl::NODUMP), (STATX_ATTR_NODUMP, mask));
        // `S` and `A` have no STATX_ATTR_* bit; compression is not claimed (pinfs has none).
        assert_eq!(statx_attributes(fl::SYNC | fl::NOATIME), (0, mask));
        assert_eq!(statx_attributes(fl::SUPPORTED), (mask, mask));
    }
}

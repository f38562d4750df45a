//! POSIX ACLs: the `system.posix_acl_access` and `system.posix_acl_default` xattrs, and the
//! three rules by which they and the mode bits move together.
//!
//! With `FUSE_POSIX_ACL` the kernel reads a file's ACL through `getxattr` and checks access
//! against it itself; what it leaves to the daemon (Linux's `fs/fuse/acl.c` says so) is
//! keeping the mode in step, which a kernel filesystem does in `posix_acl_update_mode`,
//! `posix_acl_chmod` and `posix_acl_create`:
//! - setting an access ACL sets the mode's owner, group (the mask, if there is one) and
//!   other bits from it, and an ACL the mode says all of is not stored;
//! - chmod rewrites the stored access ACL's owner, mask (or group) and other entries;
//! - a file created in a directory with a default ACL gets it as its access ACL, masked by
//!   the mode asked for (and a directory gets it as its own default ACL too); the umask
//!   applies only where there is no default ACL (`FUSE_DONT_MASK` hands it to the daemon).
//!
//! The value is the kernel's xattr form: a little-endian `u32` version 2, then 8-byte
//! entries of tag (`u16`), permissions (`u16`) and id (`u32`).

use super::*;

/// The access ACL's xattr.
pub const ACCESS: &[u8] = crate::meta::inode::ACL_XATTRS[0];
/// A directory's default ACL's xattr.
pub const DEFAULT: &[u8] = crate::meta::inode::ACL_XATTRS[1];

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One entry: tag, permission bits (`rwx` as 4, 2, 1), id (users and groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A parsed ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// Parses the xattr form; `EINVAL` for anything the kernel would not have written (a
    /// crafted image's value included): a wrong version, a torn entry, an unknown tag or
    /// permission bits, a missing or repeated owner, group or other entry, named entries
    /// without a mask.
    pub(crate) fn parse(value: &[u8]) -> FsResult<Acl> {
        let bad = FsError::Invalid("not a POSIX ACL");
        if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
            return Err(bad);
        }
        if u32::from_le_bytes(value[..4].try_into().unwrap()) != VERSION {
            return Err(bad);
        }
        let entries: Vec<Entry> = value[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let count = |t: u16| entries.iter().filter(|e| e.tag == t).count();
        let named = count(USER) + count(GROUP);
        let known = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];
        if entries
            .iter()
            .any(|e| !known.contains(&e.tag) || e.perm & !7 != 0)
            || count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (named > 0 && count(MASK) == 0)
        {
            return Err(bad);
        }
        Ok(Acl { entries })
    }

    /// An ACL of `(tag, permissions, id)` entries, unchecked (for building images and
    /// tests; [`Acl::parse`] is what checks).
    pub(crate) fn from_entries(entries: &[(u16, u16, u32)]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect(),
        }
    }

    /// The xattr form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn perm_of(&self, tag: u16) -> u32 {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map_or(0, |e| e.perm as u32)
    }

    /// Does this access ACL give a process with `uid` (in the groups `in_group` says) the
    /// `want` bits (`rwx` as 4, 2, 1) of a file owned by `owner`:`group`? Linux's
    /// `posix_acl_permission`: the owner's entry; else a named user's, under the mask; else
    /// any group entry of the caller's that grants all of `want`, under the mask (one that
    /// matches but grants less denies); else other.
    pub(crate) fn permits(
        &self,
        owner: u32,
        group: u32,
        uid: u32,
        in_group: impl Fn(u32) -> bool,
        want: u32,
    ) -> bool {
        let ok = |p: u32| p & want == want;
        let mask = self
            .entries
            .iter()
            .find(|e| e.tag == MASK)
            .map_or(7, |e| e.perm as u32);
        if uid == owner {
            return ok(self.perm_of(USER_OBJ));
        }
        if let Some(e) = self.entries.iter().find(|e| e.tag == USER && e.id == uid) {
            return ok(e.perm as u32 & mask);
        }
        let mut matched = false;
        for e in &self.entries {
            let member = match e.tag {
                GROUP_OBJ => in_group(group),
                GROUP => in_group(e.id),
                _ => false,
            };
            if member {
                matched = true;
                if ok(e.perm as u32) {
                    return ok(mask);
                }
            }
        }
        !matched && ok(self.perm_of(OTHER))
    }

    fn has_mask(&self) -> bool {
        self.entries.iter().any(|e| e.tag == MASK)
    }

    /// The mode's `rwxrwxrwx` bits this ACL stands for, and whether the mode says all of it
    /// (only the owner, group and other entries): then it need not be stored.
    pub(crate) fn mode_bits(&self) -> (u32, bool) {
        let group = if self.has_mask() { MASK } else { GROUP_OBJ };
        let bits = self.perm_of(USER_OBJ) << 6 | self.perm_of(group) << 3 | self.perm_of(OTHER);
        (bits, self.entries.len() == 3)
    }

    /// chmod: the owner, the mask (or, without one, the group) and other take the new
    /// mode's bits; named entries keep theirs (the mask limits them).
    pub(crate) fn chmod(&mut self, perm: u32) {
        let group = if self.has_mask() { MASK } else { GROUP_OBJ };
        for e in &mut self.entries {
            let bits = match e.tag {
                USER_OBJ => perm >> 6,
                OTHER => perm,
                t if t == group => perm >> 3,
                _ => continue,
            };
            e.perm = (bits & 7) as u16;
        }
    }

    /// A default ACL inherited by a file created with permission bits `perm`: each class
    /// keeps what both the ACL and the mode allow. Returns the new mode bits (set-id and
    /// sticky kept) and the access ACL, `None` when the mode says all of it.
    pub(crate) fn inherit(&self, perm: u32) -> (u32, Option<Acl>) {
        let mut acl = self.clone();
        let mut mode = perm;
        let group = if acl.has_mask() { MASK } else { GROUP_OBJ };
        for e in &mut acl.entries {
            let shift = match e.tag {
                USER_OBJ => 6,
                OTHER => 0,
                t if t == group => 3,
                _ => continue,
            };
            e.perm &= ((mode >> shift) & 7) as u16;
            mode = (mode & !(7 << shift)) | ((e.perm as u32) << shift);
        }
        let equiv = acl.entries.len() == 3;
        (mode, (!equiv).then_some(acl))
    }
}

/// Is `name` one of the ACL xattrs?
pub(crate) fn is_acl(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

/// The records that store `acl` as `ino`'s xattr `name` at `time`, or remove it.
pub(super) fn record(ino: u64, name: &[u8], acl: Option<&Acl>, time: Time) -> Record {
    match acl {
        Some(a) => Record::SetXattr {
            ino,
            name: name.to_vec(),
            value: a.encode(),
            time,
        },
        None => Record::RemoveXattr {
            ino,
            name: name.to_vec(),
            time,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl::from_entries(entries)
    }

    #[test]
    fn the_xattr_form_round_trips_and_bad_values_are_refused() {
        let a = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 0, 0),
        ]);
        assert_eq!(Acl::parse(&a.encode()).unwrap(), a);
        let mut v = a.encode();
        v[0] = 1;
        assert!(Acl::parse(&v).is_err(), "version 1");
        assert!(Acl::parse(&a.encode()[..11]).is_err(), "a torn entry");
        let no_mask = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, 0),
            (OTHER, 0, 0),
        ]);
        assert!(
            Acl::parse(&no_mask.encode()).is_err(),
            "named entries need a mask"
        );
        let two_owners = acl(&[
            (USER_OBJ, 7, 0),
            (USER_OBJ, 5, 0),
            (GROUP_OBJ, 5, 0),
            (OTHER, 0, 0),
        ]);
        assert!(Acl::parse(&two_owners.encode()).is_err());
        let bad_perm = acl(&[(USER_OBJ, 8, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)]);
        assert!(Acl::parse(&bad_perm.encode()).is_err());
    }

    #[test]
    fn permission_follows_the_entries_as_the_kernel_checks_them() {
        let e = |tag, perm, id| Entry { tag, perm, id };
        let acl = Acl {
            entries: vec![
                e(USER_OBJ, 7, 0),
                e(USER, 0, 65534),
                e(USER, 7, 1000),
                e(GROUP_OBJ, 5, 0),
                e(GROUP, 1, 50),
                e(MASK, 5, 0),
                e(OTHER, 5, 0),
            ],
        };
        let none = |_| false;
        assert!(acl.permits(7, 8, 7, none, 7), "the owner");
        assert!(
            !acl.permits(7, 8, 65534, none, 4),
            "a named user with nothing"
        );
        assert!(
            acl.permits(7, 8, 1000, none, 5),
            "a named user, under the mask"
        );
        assert!(!acl.permits(7, 8, 1000, none, 2), "the mask takes write");
        assert!(acl.permits(7, 8, 2, |g| g == 8, 5), "the owning group");
        assert!(
            !acl.permits(7, 8, 2, |g| g == 50, 4),
            "a matched group denies"
        );
        assert!(
            acl.permits(7, 8, 2, |g| g == 50 || g == 8, 4),
            "any group that grants"
        );
        assert!(acl.permits(7, 8, 2, none, 5), "other");
    }

    #[test]
    fn the_mode_follows_the_acl_and_the_mask_stands_for_the_group() {
        let minimal = acl(&[(USER_OBJ, 6, 0), (GROUP_OBJ, 4, 0), (OTHER, 0, 0)]);
        assert_eq!(minimal.mode_bits(), (0o640, true));
        let full = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, 0),
            (MASK, 5, 0),
            (OTHER, 1, 0),
        ]);
        assert_eq!(full.mode_bits(), (0o751, false));
        let mut c = full.clone();
        c.chmod(0o640);
        assert_eq!(c.mode_bits(), (0o640, false));
        // The named user and the owning group keep their entries: the mask limits them.
        assert_eq!(c.perm_of(USER), 7);
        assert_eq!(c.perm_of(GROUP_OBJ), 4);
    }

    #[test]
    fn inheritance_keeps_what_both_the_default_acl_and_the_mode_allow() {
        let d = acl(&[
            (USER_OBJ, 7, 0),
            (USER, 6, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        let (mode, a) = d.inherit(0o2664);
        assert_eq!(mode, 0o2664);
        let a = a.expect("named entries make it more than the mode");
        assert_eq!(a.mode_bits(), (0o664, false));
        assert_eq!(
            a.perm_of(USER),
            6,
            "named entries are not masked by the mode"
        );
        let minimal = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)]);
        assert_eq!(minimal.inherit(0o666), (0o640, None));
    }
}

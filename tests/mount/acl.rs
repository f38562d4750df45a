//! POSIX ACLs through the kernel: the kernel checks access against them (`FUSE_POSIX_ACL`);
//! pinfs keeps the mode in step when an ACL is set or the mode is changed, and gives new
//! files their directory's default ACL, with the umask only where there is none.
//! `noacl` turns them off: the xattrs are then `EOPNOTSUPP`.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// The kernel's xattr form of an ACL.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        // The kernel writes ACL_UNDEFINED_ID for entries that name nobody.
        let id = if matches!(tag, USER | GROUP) {
            id
        } else {
            u32::MAX
        };
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The xattr's value, or the errno.
fn get(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cstr(p), std::ffi::CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated path and name; the buffer's pointer and length.
    let n = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// Creates `p` with `mode` under `umask`, as a program would (open with O_CREAT).
fn create_with_umask(p: &Path, mode: u32, umask: u32) {
    let c = cstr(p);
    // SAFETY: umask and open with a NUL-terminated path; the descriptor is closed at once.
    unsafe {
        let old = libc::umask(umask);
        let fd = libc::open(c.as_ptr(), libc::O_CREAT | libc::O_WRONLY, mode);
        libc::umask(old);
        assert!(
            fd >= 0,
            "create {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
}

#[test]
fn a_named_user_entry_grants_access_and_the_mask_limits_it() {
    if skip_without_fuse("acl") {
        return;
    }
    let mut m = Mount::new("32M", "");
    let f = m.path("f");
    fs::write(&f, b"root's").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let (g, f2) = (f.clone(), f.clone());
    assert!(
        as_nobody(move || err_of(fs::read(&g)) == libc::EACCES),
        "0600 keeps nobody out"
    );
    let a = acl(&[
        (USER_OBJ, 6, 0),
        (USER, 6, 65534),
        (GROUP_OBJ, 0, 0),
        (MASK, 6, 0),
        (OTHER, 0, 0),
    ]);
    assert_eq!(setxattr(&f, "system.posix_acl_access", &a, 0), 0);
    assert_eq!(mode(&f), 0o660, "the mask is the group class of the mode");
    assert_eq!(get(&f, "system.posix_acl_access").unwrap(), a);
    assert!(
        as_nobody(move || fs::read(&f2).is_ok_and(|b| b == b"root's")
            && fs::write(&f2, b"nobody's").is_ok()),
        "the named entry lets uid 65534 read and write"
    );
    // chmod narrows the mask, and with it the named entry's effective rights.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    let stored = get(&f, "system.posix_acl_access").unwrap();
    assert_eq!(
        stored,
        acl(&[
            (USER_OBJ, 6, 0),
            (USER, 6, 65534),
            (GROUP_OBJ, 0, 0),
            (MASK, 4, 0),
            (OTHER, 0, 0)
        ])
    );
    let g = f.clone();
    assert!(
        as_nobody(move || fs::read(&g).is_ok() && err_of(fs::write(&g, b"x")) == libc::EACCES),
        "after chmod 640 the mask leaves uid 65534 read only"
    );
    // It is all in the image: after a remount the same.
    m.remount("");
    assert_eq!(get(&f, "system.posix_acl_access").unwrap(), stored);
    assert_eq!(mode(&f), 0o640);
    let g = f.clone();
    assert!(as_nobody(
        move || fs::read(&g).is_ok_and(|b| b == b"nobody's")
    ));
    // An ACL the mode says all of is not stored: only the mode changes.
    let minimal = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 1, 0)]);
    assert_eq!(setxattr(&f, "system.posix_acl_access", &minimal, 0), 0);
    assert_eq!(mode(&f), 0o751);
    assert_eq!(get(&f, "system.posix_acl_access"), Err(libc::ENODATA));
    m.umount();
    let out = m.fsck();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn new_files_inherit_the_default_acl_and_the_umask_applies_only_without_one() {
    if skip_without_fuse("acl") {
        return;
    }
    let m = Mount::new("32M", "");
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    let default = acl(&[
        (USER_OBJ, 7, 0),
        (USER, 7, 65534),
        (GROUP_OBJ, 5, 0),
        (MASK, 7, 0),
        (OTHER, 0, 0),
    ]);
    assert_eq!(setxattr(&d, "system.posix_acl_default", &default, 0), 0);
    // Under umask 077 a file asked for 0666 still gets its group class from the ACL.
    create_with_umask(&d.join("f"), 0o666, 0o077);
    assert_eq!(mode(&d.join("f")), 0o660, "the default ACL, not the umask");
    assert_eq!(
        get(&d.join("f"), "system.posix_acl_access").unwrap(),
        acl(&[
            (USER_OBJ, 6, 0),
            (USER, 7, 65534),
            (GROUP_OBJ, 5, 0),
            (MASK, 6, 0),
            (OTHER, 0, 0)
        ])
    );
    assert_eq!(
        get(&d.join("f"), "system.posix_acl_default"),
        Err(libc::ENODATA)
    );
    // A directory inherits the default ACL as its own default too.
    fs::create_dir(d.join("sub")).unwrap();
    assert_eq!(
        get(&d.join("sub"), "system.posix_acl_default").unwrap(),
        default
    );
    assert_eq!(mode(&d.join("sub")), 0o770);
    // Outside it, the umask.
    create_with_umask(&m.path("plain"), 0o666, 0o027);
    assert_eq!(mode(&m.path("plain")), 0o640);
    assert_eq!(
        get(&m.path("plain"), "system.posix_acl_access"),
        Err(libc::ENODATA)
    );
    // A default ACL belongs to directories only (the kernel's EACCES).
    assert_eq!(
        setxattr(&m.path("plain"), "system.posix_acl_default", &default, 0),
        libc::EACCES
    );
    let f = d.join("f");
    assert!(as_nobody(
        move || fs::write(&f, b"via the inherited entry").is_ok()
    ));
}

#[test]
fn noacl_refuses_acl_xattrs_and_masks_with_the_umask() {
    if skip_without_fuse("acl") {
        return;
    }
    let m = Mount::new("32M", "noacl");
    let f = m.path("f");
    create_with_umask(&f, 0o666, 0o022);
    assert_eq!(mode(&f), 0o644);
    let a = acl(&[
        (USER_OBJ, 6, 0),
        (USER, 6, 65534),
        (GROUP_OBJ, 0, 0),
        (MASK, 6, 0),
        (OTHER, 0, 0),
    ]);
    assert_eq!(
        setxattr(&f, "system.posix_acl_access", &a, 0),
        libc::EOPNOTSUPP
    );
    assert_eq!(get(&f, "system.posix_acl_access"), Err(libc::EOPNOTSUPP));
}

/// The names `listxattr` gives for `p`.
fn list(p: &Path) -> Vec<String> {
    let p = cstr(p);
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid NUL-terminated path and a buffer of the given length.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", errno());
    buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
fn a_noacl_mount_of_an_image_with_acls_neither_lists_nor_applies_them() {
    // ACLs set on an acl mount stay in the image; a noacl mount ignores them as ext4 does:
    // the kernel checks the mode bits only, and listxattr leaves out the names whose
    // getxattr is EOPNOTSUPP (a copy tool that lists, then gets, would fail on them). The
    // next acl mount has them again.
    if skip_without_fuse("acl") {
        return;
    }
    let mut m = Mount::new("32M", "");
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    let a = acl(&[
        (USER_OBJ, 6, 0),
        (USER, 6, 65534),
        (GROUP_OBJ, 0, 0),
        (MASK, 6, 0),
        (OTHER, 0, 0),
    ]);
    assert_eq!(setxattr(&f, "system.posix_acl_access", &a, 0), 0);
    assert_eq!(setxattr(&f, "user.kept", b"1", 0), 0);
    let g = f.clone();
    assert!(as_nobody(move || fs::read(&g).is_ok()), "the ACL grants");
    m.remount("noacl");
    assert_eq!(list(&f), ["user.kept"]);
    assert_eq!(get(&f, "system.posix_acl_access"), Err(libc::EOPNOTSUPP));
    let g = f.clone();
    assert!(
        as_nobody(move || err_of(fs::read(&g)) == libc::EACCES),
        "the mode (0660) alone keeps 65534 out"
    );
    m.remount("");
    let mut names = list(&f);
    names.sort();
    assert_eq!(names, ["system.posix_acl_access", "user.kept"]);
    assert_eq!(get(&f, "system.posix_acl_access"), Ok(a));
}

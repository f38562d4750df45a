//! `mount -t fuse.pinfs IMAGE MOUNTPOINT -o OPTIONS` as xfstests (FSTYP=fuse,
//! FUSE_SUBTYP=.pinfs) uses it: through mount(8) and mount.fuse3, which runs `pinfs` from a
//! fixed PATH. The test links the freshly built binary into /usr/local/bin when no `pinfs`
//! is there, and removes the link afterwards.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn mounted(p: &Path) -> bool {
    let m = fs::read_to_string("/proc/self/mounts").unwrap();
    m.lines()
        .any(|l| l.split(' ').nth(1) == Some(p.to_str().unwrap()))
}

struct Link(bool);
impl Drop for Link {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::remove_file("/usr/local/bin/pinfs");
        }
    }
}

#[test]
fn mount_t_fuse_pinfs_works_as_xfstests_needs() {
    if skip_without_fuse("mount_t_fuse_pinfs_works_as_xfstests_needs") {
        return;
    }
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        panic!("mount.fuse3 is missing: install Debian's fuse3 (the README's set-up does)");
    }
    let _link = Link(if Path::new("/usr/local/bin/pinfs").exists() {
        false
    } else {
        std::os::unix::fs::symlink(BIN, "/usr/local/bin/pinfs").unwrap();
        true
    });
    let dir = tempfile::Builder::new()
        .prefix("pinfs-helper")
        .tempdir()
        .unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let img = dir.path().join("test.img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    mkfs(&img, "128M");
    let (i, m) = (img.to_str().unwrap(), mnt.to_str().unwrap());

    let (ok, out) = sh(&format!("mount -t fuse.pinfs -o rw,dev,suid {i} {m}"));
    assert!(ok && mounted(&mnt), "mount -t fuse.pinfs: {out}");
    let (_, df) = sh(&format!("df -T -P {m} | awk 'NR==2 {{print $1, $2}}'"));
    assert_eq!(
        df.trim(),
        format!("{i} fuse"),
        "df -T shows the image as given and type fuse"
    );
    let (ok, out) = sh(&format!("umount {i}"));
    assert!(ok && !mounted(&mnt), "umount IMAGE: {out}");

    for n in 1..=5 {
        let (ok, out) = sh(&format!(
            "mount -t fuse.pinfs {i} {m} && echo x > {m}/f{n} && umount {i}"
        ));
        assert!(ok, "cycle {n}: {out}");
    }
    let (ok, out) = sh(&format!(
        "mount -t fuse.pinfs {i} {m} && ls {m} | grep -c '^f[1-5]$'; umount {i}"
    ));
    assert!(
        ok && out.trim() == "5",
        "data kept across quick remounts: {out}"
    );

    let (ok, out) = sh(&format!("mount -t fuse.pinfs -o rw,dev,suid,noatime,allow_other,default_permissions {i} {m} && umount {i}"));
    assert!(ok, "the options xfstests passes: {out}");

    // Remount as xfstests does it (`_scratch_remount`: mount(8) with the type, which hands
    // `-o remount,...` to the helper). The kernel shows the type as plain `fuse`, which
    // xfstests's mount checks expect, so a remount names the type.
    let (ok, out) = sh(&format!(
        "mount -t fuse.pinfs -o rw,dev,suid {i} {m} && echo x > {m}/before && mount -t fuse.pinfs -o remount,ro {i} {m}"
    ));
    assert!(ok, "mount -o remount,ro: {out}");
    let (ok, out) = sh(&format!("echo y > {m}/after"));
    assert!(
        !ok && out.contains("Read-only file system"),
        "a write after remount,ro: {out}"
    );
    let (ok, out) = sh(&format!(
        "mount -t fuse.pinfs -o remount,rw {i} {m} && echo y > {m}/after && cat {m}/before"
    ));
    assert!(ok && out.trim() == "x", "mount -o remount,rw: {out}");
    let (ok, out) = sh(&format!("grep ' {m} ' /proc/mounts"));
    assert!(
        ok && out.contains(" rw,") && out.contains("user_id="),
        "the mount is read-write again, still a FUSE mount: {out}"
    );
    let (ok, out) = sh(&format!("umount {m}"));
    assert!(ok, "{out}");

    let (ok, out) = sh(&format!("mount -t fuse.pinfs -o no_such_option {i} {m}"));
    assert!(
        !ok && out.contains("no_such_option") && !mounted(&mnt),
        "unknown option refused by name: {out}"
    );

    let (ok, out) = sh(&format!("mount -t fuse.pinfs -o allow_other,default_permissions {i} {m} && mkdir -p {m}/shared && chmod 1777 {m}/shared"));
    assert!(ok, "{out}");
    let (ok, out) = sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups touch {m}/shared/by-nobody"
    ));
    assert!(ok, "another user creates a file: {out}");
    let md = fs::metadata(mnt.join("shared/by-nobody")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (65534, 65534),
        "it belongs to that user"
    );

    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let out = pinfs(&["mount", i, other.to_str().unwrap(), "-o", "lock_wait=1"]);
    assert!(
        !out.status.success() && !mounted(&other),
        "a second mount is refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(m),
        "naming the mount point"
    );
    let (ok, out) = sh(&format!("umount {m}"));
    assert!(ok, "{out}");
    wait_unlocked(&img);
    assert_eq!(pinfs(&["fsck", i]).status.code(), Some(0));
}

//! Images: mkfs refusals, mount refusals of foreign, truncated, corrupt or newer images (with a
//! clear message and a non-zero exit, never a panic), the image lock, and fsck repairs.

#[path = "../common/mod.rs"]
mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use pinfs::log::checkpoint;
use pinfs::meta::inode::{Inode, Kind, Time, ROOT_INO};
use pinfs::store::image::{Image, BLOCK_SIZE};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn try_mount(image: &Path, mnt: &Path) -> std::process::Output {
    pinfs(&["mount", image.to_str().unwrap(), mnt.to_str().unwrap()])
}

fn assert_refused(out: &std::process::Output, image: &Path, words: &str) {
    let e = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {e}");
    assert!(
        e.contains(image.to_str().unwrap()),
        "the message names the image: {e}"
    );
    assert!(e.contains(words), "the message says '{words}': {e}");
    assert!(!e.contains("panicked"), "no panic: {e}");
}

#[test]
fn mkfs_refuses_to_overwrite_and_checks_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    fs::write(&img, b"precious data that is not a pinfs image").unwrap();
    let out = pinfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a pinfs image"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(&img).unwrap(),
        b"precious data that is not a pinfs image",
        "nothing was lost"
    );
    fs::remove_file(&img).unwrap();
    mkfs(&img, "64M");
    let out = pinfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = pinfs(&["mkfs", img.to_str().unwrap(), "--size", "128M", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::metadata(&img).unwrap().len(), 128 << 20);
    // Sparse: the host backs the metadata area (superblocks and the 2 MiB journal), which
    // is stored into through the mapping, and no data block.
    let host_bytes = fs::metadata(&img).unwrap().blocks() * 512;
    assert!(
        ((2 + 512) * 4096..4 << 20).contains(&host_bytes),
        "the image is sparse past its metadata area: {host_bytes} bytes on the host"
    );
    // A size that is not one is a usage error (exit 2) naming --size; one too small for a
    // filesystem is refused by mkfs (exit 1).
    for (bad, code) in [("12Q", 2), ("abc", 2), ("", 2), ("1M", 1)] {
        let out = pinfs(&[
            "mkfs",
            dir.path().join("x").to_str().unwrap(),
            "--size",
            bad,
        ]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "size '{bad}' is refused: {}",
            stderr(&out)
        );
        assert!(
            code == 1 || stderr(&out).contains("--size"),
            "{}",
            stderr(&out)
        );
        assert!(
            !dir.path().join("x").exists(),
            "no image made of size '{bad}'"
        );
    }
    let out = pinfs(&["mkfs", dir.path().join("y").to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing --size is a usage error"
    );
    assert!(stderr(&out).contains("--size"));
    let out = pinfs(&[
        "mkfs",
        dir.path().join("big").to_str().unwrap(),
        "--size",
        "1T",
    ]);
    assert!(
        out.status.success(),
        "a 1 TiB sparse image: {}",
        stderr(&out)
    );
}

use std::os::unix::fs::MetadataExt;

#[test]
fn mount_refuses_bad_images_with_reasons() {
    if skip_without_fuse("mount_refuses_bad_images_with_reasons") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();

    let foreign = dir.path().join("foreign");
    fs::write(&foreign, vec![0x42u8; 1 << 20]).unwrap();
    assert_refused(&try_mount(&foreign, &mnt), &foreign, "not a pinfs image");

    let tiny = dir.path().join("tiny");
    fs::write(&tiny, b"x").unwrap();
    assert_refused(&try_mount(&tiny, &mnt), &tiny, "not a pinfs image");

    let truncated = dir.path().join("truncated");
    mkfs(&truncated, "64M");
    OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    assert_refused(&try_mount(&truncated, &mnt), &truncated, "truncated");

    let badsum = dir.path().join("badsum");
    mkfs(&badsum, "64M");
    let f = OpenOptions::new().write(true).open(&badsum).unwrap();
    for copy in 0..2u64 {
        f.write_all_at(&[0xee; 8], copy * BLOCK_SIZE + 20).unwrap();
    }
    assert_refused(&try_mount(&badsum, &mnt), &badsum, "checksum");

    let newer = dir.path().join("newer");
    mkfs(&newer, "64M");
    let f = OpenOptions::new().write(true).open(&newer).unwrap();
    for copy in 0..2u64 {
        f.write_all_at(&99u32.to_le_bytes(), copy * BLOCK_SIZE + 8)
            .unwrap();
    }
    assert_refused(&try_mount(&newer, &mnt), &newer, "version 99");

    let missing = dir.path().join("missing");
    let out = try_mount(&missing, &mnt);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mkfs"), "{}", stderr(&out));

    let out = try_mount(&badsum, &dir.path().join("no-such-dir"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mount point"), "{}", stderr(&out));

    let fsck = pinfs(&["fsck", badsum.to_str().unwrap()]);
    assert_eq!(
        fsck.status.code(),
        Some(8),
        "fsck of an unreadable image is an operational error"
    );
    assert!(
        !mnt.read_dir().unwrap().any(|_| true),
        "nothing got mounted"
    );
}

#[test]
fn one_superblock_copy_torn_still_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "64M");
    // mkfs leaves generations 1 (copy B... or A) and 2; tear the newer copy.
    let (_, sb) = Image::open(&img, Duration::ZERO).unwrap();
    let newer = sb.generation % 2;
    drop(sb);
    let f = OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0xee; 8], newer * BLOCK_SIZE + 20).unwrap();
    let out = pinfs(&["fsck", img.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the older copy is used: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn a_mount_of_an_image_served_in_another_mount_namespace_is_refused_naming_the_holder() {
    if skip_without_fuse(
        "a_mount_of_an_image_served_in_another_mount_namespace_is_refused_naming_the_holder",
    ) {
        return;
    }
    // Where its daemon's mount is in sight, a second mount shares it (tests/mount/share.rs).
    // In a mount namespace where it is not, nothing can be shared: the image's lock refuses
    // the mount and says who holds it.
    let m = Mount::new("32M", "");
    let other = m.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let script = format!(
        "umount -l '{}' && exec '{}' mount '{}' '{}' -o lock_wait=0.5",
        m.mnt.display(),
        BIN,
        m.image.display(),
        other.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("in use by process"), "{e}");
    assert!(
        e.contains(m.mnt.to_str().unwrap()),
        "names the mount point: {e}"
    );
    // The first mount, in this namespace, is untouched.
    fs::write(m.path("f"), b"still mounted").unwrap();
    let fsck = m.fsck();
    assert_eq!(fsck.status.code(), Some(8), "fsck refuses a mounted image");
}

/// Writes `inodes` as the image's checkpoint, as a buggy daemon or bit rot might have.
fn rewrite_metadata(img: &Path, edit: impl FnOnce(&mut checkpoint::Loaded)) {
    let (image, mut sb) = Image::open(img, Duration::ZERO).unwrap();
    let mut loaded = checkpoint::load(&image, &sb).unwrap();
    edit(&mut loaded);
    let mut list: Vec<&Inode> = loaded.inodes.values().collect();
    list.sort_by_key(|i| i.ino);
    checkpoint::write(
        &image,
        &mut sb,
        &mut loaded.alloc,
        &mut loaded.journal,
        loaded.next_ino + 10,
        list.into_iter(),
        true,
    )
    .unwrap();
}

fn fsck_json(img: &Path, repair: bool) -> (i32, serde_json::Value) {
    let mut args = vec!["fsck", img.to_str().unwrap(), "--json"];
    if repair {
        args.push("--repair");
    }
    let out = pinfs(&args);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fsck --json: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), json)
}

/// Does the report of `fsck --json` list an error that says `what`?
fn reports(json: &serde_json::Value, what: &str) -> bool {
    json["errors"].as_array().is_some_and(|l| {
        l.iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains(what)))
    })
}

#[test]
fn fsck_finds_and_repairs_damage() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "64M");
    rewrite_metadata(&img, |m| {
        let inodes = &mut m.inodes;
        let now = Time::now();
        let mut f = Inode::new(100, Kind::File, 0o644, 0, 0, 0, 0, now);
        f.nlink = 5; // wrong: one name
        f.extents.insert(0, 5000, 4); // blocks the allocator thinks are free
        let mut lost = Inode::new(101, Kind::File, 0o600, 0, 0, 0, 0, now); // no name
        lost.nlink = 1;
        let root = inodes.get_mut(&ROOT_INO).unwrap();
        root.dir.insert(b"f", 100, Kind::File);
        root.dir.insert(b"dangling", 999, Kind::File);
        root.nlink = 7;
        inodes.insert(100, f);
        inodes.insert(101, lost);
    });
    let (code, json) = fsck_json(&img, false);
    assert_eq!(code, 4, "{json}");
    for needle in [
        "missing inode 999",
        "inode 100: link count 5 should be 1",
        "inode 101 has links but no name",
        "link count 7 should be 2",
        "allocator free space",
    ] {
        assert!(reports(&json, needle), "fsck reports '{needle}': {json}");
    }
    let (code, json) = fsck_json(&img, true);
    assert_eq!(code, 1, "{json}");
    let (code, json) = fsck_json(&img, false);
    assert_eq!(code, 0, "clean after repair: {json}");
    let (image, sb) = Image::open(&img, Duration::ZERO).unwrap();
    let loaded = checkpoint::load(&image, &sb).unwrap();
    let root = &loaded.inodes[&ROOT_INO];
    let lf = root.dir.get(b"lost+found").expect("lost+found made").ino;
    assert!(
        loaded.inodes[&lf].dir.get(b"#101").is_some(),
        "the lost inode is in lost+found"
    );
    assert!(root.dir.get(b"dangling").is_none());
    assert_eq!(loaded.inodes[&100].nlink, 1);
    assert!(
        !loaded.alloc.is_free(pinfs_allocator::Extent {
            start: 5000,
            len: 4
        }),
        "the file's blocks are now allocated"
    );
}

#[test]
fn fsck_refuses_doubly_owned_blocks_and_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "64M");
    rewrite_metadata(&img, |m| {
        let inodes = &mut m.inodes;
        let now = Time::now();
        for (ino, name) in [(200u64, &b"a"[..]), (201, b"b")] {
            let mut f = Inode::new(ino, Kind::File, 0o644, 0, 0, 0, 0, now);
            f.extents.insert(0, 6000, 2);
            f.size = 8192;
            inodes
                .get_mut(&ROOT_INO)
                .unwrap()
                .dir
                .insert(name, ino, Kind::File);
            inodes.insert(ino, f);
        }
    });
    let (code, json) = fsck_json(&img, false);
    assert_eq!(code, 4);
    assert!(
        reports(
            &json,
            "inode 201: file blocks 0+2 map image blocks 6000+2 already owned"
        ),
        "{json}"
    );
    assert_eq!(fsck_json(&img, true).0, 1);
    assert_eq!(fsck_json(&img, false).0, 0);
}

#[test]
fn orphans_are_recovery_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "64M");
    rewrite_metadata(&img, |m| {
        let inodes = &mut m.inodes;
        // What a crash leaves: an unlinked directory and an unlinked file with blocks, both
        // still referenced by the kernel when the daemon died.
        let now = Time::now();
        let mut d = Inode::new(300, Kind::Dir, 0o755, 0, 0, 0, ROOT_INO, now);
        d.nlink = 0;
        let mut f = Inode::new(301, Kind::File, 0o644, 0, 0, 0, 0, now);
        f.nlink = 0;
        f.extents.insert(0, 7000, 3);
        inodes.insert(300, d);
        inodes.insert(301, f);
        // Its blocks are allocated, as the daemon had them.
        m.alloc
            .claim(pinfs_allocator::Extent {
                start: 7000,
                len: 3,
            })
            .unwrap();
    });
    let (code, json) = fsck_json(&img, false);
    assert_eq!(code, 0, "orphans are not errors: {json}");
    assert_eq!(json["orphans"], 2, "{json}");
    let (code, json) = fsck_json(&img, true);
    assert_eq!(code, 0, "freeing orphans is recovery, not repair: {json}");
    let (image, sb) = Image::open(&img, Duration::ZERO).unwrap();
    let loaded = checkpoint::load(&image, &sb).unwrap();
    assert!(!loaded.inodes.contains_key(&300) && !loaded.inodes.contains_key(&301));
    assert!(
        loaded.alloc.is_free(pinfs_allocator::Extent {
            start: 7000,
            len: 3
        }),
        "the orphan's blocks are free again"
    );
}

/// Reads everything under `dir` through the kernel as a user would: listings, stat, file
/// contents, symlink targets, every extended attribute. Errors are fine (the image is
/// crafted); a dead daemon is not: `ENOTCONN` (or `ECONNABORTED`) means a request thread
/// took the mount down.
fn read_everything(dir: &Path, out: &mut Vec<String>) {
    let dead = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        )
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            if dead(&e) {
                out.push(format!("readdir {}: {e}", dir.display()));
            }
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if dead(&e) {
                    out.push(format!("readdir {}: {e}", dir.display()));
                }
                return;
            }
        };
        let p = entry.path();
        let c = cstr(&p);
        let mut names = vec![0u8; 1 << 16];
        // SAFETY: llistxattr into a buffer we own, with its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n < 0 && matches!(errno(), libc::ENOTCONN | libc::ECONNABORTED) {
            out.push(format!("listxattr {}: errno {}", p.display(), errno()));
        }
        for name in names[..n.max(0) as usize]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
        {
            let mut name = name.to_vec();
            name.push(0);
            let mut v = vec![0u8; 1 << 16];
            // SAFETY: lgetxattr with NUL-terminated path and name, into a buffer we own.
            let r = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    name.as_ptr().cast(),
                    v.as_mut_ptr().cast(),
                    v.len(),
                )
            };
            if r < 0 && matches!(errno(), libc::ENOTCONN | libc::ECONNABORTED) {
                out.push(format!("getxattr {}: errno {}", p.display(), errno()));
            }
        }
        match fs::symlink_metadata(&p) {
            Err(e) if dead(&e) => out.push(format!("stat {}: {e}", p.display())),
            Err(_) => {}
            Ok(m) if m.is_dir() => read_everything(&p, out),
            Ok(m) if m.file_type().is_symlink() => {
                if let Err(e) = fs::read_link(&p) {
                    if dead(&e) {
                        out.push(format!("readlink {}: {e}", p.display()));
                    }
                }
            }
            Ok(m) if m.is_file() => {
                if let Ok(f) = fs::File::open(&p) {
                    let mut buf = vec![0u8; 1 << 20];
                    // The first MiB and the last: crafted sizes may be huge and sparse.
                    for at in [0, m.len().saturating_sub(1 << 20)] {
                        if let Err(e) = f.read_at(&mut buf, at) {
                            if dead(&e) {
                                out.push(format!("read {}: {e}", p.display()));
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
        }
    }
}

/// Crafted images (one field rewritten to a hostile value, every checksum recomputed)
/// through a real mount: an image fsck rejects is refused by `pinfs mount` with fsck's first
/// message; one it accepts mounts, and reading everything on it through the kernel (listings,
/// stat, data, symlinks, xattrs) never takes the daemon down; the unmount leaves an image
/// fsck calls clean.
#[test]
fn crafted_images_through_a_real_mount_are_refused_as_fsck_says_or_serve_every_read() {
    if skip_without_fuse(module_path!()) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-crafted-mount")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let img = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let (mut mounted, mut refused, mut failures) = (0, 0, Vec::new());
    for seed in 0..160u64 {
        let mut bytes = pinfs::fuzzer::image::base_images()[(seed % 2) as usize].clone();
        let Some(what) = pinfs::fuzzer::image::mutate(&mut bytes, seed) else {
            continue;
        };
        pinfs::fuzzer::image::write_image(&img, &bytes).unwrap();
        let errors = match pinfs::fsck::check(&img, false) {
            Ok(r) => r
                .refused_by_mount()
                .into_iter()
                .cloned()
                .collect::<Vec<String>>(),
            // What could not be loaded, as mount says it too (after the image's path).
            Err(pinfs::error::FsError::Corrupt(why)) => vec![why],
            Err(e) => vec![e.to_string()],
        };
        pinfs::fuzzer::image::write_image(&img, &bytes).unwrap();
        let out = try_mount(&img, &mnt);
        if !errors.is_empty() {
            refused += 1;
            let e = stderr(&out);
            if out.status.success() {
                let c = cstr(&mnt);
                // SAFETY: umount2 with a NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), 0) };
                wait_unlocked(&img);
                failures.push(format!(
                    "seed {seed} ({what}): fsck says {errors:?}, yet it mounted"
                ));
            } else if e.contains("panicked")
                || !errors.iter().any(|x| e.contains(x.as_str()))
                || e.matches("run `pinfs fsck --repair").count() != 1
            {
                failures.push(format!(
                    "seed {seed} ({what}): refused without fsck's message {errors:?}: {e}"
                ));
            }
            continue;
        }
        if !out.status.success() {
            failures.push(format!(
                "seed {seed} ({what}): fsck finds it clean, mount fails: {}",
                stderr(&out)
            ));
            continue;
        }
        mounted += 1;
        let mut broke = Vec::new();
        read_everything(&mnt, &mut broke);
        let c = cstr(&mnt);
        // SAFETY: umount2 with a NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
        if rc != 0 {
            // SAFETY: as above, detaching.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        wait_unlocked(&img);
        if !broke.is_empty() {
            failures.push(format!("seed {seed} ({what}): the daemon died: {broke:?}"));
            continue;
        }
        match pinfs::fsck::check(&img, false) {
            Ok(r) if r.exit_code() == 0 => {}
            Ok(r) => failures.push(format!(
                "seed {seed} ({what}): after the mount, fsck: {:?}",
                r.errors
            )),
            Err(e) => failures.push(format!("seed {seed} ({what}): after the mount, fsck: {e}")),
        }
    }
    eprintln!("{mounted} crafted images mounted and read, {refused} refused");
    assert!(
        mounted > 10 && refused > 10,
        "{mounted} mounted, {refused} refused"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

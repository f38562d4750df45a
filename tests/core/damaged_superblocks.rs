//! Images damaged behind valid checksums, in the exact forms that were seen: a superblock
//! copy with an impossible geometry (fsck must repair from the copy that checks out, or
//! refuse and change nothing), file extents past the end of the image or onto the
//! superblocks, a superblock that names no checkpoint. Every checksum is recomputed, so only
//! the contents are wrong. And busy blocks at a checkpoint, then a crash: free afterwards.

#[path = "../common/mod.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use pinfs::fs::{Caller, Fs, FsOptions, SetAttr};
use pinfs::lease::{HolderInfo, LeaseConfig, PinRequest, Policy};
use pinfs::log::checkpoint;
use pinfs::meta::inode::{Inode, ROOT_INO};
use pinfs::store::image::{Image, Superblock, BLOCK_SIZE};

fn opts() -> FsOptions {
    FsOptions {
        lock_wait: Duration::from_secs(5),
        ..Default::default()
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A 64 MiB image holding `/d/f` (100 KiB of data) after a few checkpoints.
fn image_with_a_file(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("img");
    mkfs(&img, "64M");
    let fs = Fs::open(&img, opts()).unwrap();
    let r = Caller::ROOT;
    let d = fs
        .create(ROOT_INO, b"d", libc::S_IFDIR | 0o755, 0, None, r)
        .unwrap();
    let f = fs
        .create(d.ino, b"f", libc::S_IFREG | 0o644, 0, None, r)
        .unwrap();
    fs.write(f.ino, 0, &data(100_000), r).unwrap();
    fs.checkpoint(false).unwrap();
    fs.unmount().unwrap();
    img
}

/// The file's contents as the core reads them after mounting.
fn file_contents(img: &Path) -> Vec<u8> {
    let fs = Fs::open(img, opts()).unwrap();
    let d = fs.lookup(ROOT_INO, b"d").unwrap();
    let f = fs.lookup(d.ino, b"f").unwrap();
    let got = fs.read(f.ino, 0, 200_000).unwrap();
    fs.unmount().unwrap();
    got
}

/// Byte offsets of superblock fields (image.rs): what the tests change, written here from
/// the layout rather than through the decoder under test.
const TOTAL_BLOCKS: usize = 16;
const JOURNAL_BLOCKS: usize = 32;
const CHECKPOINT_LEN: usize = 56;
const EXTENT_COUNT: usize = 68;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The first 2048 bytes of the superblock copy in `slot` (0: A, 1: B).
fn read_copy(img: &Path, slot: u64) -> Vec<u8> {
    let f = std::fs::File::open(img).unwrap();
    let mut buf = vec![0u8; 2048];
    f.read_exact_at(&mut buf, slot * BLOCK_SIZE).unwrap();
    buf
}

/// Rewrites the u64 at `field` of the copy in `slot` with `edit` applied, and recomputes the
/// copy's checksum.
fn edit_copy(img: &Path, slot: u64, field: usize, edit: impl FnOnce(u64) -> u64) {
    let mut b = read_copy(img, slot);
    let v = edit(u64_at(&b, field));
    b[field..field + 8].copy_from_slice(&v.to_le_bytes());
    let n = u32::from_le_bytes(b[EXTENT_COUNT..EXTENT_COUNT + 4].try_into().unwrap()) as usize;
    let crc_at = 72 + 16 * n + 1 + 16;
    let crc = pinfs::format::codec::crc32c(&b[..crc_at]);
    b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&b, slot * BLOCK_SIZE).unwrap();
}

/// The slot of the current (highest-generation) copy.
fn current_slot(img: &Path) -> u64 {
    let (_, sb) = Image::open(img, Duration::from_secs(5)).unwrap();
    sb.generation % 2
}

fn fsck(img: &Path, repair: bool) -> (i32, String) {
    let mut args = vec!["fsck", img.to_str().unwrap()];
    if repair {
        args.push("--repair");
    }
    let out = pinfs(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

fn wrapped_journal_is_repaired_from_the_other_copy(slot_of: impl Fn(&Path) -> u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_a_file(dir.path());
    let slot = slot_of(&img);
    edit_copy(&img, slot, JOURNAL_BLOCKS, |_| u64::MAX);
    let (code, out) = fsck(&img, false);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("impossible geometry"), "{out}");
    let refused = Fs::open(&img, opts()).expect_err("mount refuses a damaged superblock");
    assert!(
        refused
            .to_string()
            .contains(&format!("pinfs fsck --repair {}", img.display())),
        "{refused}"
    );
    let (code, out) = fsck(&img, true);
    assert_eq!(code, 1, "{out}");
    let (code, out) = fsck(&img, false);
    assert_eq!(code, 0, "clean after the repair: {out}");
    for s in 0..2 {
        let copy = read_copy(&img, s);
        let journal = pinfs::store::image::journal_blocks_for(u64_at(&copy, TOTAL_BLOCKS));
        assert_eq!(
            u64_at(&copy, JOURNAL_BLOCKS),
            journal,
            "copy {s} has the real geometry"
        );
    }
    assert!(file_contents(&img) == data(100_000), "nothing was lost");
}

#[test]
fn a_wrapped_journal_in_the_current_superblock_is_repaired_from_the_other_copy() {
    wrapped_journal_is_repaired_from_the_other_copy(current_slot);
}

#[test]
fn a_wrapped_journal_in_the_older_superblock_is_repaired_from_the_current_one() {
    wrapped_journal_is_repaired_from_the_other_copy(|img| 1 - current_slot(img));
}

#[test]
fn copies_that_disagree_on_the_layout_make_repair_refuse_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_a_file(dir.path());
    let older = 1 - current_slot(&img);
    edit_copy(&img, older, TOTAL_BLOCKS, |t| t - 1);
    let before = std::fs::read(&img).unwrap();
    let (code, out) = fsck(&img, false);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("disagree on the layout"), "{out}");
    let (code, out) = fsck(&img, true);
    assert_eq!(code, 8, "repair refuses: {out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a refused repair leaves every byte"
    );
    assert!(Fs::open(&img, opts()).is_err(), "mount refuses it too");
}

/// Rewrites the image's checkpoint with the file `/d/f` mapped onto `image_block`, as a
/// buggy daemon or bit rot behind a valid checksum might.
fn map_file_onto(img: &Path, image_block: impl FnOnce(&Superblock) -> u64) {
    let (image, mut sb) = Image::open(img, Duration::from_secs(5)).unwrap();
    let mut loaded = checkpoint::load(&image, &sb).unwrap();
    let d = loaded.inodes[&ROOT_INO].dir.get(b"d").unwrap().ino;
    let f = loaded.inodes[&d].dir.get(b"f").unwrap().ino;
    let at = image_block(&sb);
    let file = loaded.inodes.get_mut(&f).unwrap();
    file.extents.insert(100, at, 8);
    file.size = 108 * BLOCK_SIZE;
    let mut list: Vec<&Inode> = loaded.inodes.values().collect();
    list.sort_by_key(|i| i.ino);
    checkpoint::write(
        &image,
        &mut sb,
        &mut loaded.alloc,
        &mut loaded.journal,
        loaded.next_ino,
        list.into_iter(),
        true,
    )
    .unwrap();
}

fn mount_refuses_what_fsck_rejects(place: fn(&Superblock) -> u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_a_file(dir.path());
    map_file_onto(&img, place);
    let (code, out) = fsck(&img, false);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("outside the data area"), "{out}");
    let refused = Fs::open(&img, opts()).expect_err("mount refuses the image");
    let msg = refused.to_string();
    assert!(
        msg.contains("outside the data area"),
        "fsck's own words: {msg}"
    );
    assert!(
        msg.contains(&format!("run `pinfs fsck --repair {}`", img.display())),
        "{msg}"
    );
    assert_eq!(refused.errno(), libc::EIO);
    if fuse_unavailable().is_none() {
        // The CLI says the same and mounts nothing.
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = pinfs(&["mount", img.to_str().unwrap(), mnt.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("outside the data area"), "{err}");
        assert!(err.contains("pinfs fsck --repair"), "{err}");
        assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
    }
    let (code, out) = fsck(&img, true);
    assert_eq!(code, 1, "{out}");
    assert_eq!(fsck(&img, false).0, 0);
    assert!(
        file_contents(&img)[..100_000] == data(100_000)[..],
        "the file's real data survive the repair"
    );
}

#[test]
fn an_extent_past_the_end_of_the_image_is_refused_at_mount() {
    mount_refuses_what_fsck_rejects(|sb| sb.total_blocks - 4);
}

#[test]
fn an_extent_onto_the_superblocks_is_refused_at_mount() {
    mount_refuses_what_fsck_rejects(|_| 0);
}

#[test]
fn a_superblock_that_names_no_checkpoint_is_refused_and_repair_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_a_file(dir.path());
    edit_copy(&img, current_slot(&img), CHECKPOINT_LEN, |_| 0);
    let before = std::fs::read(&img).unwrap();
    let refused = Fs::open(&img, opts()).expect_err("not an empty filesystem");
    assert!(
        refused.to_string().contains("names no checkpoint"),
        "{refused}"
    );
    let (code, out) = fsck(&img, false);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("names no checkpoint"), "{out}");
    let (code, out) = fsck(&img, true);
    assert_eq!(code, 8, "{out}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a repair that cannot tell what is right changes nothing"
    );
}

/// Busy blocks (pinned blocks a truncate took from their file while the holder ignored the
/// break) at a checkpoint, then a crash: no holder survives a crash, so they are free, and
/// fsck is clean. The crash is a copy of the image taken while the filesystem runs.
#[test]
fn busy_blocks_at_a_checkpoint_are_free_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    Fs::mkfs(&img, 64 << 20, false).unwrap();
    let fs = std::sync::Arc::new(
        Fs::open(
            &img,
            FsOptions {
                leases: LeaseConfig {
                    break_time: Some(Duration::from_millis(100)),
                    policy: Policy::Revoke,
                    busy_blocks: true,
                    ..LeaseConfig::default()
                },
                ..opts()
            },
        )
        .unwrap(),
    );
    fs.start_background();
    let r = Caller::ROOT;
    let f = fs
        .create(ROOT_INO, b"f", libc::S_IFREG | 0o644, 0, None, r)
        .unwrap();
    fs.write(f.ino, 0, &data(64 * BLOCK_SIZE as usize), r)
        .unwrap();
    let free_with_file = fs.statfs().free;
    let holder = fs.add_holder(HolderInfo {
        pid: 4_100_001,
        comm: "ignores-breaks".into(),
        uid: 0,
        gid: 0,
    });
    fs.pin(
        &PinRequest {
            holder,
            ino: f.ino,
            offset: 0,
            len: 64 * BLOCK_SIZE,
            writable: true,
            unbreakable: false,
        },
        Caller {
            pid: 4_100_001,
            ..r
        },
    )
    .unwrap();
    let truncate = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    let breaker = Caller {
        pid: 4_100_002,
        ..r
    };
    fs.setattr(f.ino, truncate, breaker).unwrap();
    assert_eq!(fs.statfs().busy, 64, "the holder's blocks are busy");
    fs.checkpoint(false).unwrap();
    let crashed = dir.path().join("crashed");
    std::fs::copy(&img, &crashed).unwrap();
    let (code, out) = fsck(&crashed, false);
    assert_eq!(code, 0, "fsck after the crash: {out}");
    let after = Fs::open(&crashed, opts()).unwrap();
    let st = after.statfs();
    assert_eq!(st.busy, 0);
    assert!(
        st.free >= free_with_file + 64,
        "the busy blocks are free again: {} free, {} before the truncate",
        st.free,
        free_with_file
    );
}

/// The checkpoint extents a superblock copy names, from its bytes.
fn checkpoint_extents(copy: &[u8]) -> Vec<(u64, u64)> {
    let n = u32::from_le_bytes(copy[EXTENT_COUNT..EXTENT_COUNT + 4].try_into().unwrap());
    (0..n as usize)
        .map(|i| (u64_at(copy, 72 + 16 * i), u64_at(copy, 80 + 16 * i)))
        .collect()
}

#[test]
fn a_damaged_newer_superblock_whose_checkpoint_is_bad_falls_back_to_the_older_copy() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_a_file(dir.path());
    // What a crash between a checkpoint's superblock and the freeing of the previous
    // checkpoint leaves: both copies name a checkpoint that loads.
    let before = std::fs::read(&img).unwrap();
    let fs = Fs::open(&img, opts()).unwrap();
    fs.checkpoint(false).unwrap();
    drop(fs);
    let newer = current_slot(&img);
    let older = read_copy(&img, 1 - newer);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    for (s, l) in checkpoint_extents(&older) {
        let (a, b) = ((s * BLOCK_SIZE) as usize, ((s + l) * BLOCK_SIZE) as usize);
        f.write_all_at(&before[a..b], s * BLOCK_SIZE).unwrap();
    }
    // The newer copy: an impossible journal, and a checkpoint length that cannot be right.
    edit_copy(&img, newer, JOURNAL_BLOCKS, |_| u64::MAX);
    edit_copy(&img, newer, CHECKPOINT_LEN, |l| l + 1);
    let (code, out) = fsck(&img, false);
    assert_eq!(
        code, 4,
        "the older copy is checked, the damage reported: {out}"
    );
    assert!(out.contains("impossible geometry"), "{out}");
    assert!(Fs::open(&img, opts()).is_err(), "mount refuses it");
    let (code, out) = fsck(&img, true);
    assert_eq!(code, 1, "{out}");
    assert_eq!(fsck(&img, false).0, 0);
    assert!(file_contents(&img) == data(100_000), "nothing was lost");
}

/// A clean image whose stored free list (valid checksum) says the blocks of `/d/f` are free:
/// mount must not hand them to another file.
#[test]
fn a_free_list_that_frees_a_files_blocks_is_rebuilt_at_mount() {
    let dir = tempfile::tempdir().unwrap();
    let img = image_with_a_file(dir.path());
    let maps: Vec<(u64, u64)> = {
        let (image, sb) = Image::open(&img, Duration::from_secs(5)).unwrap();
        let loaded = checkpoint::load(&image, &sb).unwrap();
        let d = loaded.inodes[&ROOT_INO].dir.get(b"d").unwrap().ino;
        let f = loaded.inodes[&d].dir.get(b"f").unwrap().ino;
        let maps = loaded.inodes[&f].extents.iter();
        maps.map(|m| (m.image_block, m.len)).collect()
    };
    // Grow the first free extent after the file's first mapping back to its start (the
    // blocks between are the file's or the previous checkpoint's, which the blob then no
    // longer lists).
    let mut bytes = std::fs::read(&img).unwrap();
    let fields = pinfs::fuzzer::image::fields(&bytes);
    let free: Vec<_> = fields
        .iter()
        .filter(|f| {
            f.name.starts_with("checkpoint free list: extent ")
                && (f.name.ends_with(" start") || f.name.ends_with(" length"))
        })
        .collect();
    let pairs: Vec<(u64, u64)> = free
        .chunks(2)
        .map(|p| (p[0].get(&bytes), p[1].get(&bytes)))
        .collect();
    let (b, n) = maps[0];
    let i = pairs.iter().position(|&(s, _)| s >= b + n).unwrap();
    assert!(
        i == 0 || pairs[i - 1].0 + pairs[i - 1].1 < b,
        "{pairs:?} {maps:?}"
    );
    let (s, l) = pairs[i];
    free[2 * i].set(&mut bytes, b);
    free[2 * i + 1].set(&mut bytes, l + (s - b));
    let prev = fields
        .iter()
        .find(|f| f.name == "checkpoint previous extents: count")
        .unwrap();
    prev.set(&mut bytes, 0);
    pinfs::fuzzer::image::fix_checksums(&mut bytes);
    std::fs::write(&img, &bytes).unwrap();

    let (code, out) = fsck(&img, false);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("allocator free space"), "{out}");
    let fs = Fs::open(&img, opts()).expect("mount rebuilds the allocator itself");
    let r = Caller::ROOT;
    let g = fs
        .create(ROOT_INO, b"g", libc::S_IFREG | 0o644, 0, None, r)
        .unwrap();
    fs.write(g.ino, 0, &vec![0xee; 4 << 20], r).unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert!(
        file_contents(&img) == data(100_000),
        "a new file did not get the old file's blocks"
    );
    assert_eq!(
        fsck(&img, false).0,
        0,
        "the next checkpoint's free list is right"
    );
}

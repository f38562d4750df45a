//! Hostile images: a valid image with bytes of its metadata (superblocks, journal,
//! checkpoint) changed at random must make mount and fsck end in a clear error or a
//! repair, never a panic. Deterministic (seeded), so a failure replays.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use pinfs::fs::{Caller, Fs, FsOptions};
use pinfs::fuzz::Rng;
use pinfs::image::{Image, BLOCK_SIZE};
use pinfs::inode::ROOT_INO;

/// An image with files, directories and xattrs; `crashed`: left with a journal to replay.
fn base_image(dir: &std::path::Path, crashed: bool) -> Vec<u8> {
    let path = dir.join("base.img");
    Fs::mkfs(&path, 8 << 20, true).unwrap();
    let fs = Fs::open(
        &path,
        FsOptions {
            lock_wait: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .unwrap();
    let who = Caller::ROOT;
    let d = fs
        .create(ROOT_INO, b"dir", libc::S_IFDIR | 0o755, 0, None, who)
        .unwrap();
    for i in 0..20u64 {
        let f = fs
            .create(
                d.ino,
                format!("f{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                None,
                who,
            )
            .unwrap();
        fs.write(f.ino, i * 1000, &vec![i as u8; 5000], who)
            .unwrap();
        fs.setxattr(f.ino, b"user.k", b"v", 0).unwrap();
    }
    fs.create(ROOT_INO, b"link", 0, 0, Some(b"dir/f1"), who)
        .unwrap();
    if !crashed {
        fs.unmount().unwrap();
    }
    drop(fs);
    std::fs::read(&path).unwrap()
}

/// Where the metadata lives: superblocks, journal, and the current checkpoint's blocks.
fn metadata_ranges(path: &std::path::Path) -> Vec<(u64, u64)> {
    let (_, sb) = Image::open(path, Duration::from_secs(5)).unwrap();
    let mut r = vec![(0, sb.data_start() * BLOCK_SIZE)];
    r.extend(
        sb.checkpoint_extents
            .iter()
            .map(|&(s, l)| (s * BLOCK_SIZE, l * BLOCK_SIZE)),
    );
    r
}

fn run(crashed: bool, seed: u64, rounds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let base = base_image(dir.path(), crashed);
    let ranges = metadata_ranges(&dir.path().join("base.img"));
    let path = dir.path().join("mutant.img");
    let mut rng = Rng::new(seed);
    let (mut refused, mut mounted) = (0, 0);
    for round in 0..rounds {
        let mut img = base.clone();
        for _ in 0..1 + rng.below(8) {
            let (start, len) = ranges[rng.below(ranges.len() as u64) as usize];
            let pos = (start + rng.below(len)) as usize;
            img[pos] = match rng.below(3) {
                0 => img[pos] ^ (1 << rng.below(8)),
                1 => 0,
                _ => rng.below(256) as u8,
            };
        }
        std::fs::write(&path, &img).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let fsck = pinfs::fsck::check(&path, false);
            let mount = Fs::open(
                &path,
                FsOptions {
                    read_only: true,
                    lock_wait: Duration::ZERO,
                    ..Default::default()
                },
            );
            (fsck.is_ok(), mount.is_ok())
        }));
        match outcome {
            Ok((_, true)) => mounted += 1,
            Ok((_, false)) => refused += 1,
            Err(_) => {
                panic!("seed {seed}, round {round}: a mutated image made fsck or mount panic")
            }
        }
    }
    eprintln!("seed {seed}: {refused} mutants refused with an error, {mounted} still mountable");
}

#[test]
fn mutated_clean_images_never_panic() {
    run(false, 1, 300);
}

#[test]
fn mutated_crashed_images_never_panic() {
    run(true, 2, 300);
}

//! Crafted images: a valid image (directories, files with data and holes, a hard link, a
//! symlink, a FIFO, xattrs; once cleanly unmounted, once with a journal after an unclean
//! shutdown) with one metadata field rewritten to a hostile value (0, the maximum, one off,
//! past the end of the image, block 0, another extent's blocks, another inode...) and every
//! checksum recomputed, so the value reaches the checks behind the CRCs. For each: fsck and
//! mount (through the core) never panic, mount refuses exactly the images fsck finds errors
//! in, and a mounted image works all the way: every directory listed, every file read, xattrs
//! and symlinks read, a write to each file, a clean unmount, fsck clean after. Seeded, so a
//! failure replays (`pinfs::fuzz_image::mutate(image, seed)`).

use pinfs::fuzz_image::{base_images, exercise, mutate, write_image, Verdict};

/// Scratch space: memory-backed where the host has it (the mounts' unmount checkpoints
/// sync their image file, which on a disk costs most of the run time).
fn scratch() -> tempfile::TempDir {
    let b = tempfile::Builder::new()
        .prefix("pinfs-crafted")
        .tempdir_in("/dev/shm");
    b.or_else(|_| tempfile::tempdir()).unwrap()
}

/// Seeds run by every `cargo test`; about 6 s in a debug build here (20,000 pass too, in 40 s).
const SEEDS: u64 = 3000;

#[test]
fn the_base_images_are_clean_and_usable() {
    let dir = scratch();
    for (n, base) in base_images().iter().enumerate() {
        let path = dir.path().join(format!("base{n}.img"));
        std::fs::write(&path, base).unwrap();
        assert_eq!(exercise(&path), Ok(Verdict::Clean), "base image {n}");
    }
}

#[test]
fn crafted_images_are_refused_or_work() {
    let bases = base_images();
    let dir = scratch();
    let (mut refused, mut clean, mut failures) = (0, 0, Vec::new());
    for seed in 0..SEEDS {
        let mut img = bases[(seed % 2) as usize].clone();
        let Some(what) = mutate(&mut img, seed) else {
            continue;
        };
        let path = dir.path().join(format!("seed{seed}.img"));
        write_image(&path, &img).unwrap();
        let outcome = std::panic::catch_unwind(|| exercise(&path));
        std::fs::remove_file(&path).unwrap();
        match outcome {
            Ok(Ok(Verdict::Clean)) => clean += 1,
            Ok(Ok(Verdict::Refused(_))) => refused += 1,
            Ok(Err(rule)) => failures.push(format!("seed {seed} ({what}): {rule}")),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("seed {seed} ({what}): panicked: {msg}"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} crafted images broke a rule:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The mutator reaches both outcomes, so neither side of the agreement goes untested.
    assert!(refused > SEEDS / 10, "only {refused} refused");
    assert!(clean > SEEDS / 10, "only {clean} mounted");
}

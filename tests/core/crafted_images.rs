//! Crafted images: a valid image (directories, files with data and holes, a hard link, a
//! symlink, a FIFO, xattrs; once cleanly unmounted, once with a journal after an unclean
//! shutdown) with one metadata field rewritten to a hostile value (0, the maximum, one off,
//! past the end of the image, block 0, another extent's blocks, another inode...) and every
//! checksum recomputed, so the value reaches the checks behind the CRCs. For each: fsck and
//! mount (through the core) never panic, mount refuses exactly the images fsck finds errors
//! in (but for a stale free list, which mount rebuilds), and a mounted image works all the way: every directory listed, every file read, xattrs
//! and symlinks read, a write to each file, a clean unmount, fsck clean after. Seeded, so a
//! failure replays (`pinfs::fuzzer::image::mutate(image, seed)`). Besides random seeds (some
//! changing two or three fields), every field is swept with every one of its hostile values.

use pinfs::fuzzer::image::{
    base_images, exercise, fields, fix_checksums, hostile_values, mutate, write_image, Verdict,
};

/// Scratch space: memory-backed where the host has it (the mounts' unmount checkpoints
/// sync their image file, which on a disk costs most of the run time).
fn scratch() -> tempfile::TempDir {
    let b = tempfile::Builder::new()
        .prefix("pinfs-crafted")
        .tempdir_in("/dev/shm");
    b.or_else(|_| tempfile::tempdir()).unwrap()
}

/// Seeds run by every `cargo test`: about 4 s in a debug build here (6,000 with three fields
/// each pass too).
const SEEDS: u64 = 2000;

#[test]
fn the_base_images_are_clean_and_usable() {
    let dir = scratch();
    for (n, base) in base_images().iter().enumerate() {
        let path = dir.path().join(format!("base{n}.img"));
        std::fs::write(&path, base).unwrap();
        assert_eq!(exercise(&path), Ok(Verdict::Clean), "base image {n}");
    }
}

/// What one crafted image did, as a failure line if it broke a rule.
fn judge(what: &str, img: &[u8], dir: &std::path::Path, counts: &mut (u64, u64)) -> Option<String> {
    let path = dir.join("crafted.img");
    write_image(&path, img).unwrap();
    let outcome = std::panic::catch_unwind(|| exercise(&path));
    std::fs::remove_file(&path).unwrap();
    match outcome {
        Ok(Ok(Verdict::Clean)) => counts.0 += 1,
        Ok(Ok(Verdict::Refused(_))) => counts.1 += 1,
        Ok(Err(rule)) => return Some(format!("{what}: {rule}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Some(format!("{what}: panicked: {msg}"));
        }
    }
    None
}

/// Every field of both base images, each with every one of its hostile values: about 8,800
/// images, 20 s in a debug build here.
#[test]
fn every_field_with_every_hostile_value_is_refused_or_works() {
    let dir = scratch();
    let (mut counts, mut failures, mut n) = ((0, 0), Vec::new(), 0);
    for (b, base) in base_images().iter().enumerate() {
        let all = fields(base);
        for f in &all {
            for v in hostile_values(base, &all, f) {
                let mut img = base.clone();
                f.set(&mut img, v);
                fix_checksums(&mut img);
                let what = format!("base {b}, {}: {} -> {v}", f.name, f.get(base));
                failures.extend(judge(&what, &img, dir.path(), &mut counts));
                n += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} crafted images broke a rule:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        counts.0 > 100 && counts.1 > 100,
        "{counts:?} (mounted, refused)"
    );
}

#[test]
fn crafted_images_are_refused_or_work() {
    let bases = base_images();
    let dir = scratch();
    let (mut counts, mut failures) = ((0, 0), Vec::new());
    for seed in 0..SEEDS {
        // One to three fields: damage rarely comes alone.
        let mut img = bases[(seed % 2) as usize].clone();
        let what: Vec<String> = (0..1 + seed % 3)
            .filter_map(|k| mutate(&mut img, seed * 7 + k))
            .collect();
        if what.is_empty() {
            continue;
        }
        let what = format!("seed {seed} ({})", what.join(", "));
        failures.extend(judge(&what, &img, dir.path(), &mut counts));
    }
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} crafted images broke a rule:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The mutator reaches both outcomes, so neither side of the agreement goes untested.
    let (clean, refused) = counts;
    assert!(refused > SEEDS / 10, "only {refused} refused");
    assert!(clean > SEEDS / 10, "only {clean} mounted");
}

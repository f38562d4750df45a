//! Crash consistency: kill -9 the daemon in the middle of a metadata-heavy workload, remount,
//! check with fsck, and find every fsync'd file intact.

#[path = "../common/mod.rs"]
mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// Files that were fsync'd, with the content they must keep.
type Synced = Arc<Mutex<Vec<(PathBuf, Vec<u8>)>>>;

fn content(tag: usize, round: usize) -> Vec<u8> {
    let len = 1000 + (tag * 7919) % 60000;
    (0..len)
        .map(|i| ((i + tag * 31 + round) % 251) as u8)
        .collect()
}

/// One worker: creates, writes, fsyncs, renames, links and removes files and directories;
/// records which files were fsync'd with which content.
fn workload(root: PathBuf, worker: usize, stop: Arc<AtomicBool>, synced: Synced) {
    let dir = root.join(format!("w{worker}"));
    if fs::create_dir(&dir).is_err() {
        return;
    }
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let tmp = dir.join(format!("tmp{n}"));
        let fin = dir.join(format!("file{n}"));
        let data = content(worker * 100_000 + n, 0);
        let step = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&data)?;
            if n.is_multiple_of(3) {
                f.sync_all()?;
                fs::rename(&tmp, &fin)?;
                File::open(&dir)?.sync_all()?;
                synced.lock().unwrap().push((fin.clone(), data.clone()));
            } else {
                fs::create_dir(dir.join(format!("sub{n}")))?;
                fs::hard_link(&tmp, dir.join(format!("sub{n}/link")))?;
                fs::remove_file(&tmp)?;
                if n.is_multiple_of(2) {
                    fs::remove_file(dir.join(format!("sub{n}/link")))?;
                    fs::remove_dir(dir.join(format!("sub{n}")))?;
                }
            }
            Ok(())
        })();
        if step.is_err() {
            return; // the daemon is gone
        }
    }
}

#[test]
fn kill_9_during_metadata_workload_loses_nothing_fsynced() {
    if skip_without_fuse("crash") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-crash")
        .tempdir()
        .unwrap();
    let image = dir.path().join("img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    mkfs(&image, "256M");
    let mut all_synced: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for round in 0..4u64 {
        let mut daemon = start_daemon(&image, &mnt, "");
        let stop = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(Mutex::new(Vec::new()));
        let root = mnt.join(format!("round{round}"));
        fs::create_dir(&root).unwrap();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (root, stop, synced) = (root.clone(), stop.clone(), synced.clone());
                std::thread::spawn(move || workload(root, w, stop, synced))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 350 * round));
        daemon.kill().unwrap(); // SIGKILL
        daemon.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        // The dead daemon's mount answers ENOTCONN; detach it.
        let c = cstr(&mnt);
        // SAFETY: umount2 with a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        wait_unlocked(&image);
        let fsck = pinfs(&["fsck", image.to_str().unwrap()]);
        if fsck.status.code() != Some(0) {
            let keep = std::env::temp_dir().join("pinfs-crash-failed.img");
            let _ = fs::copy(&image, &keep);
            eprintln!("image kept for inspection: {}", keep.display());
        }
        assert_eq!(
            fsck.status.code(),
            Some(0),
            "round {round}: fsck after kill -9: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let n = synced.lock().unwrap().len();
        assert!(
            n > 0 || round == 0,
            "round {round}: the workload made progress"
        );
        all_synced.extend(synced.lock().unwrap().drain(..));
        let mut check = start_daemon(&image, &mnt, "");
        for (path, data) in &all_synced {
            let got = fs::read(path)
                .unwrap_or_else(|e| panic!("round {round}: fsync'd {} lost: {e}", path.display()));
            assert!(
                got == *data,
                "round {round}: fsync'd {} has other content",
                path.display()
            );
        }
        // SAFETY: umount2 with a NUL-terminated path.
        assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
        check.wait().unwrap();
        eprintln!("round {round}: {n} fsync'd files checked after kill -9");
    }
    let fsck = pinfs(&["fsck", image.to_str().unwrap()]);
    assert_eq!(
        fsck.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

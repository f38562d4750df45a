//! Model checking of the filesystem core's pin paths with shuttle: the filesystem, the lease
//! manager and the allocator together, through `Fs` itself (every lock of the core comes from
//! `pinfs::sync`, so under shuttle the checker schedules them all). A holder pins and
//! unpins, a breaker truncates, the lease deadline passes at any point (the clock is
//! virtual), and the holder may go away; in every interleaving the checker explores, the
//! truncate succeeds, the allocator agrees with the files, and busy blocks go with their
//! holder.
//!
//! Built only with the shuttle cfg, which the test command sets:
//! `RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle cargo test --test shuttle_fs`
#![cfg(shuttle)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinfs::fs::{Caller, Fs, FsOptions, SetAttr};
use pinfs::lease::{HolderInfo, LeaseConfig, PinLimit, PinRequest, Policy};
use pinfs::meta::inode::ROOT_INO;
use pinfs::store::image::BLOCK_SIZE;
use shuttle::thread;

const HOLDER_PID: u32 = 4_000_001;
const BREAKER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 4_000_002,
};
const BLOCKS: u64 = 4;

/// A fresh 4 MiB filesystem under `policy` (the smallest image: each iteration makes one),
/// with a file of four blocks; the filesystem and the file's inode.
fn fresh(dir: &Path, n: u64, policy: Policy) -> (Arc<Fs>, u64) {
    let path = dir.join(format!("img{n}"));
    Fs::mkfs(&path, 4 << 20, false).unwrap();
    let opts = FsOptions {
        leases: LeaseConfig {
            break_time: Some(Duration::from_secs(1)),
            policy,
            busy_blocks: true,
            max_pinned: Some(PinLimit::Unlimited),
            ..LeaseConfig::default()
        },
        ..Default::default()
    };
    let fs = Arc::new(Fs::open(&path, opts).unwrap());
    let a = fs
        .create(ROOT_INO, b"f", libc::S_IFREG | 0o644, 0, None, Caller::ROOT)
        .unwrap();
    fs.write(
        a.ino,
        0,
        &vec![0x11; (BLOCKS * BLOCK_SIZE) as usize],
        Caller::ROOT,
    )
    .unwrap();
    // The image file can go now: the mapping keeps it (each iteration makes its own).
    std::fs::remove_file(&path).unwrap();
    (fs, a.ino)
}

/// One race: a holder that pins the whole file and unpins (or goes away without unpinning
/// when `dies`), a truncate to zero, and a clock that keeps moving past every deadline.
fn race(fs: Arc<Fs>, ino: u64, dies: bool) {
    let h = fs.add_holder(HolderInfo {
        pid: HOLDER_PID,
        comm: "shuttle-holder".into(),
        uid: 0,
        gid: 0,
    });
    let holder = {
        let fs = fs.clone();
        thread::spawn(move || {
            let req = PinRequest {
                holder: h,
                ino,
                offset: 0,
                len: BLOCKS * BLOCK_SIZE,
                writable: true,
                unbreakable: false,
            };
            let caller = Caller {
                pid: HOLDER_PID,
                ..Caller::ROOT
            };
            // A pin may come before the truncate (then the break deals with it) or after
            // (then the file is empty: nothing to pin, or a hole allocated anew).
            if let Ok(g) = fs.pin(&req, caller) {
                if dies {
                    fs.holder_gone(h);
                } else {
                    // Revoked meanwhile: the holder is fenced and its unpin refused.
                    let _ = fs.unpin(h, g.id);
                }
            }
        })
    };
    let breaker = {
        let fs = fs.clone();
        thread::spawn(move || {
            fs.setattr(
                ino,
                SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
                BREAKER,
            )
            .map(|_| ())
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let clock = {
        let (fs, done) = (fs.clone(), done.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                fs.leases().advance_clock(Duration::from_secs(2), &*fs);
                thread::yield_now();
            }
        })
    };
    holder.join().unwrap();
    let truncated = breaker.join().unwrap();
    done.store(true, Ordering::SeqCst);
    clock.join().unwrap();

    assert_eq!(truncated.map_err(|e| e.errno()), Ok(()), "the truncate");
    assert_eq!(fs.getattr(ino).unwrap().size, 0);
    fs.check_space()
        .unwrap_or_else(|e| panic!("the allocator disagrees with the files: {e}"));
    fs.holder_gone(h);
    assert_eq!(fs.statfs().busy, 0, "busy blocks go with their holder");
    fs.check_space()
        .unwrap_or_else(|e| panic!("after the holder went: {e}"));
}

/// Random schedules of `race` under `policy`, on modelled threads with stacks the size of
/// a real thread's (the core's frames are larger than shuttle's default stack).
fn check(policy: Policy, dies: bool, iterations: usize) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let n = Arc::new(AtomicU64::new(0));
    let mut config = shuttle::Config::new();
    config.stack_size = 2 << 20;
    let runner = shuttle::Runner::new(shuttle::scheduler::RandomScheduler::new(iterations), config);
    runner.run(move || {
        let (fs, ino) = fresh(dir.path(), n.fetch_add(1, Ordering::SeqCst), policy);
        race(fs, ino, dies);
    });
}

#[test]
fn a_pin_a_truncate_and_a_passing_deadline_under_revoke() {
    check(Policy::Revoke, false, 60);
}

#[test]
fn a_holder_that_dies_mid_break_under_wait() {
    check(Policy::Wait, true, 60);
}

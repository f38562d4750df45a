//! Journal and checkpoint throughput of the core (no FUSE), as medians of several runs, beside
//! the raw CRC-32C rate that both depend on. Run: `cargo run --release --example metadata_bench`
//! (optional arguments: the number of journal commits per run, the number of inodes in the
//! checkpointed table, the number of runs).
//!
//! - journal commits: `chmod` of one file N times through [`Fs::setattr`], each one an encoded,
//!   checksummed transaction appended to the journal (no msync: that is what fsync adds);
//! - journal replay: [`Fs::open`] of an image whose journal holds those transactions, each one's
//!   CRC checked again;
//! - checkpoint: [`Fs::checkpoint`] of a table of many inodes (each checkpoint writes, checksums
//!   and msyncs the whole table);
//! - crc32c: [`pinfs::format::codec::crc32c`] over a 1 MiB buffer.

use std::time::{Duration, Instant};

use pinfs::fs::{Caller, Fs, FsOptions, SetAttr};

const ROOT: u64 = 1;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|s| s.parse().expect("arguments are whole numbers"))
        .unwrap_or(default)
}

fn main() {
    let commits = arg(1, 20_000);
    let inodes = arg(2, 100_000);
    let runs = arg(3, 7);
    let caller = Caller {
        uid: 0,
        gid: 0,
        pid: std::process::id(),
    };
    let dir = tempfile::Builder::new()
        .prefix("pinfs-sys-metadata-bench")
        .tempdir()
        .expect("a temporary directory");

    // Journal: commits, then a replay of what they left.
    let (mut append, mut replay) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let img = dir.path().join(format!("journal{run}"));
        Fs::mkfs(&img, 1 << 30, false).expect("mkfs");
        let fs = Fs::open(&img, FsOptions::default()).expect("open");
        let f = fs
            .create(ROOT, b"f", 0o100644, 0, None, caller)
            .expect("create");
        // Stay under the journal's soft limit, so no checkpoint runs inside the timing.
        let start = Instant::now();
        for i in 0..commits {
            let req = SetAttr {
                mode: Some(0o600 | (i as u32 & 0o77)),
                ..SetAttr::default()
            };
            fs.setattr(f.ino, req, caller).expect("setattr");
        }
        append.push(start.elapsed());
        // Drop without unmount: the next open replays the journal.
        drop(fs);
        let start = Instant::now();
        let fs = Fs::open(&img, FsOptions::default()).expect("reopen");
        replay.push(start.elapsed());
        drop(fs);
        std::fs::remove_file(&img).expect("remove image");
    }

    // Checkpoint of a large inode table.
    let img = dir.path().join("table");
    Fs::mkfs(&img, 4 << 30, false).expect("mkfs");
    let fs = Fs::open(&img, FsOptions::default()).expect("open");
    let mut made = 0;
    for d in 0.. {
        if made >= inodes {
            break;
        }
        let sub = fs
            .create(ROOT, format!("d{d}").as_bytes(), 0o040755, 0, None, caller)
            .expect("mkdir");
        made += 1;
        for i in 0..1000.min(inodes - made) {
            fs.create(
                sub.ino,
                format!("f{i}").as_bytes(),
                0o100644,
                0,
                None,
                caller,
            )
            .expect("create");
            made += 1;
        }
    }
    fs.checkpoint(false).expect("first checkpoint");
    let checkpoint: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            fs.checkpoint(false).expect("checkpoint");
            start.elapsed()
        })
        .collect();
    fs.unmount().expect("unmount");

    let buf: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut sink = 0u32;
    let crc: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..64 {
                sink ^= pinfs::format::codec::crc32c(std::hint::black_box(&buf));
            }
            start.elapsed() / 64
        })
        .collect();
    std::hint::black_box(sink);

    let per_s = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    let (a, r, c, x) = (
        median(append),
        median(replay),
        median(checkpoint),
        median(crc),
    );
    println!("medians of {runs} runs");
    println!(
        "journal commits   {commits} in {a:?}: {:.0} commits/s",
        per_s(commits, a)
    );
    println!(
        "journal replay    {commits} in {r:?}: {:.0} entries/s",
        per_s(commits, r)
    );
    println!(
        "checkpoint        {inodes} inodes in {c:?}: {:.0} inodes/s",
        per_s(inodes, c)
    );
    println!(
        "crc32c            1 MiB in {x:?}: {:.0} MiB/s",
        1.0 / x.as_secs_f64()
    );
}

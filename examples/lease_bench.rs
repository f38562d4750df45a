//! Pin/unpin rates and break latency on a real mount, each beside a baseline from the same
//! run, as medians. Run as root: `cargo run --release --example lease_bench`.
//!
//! - baseline: a `hello` request over the holder socket (the protocol's round trip);
//! - pin + unpin of 4 KiB and of 1 MiB;
//! - break latency: from a breaker's ftruncate to the holder having the break event, and to
//!   the ftruncate returning after the holder released; baseline: ftruncate of a file of the
//!   same size that nobody pinned.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use pinfs::holder::client::{Connection, PinOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("pinfs");
    let dir = tempfile::Builder::new()
        .prefix("lease-bench")
        .tempdir()
        .unwrap();
    let (img, mnt) = (dir.path().join("img"), dir.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    assert!(Command::new(&bin)
        .args(["mkfs", img.to_str().unwrap(), "--size", "1G"])
        .status()
        .unwrap()
        .success());
    assert!(Command::new(&bin)
        .args([
            "mount",
            img.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "-o",
            "lease_break_time=10"
        ])
        .status()
        .unwrap()
        .success());
    let path = mnt.join("buf");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&vec![1u8; 1 << 20], 0).unwrap();
    let mut c = Connection::for_file(&f).unwrap();

    let n = 5000;
    let hello: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.holder_id().unwrap();
            t.elapsed()
        })
        .collect();
    let pin_small: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let p = c.pin(&f, 0, 4096, PinOptions::default()).unwrap();
            c.unpin(&p).unwrap();
            t.elapsed()
        })
        .collect();
    let pin_big: Vec<Duration> = (0..n / 5)
        .map(|_| {
            let t = Instant::now();
            let p = c.pin(&f, 0, 1 << 20, PinOptions::default()).unwrap();
            c.unpin(&p).unwrap();
            t.elapsed()
        })
        .collect();

    // Break latency, with a holder in a child process (a breaker that holds the lease
    // itself would get EDEADLK). Times are CLOCK_MONOTONIC, comparable across processes.
    let rounds = 300;
    let mut to_child = [0; 2];
    let mut to_parent = [0; 2];
    // SAFETY: two pipes, then fork while this process has a single thread; the child only
    // runs the holder loop and exits with _exit.
    let child = unsafe {
        assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(to_parent.as_mut_ptr()), 0);
        libc::fork()
    };
    if child == 0 {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut h = Connection::for_file(&f).unwrap();
        for _ in 0..rounds {
            let mut go = [0u8; 1];
            // SAFETY: read one byte from our pipe end.
            unsafe { libc::read(to_child[0], go.as_mut_ptr().cast(), 1) };
            let p = h.pin(&f, 0, 4096, PinOptions::default()).unwrap();
            // SAFETY: write one byte: pinned.
            unsafe { libc::write(to_parent[1], [1u8].as_ptr().cast(), 1) };
            loop {
                let e = h
                    .next_event(Some(Duration::from_secs(20)))
                    .unwrap()
                    .expect("event");
                if e.name() == "break" {
                    let t = now_ns();
                    h.unpin(&p).unwrap();
                    // SAFETY: write the 8-byte timestamp.
                    unsafe { libc::write(to_parent[1], t.to_le_bytes().as_ptr().cast(), 8) };
                    break;
                }
            }
        }
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let (mut notified, mut completed, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    let other = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(mnt.join("unpinned"))
        .unwrap();
    for _ in 0..rounds {
        f.write_all_at(&[2u8; 4096], 0).unwrap();
        let mut b = [0u8; 8];
        // SAFETY: pipe reads and writes of the sizes given, on our pipe ends.
        unsafe {
            libc::write(to_child[1], [1u8].as_ptr().cast(), 1);
            libc::read(to_parent[0], b.as_mut_ptr().cast(), 1);
        }
        let t0 = now_ns();
        let start = Instant::now();
        f.set_len(0).unwrap();
        completed.push(start.elapsed());
        // SAFETY: read the child's 8-byte timestamp.
        unsafe { libc::read(to_parent[0], b.as_mut_ptr().cast(), 8) };
        notified.push(Duration::from_nanos(
            u64::from_le_bytes(b).saturating_sub(t0),
        ));
        other.write_all_at(&[2u8; 4096], 0).unwrap();
        let t = Instant::now();
        other.set_len(0).unwrap();
        baseline.push(t.elapsed());
    }
    // SAFETY: reap the child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    drop((c, f, other));
    let _ = Command::new("umount").arg(&mnt).status();

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (h, ps, pb) = (median(hello), median(pin_small), median(pin_big));
    println!("| measure (median) | value | baseline | ratio |");
    println!("|---|---|---|---|");
    println!("| hello round trip (baseline) | {:.1} us | - | - |", us(h));
    for (size, d) in [("4 KiB", ps), ("1 MiB", pb)] {
        println!(
            "| pin+unpin {size} | {:.1} us ({:.0}/s) | hello {:.1} us | {:.2} |",
            us(d),
            1.0 / d.as_secs_f64(),
            us(h),
            us(d) / us(h)
        );
    }
    let (nt, ct, bt) = (median(notified), median(completed), median(baseline));
    println!("| break: ftruncate start -> holder has the event | {:.1} us | unpinned ftruncate {:.1} us | {:.2} |", us(nt), us(bt), us(nt) / us(bt));
    println!("| break: ftruncate start -> return after release | {:.1} us | unpinned ftruncate {:.1} us | {:.2} |", us(ct), us(bt), us(ct) / us(bt));
}

fn now_ns() -> u64 {
    // SAFETY: clock_gettime into a timespec on our stack.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

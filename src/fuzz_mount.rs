//! The fuzzer's concurrent mode: many actors on a real pinfs mount at once.
//!
//! - holders: `pinfs pin` processes that pin random ranges of the *pinned* files and keep
//!   storing their own byte (`0xe0 + n`) into them, some ignoring breaks, some releasing,
//!   killed at random;
//! - breakers on the pinned files: truncate, punch, zero, and writers that grow them again;
//! - writers, mmap users and readers on *plain* files (no holder ever pins them), each file's
//!   operations serialised by the fuzzer so that its contents can be checked exactly against
//!   a model;
//! - allocators: new files that take freed space, read back at once.
//!
//! Oracles, checked continuously and at the end: a plain file always matches its model (so
//! no holder byte ever reaches it); a new file reads back exactly what was written; a holder
//! byte in a pinned file lies inside a range that holder pinned there; after all holders
//! are gone no block is busy; the unmounted image checks clean. With `busy_blocks=off` the
//! oracles are expected to fire, and the fuzzer says so.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fuzz::Rng;

const PLAIN: usize = 3;
const PINNED: usize = 2;
const MAX: u64 = 256 * 1024;

/// Settings of a concurrent run.
#[derive(Debug, Clone)]
pub struct MountFuzz {
    /// The seed (thread timing still varies).
    pub seed: u64,
    /// How long.
    pub duration: Duration,
    /// Holder processes at once.
    pub holders: usize,
    /// Worker threads (breakers, writers, allocators).
    pub threads: usize,
    /// Mount options (policy, break time, busy blocks).
    pub options: String,
    /// Stop after this many worker operations.
    pub max_ops: Option<u64>,
    /// Run on this existing pinfs mount (in a directory of its own) instead of a fresh
    /// image; then the mount's options apply, and fsck and the final busy-block check are
    /// left to its owner.
    pub mount: Option<PathBuf>,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Operations done by the workers.
    pub ops: u64,
    /// Leases broken (from the daemon's counters).
    pub breaks: u64,
    /// Oracle violations.
    pub violations: Vec<String>,
    /// The last operations before the end (or the first violation).
    pub recent: Vec<String>,
}

/// A range a holder pinned: (its byte, first byte, end byte).
type PinnedRange = (u8, u64, u64);

struct Shared {
    mnt: PathBuf,
    stop: AtomicBool,
    ops: AtomicU64,
    violations: Mutex<Vec<String>>,
    /// The most recent operations, for the report of a failure.
    log: Mutex<std::collections::VecDeque<String>>,
    plain: Vec<Mutex<Vec<u8>>>,
    /// Per pinned file: every range ever pinned there.
    pinned_ranges: Mutex<HashMap<usize, Vec<PinnedRange>>>,
}

impl Shared {
    fn note(&self, what: String) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == 40 {
            log.pop_front();
        }
        log.push_back(what);
    }

    fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 20 {
            v.push(what);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn plain_path(mnt: &Path, i: usize) -> PathBuf {
    mnt.join(format!("plain{i}"))
}
fn pinned_path(mnt: &Path, i: usize) -> PathBuf {
    mnt.join(format!("pinned{i}"))
}

fn plain_worker(sh: &Shared, r: &mut Rng) {
    let i = r.below(PLAIN as u64) as usize;
    let path = plain_path(&sh.mnt, i);
    let mut model = sh.plain[i].lock().unwrap_or_else(|e| e.into_inner());
    let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
        return;
    };
    let off = r.below(MAX);
    let len = 1 + r.below(32768);
    let byte = 1 + r.below(0xd0) as u8;
    match r.below(5) {
        0 | 1 => {
            sh.note(format!("plain{i}: write {len} bytes of {byte:#x} at {off}"));
            if f.write_all_at(&vec![byte; len as usize], off).is_ok() {
                if model.len() < (off + len) as usize {
                    model.resize((off + len) as usize, 0);
                }
                model[off as usize..(off + len) as usize].fill(byte);
            }
        }
        2 => {
            sh.note(format!("plain{i}: truncate to {off}"));
            if f.set_len(off).is_ok() {
                model.resize(off as usize, 0);
            }
        }
        3 if model.len() >= 4096 => {
            // An mmap user: stores through a shared mapping, then msync.
            let size = model.len() as u64;
            let moff = r.below(size) & !4095;
            let mlen = (size - moff).min(1 + r.below(16384));
            sh.note(format!(
                "plain{i}: mmap store {mlen} bytes of {byte:#x} at {moff}"
            ));
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            // SAFETY: a shared mapping of `mlen` bytes at a page-aligned offset inside the file,
            // written within its bounds, synced and unmapped here; no reference outlives it.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    mlen as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    moff as i64,
                );
                if p != libc::MAP_FAILED {
                    std::ptr::write_bytes(p as *mut u8, byte, mlen as usize);
                    libc::msync(p, mlen as usize, libc::MS_SYNC);
                    libc::munmap(p, mlen as usize);
                    model[moff as usize..(moff + mlen) as usize].fill(byte);
                }
            }
        }
        _ => {}
    }
    let mut got = vec![0u8; model.len() + 1];
    let n = f.read_at(&mut got, 0).unwrap_or(0);
    got.truncate(n);
    if got != *model {
        let at = got
            .iter()
            .zip(model.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        sh.violation(format!(
            "plain{i}: byte {at} is {:#x}, the model says {:#x} (sizes {} and {})",
            got.get(at).copied().unwrap_or(0),
            model.get(at).copied().unwrap_or(0),
            got.len(),
            model.len()
        ));
    }
}

fn breaker_worker(sh: &Shared, r: &mut Rng) {
    let i = r.below(PINNED as u64) as usize;
    let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pinned_path(&sh.mnt, i))
    else {
        return;
    };
    let off = r.below(MAX);
    let len = 1 + r.below(65536);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let what = r.below(5);
    sh.note(match what {
        0 => format!("pinned{i}: truncate to {off}"),
        1 => format!("pinned{i}: punch {off}+{len}"),
        2 => format!("pinned{i}: zero {off}+{len}"),
        _ => format!("pinned{i}: write {len} bytes at {off}"),
    });
    match what {
        0 => drop(f.set_len(off)),
        // SAFETY: fallocate on an open descriptor; the result is ignored (breakers may be
        // refused, which is what the policy says).
        1 => unsafe {
            let _ = libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as i64,
                len as i64,
            );
        },
        // SAFETY: as above.
        2 => unsafe {
            let _ = libc::fallocate(fd, libc::FALLOC_FL_ZERO_RANGE, off as i64, len as i64);
        },
        _ => drop(f.write_all_at(&vec![1 + r.below(0xd0) as u8; len as usize], off)),
    }
}

fn allocator_worker(sh: &Shared, r: &mut Rng, n: u64) {
    let path = sh.mnt.join(format!("new{n}"));
    let byte = 1 + r.below(0xd0) as u8;
    let len = (1 + r.below(16)) as usize * 4096;
    if std::fs::write(&path, vec![byte; len]).is_ok() {
        if let Ok(back) = std::fs::read(&path) {
            if let Some(at) = back.iter().position(|&b| b != byte) {
                sh.violation(format!("new file new{n}: byte {at} is {:#x}, not {byte:#x}: freed blocks still written by a holder", back[at]));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn check_pinned(sh: &Shared) {
    let ranges = sh
        .pinned_ranges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for i in 0..PINNED {
        let Ok(data) = std::fs::read(pinned_path(&sh.mnt, i)) else {
            continue;
        };
        let allowed = ranges.get(&i).cloned().unwrap_or_default();
        for (p, &b) in data.iter().enumerate() {
            if b >= 0xe0
                && !allowed
                    .iter()
                    .any(|&(hb, a, e)| hb == b && (a..e).contains(&(p as u64)))
            {
                sh.violation(format!("pinned{i}: holder byte {b:#x} at {p}, outside every range that holder pinned there"));
                return;
            }
        }
    }
}

fn spawn_holder(exe: &Path, sh: &Shared, r: &mut Rng, slot: usize) -> Option<Child> {
    let i = r.below(PINNED as u64) as usize;
    let path = pinned_path(&sh.mnt, i);
    let size = std::fs::metadata(&path).ok()?.len();
    if size < 4096 {
        return None;
    }
    let off = r.below(size) & !4095;
    let len = (1 + r.below(8)) * 4096;
    let len = len.min(size.next_multiple_of(4096) - off);
    let byte = 0xe0 + slot as u8;
    sh.pinned_ranges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(i)
        .or_default()
        .push((byte, off, off + len));
    let mut cmd = Command::new(exe);
    cmd.arg("pin")
        .arg(&path)
        .args(["--offset", &off.to_string(), "--len", &len.to_string()]);
    cmd.args(["--write-byte", &byte.to_string(), "--every", "2"]);
    if r.below(2) == 0 {
        cmd.arg("--ignore-breaks");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Runs the concurrent fuzzer on a fresh image (mounted with `cfg.options`).
pub fn run(cfg: &MountFuzz) -> Result<Report, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("pinfs-fuzz")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let own = cfg.mount.is_none();
    let (img, mnt) = match &cfg.mount {
        None => (work.path().join("fuzz.img"), work.path().join("mnt")),
        Some(m) => (PathBuf::new(), m.join(format!("pinfs-fuzz-{}", cfg.seed))),
    };
    std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new(&exe)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    };
    if own {
        run(&["mkfs", img.to_str().unwrap_or_default(), "--size", "128M"])?;
        run(&[
            "mount",
            img.to_str().unwrap_or_default(),
            mnt.to_str().unwrap_or_default(),
            "-o",
            &cfg.options,
        ])?;
    }
    for i in 0..PLAIN {
        std::fs::write(plain_path(&mnt, i), b"").map_err(|e| e.to_string())?;
    }
    for i in 0..PINNED {
        std::fs::write(pinned_path(&mnt, i), vec![0x11u8; MAX as usize])
            .map_err(|e| e.to_string())?;
    }
    let sh = Arc::new(Shared {
        mnt: mnt.clone(),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        log: Mutex::new(std::collections::VecDeque::new()),
        plain: (0..PLAIN).map(|_| Mutex::new(Vec::new())).collect(),
        pinned_ranges: Mutex::new(HashMap::new()),
    });
    let end = Instant::now() + cfg.duration;
    let max_ops = cfg.max_ops;
    let workers: Vec<_> = (0..cfg.threads.max(1))
        .map(|t| {
            let sh = sh.clone();
            let seed = cfg.seed.wrapping_add(t as u64 * 7919);
            std::thread::spawn(move || {
                let mut r = Rng::new(seed);
                let mut n = 0u64;
                while !sh.stop.load(Ordering::SeqCst)
                    && Instant::now() < end
                    && max_ops.is_none_or(|m| sh.ops.load(Ordering::Relaxed) < m)
                {
                    n += 1;
                    match r.below(10) {
                        0..=4 => plain_worker(&sh, &mut r),
                        5..=7 => breaker_worker(&sh, &mut r),
                        _ => allocator_worker(&sh, &mut r, seed * 1_000_000 + n),
                    }
                    sh.ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut r = Rng::new(cfg.seed ^ 0x5eed);
    let mut holders: Vec<Option<Child>> = (0..cfg.holders).map(|_| None).collect();
    while !sh.stop.load(Ordering::SeqCst)
        && Instant::now() < end
        && max_ops.is_none_or(|m| sh.ops.load(Ordering::Relaxed) < m)
    {
        let slot = r.below(cfg.holders.max(1) as u64) as usize;
        if let Some(h) = holders.get_mut(slot) {
            if let Some(mut c) = h.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            *h = spawn_holder(&exe, &sh, &mut r, slot);
        }
        check_pinned(&sh);
        std::thread::sleep(Duration::from_millis(50 + r.below(150)));
    }
    for w in workers {
        let _ = w.join();
    }
    for mut c in holders.into_iter().flatten() {
        let _ = c.kill();
        let _ = c.wait();
    }
    check_pinned(&sh);
    let status = |key: &str| -> u64 {
        crate::client::Connection::for_path(&mnt)
            .and_then(|mut c| c.status(false))
            .ok()
            .and_then(|j| crate::status::json_number(&j, key))
            .unwrap_or(0)
    };
    let breaks = status("breaks");
    if own {
        let deadline = Instant::now() + Duration::from_secs(5);
        while status("busy_blocks") != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let busy = status("busy_blocks");
        if busy != 0 {
            sh.violation(format!("{busy} blocks still busy after every holder left"));
        }
        let _ = Command::new("umount").arg(&mnt).status();
        // The daemon writes its last checkpoint after umount returns; fsck waits for its lock.
        let out = Command::new(&exe)
            .args(["fsck", img.to_str().unwrap_or_default()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            sh.violation(format!(
                "fsck: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    } else {
        let _ = std::fs::remove_dir_all(&mnt);
    }
    let violations = sh
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let recent = sh
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    Ok(Report {
        ops: sh.ops.load(Ordering::SeqCst),
        breaks,
        violations,
        recent,
    })
}

/// Mount options drawn from the seed when none are given: the policy (`revoke` or
/// `refuse`), the break time (50 to 500 ms), busy blocks on.
pub fn options_from_seed(seed: u64) -> String {
    let mut r = Rng::new(seed ^ 0x0b7e);
    let policy = ["revoke", "refuse"][r.below(2) as usize];
    let ms = 50 + r.below(451);
    format!(
        "break_policy={policy},lease_break_time={:.3}",
        ms as f64 / 1000.0
    )
}

//! The truncate-versus-pin fuzzer's serial mode: a random program of holder and breaker
//! operations, run in one thread against a fresh filesystem core, exactly reproducible from
//! its seed, checked against a model after every step, and shrunk to a short failing
//! program when a check fails.
//!
//! Holders pin ranges of a few files and store their own byte into their pinned blocks
//! (as a device would, through the DAX window). Breakers truncate, punch and zero; writers
//! write; a new file takes freed space. The model says what every file must contain: what
//! writers wrote, plus a holder's byte only while its range is in the file. So the oracles
//! "no holder byte in another file" and "none in its own file after the range left it" are
//! the model comparison itself. After the program: every holder goes, busy blocks must all
//! be free again, the allocator's accounting must hold, and fsck must find the image clean.
//!
//! Holders never release by themselves here (one thread cannot answer a break while it is
//! the breaker), so every break runs to its deadline: the policy decides (`revoke` or
//! `refuse`; `wait` would wait forever and is not allowed in this mode). With
//! `busy_blocks=off` the first oracle is expected to fail, and the fuzzer says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::fs::{falloc, Caller, Fs, FsOptions, PinnedExtent, SetAttr};
use crate::image::BLOCK_SIZE;
use crate::inode::ROOT_INO;
use crate::lease::{HolderInfo, LeaseConfig, Policy};

/// A small deterministic generator (SplitMix64): programs depend only on the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const FILES: u64 = 3;
const HOLDERS: u64 = 3;
const MAX_SIZE: u64 = 64 * BLOCK_SIZE;
const BREAKER_PID: u32 = 5_000_000;

/// One step of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A writer writes `len` bytes of `byte` at `off`.
    Write {
        file: u64,
        off: u64,
        len: u64,
        byte: u8,
    },
    /// Truncate (down is a breaker).
    Truncate { file: u64, size: u64 },
    /// Punch a hole (a breaker).
    Punch { file: u64, off: u64, len: u64 },
    /// Zero a range (a breaker).
    Zero { file: u64, off: u64, len: u64 },
    /// Holder `holder` pins a range (dropping any pin it had).
    Pin {
        holder: u64,
        file: u64,
        off: u64,
        len: u64,
    },
    /// Holder `holder` stores its byte into all its pinned blocks.
    HolderStore { holder: u64 },
    /// Holder `holder` goes away (releases everything).
    HolderGone { holder: u64 },
    /// A new file takes `blocks` blocks of free space and is filled with `byte`.
    NewFile { blocks: u64, byte: u8 },
}

impl Op {
    fn random(r: &mut Rng) -> Op {
        let file = r.below(FILES);
        let off = r.below(MAX_SIZE);
        let len = 1 + r.below(16 * BLOCK_SIZE);
        match r.below(16) {
            0..=3 => Op::Write {
                file,
                off,
                len,
                byte: 1 + r.below(0x7f) as u8,
            },
            4 | 5 => Op::Truncate {
                file,
                size: r.below(MAX_SIZE),
            },
            6 => Op::Punch { file, off, len },
            7 => Op::Zero { file, off, len },
            8..=10 => Op::Pin {
                holder: r.below(HOLDERS),
                file,
                off,
                len,
            },
            11..=13 => Op::HolderStore {
                holder: r.below(HOLDERS),
            },
            14 => Op::HolderGone {
                holder: r.below(HOLDERS),
            },
            _ => Op::NewFile {
                blocks: 1 + r.below(8),
                byte: 1 + r.below(0x7f) as u8,
            },
        }
    }
}

/// The program a seed makes.
pub fn program(seed: u64, ops: usize) -> Vec<Op> {
    let mut r = Rng::new(seed);
    (0..ops).map(|_| Op::random(&mut r)).collect()
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Clean {
        /// Breakers that found leases to break.
        breaks: u64,
        /// Holder stores checked.
        stores: u64,
    },
    /// A check failed at step `step` (the program's length when the failure came after it).
    Failed {
        /// The step.
        step: usize,
        /// What did not hold.
        what: String,
    },
}

struct Holder {
    id: u64,
    file: u64,
    extents: Vec<PinnedExtent>,
    pin: u64,
    /// The pinned range still belongs to the file (the lease is live).
    in_file: bool,
}

impl Holder {
    /// Does this holder's live lease cover any of file blocks `first..end` of `file`?
    fn covers(&self, file: u64, first: u64, end: u64) -> bool {
        let hf = self.extents[0].file_offset / BLOCK_SIZE;
        let he = self
            .extents
            .last()
            .map_or(0, |e| (e.file_offset + e.len) / BLOCK_SIZE);
        self.file == file && self.in_file && hf < end && first < he
    }
}

/// The settings a serial run uses.
#[derive(Debug, Clone, Copy)]
pub struct SerialConfig {
    /// `revoke` or `refuse`.
    pub policy: Policy,
    /// Keep revoked blocks busy.
    pub busy_blocks: bool,
}

/// Runs `prog` on a fresh image in `dir` and checks it.
pub fn run_serial(dir: &Path, prog: &[Op], cfg: SerialConfig) -> Result<Outcome, String> {
    let path = dir.join("fuzz.img");
    Fs::mkfs(&path, 32 << 20, true).map_err(|e| e.to_string())?;
    let leases = LeaseConfig {
        break_time: Some(Duration::from_millis(1)),
        policy: cfg.policy,
        busy_blocks: cfg.busy_blocks,
    };
    let fs = Arc::new(
        Fs::open(
            &path,
            FsOptions {
                leases,
                lock_wait: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let root = Caller::ROOT;
    let breaker = Caller {
        pid: BREAKER_PID,
        ..root
    };
    let mut inos = Vec::new();
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for f in 0..FILES {
        let a = fs
            .create(
                ROOT_INO,
                format!("f{f}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                None,
                root,
            )
            .map_err(|e| e.to_string())?;
        inos.push(a.ino);
        model.insert(f, Vec::new());
    }
    let mut holders: Vec<Option<Holder>> = (0..HOLDERS).map(|_| None).collect();
    let mut new_files = 0u64;
    let (mut breaks, mut stores) = (0u64, 0u64);
    let fail = |step: usize, what: String| Ok(Outcome::Failed { step, what });

    for (step, op) in prog.iter().enumerate() {
        // Which live pins a layout change of blocks first..end of `file` will revoke.
        let revoke = |file: u64, first: u64, end: u64, holders: &mut Vec<Option<Holder>>| -> bool {
            if first >= end {
                return false; // no whole block changes owner: nothing to break
            }
            let hit = holders.iter().flatten().any(|h| h.covers(file, first, end));
            if hit && cfg.policy == Policy::Revoke {
                for h in holders.iter_mut().flatten() {
                    if h.covers(file, first, end) {
                        h.in_file = false;
                    }
                }
            }
            hit
        };
        match *op {
            Op::Write {
                file,
                off,
                len,
                byte,
            } => {
                let data = vec![byte; len as usize];
                match fs.write(inos[file as usize], off, &data, root) {
                    Ok(n) if n as u64 == len => {
                        let m = model.get_mut(&file).expect("file");
                        if m.len() < (off + len) as usize {
                            m.resize((off + len) as usize, 0);
                        }
                        m[off as usize..(off + len) as usize].fill(byte);
                    }
                    Ok(n) => return fail(step, format!("short write of {n} of {len} bytes")),
                    Err(e) if e.errno() == libc::ENOSPC => {}
                    Err(e) => return fail(step, format!("write: {e}")),
                }
            }
            Op::Truncate { file, size } => {
                let m = model.get_mut(&file).expect("file");
                let shrinking = (size as usize) < m.len();
                let hit =
                    shrinking && revoke(file, size.div_ceil(BLOCK_SIZE), u64::MAX, &mut holders);
                let r = fs.setattr(
                    inos[file as usize],
                    SetAttr {
                        size: Some(size),
                        ..Default::default()
                    },
                    breaker,
                );
                let m = model.get_mut(&file).expect("file");
                match r {
                    Ok(_) => m.resize(size as usize, 0),
                    Err(e) if hit && e.errno() == libc::ETXTBSY && cfg.policy == Policy::Refuse => {
                    }
                    Err(e) => return fail(step, format!("truncate: {e}")),
                }
                breaks += hit as u64;
            }
            Op::Punch { file, off, len } | Op::Zero { file, off, len } => {
                let punch = matches!(op, Op::Punch { .. });
                let end = off + len;
                let hit = revoke(
                    file,
                    off.div_ceil(BLOCK_SIZE),
                    end / BLOCK_SIZE,
                    &mut holders,
                );
                let mode = if punch {
                    falloc::PUNCH_HOLE | falloc::KEEP_SIZE
                } else {
                    falloc::ZERO_RANGE
                };
                let r = fs.fallocate(inos[file as usize], off, len, mode, breaker, None);
                let m = model.get_mut(&file).expect("file");
                match r {
                    Ok(()) => {
                        let upto = if punch { end.min(m.len() as u64) } else { end };
                        if m.len() < upto as usize {
                            m.resize(upto as usize, 0);
                        }
                        if off < upto {
                            m[off as usize..upto as usize].fill(0);
                        }
                    }
                    Err(e) if hit && e.errno() == libc::ETXTBSY && cfg.policy == Policy::Refuse => {
                    }
                    Err(e) if e.errno() == libc::ENOSPC => {
                        // Zero range may run out of space after unmapping: the range still
                        // reads as zeros.
                        let upto = end.min(m.len() as u64);
                        if !punch && off < upto {
                            m[off as usize..upto as usize].fill(0);
                        }
                    }
                    Err(e) => {
                        return fail(
                            step,
                            format!("{}: {e}", if punch { "punch" } else { "zero range" }),
                        )
                    }
                }
                breaks += hit as u64;
            }
            Op::Pin {
                holder,
                file,
                off,
                len,
            } => {
                if let Some(old) = holders[holder as usize].take() {
                    fs.holder_gone(old.id);
                }
                let size = model[&file].len() as u64;
                if off >= size {
                    continue;
                }
                let len = len.min(size - off);
                let id = fs.add_holder(HolderInfo {
                    pid: 6_000_000 + holder as u32,
                    comm: format!("h{holder}"),
                    uid: 0,
                    gid: 0,
                });
                let req = crate::lease::PinRequest {
                    holder: id,
                    ino: inos[file as usize],
                    offset: off,
                    len,
                    writable: true,
                    unbreakable: false,
                };
                match fs.pin(
                    &req,
                    Caller {
                        pid: 6_000_000 + holder as u32,
                        ..root
                    },
                ) {
                    Ok(g) => {
                        holders[holder as usize] = Some(Holder {
                            id,
                            file,
                            extents: g.extents,
                            pin: g.id,
                            in_file: true,
                        })
                    }
                    Err(e) if e.errno() == libc::ENOSPC => fs.holder_gone(id),
                    Err(e) => return fail(step, format!("pin: {e}")),
                }
            }
            Op::HolderStore { holder } => {
                let Some(h) = &holders[holder as usize] else {
                    continue;
                };
                let byte = 0xe0 + holder as u8;
                for e in &h.extents {
                    fs.image()
                        .write(e.image_offset, &vec![byte; e.len as usize]);
                }
                stores += 1;
                let live_elsewhere = |fb: u64| {
                    holders.iter().flatten().any(|o| {
                        o.id != h.id
                            && o.file == h.file
                            && o.in_file
                            && o.extents.iter().any(|e| {
                                e.file_offset / BLOCK_SIZE <= fb
                                    && fb < (e.file_offset + e.len) / BLOCK_SIZE
                            })
                    })
                };
                let m = model.get_mut(&h.file).expect("file");
                for e in &h.extents {
                    for k in 0..e.len / BLOCK_SIZE {
                        let fb = e.file_offset / BLOCK_SIZE + k;
                        let still = fs.image_block_of(inos[h.file as usize], fb)
                            == Some(e.image_offset / BLOCK_SIZE + k);
                        if !h.in_file && still && !live_elsewhere(fb) {
                            return fail(step, format!("revoked holder h{holder} still reaches block {fb} of f{}, which no live pin keeps", h.file));
                        }
                        if h.in_file || still {
                            let a = ((fb * BLOCK_SIZE) as usize).min(m.len());
                            let b = (((fb + 1) * BLOCK_SIZE) as usize).min(m.len());
                            m[a..b].fill(byte);
                        }
                    }
                }
            }
            Op::HolderGone { holder } => {
                if let Some(h) = holders[holder as usize].take() {
                    let _ = h.pin;
                    fs.holder_gone(h.id);
                }
            }
            Op::NewFile { blocks, byte } => {
                new_files += 1;
                let name = format!("new{new_files}");
                let a = fs
                    .create(
                        ROOT_INO,
                        name.as_bytes(),
                        libc::S_IFREG | 0o644,
                        0,
                        None,
                        root,
                    )
                    .map_err(|e| e.to_string())?;
                let want = vec![byte; (blocks * BLOCK_SIZE) as usize];
                match fs.write(a.ino, 0, &want, root) {
                    Ok(_) | Err(_) => {}
                }
                let got = fs
                    .read(a.ino, 0, want.len() as u32)
                    .map_err(|e| e.to_string())?;
                if let Some(i) = got.iter().position(|&b| b != byte) {
                    return fail(step, format!("new file {name} byte {i} is {:#x}, not {byte:#x}: another file's blocks or a holder's bytes reached it", got[i]));
                }
                let _ = fs.remove(ROOT_INO, name.as_bytes(), false);
                fs.forget(a.ino, 1);
            }
        }
        // The model check after every step.
        for f in 0..FILES {
            let m = &model[&f];
            let got = fs
                .read(inos[f as usize], 0, (m.len() + 1) as u32)
                .map_err(|e| e.to_string())?;
            if got != *m {
                let at = got
                    .iter()
                    .zip(m.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(m.len()));
                let seen = got.get(at).map_or("nothing".into(), |b| format!("{b:#x}"));
                let want = m.get(at).map_or("nothing".into(), |b| format!("{b:#x}"));
                let holder = got.get(at).is_some_and(|&b| b >= 0xe0);
                return fail(
                    step,
                    format!(
                        "file f{f} byte {at} is {seen}, the model says {want} (size {} vs {}){}",
                        got.len(),
                        m.len(),
                        if holder {
                            ": a holder's byte where no live pin allows it"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        let acct = fs.with_allocator(|a| a.check());
        if let Err(e) = acct {
            return fail(step, format!("allocator: {e}"));
        }
    }
    for h in holders.iter_mut() {
        if let Some(h) = h.take() {
            fs.holder_gone(h.id);
        }
    }
    let busy = fs.statfs().busy;
    if busy != 0 {
        return fail(
            prog.len(),
            format!("{busy} blocks still busy after every holder left"),
        );
    }
    fs.unmount().map_err(|e| e.to_string())?;
    drop(fs);
    let report = crate::fsck::check(&path, false).map_err(|e| e.to_string())?;
    if !report.errors.is_empty() {
        return fail(prog.len(), format!("fsck: {}", report.errors.join("; ")));
    }
    Ok(Outcome::Clean { breaks, stores })
}

/// Shrinks a failing program: removes chunks of operations while the run still fails.
pub fn shrink(dir: &Path, prog: &[Op], cfg: SerialConfig) -> Vec<Op> {
    let fails = |p: &[Op]| matches!(run_serial(dir, p, cfg), Ok(Outcome::Failed { .. }));
    let mut cur: Vec<Op> = prog.to_vec();
    if let Ok(Outcome::Failed { step, .. }) = run_serial(dir, &cur, cfg) {
        cur.truncate(step + 1);
    }
    let mut chunk = cur.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        while i < cur.len() {
            let mut cand = cur.clone();
            cand.drain(i..(i + chunk).min(cand.len()));
            if !cand.is_empty() && fails(&cand) {
                cur = cand;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    cur
}

/// Runs `runs` serial programs of `ops` operations from seeds `seed`, `seed + 1`, ...; prints
/// a report. Returns whether the outcome is the expected one: every run clean, or with
/// `busy_blocks=off`, the oracle catching the corruption.
pub fn serial_command(seed: u64, ops: usize, runs: u64, cfg: SerialConfig) -> Result<bool, String> {
    let dir = tempfile::Builder::new()
        .prefix("pinfs-fuzz")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let opts = format!(
        "break_policy={},busy_blocks={}",
        cfg.policy.name(),
        if cfg.busy_blocks { "on" } else { "off" }
    );
    let t0 = std::time::Instant::now();
    let (mut total_ops, mut total_breaks) = (0u64, 0u64);
    for run in 0..runs {
        let s = seed.wrapping_add(run);
        let prog = program(s, ops);
        match run_serial(dir.path(), &prog, cfg)? {
            Outcome::Clean { breaks, .. } => {
                total_ops += prog.len() as u64;
                total_breaks += breaks;
            }
            Outcome::Failed { step, what } => {
                let small = shrink(dir.path(), &prog, cfg);
                let expected = !cfg.busy_blocks;
                println!(
                    "{}: seed {s}, step {step}: {what}",
                    if expected {
                        "oracle fired (expected with busy_blocks=off)"
                    } else {
                        "FAILED"
                    }
                );
                println!("program around the failure:");
                for (i, op) in prog.iter().enumerate().skip(step.saturating_sub(5)).take(6) {
                    println!("  {i:4}: {op:?}");
                }
                println!("shrunk to {} operations:", small.len());
                for (i, op) in small.iter().enumerate() {
                    println!("  {i:4}: {op:?}");
                }
                println!("replay: pinfs fuzz --serial --seed {s} --ops {ops} --runs 1 -o {opts}");
                return Ok(expected);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{runs} programs, {total_ops} operations, {total_breaks} breaks in {secs:.1} s ({:.0} operations/s, {:.0} breaks/s): all checks held ({opts})",
        total_ops as f64 / secs,
        total_breaks as f64 / secs
    );
    if !cfg.busy_blocks {
        println!(
            "busy_blocks=off, yet the oracle never fired: it may be unable to see the corruption"
        );
        return Ok(false);
    }
    Ok(true)
}

//! The fuzzer's serial mode: a program ([`crate::fuzzer`]) run step by step in program order,
//! in one thread, against a fresh filesystem core: exactly reproducible from its seed and
//! shape, checked against a model after every step, and shrunk to a short failing program
//! when a check fails.
//!
//! The model says what every file must contain: what writers wrote, plus a holder's tags only
//! where its pinned blocks still are the file's. So "no holder byte in another file" and
//! "none in its own file after its range left it" are the model comparison itself. After the
//! program every holder goes, busy blocks must all be free again, the allocator's accounting
//! must hold, and fsck must find the image clean.
//!
//! One thread cannot answer a break while it is the breaker, so a holder's answer is played
//! in program order: a holder that releases on breaks releases just before the breaker runs;
//! one that ignores breaks makes the break run to its deadline (1 ms here), where the policy
//! decides. Under `wait` a breaker that would wait is set aside, as its thread would be, and
//! runs once the pins in its way are gone; pins on its range meanwhile are refused, as the
//! filesystem refuses pins on a breaking range. With `busy_blocks=off` the first oracle is
//! expected to fail, and the fuzzer says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::fs::{falloc, Caller, Fs, FsOptions, PinnedExtent, SetAttr};
use crate::fuzzer::{
    apply, broken_blocks, file_name, fill_tags, first_difference, initial_content, mmap_range,
    pin_range, program, read_tag, Actor, Op, Shape, Step, FILES, HOLDER_BYTES, MAX_TAG_STORE,
};
use crate::lease::{HolderId, HolderInfo, LeaseConfig, PinId, PinRequest, Policy};
use crate::meta::inode::ROOT_INO;
use crate::store::image::BLOCK_SIZE;

const BREAKER_PID: u32 = 5_000_000;
const HOLDER_PID: u32 = 6_000_000;

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

/// The settings a serial run uses.
#[derive(Debug, Clone, Copy)]
pub struct SerialConfig {
    /// The break policy.
    pub policy: Policy,
    /// Keep revoked blocks busy.
    pub busy_blocks: bool,
}

/// A pin a holder has.
struct HeldPin {
    id: PinId,
    generation: u32,
    file: usize,
    extents: Vec<PinnedExtent>,
    stores: u32,
    release_on_break: bool,
    /// The lease is live (not revoked): the pinned range is still the file's.
    in_file: bool,
}

impl HeldPin {
    fn blocks(&self) -> (u64, u64) {
        let first = self.extents[0].file_offset / BLOCK_SIZE;
        let end = self
            .extents
            .last()
            .map_or(first, |e| (e.file_offset + e.len) / BLOCK_SIZE);
        (first, end)
    }

    /// Does this pin's live lease cover any of blocks `first..end` of `file`?
    fn covers(&self, file: usize, first: u64, end: u64) -> bool {
        let (a, b) = self.blocks();
        self.file == file && self.in_file && a < end && first < b
    }
}

/// A holder: registered with the filesystem until it dies.
struct Holder {
    id: HolderId,
    pin: Option<HeldPin>,
}

/// The state of one serial run (also the crash-state explorer's, [`crate::fuzzer::crashes`]).
pub(crate) struct Run {
    fs: Arc<Fs>,
    cfg: SerialConfig,
    /// The files' inode numbers.
    pub(crate) inos: Vec<u64>,
    /// What each file must contain.
    pub(crate) model: Vec<Vec<u8>>,
    holders: HashMap<usize, Holder>,
    /// Breakers set aside under `wait`, in program order.
    waiting: Vec<Op>,
    generations: u32,
    new_files: u64,
    breaks: u64,
    stores: u64,
}

/// A failed check.
type Check = Result<(), String>;

fn root() -> Caller {
    Caller::ROOT
}

impl Run {
    pub(crate) fn new(fs: Arc<Fs>, cfg: SerialConfig) -> Result<Run, String> {
        let mut run = Run {
            fs,
            cfg,
            inos: Vec::new(),
            model: Vec::new(),
            holders: HashMap::new(),
            waiting: Vec::new(),
            generations: 0,
            new_files: 0,
            breaks: 0,
            stores: 0,
        };
        for f in 0..FILES {
            let ino = run.create(&file_name(f))?;
            let content = initial_content(f);
            run.fs
                .write(ino, 0, &content, root())
                .map_err(|e| e.to_string())?;
            run.inos.push(ino);
            run.model.push(content);
        }
        Ok(run)
    }

    pub(crate) fn step(&mut self, step: &Step) -> Check {
        match (step.actor, step.op) {
            (
                _,
                Op::Write {
                    file,
                    off,
                    len,
                    byte,
                },
            )
            | (
                _,
                Op::MmapStore {
                    file,
                    off,
                    len,
                    byte,
                },
            ) => {
                let (off, len) = match step.op {
                    Op::MmapStore { .. } => {
                        match mmap_range(off, len, self.model[file].len() as u64) {
                            Some(r) => r,
                            None => return Ok(()),
                        }
                    }
                    _ => (off, len),
                };
                self.write(file, off, len, byte)
            }
            (_, op @ (Op::Truncate { .. } | Op::Punch { .. } | Op::Zero { .. })) => {
                self.breaker(op, false)
            }
            (_, Op::NewFile { blocks, byte }) => self.new_file(blocks, byte),
            (_, Op::Fence { holder }) => self.fence(holder),
            (
                Actor::Holder(h),
                Op::Pin {
                    file,
                    off,
                    len,
                    release_on_break,
                },
            ) => self.pin(h, file, off, len, release_on_break),
            (Actor::Holder(h), Op::Store) => self.store(h),
            // One thread has no second process to store through a kept mapping: an unpin
            // that keeps it is an unpin here, a closed connection or a death with a forked
            // child a death (what the filesystem sees of them), and a read-only pin's
            // writable mapping is the mount's to refuse (the concurrent mode tries it).
            (Actor::Holder(h), Op::Unpin | Op::UnpinKeep) => {
                self.unpin(h);
                self.run_waiting()
            }
            (Actor::Holder(_), Op::PinReadOnly { .. }) => Ok(()),
            (Actor::Holder(h), Op::Die | Op::Disconnect | Op::ForkDie) => {
                if let Some(holder) = self.holders.remove(&h) {
                    self.fs.holder_gone(holder.id);
                }
                self.run_waiting()
            }
            (Actor::Worker(_), _) => Err(format!("a worker cannot {:?}", step.op)),
        }
    }

    /// A new file in the root directory.
    fn create(&self, name: &str) -> Result<u64, String> {
        self.fs
            .create(
                ROOT_INO,
                name.as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                None,
                root(),
            )
            .map(|a| a.ino)
            .map_err(|e| format!("create {name}: {e}"))
    }

    fn write(&mut self, file: usize, off: u64, len: u64, byte: u8) -> Check {
        let data = vec![byte; len as usize];
        match self.fs.write(self.inos[file], off, &data, root()) {
            Ok(n) if n as u64 == len => {
                apply(
                    &mut self.model[file],
                    &Op::Write {
                        file,
                        off,
                        len,
                        byte,
                    },
                );
                Ok(())
            }
            Ok(n) => Err(format!("short write of {n} of {len} bytes")),
            Err(e) if e.errno() == libc::ENOSPC => Ok(()),
            Err(e) => Err(format!("write: {e}")),
        }
    }

    /// Runs a breaker, or under `wait` sets it aside while pins that ignore breaks are in
    /// its way.
    fn breaker(&mut self, op: Op, retry: bool) -> Check {
        let Some((file, first, end)) = broken_blocks(&op) else {
            return Ok(());
        };
        let shrinking = match op {
            Op::Truncate { size, .. } => size < self.model[file].len() as u64,
            _ => true,
        };
        let in_way = |run: &Run| -> Vec<usize> {
            let mut v: Vec<usize> = run
                .holders
                .iter()
                .filter(|(_, h)| {
                    shrinking
                        && first < end
                        && h.pin.as_ref().is_some_and(|p| p.covers(file, first, end))
                })
                .map(|(&n, _)| n)
                .collect();
            v.sort_unstable();
            v
        };
        // Holders that answer breaks answer this one.
        let in_the_way = in_way(self);
        if !in_the_way.is_empty() && !retry {
            self.breaks += 1;
        }
        for h in in_the_way {
            if self.holders[&h]
                .pin
                .as_ref()
                .is_some_and(|p| p.release_on_break)
            {
                self.unpin(h);
            }
        }
        let hit = in_way(self);
        if !hit.is_empty() && self.cfg.policy == Policy::Wait {
            self.waiting.push(op);
            return Ok(());
        }
        if !hit.is_empty() && self.cfg.policy == Policy::Revoke {
            for h in &hit {
                if let Some(p) = self.holders.get_mut(h).and_then(|h| h.pin.as_mut()) {
                    p.in_file = false;
                }
            }
        }
        let breaker = Caller {
            pid: BREAKER_PID,
            ..root()
        };
        let ino = self.inos[file];
        let (r, name) = match op {
            Op::Truncate { size, .. } => (
                self.fs
                    .setattr(
                        ino,
                        SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                        breaker,
                    )
                    .map(|_| ()),
                "truncate",
            ),
            Op::Punch { off, len, .. } => (
                self.fs.fallocate(
                    ino,
                    off,
                    len,
                    falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
                    breaker,
                    None,
                ),
                "punch",
            ),
            Op::Zero { off, len, .. } => (
                self.fs
                    .fallocate(ino, off, len, falloc::ZERO_RANGE, breaker, None),
                "zero range",
            ),
            _ => return Ok(()),
        };
        let refused = !hit.is_empty() && self.cfg.policy == Policy::Refuse;
        let m = &mut self.model[file];
        match (op, r) {
            (_, Err(e)) if refused && e.errno() == libc::ETXTBSY => Ok(()),
            (_, Ok(())) if refused => Err(format!(
                "{name} succeeded although holders {hit:?} ignore the break and the policy is refuse"
            )),
            (_, Ok(())) => {
                apply(m, &op);
                Ok(())
            }
            // A zero range that finds no blocks changes nothing.
            (Op::Zero { .. }, Err(e)) if e.errno() == libc::ENOSPC => Ok(()),
            (_, Err(e)) => Err(format!("{name}: {e}")),
        }
    }

    /// Runs the breakers set aside whose way is now clear.
    fn run_waiting(&mut self) -> Check {
        for op in std::mem::take(&mut self.waiting) {
            self.breaker(op, true)?;
        }
        Ok(())
    }

    /// An administrator fences holder `h`: its lease is revoked now, whatever the policy.
    fn fence(&mut self, h: usize) -> Check {
        let Some(holder) = self.holders.get_mut(&h) else {
            return Ok(());
        };
        let revoked = self
            .fs
            .fence(holder.id)
            .map_err(|e| format!("fence h{h}: {e}"))?;
        let live = holder.pin.as_ref().is_some_and(|p| p.in_file) as usize;
        if revoked != live {
            return Err(format!(
                "fence h{h} revoked {revoked} leases; it had {live} live"
            ));
        }
        if let Some(p) = holder.pin.as_mut() {
            p.in_file = false;
        }
        self.run_waiting()
    }

    fn unpin(&mut self, h: usize) {
        if let Some(holder) = self.holders.get_mut(&h) {
            if let Some(p) = holder.pin.take() {
                let _ = self.fs.unpin(holder.id, p.id);
            }
        }
    }

    fn pin(&mut self, h: usize, file: usize, off: u64, len: u64, release_on_break: bool) -> Check {
        self.unpin(h);
        self.run_waiting()?;
        let Some((off, len)) = pin_range(off, len, self.model[file].len() as u64) else {
            return Ok(());
        };
        let (first, end) = (off / BLOCK_SIZE, (off + len).div_ceil(BLOCK_SIZE));
        let breaking = self
            .waiting
            .iter()
            .any(|op| broken_blocks(op).is_some_and(|(f, a, b)| f == file && a < end && first < b));
        if breaking {
            return Ok(()); // EAGAIN: a breaker is waiting on this range
        }
        let caller = Caller {
            pid: HOLDER_PID + h as u32,
            ..root()
        };
        let mut reconnected = false;
        loop {
            let fs = self.fs.clone();
            let holder = self.holders.entry(h).or_insert_with(|| Holder {
                id: fs.add_holder(HolderInfo {
                    pid: HOLDER_PID + h as u32,
                    comm: format!("h{h}"),
                    uid: 0,
                    gid: 0,
                }),
                pin: None,
            });
            let req = PinRequest {
                holder: holder.id,
                ino: self.inos[file],
                offset: off,
                len,
                writable: true,
                unbreakable: false,
            };
            return match self.fs.pin(&req, caller) {
                Ok(g) => {
                    holder.pin = Some(HeldPin {
                        id: g.id,
                        generation: self.generations,
                        file,
                        extents: g.extents,
                        stores: 0,
                        release_on_break,
                        in_file: true,
                    });
                    self.generations += 1;
                    Ok(())
                }
                Err(e) if e.errno() == libc::ENOSPC => Ok(()),
                // Fenced: this session is over; a holder reconnects (its old pins go).
                Err(e) if e.errno() == libc::EPERM && !reconnected => {
                    let id = holder.id;
                    self.holders.remove(&h);
                    self.fs.holder_gone(id);
                    self.run_waiting()?;
                    reconnected = true;
                    continue;
                }
                Err(e) => Err(format!("pin: {e}")),
            };
        }
    }

    fn store(&mut self, h: usize) -> Check {
        let Some(p) = self.holders.get(&h).and_then(|x| x.pin.as_ref()) else {
            return Ok(());
        };
        if p.stores >= MAX_TAG_STORE {
            return Ok(());
        }
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        fill_tags(&mut block, p.generation, p.stores);
        for e in &p.extents {
            for k in 0..e.len / BLOCK_SIZE {
                self.fs
                    .image()
                    .write(e.image_offset + k * BLOCK_SIZE, &block);
            }
        }
        self.stores += 1;
        // Where the stored blocks are still the file's, the file now reads the tags.
        let ino = self.inos[p.file];
        let live_elsewhere = |fb: u64| {
            self.holders.iter().any(|(&o, x)| {
                o != h && x.pin.as_ref().is_some_and(|q| q.covers(p.file, fb, fb + 1))
            })
        };
        let mut reach = Vec::new();
        for e in &p.extents {
            for k in 0..e.len / BLOCK_SIZE {
                let fb = e.file_offset / BLOCK_SIZE + k;
                let still =
                    self.fs.image_block_of(ino, fb) == Some(e.image_offset / BLOCK_SIZE + k);
                if !p.in_file && still && !live_elsewhere(fb) {
                    return Err(format!(
                        "revoked holder h{h} still reaches block {fb} of {}, which no live pin keeps",
                        file_name(p.file)
                    ));
                }
                if p.in_file || still {
                    reach.push(fb);
                }
            }
        }
        let m = &mut self.model[p.file];
        for fb in reach {
            let a = ((fb * BLOCK_SIZE) as usize).min(m.len());
            let b = (((fb + 1) * BLOCK_SIZE) as usize).min(m.len());
            m[a..b].copy_from_slice(&block[..b - a]);
        }
        if let Some(p) = self.holders.get_mut(&h).and_then(|x| x.pin.as_mut()) {
            p.stores += 1;
        }
        Ok(())
    }

    fn new_file(&mut self, blocks: u64, byte: u8) -> Check {
        self.new_files += 1;
        let name = format!("new{}", self.new_files);
        let ino = self.create(&name)?;
        let want = vec![byte; (blocks * BLOCK_SIZE) as usize];
        let wrote = match self.fs.write(ino, 0, &want, root()) {
            Ok(n) => n,
            Err(e) if e.errno() == libc::ENOSPC => 0,
            Err(e) => return Err(format!("write {name}: {e}")),
        };
        let got = self
            .fs
            .read(ino, 0, want.len() as u32)
            .map_err(|e| e.to_string())?;
        let result = match got.iter().position(|&b| b != byte) {
            Some(i) if i < wrote as usize => Err(format!(
                "new file {name} byte {i} is {:#x}, not {byte:#x}{}",
                got[i],
                holder_note(&got, i)
            )),
            _ => Ok(()),
        };
        let _ = self.fs.remove(ROOT_INO, name.as_bytes(), false);
        self.fs.forget(ino, 1);
        result
    }

    /// Every file against the model, and the block accounting against the files.
    pub(crate) fn check(&self) -> Check {
        for f in 0..FILES {
            let m = &self.model[f];
            let got = self
                .fs
                .read(self.inos[f], 0, (m.len() + 1) as u32)
                .map_err(|e| e.to_string())?;
            if let Some(at) = first_difference(&got, m) {
                let seen = got.get(at).map_or("nothing".into(), |b| format!("{b:#x}"));
                let want = m.get(at).map_or("nothing".into(), |b| format!("{b:#x}"));
                return Err(format!(
                    "file {} byte {at} is {seen}, the model says {want} (size {} vs {}){}",
                    file_name(f),
                    got.len(),
                    m.len(),
                    holder_note(&got, at)
                ));
            }
        }
        self.fs.check_space().map(|_| ())
    }

    /// Every holder goes; then what waited runs; nothing may stay busy.
    fn finish(&mut self) -> Check {
        let mut gone: Vec<_> = self.holders.drain().collect();
        gone.sort_unstable_by_key(|(n, _)| *n);
        for (_, h) in gone {
            self.fs.holder_gone(h.id);
        }
        self.run_waiting()?;
        if !self.waiting.is_empty() {
            return Err(format!(
                "{} breakers still wait with no holder left",
                self.waiting.len()
            ));
        }
        self.check()?;
        let busy = self.fs.statfs().busy;
        if busy != 0 {
            return Err(format!("{busy} blocks still busy after every holder left"));
        }
        Ok(())
    }
}

/// What a holder byte at `at` of `data` tells: the tag it is part of, if whole.
fn holder_note(data: &[u8], at: usize) -> String {
    if data.get(at).is_none_or(|&b| b < HOLDER_BYTES) {
        return String::new();
    }
    let w = at & !7;
    match data.get(w..w + 8).and_then(read_tag) {
        Some((pin, store)) => {
            format!(": a holder's byte (store {store} of pin {pin}) where no live pin allows it")
        }
        None => ": a holder's byte where no live pin allows it".into(),
    }
}

/// Runs `prog` on a fresh image in `dir` and checks it.
pub fn run_serial(dir: &Path, prog: &[Step], cfg: SerialConfig) -> Result<Outcome, String> {
    let path = dir.join("fuzz.img");
    Fs::mkfs(&path, 32 << 20, true).map_err(|e| e.to_string())?;
    let leases = LeaseConfig {
        break_time: Some(Duration::from_millis(1)),
        policy: cfg.policy,
        busy_blocks: cfg.busy_blocks,
        ..LeaseConfig::default()
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
    let mut run = Run::new(fs.clone(), cfg)?;
    for (i, step) in prog.iter().enumerate() {
        // Between steps, a mount's journal flusher tick (once a second there), played in
        // program order: the blocks a step freed are checked while still pending, and are
        // free for the next step to reuse, as in a mount a second later.
        let ticked = |()| {
            fs.sync_metadata()
                .map_err(|e| format!("making the journal durable: {e}"))
        };
        if let Err(what) = run.step(step).and_then(|()| run.check()).and_then(ticked) {
            return Ok(Outcome::Failed { step: i, what });
        }
    }
    if let Err(what) = run.finish() {
        return Ok(Outcome::Failed {
            step: prog.len(),
            what,
        });
    }
    let (breaks, stores) = (run.breaks, run.stores);
    drop(run);
    fs.unmount().map_err(|e| e.to_string())?;
    drop(fs);
    let report = crate::fsck::check(&path, false).map_err(|e| e.to_string())?;
    if !report.errors.is_empty() {
        return Ok(Outcome::Failed {
            step: prog.len(),
            what: format!("fsck: {}", report.errors.join("; ")),
        });
    }
    Ok(Outcome::Clean { breaks, stores })
}

/// Shrinks a failing program: removes chunks of steps while the run still fails.
pub fn shrink(dir: &Path, prog: &[Step], cfg: SerialConfig) -> Vec<Step> {
    let fails = |p: &[Step]| matches!(run_serial(dir, p, cfg), Ok(Outcome::Failed { .. }));
    let mut cur: Vec<Step> = prog.to_vec();
    if let Ok(Outcome::Failed { step, .. }) = run_serial(dir, &cur, cfg) {
        cur.truncate(step + 1);
    }
    drop_chunks(cur, fails)
}

/// Removes chunks of `prog` (halves, quarters, ... single steps) while `fails` still says
/// the shorter program fails: the shrinking loop of the serial fuzzer and the crash
/// explorer.
pub(crate) fn drop_chunks<T: Clone>(
    mut cur: Vec<T>,
    mut fails: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
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

/// What the serial command runs.
#[derive(Debug, Clone, Copy)]
pub struct SerialRuns {
    /// The first seed; run k uses `seed + k`.
    pub seed: u64,
    /// Steps per program.
    pub ops: usize,
    /// Programs.
    pub runs: u64,
    /// The programs' shape.
    pub shape: Shape,
}

/// The command line that replays the serial run of `seed` (one program of `ops` steps).
pub fn replay_command(seed: u64, ops: usize, shape: Shape, cfg: SerialConfig) -> String {
    format!(
        "pinfs fuzz --serial --seed {seed} --ops {ops} --runs 1 --threads {} --holders {} -o break_policy={},busy_blocks={}",
        shape.workers,
        shape.holders,
        cfg.policy.name(),
        if cfg.busy_blocks { "on" } else { "off" }
    )
}

/// Runs `runs` serial programs from seeds `seed`, `seed + 1`, ...; prints a report. Returns
/// whether the outcome is the expected one: every run clean, or with `busy_blocks=off`, the
/// oracle catching the corruption.
pub fn serial_command(what: SerialRuns, cfg: SerialConfig) -> Result<bool, String> {
    let dir = tempfile::Builder::new()
        .prefix("pinfs-fuzz")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let t0 = std::time::Instant::now();
    let (mut total_ops, mut total_breaks) = (0u64, 0u64);
    for run in 0..what.runs {
        let s = what.seed.wrapping_add(run);
        let prog = program(s, what.shape, what.ops);
        match run_serial(dir.path(), &prog, cfg)? {
            Outcome::Clean { breaks, .. } => {
                total_ops += prog.len() as u64;
                total_breaks += breaks;
            }
            Outcome::Failed { step, what: msg } => {
                let small = shrink(dir.path(), &prog, cfg);
                let expected = !cfg.busy_blocks;
                crate::outln!(
                    "{}: seed {s}, step {step}: {msg}",
                    if expected {
                        "oracle fired (expected with busy_blocks=off)"
                    } else {
                        "FAILED"
                    }
                );
                crate::outln!("program around the failure:");
                for (i, st) in prog.iter().enumerate().skip(step.saturating_sub(5)).take(6) {
                    crate::outln!("  {i:4}: {:?} {:?}", st.actor, st.op);
                }
                crate::outln!("shrunk to {} steps:", small.len());
                for (i, st) in small.iter().enumerate() {
                    crate::outln!("  {i:4}: {:?} {:?}", st.actor, st.op);
                }
                crate::outln!("replay: {}", replay_command(s, what.ops, what.shape, cfg));
                return Ok(expected);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    crate::outln!(
        "{} programs, {total_ops} steps, {total_breaks} breaks in {secs:.1} s ({:.0} steps/s, {:.0} breaks/s): all checks held (break_policy={}, busy_blocks={})",
        what.runs,
        total_ops as f64 / secs,
        total_breaks as f64 / secs,
        cfg.policy.name(),
        if cfg.busy_blocks { "on" } else { "off" }
    );
    if !cfg.busy_blocks {
        crate::outln!(
            "busy_blocks=off, yet the oracle never fired: it may be unable to see the corruption"
        );
        return Ok(false);
    }
    Ok(true)
}

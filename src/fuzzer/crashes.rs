//! The crash-state explorer (`pinfs crashes`): power cuts against the filesystem core, in
//! the manner of Chipmunk and Vinter for persistent-memory filesystems.
//!
//! Lifecycle of one program:
//! 1. A fresh small image is opened with a volatile cache ([`FsOptions::volatile_cache`]):
//!    the mapping is the CPU cache, the image file receives only persistence points. The
//!    serial fuzzer's files are made ([`crate::fuzzer::serial`]'s run) and fsync'd: the
//!    baseline, durable as a whole.
//! 2. A persistence hook ([`Image::set_persist_hook`]) is installed. At the start of every
//!    persistence point, before any byte of it reaches the file, it records the durable state
//!    D (the image file's bytes now) and the unflushed stores U (the 64-byte lines where the
//!    cache differs from the file). That is a read and a compare of the whole image twice per
//!    point (about 2-4 ms for 8 MiB): the reason the image is small.
//! 3. The program runs step by step: the serial fuzzer's steps (writes, mmap stores,
//!    truncates, punches, zero ranges, new files: the same generator and the same execution,
//!    checked against the same model), mixed with `fsync`s, renames of a file to its other
//!    name and back, and journal flusher ticks. After each step the model's file contents
//!    are added to each file's history, and the points the step met are explored: from each,
//!    the crash states D, D + U, and (up to `--states-per-point` in all) D plus one random
//!    line of U or plus a random subset of U. A power cut may keep any subset of the
//!    unflushed lines, in any order; these are the bounded sample.
//! 4. Each crash state is written to a temporary image, checked by fsck (no repair), opened
//!    ([`Fs::open`]: checkpoint load and journal replay), and judged by the rules below.
//! 5. After the last step, the cut at the end (D and the cache's lines) is explored too.
//!
//! The rules, each what POSIX or pinfs promises. pinfs journals metadata: each metadata
//! change is one transaction, the journal replays its valid prefix, so the metadata a crash
//! leaves is that of some point of the program, never half an operation. `fsync` (and every
//! journal flush: `fsync`, the flusher's tick) makes the whole journal durable; `fsync` of a
//! file makes its written ranges durable. Data written without `fsync` is not promised: a
//! crash may show any mix of 64-byte lines of what the file held since its last `fsync`.
//! But pinfs orders data before the metadata that exposes it (an extension's bytes and new
//! blocks are durable before the journal entry that sets the size or maps them), so a crash
//! never shows a size without its data: every byte it shows is one a version of the file
//! held at that offset, within that version's size.
//! - (a) fsck finds the state clean, and it mounts.
//! - (b) A file fsync'd and not changed since (the step in flight counts as a change) holds
//!   exactly what it held at the fsync: content and size.
//! - (c) No file shows a state that never existed: each tracked file is under exactly one of
//!   its two names (a rename is atomic: both names or none is a rename half-done), and under
//!   one it had since the last journal flush; its size is one it had since the last journal
//!   flush; every byte is what some version of the file since its last `fsync` held at that
//!   offset, within that version's size (no zeros where the data did not reach the image:
//!   a size without its data); no name appears that never existed; a new file holds only
//!   its own byte or zeros (its holes).
//!
//! A failure names the seed, the step, the persistence point, the subset of lines and the
//! rule, and is shrunk to a short program (steps removed while it still fails), with the
//! command that replays it. At the end: crash states checked, in all and per second.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fs::{Fs, FsOptions, ShutdownFlush};
use crate::fuzzer::serial::{Run, SerialConfig};
use crate::fuzzer::{file_name, program, Op, Rng, Shape, Step, FILES};
use crate::lease::{LeaseConfig, Policy};
use crate::meta::inode::ROOT_INO;
use crate::store::image::{Image, BLOCK_SIZE};

/// Bytes per cache line: the grain at which unflushed stores survive a power cut.
pub const LINE: usize = 64;

/// One step of an explorer program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashStep {
    /// A serial fuzzer step.
    Fuzz(Step),
    /// `fsync` of file `f`.
    Fsync(usize),
    /// File `f` is renamed to its other name.
    Rename(usize),
    /// The journal flusher's tick: the journal is made durable.
    Tick,
}

/// The explorer's program of `seed`: `ops` steps, the serial fuzzer's (one worker, no
/// holders) mixed with fsyncs, renames and ticks.
pub fn crash_program(seed: u64, ops: usize) -> Vec<CrashStep> {
    let shape = Shape {
        workers: 1,
        holders: 0,
    };
    let mut fuzz = program(seed, shape, ops).into_iter();
    let mut r = Rng::new(seed ^ 0xc4a5_11ed_5eed_0001);
    (0..ops)
        .map(|_| {
            let f = r.below(FILES as u64) as usize;
            match r.below(100) {
                0..=14 => CrashStep::Fsync(f),
                15..=24 => CrashStep::Rename(f),
                25..=34 => CrashStep::Tick,
                _ => CrashStep::Fuzz(fuzz.next().expect("programs are endless")),
            }
        })
        .collect()
}

/// The explorer's settings.
#[derive(Debug, Clone, Copy)]
pub struct CrashConfig {
    /// Crash states per persistence point (at least 1: the durable state alone).
    pub states_per_point: usize,
    /// The image's size in bytes.
    pub image_bytes: u64,
}

/// What a persistence point showed.
struct Snapshot {
    /// The image file's bytes.
    durable: Arc<Vec<u8>>,
    /// The lines where the cache differs: offset and the cache's bytes.
    lines: Arc<Vec<(u64, [u8; LINE])>>,
}

/// A crash state that broke a rule (or a step of the program that failed outright).
#[derive(Debug, Clone)]
pub struct Broken {
    /// The step in flight (or just done) at the point.
    pub step: usize,
    /// The persistence point (counted from 1 over the program; 0: the step itself failed).
    pub point: u64,
    /// Unflushed lines at that point.
    pub unflushed: usize,
    /// The lines of the subset (image offsets).
    pub subset: Vec<u64>,
    /// The rule broken, and how.
    pub rule: String,
}

/// What an exploration did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Explored {
    /// Persistence points met (with a state not met before).
    pub points: u64,
    /// Crash states checked.
    pub states: u64,
    /// Steps run.
    pub steps: u64,
}

/// The history of one tracked file.
struct History {
    /// Its contents after each step that changed them, oldest first (since the baseline).
    versions: Vec<Vec<u8>>,
    /// The first version since the file's last fsync.
    data_start: usize,
    /// The first version since the last journal flush.
    meta_start: usize,
    /// The version fsync'd, while the file has not changed since.
    intact: Option<usize>,
    /// Its names, oldest first; `moved` says which of the two it has now.
    names: Vec<bool>,
    /// The first name since the last journal flush.
    name_start: usize,
}

fn name_of(f: usize, moved: bool) -> String {
    if moved {
        format!("{}.moved", file_name(f))
    } else {
        file_name(f)
    }
}

/// One exploration of a program.
struct Explorer<'a> {
    dir: &'a Path,
    cfg: CrashConfig,
    seed: u64,
    files: Vec<History>,
    /// New files made so far: (name, byte, blocks).
    new_files: Vec<(String, u8, u64)>,
    prev: Option<Snapshot>,
    done: Explored,
}

/// The hook's snapshot of `image` (D, and U against the cache).
fn snapshot(image: &Image) -> Result<Snapshot, String> {
    let n = image.len() as usize;
    let mut durable = vec![0u8; n];
    match image.read_durable(0, &mut durable) {
        Ok(true) => {}
        Ok(false) => return Err("the image has no volatile cache".into()),
        Err(e) => return Err(format!("reading the image file: {e}")),
    }
    let mut cache = vec![0u8; n];
    image.read(0, &mut cache);
    let lines = durable
        .chunks_exact(LINE)
        .zip(cache.chunks_exact(LINE))
        .enumerate()
        .filter(|(_, (d, c))| d != c)
        .map(|(i, (_, c))| {
            let mut l = [0u8; LINE];
            l.copy_from_slice(c);
            ((i * LINE) as u64, l)
        })
        .collect();
    Ok(Snapshot {
        durable: Arc::new(durable),
        lines: Arc::new(lines),
    })
}

impl Explorer<'_> {
    /// Explores the points `rx` holds, met during (or before) step `step`.
    fn points(
        &mut self,
        rx: &Receiver<Result<Snapshot, String>>,
        step: usize,
    ) -> Result<(), Broken> {
        while let Ok(snap) = rx.try_recv() {
            let snap = snap.map_err(|rule| Broken {
                step,
                point: self.done.points,
                unflushed: 0,
                subset: Vec::new(),
                rule,
            })?;
            self.point(snap, step)?;
        }
        Ok(())
    }

    fn point(&mut self, snap: Snapshot, step: usize) -> Result<(), Broken> {
        if let Some(p) = &self.prev {
            if p.durable == snap.durable && p.lines == snap.lines {
                return Ok(());
            }
        }
        self.done.points += 1;
        let point = self.done.points;
        let n = snap.lines.len();
        let mut rng = Rng::new(self.seed.wrapping_mul(0x100_0000_01b3) ^ point);
        let mut subsets: Vec<Vec<usize>> = vec![Vec::new()];
        if n > 0 && self.cfg.states_per_point > 1 {
            subsets.push((0..n).collect());
        }
        let mut tries = 0;
        while subsets.len() < self.cfg.states_per_point
            && n > 1
            && tries < 4 * self.cfg.states_per_point
        {
            tries += 1;
            let s: Vec<usize> = if tries % 2 == 1 {
                vec![rng.below(n as u64) as usize]
            } else {
                (0..n).filter(|_| rng.below(2) == 0).collect()
            };
            if !subsets.contains(&s) {
                subsets.push(s);
            }
        }
        for s in subsets {
            let rule = self.judge(&snap, &s);
            self.done.states += 1;
            if let Err(rule) = rule {
                return Err(Broken {
                    step,
                    point,
                    unflushed: n,
                    subset: s.iter().map(|&i| snap.lines[i].0).collect(),
                    rule,
                });
            }
        }
        self.prev = Some(snap);
        Ok(())
    }

    /// Writes the crash state D + `subset` into a temporary image and judges it.
    fn judge(&self, snap: &Snapshot, subset: &[usize]) -> Result<(), String> {
        let path = self.dir.join("crash.img");
        let mut state = (*snap.durable).clone();
        for &i in subset {
            let (off, bytes) = &snap.lines[i];
            state[*off as usize..*off as usize + LINE].copy_from_slice(bytes);
        }
        write_sparse(&path, &state).map_err(|e| format!("writing the crash state: {e}"))?;
        drop(state);
        // (a) fsck, as `pinfs fsck` checks (no repair).
        let report =
            crate::fsck::check(&path, false).map_err(|e| format!("(a) fsck cannot check: {e}"))?;
        if !report.errors.is_empty() {
            return Err(format!("(a) fsck: {}", report.errors.join("; ")));
        }
        let fs = Fs::open(
            &path,
            FsOptions {
                lock_wait: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .map_err(|e| format!("(a) the crash state does not mount: {e}"))?;
        let r = self.judge_files(&fs);
        drop(fs);
        r
    }

    fn judge_files(&self, fs: &Fs) -> Result<(), String> {
        let listing = fs
            .readdir(ROOT_INO, 0, 100_000)
            .map_err(|e| format!("(a) listing the root: {e}"))?;
        let names: Vec<(String, u64)> = listing
            .into_iter()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.ino))
            .filter(|(n, _)| n != "." && n != "..")
            .collect();
        let read = |ino: u64| -> Result<Vec<u8>, String> {
            let size = fs.getattr(ino).map_err(|e| format!("getattr: {e}"))?.size;
            fs.read(ino, 0, size as u32 + 1)
                .map_err(|e| format!("read: {e}"))
        };
        for (name, ino) in &names {
            let tracked =
                (0..FILES).any(|f| *name == name_of(f, false) || *name == name_of(f, true));
            if tracked {
                continue;
            }
            let Some((_, byte, blocks)) = self.new_files.iter().find(|(n, _, _)| n == name) else {
                return Err(format!("(c) a name that never existed: {name:?}"));
            };
            let got = read(*ino).map_err(|e| format!("(a) {name}: {e}"))?;
            if got.len() as u64 > blocks * BLOCK_SIZE {
                return Err(format!(
                    "(c) new file {name} has {} bytes; it never had more than {}",
                    got.len(),
                    blocks * BLOCK_SIZE
                ));
            }
            if let Some(i) = got.iter().position(|b| b != byte && *b != 0) {
                return Err(format!(
                    "(c) new file {name} byte {i} is {:#x}; it only ever held {byte:#x} (or zeros past its end)",
                    got[i]
                ));
            }
        }
        for (f, h) in self.files.iter().enumerate() {
            let here: Vec<(bool, u64)> = [false, true]
                .into_iter()
                .filter_map(|m| {
                    let n = name_of(f, m);
                    names
                        .iter()
                        .find(|(x, _)| *x == n)
                        .map(|(_, ino)| (m, *ino))
                })
                .collect();
            let (moved, ino) = match here[..] {
                [one] => one,
                [] => {
                    return Err(format!(
                        "(c) file {f} is under neither {} nor {} (its entry was durable from the baseline fsync on, and a rename is atomic)",
                        name_of(f, false),
                        name_of(f, true)
                    ))
                }
                _ => {
                    return Err(format!(
                        "(c) rename half-done: file {f} is under both {} and {}",
                        name_of(f, false),
                        name_of(f, true)
                    ))
                }
            };
            let name = name_of(f, moved);
            if !h.names[h.name_start..].contains(&moved) {
                return Err(format!(
                    "(c) file {f} is named {name}, a name it did not have since the last journal flush"
                ));
            }
            let got = read(ino).map_err(|e| format!("(a) {name}: {e}"))?;
            if let Some(v) = h.intact {
                let want = &h.versions[v];
                if let Some(at) = crate::fuzzer::first_difference(&got, want) {
                    return Err(format!(
                        "(b) {name} was fsync'd and not changed since, yet byte {at} is {}, not {} (size {} vs {})",
                        show(got.get(at)),
                        show(want.get(at)),
                        got.len(),
                        want.len()
                    ));
                }
                continue;
            }
            let sizes: BTreeSet<usize> =
                h.versions[h.meta_start..].iter().map(|v| v.len()).collect();
            if !sizes.contains(&got.len()) {
                return Err(format!(
                    "(c) {name} has size {}, never its size since the last journal flush ({sizes:?})",
                    got.len()
                ));
            }
            let window = &h.versions[h.data_start..];
            for (i, &b) in got.iter().enumerate() {
                let held = window.iter().rev().any(|v| v.get(i) == Some(&b));
                if !held {
                    let was: BTreeSet<String> = window.iter().map(|v| show(v.get(i))).collect();
                    return Err(format!(
                        "(c) {name} byte {i} is {:#x} (size {}), a value it never held there since its last fsync (it held {was:?})",
                        b,
                        got.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// After step `step` ran: the files' new versions, names and new files.
    fn record(&mut self, run: &Run, st: &CrashStep) {
        for (f, h) in self.files.iter_mut().enumerate() {
            if h.versions.last() != Some(&run.model[f]) {
                h.versions.push(run.model[f].clone());
                h.intact = None;
            }
        }
        match *st {
            CrashStep::Rename(f) => {
                let h = &mut self.files[f];
                let now = !*h.names.last().expect("a name");
                h.names.push(now);
            }
            CrashStep::Fuzz(Step {
                op: Op::NewFile { blocks, byte },
                ..
            }) => {
                let name = format!("new{}", self.new_files.len() + 1);
                self.new_files.push((name, byte, blocks));
            }
            _ => {}
        }
    }

    /// After a step that made things durable: moves the windows.
    fn durable(&mut self, st: &CrashStep) {
        if let CrashStep::Fsync(f) = *st {
            let h = &mut self.files[f];
            h.data_start = h.versions.len() - 1;
            h.intact = Some(h.data_start);
        }
        if matches!(st, CrashStep::Fsync(_) | CrashStep::Tick) {
            for h in &mut self.files {
                h.meta_start = h.versions.len() - 1;
                h.name_start = h.names.len() - 1;
            }
        }
    }
}

fn show(b: Option<&u8>) -> String {
    b.map_or("nothing".into(), |b| format!("{b:#x}"))
}

/// Writes `data` into a new file at `path`, leaving its zero blocks holes.
fn write_sparse(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let f = File::create(path)?;
    f.set_len(data.len() as u64)?;
    for (i, b) in data.chunks(BLOCK_SIZE as usize).enumerate() {
        if b.iter().any(|&x| x != 0) {
            f.write_all_at(b, i as u64 * BLOCK_SIZE)?;
        }
    }
    Ok(())
}

/// Explores the crash states of `prog` (from `seed`, which also draws the subsets) on a
/// fresh image in `dir`. `Err` when the explorer itself could not run.
pub fn explore(
    dir: &Path,
    seed: u64,
    prog: &[CrashStep],
    cfg: CrashConfig,
) -> Result<(Explored, Option<Broken>), String> {
    let path = dir.join("live.img");
    Fs::mkfs(&path, cfg.image_bytes, true).map_err(|e| e.to_string())?;
    let serial = SerialConfig {
        policy: Policy::Revoke,
        busy_blocks: true,
    };
    let fs = Arc::new(
        Fs::open(
            &path,
            FsOptions {
                leases: LeaseConfig {
                    break_time: Some(Duration::from_millis(1)),
                    ..LeaseConfig::default()
                },
                lock_wait: Duration::from_secs(5),
                volatile_cache: true,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let mut run = Run::new(fs.clone(), serial)?;
    // The baseline: every file durable.
    for f in 0..FILES {
        fs.fsync(run.inos[f], false)
            .map_err(|e| format!("baseline fsync: {e}"))?;
    }
    let (tx, rx) = channel();
    if !fs.image().set_persist_hook(Box::new(move |image: &Image| {
        let _ = tx.send(snapshot(image));
    })) {
        return Err("the image has a persistence hook already".into());
    }
    let mut ex = Explorer {
        dir,
        cfg,
        seed,
        files: (0..FILES)
            .map(|f| History {
                versions: vec![run.model[f].clone()],
                data_start: 0,
                meta_start: 0,
                intact: Some(0),
                names: vec![false],
                name_start: 0,
            })
            .collect(),
        new_files: Vec::new(),
        prev: None,
        done: Explored::default(),
    };
    let mut broken = None;
    for (k, st) in prog.iter().enumerate() {
        let r = match *st {
            CrashStep::Fuzz(s) => run.step(&s).and_then(|()| run.check()),
            CrashStep::Fsync(f) => fs
                .fsync(run.inos[f], false)
                .map_err(|e| format!("fsync {}: {e}", file_name(f))),
            CrashStep::Rename(f) => {
                let moved = *ex.files[f].names.last().expect("a name");
                fs.rename(
                    ROOT_INO,
                    name_of(f, moved).as_bytes(),
                    ROOT_INO,
                    name_of(f, !moved).as_bytes(),
                    0,
                )
                .map_err(|e| format!("rename {}: {e}", name_of(f, moved)))
            }
            CrashStep::Tick => fs
                .sync_metadata()
                .map_err(|e| format!("journal flush: {e}")),
        };
        ex.done.steps += 1;
        if let Err(rule) = r {
            broken = Some(Broken {
                step: k,
                point: 0,
                unflushed: 0,
                subset: Vec::new(),
                rule: format!("the step itself failed: {rule}"),
            });
            break;
        }
        ex.record(&run, st);
        if let Err(b) = ex.points(&rx, k) {
            broken = Some(b);
            break;
        }
        ex.durable(st);
    }
    if broken.is_none() {
        // The cut at the end: whatever the cache holds that never was flushed.
        let end = snapshot(fs.image()).and_then(|s| {
            ex.point(s, prog.len()).map_err(|b| {
                broken = Some(b);
                String::new()
            })
        });
        if let Err(e) = end {
            if broken.is_none() {
                return Err(e);
            }
        }
    }
    drop(run);
    let _ = fs.shutdown(ShutdownFlush::Nothing);
    let _ = fs.unmount();
    let _ = std::fs::remove_file(dir.join("crash.img"));
    Ok((ex.done, broken))
}

/// Shrinks a failing program: removes chunks of steps while some crash state of it still
/// breaks a rule (at most `budget` explorations).
pub fn shrink(
    dir: &Path,
    seed: u64,
    prog: &[CrashStep],
    cfg: CrashConfig,
    mut budget: u32,
) -> Vec<CrashStep> {
    let fails = |p: &[CrashStep]| {
        if budget == 0 {
            return false;
        }
        budget -= 1;
        matches!(explore(dir, seed, p, cfg), Ok((_, Some(_))))
    };
    let mut cur: Vec<CrashStep> = prog.to_vec();
    if let Ok((_, Some(b))) = explore(dir, seed, &cur, cfg) {
        cur.truncate(b.step + 1);
    }
    crate::fuzzer::serial::drop_chunks(cur, fails)
}

/// What `pinfs crashes` runs.
#[derive(Debug, Clone, Copy)]
pub struct CrashRuns {
    /// The first seed; program k uses `seed + k`.
    pub seed: u64,
    /// Steps per program.
    pub ops: usize,
    /// Programs.
    pub programs: u64,
    /// The explorer's settings.
    pub cfg: CrashConfig,
}

/// The command line that replays program `seed`.
pub fn replay_command(seed: u64, ops: usize, cfg: CrashConfig) -> String {
    format!(
        "pinfs crashes --seed {seed} --ops {ops} --programs 1 --states-per-point {} --image-size {}",
        cfg.states_per_point,
        cfg.image_bytes
    )
}

/// Explores `programs` programs from seeds `seed`, `seed + 1`, ...; prints a report. Returns
/// whether every crash state kept every rule.
pub fn crashes_command(what: CrashRuns) -> Result<bool, String> {
    // The images live in memory where the host has a memory filesystem: a persistence
    // point's fdatasync is then free (what is durable is the image file's bytes, not where
    // the host keeps them). TMPDIR, when set, wins.
    let mut b = tempfile::Builder::new();
    b.prefix("pinfs-crashes");
    let shm = Path::new("/dev/shm");
    let dir = if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        b.tempdir_in(shm)
    } else {
        b.tempdir()
    }
    .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut total = Explored::default();
    for k in 0..what.programs {
        let s = what.seed.wrapping_add(k);
        let prog = crash_program(s, what.ops);
        let (done, broken) = explore(dir.path(), s, &prog, what.cfg)?;
        total.points += done.points;
        total.states += done.states;
        total.steps += done.steps;
        if let Some(b) = broken {
            let secs = t0.elapsed().as_secs_f64();
            crate::outln!(
                "FAILED: seed {s}, step {} ({}), persistence point {} ({} unflushed lines), subset of {} lines {}: {}",
                b.step,
                prog.get(b.step).map_or("the cut at the end".into(), |st| format!("{st:?}")),
                b.point,
                b.unflushed,
                b.subset.len(),
                show_subset(&b.subset),
                b.rule
            );
            crate::outln!(
                "{} crash states checked before it ({} programs, {:.0} states/s)",
                total.states,
                k + 1,
                total.states as f64 / secs
            );
            let small = shrink(dir.path(), s, &prog, what.cfg, 300);
            crate::outln!("shrunk to {} steps:", small.len());
            for (i, st) in small.iter().enumerate() {
                crate::outln!("  {i:4}: {st:?}");
            }
            if let Ok((_, Some(b))) = explore(dir.path(), s, &small, what.cfg) {
                crate::outln!(
                    "  which fails at step {}, point {}, subset {}: {}",
                    b.step,
                    b.point,
                    show_subset(&b.subset),
                    b.rule
                );
            }
            crate::outln!("replay: {}", replay_command(s, what.ops, what.cfg));
            return Ok(false);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    crate::outln!(
        "{} programs, {} steps, {} persistence points, {} crash states checked in {secs:.1} s ({:.0} states/s): every rule held",
        what.programs,
        total.steps,
        total.points,
        total.states,
        total.states as f64 / secs
    );
    Ok(true)
}

fn show_subset(s: &[u64]) -> String {
    let shown: Vec<String> = s.iter().take(8).map(|o| format!("{o:#x}")).collect();
    format!(
        "[{}{}]",
        shown.join(", "),
        if s.len() > 8 { ", ..." } else { "" }
    )
}

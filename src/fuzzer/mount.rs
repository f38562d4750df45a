//! The fuzzer's concurrent mode: a program ([`crate::fuzzer`]) run on a real pinfs mount, each
//! actor taking its own steps in program order: workers as threads of this process, holders
//! as processes of their own ([`crate::fuzzer::holder`]).
//!
//! - Workers write, store through shared mappings and truncate the *plain* files; write,
//!   truncate, punch and zero the *pinned* files (the breakers); and make new files that
//!   take freed space, read back at once; now and then a worker fences a holder, as an
//!   administrator would. Workers' steps on each file are serialised here,
//!   so that a model of every file says what each of its bytes must be.
//! - Holders pin, store tags into their blocks, answer or ignore breaks, unpin and die
//!   (really: `SIGKILL`; a new process takes over the holder's remaining steps).
//!
//! Every pin, store and release the holders report, and every breaker that returned, goes
//! into the [`Ledger`], whose oracles are checked continuously and at the end:
//! - after every worker's step its file matches its model, except, in a pinned file, bytes
//!   a holder stored; a new file reads back what was written. So no holder byte ever
//!   reaches a file no holder pinned, and the filesystem did what the operations said;
//! - in a pinned file every whole tag belongs to a pin of that file, lies in that pin's range,
//!   and comes from a store that began before any breaker of the pin's range returned, unless
//!   another lease of that block, not yet certainly gone, still kept it in the file (see
//!   [`Ledger`]); every other holder byte lies in a block some pin of that file covered;
//! - the daemon's block accounting holds (checked live every half second: free + used +
//!   busy = total, no block mapped twice, none mapped and free or busy);
//! - after all holders are gone no block is busy (on a mount of the user's, none for a
//!   holder of the run); the unmounted image checks clean (on a fresh mount).
//!
//! With `busy_blocks=off` the oracles are expected to fire, and the fuzzer says so.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sync::{Mutex, MutexGuard, Rank};
use std::time::{Duration, Instant};

use crate::fs::status::Status;
use crate::fuzzer::holder::HolderRun;
use crate::fuzzer::ledger::{now_ns, Entry, Ledger};
use crate::fuzzer::{
    apply, broken_blocks, file_name, first_difference, initial_content, is_pinned, mmap_range,
    Actor, Op, Program, Shape, FILES, HOLDER_BYTES,
};
use crate::holder::client::Connection;
use crate::store::image::BLOCK_SIZE;
use crate::trace::watch::Mark;

/// Settings of a concurrent run.
#[derive(Debug, Clone)]
pub struct MountFuzz {
    /// The seed (thread timing still varies).
    pub seed: u64,
    /// How long.
    pub duration: Duration,
    /// Holders.
    pub holders: usize,
    /// Worker threads.
    pub threads: usize,
    /// Mount options (policy, break time, busy blocks).
    pub options: String,
    /// Run only the program's first this many steps.
    pub max_ops: Option<u64>,
    /// Run on this existing pinfs mount (in a directory of its own) instead of a fresh
    /// image; then the mount's options apply, and fsck and the final busy-block check are
    /// left to its owner.
    pub mount: Option<PathBuf>,
    /// Write the mount's lease events, its busy blocks and the breakers' steps to this file
    /// as a trace ([`crate::trace`]).
    pub trace: Option<PathBuf>,
}

impl MountFuzz {
    /// The shape of the program this run runs.
    pub fn shape(&self) -> Shape {
        Shape {
            workers: self.threads.max(1),
            holders: self.holders,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Steps done by all actors.
    pub ops: u64,
    /// One past the furthest program step any actor reached: the serial mode runs this many
    /// steps of the same program.
    pub reached: u64,
    /// Leases broken (from the daemon's counters).
    pub breaks: u64,
    /// Leases revoked (from the daemon's counters).
    pub revocations: u64,
    /// Pins granted.
    pub pins: u64,
    /// Breakers that returned success on whole blocks of the pinned files.
    pub breakers: u64,
    /// Holder stores.
    pub stores: u64,
    /// Oracle violations.
    pub violations: Vec<String>,
    /// The last steps before the end (or the first violation), oldest first.
    pub recent: Vec<String>,
    /// The termination signal that stopped the run early, if one did.
    pub interrupted: Option<i32>,
}

/// What the actors of a run share. Lock order ([`crate::sync`]): a file's model, then the
/// ledger; the log, the violations and the holders' stdin are leaves.
struct Shared {
    dir: PathBuf,
    seed: u64,
    shape: Shape,
    end: Instant,
    until_ns: u64,
    max_ops: Option<u64>,
    stop: AtomicBool,
    ops: AtomicU64,
    reached: AtomicU64,
    violations: Mutex<Vec<String>>,
    /// The most recent steps, for the report of a failure.
    log: Mutex<VecDeque<String>>,
    /// Each file's model (and the lock that serialises workers' steps on it).
    models: Vec<Mutex<Vec<u8>>>,
    ledger: Mutex<Ledger>,
    /// The standard input of each live holder process: closing it tells the holder to stop.
    holder_stdin: Mutex<HashMap<usize, ChildStdin>>,
    /// The termination signal that stopped the run early (0: none).
    interrupted: AtomicI32,
    /// With `--trace`: where breakers and fences report to the trace's thread (a send is
    /// all a step pays).
    marks: Option<std::sync::mpsc::Sender<Mark>>,
}

#[track_caller]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn path(&self, f: usize) -> PathBuf {
        self.dir.join(file_name(f))
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && Instant::now() < self.end
    }

    /// A program step began.
    fn step(&self, index: u64, what: String) {
        self.reached.fetch_max(index + 1, Ordering::Relaxed);
        self.ops.fetch_add(1, Ordering::Relaxed);
        let mut log = lock(&self.log);
        if log.len() == 40 {
            log.pop_front();
        }
        log.push_back(format!("{index}: {what}"));
    }

    /// A termination signal came: stop every actor; the run ends as usual (checks, unmount,
    /// fsck, report).
    fn interrupt(&self, sig: i32) {
        self.interrupted.store(sig, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.holder_stdin).clear();
    }

    /// An instant for the trace, if there is one.
    fn mark(&self, track: &str, name: &str, args: crate::trace::Args) {
        if let Some(tx) = &self.marks {
            let _ = tx.send(Mark {
                track: crate::trace::Track::Actor(track.into()),
                name: name.into(),
                at: crate::trace::now_micros(),
                args,
            });
        }
    }

    fn violation(&self, what: String) {
        let mut v = lock(&self.violations);
        if v.len() < 20 && !v.contains(&what) {
            v.push(what);
        }
        drop(v);
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.holder_stdin).clear();
    }

    /// The oracles on the pinned files' contents now, and on tags that waited for their
    /// stores' reports (`last`: every holder has exited, none will come).
    fn check_pinned(&self, last: bool) {
        for f in (0..FILES).filter(|&f| is_pinned(f)) {
            let Ok(data) = std::fs::read(self.path(f)) else {
                continue;
            };
            if let Err(v) = lock(&self.ledger).check(Some(f), &file_name(f), &data) {
                self.violation(v);
                return;
            }
        }
        if let Err(v) = lock(&self.ledger).check_pending(last) {
            self.violation(v);
        }
    }
}

fn open(path: &Path) -> Option<File> {
    OpenOptions::new().read(true).write(true).open(path).ok()
}

/// A worker's step on one of the program's files, checked against the file's model: steps
/// on a file are serialised here, so the model knows what every byte must be, except where a
/// holder stored (only in a pinned file: those bytes are the ledger's to judge). A breaker
/// that returned success goes into the ledger.
fn file_step(sh: &Shared, op: Op) {
    let Some(file) = op.file() else { return };
    let mut model = lock(&sh.models[file]);
    let Some(f) = open(&sh.path(file)) else {
        sh.violation(format!("{}: cannot open it", file_name(file)));
        return;
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let started = now_ns();
    // What the step did, as the model applies it; or the errno it failed with.
    let effect: Result<Op, i32> = match op {
        Op::Write {
            file,
            off,
            len,
            byte,
        } => f
            .write_at(&vec![byte; len as usize], off)
            .map(|n| Op::Write {
                file,
                off,
                len: n as u64,
                byte,
            })
            .map_err(|e| e.raw_os_error().unwrap_or(0)),
        Op::MmapStore {
            file,
            off,
            len,
            byte,
        } => match mmap_range(off, len, model.len() as u64) {
            None => return,
            Some((off, len)) => {
                // SAFETY: a shared mapping of `len` bytes at a page-aligned offset inside the
                // file (its size is the model's: only this thread changes it now), written
                // within its bounds, synced and unmapped here; no reference outlives it.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        len as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd,
                        off as i64,
                    );
                    if p == libc::MAP_FAILED {
                        Err(errno())
                    } else {
                        std::ptr::write_bytes(p as *mut u8, byte, len as usize);
                        libc::msync(p, len as usize, libc::MS_SYNC);
                        libc::munmap(p, len as usize);
                        Ok(Op::MmapStore {
                            file,
                            off,
                            len,
                            byte,
                        })
                    }
                }
            }
        },
        Op::Truncate { size, .. } => f
            .set_len(size)
            .map(|()| op)
            .map_err(|e| e.raw_os_error().unwrap_or(0)),
        Op::Punch { off, len, .. } | Op::Zero { off, len, .. } => {
            use rustix::fs::FallocateFlags;
            let mode = match op {
                Op::Punch { .. } => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                _ => FallocateFlags::ZERO_RANGE,
            };
            rustix::fs::fallocate(&f, mode, off, len)
                .map(|()| op)
                .map_err(|e| e.raw_os_error())
        }
        _ => return,
    };
    let done = now_ns();
    match effect {
        Ok(e) => {
            apply(&mut model, &e);
            if let Some((file, first, end)) = broken_blocks(&e).filter(|b| b.1 < b.2) {
                lock(&sh.ledger).breaker(file, first, end, started, done);
                if sh.marks.is_some() {
                    let mut args = crate::trace::Args::new();
                    args.insert("file".into(), file_name(file).into());
                    args.insert("op".into(), format!("{e:?}").into());
                    args.insert("blocks".into(), format!("{first}..{end}").into());
                    args.insert(
                        "took_us".into(),
                        (done.saturating_sub(started) / 1_000).into(),
                    );
                    sh.mark("breakers", "breaker_done", args);
                }
            }
        }
        // Out of space (a zero range that finds no blocks included): nothing changed.
        Err(libc::ENOSPC) => {}
        // Refused by the policy (ETXTBSY): nothing changed.
        Err(libc::ETXTBSY) if is_pinned(file) => {}
        Err(e) => {
            sh.violation(format!(
                "{}: {op:?} failed: {}",
                file_name(file),
                std::io::Error::from_raw_os_error(e)
            ));
            return;
        }
    }
    let mut got = vec![0u8; model.len() + 1];
    let n = f.read_at(&mut got, 0).unwrap_or(0);
    got.truncate(n);
    let name = file_name(file);
    // Where the file and the model differ, only a holder's store (in a pinned file) may be
    // the reason; the ledger judges those bytes.
    let pinned = is_pinned(file).then_some(file);
    let verdict = match first_difference(&got, &model) {
        None => Ok(()),
        Some(_) if got.len() != model.len() => Err(format!(
            "{name}: {} bytes long, the model says {}",
            got.len(),
            model.len()
        )),
        Some(first) => {
            let stray = (first..got.len())
                .find(|&i| got[i] != model[i] && !(pinned.is_some() && got[i] >= HOLDER_BYTES));
            let judged = lock(&sh.ledger).check(pinned, &name, &got);
            match stray {
                Some(at) => Err(format!(
                    "{name}: byte {at} is {:#x}, the model says {:#x}{}",
                    got[at],
                    model[at],
                    judged.err().map(|v| format!(": {v}")).unwrap_or_default()
                )),
                None => judged,
            }
        }
    };
    if let Err(v) = verdict {
        sh.violation(v);
    }
}

/// An administrator fences holder `holder`'s newest connection; the ledger learns when.
fn fence(sh: &Shared, holder: usize) {
    let Some(session) = lock(&sh.ledger).session_of(holder) else {
        return;
    };
    let started = now_ns();
    match Connection::for_path(&sh.dir).and_then(|mut c| c.fence(session)) {
        Ok(_) => {
            lock(&sh.ledger).fenced(session, started, now_ns());
            let mut args = crate::trace::Args::new();
            args.insert("holder".into(), session.into());
            sh.mark("administrator", "fence", args);
        }
        // That connection has gone already (the holder died or reconnected), or this user
        // may not fence (a run on a mount of the user's, not as root).
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EPERM)) => {}
        Err(e) => sh.violation(format!("fence of holder {holder}: {e}")),
    }
}

/// A new file that takes free space, read back at once.
fn new_file(sh: &Shared, n: u64, blocks: u64, byte: u8) {
    let path = sh.dir.join(format!("new{n}"));
    let want = vec![byte; (blocks * BLOCK_SIZE) as usize];
    if std::fs::write(&path, &want).is_ok() {
        if let Ok(back) = std::fs::read(&path) {
            if let Some(at) = back.iter().position(|&b| b != byte) {
                let why = match lock(&sh.ledger).check(None, &format!("new{n}"), &back) {
                    Err(v) => v,
                    Ok(()) => "another file's bytes".into(),
                };
                sh.violation(format!(
                    "new file new{n}: byte {at} is {:#x}, not {byte:#x}: {why}",
                    back[at]
                ));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn worker(sh: &Shared, w: usize) {
    let me = Actor::Worker(w);
    let steps = Program::new(sh.seed, sh.shape)
        .enumerate()
        .map(|(i, s)| (i as u64, s))
        .take_while(|&(i, _)| sh.max_ops.is_none_or(|m| i < m))
        .filter(|(_, s)| s.actor == me);
    for (i, step) in steps {
        if !sh.running() {
            break;
        }
        sh.step(i, format!("{:?} {:?}", step.actor, step.op));
        match step.op {
            Op::NewFile { blocks, byte } => new_file(sh, i, blocks, byte),
            Op::Fence { holder } => fence(sh, holder),
            op => file_step(sh, op),
        }
    }
}

/// Runs holder `n`'s steps in holder processes: one, and after each death a new one from
/// the step after it; takes in their reports.
fn supervise_holder(sh: &Shared, exe: &Path, n: usize) {
    let (mut from, mut pins) = (0u64, 0u32);
    while sh.running() {
        let run = HolderRun {
            dir: sh.dir.clone(),
            seed: sh.seed,
            shape: sh.shape,
            holder: n,
            from,
            max_ops: sh.max_ops,
            until_ns: sh.until_ns,
            first_pin: pins,
        };
        // In a process group of its own: a Ctrl-C at the terminal reaches the fuzzer, which
        // stops its holders by closing their standard input.
        let child = Command::new(exe)
            .args(run.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                sh.violation(format!("holder {n}: cannot start its process: {e}"));
                return;
            }
        };
        if let Some(stdin) = child.stdin.take() {
            lock(&sh.holder_stdin).insert(n, stdin);
        }
        if !sh.running() {
            lock(&sh.holder_stdin).remove(&n);
        }
        let mut died = None;
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                match Entry::parse(&line) {
                    Some(Entry::Step { index, what }) => sh.step(index, what),
                    Some(Entry::Died { index }) => died = Some(index),
                    Some(Entry::Violation(v)) => sh.violation(v),
                    Some(e) => {
                        pins += matches!(e, Entry::Pin { .. }) as u32;
                        lock(&sh.ledger).record(n, &e);
                    }
                    None => sh.violation(format!("holder {n}: an unreadable report: {line}")),
                }
            }
        }
        // The holder's output ended: it and any child it forked (which share its standard
        // output and its process group) have exited, or the output broke. Whatever of the
        // group is left goes now; until the holder is reaped its pid still names the group.
        let group = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let status = child.wait();
        lock(&sh.holder_stdin).remove(&n);
        match died {
            Some(i) => from = i + 1,
            None => {
                if !status.as_ref().is_ok_and(|s| s.success()) && sh.running() {
                    sh.violation(format!("holder {n}: its process ended with {status:?}"));
                }
                return;
            }
        }
    }
}

/// The daemon's live check of its block accounting against the files (free + used + busy =
/// total, no block both free or busy and mapped, none mapped twice). It needs root, as the
/// fuzzer does.
fn check_space(sh: &Shared) {
    match Connection::for_path(&sh.dir).and_then(|mut c| c.check()) {
        Ok(_) => {}
        Err(e) if e.errno() == Some(libc::EUCLEAN) => sh.violation(format!("space: {e}")),
        Err(e) if e.errno() == Some(libc::EPERM) => {}
        Err(e) => sh.violation(format!("space check: {e}")),
    }
}

/// The mount's status, if its daemon answers.
fn mount_status(dir: &Path) -> Option<Status> {
    let json = Connection::for_path(dir)
        .and_then(|mut c| c.status(false))
        .ok()?;
    serde_json::from_str(&json).ok()
}

/// The trace's thread and how to stop it.
struct Tracer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

/// Starts following the mount at `dir` into the trace file `path`, with the marks sent to
/// the returned sender.
fn start_trace(
    path: &Path,
    file: File,
    dir: &Path,
) -> Result<(std::sync::mpsc::Sender<Mark>, Tracer), String> {
    let io = {
        let p = path.to_path_buf();
        move |e: std::io::Error| format!("{}: {e}", p.display())
    };
    let mut rec = crate::trace::Recorder::new(
        std::io::BufWriter::new(file),
        &format!("pinfs fuzz on {}", dir.display()),
    )
    .map_err(&io)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, dir) = (stop.clone(), dir.to_path_buf());
    let thread = std::thread::spawn(move || {
        let how = crate::trace::watch::Follow {
            echo: false,
            stop: &|| stop2.load(Ordering::SeqCst),
            marks: Some(&rx),
        };
        let end = crate::trace::watch::follow(&dir, &mut rec, &how);
        // The marks sent after the last look.
        while let Ok(m) = rx.try_recv() {
            rec.writer()
                .instant(&m.track, &m.name, m.at, &m.args)
                .map_err(&io)?;
        }
        rec.finish(crate::trace::now_micros()).map_err(&io)?;
        end.map(|_| ())
    });
    Ok((tx, Tracer { stop, thread }))
}

/// Runs the concurrent fuzzer on a fresh image (mounted with `cfg.options`), or in a
/// directory of `cfg.mount`.
pub fn run(cfg: &MountFuzz) -> Result<Report, String> {
    // Before any thread starts: a termination signal stops the run cleanly (see below).
    crate::daemon::signals::block_termination();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("pinfs-fuzz")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let own = cfg.mount.is_none();
    let (img, dir) = match &cfg.mount {
        None => (work.path().join("fuzz.img"), work.path().join("mnt")),
        Some(m) => (PathBuf::new(), m.join(format!("pinfs-fuzz-{}", cfg.seed))),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pinfs = |args: &[&str]| -> Result<(), String> {
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
    let (img_s, dir_s) = (img.to_string_lossy(), dir.to_string_lossy());
    // Before the mount: a trace that cannot be written stops the run before it starts.
    let trace_file = match &cfg.trace {
        None => None,
        Some(p) => Some(File::create(p).map_err(|e| {
            format!(
                "{}: cannot write the trace: {e}; give --trace a path in a writable directory",
                p.display()
            )
        })?),
    };
    if own {
        pinfs(&["mkfs", &img_s, "--size", "128M"])?;
        pinfs(&["mount", &img_s, &dir_s, "-o", &cfg.options])?;
    }
    // The trace's thread follows the mount from before the first step to after the last
    // check.
    let (marks, tracer) = match (&cfg.trace, trace_file) {
        (Some(path), Some(file)) => match start_trace(path, file, &dir) {
            Ok((tx, t)) => (Some(tx), Some(t)),
            Err(e) => {
                if own {
                    let _ = Command::new("umount").arg(&dir).status();
                }
                return Err(e);
            }
        },
        _ => (None, None),
    };
    let sh = Arc::new(Shared {
        dir: dir.clone(),
        seed: cfg.seed,
        shape: cfg.shape(),
        end: Instant::now() + cfg.duration,
        until_ns: now_ns() + cfg.duration.as_nanos() as u64,
        max_ops: cfg.max_ops,
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        reached: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        log: Mutex::new(VecDeque::new()),
        models: (0..FILES)
            .map(|f| Mutex::ranked(Rank::FuzzModel, initial_content(f)))
            .collect(),
        ledger: Mutex::ranked(Rank::FuzzLedger, Ledger::default()),
        holder_stdin: Mutex::new(HashMap::new()),
        interrupted: AtomicI32::new(0),
        marks,
    });
    {
        let sh = sh.clone();
        crate::daemon::signals::on_termination("pinfs-fuzz-signals", move |sig| sh.interrupt(sig));
    }
    let before = mount_status(&dir);
    let setup = (0..FILES).try_for_each(|f| {
        std::fs::write(sh.path(f), initial_content(f)).map_err(|e| format!("{}: {e}", file_name(f)))
    });
    let mut threads = Vec::new();
    if setup.is_ok() {
        for w in 0..sh.shape.workers {
            let sh = sh.clone();
            threads.push(std::thread::spawn(move || worker(&sh, w)));
        }
        for n in 0..sh.shape.holders {
            let (sh, exe) = (sh.clone(), exe.clone());
            threads.push(std::thread::spawn(move || supervise_holder(&sh, &exe, n)));
        }
    }
    let mut checked = Instant::now();
    while !threads.iter().all(|t| t.is_finished()) {
        sh.check_pinned(false);
        if checked.elapsed() >= Duration::from_millis(500) {
            check_space(&sh);
            checked = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in threads {
        if t.join().is_err() {
            sh.violation("an actor's thread panicked".into());
        }
    }
    sh.check_pinned(true);
    check_space(&sh);
    let after = mount_status(&dir);
    let counters = |s: &Option<Status>| s.as_ref().map(|s| s.counters);
    let (before_c, after_c) = (counters(&before), counters(&after));
    let delta = |f: fn(&crate::fs::status::Counters) -> u64| {
        after_c
            .as_ref()
            .map_or(0, f)
            .saturating_sub(before_c.as_ref().map_or(0, f))
    };
    let breaks = delta(|c| c.breaks);
    let revocations = delta(|c| c.revocations);
    // Every holder of the run has exited: no block may stay busy for one of them (on a
    // fresh mount: none at all).
    let busy_now = || -> u64 {
        let Some(s) = mount_status(&dir) else {
            return 0;
        };
        if own {
            s.space.busy_blocks
        } else {
            let ledger = lock(&sh.ledger);
            s.busy
                .extents
                .iter()
                .filter(|e| e.holder.is_some_and(|h| ledger.is_ours(h)))
                .map(|e| e.len)
                .sum()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while busy_now() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = busy_now();
    if busy != 0 {
        sh.violation(format!(
            "{busy} blocks still busy after every holder of the run left"
        ));
    }
    if let Some(t) = tracer {
        t.stop.store(true, Ordering::SeqCst);
        match t.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("pinfs fuzz: the trace: {e}"),
            Err(_) => eprintln!("pinfs fuzz: the trace's thread panicked"),
        }
    }
    if own {
        let _ = Command::new("umount").arg(&dir).status();
        // The daemon writes its last checkpoint after umount returns; fsck waits for its lock.
        let out = Command::new(&exe)
            .args(["fsck", &img_s])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            sh.violation(format!(
                "fsck: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    setup?;
    let violations = lock(&sh.violations).clone();
    let recent = lock(&sh.log).iter().cloned().collect();
    let (pins, stores, breakers) = lock(&sh.ledger).counts();
    Ok(Report {
        ops: sh.ops.load(Ordering::SeqCst),
        reached: sh.reached.load(Ordering::SeqCst),
        breaks,
        revocations,
        stores,
        pins,
        breakers,
        violations,
        recent,
        interrupted: match sh.interrupted.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        },
    })
}

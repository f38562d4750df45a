//! A holder of the concurrent fuzzer: a process of its own (a breaker in the same process
//! as the holder it breaks would get `EDEADLK`), running one holder's steps of the program
//! and reporting every pin, store and release to the fuzzer as [`Entry`] lines on its
//! standard output.
//!
//! It pins ranges of the pinned files through the holder protocol, stores tags straight into
//! its blocks through the DAX windows, answers a break by unpinning or ignores it (storing on
//! after a revocation, as a device nobody told would), unpins, and dies: at a `Die` step it
//! kills itself with `SIGKILL`, pins held, and the fuzzer starts a new process for the
//! holder's remaining steps. Steps are paced 20 ms apart, so that pins live long enough to be
//! broken. It stops at the end of its steps, at the run's deadline, or when the fuzzer closes
//! its standard input.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Connection, PinOptions};
use crate::fuzz::{fill_tags, pin_range, Actor, Op, Program, Shape, MAX_TAG_PIN, MAX_TAG_STORE};
use crate::fuzz_ledger::{now_ns, pin_number, Entry, MAX_HOLDERS};
use crate::image::BLOCK_SIZE;

/// Time between two steps of a holder.
pub const HOLDER_PACE: Duration = Duration::from_millis(20);

/// What a holder process runs.
#[derive(Debug, Clone)]
pub struct HolderRun {
    /// The fuzzer's directory on the mount.
    pub dir: PathBuf,
    /// The program's seed and shape.
    pub seed: u64,
    /// The program's shape.
    pub shape: Shape,
    /// Which holder.
    pub holder: usize,
    /// The first program step to run (after a death, the one after it).
    pub from: u64,
    /// Steps at or past this are not run.
    pub max_ops: Option<u64>,
    /// `CLOCK_MONOTONIC` nanoseconds at which the run ends.
    pub until_ns: u64,
    /// The number of this holder's first pin (its pins so far).
    pub first_pin: u32,
}

impl HolderRun {
    /// The arguments of `pinfs fuzz-holder` that run this.
    pub fn args(&self) -> Vec<String> {
        vec![
            "fuzz-holder".into(),
            self.dir.to_string_lossy().into_owned(),
            self.seed.to_string(),
            self.shape.workers.to_string(),
            self.shape.holders.to_string(),
            self.holder.to_string(),
            self.from.to_string(),
            self.max_ops.map_or("-".into(), |n| n.to_string()),
            self.until_ns.to_string(),
            self.first_pin.to_string(),
        ]
    }

    /// Parses what [`HolderRun::args`] made (after `fuzz-holder`).
    pub fn parse(args: &[String]) -> Result<HolderRun, String> {
        let [dir, seed, workers, holders, holder, from, max_ops, until, first_pin] = args else {
            return Err("fuzz-holder: expects DIR SEED WORKERS HOLDERS HOLDER FROM MAX_OPS UNTIL_NS FIRST_PIN (it is started by pinfs fuzz)".into());
        };
        let num = |s: &String| -> Result<u64, String> {
            s.parse()
                .map_err(|_| format!("fuzz-holder: '{s}' is not a number"))
        };
        let run = HolderRun {
            dir: PathBuf::from(dir),
            seed: num(seed)?,
            shape: Shape {
                workers: num(workers)? as usize,
                holders: num(holders)? as usize,
            },
            holder: num(holder)? as usize,
            from: num(from)?,
            max_ops: if max_ops == "-" {
                None
            } else {
                Some(num(max_ops)?)
            },
            until_ns: num(until)?,
            first_pin: num(first_pin)? as u32,
        };
        if run.shape.holders > MAX_HOLDERS || run.holder >= run.shape.holders {
            return Err(format!(
                "fuzz-holder: holder {} of {} (at most {MAX_HOLDERS})",
                run.holder, run.shape.holders
            ));
        }
        Ok(run)
    }
}

struct HeldPin {
    pin: crate::client::Pin,
    number: u32,
    stores: u32,
    release_on_break: bool,
}

struct Holder {
    run: HolderRun,
    out: std::io::Stdout,
    conn: Option<Connection>,
    held: Option<HeldPin>,
    next_pin: u32,
}

impl Holder {
    fn report(&mut self, e: Entry) {
        // A closed pipe means the fuzzer has gone: nothing is left to tell.
        let _ = writeln!(self.out, "{}", e.line()).and_then(|()| self.out.flush());
    }

    fn unpin(&mut self) {
        if let Some(h) = self.held.take() {
            self.report(Entry::End {
                pin: h.number,
                at: now_ns(),
            });
            if let Some(c) = self.conn.as_mut() {
                let _ = c.unpin(&h.pin);
            }
        }
    }

    /// Has the fuzzer closed our standard input (stop now)?
    fn told_to_stop() -> bool {
        let mut p = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd that lives on this stack frame, without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }

    /// Waits until `until_ns`, answering events: a break of a pin that releases on breaks
    /// is answered by unpinning.
    fn wait(&mut self, until_ns: u64) {
        loop {
            let now = now_ns();
            if now >= until_ns {
                return;
            }
            let left = Duration::from_nanos(until_ns - now);
            let Some(c) = self.conn.as_mut() else {
                std::thread::sleep(left);
                return;
            };
            match c.next_event(Some(left)) {
                Ok(Some(ev)) => {
                    let answer = self
                        .held
                        .as_ref()
                        .is_some_and(|h| Some(h.pin.id) == ev.pin && h.release_on_break);
                    if ev.kind == "break" && answer {
                        self.unpin();
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    if now_ns() < self.run.until_ns {
                        self.report(Entry::Violation(format!(
                            "holder {}: the daemon's socket failed: {e}",
                            self.run.holder
                        )));
                    }
                    self.held = None;
                    self.conn = None;
                    return;
                }
            }
        }
    }

    fn pin(&mut self, file: usize, off: u64, len: u64, release_on_break: bool) {
        self.unpin();
        let path = self.run.dir.join(crate::fuzz::file_name(file));
        let Ok(f) = OpenOptions::new().read(true).write(true).open(&path) else {
            return;
        };
        let Some((off, len)) = f.metadata().ok().and_then(|m| pin_range(off, len, m.len())) else {
            return;
        };
        let number = pin_number(self.run.holder, self.next_pin);
        if number >= MAX_TAG_PIN {
            return;
        }
        for attempt in 0..2 {
            if self.conn.is_none() {
                match Connection::for_path(&path) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        let v = format!("holder {}: cannot connect: {e}", self.run.holder);
                        self.report(Entry::Violation(v));
                        return;
                    }
                }
            }
            let Some(c) = self.conn.as_mut() else { return };
            match c.pin(&f, off, len, PinOptions::default()) {
                Ok(pin) => {
                    let granted = now_ns();
                    let first = pin.file_offset() / BLOCK_SIZE;
                    let blocks: u64 = pin.extents.iter().map(|e| e.len).sum::<u64>() / BLOCK_SIZE;
                    self.next_pin += 1;
                    self.report(Entry::Pin {
                        pin: number,
                        session: pin.holder,
                        file,
                        first,
                        end: first + blocks,
                        granted,
                    });
                    self.held = Some(HeldPin {
                        pin,
                        number,
                        stores: 0,
                        release_on_break,
                    });
                }
                // Fenced: this session is over; a holder reconnects (its old pins go).
                Err(e) if e.errno() == Some(libc::EPERM) && attempt == 0 => {
                    self.conn = None;
                    continue;
                }
                // What racing breakers explain: the range is breaking (EAGAIN), it left the
                // file after the size was read (EINVAL), no space is left (ENOSPC).
                Err(e) if matches!(e.errno(), Some(libc::EAGAIN | libc::EINVAL | libc::ENOSPC)) => {
                }
                Err(e) => {
                    let v = format!("holder {}: pin: {e}", self.run.holder);
                    self.report(Entry::Violation(v));
                }
            }
            return;
        }
    }

    /// Stores a fresh tag into every pinned block, straight through the window.
    fn store(&mut self) {
        let Some(h) = self.held.as_mut() else { return };
        if h.stores >= MAX_TAG_STORE {
            return;
        }
        let (pin, store) = (h.number, h.stores);
        let began = now_ns();
        fill_tags(h.pin.as_mut_slice(), pin, store);
        let ended = now_ns();
        h.stores += 1;
        self.report(Entry::Store {
            pin,
            store,
            began,
            ended,
        });
    }

    fn die(&mut self, index: u64) -> ! {
        if let Some(pin) = self.held.as_ref().map(|h| h.number) {
            self.report(Entry::End { pin, at: now_ns() });
        }
        self.report(Entry::Died { index });
        // SAFETY: kill(2) of this very process; nothing after it runs.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::process::abort()
    }
}

/// Runs a holder's steps (the `pinfs fuzz-holder` command).
pub fn run_holder(run: HolderRun) {
    let mut h = Holder {
        out: std::io::stdout(),
        conn: None,
        held: None,
        next_pin: run.first_pin,
        run,
    };
    let (me, max_ops) = (Actor::Holder(h.run.holder), h.run.max_ops);
    let steps = Program::new(h.run.seed, h.run.shape)
        .enumerate()
        .map(|(i, s)| (i as u64, s))
        .skip(h.run.from as usize)
        .take_while(|&(i, _)| max_ops.is_none_or(|m| i < m))
        .filter(|(_, s)| s.actor == me);
    let mut next = now_ns();
    for (i, step) in steps {
        if now_ns() >= h.run.until_ns || Holder::told_to_stop() {
            break;
        }
        h.report(Entry::Step {
            index: i,
            what: format!("{:?} {:?}", step.actor, step.op),
        });
        match step.op {
            Op::Pin {
                file,
                off,
                len,
                release_on_break,
            } => h.pin(file, off, len, release_on_break),
            Op::Store => h.store(),
            Op::Unpin => h.unpin(),
            Op::Die => h.die(i),
            _ => {}
        }
        next += HOLDER_PACE.as_nanos() as u64;
        h.wait(next);
    }
    h.unpin();
}

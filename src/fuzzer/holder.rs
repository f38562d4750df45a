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
//!
//! It also misbehaves as a hostile or buggy holder would: it keeps a pin's mapping after the
//! unpin, or after closing its connection, and goes on storing through it; it forks a child
//! that keeps the mappings and stores on after the holder's `SIGKILL`; it pins read-only and
//! tries to map the window writable. Every store through a kept mapping is reported like any
//! other, and the pin's end with a time taken once it is certainly gone ([`Entry::Gone`]),
//! so that the fuzzer's ledger can check that none of those stores reaches a file.
//!
//! An *exporting* holder (with remote peers, [`HolderRun::export`]) hands each writable pin
//! to a soft NIC of its own ([`Nic`], on 127.0.0.1, a port the kernel picks) instead of
//! storing into it, and reports the key ([`Entry::Export`]); the fuzzer's remote peers store
//! through it. A break of a pin that answers breaks sends `RECALL` and releases (withdraws
//! the region, then unpins) once every peer acked, however late; a peer that never acks
//! leaves the pin to the mount's policy. Its own unpin recalls, waits a little and
//! withdraws whatever the peers said (the NIC then refuses them); an unpin that keeps the
//! mapping, and a closed connection, leave the region exported past the pin's end, so the
//! peers' stores go on into memory that must reach no file. It runs the NIC's threads, so a
//! `ForkDie` is a plain death (a forked child would have no NIC).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use crate::fuzzer::ledger::{now_ns, pin_number, Entry};
use crate::fuzzer::{fill_tags, pin_range, Actor, Op, Program, Shape, MAX_TAG_PIN, REMOTE_STORE};
use crate::holder::client::{Connection, EventKind, PinOptions};
use crate::holder::protocol::poll_ms;
use crate::remote::{Nic, NicOptions};
use crate::store::image::BLOCK_SIZE;

/// Time between two steps of a holder.
pub const HOLDER_PACE: Duration = Duration::from_millis(20);
/// Stores a holder makes through a mapping it kept past its pin (one at each `Store` step).
const KEPT_STORES: u32 = 8;
/// Mappings kept past their pins at once (the oldest goes first).
const MAX_KEPT: usize = 4;
/// How long a forked child stores on after its parent's death (never past the run's end).
const ORPHAN_LIFE: Duration = Duration::from_millis(300);
/// How long a holder waits for the daemon to close its end of a connection it closed.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long an exporting holder's own unpin waits for its peers' acks before it withdraws.
const RECALL_WAIT: Duration = Duration::from_millis(20);

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
    /// Export every writable pin through a soft NIC for the fuzzer's remote peers.
    pub export: bool,
}

impl HolderRun {
    /// The arguments of `pinfs fuzz-holder` that run this (the command line of the
    /// `pinfs` binary parses them back).
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
            u8::from(self.export).to_string(),
        ]
    }
}

struct HeldPin {
    pin: crate::holder::client::Pin,
    number: u32,
    stores: u32,
    release_on_break: bool,
}

/// A mapping kept after its pin went: stores through it must reach orphaned memory only.
/// (The `client::Pin` is never given back again; dropping it unmaps.)
struct Kept {
    pin: HeldPin,
    /// Stores still to make through it.
    left: u32,
}

/// A pin handed to the NIC: the NIC owns its mapping until [`Nic::withdraw`].
struct Exported {
    rkey: u64,
    /// The daemon's pin id.
    id: u64,
    number: u32,
    release_on_break: bool,
    /// A break came and `RECALL` went out: release once every peer acked.
    recalling: bool,
}

struct Holder {
    run: HolderRun,
    out: std::io::Stdout,
    conn: Option<Connection>,
    held: Option<HeldPin>,
    kept: Vec<Kept>,
    next_pin: u32,
    /// The soft NIC of an exporting holder.
    nic: Option<Nic>,
    /// The pin exported now (an exporting holder holds it instead of `held`).
    exported: Option<Exported>,
    /// Regions left exported past their pins: (key, `Store` steps until withdrawn).
    kept_exports: Vec<(u64, u32)>,
}

impl Holder {
    fn report(&mut self, e: Entry) {
        // A closed pipe means the fuzzer has gone: nothing is left to tell.
        let _ = writeln!(self.out, "{}", e.line()).and_then(|()| self.out.flush());
    }

    /// Gives the pin back; with `keep`, keeps its mapping and stores on through it (an
    /// exported pin: leaves the region exported, so the peers store on).
    fn unpin(&mut self, keep: bool) {
        if let Some(x) = self.exported.take() {
            if keep {
                self.report(Entry::End {
                    pin: x.number,
                    at: now_ns(),
                });
                if self.conn.as_mut().is_some_and(|c| c.unpin_id(x.id).is_ok()) {
                    self.report(Entry::Gone {
                        pin: x.number,
                        at: now_ns(),
                    });
                }
                self.keep_export(x.rkey);
            } else {
                if let Some(nic) = &self.nic {
                    // Acked or not, the holder gives the pin back: the withdrawal ends every
                    // peer's access first.
                    let _ = nic.recall(x.rkey, Some(RECALL_WAIT));
                }
                self.release_export(x);
            }
        }
        if let Some(h) = self.held.take() {
            self.report(Entry::End {
                pin: h.number,
                at: now_ns(),
            });
            let gone = self.conn.as_mut().is_some_and(|c| c.unpin(&h.pin).is_ok());
            if gone {
                // The unpin returned: the pin's windows are detached.
                self.report(Entry::Gone {
                    pin: h.number,
                    at: now_ns(),
                });
            }
            if keep {
                self.keep(h);
            }
        }
    }

    /// Withdraws exported pin `x`'s region (after the accesses in flight) and unpins it.
    fn release_export(&mut self, x: Exported) {
        self.report(Entry::End {
            pin: x.number,
            at: now_ns(),
        });
        let Some(pin) = self.nic.as_ref().and_then(|n| n.withdraw(x.rkey).ok()) else {
            return;
        };
        if self.conn.as_mut().is_some_and(|c| c.unpin(&pin).is_ok()) {
            self.report(Entry::Gone {
                pin: x.number,
                at: now_ns(),
            });
        }
    }

    /// Leaves region `rkey` exported past its pin for [`KEPT_STORES`] steps.
    fn keep_export(&mut self, rkey: u64) {
        if self.kept_exports.len() == MAX_KEPT {
            let (old, _) = self.kept_exports.remove(0);
            self.withdraw_kept(old);
        }
        self.kept_exports.push((rkey, KEPT_STORES));
    }

    fn withdraw_kept(&mut self, rkey: u64) {
        // The pin is gone already; dropping it unmaps.
        if let Some(nic) = &self.nic {
            drop(nic.withdraw(rkey));
        }
    }

    /// A `Store` step of the regions kept exported: the oldest go once their time is up.
    fn tick_kept_exports(&mut self) {
        let mut done = Vec::new();
        for (rkey, left) in &mut self.kept_exports {
            *left = left.saturating_sub(1);
            if *left == 0 {
                done.push(*rkey);
            }
        }
        self.kept_exports.retain(|&(_, left)| left > 0);
        for rkey in done {
            self.withdraw_kept(rkey);
        }
    }

    /// A break of the exported pin was answered with `RECALL`: once every peer acked (or
    /// went), the holder releases it.
    fn release_if_acked(&mut self) {
        let acked = match (&self.exported, &self.nic) {
            (Some(x), Some(nic)) => x.recalling && nic.unacked(x.rkey).is_empty(),
            _ => false,
        };
        if acked {
            if let Some(x) = self.exported.take() {
                self.release_export(x);
            }
        }
    }

    fn keep(&mut self, pin: HeldPin) {
        if self.kept.len() == MAX_KEPT {
            self.kept.remove(0);
        }
        self.kept.push(Kept {
            pin,
            left: KEPT_STORES,
        });
    }

    /// Closes the connection (the daemon releases its pins) and keeps the pin's mapping.
    fn disconnect(&mut self) {
        let Some(c) = self.conn.take() else { return };
        let held = self.held.take();
        if let Some(x) = self.exported.take() {
            self.report(Entry::End {
                pin: x.number,
                at: now_ns(),
            });
            if c.close_and_wait(CLOSE_WAIT).unwrap_or(false) {
                self.report(Entry::Gone {
                    pin: x.number,
                    at: now_ns(),
                });
            }
            self.keep_export(x.rkey);
            return;
        }
        if let Some(h) = &held {
            self.report(Entry::End {
                pin: h.number,
                at: now_ns(),
            });
        }
        // Only the daemon's close of its end says the pins are gone (a timeout or an error
        // leaves the pin's end unknown: its later stores are then not judged as gone).
        let closed = c.close_and_wait(CLOSE_WAIT).unwrap_or(false);
        if let Some(h) = held {
            if closed {
                self.report(Entry::Gone {
                    pin: h.number,
                    at: now_ns(),
                });
            }
            self.keep(h);
        }
    }

    /// Has the fuzzer closed our standard input (stop now)?
    fn told_to_stop() -> bool {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let mut p = [PollFd::from_borrowed_fd(stdin.as_fd(), PollFlags::IN)];
        let n = poll_ms(&mut p, 0).unwrap_or(0);
        n > 0 && p[0].revents().intersects(PollFlags::IN | PollFlags::HUP)
    }

    /// Waits until `until_ns`, answering events: a break of a pin that releases on breaks
    /// is answered by unpinning.
    fn wait(&mut self, until_ns: u64) {
        loop {
            self.release_if_acked();
            let now = now_ns();
            if now >= until_ns {
                return;
            }
            let mut left = Duration::from_nanos(until_ns - now);
            if self.exported.as_ref().is_some_and(|x| x.recalling) {
                // Acks come to the NIC, not here: look again soon.
                left = left.min(Duration::from_millis(2));
            }
            let Some(c) = self.conn.as_mut() else {
                std::thread::sleep(left);
                return;
            };
            match c.next_event(Some(left)) {
                Ok(Some(ev)) => {
                    let broken = ev
                        .lease()
                        .filter(|l| matches!(l.kind, EventKind::Break { .. }))
                        .and_then(|l| l.pin);
                    if let (Some(x), Some(nic)) = (self.exported.as_mut(), &self.nic) {
                        if broken == Some(x.id) && x.release_on_break && !x.recalling {
                            x.recalling = nic.start_recall(x.rkey).is_ok();
                        }
                        continue;
                    }
                    let answer = self
                        .held
                        .as_ref()
                        .is_some_and(|h| broken == Some(h.pin.id) && h.release_on_break);
                    if answer {
                        self.unpin(false);
                    }
                }
                Ok(None) if self.exported.as_ref().is_some_and(|x| x.recalling) => {}
                Ok(None) => return,
                Err(e) => {
                    if now_ns() < self.run.until_ns {
                        self.report(Entry::Violation(format!(
                            "holder {}: the daemon's socket failed: {e}",
                            self.run.holder
                        )));
                    }
                    self.held = None;
                    self.exported = None;
                    self.conn = None;
                    return;
                }
            }
        }
    }

    /// The holder's connection, made if it has none (`None`: it cannot connect, and said so).
    fn connection(&mut self, path: &std::path::Path) -> Option<&mut Connection> {
        if self.conn.is_none() {
            match Connection::for_path(path) {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    let v = format!("holder {}: cannot connect: {e}", self.run.holder);
                    self.report(Entry::Violation(v));
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    /// Counts pin `number` of `file`, asked for at `asked`, as granted now, and reports it.
    fn granted(&mut self, pin: &crate::holder::client::Pin, number: u32, file: usize, asked: u64) {
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
            asked,
            granted,
        });
    }

    /// Pins a range read-only and tries to map its windows writable and shared: the daemon
    /// gave read-only descriptors, so `mmap` must fail with `EACCES`.
    fn pin_read_only(&mut self, file: usize, off: u64, len: u64) {
        let path = self.run.dir.join(crate::fuzzer::file_name(file));
        let Ok(f) = std::fs::File::open(&path) else {
            return;
        };
        let Some((off, len)) = f.metadata().ok().and_then(|m| pin_range(off, len, m.len())) else {
            return;
        };
        let number = pin_number(self.run.holder, self.next_pin);
        if number >= MAX_TAG_PIN {
            return;
        }
        let holder = self.run.holder;
        let Some(c) = self.connection(&path) else {
            return;
        };
        let opts = PinOptions {
            read_only: true,
            ..PinOptions::default()
        };
        // A fenced connection (EPERM) or what racing breakers explain: nothing to try.
        let asked = now_ns();
        let pin = match c.pin(&f, off, len, opts) {
            Ok(pin) => pin,
            Err(e)
                if matches!(
                    e.errno(),
                    Some(libc::EPERM | libc::EAGAIN | libc::EINVAL | libc::ENOSPC)
                ) =>
            {
                return
            }
            Err(e) => {
                self.report(Entry::Violation(format!("holder {holder}: pin ro: {e}")));
                return;
            }
        };
        // Reported like any pin: its window pages are attached while it lives, so the
        // ledger must know it may keep a block's page attached for another pin's mapping.
        self.granted(&pin, number, file, asked);
        let mut wrong = Vec::new();
        for fd in pin.window_descriptors() {
            // SAFETY: a new mapping chosen by the kernel (no MAP_FIXED), of one page of a
            // descriptor we hold; a success is unmapped at once, nothing reads or writes it.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    BLOCK_SIZE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                // SAFETY: the page just mapped above, used by nothing.
                unsafe { libc::munmap(p, BLOCK_SIZE as usize) };
                wrong.push("succeeded".to_string());
            } else {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EACCES) {
                    wrong.push(format!("failed with {e}, not EACCES"));
                }
            }
        }
        for w in wrong {
            self.report(Entry::Violation(format!(
                "holder {holder}: a writable shared mapping of a read-only pin's window {w}"
            )));
        }
        self.report(Entry::End {
            pin: number,
            at: now_ns(),
        });
        if self.conn.as_mut().is_some_and(|c| c.unpin(&pin).is_ok()) {
            self.report(Entry::Gone {
                pin: number,
                at: now_ns(),
            });
        }
    }

    fn pin(&mut self, file: usize, off: u64, len: u64, release_on_break: bool) {
        self.unpin(false);
        let path = self.run.dir.join(crate::fuzzer::file_name(file));
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
            let asked = now_ns();
            match c.pin(&f, off, len, PinOptions::default()) {
                Ok(pin) => {
                    self.granted(&pin, number, file, asked);
                    if let Some(nic) = &self.nic {
                        let id = pin.id;
                        match nic.export(pin) {
                            Ok(rkey) => {
                                let addr = nic.addr().to_string();
                                self.report(Entry::Export {
                                    pin: number,
                                    addr,
                                    rkey,
                                });
                                self.exported = Some(Exported {
                                    rkey,
                                    id,
                                    number,
                                    release_on_break,
                                    recalling: false,
                                });
                            }
                            Err(e) => {
                                let v = format!("holder {}: export: {e}", self.run.holder);
                                self.report(Entry::Violation(v));
                            }
                        }
                        return;
                    }
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

    /// Stores a fresh tag into every pinned block, straight through the window, and
    /// through every mapping kept past its pin.
    fn store(&mut self) {
        if let Some(e) = self.held.as_mut().and_then(store_through) {
            self.report(e);
        }
        self.store_kept();
        self.tick_kept_exports();
    }

    /// Stores a fresh tag through every kept mapping that has stores left.
    fn store_kept(&mut self) {
        let mut made = Vec::new();
        for k in &mut self.kept {
            k.left = k.left.saturating_sub(1);
            made.extend(store_through(&mut k.pin));
        }
        self.kept.retain(|k| k.left > 0);
        for e in made {
            self.report(e);
        }
    }

    /// Forks a child that keeps the mappings, then dies (as at [`Holder::die`]). The child
    /// closes its copy of the connection once the parent is dead (before, it would keep the
    /// pins alive: a connection ends with its last copy), waits for the daemon to close its
    /// end (the pins are gone then), and stores on through its mappings for a while.
    fn fork_die(&mut self, index: u64) -> ! {
        if self.nic.is_some() {
            // The NIC runs threads: a forked child would have none of them.
            self.die(index)
        }
        let Ok((read_end, write_end)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        else {
            self.die(index)
        };
        // Every report is flushed when made: the child inherits no buffered line.
        // SAFETY: this process is single-threaded (a holder without a NIC runs no threads,
        // and one with a NIC does not fork: see above), so the child
        // may go on running ordinary code.
        match unsafe { libc::fork() } {
            0 => {
                // The child's copy of the write end goes; the parent keeps its own until it
                // dies.
                drop(write_end);
                self.orphan(read_end)
            }
            pid => {
                // The parent's copy of the read end (or, if fork failed, the only one) goes;
                // the write end closes with this process (`die` does not return), or now if
                // no child has it.
                drop(read_end);
                if pid < 0 {
                    drop(write_end);
                }
                self.die(index)
            }
        }
    }

    /// The forked child's life: see [`Holder::fork_die`]. `parent` is the read end of a pipe
    /// whose only write end the parent holds. Exits by itself within [`ORPHAN_LIFE`] after
    /// the parent's death, at the run's end, or when the fuzzer closes standard input.
    fn orphan(&mut self, parent: std::os::fd::OwnedFd) -> ! {
        let stop_at = (now_ns() + ORPHAN_LIFE.as_nanos() as u64).min(self.run.until_ns);
        // The parent's end of the pipe closes when it dies.
        loop {
            let now = now_ns();
            if now >= stop_at {
                // SAFETY: ends this process; nothing of it needs to run.
                unsafe { libc::_exit(0) }
            }
            let mut p = [PollFd::new(&parent, PollFlags::IN)];
            let ms = ((stop_at - now) / 1_000_000).clamp(1, 1000) as i32;
            let n = poll_ms(&mut p, ms).unwrap_or(0);
            if n > 0 && p[0].revents().intersects(PollFlags::HUP | PollFlags::IN) {
                break;
            }
        }
        let held = self.held.take();
        let closed = match self.conn.take() {
            Some(c) => c.close_and_wait(CLOSE_WAIT).unwrap_or(false),
            None => false,
        };
        if let Some(h) = held {
            if closed {
                self.report(Entry::Gone {
                    pin: h.number,
                    at: now_ns(),
                });
            }
            self.keep(h);
        }
        let stop_at = stop_at.max(now_ns() + ORPHAN_LIFE.as_nanos() as u64 / 2);
        let stop_at = stop_at.min(self.run.until_ns);
        for k in &mut self.kept {
            k.left = u32::MAX;
        }
        while now_ns() < stop_at && !Holder::told_to_stop() {
            self.store_kept();
            std::thread::sleep(HOLDER_PACE);
        }
        // SAFETY: ends this process without running the parent's exit path.
        unsafe { libc::_exit(0) }
    }

    fn die(&mut self, index: u64) -> ! {
        let exported = self.exported.as_ref().map(|x| x.number);
        if let Some(pin) = self.held.as_ref().map(|h| h.number).or(exported) {
            self.report(Entry::End { pin, at: now_ns() });
        }
        self.report(Entry::Died { index });
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort()
    }
}

/// Stores a fresh tag into every block a (live or kept) pin's mapping reaches, and says so.
fn store_through(h: &mut HeldPin) -> Option<Entry> {
    if h.stores >= REMOTE_STORE {
        return None;
    }
    let (pin, store) = (h.number, h.stores);
    let began = now_ns();
    fill_tags(h.pin.as_mut_slice(), pin, store);
    let ended = now_ns();
    h.stores += 1;
    Some(Entry::Store {
        pin,
        store,
        began,
        ended,
    })
}

/// Runs a holder's steps (the `pinfs fuzz-holder` command).
pub fn run_holder(run: HolderRun) {
    let mut h = Holder {
        out: std::io::stdout(),
        conn: None,
        held: None,
        kept: Vec::new(),
        next_pin: run.first_pin,
        nic: None,
        exported: None,
        kept_exports: Vec::new(),
        run,
    };
    if h.run.export {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        match Nic::bind(local, NicOptions::default()) {
            Ok(nic) => h.nic = Some(nic),
            Err(e) => {
                let v = format!("holder {}: cannot start its NIC: {e}", h.run.holder);
                h.report(Entry::Violation(v));
                return;
            }
        }
    }
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
            Op::Unpin => h.unpin(false),
            Op::UnpinKeep => h.unpin(true),
            Op::Disconnect => h.disconnect(),
            Op::PinReadOnly { file, off, len } => h.pin_read_only(file, off, len),
            Op::Die => h.die(i),
            Op::ForkDie => h.fork_die(i),
            _ => {}
        }
        next += HOLDER_PACE.as_nanos() as u64;
        h.wait(next);
    }
    h.unpin(false);
}

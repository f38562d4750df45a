//! Mounting and the daemon's life: start in the background, report readiness (or the reason
//! for failure) to the command that started it, serve until unmounted or signalled, then
//! write a clean checkpoint and release the image.

pub mod fuse;
pub mod holders;
pub mod ioctl;
pub mod kmsg;
pub mod remount;
pub mod share;
pub mod signals;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{unmount, UnmountFlags};

use crate::daemon::fuse::FuseFs;
use crate::fs::options::MountOptions;
use crate::fs::{Fs, FsOptions, Stale};
use crate::holder::protocol::poll_ms;

/// Environment variable carrying the readiness pipe to a background daemon.
const READY_FD_ENV: &str = "PINFS_READY_FD";

/// Whether this process is a daemon that `pinfs mount` started in the background (it
/// reports readiness over a pipe and has no terminal).
pub fn is_background_daemon() -> bool {
    std::env::var_os(READY_FD_ENV).is_some()
}

/// What `pinfs mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// The image, exactly as given (it becomes the mount's source in `df`).
    pub image: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// The raw option list (re-parsed by the daemon).
    pub options: String,
    /// Stay in the foreground.
    pub foreground: bool,
}

/// Mounts, in the background unless asked otherwise. Returns once the mount is live (or with
/// the daemon's own error message).
pub fn mount(req: &MountRequest) -> Result<(), String> {
    let opts = MountOptions::parse(&req.options)?;
    check_mountpoint(&req.mountpoint)?;
    if !req.image.exists() {
        return Err(format!(
            "{}: no such image; create one with `pinfs mkfs {} --size 1G`",
            req.image.display(),
            req.image.display()
        ));
    }
    if std::env::var_os(READY_FD_ENV).is_some() {
        return serve(req, &opts);
    }
    if let Some(shared) = share::share_if_served(&req.image, &req.mountpoint, &req.options) {
        return shared;
    }
    if req.foreground {
        return serve(req, &opts);
    }
    spawn_background(req)
}

fn check_mountpoint(m: &Path) -> Result<(), String> {
    match std::fs::metadata(m) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(format!("{}: mount point is not a directory", m.display())),
        Err(e) => Err(format!(
            "{}: mount point: {e}; create it with `mkdir -p {}`",
            m.display(),
            m.display()
        )),
    }
}

/// A rustix error as std reports it (`Device or resource busy (os error 16)`).
fn io_error(e: Errno) -> std::io::Error {
    e.into()
}

fn spawn_background(req: &MountRequest) -> Result<(), String> {
    let (rd, wr) =
        rustix::pipe::pipe().map_err(|e| format!("cannot create a pipe: {}", io_error(e)))?;
    // The read end must not leak into the daemon (it would never see EOF otherwise).
    let _ = rustix::io::fcntl_setfd(&rd, rustix::io::FdFlags::CLOEXEC);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the pinfs binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount")
        .arg(&req.image)
        .arg(&req.mountpoint)
        .arg("-o")
        .arg(&req.options);
    cmd.env(READY_FD_ENV, wr.as_raw_fd().to_string());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if std::env::var_os("PINFS_LOG").is_none() {
        cmd.stderr(std::process::Stdio::null());
    }
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our session so that
    // the terminal's signals do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    drop(wr);
    let mut msg = String::new();
    File::from(rd).read_to_string(&mut msg).ok();
    if msg.trim() == "ok" {
        return Ok(());
    }
    let status = child.wait().ok();
    if msg.trim().is_empty() {
        return Err(format!("the daemon exited before the mount was ready ({status:?}); run with --foreground to see why"));
    }
    Err(msg.trim().to_string())
}

fn report_ready(result: &Result<(), String>) {
    if let Some(fd) =
        std::env::var_os(READY_FD_ENV).and_then(|v| v.to_str().and_then(|s| s.parse::<i32>().ok()))
    {
        // SAFETY: the descriptor was handed to us by our parent for exactly this message.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let line = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        };
        let _ = f.write_all(line.as_bytes());
        std::env::remove_var(READY_FD_ENV);
    }
}

fn serve(req: &MountRequest, opts: &MountOptions) -> Result<(), String> {
    // Before any thread starts, so that all inherit the mask and only the signal thread
    // receives termination signals.
    crate::daemon::signals::block_termination();
    let life = Arc::new(Life {
        phase: crate::sync::Mutex::new(Phase::Starting),
        changed: crate::sync::Condvar::new(),
    });
    spawn_signal_thread(life.clone());
    let fs_opts = FsOptions {
        read_only: opts.read_only,
        atime: opts.atime,
        lock_wait: Duration::from_secs_f64(opts.lock_wait),
        leases: opts.leases,
        acl: opts.acl,
        volatile_cache: opts.volatile_cache,
    };
    let fs = match Fs::open(&req.image, fs_opts) {
        Ok(fs) => {
            let fs = Arc::new(fs);
            fs.start_background();
            life.set(Phase::Opened(fs.clone()));
            fs
        }
        Err(e) => {
            let msg = e.to_string();
            report_ready(&Err(msg.clone()));
            return Err(msg);
        }
    };
    let mnt = std::fs::canonicalize(&req.mountpoint).unwrap_or_else(|_| req.mountpoint.clone());
    fs.set_owner(&mnt.display().to_string());
    fs.set_mount_options(opts.clone());
    let pick = |on: bool, yes: MountOption, no: MountOption| if on { yes } else { no };
    let mut mount_options = vec![
        MountOption::FSName(req.image.display().to_string()),
        MountOption::DefaultPermissions,
        pick(opts.dev, MountOption::Dev, MountOption::NoDev),
        pick(opts.suid, MountOption::Suid, MountOption::NoSuid),
        pick(opts.exec, MountOption::Exec, MountOption::NoExec),
        pick(opts.read_only, MountOption::RO, MountOption::RW),
    ];
    match opts.atime {
        crate::fs::AtimeMode::Never => mount_options.push(MountOption::NoAtime),
        _ => mount_options.push(MountOption::Atime),
    }
    let threads = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2)
    });
    let mut config = Config::default();
    config.mount_options = mount_options;
    let others = opts.others_allowed(rustix::process::geteuid().as_raw());
    config.acl = if others {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(threads);
    config.clone_fd = true;
    life.set(Phase::Mounting);
    let session = match fuser::Session::new(FuseFs::new(fs.clone()), &mnt, &config) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "{}: cannot mount on {}: {e}",
                req.image.display(),
                mnt.display()
            );
            life.set(Phase::Ending);
            let _ = fs.unmount();
            report_ready(&Err(msg.clone()));
            return Err(msg);
        }
    };
    life.set(Phase::Serving(mnt.clone(), fs.clone()));
    let notifier = session.notifier();
    let stale = fs.stale_notices();
    // Kernel notifications block: they go from a thread of their own, holding no lock.
    let _ = std::thread::Builder::new()
        .name("pinfs-inval".into())
        .spawn(move || {
            for what in stale {
                let _ = match what {
                    Stale::Attributes(ino, then) => {
                        let r = notifier.inval_inode(fuser::INodeNo(ino), -1, 0);
                        if let Some(then) = then {
                            (then.0)();
                        }
                        r
                    }
                    Stale::Store {
                        ino,
                        offset,
                        data,
                        then,
                    } => {
                        // An inode the kernel evicted meanwhile has no pages left: not found
                        // is then fine (the notifier ignores it).
                        let r = notifier.store(fuser::INodeNo(ino), offset, &data);
                        (then.0)();
                        r
                    }
                    Stale::Data {
                        ino,
                        offset,
                        len,
                        done,
                    } => {
                        let r =
                            notifier.inval_inode(fuser::INodeNo(ino), offset as i64, len as i64);
                        if let Some(d) = done {
                            let _ = d.send(());
                        }
                        r
                    }
                };
            }
        });
    let server = match mount_dev(&mnt) {
        Some(dev) => {
            fs.set_mount_dev(dev);
            let note = (!opts.read_only).then(|| mnt.display().to_string());
            spawn_detach_watch(dev, fs.clone(), note);
            match crate::daemon::holders::Server::start(fs.clone(), dev, others) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("holder socket: {e}; pins are unavailable on this mount");
                    None
                }
            }
        }
        None => {
            tracing::error!("cannot find the mount's device number; pins are unavailable");
            None
        }
    };
    report_ready(&Ok(()));
    tracing::info!(mountpoint = %mnt.display(), threads, "serving");
    let r = session.run();
    life.set(Phase::Ending);
    if let Some(s) = server {
        s.stop();
    }
    // The session's destroy wrote the final checkpoint; dropping the core releases the lock.
    r.map_err(|e| {
        format!(
            "{}: the FUSE session ended with an error: {e}",
            mnt.display()
        )
    })?;
    match fs.unmount_error() {
        None => Ok(()),
        Some(e) => Err(format!(
            "{}: unmounted, but the image could not be left clean: {e}; it keeps its previous consistent state (the next mount replays its journal; `pinfs fsck {}` checks it)",
            req.image.display(),
            req.image.display()
        )),
    }
}

/// Where the daemon is in its life, for the signal thread.
enum Phase {
    /// Opening the image: waiting for its lock (up to `lock_wait`), reading it.
    Starting,
    /// The image is open; no mount yet.
    Opened(Arc<Fs>),
    /// The mount is being made.
    Mounting,
    /// Serving the mount at this path.
    Serving(PathBuf, Arc<Fs>),
    /// The mount could not be made, or the session is over: the daemon is ending.
    Ending,
}

/// The daemon's [`Phase`], and its condvar, signalled at each change.
struct Life {
    phase: crate::sync::Mutex<Phase>,
    changed: crate::sync::Condvar,
}

impl Life {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
        self.changed.notify_all();
    }
}

/// On SIGTERM, SIGINT or SIGHUP, ends the daemon whatever it is waiting for. Before the image
/// is open (a wait for its lock, however long `lock_wait` is) the process just exits (128 +
/// the signal, as a shell reports it): nothing is changed yet that a crash would not leave
/// consistent. With the image open and no mount yet, the daemon writes its clean checkpoint
/// first. While the mount is being made, the signal waits for the outcome. Once serving, it
/// ends the waits of breakers (they get `EIO`: a breaker waiting for a holder would otherwise
/// keep the mount, and so this daemon, alive) and ends the mount ([`end_mount`]), which ends
/// the session: the daemon writes its clean checkpoint and exits.
fn spawn_signal_thread(life: Arc<Life>) {
    crate::daemon::signals::on_termination("pinfs-signals", move |sig| {
        let mut phase = life.phase.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match &*phase {
                Phase::Starting => {
                    tracing::info!(signal = sig, "ending on signal before the image was open");
                    std::process::exit(128 + sig);
                }
                Phase::Opened(fs) => {
                    tracing::info!(signal = sig, "ending on signal before the mount was made");
                    if let Err(e) = fs.unmount() {
                        tracing::error!("the final checkpoint: {e}");
                    }
                    std::process::exit(128 + sig);
                }
                Phase::Mounting => {
                    phase = life.changed.wait(phase).unwrap_or_else(|e| e.into_inner());
                }
                Phase::Serving(mnt, fs) => {
                    let (mnt, fs) = (mnt.clone(), fs.clone());
                    drop(phase);
                    tracing::info!(signal = sig, "unmounting on signal");
                    fs.end_waits();
                    end_mount(&mnt, &fs);
                    return;
                }
                Phase::Ending => return,
            }
        }
    });
}

/// How long a mount with users is given to become unused (breakers whose waits just ended
/// answering, their processes leaving it) before its connection is aborted.
const END_GRACE: Duration = Duration::from_millis(200);

/// Ends the mounts of `fs` whatever uses them, the way `umount -f` does: files still open on
/// them fail with `ENOTCONN` from then on, as on a FUSE mount whose daemon died, and the
/// kernel ends the session, so the daemon finishes. Every mount of the connection goes: the
/// one at `mnt` and any second mount of the image ([`share`]), wherever they are now. Data the
/// kernel holds for open files is written back first (`syncfs`), while the daemon still
/// serves it. Mounts nobody uses are unmounted normally. A mount detached earlier (`umount
/// -l`) that open files keep alive is reached through its connection in fusectl.
fn end_mount(mnt: &Path, fs: &Fs) {
    let until = std::time::Instant::now() + END_GRACE;
    // The breakers whose waits just ended answer `EIO` first: an aborted connection would
    // fail their requests with `ECONNABORTED` instead.
    while fs.waiting_breakers() > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(dev) = fs.mount_dev() else {
        // No device number: nothing can tell which mount is ours but the path.
        let _ = unmount(mnt, UnmountFlags::DETACH);
        return;
    };
    let points = mount_points(dev).unwrap_or_default();
    if points.is_empty() {
        if let Err(e) = abort_connection(dev) {
            tracing::error!(
                "cannot end the detached mount: {e}; the daemon ends when its last open file closes"
            );
        }
        return;
    }
    let root = rustix::fs::open(
        &points[0],
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    if let Ok(root) = root {
        let _ = rustix::fs::syncfs(&root);
    }
    let mut busy = Vec::new();
    for p in points {
        loop {
            match unmount(&p, UnmountFlags::empty()) {
                Ok(()) => break,
                Err(e) if e == Errno::BUSY && std::time::Instant::now() < until => {}
                Err(_) => {
                    busy.push(p);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if busy.is_empty() {
        return;
    }
    tracing::info!("the mount is in use: aborting its connection");
    // MNT_FORCE aborts the FUSE connection (and fails with EBUSY while files stay open); the
    // detach takes the mount out of the table.
    for p in &busy {
        let _ = unmount(p, UnmountFlags::FORCE);
        let _ = unmount(p, UnmountFlags::DETACH);
    }
}

/// Aborts the FUSE connection of the detached mount with device number `dev`, through
/// fusectl (mounted for the occasion on a private directory when it is not at
/// /sys/fs/fuse/connections). The caller checked that no mount with this device number is in
/// the table, so the number still names this daemon's connection.
fn abort_connection(dev: u64) -> Result<(), String> {
    // fusectl names a connection by the kernel's device number: major << 20 | minor.
    let id = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
    let write_abort = |dir: &Path| -> Result<(), String> {
        std::fs::write(dir.join(id.to_string()).join("abort"), b"1")
            .map_err(|e| format!("fusectl connection {id}: {e}"))
    };
    let sys = Path::new("/sys/fs/fuse/connections");
    if sys.join(id.to_string()).exists() {
        return write_abort(sys);
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-fusectl")
        .tempdir()
        .map_err(|e| format!("a directory for fusectl: {e}"))?;
    let target = dir.path();
    rustix::mount::mount(
        c"fusectl",
        target,
        c"fusectl",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| format!("cannot mount fusectl: {}", io_error(e)))?;
    let r = write_abort(target);
    let _ = unmount(target, UnmountFlags::DETACH);
    r
}

/// Watches for the mount being detached (`umount -l`): the kernel tells a FUSE daemon nothing
/// until the last user of a detached mount goes, and a breaker waiting for a holder is such
/// a user, so the waits end (`EIO`) when the mount leaves the mount table. The table is
/// pollable: `POLLPRI` on every change; the thread sleeps in `poll` in between. The image's
/// owner note then says so (`note`: the mount point, for a writable image), so that a mount
/// refused while files on the detached mount stay open says why.
fn spawn_detach_watch(dev: u64, fs: Arc<Fs>, note: Option<String>) {
    let _ = std::thread::Builder::new()
        .name("pinfs-detach".into())
        .spawn(move || {
            let Ok(table) = File::open("/proc/self/mountinfo") else {
                return;
            };
            loop {
                // mountinfo is read in pieces: while other mounts come and go, one read can
                // miss a line. A detached mount stays absent, so absence is believed only
                // when three reads a tenth of a second apart agree: ending the waits is for
                // good.
                let gone = (0..3).all(|k| {
                    if k > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    !mounted(dev)
                });
                if gone {
                    tracing::info!("the mount was detached");
                    // Waits already ended: an unmount or SIGTERM is ending the session, and
                    // the image is released in a moment whatever is still open.
                    let finishing = fs.leases().is_closed();
                    fs.end_waits();
                    if let Some(mnt) = note.as_ref().filter(|_| !finishing) {
                        fs.image()
                            .write_owner_note_detached(std::process::id(), mnt);
                    }
                    return;
                }
                let mut p = [PollFd::new(&table, PollFlags::PRI)];
                if poll_ms(&mut p, -1).is_err_and(|e| e != Errno::INTR) {
                    return;
                }
            }
        });
}

/// The mount points of the mounts with device number `dev` in this namespace's mount table,
/// oldest first (a second mount of the image is a bind of the first: same device number).
fn mount_points(dev: u64) -> Option<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(
        info.lines()
            .filter_map(crate::holder::mounts::MountEntry::parse)
            .filter(|e| e.dev == dev)
            .map(|e| e.mountpoint)
            .collect(),
    )
}

/// Is a mount with device number `dev` in this namespace's mount table? (Yes when the table
/// cannot be read: nothing is ended on a guess.)
fn mounted(dev: u64) -> bool {
    mount_points(dev).is_none_or(|p| !p.is_empty())
}

/// The device number of the mount at `mnt`, from /proc/self/mountinfo (a `stat` of the mount
/// point would ask this very daemon, which does not serve requests yet).
fn mount_dev(mnt: &Path) -> Option<u64> {
    crate::holder::mounts::mount_dev_at(mnt)
}

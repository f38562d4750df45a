//! Breakers against holders that do not cooperate, on real mounts: waiting breakers leave the
//! request threads free, pinned unlinked files are freed each on its own, SIGTERM and
//! unmounts end the waits (`EIO`) and the daemon exits, and other users' pins can neither
//! refuse nor hold root's breakers beyond the guest deadline.
//!
//! Holders are `pinfs pin --ignore-breaks` processes (exec'd, so they inherit no descriptor of
//! other tests); breakers are forked children that close every inherited descriptor first
//! and report their errno through a pipe.

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use pinfs::fs::status::Status;
use pinfs::holder::client::{Connection, PinOptions};

const NOBODY: u32 = 65534;

/// A `pinfs pin` process and the JSON lines it prints.
struct Holder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Holder {
    /// Pins all of `file` (read-only if `ro`) as `uid`, ignoring breaks; returns once the pin
    /// is granted.
    fn spawn(file: &Path, uid: u32, ro: bool) -> Holder {
        let mut cmd = Command::new(BIN);
        cmd.arg("pin").arg(file).arg("--ignore-breaks");
        if ro {
            cmd.arg("--read-only");
        }
        if uid != 0 {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a holder");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut h = Holder { child, lines };
        let first = h.line(Duration::from_secs(10));
        assert!(
            first.as_deref().is_some_and(|l| json(l)["pin"].is_u64()),
            "holder of {} not granted: {first:?}, stderr: {}",
            file.display(),
            h.stderr()
        );
        h
    }

    fn line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Waits for an event line of `kind`.
    fn event(&self, kind: &str, within: Duration) -> Option<String> {
        let end = Instant::now() + within;
        while let Some(l) = self.line(end.saturating_duration_since(Instant::now())) {
            if json(&l)["event"] == kind {
                return Some(l);
            }
        }
        None
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A forked process that truncates a file to 0 through a descriptor without `O_NONBLOCK` and
/// reports the outcome (0 or an errno).
struct Breaker {
    pid: libc::pid_t,
    rd: libc::c_int,
    started: Instant,
}

impl Breaker {
    fn truncate(path: &Path) -> Breaker {
        let c = cstr(path);
        let mut fds = [0; 2];
        // SAFETY: pipe() fills the two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (rd, wr) = (fds[0], fds[1]);
        // SAFETY: the child makes only async-signal-safe system calls (close_range, open,
        // ftruncate, write, _exit) on memory prepared before the fork, and never returns.
        let pid = unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // Keep no copy of other tests' descriptors: they would keep mounts busy.
                libc::syscall(libc::SYS_close_range, 3u32, (wr - 1) as u32, 0u32);
                libc::syscall(libc::SYS_close_range, (wr + 1) as u32, u32::MAX, 0u32);
                let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
                let mut err: i32 = 0;
                if fd < 0 || libc::ftruncate(fd, 0) != 0 {
                    err = *libc::__errno_location();
                }
                libc::write(wr, (&err as *const i32).cast(), 4);
                libc::_exit(0);
            }
            pid
        };
        // SAFETY: closing our copy of the write end, which we own.
        unsafe { libc::close(wr) };
        Breaker {
            pid,
            rd,
            started: Instant::now(),
        }
    }

    /// The breaker's result, if it returns within `within`.
    fn result(&mut self, within: Duration) -> Option<i32> {
        let mut p = libc::pollfd {
            fd: self.rd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd on this stack.
        let n = unsafe { libc::poll(&mut p, 1, within.as_millis() as i32) };
        if n <= 0 {
            return None;
        }
        let mut err: i32 = -1;
        // SAFETY: read of 4 bytes into an i32 we own.
        let got = unsafe { libc::read(self.rd, (&mut err as *mut i32).cast(), 4) };
        (got == 4).then_some(err)
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        // SAFETY: kill and reap our own child; close the pipe end we own. A child stuck in
        // an uninterruptible wait is left to init rather than hanging the test.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            for _ in 0..100 {
                if libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            libc::close(self.rd);
        }
    }
}

fn status(mnt: &Path) -> Status {
    let json = Connection::for_path(mnt).unwrap().status(false).unwrap();
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("status --json: {e}: {json}"))
}

/// A JSON line of `pinfs pin`.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Waits until `pred` holds for the mount's status.
fn wait_status(mnt: &Path, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(mnt);
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Leases in `state`.
fn in_state(s: &Status, state: &str) -> usize {
    s.leases.iter().filter(|l| l.state == state).count()
}

/// Leases of `standing`.
fn of_standing(s: &Status, standing: &str) -> usize {
    s.leases.iter().filter(|l| l.standing == standing).count()
}

fn data_file(m: &Mount, name: &str, blocks: usize) -> PathBuf {
    let p = m.path(name);
    std::fs::write(&p, vec![0x5a; blocks * 4096]).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    p
}

/// The threads of the daemon serving `image`, by name.
fn daemon_threads(image: &Path) -> Option<(usize, usize)> {
    let want = image.to_str()?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.get(1) == Some(&&b"mount"[..]) && args.get(2) == Some(&want.as_bytes()) {
            let tasks: Vec<String> = std::fs::read_dir(e.path().join("task"))
                .ok()?
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .collect();
            let breakers = tasks.iter().filter(|c| c.trim() == "pinfs-breaker").count();
            return Some((tasks.len(), breakers));
        }
    }
    None
}

/// Runs `cmd` as `uid` and returns how long it took; it must succeed.
fn timed(uid: u32, prog: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::null());
    if uid != 0 {
        c.uid(uid).gid(uid);
    }
    let out = c.output().expect("run a command");
    assert!(
        out.status.success(),
        "{prog} {args:?} as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

const BOUND: Duration = Duration::from_secs(3);

#[test]
fn eight_waiting_breakers_leave_the_request_threads_free() {
    if skip_without_fuse("hostile_eight_breakers") {
        return;
    }
    let mut m = Mount::new(
        "64M",
        "threads=2,allow_other,break_policy=wait,lease_break_time=0",
    );
    let files: Vec<PathBuf> = (0..8)
        .map(|i| data_file(&m, &format!("pinned{i}"), 4))
        .collect();
    // Root's holders: under `wait` with no deadline their breakers wait as long as they pin.
    let mut holders: Vec<Holder> = files.iter().map(|f| Holder::spawn(f, 0, false)).collect();
    let mut breakers: Vec<Breaker> = files.iter().map(|f| Breaker::truncate(f)).collect();
    let s = wait_status(&m.mnt, "eight waiting breakers", |s| {
        s.waiting_breakers == 8 && in_state(s, "breaking") == 8
    });
    assert_eq!(of_standing(&s, "root"), 8, "{s:?}");
    let threads = daemon_threads(&m.image);
    // Meanwhile everything else on the mount goes at its normal pace, for every user: new
    // files (create, write), and other processes' stat and 4 KiB reads of them.
    let mut worst = Duration::ZERO;
    for i in 0..6 {
        let t = Instant::now();
        let p = data_file(&m, &format!("other{i}"), 2);
        let p = p.to_str().unwrap();
        let took = [
            t.elapsed(),
            timed(0, "stat", &[p]),
            timed(NOBODY, "stat", &[p]),
            timed(0, "head", &["-c", "4096", p]),
            timed(NOBODY, "head", &["-c", "4096", p]),
        ];
        for d in took {
            assert!(d < BOUND, "a request took {d:?} with 8 breakers waiting");
            worst = worst.max(d);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    for b in &mut breakers {
        assert_eq!(b.result(Duration::ZERO), None, "a breaker stopped waiting");
    }
    eprintln!(
        "8 waiting breakers, threads=2: slowest other request {worst:?}; daemon threads (all, breaker waiters): {threads:?}"
    );
    if let Some((_, waiters)) = threads {
        assert_eq!(waiters, 8, "one waiter thread per waiting breaker");
    }
    // The holders go: every truncate completes.
    for h in &mut holders {
        h.kill();
    }
    for (b, f) in breakers.iter_mut().zip(&files) {
        assert_eq!(
            b.result(Duration::from_secs(10)),
            Some(0),
            "{}",
            f.display()
        );
        assert_eq!(std::fs::metadata(f).unwrap().len(), 0);
    }
    wait_status(&m.mnt, "no waiting breakers", |s| s.waiting_breakers == 0);
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

#[test]
fn unlinked_pinned_files_are_freed_each_on_its_own() {
    if skip_without_fuse("hostile_unlinked") {
        return;
    }
    let mut m = Mount::new("64M", "break_policy=wait,lease_break_time=0");
    let files: Vec<PathBuf> = (0..3)
        .map(|i| data_file(&m, &format!("gone{i}"), 8))
        .collect();
    let mut holders: Vec<Holder> = files.iter().map(|f| Holder::spawn(f, 0, false)).collect();
    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    // All three frees break their leases at once (none queues behind another).
    let s = wait_status(&m.mnt, "three breaking leases", |s| {
        in_state(s, "breaking") == 3
    });
    assert_eq!(s.waiting_breakers, 3, "{s:?}");
    let free0 = s.space.free_blocks;
    // Each is freed as soon as its own holder lets go, in any order.
    for (n, i) in [2usize, 0, 1].into_iter().enumerate() {
        holders[i].kill();
        let left = 2 - n;
        // The blocks become free once the file is freed and the holder's window let go of
        // them (in either order): until both, they are busy.
        let s = wait_status(&m.mnt, "one file freed", |s| {
            in_state(s, "breaking") == left
                && s.waiting_breakers == left as u64
                && s.space.free_blocks >= free0 + 8 * (n as u64 + 1)
        });
        let free = s.space.free_blocks;
        assert!(
            free >= free0 + 8 * (n as u64 + 1),
            "blocks of the freed files are free: {free} vs {free0}"
        );
    }
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

/// A foreground daemon on a fresh image, for tests that signal it.
struct Daemon {
    _dir: tempfile::TempDir,
    img: PathBuf,
    mnt: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(options: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-test")
            .tempdir()
            .unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        mkfs(&img, "64M");
        let mut d = Daemon {
            _dir: dir,
            img,
            mnt,
            child: Command::new("true").spawn().unwrap(),
        };
        d.mount(options);
        d
    }

    fn mount(&mut self, options: &str) {
        let _ = self.child.wait();
        self.child = Command::new(BIN)
            .arg("mount")
            .arg(&self.img)
            .arg(&self.mnt)
            .args(["-o", options, "--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let want = self.mnt.to_str().unwrap().to_string();
        while !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(&want))
        {
            assert!(Instant::now() < end, "not mounted");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The holder socket comes up right after the mount.
        while Connection::for_path(&self.mnt).is_err() {
            assert!(Instant::now() < end, "no holder socket");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `within`) for the daemon to exit; its exit code.
    fn exited(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn fsck_clean(&self) {
        let out = pinfs(&["fsck", self.img.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let c = cstr(&self.mnt);
        // SAFETY: umount2 with a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two truncates (of two files: the kernel serialises truncates of one inode) wait for
/// holders that ignore breaks; then `stop` ends the mount. The breakers get `EIO`, the daemon
/// exits 0 within a few seconds, the image is clean and mounts again.
fn breakers_end_when_the_mount_ends(stop: impl FnOnce(&Daemon)) {
    let mut d = Daemon::start("break_policy=wait,lease_break_time=0");
    let files = [d.mnt.join("a"), d.mnt.join("b")];
    for f in &files {
        std::fs::write(f, vec![1u8; 4 * 4096]).unwrap();
    }
    let mut holders = files.clone().map(|f| Holder::spawn(&f, 0, false));
    let mut breakers = files.clone().map(|f| Breaker::truncate(&f));
    wait_status(&d.mnt, "two waiting breakers", |s| s.waiting_breakers == 2);
    stop(&d);
    for b in &mut breakers {
        assert_eq!(
            b.result(Duration::from_secs(5)),
            Some(libc::EIO),
            "a waiting breaker ends with EIO"
        );
        assert!(b.started.elapsed() < Duration::from_secs(30));
    }
    let t = Instant::now();
    assert_eq!(
        d.exited(Duration::from_secs(5)),
        Some(0),
        "the daemon exits"
    );
    eprintln!("daemon gone {:?} after the breakers' EIO", t.elapsed());
    for h in &mut holders {
        h.kill();
    }
    d.fsck_clean();
    d.mount("break_policy=wait,lease_break_time=0");
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).unwrap().len(),
            4 * 4096,
            "not truncated"
        );
    }
}

#[test]
fn sigterm_ends_waiting_breakers_with_eio_and_the_daemon_exits() {
    if skip_without_fuse("hostile_sigterm") {
        return;
    }
    breakers_end_when_the_mount_ends(|d| {
        // SAFETY: kill with a pid we spawned.
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    });
}

#[test]
fn lazy_umount_ends_waiting_breakers_with_eio_and_the_daemon_exits() {
    if skip_without_fuse("hostile_umount_lazy") {
        return;
    }
    breakers_end_when_the_mount_ends(|d| {
        let c = cstr(&d.mnt);
        // SAFETY: umount2 with a NUL-terminated path.
        assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    });
}

/// A file kept open on the mount, a truncate waiting for a holder that never answers, then
/// `stop`: the daemon still exits promptly (measured: about 0.2 s after SIGTERM, a debug
/// build, most of it the grace for the mount's users to leave; the bound here is generous),
/// the breaker gets EIO, the open file is cut off (ENOTCONN, as on a FUSE mount whose daemon
/// ended), nothing was truncated and the image is clean.
fn sigterm_ends_the_mount_whatever_uses_it(stop: impl FnOnce(&Daemon)) {
    use std::os::unix::fs::FileExt;
    let mut d = Daemon::start("break_policy=wait,lease_break_time=0");
    let f = d.mnt.join("a");
    std::fs::write(&f, vec![1u8; 4 * 4096]).unwrap();
    std::fs::write(d.mnt.join("open"), b"kept open").unwrap();
    let kept = std::fs::File::open(d.mnt.join("open")).unwrap();
    let mut holder = Holder::spawn(&f, 0, false);
    let mut breaker = Breaker::truncate(&f);
    wait_status(&d.mnt, "a waiting breaker", |s| s.waiting_breakers == 1);
    stop(&d);
    let t = Instant::now();
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        d.exited(Duration::from_secs(5)),
        Some(0),
        "the daemon exits on SIGTERM though a file on the mount is open"
    );
    eprintln!("daemon gone {:?} after SIGTERM", t.elapsed());
    assert_eq!(
        breaker.result(Duration::from_secs(5)),
        Some(libc::EIO),
        "the waiting breaker ends with EIO"
    );
    let mut buf = [0u8; 9];
    assert_eq!(
        kept.read_at(&mut buf, 0).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN),
        "the open file is cut off"
    );
    drop(kept);
    let want = d.mnt.to_str().unwrap().to_string();
    assert!(
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(&want)),
        "the mount is gone"
    );
    holder.kill();
    d.fsck_clean();
    d.mount("break_policy=wait,lease_break_time=0");
    assert_eq!(
        std::fs::metadata(&f).unwrap().len(),
        4 * 4096,
        "not truncated"
    );
    assert_eq!(std::fs::read(d.mnt.join("open")).unwrap(), b"kept open");
}

#[test]
fn sigterm_ends_the_daemon_though_files_stay_open_on_the_mount() {
    if skip_without_fuse("hostile_sigterm_open") {
        return;
    }
    sigterm_ends_the_mount_whatever_uses_it(|_| {});
}

#[test]
fn sigterm_ends_the_daemon_of_a_detached_mount_that_open_files_keep() {
    if skip_without_fuse("hostile_sigterm_detached") {
        return;
    }
    sigterm_ends_the_mount_whatever_uses_it(|d| {
        let c = cstr(&d.mnt);
        // SAFETY: umount2 with a NUL-terminated path.
        assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    });
}

#[test]
fn umount_with_a_waiting_free_of_an_unlinked_file_exits_promptly() {
    if skip_without_fuse("hostile_umount_free") {
        return;
    }
    let mut d = Daemon::start("break_policy=wait,lease_break_time=0");
    let f = d.mnt.join("gone");
    std::fs::write(&f, vec![1u8; 4 * 4096]).unwrap();
    let mut holder = Holder::spawn(&f, 0, false);
    std::fs::remove_file(&f).unwrap();
    wait_status(&d.mnt, "a waiting free", |s| s.waiting_breakers == 1);
    let c = cstr(&d.mnt);
    // SAFETY: umount2 with a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    assert_eq!(
        d.exited(Duration::from_secs(5)),
        Some(0),
        "the daemon exits"
    );
    holder.kill();
    d.fsck_clean();
}

#[test]
fn unbreakable_pins_are_roots_unless_the_mount_allows_them() {
    if skip_without_fuse("hostile_unbreakable") {
        return;
    }
    let mut m = Mount::new("64M", "allow_other");
    let p = data_file(&m, "rootfile", 2);
    let try_unbreakable = |p: &Path| -> Option<i32> {
        let f = std::fs::File::open(p).ok()?;
        let mut c = Connection::for_file(&f).ok()?;
        let opts = PinOptions {
            read_only: true,
            unbreakable: true,
        };
        match c.pin(&f, 0, 4096, opts) {
            Ok(_) => Some(0),
            Err(e) => e.errno(),
        }
    };
    assert!(
        as_nobody(|| try_unbreakable(&p) == Some(libc::EPERM)),
        "uid 65534's unbreakable pin on root's 0644 file: EPERM"
    );
    // A plain read pin is fine for it, and root may pin unbreakable.
    assert!(as_nobody(|| {
        let Ok(f) = std::fs::File::open(&p) else {
            return false;
        };
        let Ok(mut c) = Connection::for_file(&f) else {
            return false;
        };
        let opts = PinOptions {
            read_only: true,
            unbreakable: false,
        };
        c.pin(&f, 0, 4096, opts).is_ok()
    }));
    assert_eq!(try_unbreakable(&p), Some(0));
    // The CLI says why.
    let out = Command::new(BIN)
        .arg("pin")
        .arg(&p)
        .args(["--read-only", "--unbreakable"])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("only root may take an unbreakable pin") && err.contains("os error 1"),
        "{err}"
    );
    m.remount("allow_other,allow_unbreakable");
    assert!(
        as_nobody(|| try_unbreakable(&p) == Some(0)),
        "allow_unbreakable lets anyone"
    );
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

/// uid 65534 read-pins root's file and ignores breaks; root truncates it. `expect_after`:
/// the guest deadline the mount gives.
fn guest_lease_is_revoked(options: &str, expect_after: Duration) {
    let mut m = Mount::new("64M", options);
    let p = data_file(&m, "shared", 4);
    let mut guest = Holder::spawn(&p, NOBODY, true);
    let s = status(&m.mnt);
    assert!(of_standing(&s, "guest") > 0, "{s:?}");
    let table = Connection::for_path(&m.mnt).unwrap().status(true).unwrap();
    assert!(table.contains(" guest "), "{table}");
    // Root's truncate, in a process of its own so that a wait past the bound fails the test
    // instead of hanging it.
    let mut b = Breaker::truncate(&p);
    let r = b.result(expect_after + Duration::from_secs(5));
    let took = b.started.elapsed();
    assert_eq!(
        r,
        Some(0),
        "root's truncate goes through at the guest deadline"
    );
    assert!(
        took >= expect_after.mul_f64(0.8) && took < expect_after + Duration::from_secs(3),
        "truncate took {took:?}, guest deadline {expect_after:?}"
    );
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    let brk = guest.event("break", Duration::from_secs(5));
    assert!(
        brk.as_deref()
            .is_some_and(|l| json(l)["deadline_ms"].is_u64()),
        "the guest's break has a deadline: {brk:?}"
    );
    assert!(
        guest.event("revoked", Duration::from_secs(5)).is_some(),
        "the guest holder is told it was revoked"
    );
    let s = status(&m.mnt);
    assert_eq!(s.counters.revocations, 1, "{s:?}");
    assert_eq!(s.counters.refusals, 0, "{s:?}");
    assert!(
        in_state(&s, "revoked") > 0 && of_standing(&s, "guest") > 0,
        "{s:?}"
    );
    guest.kill();
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

#[test]
fn a_guest_cannot_hold_roots_truncate_under_wait_forever() {
    if skip_without_fuse("hostile_guest_wait") {
        return;
    }
    guest_lease_is_revoked(
        "allow_other,break_policy=wait,lease_break_time=0,guest_break_time=1",
        Duration::from_secs(1),
    );
}

#[test]
fn a_guest_cannot_refuse_roots_truncate() {
    if skip_without_fuse("hostile_guest_refuse") {
        return;
    }
    guest_lease_is_revoked(
        "allow_other,break_policy=refuse,lease_break_time=1.5,guest_break_time=30",
        Duration::from_millis(1500),
    );
    guest_lease_is_revoked(
        "allow_other,break_policy=refuse,lease_break_time=0,guest_break_time=1",
        Duration::from_secs(1),
    );
}

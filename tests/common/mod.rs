//! Shared helpers of the mount tests: make an image, mount it for real with the `pinfs`
//! binary, unmount on drop. Without FUSE the tests say so loudly and skip, unless
//! `PINFS_REQUIRE_FUSE=1` (set by CI), where a missing FUSE is a failure.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_pinfs");

/// Why FUSE mounts cannot run here, if they cannot.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mount tests need root (they call mount(2) directly)".into());
    }
    None
}

/// Returns true (after saying so) when the calling test must skip.
pub fn skip_without_fuse(test: &str) -> bool {
    match fuse_unavailable() {
        None => false,
        Some(why) => {
            if std::env::var("PINFS_REQUIRE_FUSE").as_deref() == Ok("1") {
                panic!("{test}: FUSE is required (PINFS_REQUIRE_FUSE=1) but unavailable: {why}");
            }
            // Straight to the process's stderr: the test harness captures eprintln!, and a
            // skip must be seen even when the test passes.
            let line = format!("\n*** SKIPPED {test}: {why} ***\n");
            // SAFETY: write(2) of a buffer we own to file descriptor 2.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            true
        }
    }
}

pub fn pinfs(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run pinfs")
}

pub fn mkfs(image: &Path, size: &str) {
    let out = pinfs(&["mkfs", image.to_str().unwrap(), "--size", size]);
    assert!(
        out.status.success(),
        "mkfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mounted pinfs on a fresh image in a temporary directory.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

impl Mount {
    pub fn new(size: &str, options: &str) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-test")
            .tempdir()
            .expect("tempdir");
        Mount::new_in(dir, size, options)
    }

    /// A mount of a fresh image in `dir` (which it owns and removes).
    pub fn new_in(dir: tempfile::TempDir, size: &str, options: &str) -> Mount {
        // Other users must be able to reach the mount (permission tests run as nobody).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let image = dir.path().join("test.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        mkfs(&image, size);
        let mut m = Mount {
            dir,
            image,
            mnt,
            mounted: false,
        };
        m.mount(options);
        m
    }

    pub fn mount(&mut self, options: &str) {
        let mut args = vec![
            "mount",
            self.image.to_str().unwrap(),
            self.mnt.to_str().unwrap(),
        ];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        let out = pinfs(&args);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    /// Unmounts and waits for the daemon to release the image. EBUSY is retried for a
    /// while: tests that fork (as_nobody) briefly hold copies of every descriptor the test
    /// process has open, including other tests' files on their mounts.
    pub fn umount(&mut self) {
        if self.mounted {
            self.umount_keeping_daemon();
            wait_unlocked(&self.image);
        }
    }

    /// Unmounts this mount point only (EBUSY retried as in [`Mount::umount`]), without
    /// waiting for the daemon: a second mount of the image keeps it.
    pub fn umount_keeping_daemon(&mut self) {
        let c = CString::new(self.mnt.as_os_str().as_bytes()).unwrap();
        let mut rc = -1;
        for _ in 0..100 {
            // SAFETY: umount2 with a NUL-terminated path.
            rc = unsafe { libc::umount2(c.as_ptr(), 0) };
            if rc == 0 || errno() != libc::EBUSY {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            rc,
            0,
            "umount {}: {}",
            self.mnt.display(),
            std::io::Error::last_os_error()
        );
        self.mounted = false;
    }

    /// Forgets that this mount point is mounted (something else ended it).
    pub fn forget_mount(&mut self) {
        self.mounted = false;
    }

    pub fn remount(&mut self, options: &str) {
        self.umount();
        self.mount(options);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn fsck(&self) -> Output {
        pinfs(&["fsck", self.image.to_str().unwrap()])
    }

    /// The pid of the daemon serving this mount.
    pub fn daemon_pid(&self) -> u32 {
        daemon_pid(&self.mnt)
    }
}

/// The pid of the daemon serving the mount at `mnt`: the credentials of its holder socket's
/// listening side.
pub fn daemon_pid(mnt: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mnt).expect("stat the mount point").dev();
    let sock = pinfs::holder::protocol::socket_path(dev);
    pinfs::holder::protocol::Packet::connect(&sock)
        .and_then(|p| p.peer())
        .unwrap_or_else(|e| panic!("{}: the daemon's socket: {e}", mnt.display()))
        .pid
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let c = CString::new(self.mnt.as_os_str().as_bytes()).unwrap();
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            wait_unlocked(&self.image);
        }
    }
}

/// Waits until no daemon holds the image lock (at most 20 s).
pub fn wait_unlocked(image: &Path) {
    assert!(
        pinfs::store::image::Image::wait_until_free(image, std::time::Duration::from_secs(20)),
        "{}: still locked 20 s after unmount",
        image.display()
    );
}

/// Creates (or empties) a file for reading and writing.
pub fn new_file(p: impl AsRef<Path>) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The errno of an io::Error, for assertions.
pub fn err_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

/// setxattr(2) of `name` on `p` with `flags`: 0, or the errno.
pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> i32 {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    // SAFETY: setxattr with NUL-terminated strings and a valid buffer.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        0
    } else {
        errno()
    }
}

/// Runs `f` in a child process that has switched to uid/gid 65534 (nobody); returns its exit
/// status (0: f returned true).
pub fn as_nobody(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: fork in a test process; the child only makes async-signal-safe-ish syscalls
    // through `f` and exits with _exit, never returning into the test harness.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let groups: [libc::gid_t; 0] = [];
            libc::setgroups(0, groups.as_ptr());
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(3);
            }
            let ok = f();
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

/// Starts `pinfs mount IMAGE MNT --foreground [-o OPTIONS]` and returns once the mount is in
/// the mount table (the daemon is the child: kill -9 tests kill it).
pub fn start_daemon(image: &Path, mnt: &Path, options: &str) -> std::process::Child {
    let mut args = vec![
        "mount".to_string(),
        image.to_str().unwrap().into(),
        mnt.to_str().unwrap().into(),
        "--foreground".into(),
    ];
    if !options.is_empty() {
        args.extend(["-o".into(), options.into()]);
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start daemon");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(mnt.to_str().unwrap()))
        {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().ok();
    child.wait().ok();
    panic!("the daemon did not mount within 20 s");
}

/// `pinfs fsck IMAGE`: its exit code, and its stdout and stderr together.
pub fn fsck_report(image: &Path) -> (i32, String) {
    let out = pinfs(&["fsck", image.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The "N journal transactions replayed" of an fsck report.
pub fn replayed(report: &str) -> u64 {
    let words: Vec<&str> = report.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[1] == "journal" && w[2].starts_with("transaction"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no replay count in fsck's report: {report}"))
}

//! Holders as their enemies write them: processes (often another user's, through fork and
//! setuid) that keep their mappings after their pins are gone, fork, pin what they may only
//! read or only write, pin inside old windows, and pin more than their share. Each test is
//! an attack that worked before DAX windows were detached and descriptors checked, and
//! states what a user relies on instead, with the exact errno.

#[path = "../common/mod.rs"]
mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;
use pinfs::holder::client::Connection;
use pinfs::holder::protocol::{socket_path, Grant, Packet, Reply, Request};

/// These tests fork children that inherit every descriptor of the test process, other
/// tests' files on their mounts included (which would make those mounts busy at unmount):
/// they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Says something from a forked child (the harness captures only the parent's output).
fn say(msg: &str) {
    let line = format!("{msg}\n");
    // SAFETY: write(2) of a buffer we own to descriptor 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// A raw holder connection: the reply's text and the descriptors it carried.
struct Raw {
    sock: Packet,
    n: u64,
}

impl Raw {
    fn connect(on: &Path) -> Raw {
        let dev = fs::metadata(on).unwrap().dev();
        Raw {
            sock: Packet::connect(&socket_path(dev)).expect("connect to the holder socket"),
            n: 0,
        }
    }

    fn ask(&mut self, req: &Request, fds: &[i32]) -> (Reply, Vec<OwnedFd>) {
        self.n += 1;
        let id = self.n.to_string();
        self.sock.send(&req.encode(&id), fds).unwrap();
        loop {
            let (b, fds) = self.sock.recv().unwrap().expect("a reply");
            if b.starts_with(b"event ") {
                continue;
            }
            let (to, reply) = Reply::parse(&b).unwrap();
            if to == id {
                return (reply, fds);
            }
        }
    }

    fn unpin(&mut self, pin: u64) -> Reply {
        self.ask(&Request::Unpin { pin }, &[]).0
    }

    /// Pins and returns the reply and the window descriptors, or the errno.
    fn pin(
        &mut self,
        f: &File,
        off: u64,
        len: u64,
        ro: bool,
    ) -> Result<(Grant, Vec<OwnedFd>), i32> {
        let req = Request::Pin {
            offset: off,
            len,
            read_only: ro,
            unbreakable: false,
        };
        match self.ask(&req, &[f.as_raw_fd()]) {
            (Reply::Pinned(g), fds) => Ok((g, fds)),
            (Reply::Failed { errno, .. }, _) => Err(errno),
            (other, _) => panic!("a pin answered {other:?}"),
        }
    }
}

/// Maps all of a window descriptor shared, with `prot`; the errno on failure.
fn map_all(fd: &OwnedFd, prot: i32) -> Result<&'static mut [u8], i32> {
    let len = fs::File::from(fd.try_clone().unwrap())
        .metadata()
        .unwrap()
        .len() as usize;
    // SAFETY: a fresh shared mapping of the whole memfd; leaked for the process's lifetime.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(std::slice::from_raw_parts_mut(p.cast(), len))
    }
}

fn rw() -> i32 {
    libc::PROT_READ | libc::PROT_WRITE
}

fn write_file(p: &Path, byte: u8, len: usize, mode: u32) -> File {
    let f = new_file(p);
    f.write_all_at(&vec![byte; len], 0).unwrap();
    f.sync_all().unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    f
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// In a forked child: becomes `uid`/`gid` with supplementary `groups`, or leaves with
/// status 3.
fn become_user(uid: u32, gid: u32, groups: &[u32]) {
    // SAFETY: identity changes of this (child) process, each checked; _exit on failure.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            libc::_exit(3);
        }
    }
}

/// A pipe: its read end and its write end.
fn pipe() -> [i32; 2] {
    let mut p = [0i32; 2];
    // SAFETY: pipe(2) into an array of two.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    p
}

/// Runs `f` in a child with the given identity (supplementary groups as given).
fn as_user(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> bool) -> bool {
    // SAFETY: fork in a test; the child changes identity, runs `f` and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            become_user(uid, gid, groups);
            let ok = f();
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

fn busy_blocks(m: &Mount) -> u64 {
    let s = Connection::for_path(&m.mnt).unwrap().status(false).unwrap();
    let s: pinfs::fs::status::Status = serde_json::from_str(&s).unwrap();
    s.space.busy_blocks
}

#[test]
fn a_read_only_pin_gives_a_descriptor_that_cannot_write() {
    if skip_without_fuse("hostile_ro_pin") {
        return;
    }
    let _serial = one_at_a_time();
    let mut m = Mount::new("64M", "allow_other");
    write_file(&m.path("rootfile"), b'r', 8192, 0o644);
    // Also on a read-only mount, where even root may not write.
    for options in ["allow_other", "allow_other,ro"] {
        if options.ends_with(",ro") {
            m.remount(options);
        }
        read_only_pin_cannot_write(&m);
    }
}

fn read_only_pin_cannot_write(m: &Mount) {
    let p = m.path("rootfile");
    let mnt = m.mnt.clone();
    assert!(as_nobody(|| {
        let f = File::open(&p).unwrap();
        let mut c = Raw::connect(&mnt);
        let Ok((_, fds)) = c.pin(&f, 0, 8192, true) else {
            say("the read-only pin was refused");
            return false;
        };
        let w = map_all(&fds[0], rw());
        let r = map_all(&fds[0], libc::PROT_READ);
        // SAFETY: pwrite/ftruncate/fallocate on a descriptor we own, from a buffer we own.
        let (pw, tr, pu) = unsafe {
            (
                libc::pwrite(fds[0].as_raw_fd(), b"x".as_ptr().cast(), 1, 0),
                libc::ftruncate(fds[0].as_raw_fd(), 0),
                libc::fallocate(fds[0].as_raw_fd(), 3, 0, 4096),
            )
        };
        // Reopening the memfd through /proc for writing: the daemon made it 0600.
        let reopen = OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fds[0].as_raw_fd()));
        let ok = w == Err(libc::EACCES)
            && r.as_ref().is_ok_and(|r| r[0] == b'r')
            && pw < 0
            && tr < 0
            && pu < 0
            && reopen.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EACCES);
        if !ok {
            say(&format!(
                "write map {:?}, read map ok {}, pwrite {pw} truncate {tr} punch {pu}, reopen {:?}",
                w.map(|_| ()),
                r.is_ok(),
                reopen.map(|_| ())
            ));
        }
        ok
    }));
    let mut back = vec![0u8; 8192];
    File::open(&p).unwrap().read_exact_at(&mut back, 0).unwrap();
    assert!(back.iter().all(|&b| b == b'r'), "the file is unchanged");
}

#[test]
fn a_pin_needs_a_descriptor_that_may_read_and_write_for_what_it_asks() {
    if skip_without_fuse("hostile_modes") {
        return;
    }
    let _serial = one_at_a_time();
    let m = Mount::new("64M", "allow_other");
    write_file(&m.path("dropbox"), b's', 4096, 0o622);
    let p = m.path("dropbox");
    let mnt = m.mnt.clone();
    assert!(as_nobody(|| {
        // nobody may only write this file: it may not read it through a window.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        let mut c = Raw::connect(&mnt);
        let w = c.pin(&f, 0, 4096, false).map(|_| ());
        let r = c.pin(&f, 0, 4096, true).map(|_| ());
        if w != Err(libc::EACCES) || r != Err(libc::EACCES) {
            say(&format!(
                "write-only descriptor: writable pin {w:?}, read pin {r:?}"
            ));
            return false;
        }
        // An O_PATH descriptor was checked for nothing.
        let opath = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&p)
            .unwrap();
        let o = c.pin(&opath, 0, 4096, true).map(|_| ());
        if o != Err(libc::EBADF) {
            say(&format!("O_PATH descriptor: {o:?}"));
            return false;
        }
        true
    }));
}

use std::os::unix::fs::OpenOptionsExt;

#[test]
fn supplementary_groups_count_because_the_descriptor_does() {
    if skip_without_fuse("hostile_groups") {
        return;
    }
    let _serial = one_at_a_time();
    let m = Mount::new("64M", "allow_other");
    write_file(&m.path("team"), b'g', 4096, 0o640);
    // SAFETY: chown of a NUL-terminated path.
    assert_eq!(
        unsafe { libc::chown(cstr(&m.path("team")).as_ptr(), 0, 4242) },
        0
    );
    let p = m.path("team");
    let mnt = m.mnt.clone();
    // uid 65534, primary group 65534, member of 4242 only as a supplementary group.
    assert!(as_user(65534, 65534, &[4242], || {
        let f = File::open(&p).unwrap();
        let mut c = Raw::connect(&mnt);
        match c.pin(&f, 0, 4096, true) {
            Ok((_, fds)) => map_all(&fds[0], libc::PROT_READ).is_ok_and(|w| w[0] == b'g'),
            Err(e) => {
                say(&format!("read pin by a supplementary member: errno {e}"));
                false
            }
        }
    }));
}

#[test]
fn a_reader_cannot_make_a_pin_allocate_and_memory_comes_back() {
    if skip_without_fuse("hostile_alloc") {
        return;
    }
    let _serial = one_at_a_time();
    let m = Mount::new("512M", "allow_other");
    let sparse = new_file(m.path("sparse"));
    sparse.set_len(200 << 20).unwrap();
    fs::set_permissions(m.path("sparse"), fs::Permissions::from_mode(0o644)).unwrap();
    let before = fs::metadata(m.path("sparse")).unwrap().blocks();
    let p = m.path("sparse");
    let mnt = m.mnt.clone();
    assert!(as_nobody(|| {
        let f = File::open(&p).unwrap();
        let r = Raw::connect(&mnt).pin(&f, 0, 4 << 20, true).map(|_| ());
        if r != Err(libc::EACCES) {
            say(&format!("a reader's pin over holes: {r:?}"));
        }
        r == Err(libc::EACCES)
    }));
    assert_eq!(
        fs::metadata(m.path("sparse")).unwrap().blocks(),
        before,
        "nothing was allocated"
    );
    // The owner may: its pin fills the holes. Once unpinned, the daemon keeps no window
    // memory and no window descriptor.
    let pid = m.daemon_pid();
    // The memory a window holds: the bytes its memfd has allocated (the holder's descriptor
    // says so, whatever else the machine does meanwhile).
    let held = |fds: &[OwnedFd]| -> u64 {
        fds.iter()
            .map(|fd| {
                File::from(fd.try_clone().unwrap())
                    .metadata()
                    .unwrap()
                    .blocks()
                    * 512
            })
            .sum()
    };
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut c = Raw::connect(&m.mnt);
    c.ask(&Request::Hello, &[]);
    let fds_before = fd_count(pid);
    let (reply, fds) = c.pin(&f, 0, 128 << 20, false).expect("the owner's pin");
    assert!(held(&fds) >= 128 << 20, "the window holds the pinned bytes");
    assert_eq!(c.unpin(reply.pin), Reply::Done);
    assert_eq!(
        held(&fds),
        0,
        "the window's memory went back, though the holder keeps its descriptor"
    );
    drop(fds);
    assert_eq!(
        fd_count(pid),
        fds_before,
        "the daemon closed the window's descriptor"
    );
}

/// The attack of a holder that keeps its mapping after its pin is gone (`how`: unpin, close
/// the connection, or die while a forked child goes on): another user's new file takes the
/// freed blocks; the old mapping must neither see nor change it, before and after a remount.
fn keep_mapping_after_the_pin(how: &str, options: &str) -> (bool, bool) {
    let mut m = Mount::new("64M", &format!("allow_other,{options}"));
    let mine = write_file(&m.path("mine"), b'm', 1 << 20, 0o666);
    drop(mine);
    let p = m.path("mine");
    let mnt = m.mnt.clone();
    // The attacker (uid 65534) pins its own file, maps the window, and reports through a pipe
    // when it is ready for the victim's file; then reads and writes through the mapping.
    let [rd, wr] = pipe();
    let go = pipe();
    let how = how.to_string();
    // SAFETY: fork in a test; the child runs the attack and leaves with _exit.
    let attacker = unsafe { libc::fork() };
    if attacker == 0 {
        become_user(65534, 65534, &[]);
        // SAFETY: raw I/O in the child, all checked.
        unsafe {
            let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
            let mut c = Raw::connect(&mnt);
            let Ok((reply, fds)) = c.pin(&f, 0, 1 << 20, false) else {
                libc::_exit(4);
            };
            let w = map_all(&fds[0], rw()).unwrap();
            let pin = reply.pin;
            match how.as_str() {
                "unpin" => {
                    c.unpin(pin);
                }
                "close" => drop(c),
                _ => {
                    // A child inherits the mapping; the parent (the holder) is killed. (A
                    // child that also kept the socket would still be the holder: its leases
                    // break and revoke like any holder's.)
                    let child = libc::fork();
                    if child != 0 {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                    drop(c);
                    libc::sleep(1);
                }
            }
            drop(fds);
            // Once the daemon has let go of the pin (a disconnect or a death is noticed a
            // moment later), the attacker truncates its file and makes that durable (else the
            // journal flusher does a second later): its blocks are free for anyone.
            for _ in 0..100 {
                let (st, _) = Raw::connect(&mnt).ask(&Request::Status { table: false }, &[]);
                let gone = match st {
                    Reply::Document(json) => {
                        serde_json::from_str::<pinfs::fs::status::Status>(&json)
                            .is_ok_and(|s| s.leases.is_empty())
                    }
                    _ => false,
                };
                if gone {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if f.set_len(0).is_err() || f.sync_all().is_err() {
                libc::_exit(5);
            }
            drop(f);
            libc::write(wr, b"r".as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(go[0], b.as_mut_ptr().cast(), 1);
            // What can it see, and what can it change?
            let saw = w.contains(&b'V');
            w.fill(b'X');
            libc::write(wr, if saw { b"S" } else { b"n" }.as_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: read(2) of one byte from our pipe.
    assert_eq!(
        unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) },
        1,
        "the attacker pinned"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(busy_blocks(&m), 0, "nothing is busy once the pin is gone");
    // The victim: root's 0600 file takes the space.
    let victim = write_file(&m.path("secret"), b'V', 8 << 20, 0o600);
    drop(victim);
    // SAFETY: write(2) of one byte to our pipe.
    unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) },
        1,
        "the attacker stored"
    );
    let saw = b[0] == b'S';
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(attacker, &mut status, 0) };
    std::thread::sleep(Duration::from_millis(1500)); // the forked grandchild's stores
    let clean = |m: &Mount| {
        let mut data = vec![0u8; 8 << 20];
        File::open(m.path("secret"))
            .unwrap()
            .read_exact_at(&mut data, 0)
            .unwrap();
        data.iter().all(|&x| x == b'V')
    };
    let mut intact = clean(&m);
    m.remount(&format!("allow_other,{options}"));
    intact &= clean(&m);
    (saw, intact)
}

#[test]
fn a_mapping_kept_after_unpin_reaches_no_other_file() {
    if skip_without_fuse("hostile_after_unpin") {
        return;
    }
    let _serial = one_at_a_time();
    assert_eq!(keep_mapping_after_the_pin("unpin", ""), (false, true));
}

#[test]
fn a_mapping_kept_after_the_connection_closed_reaches_no_other_file() {
    if skip_without_fuse("hostile_after_close") {
        return;
    }
    let _serial = one_at_a_time();
    assert_eq!(keep_mapping_after_the_pin("close", ""), (false, true));
}

#[test]
fn a_forked_child_of_a_killed_holder_reaches_no_other_file() {
    if skip_without_fuse("hostile_fork") {
        return;
    }
    let _serial = one_at_a_time();
    assert_eq!(keep_mapping_after_the_pin("fork", ""), (false, true));
}

#[test]
fn without_detaching_windows_the_kept_mapping_corrupts_the_next_file() {
    if skip_without_fuse("hostile_no_detach") {
        return;
    }
    let _serial = one_at_a_time();
    // The debug switch shows what detaching prevents (and that the tests above can fail).
    let (saw, intact) = keep_mapping_after_the_pin("unpin", "detach_windows=off");
    assert!(
        saw || !intact,
        "the old behaviour lets the holder reach the new file"
    );
}

#[test]
fn a_small_pin_inside_an_old_large_window_gets_only_its_own_blocks() {
    if skip_without_fuse("hostile_small_pin") {
        return;
    }
    let _serial = one_at_a_time();
    let m = Mount::new("64M", "allow_other");
    let f = write_file(&m.path("shared"), b'a', 1 << 20, 0o666);
    drop(f);
    // Root pins and unpins 1 MiB (the old code kept that window for the life of the mount).
    let rf = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("shared"))
        .unwrap();
    let mut root = Raw::connect(&m.mnt);
    let (big, _) = root.pin(&rf, 0, 1 << 20, false).unwrap();
    root.unpin(big.pin);
    let p = m.path("shared");
    let mnt = m.mnt.clone();
    let (go, ready) = (pipe(), pipe());
    // SAFETY: fork in a test; the child pins 4 KiB, waits, then tries its descriptor.
    let child = unsafe { libc::fork() };
    if child == 0 {
        become_user(65534, 65534, &[]);
        // SAFETY: raw I/O in the child, all checked.
        unsafe {
            let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
            let mut c = Raw::connect(&mnt);
            let Ok((_, fds)) = c.pin(&f, 0, 4096, false) else {
                libc::_exit(4);
            };
            let size: u64 = fds
                .iter()
                .map(|fd| {
                    File::from(fd.try_clone().unwrap())
                        .metadata()
                        .unwrap()
                        .len()
                })
                .sum();
            let w = map_all(&fds[0], rw()).unwrap();
            libc::write(ready[1], b"r".as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(go[0], b.as_mut_ptr().cast(), 1);
            let saw = w.contains(&b'V');
            w.fill(b'X');
            libc::_exit(if size <= 8192 && !saw { 0 } else { 1 });
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: read(2) of one byte from our pipe.
    assert_eq!(unsafe { libc::read(ready[0], b.as_mut_ptr().cast(), 1) }, 1);
    // Past the small pin nothing is pinned: the truncate breaks nothing; root's secret file
    // takes the freed blocks.
    rf.set_len(4096).unwrap();
    drop(write_file(&m.path("secret"), b'V', 4 << 20, 0o600));
    // SAFETY: write(2) of one byte to our pipe.
    unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) };
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the 4 KiB pin got a window of at most its block (+ a page) and saw no other file"
    );
    let mut data = vec![0u8; 4 << 20];
    File::open(m.path("secret"))
        .unwrap()
        .read_exact_at(&mut data, 0)
        .unwrap();
    assert!(data.iter().all(|&x| x == b'V'), "the secret file is intact");
}

#[test]
fn pinned_bytes_per_user_are_bounded_like_locked_memory() {
    if skip_without_fuse("hostile_quota") {
        return;
    }
    let _serial = one_at_a_time();
    for (options, allowed) in [
        ("allow_other", 8u64 << 20),
        ("allow_other,max_pinned=16M", 16 << 20),
    ] {
        let m = Mount::new("128M", options);
        drop(write_file(&m.path("big"), b'b', 32 << 20, 0o666));
        let holes = m.path("holes");
        new_file(&holes).set_len(32 << 20).unwrap();
        fs::set_permissions(&holes, fs::Permissions::from_mode(0o666)).unwrap();
        let p = m.path("big");
        let mnt = m.mnt.clone();
        assert!(as_nobody(|| {
            // SAFETY: setrlimit of our own process with a struct we own.
            unsafe {
                let lim = libc::rlimit {
                    rlim_cur: 8 << 20,
                    rlim_max: 8 << 20,
                };
                libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
            }
            let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
            let mut c = Raw::connect(&mnt);
            let mut d = Raw::connect(&mnt);
            let first = c.pin(&f, 0, allowed / 2, false).map(|_| ());
            // A second connection of the same user shares the bound.
            let second = d.pin(&f, allowed / 2, allowed / 2, false).map(|_| ());
            let over = d.pin(&f, allowed, 4096, false).map(|_| ());
            // A pin refused for the limit fills no hole either.
            let h = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&holes)
                .unwrap();
            let over_holes = d.pin(&h, 0, 1 << 20, false).map(|_| ());
            let allocated = h.metadata().unwrap().blocks();
            let ok = first.is_ok()
                && second.is_ok()
                && over == Err(libc::ENOMEM)
                && over_holes == Err(libc::ENOMEM)
                && allocated == 0;
            if !ok {
                say(&format!(
                    "{options}: {first:?} {second:?} {over:?} {over_holes:?}, {allocated} sectors"
                ));
            }
            ok
        }));
        // Root is not bounded.
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        assert!(Raw::connect(&m.mnt).pin(&f, 0, 32 << 20, false).is_ok());
    }
}

#[test]
fn descriptors_of_gone_pins_are_closed() {
    if skip_without_fuse("hostile_descriptors") {
        return;
    }
    let _serial = one_at_a_time();
    let m = Mount::new("64M", "");
    drop(write_file(&m.path("many"), b'd', 8 << 20, 0o644));
    let pid = m.daemon_pid();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("many"))
        .unwrap();
    let mut c = Raw::connect(&m.mnt);
    let base = fd_count(pid);
    for round in 0..3 {
        let mut pins = Vec::new();
        for k in 0..2000u64 {
            let (r, _) = c.pin(&f, k * 4096, 4096, false).expect("a small pin");
            pins.push(r.pin);
        }
        for p in pins {
            c.unpin(p);
        }
        assert!(
            fd_count(pid) <= base + 2,
            "round {round}: the daemon holds {} descriptors, {base} before",
            fd_count(pid)
        );
    }
    // A daemon out of descriptors says so (EMFILE, not ENOSPC), and recovers.
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit of the daemon (our own uid) with structs we own.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let lim = libc::rlimit {
        rlim_cur: (fd_count(pid) + 6) as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let mut pins = Vec::new();
    let errno = loop {
        match c.pin(&f, pins.len() as u64 * 4096, 4096, false) {
            Ok((r, _)) => pins.push(r.pin),
            Err(e) => break e,
        }
        assert!(pins.len() < 100, "the descriptor limit never bit");
    };
    assert_eq!(errno, libc::EMFILE, "what ran out is descriptors");
    for p in pins {
        c.unpin(p);
    }
    // SAFETY: as above, putting the old limit back.
    assert_eq!(
        unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &old,
                std::ptr::null_mut(),
            )
        },
        0
    );
    assert!(c.pin(&f, 0, 4096, false).is_ok(), "pins work again");
}

#[test]
fn a_shared_mapping_through_the_mount_does_not_write_back_over_a_holders_stores() {
    if skip_without_fuse("hostile_mmap") {
        return;
    }
    let _serial = one_at_a_time();
    let m = Mount::new("64M", "");
    drop(write_file(&m.path("mm"), b'.', 4096, 0o644));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("mm"))
        .unwrap();
    // A process maps the file through the mount and reads it: the kernel caches the page.
    // SAFETY: a shared mapping of one page of our file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            rw(),
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    // SAFETY: reading the first byte of the live mapping.
    assert_eq!(unsafe { *(map as *const u8) }, b'.');
    // A holder stores into the second half of the block, then unpins.
    let mut c = Raw::connect(&m.mnt);
    let (reply, fds) = c.pin(&f, 0, 4096, false).unwrap();
    let w = map_all(&fds[0], rw()).unwrap();
    w[2048..].fill(b'H');
    c.unpin(reply.pin);
    // The mapping stores into the first bytes and syncs: the kernel writes its page back.
    // SAFETY: storing into and syncing our live mapping, then unmapping it.
    unsafe {
        std::ptr::copy_nonoverlapping(b"MMMM".as_ptr(), map as *mut u8, 4);
        assert_eq!(libc::msync(map, 4096, libc::MS_SYNC), 0);
        libc::munmap(map, 4096);
    }
    let mut back = vec![0u8; 4096];
    f.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back[..4], b"MMMM");
    assert!(
        back[2048..].iter().all(|&b| b == b'H'),
        "the holder's stores survive the mapping's write-back"
    );
}

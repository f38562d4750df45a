//! The holder socket against hostile clients, on real mounts: who may connect, what an
//! unprivileged caller sees of others, idle connections, the per-user bound, a holder that
//! never reads, replies of any size, empty packets. Each test failed on the server with two
//! threads per connection and one packet per reply.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use pinfs::fs::status::Status;
use pinfs::holder::client::{Connection, PinOptions};
use pinfs::holder::protocol::{socket_path, Packet};

fn sock_of(m: &Mount) -> PathBuf {
    socket_path(fs::metadata(&m.mnt).unwrap().dev())
}

fn threads_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

fn rss_kb(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The errno of connect(2) to `path` (0: connected).
fn connect_errno(path: &std::path::Path) -> i32 {
    let c = cstr(path);
    // SAFETY: socket and connect with a sockaddr_un filled within its size; the socket is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(c.as_bytes_with_nul()) {
            *d = *s as libc::c_char;
        }
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        let e = if rc == 0 { 0 } else { errno() };
        libc::close(fd);
        e
    }
}

/// Runs `f` as uid 65534 (see `as_nobody`); a panic in the child is a failure of the child,
/// never a second copy of the test harness running on.
fn nobody(f: impl FnOnce() -> bool) -> bool {
    as_nobody(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
            eprintln!("the child (uid 65534) panicked");
            false
        })
    })
}

/// This test process needs more descriptors than the usual soft limit of 1024.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a struct on our stack.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

fn status(m: &Mount) -> Status {
    parse_status(&Connection::for_path(&m.mnt).unwrap().status(false).unwrap())
}

/// Does a lease of `s` show `path` (`None`: a hidden path)?
fn path_shown(s: &Status, path: Option<&str>) -> bool {
    s.leases.iter().any(|l| l.path.as_deref() == path)
}

fn parse_status(json: &str) -> Status {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("status --json: {e}: {json}"))
}

/// Receives one packet as text, waiting at most 10 s.
fn recv_text(p: &Packet) -> String {
    assert!(
        p.wait_readable(Some(Duration::from_secs(10))).unwrap(),
        "no reply within 10 s"
    );
    let (b, _) = p.recv().unwrap().expect("a packet, not the end");
    String::from_utf8(b).unwrap()
}

fn file(m: &Mount, name: &str, len: usize) -> fs::File {
    let f = new_file(m.path(name));
    f.write_all_at(&vec![b'.'; len], 0).unwrap();
    f
}

#[test]
fn only_those_who_may_use_the_mount_connect() {
    if skip_without_fuse("hostile_connect") {
        return;
    }
    let mut m = Mount::new("16M", "noallow_other");
    let sock = sock_of(&m);
    let md = fs::metadata(&sock).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(md.uid(), 0, "owned by the daemon's user");
    let s = sock.clone();
    assert!(
        nobody(move || connect_errno(&s) == libc::EACCES),
        "uid 65534 connects to the socket of a noallow_other mount"
    );
    // Defence in depth: even through a socket file opened up by mistake, the daemon checks
    // the peer's credentials and refuses with one packet.
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let s = sock.clone();
    assert!(
        nobody(move || {
            let Ok(p) = Packet::connect(&s) else {
                return false;
            };
            let reply = recv_text(&p);
            let refused = reply.starts_with("? err errno=13 ") && reply.contains("65534");
            // Then the daemon closed the connection.
            refused && p.wait_readable(Some(Duration::from_secs(5))).unwrap() && p.hung_up()
        }),
        "the daemon refuses uid 65534 at accept with EACCES"
    );
    // Root may always.
    status(&m);

    m.remount("allow_other");
    let sock = sock_of(&m);
    assert_eq!(
        fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o666
    );
    let mnt = m.mnt.clone();
    assert!(
        nobody(move || Connection::for_path(&mnt)
            .and_then(|mut c| c.status(false))
            .is_ok_and(|s| serde_json::from_str::<Status>(&s).is_ok())),
        "with allow_other, uid 65534 is served"
    );
}

#[test]
fn an_unprivileged_caller_sees_only_its_own_holders_fully() {
    if skip_without_fuse("hostile_visibility") {
        return;
    }
    let m = Mount::new("16M", "allow_other");
    fs::create_dir(m.path("secret")).unwrap();
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o700)).unwrap();
    let secret = file(&m, "secret/root-file", 4096);
    let mut root = Connection::for_file(&secret).unwrap();
    let _root_pin = root.pin(&secret, 0, 4096, PinOptions::default()).unwrap();
    let root_holder = root.holder_id().unwrap();
    let open = file(&m, "open-file", 4096);
    let _open_pin = root.pin(&open, 0, 4096, PinOptions::default()).unwrap();
    let mine = file(&m, "nobody-file", 4096);
    fs::set_permissions(m.path("nobody-file"), fs::Permissions::from_mode(0o666)).unwrap();
    drop(mine);
    let (mnt, root_pid) = (m.mnt.clone(), std::process::id());
    assert!(nobody(move || {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(mnt.join("nobody-file"))
            .unwrap();
        let mut c = Connection::for_file(&f).unwrap();
        let _pin = c.pin(&f, 0, 4096, PinOptions::default()).unwrap();
        let me = c.holder_id().unwrap();
        let s = c.status(false).unwrap();
        let doc = parse_status(&s);
        let t = c.status(true).unwrap();
        // SAFETY: getpid has no preconditions.
        let my_pid = unsafe { libc::getpid() };
        let checks = [
            (
                doc.holders
                    .iter()
                    .any(|h| h.id == me && h.pid == Some(my_pid as u32) && h.comm.is_some()),
                "own holder with pid and command",
            ),
            (
                path_shown(&doc, Some("/nobody-file")),
                "own lease with its path",
            ),
            (
                doc.holders
                    .iter()
                    .any(|h| h.id == root_holder && h.pid.is_none() && h.comm.is_none()),
                "root's holder without pid and command",
            ),
            (
                !doc.holders.iter().any(|h| h.pid == Some(root_pid)),
                "no root pid",
            ),
            // Not a word of it anywhere in the document.
            (!s.contains("secret"), "no path in the 0700 directory"),
            (path_shown(&doc, None), "the hidden lease has a null path"),
            (
                path_shown(&doc, Some("/open-file")),
                "root's lease on a reachable file keeps its path",
            ),
            (
                !t.contains("secret") && t.contains("ino:"),
                "the table hides the path too",
            ),
            (
                !t.contains(&format!(" {root_pid} ")),
                "the table hides root's pid",
            ),
        ];
        let mut ok = true;
        for (good, what) in checks {
            if !good {
                eprintln!("{what}:\n{s}\n{t}");
                ok = false;
            }
        }
        ok
    }));
    // Root sees everything.
    let s = status(&m);
    assert!(
        path_shown(&s, Some("/secret/root-file"))
            && s.holders.iter().any(|h| h.pid == Some(root_pid)),
        "{s:?}"
    );
}

#[test]
fn idle_connections_cost_no_thread() {
    if skip_without_fuse("hostile_idle") {
        return;
    }
    raise_fd_limit();
    let m = Mount::new("16M", "");
    let pid = m.daemon_pid();
    let sock = sock_of(&m);
    let before = threads_of(pid);
    let conns: Vec<Packet> = (0..1000).map(|_| Packet::connect(&sock).unwrap()).collect();
    // A request on a later connection is answered once all the earlier ones were accepted.
    status(&m);
    let after = threads_of(pid);
    eprintln!("daemon threads: {before} before, {after} with 1000 idle connections");
    assert!(
        after <= before + 5,
        "1000 idle connections grew the daemon from {before} to {after} threads"
    );
    // They all work.
    for (i, c) in conns.iter().enumerate().step_by(97) {
        c.send(&format!("{i} hello"), &[]).unwrap();
        assert!(recv_text(c).starts_with(&format!("{i} ok holder=")));
    }
}

/// Forks a child that becomes uid 65534 and runs `f` with a pipe from the parent: it reads
/// one byte from the pipe to know when to finish.
fn nobody_until_told(f: impl FnOnce(&dyn Fn()) -> bool) -> (libc::pid_t, OwnedFd, OwnedFd) {
    let mut go = [0; 2];
    let mut ready = [0; 2];
    // SAFETY: pipe() fills the arrays; fork in a test process, the child only runs `f` and
    // exits with _exit.
    unsafe {
        assert_eq!(libc::pipe(go.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::setgroups(0, std::ptr::null());
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(3);
            }
            let wait = || {
                libc::write(ready[1], b"r".as_ptr().cast(), 1);
                let mut b = [0u8; 1];
                libc::read(go[0], b.as_mut_ptr().cast(), 1);
            };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&wait)))
                .unwrap_or(false);
            libc::_exit(if ok { 0 } else { 1 });
        }
        libc::close(go[0]);
        libc::close(ready[1]);
        (
            pid,
            OwnedFd::from_raw_fd(go[1]),
            OwnedFd::from_raw_fd(ready[0]),
        )
    }
}

#[test]
fn connections_per_user_are_bounded_root_is_not() {
    if skip_without_fuse("hostile_per_uid") {
        return;
    }
    raise_fd_limit();
    let m = Mount::new("16M", "allow_other");
    let sock = sock_of(&m);
    let s = sock.clone();
    let (child, go, ready) = nobody_until_told(move |wait| {
        let held: Vec<Packet> = (0..pinfs::daemon::holders::MAX_CONNS_PER_UID)
            .map(|_| Packet::connect(&s).unwrap())
            .collect();
        for (i, c) in held.iter().enumerate() {
            c.send(&format!("{i} hello"), &[]).unwrap();
            if !recv_text(c).starts_with(&format!("{i} ok")) {
                return false;
            }
        }
        let extra = Packet::connect(&s).unwrap();
        let reply = recv_text(&extra);
        let want = format!(
            "? err errno=11 too many connections for uid 65534 (limit {})",
            pinfs::daemon::holders::MAX_CONNS_PER_UID
        );
        if !reply.starts_with(&want) {
            eprintln!("{reply}");
            return false;
        }
        wait();
        true
    });
    let mut b = [0u8; 1];
    // SAFETY: read of one byte from our pipe.
    assert_eq!(
        unsafe { libc::read(ready.as_raw_fd(), b.as_mut_ptr().cast(), 1) },
        1,
        "the child holds its connections"
    );
    // Root, meanwhile, is not bounded.
    let mine: Vec<Packet> = (0..pinfs::daemon::holders::MAX_CONNS_PER_UID + 10)
        .map(|_| Packet::connect(&sock).unwrap())
        .collect();
    let last = mine.last().unwrap();
    last.send("1 hello", &[]).unwrap();
    assert!(recv_text(last).starts_with("1 ok holder="));
    // SAFETY: write of one byte to our pipe; waitpid on our child.
    let code = unsafe {
        libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
        libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st))
    };
    assert_eq!(code, Some(0), "the child's checks (see its stderr)");
    // Its connections gone, uid 65534 may connect again.
    let mnt = m.mnt.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mnt = mnt.clone();
        if nobody(move || {
            Connection::for_path(&mnt)
                .and_then(|mut c| c.status(false))
                .is_ok()
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "uid 65534 still refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the refusal reaches a client that sends first, with its errno.
    let (s, mnt) = (sock.clone(), m.mnt.clone());
    let (child, go, ready) = nobody_until_told(move |wait| {
        // The daemon notices the first child's closed connections one by
        // one, so a few of these may still be refused: retry until all of
        // them are accepted, which leaves this uid exactly at its limit.
        let deadline = Instant::now() + Duration::from_secs(10);
        let _held = loop {
            let held: Vec<Packet> = (0..pinfs::daemon::holders::MAX_CONNS_PER_UID)
                .map(|_| Packet::connect(&s).unwrap())
                .collect();
            // A refused connection may be shut before the request goes out (EPIPE): not
            // accepted either.
            let accepted = held.iter().enumerate().all(|(i, c)| {
                c.send(&format!("{i} hello"), &[]).is_ok()
                    && recv_text(c).starts_with(&format!("{i} ok"))
            });
            if accepted {
                break held;
            }
            if Instant::now() > deadline {
                eprintln!("uid 65534 never got all its connections back");
                return false;
            }
            drop(held);
            std::thread::sleep(Duration::from_millis(50));
        };
        let errno = Connection::for_path(&mnt)
            .and_then(|mut c| c.status(false))
            .err()
            .and_then(|e| e.errno());
        if errno != Some(libc::EAGAIN) {
            eprintln!("the client's request past the limit: errno {errno:?}");
        }
        wait();
        errno == Some(libc::EAGAIN)
    });
    // SAFETY: as above.
    let code = unsafe {
        libc::read(ready.as_raw_fd(), b.as_mut_ptr().cast(), 1);
        libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
        libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st))
    };
    assert_eq!(code, Some(0), "the refusal after a request (see stderr)");
}

#[test]
fn a_holder_that_never_reads_is_dropped_and_its_pins_released() {
    if skip_without_fuse("hostile_no_reader") {
        return;
    }
    let m = Mount::new("64M", "");
    let pid = m.daemon_pid();
    let f = file(&m, "buf", 64 * 4096);
    // A few dozen pins make each status reply a few kilobytes.
    let mut other = Connection::for_file(&f).unwrap();
    let _pins: Vec<_> = (0..32)
        .map(|i| {
            other
                .pin(&f, i * 4096, 4096, PinOptions::default())
                .unwrap()
        })
        .collect();
    let bad = Packet::connect(&sock_of(&m)).unwrap();
    bad.send("1 pin offset=0 len=4096", &[f.as_raw_fd()])
        .unwrap();
    // The pin's `granted` event may come before its reply.
    let reply = loop {
        let r = recv_text(&bad);
        if !r.starts_with("event ") {
            break r;
        }
    };
    assert!(reply.starts_with("1 ok pin="), "{reply}");
    let rss_before = rss_kb(pid);
    let start = Instant::now();
    let mut sent = 0u64;
    let cut_off = loop {
        match bad.send(&format!("{} status", sent + 2), &[]) {
            Ok(()) => sent += 1,
            Err(e) => break Some(e),
        }
        if sent.is_multiple_of(1000) {
            // Others are served meanwhile.
            status(&m);
        }
        if sent > 200_000 || start.elapsed() > Duration::from_secs(60) {
            break None;
        }
    };
    let rss_after = rss_kb(pid);
    eprintln!(
        "non-reader cut off after {sent} status requests in {:?} ({cut_off:?}); daemon RSS {rss_before} kB -> {rss_after} kB",
        start.elapsed()
    );
    let e = cut_off.expect("a holder that never reads its replies is disconnected");
    // EPIPE or ECONNRESET (the client's socket wraps them with a message: by kind).
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "daemon RSS grew from {rss_before} kB to {rss_after} kB"
    );
    // Its pin is gone (the other holder's 32 stay), and the daemon serves as before.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&m).leases.len() != 32 {
        assert!(Instant::now() < deadline, "{:?}", status(&m));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(other.holder_id().unwrap(), _pins[0].holder);
}

#[test]
fn replies_of_any_size_arrive_whole() {
    if skip_without_fuse("hostile_big_replies") {
        return;
    }
    raise_fd_limit();
    let m = Mount::new("256M", "lease_break_time=0");
    const PINS: u64 = 10_000;
    let f = file(&m, "big", (PINS * 4096) as usize);
    let mut c = Connection::for_file(&f).unwrap();
    let start = Instant::now();
    let pins: Vec<_> = (0..PINS)
        .map(|i| c.pin(&f, i * 4096, 4096, PinOptions::default()).unwrap())
        .collect();
    eprintln!("{PINS} pins in {:?}", start.elapsed());
    let mut q = Connection::for_path(&m.mnt).unwrap();
    let t = Instant::now();
    let json = q.status(false).unwrap();
    let json_time = t.elapsed();
    let t = Instant::now();
    let table = q.status(true).unwrap();
    let table_time = t.elapsed();
    let t = Instant::now();
    let events = q.events().unwrap();
    let events_time = t.elapsed();
    eprintln!(
        "status --json: {} bytes in {json_time:?}; table: {} bytes in {table_time:?}; events: {} bytes in {events_time:?}",
        json.len(),
        table.len(),
        events.len()
    );
    assert!(json.len() > 1 << 20, "{} bytes", json.len());
    assert_eq!(parse_status(&json).leases.len() as u64, PINS);
    assert_eq!(table.matches(" granted ").count() as u64, PINS);
    assert!(events.len() > 64 * 1024);
    let list: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    assert!(list.iter().filter(|e| e["event"] == "granted").count() >= 1000);
    assert!(json_time < Duration::from_secs(2) && table_time < Duration::from_secs(2));
    // The command line gets them too.
    let mnt = m.mnt.to_str().unwrap();
    let out = pinfs(&["status", mnt, "--json"]);
    assert!(out.status.success());
    assert_eq!(
        parse_status(&String::from_utf8_lossy(&out.stdout))
            .leases
            .len() as u64,
        PINS
    );
    let out = pinfs(&["status", mnt, "--events"]);
    assert!(out.status.success());
    assert!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).is_ok_and(|l| !l.is_empty())
    );
    let out = pinfs(&["status", mnt]);
    assert!(out.status.success());
    // A holder's own big status does not cost it its pins.
    let own = c.status(false).unwrap();
    assert_eq!(parse_status(&own).leases.len() as u64, PINS);
    c.unpin(&pins[0]).unwrap();
}

#[test]
fn an_empty_packet_is_an_error_and_the_session_goes_on() {
    if skip_without_fuse("hostile_empty") {
        return;
    }
    let m = Mount::new("16M", "");
    let f = file(&m, "buf", 4096);
    let mut c = Connection::for_file(&f).unwrap();
    let mut pin = c.pin(&f, 0, 4096, PinOptions::default()).unwrap();
    let reply = c.raw_exchange(b"").unwrap();
    assert!(reply.starts_with("? err errno=22 empty message"), "{reply}");
    // The session and its pin survive.
    std::thread::sleep(Duration::from_millis(100));
    assert!(status(&m).leases.iter().any(|l| l.state == "granted"));
    assert_eq!(c.holder_id().unwrap(), pin.holder);
    pin.as_mut_slice()[0] = b'!';
    c.unpin(&pin).unwrap();

    // Descriptors with no bytes: an error too, and the daemon closes them.
    let p = Packet::connect(&sock_of(&m)).unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    p.send("", &[wr.as_raw_fd()]).unwrap();
    drop(wr);
    assert!(recv_text(&p).starts_with("? err errno=22 "));
    let mut b = [0u8; 1];
    // SAFETY: read into a one-byte buffer: 0 (end of file) once nobody holds the write end.
    let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 0, "the daemon closed the descriptor it was sent");
    p.send("2 hello", &[]).unwrap();
    assert!(recv_text(&p).starts_with("2 ok holder="));
}

/// A user names its file, and its holder process, with control characters: a newline that
/// starts a forged line of the table, and terminal escapes. Root's `pinfs status` table must
/// show them escaped, one line per lease, with no escape byte reaching root's terminal.
#[test]
fn names_and_commands_cannot_forge_lines_of_roots_table() {
    if skip_without_fuse("hostile_table_injection") {
        return;
    }
    let m = Mount::new("16M", "allow_other");
    fs::create_dir(m.path("pub")).unwrap();
    fs::set_permissions(m.path("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let evil = "evil\n15099   1       granted   -          rw    root   0            4096         shadow\x1b[2J";
    let path = m.path("pub").join(evil);
    let (child, go, ready) = nobody_until_told(move |wait| {
        let name = c"x\x1b]0;pwned\x07\ny";
        // SAFETY: PR_SET_NAME with a NUL-terminated string (the kernel keeps 15 bytes).
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        let f = new_file(&path);
        f.write_all_at(&[b'.'; 4096], 0).unwrap();
        let mut c = Connection::for_file(&f).unwrap();
        let Ok(_pin) = c.pin(&f, 0, 4096, PinOptions::default()) else {
            return false;
        };
        wait();
        true
    });
    let mut b = [0u8; 1];
    // SAFETY: read of one byte from our pipe.
    let held = unsafe { libc::read(ready.as_raw_fd(), b.as_mut_ptr().cast(), 1) } == 1;
    let table = if held {
        Connection::for_path(&m.mnt).unwrap().status(true).unwrap()
    } else {
        String::new()
    };
    let json = status(&m);
    // SAFETY: write of one byte to our pipe; waitpid on our child.
    let code = unsafe {
        libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1);
        let mut st = 0;
        libc::waitpid(child, &mut st, 0);
        libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st))
    };
    assert!(held && code == Some(0), "the child's pin (see its stderr)");
    eprintln!("{table}");
    assert!(
        !table.bytes().any(|b| b.is_ascii_control() && b != b'\n'),
        "a control character reached the table"
    );
    let pins: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("PIN "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(pins.len(), 1, "one lease, one line: {pins:?}");
    assert!(pins[0].ends_with(r"/pub/evil\n15099   1       granted   -          rw    root   0            4096         shadow\u{1b}[2J"), "{}", pins[0]);
    let holders: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("HOLDER "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(holders.len(), 1, "one holder, one line: {holders:?}");
    // JSON escapes them itself: the document keeps the names as they are.
    assert_eq!(
        json.leases[0].path.as_deref(),
        Some(&*format!("/pub/{evil}"))
    );
    assert_eq!(
        json.holders[0].comm.as_deref(),
        Some("x\x1b]0;pwned\x07\ny")
    );
}

/// A directory of mode 0711 lets others reach a file whose name they know, never learn the
/// names (`ls` is refused): `status` must not teach them. Only a path the caller could find
/// by listing (read and search permission on every directory above the file) is shown.
#[test]
fn status_does_not_tell_names_that_ls_would_not() {
    if skip_without_fuse("hostile_unlisted_names") {
        return;
    }
    let m = Mount::new("16M", "allow_other");
    for (dir, mode) in [("drop", 0o711), ("listed", 0o755), ("no-search", 0o744)] {
        fs::create_dir(m.path(dir)).unwrap();
        fs::set_permissions(m.path(dir), fs::Permissions::from_mode(mode)).unwrap();
    }
    let hidden = file(&m, "drop/hidden-name-7f3a", 4096);
    let shown = file(&m, "listed/shown-name", 4096);
    let unreachable = file(&m, "no-search/listed-not-reachable", 4096);
    let mut root = Connection::for_file(&hidden).unwrap();
    let _pins: Vec<_> = [&hidden, &shown, &unreachable]
        .into_iter()
        .map(|f| root.pin(f, 0, 4096, PinOptions::default()).unwrap())
        .collect();
    let mnt = m.mnt.clone();
    assert!(nobody(move || {
        // What the caller itself may do with these directories.
        let listable = fs::read_dir(mnt.join("drop")).is_ok();
        let reachable = fs::metadata(mnt.join("drop/hidden-name-7f3a")).is_ok();
        let mut c = Connection::for_path(&mnt).unwrap();
        let (s, t) = (c.status(false).unwrap(), c.status(true).unwrap());
        let doc = parse_status(&s);
        let checks = [
            (
                !listable && reachable,
                "0711: not listable, reachable by name",
            ),
            (
                !s.contains("hidden-name") && !t.contains("hidden-name"),
                "no unlisted name",
            ),
            (
                path_shown(&doc, Some("/listed/shown-name")),
                "a listable path is shown",
            ),
            (
                !s.contains("listed-not-reachable"),
                "no path below a 0744 directory",
            ),
            (
                doc.leases.iter().filter(|l| l.path.is_none()).count() == 2,
                "two nulls",
            ),
        ];
        let mut ok = true;
        for (good, what) in checks {
            if !good {
                eprintln!("{what}:\n{s}\n{t}");
                ok = false;
            }
        }
        ok
    }));
    // Root sees them all.
    let s = status(&m);
    assert!(path_shown(&s, Some("/drop/hidden-name-7f3a")), "{s:?}");
}

/// A watcher that stops reading loses events past its backlog, and must be told how many
/// once it has read the rest, even if nothing happens after that: the events it got and the
/// count of those it lost add up to every event since it watched.
#[test]
fn a_watcher_that_fell_behind_is_told_what_it_lost() {
    if skip_without_fuse("hostile_watch_lost") {
        return;
    }
    use pinfs::daemon::holders::WATCH_BACKLOG;
    use pinfs::holder::protocol::{Event, Incoming};
    let m = Mount::new("16M", "");
    let f = file(&m, "buf", 4096);
    let watcher = Packet::connect(&sock_of(&m)).unwrap();
    watcher.send("w watch", &[]).unwrap();
    // The reply comes after the recent events (none yet).
    assert_eq!(recv_text(&watcher), "w ok");
    // Enough events to overflow its backlog while it does not read.
    let pairs = WATCH_BACKLOG / 2 + 500;
    let mut c = Connection::for_file(&f).unwrap();
    for _ in 0..pairs {
        let pin = c.pin(&f, 0, 4096, PinOptions::default()).unwrap();
        c.unpin(&pin).unwrap();
    }
    // Now it reads all there is; the holder stays, so no event comes after.
    let (mut got, mut lost) = (0u64, 0u64);
    while watcher.wait_readable(Some(Duration::from_secs(2))).unwrap() {
        let (b, _) = watcher.recv().unwrap().expect("a packet");
        match Incoming::parse(&b).unwrap() {
            Incoming::Event(Event::Lost { count }) => lost += count,
            Incoming::Event(_) => got += 1,
            Incoming::Reply(id, r) => panic!("reply {id} {r:?} on a watch"),
        }
    }
    eprintln!("{got} events received, {lost} lost");
    assert!(lost > 0, "the watcher was never told it lost events");
    assert_eq!(got + lost, 2 * pairs as u64, "events received and lost");
    // And it still watches.
    let pin = c.pin(&f, 0, 4096, PinOptions::default()).unwrap();
    let e = Event::parse(recv_text(&watcher).as_bytes()).unwrap();
    assert_eq!(e.name(), "granted");
    c.unpin(&pin).unwrap();
}

/// What `status` shows a caller is decided by the credentials its connection was made with
/// (the kernel's, at connect), never by what the process with that pid has later: a pid is
/// reused, and a process may change its groups. Here the peer connects as uid 65534 with no
/// supplementary group, then (with the saved uid 0 it kept) joins the group of a 0750
/// directory before asking: the path below it stays hidden (and one that connected in the
/// group sees it).
#[test]
fn status_counts_the_groups_of_the_connection_not_of_the_pid_now() {
    if skip_without_fuse("hostile_groups_later") {
        return;
    }
    const GROUP: libc::gid_t = 4242;
    let m = Mount::new("16M", "allow_other");
    fs::create_dir(m.path("grp")).unwrap();
    fs::set_permissions(m.path("grp"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(m.path("grp"), Some(0), Some(GROUP)).unwrap();
    let f = file(&m, "grp/group-only-name", 4096);
    let mut root = Connection::for_file(&f).unwrap();
    let _pin = root.pin(&f, 0, 4096, PinOptions::default()).unwrap();
    let sock = sock_of(&m);
    // The child's exit code: 0 if the path was hidden, 1 if shown.
    let child = |group_at_connect: bool| {
        // SAFETY: fork in a test process; the child changes its credentials, talks to the
        // socket and leaves with _exit, never returning into the test harness.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let none: [libc::gid_t; 0] = [];
                let group = [GROUP];
                let first: &[libc::gid_t] = if group_at_connect { &group } else { &none };
                if libc::setgroups(first.len(), first.as_ptr()) != 0
                    || libc::setresgid(65534, 65534, 65534) != 0
                    || libc::setresuid(65534, 65534, 0) != 0
                {
                    libc::_exit(3);
                }
                let Ok(p) = Packet::connect(&sock) else {
                    libc::_exit(4)
                };
                if libc::seteuid(0) != 0
                    || libc::setgroups(1, group.as_ptr()) != 0
                    || libc::seteuid(65534) != 0
                {
                    libc::_exit(5);
                }
                if p.send("1 status", &[]).is_err() {
                    libc::_exit(6);
                }
                let reply = recv_text(&p);
                if !reply.starts_with("1 ok\n") {
                    libc::_exit(7);
                }
                libc::_exit(if reply.contains("group-only-name") {
                    1
                } else {
                    0
                });
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st))
        }
    };
    assert_eq!(
        child(false),
        Some(0),
        "the path under the 0750 directory, for groups the connection did not have"
    );
    assert_eq!(
        child(true),
        Some(1),
        "the path under the 0750 directory, for a connection made in its group"
    );
    assert!(path_shown(&status(&m), Some("/grp/group-only-name")));
}

/// A mount by root admits every user as a kernel filesystem does (through its permissions,
/// which the kernel checks): xfstests' `fsgqa` and any user reach it without `allow_other`.
/// `noallow_other` closes both the mount and the holder socket to them.
#[test]
fn a_mount_by_root_admits_other_users_unless_told_noallow_other() {
    if skip_without_fuse("hostile_socket") {
        return;
    }
    let mut m = Mount::new("16M", "");
    fs::write(m.path("open"), b"for everyone").unwrap();
    fs::set_permissions(m.path("open"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(m.path("closed"), b"root's").unwrap();
    fs::set_permissions(m.path("closed"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(sock_of(&m)).unwrap().permissions().mode() & 0o777,
        0o666
    );
    let (open, closed, mnt) = (m.path("open"), m.path("closed"), m.mnt.clone());
    assert!(
        nobody(move || fs::read(&open).is_ok_and(|b| b == b"for everyone")
            && err_of(fs::read(&closed)) == libc::EACCES
            && Connection::for_path(&mnt)
                .and_then(|mut c| c.status(false))
                .is_ok()),
        "uid 65534 reads a 0644 file, gets EACCES on a 0600 one, and is served by the socket"
    );
    m.remount("noallow_other");
    assert_eq!(
        fs::metadata(sock_of(&m)).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (open, mnt) = (m.path("open"), m.mnt.clone());
    assert!(
        nobody(move || err_of(fs::read(&open)) == libc::EACCES
            && err_of(fs::metadata(&mnt)) == libc::EACCES),
        "on a noallow_other mount the kernel refuses uid 65534 with EACCES"
    );
}

#[test]
fn status_hides_a_path_an_acl_keeps_the_caller_from() {
    // A directory whose mode lets everyone in (0755) but whose ACL names uid 65534 with no
    // permissions: the kernel keeps 65534 out, and status must not tell it the names inside.
    // Named groups are honoured too, and a named user entry that grants shows the path.
    if skip_without_fuse("hostile_visibility_acl") {
        return;
    }
    let m = Mount::new("16M", "");
    for d in ["denied", "granted"] {
        fs::create_dir(m.path(d)).unwrap();
        fs::set_permissions(m.path(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Through the kernel, as setfacl does: u::rwx,u:65534:---,g::r-x,m::r-x,o::r-x.
    let value = |user_perm: u16, other: u16| {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 7u16, u32::MAX),
            (2, user_perm, 65534),
            (4, 5, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, other, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    for (d, v) in [("denied", value(0, 5)), ("granted", value(5, 0))] {
        let (p, n) = (
            cstr(&m.path(d)),
            std::ffi::CString::new("system.posix_acl_access").unwrap(),
        );
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        assert_eq!(rc, 0, "setxattr: {}", errno());
    }
    let hidden = file(&m, "denied/secret-name", 4096);
    let shown = file(&m, "granted/shown-name", 4096);
    let mut root = Connection::for_file(&hidden).unwrap();
    let _p1 = root.pin(&hidden, 0, 4096, PinOptions::default()).unwrap();
    let _p2 = root.pin(&shown, 0, 4096, PinOptions::default()).unwrap();
    let mnt = m.mnt.clone();
    assert!(nobody(move || {
        let kernel_denies =
            fs::read_dir(mnt.join("denied")).is_err() && fs::read_dir(mnt.join("granted")).is_ok();
        let mut c = Connection::for_path(&mnt).unwrap();
        let s = c.status(false).unwrap();
        let t = c.status(true).unwrap();
        let doc = parse_status(&s);
        let ok = kernel_denies
            && !s.contains("secret-name")
            && !t.contains("secret-name")
            && path_shown(&doc, None)
            && path_shown(&doc, Some("/granted/shown-name"));
        if !ok {
            eprintln!("kernel denies: {kernel_denies}\n{s}\n{t}");
        }
        ok
    }));
}

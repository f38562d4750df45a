//! Exported pins on a real mount, on loopback: remote peers reach the pinned blocks through
//! the holder's soft NIC (reads through the mount see their stores), status shows who holds
//! references per pin, a break recalls the key from every peer before the unpin, and a peer
//! that does not ack meets the mount's policy (wait, refuse, revoke: then its later stores
//! reach no file).

#[path = "../common/mod.rs"]
mod common;

use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::*;
use pinfs::fs::status::Status;
use pinfs::holder::client::{Connection, PinOptions};
use pinfs::remote::protocol::{parse_rkey, ErrorCode};
use pinfs::remote::{Nic, NicOptions, Peer, PeerState};

const LEN: usize = 4 * 4096;

fn file(m: &Mount, name: &str, len: usize) -> std::fs::File {
    let f = new_file(m.path(name));
    f.write_all_at(&vec![b'.'; len], 0).unwrap();
    f
}

fn status(m: &Mount) -> Status {
    let json = Connection::for_path(&m.mnt).unwrap().status(false).unwrap();
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("status --json: {e}: {json}"))
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Polls `cond` for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn remote_reads_writes_and_cas_reach_the_file_and_status_shows_the_peers() {
    if skip_without_fuse("remote_data_path") {
        return;
    }
    let m = Mount::new("64M", "");
    let f = file(&m, "buf", LEN);
    let mut conn = Connection::for_file(&f).unwrap();
    let pin = conn.pin(&f, 0, LEN as u64, PinOptions::default()).unwrap();
    let pin_id = pin.id;
    let nic = Nic::bind(loopback(), NicOptions::default()).unwrap();
    let rkey = nic.export(pin).unwrap();
    conn.report_export(pin_id, rkey, nic.addr()).unwrap();

    let mut peer = Peer::connect(nic.addr()).unwrap();
    peer.write(rkey, 4096 + 10, b"from a remote node").unwrap();
    let mut buf = [0u8; 18];
    f.read_exact_at(&mut buf, 4096 + 10).unwrap();
    assert_eq!(
        &buf, b"from a remote node",
        "a read through the mount sees it"
    );
    f.write_all_at(b"written through the mount", 8192).unwrap();
    assert_eq!(
        peer.read(rkey, 8192, 25).unwrap(),
        b"written through the mount",
        "a remote READ sees a write through the mount"
    );
    // CAS on 8 aligned bytes: no swap on a wrong expectation, a swap on the right one.
    let dots = u64::from_ne_bytes(*b"........");
    assert_eq!(peer.cas(rkey, 64, 1, 2).unwrap(), dots);
    assert_eq!(peer.cas(rkey, 64, dots, 0x4142434445464748).unwrap(), dots);
    let mut word = [0u8; 8];
    f.read_exact_at(&mut word, 64).unwrap();
    assert_eq!(u64::from_ne_bytes(word), 0x4142434445464748);

    // Outside the region, misaligned, or another key: refused, nothing touched.
    let code = |r: Result<Vec<u8>, pinfs::remote::RemoteError>| r.unwrap_err().code();
    assert_eq!(
        code(peer.read(rkey, LEN as u64 - 4, 8)),
        Some(ErrorCode::OutOfRange)
    );
    assert_eq!(
        code(peer.read(rkey, u64::MAX, 2)),
        Some(ErrorCode::OutOfRange)
    );
    assert_eq!(
        peer.cas(rkey, 12, 0, 0).unwrap_err().code(),
        Some(ErrorCode::Misaligned)
    );
    assert_eq!(
        peer.write(rkey ^ 1, 0, b"x").unwrap_err().code(),
        Some(ErrorCode::BadKey)
    );

    // The daemon hears of the peer, and status shows it under the pin.
    let peers = nic.peers(rkey);
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].addr, peer.local_addr().unwrap());
    assert_eq!(peers[0].state, PeerState::Connected);
    conn.report_peers(pin_id, &peers).unwrap();
    let s = status(&m);
    let remote = s.leases[0]
        .remote
        .as_ref()
        .expect("the lease shows its export");
    assert_eq!(remote.nic, nic.addr().to_string());
    assert_eq!(remote.rkey.as_deref().map(parse_rkey), Some(Ok(rkey)));
    assert_eq!(remote.peers.len(), 1);
    assert_eq!(remote.peers[0].addr, peer.local_addr().unwrap().to_string());
    assert_eq!(remote.peers[0].state, "connected");
    let table = Connection::for_path(&m.mnt).unwrap().status(true).unwrap();
    assert!(
        table.contains("EXPORTED PIN") && table.contains(&peers[0].addr.to_string()),
        "{table}"
    );

    // Withdrawn: a late access gets an error and changes nothing.
    let pin = nic.withdraw(rkey).unwrap();
    assert_eq!(
        peer.write(rkey, 0, b"late").unwrap_err().code(),
        Some(ErrorCode::BadKey)
    );
    let mut head = [0u8; 4];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"....");
    conn.unpin(&pin).unwrap();
    assert!(status(&m).leases.is_empty(), "no export outlives its pin");
}

#[test]
fn a_read_only_export_refuses_writes_and_status_bounds_what_a_holder_reports() {
    if skip_without_fuse("remote_read_only") {
        return;
    }
    let m = Mount::new("64M", "");
    let f = file(&m, "buf", LEN);
    let ro = std::fs::File::open(m.path("buf")).unwrap();
    let mut conn = Connection::for_file(&ro).unwrap();
    let opts = PinOptions {
        read_only: true,
        ..Default::default()
    };
    let pin = conn.pin(&ro, 0, LEN as u64, opts).unwrap();
    let pin_id = pin.id;
    let nic = Nic::bind(loopback(), NicOptions::default()).unwrap();
    let rkey = nic.export(pin).unwrap();
    let mut peer = Peer::connect(nic.addr()).unwrap();
    assert_eq!(peer.read(rkey, 0, 4).unwrap(), b"....");
    assert_eq!(
        peer.write(rkey, 0, b"x").unwrap_err().code(),
        Some(ErrorCode::ReadOnly)
    );
    assert_eq!(
        peer.cas(rkey, 0, 0, 1).unwrap_err().code(),
        Some(ErrorCode::ReadOnly)
    );
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b".");

    // Peers of a pin that was not exported, or not this holder's: ENOENT.
    assert_eq!(
        conn.report_peers(pin_id, &[]).unwrap_err().errno(),
        Some(libc::ENOENT)
    );
    let mut other = Connection::for_file(&ro).unwrap();
    other.holder_id().unwrap();
    assert_eq!(
        other
            .report_export(pin_id, rkey, nic.addr())
            .unwrap_err()
            .errno(),
        Some(libc::ENOENT)
    );
    conn.report_export(pin_id, rkey, nic.addr()).unwrap();
    // A holder that claims a thousand peers: the daemon keeps 64 and the count.
    let many: Vec<String> = (0..1500)
        .map(|i| format!("10.{}.{}.1:{}/connected", i / 250, i % 250, 1000 + i))
        .collect();
    let msg = format!(
        "77 peers pin={pin_id} total=1000000 peers={}",
        many.join(",")
    );
    assert!(msg.len() < 64 * 1024);
    assert_eq!(conn.raw_exchange(msg.as_bytes()).unwrap(), "77 ok");
    let s = status(&m);
    let remote = s.leases[0].remote.as_ref().unwrap();
    assert_eq!(
        remote.peers.len(),
        pinfs::holder::protocol::MAX_REMOTE_PEERS
    );
    assert_eq!(remote.peers_total, 1_000_000);
    assert_eq!(
        conn.raw_exchange(
            format!("78 peers pin={pin_id} total=1 peers=nowhere/connected").as_bytes()
        )
        .unwrap()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>(),
        ["78", "err", "errno=22"],
        "a peer that is not an address is refused"
    );
    // Another user sees the export and its peers, not the key (what grants access): the
    // key is shown to root and the holder's own user only.
    let mnt = m.mnt.clone();
    assert!(as_nobody(move || {
        let Ok(json) = Connection::for_path(&mnt).and_then(|mut c| c.status(false)) else {
            return false;
        };
        let Ok(s) = serde_json::from_str::<Status>(&json) else {
            return false;
        };
        s.leases[0]
            .remote
            .as_ref()
            .is_some_and(|r| r.rkey.is_none() && r.peers.len() == 64)
    }));
    let pin = nic.withdraw(rkey).unwrap();
    conn.unpin(&pin).unwrap();
}

/// A `pinfs pin --export` holder: its JSON lines arrive on the receiver.
struct Holder {
    child: Child,
    lines: Receiver<serde_json::Value>,
    rkey: u64,
    nic: std::net::SocketAddr,
    pin: u64,
}

impl Holder {
    fn start(path: &std::path::Path) -> Holder {
        let mut child = Command::new(BIN)
            .arg("pin")
            .arg(path)
            .args(["--len", &LEN.to_string(), "--export", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let v: serde_json::Value =
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let grant = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        let pin = grant["pin"].as_u64().unwrap();
        let export = lines.recv_timeout(Duration::from_secs(10)).unwrap();
        let e = &export["export"];
        assert_eq!(e["pin"].as_u64(), Some(pin), "{export}");
        assert_eq!(e["len"].as_u64(), Some(LEN as u64), "{export}");
        Holder {
            child,
            lines,
            rkey: parse_rkey(e["rkey"].as_str().unwrap()).unwrap(),
            nic: e["nic"].as_str().unwrap().parse().unwrap(),
            pin,
        }
    }

    /// Waits for the line whose `key` is `value` (lease events: `event`; the export's own
    /// lines: `remote`).
    fn wait_for(&self, key: &str, value: &str) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {key}={value} line from the holder"));
            if v[key] == value {
                return v;
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status shows `n` peers on the pin, in `state`.
fn peers_shown(m: &Mount, pin: u64, n: usize, state: &str) -> bool {
    status(m).leases.iter().any(|l| {
        l.pin == pin
            && l.remote
                .as_ref()
                .is_some_and(|r| r.peers.len() == n && r.peers.iter().all(|p| p.state == state))
    })
}

/// A truncate to 0 on a thread of its own (a descriptor without O_NONBLOCK: it waits).
fn truncate_later(m: &Mount, name: &str) -> std::thread::JoinHandle<Result<(), i32>> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path(name))
        .unwrap();
    std::thread::spawn(move || f.set_len(0).map_err(|e| e.raw_os_error().unwrap_or(0)))
}

#[test]
fn a_recall_with_acking_peers_ends_in_the_unpin_and_the_breaker_proceeds() {
    if skip_without_fuse("remote_recall_acked") {
        return;
    }
    let m = Mount::new("64M", "lease_break_time=30,break_policy=revoke");
    let _f = file(&m, "buf", LEN);
    let h = Holder::start(&m.path("buf"));
    // Two peers that are CLI processes (they ack and exit), one through the API.
    let spawn_peer = || {
        Command::new(BIN)
            .arg("remote")
            .arg(h.nic.to_string())
            .args(["--rkey", &format!("{:016x}", h.rkey)])
            .args(["write", "0", "0x41", "4096", "--every", "20"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let cli_peers = [spawn_peer(), spawn_peer()];
    let mut api = Peer::connect(h.nic).unwrap();
    api.write(h.rkey, 8192, b"api peer").unwrap();
    eventually("status shows three connected peers", || {
        peers_shown(&m, h.pin, 3, "connected")
    });
    let breaker = truncate_later(&m, "buf");
    let recall = h.wait_for("remote", "recall");
    assert_eq!(
        recall["peers"].as_array().map(Vec::len),
        Some(3),
        "{recall}"
    );
    assert_eq!(
        api.next_recall(Some(Duration::from_secs(10))).unwrap(),
        Some(h.rkey)
    );
    api.ack(h.rkey).unwrap();
    assert_eq!(
        api.write(h.rkey, 0, b"late").unwrap_err().code(),
        Some(ErrorCode::BadKey),
        "after its ack, the key is invalid for the peer"
    );
    h.wait_for("remote", "recalled");
    assert_eq!(breaker.join().unwrap(), Ok(()), "the truncate went through");
    for p in cli_peers {
        let out = p.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the peer acked and exited 0: {text}");
        assert!(text.contains("\"remote\":\"acked\""), "{text}");
    }
    let s = status(&m);
    assert!(s.leases.is_empty(), "{s:?}");
    assert_eq!((s.counters.releases, s.counters.revocations), (1, 0));
    assert_eq!(std::fs::metadata(m.path("buf")).unwrap().len(), 0);
}

/// A holder with one peer that writes and never acks, and a breaker: what the breaker gets
/// under `policy` (the holder is left unable to release).
struct Stubborn {
    m: Mount,
    h: Holder,
    peer: Peer,
}

fn stubborn(options: &str) -> Stubborn {
    let m = Mount::new("64M", &format!("lease_break_time=1,{options}"));
    file(&m, "buf", LEN);
    let h = Holder::start(&m.path("buf"));
    let mut peer = Peer::connect(h.nic).unwrap();
    peer.write(h.rkey, 0, &[b'Z'; LEN]).unwrap();
    eventually("status shows the peer", || {
        peers_shown(&m, h.pin, 1, "connected")
    });
    Stubborn { m, h, peer }
}

#[test]
fn a_peer_that_never_acks_under_wait_keeps_the_breaker_waiting() {
    if skip_without_fuse("remote_stubborn_wait") {
        return;
    }
    let Stubborn { m, h, mut peer } = stubborn("break_policy=wait");
    let breaker = truncate_later(&m, "buf");
    h.wait_for("remote", "recall");
    assert_eq!(
        peer.next_recall(Some(Duration::from_secs(10))).unwrap(),
        Some(h.rkey)
    );
    eventually("status shows the peer recalling", || {
        peers_shown(&m, h.pin, 1, "recalling")
    });
    // Past the mount's lease_break_time: under wait there is no deadline.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!breaker.is_finished(), "the breaker waits for the peer");
    assert_eq!(status(&m).waiting_breakers, 1);
    peer.write(h.rkey, 0, b"still mine").unwrap();
    // The peer goes (a crash ends its references): the holder releases.
    drop(peer);
    h.wait_for("remote", "recalled");
    assert_eq!(breaker.join().unwrap(), Ok(()));
}

#[test]
fn a_peer_that_never_acks_under_refuse_fails_the_breaker_with_etxtbsy() {
    if skip_without_fuse("remote_stubborn_refuse") {
        return;
    }
    let Stubborn { m, h, mut peer } = stubborn("break_policy=refuse");
    let breaker = truncate_later(&m, "buf");
    h.wait_for("remote", "recall");
    assert_eq!(breaker.join().unwrap(), Err(libc::ETXTBSY));
    let refused = h.wait_for("remote", "refused");
    assert_eq!(
        refused["unacked"][0].as_str(),
        Some(peer.local_addr().unwrap().to_string().as_str())
    );
    // The lease stays, and so does the peer's reach into the file.
    let s = status(&m);
    assert_eq!(s.leases[0].state, "granted");
    assert_eq!(std::fs::metadata(m.path("buf")).unwrap().len(), LEN as u64);
    peer.write(h.rkey, 0, b"kept").unwrap();
    let mut b = [0u8; 4];
    std::fs::File::open(m.path("buf"))
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    assert_eq!(&b, b"kept");
}

/// Under `revoke`, the peer that did not ack keeps storing after the revocation: into a
/// file (the truncated file grown again, and new files that take blocks) or not. Whether
/// any of its stores showed up in a file.
fn revoked_peer_reaches_a_file(options: &str) -> bool {
    let Stubborn { m, h, mut peer } = stubborn(options);
    let breaker = truncate_later(&m, "buf");
    h.wait_for("remote", "recall");
    assert_eq!(breaker.join().unwrap(), Ok(()), "revoked at the deadline");
    h.wait_for("event", "revoked");
    let s = status(&m);
    assert_eq!(s.leases[0].state, "revoked");
    let busy_on = s.policy.busy_blocks;
    if busy_on {
        assert!(s.busy.blocks >= (LEN / 4096) as u64, "{s:?}");
    }
    // The freeing is made durable, so that freed blocks may be reused at once.
    std::fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
    let mut files = vec![std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("buf"))
        .unwrap()];
    files[0].set_len(LEN as u64).unwrap();
    for i in 0..8 {
        files.push(file(&m, &format!("other{i}"), LEN));
    }
    let mut reached = false;
    for round in 0..3u8 {
        peer.write(h.rkey, 0, &[b'Z' + round; LEN]).unwrap();
        for f in &files {
            let mut b = vec![0u8; LEN];
            f.read_exact_at(&mut b, 0).unwrap();
            reached |= b.iter().any(|&c| (b'Z'..=b'Z' + 2).contains(&c));
        }
    }
    if busy_on {
        assert!(status(&m).busy.blocks >= (LEN / 4096) as u64);
    }
    drop(peer);
    h.wait_for("remote", "recalled");
    if busy_on {
        eventually("the busy blocks go with the last reference", || {
            status(&m).busy.blocks == 0
        });
    }
    reached
}

#[test]
fn a_peer_that_never_acks_under_revoke_writes_into_busy_blocks_and_no_file() {
    if skip_without_fuse("remote_stubborn_revoke") {
        return;
    }
    assert!(
        !revoked_peer_reaches_a_file("break_policy=revoke"),
        "a revoked peer's store reached a file"
    );
}

/// The same with busy blocks off: the revoked blocks go to the next files, and the peer's
/// stores with them. What busy blocks prevent, shown happening (so the test above can fail).
#[test]
fn without_busy_blocks_a_revoked_peer_corrupts_another_file() {
    if skip_without_fuse("remote_stubborn_no_busy") {
        return;
    }
    assert!(
        revoked_peer_reaches_a_file("break_policy=revoke,busy_blocks=off"),
        "with busy_blocks=off the revoked blocks were reused and the peer reached them"
    );
}

#[test]
fn bad_remote_command_lines_are_clear_errors() {
    let usage = |args: &[&str], words: &str| {
        let out = pinfs(args);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains(words) && !e.contains("panicked"),
            "{args:?}: {e}"
        );
    };
    usage(
        &["remote", "localhost", "--rkey", "1", "read", "0", "1"],
        "is not ADDRESS:PORT",
    );
    usage(
        &["remote", "127.0.0.1:1", "--rkey", "xyz", "read", "0", "1"],
        "is not a remote key",
    );
    usage(
        &[
            "remote",
            "127.0.0.1:1",
            "--rkey",
            "1",
            "write",
            "0",
            "256",
            "1",
        ],
        "256",
    );
    usage(
        &["pin", "/nonexistent", "--export", "127.0.0.1"],
        "is not ADDRESS:PORT",
    );
    usage(
        &[
            "pin",
            "/x",
            "--export",
            "127.0.0.1:0",
            "--write-byte",
            "1",
            "--every",
            "5",
        ],
        "cannot be used with",
    );
    // Runtime failures: a clear message and exit status 1.
    let failed = |args: &[&str], words: &str| {
        let out = pinfs(args);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(
            e.contains(words) && !e.contains("panicked"),
            "{args:?}: {e}"
        );
    };
    failed(
        &[
            "remote",
            "127.0.0.1:47099",
            "--rkey",
            "1",
            "read",
            "0",
            "2M",
        ],
        "at most 1048576",
    );
    // Nothing listens on this port of ours.
    failed(
        &["remote", "127.0.0.1:47099", "--rkey", "1", "read", "0", "1"],
        "127.0.0.1:47099",
    );
}

#[test]
fn an_on_demand_export_never_makes_a_breaker_wait_and_follows_the_layout() {
    if skip_without_fuse("remote_odp") {
        return;
    }
    // Under wait, a holder that did not let go would keep the breakers waiting forever.
    let m = Mount::new("64M", "break_policy=wait");
    let f = file(&m, "buf", LEN);
    let mut child = Command::new(BIN)
        .arg("pin")
        .arg(m.path("buf"))
        .args([
            "--len",
            &LEN.to_string(),
            "--export",
            "127.0.0.1:0",
            "--odp",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx
                .send(serde_json::from_str::<serde_json::Value>(&l).unwrap())
                .is_err()
            {
                return;
            }
        }
    });
    let pin = lines.recv_timeout(Duration::from_secs(10)).unwrap()["pin"].as_u64();
    let export = lines.recv_timeout(Duration::from_secs(10)).unwrap();
    let h = Holder {
        child,
        lines,
        rkey: parse_rkey(export["export"]["rkey"].as_str().unwrap()).unwrap(),
        nic: export["export"]["nic"].as_str().unwrap().parse().unwrap(),
        pin: pin.unwrap(),
    };
    // A peer that would never ack: there is nothing to ack.
    let mut peer = Peer::connect(h.nic).unwrap();
    peer.write(h.rkey, 0, &[b'P'; LEN]).unwrap();
    // A hole punched over the first block: the breaker goes on, the holder pins the range
    // again (a new block there), and the peer's next store lands in the file's new block.
    // SAFETY: fallocate on a descriptor we own.
    let rc = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    h.wait_for("remote", "invalidated");
    peer.write(h.rkey, 0, b"after the punch").unwrap();
    h.wait_for("remote", "remapped");
    let mut b = [0u8; 15];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(
        &b, b"after the punch",
        "the store reached the range's new block"
    );
    let mut rest = vec![0u8; LEN - 4096];
    f.read_exact_at(&mut rest, 4096).unwrap();
    assert!(
        rest.iter().all(|&c| c == b'P'),
        "the blocks not punched kept the peer's data"
    );
    assert_eq!(
        peer.next_recall(Some(Duration::ZERO)).unwrap(),
        None,
        "no recall"
    );
    // Truncated away: the breaker goes on, the range is gone, the key with it.
    assert_eq!(truncate_later(&m, "buf").join().unwrap(), Ok(()));
    h.wait_for("remote", "gone");
    assert_eq!(
        peer.write(h.rkey, 0, b"late").unwrap_err().code(),
        Some(ErrorCode::BadKey)
    );
    assert_eq!(status(&m).counters.timeouts, 0);
}

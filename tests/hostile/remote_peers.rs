//! Hostile remote peers against a holder's soft NIC: bad keys, out-of-range accesses,
//! oversized, empty and garbage frames, requests before HELLO, floods, a peer that never
//! reads, too many peers, a peer that never says HELLO. Each gets a clear error (or is
//! disconnected, saying why where it still reads), and the NIC keeps serving a well-behaved
//! peer, into the file, with the daemon unharmed.

#[path = "../common/mod.rs"]
mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;
use pinfs::holder::client::{Connection, PinOptions};
use pinfs::remote::protocol::{ErrorCode, Frame, MAX_DATA, MAX_FRAME, VERSION};
use pinfs::remote::{Nic, NicOptions, Peer, RemoteError};

const LEN: usize = 4 * 4096;

/// A mount with a file whose pin this process exported.
/// (Fields drop in order: the NIC and the holder go before the mount.)
struct Exported {
    f: std::fs::File,
    conn: Connection,
    nic: Nic,
    rkey: u64,
    _m: Mount,
}

fn exported(opts: NicOptions) -> Exported {
    let m = Mount::new("64M", "");
    let f = new_file(m.path("buf"));
    f.write_all_at(&vec![b'.'; LEN], 0).unwrap();
    let mut conn = Connection::for_file(&f).unwrap();
    let pin = conn.pin(&f, 0, LEN as u64, PinOptions::default()).unwrap();
    let nic = Nic::bind("127.0.0.1:0".parse().unwrap(), opts).unwrap();
    let rkey = nic.export(pin).unwrap();
    Exported {
        f,
        conn,
        nic,
        rkey,
        _m: m,
    }
}

impl Exported {
    /// A well-behaved peer still reaches the file, and the daemon still answers.
    fn still_serves(&mut self, what: &str) {
        let mut good = Peer::connect(self.nic.addr())
            .unwrap_or_else(|e| panic!("after {what}: a good peer cannot connect: {e}"));
        let tag = what.as_bytes();
        good.write(self.rkey, 100, tag)
            .unwrap_or_else(|e| panic!("after {what}: {e}"));
        let mut b = vec![0u8; tag.len()];
        self.f.read_exact_at(&mut b, 100).unwrap();
        assert_eq!(b, tag, "after {what}: the store reached the file");
        assert!(
            self.conn.status(false).is_ok(),
            "after {what}: the daemon answers"
        );
    }
}

/// The next frame (skipping nothing), within 10 s.
fn next(p: &mut Peer) -> Frame {
    p.recv(Some(Duration::from_secs(10)))
        .unwrap()
        .expect("an answer within 10 s")
}

fn error_code(f: &Frame) -> ErrorCode {
    match f {
        Frame::Error { code, .. } => *code,
        other => panic!("not an error: {other:?}"),
    }
}

/// The connection is closed by the NIC (end of stream within 10 s).
fn closed(p: &mut Peer) -> bool {
    for _ in 0..1000 {
        match p.recv(Some(Duration::from_secs(10))) {
            Err(RemoteError::Io(_)) => return true,
            Err(_) => {}
            Ok(None) => return false,
            Ok(Some(_)) => {}
        }
    }
    false
}

#[test]
fn bad_keys_and_out_of_range_accesses_get_errors_and_touch_nothing() {
    if skip_without_fuse("remote_bad_access") {
        return;
    }
    let mut e = exported(NicOptions::default());
    let mut p = Peer::connect(e.nic.addr()).unwrap();
    for guess in [0, 1, e.rkey ^ 0x8000_0000_0000_0000, e.rkey.wrapping_add(1)] {
        assert_eq!(
            p.write(guess, 0, b"guess").unwrap_err().code(),
            Some(ErrorCode::BadKey)
        );
        assert_eq!(
            p.read(guess, 0, 1).unwrap_err().code(),
            Some(ErrorCode::BadKey)
        );
    }
    let oob = [
        (LEN as u64, 1),
        (LEN as u64 - 1, 2),
        (u64::MAX, 1),
        (u64::MAX - 7, 16),
        (0, LEN as u64 + 1),
    ];
    for (off, len) in oob {
        assert_eq!(
            p.write(e.rkey, off, &vec![b'X'; len as usize])
                .unwrap_err()
                .code(),
            Some(ErrorCode::OutOfRange),
            "WRITE {off}+{len}"
        );
    }
    assert_eq!(
        p.read(e.rkey, 0, MAX_DATA as u32 + 1).unwrap_err().code(),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(
        p.cas(e.rkey, LEN as u64, 0, 1).unwrap_err().code(),
        Some(ErrorCode::OutOfRange)
    );
    assert_eq!(
        p.cas(e.rkey, 3, 0, 1).unwrap_err().code(),
        Some(ErrorCode::Misaligned)
    );
    assert_eq!(
        p.ack(0x1234).unwrap_err().code(),
        Some(ErrorCode::BadKey),
        "an ACK of a key the peer never held"
    );
    let mut all = vec![0u8; LEN];
    e.f.read_exact_at(&mut all, 0).unwrap();
    assert!(
        all.iter().all(|&b| b == b'.'),
        "no refused access wrote anything"
    );
    // The same connection goes on.
    p.write(e.rkey, 0, b"ok").unwrap();
    e.still_serves("bad keys");
}

#[test]
fn malformed_frames_get_errors_and_the_nic_keeps_serving() {
    if skip_without_fuse("remote_bad_frames") {
        return;
    }
    let mut e = exported(NicOptions::default());
    let addr = e.nic.addr();

    // Before HELLO: refused and closed. A wrong version: refused and closed.
    let mut p = Peer::connect_raw(addr).unwrap();
    p.send_raw(
        &Frame::Read {
            tag: 1,
            rkey: e.rkey,
            offset: 0,
            len: 1,
        }
        .encode(),
    )
    .unwrap();
    assert_eq!(error_code(&next(&mut p)), ErrorCode::NotHello);
    assert!(closed(&mut p));
    let mut p = Peer::connect_raw(addr).unwrap();
    p.send_raw(
        &Frame::Hello {
            version: VERSION + 1,
        }
        .encode(),
    )
    .unwrap();
    assert_eq!(error_code(&next(&mut p)), ErrorCode::BadVersion);
    assert!(closed(&mut p));

    // Empty frames and garbage in well-delimited frames: an error each, the stream goes on.
    let mut p = Peer::connect(addr).unwrap();
    p.send_raw(&[0, 0, 0, 0]).unwrap();
    assert_eq!(error_code(&next(&mut p)), ErrorCode::BadFrame);
    for body in [
        &[0xee_u8][..],
        &[0x02, 1, 2, 3],
        &[0x81, 1, 0, 0, 0, 0, 0],
        &[0x01, 1, 0],
    ] {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        p.send_raw(&f).unwrap();
        assert_eq!(error_code(&next(&mut p)), ErrorCode::BadFrame, "{body:?}");
    }
    // A WRITE whose data passes MAX_DATA inside the frame limit.
    let mut w = Frame::Write {
        tag: 9,
        rkey: e.rkey,
        offset: 0,
        data: vec![b'Q'; MAX_DATA + 1],
    }
    .encode();
    assert!(w.len() - 4 <= MAX_FRAME);
    p.send_raw(&w).unwrap();
    assert_eq!(error_code(&next(&mut p)), ErrorCode::TooLarge);
    p.write(e.rkey, 0, b"still here").unwrap();

    // An oversized frame: an error, then closed (nothing after it is read as frames).
    let mut p = Peer::connect(addr).unwrap();
    w = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
    w.extend_from_slice(&[0x03; 64]);
    p.send_raw(&w).unwrap();
    assert_eq!(error_code(&next(&mut p)), ErrorCode::TooLarge);
    assert!(closed(&mut p));
    let mut p = Peer::connect(addr).unwrap();
    p.send_raw(&u32::MAX.to_le_bytes()).unwrap();
    assert_eq!(error_code(&next(&mut p)), ErrorCode::TooLarge);
    assert!(closed(&mut p));

    // Random bytes: errors or a close, never a crash.
    let mut seed = 0x2545f4914f6cdd1d_u64;
    for _ in 0..20 {
        let mut p = Peer::connect(addr).unwrap();
        let junk: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        p.send_raw(&junk).unwrap();
    }
    e.still_serves("malformed frames");
}

#[test]
fn floods_peers_that_never_read_and_crowds_are_cut_off() {
    if skip_without_fuse("remote_floods") {
        return;
    }
    let mut e = exported(NicOptions {
        max_peers: 4,
        hello_timeout: Duration::from_millis(300),
        max_queued: 1 << 20,
    });
    let addr = e.nic.addr();

    // A peer that asks for 1 MiB answers and never reads them: disconnected (SLOW).
    let mut hog = Peer::connect(addr).unwrap();
    let read = Frame::Read {
        tag: 1,
        rkey: e.rkey,
        offset: 0,
        len: LEN as u32,
    }
    .encode();
    let flood: Vec<u8> = read
        .iter()
        .copied()
        .cycle()
        .take(read.len() * 2000)
        .collect();
    // The NIC closes its end once the answers pile up; the sends may fail then.
    let _ = hog.send_raw(&flood);
    e.still_serves("a peer that never reads");
    eventually_fewer(&e.nic, 2);
    assert!(closed(&mut hog), "the hog was disconnected");

    // A peer that asks for answers it never reads, then breaks the framing: closed after a
    // grace, not served forever.
    let mut rude = Peer::connect(addr).unwrap();
    let reads: Vec<u8> = read.iter().copied().cycle().take(read.len() * 60).collect();
    rude.send_raw(&reads).unwrap();
    rude.send_raw(&u32::MAX.to_le_bytes()).unwrap();
    eventually_fewer(&e.nic, 1);
    drop(rude);

    // A flood of small writes from a peer that does read: served, and others too.
    let mut busy = Peer::connect(addr).unwrap();
    for i in 0..2000u64 {
        busy.write(e.rkey, (i % 100) * 8, &i.to_le_bytes()).unwrap();
    }
    e.still_serves("a flood of writes");
    drop(busy);
    eventually_fewer(&e.nic, 1);

    // Too many peers: the next one gets BUSY. A peer that never says HELLO is closed.
    let mut crowd: Vec<Peer> = Vec::new();
    while crowd.len() < 4 {
        crowd.push(Peer::connect(addr).unwrap());
    }
    let mut extra = Peer::connect_raw(addr).unwrap();
    assert_eq!(error_code(&next(&mut extra)), ErrorCode::Busy);
    drop(crowd);
    eventually_fewer(&e.nic, 1);
    let mut silent = Peer::connect_raw(addr).unwrap();
    assert_eq!(error_code(&next(&mut silent)), ErrorCode::NotHello);
    assert!(closed(&mut silent));
    e.still_serves("a crowd");
}

/// Waits until the NIC serves fewer than `n` connections.
fn eventually_fewer(nic: &Nic, n: usize) {
    for _ in 0..500 {
        if nic.connections() < n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the NIC still serves {} peers", nic.connections());
}

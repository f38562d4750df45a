//! Figures of the soft NIC on loopback, on a mounted pinfs: remote WRITE latency and
//! throughput beside a plain TCP round trip of the same size in the same run, the recall
//! round trip, and the break latency (a truncate of an exported pin) with 1, 4 and 16
//! acking peers, beside a holder that exports nothing. Medians.
//!
//! `cargo run --release --example remote_bench -- MOUNTPOINT` (root; the mount's
//! `lease_break_time` must be longer than a break takes). The `pinfs` binary is found beside
//! the example's directory (`target/*/pinfs`) or in `$PINFS_BIN`.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pinfs::holder::client::{Connection, PinOptions};
use pinfs::remote::protocol::parse_rkey;
use pinfs::remote::{Nic, NicOptions, Peer};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bin() -> PathBuf {
    if let Some(b) = std::env::var_os("PINFS_BIN") {
        return b.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).unwrap().join("pinfs")
}

/// A plain TCP echo of `size`-byte requests with an 8-byte answer: the floor under a WRITE.
fn plain_tcp(size: usize, rounds: usize) -> Duration {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&[0u8; 8]).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let req = vec![7u8; size];
    let mut ans = [0u8; 8];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        c.write_all(&req).unwrap();
        c.read_exact(&mut ans).unwrap();
        times.push(t.elapsed());
    }
    drop(c);
    server.join().unwrap();
    median(times)
}

fn main() {
    let mnt = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: remote_bench MOUNTPOINT"),
    );
    let len = 1 << 20;
    let path = mnt.join("remote_bench");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&vec![0u8; len], 0).unwrap();
    let mut conn = Connection::for_file(&f).unwrap();
    let pin = conn.pin(&f, 0, len as u64, PinOptions::default()).unwrap();
    let nic = Nic::bind("127.0.0.1:0".parse().unwrap(), NicOptions::default()).unwrap();
    let rkey = nic.export(pin).unwrap();
    let mut peer = Peer::connect(nic.addr()).unwrap();

    println!("remote WRITE through the soft NIC vs a plain TCP round trip (loopback, medians)");
    for size in [64usize, 4096, 65536] {
        let rounds = if size > 4096 { 500 } else { 2000 };
        let data = vec![0x5au8; size];
        let mut times = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let off = ((i * size) % (len - size)) as u64;
            let t = Instant::now();
            peer.write(rkey, off, &data).unwrap();
            times.push(t.elapsed());
        }
        let nic_lat = median(times);
        let tcp_lat = plain_tcp(size, rounds);
        println!(
            "  {size:>6} B: WRITE {:>8.1} us ({:>7.1} MB/s)   plain TCP {:>8.1} us ({:>7.1} MB/s)",
            us(nic_lat),
            size as f64 / nic_lat.as_secs_f64() / 1e6,
            us(tcp_lat),
            size as f64 / tcp_lat.as_secs_f64() / 1e6
        );
    }

    // Recall round trip: RECALL out, ACK back, one peer on another thread.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<()>();
    let addr = nic.addr();
    let acker = std::thread::spawn(move || {
        let mut p = Peer::connect(addr).unwrap();
        for k in rx {
            p.write(k, 0, b"x").unwrap();
            acked_tx.send(()).unwrap();
            let got = p.next_recall(None).unwrap();
            p.ack(got.unwrap()).unwrap();
        }
    });
    let mut key = nic.export(nic.withdraw(rkey).unwrap()).unwrap();
    let mut times = Vec::new();
    for _ in 0..200 {
        tx.send(key).unwrap();
        acked_rx.recv().unwrap();
        let t = Instant::now();
        let out = nic.recall(key, Some(Duration::from_secs(5))).unwrap();
        times.push(t.elapsed());
        assert!(out.unacked.is_empty());
        key = nic.export(nic.withdraw(key).unwrap()).unwrap();
    }
    drop(tx);
    acker.join().unwrap();
    println!(
        "recall round trip (RECALL, ACK, 1 peer, loopback): {:.1} us median of 200",
        us(median(times))
    );
    let pin = nic.withdraw(key).unwrap();
    conn.unpin(&pin).unwrap();
    drop(pin);
    drop(nic);

    println!("break latency (truncate of a pinned 64 KiB range; the holder is `pinfs pin`):");
    let runs = [
        (None, false),
        (Some(1usize), false),
        (Some(4), false),
        (Some(16), false),
        (Some(16), true),
    ];
    for (peers, odp) in runs {
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(one_break(&path, peers, odp));
        }
        let label = match (peers, odp) {
            (None, _) => "no export (plain release)".to_string(),
            (Some(n), false) => format!("{n} acking peer(s)"),
            (Some(n), true) => format!("--odp, {n} peers, no acks"),
        };
        println!(
            "  {label:<26} {:>8.2} ms",
            median(times).as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_file(&path);
}

/// One truncate of a file pinned by a `pinfs pin` holder (exporting to `peers` peers that
/// ack, or on demand to peers that never ack, or not exporting): how long the truncate
/// took.
fn one_break(path: &Path, peers: Option<usize>, odp: bool) -> Duration {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.set_len(0).unwrap();
    f.write_all_at(&vec![1u8; 65536], 0).unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("pin").arg(path).args(["--len", "65536"]);
    if peers.is_some() {
        cmd.args(["--export", "127.0.0.1:0"]);
    }
    if odp {
        cmd.arg("--odp");
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut threads = Vec::new();
    if let Some(n) = peers {
        line.clear();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let rkey = parse_rkey(v["export"]["rkey"].as_str().unwrap()).unwrap();
        let addr: std::net::SocketAddr = v["export"]["nic"].as_str().unwrap().parse().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let ready = ready_tx.clone();
            threads.push(std::thread::spawn(move || {
                let mut p = Peer::connect(addr).unwrap();
                p.write(rkey, 0, b"peer").unwrap();
                ready.send(()).unwrap();
                let wait = Duration::from_secs(if odp { 1 } else { 30 });
                if let Ok(Some(k)) = p.next_recall(Some(wait)) {
                    let _ = p.ack(k);
                }
            }));
        }
        for _ in 0..n {
            ready_rx.recv().unwrap();
        }
    }
    let t = Instant::now();
    f.set_len(0).unwrap();
    let took = t.elapsed();
    for t in threads {
        t.join().unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    took
}

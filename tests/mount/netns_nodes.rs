//! The nodes the remote-holder tests stand on (tests/common/netns.rs), as those tests rely on
//! them: two nodes talk TCP over their veth pairs and not over loopback, a partition stalls
//! a connection and times a connect out until the link comes back, netem loss and delay
//! reach the wire, a process killed in a node serves again when restarted, a node sees the
//! root namespace's pinfs mounts and holder sockets, nothing is left after a test (a
//! panicking one too) or after a killed run, and without namespaces the same tests run on
//! loopback and say so.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/netns.rs"]
mod netns;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns::{Net, Node};

/// The environment variable that makes [`echo_server_process`] serve.
const ECHO_ENV: &str = "H8N_ECHO_ADDR";

/// Not a test: the echo server the crash test starts as a process in a node (this test
/// binary, run again with a filter that selects this function and `H8N_ECHO_ADDR` set).
/// Without the variable it returns at once.
#[test]
#[ignore = "a helper process, started by a_killed_process_in_a_node_serves_again_when_restarted"]
fn echo_server_process() {
    if let Ok(addr) = std::env::var(ECHO_ENV) {
        netns::serve_echo(netns::bind_retrying(addr.parse().expect(ECHO_ENV)));
    }
}

/// This test binary, serving echo at `addr` in `node`.
fn echo_command(node: &Node, addr: SocketAddr) -> Command {
    let mut c = node.command(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "echo_server_process",
        "--ignored",
        "--test-threads=1",
    ])
    .env(ECHO_ENV, addr.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// An echo server on a thread in `node`, at its first service address.
fn echo_thread(node: &Node) -> SocketAddr {
    let addr = node.endpoint(0);
    let listener = node.run(move || TcpListener::bind(addr).expect("bind the echo server"));
    // The listening socket is the node's whatever thread accepts on it.
    std::thread::spawn(move || netns::serve_echo(listener));
    addr
}

/// One echo round trip of `msg` on `s`.
fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300))
}

#[test]
fn two_nodes_exchange_bytes_over_their_links_not_loopback() {
    let net = Net::new("two_nodes_exchange_bytes_over_their_links_not_loopback");
    let (a, b) = (net.node("a"), net.node("b"));
    let server = echo_thread(&b);
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let (local, peer, veth) = a.run(move || {
        let mut s = connect(server).expect("connect from node a to node b");
        assert_eq!(
            echo(&mut s, b"hello over the wire").unwrap(),
            b"hello over the wire"
        );
        let rtt = netns::median_rtt(&mut s, 1000);
        (s.local_addr().unwrap(), s.peer_addr().unwrap(), rtt)
    });
    assert_eq!(peer, server);
    // The server sees the client's own address: in namespaces, the bytes crossed the veth
    // pairs and the bridge between two addresses.
    let probe = b.endpoint(1);
    let listener = b.run(move || TcpListener::bind(probe).unwrap());
    let seen = b.thread(move || listener.accept().map(|(_, from)| from.ip()));
    let client = a.run(move || connect(probe).map(|s| s.local_addr().unwrap().ip()));
    assert_eq!(seen.join().unwrap().unwrap(), a_addr);
    assert_eq!(client.unwrap(), a_addr);
    assert_eq!(local.ip(), a_addr);
    if net.is_netns() {
        assert_ne!(a_addr, b_addr);
        assert!(a_addr.to_string().starts_with("10.208.0."), "{a_addr}");
    }
    // The figure beside it: the same round trips on loopback, in the same run.
    let lo_server = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || netns::serve_echo(l));
        addr
    };
    let lo = netns::median_rtt(&mut TcpStream::connect(lo_server).unwrap(), 1000);
    netns::loud(&format!(
        "figure: median of 1000 one-byte TCP round trips: loopback {} us, {} {} us",
        lo.as_micros(),
        if net.is_netns() {
            "veth+bridge"
        } else {
            "loopback node"
        },
        veth.as_micros()
    ));
}

#[test]
fn a_partition_stalls_a_connection_and_times_connects_out_until_the_link_is_back() {
    let net =
        Net::new("a_partition_stalls_a_connection_and_times_connects_out_until_the_link_is_back");
    let (a, b) = (net.node("a"), net.node("b"));
    let server = echo_thread(&b);
    let mut s = a.run(move || connect(server).expect("connect before the partition"));
    assert_eq!(echo(&mut s, b"before").unwrap(), b"before");
    if !b.link_down() {
        return;
    }
    // The connection is open and silent: a write is accepted, no answer comes.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"during").unwrap();
    let mut back = [0u8; 6];
    let e = s
        .read_exact(&mut back)
        .expect_err("an answer crossed the partition");
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "a partitioned connection must stall, not fail: {e}"
    );
    let e = a
        .run(move || connect(server))
        .expect_err("a connect crossed the partition");
    assert_eq!(
        e.kind(),
        ErrorKind::TimedOut,
        "connect during the partition: {e}"
    );
    assert!(b.link_up());
    // TCP retransmits what the partition swallowed: the stalled round trip completes.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.read_exact(&mut back)
        .expect("the stalled answer after link_up");
    assert_eq!(&back, b"during");
    let mut t = a
        .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(10)))
        .expect("connect after link_up");
    assert_eq!(echo(&mut t, b"after").unwrap(), b"after");
}

#[test]
fn netem_loss_drops_packets_into_the_node_until_cleared() {
    let net = Net::new("netem_loss_drops_packets_into_the_node_until_cleared");
    let (a, b) = (net.node("a"), net.node("b"));
    let server = echo_thread(&b);
    assert!(a.wait_tcp(server, Duration::from_secs(5)));
    if !b.netem(100.0, 0) {
        return;
    }
    let e = a
        .run(move || connect(server))
        .expect_err("a connect through 100% loss");
    assert_eq!(
        e.kind(),
        ErrorKind::TimedOut,
        "connect through 100% loss: {e}"
    );
    b.clear_netem();
    let mut s = a
        .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(10)))
        .expect("connect after clear_netem");
    assert_eq!(echo(&mut s, b"clean").unwrap(), b"clean");
    // A lossy link still carries a connection (TCP retransmits), and clearing twice is fine.
    assert!(b.netem(20.0, 0));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for i in 0..10u8 {
        assert_eq!(echo(&mut s, &[i; 64]).unwrap(), [i; 64]);
    }
    b.clear_netem();
    b.clear_netem();
}

#[test]
fn netem_delay_raises_the_round_trip() {
    const DELAY_MS: u32 = 40;
    let net = Net::new("netem_delay_raises_the_round_trip");
    let (a, b) = (net.node("a"), net.node("b"));
    let server = echo_thread(&b);
    let mut s = a.run(move || connect(server).expect("connect"));
    if !b.netem(0.0, DELAY_MS) {
        return;
    }
    let slow = netns::median_rtt(&mut s, 9);
    b.clear_netem();
    // A lower bound only (timing is never asserted beyond what the delay itself forces).
    assert!(
        slow >= Duration::from_millis(DELAY_MS as u64 * 8 / 10),
        "a {DELAY_MS} ms netem delay gave a median round trip of {slow:?}"
    );
}

#[test]
fn a_killed_process_in_a_node_serves_again_when_restarted() {
    let net = Net::new("a_killed_process_in_a_node_serves_again_when_restarted");
    let (a, b) = (net.node("a"), net.node("b"));
    let server = b.endpoint(1);
    let mut p = b.start(move |node| echo_command(node, server));
    assert!(
        a.wait_tcp(server, Duration::from_secs(10)),
        "the echo process never listened"
    );
    let mut s = a.run(move || connect(server).expect("connect to the echo process"));
    assert_eq!(echo(&mut s, b"first life").unwrap(), b"first life");
    let first = p.pid();

    let status = p.crash();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    // Its connection ends with it (the kernel closes a killed process's sockets) and the
    // address answers no more.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match echo(&mut s, b"x") {
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "the connection to a killed process: {e}"
        ),
        Ok(b) => panic!("a killed process answered {b:?}"),
    }
    let e = a
        .run(move || connect(server))
        .expect_err("a killed process accepted");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");

    p.restart();
    assert_ne!(p.pid(), first);
    assert!(
        a.wait_tcp(server, Duration::from_secs(10)),
        "the restarted process never listened"
    );
    let mut s = a.run(move || connect(server).expect("connect to the restarted process"));
    assert_eq!(echo(&mut s, b"second life").unwrap(), b"second life");
}

#[test]
fn a_node_reaches_the_root_namespaces_pinfs_mount_and_holder_socket() {
    if common::skip_without_fuse("a_node_reaches_the_root_namespaces_pinfs_mount_and_holder_socket")
    {
        return;
    }
    let net = Net::new("a_node_reaches_the_root_namespaces_pinfs_mount_and_holder_socket");
    let node = net.node("holder");
    // Mounted after the node exists, in the root namespace.
    let m = common::Mount::new_in(netns::tmp_dir(), "16M", "");
    std::fs::write(m.path("seen"), b"from the root namespace").unwrap();
    let out = node.command("cat").arg(m.path("seen")).output().unwrap();
    assert!(
        out.status.success(),
        "cat in the node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"from the root namespace");
    // The holder socket under /run/pinfs: `pinfs status` asks the daemon through it.
    let out = node
        .command(common::BIN)
        .arg("status")
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pinfs status in the node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And a file the node writes is the root namespace's.
    let out = node
        .command("sh")
        .arg("-c")
        .arg(format!("echo from the node > {}", m.path("back").display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(m.path("back")).unwrap(), b"from the node\n");
}

/// The namespaces of this process whose name starts with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_test_leaves_no_namespace_or_process_even_when_it_panics() {
    let net = Net::new("a_test_leaves_no_namespace_or_process_even_when_it_panics");
    if !net.is_netns() {
        return;
    }
    let node = net.node("left");
    let name = node.netns_name().unwrap().to_string();
    let sw = name.rsplitn(3, '-').last().unwrap().to_string() + "-sw";
    assert!(namespaces(&name).contains(&name));
    assert!(namespaces(&sw).contains(&sw), "{sw}");
    // A process the test started in the node and forgot.
    let mut forgotten = node.command("sleep").arg("600").spawn().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _net = net;
        let _node = node;
        panic!("a test that fails with its nodes up");
    }));
    assert!(r.is_err());
    assert_eq!(namespaces(&name), Vec::<String>::new());
    assert_eq!(namespaces(&sw), Vec::<String>::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = forgotten.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            forgotten.kill().unwrap();
            forgotten.wait().unwrap();
            panic!("a process left in a node outlived its teardown");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn leftovers_of_a_killed_run_are_removed() {
    if !netns::netns_available() {
        netns::loud("*** SKIPPED leftovers_of_a_killed_run_are_removed: no network namespaces ***");
        return;
    }
    // A PID that is gone: a child that ran and was reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let ns = format!("{}{dead}-0-sw", netns::PREFIX);
    let dir = std::path::PathBuf::from(format!("/tmp/{}{dead}-leftover", netns::PREFIX));
    let st = Command::new(netns::tool("ip"))
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    // A process still running in the dead run's namespace.
    let mut orphan = Command::new(netns::tool("ip"))
        .args(["netns", "exec", &ns, "sleep", "600"])
        .spawn()
        .unwrap();
    // And a pinfs still mounted in its directory, when FUSE is here.
    let mnt = dir.join("mnt");
    let daemon = (common::fuse_unavailable().is_none()).then(|| {
        let image = dir.join("test.img");
        common::mkfs(&image, "16M");
        let out = common::pinfs(&["mount", image.to_str().unwrap(), mnt.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::daemon_pid(&mnt)
    });
    // What a live process owns stays (this one's: the test's own net).
    let net = Net::new("leftovers_of_a_killed_run_are_removed");
    let live = net.node("live");
    netns::remove_stale();
    assert_eq!(
        namespaces(&ns),
        Vec::<String>::new(),
        "a dead run's namespace stayed"
    );
    assert!(!dir.exists(), "a dead run's directory stayed");
    let status = orphan.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(mnt.to_str().unwrap()),
        "a dead run's mount stayed"
    );
    if let Some(pid) = daemon {
        // The daemon ends with its mount.
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(gone, "the daemon of a dead run's mount still runs");
    }
    let name = live.netns_name().unwrap();
    assert_eq!(namespaces(name), vec![name.to_string()]);
}

#[test]
fn without_namespaces_the_same_tests_run_on_loopback_and_say_so() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "two_nodes_exchange",
            "a_killed_process",
            "a_partition",
            "--test-threads=2",
        ])
        .env("PINFS_NETNS", "off")
        .env_remove("PINFS_REQUIRE_NETNS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "on loopback:\n{stdout}\n{stderr}");
    assert!(stdout.contains("3 passed"), "{stdout}");
    assert!(
        stderr.contains("*** netns unavailable: running on loopback"),
        "no loud line on loopback: {stderr}"
    );
    assert!(stderr.contains("*** SKIPPED link_down"), "{stderr}");
}

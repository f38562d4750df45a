//! Nodes for the remote-holder tests: a [`Net`] is one test's network, a switch (a bridge in
//! a network namespace of its own) that its [`Node`]s plug into with a veth pair each; a node
//! is a network namespace with an address, loopback up, and the commands and threads a test
//! runs in it; faults are the network's (a partition, loss and delay, a process that crashes
//! and comes back). Where namespaces are unavailable (not root, no `ip`, no netns support,
//! or `PINFS_NETNS=off`) the same API runs every node on 127.0.0.1 with ports of its own, the
//! faults that need a namespace are skipped, and every test says so on stderr.
//!
//! Names: everything this module creates starts with `h8n-PID-` (namespaces, and directories
//! in /tmp made with [`tmp_dir`]); devices live only inside those namespaces (never in the
//! root one), so device names and the 10.208.0.0/24 addresses repeat from one net to the
//! next without meeting. Leftovers of a killed run (a PID that is gone) are removed the first
//! time a test of a process asks for a net.
//!
//! A scenario, in short (a holder exporting a pin, a peer on another node, a partition):
//!
//! ```text
//! let net = Net::new("a_partitioned_peer_under_revoke");
//! let (h, p) = (net.node("holder"), net.node("peer"));
//! let export = h.endpoint(0);                      // 10.208.0.1:7000, or 127.0.0.1:PORT
//! let mut holder = h.start(move |n| {              // kill -9 and restart: holder.crash(), .restart()
//!     let mut c = n.command(common::BIN);
//!     c.args(["pin", FILE, "--len", "4096", "--export", &export.to_string()]);
//!     c
//! });
//! assert!(p.wait_tcp(export, Duration::from_secs(10)));
//! let peer = p.thread(move || /* the peer API, connecting to `export` */);
//! if !p.link_down() { return; }                    // skipped (said loudly) on loopback
//! // ... break the lease from the root namespace (truncate on the mount), check the policy ...
//! assert!(p.link_up());
//! ```
//!
//! Every party that talks over the net runs in a node (`command`, `start`, `thread`, `run`):
//! the root namespace has no route to 10.208.0.0/24, and where its default route leads a
//! connect there may even succeed against something else entirely.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The prefix of every namespace and /tmp entry this module makes.
pub const PREFIX: &str = "h8n-";

/// How many service addresses ([`Node::endpoint`]) a node has.
pub const SLOTS: usize = 4;

/// The first port of a node's service addresses in namespaces (every node has its own
/// address there, so every node has the same ports).
const NETNS_PORT: u16 = 7000;

/// The bridge inside a switch namespace.
const BRIDGE: &str = "h8nbr";

/// A node's own end of its veth pair, inside its namespace.
const NODE_DEV: &str = "h8n0";

/// The nftables table of the loss fallback, inside a node's namespace.
const LOSS_TABLE: &str = "h8nloss";

/// What nodes are made of in this process, decided once.
pub enum Backend {
    /// Network namespaces, veth pairs and a bridge.
    Netns,
    /// Every node is 127.0.0.1; `why` says what was missing.
    Loopback { why: String },
}

/// Writes a line straight to the process's stderr: the test harness captures `eprintln!`,
/// and a skip or a fallback must be seen even when the test passes.
pub fn loud(line: &str) {
    let line = format!("\n{line}\n");
    // SAFETY: write(2) of a buffer we own to file descriptor 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// The backend of this process: detected (and stale leftovers removed) on first use.
pub fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let b = detect();
        if let Backend::Loopback { why } = &b {
            if std::env::var("PINFS_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("network namespaces are required (PINFS_REQUIRE_NETNS=1) but: {why}");
            }
        }
        b
    })
}

/// True when nodes are network namespaces.
pub fn netns_available() -> bool {
    matches!(backend(), Backend::Netns)
}

fn detect() -> Backend {
    let loopback = |why: String| Backend::Loopback { why };
    if std::env::var("PINFS_NETNS").as_deref() == Ok("off") {
        return loopback("PINFS_NETNS=off".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return loopback(
            "not root (namespaces and links need CAP_SYS_ADMIN and CAP_NET_ADMIN)".into(),
        );
    }
    if Command::new(tool("ip")).arg("-V").output().is_err() {
        return loopback("no `ip` command (install iproute2)".into());
    }
    remove_stale();
    // A probe of everything a net needs: a namespace, a bridge and a veth pair in it.
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    let r = ip(&["netns", "add", &probe])
        .and_then(|_| ip(&["-n", &probe, "link", "add", BRIDGE, "type", "bridge"]))
        .and_then(|_| {
            ip(&[
                "-n", &probe, "link", "add", "h8np0", "type", "veth", "peer", "name", NODE_DEV,
            ])
        });
    let _ = ip(&["netns", "del", &probe]);
    match r {
        Ok(()) => Backend::Netns,
        Err(e) => loopback(e),
    }
}

/// The path of an administration tool (ip, tc, nft): in the sbin folders when they are not
/// on PATH, as for a root shell whose PATH lacks them.
pub fn tool(name: &str) -> std::ffi::OsString {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p.into_os_string();
        }
    }
    name.into()
}

/// Runs `ip ARGS`; Err says what failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new(tool("ip")).args(args))
}

fn tc(args: &[&str]) -> Result<(), String> {
    run(Command::new(tool("tc")).args(args))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The PID in a name `h8n-PID-...`.
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn stale(name: &str) -> bool {
    match pid_of(name) {
        Some(pid) => pid != std::process::id() && !alive(pid),
        None => false,
    }
}

/// Kills (SIGKILL) every process whose network namespace is `ns`, except this one.
fn kill_pids_in(ns: &str) {
    let Ok(out) = Command::new(tool("ip"))
        .args(["netns", "pids", ns])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            if pid as u32 != std::process::id() {
                // SAFETY: kill(2) of a process that runs in a namespace this module made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Removes what a killed run left: namespaces (and the processes still in them), and /tmp
/// directories (lazily unmounting what is mounted below them) whose PID is gone.
pub fn remove_stale() {
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                kill_pids_in(&name);
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !stale(&name) {
            continue;
        }
        let root = e.path();
        // Deepest first, so that nothing below a mount point keeps it.
        let mut below: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&root))
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let c = std::ffi::CString::new(m).unwrap();
            // SAFETY: umount2 with a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// A fresh directory `/tmp/h8n-PID-...`, removed when dropped (and by the next run if this
/// one is killed).
pub fn tmp_dir() -> tempfile::TempDir {
    let _ = backend();
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir_in("/tmp")
        .expect("a directory in /tmp")
}

static NETS: AtomicU32 = AtomicU32::new(0);

struct NetInner {
    test: String,
    /// `h8n-PID-K`: the prefix of this net's namespaces.
    name: String,
    /// The switch namespace (netns backend only).
    switch: Option<String>,
    nodes: AtomicUsize,
}

impl Drop for NetInner {
    fn drop(&mut self) {
        if let Some(sw) = &self.switch {
            let _ = ip(&["netns", "del", sw]);
        }
    }
}

/// One test's network: the switch its nodes plug into.
pub struct Net(Arc<NetInner>);

impl Net {
    /// A new network for the test `test` (named in skip and fallback lines).
    pub fn new(test: &str) -> Net {
        let k = NETS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{k}", std::process::id());
        let switch = match backend() {
            Backend::Netns => {
                let sw = format!("{name}-sw");
                ip(&["netns", "add", &sw]).unwrap_or_else(|e| panic!("{test}: {e}"));
                // Owned from here: a failure below still deletes the namespace.
                Some(sw)
            }
            Backend::Loopback { why } => {
                loud(&format!(
                    "*** netns unavailable: running on loopback ({test}: {why}) ***"
                ));
                None
            }
        };
        let net = Net(Arc::new(NetInner {
            test: test.into(),
            name,
            switch,
            nodes: AtomicUsize::new(0),
        }));
        if let Some(sw) = &net.0.switch {
            for args in [
                &["-n", sw, "link", "add", BRIDGE, "type", "bridge"][..],
                &["-n", sw, "link", "set", BRIDGE, "up"],
            ] {
                ip(args).unwrap_or_else(|e| panic!("{test}: {e}"));
            }
        }
        net
    }

    /// True when this net's nodes are namespaces (false: loopback).
    pub fn is_netns(&self) -> bool {
        self.0.switch.is_some()
    }

    /// A new node plugged into this net; `label` names it in messages and in its namespace.
    pub fn node(&self, label: &str) -> Node {
        let index = self.0.nodes.fetch_add(1, Ordering::Relaxed);
        assert!(index < 253, "{}: at most 253 nodes in a net", self.0.test);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let Some(sw) = &self.0.switch else {
            return Node(Arc::new(NodeInner {
                net: self.0.clone(),
                label,
                index,
                ns: None,
                fd: None,
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ports: loopback_ports(),
                shaped: AtomicU8::new(SHAPED_NONE),
            }));
        };
        let ns = format!("{}-{index}-{label}", self.0.name);
        let test = &self.0.test;
        ip(&["netns", "add", &ns]).unwrap_or_else(|e| panic!("{test}: {e}"));
        let fd = File::open(format!("/run/netns/{ns}"))
            .map(OwnedFd::from)
            .map_err(|e| format!("/run/netns/{ns}: {e}"));
        // Owned from here: Drop deletes the namespace whatever fails below.
        let mut node = NodeInner {
            net: self.0.clone(),
            label,
            index,
            ns: Some(ns.clone()),
            fd: None,
            addr: IpAddr::V4(Ipv4Addr::new(10, 208, 0, index as u8 + 1)),
            ports: [0; SLOTS],
            shaped: AtomicU8::new(SHAPED_NONE),
        };
        node.fd = Some(Arc::new(fd.unwrap_or_else(|e| panic!("{test}: {e}"))));
        let port = port_name(index);
        let cidr = format!("{}/24", node.addr);
        for args in [
            &[
                "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", NODE_DEV, "netns",
                &ns,
            ][..],
            &["-n", sw, "link", "set", &port, "master", BRIDGE, "up"],
            &["-n", &ns, "addr", "add", &cidr, "dev", NODE_DEV],
            &["-n", &ns, "link", "set", NODE_DEV, "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
        ] {
            ip(args).unwrap_or_else(|e| panic!("{test}: {e}"));
        }
        Node(Arc::new(node))
    }
}

/// The switch's end of node `index`'s veth pair.
fn port_name(index: usize) -> String {
    format!("h8np{index}")
}

/// Ports for a loopback node: free when picked (bound to 127.0.0.1:0 and released), so
/// distinct from every other node's of this process unless the kernel hands one out again in
/// between, which it does not do soon.
fn loopback_ports() -> [u16; SLOTS] {
    let held: Vec<TcpListener> = (0..SLOTS)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let mut ports = [0; SLOTS];
    for (p, l) in ports.iter_mut().zip(&held) {
        *p = l.local_addr().unwrap().port();
    }
    ports
}

const SHAPED_NONE: u8 = 0;
const SHAPED_NETEM: u8 = 1;
const SHAPED_NFT: u8 = 2;

struct NodeInner {
    net: Arc<NetInner>,
    label: String,
    index: usize,
    /// The namespace (netns backend only).
    ns: Option<String>,
    /// The namespace, open, for setns(2).
    fd: Option<Arc<OwnedFd>>,
    addr: IpAddr,
    /// The service ports of a loopback node.
    ports: [u16; SLOTS],
    /// What [`Node::netem`] installed: none, a netem qdisc, or the nftables loss table.
    shaped: AtomicU8,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        if let Some(ns) = &self.ns {
            // What a test started in the node and did not stop dies with it.
            kill_pids_in(ns);
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A node: a network namespace with one address on its net (or 127.0.0.1 on loopback).
/// Clones are the same node; the namespace goes with the last one.
#[derive(Clone)]
pub struct Node(Arc<NodeInner>);

impl Node {
    /// The node's address: 10.208.0.N, or 127.0.0.1 on loopback.
    pub fn addr(&self) -> IpAddr {
        self.0.addr
    }

    /// The node's `slot`-th service address (slot < [`SLOTS`]): the address to bind a
    /// server of this node to and to connect to it, the same after a restart. In namespaces
    /// the ports are the same on every node; on loopback every node has ports of its own.
    pub fn endpoint(&self, slot: usize) -> SocketAddr {
        assert!(slot < SLOTS, "a node has {SLOTS} service addresses");
        match self.0.ns {
            Some(_) => SocketAddr::new(self.0.addr, NETNS_PORT + slot as u16),
            None => SocketAddr::new(self.0.addr, self.0.ports[slot]),
        }
    }

    /// The node's label, as given to [`Net::node`].
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// True when the node is a namespace.
    pub fn is_netns(&self) -> bool {
        self.0.ns.is_some()
    }

    /// The namespace's name, for `ip netns exec` in a shell script (None on loopback).
    pub fn netns_name(&self) -> Option<&str> {
        self.0.ns.as_deref()
    }

    /// A command that runs `prog` in this node. The child enters the node's network
    /// namespace with setns(2) between fork and exec and nothing else changes: it keeps
    /// the mount namespace (pinfs mounts and the holder sockets under /run/pinfs, made
    /// before or after, are the test's own), its PID is the program's (kill -9 hits the
    /// program, not a wrapper), and mounts it makes are seen outside. `ip netns exec`
    /// would give it a mount namespace of its own (to remount /sys).
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(prog);
        if let Some(fd) = self.0.fd.clone() {
            // SAFETY: between fork and exec the closure makes one system call (setns) on a
            // descriptor it owns, which is async-signal-safe, and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Runs `f` on a new thread that is in this node (its sockets are the node's); the
    /// caller's thread stays where it is.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let fd = self.0.fd.clone();
        let label = self.0.label.clone();
        std::thread::spawn(move || {
            if let Some(fd) = fd {
                // SAFETY: setns(2) of this thread into a network namespace we hold open; a
                // network namespace may be entered by one thread of a process.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into node {label}: {}",
                    std::io::Error::last_os_error()
                );
            }
            f()
        })
    }

    /// Runs `f` in this node and returns what it returns (a panic in it is this caller's).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.thread(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Waits (at most `timeout`) until a TCP connection from this node to `addr` succeeds.
    pub fn wait_tcp(&self, addr: SocketAddr, timeout: Duration) -> bool {
        self.run(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    }

    /// Starts a process in this node that can crash and come back: `build` makes its
    /// command (with [`Node::command`]) each time it starts.
    pub fn start(&self, build: impl Fn(&Node) -> Command + Send + 'static) -> Proc {
        let mut p = Proc {
            node: self.clone(),
            build: Box::new(build),
            child: None,
        };
        p.restart();
        p
    }

    fn skipped(&self, fault: &str, why: &str) -> bool {
        loud(&format!(
            "*** SKIPPED {fault} on node {} ({}): {why} ***",
            self.0.label, self.0.net.test
        ));
        false
    }

    /// Partitions the node: its switch port goes down, so what it sends and what is sent to
    /// it vanishes (no error reaches either side; a connect times out, an established
    /// connection stalls). False (said loudly) on loopback.
    #[must_use]
    pub fn link_down(&self) -> bool {
        self.set_port("link_down", "down")
    }

    /// Ends a [`Node::link_down`]: connections that stalled resume (TCP retransmits).
    #[must_use]
    pub fn link_up(&self) -> bool {
        self.set_port("link_up", "up")
    }

    fn set_port(&self, fault: &str, state: &str) -> bool {
        let Some(sw) = &self.0.net.switch else {
            return self.skipped(fault, "no network namespaces (loopback)");
        };
        ip(&["-n", sw, "link", "set", &port_name(self.0.index), state])
            .unwrap_or_else(|e| panic!("{}: {fault}: {e}", self.0.net.test));
        true
    }

    /// Makes the link into this node lossy and slow: every packet sent to it is dropped with
    /// probability `loss_percent` and the rest are delayed by `delay_ms`, so a round trip
    /// between this node and any other grows by `delay_ms`. Replaces an earlier netem of
    /// this node. `tc netem` on the switch port; on a kernel without netem, loss alone is
    /// an nftables rule on the node's ingress (a delay then cannot be made: skipped). False
    /// (said loudly) when skipped.
    #[must_use]
    pub fn netem(&self, loss_percent: f64, delay_ms: u32) -> bool {
        assert!(
            (0.0..=100.0).contains(&loss_percent),
            "loss is a percentage"
        );
        let Some(sw) = &self.0.net.switch else {
            return self.skipped("netem", "no network namespaces (loopback)");
        };
        self.clear_netem();
        let port = port_name(self.0.index);
        let loss = format!("{loss_percent}%");
        let delay = format!("{delay_ms}ms");
        let err = match tc(&[
            "-n", sw, "qdisc", "add", "dev", &port, "root", "netem", "loss", &loss, "delay", &delay,
        ]) {
            Ok(()) => {
                self.0.shaped.store(SHAPED_NETEM, Ordering::Relaxed);
                return true;
            }
            Err(e) => e,
        };
        if !err.contains("qdisc kind is unknown") {
            panic!("{}: netem: {err}", self.0.net.test);
        }
        if delay_ms > 0 {
            return self.skipped(
                "netem delay",
                "the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), and nothing else here delays packets",
            );
        }
        // Loss without netem: nftables drops arriving packets at random, before the stack
        // (in hundredths of a percent; numgen's values are 0..=9999).
        let per_10000 = (loss_percent * 100.0).round() as u32;
        let rule = if per_10000 >= 10000 {
            "drop".to_string()
        } else {
            format!("numgen random mod 10000 < {per_10000} drop")
        };
        let rules = format!(
            "table netdev {LOSS_TABLE} {{\n chain in {{\n  type filter hook ingress device {NODE_DEV} priority 0;\n  {rule}\n }}\n}}\n"
        );
        match self.nft_script(&rules) {
            Ok(()) => {
                self.0.shaped.store(SHAPED_NFT, Ordering::Relaxed);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.skipped(
                "netem loss",
                "the kernel has no netem qdisc and `nft` is missing (install nftables)",
            ),
            Err(e) => panic!("{}: netem loss through nft: {e}", self.0.net.test),
        }
    }

    fn nft_script(&self, script: &str) -> std::io::Result<()> {
        let mut child = self
            .command(tool("nft"))
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "nft {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Ends a [`Node::netem`]: the link into the node is clean again (no-op when none).
    pub fn clear_netem(&self) {
        let test = &self.0.net.test;
        match self.0.shaped.swap(SHAPED_NONE, Ordering::Relaxed) {
            SHAPED_NETEM => {
                let sw = self.0.net.switch.as_deref().unwrap();
                tc(&[
                    "-n",
                    sw,
                    "qdisc",
                    "del",
                    "dev",
                    &port_name(self.0.index),
                    "root",
                ])
                .unwrap_or_else(|e| panic!("{test}: clear_netem: {e}"));
            }
            SHAPED_NFT => self
                .nft_script(&format!("delete table netdev {LOSS_TABLE}\n"))
                .unwrap_or_else(|e| panic!("{test}: clear_netem: {e}")),
            _ => {}
        }
    }
}

/// A process in a node that can crash (kill -9) and come back; killed when dropped.
pub struct Proc {
    node: Node,
    build: Box<dyn Fn(&Node) -> Command + Send>,
    child: Option<Child>,
}

impl Proc {
    /// The running process's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process is running").id()
    }

    /// The running process.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the process is running")
    }

    /// Kills the process with SIGKILL (what a crash looks like to its peers) and reaps it.
    pub fn crash(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("the process is running");
        let _ = c.kill();
        c.wait().expect("reap the killed process")
    }

    /// Starts the process again (crashing it first if it runs): the same command, a new
    /// PID.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.crash();
        }
        let mut cmd = (self.build)(&self.node);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{}: start {cmd:?} in node {}: {e}",
                self.node.0.net.test, self.node.0.label
            )
        }));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Serves TCP echo on `listener` for ever: every byte read on a connection is written back.
pub fn serve_echo(listener: TcpListener) -> ! {
    loop {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
}

/// Binds `addr` in the calling thread's namespace, retrying for up to 10 s: the address
/// of a server that was just killed can stay in use for a moment.
pub fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// `n` one-byte TCP round trips on `s`; their median.
pub fn median_rtt(s: &mut TcpStream, n: usize) -> Duration {
    s.set_nodelay(true).unwrap();
    let mut times = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for i in 0..n {
        let t = Instant::now();
        s.write_all(&[i as u8]).unwrap();
        s.read_exact(&mut b).unwrap();
        times.push(t.elapsed());
        assert_eq!(b[0], i as u8, "the echo answered another byte");
    }
    times.sort();
    times[n / 2]
}

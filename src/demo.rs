//! `pinfs demo`: every policy at work on a real mount, with a holder that ignores breaks and
//! keeps writing (a NIC nobody told), then a new file that takes the freed space; then the
//! same with a remote peer that writes through an exported pin and ignores the recall, under
//! each policy and with an on-demand (ODP) export, with the breaker's latency side by side.
//!
//! Each scenario mounts a fresh image with its options, pins a file from a separate holder
//! process (`pinfs pin`), truncates the file (the breaker), and checks what the user must
//! see. The demo exits non-zero if any outcome differs from the expected one.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILE_LEN: usize = 64 * 1024;
/// What the unresponsive holder keeps writing (`--write-byte 88`).
const HOLDER_BYTE: u8 = b'X';

struct Scenario {
    name: &'static str,
    options: &'static str,
    holder: &'static [&'static str],
    expect: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "revoke, busy_blocks=off",
        options: "break_policy=revoke,lease_break_time=0.5,busy_blocks=off",
        holder: &["--ignore-breaks", "--write-byte", "88", "--every", "5"],
        expect: "truncate succeeds at the deadline; the new file is CORRUPTED by the holder",
    },
    Scenario {
        name: "revoke, busy_blocks=on",
        options: "break_policy=revoke,lease_break_time=0.5,busy_blocks=on",
        holder: &["--ignore-breaks", "--write-byte", "88", "--every", "5"],
        expect: "truncate succeeds at the deadline; blocks stay busy; the new file is intact",
    },
    Scenario {
        name: "refuse",
        options: "break_policy=refuse,lease_break_time=0.5",
        holder: &["--ignore-breaks", "--write-byte", "88", "--every", "5"],
        expect: "truncate fails with ETXTBSY at the deadline; the file keeps its size",
    },
    Scenario {
        name: "wait",
        options: "break_policy=wait,lease_break_time=0.5",
        holder: &["--ignore-breaks", "--hold", "1.5"],
        expect: "truncate waits past the break time until the holder lets go (about 1.5 s)",
    },
    Scenario {
        name: "cooperative holder",
        options: "break_policy=revoke,lease_break_time=30",
        holder: &[],
        expect: "the holder releases on the break; truncate returns at once",
    },
];

struct Outcome {
    ok: bool,
    seen: String,
}

struct Mounted {
    mnt: PathBuf,
    image: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        crate::store::image::Image::wait_until_free(&self.image, Duration::from_secs(20));
    }
}

fn run(exe: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pinfs {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn start_holder(
    exe: &Path,
    file: &Path,
    extra: &[&str],
) -> Result<(Child, BufReader<std::process::ChildStdout>), String> {
    let mut child = Command::new(exe)
        .arg("pin")
        .arg(file)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting a holder: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut grant = String::new();
    out.read_line(&mut grant).map_err(|e| e.to_string())?;
    let granted = serde_json::from_str::<serde_json::Value>(&grant)
        .is_ok_and(|g| g.get("pin").is_some_and(serde_json::Value::is_u64));
    if !granted {
        let _ = child.kill();
        return Err(format!("the holder did not pin: {grant}"));
    }
    Ok((child, out))
}

fn scenario(exe: &Path, work: &Path, n: usize, s: &Scenario) -> Result<Outcome, String> {
    let image = work.join(format!("demo{n}.img"));
    let mnt = work.join(format!("mnt{n}"));
    fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    run(
        exe,
        &["mkfs", image.to_str().unwrap_or_default(), "--size", "64M"],
    )?;
    run(
        exe,
        &[
            "mount",
            image.to_str().unwrap_or_default(),
            mnt.to_str().unwrap_or_default(),
            "-o",
            s.options,
        ],
    )?;
    let _mounted = Mounted {
        mnt: mnt.clone(),
        image,
    };
    let path = mnt.join("pinned");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    file.write_all_at(&vec![b'A'; FILE_LEN], 0)
        .map_err(|e| e.to_string())?;
    let (mut holder, _events) = start_holder(exe, &path, s.holder)?;
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let truncated = file.set_len(0);
    let took = t0.elapsed();
    // The truncate made durable (without this, the journal flusher does it within a second),
    // the freed space goes to a new file of the same size.
    if truncated.is_ok() {
        file.sync_all().map_err(|e| e.to_string())?;
    }
    let fresh = mnt.join("new-file");
    fs::write(&fresh, vec![b'B'; FILE_LEN]).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(100)); // the holder writes on meanwhile
    let data = fs::read(&fresh).map_err(|e| e.to_string())?;
    let corrupted = data.iter().filter(|&&b| b == HOLDER_BYTE).count();
    let busy = crate::holder::client::Connection::for_path(&mnt)
        .and_then(|mut c| c.status(false))
        .ok()
        .and_then(|j| serde_json::from_str::<crate::fs::status::Status>(&j).ok())
        .map(|s| s.space.busy_blocks)
        .map_or("?".to_string(), |n| n.to_string());
    let _ = holder.kill();
    let _ = holder.wait();
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let ms = took.as_millis();
    let outcome = match n {
        0 => Outcome {
            ok: truncated.is_ok() && corrupted > 0 && took >= Duration::from_millis(450),
            seen: format!("truncate ok after {ms} ms; {corrupted} of {FILE_LEN} bytes of the new file are the holder's 'X'"),
        },
        1 => Outcome {
            ok: truncated.is_ok() && corrupted == 0 && busy == "16",
            seen: format!("truncate ok after {ms} ms; {busy} blocks busy; new file intact ({corrupted} bad bytes)"),
        },
        2 => Outcome {
            ok: truncated.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::ETXTBSY) && size == FILE_LEN as u64,
            seen: format!("truncate: {} after {ms} ms; size still {size}", truncated.as_ref().err().map_or("succeeded".into(), |e| e.to_string())),
        },
        3 => Outcome {
            ok: truncated.is_ok() && took >= Duration::from_millis(1200),
            seen: format!("truncate ok after {ms} ms (break time 500 ms)"),
        },
        _ => Outcome {
            ok: truncated.is_ok() && took < Duration::from_millis(1000) && corrupted == 0,
            seen: format!("truncate ok after {ms} ms; new file intact"),
        },
    };
    Ok(outcome)
}

/// A remote scenario: the holder exports its pin (`pinfs pin --export`) and a remote peer
/// (`pinfs remote ... --every 5 --ignore-recalls`) keeps writing 'X' through it; the holder
/// itself cooperates (it recalls the key and unpins once every peer acked or went).
struct RemoteScenario {
    name: &'static str,
    options: &'static str,
    /// An on-demand export (`--odp`): a break invalidates the region, no recall is sent.
    odp: bool,
    /// What the outcome is judged by.
    kind: RemoteKind,
    expect: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RemoteKind {
    Wait,
    Refuse,
    RevokeBusy,
    RevokeNoBusy,
    Odp,
}

/// When the `wait` scenario's peer is killed (the break waits for it that long).
const PEER_KILLED_AFTER: Duration = Duration::from_millis(1500);

const REMOTE_SCENARIOS: &[RemoteScenario] = &[
    RemoteScenario {
        name: "remote peer, wait",
        options: "break_policy=wait,lease_break_time=0.5",
        odp: false,
        kind: RemoteKind::Wait,
        expect: "truncate waits past the break time until the peer goes (it is killed at 1.5 s)",
    },
    RemoteScenario {
        name: "remote peer, refuse",
        options: "break_policy=refuse,lease_break_time=0.5",
        odp: false,
        kind: RemoteKind::Refuse,
        expect: "truncate fails with ETXTBSY at the deadline; the file keeps its size and the pin",
    },
    RemoteScenario {
        name: "remote peer, revoke, busy_blocks=off",
        options: "break_policy=revoke,lease_break_time=0.5,busy_blocks=off",
        odp: false,
        kind: RemoteKind::RevokeNoBusy,
        expect: "truncate succeeds at the deadline; the peer's later writes CORRUPT the new file",
    },
    RemoteScenario {
        name: "remote peer, revoke, busy_blocks=on",
        options: "break_policy=revoke,lease_break_time=0.5,busy_blocks=on",
        odp: false,
        kind: RemoteKind::RevokeBusy,
        expect: "truncate succeeds at the deadline; the peer's later writes land in busy blocks, in no file",
    },
    RemoteScenario {
        name: "remote peer, ODP export",
        options: "break_policy=wait,lease_break_time=30",
        odp: true,
        kind: RemoteKind::Odp,
        expect: "truncate returns at once (no recall, no wait); the peer's next write is refused",
    },
];

/// Starts `pinfs remote` writing 'X' over the region every 5 ms, ignoring recalls; returns
/// once its first write went through, with a thread collecting its later lines.
fn start_peer(
    exe: &Path,
    nic: &str,
    rkey: &str,
) -> Result<(Child, std::thread::JoinHandle<Vec<String>>), String> {
    let len = FILE_LEN.to_string();
    let mut child = Command::new(exe)
        .args(["remote", nic, "--rkey", rkey, "write", "0", "88", &len])
        .args(["--every", "5", "--ignore-recalls"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting a remote peer: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    out.read_line(&mut first).map_err(|e| e.to_string())?;
    if !first.contains("\"op\":\"write\"") || first.contains("\"error\"") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the remote peer's first write failed: {first}"));
    }
    let lines = std::thread::spawn(move || out.lines().map_while(Result::ok).collect());
    Ok((child, lines))
}

/// The export line `pinfs pin --export` prints: the NIC's address and the key.
fn read_export(out: &mut BufReader<std::process::ChildStdout>) -> Result<(String, String), String> {
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| format!("the holder's export line {line:?}: {e}"))?;
    let field = |k: &str| v["export"][k].as_str().map(str::to_string);
    field("nic")
        .zip(field("rkey"))
        .ok_or_else(|| format!("the holder did not export: {line}"))
}

/// What a remote scenario measured.
struct RemoteOutcome {
    outcome: Outcome,
    /// How long the truncate took.
    took: Duration,
}

fn remote_scenario(
    exe: &Path,
    work: &Path,
    n: usize,
    s: &RemoteScenario,
) -> Result<RemoteOutcome, String> {
    let image = work.join(format!("remote{n}.img"));
    let mnt = work.join(format!("rmnt{n}"));
    fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    run(
        exe,
        &["mkfs", image.to_str().unwrap_or_default(), "--size", "64M"],
    )?;
    run(
        exe,
        &[
            "mount",
            image.to_str().unwrap_or_default(),
            mnt.to_str().unwrap_or_default(),
            "-o",
            s.options,
        ],
    )?;
    let _mounted = Mounted {
        mnt: mnt.clone(),
        image,
    };
    let path = mnt.join("pinned");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    file.write_all_at(&vec![b'A'; FILE_LEN], 0)
        .map_err(|e| e.to_string())?;
    let mut args = vec!["--export", "127.0.0.1:0"];
    if s.odp {
        args.push("--odp");
    }
    let (mut holder, mut holder_out) = start_holder(exe, &path, &args)?;
    let (nic, rkey) = match read_export(&mut holder_out) {
        Ok(e) => e,
        Err(e) => {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(e);
        }
    };
    let (mut peer, peer_lines) = match start_peer(exe, &nic, &rkey) {
        Ok(p) => p,
        Err(e) => {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(e);
        }
    };
    let peer_pid = peer.id();
    // The wait scenario's peer goes (a crash) while the breaker waits on it.
    let killer = (s.kind == RemoteKind::Wait).then(|| {
        std::thread::spawn(move || {
            std::thread::sleep(PEER_KILLED_AFTER);
            if let Ok(pid) = i32::try_from(peer_pid) {
                // SAFETY: kill(2) on the peer this demo started (and has not reaped yet: it
                // is waited for only after this thread is joined).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    });
    let t0 = Instant::now();
    let truncated = file.set_len(0);
    let took = t0.elapsed();
    if let Some(k) = killer {
        let _ = k.join();
    }
    if truncated.is_ok() {
        file.sync_all().map_err(|e| e.to_string())?;
    }
    let fresh = mnt.join("new-file");
    fs::write(&fresh, vec![b'B'; FILE_LEN]).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(100)); // the peer writes on meanwhile
    let data = fs::read(&fresh).map_err(|e| e.to_string())?;
    let corrupted = data.iter().filter(|&&b| b == HOLDER_BYTE).count();
    let busy = crate::holder::client::Connection::for_path(&mnt)
        .and_then(|mut c| c.status(false))
        .ok()
        .and_then(|j| serde_json::from_str::<crate::fs::status::Status>(&j).ok())
        .map(|s| s.space.busy_blocks)
        .map_or("?".to_string(), |n| n.to_string());
    let _ = peer.kill();
    let _ = peer.wait();
    let lines = peer_lines.join().unwrap_or_default();
    let writes = lines
        .iter()
        .filter(|l| !l.contains("\"error\"") && l.contains("\"op\""))
        .count();
    let refused = lines
        .iter()
        .find(|l| l.contains("\"error\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["error"].as_str().map(str::to_string));
    let recalled = lines.iter().any(|l| l.contains("\"remote\":\"recall\""));
    let _ = holder.kill();
    let _ = holder.wait();
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let ms = took.as_millis();
    let errno = truncated.as_ref().err().and_then(|e| e.raw_os_error());
    let recall = if recalled {
        "recalled, never acked"
    } else {
        "no recall reached it"
    };
    let outcome = match s.kind {
        RemoteKind::Wait => Outcome {
            ok: truncated.is_ok() && recalled && took >= Duration::from_millis(1200),
            seen: format!("peer {recall}; truncate ok after {ms} ms (break time 500 ms), once the peer was gone"),
        },
        RemoteKind::Refuse => Outcome {
            ok: errno == Some(libc::ETXTBSY) && recalled && size == FILE_LEN as u64 && corrupted == 0,
            seen: format!(
                "peer {recall}; truncate: {} after {ms} ms; size still {size}; the peer wrote on ({writes} more writes), new file intact",
                truncated.as_ref().err().map_or("succeeded".into(), |e| e.to_string())
            ),
        },
        RemoteKind::RevokeNoBusy => Outcome {
            ok: truncated.is_ok() && recalled && corrupted > 0,
            seen: format!("peer {recall}; truncate ok after {ms} ms; {corrupted} of {FILE_LEN} bytes of the new file are the peer's 'X'"),
        },
        RemoteKind::RevokeBusy => Outcome {
            ok: truncated.is_ok() && recalled && corrupted == 0 && busy == "16" && refused.is_none(),
            seen: format!("peer {recall}; truncate ok after {ms} ms; {busy} blocks busy; the peer wrote on ({writes} more writes), new file intact ({corrupted} bad bytes)"),
        },
        RemoteKind::Odp => Outcome {
            ok: truncated.is_ok() && !recalled && corrupted == 0 && refused.is_some() && took < Duration::from_millis(1000),
            seen: format!(
                "{recall}; truncate ok after {ms} ms; the peer's next write: {}; new file intact",
                refused.as_deref().unwrap_or("not refused")
            ),
        },
    };
    Ok(RemoteOutcome { outcome, took })
}

/// Runs the demonstration; returns whether every outcome was the expected one.
pub fn run_demo() -> Result<bool, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("the demo needs /dev/fuse (modprobe fuse)".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("the demo needs root (it mounts filesystems)".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("pinfs-demo")
        .tempdir()
        .map_err(|e| e.to_string())?;
    // Output that cannot be written (its reader went away: `pinfs demo | head`) ends the demo
    // quietly, between scenarios, so that its work directory is still removed.
    let mut out = std::io::stdout().lock();
    let mut all_ok = true;
    macro_rules! say {
        ($($arg:tt)*) => {
            if writeln!(out, $($arg)*).and_then(|_| out.flush()).is_err() {
                return Ok(all_ok);
            }
        };
    }
    say!("pinfs demo: a holder pins a 64 KiB file; the file is truncated while the holder keeps");
    say!("writing 'X' into its pinned blocks; then a new 64 KiB file takes the freed space.\n");
    let mut rows = Vec::new();
    for (n, s) in SCENARIOS.iter().enumerate() {
        let o = scenario(&exe, work.path(), n, s).unwrap_or_else(|e| Outcome {
            ok: false,
            seen: format!("error: {e}"),
        });
        all_ok &= o.ok;
        say!(
            "{:<24} {}",
            s.name,
            if o.ok { "as expected" } else { "UNEXPECTED" }
        );
        say!("{:<24} expected: {}", "", s.expect);
        say!("{:<24} seen:     {}\n", "", o.seen);
        rows.push((s.name, o.ok));
    }
    say!("Remote peers: the holder exports its pin (pinfs pin --export) and a remote peer writes");
    say!("'X' through the remote key every 5 ms, ignoring recalls; the holder cooperates.\n");
    let mut latencies = Vec::new();
    for (n, s) in REMOTE_SCENARIOS.iter().enumerate() {
        let (o, took) = match remote_scenario(&exe, work.path(), n, s) {
            Ok(r) => (r.outcome, Some(r.took)),
            Err(e) => (
                Outcome {
                    ok: false,
                    seen: format!("error: {e}"),
                },
                None,
            ),
        };
        all_ok &= o.ok;
        say!(
            "{:<36} {}",
            s.name,
            if o.ok { "as expected" } else { "UNEXPECTED" }
        );
        say!("{:<36} expected: {}", "", s.expect);
        say!("{:<36} seen:     {}\n", "", o.seen);
        rows.push((s.name, o.ok));
        latencies.push((s.name, took));
    }
    say!("The breaker's latency with a peer that ignores the recall, side by side:");
    for (name, took) in &latencies {
        say!(
            "  {:<36} {}",
            name,
            took.map_or("-".into(), |t| format!("{} ms", t.as_millis()))
        );
    }
    say!("");
    say!(
        "{} of {} scenarios as expected",
        rows.iter().filter(|r| r.1).count(),
        rows.len()
    );
    Ok(all_ok)
}

//! The holder commands of the CLI: `pin` (a holder you can watch and script, and with
//! `--export` a soft NIC serving remote peers), `remote` (such a peer), `status` and
//! `fence`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fs::status::to_json;
use crate::holder::client::{ClientError, Connection, EventKind, PinExtent, PinOptions};

/// What `pinfs pin` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct PinCommand {
    /// The file to pin.
    pub file: std::path::PathBuf,
    /// First byte.
    pub offset: u64,
    /// Bytes (default: to the end of the file).
    pub len: Option<u64>,
    /// Read-only pin.
    pub read_only: bool,
    /// Unbreakable lease.
    pub unbreakable: bool,
    /// Never release on a break (an unresponsive holder).
    pub ignore_breaks: bool,
    /// Rewrite the pinned range with this byte...
    pub write_byte: Option<u8>,
    /// ...every this often.
    pub every: Option<Duration>,
    /// Give up the pin and exit after this long.
    pub hold: Option<Duration>,
    /// Export the pin through a soft NIC on this address.
    pub export: Option<std::net::SocketAddr>,
    /// On-demand export: a break invalidates the region at once (no recall, no wait) and
    /// the holder pins the range again; peers' next accesses reach its current blocks.
    pub odp: bool,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn refused(what: &str, e: ClientError) -> String {
    match e {
        ClientError::Refused { errno, message } => {
            format!(
                "{what}: {message}: {}",
                std::io::Error::from_raw_os_error(errno)
            )
        }
        other => format!("{what}: {other}"),
    }
}

/// The first line `pinfs pin` prints: the grant.
#[derive(Serialize)]
struct GrantJson {
    holder: u64,
    pin: u64,
    extents: Vec<PinExtent>,
}

/// Runs `pinfs pin`: pins, prints the grant and every event as JSON lines (the events in
/// the shape of `status --events`), and behaves as asked until killed or `--hold` expires.
pub fn pin(cmd: &PinCommand) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!cmd.read_only)
        .open(&cmd.file)
        .map_err(|e| format!("{}: {e}", cmd.file.display()))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let len = cmd.len.unwrap_or(size.saturating_sub(cmd.offset));
    if len == 0 {
        return Err(format!(
            "{}: nothing to pin (the file is {size} bytes); give --len",
            cmd.file.display()
        ));
    }
    let mut conn = Connection::for_file(&file)
        .map_err(|e| refused(&format!("{}: not on a pinfs mount?", cmd.file.display()), e))?;
    let opts = PinOptions {
        read_only: cmd.read_only,
        unbreakable: cmd.unbreakable,
    };
    let mut pin = conn
        .pin(&file, cmd.offset, len, opts)
        .map_err(|e| refused(&format!("pin {}", cmd.file.display()), e))?;
    // The pin holds the blocks, not the file: like a memory registration, it outlives the
    // descriptor (so an unlinked pinned file can be freed, which breaks the lease). An
    // on-demand export keeps it, to pin the range again after each break.
    let file = cmd.odp.then_some(file);
    say(&to_json(&GrantJson {
        holder: pin.holder,
        pin: pin.id,
        extents: pin.extents.clone(),
    }));
    if let Some(addr) = cmd.export {
        return exported(cmd, conn, pin, addr, file, len, opts);
    }
    let end = cmd.hold.map(|h| Instant::now() + h);
    let writing = cmd.write_byte.zip(cmd.every).filter(|_| !cmd.read_only);
    let mut next_write = Instant::now();
    let mut pinned = true;
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if let Some((byte, every)) = writing {
            // A NIC does not stop because nobody told it (with --ignore-breaks it keeps going
            // even after a revocation).
            if now >= next_write && (pinned || cmd.ignore_breaks) {
                pin.as_mut_slice().fill(byte);
                next_write = now + every;
            }
        }
        let mut wait = end.map_or(Duration::from_secs(3600), |e| {
            e.saturating_duration_since(now)
        });
        if writing.is_some() {
            wait = wait.min(next_write.saturating_duration_since(Instant::now()));
        }
        match conn.next_event(Some(wait)) {
            Ok(Some(ev)) => {
                let kind = ev.lease().map(|l| l.kind);
                if kind == Some(EventKind::Granted) {
                    continue;
                }
                say(&to_json(&ev));
                match kind {
                    Some(EventKind::Break { .. }) if !cmd.ignore_breaks && pinned => {
                        conn.unpin(&pin).map_err(|e| refused("release", e))?;
                        pinned = false;
                    }
                    Some(EventKind::Revoked) => pinned = false,
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(e) => return Err(refused("the daemon went away", e)),
        }
    }
    if pinned {
        let _ = conn.unpin(&pin);
    }
    Ok(())
}

/// The line `pinfs pin --export` prints once the NIC serves the pin.
#[derive(Serialize)]
struct ExportJson {
    export: ExportedJson,
}

#[derive(Serialize)]
struct ExportedJson {
    pin: u64,
    rkey: String,
    nic: String,
    len: usize,
}

/// A line about the export: `{"remote":"recall","rkey":K,"peers":N}` and the like.
#[derive(Serialize)]
struct RemoteJson {
    remote: &'static str,
    rkey: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unacked: Option<Vec<String>>,
}

/// How often an exporting holder looks at its NIC (acks, peers to report).
const NIC_TICK: Duration = Duration::from_millis(20);

/// `pinfs pin --export`: serves the pin to remote peers; on a break recalls the key from
/// every peer and unpins once they all acked (or went). A peer that never acks keeps the
/// region: the mount's policy then decides (under `revoke` the blocks it reaches are busy).
fn exported(
    cmd: &PinCommand,
    mut conn: Connection,
    pin: crate::holder::client::Pin,
    addr: std::net::SocketAddr,
    file: Option<std::fs::File>,
    pin_len: u64,
    opts: PinOptions,
) -> Result<(), String> {
    use crate::remote::protocol::rkey_text;
    let (mut pin_id, len) = (pin.id, pin.len());
    let nic = crate::remote::Nic::bind(addr, crate::remote::NicOptions::default())
        .map_err(|e| format!("--export {addr}: {e}"))?;
    let rkey = nic
        .export(pin)
        .map_err(|e| format!("--export {addr}: {e}"))?;
    conn.report_export(pin_id, rkey, nic.addr())
        .map_err(|e| refused("export", e))?;
    say(&to_json(&ExportJson {
        export: ExportedJson {
            pin: pin_id,
            rkey: rkey_text(rkey),
            nic: nic.addr().to_string(),
            len,
        },
    }));
    let line = |what: &'static str, peers: Option<Vec<String>>, unacked: Option<Vec<String>>| {
        say(&to_json(&RemoteJson {
            remote: what,
            rkey: rkey_text(rkey),
            peers,
            unacked,
        }))
    };
    let end = cmd.hold.map(|h| Instant::now() + h);
    let mut reported = 0;
    let mut recalling = false;
    // The lease is still ours to give back (not released, not revoked).
    let mut pinned = true;
    let mut served = true;
    loop {
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let generation = nic.generation();
        if served && generation != reported {
            reported = generation;
            // Status only: a refusal (the pin went meanwhile) changes nothing here.
            if let Err(e) = conn.report_peers(pin_id, &nic.peers(rkey)) {
                eprintln!("pinfs: {}", refused("report peers", e));
            }
        }
        if served && recalling && nic.unacked(rkey).is_empty() {
            // Every peer acked or went: nothing reaches the region from outside now.
            let _ = nic.withdraw(rkey);
            served = false;
            line("recalled", None, None);
            if conn.unpin_id(pin_id).is_ok() {
                pinned = false;
            }
            let _ = conn.report_peers(pin_id, &[]);
        }
        let wait = if served && recalling {
            // Acks wake this at once; events are looked at between.
            if nic.wait_acked(rkey, NIC_TICK) {
                continue;
            }
            Duration::from_millis(1)
        } else {
            NIC_TICK
        };
        match conn.next_event(Some(wait)) {
            Ok(Some(ev)) => {
                let kind = ev.lease().map(|l| l.kind);
                if kind == Some(EventKind::Granted) {
                    continue;
                }
                say(&to_json(&ev));
                match kind {
                    Some(EventKind::Break { .. }) if served && file.is_some() => {
                        // On demand: invalidate now, give the blocks back, find the range's
                        // current blocks once the break is over.
                        if let Ok(old) = nic.fault(rkey) {
                            let _ = conn.unpin(&old);
                        }
                        line("invalidated", None, None);
                        match repin(&mut conn, file.as_ref(), cmd.offset, pin_len, opts) {
                            Ok(new) => {
                                pin_id = new.id;
                                match nic.remap(rkey, new) {
                                    Ok(()) => {
                                        let _ = conn.report_export(pin_id, rkey, nic.addr());
                                        reported = 0;
                                        line("remapped", None, None);
                                    }
                                    Err((e, new)) => {
                                        let _ = conn.unpin(&new);
                                        let _ = nic.withdraw(rkey);
                                        served = false;
                                        pinned = false;
                                        eprintln!("pinfs: {e}");
                                        line("gone", None, None);
                                    }
                                }
                            }
                            Err(why) => {
                                let _ = nic.withdraw(rkey);
                                served = false;
                                pinned = false;
                                eprintln!("pinfs: the range is gone: {why}");
                                line("gone", None, None);
                            }
                        }
                    }
                    Some(EventKind::Break { .. }) if !cmd.ignore_breaks && served => {
                        let peers = nic.start_recall(rkey).map_err(|e| e.to_string())?;
                        recalling = true;
                        // Reported now, before any ack can come back, so that watchers see
                        // every recall sent (a peer that acks and disconnects at once would
                        // otherwise go from connected straight to gone); the next report
                        // tells the acks.
                        let sent: Vec<crate::remote::PeerRef> = peers
                            .iter()
                            .map(|&addr| crate::remote::PeerRef {
                                addr,
                                state: crate::remote::PeerState::Recalling,
                            })
                            .collect();
                        let _ = conn.report_peers(pin_id, &sent);
                        reported = 0;
                        let peers = peers.iter().map(|a| a.to_string()).collect();
                        line("recall", Some(peers), None);
                    }
                    Some(EventKind::Refused) if recalling => {
                        line(
                            "refused",
                            None,
                            Some(nic.unacked(rkey).iter().map(|a| a.to_string()).collect()),
                        );
                    }
                    Some(EventKind::Revoked) => {
                        pinned = false;
                        // The peers that did not ack still reach the region: its blocks are
                        // busy now, in no file.
                        line(
                            "revoked",
                            None,
                            Some(nic.unacked(rkey).iter().map(|a| a.to_string()).collect()),
                        );
                    }
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(e) => return Err(refused("the daemon went away", e)),
        }
    }
    if served {
        let _ = nic.withdraw(rkey);
    }
    if pinned {
        let _ = conn.unpin_id(pin_id);
    }
    Ok(())
}

/// Pins `len` bytes of `file` from `offset` again after a break (on-demand export):
/// retried while the range is still being broken (`EAGAIN`), for up to 10 s.
fn repin(
    conn: &mut Connection,
    file: Option<&std::fs::File>,
    offset: u64,
    len: u64,
    opts: PinOptions,
) -> Result<crate::holder::client::Pin, String> {
    let file = file.ok_or("no file to pin again")?;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.pin(file, offset, len, opts) {
            Ok(p) => return Ok(p),
            Err(e) if e.errno() == Some(libc::EAGAIN) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(refused("pin again", e)),
        }
    }
}

/// What `pinfs remote` was asked to do.
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    /// The holder's soft NIC.
    pub nic: std::net::SocketAddr,
    /// The region's key.
    pub rkey: u64,
    /// Write this byte (`None`: read).
    pub write: Option<u8>,
    /// From the region's first byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// Repeat this often until recalled.
    pub every: Option<Duration>,
    /// Never ack a recall.
    pub ignore_recalls: bool,
}

/// One access's result, as `pinfs remote` prints it.
#[derive(Serialize)]
struct AccessJson<'a> {
    op: &'static str,
    offset: u64,
    len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Runs `pinfs remote`: its exit status (0: done or recalled and acked; 1: the access was
/// refused).
pub fn remote(cmd: &RemoteCommand) -> Result<i32, String> {
    use crate::remote::protocol::{rkey_text, MAX_DATA};
    use crate::remote::{Peer, RemoteError};
    if cmd.len > MAX_DATA as u64 {
        return Err(format!(
            "{} bytes: one access moves at most {MAX_DATA} (1M); split it",
            cmd.len
        ));
    }
    let mut peer = Peer::connect(cmd.nic).map_err(|e| format!("{}: {e}", cmd.nic))?;
    let payload = cmd.write.map(|b| vec![b; cmd.len as usize]);
    let mut status = 0;
    loop {
        let r = match &payload {
            Some(data) => peer.write(cmd.rkey, cmd.offset, data).map(|()| None),
            None => peer
                .read(cmd.rkey, cmd.offset, cmd.len as u32)
                .map(|d| Some(d.iter().map(|b| format!("{b:02x}")).collect::<String>())),
        };
        let op = if payload.is_some() { "write" } else { "read" };
        match r {
            Ok(data) => say(&to_json(&AccessJson {
                op,
                offset: cmd.offset,
                len: cmd.len,
                data,
                error: None,
                message: None,
            })),
            Err(RemoteError::Refused { code, message }) => {
                status = 1;
                say(&to_json(&AccessJson {
                    op,
                    offset: cmd.offset,
                    len: cmd.len,
                    data: None,
                    error: Some(code.name()),
                    message: Some(message),
                }))
            }
            Err(e) => return Err(format!("{}: {e}", cmd.nic)),
        }
        let Some(every) = cmd.every else {
            return Ok(status);
        };
        let until = Instant::now() + every;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match peer.next_recall(Some(left)) {
                Ok(Some(k)) => {
                    say(&format!(
                        "{{\"remote\":\"recall\",\"rkey\":\"{}\"}}",
                        rkey_text(k)
                    ));
                    if !cmd.ignore_recalls {
                        peer.ack(k).map_err(|e| format!("ack: {e}"))?;
                        say(&format!(
                            "{{\"remote\":\"acked\",\"rkey\":\"{}\"}}",
                            rkey_text(k)
                        ));
                        if k == cmd.rkey {
                            return Ok(0);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(format!("{}: {e}", cmd.nic)),
            }
        }
    }
}

/// Runs `pinfs status`.
pub fn status(mount: &Path, json: bool, events: bool) -> Result<(), String> {
    let mut conn = Connection::for_path(mount)
        .map_err(|e| refused(&format!("{}: not a pinfs mount?", mount.display()), e))?;
    let text = if events {
        conn.events().map_err(|e| refused("events", e))?
    } else {
        conn.status(!json).map_err(|e| refused("status", e))?
    };
    crate::outln!("{}", text.trim_end());
    Ok(())
}

/// Runs `pinfs status MOUNT --follow`: the recent events, then each new one as it happens
/// (the daemon sends both, none twice), one JSON object a line (as `status --events` gives
/// them), until the mount goes.
pub fn follow(mount: &Path) -> Result<(), String> {
    let mut watch = Connection::for_path(mount)
        .map_err(|e| refused(&format!("{}: not a pinfs mount?", mount.display()), e))?;
    watch.watch().map_err(|e| refused("watch", e))?;
    loop {
        match watch.next_event(None) {
            Ok(Some(e)) => say(&to_json(&e)),
            Ok(None) => {}
            Err(ClientError::Protocol(_)) => {
                eprintln!("pinfs: {}: the mount went away", mount.display());
                return Ok(());
            }
            Err(e) => return Err(refused("watch", e)),
        }
    }
}

/// Runs `pinfs fence`.
/// `pinfs shutdown`: the shutdown ioctl (`FS_IOC_SHUTDOWN`) on the mount's root, once the
/// daemon's socket says it is a pinfs mount (XFS and ext4 take the same ioctl: a mistyped
/// path must not shut down the host's own filesystem).
pub fn shutdown(mount: &Path, flag: u32) -> Result<(), String> {
    Connection::for_path(mount)
        .map_err(|e| refused(&format!("{}: not a pinfs mount?", mount.display()), e))?;
    let dir =
        std::fs::File::open(mount).map_err(|e| format!("{}: cannot open: {e}", mount.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: ioctl on a descriptor we own, with a pointer to a u32 that outlives the call
    // (the daemon reads it from our memory).
    let rc = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            crate::daemon::ioctl::FS_IOC_SHUTDOWN as _,
            &flag as *const u32,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => " (only root can shut a mount down)",
            _ => "",
        };
        return Err(format!("{}: shutdown: {e}{hint}", mount.display()));
    }
    crate::outln!(
        "{}: shut down; every operation on it fails with EIO until it is unmounted",
        mount.display()
    );
    Ok(())
}

pub fn fence(mount: &Path, holder: u64) -> Result<(), String> {
    let mut conn = Connection::for_path(mount)
        .map_err(|e| refused(&format!("{}: not a pinfs mount?", mount.display()), e))?;
    let n = conn
        .fence(holder)
        .map_err(|e| refused(&format!("fence holder {holder}"), e))?;
    crate::outln!("holder {holder} fenced: {n} lease(s) revoked");
    Ok(())
}

/// Runs `pinfs status MOUNT --follow --trace FILE`: as [`follow`], and every event also goes
/// into FILE as a trace ([`crate::trace`]). The file is a whole trace after each event; on
/// SIGINT, SIGTERM or SIGHUP (handled by a thread of their own, so that no write is cut in
/// two) or when the mount goes, the spans still open are closed at that moment.
pub fn follow_trace(mount: &Path, trace: &Path) -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    crate::daemon::signals::block_termination();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        crate::daemon::signals::on_termination("pinfs-follow-signals", move |_| {
            stop.store(true, Ordering::SeqCst)
        });
    }
    // The mount first: a wrong path leaves no empty trace behind.
    Connection::for_path(mount)
        .map_err(|e| refused(&format!("{}: not a pinfs mount?", mount.display()), e))?;
    let file = std::fs::File::create(trace).map_err(|e| {
        format!(
            "{}: cannot write the trace: {e}; give --trace a path in a writable directory",
            trace.display()
        )
    })?;
    let io = |e: std::io::Error| format!("{}: writing the trace: {e}", trace.display());
    let mut rec = crate::trace::Recorder::new(
        std::io::BufWriter::new(file),
        &format!("pinfs {}", mount.display()),
    )
    .map_err(io)?;
    let how = crate::trace::watch::Follow {
        echo: true,
        stop: &|| stop.load(Ordering::SeqCst),
        marks: None,
    };
    let end = crate::trace::watch::follow(mount, &mut rec, &how);
    rec.finish(crate::trace::now_micros()).map_err(io)?;
    if end? == crate::trace::watch::End::MountGone {
        eprintln!("pinfs: {}: the mount went away", mount.display());
    }
    Ok(())
}

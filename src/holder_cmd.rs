//! The holder commands of the CLI: `pin` (a holder you can watch and script), `status` and
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
    // descriptor (so an unlinked pinned file can be freed, which breaks the lease).
    drop(file);
    say(&to_json(&GrantJson {
        holder: pin.holder,
        pin: pin.id,
        extents: pin.extents.clone(),
    }));
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

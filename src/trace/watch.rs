//! Following a mount into a trace: its lease events and its holders' remote peers (from a
//! watch connection, as `status --follow` gets them), its busy blocks (from its status, polled), and marks from other
//! sources of the same process (the fuzzer's breakers), until the mount goes or the caller
//! says stop.

use std::io::{Seek, Write};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::{now_micros, Args, Recorder, Track};
use crate::holder::client::{ClientError, Connection};
use crate::holder::protocol::Event;

/// How often the busy blocks are read when no event comes...
const POLL: Duration = Duration::from_millis(250);
/// ...and for a while after one (blocks become busy or free just after the events that
/// cause it: a revocation, then the breaker's free; a holder's exit).
const POLL_AFTER_EVENT: Duration = Duration::from_millis(20);
const AFTER_EVENT: Duration = Duration::from_millis(500);

/// An instant from another source of the process, sent to the follower (sending is all the
/// source pays: the follower's thread writes it).
#[derive(Debug, Clone)]
pub struct Mark {
    /// Whose row.
    pub track: Track,
    /// What happened.
    pub name: String,
    /// When (microseconds since the epoch, [`now_micros`]).
    pub at: u64,
    /// Details.
    pub args: Args,
}

/// Why following ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The caller said stop.
    Stopped,
    /// The mount went away (unmounted, or its daemon died).
    MountGone,
}

/// What [`follow`] does besides writing the trace.
pub struct Follow<'a> {
    /// Print each event as a JSON line too (`status --follow`).
    pub echo: bool,
    /// Asked between events (at least every quarter second): true ends the follow.
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// Marks from other sources.
    pub marks: Option<&'a Receiver<Mark>>,
}

fn busy_blocks(conn: &mut Option<Connection>, mount: &Path) -> Option<u64> {
    if conn.is_none() {
        *conn = Connection::for_path(mount).ok();
    }
    let json = match conn.as_mut()?.status(false) {
        Ok(j) => j,
        Err(_) => {
            *conn = None;
            return None;
        }
    };
    let status: crate::fs::status::Status = serde_json::from_str(&json).ok()?;
    Some(status.space.busy_blocks)
}

fn io(e: std::io::Error) -> String {
    format!("writing the trace: {e}")
}

/// Follows `mount` into `rec` until it goes or `how.stop` says so; the recorder is left for
/// the caller to finish.
pub fn follow<W: Write + Seek>(
    mount: &Path,
    rec: &mut Recorder<W>,
    how: &Follow,
) -> Result<End, String> {
    let refused = |what: &str, e: ClientError| format!("{}: {what}: {e}", mount.display());
    let mut watch = Connection::for_path(mount).map_err(|e| refused("not a pinfs mount?", e))?;
    watch.watch().map_err(|e| refused("watch", e))?;
    let mut status = None;
    let mut polled: Option<Instant> = None;
    let mut last_event: Option<Instant> = None;
    loop {
        if (how.stop)() {
            return Ok(End::Stopped);
        }
        if let Some(rx) = how.marks {
            while let Ok(m) = rx.try_recv() {
                rec.writer()
                    .instant(&m.track, &m.name, m.at, &m.args)
                    .map_err(io)?;
            }
            rec.writer().flush().map_err(io)?;
        }
        let lively = last_event.is_some_and(|e| e.elapsed() < AFTER_EVENT);
        let every = if lively { POLL_AFTER_EVENT } else { POLL };
        let mut changed = false;
        match watch.next_event(Some(every.min(Duration::from_millis(100)))) {
            Ok(Some(e)) => {
                if how.echo {
                    crate::outln!("{}", crate::fs::status::to_json(&e));
                }
                match &e {
                    Event::Lease(l) => rec.lease(l).map_err(io)?,
                    Event::Remote(r) => rec.remote(r).map_err(io)?,
                    Event::Lost { count } => rec.lost(now_micros(), *count).map_err(io)?,
                }
                changed = true;
                last_event = Some(Instant::now());
            }
            Ok(None) => {}
            Err(ClientError::Protocol(_)) => return Ok(End::MountGone),
            Err(e) => return Err(refused("watch", e)),
        }
        if changed || polled.is_none_or(|p| p.elapsed() >= every) {
            polled = Some(Instant::now());
            if let Some(b) = busy_blocks(&mut status, mount) {
                rec.busy_blocks(now_micros(), b).map_err(io)?;
            }
        }
    }
}

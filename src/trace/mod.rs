//! The timeline of a mount's lease activity: tracks (the mount, each holder, later each
//! remote peer of a holder), lease states as spans, the moments that matter as instants and
//! busy blocks as a counter; written as Chrome trace-event JSON ([`chrome`]), which Perfetto
//! and `chrome://tracing` open, fed from a mount's events ([`watch`]) and drawn as an SVG
//! ([`svg`]).
//!
//! The model is open-ended on purpose: a [`Track`] names whose row a mark goes on, and a mark
//! is a span state, an instant or a counter value with optional arguments, so that new
//! sources (recalls sent, acks received, peers connecting) add marks without changing the
//! writer or the drawing.

pub mod chrome;
pub mod svg;
pub mod watch;

use std::collections::BTreeMap;

use crate::holder::protocol::{EventKind, LeaseEvent, Timestamp};

pub use chrome::ChromeWriter;

/// A row of the timeline: whose activity it shows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    /// The mount as a whole (lost events, global notes).
    Mount,
    /// A holder, by its number as `pinfs status` shows it.
    Holder(u64),
    /// A remote peer of a holder (a node that holds a remote key of one of its pins).
    Peer {
        /// The holder whose pins the peer uses.
        holder: u64,
        /// The peer's name (its address).
        peer: String,
    },
    /// Another actor with a name of its own (the fuzzer's breakers, say).
    Actor(String),
}

impl Track {
    /// The row's name.
    pub fn name(&self) -> String {
        match self {
            Track::Mount => "mount".into(),
            Track::Holder(h) => format!("holder {h}"),
            Track::Peer { holder, peer } => format!("peer {peer} of holder {holder}"),
            Track::Actor(a) => a.clone(),
        }
    }

    /// Where the row goes among the others (smallest first): the mount, then each holder
    /// followed by its peers, then the other actors.
    pub fn sort_index(&self, lane: u32) -> i64 {
        let lane = i64::from(lane.min(99));
        match self {
            Track::Mount => 0,
            Track::Holder(h) => 1_000 + (*h as i64).min(1 << 40) * 1_000 + lane,
            Track::Peer { holder, .. } => 1_000 + (*holder as i64).min(1 << 40) * 1_000 + 100,
            Track::Actor(_) => i64::MAX / 2 + lane,
        }
    }
}

/// A lease state shown as a span: from the event that entered it to the one that left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanState {
    /// Granted: the holder may use the blocks.
    Granted,
    /// Breaking: a breaker waits for the holder's release.
    Breaking,
    /// Revoked: the lease is gone, the blocks stay busy until the holder unpins or dies (no
    /// event tells of an unpin after a revocation: the span lasts until `holder_gone` or the
    /// trace's end).
    Revoked,
}

impl SpanState {
    /// The span's name in the trace (and the legend's).
    pub fn name(self) -> &'static str {
        match self {
            SpanState::Granted => "granted",
            SpanState::Breaking => "breaking",
            SpanState::Revoked => "revoked",
        }
    }
}

/// Optional details of a mark, shown as the event's `args`.
pub type Args = BTreeMap<String, serde_json::Value>;

/// Times in the trace: microseconds since the epoch (what the format's `ts` counts).
pub fn micros(t: Timestamp) -> u64 {
    t.secs * 1_000_000 + u64::from(t.nanos) / 1_000
}

/// Turns lease events (and whatever else a source reports) into spans, instants and
/// counters, and hands them to a [`ChromeWriter`].
///
/// A pin's spans are keyed by `(holder, pin)`: each lease event of the pin closes the span
/// it was in and opens the next; a holder's `holder_gone` closes all of them.
pub struct Recorder<W: std::io::Write + std::io::Seek> {
    out: ChromeWriter<W>,
    /// The last busy-block count written (a counter is written when it changes).
    busy: Option<u64>,
}

impl<W: std::io::Write + std::io::Seek> Recorder<W> {
    /// A recorder writing to `out`; `title` names the trace's process (the mount).
    pub fn new(out: W, title: &str) -> std::io::Result<Recorder<W>> {
        Ok(Recorder {
            out: ChromeWriter::new(out, title)?,
            busy: None,
        })
    }

    /// The writer (for sources with marks of their own).
    pub fn writer(&mut self) -> &mut ChromeWriter<W> {
        &mut self.out
    }

    /// A lease event of the mount.
    pub fn lease(&mut self, e: &LeaseEvent) -> std::io::Result<()> {
        let at = micros(e.time);
        let track = Track::Holder(e.holder);
        let mut args = Args::new();
        if let Some(p) = e.pin {
            args.insert("pin".into(), p.into());
        }
        if e.ino != 0 {
            args.insert("ino".into(), e.ino.into());
            args.insert("offset".into(), e.offset.into());
            args.insert("len".into(), e.len.into());
        }
        let key = e.pin.unwrap_or(0);
        let w = &mut self.out;
        match e.kind {
            EventKind::Granted => w.span(&track, key, Some(SpanState::Granted), at, &args)?,
            EventKind::Break { deadline_ms } => {
                w.span(&track, key, Some(SpanState::Breaking), at, &args)?;
                let mut a = args.clone();
                a.insert("deadline_ms".into(), deadline_ms.into());
                w.instant(&track, "break", at, &a)?;
                if let Some(d) = deadline_ms {
                    w.instant(&track, "deadline", at + d * 1_000, &args)?;
                }
            }
            EventKind::Refused => {
                w.instant(&track, "refused", at, &args)?;
                w.span(&track, key, Some(SpanState::Granted), at, &args)?;
            }
            EventKind::Revoked => {
                w.instant(&track, "revoked", at, &args)?;
                w.span(&track, key, Some(SpanState::Revoked), at, &args)?;
            }
            EventKind::Released => {
                w.instant(&track, "released", at, &args)?;
                w.span(&track, key, None, at, &args)?;
            }
            EventKind::Fenced => w.instant(&track, "fenced", at, &args)?,
            EventKind::HolderGone => {
                w.instant(&track, "holder_gone", at, &args)?;
                w.end_track(&track, at)?;
            }
        }
        w.flush()
    }

    /// `count` events were lost (the watcher fell behind).
    pub fn lost(&mut self, at: u64, count: u64) -> std::io::Result<()> {
        let mut a = Args::new();
        a.insert("count".into(), count.into());
        self.out.instant(&Track::Mount, "events_lost", at, &a)?;
        self.out.flush()
    }

    /// The mount's busy blocks at `at` (written when the count changed).
    pub fn busy_blocks(&mut self, at: u64, blocks: u64) -> std::io::Result<()> {
        if self.busy == Some(blocks) {
            return Ok(());
        }
        self.busy = Some(blocks);
        self.out.counter("busy_blocks", at, blocks)?;
        self.out.flush()
    }

    /// Closes every span still open at `at` and leaves a complete trace; returns the writer.
    pub fn finish(self, at: u64) -> std::io::Result<W> {
        self.out.finish(at)
    }
}

/// Now, as the trace counts time.
pub fn now_micros() -> u64 {
    micros(Timestamp::of(std::time::SystemTime::now()))
}

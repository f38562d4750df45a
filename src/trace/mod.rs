//! The timeline of a mount's lease activity: tracks (the mount, each holder, each remote
//! peer of a holder), lease states as spans, the moments that matter as instants and
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

use crate::holder::protocol::{EventKind, LeaseEvent, RemoteEvent, RemoteState, Timestamp};

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
    /// A remote peer's reference, in use.
    Connected,
    /// A remote peer's reference, recalled and not yet acked.
    Recalling,
    /// A remote peer's reference whose recall the lease's end did not wait for (the break
    /// was refused or the lease revoked with the peer not acked): it still reaches the
    /// region until the peer goes.
    RecallIgnored,
}

impl SpanState {
    /// The span's name in the trace (and the legend's).
    pub fn name(self) -> &'static str {
        match self {
            SpanState::Granted => "granted",
            SpanState::Breaking => "breaking",
            SpanState::Revoked => "revoked",
            SpanState::Connected => "connected",
            SpanState::Recalling => "recalling",
            SpanState::RecallIgnored => "recall_ignored",
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
///
/// A remote peer of a holder has a track of its own, with a span per exported pin it holds
/// a reference on (keyed by the pin): `connected`, then `recalling` from the recall (an
/// instant `recall` on the holder's and the peer's tracks), ended by the ack (an instant
/// `ack` on both) or the peer's going (`peer_gone`); a lease that is refused or revoked with
/// the peer still recalling turns its span into `recall_ignored` (an instant of that name on
/// the peer's track). The lease's release or the holder's going ends its peers' spans.
pub struct Recorder<W: std::io::Write + std::io::Seek> {
    out: ChromeWriter<W>,
    /// The last busy-block count written (a counter is written when it changes).
    busy: Option<u64>,
    /// Each remote peer's reference by (holder, pin, peer), and the span it is in.
    peers: BTreeMap<(u64, u64, String), SpanState>,
}

impl<W: std::io::Write + std::io::Seek> Recorder<W> {
    /// A recorder writing to `out`; `title` names the trace's process (the mount).
    pub fn new(out: W, title: &str) -> std::io::Result<Recorder<W>> {
        Ok(Recorder {
            out: ChromeWriter::new(out, title)?,
            busy: None,
            peers: BTreeMap::new(),
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
                self.recalls_ignored(e.holder, e.pin, at)?;
            }
            EventKind::Revoked => {
                w.instant(&track, "revoked", at, &args)?;
                w.span(&track, key, Some(SpanState::Revoked), at, &args)?;
                self.recalls_ignored(e.holder, e.pin, at)?;
            }
            EventKind::Released => {
                w.instant(&track, "released", at, &args)?;
                w.span(&track, key, None, at, &args)?;
                self.end_peers(e.holder, e.pin, at)?;
            }
            EventKind::Fenced => w.instant(&track, "fenced", at, &args)?,
            EventKind::HolderGone => {
                w.instant(&track, "holder_gone", at, &args)?;
                w.end_track(&track, at)?;
                self.end_peers(e.holder, None, at)?;
            }
        }
        self.out.flush()
    }

    /// A remote peer's reference changed (`event remote`).
    pub fn remote(&mut self, e: &RemoteEvent) -> std::io::Result<()> {
        let at = micros(e.time);
        let peer = e.peer.to_string();
        let holder = Track::Holder(e.holder);
        let track = Track::Peer {
            holder: e.holder,
            peer: peer.clone(),
        };
        let mut args = Args::new();
        args.insert("pin".into(), e.pin.into());
        args.insert("peer".into(), peer.clone().into());
        let key = (e.holder, e.pin, peer);
        let was = self.peers.get(&key).copied();
        let w = &mut self.out;
        match e.state {
            RemoteState::Connected => {
                w.span(&track, e.pin, Some(SpanState::Connected), at, &args)?;
                self.peers.insert(key, SpanState::Connected);
            }
            RemoteState::Recalling => {
                w.instant(&holder, "recall", at, &args)?;
                w.instant(&track, "recall", at, &args)?;
                w.span(&track, e.pin, Some(SpanState::Recalling), at, &args)?;
                self.peers.insert(key, SpanState::Recalling);
            }
            RemoteState::Acked => {
                w.instant(&holder, "ack", at, &args)?;
                w.instant(&track, "ack", at, &args)?;
                w.span(&track, e.pin, None, at, &args)?;
                self.peers.remove(&key);
            }
            RemoteState::Gone => {
                if was.is_some() {
                    w.instant(&track, "peer_gone", at, &args)?;
                    w.span(&track, e.pin, None, at, &args)?;
                    self.peers.remove(&key);
                }
            }
        }
        self.out.flush()
    }

    /// The lease of `holder`'s `pin` ended a break without its peers' acks: the peers still
    /// recalling hold references nobody waits for now.
    fn recalls_ignored(&mut self, holder: u64, pin: Option<u64>, at: u64) -> std::io::Result<()> {
        let Some(pin) = pin else { return Ok(()) };
        for ((h, p, peer), state) in self.peers.iter_mut() {
            if (*h, *p) != (holder, pin) || *state != SpanState::Recalling {
                continue;
            }
            *state = SpanState::RecallIgnored;
            let track = Track::Peer {
                holder,
                peer: peer.clone(),
            };
            let mut args = Args::new();
            args.insert("pin".into(), pin.into());
            args.insert("peer".into(), peer.clone().into());
            self.out.instant(&track, "recall_ignored", at, &args)?;
            self.out
                .span(&track, pin, Some(SpanState::RecallIgnored), at, &args)?;
        }
        Ok(())
    }

    /// Ends the peer spans of `holder`'s `pin` (`None`: of all its pins).
    fn end_peers(&mut self, holder: u64, pin: Option<u64>, at: u64) -> std::io::Result<()> {
        let ended: Vec<(u64, u64, String)> = self
            .peers
            .keys()
            .filter(|(h, p, _)| *h == holder && pin.is_none_or(|x| x == *p))
            .cloned()
            .collect();
        for key in ended {
            self.peers.remove(&key);
            let track = Track::Peer {
                holder,
                peer: key.2,
            };
            self.out.span(&track, key.1, None, at, &Args::new())?;
        }
        Ok(())
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

//! The Chrome trace-event JSON writer (the format's "JSON Object Format"): an object with
//! `displayTimeUnit`, `otherData` and `traceEvents`, the events being `M` metadata naming the
//! process and each track (`process_name`, `thread_name`, `thread_sort_index`), `X` complete
//! events for spans, `i` instants of thread scope, and `C` counters.
//!
//! The file is valid JSON after every [`ChromeWriter::flush`], not only at the end: each
//! batch of events is written over the closing `]}` of the last one, and a new closing is
//! written after it. A follower killed at any moment (but in the middle of a write) leaves a
//! trace that parses; [`ChromeWriter::finish`] closes what is still open. (The format lets
//! only its *array* form lack the closing `]`; the object form, which carries
//! `displayTimeUnit` and track names' metadata beside the events, must be whole JSON, and a
//! plain JSON parser, such as `pinfs timeline`'s, accepts nothing less.)
//!
//! Spans are written when they end (an `X` event needs its duration), so the events are not
//! in time order; the format does not ask them to be. Spans of one track must nest, so a
//! track whose spans overlap (a holder with two pins) gets more *lanes*: each its own `tid`,
//! named after the track, with a sort index that keeps them together.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};

use serde_json::{json, Value};

use super::{Args, SpanState, Track};

/// The trace's one process id: the mount.
const PID: u64 = 1;

/// What closes the file: the end of `traceEvents` and of the object.
const CLOSING: &[u8] = b"\n]}\n";

/// An open span: its state, start, lane and details.
struct Open {
    state: SpanState,
    start: u64,
    lane: u32,
    args: Args,
}

/// Writes a trace to `out` (see the module's documentation).
pub struct ChromeWriter<W: Write + Seek> {
    out: W,
    /// Where the closing starts: the next event is written there.
    end: u64,
    /// Events written so far.
    events: u64,
    /// Events made since the last flush.
    pending: Vec<Value>,
    /// The tid of each (track, lane) named so far.
    tids: HashMap<(Track, u32), u64>,
    /// Open spans by (track, key).
    open: HashMap<(Track, u64), Open>,
    /// The lanes of each track and which key holds each (`None`: free).
    lanes: HashMap<Track, Vec<Option<u64>>>,
}

impl<W: Write + Seek> ChromeWriter<W> {
    /// Starts a trace in `out` (at its current position) whose process is named `title`.
    pub fn new(mut out: W, title: &str) -> std::io::Result<ChromeWriter<W>> {
        let head = format!(
            "{{\"displayTimeUnit\":\"ms\",\"otherData\":{},\"traceEvents\":[\n",
            json!({"producer": "pinfs", "version": env!("CARGO_PKG_VERSION")})
        );
        let start = out.stream_position()?;
        out.write_all(head.as_bytes())?;
        let mut w = ChromeWriter {
            end: start + head.len() as u64,
            out,
            events: 0,
            pending: Vec::new(),
            tids: HashMap::new(),
            open: HashMap::new(),
            lanes: HashMap::new(),
        };
        w.pending.push(json!({
            "ph": "M", "name": "process_name", "pid": PID, "tid": 0,
            "args": {"name": title}
        }));
        w.flush()?;
        Ok(w)
    }

    /// The tid of a track's lane, naming it at first use.
    fn tid(&mut self, track: &Track, lane: u32) -> u64 {
        if let Some(&t) = self.tids.get(&(track.clone(), lane)) {
            return t;
        }
        let tid = self.tids.len() as u64 + 1;
        self.tids.insert((track.clone(), lane), tid);
        let name = match lane {
            0 => track.name(),
            n => format!("{} (lane {})", track.name(), n + 1),
        };
        self.pending.push(json!({
            "ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": name}
        }));
        self.pending.push(json!({
            "ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid,
            "args": {"sort_index": track.sort_index(lane)}
        }));
        tid
    }

    /// Moves the span `key` of `track` into `state` at `at` (`None`: ends it). The span it
    /// was in is written, with the details it started with.
    pub fn span(
        &mut self,
        track: &Track,
        key: u64,
        state: Option<SpanState>,
        at: u64,
        args: &Args,
    ) -> std::io::Result<()> {
        let lane = match self.open.remove(&(track.clone(), key)) {
            Some(o) => {
                self.write_span(track, &o, at);
                o.lane
            }
            None => {
                if state.is_none() {
                    return Ok(());
                }
                let lanes = self.lanes.entry(track.clone()).or_default();
                match lanes.iter().position(Option::is_none) {
                    Some(i) => {
                        lanes[i] = Some(key);
                        i as u32
                    }
                    None => {
                        lanes.push(Some(key));
                        lanes.len() as u32 - 1
                    }
                }
            }
        };
        match state {
            Some(state) => {
                self.open.insert(
                    (track.clone(), key),
                    Open {
                        state,
                        start: at,
                        lane,
                        args: args.clone(),
                    },
                );
            }
            None => {
                if let Some(l) = self.lanes.get_mut(track) {
                    l[lane as usize] = None;
                }
            }
        }
        Ok(())
    }

    fn write_span(&mut self, track: &Track, o: &Open, end: u64) {
        let tid = self.tid(track, o.lane);
        self.pending.push(json!({
            "ph": "X", "name": o.state.name(), "cat": "lease", "pid": PID, "tid": tid,
            "ts": o.start, "dur": end.saturating_sub(o.start), "args": o.args
        }));
    }

    /// Ends every open span of `track` at `at`.
    pub fn end_track(&mut self, track: &Track, at: u64) -> std::io::Result<()> {
        let keys: Vec<u64> = self
            .open
            .keys()
            .filter(|(t, _)| t == track)
            .map(|(_, k)| *k)
            .collect();
        for k in keys {
            self.span(track, k, None, at, &Args::new())?;
        }
        Ok(())
    }

    /// An instant named `name` on `track` (its first lane).
    pub fn instant(
        &mut self,
        track: &Track,
        name: &str,
        at: u64,
        args: &Args,
    ) -> std::io::Result<()> {
        let tid = self.tid(track, 0);
        self.pending.push(json!({
            "ph": "i", "s": "t", "name": name, "cat": "lease", "pid": PID, "tid": tid,
            "ts": at, "args": args
        }));
        Ok(())
    }

    /// The counter `name` is `value` from `at` on.
    pub fn counter(&mut self, name: &str, at: u64, value: u64) -> std::io::Result<()> {
        self.pending.push(json!({
            "ph": "C", "name": name, "pid": PID, "tid": 0, "ts": at, "args": {"blocks": value}
        }));
        Ok(())
    }

    /// Writes the events made since the last flush, and the closing after them: the file is
    /// a whole trace again.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for e in self.pending.drain(..) {
            if self.events > 0 {
                text.extend_from_slice(b",\n");
            }
            serde_json::to_writer(&mut text, &e).map_err(std::io::Error::other)?;
            self.events += 1;
        }
        self.out.seek(SeekFrom::Start(self.end))?;
        self.out.write_all(&text)?;
        self.end += text.len() as u64;
        // Every batch is longer than the closing it overwrites, so nothing of the old closing
        // is left after the new one.
        self.out.write_all(CLOSING)?;
        self.out.flush()
    }

    /// Ends every open span at `at`, flushes, and returns the output.
    pub fn finish(mut self, at: u64) -> std::io::Result<W> {
        let mut open: Vec<(Track, u64)> = self.open.keys().cloned().collect();
        open.sort();
        for (t, k) in open {
            self.span(&t, k, None, at, &Args::new())?;
        }
        self.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Recorder;
    use crate::holder::protocol::{EventKind, LeaseEvent, Timestamp};
    use serde_json::Value;
    use std::io::Cursor;

    fn ev(kind: EventKind, holder: u64, pin: Option<u64>, ms: u64) -> LeaseEvent {
        LeaseEvent {
            kind,
            holder,
            pin,
            ino: if pin.is_some() { 5 } else { 0 },
            offset: 0,
            len: 4096,
            time: Timestamp {
                secs: 1_000 + ms / 1_000,
                nanos: (ms % 1_000) as u32 * 1_000_000,
            },
        }
    }

    fn parse(bytes: &[u8]) -> Vec<Value> {
        let v: Value = serde_json::from_slice(bytes).expect("the trace is JSON");
        assert_eq!(v["displayTimeUnit"], "ms");
        v["traceEvents"].as_array().expect("traceEvents").clone()
    }

    fn named<'a>(evs: &'a [Value], ph: &str, name: &str) -> Vec<&'a Value> {
        evs.iter()
            .filter(|e| e["ph"] == ph && e["name"] == name)
            .collect()
    }

    /// A scripted pin's life: granted, broken with a deadline, revoked, its holder gone;
    /// a second holder's pin granted and released; busy blocks up and down. The trace has
    /// a named track per holder, the spans with their times, the instants and the counter.
    #[test]
    fn a_scripted_sequence_gives_its_spans_instants_and_counter() {
        let mut r = Recorder::new(Cursor::new(Vec::new()), "pinfs /mnt").unwrap();
        r.lease(&ev(EventKind::Granted, 1, Some(7), 0)).unwrap();
        r.lease(&ev(EventKind::Granted, 2, Some(8), 5)).unwrap();
        r.lease(&ev(
            EventKind::Break {
                deadline_ms: Some(100),
            },
            1,
            Some(7),
            10,
        ))
        .unwrap();
        r.lease(&ev(EventKind::Released, 2, Some(8), 20)).unwrap();
        r.lease(&ev(EventKind::Revoked, 1, Some(7), 110)).unwrap();
        r.busy_blocks(1_000_110_000, 1).unwrap();
        r.busy_blocks(1_000_111_000, 1).unwrap();
        r.lease(&ev(EventKind::Fenced, 1, None, 110)).unwrap();
        r.lease(&ev(EventKind::HolderGone, 1, None, 300)).unwrap();
        r.busy_blocks(1_000_300_000, 0).unwrap();
        let out = r.finish(1_000_400_000).unwrap().into_inner();
        let evs = parse(&out);

        let tid_of = |name: &str| {
            named(&evs, "M", "thread_name")
                .into_iter()
                .find(|e| e["args"]["name"] == name)
                .unwrap_or_else(|| panic!("no track named {name}"))["tid"]
                .as_u64()
                .unwrap()
        };
        let (h1, h2) = (tid_of("holder 1"), tid_of("holder 2"));
        assert_ne!(h1, h2);
        let span = |name: &str, tid: u64| -> (u64, u64) {
            let s: Vec<_> = named(&evs, "X", name)
                .into_iter()
                .filter(|e| e["tid"] == tid)
                .collect();
            assert_eq!(s.len(), 1, "one {name} span on tid {tid}: {s:?}");
            (s[0]["ts"].as_u64().unwrap(), s[0]["dur"].as_u64().unwrap())
        };
        let t0 = 1_000_000_000;
        assert_eq!(span("granted", h1), (t0, 10_000));
        assert_eq!(span("breaking", h1), (t0 + 10_000, 100_000));
        assert_eq!(span("revoked", h1), (t0 + 110_000, 190_000));
        assert_eq!(span("granted", h2), (t0 + 5_000, 15_000));
        let instant = |name: &str| -> Vec<(u64, u64)> {
            named(&evs, "i", name)
                .into_iter()
                .map(|e| {
                    assert_eq!(e["s"], "t");
                    (e["tid"].as_u64().unwrap(), e["ts"].as_u64().unwrap())
                })
                .collect()
        };
        assert_eq!(instant("break"), vec![(h1, t0 + 10_000)]);
        assert_eq!(instant("deadline"), vec![(h1, t0 + 110_000)]);
        assert_eq!(instant("revoked"), vec![(h1, t0 + 110_000)]);
        assert_eq!(instant("fenced"), vec![(h1, t0 + 110_000)]);
        assert_eq!(instant("holder_gone"), vec![(h1, t0 + 300_000)]);
        assert_eq!(instant("released"), vec![(h2, t0 + 20_000)]);
        let busy: Vec<(u64, u64)> = named(&evs, "C", "busy_blocks")
            .into_iter()
            .map(|e| {
                (
                    e["ts"].as_u64().unwrap(),
                    e["args"]["blocks"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(busy, vec![(t0 + 110_000, 1), (t0 + 300_000, 0)]);
        assert_eq!(
            named(&evs, "M", "process_name")[0]["args"]["name"],
            "pinfs /mnt"
        );
    }

    /// Two pins of one holder at once: their spans go on two lanes (tids) of the holder, so
    /// that each tid's spans nest as the format requires; a span still open at the end is
    /// closed by `finish`; a file cut off after any flush parses.
    #[test]
    fn overlapping_pins_get_lanes_and_every_flush_leaves_valid_json() {
        let mut r = Recorder::new(Cursor::new(Vec::new()), "t").unwrap();
        r.lease(&ev(EventKind::Granted, 3, Some(1), 0)).unwrap();
        let snapshot = r.writer().out.get_ref().clone();
        parse(&snapshot);
        r.lease(&ev(EventKind::Granted, 3, Some(2), 1)).unwrap();
        r.lease(&ev(EventKind::Released, 3, Some(1), 2)).unwrap();
        let snapshot = r.writer().out.get_ref().clone();
        let evs = parse(&snapshot);
        assert_eq!(named(&evs, "X", "granted").len(), 1);
        let out = r.finish(1_000_010_000).unwrap().into_inner();
        let evs = parse(&out);
        let spans = named(&evs, "X", "granted");
        assert_eq!(spans.len(), 2);
        assert_ne!(spans[0]["tid"], spans[1]["tid"]);
        let names: Vec<_> = named(&evs, "M", "thread_name")
            .into_iter()
            .map(|e| e["args"]["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.contains(&"holder 3".to_string()), "{names:?}");
        assert!(
            names.contains(&"holder 3 (lane 2)".to_string()),
            "{names:?}"
        );
    }

    /// A break without a deadline (`deadline_ms=never`) has no deadline instant; events of a
    /// pin seen first in the middle of its life (the ring had lost its grant) still open a
    /// span; a release of a pin never seen writes nothing.
    #[test]
    fn partial_histories_are_drawn_from_what_is_known() {
        let mut r = Recorder::new(Cursor::new(Vec::new()), "t").unwrap();
        r.lease(&ev(EventKind::Released, 4, Some(9), 0)).unwrap();
        r.lease(&ev(EventKind::Break { deadline_ms: None }, 4, Some(1), 1))
            .unwrap();
        r.lease(&ev(EventKind::Released, 4, Some(1), 3)).unwrap();
        let evs = parse(&r.finish(0).unwrap().into_inner());
        assert!(named(&evs, "i", "deadline").is_empty());
        assert_eq!(named(&evs, "X", "breaking").len(), 1);
        assert!(named(&evs, "X", "granted").is_empty());
        assert_eq!(
            named(&evs, "i", "break")[0]["args"]["deadline_ms"],
            Value::Null
        );
        assert_eq!(named(&evs, "i", "released").len(), 2);
    }
}

//! The concurrent fuzzer's ledger: what holders pinned and stored and which breakers
//! completed, with times, and the oracles that judge a file's contents by it.
//!
//! Holder processes report to the fuzzer in [`Entry`] lines on their standard output; the
//! fuzzer's breakers add their own entries. Times are `CLOCK_MONOTONIC` nanoseconds, which
//! every process on the machine shares. A time taken before an event is a lower bound of it,
//! one taken after an upper bound, and each oracle compares them only in the direction that
//! cannot lie: "store S began after breaker B returned" is claimed only when the time taken
//! before S is later than the time taken after B.
//!
//! A tag read from a file may name a store whose report has not arrived yet: it waits,
//! and is judged when the report comes (or, at the end, when every holder has exited, it is
//! a tag of a store never made).

use std::collections::{HashMap, HashSet};

use crate::fuzzer::file_name;
use crate::fuzzer::{read_tag, remote_of, HOLDER_BYTES};
use crate::store::image::BLOCK_SIZE;

/// Nanoseconds of `CLOCK_MONOTONIC`: the same clock in every process.
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Holders a run can have (tags give each holder's pins numbers of their own).
pub const MAX_HOLDERS: usize = 16;

/// The tag number of local pin `local` of holder `holder`.
pub fn pin_number(holder: usize, local: u32) -> u32 {
    local * MAX_HOLDERS as u32 + holder as u32
}

/// One line of a holder's report (a JSON object: `{"step":{"index":1,"what":"..."}}`,
/// `{"violation":"..."}`, ...).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// Program step `index` began: `what` it is.
    Step { index: u64, what: String },
    /// Pin `pin` (a tag number) of file blocks `first..end` was asked for (time before the
    /// request) and granted (time after) to the holder the daemon calls `session`.
    Pin {
        pin: u32,
        session: u64,
        file: usize,
        first: u64,
        end: u64,
        asked: u64,
        granted: u64,
    },
    /// Store `store` of pin `pin` began and ended at these times (before and after). A
    /// remote peer's store through an exported pin has a store number of
    /// [`crate::fuzzer::remote_store`] and times taken by the peer around its `WRITE`.
    Store {
        pin: u32,
        store: u32,
        began: u64,
        ended: u64,
    },
    /// The holder gave pin `pin` back, or died holding it (time before).
    End { pin: u32, at: u64 },
    /// Pin `pin` is gone (time after): its unpin returned, or the daemon closed its end of
    /// the pin's connection, which it does only once every pin of it is released. From then
    /// on no store through the pin's mapping may reach any file.
    Gone { pin: u32, at: u64 },
    /// Pin `pin` is exported through the holder's soft NIC at `addr` with key `rkey`: remote
    /// peers may store into it from now on.
    Export { pin: u32, addr: String, rkey: u64 },
    /// The holder kills itself at program step `index`.
    Died { index: u64 },
    /// Something the holder saw that must not happen.
    Violation(String),
}

impl Entry {
    /// The entry as one line of JSON (no newline: serde_json escapes any in a text).
    pub fn line(&self) -> String {
        crate::fs::status::to_json(self)
    }

    /// Parses a line made by [`Entry::line`].
    pub fn parse(line: &str) -> Option<Entry> {
        serde_json::from_str(line).ok()
    }
}

/// A pin as the ledger knows it.
struct PinRecord {
    holder: usize,
    /// The daemon's number for the holder's connection that made it.
    session: u64,
    file: usize,
    /// File blocks `first..end`.
    first: u64,
    end: u64,
    /// Before the pin request was sent (the grant came later).
    asked: u64,
    /// After the grant's reply came (the grant came earlier).
    granted: u64,
    ended: Option<u64>,
    /// When the pin was certainly gone (after the unpin returned, or the daemon closed the
    /// connection's end), if the holder saw it.
    gone: Option<u64>,
    /// Each store's (began, ended), by store number.
    stores: Vec<(u64, u64)>,
    /// Each remote peer's store through the pin (exported), by store number.
    remote: HashMap<u32, (u64, u64)>,
}

/// A breaker that returned success: blocks `first..end` of `file` left it.
struct BreakRecord {
    file: usize,
    first: u64,
    end: u64,
    /// Before the call.
    started: u64,
    /// After it returned.
    done: u64,
}

/// A tag seen before its store was reported, or a holder byte in a pinned file's block no
/// pin was reported to cover yet.
struct Pending {
    pinned: Option<usize>,
    name: String,
    at: usize,
    what: Waiting,
}

/// What a [`Pending`] waits for.
enum Waiting {
    /// The report of store `store` of pin `pin`.
    Tag { pin: u32, store: u32 },
    /// The report of a pin of the block (this byte was in it).
    Byte(u8),
}

/// Everything the oracles judge by.
#[derive(Default)]
pub struct Ledger {
    pins: HashMap<u32, PinRecord>,
    breaks: Vec<BreakRecord>,
    pending: Vec<Pending>,
    stores: u64,
    /// Remote peers' stores reported, and tags of them judged in files.
    remote_stores: u64,
    remote_judged: u64,
    sessions: HashSet<u64>,
    /// Each holder's newest session (the one a fence aims at).
    latest_session: HashMap<usize, u64>,
    /// Fences that returned: (session, before the call, after it returned).
    fences: Vec<(u64, u64, u64)>,
}

/// A tag's verdict.
enum Verdict {
    Fine,
    Unknown,
    /// Wrong unless a pin whose report has not arrived yet explains it: judged again later
    /// (and for good once every holder has exited).
    Later(String),
    Wrong(String),
}

/// How long a store made after its pin was gone waits before it is called wrong: a pin of
/// another holder that kept the block in the file may have been granted just before the
/// store, its report not read yet. Holders report a grant at once; this is ample.
const SETTLE_NS: u64 = 200_000_000;

impl Ledger {
    /// Takes in a holder's entry (steps, deaths and violations are the caller's).
    pub fn record(&mut self, holder: usize, e: &Entry) {
        match *e {
            Entry::Pin {
                pin,
                session,
                file,
                first,
                end,
                asked,
                granted,
            } => {
                self.sessions.insert(session);
                self.latest_session.insert(holder, session);
                self.pins.insert(
                    pin,
                    PinRecord {
                        holder,
                        session,
                        file,
                        first,
                        end,
                        asked,
                        granted,
                        ended: None,
                        gone: None,
                        stores: Vec::new(),
                        remote: HashMap::new(),
                    },
                );
            }
            Entry::Store {
                pin,
                store,
                began,
                ended,
            } => {
                if let Some(p) = self.pins.get_mut(&pin) {
                    if remote_of(store).is_some() {
                        if p.remote.insert(store, (began, ended)).is_none() {
                            self.remote_stores += 1;
                        }
                    } else if p.stores.len() == store as usize {
                        p.stores.push((began, ended));
                        self.stores += 1;
                    }
                }
            }
            Entry::End { pin, at } => {
                if let Some(p) = self.pins.get_mut(&pin) {
                    p.ended = Some(at);
                }
            }
            Entry::Gone { pin, at } => {
                if let Some(p) = self.pins.get_mut(&pin) {
                    p.gone = Some(at);
                }
            }
            _ => {}
        }
    }

    /// A breaker of blocks `first..end` of `file` returned success.
    pub fn breaker(&mut self, file: usize, first: u64, end: u64, started: u64, done: u64) {
        // Kept in order of return (threads report almost in that order: the insertion is
        // at or near the end).
        let at = self.breaks.partition_point(|b| b.done <= done);
        self.breaks.insert(
            at,
            BreakRecord {
                file,
                first,
                end,
                started,
                done,
            },
        );
    }

    /// The daemon's number for holder `holder`'s newest connection, if it ever pinned.
    pub fn session_of(&self, holder: usize) -> Option<u64> {
        self.latest_session.get(&holder).copied()
    }

    /// An administrator's fence of `session` returned: from then on none of its leases is
    /// live.
    pub fn fenced(&mut self, session: u64, started: u64, done: u64) {
        self.fences.push((session, started, done));
    }

    /// Pins granted, stores made, breakers completed.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.pins.len() as u64,
            self.stores,
            self.breaks.len() as u64,
        )
    }

    /// The blocks pin `pin` covers, if it was reported.
    pub fn blocks_of(&self, pin: u32) -> Option<u64> {
        self.pins.get(&pin).map(|p| p.end - p.first)
    }

    /// Remote peers' stores reported, and how many times a tag of one was judged in a file
    /// (once per block and check).
    pub fn remote_counts(&self) -> (u64, u64) {
        (self.remote_stores, self.remote_judged)
    }

    /// Was `holder` (the daemon's number) one of the fuzzer's holders?
    pub fn is_ours(&self, holder: u64) -> bool {
        self.sessions.contains(&holder)
    }

    /// When the first breaker of pin `g`'s range, or fence of its holder, returned, of those
    /// that began after the grant: from then on the lease was released or revoked.
    fn broken_at(&self, p: &PinRecord) -> Option<u64> {
        // A breaker that began after the grant returned after it: start the search there.
        let from = self.breaks.partition_point(|b| b.done <= p.granted);
        let broken = self.breaks[from..]
            .iter()
            .find(|b| {
                b.file == p.file && b.first < p.end && p.first < b.end && b.started > p.granted
            })
            .map(|b| b.done);
        let fenced = self
            .fences
            .iter()
            .filter(|&&(session, started, _)| session == p.session && started > p.granted)
            .map(|&(_, _, done)| done)
            .min();
        broken.into_iter().chain(fenced).min()
    }

    /// Could a pin other than `g` have kept file block `b` of `file` in the file for a
    /// revoked pin's store during `from..to`? A revocation moves the revoked pin's blocks
    /// out of the file, except those a live lease also pins; those move when that lease
    /// goes, in the same call that ends it: before its unpin returns or the daemon closes its
    /// connection ([`Entry::Gone`]), and before a breaker of its range or a fence of its
    /// holder returns (each moves the revoked blocks no live lease pins any more). Until
    /// then the revoked holder's stores reach the block through the page the pins share. So
    /// any pin of the block asked for before `to` counts, unless it was certainly gone or
    /// broken before `from`: its [`Entry::End`] is taken before the unpin (or the death), a
    /// time by which the block may still be in the file, and a killed holder's pin, whose
    /// release nobody sees, counts until a breaker of its range returns.
    fn kept_by_another(&self, g: u32, file: usize, b: u64, from: u64, to: u64) -> bool {
        self.pins.iter().any(|(&n, q)| {
            n != g
                && q.file == file
                && q.first <= b
                && b < q.end
                && q.asked < to
                && q.gone.is_none_or(|t| t > from)
                && self.broken_at(q).is_none_or(|t| t > from)
        })
    }

    /// Could a pin other than `g` have kept file block `b` of `file` in a window during
    /// `from..to`? Any pin of that block asked for before `to` and not certainly gone before
    /// `from` counts (a pin whose end the ledger does not know, a killed holder's, counts as
    /// long as the run): pages shared by pins stay attached while one of them lives, and a
    /// store through any mapping of such a page reaches the block.
    fn attached_by_another(&self, g: u32, file: usize, b: u64, from: u64, to: u64) -> bool {
        self.pins.iter().any(|(&n, q)| {
            n != g
                && q.file == file
                && q.first <= b
                && b < q.end
                && q.asked < to
                && q.gone.is_none_or(|t| t > from)
        })
    }

    /// Every pin of block `b` of `file`, with its times in ms relative to `t` (what a
    /// violation's reader needs to see which pin could have kept the block in the file).
    fn pins_of_block(&self, file: usize, b: u64, t: u64) -> String {
        let rel = |x: u64| format!("{:+.1}", (x as f64 - t as f64) / 1e6);
        let opt = |x: Option<u64>| x.map_or("-".to_string(), rel);
        let mut v: Vec<(&u32, &PinRecord)> = self
            .pins
            .iter()
            .filter(|(_, q)| q.file == file && q.first <= b && b < q.end)
            .collect();
        v.sort_by_key(|(_, q)| q.granted);
        let list: Vec<String> = v
            .iter()
            .map(|(n, q)| {
                format!(
                    "pin {n} holder {} session {} blocks {}..{}: asked {} granted {} ended {} gone {} broken {}",
                    q.holder,
                    q.session,
                    q.first,
                    q.end,
                    rel(q.asked),
                    rel(q.granted),
                    opt(q.ended),
                    opt(q.gone),
                    opt(self.broken_at(q))
                )
            })
            .collect();
        let breaks: Vec<String> = self
            .breaks
            .iter()
            .filter(|k| {
                k.file == file && k.done + 1_000_000_000 > t && k.started < t + 1_000_000_000
            })
            .map(|k| {
                format!(
                    "blocks {}..{} from {} to {}",
                    k.first,
                    k.end,
                    rel(k.started),
                    rel(k.done)
                )
            })
            .collect();
        format!(
            "pins of block {b}, ms from the store's start: {}; breakers of the file within 1 s: {}",
            list.join("; "),
            breaks.join("; ")
        )
    }

    /// The tag of store `s` of pin `g` at byte `at` of pinned file `pinned` (`None`: a file
    /// no holder pins). `last`: every holder has exited, so every report is in.
    fn judge(
        &self,
        pinned: Option<usize>,
        name: &str,
        at: usize,
        (g, s): (u32, u32),
        last: bool,
    ) -> Verdict {
        let Some(p) = self.pins.get(&g) else {
            return Verdict::Unknown;
        };
        let found = match remote_of(s) {
            Some(_) => p.remote.get(&s),
            None => p.stores.get(s as usize),
        };
        let Some(&(began, ended)) = found else {
            return Verdict::Unknown;
        };
        let who = match remote_of(s) {
            Some((peer, n)) => format!(
                "remote store {n} of peer {peer} through pin {g} (exported by holder {}, {})",
                p.holder,
                file_name(p.file)
            ),
            None => format!(
                "store {s} of pin {g} (holder {}, {})",
                p.holder,
                file_name(p.file)
            ),
        };
        let b = at as u64 / BLOCK_SIZE;
        // A mapping kept past its pin (after the unpin, the connection's end, or the holder's
        // death, by a forked child) reaches orphaned memory: its stores reach no file, unless
        // another pin still keeps the block's page attached (only in the pin's own file and
        // range: nothing else of the file was ever in its mapping). Judged first, in any file,
        // so that the verdict names what went wrong.
        if let Some(t) = p.gone.filter(|&t| began > t) {
            let own = Some(p.file) == pinned && p.first <= b && b < p.end;
            if !(own && self.attached_by_another(g, p.file, b, began, ended)) {
                let v = format!(
                    "{name}: {who} at byte {at} began {:.1} ms after the pin was gone: a store made after its pin was gone reached a file",
                    (began - t) as f64 / 1e6
                );
                return if !own || last || now_ns() > ended + SETTLE_NS {
                    Verdict::Wrong(v)
                } else {
                    Verdict::Later(v)
                };
            }
        }
        if Some(p.file) != pinned {
            return Verdict::Wrong(format!(
                "{name}: {who} at byte {at}: a holder's bytes in a file it did not pin"
            ));
        }
        if b < p.first || b >= p.end {
            return Verdict::Wrong(format!(
                "{name}: {who} at byte {at}, outside its pinned blocks {}..{}",
                p.first, p.end
            ));
        }
        if let Some(t) = self.broken_at(p).filter(|&t| began > t) {
            // The filesystem moves a revoked pin's blocks out of the file when the breaker
            // (or fence) runs, except those a live lease of another pin keeps there.
            if !self.kept_by_another(g, p.file, b, began, ended) {
                return Verdict::Wrong(format!(
                    "{name}: {who} at byte {at} began {:.1} ms after a breaker of the pin's range (or a fence of its holder) returned: a revoked holder's store reached its file ({})",
                    (began - t) as f64 / 1e6,
                    self.pins_of_block(p.file, b, began)
                ));
            }
        }
        Verdict::Fine
    }

    /// The oracles on the contents `data` of pinned file `pinned` (`None`: a file no holder
    /// pins), called `name`. Tags of stores not yet reported wait in the ledger.
    pub fn check(&mut self, pinned: Option<usize>, name: &str, data: &[u8]) -> Result<(), String> {
        // Blocks some pin of this file ever covered (worked out at the first stray byte).
        let mut covered: Option<Vec<bool>> = None;
        let mut at = 0;
        // A store fills whole blocks with one tag: judge it once per block.
        let mut judged: Option<(u32, u32, usize)> = None;
        // The last block whose stray holder byte waits for a pin's report.
        let mut waited: Option<usize> = None;
        while at < data.len() {
            // Stores fill whole blocks: tags sit at multiples of 8 (read anywhere else, the
            // end of one tag and the start of the next can look like a third).
            let word = data.get(at..at + 8).filter(|_| at % 8 == 0);
            if let Some((g, s)) = word.and_then(read_tag) {
                let block = at / BLOCK_SIZE as usize;
                if judged == Some((g, s, block)) {
                    at += 8;
                    continue;
                }
                judged = Some((g, s, block));
                let verdict = self.judge(pinned, name, at, (g, s), false);
                if remote_of(s).is_some() && matches!(verdict, Verdict::Fine | Verdict::Wrong(_)) {
                    self.remote_judged += 1;
                }
                match verdict {
                    Verdict::Fine => {}
                    Verdict::Wrong(v) => return Err(v),
                    Verdict::Unknown | Verdict::Later(_) => self.pending.push(Pending {
                        pinned,
                        name: name.to_string(),
                        at,
                        what: Waiting::Tag { pin: g, store: s },
                    }),
                }
                at += 8;
                continue;
            }
            if data[at] >= HOLDER_BYTES && !self.covered(pinned, data.len(), &mut covered, at) {
                if pinned.is_none() {
                    // A store fills a whole block: a tag left whole in the same block names
                    // whose it was (a writer may have cut the one this byte belongs to).
                    let whose = self.tag_in_block(name, data, at);
                    return Err(whose.unwrap_or_else(|| stray_byte(name, data[at], at)));
                }
                // A holder reports its pin before it stores, but the report may not have been
                // read yet: the byte waits for it (once per block), as a tag waits for its
                // store's report.
                let block = at / BLOCK_SIZE as usize;
                if waited != Some(block) {
                    waited = Some(block);
                    self.pending.push(Pending {
                        pinned,
                        name: name.to_string(),
                        at,
                        what: Waiting::Byte(data[at]),
                    });
                }
            }
            at += 1;
        }
        Ok(())
    }

    /// The verdict on a whole tag, of a store that was reported, in the block of byte `at`
    /// of a file no holder pins, if there is one.
    fn tag_in_block(&self, name: &str, data: &[u8], at: usize) -> Option<String> {
        let start = at / BLOCK_SIZE as usize * BLOCK_SIZE as usize;
        let end = (start + BLOCK_SIZE as usize).min(data.len());
        (start..end).step_by(8).find_map(|w| {
            let tag = data.get(w..w + 8).and_then(read_tag)?;
            match self.judge(None, name, w, tag, false) {
                Verdict::Wrong(v) | Verdict::Later(v) => Some(v),
                Verdict::Fine | Verdict::Unknown => None,
            }
        })
    }

    /// Did a pin of file `pinned` ever cover byte `at`? (`covered` caches the answer for a
    /// file of `len` bytes.)
    fn covered(
        &self,
        pinned: Option<usize>,
        len: usize,
        covered: &mut Option<Vec<bool>>,
        at: usize,
    ) -> bool {
        let blocks = covered.get_or_insert_with(|| {
            let mut v = vec![false; len.div_ceil(BLOCK_SIZE as usize)];
            for p in self.pins.values().filter(|p| Some(p.file) == pinned) {
                for b in p.first..p.end.min(v.len() as u64) {
                    v[b as usize] = true;
                }
            }
            v
        });
        blocks[at / BLOCK_SIZE as usize]
    }

    /// Judges the tags that waited for their stores' reports, and the holder bytes that
    /// waited for a pin of their block; with `last` (every holder has exited), a report still
    /// missing is a violation.
    pub fn check_pending(&mut self, last: bool) -> Result<(), String> {
        let mut keep = Vec::new();
        for t in std::mem::take(&mut self.pending) {
            let (pin, store) = match t.what {
                Waiting::Tag { pin, store } => (pin, store),
                Waiting::Byte(byte) => {
                    let b = (t.at as u64) / BLOCK_SIZE;
                    let covered = self
                        .pins
                        .values()
                        .any(|p| Some(p.file) == t.pinned && p.first <= b && b < p.end);
                    if !covered {
                        if last {
                            return Err(stray_byte(&t.name, byte, t.at));
                        }
                        keep.push(t);
                    }
                    continue;
                }
            };
            let verdict = self.judge(t.pinned, &t.name, t.at, (pin, store), last);
            if remote_of(store).is_some() && matches!(verdict, Verdict::Fine | Verdict::Wrong(_)) {
                self.remote_judged += 1;
            }
            match verdict {
                Verdict::Fine => {}
                Verdict::Wrong(v) => return Err(v),
                // Every report is in at the end: a store still unexplained is wrong then.
                Verdict::Later(v) if last => return Err(v),
                Verdict::Later(_) => keep.push(t),
                Verdict::Unknown if last => {
                    return Err(format!(
                    "{}: a tag of store {store} of pin {pin} at byte {}, a store no holder or remote peer made",
                    t.name, t.at
                ))
                }
                Verdict::Unknown => keep.push(t),
            }
        }
        self.pending = keep;
        Ok(())
    }
}

/// The verdict on holder byte `byte` at byte `at` of file `name`, in a block no pin of that
/// file ever covered.
fn stray_byte(name: &str, byte: u8, at: usize) -> String {
    format!(
        "{name}: holder byte {byte:#x} at byte {at}, in a block no pin of this file ever covered"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzer::fill_tags;

    #[test]
    fn entries_survive_their_lines() {
        for e in [
            Entry::Step {
                index: 7,
                what: "Holder(1) Store".into(),
            },
            Entry::Pin {
                pin: 33,
                session: 5,
                file: 4,
                first: 2,
                end: 9,
                asked: 123,
                granted: 123,
            },
            Entry::Store {
                pin: 33,
                store: 0,
                began: 5,
                ended: 6,
            },
            Entry::End { pin: 33, at: 99 },
            Entry::Gone { pin: 33, at: 101 },
            Entry::Died { index: 8 },
            Entry::Violation("pin: no".into()),
        ] {
            assert_eq!(Entry::parse(&e.line()), Some(e));
        }
        assert_eq!(Entry::parse("pin 1 2"), None);
        assert_eq!(Entry::parse(r#"{"pin":{"pin":1}}"#), None);
        // A text with a newline stays on one line.
        let v = Entry::Violation("two\nlines".into());
        assert!(!v.line().contains('\n'));
        assert_eq!(Entry::parse(&v.line()), Some(v));
    }

    /// Records pin `g` of `holder`, asked for just before `granted` and granted then: blocks
    /// 2..6 of file 3.
    fn pin(l: &mut Ledger, g: u32, holder: usize, granted: u64) {
        l.record(
            holder,
            &Entry::Pin {
                pin: g,
                session: holder as u64,
                file: 3,
                first: 2,
                end: 6,
                asked: granted - 1,
                granted,
            },
        )
    }

    fn file_with_tag(block: u64, pin: u32, store: u32) -> Vec<u8> {
        let mut data = vec![0x11u8; 16 * BLOCK_SIZE as usize];
        let b = (block * BLOCK_SIZE) as usize;
        fill_tags(&mut data[b..b + BLOCK_SIZE as usize], pin, store);
        data
    }

    #[test]
    fn a_store_after_the_breaker_returned_is_caught_one_before_is_not() {
        let mut l = Ledger::default();
        pin(&mut l, 1, 1, 100);
        l.record(
            1,
            &Entry::Store {
                pin: 1,
                store: 0,
                began: 150,
                ended: 160,
            },
        );
        l.breaker(3, 5, u64::MAX, 200, 300);
        l.record(
            1,
            &Entry::Store {
                pin: 1,
                store: 1,
                began: 301,
                ended: 310,
            },
        );
        assert!(l.check(Some(3), "pinned0", &file_with_tag(2, 1, 0)).is_ok());
        let late = l.check(Some(3), "pinned0", &file_with_tag(2, 1, 1));
        assert!(late.unwrap_err().contains("revoked holder"));
        // Another holder's live lease on the block keeps it in the file: no violation.
        pin(&mut l, 2, 2, 250);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(2, 1, 1)).is_ok());
        // A tag in a file the pin is not of, or outside its range.
        assert!(l
            .check(Some(4), "pinned1", &file_with_tag(2, 1, 0))
            .is_err());
        assert!(l.check(None, "new1", &file_with_tag(2, 1, 0)).is_err());
        assert!(l
            .check(Some(3), "pinned0", &file_with_tag(7, 1, 0))
            .is_err());
    }

    /// Pin 1 (holder 1, session 1) is fenced; pin 2 (holder 2, or another session of holder
    /// 1) pins the same blocks and keeps them in the file until it is gone.
    fn fenced_beside(l: &mut Ledger, keeper_holder: usize, keeper_session: u64) {
        pin(l, 1, 1, 100);
        l.record(
            keeper_holder,
            &Entry::Pin {
                pin: 2,
                session: keeper_session,
                file: 3,
                first: 2,
                end: 6,
                asked: 110,
                granted: 120,
            },
        );
        l.fenced(1, 200, 300);
    }

    fn store_at(l: &mut Ledger, s: u32, began: u64) {
        l.record(
            1,
            &Entry::Store {
                pin: 1,
                store: s,
                began,
                ended: began + 5,
            },
        );
    }

    #[test]
    fn a_live_pin_keeps_a_revoked_pins_block_until_it_is_certainly_gone() {
        // The keeper reports its end, then unpins; the filesystem moves the block out in the
        // unpin, before it returns (gone). A store between the two reaches the file.
        let mut l = Ledger::default();
        fenced_beside(&mut l, 2, 2);
        l.record(2, &Entry::End { pin: 2, at: 400 });
        store_at(&mut l, 0, 410);
        l.record(2, &Entry::Gone { pin: 2, at: 430 });
        store_at(&mut l, 1, 440);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(3, 1, 0)).is_ok());
        let v = l
            .check(Some(3), "pinned0", &file_with_tag(3, 1, 1))
            .unwrap_err();
        assert!(v.contains("revoked holder"), "{v}");
        // Only in the blocks both pins cover.
        let mut l = Ledger::default();
        fenced_beside(&mut l, 2, 2);
        l.pins.get_mut(&2).unwrap().end = 3;
        store_at(&mut l, 0, 410);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(2, 1, 0)).is_ok());
        assert!(l
            .check(Some(3), "pinned0", &file_with_tag(3, 1, 0))
            .is_err());
    }

    #[test]
    fn a_killed_keepers_pin_counts_until_a_breaker_of_its_range_returned() {
        // Nobody sees the daemon release a killed holder's pin: its End is a time before.
        let mut l = Ledger::default();
        fenced_beside(&mut l, 2, 2);
        l.record(2, &Entry::End { pin: 2, at: 400 });
        store_at(&mut l, 0, 410);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(3, 1, 0)).is_ok());
        // A breaker of its range returned: it released or revoked the pin, and moved the
        // revoked blocks no live lease pins any more.
        l.breaker(3, 5, u64::MAX, 500, 600);
        store_at(&mut l, 1, 610);
        let v = l
            .check(Some(3), "pinned0", &file_with_tag(3, 1, 1))
            .unwrap_err();
        assert!(v.contains("revoked holder"), "{v}");
    }

    #[test]
    fn a_keeper_may_be_another_session_of_the_same_holder_or_one_granted_during_the_store() {
        // A holder killed and started again: the daemon's live lease of its old session
        // keeps the block as any other would.
        let mut l = Ledger::default();
        fenced_beside(&mut l, 1, 7);
        store_at(&mut l, 0, 410);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(3, 1, 0)).is_ok());
        // A pin asked for before the store ended may have been granted before it, even when
        // its holder saw the grant later.
        let mut l = Ledger::default();
        pin(&mut l, 1, 1, 100);
        l.fenced(1, 200, 300);
        store_at(&mut l, 0, 410);
        l.record(
            2,
            &Entry::Pin {
                pin: 2,
                session: 2,
                file: 3,
                first: 2,
                end: 6,
                asked: 412,
                granted: 450,
            },
        );
        assert!(l.check(Some(3), "pinned0", &file_with_tag(3, 1, 0)).is_ok());
        // One asked for after the store ended could not.
        l.pins.get_mut(&2).unwrap().asked = 416;
        assert!(l
            .check(Some(3), "pinned0", &file_with_tag(3, 1, 0))
            .is_err());
    }

    #[test]
    fn a_store_after_a_fence_returned_is_caught() {
        let mut l = Ledger::default();
        l.record(
            2,
            &Entry::Pin {
                pin: 2,
                session: 9,
                file: 3,
                first: 0,
                end: 4,
                asked: 10,
                granted: 10,
            },
        );
        assert_eq!(l.session_of(2), Some(9));
        l.fenced(9, 20, 30);
        l.record(
            2,
            &Entry::Store {
                pin: 2,
                store: 0,
                began: 31,
                ended: 32,
            },
        );
        let v = l
            .check(Some(3), "pinned0", &file_with_tag(1, 2, 0))
            .unwrap_err();
        assert!(v.contains("revoked holder"), "{v}");
    }

    #[test]
    fn a_store_after_its_pin_was_gone_is_caught_unless_another_pin_kept_the_page() {
        let mut l = Ledger::default();
        let store = |l: &mut Ledger, g, s, began| {
            l.record(
                1,
                &Entry::Store {
                    pin: g,
                    store: s,
                    began,
                    ended: began + 5,
                },
            )
        };
        pin(&mut l, 1, 1, 100);
        store(&mut l, 1, 0, 150);
        l.record(1, &Entry::End { pin: 1, at: 190 });
        // A store racing the unpin (it began before the unpin returned) may land.
        store(&mut l, 1, 1, 195);
        l.record(1, &Entry::Gone { pin: 1, at: 200 });
        store(&mut l, 1, 2, 210);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(2, 1, 0)).is_ok());
        assert!(l.check(Some(3), "pinned0", &file_with_tag(2, 1, 1)).is_ok());
        let v = l
            .check(Some(3), "pinned0", &file_with_tag(2, 1, 2))
            .unwrap_err();
        assert!(v.contains("after its pin was gone"), "{v}");
        // Another pin of the block (of any holder) that was not gone keeps its page
        // attached: the store reaches the file through it.
        pin(&mut l, 17, 1, 205);
        assert!(l.check(Some(3), "pinned0", &file_with_tag(2, 1, 2)).is_ok());
        l.record(1, &Entry::Gone { pin: 17, at: 207 });
        assert!(l
            .check(Some(3), "pinned0", &file_with_tag(2, 1, 2))
            .is_err());
    }

    #[test]
    fn a_remote_peers_store_is_judged_by_its_own_report_and_named() {
        use crate::fuzzer::{remote_of, remote_store};
        assert_eq!(remote_of(remote_store(5, 7)), Some((5, 7)));
        assert_eq!(remote_of(3), None);
        let mut l = Ledger::default();
        pin(&mut l, 1, 1, 100);
        let r = remote_store(2, 0);
        let tagged = file_with_tag(2, 1, r);
        // Not reported yet: it waits; a local store of the same pin explains nothing.
        store_at(&mut l, 0, 150);
        assert!(l.check(Some(3), "pinned0", &tagged).is_ok());
        assert!(l.check_pending(false).is_ok());
        l.record(
            usize::MAX,
            &Entry::Store {
                pin: 1,
                store: r,
                began: 160,
                ended: 170,
            },
        );
        assert!(l.check_pending(true).is_ok());
        assert_eq!(l.remote_counts(), (1, 1));
        // A peer's store after a breaker of the pin's range returned, in another file.
        l.breaker(3, 0, u64::MAX, 200, 300);
        let late = remote_store(2, 1);
        l.record(
            usize::MAX,
            &Entry::Store {
                pin: 1,
                store: late,
                began: 310,
                ended: 320,
            },
        );
        let v = l
            .check(None, "new9", &file_with_tag(0, 1, late))
            .unwrap_err();
        assert!(v.contains("remote store 1 of peer 2 through pin 1"), "{v}");
        assert!(v.contains("in a file it did not pin"), "{v}");
        let v = l
            .check(Some(3), "pinned0", &file_with_tag(2, 1, late))
            .unwrap_err();
        assert!(
            v.contains("a revoked holder's store reached its file"),
            "{v}"
        );
    }

    #[test]
    fn only_aligned_words_are_tags() {
        let mut data = vec![0u8; 16];
        fill_tags(&mut data, 3, 31);
        let mut l = Ledger::default();
        l.record(
            1,
            &Entry::Pin {
                pin: 3,
                session: 1,
                file: 3,
                first: 0,
                end: 1,
                asked: 1,
                granted: 1,
            },
        );
        for s in 0..32 {
            l.record(
                1,
                &Entry::Store {
                    pin: 3,
                    store: s,
                    began: 2,
                    ended: 3,
                },
            );
        }
        assert!(l.check(Some(3), "pinned0", &data).is_ok());
        // A writer's byte over the first tag's marker: the rest of it and the next tag's
        // marker, read one byte on, look like a tag of another store.
        data[0] = 0x05;
        assert!(read_tag(&data[1..9]).is_some());
        assert!(l.check(Some(3), "pinned0", &data).is_ok());
        assert!(l.check_pending(true).is_ok(), "no made-up tag waits");
    }

    #[test]
    fn a_holder_byte_waits_for_the_report_of_a_pin_of_its_block() {
        // A tag cut by a writer's write: its first byte is a holder's, the word is no tag.
        let mut data = vec![0x11u8; 16 * BLOCK_SIZE as usize];
        let at = 5 * BLOCK_SIZE as usize + 64;
        data[at] = 0xff;
        let mut l = Ledger::default();
        assert!(l.check(Some(3), "pinned0", &data).is_ok());
        assert!(l.check_pending(false).is_ok());
        // The holder's pin report comes: the byte is explained.
        pin(&mut l, 1, 1, 100);
        assert!(l.check_pending(true).is_ok());
        // No pin of the block ever reported: wrong once every report is in.
        let mut l = Ledger::default();
        assert!(l.check(Some(3), "pinned0", &data).is_ok());
        let v = l.check_pending(true).unwrap_err();
        assert!(
            v.contains("in a block no pin of this file ever covered"),
            "{v}"
        );
        // A pin of another block explains nothing.
        let mut l = Ledger::default();
        pin(&mut l, 1, 1, 100);
        let mut far = vec![0x11u8; 16 * BLOCK_SIZE as usize];
        far[9 * BLOCK_SIZE as usize] = 0xff;
        assert!(l.check(Some(3), "pinned0", &far).is_ok());
        assert!(l.check_pending(true).is_err());
        // In a file no holder pins, at once.
        assert!(l.check(None, "plain0", &far).is_err());
    }

    #[test]
    fn an_unreported_store_waits_then_is_judged() {
        let mut l = Ledger::default();
        assert!(l
            .check(Some(3), "pinned0", &file_with_tag(2, 17, 0))
            .is_ok());
        assert!(l.check_pending(false).is_ok());
        assert!(l
            .check_pending(true)
            .unwrap_err()
            .contains("no holder or remote peer made"));
        let mut l = Ledger::default();
        assert!(l
            .check(Some(3), "pinned0", &file_with_tag(2, 17, 0))
            .is_ok());
        l.record(
            1,
            &Entry::Pin {
                pin: 17,
                session: 1,
                file: 4,
                first: 2,
                end: 3,
                asked: 1,
                granted: 1,
            },
        );
        l.record(
            1,
            &Entry::Store {
                pin: 17,
                store: 0,
                began: 2,
                ended: 3,
            },
        );
        assert!(l.check_pending(false).unwrap_err().contains("did not pin"));
    }
}

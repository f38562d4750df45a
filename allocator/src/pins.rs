//! Pin references on block ranges, and the busy blocks they keep alive.
//!
//! Lifecycle of a pinned block: a file owns it (used) -> a holder pins it (count >= 1) -> the
//! file lets go of it while it is still pinned (detached: the block is *busy*, owned by no
//! file, and never allocated) -> the last unpin drops the count to zero and a detached block
//! becomes free. Blocks that are pinned but still owned by their file stay used.
//!
//! Invariant: segments are non-empty, never overlap, and have a count of at least one.

use std::collections::BTreeMap;

use crate::Extent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PinSegment {
    pub(crate) len: u64,
    pub(crate) count: u32,
    pub(crate) detached: bool,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct PinMap {
    segs: BTreeMap<u64, PinSegment>,
    busy_blocks: u64,
}

impl PinMap {
    pub(crate) fn busy_blocks(&self) -> u64 {
        self.busy_blocks
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Extent, PinSegment)> + '_ {
        self.segs.iter().map(|(&start, &seg)| {
            (
                Extent {
                    start,
                    len: seg.len,
                },
                seg,
            )
        })
    }

    /// Splits the segment containing `at` so that a segment boundary falls on `at`.
    fn split_at(&mut self, at: u64) {
        if let Some((&s, &seg)) = self.segs.range(..at).next_back() {
            if s + seg.len > at {
                let head = at - s;
                self.segs.insert(s, PinSegment { len: head, ..seg });
                self.segs.insert(
                    at,
                    PinSegment {
                        len: seg.len - head,
                        ..seg
                    },
                );
            }
        }
    }

    /// Segments (start, segment) lying inside `ext`, after splitting at its bounds.
    fn isolate(&mut self, ext: Extent) -> Vec<(u64, PinSegment)> {
        self.split_at(ext.start);
        self.split_at(ext.end());
        self.segs
            .range(ext.start..ext.end())
            .map(|(&s, &seg)| (s, seg))
            .collect()
    }

    /// Merges equal neighbours around `ext`, so that the map stays as small as the pins are.
    fn coalesce(&mut self, ext: Extent) {
        let first = self
            .segs
            .range(..ext.start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(ext.start);
        let keys: Vec<u64> = self
            .segs
            .range(first..=ext.end())
            .map(|(&s, _)| s)
            .collect();
        let mut cur: Option<(u64, PinSegment)> = None;
        for k in keys {
            let seg = self.segs[&k];
            match cur {
                Some((cs, cseg))
                    if cs + cseg.len == k
                        && cseg.count == seg.count
                        && cseg.detached == seg.detached =>
                {
                    self.segs.remove(&k);
                    let merged = PinSegment {
                        len: cseg.len + seg.len,
                        ..cseg
                    };
                    self.segs.insert(cs, merged);
                    cur = Some((cs, merged));
                }
                _ => cur = Some((k, seg)),
            }
        }
    }

    /// Is any block of `ext` detached (busy)?
    pub(crate) fn any_detached(&self, ext: Extent) -> bool {
        self.overlapping(ext).any(|(_, seg)| seg.detached)
    }

    /// Is any block of `ext` pinned?
    pub(crate) fn any_pinned(&self, ext: Extent) -> bool {
        self.overlapping(ext).next().is_some()
    }

    /// Segments (start, segment) that overlap `ext`, in block order.
    pub(crate) fn overlapping(&self, ext: Extent) -> impl Iterator<Item = (u64, PinSegment)> + '_ {
        let first = match self.segs.range(..=ext.start).next_back() {
            Some((&s, seg)) if s + seg.len > ext.start => s,
            _ => ext.start,
        };
        self.segs.range(first..ext.end()).map(|(&s, &seg)| (s, seg))
    }

    /// Adds one reference to every block of `ext`.
    pub(crate) fn pin(&mut self, ext: Extent) {
        let inside = self.isolate(ext);
        let mut cursor = ext.start;
        for (s, seg) in inside {
            if s > cursor {
                self.segs.insert(
                    cursor,
                    PinSegment {
                        len: s - cursor,
                        count: 1,
                        detached: false,
                    },
                );
            }
            self.segs.insert(
                s,
                PinSegment {
                    count: seg.count + 1,
                    ..seg
                },
            );
            cursor = s + seg.len;
        }
        if cursor < ext.end() {
            self.segs.insert(
                cursor,
                PinSegment {
                    len: ext.end() - cursor,
                    count: 1,
                    detached: false,
                },
            );
        }
        self.coalesce(ext);
    }

    /// Does every block of `ext` carry at least one reference?
    pub(crate) fn fully_pinned(&self, ext: Extent) -> bool {
        let mut cursor = ext.start;
        for (s, seg) in self.overlapping(ext) {
            if s > cursor {
                return false;
            }
            cursor = s + seg.len;
        }
        cursor >= ext.end()
    }

    /// Drops one reference from every block of `ext` (all must be pinned) and returns the
    /// detached extents whose last reference this was: they are now free.
    pub(crate) fn unpin(&mut self, ext: Extent) -> Vec<Extent> {
        debug_assert!(self.fully_pinned(ext));
        let mut released = Vec::new();
        for (s, seg) in self.isolate(ext) {
            if seg.count == 1 {
                self.segs.remove(&s);
                if seg.detached {
                    self.busy_blocks -= seg.len;
                    released.push(Extent {
                        start: s,
                        len: seg.len,
                    });
                }
            } else {
                self.segs.insert(
                    s,
                    PinSegment {
                        count: seg.count - 1,
                        ..seg
                    },
                );
            }
        }
        self.coalesce(ext);
        released
    }

    /// Marks the pinned blocks of `ext` detached and returns the parts of `ext` that are not
    /// pinned (and so can be freed at once).
    pub(crate) fn detach(&mut self, ext: Extent) -> Vec<Extent> {
        let mut unpinned = Vec::new();
        let mut cursor = ext.start;
        for (s, seg) in self.isolate(ext) {
            if s > cursor {
                unpinned.push(Extent {
                    start: cursor,
                    len: s - cursor,
                });
            }
            debug_assert!(!seg.detached);
            self.busy_blocks += seg.len;
            self.segs.insert(
                s,
                PinSegment {
                    detached: true,
                    ..seg
                },
            );
            cursor = s + seg.len;
        }
        if cursor < ext.end() {
            unpinned.push(Extent {
                start: cursor,
                len: ext.end() - cursor,
            });
        }
        self.coalesce(ext);
        unpinned
    }

    pub(crate) fn check(&self, total: u64) -> Result<(), String> {
        let mut prev_end: Option<u64> = None;
        let mut busy = 0;
        for (&s, seg) in &self.segs {
            if seg.len == 0 || seg.count == 0 {
                return Err(format!("pin segment at {s} is empty or has no reference"));
            }
            if s + seg.len > total {
                return Err(format!(
                    "pin segment {s}+{} ends past the last block",
                    seg.len
                ));
            }
            if prev_end.is_some_and(|p| s < p) {
                return Err(format!("pin segment at {s} overlaps its predecessor"));
            }
            if seg.detached {
                busy += seg.len;
            }
            prev_end = Some(s + seg.len);
        }
        if busy != self.busy_blocks {
            return Err(format!(
                "busy blocks counted {} but detached segments sum to {busy}",
                self.busy_blocks
            ));
        }
        Ok(())
    }
}

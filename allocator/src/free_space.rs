//! Free space: the set of free block extents, indexed by start (for coalescing and overlap
//! checks) and by length (for best-fit allocation), both O(log n).
//!
//! Invariant: extents are non-empty, never overlap and never touch (touching extents are
//! merged on insert), and the two indexes hold exactly the same extents.

use std::collections::{BTreeMap, BTreeSet};

use crate::Extent;

#[derive(Debug, Default, Clone)]
pub(crate) struct FreeSpace {
    by_start: BTreeMap<u64, u64>,
    by_len: BTreeSet<(u64, u64)>,
    blocks: u64,
}

impl FreeSpace {
    pub(crate) fn blocks(&self) -> u64 {
        self.blocks
    }

    pub(crate) fn extent_count(&self) -> usize {
        self.by_start.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_start
            .iter()
            .map(|(&start, &len)| Extent { start, len })
    }

    fn remove_exact(&mut self, start: u64, len: u64) {
        self.by_start.remove(&start);
        self.by_len.remove(&(len, start));
        self.blocks -= len;
    }

    fn insert_exact(&mut self, start: u64, len: u64) {
        self.by_start.insert(start, len);
        self.by_len.insert((len, start));
        self.blocks += len;
    }

    /// Does any free block lie in `ext`?
    pub(crate) fn overlaps(&self, ext: Extent) -> bool {
        if let Some((&s, &l)) = self.by_start.range(..ext.end()).next_back() {
            s + l > ext.start
        } else {
            false
        }
    }

    /// Is every block of `ext` free?
    pub(crate) fn contains(&self, ext: Extent) -> bool {
        self.by_start
            .range(..=ext.start)
            .next_back()
            .is_some_and(|(&s, &l)| s + l >= ext.end())
    }

    /// Adds `ext` (which must not overlap free space) and merges it with touching neighbours.
    pub(crate) fn insert(&mut self, ext: Extent) {
        debug_assert!(ext.len > 0 && !self.overlaps(ext));
        let (mut start, mut len) = (ext.start, ext.len);
        if let Some((&ps, &pl)) = self.by_start.range(..start).next_back() {
            if ps + pl == start {
                self.remove_exact(ps, pl);
                start = ps;
                len += pl;
            }
        }
        if let Some(&nl) = self.by_start.get(&(start + len)) {
            self.remove_exact(start + len, nl);
            len += nl;
        }
        self.insert_exact(start, len);
    }

    /// Takes up to `want` blocks as one extent. Preference order: an extent that starts at
    /// `goal` (keeps a growing file contiguous), the smallest extent that holds `want` whole
    /// (best fit), and otherwise the largest extent there is.
    pub(crate) fn take(&mut self, want: u64, goal: Option<u64>) -> Option<Extent> {
        debug_assert!(want > 0);
        let (start, len) = goal
            .and_then(|g| self.by_start.get(&g).map(|&l| (g, l)))
            .or_else(|| self.by_len.range((want, 0)..).next().map(|&(l, s)| (s, l)))
            .or_else(|| self.by_len.iter().next_back().map(|&(l, s)| (s, l)))?;
        self.remove_exact(start, len);
        let got = want.min(len);
        if got < len {
            self.insert_exact(start + got, len - got);
        }
        Some(Extent { start, len: got })
    }

    /// Blocks in the `n` largest free extents.
    pub(crate) fn largest_blocks(&self, n: usize) -> u64 {
        self.by_len.iter().rev().take(n).map(|&(l, _)| l).sum()
    }

    /// Takes up to `want` blocks from the start of the smallest free extent.
    pub(crate) fn take_smallest(&mut self, want: u64) -> Option<Extent> {
        let &(len, start) = self.by_len.iter().next()?;
        let ext = Extent {
            start,
            len: want.min(len),
        };
        self.take_exact(ext);
        Some(ext)
    }

    /// Removes exactly `ext` from free space; every block of it must be free.
    pub(crate) fn take_exact(&mut self, ext: Extent) -> bool {
        if !self.contains(ext) {
            return false;
        }
        let (&s, &l) = self
            .by_start
            .range(..=ext.start)
            .next_back()
            .expect("contained");
        self.remove_exact(s, l);
        if s < ext.start {
            self.insert_exact(s, ext.start - s);
        }
        if ext.end() < s + l {
            self.insert_exact(ext.end(), s + l - ext.end());
        }
        true
    }

    pub(crate) fn check(&self, total: u64) -> Result<(), String> {
        let mut prev_end: Option<u64> = None;
        let mut sum = 0;
        for (&s, &l) in &self.by_start {
            if l == 0 {
                return Err(format!("free extent at {s} is empty"));
            }
            if s + l > total {
                return Err(format!(
                    "free extent {s}+{l} ends past the last block {total}"
                ));
            }
            if let Some(p) = prev_end {
                if s <= p {
                    return Err(format!(
                        "free extent {s}+{l} overlaps or touches its predecessor"
                    ));
                }
            }
            if !self.by_len.contains(&(l, s)) {
                return Err(format!(
                    "free extent {s}+{l} is missing from the length index"
                ));
            }
            prev_end = Some(s + l);
            sum += l;
        }
        if self.by_len.len() != self.by_start.len() {
            return Err("free-space indexes differ in size".into());
        }
        if sum != self.blocks {
            return Err(format!(
                "free blocks counted {} but extents sum to {sum}",
                self.blocks
            ));
        }
        Ok(())
    }
}

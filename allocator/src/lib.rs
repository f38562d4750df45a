//! pinfs-allocator: extent-based free-space management that knows about *busy* blocks.
//!
//! Every block of the address space `0..total` is in exactly one of three states:
//!
//! - **free**: in the free-space index, can be handed out by [`Allocator::allocate`];
//! - **used**: owned by something outside the allocator (a file, the image's metadata);
//! - **busy**: owned by nobody any more, but still referenced by pins, so it must not be
//!   reused (the "still pinned" busy reason; compare XFS's busy extents, which have only the
//!   "freed but not yet committed" one);
//! - **pending**: owned by nobody any more, but the record that frees them is not durable yet
//!   ([`Allocator::free_pending`]): XFS's busy reason. A crash would bring their owner back,
//!   so they are not reused until the caller says the record is durable
//!   ([`Allocator::settle`]). A pending block that a pin also keeps is busy.
//!
//! Pins are reference counts on block ranges. A used block can be pinned any number of times;
//! [`Allocator::free`] of a pinned block *detaches* it (used -> busy) instead of freeing it, and
//! the last [`Allocator::unpin`] of a busy block frees it. Allocation never returns busy
//! blocks: the free-space index simply does not contain them, so candidates are trimmed around
//! busy extents by construction and `NoSpace` means no non-busy free block is left.
//!
//! Accounting invariant: `free + used + busy + pending == total`, checked by [`Allocator::check`]
//! (also run after every operation in debug builds while the allocator is small).
//!
//! The crate knows nothing of files; block numbers are plain `u64`s.

mod free_space;
mod pins;

use std::collections::BTreeMap;

use free_space::FreeSpace;
use pins::PinMap;

/// A run of `len` blocks starting at block `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks (at least one in every extent the allocator hands out).
    pub len: u64,
}

impl Extent {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Why an allocator operation was refused. The allocator is unchanged after any error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No free (non-busy) block is left.
    #[error("no free space left ({busy} blocks are busy, kept for pins)")]
    NoSpace {
        /// Busy blocks at the time of the failure.
        busy: u64,
    },
    /// The extent is empty or reaches past the end of the address space.
    #[error("extent {start}+{len} is empty or outside 0..{total}")]
    OutOfRange {
        /// Start of the offending extent.
        start: u64,
        /// Its length.
        len: u64,
        /// Size of the address space.
        total: u64,
    },
    /// The operation needs used blocks, and some block of the extent is free or busy.
    #[error("extent {start}+{len} is not entirely in use")]
    NotUsed {
        /// Start of the offending extent.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// The operation needs free blocks, and some block of the extent is not free.
    #[error("extent {start}+{len} is not entirely free")]
    NotFree {
        /// Start of the offending extent.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// Unpin of a block that carries no pin.
    #[error("extent {start}+{len} is not entirely pinned")]
    NotPinned {
        /// Start of the offending extent.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// A serialised free list that does not describe this address space.
    #[error("serialised allocator state is corrupt: {0}")]
    Corrupt(String),
}

/// A busy extent and the number of pins that keep it busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyExtent {
    /// The blocks.
    pub extent: Extent,
    /// Pins on them (at least one).
    pub pins: u32,
}

/// The allocator. Not internally synchronised: the filesystem wraps it in its own lock.
#[derive(Debug, Clone)]
pub struct Allocator {
    total: u64,
    free: FreeSpace,
    pins: PinMap,
    reserve: Reserve,
    /// Pending frees by first block: (extent, sequence number of the record that frees it).
    /// Each holds one pin of its own on its blocks (so they are busy in `pins`); they never
    /// overlap, since a pending block cannot be freed again before it is allocated again.
    pending: BTreeMap<u64, (Extent, u64)>,
}

/// Free space kept back from data allocations ([`Allocator::allocate_data`]) for metadata:
/// at least `blocks` blocks within the `extents` largest free extents, so that one
/// allocation of `blocks` in at most `extents` pieces always succeeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserve {
    /// Blocks kept back.
    pub blocks: u64,
    /// How many free extents may hold them.
    pub extents: usize,
}

/// Full invariant checks after each operation run in debug builds only while the allocator is
/// this small, so that debug-build tests of large address spaces stay linear.
#[cfg(debug_assertions)]
const DEBUG_CHECK_LIMIT: usize = 512;

impl Allocator {
    /// An allocator over `total` blocks, all free.
    pub fn new(total: u64) -> Self {
        let mut free = FreeSpace::default();
        if total > 0 {
            free.insert(Extent {
                start: 0,
                len: total,
            });
        }
        Allocator {
            total,
            free,
            pins: PinMap::default(),
            reserve: Reserve::default(),
            pending: BTreeMap::new(),
        }
    }

    /// An allocator over `total` blocks, all used: the caller then frees what is free
    /// (used by the filesystem to rebuild allocator state from its extent maps).
    pub fn all_used(total: u64) -> Self {
        Allocator {
            total,
            free: FreeSpace::default(),
            pins: PinMap::default(),
            reserve: Reserve::default(),
            pending: BTreeMap::new(),
        }
    }

    /// An allocator over `total` blocks where exactly the blocks of `used` (extents in any
    /// order, possibly overlapping, possibly reaching past `total`, where they count for
    /// nothing) are used and all others free: rebuilding allocator state from what owners
    /// say they own.
    pub fn from_used(total: u64, used: impl IntoIterator<Item = Extent>) -> Self {
        let mut used: Vec<Extent> = used.into_iter().collect();
        used.sort_unstable();
        let mut a = Allocator::all_used(total);
        let mut cursor = 0u64;
        for e in used {
            // Clamped to the address space: parts past the end own nothing here.
            let start = e.start.min(total);
            if start > cursor {
                a.free.insert(Extent {
                    start: cursor,
                    len: start - cursor,
                });
            }
            cursor = cursor.max(e.start.saturating_add(e.len).min(total));
        }
        if cursor < total {
            a.free.insert(Extent {
                start: cursor,
                len: total - cursor,
            });
        }
        a
    }

    /// Size of the address space in blocks.
    pub fn total_blocks(&self) -> u64 {
        self.total
    }
    /// Free blocks (allocatable).
    pub fn free_blocks(&self) -> u64 {
        self.free.blocks()
    }
    /// Busy blocks: detached from their owner, still pinned (pending blocks that no other
    /// pin keeps are not busy but [pending](Allocator::pending_blocks)).
    pub fn busy_blocks(&self) -> u64 {
        self.pins.busy_blocks() - self.pending_blocks()
    }
    /// Used blocks: owned by someone.
    pub fn used_blocks(&self) -> u64 {
        self.total - self.free.blocks() - self.pins.busy_blocks()
    }
    /// Pending blocks: freed, waiting for the record that frees them to be durable, and kept
    /// by no other pin (they become free at [`Allocator::settle`]).
    pub fn pending_blocks(&self) -> u64 {
        self.pending
            .values()
            .map(|&(ext, _)| {
                self.pins
                    .overlapping(ext)
                    .filter(|(_, seg)| seg.count == 1)
                    .map(|(s, seg)| (s + seg.len).min(ext.end()) - s.max(ext.start))
                    .sum::<u64>()
            })
            .sum()
    }
    /// Are any frees pending?
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
    /// The pending extents (whether or not a pin also keeps them), in block order.
    pub fn pending_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.pending.values().map(|&(ext, _)| ext)
    }
    /// Number of free extents (a fragmentation measure).
    pub fn free_extent_count(&self) -> usize {
        self.free.extent_count()
    }

    fn validate(&self, ext: Extent) -> Result<(), AllocError> {
        if ext.len == 0
            || ext
                .start
                .checked_add(ext.len)
                .is_none_or(|e| e > self.total)
        {
            return Err(AllocError::OutOfRange {
                start: ext.start,
                len: ext.len,
                total: self.total,
            });
        }
        Ok(())
    }

    fn ensure_used(&self, ext: Extent) -> Result<(), AllocError> {
        self.validate(ext)?;
        if self.free.overlaps(ext) || self.pins.any_detached(ext) {
            return Err(AllocError::NotUsed {
                start: ext.start,
                len: ext.len,
            });
        }
        Ok(())
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if self.free.extent_count() < DEBUG_CHECK_LIMIT {
            if let Err(e) = self.check() {
                panic!("allocator invariant broken: {e}");
            }
        }
    }

    /// Allocates one extent of at least one and at most `want` blocks, preferring an extent
    /// that starts at `goal`, then one that holds `want` whole. Callers that need more loop.
    pub fn allocate(&mut self, want: u64, goal: Option<u64>) -> Result<Extent, AllocError> {
        if want == 0 {
            return Err(AllocError::OutOfRange {
                start: goal.unwrap_or(0),
                len: 0,
                total: self.total,
            });
        }
        let ext = self.free.take(want, goal).ok_or(AllocError::NoSpace {
            busy: self.pins.busy_blocks(),
        })?;
        self.debug_check();
        Ok(ext)
    }

    /// Sets the metadata reserve that [`Allocator::allocate_data`] leaves alone.
    pub fn set_reserve(&mut self, reserve: Reserve) {
        self.reserve = reserve;
    }

    /// The metadata reserve.
    pub fn reserve(&self) -> Reserve {
        self.reserve
    }

    /// Does free space still hold the reserve?
    pub fn reserve_holds(&self) -> bool {
        self.holds(self.reserve)
    }

    /// Could `r.blocks` blocks be allocated now in at most `r.extents` extents?
    pub fn holds(&self, r: Reserve) -> bool {
        r.blocks == 0 || self.free.largest_blocks(r.extents) >= r.blocks
    }

    /// Free blocks data allocations may have (those outside the reserve), as `statfs`
    /// reports them to users (`f_bavail`).
    pub fn available_blocks(&self) -> u64 {
        if self.reserve.blocks == 0 {
            return self.free.blocks();
        }
        let top = self.free.largest_blocks(self.reserve.extents);
        self.free.blocks() - top + top.saturating_sub(self.reserve.blocks)
    }

    /// [`Allocator::allocate`] for data: never takes the reserve. When the preferred extent
    /// would cut into it, takes from the smallest free extent (a fragment the reserve does
    /// not need) or what the reserve can spare; `NoSpace` when there is nothing of either.
    pub fn allocate_data(&mut self, want: u64, goal: Option<u64>) -> Result<Extent, AllocError> {
        let ext = self.allocate(want, goal)?;
        if self.reserve_holds() {
            return Ok(ext);
        }
        self.free.insert(ext);
        let no_space = AllocError::NoSpace {
            busy: self.pins.busy_blocks(),
        };
        // Taking from the smallest extent leaves the largest ones (and so the reserve)
        // alone whenever there are more extents than the reserve may use.
        if self.free.extent_count() > self.reserve.extents {
            let ext = self.free.take_smallest(want).ok_or(no_space)?;
            self.debug_check();
            return Ok(ext);
        }
        // Every free extent may be needed: only what exceeds the reserve can go.
        let spare = self
            .free
            .largest_blocks(self.reserve.extents)
            .saturating_sub(self.reserve.blocks);
        if spare == 0 {
            return Err(no_space);
        }
        let ext = self.allocate(want.min(spare), goal)?;
        debug_assert!(self.reserve_holds());
        Ok(ext)
    }

    /// Marks exactly `ext` used; every block must be free. Used when rebuilding state and for
    /// metadata placed at fixed addresses.
    pub fn claim(&mut self, ext: Extent) -> Result<(), AllocError> {
        self.validate(ext)?;
        if !self.free.take_exact(ext) {
            return Err(AllocError::NotFree {
                start: ext.start,
                len: ext.len,
            });
        }
        self.debug_check();
        Ok(())
    }

    /// Gives back used blocks. Unpinned blocks become free and are returned (the caller may
    /// need to scrub them); pinned blocks are detached and stay busy until their last unpin.
    pub fn free(&mut self, ext: Extent) -> Result<Vec<Extent>, AllocError> {
        self.ensure_used(ext)?;
        let freed = self.pins.detach(ext);
        for &part in &freed {
            self.free.insert(part);
        }
        self.debug_check();
        Ok(freed)
    }

    /// Gives back used blocks whose freeing is recorded by the record of sequence number
    /// `seq`, not yet durable: they stay out of the free space (pending, or busy where a pin
    /// keeps them) until [`Allocator::settle`] is told that record is durable.
    pub fn free_pending(&mut self, ext: Extent, seq: u64) -> Result<(), AllocError> {
        self.ensure_used(ext)?;
        self.pins.pin(ext);
        let freed = self.pins.detach(ext);
        debug_assert!(freed.is_empty(), "the pending pin covers the whole extent");
        self.pending.insert(ext.start, (ext, seq));
        self.debug_check();
        Ok(())
    }

    /// The records of sequence numbers below `durable` are durable: their pending frees
    /// drop their pin. Returns the blocks that became free (no other pin kept them), which
    /// the caller may need to scrub.
    pub fn settle(&mut self, durable: u64) -> Vec<Extent> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, &(_, seq))| seq < durable)
            .map(|(&start, _)| start)
            .collect();
        let mut freed = Vec::new();
        for start in due {
            let (ext, _) = self.pending.remove(&start).expect("listed above");
            debug_assert!(self.pins.fully_pinned(ext));
            for r in self.pins.unpin(ext) {
                self.free.insert(r);
                freed.push(r);
            }
        }
        self.debug_check();
        freed
    }

    /// Adds a pin to every block of `ext`, which must be used.
    pub fn pin(&mut self, ext: Extent) -> Result<(), AllocError> {
        self.ensure_used(ext)?;
        self.pins.pin(ext);
        self.debug_check();
        Ok(())
    }

    /// Drops a pin from every block of `ext`. Busy blocks whose last pin this was become
    /// free; they are returned.
    pub fn unpin(&mut self, ext: Extent) -> Result<Vec<Extent>, AllocError> {
        self.validate(ext)?;
        if !self.pins.fully_pinned(ext) {
            return Err(AllocError::NotPinned {
                start: ext.start,
                len: ext.len,
            });
        }
        let released = self.pins.unpin(ext);
        for &r in &released {
            self.free.insert(r);
        }
        self.debug_check();
        Ok(released)
    }

    /// Is any block of `ext` pinned (used or busy)?
    pub fn is_pinned(&self, ext: Extent) -> bool {
        self.pins.any_pinned(ext)
    }

    /// Is every block of `ext` free?
    pub fn is_free(&self, ext: Extent) -> bool {
        self.free.contains(ext)
    }

    /// Is any block of `ext` free?
    pub fn is_any_free(&self, ext: Extent) -> bool {
        self.free.overlaps(ext)
    }

    /// The busy extents, in block order, with the pins that keep them (a pending free's own
    /// pin not counted; pending blocks no other pin keeps are not listed).
    pub fn busy_extents(&self) -> Vec<BusyExtent> {
        let mut out = Vec::new();
        for (extent, seg) in self.pins.iter().filter(|(_, seg)| seg.detached) {
            let mut cursor = extent.start;
            let piece = |out: &mut Vec<BusyExtent>, start: u64, end: u64, pins: u32| {
                if end > start && pins > 0 {
                    out.push(BusyExtent {
                        extent: Extent {
                            start,
                            len: end - start,
                        },
                        pins,
                    });
                }
            };
            let first = match self.pending.range(..=extent.start).next_back() {
                Some((&s, &(p, _))) if p.end() > extent.start => s,
                _ => extent.start,
            };
            for (_, &(p, _)) in self.pending.range(first..extent.end()) {
                let (ps, pe) = (p.start.max(extent.start), p.end().min(extent.end()));
                piece(&mut out, cursor, ps, seg.count);
                piece(&mut out, ps, pe, seg.count - 1);
                cursor = pe;
            }
            piece(&mut out, cursor, extent.end(), seg.count);
        }
        out
    }

    /// The free extents, in block order.
    pub fn free_extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.free.iter()
    }

    /// Checks every invariant; the error says which one broke and where.
    pub fn check(&self) -> Result<(), String> {
        self.free.check(self.total)?;
        self.pins.check(self.total)?;
        for (ext, seg) in self.pins.iter() {
            if self.free.overlaps(ext) {
                return Err(format!(
                    "blocks {}+{} are both free and pinned ({} pins)",
                    ext.start, ext.len, seg.count
                ));
            }
        }
        if self.free.blocks() + self.pins.busy_blocks() > self.total {
            return Err("free + busy exceeds the address space".into());
        }
        let mut prev_end = 0;
        for (&start, &(ext, _)) in &self.pending {
            if start != ext.start || ext.start < prev_end {
                return Err(format!(
                    "pending extent {}+{} overlaps its predecessor",
                    ext.start, ext.len
                ));
            }
            if !self.pins.fully_pinned(ext) || self.pins.overlapping(ext).any(|(_, s)| !s.detached)
            {
                return Err(format!(
                    "pending extent {}+{} is not wholly busy",
                    ext.start, ext.len
                ));
            }
            prev_end = ext.end();
        }
        Ok(())
    }

    /// Serialises the free list: `total` then (start, len) pairs, little-endian u64s. Pins,
    /// pending and busy extents are not persisted (pending ones come back as used): they belong to live holders, which do not survive the
    /// daemon, so on restart every busy block is free.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 16 * self.free.extent_count());
        out.extend_from_slice(&self.total.to_le_bytes());
        out.extend_from_slice(&(self.free.extent_count() as u64).to_le_bytes());
        for e in self.free.iter() {
            out.extend_from_slice(&e.start.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
        }
        out
    }

    /// Rebuilds an allocator from [`Allocator::encode`] output; busy blocks of the encoding
    /// allocator come back as used (they were not in its free list), so callers that know
    /// better free them.
    pub fn decode(bytes: &[u8]) -> Result<Self, AllocError> {
        let word = |i: usize| -> Result<u64, AllocError> {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| AllocError::Corrupt(format!("truncated at word {i}")))
        };
        let total = word(0)?;
        let n = word(1)?;
        if n > (bytes.len() as u64) / 16 {
            return Err(AllocError::Corrupt(format!(
                "{n} extents cannot fit in {} bytes",
                bytes.len()
            )));
        }
        let mut a = Allocator::all_used(total);
        let mut prev_end = 0u64;
        for i in 0..n as usize {
            let ext = Extent {
                start: word(2 + 2 * i)?,
                len: word(3 + 2 * i)?,
            };
            a.validate(ext)
                .map_err(|e| AllocError::Corrupt(e.to_string()))?;
            if i > 0 && ext.start <= prev_end {
                return Err(AllocError::Corrupt(format!(
                    "extent {i} is out of order or touches its predecessor"
                )));
            }
            prev_end = ext.end();
            a.free.insert(ext);
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests;

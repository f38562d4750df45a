//! The metadata journal: a ring-less redo log of transactions between two checkpoints.
//!
//! Each transaction is one entry: a 24-byte header (magic, payload length, sequence number,
//! CRC-32C of sequence, length and payload) and the payload, padded to 8 bytes. Entries are
//! written one after the other from the start of the journal area; replay reads them from the
//! start while each has the magic, the next expected sequence number and a matching CRC, and
//! stops at the first that does not. A torn entry (daemon killed mid-append) therefore ends
//! replay cleanly, and entries left over from before the last checkpoint are ignored because
//! their sequence numbers are older than the superblock's `journal_seq`.
//!
//! A checkpoint empties the journal (the next entry goes to offset 0 with the next sequence
//! number). When the journal passes [`Journal::SOFT_LIMIT`] the filesystem checkpoints before its
//! next operation; the remaining quarter absorbs the operations already in flight.

use crate::format::codec::{crc32c, Reader, Writer};
use crate::store::image::{Image, Superblock, BLOCK_SIZE};

const MAGIC: u32 = 0x4e52_4a50; // "PJRN"
const HEADER: u64 = 24;

/// The journal's write position and sequence numbers.
#[derive(Debug)]
pub struct Journal {
    base: u64,
    cap: u64,
    tail: u64,
    next_seq: u64,
    synced: u64,
    /// Entries of sequence numbers below this are durable.
    durable_seq: u64,
}

/// The journal has no room for an entry.
#[derive(Debug)]
pub struct JournalFull;

impl Journal {
    /// Fraction of the journal after which a checkpoint is wanted.
    pub const SOFT_LIMIT: f64 = 0.75;

    /// Reads the entries written since the checkpoint `sb` names, and returns the journal
    /// positioned after the last valid one.
    pub fn replay(image: &Image, sb: &Superblock) -> (Journal, Vec<Vec<u8>>) {
        let base = sb.journal_start * BLOCK_SIZE;
        let cap = sb.journal_blocks * BLOCK_SIZE;
        let mut j = Journal {
            base,
            cap,
            tail: 0,
            next_seq: sb.journal_seq,
            synced: 0,
            durable_seq: sb.journal_seq,
        };
        let mut entries = Vec::new();
        while let Some(payload) = j.read_entry(image) {
            entries.push(payload);
        }
        j.synced = j.tail;
        j.durable_seq = j.next_seq;
        (j, entries)
    }

    fn read_entry(&mut self, image: &Image) -> Option<Vec<u8>> {
        if self.tail + HEADER > self.cap {
            return None;
        }
        let mut h = [0u8; HEADER as usize];
        image.read(self.base + self.tail, &mut h);
        let mut r = Reader::new(&h);
        let (magic, len, seq, crc) = (
            r.u32().ok()?,
            r.u32().ok()? as u64,
            r.u64().ok()?,
            r.u32().ok()?,
        );
        if magic != MAGIC || seq != self.next_seq || self.tail + HEADER + len > self.cap {
            return None;
        }
        let mut payload = vec![0u8; len as usize];
        image.read(self.base + self.tail + HEADER, &mut payload);
        if crc != Self::crc(seq, len as u32, &payload) {
            return None;
        }
        self.tail += Self::entry_len(len);
        self.next_seq += 1;
        Some(payload)
    }

    fn crc(seq: u64, len: u32, payload: &[u8]) -> u32 {
        let mut w = Writer::new();
        w.u64(seq).u32(len);
        w.buf.extend_from_slice(payload);
        crc32c(&w.buf)
    }

    fn entry_len(payload: u64) -> u64 {
        (HEADER + payload + 7) & !7
    }

    /// Appends one transaction.
    pub fn append(&mut self, image: &Image, payload: &[u8]) -> Result<(), JournalFull> {
        let len = Self::entry_len(payload.len() as u64);
        if self.tail + len > self.cap {
            return Err(JournalFull);
        }
        let mut w = Writer::new();
        w.u32(MAGIC).u32(payload.len() as u32).u64(self.next_seq);
        w.u32(Self::crc(self.next_seq, payload.len() as u32, payload))
            .u32(0);
        w.buf.extend_from_slice(payload);
        image.write(self.base + self.tail, &w.buf);
        self.tail += len;
        self.next_seq += 1;
        Ok(())
    }

    /// Is there room for a transaction of `payload` bytes?
    pub fn has_room(&self, payload: usize) -> bool {
        self.tail + Self::entry_len(payload as u64) <= self.cap
    }

    /// Has the journal passed its soft limit?
    pub fn wants_checkpoint(&self) -> bool {
        self.tail as f64 > self.cap as f64 * Self::SOFT_LIMIT
    }

    /// Are entries appended that are not durable yet?
    pub fn has_unsynced(&self) -> bool {
        self.tail > self.synced
    }

    /// Bytes used.
    pub fn used(&self) -> u64 {
        self.tail
    }

    /// Bytes the journal holds in all.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Sequence number the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Starts over after a checkpoint that recorded `next_seq()` as its `journal_seq`.
    pub fn reset(&mut self) {
        self.tail = 0;
        self.synced = 0;
        self.durable_seq = self.next_seq;
    }

    /// Makes every appended entry durable (`msync` of what was appended since the last call).
    /// Returns the sequence number below which every entry is durable now (blocks those
    /// entries free may be reused: `Fs::flush_journal`). On an error the entries stay
    /// unsynced, so the next call tries them again.
    pub fn flush(&mut self, image: &Image) -> std::io::Result<u64> {
        if self.tail > self.synced {
            if !debug_drop_flush("journal") {
                image.flush(self.base + self.synced, self.tail - self.synced)?;
            }
            self.synced = self.tail;
        }
        self.durable_seq = self.next_seq;
        Ok(self.durable_seq)
    }
}

/// Faults for the crash-state explorer's own tests ([`crate::fuzzer::crashes`]): with
/// `PINFS_DEBUG_DROP_FLUSH` naming `kind` in the environment (a comma-separated list), a
/// debug build skips that flush and goes on as if it had made its ranges durable:
/// `journal`, the journal's new entries; `ordered`, the data that new metadata exposes,
/// flushed before the journal (`Fs::flush_ordered`). Release builds ignore the variable.
pub(crate) fn debug_drop_flush(kind: &str) -> bool {
    if !cfg!(debug_assertions) {
        return false;
    }
    static DROP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    DROP.get_or_init(|| {
        std::env::var("PINFS_DEBUG_DROP_FLUSH")
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect()
    })
    .iter()
    .any(|k| k == kind)
}

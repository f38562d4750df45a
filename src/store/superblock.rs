//! The superblock: two copies at blocks 0 and 1 holding the geometry and where the current
//! checkpoint lives; how a copy is encoded, checked and told apart from a torn or damaged one.

use crate::format::codec::{crc32c, Reader, Writer};
use crate::store::image::{BLOCK_SIZE, FORMAT_VERSION, OLDEST_FORMAT_VERSION};

pub(crate) const MAGIC: &[u8; 8] = b"PINFSimg";
pub(crate) const SUPERBLOCK_BYTES: usize = 2048;
/// Bytes of an encoded superblock besides its checkpoint extents: magic 8, version and block
/// size 4 + 4, five u64 fields, the checkpoint CRC and extent count 4 + 4, `clean` 1, the
/// uuid 16 and the CRC 4.
pub(crate) const SUPERBLOCK_FIXED_BYTES: usize = 8 + 4 + 4 + 5 * 8 + 8 + 4 + 4 + 1 + 16 + 4;
/// Checkpoint extents the superblock can name: as many as fit its area (16 bytes each).
pub const MAX_CHECKPOINT_EXTENTS: usize = (SUPERBLOCK_BYTES - SUPERBLOCK_FIXED_BYTES) / 16;

/// The superblock: geometry and where the current checkpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Blocks in the image.
    pub total_blocks: u64,
    /// First journal block.
    pub journal_start: u64,
    /// Journal length in blocks.
    pub journal_blocks: u64,
    /// Incremented by every checkpoint; picks the current superblock copy.
    pub generation: u64,
    /// Sequence number of the first journal record written after this checkpoint.
    pub journal_seq: u64,
    /// Checkpoint length in bytes (0: none yet, the filesystem is empty).
    pub checkpoint_len: u64,
    /// CRC-32C of the checkpoint bytes.
    pub checkpoint_crc: u32,
    /// Where the checkpoint bytes are, in order.
    pub checkpoint_extents: Vec<(u64, u64)>,
    /// Set at clean unmount, cleared at mount.
    pub clean: bool,
    /// Identifies the filesystem.
    pub uuid: [u8; 16],
}

/// Why one superblock copy is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyProblem {
    /// Unreadable (short, or its checksum does not match): what a torn superblock store
    /// leaves behind after a crash, so not damage on its own.
    Torn(String),
    /// The checksum matches but the contents are impossible: pinfs never writes such a copy,
    /// so the image is damaged. `sb` is the decoded copy, where it could be decoded.
    Damaged {
        /// What is wrong.
        problem: String,
        /// The copy as decoded (geometry unchecked).
        sb: Option<Box<Superblock>>,
    },
}

/// Highest generation or journal sequence number a superblock may carry: both are counted up
/// without bounds checks while the filesystem runs.
pub(crate) const MAX_COUNTER: u64 = 1 << 62;

impl Superblock {
    /// First block the allocator manages.
    pub fn data_start(&self) -> u64 {
        self.journal_start.saturating_add(self.journal_blocks)
    }

    /// The superblock's on-image encoding, checksum included (what [`crate::store::image::Image::write_superblock`]
    /// stores at the start of its block).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.buf.extend_from_slice(MAGIC);
        w.u32(FORMAT_VERSION).u32(BLOCK_SIZE as u32);
        w.u64(self.total_blocks)
            .u64(self.journal_start)
            .u64(self.journal_blocks);
        w.u64(self.generation).u64(self.journal_seq);
        w.u64(self.checkpoint_len).u32(self.checkpoint_crc);
        w.u32(self.checkpoint_extents.len() as u32);
        for &(s, l) in &self.checkpoint_extents {
            w.u64(s).u64(l);
        }
        w.u8(self.clean as u8);
        w.buf.extend_from_slice(&self.uuid);
        let crc = crc32c(&w.buf);
        w.u32(crc);
        assert!(
            w.buf.len() <= SUPERBLOCK_BYTES,
            "superblock overflows its area"
        );
        w.buf
    }

    /// Decodes one superblock copy (the first 2048 bytes of its block) and checks
    /// its geometry. `Ok(None)`: no pinfs magic at all.
    pub fn decode(bytes: &[u8]) -> Result<Option<Superblock>, CopyProblem> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Ok(None);
        }
        let damaged = |problem: String| CopyProblem::Damaged { problem, sb: None };
        let torn = |e: crate::format::codec::DecodeError| CopyProblem::Torn(e.0);
        let mut r = Reader::new(&bytes[8..]);
        let version = r.u32().map_err(torn)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(damaged(format!(
                "format version {version} is not supported by this pinfs (it reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); use a matching pinfs build"
            )));
        }
        let bs = r.u32().map_err(torn)?;
        if bs as u64 != BLOCK_SIZE {
            return Err(damaged(format!(
                "block size {bs} is not supported (only {BLOCK_SIZE})"
            )));
        }
        let e = torn;
        let total_blocks = r.u64().map_err(e)?;
        let journal_start = r.u64().map_err(e)?;
        let journal_blocks = r.u64().map_err(e)?;
        let generation = r.u64().map_err(e)?;
        let journal_seq = r.u64().map_err(e)?;
        let checkpoint_len = r.u64().map_err(e)?;
        let checkpoint_crc = r.u32().map_err(e)?;
        let n = r.u32().map_err(e)? as usize;
        if n > MAX_CHECKPOINT_EXTENTS {
            // Where the checksum would be is unknown, so this may be a torn store as well.
            return Err(CopyProblem::Torn(format!(
                "superblock names {n} checkpoint extents (at most {MAX_CHECKPOINT_EXTENTS})"
            )));
        }
        let mut checkpoint_extents = Vec::with_capacity(n);
        for _ in 0..n {
            checkpoint_extents.push((r.u64().map_err(e)?, r.u64().map_err(e)?));
        }
        let clean = r.u8().map_err(e)? != 0;
        let mut uuid = [0u8; 16];
        for b in uuid.iter_mut() {
            *b = r.u8().map_err(e)?;
        }
        let body_len = bytes.len() - 8 - r.remaining() + 8;
        let crc = r.u32().map_err(e)?;
        if crc32c(&bytes[..body_len]) != crc {
            return Err(CopyProblem::Torn("superblock checksum mismatch".into()));
        }
        let sb = Superblock {
            total_blocks,
            journal_start,
            journal_blocks,
            generation,
            journal_seq,
            checkpoint_len,
            checkpoint_crc,
            checkpoint_extents,
            clean,
            uuid,
        };
        match sb.check_geometry() {
            Ok(()) => Ok(Some(sb)),
            Err(problem) => Err(CopyProblem::Damaged {
                problem,
                sb: Some(Box::new(sb)),
            }),
        }
    }

    /// Everything a superblock must satisfy on its own, in checked arithmetic: the layout of
    /// the module docs, counters with room to count, and a checkpoint inside the data area
    /// (none only before `mkfs` has written its first one).
    pub fn check_geometry(&self) -> Result<(), String> {
        let data_start = self.journal_start.checked_add(self.journal_blocks);
        if self.journal_start != 2
            || self.journal_blocks == 0
            || data_start.is_none_or(|d| d >= self.total_blocks)
            || self.total_blocks > (isize::MAX as u64) / BLOCK_SIZE
        {
            return Err(format!(
                "impossible geometry: {} blocks, journal {}+{}",
                self.total_blocks, self.journal_start, self.journal_blocks
            ));
        }
        let data_start = self.data_start();
        if self.generation == 0 || self.generation >= MAX_COUNTER {
            return Err(format!("impossible generation {}", self.generation));
        }
        if self.journal_seq == 0 || self.journal_seq >= MAX_COUNTER {
            return Err(format!(
                "impossible journal sequence number {}",
                self.journal_seq
            ));
        }
        let mut covered = 0u64;
        let mut extents = self.checkpoint_extents.clone();
        extents.sort_unstable();
        let mut prev_end = 0u64;
        for &(s, l) in &extents {
            if l == 0 || s < data_start || s.checked_add(l).is_none_or(|e| e > self.total_blocks) {
                return Err(format!(
                    "checkpoint extent {s}+{l} lies outside the data area"
                ));
            }
            if s < prev_end {
                return Err(format!("checkpoint extent {s}+{l} overlaps another"));
            }
            prev_end = s + l;
            covered += l;
        }
        if self.checkpoint_len > covered * BLOCK_SIZE {
            return Err("checkpoint is longer than its extents".into());
        }
        if self.checkpoint_len == 0 && (!extents.is_empty() || self.journal_seq != 1) {
            return Err(format!(
                "names no checkpoint, yet {} (only a new image has none)",
                if extents.is_empty() {
                    format!("its journal is at sequence {}", self.journal_seq)
                } else {
                    format!("{} checkpoint extents", extents.len())
                }
            ));
        }
        Ok(())
    }

    /// Do `self` and `other` describe the same filesystem layout?
    pub(crate) fn same_layout(&self, other: &Superblock) -> bool {
        (
            self.total_blocks,
            self.journal_start,
            self.journal_blocks,
            self.uuid,
        ) == (
            other.total_blocks,
            other.journal_start,
            other.journal_blocks,
            other.uuid,
        )
    }
}

/// Journal size for an image of `total_blocks`: 1/64 of it, between 1 MiB and 64 MiB. The
/// quarter left when a checkpoint is wanted must hold the transactions in flight, the largest
/// being a 64 KiB extended attribute.
pub fn journal_blocks_for(total_blocks: u64) -> u64 {
    (total_blocks / 64).clamp(256, 16384)
}

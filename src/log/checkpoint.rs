//! Checkpoints: the whole metadata (inodes and the allocator's free list) written as one blob
//! into freshly allocated blocks, then made current by a superblock update (shadow paging), and
//! the way back at mount: load the current checkpoint, then replay the journal after it.
//!
//! Blob layout: magic, `next_ino`, the inodes, the encoded free list, and the extents of the
//! *previous* checkpoint. The free list was taken after the blob's own blocks were allocated
//! and before the previous checkpoint's blocks were freed, so loading frees those.
//!
//! The stored free list is trusted only after a clean unmount. It records busy blocks (pinned
//! blocks that left their file and wait for their holder) as used; after an unclean shutdown
//! no holder survives, so [`load`] rebuilds the allocator from what owns blocks (the metadata
//! area, the current checkpoint, the files) before replaying the journal, as redb rebuilds its
//! allocator after an unclean close.

use std::collections::HashMap;

use pinfs_allocator::{Allocator, Extent, Reserve};

use crate::error::{lost_write_back, FsError, FsResult};
use crate::format::codec::{crc32c, Reader, Writer};
use crate::format::record::{apply, decode_transaction, Space};
use crate::log::journal::Journal;
use crate::meta::inode::{Inode, Kind, Time, ROOT_INO};
use crate::store::image::{Image, Superblock, BLOCK_SIZE};

/// The allocator as ownership says it must be: the metadata area, the current checkpoint's
/// extents and every file's mappings used, all else free.
pub fn allocator_from_owners<'a>(
    sb: &Superblock,
    inodes: impl Iterator<Item = &'a Inode>,
) -> Allocator {
    let metadata = std::iter::once(Extent {
        start: 0,
        len: sb.data_start(),
    })
    .chain(
        sb.checkpoint_extents
            .iter()
            .map(|&(start, len)| Extent { start, len }),
    );
    let files = inodes.flat_map(|i| {
        i.extents.iter().map(|m| Extent {
            start: m.image_block,
            len: m.len,
        })
    });
    Allocator::from_used(sb.total_blocks, metadata.chain(files).collect::<Vec<_>>())
}

const MAGIC: u32 = 0x504b_4350; // "PCKP"

/// Metadata as mount (or fsck) finds it.
pub struct Loaded {
    /// All inodes.
    pub inodes: HashMap<u64, Inode>,
    /// Allocator state.
    pub alloc: Allocator,
    /// Next inode number to hand out.
    pub next_ino: u64,
    /// The journal, positioned after its last valid entry.
    pub journal: Journal,
    /// Journal transactions replayed.
    pub replayed: usize,
}

/// The start of a checkpoint blob: magic, `next_ino` and every inode. The allocator's free
/// list and the previous checkpoint's extents follow ([`finish`]).
fn encode_inodes<'a>(next_ino: u64, inodes: impl ExactSizeIterator<Item = &'a Inode>) -> Writer {
    let mut w = Writer::new();
    w.u32(MAGIC).u64(next_ino).u64(inodes.len() as u64);
    for i in inodes {
        i.encode(&mut w);
    }
    w
}

/// Bytes [`finish`] adds for a free list of `alloc` bytes and `prev` extents.
fn tail_len(alloc: usize, prev: usize) -> u64 {
    (4 + alloc + 8 + 16 * prev) as u64
}

/// Completes a blob begun by [`encode_inodes`].
fn finish(mut w: Writer, alloc: &[u8], prev: &[(u64, u64)]) -> Vec<u8> {
    w.bytes(alloc);
    w.u64(prev.len() as u64);
    for &(s, l) in prev {
        w.u64(s).u64(l);
    }
    w.buf
}

fn read_blob(image: &Image, sb: &Superblock) -> FsResult<Vec<u8>> {
    let mut blob = Vec::with_capacity(sb.checkpoint_len as usize);
    for &(s, l) in &sb.checkpoint_extents {
        let want = (sb.checkpoint_len - blob.len() as u64).min(l * BLOCK_SIZE) as usize;
        let at = blob.len();
        blob.resize(at + want, 0);
        image.read(s * BLOCK_SIZE, &mut blob[at..]);
    }
    if blob.len() as u64 != sb.checkpoint_len || crc32c(&blob) != sb.checkpoint_crc {
        return Err(FsError::Corrupt("checkpoint checksum mismatch".into()));
    }
    Ok(blob)
}

/// The root directory of a freshly made filesystem.
pub fn new_root(now: Time) -> Inode {
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    Inode::new(ROOT_INO, Kind::Dir, 0o755, uid, gid, 0, ROOT_INO, now)
}

/// Loads the current checkpoint and replays the journal after it.
pub fn load(image: &Image, sb: &Superblock) -> FsResult<Loaded> {
    let (mut inodes, mut alloc, mut next_ino) = if sb.checkpoint_len == 0 {
        let mut alloc = Allocator::new(sb.total_blocks);
        alloc
            .claim(Extent {
                start: 0,
                len: sb.data_start(),
            })
            .map_err(|e| FsError::Corrupt(e.to_string()))?;
        let mut inodes = HashMap::new();
        inodes.insert(ROOT_INO, new_root(Time::now()));
        (inodes, alloc, ROOT_INO + 1)
    } else {
        let blob = read_blob(image, sb)?;
        let mut r = Reader::new(&blob);
        if r.u32()? != MAGIC {
            return Err(FsError::Corrupt(
                "checkpoint has no checkpoint magic".into(),
            ));
        }
        let next_ino = r.u64()?;
        let n = r.count(64)?;
        let mut inodes = HashMap::with_capacity(n);
        for _ in 0..n {
            let i = Inode::decode(&mut r)?;
            if inodes.insert(i.ino, i).is_some() {
                return Err(FsError::Corrupt("checkpoint holds an inode twice".into()));
            }
        }
        let alloc_bytes = r.bytes(usize::MAX)?;
        let mut alloc =
            Allocator::decode(&alloc_bytes).map_err(|e| FsError::Corrupt(e.to_string()))?;
        if alloc.total_blocks() != sb.total_blocks {
            return Err(FsError::Corrupt(
                "checkpoint allocator size differs from the image".into(),
            ));
        }
        let prev = r.count(16)?;
        for _ in 0..prev {
            let ext = Extent {
                start: r.u64()?,
                len: r.u64()?,
            };
            alloc
                .free(ext)
                .map_err(|e| FsError::Corrupt(format!("previous checkpoint extent: {e}")))?;
        }
        if !sb.clean {
            alloc = allocator_from_owners(sb, inodes.values());
        }
        (inodes, alloc, next_ino)
    };
    if !inodes.get(&ROOT_INO).is_some_and(|r| r.kind == Kind::Dir) {
        return Err(FsError::Corrupt("no root directory".into()));
    }
    let (journal, entries) = Journal::replay(image, sb);
    let replayed = entries.len();
    let mut space = Space {
        alloc: &mut alloc,
        image,
        replay: true,
        seq: 0,
    };
    for (n, payload) in entries.iter().enumerate() {
        let records = decode_transaction(payload)
            .map_err(|e| FsError::Corrupt(format!("journal transaction {n}: {}", e.0)))?;
        for rec in &records {
            rec.check_geometry(sb)
                .map_err(|e| FsError::Corrupt(format!("journal transaction {n}: {e}")))?;
            apply(rec, &mut inodes, &mut space).map_err(|e| {
                // The record's own complaint, not its Display (which adds fsck's advice,
                // and the error made here adds it once more).
                let why = match e {
                    FsError::Corrupt(why) => why,
                    e => e.to_string(),
                };
                FsError::Corrupt(format!("journal transaction {n}: {why}"))
            })?;
        }
    }
    if !inodes.get(&ROOT_INO).is_some_and(|r| r.kind == Kind::Dir) {
        return Err(FsError::Corrupt(
            "the journal removes the root directory".into(),
        ));
    }
    if let Some(&max) = inodes.keys().max() {
        if max >= crate::meta::inode::MAX_INO {
            return Err(FsError::Corrupt(format!(
                "inode number {max} is beyond the largest, {}",
                crate::meta::inode::MAX_INO - 1
            )));
        }
        next_ino = next_ino.max(max + 1);
    }
    if next_ino >= crate::meta::inode::MAX_INO {
        return Err(FsError::Corrupt(format!(
            "next inode number {next_ino} is beyond the largest"
        )));
    }
    Ok(Loaded {
        inodes,
        alloc,
        next_ino,
        journal,
        replayed,
    })
}

/// Writes a checkpoint of `inodes` and makes it current: allocates blocks for it, writes and
/// flushes it, writes the superblock, empties the journal and frees the previous checkpoint.
/// The caller excludes every metadata change for the duration.
pub fn write<'a>(
    image: &Image,
    sb: &mut Superblock,
    alloc: &mut Allocator,
    journal: &mut Journal,
    next_ino: u64,
    inodes: impl ExactSizeIterator<Item = &'a Inode>,
    clean: bool,
) -> FsResult<()> {
    let prev = sb.checkpoint_extents.clone();
    // The inodes are encoded once; only the (small) free list is encoded before and after
    // the blob's own blocks are allocated.
    let head = encode_inodes(next_ino, inodes);
    let estimate =
        head.buf.len() as u64 + tail_len(alloc.encode().len(), prev.len()) + 2 * BLOCK_SIZE;
    let mut want = estimate.div_ceil(BLOCK_SIZE);
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let give_back = |alloc: &mut Allocator, extents: &[(u64, u64)]| {
        for &(s, l) in extents {
            alloc.free(Extent { start: s, len: l }).ok();
        }
    };
    // No goal: the allocator then takes an extent that holds the rest whole (best fit) or
    // else the largest there is, the fewest extents for the blob; the metadata reserve
    // ([`reserve_for`]) keeps that within what the superblock can name.
    while want > 0 {
        match alloc.allocate(want, None) {
            Ok(e) if extents.len() < crate::store::image::MAX_CHECKPOINT_EXTENTS => {
                want -= e.len;
                extents.push((e.start, e.len));
            }
            other => {
                if let Ok(e) = other {
                    extents.push((e.start, e.len));
                }
                give_back(alloc, &extents);
                return Err(FsError::NoSpace);
            }
        }
    }
    // The blob goes in by `pwrite`, which a full host answers with ENOSPC; provisioning
    // first makes that a clean refusal with nothing changed (the blocks go back).
    for &(s, l) in &extents {
        if let Err(e) = image.provision_new(s * BLOCK_SIZE, l * BLOCK_SIZE) {
            give_back(alloc, &extents);
            return Err(FsError::Host {
                what: "allocating the checkpoint's blocks on the host",
                source: e,
            });
        }
    }
    // The free list never grows from allocations (they take from extents' starts), so the
    // final blob fits the estimate.
    let blob = finish(head, &alloc.encode(), &prev);
    let mut off = 0usize;
    for &(s, l) in &extents {
        let n = (blob.len() - off).min((l * BLOCK_SIZE) as usize);
        // Through the file, not the mapping: a DAX window may still cover these blocks.
        if let Err(e) = image.write_file(s * BLOCK_SIZE, &blob[off..off + n]) {
            // The superblock still names the previous checkpoint: nothing points at the blob
            // yet, so its blocks go back (the caller decides whether the host failure shuts
            // the filesystem down).
            give_back(alloc, &extents);
            return Err(FsError::Host {
                what: "writing the checkpoint",
                source: lost_write_back(e),
            });
        }
        off += n;
    }
    assert_eq!(off, blob.len(), "checkpoint outgrew its estimate");
    sb.generation += 1;
    sb.journal_seq = journal.next_seq();
    sb.checkpoint_len = blob.len() as u64;
    sb.checkpoint_crc = crc32c(&blob);
    sb.checkpoint_extents = extents;
    sb.clean = clean;
    image.write_superblock(sb).map_err(|e| FsError::Host {
        what: "writing the superblock",
        source: lost_write_back(e),
    })?;
    journal.reset();
    for (s, l) in prev {
        for f in alloc
            .free(Extent { start: s, len: l })
            .map_err(|e| FsError::Corrupt(e.to_string()))?
        {
            image.discard(f.start * BLOCK_SIZE, f.len * BLOCK_SIZE);
        }
    }
    alloc.set_reserve(reserve_for(sb));
    Ok(())
}

/// What an operation that grows the metadata needs free, with `journal_used` bytes in the
/// journal: room for the next checkpoint by [`reserve_for`]'s bound (twice what the journal
/// holds, the operation's record included), and as much again so that the checkpoint after
/// it still fits once this one is written into the largest free extents (its predecessor's
/// blocks come back only afterwards).
pub fn growth_needs(sb: &Superblock, journal_used: u64) -> Reserve {
    let bytes = sb
        .checkpoint_len
        .saturating_add(
            journal_used
                .saturating_add(GROWTH_RECORD_BYTES)
                .saturating_mul(4),
        )
        .saturating_add(16 * crate::store::image::MAX_CHECKPOINT_EXTENTS as u64 + 2 * BLOCK_SIZE);
    Reserve {
        blocks: bytes.div_ceil(BLOCK_SIZE).saturating_add(1),
        extents: crate::store::image::MAX_CHECKPOINT_EXTENTS,
    }
}

/// The largest record an operation that grows the metadata journals: an extended attribute
/// of 64 KiB with its name.
const GROWTH_RECORD_BYTES: u64 = 64 * 1024 + 1024;

/// The metadata reserve after the checkpoint `sb` names: room for the next checkpoint in
/// extents the superblock can name, so that with every other block taken by data a
/// checkpoint can still be written (and so deletes, truncates and unmount still work).
///
/// The next checkpoint is at most the current one plus what the journal records until then.
/// The journal holds at most its capacity of records since the checkpoint `sb` names (they
/// are replayed after a crash and appended to after that); a record grows a blob by at most
/// about its own size (an inode or a mapping appears in both, a freed range adds one free
/// extent), so twice the journal bounds it. Then the previous-extent list of the blob, the
/// two blocks of slack [`write()`] allocates, and one block for rounding.
pub fn reserve_for(sb: &Superblock) -> Reserve {
    let bytes = sb
        .checkpoint_len
        .saturating_add(sb.journal_blocks.saturating_mul(2 * BLOCK_SIZE))
        .saturating_add(16 * crate::store::image::MAX_CHECKPOINT_EXTENTS as u64 + 2 * BLOCK_SIZE);
    Reserve {
        blocks: bytes.div_ceil(BLOCK_SIZE).saturating_add(1),
        extents: crate::store::image::MAX_CHECKPOINT_EXTENTS,
    }
}

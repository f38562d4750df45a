//! Crafted images: a valid image with one metadata field rewritten to a hostile value and
//! every checksum recomputed, so the change reaches the decoders and checks behind the CRCs.
//! Shared by the `image` fuzz target ([`crate::fuzzer::targets::image`]) and
//! tests/core/crafted_images.rs.
//!
//! The field map is built by walking the on-image layouts (superblock copies, the current
//! checkpoint blob, the journal entries after it) independently of the decoders under test,
//! so a decoder bug cannot hide a field. What [`exercise`] demands of any image: fsck and mount
//! never panic; they agree (mount refuses exactly the images fsck finds errors in, but for a
//! stale free list, which mount rebuilds); a mounted
//! image is usable all the way (every directory listed, every file's data read, xattrs and
//! symlinks read, a write to each file, a clean unmount) and fsck is clean afterwards.

use std::path::Path;
use std::time::Duration;

use crate::format::codec::crc32c;
use crate::fs::{Caller, Fs, FsOptions};
use crate::meta::inode::{Kind, ROOT_INO};
use crate::store::image::{BLOCK_SIZE, MAX_CHECKPOINT_EXTENTS};

const SB_MAGIC: &[u8; 8] = b"PINFSimg";
const JOURNAL_MAGIC: u32 = 0x4e52_4a50;
const JOURNAL_HEADER: usize = 24;

/// What a field holds, for choosing hostile values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An image block number or a block count.
    Block,
    /// A file block number.
    FileBlock,
    /// An inode number.
    Ino,
    /// A count or a length prefix (the layout after it shifts).
    Count,
    /// A byte size.
    Size,
    /// Anything else (modes, ids, times, kinds, flags, counters).
    Plain,
}

/// One metadata field: where it is in the image, how wide, what it means.
#[derive(Debug, Clone)]
pub struct Field {
    /// Byte offsets in the image of its bytes, least significant first (a field of the
    /// checkpoint may straddle two of its extents).
    pub bytes: Vec<usize>,
    /// What it is, for messages.
    pub name: String,
    /// What it holds.
    pub role: Role,
}

impl Field {
    /// Its current value.
    pub fn get(&self, img: &[u8]) -> u64 {
        self.bytes
            .iter()
            .rev()
            .fold(0u64, |v, &o| (v << 8) | img[o] as u64)
    }
    /// Stores `v` (truncated to the field's width).
    pub fn set(&self, img: &mut [u8], v: u64) {
        for (i, &o) in self.bytes.iter().enumerate() {
            img[o] = (v >> (8 * i)) as u8;
        }
    }
    fn max(&self) -> u64 {
        if self.bytes.len() >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.bytes.len())) - 1
        }
    }
}

fn le(img: &[u8], off: usize, width: usize) -> Option<u64> {
    let b = img.get(off..off.checked_add(width)?)?;
    Some(b.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
}

/// A superblock copy as the mutator reads it (no checks beyond what it needs to walk).
#[derive(Debug, Clone)]
struct Copy {
    generation: u64,
    journal_start: u64,
    journal_blocks: u64,
    journal_seq: u64,
    checkpoint_len: u64,
    extents: Vec<(u64, u64)>,
    /// Offset (from `at`) of the checksum.
    crc_at: usize,
}

fn read_copy(img: &[u8], at: usize) -> Option<Copy> {
    if img.get(at..at + 8)? != SB_MAGIC {
        return None;
    }
    let n = le(img, at + 68, 4)? as usize;
    if n > MAX_CHECKPOINT_EXTENTS {
        return None;
    }
    let extents = (0..n)
        .map(|i| Some((le(img, at + 72 + 16 * i, 8)?, le(img, at + 80 + 16 * i, 8)?)))
        .collect::<Option<Vec<_>>>()?;
    Some(Copy {
        generation: le(img, at + 40, 8)?,
        journal_start: le(img, at + 24, 8)?,
        journal_blocks: le(img, at + 32, 8)?,
        journal_seq: le(img, at + 48, 8)?,
        checkpoint_len: le(img, at + 56, 8)?,
        extents,
        crc_at: 72 + 16 * n + 1 + 16,
    })
}

/// Image offsets of the checkpoint bytes a copy names, in order; `None` where they are not
/// all inside the image.
fn blob_offsets(img: &[u8], c: &Copy) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let want = usize::try_from(c.checkpoint_len).ok()?;
    if want > img.len() {
        return None;
    }
    for &(s, l) in &c.extents {
        let start = s.checked_mul(BLOCK_SIZE)?;
        let len = l.checked_mul(BLOCK_SIZE)?;
        let take = (want - out.len()).min(usize::try_from(len).ok()?);
        let start = usize::try_from(start).ok()?;
        if start.checked_add(take)? > img.len() {
            return None;
        }
        out.extend(start..start + take);
        if out.len() == want {
            break;
        }
    }
    (out.len() == want).then_some(out)
}

fn current(img: &[u8]) -> Option<Copy> {
    [0, BLOCK_SIZE as usize]
        .into_iter()
        .filter_map(|at| read_copy(img, at))
        .max_by_key(|c| c.generation)
}

/// Recomputes every checksum: each journal entry's, then for each superblock copy the
/// checkpoint checksum over the bytes it names and the copy's own. Bytes that cannot be
/// walked are left alone.
pub fn fix_checksums(img: &mut [u8]) {
    if let Some(c) = current(img) {
        let mut off = (c.journal_start.min(1 << 20) * BLOCK_SIZE) as usize;
        let end = off.saturating_add((c.journal_blocks.min(1 << 20) * BLOCK_SIZE) as usize);
        let end = end.min(img.len());
        while off + JOURNAL_HEADER <= end && le(img, off, 4) == Some(JOURNAL_MAGIC as u64) {
            let len = le(img, off + 4, 4).unwrap_or(0) as usize;
            if off + JOURNAL_HEADER + len > end {
                break;
            }
            let mut covered = img[off + 8..off + 16].to_vec(); // sequence number
            covered.extend_from_slice(&img[off + 4..off + 8]); // length
            covered.extend_from_slice(&img[off + JOURNAL_HEADER..off + JOURNAL_HEADER + len]);
            let crc = crc32c(&covered);
            img[off + 16..off + 20].copy_from_slice(&crc.to_le_bytes());
            off += (JOURNAL_HEADER + len + 7) & !7;
        }
    }
    for at in [0, BLOCK_SIZE as usize] {
        let Some(c) = read_copy(img, at) else {
            continue;
        };
        if let Some(offs) = blob_offsets(img, &c) {
            let blob: Vec<u8> = offs.iter().map(|&o| img[o]).collect();
            img[at + 64..at + 68].copy_from_slice(&crc32c(&blob).to_le_bytes());
        }
        let crc = crc32c(&img[at..at + c.crc_at]);
        img[at + c.crc_at..at + c.crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Where the bytes a [`Walk`] reads are in the image.
enum Place<'a> {
    /// `len` bytes from `start`.
    Run { start: usize, len: usize },
    /// Scattered (a checkpoint spread over extents): the offset of each byte.
    Scattered(&'a [usize]),
}

impl Place<'_> {
    fn len(&self) -> usize {
        match self {
            Place::Run { len, .. } => *len,
            Place::Scattered(o) => o.len(),
        }
    }
    fn offsets(&self, from: usize, n: usize) -> Option<Vec<usize>> {
        if from.checked_add(n)? > self.len() {
            return None;
        }
        Some(match self {
            Place::Run { start, .. } => (start + from..start + from + n).collect(),
            Place::Scattered(o) => o[from..from + n].to_vec(),
        })
    }
}

/// Walks a byte sequence of the image, recording fields.
struct Walk<'a> {
    img: &'a [u8],
    offs: Place<'a>,
    pos: usize,
    fields: Vec<Field>,
    prefix: String,
}

impl Walk<'_> {
    fn field(&mut self, width: usize, name: &str, role: Role) -> Option<u64> {
        let bytes = self.offs.offsets(self.pos, width)?;
        self.pos += width;
        let f = Field {
            bytes,
            name: format!("{}{name}", self.prefix),
            role,
        };
        let v = f.get(self.img);
        self.fields.push(f);
        Some(v)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        (self.pos.checked_add(n)? <= self.offs.len()).then(|| self.pos += n)
    }
    /// A length-prefixed byte string.
    fn bytes(&mut self, name: &str) -> Option<()> {
        let n = self.field(4, &format!("{name}.len"), Role::Count)? as usize;
        self.skip(n)
    }
    fn time(&mut self, name: &str) -> Option<()> {
        self.field(8, &format!("{name}.secs"), Role::Plain)?;
        self.field(4, &format!("{name}.nsecs"), Role::Plain)?;
        Some(())
    }
    fn inode(&mut self) -> Option<()> {
        let ino = self.field(8, "ino", Role::Ino)?;
        self.prefix = format!("checkpoint inode {ino}: ");
        self.field(1, "kind", Role::Plain)?;
        for f in ["perm", "uid", "gid", "nlink"] {
            self.field(4, f, Role::Plain)?;
        }
        self.field(8, "size", Role::Size)?;
        for t in ["atime", "mtime", "ctime", "crtime"] {
            self.time(t)?;
        }
        self.field(4, "rdev", Role::Plain)?;
        self.field(8, "parent", Role::Ino)?;
        let n = self.field(8, "extent count", Role::Count)?;
        for i in 0..n.min(10_000) {
            self.field(8, &format!("extent {i} file block"), Role::FileBlock)?;
            self.field(8, &format!("extent {i} image block"), Role::Block)?;
            self.field(8, &format!("extent {i} length"), Role::Block)?;
        }
        let n = self.field(8, "entry count", Role::Count)?;
        for i in 0..n.min(10_000) {
            self.bytes(&format!("entry {i} name"))?;
            self.field(8, &format!("entry {i} ino"), Role::Ino)?;
            self.field(1, &format!("entry {i} kind"), Role::Plain)?;
        }
        self.bytes("symlink target")?;
        let n = self.field(8, "xattr count", Role::Count)?;
        for i in 0..n.min(10_000) {
            self.bytes(&format!("xattr {i} name"))?;
            self.bytes(&format!("xattr {i} value"))?;
        }
        self.field(4, "flags", Role::Plain)?;
        Some(())
    }
    fn checkpoint(&mut self) -> Option<()> {
        self.prefix = "checkpoint: ".into();
        self.field(4, "magic", Role::Plain)?;
        self.field(8, "next_ino", Role::Ino)?;
        let n = self.field(8, "inode count", Role::Count)?;
        for _ in 0..n.min(100_000) {
            self.inode()?;
        }
        self.prefix = "checkpoint free list: ".into();
        self.field(4, "length", Role::Count)?;
        self.field(8, "total blocks", Role::Block)?;
        let n = self.field(8, "extent count", Role::Count)?;
        for i in 0..n.min(100_000) {
            self.field(8, &format!("extent {i} start"), Role::Block)?;
            self.field(8, &format!("extent {i} length"), Role::Block)?;
        }
        self.prefix = "checkpoint previous extents: ".into();
        let n = self.field(8, "count", Role::Count)?;
        for i in 0..n.min(10_000) {
            self.field(8, &format!("{i} start"), Role::Block)?;
            self.field(8, &format!("{i} length"), Role::Block)?;
        }
        Some(())
    }
    fn record(&mut self) -> Option<()> {
        let tag = self.field(1, "type", Role::Plain)?;
        match tag {
            1 => {
                self.field(8, "create parent", Role::Ino)?;
                self.bytes("create name")?;
                self.field(8, "create ino", Role::Ino)?;
                self.field(1, "create kind", Role::Plain)?;
                for f in ["perm", "uid", "gid", "rdev"] {
                    self.field(4, &format!("create {f}"), Role::Plain)?;
                }
                self.bytes("create target")?;
                self.time("create time")
            }
            2 => {
                self.field(8, "link parent", Role::Ino)?;
                self.bytes("link name")?;
                self.field(8, "link ino", Role::Ino)?;
                self.time("link time")
            }
            3 => {
                self.field(8, "unlink parent", Role::Ino)?;
                self.bytes("unlink name")?;
                self.time("unlink time")
            }
            4 => {
                self.field(8, "rename from parent", Role::Ino)?;
                self.bytes("rename from name")?;
                self.field(8, "rename to parent", Role::Ino)?;
                self.bytes("rename to name")?;
                self.field(1, "rename exchange", Role::Plain)?;
                self.time("rename time")
            }
            5 => {
                self.field(8, "setattr ino", Role::Ino)?;
                for f in ["perm", "uid", "gid"] {
                    self.field(4, &format!("setattr {f}"), Role::Plain)?;
                }
                for t in ["atime", "mtime", "ctime"] {
                    self.time(&format!("setattr {t}"))?;
                }
                Some(())
            }
            6 => {
                self.field(8, "setsize ino", Role::Ino)?;
                self.field(8, "setsize size", Role::Size).map(drop)
            }
            7 => {
                self.field(8, "map ino", Role::Ino)?;
                self.field(8, "map file block", Role::FileBlock)?;
                self.field(8, "map image block", Role::Block)?;
                self.field(8, "map length", Role::Block).map(drop)
            }
            8 => {
                self.field(8, "unmap ino", Role::Ino)?;
                self.field(8, "unmap file block", Role::FileBlock)?;
                self.field(8, "unmap length", Role::Block).map(drop)
            }
            9 => {
                self.field(8, "setxattr ino", Role::Ino)?;
                self.bytes("setxattr name")?;
                self.bytes("setxattr value")?;
                self.time("setxattr time")
            }
            10 => {
                self.field(8, "removexattr ino", Role::Ino)?;
                self.bytes("removexattr name")?;
                self.time("removexattr time")
            }
            11 => self.field(8, "free ino", Role::Ino).map(drop),
            12 => {
                self.field(8, "setflags ino", Role::Ino)?;
                self.field(4, "setflags flags", Role::Plain)?;
                self.time("setflags time")
            }
            13 => {
                self.field(8, "tmpfile parent", Role::Ino)?;
                self.field(8, "tmpfile ino", Role::Ino)?;
                for f in ["perm", "uid", "gid"] {
                    self.field(4, &format!("tmpfile {f}"), Role::Plain)?;
                }
                self.time("tmpfile time")
            }
            _ => None,
        }
    }
}

/// Every metadata field of `img`: both superblock copies, the current checkpoint, and the
/// journal entries after it.
pub fn fields(img: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    for (name, at) in [("A", 0usize), ("B", BLOCK_SIZE as usize)] {
        let Some(c) = read_copy(img, at) else {
            continue;
        };
        let mut w = Walk {
            img,
            offs: Place::Run {
                start: at,
                len: c.crc_at,
            },
            pos: 8,
            fields: Vec::new(),
            prefix: format!("superblock {name}: "),
        };
        w.field(4, "version", Role::Plain);
        w.field(4, "block size", Role::Plain);
        w.field(8, "total blocks", Role::Block);
        w.field(8, "journal start", Role::Block);
        w.field(8, "journal blocks", Role::Block);
        w.field(8, "generation", Role::Plain);
        w.field(8, "journal seq", Role::Plain);
        w.field(8, "checkpoint len", Role::Size);
        w.pos += 4; // the checkpoint checksum: recomputed
        w.field(4, "checkpoint extent count", Role::Count);
        for i in 0..c.extents.len() {
            w.field(8, &format!("checkpoint extent {i} start"), Role::Block);
            w.field(8, &format!("checkpoint extent {i} length"), Role::Block);
        }
        w.field(1, "clean", Role::Plain);
        out.extend(w.fields);
    }
    let Some(c) = current(img) else {
        return out;
    };
    if let Some(offs) = blob_offsets(img, &c) {
        let mut w = Walk {
            img,
            offs: Place::Scattered(&offs),
            pos: 0,
            fields: Vec::new(),
            prefix: String::new(),
        };
        w.checkpoint();
        out.extend(w.fields);
    }
    // The journal entries replay would read.
    let base = (c.journal_start.min(1 << 20) * BLOCK_SIZE) as usize;
    let end = base
        .saturating_add((c.journal_blocks.min(1 << 20) * BLOCK_SIZE) as usize)
        .min(img.len());
    let (mut off, mut seq, mut n) = (base, c.journal_seq, 0);
    while off + JOURNAL_HEADER <= end
        && le(img, off, 4) == Some(JOURNAL_MAGIC as u64)
        && le(img, off + 8, 8) == Some(seq)
    {
        let len = le(img, off + 4, 4).unwrap_or(0) as usize;
        if off + JOURNAL_HEADER + len > end {
            break;
        }
        let mut w = Walk {
            img,
            offs: Place::Run {
                start: off,
                len: JOURNAL_HEADER + len,
            },
            pos: 4,
            fields: Vec::new(),
            prefix: format!("journal entry {n}: "),
        };
        w.field(4, "length", Role::Count);
        w.field(8, "sequence", Role::Plain);
        w.pos = JOURNAL_HEADER;
        if let Some(count) = w.field(4, "record count", Role::Count) {
            for _ in 0..count.min(1000) {
                if w.record().is_none() {
                    break;
                }
            }
        }
        out.extend(w.fields);
        off += (JOURNAL_HEADER + len + 7) & !7;
        seq += 1;
        n += 1;
    }
    out
}

/// Hostile values for `f` in `img`: the edges of its width, one off its value, and, by what
/// it holds, the edges of the image and the data area, block 0, a block or inode another
/// field names.
pub fn hostile_values(img: &[u8], all: &[Field], f: &Field) -> Vec<u64> {
    let v = f.get(img);
    let mut out = vec![
        0,
        1,
        v.wrapping_sub(1),
        v.wrapping_add(1),
        f.max(),
        f.max() - 1,
        f.max() / 2 + 1,
    ];
    let c = current(img);
    let total = (img.len() as u64) / BLOCK_SIZE;
    let data_start = c
        .as_ref()
        .map_or(258, |c| c.journal_start.wrapping_add(c.journal_blocks));
    let same = |r: Role| all.iter().filter(move |g| g.role == r).map(|g| g.get(img));
    match f.role {
        Role::Block => {
            out.extend([
                total,
                total - 1,
                total + 1,
                data_start,
                data_start.wrapping_sub(1),
                2,
            ]);
            out.extend(same(Role::Block).filter(|&b| b > 2).take(40));
        }
        Role::FileBlock => {
            out.extend([1 << 51, (1 << 51) - 1, i64::MAX as u64 / BLOCK_SIZE]);
            out.extend(same(Role::FileBlock).take(20));
        }
        Role::Ino => {
            out.extend([ROOT_INO, 1 << 62, (1 << 62) - 1]);
            out.extend(same(Role::Ino).take(40));
        }
        Role::Count => out.extend([v.wrapping_mul(2), 1 << 32, v / 2]),
        Role::Size => out.extend([
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            total * BLOCK_SIZE,
            v.wrapping_add(BLOCK_SIZE),
        ]),
        Role::Plain => out.extend(0..8u64),
    }
    out.retain(|&x| x <= f.max() && x != v);
    out.sort_unstable();
    out.dedup();
    out
}

/// Rewrites one field of `img` chosen by `seed` to a hostile value and recomputes every
/// checksum; returns what was changed (`None`: no field takes a different value).
pub fn mutate(img: &mut [u8], seed: u64) -> Option<String> {
    let all = fields(img);
    if all.is_empty() {
        return None;
    }
    let mut rng = crate::fuzzer::Rng::new(seed);
    let f = &all[rng.below(all.len() as u64) as usize];
    let values = hostile_values(img, &all, f);
    if values.is_empty() {
        return None;
    }
    let old = f.get(img);
    let new = values[rng.below(values.len() as u64) as usize];
    f.set(img, new);
    fix_checksums(img);
    Some(format!("{}: {old} -> {new}", f.name))
}

/// Writes `img` to a new file at `path`, sparse: blocks of zeros become holes (as in a
/// real image, whose free blocks are punched out), which keeps the many scratch images of a
/// run cheap.
pub fn write_image(path: &Path, img: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(img.len() as u64)?;
    let zeros = [0u8; BLOCK_SIZE as usize];
    for (n, block) in img.chunks(BLOCK_SIZE as usize).enumerate() {
        if block != &zeros[..block.len()] {
            f.write_all_at(block, n as u64 * BLOCK_SIZE)?;
        }
    }
    Ok(())
}

/// How an image fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// fsck found nothing wrong that mount does not fix itself; mount worked all the way.
    Clean,
    /// fsck reported errors (or could not check); mount refused it, with this message.
    Refused(String),
}

/// The largest span [`exercise`] reads of one data region, and the most regions per file:
/// a valid image may have files of any size, sparse.
const READ_SPAN: u64 = 1 << 20;
const MAX_REGIONS: usize = 64;

/// Runs fsck on the image at `path`, then mounts it through the core and uses all of it (see
/// the module docs). `Err` says what broke a rule; a panic propagates.
pub fn exercise(path: &Path) -> Result<Verdict, String> {
    let fsck = crate::fsck::check(path, false);
    // What mount must refuse: every error fsck reports but those mount fixes itself.
    let fsck_errors = match &fsck {
        Ok(r) if r.refused_by_mount().is_empty() => None,
        Ok(r) => Some(r.errors.join("; ")),
        Err(e) => Some(e.to_string()),
    };
    let opened = Fs::open(
        path,
        FsOptions {
            lock_wait: Duration::ZERO,
            ..Default::default()
        },
    );
    let fs = match (opened, fsck_errors) {
        (Err(e), Some(_)) => return Ok(Verdict::Refused(e.to_string())),
        (Ok(_), Some(errors)) => {
            return Err(format!(
                "fsck finds errors ({errors}), yet mount accepts the image"
            ))
        }
        (Err(e), None) => return Err(format!("fsck finds the image clean, yet mount fails: {e}")),
        (Ok(fs), None) => fs,
    };
    let fail = |what: String| Err(format!("on the mounted image: {what}"));
    let mut dirs = vec![ROOT_INO];
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = dirs.pop() {
        if !seen.insert(d) {
            continue;
        }
        let mut offset = 0;
        loop {
            let batch = match fs.readdir(d, offset, 64) {
                Ok(b) => b,
                Err(e) => return fail(format!("readdir of {d}: {e}")),
            };
            let Some(last) = batch.last() else { break };
            offset = last.next;
            for e in batch {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let a = match fs.getattr(e.ino) {
                    Ok(a) => a,
                    Err(err) => {
                        return fail(format!("getattr of entry {:?} in {d}: {err}", e.name))
                    }
                };
                if a.kind != e.kind {
                    return fail(format!(
                        "entry {:?} in {d} says {:?}, inode is {:?}",
                        e.name, e.kind, a.kind
                    ));
                }
                match a.kind {
                    Kind::Dir => dirs.push(a.ino),
                    Kind::File => files.push((a.ino, a.size)),
                    Kind::Symlink => {
                        if let Err(err) = fs.readlink(a.ino) {
                            return fail(format!("readlink of {}: {err}", a.ino));
                        }
                    }
                    _ => {}
                }
                let names = match fs.listxattr(a.ino) {
                    Ok(n) => n,
                    Err(err) => return fail(format!("listxattr of {}: {err}", a.ino)),
                };
                for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    if let Err(err) = fs.getxattr(a.ino, name) {
                        return fail(format!("getxattr {:?} of {}: {err}", name, a.ino));
                    }
                }
            }
        }
    }
    for &(ino, size) in &files {
        let mut off = 0u64;
        for _ in 0..MAX_REGIONS {
            if off >= size {
                break;
            }
            let Ok(data) = fs.seek(ino, off, libc::SEEK_DATA) else {
                break; // no data past `off`
            };
            let hole = fs.seek(ino, data, libc::SEEK_HOLE).unwrap_or(size);
            let mut at = data;
            let stop = hole.min(size).min(data.saturating_add(READ_SPAN));
            while at < stop {
                let n = (stop - at).min(128 << 10) as u32;
                match fs.read(ino, at, n) {
                    Ok(b) if !b.is_empty() => at += b.len() as u64,
                    Ok(_) => break,
                    Err(e) => return fail(format!("read of {ino} at {at}: {e}")),
                }
            }
            off = hole.max(data + 1);
        }
        if let Err(e) = fs.read(ino, 0, 4096) {
            return fail(format!("read of {ino} at 0: {e}"));
        }
    }
    for &(ino, _) in &files {
        match fs.write(ino, 0, b"crafted", Caller::ROOT) {
            // ENOSPC for a full image, EPERM for a file flagged immutable or append-only.
            Ok(_) | Err(crate::error::FsError::NoSpace | crate::error::FsError::Flagged(_)) => {}
            Err(e) => return fail(format!("write to {ino}: {e}")),
        }
    }
    if let Err(e) = fs.unmount() {
        return fail(format!("unmount: {e}"));
    }
    drop(fs);
    match crate::fsck::check(path, false) {
        Ok(r) if r.exit_code() == 0 => Ok(Verdict::Clean),
        Ok(r) => Err(format!(
            "after using and unmounting it, fsck finds: {}",
            r.errors.join("; ")
        )),
        Err(e) => Err(format!("after using and unmounting it, fsck fails: {e}")),
    }
}

/// The valid images the mutator starts from, kept in memory: `[clean, crashed]`. Both hold
/// directories (nested), regular files with data and holes, a hard link, a symlink, a FIFO
/// and xattrs; the first was unmounted cleanly, the second was then mounted again, changed
/// (create, write, chmod, xattr, rename, truncate, unlink, hole punch) and dropped without an
/// unmount, so its journal holds those changes after an unclean superblock.
pub fn base_images() -> &'static [Vec<u8>; 2] {
    static BASE: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-crafted")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("base.img");
        Fs::mkfs(&path, 4 << 20, true).expect("mkfs");
        let opts = || FsOptions {
            lock_wait: Duration::from_secs(5),
            ..Default::default()
        };
        let fs = Fs::open(&path, opts()).expect("open");
        let r = Caller::ROOT;
        let reg = libc::S_IFREG | 0o644;
        let d = fs
            .create(ROOT_INO, b"d", libc::S_IFDIR | 0o755, 0, None, r)
            .expect("mkdir");
        let e = fs
            .create(d.ino, b"e", libc::S_IFDIR | 0o700, 0, None, r)
            .expect("mkdir");
        let mut files = Vec::new();
        for i in 0..4u64 {
            let f = fs
                .create(d.ino, format!("f{i}").as_bytes(), reg, 0, None, r)
                .expect("create");
            fs.write(f.ino, i * 5000, &[0x41 + i as u8; 9000], r)
                .expect("write");
            files.push(f.ino);
        }
        let big = fs.create(e.ino, b"big", reg, 0, None, r).expect("create");
        fs.write(big.ino, 0, &[0x5a; 40_000], r).expect("write");
        fs.write(big.ino, 200_000, &[0x5b; 10_000], r)
            .expect("write");
        fs.link(files[0], ROOT_INO, b"hard").expect("link");
        fs.create(
            ROOT_INO,
            b"link",
            libc::S_IFLNK | 0o777,
            0,
            Some(b"d/f0"),
            r,
        )
        .expect("symlink");
        fs.create(ROOT_INO, b"fifo", libc::S_IFIFO | 0o600, 0, None, r)
            .expect("mkfifo");
        fs.setxattr(files[1], b"user.colour", b"blue", 0)
            .expect("setxattr");
        fs.setxattr(d.ino, b"user.dir", &[7u8; 300], 0)
            .expect("setxattr");
        // POSIX ACLs: an access ACL with a named user and a directory's default ACL.
        let acl = |entries: &[(u16, u16, u32)]| crate::fs::acl::Acl::from_entries(entries).encode();
        let none = u32::MAX;
        let named = acl(&[
            (1, 6, none),
            (2, 6, 1000),
            (4, 4, none),
            (0x10, 6, none),
            (0x20, 4, none),
        ]);
        fs.setxattr(files[3], crate::fs::acl::ACCESS, &named, 0)
            .expect("setfacl");
        fs.setxattr(d.ino, crate::fs::acl::DEFAULT, &named, 0)
            .expect("setfacl -d");
        use crate::meta::inode::flags;
        fs.set_flags(files[2], flags::NODUMP | flags::NOATIME, r)
            .expect("chattr");
        fs.set_flags(d.ino, flags::NODUMP, r).expect("chattr dir");
        fs.unmount().expect("unmount");
        drop(fs);
        let clean = std::fs::read(&path).expect("read");

        let fs = Fs::open(&path, opts()).expect("reopen");
        let g = fs.create(ROOT_INO, b"g", reg, 0, None, r).expect("create");
        fs.write(g.ino, 0, &[0x67; 12_000], r).expect("write");
        fs.setattr(
            files[2],
            crate::fs::SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
            r,
        )
        .expect("chmod");
        fs.setattr(
            files[3],
            crate::fs::SetAttr {
                size: Some(3000),
                ..Default::default()
            },
            r,
        )
        .expect("truncate");
        fs.setxattr(g.ino, b"user.new", b"value", 0)
            .expect("setxattr");
        fs.set_flags(g.ino, flags::SYNC | flags::NODUMP, r)
            .expect("chattr");
        fs.removexattr(files[1], b"user.colour")
            .expect("removexattr");
        fs.rename(e.ino, b"big", ROOT_INO, b"big2", 0)
            .expect("rename");
        fs.rename(d.ino, b"e", ROOT_INO, b"e2", 0)
            .expect("rename dir");
        fs.remove(d.ino, b"f1", false).expect("unlink");
        let punch = crate::fs::falloc::PUNCH_HOLE | crate::fs::falloc::KEEP_SIZE;
        fs.fallocate(big.ino, 0, 8192, punch, r, None)
            .expect("punch");
        fs.sync_metadata().expect("sync");
        drop(fs); // no unmount: the journal holds the changes, as after a crash
        let crashed = std::fs::read(&path).expect("read");
        [clean, crashed]
    })
}

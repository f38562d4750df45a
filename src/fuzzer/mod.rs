//! The truncate-versus-pin fuzzer's random programs, which both of its modes run: the
//! concurrent mode ([`crate::fuzzer::mount`]) gives each actor its own thread on a real mount,
//! the serial mode ([`crate::fuzzer::serial`]) runs the same steps in program order in one
//! thread against the filesystem core.
//!
//! A program is an endless sequence of [`Step`]s drawn from a seed. Each step belongs to an
//! actor: a worker (writes, mmap stores, truncates, punches, zero ranges, new files, and
//! now and then an administrator's fence of a holder) or a holder (pins, stores into its
//! pinned blocks, unpins, dies). The files are fixed: three
//! *plain* files that no holder ever pins (so the concurrent mode can model them exactly) and
//! two *pinned* files that holders pin and breakers change. The shape (how many workers and
//! holders) is part of what makes the program: the same seed and shape give the same steps.
//!
//! Holders store [`tag`] words: 8 bytes, all of them `0xe0` or above, that name the pin (its
//! generation) and the store. Writers only write bytes `1..=0xd0`. So any byte `>= 0xe0` in a
//! file came from a holder, and a whole aligned tag says which store of which pin put it
//! there: enough to check, even with threads racing, that no store made after a pin's lease
//! was revoked reaches any file.

pub mod crashes;
pub mod holder;
pub mod image;
pub mod ledger;
pub mod mount;
pub mod serial;
pub mod targets;

use crate::store::image::BLOCK_SIZE;

/// A small deterministic generator (SplitMix64): programs depend only on the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Files no holder pins: `plain0..`.
pub const PLAIN: usize = 3;
/// Files holders pin: `pinned0..`, file numbers `PLAIN..PLAIN + PINNED`.
pub const PINNED: usize = 2;
/// All the program's files.
pub const FILES: usize = PLAIN + PINNED;
/// Offsets and sizes are drawn below this; pinned files start this long.
pub const SPAN: u64 = 64 * BLOCK_SIZE;
/// What the pinned files hold at the start.
pub const PINNED_FILL: u8 = 0x11;
/// Bytes at or above this come only from holders; writers draw theirs from `1..=WRITER_MAX`.
pub const HOLDER_BYTES: u8 = 0xe0;
/// The largest byte a writer writes.
pub const WRITER_MAX: u8 = 0xd0;

/// The name of file `f` in the fuzzer's directory.
pub fn file_name(f: usize) -> String {
    if f < PLAIN {
        format!("plain{f}")
    } else {
        format!("pinned{}", f - PLAIN)
    }
}

/// What file `f` holds when a program starts.
pub fn initial_content(f: usize) -> Vec<u8> {
    if is_pinned(f) {
        vec![PINNED_FILL; SPAN as usize]
    } else {
        Vec::new()
    }
}

/// Is `f` one of the files holders pin?
pub fn is_pinned(f: usize) -> bool {
    f >= PLAIN
}

/// How many of each actor a program has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Worker threads.
    pub workers: usize,
    /// Holders.
    pub holders: usize,
}

/// Who runs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// Worker number n.
    Worker(usize),
    /// Holder number n.
    Holder(usize),
}

/// One operation. Offsets and lengths are as drawn; each mode clamps them to the file the
/// same way ([`pin_range`], [`mmap_range`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Write `len` bytes of `byte` at `off`.
    Write {
        file: usize,
        off: u64,
        len: u64,
        byte: u8,
    },
    /// Store `len` bytes of `byte` at `off` through a shared mapping of the file, then
    /// `msync` (the serial mode, having no mapping, writes them).
    MmapStore {
        file: usize,
        off: u64,
        len: u64,
        byte: u8,
    },
    /// Truncate (down, a breaker).
    Truncate { file: usize, size: u64 },
    /// Punch a hole (a breaker of the whole blocks inside).
    Punch { file: usize, off: u64, len: u64 },
    /// Zero a range (a breaker of the whole blocks inside).
    Zero { file: usize, off: u64, len: u64 },
    /// A new file of `blocks` blocks of `byte`, read back at once, then removed.
    NewFile { blocks: u64, byte: u8 },
    /// An administrator fences holder `holder` (its leases are revoked now, whatever the
    /// policy; its pins fail with `EPERM` until it reconnects).
    Fence { holder: usize },
    /// The holder pins a range (giving back the pin it had), and answers a break of it by
    /// unpinning when `release_on_break`, or ignores breaks and goes on storing.
    Pin {
        file: usize,
        off: u64,
        len: u64,
        release_on_break: bool,
    },
    /// The holder stores a tag into every block of its pin.
    Store,
    /// The holder gives its pin back.
    Unpin,
    /// The holder dies: its connection closes without an unpin.
    Die,
    /// The holder gives its pin back but keeps its mapping, and goes on storing tags
    /// through it (at each later `Store`, for a while): stores that must reach no file.
    UnpinKeep,
    /// The holder closes its connection (its pins go) but keeps the mappings, and goes on
    /// storing through them.
    Disconnect,
    /// The holder forks a child that keeps the mappings and goes on storing through them
    /// for a while after the holder is killed (`SIGKILL`, as at `Die`).
    ForkDie,
    /// The holder pins a range read-only and tries a writable shared mapping of its window
    /// descriptors, which must fail with `EACCES`.
    PinReadOnly { file: usize, off: u64, len: u64 },
}

/// One step of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Who runs it.
    pub actor: Actor,
    /// What it does.
    pub op: Op,
}

/// The endless program of a seed and shape.
#[derive(Debug, Clone)]
pub struct Program {
    rng: Rng,
    shape: Shape,
}

impl Program {
    /// The program `seed` makes for `shape`.
    pub fn new(seed: u64, shape: Shape) -> Program {
        Program {
            rng: Rng::new(seed),
            shape,
        }
    }
}

impl Iterator for Program {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        let r = &mut self.rng;
        let holder_step = self.shape.holders > 0 && (self.shape.workers == 0 || r.below(10) < 4);
        let (off, len) = (r.below(SPAN), 1 + r.below(16 * BLOCK_SIZE));
        let byte = 1 + r.below(WRITER_MAX as u64) as u8;
        let plain = r.below(PLAIN as u64) as usize;
        let pinned = PLAIN + r.below(PINNED as u64) as usize;
        if holder_step {
            let actor = Actor::Holder(r.below(self.shape.holders as u64) as usize);
            // The misbehaviours take the place of some stores, unpins and deaths, chosen by
            // `byte` (drawn for every step, unused by holders): the generator's sequence, and
            // so every other step of a seed's program, is what it was before they existed.
            let op = match r.below(20) {
                0 | 1 => Op::Pin {
                    file: pinned,
                    off,
                    len: 1 + r.below(8 * BLOCK_SIZE),
                    release_on_break: r.below(2) == 0,
                },
                2..=17 if byte.is_multiple_of(32) => Op::PinReadOnly {
                    file: pinned,
                    off,
                    len: 1 + len % (8 * BLOCK_SIZE),
                },
                2..=17 => Op::Store,
                18 => match byte % 4 {
                    0 => Op::UnpinKeep,
                    1 => Op::Disconnect,
                    _ => Op::Unpin,
                },
                _ if byte.is_multiple_of(2) => Op::ForkDie,
                _ => Op::Die,
            };
            return Some(Step { actor, op });
        }
        let actor = Actor::Worker(r.below(self.shape.workers.max(1) as u64) as usize);
        let op = match r.below(20) {
            0..=3 => Op::Write {
                file: plain,
                off,
                len,
                byte,
            },
            4 | 5 => Op::MmapStore {
                file: plain,
                off,
                len,
                byte,
            },
            6 => Op::Truncate {
                file: plain,
                size: off,
            },
            7..=10 => Op::Write {
                file: pinned,
                off,
                len,
                byte,
            },
            11..=13 => Op::Truncate {
                file: pinned,
                size: off,
            },
            14 | 15 => Op::Punch {
                file: pinned,
                off,
                len,
            },
            16 | 17 => Op::Zero {
                file: pinned,
                off,
                len,
            },
            18 if self.shape.holders > 0 => Op::Fence {
                holder: r.below(self.shape.holders as u64) as usize,
            },
            _ => Op::NewFile {
                blocks: 1 + r.below(16),
                byte,
            },
        };
        Some(Step { actor, op })
    }
}

impl Op {
    /// The file a worker's step works on (`None` for new files and holders' steps).
    pub fn file(&self) -> Option<usize> {
        match *self {
            Op::Write { file, .. }
            | Op::MmapStore { file, .. }
            | Op::Truncate { file, .. }
            | Op::Punch { file, .. }
            | Op::Zero { file, .. } => Some(file),
            _ => None,
        }
    }
}

/// What a worker's step that succeeded did to its file, applied to a model of the file's
/// contents. `op` carries the range the step really took: a write's bytes written, an mmap
/// store's range inside the file ([`mmap_range`]).
pub fn apply(model: &mut Vec<u8>, op: &Op) {
    match *op {
        Op::Write { off, len, byte, .. } | Op::MmapStore { off, len, byte, .. } => {
            let end = (off + len) as usize;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].fill(byte);
        }
        Op::Truncate { size, .. } => model.resize(size as usize, 0),
        Op::Punch { off, len, .. } => zero_inside(model, off, len),
        Op::Zero { off, len, .. } => {
            let end = (off + len) as usize;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].fill(0);
        }
        _ => {}
    }
}

fn zero_inside(model: &mut [u8], off: u64, len: u64) {
    let upto = (off + len).min(model.len() as u64);
    if off < upto {
        model[off as usize..upto as usize].fill(0);
    }
}

/// The first `n` steps of the program of `seed` and `shape`.
pub fn program(seed: u64, shape: Shape, n: usize) -> Vec<Step> {
    Program::new(seed, shape).take(n).collect()
}

/// The range a pin of `off`/`len` takes in a file of `size` bytes: none from or past the
/// end, and never past it.
pub fn pin_range(off: u64, len: u64, size: u64) -> Option<(u64, u64)> {
    (off < size).then(|| (off, len.min(size - off)))
}

/// The range an mmap store of `off`/`len` takes in a file of `size` bytes: from a page
/// inside the file, never past its end; none in a file shorter than a page.
pub fn mmap_range(off: u64, len: u64, size: u64) -> Option<(u64, u64)> {
    (size >= BLOCK_SIZE).then(|| {
        let start = (off % size) & !(BLOCK_SIZE - 1);
        (start, len.min(size - start))
    })
}

/// The whole blocks `first..end` whose layout a breaker changes (empty when `first >= end`):
/// a truncate to `size` changes every block from the one holding the new end; a punch or
/// zero of `off..off+len` the blocks wholly inside.
pub fn broken_blocks(op: &Op) -> Option<(usize, u64, u64)> {
    match *op {
        Op::Truncate { file, size } => Some((file, size.div_ceil(BLOCK_SIZE), u64::MAX)),
        Op::Punch { file, off, len } | Op::Zero { file, off, len } => {
            Some((file, off.div_ceil(BLOCK_SIZE), (off + len) / BLOCK_SIZE))
        }
        _ => None,
    }
}

/// Where two contents first differ (the shorter one's length when one is a prefix of the
/// other); `None` when they are the same.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    (a != b).then(|| {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()))
    })
}

/// Pins a run can tell apart in tags.
pub const MAX_TAG_PIN: u32 = 1 << 20;
/// Stores of one pin a run can tell apart in tags (a holder stops storing after that many).
pub const MAX_TAG_STORE: u32 = 1 << 15;
const TAG_MARK: u8 = 0xff;
/// Store numbers with this bit are remote peers' stores through an exported pin
/// ([`remote_store`]); a holder's own stores stay below it.
pub const REMOTE_STORE: u32 = 1 << 14;
/// Remote peers a run can tell apart in tags.
pub const MAX_REMOTE_PEERS: usize = 16;
/// Stores one remote peer can make through one exported pin (it stops after that many).
pub const MAX_REMOTE_STORES: u32 = 1 << 10;

/// The store number of store `n` (below [`MAX_REMOTE_STORES`]) of remote peer `peer` (below
/// [`MAX_REMOTE_PEERS`]) through an exported pin: the tag says which peer made which store.
pub fn remote_store(peer: usize, n: u32) -> u32 {
    REMOTE_STORE | ((peer as u32 % MAX_REMOTE_PEERS as u32) << 10) | (n % MAX_REMOTE_STORES)
}

/// The remote peer and its store number, if store number `store` is a remote peer's.
pub fn remote_of(store: u32) -> Option<(usize, u32)> {
    let peer = ((store >> 10) as usize) % MAX_REMOTE_PEERS;
    (store & REMOTE_STORE != 0).then_some((peer, store % MAX_REMOTE_STORES))
}

/// The tag of store `store` of pin `pin` (below [`MAX_TAG_PIN`] and [`MAX_TAG_STORE`]): a
/// marker byte, then 35 bits five at a time, each byte `>= 0xe0`.
pub fn tag(pin: u32, store: u32) -> [u8; 8] {
    let v = (u64::from(pin % MAX_TAG_PIN) << 15) | u64::from(store % MAX_TAG_STORE);
    let mut t = [TAG_MARK; 8];
    for (k, b) in t[1..].iter_mut().enumerate() {
        *b = HOLDER_BYTES | ((v >> (5 * k)) & 31) as u8;
    }
    t
}

/// The pin and store of a whole tag, if `word` is one.
pub fn read_tag(word: &[u8]) -> Option<(u32, u32)> {
    if word.len() != 8 || word[0] != TAG_MARK || word[1..].iter().any(|&b| b < HOLDER_BYTES) {
        return None;
    }
    let v = word[1..]
        .iter()
        .enumerate()
        .fold(0u64, |v, (k, &b)| v | (u64::from(b & 31) << (5 * k)));
    Some((
        (v >> 15) as u32,
        (v & (u64::from(MAX_TAG_STORE) - 1)) as u32,
    ))
}

/// Fills `buf` (a whole number of tags long) with the tag of a store.
pub fn fill_tags(buf: &mut [u8], pin: u32, store: u32) {
    let t = tag(pin, store);
    for w in buf.chunks_exact_mut(8) {
        w.copy_from_slice(&t);
    }
}

/// Mount options drawn from the seed when none are given: the policy (`revoke`, `refuse` or
/// `wait`), the break time (10 to 300 ms), and under `revoke`, one time in eight,
/// `busy_blocks=off`: a run that must see its oracles fire (only a revocation can let a
/// holder's stores loose, so the other policies keep busy blocks on).
pub fn options_from_seed(seed: u64) -> String {
    let mut r = Rng::new(seed ^ 0x0b7e);
    let policy = ["revoke", "refuse", "wait"][r.below(3) as usize];
    let ms = 10 + r.below(291);
    let busy = if policy == "revoke" && r.below(8) == 0 {
        "off"
    } else {
        "on"
    };
    format!(
        "break_policy={policy},lease_break_time={:.3},busy_blocks={busy}",
        ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_back_and_never_look_like_writer_bytes() {
        for (p, s) in [
            (0, 0),
            (1, 2),
            (MAX_TAG_PIN - 1, MAX_TAG_STORE - 1),
            (77, 31),
        ] {
            let t = tag(p, s);
            assert!(t.iter().all(|&b| b >= HOLDER_BYTES));
            assert_eq!(read_tag(&t), Some((p, s)));
        }
        let mut damaged = tag(5, 6);
        damaged[3] = WRITER_MAX;
        assert_eq!(read_tag(&damaged), None);
    }

    #[test]
    fn the_same_seed_and_shape_give_the_same_program() {
        let shape = Shape {
            workers: 4,
            holders: 4,
        };
        assert_eq!(program(9, shape, 500), program(9, shape, 500));
        assert_ne!(program(9, shape, 500), program(10, shape, 500));
        let steps = program(9, shape, 2000);
        assert!(steps.iter().any(|s| matches!(s.actor, Actor::Holder(3))));
        assert!(steps.iter().any(|s| matches!(s.op, Op::Die)));
        assert!(steps.iter().any(|s| matches!(s.op, Op::Punch { .. })));
        assert!(steps.iter().any(|s| matches!(s.op, Op::Fence { .. })));
        for misbehaviour in [Op::UnpinKeep, Op::Disconnect, Op::ForkDie] {
            assert!(
                steps.iter().any(|s| s.op == misbehaviour),
                "{misbehaviour:?}"
            );
        }
        assert!(steps.iter().any(|s| matches!(s.op, Op::PinReadOnly { .. })));
    }

    #[test]
    fn seeds_draw_every_policy_and_sometimes_no_busy_blocks() {
        let all: Vec<String> = (0..200).map(options_from_seed).collect();
        for want in [
            "break_policy=wait",
            "break_policy=refuse",
            "break_policy=revoke",
        ] {
            assert!(all.iter().any(|o| o.contains(want)), "{want}");
        }
        let off: Vec<&String> = all
            .iter()
            .filter(|o| o.contains("busy_blocks=off"))
            .collect();
        assert!(!off.is_empty());
        assert!(off.iter().all(|o| o.contains("break_policy=revoke")));
        for o in &all {
            crate::fs::options::MountOptions::parse(o).expect(o);
        }
    }

    #[test]
    fn ranges_stay_inside_the_file() {
        assert_eq!(pin_range(10, 100, 50), Some((10, 40)));
        assert_eq!(pin_range(50, 1, 50), None);
        assert_eq!(mmap_range(9000, 100_000, 20_000), Some((8192, 11_808)));
        assert_eq!(mmap_range(0, 10, 4095), None);
    }
}

//! The bodies of the coverage-guided fuzz targets (`fuzz/`, run with `cargo fuzz`), kept in
//! the library so that the kept corpora also run as ordinary tests
//! (tests/fuzz_corpora.rs) on a stable toolchain.
//!
//! - [`image`]: patches bytes of a valid image's metadata (both superblocks, the journal,
//!   the checkpoint) as the input says, then runs fsck and a read-only mount: both must end
//!   in an error or a result, never a panic, hang or out-of-bounds access.
//! - [`protocol`]: feeds the input as a holder's message to the daemon's request path on a
//!   live filesystem core: every message gets a reply; none may panic, reach blocks it did
//!   not pin or change anything without a pin.

use std::sync::OnceLock;
use std::time::Duration;

use crate::fs::{Caller, Fs, FsOptions};
use crate::image::{Image, BLOCK_SIZE};
use crate::inode::ROOT_INO;
use crate::protocol::PeerCred;

/// The valid image the image target patches, kept in memory (its file is gone: a static
/// is never dropped, so nothing on disk may depend on one).
struct Base {
    bytes: Vec<u8>,
    regions: Vec<(u64, u64)>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-fuzz-image")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("base.img");
        Fs::mkfs(&path, 4 << 20, true).expect("mkfs");
        let fs = Fs::open(
            &path,
            FsOptions {
                lock_wait: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .expect("open");
        let d = fs
            .create(ROOT_INO, b"d", libc::S_IFDIR | 0o755, 0, None, Caller::ROOT)
            .expect("mkdir");
        for i in 0..4u64 {
            let f = fs
                .create(
                    d.ino,
                    format!("f{i}").as_bytes(),
                    libc::S_IFREG | 0o644,
                    0,
                    None,
                    Caller::ROOT,
                )
                .expect("create");
            fs.write(f.ino, i * 3000, &[i as u8; 6000], Caller::ROOT)
                .expect("write");
        }
        fs.unmount().expect("unmount");
        let f = fs.create(
            d.ino,
            b"after",
            libc::S_IFREG | 0o644,
            0,
            None,
            Caller::ROOT,
        );
        drop(f);
        drop(fs); // left with journal entries after the checkpoint, like a crash
        let (_, sb) = Image::open(&path, Duration::from_secs(5)).expect("reopen");
        let mut regions = vec![(0, 512), (BLOCK_SIZE, 512), (2 * BLOCK_SIZE, 16 * 1024)];
        regions.extend(
            sb.checkpoint_extents
                .iter()
                .map(|&(s, _)| (s * BLOCK_SIZE, sb.checkpoint_len.min(BLOCK_SIZE * 4))),
        );
        let bytes = std::fs::read(&path).expect("read");
        Base { bytes, regions }
    })
}

/// The image target: the input is a list of 4-byte patches (region, offset low, offset
/// high, value).
pub fn image(data: &[u8]) {
    let b = base();
    let mut img = b.bytes.clone();
    for p in data.chunks_exact(4) {
        let (start, len) = b.regions[p[0] as usize % b.regions.len()];
        let off = u16::from_le_bytes([p[1], p[2]]) as u64 % len.max(1);
        img[(start + off) as usize] = p[3];
    }
    // A file of its own for each input, removed when it is dropped.
    let Ok(mut scratch) = tempfile::Builder::new()
        .prefix("pinfs-fuzz-image")
        .tempfile()
    else {
        return;
    };
    if std::io::Write::write_all(&mut scratch, &img).is_err() {
        return;
    }
    let _ = crate::fsck::check(scratch.path(), false);
    let _ = Fs::open(
        scratch.path(),
        FsOptions {
            read_only: true,
            lock_wait: Duration::ZERO,
            ..Default::default()
        },
    );
}

/// The live core the protocol target talks to. Its image file is removed once mapped (a
/// static is never dropped): the mapping and the lock live on without a name.
struct Live {
    fs: Fs,
}

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pinfs-fuzz-protocol")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("p.img");
        Fs::mkfs(&path, 4 << 20, true).expect("mkfs");
        let fs = Fs::open(&path, FsOptions::default()).expect("open");
        let f = fs
            .create(ROOT_INO, b"f", libc::S_IFREG | 0o644, 0, None, Caller::ROOT)
            .expect("create");
        fs.write(f.ino, 0, &[7u8; 8192], Caller::ROOT)
            .expect("write");
        drop(dir);
        Live { fs }
    })
}

/// The protocol target: the input is one message from a non-root holder, then (if it
/// reaches that far) the same message from root.
pub fn protocol(data: &[u8]) {
    let l = live();
    let holder = Some(l.fs.add_holder(crate::lease::HolderInfo {
        pid: 4242,
        comm: "fuzz".into(),
        uid: 1000,
        gid: 1000,
    }));
    let user = PeerCred {
        pid: 4242,
        uid: 1000,
        gid: 1000,
    };
    let reply = crate::holders::reply_to(&l.fs, holder, user, data);
    assert!(
        reply.contains(" ok") || reply.contains(" err errno="),
        "every message gets a reply: {reply}"
    );
    let root = PeerCred {
        pid: 4243,
        uid: 0,
        gid: 0,
    };
    let _ = crate::holders::reply_to(&l.fs, None, root, data);
    // Without a descriptor no pin can exist, so no block may be busy or pinned.
    assert_eq!(l.fs.statfs().busy, 0);
    assert!(
        l.fs.leases().snapshot().pins.is_empty(),
        "a message without a file descriptor pinned something"
    );
}

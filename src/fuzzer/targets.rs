//! The bodies of the coverage-guided fuzz targets (`fuzz/`, run with `cargo fuzz`), kept in
//! the library so that the kept corpora also run as ordinary tests
//! (tests/core/fuzz_corpora.rs) on a stable toolchain.
//!
//! - [`image`]: patches bytes of a valid image's metadata (both superblocks, the journal,
//!   the checkpoint) as the input says, recomputes every checksum so the patches reach the
//!   decoders and checks behind them, then runs fsck and mounts the image through the core
//!   and uses all of it ([`crate::fuzzer::image::exercise`]): no panic, hang or out-of-bounds
//!   access; mount refuses exactly what fsck finds errors in; a mounted image works.
//! - [`protocol`]: feeds the input as a holder's message to the daemon's request path on a
//!   live filesystem core: every message gets a reply; none may panic, reach blocks it did
//!   not pin or change anything without a pin.

use std::sync::OnceLock;

use crate::fs::{Caller, Fs, FsOptions};
use crate::holder::protocol::PeerCred;
use crate::meta::inode::ROOT_INO;
use crate::store::image::BLOCK_SIZE;

/// The regions of a base image the image target patches: both superblocks, the start of the
/// journal and of each checkpoint extent.
fn regions(img: &[u8]) -> Vec<(u64, u64)> {
    let mut regions = vec![(0, 512), (BLOCK_SIZE, 512), (2 * BLOCK_SIZE, 16 * 1024)];
    for f in crate::fuzzer::image::fields(img) {
        if f.name.starts_with("checkpoint") {
            let at = f.bytes[0] as u64 & !(BLOCK_SIZE - 1);
            if !regions.iter().any(|r| r.0 == at) {
                regions.push((at, BLOCK_SIZE));
            }
        }
    }
    regions
}

/// The image target: the input is a list of 4-byte patches (region, offset low, offset
/// high, value), applied to one of the base images of [`crate::fuzzer::image::base_images`]
/// (the clean one for an even number of patches, the crashed one with a journal otherwise).
/// A broken rule panics, so the fuzzer reports it.
pub fn image(data: &[u8]) {
    static REGIONS: OnceLock<[Vec<(u64, u64)>; 2]> = OnceLock::new();
    let bases = crate::fuzzer::image::base_images();
    let regions = REGIONS.get_or_init(|| [regions(&bases[0]), regions(&bases[1])]);
    let which = (data.len() / 4) % 2;
    let mut img = bases[which].clone();
    let regions = &regions[which];
    for p in data.chunks_exact(4) {
        let (start, len) = regions[p[0] as usize % regions.len()];
        let off = u16::from_le_bytes([p[1], p[2]]) as u64 % len.max(1);
        img[(start + off) as usize] = p[3];
    }
    crate::fuzzer::image::fix_checksums(&mut img);
    // A file of its own for each input, removed with its directory.
    let Ok(dir) = tempfile::Builder::new()
        .prefix("pinfs-fuzz-image")
        .tempdir()
    else {
        return;
    };
    let path = dir.path().join("img");
    if crate::fuzzer::image::write_image(&path, &img).is_err() {
        return;
    }
    if let Err(rule) = crate::fuzzer::image::exercise(&path) {
        panic!("patches {data:?}: {rule}");
    }
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
    let reply = crate::daemon::holders::reply_to(&l.fs, holder, user, data);
    assert!(
        reply.contains(" ok") || reply.contains(" err errno="),
        "every message gets a reply: {reply}"
    );
    let root = PeerCred {
        pid: 4243,
        uid: 0,
        gid: 0,
    };
    let _ = crate::daemon::holders::reply_to(&l.fs, None, root, data);
    // Without a descriptor no pin can exist, so no block may be busy or pinned.
    assert_eq!(l.fs.statfs().busy, 0);
    assert!(
        l.fs.leases().snapshot().pins.is_empty(),
        "a message without a file descriptor pinned something"
    );
}

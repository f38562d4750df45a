//! The filesystem core against a reference model, without FUSE: random programs of file
//! operations and simulated crashes (the core is dropped without unmounting, then reopened,
//! which replays the journal). After every crash and at the end, every name must hold what
//! the model says, and fsck must find the image consistent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pinfs::fs::{falloc, Caller, Fs, FsOptions, SetAttr};
use pinfs::meta::inode::ROOT_INO;
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Write {
        name: usize,
        off: u64,
        len: usize,
        byte: u8,
    },
    Truncate {
        name: usize,
        size: u64,
    },
    Punch {
        name: usize,
        off: u64,
        len: u64,
    },
    Unlink {
        name: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Crash,
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize, 0..40_000u64, 1..20_000usize, any::<u8>()).prop_map(|(name, off, len, byte)| Op::Write { name, off, len, byte }),
        1 => (0..4usize, 0..50_000u64).prop_map(|(name, size)| Op::Truncate { name, size }),
        1 => (0..4usize, 0..40_000u64, 1..20_000u64).prop_map(|(name, off, len)| Op::Punch { name, off, len }),
        1 => (0..4usize).prop_map(|name| Op::Unlink { name }),
        1 => (0..4usize, 0..4usize).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (0..4usize, 0..4usize).prop_map(|(from, to)| Op::Link { from, to }),
        1 => Just(Op::Crash),
        1 => Just(Op::Remount),
    ]
}

/// The model: names -> file ids, file id -> contents.
#[derive(Default, Debug)]
struct Model {
    names: BTreeMap<usize, usize>,
    files: BTreeMap<usize, Vec<u8>>,
    next: usize,
}

fn ino_of(fs: &Fs, name: usize) -> Option<u64> {
    fs.lookup(ROOT_INO, NAMES[name].as_bytes())
        .ok()
        .map(|a| a.ino)
}

fn open(path: &Path) -> Fs {
    Fs::open(
        path,
        FsOptions {
            lock_wait: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .expect("open")
}

fn check(fs: &Fs, m: &Model) -> Result<(), TestCaseError> {
    if let Err(e) = fs.check_space() {
        return Err(TestCaseError::fail(format!("live space check: {e}")));
    }
    for (i, name) in NAMES.iter().enumerate() {
        match m.names.get(&i) {
            None => prop_assert!(ino_of(fs, i).is_none(), "{name} should not exist"),
            Some(id) => {
                let ino =
                    ino_of(fs, i).ok_or_else(|| TestCaseError::fail(format!("{name} missing")))?;
                let want = &m.files[id];
                let got = fs.read(ino, 0, 1 << 20).unwrap();
                prop_assert_eq!(got.len(), want.len(), "{} size", name);
                prop_assert!(got == *want, "{} content differs", name);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn core_matches_model_across_crashes(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        Fs::mkfs(&path, 64 << 20, false).unwrap();
        let mut fs = Some(open(&path));
        let mut m = Model::default();
        let who = Caller::ROOT;
        for op in ops {
            let f = fs.as_ref().unwrap();
            match op {
                Op::Write { name, off, len, byte } => {
                    let ino = match ino_of(f, name) {
                        Some(i) => i,
                        None => {
                            let a = f.create(ROOT_INO, NAMES[name].as_bytes(), libc::S_IFREG | 0o644, 0, None, who).unwrap();
                            m.files.insert(m.next, Vec::new());
                            m.names.insert(name, m.next);
                            m.next += 1;
                            a.ino
                        }
                    };
                    prop_assert_eq!(f.write(ino, off, &vec![byte; len], who).unwrap() as usize, len);
                    let data = m.files.get_mut(&m.names[&name]).unwrap();
                    let end = off as usize + len;
                    if data.len() < end { data.resize(end, 0); }
                    data[off as usize..end].fill(byte);
                }
                Op::Truncate { name, size } => {
                    if let Some(ino) = ino_of(f, name) {
                        f.setattr(ino, SetAttr { size: Some(size), ..Default::default() }, who).unwrap();
                        m.files.get_mut(&m.names[&name]).unwrap().resize(size as usize, 0);
                    }
                }
                Op::Punch { name, off, len } => {
                    if let Some(ino) = ino_of(f, name) {
                        f.fallocate(ino, off, len, falloc::PUNCH_HOLE | falloc::KEEP_SIZE, who, None).unwrap();
                        let data = m.files.get_mut(&m.names[&name]).unwrap();
                        let end = ((off + len) as usize).min(data.len());
                        if (off as usize) < end { data[off as usize..end].fill(0); }
                    }
                }
                Op::Unlink { name } => {
                    let r = f.remove(ROOT_INO, NAMES[name].as_bytes(), false);
                    prop_assert_eq!(r.is_ok(), m.names.remove(&name).is_some());
                }
                Op::Rename { from, to } => {
                    let r = f.rename(ROOT_INO, NAMES[from].as_bytes(), ROOT_INO, NAMES[to].as_bytes(), 0);
                    match m.names.get(&from).copied() {
                        None => prop_assert!(r.is_err()),
                        Some(id) => {
                            r.unwrap();
                            if m.names.get(&to) != Some(&id) {
                                m.names.remove(&from);
                                m.names.insert(to, id);
                            }
                        }
                    }
                }
                Op::Link { from, to } => {
                    let (src, dst) = (ino_of(f, from), ino_of(f, to));
                    if let (Some(ino), None) = (src, dst) {
                        f.link(ino, ROOT_INO, NAMES[to].as_bytes()).unwrap();
                        let id = m.names[&from];
                        m.names.insert(to, id);
                    }
                }
                Op::Crash => {
                    drop(fs.take());
                    let f = open(&path);
                    check(&f, &m)?;
                    fs = Some(f);
                }
                Op::Remount => {
                    fs.take().unwrap().unmount().unwrap();
                    let f = open(&path);
                    check(&f, &m)?;
                    fs = Some(f);
                }
            }
        }
        check(fs.as_ref().unwrap(), &m)?;
        drop(fs.take());
        let report = pinfs::fsck::check(&path, false).unwrap();
        prop_assert!(report.errors.is_empty(), "fsck: {:?}", report.errors);
    }
}

/// The live space check finds what it is there to find: a block a file maps that the
/// allocator thinks free, and one that it thinks busy.
#[test]
fn the_live_space_check_sees_a_file_block_marked_free_or_busy() {
    use pinfs_allocator::Extent;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    Fs::mkfs(&path, 16 << 20, false).unwrap();
    let fs = open(&path);
    let a = fs
        .create(ROOT_INO, b"f", libc::S_IFREG | 0o644, 0, None, Caller::ROOT)
        .unwrap();
    fs.write(a.ino, 0, &[7u8; 8192], Caller::ROOT).unwrap();
    assert_eq!(fs.check_space(), Ok(2));
    let block = fs.image_block_of(a.ino, 1).unwrap();
    let e = Extent {
        start: block,
        len: 1,
    };
    fs.with_allocator(|al| al.free(e)).unwrap();
    let err = fs.check_space().unwrap_err();
    assert!(err.contains("free"), "{err}");
    fs.with_allocator(|al| {
        al.claim(e).unwrap();
        al.pin(e).unwrap();
        al.free(e).unwrap(); // pinned and let go of: busy
    });
    let err = fs.check_space().unwrap_err();
    assert!(err.contains("busy"), "{err}");
}

//! Ordered data against power cuts, in the filesystem core (no FUSE), with a volatile cache
//! (the image file holds exactly the durable state): a size never becomes durable before
//! the data it exposes, also when two flushes run at once; and bytes past the end of file
//! that a crash left there never come back when the file grows again, also after
//! `fsck --repair` wrote a clean checkpoint of the crash state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinfs::fs::{Caller, Fs, FsOptions, SetAttr, ShutdownFlush};
use pinfs::meta::inode::ROOT_INO;
use pinfs::store::image::{Image, BLOCK_SIZE};

const REG: u32 = libc::S_IFREG | 0o644;

fn image(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("img");
    Fs::mkfs(&path, 64 << 20, false).unwrap();
    path
}

fn open(path: &Path, volatile_cache: bool) -> Fs {
    Fs::open(
        path,
        FsOptions {
            lock_wait: Duration::from_secs(5),
            volatile_cache,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A power cut (nothing more reaches the image file), then the daemon goes.
fn cut(fs: Fs) {
    let _ = fs.shutdown(ShutdownFlush::Nothing);
    let _ = fs.unmount();
}

/// Two flushes at once: one makes the ordered data durable (its I/O under way), the other
/// takes the grown sizes meanwhile and makes the journal durable. The size must not be
/// durable before the data that the first one is still writing: a power cut then shows the
/// file at its new size over zeros.
#[test]
fn a_size_is_not_durable_while_another_flush_still_writes_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir);
    let fs = Arc::new(open(&path, true));
    let f = fs
        .create(ROOT_INO, b"f", REG, 0, None, Caller::ROOT)
        .unwrap()
        .ino;
    fs.sync_metadata().unwrap();
    // Extending: the size waits for the next journal flush, the data is ordered before it.
    let data = vec![b'Y'; 2 * BLOCK_SIZE as usize];
    fs.write(f, 0, &data, Caller::ROOT).unwrap();

    // The first flush stops at the start of its persistence point (the ordered data taken,
    // none of it written yet) until the other flush is done or had time to be.
    let (entered_tx, entered_rx) = channel::<()>();
    let (go_tx, go_rx) = channel::<()>();
    let first = Arc::new(Mutex::new(Some((entered_tx, go_rx))));
    let armed = Arc::new(AtomicBool::new(false));
    {
        let (first, armed) = (first.clone(), armed.clone());
        assert!(fs.image().set_persist_hook(Box::new(move |_: &Image| {
            if !armed.load(Ordering::SeqCst) {
                return;
            }
            let first = first.lock().unwrap().take();
            if let Some((entered, go)) = first {
                entered.send(()).unwrap();
                let _ = go.recv_timeout(Duration::from_secs(30));
            }
        })));
    }
    armed.store(true, Ordering::SeqCst);
    let a = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.sync_metadata())
    };
    entered_rx.recv().unwrap();
    let (done_tx, done_rx) = channel();
    let b = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let r = fs.sync_metadata();
            let _ = done_tx.send(());
            r
        })
    };
    // The second flush either finishes (it did not wait for the first one's data) or waits
    // for the first; either way the power is cut now, with the first one's data unwritten.
    let _ = done_rx.recv_timeout(Duration::from_secs(1));
    let _ = fs.shutdown(ShutdownFlush::Nothing);
    go_tx.send(()).unwrap();
    let _ = a.join().unwrap();
    let _ = b.join().unwrap();
    let fs = Arc::into_inner(fs).expect("the threads are done");
    let _ = fs.unmount();
    drop(fs);

    let fs = open(&path, false);
    let f = fs.lookup(ROOT_INO, b"f").unwrap();
    let got = fs.read(f.ino, 0, data.len() as u32).unwrap();
    assert_eq!(got.len() as u64, f.size);
    assert!(
        got.iter().all(|&b| b == b'Y'),
        "size {} durable over {} zero bytes of its data",
        f.size,
        got.iter().filter(|&&b| b == 0).count()
    );
    fs.unmount().unwrap();
}

/// A write past the end into a block of its own, in a crash state that kept the write's
/// transaction (its mapping) and its data but not its size (with a volatile cache the size
/// is journaled only at the next flush; a power cut may keep any of the cache's lines, here
/// all of them), with an orphan in it too: `fsck --repair` frees the orphan and writes a
/// clean checkpoint. The write's bytes must not reappear when the file grows again over
/// them, as they do not on the unclean mount, which zeros past each end.
#[test]
fn bytes_a_crash_left_past_the_end_stay_gone_after_fsck_repair() {
    for repair in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir);
        let fs = open(&path, true);
        let f = fs
            .create(ROOT_INO, b"f", REG, 0, None, Caller::ROOT)
            .unwrap()
            .ino;
        fs.write(f, 0, &[b'a'; 100], Caller::ROOT).unwrap();
        let g = fs
            .create(ROOT_INO, b"g", REG, 0, None, Caller::ROOT)
            .unwrap()
            .ino;
        let _open = fs.open_file(g, libc::O_RDWR).unwrap();
        fs.remove(ROOT_INO, b"g", false).unwrap();
        fs.fsync(f, false).unwrap();
        fs.write(f, BLOCK_SIZE, &vec![b'Y'; 3000], Caller::ROOT)
            .unwrap();
        // The crash state: every line of the cache (the write's mapping and data), and so
        // no size, which waits for the journal flush.
        let mut state = vec![0u8; fs.image().len() as usize];
        fs.image().read(0, &mut state);
        cut(fs);
        std::fs::write(&path, &state).unwrap();

        if repair {
            let report = pinfs::fsck::check(&path, true).unwrap();
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            assert_eq!(report.orphans.len(), 1, "the orphan was freed");
        }
        let fs = open(&path, false);
        let f = fs.lookup(ROOT_INO, b"f").unwrap();
        assert_eq!(f.size, 100, "the size was not durable");
        fs.setattr(
            f.ino,
            SetAttr {
                size: Some(3 * BLOCK_SIZE),
                ..Default::default()
            },
            Caller::ROOT,
        )
        .unwrap();
        let got = fs.read(f.ino, BLOCK_SIZE, 3000).unwrap();
        assert!(
            got.iter().all(|&b| b == 0),
            "repair {repair}: {} bytes of the lost write back past the old end",
            got.iter().filter(|&&b| b == b'Y').count()
        );
        fs.unmount().unwrap();
    }
}

//! Pins, layout leases and busy blocks in the filesystem core (no FUSE): every policy, every
//! errno of the semantics, holder death, fencing, busy accounting, and the corruption that
//! busy blocks prevent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use pinfs::error::FsError;
use pinfs::fs::{falloc, Caller, Fs, FsOptions, SetAttr};
use pinfs::lease::{EventKind, HolderInfo, LeaseConfig, LeaseState, Notice, PinRequest, Policy};
use pinfs::meta::inode::ROOT_INO;
use pinfs::store::image::BLOCK_SIZE;

const HOLDER_PID: u32 = 4_000_001;
const BREAKER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 4_000_002,
};

struct Setup {
    _dir: tempfile::TempDir,
    fs: Arc<Fs>,
    notices: Receiver<Notice>,
}

fn setup(policy: Policy, break_ms: u64, busy_blocks: bool) -> Setup {
    setup_with(LeaseConfig {
        break_time: (break_ms > 0).then(|| Duration::from_millis(break_ms)),
        policy,
        busy_blocks,
        ..LeaseConfig::default()
    })
}

/// Under `wait` with no break time, guest leases revoked at `guest_ms`; for holders that are
/// no process (their pids are made up), so no RLIMIT_MEMLOCK to read: no pinned-bytes limit.
fn guest_setup(guest_ms: u64) -> Setup {
    setup_with(LeaseConfig {
        break_time: None,
        policy: Policy::Wait,
        guest_break_time: Duration::from_millis(guest_ms),
        max_pinned: Some(pinfs::lease::PinLimit::Unlimited),
        ..LeaseConfig::default()
    })
}

fn setup_with(leases: LeaseConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    Fs::mkfs(&path, 64 << 20, false).unwrap();
    let opts = FsOptions {
        leases,
        ..Default::default()
    };
    let fs = Arc::new(Fs::open(&path, opts).unwrap());
    fs.start_background();
    let notices = fs.take_notices().unwrap();
    Setup {
        _dir: dir,
        fs,
        notices,
    }
}

impl Setup {
    fn file(&self, name: &str, blocks: u64) -> u64 {
        let a = self
            .fs
            .create(
                ROOT_INO,
                name.as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                None,
                Caller::ROOT,
            )
            .unwrap();
        if blocks > 0 {
            self.fs
                .write(
                    a.ino,
                    0,
                    &vec![0x11; (blocks * BLOCK_SIZE) as usize],
                    Caller::ROOT,
                )
                .unwrap();
        }
        a.ino
    }
    fn holder(&self) -> u64 {
        self.fs.add_holder(HolderInfo {
            pid: HOLDER_PID,
            comm: "test-holder".into(),
            uid: 0,
            gid: 0,
        })
    }
    fn pin(
        &self,
        holder: u64,
        ino: u64,
        offset: u64,
        len: u64,
        unbreakable: bool,
    ) -> Result<(u64, Vec<pinfs::fs::PinnedExtent>), FsError> {
        self.fs
            .pin(
                &PinRequest {
                    holder,
                    ino,
                    offset,
                    len,
                    writable: true,
                    unbreakable,
                },
                Caller {
                    pid: HOLDER_PID,
                    ..Caller::ROOT
                },
            )
            .map(|g| (g.id, g.extents))
    }
    fn truncate(&self, ino: u64, size: u64) -> Result<(), FsError> {
        self.fs
            .setattr(
                ino,
                SetAttr {
                    size: Some(size),
                    ..Default::default()
                },
                BREAKER,
            )
            .map(|_| ())
    }
    fn state(&self, pin: u64) -> Option<LeaseState> {
        self.fs
            .leases()
            .snapshot()
            .pins
            .iter()
            .find(|p| p.id == pin)
            .map(|p| p.state)
    }
    fn next_notice(&self, kind: &str) -> Notice {
        loop {
            let n = self
                .notices
                .recv_timeout(Duration::from_secs(10))
                .expect("a notice");
            if n.event.kind.name() == kind {
                return n;
            }
        }
    }
}

fn errno(r: Result<(), FsError>) -> i32 {
    r.expect_err("an error").errno()
}

#[test]
fn a_cooperative_holder_releases_and_the_truncate_proceeds() {
    let s = setup(Policy::Revoke, 10_000, true);
    let ino = s.file("f", 8);
    let h = s.holder();
    let (pin, ext) = s.pin(h, ino, 0, 4 * BLOCK_SIZE, false).unwrap();
    assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 4 * BLOCK_SIZE);
    let fs = s.fs.clone();
    let releaser = std::thread::spawn({
        let notices = s.notices.clone();
        move || loop {
            let n = notices.recv_timeout(Duration::from_secs(10)).unwrap();
            if let EventKind::Break { deadline_ms } = n.event.kind {
                assert!(
                    deadline_ms.unwrap() > 9_000,
                    "the break says when the deadline is"
                );
                fs.unpin(h, n.event.pin.unwrap()).unwrap();
                return;
            }
        }
    });
    let t0 = Instant::now();
    s.truncate(ino, 0).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "released long before the deadline"
    );
    releaser.join().unwrap();
    assert_eq!(s.state(pin), None, "a released pin is gone");
    let c = s.fs.leases().snapshot().counters;
    assert_eq!(
        (c.breaks, c.releases, c.timeouts, c.revocations),
        (1, 1, 0, 0)
    );
    assert_eq!(s.fs.statfs().busy, 0);
    assert_eq!(s.fs.getattr(ino).unwrap().blocks, 0);
}

#[test]
fn refuse_gives_etxtbsy_at_the_deadline_and_keeps_the_lease() {
    let s = setup(Policy::Refuse, 200, true);
    let ino = s.file("f", 4);
    let h = s.holder();
    let (pin, _) = s.pin(h, ino, 0, 4 * BLOCK_SIZE, false).unwrap();
    let t0 = Instant::now();
    assert_eq!(errno(s.truncate(ino, 0)), libc::ETXTBSY);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
    assert_eq!(s.state(pin), Some(LeaseState::Granted));
    assert_eq!(
        s.fs.getattr(ino).unwrap().size,
        4 * BLOCK_SIZE,
        "nothing changed"
    );
    let c = s.fs.leases().snapshot().counters;
    assert_eq!((c.breaks, c.timeouts, c.refusals), (1, 1, 1));
    s.next_notice("refused");
}

#[test]
fn revoke_detaches_pinned_blocks_as_busy_until_the_holder_goes() {
    let s = setup(Policy::Revoke, 150, true);
    let ino = s.file("f", 4);
    let h = s.holder();
    let (pin, ext) = s.pin(h, ino, 0, 4 * BLOCK_SIZE, false).unwrap();
    let free_before = s.fs.statfs().free;
    s.truncate(ino, 0).unwrap();
    assert_eq!(s.state(pin), Some(LeaseState::Revoked));
    s.next_notice("revoked");
    assert_eq!(
        s.fs.getattr(ino).unwrap().size,
        0,
        "the file lost its blocks at once"
    );
    let st = s.fs.statfs();
    assert_eq!(st.busy, 4, "but they are busy");
    assert_eq!(st.free, free_before, "and not free");
    let c = s.fs.leases().snapshot().counters;
    assert_eq!((c.timeouts, c.revocations, c.fences), (1, 1, 1));
    s.truncate(ino, BLOCK_SIZE).unwrap();
    assert_eq!(
        s.pin(h, ino, 0, 1, false)
            .map(|_| ())
            .map_err(|e| e.errno()),
        Err(libc::EPERM),
        "a fenced holder pins nothing until it reconnects"
    );
    // The holder keeps writing into its blocks, like a NIC that was never told; another file
    // that takes all the free space never sees those bytes.
    s.fs.image().write(ext[0].image_offset, &[0xee; 4096]);
    let other = s.file("other", 0);
    let mut off = 0;
    loop {
        match s.fs.write(other, off, &vec![0u8; 1 << 20], Caller::ROOT) {
            Ok(n) => off += n as u64,
            Err(e) => {
                assert_eq!(e.errno(), libc::ENOSPC);
                break;
            }
        }
    }
    s.fs.image().write(ext[0].image_offset, &[0xee; 4096]);
    let data = s.fs.read(other, 0, off as u32).unwrap();
    assert!(
        data.iter().all(|&b| b == 0),
        "busy blocks were never handed to another file"
    );
    s.fs.holder_gone(h);
    assert_eq!(
        s.fs.statfs().busy,
        0,
        "busy blocks are freed when the holder goes"
    );
    assert_eq!(s.fs.statfs().available, 4);
    s.fs.write(
        other,
        off,
        &vec![0u8; 4 * BLOCK_SIZE as usize],
        Caller::ROOT,
    )
    .unwrap();
    let tail = s.fs.read(other, off, 4 * BLOCK_SIZE as u32).unwrap();
    assert!(
        tail.iter().all(|&b| b == 0),
        "freed busy blocks reach a new file as zeros"
    );
}

#[test]
fn without_busy_blocks_a_revoked_holder_corrupts_the_next_file() {
    let s = setup(Policy::Revoke, 100, false);
    let ino = s.file("f", 4);
    let h = s.holder();
    let (_, ext) = s.pin(h, ino, 0, 4 * BLOCK_SIZE, false).unwrap();
    s.truncate(ino, 0).unwrap();
    assert_eq!(s.fs.statfs().busy, 0, "busy_blocks=off: freed at once");
    // Reusable once the truncate's record is durable (the next fsync, or the journal
    // flusher within a second).
    s.fs.sync_metadata().unwrap();
    let victim = s.file("victim", 0);
    let mut off = 0;
    while let Ok(n) =
        s.fs.write(victim, off, &vec![0x22u8; 1 << 20], Caller::ROOT)
    {
        off += n as u64;
    }
    // The holder was never told in a way it honours: it writes on.
    s.fs.image()
        .write(ext[0].image_offset, b"HOLDER WROTE HERE");
    let data = s.fs.read(victim, 0, off as u32).unwrap();
    assert!(
        data.windows(17).any(|w| w == b"HOLDER WROTE HERE"),
        "the new file shows the holder's bytes"
    );
}

#[test]
fn wait_blocks_until_the_holder_releases() {
    let s = setup(Policy::Wait, 50, true);
    let ino = s.file("f", 4);
    let h = s.holder();
    let (pin, _) = s.pin(h, ino, 0, BLOCK_SIZE, false).unwrap();
    let fs = s.fs.clone();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        fs.unpin(h, pin).unwrap();
    });
    let t0 = Instant::now();
    s.truncate(ino, 0).unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "waited past the break time for the release"
    );
    late.join().unwrap();
    let c = s.fs.leases().snapshot().counters;
    assert_eq!((c.timeouts, c.revocations, c.releases), (0, 0, 1));
}

#[test]
fn breaker_errnos_unbreakable_own_lease_nonblock_and_new_pins() {
    let s = setup(Policy::Revoke, 60_000, true);
    let ino = s.file("f", 8);
    let h = s.holder();
    s.pin(h, ino, 0, BLOCK_SIZE, true).unwrap();
    assert_eq!(errno(s.truncate(ino, 0)), libc::ETXTBSY, "unbreakable");
    assert_eq!(s.fs.leases().snapshot().counters.breaks, 0);
    // A breaker that holds the lease itself.
    let (pin2, _) = s.pin(h, ino, 4 * BLOCK_SIZE, BLOCK_SIZE, false).unwrap();
    let own = Caller {
        pid: HOLDER_PID,
        ..Caller::ROOT
    };
    let r = s.fs.fallocate(
        ino,
        4 * BLOCK_SIZE,
        BLOCK_SIZE,
        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
        own,
        None,
    );
    assert_eq!(errno(r), libc::EDEADLK);
    // O_NONBLOCK: EWOULDBLOCK at once, and the break goes on.
    let fh =
        s.fs.open_file(ino, libc::O_RDWR | libc::O_NONBLOCK)
            .unwrap();
    let t0 = Instant::now();
    let r = s.fs.fallocate(
        ino,
        4 * BLOCK_SIZE,
        BLOCK_SIZE,
        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
        BREAKER,
        Some(fh),
    );
    assert_eq!(errno(r), libc::EWOULDBLOCK);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(matches!(s.state(pin2), Some(LeaseState::Breaking { .. })));
    s.next_notice("break");
    // New pins on a breaking range: EAGAIN.
    let r = s.pin(h, ino, 4 * BLOCK_SIZE, 10, false).map(|_| ());
    assert_eq!(errno(r), libc::EAGAIN);
    s.fs.unpin(h, pin2).unwrap();
    s.fs.fallocate(
        ino,
        4 * BLOCK_SIZE,
        BLOCK_SIZE,
        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
        BREAKER,
        Some(fh),
    )
    .unwrap();
    s.fs.release(ino, fh).unwrap();
}

#[test]
fn breaking_costs_nothing_where_nothing_is_pinned() {
    let s = setup(Policy::Refuse, 60_000, true);
    let a = s.file("a", 8);
    let b = s.file("b", 8);
    let h = s.holder();
    s.pin(h, a, 0, 2 * BLOCK_SIZE, false).unwrap();
    let t0 = Instant::now();
    s.truncate(a, 4 * BLOCK_SIZE).unwrap();
    s.fs.fallocate(
        a,
        2 * BLOCK_SIZE,
        BLOCK_SIZE,
        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
        BREAKER,
        None,
    )
    .unwrap();
    s.truncate(b, 0).unwrap();
    s.fs.remove(ROOT_INO, b"b", false).unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "no waiting outside pinned ranges"
    );
    assert_eq!(s.fs.leases().snapshot().counters.breaks, 0);
}

#[test]
fn zero_range_is_a_breaker_and_holder_death_ends_everything() {
    let s = setup(Policy::Revoke, 100, true);
    let ino = s.file("f", 4);
    let h = s.holder();
    s.pin(h, ino, 0, 4 * BLOCK_SIZE, false).unwrap();
    s.fs.fallocate(ino, 0, 4 * BLOCK_SIZE, falloc::ZERO_RANGE, BREAKER, None)
        .unwrap();
    assert_eq!(s.fs.leases().snapshot().counters.revocations, 1);
    assert_eq!(
        s.fs.statfs().busy,
        4,
        "zeroing unmapped the pinned blocks; they are busy"
    );
    assert!(s
        .fs
        .read(ino, 0, 4 * BLOCK_SIZE as u32)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    s.fs.holder_gone(h);
    assert_eq!(s.fs.statfs().busy, 0);
    assert!(s.fs.leases().snapshot().holders.is_empty());
    s.next_notice("holder_gone");
}

#[test]
fn fence_revokes_whatever_the_policy() {
    let s = setup(Policy::Wait, 0, true);
    let ino = s.file("f", 2);
    let h = s.holder();
    let (pin, _) = s.pin(h, ino, 0, 2 * BLOCK_SIZE, false).unwrap();
    let fs = s.fs.clone();
    let admin = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fs.fence(h).unwrap()
    });
    s.truncate(ino, 0).unwrap();
    assert_eq!(admin.join().unwrap(), 1);
    assert_eq!(s.state(pin), Some(LeaseState::Revoked));
    let c = s.fs.leases().snapshot().counters;
    assert_eq!((c.fences, c.revocations), (1, 1));
    assert_eq!(s.fs.statfs().busy, 2);
}

#[test]
fn freeing_a_pinned_unlinked_file_breaks_its_leases() {
    let s = setup(Policy::Revoke, 150, true);
    let ino = s.file("f", 3);
    let h = s.holder();
    s.pin(h, ino, 0, 3 * BLOCK_SIZE, false).unwrap();
    s.fs.remove(ROOT_INO, b"f", false).unwrap();
    s.fs.forget(ino, 1); // the kernel's last reference: the inode is freed, after a break
    s.next_notice("break");
    s.next_notice("revoked");
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.fs.getattr(ino).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(s.fs.getattr(ino).is_err(), "the inode is gone");
    assert_eq!(s.fs.statfs().busy, 3, "its pinned blocks are busy");
    s.fs.holder_gone(h);
    assert_eq!(s.fs.statfs().busy, 0);
}

#[test]
fn pins_need_permission_stay_in_the_file_and_allocate_holes() {
    let s = setup(Policy::Revoke, 1000, true);
    let a =
        s.fs.create(
            ROOT_INO,
            b"ro",
            libc::S_IFREG | 0o644,
            0,
            None,
            Caller::ROOT,
        )
        .unwrap();
    s.fs.setattr(
        a.ino,
        SetAttr {
            size: Some(8 * BLOCK_SIZE),
            ..Default::default()
        },
        Caller::ROOT,
    )
    .unwrap();
    let user = Caller {
        uid: 1000,
        gid: 1000,
        pid: 77,
    };
    let h = s.fs.add_holder(HolderInfo {
        pid: 77,
        comm: "u".into(),
        uid: 1000,
        gid: 1000,
    });
    let w = s.fs.pin(
        &PinRequest {
            holder: h,
            ino: a.ino,
            offset: 0,
            len: 10,
            writable: true,
            unbreakable: false,
        },
        user,
    );
    assert_eq!(
        w.unwrap_err().errno(),
        libc::EACCES,
        "write pins need write permission"
    );
    let ro_pin = PinRequest {
        holder: h,
        ino: a.ino,
        offset: 0,
        len: 10,
        writable: false,
        unbreakable: false,
    };
    assert_eq!(
        s.fs.pin(&ro_pin, user).unwrap_err().errno(),
        libc::EACCES,
        "a reader may not make a pin fill the file's holes"
    );
    assert_eq!(
        s.fs.getattr(a.ino).unwrap().blocks,
        0,
        "and nothing was allocated"
    );
    // The owner's holder (root here) may: its pin allocates the hole, like a DAX write fault.
    let hr = s.fs.add_holder(HolderInfo {
        pid: 1,
        comm: "root".into(),
        uid: 0,
        gid: 0,
    });
    let owner =
        s.fs.pin(
            &PinRequest {
                holder: hr,
                ..ro_pin
            },
            Caller::ROOT,
        )
        .unwrap();
    assert_eq!(
        s.fs.getattr(a.ino).unwrap().blocks,
        8,
        "pinning allocated the hole (one block)"
    );
    s.fs.unpin(hr, owner.id).unwrap();
    // Over allocated blocks the reader's read-only pin is granted.
    let grant = s.fs.pin(&ro_pin, user).unwrap();
    let ext = grant.extents;
    assert_eq!(ext.len(), 1);
    assert_eq!(
        grant.windows.len(),
        1,
        "one DAX window covers the one pinned block"
    );
    let r = s.fs.pin(
        &PinRequest {
            holder: h,
            ino: a.ino,
            offset: 8 * BLOCK_SIZE,
            len: 1,
            writable: false,
            unbreakable: false,
        },
        user,
    );
    assert_eq!(
        r.unwrap_err().errno(),
        libc::EINVAL,
        "no pins past the end of the file"
    );
    // What the holder writes into its blocks is what the next read returns.
    s.fs.image().write(ext[0].image_offset + 5, b"dax");
    assert_eq!(&s.fs.read(a.ino, 5, 3).unwrap(), b"dax");
}

/// Maps a window piece the way a holder does.
fn map_piece(p: &pinfs::store::windows::WindowPiece) -> &'static mut [u8] {
    use std::os::fd::AsRawFd;
    // SAFETY: a shared mapping of `len` bytes of the memfd at `fd_offset`; leaked on purpose
    // for the test's lifetime.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            p.len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            p.fd.as_raw_fd(),
            p.fd_offset as i64,
        );
        assert_ne!(m, libc::MAP_FAILED);
        std::slice::from_raw_parts_mut(m as *mut u8, p.len as usize)
    }
}

#[test]
fn dax_windows_give_direct_access_to_the_pinned_blocks_only() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    Fs::mkfs(&path, 64 << 20, false).unwrap();
    let fs = Arc::new(Fs::open(&path, FsOptions::default()).unwrap());
    let ino = fs
        .create(ROOT_INO, b"f", libc::S_IFREG | 0o644, 0, None, Caller::ROOT)
        .unwrap()
        .ino;
    fs.write(ino, 0, &vec![b'a'; 3 * BLOCK_SIZE as usize], Caller::ROOT)
        .unwrap();
    let h = fs.add_holder(HolderInfo {
        pid: HOLDER_PID,
        comm: "t".into(),
        uid: 0,
        gid: 0,
    });
    let g = fs
        .pin(
            &PinRequest {
                holder: h,
                ino,
                offset: BLOCK_SIZE,
                len: BLOCK_SIZE,
                writable: true,
                unbreakable: false,
            },
            Caller::ROOT,
        )
        .unwrap();
    assert_eq!(g.windows.len(), 1);
    assert_eq!(
        g.windows[0].len, BLOCK_SIZE,
        "the window covers the pinned block and nothing else"
    );
    let win = map_piece(&g.windows[0]);
    assert!(
        win.iter().all(|&b| b == b'a'),
        "the window starts with the block's contents"
    );
    win[..6].copy_from_slice(b"stored");
    assert_eq!(
        &fs.read(ino, BLOCK_SIZE, 6).unwrap(),
        b"stored",
        "a holder's store is what read() returns"
    );
    fs.write(ino, BLOCK_SIZE + 100, b"from write", Caller::ROOT)
        .unwrap();
    assert_eq!(
        &win[100..110],
        b"from write",
        "and the holder sees writes through the mount"
    );
    // The image file learns of it at fsync.
    let img = std::fs::File::open(&path).unwrap();
    let at = g.extents[0].image_offset;
    let mut buf = [0u8; 6];
    fs.fsync(ino, true).unwrap();
    img.read_exact_at(&mut buf, at).unwrap();
    assert_eq!(&buf, b"stored");
    // A second pin over the same block shares the window.
    let g2 = fs
        .pin(
            &PinRequest {
                holder: h,
                ino,
                offset: BLOCK_SIZE,
                len: 2 * BLOCK_SIZE,
                writable: false,
                unbreakable: false,
            },
            Caller::ROOT,
        )
        .unwrap();
    assert_eq!(
        g2.windows.iter().map(|w| w.len).sum::<u64>(),
        2 * BLOCK_SIZE
    );
    assert!(
        Arc::ptr_eq(&g2.windows[0].fd, &g.windows[0].fd),
        "overlapping pins share a window"
    );
    // fsync writes back what holders stored, which the filesystem never saw.
    win[20..26].copy_from_slice(b"synced");
    fs.fsync(ino, true).unwrap();
    let mut buf = [0u8; 6];
    img.read_exact_at(&mut buf, at + 20).unwrap();
    assert_eq!(&buf, b"synced");
    win[6..12].copy_from_slice(b"before");
    fs.unpin(h, g.id).unwrap();
    assert_eq!(
        fs.image().window_descriptors(),
        2,
        "both windows stay while the second pin covers their blocks"
    );
    fs.unpin(h, g2.id).unwrap();
    assert_eq!(
        fs.image().window_descriptors(),
        0,
        "the daemon closes a window once no pin covers it"
    );
    assert_eq!(
        &fs.read(ino, BLOCK_SIZE, 12).unwrap(),
        b"storedbefore",
        "what the holder stored while pinned stays in the file"
    );
    // The holder kept its mapping: its stores now reach orphaned memory, no block.
    win[6..12].copy_from_slice(b"later!");
    assert_eq!(&fs.read(ino, BLOCK_SIZE, 12).unwrap(), b"storedbefore");
    fs.unmount().unwrap();
    drop(fs);
    let fs = Fs::open(&path, FsOptions::default()).unwrap();
    assert_eq!(
        &fs.read(ino, BLOCK_SIZE, 12).unwrap(),
        b"storedbefore",
        "unmount keeps what was stored under the pin, and nothing stored after it"
    );
}

/// What a request thread calls: `try_setattr`/`try_fallocate` complete inline where nobody
/// pinned, and where a holder would have to answer they come back undone (`None`) with the
/// lease still granted, no break counted and the file unchanged; the blocking call then
/// waits as before. `end_waits` ends a wait with EIO.
#[test]
fn request_threads_never_wait_and_end_waits_gives_eio() {
    let s = setup(Policy::Wait, 0, true);
    let (free, pinned) = (s.file("free", 4), s.file("pinned", 4));
    let h = s.holder();
    let (pin, _) = s.pin(h, pinned, 0, 4 * BLOCK_SIZE, false).unwrap();
    let shrink = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        s.fs.try_setattr(free, shrink, BREAKER),
        Some(Ok(_))
    ));
    assert!(s.fs.try_setattr(pinned, shrink, BREAKER).is_none());
    let punch = falloc::PUNCH_HOLE | falloc::KEEP_SIZE;
    assert!(s
        .fs
        .try_fallocate(pinned, 0, BLOCK_SIZE, punch, BREAKER, None)
        .is_none());
    assert_eq!(s.state(pin), Some(LeaseState::Granted));
    assert_eq!(s.fs.leases().snapshot().counters.breaks, 0);
    assert_eq!(s.fs.getattr(pinned).unwrap().size, 4 * BLOCK_SIZE);
    // The blocking truncate waits; ending the waits answers it with EIO.
    let fs = s.fs.clone();
    let t =
        std::thread::spawn(move || fs.setattr(pinned, shrink, BREAKER).map(|_| ()).unwrap_err());
    let end = Instant::now() + Duration::from_secs(5);
    while !matches!(s.state(pin), Some(LeaseState::Breaking { .. })) {
        assert!(Instant::now() < end, "the truncate never started its break");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.fs.end_waits();
    assert_eq!(t.join().unwrap().errno(), libc::EIO);
    assert_eq!(s.fs.getattr(pinned).unwrap().size, 4 * BLOCK_SIZE);
}

/// A pin by someone who is neither root nor the file's owner is a guest lease: under `wait`
/// its break gets the guest deadline and is revoked there; unbreakable pins are root's.
#[test]
fn guest_leases_are_revoked_at_the_guest_deadline_and_unbreakable_is_roots() {
    let s = guest_setup(200);
    let ino = s.file("shared", 4);
    let guest = Caller {
        uid: 65534,
        gid: 65534,
        pid: HOLDER_PID,
    };
    let h = s.holder();
    let req = |unbreakable| PinRequest {
        holder: h,
        ino,
        offset: 0,
        len: 4 * BLOCK_SIZE,
        writable: false,
        unbreakable,
    };
    let e = s.fs.pin(&req(true), guest).unwrap_err();
    assert_eq!(e.errno(), libc::EPERM, "{e}");
    assert!(e.to_string().contains("only root"), "{e}");
    let pin = s.fs.pin(&req(false), guest).unwrap().id;
    let p = s.fs.leases().snapshot().pins;
    assert_eq!(p[0].standing, pinfs::lease::Standing::Guest);
    let t = Instant::now();
    s.truncate(ino, 0).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.state(pin), Some(LeaseState::Revoked));
    let kinds: Vec<EventKind> = s.notices.try_iter().map(|n| n.event.kind).collect();
    assert!(kinds.contains(&EventKind::Break {
        deadline_ms: Some(200)
    }));
    assert!(kinds.contains(&EventKind::Revoked));
}

/// A chown takes the owner's terms away: the former owner's lease becomes a guest's, so that
/// under `wait` the new owner's truncate waits only the guest deadline, even for a break
/// that already waits with no deadline.
#[test]
fn a_chown_turns_the_former_owners_lease_into_a_guests() {
    let s = guest_setup(300);
    let ino = s.file("theirs", 4);
    let user = Caller {
        uid: 1000,
        gid: 1000,
        pid: HOLDER_PID,
    };
    let chown = |uid: u32| {
        s.fs.setattr(
            ino,
            SetAttr {
                uid: Some(uid),
                gid: Some(uid),
                ..Default::default()
            },
            Caller::ROOT,
        )
        .unwrap();
    };
    chown(1000);
    let h = s.fs.add_holder(HolderInfo {
        pid: HOLDER_PID,
        comm: "owner".into(),
        uid: 1000,
        gid: 1000,
    });
    let req = PinRequest {
        holder: h,
        ino,
        offset: 0,
        len: 4 * BLOCK_SIZE,
        writable: false,
        unbreakable: false,
    };
    let pin = s.fs.pin(&req, user).unwrap().id;
    let standing = |s: &Setup| s.fs.leases().snapshot().pins[0].standing;
    assert_eq!(standing(&s), pinfs::lease::Standing::Owner);
    // A breaker starts waiting (no deadline: the owner's lease under `wait`)...
    let fs2 = s.fs.clone();
    let t = Instant::now();
    let (done, breaker) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = fs2
            .setattr(
                ino,
                SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
                BREAKER,
            )
            .map(|_| ());
        let _ = done.send(r);
    });
    while s.state(pin) == Some(LeaseState::Granted) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...then root gives the file away: the lease is a guest's now, with its deadline.
    chown(0);
    assert_eq!(standing(&s), pinfs::lease::Standing::Guest);
    breaker
        .recv_timeout(Duration::from_secs(5))
        .expect("the truncate ends at the guest deadline")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(s.state(pin), Some(LeaseState::Revoked));
}

/// With no space left to move a revoked pin's blocks out of its file, the revocation holds
/// all the same: the fence succeeds and the fenced holder's later stores reach no file.
#[test]
fn a_fence_on_a_full_filesystem_still_cuts_the_holder_off() {
    let s = setup(Policy::Revoke, 45_000, true);
    let ino = s.file("pinned", 4);
    let h = s.holder();
    let g =
        s.fs.pin(
            &PinRequest {
                holder: h,
                ino,
                offset: 0,
                len: 4 * BLOCK_SIZE,
                writable: true,
                unbreakable: false,
            },
            Caller::ROOT,
        )
        .unwrap();
    let win = map_piece(&g.windows[0]);
    win[..5].copy_from_slice(b"under");
    // Fill the filesystem.
    let filler = s.file("filler", 0);
    let chunk = vec![0x22u8; 1 << 20];
    let mut at = 0u64;
    while s.fs.write(filler, at, &chunk, Caller::ROOT).is_ok() {
        at += chunk.len() as u64;
    }
    while s
        .fs
        .write(filler, at, &chunk[..BLOCK_SIZE as usize], Caller::ROOT)
        .is_ok()
    {
        at += BLOCK_SIZE;
    }
    assert_eq!(s.fs.statfs().available, 0, "the filesystem is full");
    assert_eq!(s.fs.fence(h).unwrap(), 1, "the fence holds, space or not");
    assert_eq!(s.state(g.id), Some(LeaseState::Revoked));
    win[..5].copy_from_slice(b"after");
    assert_eq!(
        &s.fs.read(ino, 0, 5).unwrap(),
        b"under",
        "what was stored under the pin stays; nothing stored after the fence arrives"
    );
    s.fs.check_space().unwrap();
}

//! Full filesystems and failed transactions, in the filesystem core (no FUSE): the metadata
//! reserve keeps deletes, truncates, chmods, checkpoints and unmount working on a full or
//! fragmented filesystem; a fence or a revoking truncate on a full filesystem completes; an
//! operation whose transaction is refused changes no byte, size or attribute.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pinfs::error::FsError;
use pinfs::fs::{falloc, Caller, Fs, FsOptions, SetAttr};
use pinfs::lease::{HolderInfo, LeaseConfig, LeaseState, PinRequest, Policy};
use pinfs::meta::inode::ROOT_INO;
use pinfs::store::image::BLOCK_SIZE;

const BREAKER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 4_100_002,
};
const HOLDER_PID: u32 = 4_100_001;

fn image(dir: &tempfile::TempDir, size: u64) -> PathBuf {
    let path = dir.path().join("img");
    Fs::mkfs(&path, size, false).unwrap();
    path
}

fn open(path: &Path) -> Fs {
    Fs::open(path, FsOptions::default()).unwrap()
}

fn create(fs: &Fs, name: &str) -> Result<u64, FsError> {
    fs.create(
        ROOT_INO,
        name.as_bytes(),
        libc::S_IFREG | 0o644,
        0,
        None,
        Caller::ROOT,
    )
    .map(|a| a.ino)
}

fn chmod(fs: &Fs, ino: u64, mode: u32) -> Result<(), FsError> {
    fs.setattr(
        ino,
        SetAttr {
            mode: Some(mode),
            ..Default::default()
        },
        Caller::ROOT,
    )
    .map(|_| ())
}

fn truncate(fs: &Fs, ino: u64, size: u64, caller: Caller) -> Result<(), FsError> {
    fs.setattr(
        ino,
        SetAttr {
            size: Some(size),
            ..Default::default()
        },
        caller,
    )
    .map(|_| ())
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("an error").errno()
}

/// Writes into `ino` from `at` until the filesystem is full; returns the new end.
fn fill(fs: &Fs, ino: u64, mut at: u64) -> u64 {
    let chunk = vec![0x5au8; 1 << 20];
    for len in [chunk.len(), BLOCK_SIZE as usize] {
        loop {
            match fs.write(ino, at, &chunk[..len], Caller::ROOT) {
                Ok(n) => at += n as u64,
                Err(e) => {
                    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
                    break;
                }
            }
        }
    }
    assert_eq!(fs.statfs().available, 0, "the filesystem is full");
    at
}

/// Checks the image offline as `pinfs fsck` does: clean, and with nothing to replay.
fn assert_clean_image(path: &Path) {
    let report = pinfs::fsck::check(path, false).unwrap();
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(
        report.replayed, 0,
        "unmount wrote a checkpoint: nothing to replay"
    );
}

/// Case 3 of issue 10: on a full 64 MiB filesystem, 8194 chmods filled the journal, the
/// checkpoint it then wanted found no blocks, and every unlink, truncate and chmod failed with
/// `ENOSPC` until a remount. With the metadata reserve, data never takes the blocks the next
/// checkpoint needs.
#[test]
fn a_full_filesystem_still_chmods_truncates_and_unlinks_after_the_journal_fills() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let keep = create(&fs, "keep").unwrap();
    fs.write(keep, 0, &[0x11; 8192], Caller::ROOT).unwrap();
    let victim = create(&fs, "victim").unwrap();
    fill(&fs, victim, 0);
    let st = fs.statfs();
    assert!(
        st.free > st.available,
        "df shows the reserve as not available ({} free, {} available)",
        st.free,
        st.available
    );
    for n in 0..10_000u32 {
        chmod(&fs, keep, 0o600 | (n & 0o77))
            .unwrap_or_else(|e| panic!("chmod {n} on a full filesystem: {e}"));
    }
    truncate(&fs, keep, 100, Caller::ROOT).unwrap();
    assert_eq!(fs.getattr(keep).unwrap().size, 100);
    fs.remove(ROOT_INO, b"victim", false).unwrap();
    chmod(&fs, keep, 0o644).unwrap();
    fs.forget(victim, 1);
    fs.check_space().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean_image(&path);
}

/// Case 3 of issue 10: with about half the filesystem used and the free space all single
/// blocks, create, chmod and unlink all failed after 2849 files (the checkpoint needed more
/// extents than the superblock can name), and unmount wrote no checkpoint. Now they keep
/// working to the end, and unmount leaves an image with nothing to replay.
#[test]
fn with_free_space_in_single_blocks_creates_chmods_and_unlinks_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let block = vec![0x33u8; BLOCK_SIZE as usize];
    let mut files = Vec::new();
    loop {
        let ino = create(&fs, &format!("f{}", files.len())).unwrap();
        files.push(ino);
        if fs.write(ino, 0, &block, Caller::ROOT).is_err() {
            break;
        }
    }
    // Every other file goes: the free space is single blocks between used ones.
    for (k, &ino) in files.iter().enumerate().step_by(2) {
        fs.remove(ROOT_INO, format!("f{k}").as_bytes(), false)
            .unwrap_or_else(|e| panic!("unlink f{k}: {e}"));
        fs.forget(ino, 1);
    }
    assert!(
        fs.with_allocator(|a| a.free_extent_count()) > 4000,
        "free space is fragmented"
    );
    // New files fill the single blocks; creating, chmodding and removing never fail.
    let mut more = Vec::new();
    loop {
        let name = format!("g{}", more.len());
        let ino = create(&fs, &name).unwrap_or_else(|e| panic!("create {name}: {e}"));
        chmod(&fs, ino, 0o600).unwrap_or_else(|e| panic!("chmod {name}: {e}"));
        more.push(ino);
        if fs.write(ino, 0, &block, Caller::ROOT).is_err() {
            break;
        }
    }
    assert!(more.len() > 3000, "{} files fit in the holes", more.len());
    for (k, &ino) in more.iter().enumerate() {
        chmod(&fs, ino, 0o640).unwrap_or_else(|e| panic!("chmod g{k}: {e}"));
        if k % 2 == 0 {
            fs.remove(ROOT_INO, format!("g{k}").as_bytes(), false)
                .unwrap_or_else(|e| panic!("unlink g{k}: {e}"));
            fs.forget(ino, 1);
        }
    }
    fs.check_space().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean_image(&path);
}

/// A checkpoint that would need more extents than the superblock can name is refused with
/// `ENOSPC` and leaves the previous one current; it used to panic the daemon when it needed
/// between 123 and 200 extents (the superblock's area holds 122). The free space is cut into
/// single blocks behind the filesystem's back (as no reserve would allow) to get there.
#[test]
fn a_checkpoint_with_too_many_extents_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 512 << 20);
    let fs = open(&path);
    let ino = create(&fs, "kept").unwrap();
    fs.write(ino, 0, b"still here", Caller::ROOT).unwrap();
    fs.checkpoint(false).unwrap();
    fs.with_allocator(|a| {
        a.set_reserve(Default::default());
        let mut taken = Vec::new();
        while let Ok(e) = a.allocate(u64::MAX, None) {
            taken.push(e);
        }
        // 40,000 single free blocks: a free list of 625 KiB, a checkpoint of ~157 blocks.
        let first = taken.iter().map(|e| e.start).min().unwrap();
        for b in (first..first + 80_000).step_by(2) {
            a.free(pinfs_allocator::Extent { start: b, len: 1 })
                .unwrap();
        }
    });
    assert_eq!(
        fs.checkpoint(false).map_err(|e| e.errno()),
        Err(libc::ENOSPC)
    );
    assert_eq!(fs.read(ino, 0, 10).unwrap(), b"still here");
    // A refused transaction makes the next operation want a checkpoint, which finds no room:
    // chmod, truncate and unlink still go to the journal, which has room for them.
    fs.fail_next_commits(1);
    assert_eq!(errno(chmod(&fs, ino, 0o600)), libc::ENOSPC);
    chmod(&fs, ino, 0o640).unwrap();
    truncate(&fs, ino, 5, Caller::ROOT).unwrap();
    assert_eq!(fs.read(ino, 0, 10).unwrap(), b"still");
    fs.remove(ROOT_INO, b"kept", false).unwrap();
}

struct Pinned {
    fs: Arc<Fs>,
    holder: u64,
    pin: u64,
    window: &'static mut [u8],
}

fn pinned_setup(dir: &tempfile::TempDir, policy: Policy, break_ms: u64) -> (Pinned, u64) {
    let path = image(dir, 64 << 20);
    let opts = FsOptions {
        leases: LeaseConfig {
            break_time: (break_ms > 0).then(|| Duration::from_millis(break_ms)),
            policy,
            busy_blocks: true,
            ..LeaseConfig::default()
        },
        ..Default::default()
    };
    let fs = Arc::new(Fs::open(&path, opts).unwrap());
    fs.start_background();
    let ino = create(&fs, "pinned").unwrap();
    fs.write(ino, 0, &vec![0x11; 4 * BLOCK_SIZE as usize], Caller::ROOT)
        .unwrap();
    let holder = fs.add_holder(HolderInfo {
        pid: HOLDER_PID,
        comm: "test-holder".into(),
        uid: 0,
        gid: 0,
    });
    let g = fs
        .pin(
            &PinRequest {
                holder,
                ino,
                offset: 0,
                len: 4 * BLOCK_SIZE,
                writable: true,
                unbreakable: false,
            },
            Caller {
                pid: HOLDER_PID,
                ..Caller::ROOT
            },
        )
        .unwrap();
    let window = map_piece(&g.windows[0]);
    window[..5].copy_from_slice(b"under");
    (
        Pinned {
            fs,
            holder,
            pin: g.id,
            window,
        },
        ino,
    )
}

impl Pinned {
    fn state(&self) -> Option<LeaseState> {
        self.fs
            .leases()
            .snapshot()
            .pins
            .iter()
            .find(|p| p.id == self.pin)
            .map(|p| p.state)
    }

    /// Fills the filesystem and the journal past its soft limit (chmods), so that the next
    /// operation starts with a checkpoint and the move of a revoked pin's blocks finds no
    /// blocks outside the reserve.
    fn fill_space_and_journal(&self, ino: u64) {
        let filler = create(&self.fs, "filler").unwrap();
        fill(&self.fs, filler, 0);
        for n in 0..9_000u32 {
            let _ = chmod(&self.fs, ino, 0o600 | (n & 0o77));
        }
    }
}

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

/// Case 4 of issue 10: a fence on a full filesystem with a checkpoint due answered `ENOSPC`,
/// yet the lease was revoked, the holder fenced, and its later stores still reached the
/// file. The fence completes: revoked, and what the holder stores after it reaches nothing.
#[test]
fn a_fence_on_a_full_filesystem_with_a_checkpoint_due_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (p, ino) = pinned_setup(&dir, Policy::Revoke, 45_000);
    p.fill_space_and_journal(ino);
    assert_eq!(p.fs.fence(p.holder).map_err(|e| e.errno()), Ok(1));
    assert_eq!(p.state(), Some(LeaseState::Revoked));
    p.window[..5].copy_from_slice(b"after");
    assert_eq!(
        p.fs.read(ino, 0, 5).unwrap(),
        b"under",
        "the fenced holder's stores reach nothing"
    );
    p.fs.check_space().unwrap();
}

/// Case 4: the same for a breaking truncate that revokes at its deadline: it completes (the
/// file is truncated, the lease revoked, the holder cut off from what stays in the file).
#[test]
fn a_revoking_truncate_on_a_full_filesystem_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (p, ino) = pinned_setup(&dir, Policy::Revoke, 100);
    p.fill_space_and_journal(ino);
    truncate(&p.fs, ino, BLOCK_SIZE, BREAKER).unwrap();
    assert_eq!(p.fs.getattr(ino).unwrap().size, BLOCK_SIZE);
    assert_eq!(p.state(), Some(LeaseState::Revoked));
    p.window[..5].copy_from_slice(b"after");
    assert_eq!(p.fs.read(ino, 0, 5).unwrap(), b"under");
    p.fs.check_space().unwrap();
}

/// Case 4: when the move of a revoked pin's blocks is refused by the journal, the fence still
/// completes: the holder is cut off from the blocks, which stay in the file with their data.
#[test]
fn a_fence_whose_move_is_refused_still_cuts_the_holder_off() {
    let dir = tempfile::tempdir().unwrap();
    let (p, ino) = pinned_setup(&dir, Policy::Revoke, 45_000);
    p.fs.fail_next_commits(1);
    assert_eq!(p.fs.fence(p.holder).map_err(|e| e.errno()), Ok(1));
    assert_eq!(p.state(), Some(LeaseState::Revoked));
    p.window[..5].copy_from_slice(b"after");
    assert_eq!(p.fs.read(ino, 0, 5).unwrap(), b"under");
    p.fs.check_space().unwrap();
}

/// An operation under test.
type Op<'a> = dyn Fn() -> Result<(), FsError> + 'a;

/// Case 8 of issue 10: truncate zeroed the tail (and write stored its data) before the
/// commit that then failed: the operation returned an error and the bytes were already
/// changed. Every operation whose transaction is refused leaves bytes, size, mode and times
/// as they were.
#[test]
fn operations_whose_transaction_is_refused_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let ino = create(&fs, "f").unwrap();
    let data: Vec<u8> = (0..3 * BLOCK_SIZE + 100).map(|k| (k % 251) as u8).collect();
    fs.write(ino, 0, &data, Caller::ROOT).unwrap();
    chmod(&fs, ino, 0o6755).unwrap();
    let before = fs.getattr(ino).unwrap();
    let user = Caller {
        uid: 1000,
        gid: 1000,
        pid: 4_100_003,
    };
    {
        let unchanged = |what: &str| {
            let after = fs.getattr(ino).unwrap();
            assert_eq!(
                (after.size, after.perm, after.mtime, after.ctime),
                (before.size, before.perm, before.mtime, before.ctime),
                "{what}: attributes"
            );
            assert!(
                fs.read(ino, 0, data.len() as u32 + 10).unwrap() == data,
                "{what}: the file's bytes changed"
            );
        };
        let mut tries: Vec<(&str, Box<Op<'_>>)> = vec![
            (
                "truncate down",
                Box::new(|| truncate(&fs, ino, 100, Caller::ROOT)),
            ),
            (
                "truncate up",
                Box::new(|| truncate(&fs, ino, 10 * BLOCK_SIZE, Caller::ROOT)),
            ),
            (
                "write past the end",
                Box::new(|| {
                    fs.write(ino, data.len() as u64 - 50, &[0xee; 5000], user)
                        .map(|_| ())
                }),
            ),
            (
                "write after a gap",
                Box::new(|| fs.write(ino, 5 * BLOCK_SIZE, &[0xee; 10], user).map(|_| ())),
            ),
            (
                "punch hole",
                Box::new(|| {
                    fs.fallocate(
                        ino,
                        100,
                        2 * BLOCK_SIZE,
                        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
                        Caller::ROOT,
                        None,
                    )
                }),
            ),
            (
                "zero range",
                Box::new(|| {
                    fs.fallocate(
                        ino,
                        100,
                        2 * BLOCK_SIZE,
                        falloc::ZERO_RANGE,
                        Caller::ROOT,
                        None,
                    )
                }),
            ),
            (
                "allocate past the end",
                Box::new(|| fs.fallocate(ino, 0, 8 * BLOCK_SIZE, 0, user, None)),
            ),
        ];
        for (what, op) in tries.drain(..) {
            fs.fail_next_commits(2); // the operation and its retry after a checkpoint
            assert_eq!(errno(op()), libc::ENOSPC, "{what}");
            unchanged(what);
        }
    }
    fs.check_space().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    let fs = open(&path);
    let after = fs.getattr(ino).unwrap();
    assert_eq!((after.size, after.perm), (before.size, before.perm));
    assert!(fs.read(ino, 0, data.len() as u32).unwrap() == data);
}

#[path = "../common/mod.rs"]
mod common;

/// The mount-level sequences of case 3, through the kernel: `df` shows the reserve as not
/// available, and unmount leaves a clean image with nothing to replay.
mod mounted {
    use super::common::{skip_without_fuse, Mount};
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn statvfs(p: &std::path::Path) -> libc::statvfs {
        let c = super::common::cstr(p);
        // SAFETY: statvfs into a zeroed struct we own, with a NUL-terminated path.
        unsafe {
            let mut s: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
            s
        }
    }

    fn chmod(p: &std::path::Path, mode: u32) -> std::io::Result<()> {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
    }

    fn fsck_clean_nothing_replayed(m: &Mount) {
        let out = m.fsck();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains(" 0 journal transactions replayed"), "{text}");
    }

    #[test]
    fn a_full_mount_chmods_truncates_and_unlinks_after_8194_chmods() {
        if skip_without_fuse(module_path!()) {
            return;
        }
        let mut m = Mount::new("64M", "");
        fs::write(m.path("keep"), [0x11u8; 8192]).unwrap();
        let mut f = fs::File::create(m.path("fill")).unwrap();
        let chunk = vec![0x22u8; 1 << 20];
        let err = loop {
            if let Err(e) = f.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        drop(f);
        let st = statvfs(&m.mnt);
        assert_eq!(st.f_bavail, 0, "nothing is available to users");
        assert!(st.f_bfree > 0, "the reserve is free, not available");
        for n in 0..9000u32 {
            chmod(&m.path("keep"), 0o600 | (n & 0o77)).unwrap_or_else(|e| panic!("chmod {n}: {e}"));
        }
        fs::OpenOptions::new()
            .write(true)
            .open(m.path("keep"))
            .unwrap()
            .set_len(100)
            .unwrap();
        fs::remove_file(m.path("fill")).unwrap();
        chmod(&m.path("keep"), 0o644).unwrap();
        m.umount();
        fsck_clean_nothing_replayed(&m);
    }

    #[test]
    fn a_mount_with_free_space_in_single_blocks_keeps_creating_and_unmounts_clean() {
        if skip_without_fuse(module_path!()) {
            return;
        }
        let mut m = Mount::new("64M", "");
        let block = [0x33u8; 4096];
        let mut n = 0;
        while fs::write(m.path(&format!("f{n}")), block).is_ok() {
            n += 1;
        }
        for k in (0..n).step_by(2) {
            fs::remove_file(m.path(&format!("f{k}"))).unwrap();
        }
        let mut g = 0;
        loop {
            let p = m.path(&format!("g{g}"));
            let mut f = fs::File::create(&p).unwrap_or_else(|e| panic!("create g{g}: {e}"));
            chmod(&p, 0o600).unwrap_or_else(|e| panic!("chmod g{g}: {e}"));
            g += 1;
            if f.write_all(&block).is_err() {
                break;
            }
        }
        assert!(g > 3000, "{g} files fit in the holes");
        for k in 0..g {
            let p = m.path(&format!("g{k}"));
            chmod(&p, 0o640).unwrap_or_else(|e| panic!("chmod g{k}: {e}"));
            if k % 2 == 0 {
                fs::remove_file(&p).unwrap_or_else(|e| panic!("unlink g{k}: {e}"));
            }
        }
        m.umount();
        fsck_clean_nothing_replayed(&m);
    }
}

/// A transaction that finds the journal full (operations already admitted can fill the
/// quarter the soft limit leaves) is not the user's ENOSPC: the operation changed nothing, so
/// it runs again after the checkpoint it asked for. Chmod, truncate, write, unlink, rename,
/// link and xattrs all get through.
#[test]
fn an_operation_that_finds_the_journal_full_goes_through_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let ino = create(&fs, "f").unwrap();
    let ops: Vec<(&str, Box<Op<'_>>)> = vec![
        ("chmod", Box::new(|| chmod(&fs, ino, 0o600))),
        (
            "write",
            Box::new(|| fs.write(ino, 0, b"data", Caller::ROOT).map(|_| ())),
        ),
        ("truncate", Box::new(|| truncate(&fs, ino, 2, Caller::ROOT))),
        (
            "setxattr",
            Box::new(|| fs.setxattr(ino, b"user.k", b"v", 0)),
        ),
        ("removexattr", Box::new(|| fs.removexattr(ino, b"user.k"))),
        (
            "link",
            Box::new(|| fs.link(ino, ROOT_INO, b"g").map(|_| ())),
        ),
        (
            "rename",
            Box::new(|| fs.rename(ROOT_INO, b"g", ROOT_INO, b"h", 0)),
        ),
        ("unlink", Box::new(|| fs.remove(ROOT_INO, b"h", false))),
        ("create", Box::new(|| create(&fs, "n").map(|_| ()))),
    ];
    for (what, op) in &ops {
        fs.fail_next_commits(1);
        op().unwrap_or_else(|e| panic!("{what} after a full journal: {e}"));
    }
    assert_eq!(fs.read(ino, 0, 10).unwrap(), b"da");
    fs.check_space().unwrap();
}

/// An unlink (or a rename over a file) is two transactions: the name goes, then the inode
/// it was the last name of is freed. When the journal fills between them, the name is gone
/// already: the unlink must say so (success), not `ENOENT` from running it once more after
/// the checkpoint, and the inode must still be freed (its blocks free again, nothing left to
/// replay). It answered `ENOENT` (the rename too) with the name gone.
#[test]
fn an_unlink_whose_freeing_finds_the_journal_full_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let block = vec![0x44u8; 16 * BLOCK_SIZE as usize];
    let gone = create(&fs, "gone").unwrap();
    fs.write(gone, 0, &block, Caller::ROOT).unwrap();
    fs.forget(gone, 1);
    let free_before = fs.statfs().free;
    fs.fail_commits_after(1, 1); // the Unlink goes in, the Free is refused
    assert_eq!(
        fs.remove(ROOT_INO, b"gone", false).map_err(|e| e.errno()),
        Ok(())
    );
    assert_eq!(errno(fs.lookup(ROOT_INO, b"gone")), libc::ENOENT);
    assert_eq!(
        fs.statfs().free,
        free_before + 16,
        "the unlinked file's blocks are free again"
    );
    assert_eq!(errno(fs.getattr(gone)), libc::ENOENT, "the inode is freed");

    let src = create(&fs, "src").unwrap();
    fs.write(src, 0, b"new", Caller::ROOT).unwrap();
    let victim = create(&fs, "victim").unwrap();
    fs.write(victim, 0, &block, Caller::ROOT).unwrap();
    fs.forget(victim, 1);
    let free_before = fs.statfs().free;
    fs.fail_commits_after(1, 1); // the Rename goes in, the victim's Free is refused
    assert_eq!(
        fs.rename(ROOT_INO, b"src", ROOT_INO, b"victim", 0)
            .map_err(|e| e.errno()),
        Ok(())
    );
    assert_eq!(fs.lookup(ROOT_INO, b"victim").unwrap().ino, src);
    assert_eq!(fs.read(src, 0, 10).unwrap(), b"new");
    assert_eq!(fs.statfs().free, free_before + 16);
    fs.check_space().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean_image(&path);
}

/// Overwrites of a file's blocks journal nothing; each `fsync` after one journals the new
/// times. A program that only overwrites and fsyncs (a database's log) filled the journal
/// past its soft limit with nothing asking for the checkpoint that empties it, and then
/// every `fsync` failed with `ENOSPC` on an all but empty filesystem. Every fsync and
/// fdatasync succeeds, and the image stays clean.
#[test]
fn overwrites_and_fsyncs_alone_never_fill_the_journal() {
    // Memory-backed where the host has it: each fsync syncs the image file.
    let dir = tempfile::Builder::new()
        .prefix("pinfs-space")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let path = image(&dir, 4 << 20);
    let fs = open(&path);
    let ino = create(&fs, "log").unwrap();
    fs.write(ino, 0, &[0u8; 4096], Caller::ROOT).unwrap();
    // The journal is 1 MiB; each fsync's transaction about 90 bytes.
    for n in 0..30_000u32 {
        fs.write(ino, (n % 4096) as u64, &[n as u8], Caller::ROOT)
            .unwrap_or_else(|e| panic!("overwrite {n}: {e}"));
        fs.fsync(ino, n % 2 == 1)
            .unwrap_or_else(|e| panic!("fsync {n} after an overwrite: {e}"));
    }
    fs.check_space().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean_image(&path);
}

/// Blocks a change frees are reused only once its journal entry is durable; a write that
/// finds no other room makes the journal durable itself and gets them, rather than failing
/// with `ENOSPC` while `df` shows them free. (No background thread here: nothing else
/// flushes the journal.)
#[test]
fn a_full_filesystem_writes_into_blocks_a_truncate_just_freed() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let victim = create(&fs, "victim").unwrap();
    let end = fill(&fs, victim, 0);
    truncate(&fs, victim, 0, Caller::ROOT).unwrap();
    let st = fs.statfs();
    assert!(
        st.available * BLOCK_SIZE >= end,
        "df counts the truncated blocks as available at once ({} blocks available, {end} bytes freed)",
        st.available
    );
    assert_eq!(st.busy, 0, "freed blocks are not a holder's busy blocks");
    let next = create(&fs, "next").unwrap();
    let data = vec![0x77u8; end as usize];
    let mut at = 0;
    while at < end {
        match fs.write(next, at, &data[at as usize..], Caller::ROOT) {
            Ok(n) => at += n as u64,
            Err(e) => panic!("write at {at} of {end} into the freed space: {e}"),
        }
    }
    assert_eq!(fs.read(next, 0, 1 << 20).unwrap(), data[..1 << 20]);
    fs.check_space().unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean_image(&path);
}

/// A revoking truncate whose own transaction is refused after the revocation moved the
/// holder's blocks out: the truncate fails with `ENOSPC` and the file keeps its size and
/// bytes; the revocation has completed (the lease says revoked) and the holder's later
/// stores reach nothing.
#[test]
fn a_revoking_truncate_refused_after_the_move_fails_whole_and_the_holder_stays_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (p, ino) = pinned_setup(&dir, Policy::Revoke, 100);
    let size = p.fs.getattr(ino).unwrap().size;
    p.fs.fail_commits_after(1, 2); // the move goes in; the truncate and its retry do not
    assert_eq!(
        truncate(&p.fs, ino, BLOCK_SIZE, BREAKER).map_err(|e| e.errno()),
        Err(libc::ENOSPC)
    );
    assert_eq!(p.fs.getattr(ino).unwrap().size, size);
    assert_eq!(p.state(), Some(LeaseState::Revoked));
    p.window[..5].copy_from_slice(b"after");
    assert_eq!(p.fs.read(ino, 0, 5).unwrap(), b"under");
    p.fs.check_space().unwrap();
}

/// An unmount right after a delete, with the delete's entry not yet durable: the clean
/// checkpoint records the freed blocks as free, so the next mount has all the space back.
#[test]
fn an_unmount_right_after_a_delete_gives_all_the_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(&dir, 64 << 20);
    let fs = open(&path);
    let empty = fs.statfs();
    let ino = create(&fs, "f").unwrap();
    fs.write(ino, 0, &vec![0x33u8; 8 << 20], Caller::ROOT)
        .unwrap();
    fs.remove(ROOT_INO, b"f", false).unwrap();
    fs.forget(ino, 1);
    assert_eq!(fs.statfs().free, empty.free, "df right after the delete");
    fs.unmount().unwrap();
    drop(fs);
    assert_clean_image(&path);
    let fs = open(&path);
    let st = fs.statfs();
    assert_eq!(
        (st.free, st.available),
        (empty.free, empty.available),
        "space after the remount"
    );
    fs.check_space().unwrap();
    fs.unmount().unwrap();
}

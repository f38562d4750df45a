//! Busy blocks at a checkpoint, then kill -9, on a real mount: a holder pins a file and
//! ignores the break of a truncate, so the file's blocks go busy; thousands of chmods make
//! the daemon checkpoint (the checkpoint stores busy blocks as used); the daemon is killed.
//! No holder survives the daemon, so after the crash those blocks are free: fsck is clean,
//! the image mounts, and df counts them free.

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use pinfs::holder::client::Connection;
use pinfs::holder::protocol::{socket_path, Packet, Reply, Request};

const FILE_BLOCKS: u64 = 256;

fn busy_blocks(mnt: &Path) -> u64 {
    let s = Connection::for_path(mnt).unwrap().status(false).unwrap();
    let s: pinfs::fs::status::Status = serde_json::from_str(&s).unwrap();
    s.space.busy_blocks
}

fn free_blocks(mnt: &Path) -> u64 {
    let c = cstr(mnt);
    // SAFETY: statvfs with a NUL-terminated path and a zeroed struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bfree
}

/// The highest generation of the two superblock copies, read from the image file (the
/// daemon holds the image lock).
fn generation(image: &Path) -> u64 {
    let f = fs::File::open(image).unwrap();
    (0..2u64)
        .map(|slot| {
            let mut b = [0u8; 48];
            f.read_exact_at(&mut b, slot * 4096).unwrap();
            if &b[..8] == b"PINFSimg" {
                u64::from_le_bytes(b[40..48].try_into().unwrap())
            } else {
                0
            }
        })
        .max()
        .unwrap()
}

#[test]
fn busy_blocks_at_a_checkpoint_are_free_after_kill_9() {
    if skip_without_fuse("busy_blocks_at_a_checkpoint_are_free_after_kill_9") {
        return;
    }
    let mut m = Mount::new("64M", "break_policy=revoke,lease_break_time=0.3");
    let path = m.path("f");
    let f = new_file(&path);
    f.write_all_at(&vec![0x42; (FILE_BLOCKS * 4096) as usize], 0)
        .unwrap();
    f.sync_all().unwrap();
    let free_with_file = free_blocks(&m.mnt);

    // A holder that pins the whole file and never answers the break.
    let dev = fs::metadata(&m.mnt).unwrap().dev();
    let sock = Packet::connect(&socket_path(dev)).expect("connect to the holder socket");
    let pin = Request::Pin {
        offset: 0,
        len: FILE_BLOCKS * 4096,
        read_only: false,
        unbreakable: false,
    };
    sock.send(&pin.encode("1"), &[f.as_raw_fd()]).unwrap();
    let (reply, _windows) = loop {
        let (b, fds) = sock.recv().unwrap().expect("a reply");
        if b.starts_with(b"event ") {
            continue;
        }
        let (id, reply) = Reply::parse(&b).unwrap();
        if id == "1" {
            break (reply, fds);
        }
    };
    assert!(
        matches!(reply, Reply::Pinned(_)),
        "the pin is granted: {reply:?}"
    );
    // From another process (a holder breaking its own lease gets EDEADLK), blocking:
    // waits out the break time, then revokes the holder.
    let c = cstr(&path);
    // SAFETY: the child only calls truncate(2) and _exit(2), both async-signal-safe.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
        unsafe {
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            })
        };
    }
    let mut status = 0;
    // SAFETY: waitpid of our own child into a local.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the truncate succeeds once the holder is revoked (errno {})",
        libc::WEXITSTATUS(status)
    );
    assert_eq!(
        busy_blocks(&m.mnt),
        FILE_BLOCKS,
        "the file's blocks are busy"
    );

    let checkpointed = generation(&m.image);
    let other = m.path("chmod-me");
    drop(new_file(&other));
    let mut n = 0;
    while generation(&m.image) == checkpointed {
        fs::set_permissions(&other, fs::Permissions::from_mode(0o600 + (n % 2) * 0o44)).unwrap();
        n += 1;
        assert!(n < 100_000, "no checkpoint after {n} chmods"); // about 9000 here
    }
    assert_eq!(
        busy_blocks(&m.mnt),
        FILE_BLOCKS,
        "still busy at the checkpoint"
    );

    // SAFETY: kill(2) of the daemon this test mounted.
    assert_eq!(
        unsafe { libc::kill(m.daemon_pid() as i32, libc::SIGKILL) },
        0
    );
    drop(sock);
    drop(f);
    m.umount(); // the dead mount; waits until the image lock is free

    let out = m.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck after kill -9 with busy blocks at the checkpoint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    m.mount("");
    assert_eq!(busy_blocks(&m.mnt), 0);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    let free = free_blocks(&m.mnt);
    // The checkpoint's own size may differ by a block or two between mounts.
    assert!(
        free + 4 >= free_with_file + FILE_BLOCKS,
        "df counts the once-busy blocks free: {free} free now, {free_with_file} with the file"
    );
    m.umount();
    assert_eq!(m.fsck().status.code(), Some(0));
}

//! The ioctls the kernel forwards to the daemon, decoded from their Linux ABI: the inode
//! flags (`FS_IOC_GETFLAGS`/`SETFLAGS` for `chattr` and `lsattr`, `FS_IOC_FSGETXATTR`/
//! `FSSETXATTR` for `xfs_io chattr`), which the kernel sends from `fuse_fileattr_get`/`_set`
//! after its own owner and `CAP_LINUX_IMMUTABLE` checks; and the shutdown ioctl
//! (`FS_IOC_SHUTDOWN`, which is XFS's `XFS_IOC_GOINGDOWN` and ext4's `EXT4_IOC_SHUTDOWN`).
//! Anything else is `ENOTTY`.

use crate::error::FsError;
use crate::fs::{Caller, Fs};

/// `FS_IOC_GETFLAGS` and `FS_IOC_SETFLAGS` (`_IOR`/`_IOW('f', 1|2, long)`; the kernel passes
/// an `unsigned int`), with the size of the kernel's `long`: the numbers `fuse_fileattr_get`
/// and `_set` send. Not their 32-bit forms (`FS_IOC32_*`): the kernel turns a 32-bit
/// process's into these before the VFS checks, so one that reaches the daemon is a raw
/// ioctl FUSE forwarded unchecked, and answering it would let an owner without
/// `CAP_LINUX_IMMUTABLE` clear or set `i` and `a`.
const LONG: u32 = std::mem::size_of::<libc::c_long>() as u32;
const FS_IOC_GETFLAGS: u32 = 0x8000_6601 | (LONG << 16);
const FS_IOC_SETFLAGS: u32 = 0x4000_6602 | (LONG << 16);
/// `FS_IOC_FSGETXATTR` and `FS_IOC_FSSETXATTR` (`_IOR`/`_IOW('X', 31|32, struct fsxattr)`).
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// `struct fsxattr`: xflags, extsize, nextents, projid, cowextsize, 8 bytes of padding.
const FSXATTR_SIZE: usize = 28;

/// `FS_IOC_SHUTDOWN`: `_IOR('X', 125, __u32)`. Its direction says "read", but the caller
/// passes the flag *in*, so the kernel, which copies only what the direction says, gives a
/// FUSE daemon no data: the request carries the address of the flag in the caller's memory.
pub const FS_IOC_SHUTDOWN: u32 = 0x8004_587d;

/// The shutdown ioctl: for a caller with `CAP_SYS_ADMIN` in the daemon's user namespace, as
/// XFS and ext4 ask (`capable(CAP_SYS_ADMIN)`; uid 0 alone is not enough: a container's root
/// without the capability must not shut a shared mount down), the flag read from the
/// caller's memory at `arg` with `process_vm_readv` (the daemon runs as root), then
/// [`Fs::shutdown`]. The pid is FUSE's, in the daemon's pid namespace (0 for a caller outside
/// it, which is refused); the caller waits in the ioctl meanwhile, so the pid stays its own.
pub(crate) fn shutdown_ioctl(fs: &Fs, arg: u64, who: Caller) -> Result<(), FsError> {
    if who.uid != 0 || !may_sys_admin(who.pid) {
        return Err(FsError::NotPermitted);
    }
    let flag = read_caller_u32(who.pid, arg).map_err(|e| {
        tracing::warn!(
            pid = who.pid,
            "the shutdown ioctl's flag could not be read: {e}"
        );
        FsError::Fault
    })?;
    let flush = crate::fs::ShutdownFlush::from_ioctl(flag)
        .ok_or(FsError::Invalid("unknown shutdown flag"))?;
    fs.shutdown(flush)
}

/// `CAP_SYS_ADMIN`'s bit in `/proc/PID/status`'s `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;

/// Does process `pid` have `CAP_SYS_ADMIN` in the daemon's user namespace (its effective
/// set has it, and it lives in the daemon's user namespace, not a child one, where the
/// capability would be over that namespace only)? No when either cannot be read.
fn may_sys_admin(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    if pid == 0 {
        return false;
    }
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let same_ns = match (
        ns(&format!("/proc/{pid}/ns/user")),
        ns("/proc/self/ns/user"),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    same_ns && eff.is_some_and(|e| e & (1 << CAP_SYS_ADMIN) != 0)
}

/// Four bytes at address `addr` of process `pid`'s memory.
fn read_caller_u32(pid: u32, addr: u64) -> std::io::Result<u32> {
    let mut buf = [0u8; 4];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: process_vm_readv writes at most `local.iov_len` bytes into `buf`, which lives
    // across the call; the remote address is only read by the kernel, in the other process,
    // which fails with EFAULT where it is not mapped.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(u32::from_ne_bytes(buf))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One inode-flag ioctl: the bytes to answer with, `None` for a change of flags.
pub(crate) fn flag_ioctl(
    fs: &Fs,
    ino: u64,
    cmd: u32,
    input: &[u8],
    out_size: u32,
    who: Caller,
) -> Result<Option<Vec<u8>>, FsError> {
    use crate::meta::inode::flags;
    let short = FsError::Invalid("ioctl argument shorter than its type");
    match cmd {
        FS_IOC_GETFLAGS => {
            let f = fs.flags(ino)?.to_ne_bytes();
            Ok(Some(f[..(out_size as usize).min(4)].to_vec()))
        }
        FS_IOC_SETFLAGS => {
            let f = u32_at(input, 0).ok_or(short)?;
            fs.set_flags(ino, f, who)?;
            Ok(None)
        }
        FS_IOC_FSGETXATTR => {
            let mut out = vec![0u8; FSXATTR_SIZE];
            out[..4].copy_from_slice(&flags::to_xflags(fs.flags(ino)?).to_ne_bytes());
            out.truncate(out_size as usize);
            Ok(Some(out))
        }
        FS_IOC_FSSETXATTR => {
            let xflags = u32_at(input, 0).ok_or(short)?;
            // Extent size hints and project ids are XFS's: pinfs has none to set.
            let others = [4, 12, 16].iter().map(|&at| u32_at(input, at).unwrap_or(0));
            if others.into_iter().any(|v| v != 0) {
                return Err(FsError::NotSupported);
            }
            let f = flags::from_xflags(xflags).ok_or(FsError::NotSupported)?;
            fs.set_flags(ino, f, who)?;
            Ok(None)
        }
        _ => Err(FsError::NoTty),
    }
}

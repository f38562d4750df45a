//! Remounting a live mount: `mount -o remount,ro MOUNTPOINT` (mount(8) hands it to the helper
//! as `pinfs IMAGE MOUNTPOINT -o remount,...`) and `pinfs mount IMAGE MOUNTPOINT -o remount,...`.
//!
//! What a remount changes, as for a kernel filesystem: `ro`/`rw`; the per-mount flags the
//! kernel keeps (`nosuid`, `nodev`, `noexec`, and the access-time flags it shows); and of
//! pinfs's own options the ones that can change live: `lease_break_time`, `break_policy`,
//! `guest_break_time`. Every other option named must equal the mount's own setting, or the
//! remount is refused naming it and nothing changes. Options the remount does not name keep
//! their values (the kernel's flags included: they are read from the mount and passed back).
//!
//! Order: going read-only, the kernel is remounted first (it refuses with `EBUSY` while a file
//! is open for writing), then the daemon (which refuses with `EBUSY` while a writable pin is
//! granted; the kernel flag is then put back) writes a clean checkpoint. Going read-write, the
//! daemon marks the image in use first, then the kernel lets writes through.

use std::path::Path;

use crate::fs::options::MountOptions;
use crate::fs::Fs;

/// Keys a remount applies in the daemon.
const LIVE: &[&str] = &["lease_break_time", "break_policy", "guest_break_time"];
/// Keys that are the kernel's per-mount flags (applied by the remount system call).
const KERNEL: &[&str] = &[
    "ro", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
];
/// Options mount(8) passes back from the mount table that belong to the FUSE connection
/// (fixed for its life) or name the source.
const CONNECTION: &[&str] = &[
    "user_id",
    "group_id",
    "default_permissions",
    "max_read",
    "blksize",
    "fsname",
    "subtype",
];

/// Does this option list ask for a remount?
pub fn is_remount(list: &str) -> bool {
    list.split(',').any(|o| o.trim() == "remount")
}

fn keys(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "remount")
        .map(|o| o.split_once('=').map_or(o, |(k, _)| k))
        .collect()
}

/// Checks that a `remount,...` list parses (names and values), before anything is asked of
/// the mount.
pub fn check_list(list: &str) -> Result<(), String> {
    MountOptions::parse(&without_remount(list)).map(|_| ())
}

/// The list without `remount` and without the FUSE connection's own options.
fn without_remount(list: &str) -> String {
    list.split(',')
        .map(str::trim)
        .filter(|o| {
            let k = o.split_once('=').map_or(*o, |(k, _)| k);
            !o.is_empty() && *o != "remount" && !CONNECTION.contains(&k)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The daemon's side: checks the options against the mount's and applies them. `Err` is an
/// errno and a message; on an error nothing changed.
pub fn apply(fs: &Fs, mounted: &MountOptions, list: &str) -> Result<(), (i32, String)> {
    let list = without_remount(list);
    let want = MountOptions::parse(&list).map_err(|e| (libc::EINVAL, e))?;
    let given = keys(&list);
    for &k in &given {
        if LIVE.contains(&k) || KERNEL.contains(&k) {
            continue;
        }
        if !same_fixed(k, &want, mounted) {
            return Err((
                libc::EINVAL,
                format!("mount option '{k}' cannot change on a remount; unmount and mount again"),
            ));
        }
    }
    let read_only = if given.contains(&"ro") || given.contains(&"rw") {
        Some(want.read_only)
    } else {
        None
    };
    if let Some(ro) = read_only {
        fs.remount(ro).map_err(|e| (e.errno(), e.to_string()))?;
    }
    let now = fs.leases().config();
    let pick = |k: &str| given.contains(&k);
    fs.leases().set_live(
        if pick("lease_break_time") {
            want.leases.break_time
        } else {
            now.break_time
        },
        if pick("break_policy") {
            want.leases.policy
        } else {
            now.policy
        },
        if pick("guest_break_time") {
            want.leases.guest_break_time
        } else {
            now.guest_break_time
        },
    );
    Ok(())
}

/// Whether option `k` (one fixed for the mount's life) has the same value in `want` as in
/// `mounted`. Keys that name no setting (defaults, `x-*`, ...) are the same by definition.
fn same_fixed(k: &str, want: &MountOptions, mounted: &MountOptions) -> bool {
    match k {
        "threads" => want.threads == mounted.threads,
        "lock_wait" => want.lock_wait == mounted.lock_wait,
        "allow_other" | "noallow_other" => {
            let euid = rustix::process::geteuid().as_raw();
            want.others_allowed(euid) == mounted.others_allowed(euid)
        }
        "atime" | "strictatime" | "relatime" | "noatime" => want.atime == mounted.atime,
        "acl" | "noacl" => want.acl == mounted.acl,
        "volatile_cache" => mounted.volatile_cache,
        "busy_blocks" => want.leases.busy_blocks == mounted.leases.busy_blocks,
        "detach_windows" => want.leases.detach_windows == mounted.leases.detach_windows,
        "max_pinned" => want.leases.max_pinned == mounted.leases.max_pinned,
        "allow_unbreakable" => mounted.leases.allow_unbreakable,
        _ => true,
    }
}

/// The daemon's side of a second mount of its image ([`crate::daemon::share`]): the new
/// mount shares this filesystem, so every pinfs option its list names must equal the
/// filesystem's current setting, the live ones included, and `ro`/`rw` must match its
/// state (a kernel filesystem refuses a second mount that would change it, with `EBUSY`).
/// The kernel's per-mount flags (`nosuid`, `nodev`, `noexec`) may differ: they belong to
/// the new mount alone. Changes nothing.
pub fn check_share(fs: &Fs, mounted: &MountOptions, list: &str) -> Result<(), (i32, String)> {
    let list = without_remount(list);
    let want = MountOptions::parse(&list).map_err(|e| (libc::EINVAL, e))?;
    if want.read_only != fs.ro() {
        let (is, asked) = if fs.ro() {
            ("read-only", "read-write")
        } else {
            ("read-write", "read-only")
        };
        return Err((
            libc::EBUSY,
            format!("the filesystem is {is}, so a second mount of it cannot be {asked}: ask for the same, or remount the first mount"),
        ));
    }
    let now = fs.leases().config();
    for k in keys(&list) {
        let same = match k {
            "lease_break_time" => want.leases.break_time == now.break_time,
            "break_policy" => want.leases.policy == now.policy,
            "guest_break_time" => want.leases.guest_break_time == now.guest_break_time,
            k if KERNEL.contains(&k) => true,
            k => same_fixed(k, &want, mounted),
        };
        if !same {
            return Err((
                libc::EINVAL,
                format!("mount option '{k}' differs from the filesystem's current setting: ask for the same value, or remount the first mount to change it"),
            ));
        }
    }
    Ok(())
}

/// The per-mount flags of the mount at `mnt`, as `mount(2)` takes them.
fn mount_flags(mnt: &Path) -> Result<libc::c_ulong, String> {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: the path holds a NUL byte", mnt.display()))?;
    let st = rustix::fs::statvfs(c.as_c_str())
        .map_err(|e| format!("{}: {}", mnt.display(), std::io::Error::from(e)))?;
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag.bits() & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn kernel_remount(mnt: &Path, flags: libc::c_ulong) -> Result<(), std::io::Error> {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mount(2) with a NUL-terminated target, no source, type or data: a remount of an
    // existing mount with the given flags.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The command's side: remounts the pinfs mount at `mnt` with the options in `list`.
pub fn run(mnt: &Path, list: &str) -> Result<(), String> {
    let list = without_remount(list);
    MountOptions::parse(&list)?;
    let given = keys(&list);
    let old = mount_flags(mnt)?;
    let mut new = old;
    for &k in &given {
        let (set, clear) = match k {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            _ => (0, 0),
        };
        new = (new | set) & !clear;
    }
    let mut conn = crate::holder::client::Connection::for_path(mnt).map_err(|e| {
        format!(
            "{}: not a pinfs mount, or its daemon does not answer: {e}",
            mnt.display()
        )
    })?;
    let to_ro = new & libc::MS_RDONLY != 0 && old & libc::MS_RDONLY == 0;
    let fail = |e: std::io::Error| format!("{}: remount: {e}", mnt.display());
    if to_ro {
        kernel_remount(mnt, new).map_err(fail)?;
        if let Err(e) = conn.remount(&list) {
            // Put the kernel's flags back: the remount changes nothing when it fails.
            let _ = kernel_remount(mnt, old);
            return Err(format!("{}: remount: {e}", mnt.display()));
        }
    } else {
        conn.remount(&list)
            .map_err(|e| format!("{}: remount: {e}", mnt.display()))?;
        if new != old {
            kernel_remount(mnt, new).map_err(fail)?;
        }
    }
    Ok(())
}

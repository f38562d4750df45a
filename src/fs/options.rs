//! Mount options: the standard ones every Linux filesystem takes, and pinfs's own.
//!
//! Unknown options are refused by name, so a typo never silently mounts with defaults.

use std::time::Duration;

use crate::fs::AtimeMode;
use crate::lease::{LeaseConfig, PinLimit, Policy};

/// Parsed mount options.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// `ro`.
    pub read_only: bool,
    /// `dev` (device nodes work); FUSE's default is `nodev`.
    pub dev: bool,
    /// `suid` (set-uid bits honoured); FUSE's default is `nosuid`.
    pub suid: bool,
    /// `noexec` when false.
    pub exec: bool,
    /// Access-time policy: `strictatime`/`atime`, `relatime` (default), `noatime`.
    pub atime: AtimeMode,
    /// `allow_other` (`Some(true)`) or pinfs's `noallow_other` (`Some(false)`): whether users
    /// other than the mounter may use the mount. Unsaid, a mount by root allows them, as a
    /// kernel filesystem does (permissions still apply: `default_permissions` is always on);
    /// see [`MountOptions::others_allowed`].
    pub allow_other: Option<bool>,
    /// `acl` (the default) or `noacl`: POSIX ACLs, enforced by the kernel.
    pub acl: bool,
    /// `volatile_cache`: the image file holds only what was made durable; a shutdown with
    /// `--flush none` is then a power cut (see the README's "What is durable").
    pub volatile_cache: bool,
    /// Request-handling threads (`threads=N`); default: the number of CPUs.
    pub threads: Option<usize>,
    /// Seconds to wait for the image lock (`lock_wait=SECONDS`, default 10).
    pub lock_wait: f64,
    /// `lease_break_time=SECONDS` (0: never), `break_policy=wait|refuse|revoke`,
    /// `busy_blocks=on|off`, `guest_break_time=SECONDS` (more than 0), `allow_unbreakable`.
    pub leases: LeaseConfig,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            dev: false,
            suid: false,
            exec: true,
            atime: AtimeMode::Relative,
            allow_other: None,
            acl: true,
            volatile_cache: false,
            threads: None,
            lock_wait: 10.0,
            leases: LeaseConfig::default(),
        }
    }
}

/// Options that mount(8) and its helpers pass along and that have no effect on a FUSE mount.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "async",
    "sync",
    "dirsync",
    "default_permissions",
    "nodiratime",
    "diratime",
    "lazytime",
    "nolazytime",
    "loud",
    "silent",
    "owner",
    "group",
];

/// The value of a switch option, `on` or `off`.
fn on_off(opt: &str, key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("mount option '{opt}': {key} is on or off")),
    }
}

/// The longest time any option takes: 365 days, in seconds. Deadlines are instants that
/// far ahead at most, so that no clock arithmetic can overflow.
pub const MAX_SECONDS: f64 = 365.0 * 86_400.0;

/// What a time option accepts, besides numbers up to [`MAX_SECONDS`].
struct SecondsRange {
    /// The smallest value other than 0 (a deadline shorter than a millisecond cannot be
    /// met, and rounds to nothing).
    min: f64,
    /// What 0 means when `min` is more than 0 and 0 is allowed all the same.
    zero: Option<&'static str>,
    /// Why 0 is refused, when `min` is more than 0 and `zero` is `None`.
    no_zero: &'static str,
}

const LOCK_WAIT: SecondsRange = SecondsRange {
    min: 0.0,
    zero: None,
    no_zero: "",
};
const BREAK_TIME: SecondsRange = SecondsRange {
    min: 0.001,
    zero: Some("no deadline"),
    no_zero: "",
};
const GUEST_BREAK_TIME: SecondsRange = SecondsRange {
    min: 0.001,
    zero: None,
    no_zero: "a guest lease's break needs a deadline",
};

/// The value of a time option, in seconds: a finite number in its range, or an error that
/// names the option, the value and the range.
fn seconds(opt: &str, key: &str, v: Option<&str>, range: SecondsRange) -> Result<f64, String> {
    let n = v.and_then(|v| v.trim().parse::<f64>().ok());
    let in_range = |n: &f64| {
        if *n == 0.0 {
            range.min == 0.0 || range.zero.is_some()
        } else {
            (range.min..=MAX_SECONDS).contains(n) && *n > 0.0
        }
    };
    match n.filter(in_range) {
        // -0 is 0.
        Some(n) => Ok(if n == 0.0 { 0.0 } else { n }),
        None => {
            let zero = match (range.min == 0.0, range.zero) {
                (true, _) => String::new(),
                (false, Some(means)) => format!(", or 0 ({means})"),
                (false, None) => format!(" ({})", range.no_zero),
            };
            Err(format!(
                "mount option '{opt}': {key} is a number of seconds from {} to {MAX_SECONDS} (365 days){zero}",
                range.min
            ))
        }
    }
}

impl MountOptions {
    /// Whether users other than the mounter may use the mount, for a daemon running as
    /// `euid`: what the options say, else yes for root (a filesystem root mounts stands in for
    /// a kernel one, which every user reaches through its permissions) and no for anyone else
    /// (FUSE's own default, and a user's mount needs `user_allow_other` to open it up).
    pub fn others_allowed(&self, euid: u32) -> bool {
        self.allow_other.unwrap_or(euid == 0)
    }

    /// Parses a comma-separated option list (several `-o` lists may be joined with commas).
    pub fn parse(list: &str) -> Result<MountOptions, String> {
        let mut o = MountOptions::default();
        for opt in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("rw", None) => o.read_only = false,
                ("ro", None) => o.read_only = true,
                ("dev", None) => o.dev = true,
                ("nodev", None) => o.dev = false,
                ("suid", None) => o.suid = true,
                ("nosuid", None) => o.suid = false,
                ("exec", None) => o.exec = true,
                ("noexec", None) => o.exec = false,
                ("atime" | "strictatime", None) => o.atime = AtimeMode::Strict,
                ("relatime", None) => o.atime = AtimeMode::Relative,
                ("noatime", None) => o.atime = AtimeMode::Never,
                ("allow_other", None) => o.allow_other = Some(true),
                ("noallow_other", None) => o.allow_other = Some(false),
                ("acl", None) => o.acl = true,
                ("noacl", None) => o.acl = false,
                ("volatile_cache", None) => o.volatile_cache = true,
                ("threads", v) => {
                    let n = v.and_then(|v| v.parse::<usize>().ok()).filter(|n| (1..=256).contains(n));
                    o.threads = Some(n.ok_or_else(|| {
                        format!("mount option '{opt}': threads is a whole number from 1 to 256")
                    })?);
                }
                ("lock_wait", v) => o.lock_wait = seconds(opt, key, v, LOCK_WAIT)?,
                ("lease_break_time", v) => {
                    let secs = seconds(opt, key, v, BREAK_TIME)?;
                    o.leases.break_time = (secs > 0.0).then(|| Duration::from_secs_f64(secs));
                }
                ("break_policy", Some(v)) => {
                    o.leases.policy = Policy::parse(v).ok_or_else(|| format!("mount option '{opt}': the policy is wait, refuse or revoke"))?;
                }
                ("guest_break_time", v) => {
                    let secs = seconds(opt, key, v, GUEST_BREAK_TIME)?;
                    o.leases.guest_break_time = Duration::from_secs_f64(secs);
                }
                ("allow_unbreakable", None) => o.leases.allow_unbreakable = true,
                ("busy_blocks", Some(v)) => o.leases.busy_blocks = on_off(opt, key, v)?,
                ("detach_windows", Some(v)) => o.leases.detach_windows = on_off(opt, key, v)?,
                ("max_pinned", Some("unlimited")) => o.leases.max_pinned = Some(PinLimit::Unlimited),
                ("max_pinned", v) => {
                    let bytes = crate::store::image::parse_size(v.unwrap_or("")).map_err(|e| {
                        format!("mount option '{opt}': {e}; max_pinned is a size from 0 to 16E (bytes, or with a K, M, G or T unit, like 64M), or unlimited")
                    })?;
                    o.leases.max_pinned = Some(PinLimit::Bytes(bytes));
                }
                // mount(8) passes these for fstab entries; they name the source, not an option.
                ("fsname" | "subtype", Some(_)) => {}
                (k, None) if IGNORED.contains(&k) || k.starts_with("x-") => {}
                _ => {
                    return Err(format!(
                        "unknown mount option '{opt}' (pinfs takes rw, ro, dev, nodev, suid, nosuid, exec, noexec, atime, relatime, noatime, allow_other, noallow_other, acl, noacl, volatile_cache, default_permissions, threads=N, lock_wait=SECONDS, lease_break_time=SECONDS, break_policy=wait|refuse|revoke, busy_blocks=on|off, detach_windows=on|off, max_pinned=SIZE|unlimited, guest_break_time=SECONDS, allow_unbreakable)"
                    ))
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfstests_options_parse() {
        let o = MountOptions::parse("rw,dev,suid,noatime,allow_other,default_permissions").unwrap();
        assert!(o.dev && o.suid && o.allow_other == Some(true) && !o.read_only);
        assert_eq!(o.atime, AtimeMode::Never);
    }

    #[test]
    fn unknown_options_are_named() {
        let e = MountOptions::parse("rw,no_such_option").unwrap_err();
        assert!(e.contains("no_such_option"), "{e}");
        assert!(MountOptions::parse("threads=0").is_err());
        assert!(MountOptions::parse("threads=x").is_err());
        assert_eq!(MountOptions::parse("threads=3").unwrap().threads, Some(3));
        assert!(MountOptions::parse("break_policy=maybe")
            .unwrap_err()
            .contains("wait, refuse or revoke"));
        assert!(MountOptions::parse("busy_blocks=yes").is_err());
        assert!(MountOptions::parse("lease_break_time=-1").is_err());
    }

    #[test]
    fn numeric_options_take_their_whole_range() {
        let o = MountOptions::parse(
            "lock_wait=31536000,lease_break_time=31536000,guest_break_time=0.001,threads=256",
        )
        .unwrap();
        assert_eq!(o.lock_wait, MAX_SECONDS);
        assert_eq!(o.leases.break_time, Some(Duration::from_secs(31_536_000)));
        assert_eq!(o.leases.guest_break_time, Duration::from_millis(1));
        assert_eq!(o.threads, Some(256));
        let o =
            MountOptions::parse("lock_wait=0,lease_break_time=-0,threads=1,max_pinned=0").unwrap();
        assert_eq!((o.lock_wait, o.leases.break_time), (0.0, None));
        assert_eq!(o.leases.max_pinned, Some(PinLimit::Bytes(0)));
        let e = MountOptions::parse("lease_break_time=1e30").unwrap_err();
        assert_eq!(e, "mount option 'lease_break_time=1e30': lease_break_time is a number of seconds from 0.001 to 31536000 (365 days), or 0 (no deadline)");
    }

    #[test]
    fn lease_options() {
        let o = MountOptions::parse("lease_break_time=0.25,break_policy=refuse,busy_blocks=off")
            .unwrap();
        assert_eq!(o.leases.break_time, Some(Duration::from_millis(250)));
        assert_eq!(o.leases.policy, Policy::Refuse);
        assert!(!o.leases.busy_blocks);
        assert_eq!(
            MountOptions::parse("lease_break_time=0")
                .unwrap()
                .leases
                .break_time,
            None
        );
        let o = MountOptions::parse("guest_break_time=1.5,allow_unbreakable").unwrap();
        assert_eq!(o.leases.guest_break_time, Duration::from_millis(1500));
        assert!(o.leases.allow_unbreakable);
        assert!(MountOptions::parse("guest_break_time=0")
            .unwrap_err()
            .contains("needs a deadline"));
        let d = MountOptions::parse("").unwrap().leases;
        assert_eq!(d.guest_break_time, Duration::from_secs(45));
        assert!(!d.allow_unbreakable);
        assert_eq!(
            (d.break_time, d.policy, d.busy_blocks),
            (Some(Duration::from_secs(45)), Policy::Revoke, true)
        );
    }
}

//! The command line of `pinfs`: every command, flag and argument as clap types, from which
//! clap makes the parser, each command's `--help`, the usage errors (exit 2) and the shell
//! completions. What the commands do is in `main.rs`.
//!
//! Besides the commands, the top level takes `IMAGE MOUNTPOINT [-o OPTIONS]`: the form in
//! which mount.fuse3 runs a helper (`mount -t fuse.pinfs IMAGE MOUNTPOINT` becomes `pinfs
//! IMAGE MOUNTPOINT -o OPTIONS`), the same as `pinfs mount`.

pub mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

const MOUNT_OPTIONS: &str = "\
Mount options (-o, comma-separated; several -o lists are joined):
  rw, ro, dev, nodev, suid, nosuid, exec, noexec, atime, relatime, noatime, allow_other,
  default_permissions (always on), threads=N, lock_wait=SECONDS,
  lease_break_time=SECONDS (default 45, 0 = never), break_policy=wait|refuse|revoke
  (default revoke), busy_blocks=on|off (default on; off only to show the corruption it
  prevents), guest_break_time=SECONDS, max_pinned=SIZE|unlimited, allow_unbreakable.
  With remount: change a live mount (ro, rw, nosuid, nodev, noexec, lease_break_time,
  break_policy, guest_break_time).";

const ENVIRONMENT: &str = "\
Unmount with `umount MOUNTPOINT` (it flushes and ends the daemon).

Environment: PINFS_LOG=info|debug (the daemon's log to stderr, with --foreground or
PINFS_LOG set; otherwise a background daemon's warnings and errors go to the kernel log,
see dmesg).";

/// Make, mount and check pinfs images, hold pins, watch leases, fuzz.
///
/// pinfs is a FUSE filesystem on an image file standing in for persistent memory, with
/// layout leases and pinned-block holders.
///
/// Without a command, `pinfs IMAGE MOUNTPOINT -o OPTIONS` mounts as `pinfs mount` does:
/// that is how mount.fuse3 runs a helper, so `mount -t fuse.pinfs IMAGE MOUNTPOINT` works.
#[derive(Debug, Parser)]
#[command(
    name = "pinfs",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true,
    args_override_self = true,
    subcommand_value_name = "COMMAND",
    after_help = ENVIRONMENT,
    after_long_help = format!("{MOUNT_OPTIONS}\n\n{ENVIRONMENT}"),
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The form in which mount.fuse3 runs pinfs: the same as `pinfs mount`.
    #[command(flatten)]
    pub mount: Option<MountArgs>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make an empty filesystem in IMAGE (a sparse file).
    #[command(args_override_self = true)]
    Mkfs(MkfsArgs),
    /// Mount IMAGE on MOUNTPOINT, or change a live mount (-o remount,...).
    ///
    /// Returns once the mount is ready; the daemon runs in the background (with
    /// --foreground, in this process). `-o remount,OPTIONS` changes a live mount instead (as
    /// `mount -t fuse.pinfs -o remount,ro IMAGE MOUNTPOINT` does).
    #[command(args_override_self = true, after_long_help = MOUNT_OPTIONS)]
    Mount(MountArgs),
    /// Check (and repair) an unmounted image.
    ///
    /// Exit status: 0 clean, 1 repaired, 4 errors left, 8 the check could not run.
    #[command(args_override_self = true)]
    Fsck(FsckArgs),
    /// Pin a file's blocks and hold them, as a device would.
    ///
    /// Prints JSON lines: the grant, then each lease event. Releases the pin on a break
    /// unless --ignore-breaks.
    #[command(args_override_self = true)]
    Pin(PinArgs),
    /// Reach a pin exported with `pinfs pin --export`, as a remote peer would.
    ///
    /// Prints JSON lines: each access's result, each recall. Acks a recall (and exits)
    /// unless --ignore-recalls.
    #[command(args_override_self = true)]
    Remote(RemoteArgs),
    /// Show a mount's holders, leases, busy blocks and counters, or its lease events.
    #[command(args_override_self = true)]
    Status(StatusArgs),
    /// Revoke every lease of a holder now (root).
    #[command(args_override_self = true)]
    Fence(FenceArgs),
    /// Shut a mount down, as XFS's and ext4's shutdown ioctl does (root).
    ///
    /// Makes durable what --flush says, then every operation on the mount fails with EIO
    /// until it is unmounted; holders are fenced. The next mount replays the journal from
    /// what was durable. With the mount option volatile_cache, `--flush none` is a power cut.
    #[command(args_override_self = true)]
    Shutdown(ShutdownArgs),
    /// Run random programs of holders, breakers and writers against oracles.
    ///
    /// Concurrent on a fresh mount (root, /dev/fuse), each actor in its own thread or
    /// process; or with --serial in one thread against the filesystem core, checked against
    /// a model. Either prints a replay command.
    #[command(args_override_self = true)]
    Fuzz(FuzzArgs),
    /// Explore power cuts against the filesystem core (a crash-state explorer).
    ///
    /// Runs serial fuzzer programs (with fsyncs, renames and journal ticks) on a small
    /// image with a volatile cache; at every persistence point builds crash states (the
    /// durable state plus subsets of the unflushed 64-byte lines), mounts each and checks
    /// it: fsck clean, fsync'd files intact, no state that never existed. A failure is
    /// shrunk and printed with a replay command; exit status 1.
    #[command(args_override_self = true)]
    Crashes(CrashesArgs),
    /// Draw a trace as an SVG timeline: a row per holder, lease states as bars, breaks,
    /// deadlines, revocations and fences as markers, busy blocks as a line.
    #[command(args_override_self = true)]
    Timeline(TimelineArgs),
    /// Show every break policy at work, with and without busy blocks, for a local holder
    /// and for a remote peer that ignores the recall (and with an on-demand export).
    ///
    /// Mounts fresh images (root, /dev/fuse); exit status 1 if any outcome is not the
    /// expected one.
    Demo,
    /// Print a shell completion script.
    ///
    /// For example `pinfs completions bash > /etc/bash_completion.d/pinfs`, `pinfs
    /// completions zsh > ~/.zfunc/_pinfs`, or `pinfs completions fish >
    /// ~/.config/fish/completions/pinfs.fish`.
    Completions(CompletionsArgs),
    /// One holder process of `pinfs fuzz` (started by the fuzzer, not by hand).
    #[command(name = "fuzz-holder", hide = true)]
    FuzzHolder(FuzzHolderArgs),
}

/// `pinfs mkfs`.
#[derive(Debug, Args)]
pub struct MkfsArgs {
    /// The image file to make.
    pub image: PathBuf,
    /// The filesystem's size, like 64M, 4G, 1T (rounded down to 4 KiB blocks).
    #[arg(short, long, value_parser = values::size, allow_hyphen_values = true)]
    pub size: u64,
    /// Overwrite an existing image.
    #[arg(short, long)]
    pub force: bool,
}

/// `pinfs mount`, and the top-level form of mount.fuse3.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MountArgs {
    /// The image to mount.
    #[arg(required = true)]
    pub image: PathBuf,
    /// Where to mount it.
    #[arg(required = true)]
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated (see --help); may be given more than once.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Stay in the foreground (the daemon's log on stderr).
    #[arg(short, long)]
    pub foreground: bool,
    /// Passed by mount.fuse3; nothing to do.
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    /// Passed by mount.fuse3; nothing to do.
    #[arg(short = 'v', hide = true)]
    pub verbose: bool,
    /// Passed by mount.fuse3; nothing to do.
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
}

impl MountArgs {
    /// The `-o` lists joined into one.
    pub fn option_list(&self) -> String {
        self.options.join(",")
    }
}

/// `pinfs fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// The image to check (not mounted).
    pub image: PathBuf,
    /// Repair what can be repaired.
    #[arg(short = 'y', long)]
    pub repair: bool,
    /// The report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `pinfs pin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The file to pin (on a pinfs mount).
    pub file: PathBuf,
    /// The first byte to pin (a size: 4096, 1M).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = values::size, allow_hyphen_values = true)]
    pub offset: u64,
    /// How many bytes (a size; default: to the end of the file).
    #[arg(long, value_name = "SIZE", value_parser = values::size, allow_hyphen_values = true)]
    pub len: Option<u64>,
    /// A read-only pin.
    #[arg(long)]
    pub read_only: bool,
    /// Ask for an unbreakable lease (the mount must allow_unbreakable).
    #[arg(long)]
    pub unbreakable: bool,
    /// Never release on a break (an unresponsive holder).
    #[arg(long)]
    pub ignore_breaks: bool,
    /// Keep rewriting the pinned range with this byte (0-255 or 0x00-0xff), as a device
    /// would; with --every.
    #[arg(long, value_name = "BYTE", value_parser = values::byte, requires = "every", allow_hyphen_values = true)]
    pub write_byte: Option<u8>,
    /// How often to rewrite, in milliseconds; with --write-byte.
    #[arg(long, value_name = "MS", value_parser = values::millis, requires = "write_byte", allow_hyphen_values = true)]
    pub every: Option<Duration>,
    /// Give up the pin and exit after this many seconds (default: hold until killed).
    #[arg(long, value_name = "SECONDS", value_parser = values::seconds, allow_hyphen_values = true)]
    pub hold: Option<Duration>,
    /// Export the pinned range to remote peers through a soft NIC listening on ADDR:PORT
    /// (port 0: any); on a break, recall it from every peer and release after their acks.
    #[arg(long, value_name = "ADDR:PORT", value_parser = values::socket_addr, conflicts_with = "write_byte")]
    pub export: Option<std::net::SocketAddr>,
    /// With --export: on-demand mode (as ODP NICs): a break invalidates the region at once,
    /// with no recall and no wait, and the range is pinned again; peers' next accesses wait
    /// for it and reach its current blocks, or get BAD_KEY if the range is gone.
    #[arg(long, requires = "export")]
    pub odp: bool,
}

/// `pinfs remote`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The holder's soft NIC, as `pinfs pin --export` printed it.
    #[arg(value_parser = values::socket_addr)]
    pub nic: std::net::SocketAddr,
    /// The region's key (16 hex digits, as `pinfs pin --export` printed it).
    #[arg(long, value_name = "KEY", value_parser = values::rkey)]
    pub rkey: u64,
    /// What to do.
    #[command(subcommand)]
    pub op: RemoteOp,
    /// Repeat the access every this many milliseconds, until recalled (or killed).
    #[arg(long, global = true, value_name = "MS", value_parser = values::millis, allow_hyphen_values = true)]
    pub every: Option<Duration>,
    /// Never ack a recall: keep accessing (a remote node nobody can reach).
    #[arg(long, global = true)]
    pub ignore_recalls: bool,
}

/// A remote access.
#[derive(Debug, Subcommand)]
pub enum RemoteOp {
    /// Read LEN bytes at OFFSET of the region (printed as hex).
    Read {
        /// From the region's first byte (a size).
        #[arg(value_parser = values::size)]
        offset: u64,
        /// Bytes (a size, at most 1M).
        #[arg(value_parser = values::size)]
        len: u64,
    },
    /// Write LEN copies of BYTE at OFFSET of the region.
    Write {
        /// From the region's first byte (a size).
        #[arg(value_parser = values::size)]
        offset: u64,
        /// The byte (0-255 or 0x00-0xff).
        #[arg(value_parser = values::byte)]
        byte: u8,
        /// Bytes (a size, at most 1M).
        #[arg(value_parser = values::size)]
        len: u64,
    },
}

/// `pinfs status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A pinfs mount point (or any path on the mount).
    pub mountpoint: PathBuf,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
    /// The recent lease events instead (JSON lines).
    #[arg(long)]
    pub events: bool,
    /// The recent lease events, then each new one as it happens (JSON lines), until the
    /// unmount.
    #[arg(short, long)]
    pub follow: bool,
    /// With --follow: also write the events to FILE as a trace (Chrome trace-event JSON, for
    /// Perfetto, chrome://tracing or `pinfs timeline`), a whole trace even if interrupted.
    #[arg(long, value_name = "FILE", requires = "follow")]
    pub trace: Option<PathBuf>,
}

/// `pinfs fence`.
#[derive(Debug, Args)]
pub struct FenceArgs {
    /// A pinfs mount point.
    pub mountpoint: PathBuf,
    /// The holder's number, as `pinfs status` shows it.
    #[arg(value_parser = values::holder)]
    pub holder: u64,
}

/// `pinfs shutdown`.
#[derive(Debug, Args)]
pub struct ShutdownArgs {
    /// A pinfs mount point (or any path on the mount).
    pub mountpoint: PathBuf,
    /// What to make durable first: data (data and metadata, as syncfs), log (the journal
    /// only), none (nothing: a power cut).
    #[arg(long, value_enum, default_value = "data")]
    pub flush: ShutdownFlushArg,
}

/// `--flush` of `pinfs shutdown`: the flags of FS_IOC_SHUTDOWN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShutdownFlushArg {
    /// FS_SHUTDOWN_FLAGS_DEFAULT: data and metadata.
    Data,
    /// FS_SHUTDOWN_FLAGS_LOGFLUSH: the journal only.
    Log,
    /// FS_SHUTDOWN_FLAGS_NOLOGFLUSH: nothing.
    None,
}

impl ShutdownFlushArg {
    /// The ioctl's flag.
    pub fn flag(self) -> u32 {
        match self {
            ShutdownFlushArg::Data => 0,
            ShutdownFlushArg::Log => 1,
            ShutdownFlushArg::None => 2,
        }
    }
}

/// `pinfs fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Run in one thread against the filesystem core, checked against a model; a failure
    /// is shrunk and printed with a replay command.
    #[arg(long)]
    pub serial: bool,
    /// The program's seed (default: from the clock; the report says it).
    #[arg(long, value_parser = values::whole, allow_hyphen_values = true)]
    pub seed: Option<u64>,
    /// Seconds to run (concurrent mode).
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = values::seconds_not_zero, allow_hyphen_values = true)]
    pub duration: Duration,
    /// Run only the program's first N steps (serial mode: default 60).
    #[arg(long, value_name = "N", value_parser = values::more_than_zero, allow_hyphen_values = true)]
    pub ops: Option<u64>,
    /// Serial programs to run, from seeds SEED, SEED + 1, ...
    #[arg(long, value_name = "R", default_value = "100", value_parser = values::more_than_zero, allow_hyphen_values = true)]
    pub runs: u64,
    /// Holders (1 to 16).
    #[arg(long, value_name = "N", default_value = "4", value_parser = values::holders, allow_hyphen_values = true)]
    pub holders: usize,
    /// Worker threads (1 to 64).
    #[arg(long, value_name = "N", default_value = "4", value_parser = values::threads, allow_hyphen_values = true)]
    pub threads: usize,
    /// Mount options of the fresh mount (default: drawn from the seed); in serial mode,
    /// break_policy and busy_blocks apply.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Option<String>,
    /// Run on this existing pinfs mount (in a directory of its own) instead of a fresh one.
    #[arg(long, value_name = "MOUNTPOINT")]
    pub mount: Option<PathBuf>,
    /// Remote peers (0 to 16, threads of the fuzzer on loopback) that store tags through
    /// the pins exporting holders export (concurrent mode).
    #[arg(long, value_name = "N", default_value = "0", value_parser = values::remote_peers, allow_hyphen_values = true)]
    pub remote_peers: usize,
    /// Holders that export their pins to the remote peers (default: half of them, rounded
    /// up, when there are remote peers).
    #[arg(long, value_name = "N", value_parser = values::whole, allow_hyphen_values = true)]
    pub remote_holders: Option<u64>,
    /// Concurrent mode: write the mount's lease events, busy blocks and the breakers' steps
    /// to FILE as a trace (Chrome trace-event JSON; see `pinfs timeline`).
    #[arg(long, value_name = "FILE", conflicts_with = "serial")]
    pub trace: Option<PathBuf>,
}

/// `pinfs timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// A trace file (from `pinfs status --follow --trace` or `pinfs fuzz --trace`).
    pub trace: PathBuf,
    /// The SVG to write.
    #[arg(short, long, value_name = "SVG")]
    pub output: PathBuf,
}

/// `pinfs crashes`.
#[derive(Debug, Args)]
pub struct CrashesArgs {
    /// The first program's seed (default: from the clock; the report says it).
    #[arg(long, value_parser = values::whole, allow_hyphen_values = true)]
    pub seed: Option<u64>,
    /// Steps per program.
    #[arg(long, value_name = "N", default_value = "40", value_parser = values::more_than_zero, allow_hyphen_values = true)]
    pub ops: u64,
    /// Programs to explore, from seeds SEED, SEED + 1, ...
    #[arg(long, value_name = "N", default_value = "20", value_parser = values::more_than_zero, allow_hyphen_values = true)]
    pub programs: u64,
    /// Crash states built at each persistence point (the durable state, all of the
    /// unflushed lines, then single lines and random subsets).
    #[arg(long, value_name = "N", default_value = "8", value_parser = values::more_than_zero, allow_hyphen_values = true)]
    pub states_per_point: u64,
    /// The image's size (at least 4M; a small one keeps each point's diff cheap).
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = values::size)]
    pub image_size: u64,
}

/// `pinfs completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// `pinfs fuzz-holder`: the arguments `pinfs::fuzzer::holder::HolderRun::args` makes.
#[derive(Debug, Args)]
pub struct FuzzHolderArgs {
    /// The fuzzer's directory on the mount.
    pub dir: PathBuf,
    /// The program's seed.
    #[arg(value_parser = values::whole)]
    pub seed: u64,
    /// The program's workers.
    #[arg(value_parser = values::threads)]
    pub workers: usize,
    /// The program's holders.
    #[arg(value_parser = values::holders)]
    pub holders: usize,
    /// Which holder this is (from 0).
    #[arg(value_parser = values::whole)]
    pub holder: u64,
    /// The first step to run.
    #[arg(value_parser = values::whole)]
    pub from: u64,
    /// Steps at or past this are not run (`-`: no limit).
    #[arg(value_parser = values::max_ops, allow_hyphen_values = true)]
    pub max_ops: values::MaxOps,
    /// `CLOCK_MONOTONIC` nanoseconds at which the run ends.
    #[arg(value_parser = values::whole)]
    pub until_ns: u64,
    /// The number of this holder's first pin.
    #[arg(value_parser = values::whole)]
    pub first_pin: u64,
    /// 1: export its pins through a soft NIC for remote peers; 0: store into them itself.
    #[arg(value_parser = values::whole)]
    pub export: u64,
}

impl FuzzHolderArgs {
    /// The holder run these arguments describe, or why they describe none.
    pub fn run(&self) -> Result<pinfs::fuzzer::holder::HolderRun, String> {
        if self.holder >= self.holders as u64 {
            return Err(format!(
                "holder {} of {}: holders are numbered from 0",
                self.holder, self.holders
            ));
        }
        let first_pin = u32::try_from(self.first_pin)
            .map_err(|_| format!("first pin {}: at most {}", self.first_pin, u32::MAX))?;
        if self.export > 1 {
            return Err(format!("export {}: 0 or 1", self.export));
        }
        Ok(pinfs::fuzzer::holder::HolderRun {
            dir: self.dir.clone(),
            seed: self.seed,
            shape: pinfs::fuzzer::Shape {
                workers: self.workers,
                holders: self.holders,
            },
            holder: self.holder as usize,
            from: self.from,
            max_ops: self.max_ops.0,
            until_ns: self.until_ns,
            first_pin,
            export: self.export == 1,
        })
    }
}

/// A usage error found after parsing (a mount option, say): clap's message with the usage
/// of `command` (a subcommand's name, or `None` for the top level), exit status 2.
pub fn usage_error(command: Option<&str>, message: impl std::fmt::Display) -> clap::Error {
    let mut cli = Cli::command();
    cli.build();
    let cmd = match command.and_then(|name| cli.find_subcommand_mut(name)) {
        Some(sub) => sub.clone(),
        None => cli,
    };
    let mut cmd = cmd;
    cmd.error(clap::error::ErrorKind::ValueValidation, message)
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut shown(&Cli::command()), "pinfs", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// `cmd` without its hidden subcommands and flags (`fuzz-holder`, mount.fuse3's `-n`):
/// clap_complete's generators offer them too, and `clap::Command` cannot drop one, so the
/// completions are made from this copy.
fn shown(cmd: &clap::Command) -> clap::Command {
    let mut copy = clap::Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(shown),
        );
    if let Some(about) = cmd.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        copy = copy.version(version.to_owned());
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pinfs").chain(args.iter().copied()))
    }

    fn mount_of(args: &[&str]) -> MountArgs {
        match parse(args) {
            Ok(Cli {
                command: None,
                mount: Some(m),
            }) => m,
            Ok(Cli {
                command: Some(Command::Mount(m)),
                mount: None,
            }) => m,
            other => panic!("{args:?} is not a mount: {other:?}"),
        }
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_mount_fuse3_form_is_a_mount() {
        let want = MountArgs {
            image: "/var/tmp/i.img".into(),
            mountpoint: "/mnt/p".into(),
            options: vec!["rw,dev,suid".into()],
            foreground: false,
            no_mtab: false,
            verbose: false,
            sloppy: false,
        };
        // As mount.fuse3 runs it, and with -o elsewhere or attached.
        for args in [
            &["/var/tmp/i.img", "/mnt/p", "-o", "rw,dev,suid"][..],
            &["-o", "rw,dev,suid", "/var/tmp/i.img", "/mnt/p"],
            &["/var/tmp/i.img", "-o", "rw,dev,suid", "/mnt/p"],
            &["/var/tmp/i.img", "/mnt/p", "-orw,dev,suid"],
            &["mount", "/var/tmp/i.img", "/mnt/p", "-o", "rw,dev,suid"],
            &["mount", "-o", "rw,dev,suid", "/var/tmp/i.img", "/mnt/p"],
        ] {
            assert_eq!(mount_of(args), want, "{args:?}");
        }
        // Without options, several lists, and mount.fuse3's flags that need no action.
        let m = mount_of(&["img", "mnt"]);
        assert_eq!((m.option_list(), m.foreground), (String::new(), false));
        let m = mount_of(&[
            "img",
            "mnt",
            "-o",
            "rw",
            "-n",
            "-s",
            "-v",
            "-o",
            "remount,ro",
        ]);
        assert_eq!(m.option_list(), "rw,remount,ro");
        let m = mount_of(&["mount", "img", "mnt", "--foreground", "-o", "noatime"]);
        assert!(m.foreground);
        assert_eq!(m.option_list(), "noatime");
    }

    #[test]
    fn an_image_named_like_no_command_is_still_a_mount_and_commands_win() {
        assert_eq!(mount_of(&["mkfss", "mnt"]).image, PathBuf::from("mkfss"));
        assert!(matches!(
            parse(&["status", "mnt"]),
            Ok(Cli {
                command: Some(Command::Status(_)),
                mount: None
            })
        ));
        let e = parse(&["img"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "a lone IMAGE is a usage error: {e}");
    }

    #[test]
    fn numbers_are_typed() {
        let Ok(Cli {
            command: Some(Command::Fuzz(f)),
            ..
        }) = parse(&["fuzz", "--serial", "--seed", "7", "--ops", "5"])
        else {
            panic!("fuzz parses");
        };
        assert_eq!(
            (f.seed, f.ops, f.runs, f.holders, f.threads),
            (Some(7), Some(5), 100, 4, 4)
        );
        assert_eq!(f.duration, Duration::from_secs(60));
        let e = parse(&["fuzz", "--seed", "1K"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("--seed"), "{e}");
        let Ok(Cli {
            command: Some(Command::Pin(p)),
            ..
        }) = parse(&[
            "pin",
            "f",
            "--offset",
            "4K",
            "--len",
            "1M",
            "--write-byte",
            "0x58",
            "--every",
            "5",
        ])
        else {
            panic!("pin parses");
        };
        assert_eq!(
            (p.offset, p.len, p.write_byte),
            (4096, Some(1 << 20), Some(0x58))
        );
        assert_eq!(p.every, Some(Duration::from_millis(5)));
        let e = parse(&["pin", "f", "--write-byte", "1"]).unwrap_err();
        assert!(e.to_string().contains("--every"), "{e}");
    }

    #[test]
    fn the_fuzz_holder_arguments_round_trip() {
        let run = pinfs::fuzzer::holder::HolderRun {
            dir: "/mnt/p/fuzz".into(),
            seed: 42,
            shape: pinfs::fuzzer::Shape {
                workers: 3,
                holders: 2,
            },
            holder: 1,
            from: 17,
            max_ops: None,
            until_ns: 123_456_789,
            first_pin: 5,
            export: false,
        };
        for (max_ops, export) in [(None, false), (Some(90), true)] {
            let run = pinfs::fuzzer::holder::HolderRun {
                max_ops,
                export,
                ..run.clone()
            };
            let args = run.args();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let Ok(Cli {
                command: Some(Command::FuzzHolder(h)),
                ..
            }) = parse(&argv)
            else {
                panic!("{argv:?} parses");
            };
            assert_eq!(format!("{:?}", h.run().unwrap()), format!("{run:?}"));
        }
        let bad = [
            "fuzz-holder",
            "d",
            "1",
            "1",
            "2",
            "2",
            "0",
            "-",
            "9",
            "0",
            "0",
        ];
        let Ok(Cli {
            command: Some(Command::FuzzHolder(h)),
            ..
        }) = parse(&bad)
        else {
            panic!("parses");
        };
        assert!(h.run().unwrap_err().contains("holder 2 of 2"));
        let bad = [
            "fuzz-holder",
            "d",
            "1",
            "1",
            "2",
            "1",
            "0",
            "-",
            "9",
            "0",
            "2",
        ];
        let Ok(Cli {
            command: Some(Command::FuzzHolder(h)),
            ..
        }) = parse(&bad)
        else {
            panic!("parses");
        };
        assert!(h.run().unwrap_err().contains("export 2: 0 or 1"));
    }
}

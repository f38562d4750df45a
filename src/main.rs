//! The `pinfs` command: make, mount and check pinfs images.

use std::path::PathBuf;
use std::process::ExitCode;

use pinfs::daemon::{mount, MountRequest};
use pinfs::fs::Fs;
use pinfs::image::parse_size;

const USAGE: &str = "\
usage:
  pinfs mkfs IMAGE --size SIZE [--force]      make an empty filesystem (SIZE like 64M, 4G, 1T)
  pinfs mount IMAGE MOUNTPOINT [-o OPTIONS] [--foreground]
                                              mount; returns once the mount is ready
  pinfs IMAGE MOUNTPOINT -o OPTIONS           the same, as mount.fuse3 calls it
                                              (so `mount -t fuse.pinfs IMAGE MOUNTPOINT` works)
  pinfs mount IMAGE MOUNTPOINT -o remount,OPTIONS
                                              change a live mount: ro, rw, nosuid, nodev, noexec,
                                              lease_break_time, break_policy, guest_break_time
                                              (also `mount -t fuse.pinfs -o remount,ro IMAGE MNT`)
  pinfs fsck IMAGE [--repair] [--json]        check (and repair) an unmounted image;
                                              exit 0 clean, 1 repaired, 4 errors left
  umount MOUNTPOINT                           unmount (flushes and ends the daemon)
  pinfs pin FILE [--offset N] [--len N] [--read-only] [--unbreakable] [--ignore-breaks]
            [--write-byte B --every MS] [--hold SECONDS]
                                              act as a pin holder; JSON lines: the grant, then
                                              each lease event; releases on a break unless
                                              --ignore-breaks
  pinfs status MOUNTPOINT [--json] [--events] holders, leases, busy blocks, counters
  pinfs status MOUNTPOINT --follow            the recent lease events, then each new one as
                                              it happens (JSON lines), until the unmount
  pinfs fence MOUNTPOINT HOLDER               revoke every lease of a holder now (root)
  pinfs fuzz [--seed S] [--duration SECONDS] [--ops N] [--holders N] [--threads N]
             [-o OPTIONS | --mount MOUNTPOINT]
                                              a random program of holders (processes),
                                              breakers, writers and allocators on a fresh
                                              mount, with oracles (root, /dev/fuse)
  pinfs fuzz --serial [--seed S] [--ops N] [--runs R] [--holders N] [--threads N]
             [-o break_policy=...,busy_blocks=...]
                                              the same programs in one thread against the
                                              core, checked against a model; a failure is
                                              shrunk and printed with a replay command
  pinfs demo                                  every break policy at work, with and without
                                              busy blocks (root, /dev/fuse); exit 1 if any
                                              outcome is not the expected one

mount options: rw, ro, dev, nodev, suid, nosuid, exec, noexec, atime, relatime, noatime,
  allow_other, default_permissions (always on), threads=N, lock_wait=SECONDS,
  lease_break_time=SECONDS (default 45, 0 = never), break_policy=wait|refuse|revoke (default
  revoke), busy_blocks=on|off (default on; off only to show the corruption it prevents)
environment: PINFS_LOG=info|debug (daemon log to stderr; with --foreground or PINFS_LOG set;
  otherwise a background daemon's warnings and errors go to the kernel log, see dmesg)";

struct Usage(String);

fn usage(msg: impl Into<String>) -> Usage {
    Usage(msg.into())
}

fn init_logging(default: &str) {
    // The daemon that `pinfs mount` started in the background has no terminal: its warnings
    // and errors go to the kernel log, as a kernel filesystem's would.
    if std::env::var_os("PINFS_LOG").is_none() && pinfs::daemon::is_background_daemon() {
        if let Some(k) = pinfs::kmsg::Kmsg::open() {
            let _ = tracing_subscriber::fmt()
                // fuser warns of its own unmount attempt after the kernel's (harmless).
                .with_env_filter(tracing_subscriber::EnvFilter::new("warn,fuser=error"))
                .with_writer(k)
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .try_init();
            return;
        }
    }
    let filter = std::env::var("PINFS_LOG").unwrap_or_else(|_| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(Ok(Usage(msg))) => {
            eprintln!("pinfs: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Err(msg)) => {
            eprintln!("pinfs: {msg}");
            ExitCode::from(1)
        }
    }
}

type CmdResult = Result<i32, Result<Usage, String>>;

/// For every command but the daemon (`pinfs status | head`, `pinfs fsck | head`, `pinfs
/// --help | head`): a reader that goes away ends the command quietly, by `SIGPIPE`, as it ends
/// `cat`, instead of a panic in `print!`. Sockets are written with `MSG_NOSIGNAL`, so a daemon
/// that goes away is still an error the command reports. The daemon (`mount`) keeps SIGPIPE
/// ignored: it must outlive any peer. So do holders (`pin`, the fuzzer's holder processes):
/// their pins outlive whoever reads their reports, which they write ignoring errors. The demo
/// stops by itself when its reader goes, between scenarios, so that it cleans up after itself.
fn output_to_a_pipe() {
    // SAFETY: restoring the default disposition of SIGPIPE, before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn run(args: &[String]) -> CmdResult {
    let Some(cmd) = args.first() else {
        output_to_a_pipe();
        return Err(Ok(usage("no command given")));
    };
    let implicit_mount = !cmd.starts_with('-') && args.len() >= 2 && !args[1].starts_with('-');
    let known = [
        "-h",
        "--help",
        "help",
        "-V",
        "--version",
        "mkfs",
        "fsck",
        "pin",
        "fuzz",
        "demo",
        "status",
        "fence",
    ];
    let keeps_ignoring = ["mount", "pin", "fuzz-holder", "demo"].contains(&cmd.as_str())
        || (implicit_mount && !known.contains(&cmd.as_str()));
    if !keeps_ignoring {
        output_to_a_pipe();
    }
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            pinfs::outln!("{USAGE}");
            Ok(0)
        }
        "-V" | "--version" => {
            pinfs::outln!("pinfs {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "mkfs" => cmd_mkfs(&args[1..]),
        "mount" => cmd_mount(&args[1..]),
        "fsck" => cmd_fsck(&args[1..]),
        "pin" => cmd_pin(&args[1..]),
        "fuzz" => cmd_fuzz(&args[1..]),
        "fuzz-holder" => pinfs::fuzz_holder::HolderRun::parse(&args[1..])
            .map(|run| {
                pinfs::fuzz_holder::run_holder(run);
                0
            })
            .map_err(Err),
        "demo" => {
            init_logging("warn");
            match pinfs::demo::run_demo() {
                Ok(true) => Ok(0),
                Ok(false) => Ok(1),
                Err(e) => Err(Err(format!("demo: {e}"))),
            }
        }
        "status" => cmd_status(&args[1..]),
        "fence" => cmd_fence(&args[1..]),
        _ if implicit_mount => cmd_mount(args),
        other => Err(Ok(usage(format!("unknown command '{other}'")))),
    }
}

fn cmd_mkfs(args: &[String]) -> CmdResult {
    let (mut image, mut size, mut force) = (None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" | "-s" => {
                size = Some(
                    it.next()
                        .ok_or_else(|| Ok(usage("--size needs a value, like --size 1G")))?
                        .clone(),
                )
            }
            s if s.starts_with("--size=") => size = Some(s["--size=".len()..].to_string()),
            "--force" | "-f" => force = true,
            s if s.starts_with('-') => return Err(Ok(usage(format!("mkfs: unknown flag '{s}'")))),
            s if image.is_none() => image = Some(PathBuf::from(s)),
            s => return Err(Ok(usage(format!("mkfs: unexpected argument '{s}'")))),
        }
    }
    let image = image.ok_or_else(|| Ok(usage("mkfs: no IMAGE given")))?;
    let size = size.ok_or_else(|| Ok(usage("mkfs: --size SIZE is required (like --size 1G)")))?;
    let bytes = parse_size(&size).map_err(|e| Err(format!("mkfs: {e}")))?;
    init_logging("warn");
    Fs::mkfs(&image, bytes, force).map_err(|e| Err(format!("mkfs: {e}")))?;
    pinfs::outln!(
        "{}: pinfs filesystem of {} bytes ({} blocks of 4096)",
        image.display(),
        bytes / 4096 * 4096,
        bytes / 4096
    );
    Ok(0)
}

fn cmd_mount(args: &[String]) -> CmdResult {
    let (mut pos, mut options, mut foreground) = (Vec::new(), Vec::new(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.push(
                it.next()
                    .ok_or_else(|| Ok(usage("-o needs an option list")))?
                    .clone(),
            ),
            s if s.starts_with("-o") && s.len() > 2 => options.push(s[2..].to_string()),
            "-f" | "--foreground" => foreground = true,
            // mount.fuse3 may pass these; they need no action from us.
            "-n" | "-v" | "-s" => {}
            s if s.starts_with('-') => return Err(Ok(usage(format!("mount: unknown flag '{s}'")))),
            s => pos.push(s.to_string()),
        }
    }
    if pos.len() != 2 {
        return Err(Ok(usage("mount: need IMAGE and MOUNTPOINT")));
    }
    let options = options.join(",");
    if pinfs::remount::is_remount(&options) {
        init_logging("warn");
        pinfs::remount::run(std::path::Path::new(&pos[1]), &options).map_err(Err)?;
        return Ok(0);
    }
    // Refused here, before any daemon starts: a bad option is a usage error (exit 2).
    pinfs::options::MountOptions::parse(&options).map_err(|e| Ok(usage(e)))?;
    init_logging(if foreground { "info" } else { "warn" });
    let req = MountRequest {
        image: PathBuf::from(&pos[0]),
        mountpoint: PathBuf::from(&pos[1]),
        options,
        foreground,
    };
    mount(&req).map_err(Err)?;
    Ok(0)
}

fn cmd_fsck(args: &[String]) -> CmdResult {
    let (mut image, mut repair, mut json) = (None, false, false);
    for a in args {
        match a.as_str() {
            "--repair" | "-y" => repair = true,
            "--json" => json = true,
            s if s.starts_with('-') => return Err(Ok(usage(format!("fsck: unknown flag '{s}'")))),
            s if image.is_none() => image = Some(PathBuf::from(s)),
            s => return Err(Ok(usage(format!("fsck: unexpected argument '{s}'")))),
        }
    }
    let image = image.ok_or_else(|| Ok(usage("fsck: no IMAGE given")))?;
    init_logging("warn");
    match pinfs::fsck::check(&image, repair) {
        Ok(report) => {
            if json {
                pinfs::outln!("{}", report.to_json(&image));
            } else {
                for e in &report.errors {
                    let fixed = report.repaired.contains(e);
                    pinfs::outln!("{}{e}", if fixed { "repaired: " } else { "error: " });
                }
                let verdict = match report.exit_code() {
                    0 => "clean",
                    1 => "repaired",
                    _ => "errors left (run with --repair)",
                };
                pinfs::outln!(
                    "{}: {verdict}; {} inodes, {} file blocks, {} journal transactions replayed, {} orphans {}",
                    image.display(),
                    report.inodes,
                    report.file_blocks,
                    report.replayed,
                    report.orphans.len(),
                    if repair { "freed" } else { "(freed at the next mount)" }
                );
            }
            Ok(report.exit_code())
        }
        Err(e) => {
            if json {
                pinfs::outln!("{}", pinfs::fsck::failure_json(&image, &e.to_string()));
            } else {
                eprintln!("pinfs fsck: {e}");
            }
            Ok(8)
        }
    }
}

fn number(flag: &str, v: Option<&String>) -> Result<u64, Result<Usage, String>> {
    let v = v.ok_or_else(|| Ok(usage(format!("{flag} needs a value"))))?;
    parse_size(v).map_err(|e| Ok(usage(format!("{flag}: {e}"))))
}

/// A count from 1 to `max`.
fn count(flag: &str, v: Option<&String>, max: u64) -> Result<usize, Result<Usage, String>> {
    let n = number(flag, v)?;
    if !(1..=max).contains(&n) {
        return Err(Ok(usage(format!("{flag} {n}: a number from 1 to {max}"))));
    }
    Ok(n as usize)
}

fn seconds(flag: &str, v: Option<&String>) -> Result<std::time::Duration, Result<Usage, String>> {
    let v = v.ok_or_else(|| Ok(usage(format!("{flag} needs a value"))))?;
    let max = pinfs::options::MAX_SECONDS;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| (0.0..=max).contains(s))
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| {
            Ok(usage(format!(
                "{flag} {v}: not a number of seconds from 0 to {max} (365 days)"
            )))
        })
}

fn cmd_pin(args: &[String]) -> CmdResult {
    use pinfs::holder_cmd::PinCommand;
    let mut cmd = PinCommand::default();
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--offset" => cmd.offset = number("--offset", it.next())?,
            "--len" => cmd.len = Some(number("--len", it.next())?),
            "--read-only" => cmd.read_only = true,
            "--unbreakable" => cmd.unbreakable = true,
            "--ignore-breaks" => cmd.ignore_breaks = true,
            "--write-byte" => {
                let v = it
                    .next()
                    .ok_or_else(|| Ok(usage("--write-byte needs a byte (decimal or 0x hex)")))?;
                let b = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                    Some(hex) => u8::from_str_radix(hex, 16).ok(),
                    None => v.parse::<u8>().ok(),
                };
                cmd.write_byte = Some(b.ok_or_else(|| {
                    Ok(usage(format!(
                        "--write-byte {v}: not a byte (0-255 or 0x00-0xff)"
                    )))
                })?);
            }
            "--every" => {
                let ms = number("--every", it.next())?;
                let max = pinfs::options::MAX_SECONDS as u64 * 1000;
                if !(1..=max).contains(&ms) {
                    return Err(Ok(usage(format!(
                        "--every {ms}: a number of milliseconds from 1 to {max} (365 days)"
                    ))));
                }
                cmd.every = Some(std::time::Duration::from_millis(ms));
            }
            "--hold" => cmd.hold = Some(seconds("--hold", it.next())?),
            s if s.starts_with('-') => return Err(Ok(usage(format!("pin: unknown flag '{s}'")))),
            s if file.is_none() => file = Some(PathBuf::from(s)),
            s => return Err(Ok(usage(format!("pin: unexpected argument '{s}'")))),
        }
    }
    if cmd.write_byte.is_some() != cmd.every.is_some() {
        return Err(Ok(usage("--write-byte and --every go together")));
    }
    cmd.file = file.ok_or_else(|| Ok(usage("pin: no FILE given")))?;
    init_logging("warn");
    pinfs::holder_cmd::pin(&cmd).map_err(Err)?;
    Ok(0)
}

fn cmd_status(args: &[String]) -> CmdResult {
    let (mut mount, mut json, mut events, mut follow) = (None, false, false, false);
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "--events" => events = true,
            "--follow" | "-f" => follow = true,
            s if s.starts_with('-') => {
                return Err(Ok(usage(format!("status: unknown flag '{s}'"))))
            }
            s if mount.is_none() => mount = Some(PathBuf::from(s)),
            s => return Err(Ok(usage(format!("status: unexpected argument '{s}'")))),
        }
    }
    let mount = mount.ok_or_else(|| Ok(usage("status: no MOUNTPOINT given")))?;
    if follow {
        pinfs::holder_cmd::follow(&mount).map_err(Err)?;
        return Ok(0);
    }
    pinfs::holder_cmd::status(&mount, json, events).map_err(Err)?;
    Ok(0)
}

fn cmd_fence(args: &[String]) -> CmdResult {
    let [mount, holder] = args else {
        return Err(Ok(usage("fence: need MOUNTPOINT and HOLDER")));
    };
    let holder: u64 = holder.parse().map_err(|_| {
        Ok(usage(format!(
            "fence: holder '{holder}' is not a number (see pinfs status)"
        )))
    })?;
    pinfs::holder_cmd::fence(std::path::Path::new(mount), holder).map_err(Err)?;
    Ok(0)
}

fn cmd_fuzz(args: &[String]) -> CmdResult {
    use pinfs::fuzz_serial::{serial_command, SerialConfig, SerialRuns};
    let (mut seed, mut ops, mut runs, mut serial, mut opts) =
        (None, None::<u64>, 100u64, false, String::new());
    let (mut duration, mut holders, mut threads) =
        (std::time::Duration::from_secs(60), 4usize, 4usize);
    let mut mount: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--serial" => serial = true,
            "--seed" => seed = Some(number("--seed", it.next())?),
            "--ops" => ops = Some(number("--ops", it.next())?),
            "--runs" => runs = number("--runs", it.next())?,
            "-o" => {
                opts = it
                    .next()
                    .ok_or_else(|| Ok(usage("-o needs an option list")))?
                    .clone()
            }
            "--duration" => duration = seconds("--duration", it.next())?,
            "--mount" => {
                mount =
                    Some(PathBuf::from(it.next().ok_or_else(|| {
                        Ok(usage("--mount needs a pinfs mount point"))
                    })?))
            }
            "--holders" => holders = count("--holders", it.next(), 16)?,
            "--threads" => threads = count("--threads", it.next(), 64)?,
            s => return Err(Ok(usage(format!("fuzz: unexpected argument '{s}'")))),
        }
    }
    if ops == Some(0) || runs == 0 || duration.is_zero() {
        return Err(Ok(usage(
            "fuzz: --ops, --runs and --duration must be more than 0 (a run of nothing checks nothing)",
        )));
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if !serial {
        let run = pinfs::fuzz_mount::MountFuzz {
            seed,
            duration,
            holders,
            threads,
            options: opts.clone(),
            max_ops: ops,
            mount,
        };
        return fuzz_mount(run);
    }
    let parsed =
        pinfs::options::MountOptions::parse(&opts).map_err(|e| Ok(usage(format!("fuzz: {e}"))))?;
    init_logging("error");
    let cfg = SerialConfig {
        policy: parsed.leases.policy,
        busy_blocks: parsed.leases.busy_blocks,
    };
    let what = SerialRuns {
        seed,
        ops: ops.unwrap_or(60) as usize,
        runs,
        shape: pinfs::fuzz::Shape {
            workers: threads,
            holders,
        },
    };
    match serial_command(what, cfg) {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) => Err(Err(format!("fuzz: {e}"))),
    }
}

fn fuzz_mount(mut cfg: pinfs::fuzz_mount::MountFuzz) -> CmdResult {
    if cfg.options.is_empty() && cfg.mount.is_none() {
        cfg.options = pinfs::fuzz::options_from_seed(cfg.seed);
    }
    let parsed = pinfs::options::MountOptions::parse(&cfg.options)
        .map_err(|e| Ok(usage(format!("fuzz: {e}"))))?;
    let (seed, options, duration, holders, threads) = (
        cfg.seed,
        match &cfg.mount {
            Some(m) => format!("(those of {})", m.display()),
            None => cfg.options.clone(),
        },
        cfg.duration,
        cfg.holders,
        cfg.threads,
    );
    init_logging("error");
    let t0 = std::time::Instant::now();
    let report = pinfs::fuzz_mount::run(&cfg).map_err(|e| Err(format!("fuzz: {e}")))?;
    let secs = t0.elapsed().as_secs_f64();
    pinfs::outln!(
        "fuzz: seed {seed}, options {options}: {} steps ({} pins, {} holder stores, {} breakers done), {} breaks, {} revocations in {secs:.1} s ({:.0} steps/s, {:.1} breaks/s)",
        report.ops,
        report.pins,
        report.stores,
        report.breakers,
        report.breaks,
        report.revocations,
        report.ops as f64 / secs,
        report.breaks as f64 / secs
    );
    // The debug switches that let holders' stores loose: a run with one must see an oracle
    // fire.
    let expected_failure = !parsed.leases.busy_blocks || !parsed.leases.detach_windows;
    let switch = if parsed.leases.busy_blocks {
        "detach_windows=off"
    } else {
        "busy_blocks=off"
    };
    for v in &report.violations {
        pinfs::outln!("  oracle: {v}");
    }
    if !report.violations.is_empty() {
        pinfs::outln!("  the steps before it, oldest first (step number: actor, operation):");
        for op in &report.recent {
            pinfs::outln!("    {op}");
        }
    }
    let target = match &cfg.mount {
        Some(m) => format!("--mount {}", m.display()),
        None => format!("-o {options}"),
    };
    let ops = cfg
        .max_ops
        .map(|n| format!(" --ops {n}"))
        .unwrap_or_default();
    pinfs::outln!(
        "replay (thread timing varies): pinfs fuzz --seed {seed} --duration {}{ops} --holders {holders} --threads {threads} {target}",
        duration.as_secs_f64()
    );
    if cfg.mount.is_none() {
        let serial = pinfs::fuzz_serial::SerialConfig {
            policy: parsed.leases.policy,
            busy_blocks: parsed.leases.busy_blocks,
        };
        let shape = cfg.shape();
        pinfs::outln!(
            "the same program in one thread: {}",
            pinfs::fuzz_serial::replay_command(seed, report.reached as usize, shape, serial)
        );
    }
    if let Some(sig) = report.interrupted {
        pinfs::outln!("stopped early by signal {sig}: the checks cover what ran until then");
        if report.violations.is_empty() {
            return Ok(128 + sig);
        }
    }
    match (report.violations.is_empty(), expected_failure) {
        (true, false) => {
            pinfs::outln!("all checks held");
            Ok(0)
        }
        (false, true) => {
            pinfs::outln!("the oracle fired, as expected with {switch}");
            Ok(0)
        }
        (true, true) => {
            pinfs::outln!("{switch}, yet no oracle fired: run longer, or the oracles cannot see the corruption");
            Ok(1)
        }
        (false, false) => Ok(1),
    }
}

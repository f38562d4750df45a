//! The `pinfs` command: make, mount and check pinfs images.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, FsckArgs, FuzzArgs, MkfsArgs, MountArgs, PinArgs, StatusArgs};
use pinfs::daemon::{mount, MountRequest};
use pinfs::fs::Fs;

fn init_logging(default: &str) {
    // The daemon that `pinfs mount` started in the background has no terminal: its warnings
    // and errors go to the kernel log, as a kernel filesystem's would.
    if std::env::var_os("PINFS_LOG").is_none() && pinfs::daemon::is_background_daemon() {
        if let Some(k) = pinfs::daemon::kmsg::Kmsg::open() {
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
        // Colours for a terminal only: a foreground daemon's stderr in a file stays text.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Why a command failed: a usage error (clap's message and usage, exit 2), or an error it
/// met doing its work (`pinfs: ...`, exit 1).
enum Failure {
    Usage(clap::Error),
    Error(String),
}

type CmdResult = Result<i32, Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_ended(e),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(Failure::Usage(e)) => parse_ended(e),
        Err(Failure::Error(msg)) => {
            eprintln!("pinfs: {msg}");
            ExitCode::from(1)
        }
    }
}

/// What clap stopped at: a usage error (on stderr, exit 2), or the help or version asked
/// for (on stdout, exit 0; a standard output that fails is an error, exit 1).
fn parse_ended(e: clap::Error) -> ExitCode {
    output_to_a_pipe();
    if e.use_stderr() || std::io::stdout().is_terminal() {
        // Colours where the terminal takes them; a stderr that fails has nobody to tell.
        let _ = e.print();
        return ExitCode::from(e.exit_code() as u8);
    }
    pinfs::out!("{}", e.render());
    ExitCode::SUCCESS
}

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

fn run(cli: Cli) -> CmdResult {
    // The mount.fuse3 form has its usage at the top level.
    let (command, usage_of) = match (cli.command, cli.mount) {
        (Some(c), _) => (c, Some("mount")),
        (None, Some(m)) => (Command::Mount(m), None),
        (None, None) => {
            return Err(Failure::Usage(cli::usage_error(None, "no command given")));
        }
    };
    let keeps_ignoring = matches!(
        command,
        Command::Mount(_) | Command::Pin(_) | Command::FuzzHolder(_) | Command::Demo
    );
    if !keeps_ignoring {
        output_to_a_pipe();
    }
    match command {
        Command::Mkfs(a) => cmd_mkfs(a),
        Command::Mount(a) => cmd_mount(a, usage_of),
        Command::Fsck(a) => Ok(cmd_fsck(a)),
        Command::Pin(a) => cmd_pin(a),
        Command::Status(a) => cmd_status(a),
        Command::Remote(a) => {
            let (write, offset, len) = match a.op {
                cli::RemoteOp::Read { offset, len } => (None, offset, len),
                cli::RemoteOp::Write { offset, byte, len } => (Some(byte), offset, len),
            };
            let cmd = pinfs::holder_cmd::RemoteCommand {
                nic: a.nic,
                rkey: a.rkey,
                write,
                offset,
                len,
                every: a.every,
                ignore_recalls: a.ignore_recalls,
            };
            Ok(pinfs::holder_cmd::remote(&cmd).map_err(Failure::Error)?)
        }
        Command::Fence(a) => {
            pinfs::holder_cmd::fence(&a.mountpoint, a.holder).map_err(Failure::Error)?;
            Ok(0)
        }
        Command::Shutdown(a) => {
            pinfs::holder_cmd::shutdown(&a.mountpoint, a.flush.flag()).map_err(Failure::Error)?;
            Ok(0)
        }
        Command::Fuzz(a) => cmd_fuzz(a),
        Command::Crashes(a) => cmd_crashes(a),
        Command::Timeline(a) => {
            pinfs::trace::svg::timeline_command(&a.trace, &a.output).map_err(Failure::Error)?;
            Ok(0)
        }
        Command::Demo => {
            init_logging("warn");
            match pinfs::demo::run_demo() {
                Ok(true) => Ok(0),
                Ok(false) => Ok(1),
                Err(e) => Err(Failure::Error(format!("demo: {e}"))),
            }
        }
        Command::Completions(a) => {
            pinfs::out!("{}", cli::completions(a.shell));
            Ok(0)
        }
        Command::FuzzHolder(a) => {
            let run = a
                .run()
                .map_err(|e| Failure::Usage(cli::usage_error(Some("fuzz-holder"), e)))?;
            pinfs::fuzzer::holder::run_holder(run);
            Ok(0)
        }
    }
}

fn cmd_mkfs(a: MkfsArgs) -> CmdResult {
    init_logging("warn");
    Fs::mkfs(&a.image, a.size, a.force).map_err(|e| Failure::Error(format!("mkfs: {e}")))?;
    pinfs::outln!(
        "{}: pinfs filesystem of {} bytes ({} blocks of 4096)",
        a.image.display(),
        a.size / 4096 * 4096,
        a.size / 4096
    );
    Ok(0)
}

/// `pinfs mount`, or the mount.fuse3 form (`usage_of` is `None`).
fn cmd_mount(a: MountArgs, usage_of: Option<&str>) -> CmdResult {
    let options = a.option_list();
    if pinfs::daemon::remount::is_remount(&options) {
        // An option list that does not parse is a usage error (exit 2), as for a new mount;
        // what the live mount refuses (an option fixed for its life, a busy file) is not.
        pinfs::daemon::remount::check_list(&options)
            .map_err(|e| Failure::Usage(cli::usage_error(usage_of, e)))?;
        init_logging("warn");
        pinfs::daemon::remount::run(&a.mountpoint, &options).map_err(Failure::Error)?;
        return Ok(0);
    }
    // Refused here, before any daemon starts: a bad option is a usage error (exit 2).
    pinfs::fs::options::MountOptions::parse(&options)
        .map_err(|e| Failure::Usage(cli::usage_error(usage_of, e)))?;
    init_logging(if a.foreground { "info" } else { "warn" });
    let req = MountRequest {
        image: a.image,
        mountpoint: a.mountpoint,
        options,
        foreground: a.foreground,
    };
    mount(&req).map_err(Failure::Error)?;
    Ok(0)
}

/// `pinfs fsck`: its exit status is the verdict (0 clean, 1 repaired, 4 errors left, 8 the
/// check could not run).
fn cmd_fsck(a: FsckArgs) -> i32 {
    let FsckArgs {
        image,
        repair,
        json,
    } = a;
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
            report.exit_code()
        }
        Err(e) => {
            if json {
                pinfs::outln!("{}", pinfs::fsck::failure_json(&image, &e.to_string()));
            } else {
                eprintln!("pinfs fsck: {e}");
            }
            8
        }
    }
}

fn cmd_pin(a: PinArgs) -> CmdResult {
    let cmd = pinfs::holder_cmd::PinCommand {
        file: a.file,
        offset: a.offset,
        len: a.len,
        read_only: a.read_only,
        unbreakable: a.unbreakable,
        ignore_breaks: a.ignore_breaks,
        write_byte: a.write_byte,
        every: a.every,
        hold: a.hold,
        export: a.export,
        odp: a.odp,
    };
    init_logging("warn");
    pinfs::holder_cmd::pin(&cmd).map_err(Failure::Error)?;
    Ok(0)
}

fn cmd_status(a: StatusArgs) -> CmdResult {
    if let Some(trace) = &a.trace {
        pinfs::holder_cmd::follow_trace(&a.mountpoint, trace).map_err(Failure::Error)?;
    } else if a.follow {
        pinfs::holder_cmd::follow(&a.mountpoint).map_err(Failure::Error)?;
    } else {
        pinfs::holder_cmd::status(&a.mountpoint, a.json, a.events).map_err(Failure::Error)?;
    }
    Ok(0)
}

fn cmd_fuzz(a: FuzzArgs) -> CmdResult {
    use pinfs::fuzzer::serial::{serial_command, SerialConfig, SerialRuns};
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let opts = a.options.unwrap_or_default();
    if !a.serial {
        let run = pinfs::fuzzer::mount::MountFuzz {
            seed,
            duration: a.duration,
            holders: a.holders,
            threads: a.threads,
            options: opts,
            max_ops: a.ops,
            mount: a.mount,
            trace: a.trace,
        };
        return fuzz_mount(run);
    }
    let parsed = pinfs::fs::options::MountOptions::parse(&opts)
        .map_err(|e| Failure::Usage(cli::usage_error(Some("fuzz"), e)))?;
    init_logging("error");
    let cfg = SerialConfig {
        policy: parsed.leases.policy,
        busy_blocks: parsed.leases.busy_blocks,
    };
    let what = SerialRuns {
        seed,
        ops: a.ops.unwrap_or(60) as usize,
        runs: a.runs,
        shape: pinfs::fuzzer::Shape {
            workers: a.threads,
            holders: a.holders,
        },
    };
    match serial_command(what, cfg) {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) => Err(Failure::Error(format!("fuzz: {e}"))),
    }
}

fn cmd_crashes(a: cli::CrashesArgs) -> CmdResult {
    use pinfs::fuzzer::crashes::{crashes_command, CrashConfig, CrashRuns};
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if a.image_size < pinfs::store::image::MIN_IMAGE_BYTES {
        return Err(Failure::Usage(cli::usage_error(
            Some("crashes"),
            format!(
                "--image-size {} is below the smallest image, {} bytes",
                a.image_size,
                pinfs::store::image::MIN_IMAGE_BYTES
            ),
        )));
    }
    init_logging("error");
    let what = CrashRuns {
        seed,
        ops: a.ops as usize,
        programs: a.programs,
        cfg: CrashConfig {
            states_per_point: a.states_per_point as usize,
            image_bytes: a.image_size,
        },
    };
    match crashes_command(what) {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) => Err(Failure::Error(format!("crashes: {e}"))),
    }
}

fn fuzz_mount(mut cfg: pinfs::fuzzer::mount::MountFuzz) -> CmdResult {
    if cfg.options.is_empty() && cfg.mount.is_none() {
        cfg.options = pinfs::fuzzer::options_from_seed(cfg.seed);
    }
    let parsed = pinfs::fs::options::MountOptions::parse(&cfg.options)
        .map_err(|e| Failure::Usage(cli::usage_error(Some("fuzz"), e)))?;
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
    let report =
        pinfs::fuzzer::mount::run(&cfg).map_err(|e| Failure::Error(format!("fuzz: {e}")))?;
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
        let serial = pinfs::fuzzer::serial::SerialConfig {
            policy: parsed.leases.policy,
            busy_blocks: parsed.leases.busy_blocks,
        };
        let shape = cfg.shape();
        pinfs::outln!(
            "the same program in one thread: {}",
            pinfs::fuzzer::serial::replay_command(seed, report.reached as usize, shape, serial)
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

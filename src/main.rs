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
  pinfs fsck IMAGE [--repair] [--json]        check (and repair) an unmounted image;
                                              exit 0 clean, 1 repaired, 4 errors left
  umount MOUNTPOINT                           unmount (flushes and ends the daemon)

mount options: rw, ro, dev, nodev, suid, nosuid, exec, noexec, atime, relatime, noatime,
  allow_other, default_permissions (always on), threads=N, lock_wait=SECONDS
environment: PINFS_LOG=info|debug (daemon log to stderr; with --foreground or PINFS_LOG set)";

struct Usage(String);

fn usage(msg: impl Into<String>) -> Usage {
    Usage(msg.into())
}

fn init_logging(default: &str) {
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

fn run(args: &[String]) -> CmdResult {
    let Some(cmd) = args.first() else {
        return Err(Ok(usage("no command given")));
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        "-V" | "--version" => {
            println!("pinfs {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "mkfs" => cmd_mkfs(&args[1..]),
        "mount" => cmd_mount(&args[1..]),
        "fsck" => cmd_fsck(&args[1..]),
        _ if !cmd.starts_with('-') && args.len() >= 2 && !args[1].starts_with('-') => {
            cmd_mount(args)
        }
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
    println!(
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
    init_logging(if foreground { "info" } else { "warn" });
    let req = MountRequest {
        image: PathBuf::from(&pos[0]),
        mountpoint: PathBuf::from(&pos[1]),
        options: options.join(","),
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
                println!("{}", report.to_json(&image));
            } else {
                for e in &report.errors {
                    let fixed = report.repaired.contains(e);
                    println!("{}{e}", if fixed { "repaired: " } else { "error: " });
                }
                let verdict = match report.exit_code() {
                    0 => "clean",
                    1 => "repaired",
                    _ => "errors left (run with --repair)",
                };
                println!(
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
                println!(
                    "{{\"image\":{},\"exit_code\":8,\"error\":{}}}",
                    pinfs::fsck::json_str(&image.display().to_string()),
                    pinfs::fsck::json_str(&e.to_string())
                );
            } else {
                eprintln!("pinfs fsck: {e}");
            }
            Ok(8)
        }
    }
}

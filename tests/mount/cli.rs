//! What users of the `pinfs` command line rely on: every command has a `--help` that names
//! its flags (also as `pinfs help COMMAND`), a flag or command that does not exist is a usage
//! error (exit 2) that names it, numbers that are not sizes refuse size units (`--seed 1K`),
//! `pinfs completions SHELL` prints a script for bash, zsh and fish, and the mount.fuse3
//! form `pinfs IMAGE MOUNTPOINT -o OPTIONS` still reaches the mount. (The parser of that
//! form is tested argument by argument in the binary's unit tests, `src/cli/mod.rs`.)

#[path = "../common/mod.rs"]
mod common;

use common::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every command a user types, with the flags and arguments its help must name.
const COMMANDS: &[(&str, &[&str])] = &[
    ("mkfs", &["--size", "--force", "<IMAGE>"]),
    (
        "mount",
        &["-o <OPTIONS>", "--foreground", "<IMAGE>", "<MOUNTPOINT>"],
    ),
    ("fsck", &["--repair", "--json", "<IMAGE>"]),
    (
        "pin",
        &[
            "--offset",
            "--len",
            "--read-only",
            "--unbreakable",
            "--ignore-breaks",
            "--write-byte",
            "--every",
            "--hold",
            "<FILE>",
        ],
    ),
    (
        "status",
        &[
            "--json",
            "--events",
            "--follow",
            "--trace <FILE>",
            "<MOUNTPOINT>",
        ],
    ),
    ("fence", &["<MOUNTPOINT>", "<HOLDER>"]),
    (
        "fuzz",
        &[
            "--serial",
            "--seed",
            "--duration",
            "--ops",
            "--runs",
            "--holders",
            "--threads",
            "-o <OPTIONS>",
            "--mount",
            "--trace <FILE>",
        ],
    ),
    ("timeline", &["<TRACE>", "-o, --output <SVG>"]),
    ("demo", &[]),
    ("completions", &["<SHELL>", "bash", "zsh", "fish"]),
];

#[test]
fn every_command_has_a_help_that_names_its_flags() {
    let top = pinfs(&["--help"]);
    assert_eq!(top.status.code(), Some(0), "{}", stderr(&top));
    let top = stdout(&top);
    for words in [
        "pinfs [OPTIONS] <IMAGE> <MOUNTPOINT>",
        "mount.fuse3",
        "PINFS_LOG",
    ] {
        assert!(top.contains(words), "pinfs --help says '{words}': {top}");
    }
    assert!(
        !top.contains("fuzz-holder"),
        "the fuzzer's internal command is not offered: {top}"
    );
    for (cmd, flags) in COMMANDS {
        assert!(
            top.lines().any(|l| l.trim_start().starts_with(cmd)),
            "pinfs --help lists {cmd}: {top}"
        );
        let help = pinfs(&[cmd, "--help"]);
        assert_eq!(
            help.status.code(),
            Some(0),
            "{cmd} --help: {}",
            stderr(&help)
        );
        let text = stdout(&help);
        assert!(
            text.contains(&format!("Usage: pinfs {cmd}")),
            "{cmd} --help: {text}"
        );
        for flag in *flags {
            assert!(text.contains(flag), "{cmd} --help names {flag}: {text}");
        }
        let via_help = pinfs(&["help", cmd]);
        assert_eq!(via_help.status.code(), Some(0), "help {cmd}");
        assert_eq!(stdout(&via_help), text, "pinfs help {cmd} is {cmd} --help");
    }
    let version = pinfs(&["--version"]);
    assert_eq!(
        (version.status.code(), stdout(&version).trim()),
        (Some(0), concat!("pinfs ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn unknown_flags_and_commands_are_usage_errors_that_name_them() {
    for (cmd, _) in COMMANDS {
        let out = pinfs(&[cmd, "--no-such-flag"]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd} --no-such-flag: {e}");
        assert!(
            e.contains("'--no-such-flag'") && e.contains(&format!("Usage: pinfs {cmd}")),
            "{cmd}: the flag is named, the usage follows: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
    let out = pinfs(&["img", "mnt", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("'--no-such-flag'"),
        "{}",
        stderr(&out)
    );
    // A lone word is neither a command nor IMAGE MOUNTPOINT.
    let out = pinfs(&["mkfss"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("<MOUNTPOINT>"), "{}", stderr(&out));
    // No arguments at all: the help, on stderr, as a usage error.
    let out = pinfs(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Commands:"), "{}", stderr(&out));
    let out = pinfs(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bash"),
        "the shells are listed: {}",
        stderr(&out)
    );
}

#[test]
fn numbers_that_are_not_sizes_refuse_units() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    let serial = ["fuzz", "--serial", "--ops", "1", "--runs", "1"];
    let runs: &[(&[&str], &str)] = &[
        (&["--seed", "1K"], "--seed"),
        (&["--ops", "1K"], "--ops"),
        (&["--runs", "2k"], "--runs"),
        (&["--holders", "1K"], "--holders"),
        (&["--threads", "1M"], "--threads"),
    ];
    for (extra, flag) in runs {
        let mut args = serial.to_vec();
        args.extend_from_slice(extra);
        let out = pinfs(&args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains(flag) && e.contains("for sizes only"),
            "{args:?}: names {flag} and says why: {e}"
        );
    }
    for args in [
        &["pin", file, "--write-byte", "1", "--every", "1K"][..],
        &["fence", "/", "1K"],
    ] {
        let out = pinfs(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("for sizes only"), "{}", stderr(&out));
    }
    // Plain numbers are taken, and sizes keep their units.
    let out = pinfs(&[
        "fuzz", "--serial", "--seed", "7", "--ops", "3", "--runs", "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("all checks held"), "{}", stdout(&out));
    let img = dir.path().join("img");
    let out = pinfs(&["mkfs", img.to_str().unwrap(), "--size", "16M"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("16777216 bytes"), "{}", stdout(&out));
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _pinfs"),
        ("zsh", "#compdef pinfs"),
        ("fish", "complete -c pinfs"),
    ] {
        let out = pinfs(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {marker}: {script}");
        // (fish writes long flags as `-l NAME`.)
        for word in ["mkfs", "fsck", "status", "ignore-breaks", "serial"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
        assert!(
            !script.contains("fuzz-holder") && !script.contains("mount.fuse3"),
            "{shell}: hidden commands and flags are not offered"
        );
    }
}

/// `pinfs IMAGE MOUNTPOINT -o OPTIONS`, as mount.fuse3 runs it, with the options anywhere:
/// it reaches the mount (a missing mount point is named, exit 1; a bad option is a usage
/// error naming it, exit 2), without /dev/fuse.
#[test]
fn the_mount_fuse3_form_reaches_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "16M");
    let missing = dir.path().join("no-such-dir");
    let (i, m) = (img.to_str().unwrap(), missing.to_str().unwrap());
    for args in [
        &[i, m, "-o", "rw,noatime"][..],
        &["-o", "rw,noatime", i, m],
        &[i, "-o", "rw", m, "-o", "noatime"],
        &[i, m, "-orw,noatime"],
        &["mount", i, m, "-o", "rw,noatime"],
    ] {
        let out = pinfs(args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains(m) && e.contains("mount point"), "{args:?}: {e}");
    }
    for args in [
        &[i, m, "-o", "rw,bogus_opt"][..],
        &["-o", "bogus_opt", i, m],
    ] {
        let out = pinfs(args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains("mount option 'bogus_opt'") && e.contains("Usage: pinfs"),
            "{args:?}: {e}"
        );
    }
}

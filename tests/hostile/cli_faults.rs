//! What the `pinfs` command does with hostile input and a reader that goes away: every
//! numeric mount option and flag refuses values out of its range (negative, NaN, infinite,
//! huge, empty) as a usage error (exit 2) that names the option, the value and the accepted
//! range, never a panic; and every command that prints ends quietly when its standard
//! output is a pipe nobody reads (killed by SIGPIPE, as `cat` is), with nothing on stderr;
//! and a refused `mkfs --force` leaves the image it was to replace as it was.

#[path = "../common/mod.rs"]
mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Values no numeric option takes.
const HOSTILE: &[&str] = &[
    "1e30",
    "1e20",
    "-1",
    "-0.5",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "",
    " ",
    "18446744073709551616",
    "0x10",
    "5s",
];

/// Every numeric mount option, what it refuses besides [`HOSTILE`], and words of the range
/// its message must state.
const OPTIONS: &[(&str, &[&str], &str)] = &[
    ("lock_wait", &["31536001"], "from 0 to 31536000"),
    (
        "lease_break_time",
        &["31536001", "1e-12", "0.0001"],
        "from 0.001 to 31536000",
    ),
    (
        "guest_break_time",
        &["0", "31536001", "1e-12"],
        "from 0.001 to 31536000",
    ),
    ("threads", &["0", "257", "1.5", "1e2"], "from 1 to 256"),
    ("max_pinned", &["20000000T", "1.5M", "4Q"], "from 0 to 16E"),
];

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs pinfs with `args`; asserts a usage error that says `words`.
fn assert_usage_error(args: &[&str], words: &[&str]) {
    let out = pinfs(args);
    let e = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} is a usage error (exit 2); stderr: {e}"
    );
    assert!(!e.contains("panicked"), "{args:?}: no panic: {e}");
    for w in words {
        assert!(e.contains(w), "{args:?}: the message says '{w}': {e}");
    }
    assert!(
        e.to_lowercase().contains("usage:"),
        "{args:?}: the usage follows: {e}"
    );
}

#[test]
fn numeric_mount_options_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "16M");
    // A mount point that does not exist: an option wrongly accepted fails the test with
    // "mount point", and never mounts.
    let mnt = dir.path().join("no-such-dir");
    let (img, mnt) = (img.to_str().unwrap(), mnt.to_str().unwrap());
    for (key, extra, range) in OPTIONS {
        for v in HOSTILE.iter().chain(extra.iter()) {
            let opt = format!("{key}={v}");
            // Options are trimmed before they are parsed.
            let named = format!("mount option '{}'", opt.trim());
            let words = [named.as_str(), range];
            // `pinfs mount`, the mount.fuse3 form, and the fuzzer's -o.
            assert_usage_error(&["mount", img, mnt, "-o", &opt], &words);
            assert_usage_error(&[img, mnt, "-o", &format!("rw,{opt}")], &words);
            assert_usage_error(
                &["fuzz", "--serial", "--ops", "1", "--runs", "1", "-o", &opt],
                &words,
            );
        }
        // The option with no value at all.
        let named = format!("mount option '{key}'");
        assert_usage_error(&["mount", img, mnt, "-o", key], &[named.as_str(), range]);
    }
}

/// The table above covers every option that takes a number, as the refusal of an unknown
/// option lists them (`lock_wait=SECONDS`, `threads=N`, `max_pinned=SIZE|unlimited`).
#[test]
fn the_table_covers_every_numeric_mount_option() {
    let out = pinfs(&["mount", "img", "mnt", "-o", "no_such_option"]);
    let e = stderr(&out);
    let list = e
        .split("pinfs takes ")
        .nth(1)
        .and_then(|l| l.split(')').next())
        .unwrap_or_else(|| panic!("the refusal lists the options: {e}"));
    let numeric: Vec<&str> = list
        .split(", ")
        .filter_map(|o| o.split_once('='))
        .filter(|(_, v)| {
            ["SECONDS", "N", "SIZE"]
                .iter()
                .any(|n| v.split('|').any(|w| w == *n))
        })
        .map(|(k, _)| k)
        .collect();
    assert!(numeric.len() >= 5, "{numeric:?} from {list}");
    for k in numeric {
        assert!(
            OPTIONS.iter().any(|(o, _, _)| *o == k),
            "the numeric option {k} is in the table"
        );
    }
}

#[test]
fn numeric_flags_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    let seconds = "from 0 to 31536000";
    let flags: &[(&[&str], &str, &[&str])] = &[
        (&["pin", file, "--hold"], seconds, &["31536001"]),
        (
            &["pin", file, "--write-byte", "1", "--every"],
            "from 1 to 31536000000",
            &["0", "31536000001"],
        ),
        (&["fuzz", "--serial", "--duration"], seconds, &["31536001"]),
        (&["fuzz", "--serial", "--ops"], "more than 0", &["0"]),
        (&["fuzz", "--serial", "--runs"], "more than 0", &["0"]),
        (&["fuzz", "--serial", "--seed"], "", &[]),
        (
            &["fuzz", "--serial", "--holders"],
            "from 1 to 16",
            &["0", "17"],
        ),
        (
            &["fuzz", "--serial", "--threads"],
            "from 1 to 64",
            &["0", "65"],
        ),
    ];
    for (args, range, extra) in flags {
        let flag = *args.last().unwrap();
        for v in HOSTILE.iter().chain(extra.iter()).chain(&["1,5"]) {
            let mut a = args.to_vec();
            a.push(v);
            // A size or count that does not parse is named by its flag; one that parses
            // but is out of range also says the range.
            let out = pinfs(&a);
            let e = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{a:?}: {e}");
            assert!(!e.contains("panicked"), "{a:?}: {e}");
            assert!(e.contains(flag), "{a:?}: names {flag}: {e}");
            if extra.contains(v) || flag == "--hold" || flag == "--duration" {
                assert!(e.contains(range), "{a:?}: says '{range}': {e}");
            }
        }
    }
    for flag in ["--offset", "--len"] {
        for v in ["-1", "1e30", "", "18446744073709551616", "20000000T"] {
            let out = pinfs(&["pin", file, flag, v]);
            let e = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{flag} {v}: {e}");
            assert!(e.contains(flag) && !e.contains("panicked"), "{e}");
        }
    }
}

/// Starts pinfs with its standard output a pipe whose reading end is already closed.
fn with_closed_stdout(args: &[&str]) -> Child {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(rd);
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pinfs")
}

/// The command ends within 30 s, quietly: killed by SIGPIPE or exit 0, nothing on stderr.
fn assert_ends_quietly(args: &[&str]) {
    let mut child = with_closed_stdout(args);
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not end with its reader gone");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut e = String::new();
    child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    assert!(
        status.signal() == Some(libc::SIGPIPE) || status.code() == Some(0),
        "{args:?} ends by SIGPIPE (or exit 0), not {status:?}; stderr: {e}"
    );
    assert_eq!(e, "", "{args:?}: nothing on stderr");
}

#[test]
fn printing_commands_end_quietly_when_the_reader_goes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let img_s = img.to_str().unwrap();
    let missing = dir.path().join("missing");
    assert_ends_quietly(&["--help"]);
    assert_ends_quietly(&["help"]);
    assert_ends_quietly(&["--version"]);
    assert_ends_quietly(&["mkfs", img_s, "--size", "16M"]);
    assert!(img.exists(), "mkfs made the image before printing");
    assert_ends_quietly(&["fsck", img_s]);
    assert_ends_quietly(&["fsck", img_s, "--json"]);
    assert_ends_quietly(&["fsck", missing.to_str().unwrap(), "--json"]);
    assert_ends_quietly(&[
        "fuzz", "--serial", "--seed", "1", "--ops", "5", "--runs", "1",
    ]);
}

#[test]
fn status_and_fence_end_quietly_when_the_reader_goes_and_pin_keeps_holding() {
    if skip_without_fuse("cli_pipes_mounted") {
        return;
    }
    let m = Mount::new("64M", "break_policy=wait,lease_break_time=0");
    let file = m.path("f");
    std::fs::write(&file, vec![7u8; 8192]).unwrap();
    let mnt = m.mnt.to_str().unwrap();
    // A holder whose reader is gone from the start keeps its pin, without a word.
    let mut quiet = with_closed_stdout(&["pin", file.to_str().unwrap(), "--len", "4096"]);
    let end = Instant::now() + Duration::from_secs(15);
    let status_text =
        || String::from_utf8_lossy(&pinfs(&["status", mnt, "--json"]).stdout).into_owned();
    let pinned_by_1 = |json: &str| {
        serde_json::from_str::<pinfs::fs::status::Status>(json)
            .is_ok_and(|s| s.leases.iter().any(|l| l.holder == 1))
    };
    while !pinned_by_1(&status_text()) {
        assert!(
            quiet.try_wait().unwrap().is_none(),
            "the holder whose reader went away still runs"
        );
        assert!(Instant::now() < end, "no holder: {}", status_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ends_quietly(&["status", mnt]);
    assert_ends_quietly(&["status", mnt, "--json"]);
    assert_ends_quietly(&["status", mnt, "--events"]);
    // The grant is an event already: --follow prints it first.
    assert_ends_quietly(&["status", mnt, "--follow"]);
    assert_ends_quietly(&["fence", mnt, "1"]);
    // The fuzzer prints once its mount is gone; the demo stops before its first scenario.
    assert_ends_quietly(&[
        "fuzz",
        "--seed",
        "1",
        "--duration",
        "1",
        "--ops",
        "5",
        "--holders",
        "1",
        "--threads",
        "1",
    ]);
    assert_ends_quietly(&["demo"]);
    assert!(
        quiet.try_wait().unwrap().is_none(),
        "the holder still runs after its fence"
    );
    quiet.kill().unwrap();
    let st = quiet.wait().unwrap();
    let mut e = String::new();
    quiet.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// A standard output that fails (a full disk behind `> file`) ends a command with a clear
/// message and exit status 1, never a panic.
#[test]
fn a_full_standard_output_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let img = img.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["mkfs", img, "--size", "8M"],
        vec!["fsck", img],
        vec!["fsck", img, "--json"],
    ];
    for args in runs {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinfs"))
            .args(&args)
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output: No space left on device")
                && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// `mkfs --force` with a size the host cannot give the file (beyond what a Linux file may
/// be, or what the host filesystem takes) is refused with the old image as it was: a
/// failed re-format must not be the one that destroys it.
#[test]
fn a_refused_mkfs_force_leaves_the_old_image_alone() {
    let dir = tempfile::Builder::new()
        .prefix("pinfs-attack-mkfs")
        .tempdir()
        .unwrap();
    let img = dir.path().join("img");
    mkfs(&img, "8M");
    let before = std::fs::read(&img).unwrap();
    let mut sizes = vec!["10000000T", "18446744073709551615"];
    // A size Linux allows but the host filesystem refuses (ext4: EFBIG past 16T), where it
    // does.
    let probe = new_file(dir.path().join("probe"));
    if probe.set_len(99 << 40).is_err() {
        sizes.push("99T");
    } else {
        eprintln!("the host filesystem takes a 99T file: the EFBIG case is not tried");
    }
    drop(probe);
    for size in sizes {
        let out = pinfs(&["mkfs", img.to_str().unwrap(), "--size", size, "--force"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--size {size}: {err}");
        assert!(err.contains("size") && !err.contains("panicked"), "{err}");
        assert!(
            std::fs::read(&img).unwrap() == before,
            "--size {size}: a refused mkfs --force changed the image ({err})"
        );
    }
    let (code, report) = fsck_report(&img);
    assert_eq!(code, 0, "{report}");
}

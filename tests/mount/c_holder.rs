//! Holders in C: the static library of the C API (feature `capi`, built without the daemon
//! side), the header checked against the Rust side, and examples/c/holder.c compiled with
//! `cc -Wall -Werror` and run against a real mount until a truncate breaks its lease.

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pinfs::holder::client::Connection;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/capi` under the target directory this test was built in: the library's own
/// build directory (no lock on the one running the tests).
fn capi_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .join("capi")
}

/// Runs cargo with `args` on the client alone with the C API, in [`capi_target`].
fn cargo_capi(args: &[&str], trailing: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .current_dir(root())
        .args(args)
        .args(["--no-default-features", "--features", "capi", "--offline"])
        .arg("--target-dir")
        .arg(capi_target())
        .args(trailing)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The static library, built once per test process with the command the README gives.
fn static_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let t0 = Instant::now();
        let out = cargo_capi(
            &["rustc", "--lib", "--crate-type", "staticlib", "--quiet"],
            &[],
        );
        assert!(
            out.status.success(),
            "building the C library failed: {}",
            text(&out.stderr)
        );
        let lib = capi_target().join("debug").join("libpinfs.a");
        assert!(lib.is_file(), "{} was not built", lib.display());
        eprintln!("libpinfs.a built in {:?}", t0.elapsed());
        lib
    })
}

/// Compiles a C program against the header and the static library, warnings as errors.
fn compile(src: &Path, exe: &Path) {
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("src/holder"))
        .arg(src)
        .arg(static_lib())
        // What `rustc --print native-static-libs` says a Rust static library needs.
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
            "-o",
        ])
        .arg(exe)
        .output()
        .expect("run cc (a C compiler is needed for the C API's tests)");
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        text(&out.stderr)
    );
}

fn example() -> PathBuf {
    root().join("examples/c/holder.c")
}

#[test]
fn the_header_agrees_with_the_library() {
    // The example uses every function of the header: it compiles with -Werror and links.
    let dir = tempfile::Builder::new()
        .prefix("pinfs-capi-link")
        .tempdir()
        .unwrap();
    compile(&example(), &dir.path().join("holder"));
    // Sizes, offsets and constants: the C program is in capi.rs's unit tests (they need the
    // feature's Rust types), run here so that the whole suite checks them.
    let out = cargo_capi(&["test", "--lib"], &["--", "holder::capi::tests::"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "the C API's unit tests failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    for test in [
        "the_header_has_the_rust_layout_and_constants",
        "null_pointers_and_bad_arguments_are_errors_not_crashes",
        "events_keep_every_field",
    ] {
        assert!(
            stdout.contains(&format!("holder::capi::tests::{test} ... ok")),
            "{test} did not run:\n{stdout}"
        );
    }
}

/// The holder's next line, without its newline (empty at its end of output).
fn next_line(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn a_c_holder_stores_through_its_window_and_unpins_on_the_break() {
    if skip_without_fuse("c_holder") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pinfs-capi-holder")
        .tempdir()
        .unwrap();
    let exe = dir.path().join("holder");
    compile(&example(), &exe);

    let m = Mount::new("64M", "lease_break_time=10,break_policy=revoke");
    let f = new_file(m.path("buf"));
    f.write_all_at(&[b'.'; 4 * 4096], 0).unwrap();
    // Not block-aligned on either side: the mapping covers blocks 1 and 2.
    let (offset, len, pattern) = (5000u64, 6000usize, "from C ");
    let mut holder = Command::new(&exe)
        .arg(m.path("buf"))
        .args([&offset.to_string(), &len.to_string(), pattern, "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut line = |out: &mut BufReader<_>| {
        let l = next_line(out);
        seen.push(l.clone());
        l
    };

    let pinned = line(&mut out);
    assert!(
        pinned.starts_with("pinned pin=") && pinned.contains(" file_offset=4096 len=8192 "),
        "the pin maps whole blocks from the one holding byte {offset}: {pinned}"
    );
    let pin_id = pinned
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pin="))
        .unwrap()
        .to_string();
    let mut l = line(&mut out);
    while l.starts_with("piece ") {
        l = line(&mut out);
    }
    assert_eq!(l, format!("stored {len} bytes at offset {offset}"));
    let status = line(&mut out);
    let json: serde_json::Value = serde_json::from_str(
        status
            .strip_prefix("status ")
            .unwrap_or_else(|| panic!("not a status line: {status}")),
    )
    .unwrap_or_else(|e| panic!("the status is not JSON ({e}): {status}"));
    assert!(
        json["leases"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["state"] == "granted")),
        "the holder's status shows its granted lease: {status}"
    );

    // The stores, read through the mount, before anything breaks the lease.
    let mut bytes = vec![0u8; 4 * 4096];
    f.read_exact_at(&mut bytes, 0).unwrap();
    let expected: Vec<u8> = pattern.bytes().cycle().take(len).collect();
    let stored = &bytes[offset as usize..offset as usize + len];
    assert!(
        stored == &expected[..],
        "the file does not hold what the C holder stored: {:?}",
        String::from_utf8_lossy(&stored[..64])
    );
    assert!(
        bytes[..offset as usize].iter().all(|&b| b == b'.')
            && bytes[offset as usize + len..].iter().all(|&b| b == b'.'),
        "the holder stored outside the range it asked for"
    );

    let t0 = Instant::now();
    f.set_len(0).unwrap();
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the truncate waited {waited:?}: the C holder did not release well before the 10 s deadline"
    );
    // Its own grant may come first; the break must follow.
    let mut ev = line(&mut out);
    while ev.starts_with(&format!("event granted pin={pin_id} ")) {
        ev = line(&mut out);
    }
    assert!(
        ev.starts_with(&format!("event break pin={pin_id} "))
            && ev.contains(" deadline_ms=")
            && !ev.contains("deadline_ms=never"),
        "the holder saw the break of its pin, with its deadline: {ev}"
    );
    assert_eq!(line(&mut out), format!("unpinned pin={pin_id}"));
    assert_eq!(line(&mut out), "closed: the daemon let go of every pin");
    let status = holder.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        status.success(),
        "the C holder exited with {status}; it printed {seen:#?} and on stderr: {err}"
    );

    let s: serde_json::Value =
        serde_json::from_str(&Connection::for_path(&m.mnt).unwrap().status(false).unwrap())
            .unwrap();
    assert_eq!(s["leases"].as_array().map(Vec::len), Some(0), "{s}");
    assert_eq!(
        (&s["counters"]["breaks"], &s["counters"]["releases"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "one break, released by the holder (not revoked): {s}"
    );
    assert_eq!(f.metadata().unwrap().len(), 0);
}

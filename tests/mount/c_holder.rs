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
#[path = "../../src/holder/capi/abi.rs"]
#[allow(dead_code)]
mod abi;
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
fn cargo_capi(args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .current_dir(root())
        .args(args)
        .args(["--no-default-features", "--features", "capi", "--offline"])
        .arg("--target-dir")
        .arg(capi_target())
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
        let out = cargo_capi(&["rustc", "--lib", "--crate-type", "staticlib", "--quiet"]);
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

/// `(C expression, Rust value)` pairs the header must agree with: sizes, field offsets and
/// constants.
fn layout() -> Vec<(String, u64)> {
    use abi::*;
    use std::mem::{offset_of, size_of};
    let mut v: Vec<(String, u64)> = Vec::new();
    for (s, n) in [
        ("pinfs_pin", size_of::<PinfsPin>()),
        ("pinfs_piece", size_of::<PinfsPiece>()),
        ("pinfs_event", size_of::<PinfsEvent>()),
    ] {
        v.push((format!("sizeof(struct {s})"), n as u64));
    }
    macro_rules! fields {
        ($c:literal, $t:ty, $($f:ident),*) => {
            $(v.push((
                format!("offsetof(struct {}, {})", $c, stringify!($f)),
                offset_of!($t, $f) as u64,
            ));)*
        };
    }
    fields!(
        "pinfs_pin",
        PinfsPin,
        id,
        holder,
        file_offset,
        len,
        addr,
        pieces,
        flags
    );
    fields!(
        "pinfs_piece",
        PinfsPiece,
        file_offset,
        image_offset,
        len,
        addr
    );
    fields!(
        "pinfs_event",
        PinfsEvent,
        kind,
        flags,
        holder,
        pin,
        ino,
        offset,
        len,
        deadline_ms,
        time_sec,
        time_nsec,
        reserved,
        lost
    );
    macro_rules! constants {
        ($($c:ident),*) => { $(v.push((stringify!($c).to_string(), $c as u64));)* };
    }
    constants!(
        PINFS_PIN_RO,
        PINFS_PIN_UNBREAKABLE,
        PINFS_EVENT_GRANTED,
        PINFS_EVENT_BREAK,
        PINFS_EVENT_RELEASED,
        PINFS_EVENT_REVOKED,
        PINFS_EVENT_REFUSED,
        PINFS_EVENT_FENCED,
        PINFS_EVENT_HOLDER_GONE,
        PINFS_EVENT_LOST,
        PINFS_EVENT_HAS_PIN,
        PINFS_EVENT_HAS_DEADLINE
    );
    v
}

#[test]
fn the_header_has_the_rust_layout_and_constants() {
    let layout = layout();
    let dir = tempfile::Builder::new()
        .prefix("pinfs-capi-layout")
        .tempdir()
        .unwrap();
    let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"pinfs.h\"\n");
    c.push_str("int main(void)\n{\n");
    for (expr, _) in &layout {
        c.push_str(&format!(
            "    printf(\"%llu\\n\", (unsigned long long)({expr}));\n"
        ));
    }
    c.push_str("    return 0;\n}\n");
    let (src, exe) = (dir.path().join("layout.c"), dir.path().join("layout"));
    std::fs::write(&src, c).unwrap();
    compile(&src, &exe);
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let printed: Vec<u64> = text(&run.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(printed.len(), layout.len());
    let differ: Vec<String> = layout
        .iter()
        .zip(&printed)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((expr, rust), c)| format!("{expr}: C says {c}, Rust {rust}"))
        .collect();
    assert!(
        differ.is_empty(),
        "src/holder/pinfs.h disagrees with src/holder/capi/abi.rs: {differ:#?}"
    );
}

/// A C program checking the error conventions. Without arguments, those that need no
/// mount; with a file on a mount, those of a live connection too.
const ERRORS_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include "pinfs.h"

static int failures;
#define CHECK(cond) do { if (!(cond)) { printf("FAILED line %d: %s\n", __LINE__, #cond); failures++; } } while (0)

int main(int argc, char **argv)
{
    struct pinfs_pin pin;
    struct pinfs_event ev;
    char *s = NULL;
    errno = 0;
    CHECK(pinfs_connect(NULL) == NULL && errno == EINVAL);
    CHECK(strstr(pinfs_last_error(NULL), "NULL") != NULL);
    CHECK(pinfs_connect("/nonexistent/pinfs-capi") == NULL && errno == ENOENT);
    CHECK(strstr(pinfs_last_error(NULL), "/nonexistent/pinfs-capi") != NULL);
    CHECK(pinfs_pin(NULL, 0, 0, 4096, 0, &pin) == -EINVAL);
    CHECK(pinfs_pin_piece(NULL, 1, 0, NULL) == -EINVAL);
    CHECK(pinfs_unpin(NULL, 1) == -EINVAL);
    CHECK(pinfs_next_event(NULL, 0, &ev) == -EINVAL);
    CHECK(pinfs_status_json(NULL, &s) == -EINVAL && s == NULL);
    pinfs_free_string(NULL);
    CHECK(pinfs_close(NULL, 0) == 0);
    CHECK(strcmp(pinfs_event_name(PINFS_EVENT_BREAK), "break") == 0);
    CHECK(strcmp(pinfs_event_name(0), "unknown") == 0);
    if (argc == 2) {
        int fd = open(argv[1], O_RDWR);
        struct pinfs_conn *c = pinfs_connect(argv[1]);
        CHECK(fd >= 0 && c != NULL);
        if (c == NULL)
            return 1;
        CHECK(strcmp(pinfs_last_error(c), "") == 0);
        CHECK(pinfs_pin(c, fd, 0, 4096, 0, NULL) == -EFAULT);
        CHECK(pinfs_pin(c, -1, 0, 4096, 0, &pin) == -EBADF);
        CHECK(pinfs_pin(c, 1000, 0, 4096, 0, &pin) == -EBADF);
        CHECK(pinfs_pin(c, fd, 0, 4096, 4, &pin) == -EINVAL);
        CHECK(strstr(pinfs_last_error(c), "unknown flags") != NULL);
        CHECK(pinfs_unpin(c, 12345) == -ENOENT);
        CHECK(pinfs_pin(c, fd, 0, 0, 0, &pin) < 0); /* the daemon's refusal */
        CHECK(strlen(pinfs_last_error(c)) > strlen("pinfs_pin: "));
        printf("empty pin: %s\n", pinfs_last_error(c));
        CHECK(pinfs_pin(c, fd, 0, 4096, PINFS_PIN_RO, &pin) == 0);
        CHECK(pin.len == 4096 && pin.pieces == 1 && pin.flags == PINFS_PIN_RO);
        CHECK(((const char *)pin.addr)[0] == '.');
        struct pinfs_piece piece;
        CHECK(pinfs_pin_piece(c, pin.id, 0, &piece) == 0 && piece.addr == pin.addr);
        CHECK(pinfs_pin_piece(c, pin.id, 1, &piece) == -ERANGE);
        CHECK(pinfs_next_event(c, 0, NULL) == -EFAULT);
        CHECK(pinfs_unpin(c, pin.id) == 0);
        CHECK(pinfs_unpin(c, pin.id) == -ENOENT);
        CHECK(pinfs_close(c, 5000) == 1);
    }
    printf("%d failures\n", failures);
    return failures != 0;
}
"#;

/// Compiles [`ERRORS_C`] and runs it with `args`; asserts that every check held.
fn error_conventions(args: &[&Path]) {
    let dir = tempfile::Builder::new()
        .prefix("pinfs-capi-errors")
        .tempdir()
        .unwrap();
    let (src, exe) = (dir.path().join("errors.c"), dir.path().join("errors"));
    std::fs::write(&src, ERRORS_C).unwrap();
    compile(&src, &exe);
    let out = Command::new(&exe).args(args).output().unwrap();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("0 failures"),
        "the C API's error conventions, from C: {stdout}{}",
        text(&out.stderr)
    );
}

#[test]
fn errors_are_negative_errnos_and_null_pointers_are_refused() {
    // The example uses every function of the header: it compiles with -Werror and links.
    let dir = tempfile::Builder::new()
        .prefix("pinfs-capi-link")
        .tempdir()
        .unwrap();
    compile(&example(), &dir.path().join("holder"));
    error_conventions(&[]);
    if skip_without_fuse("c_holder_errors") {
        return;
    }
    let m = Mount::new("64M", "");
    let f = new_file(m.path("buf"));
    f.write_all_at(&[b'.'; 4096], 0).unwrap();
    error_conventions(&[&m.path("buf")]);
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

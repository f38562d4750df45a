//! The shape of the project, as a user relies on it: every test file is a test target (a file
//! in a folder that Cargo.toml does not list would silently never run), and a program that is
//! only a pin holder gets the client with no fuser, no memmap2 and no filesystem.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_test_file_is_a_test_target() {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut unlisted = Vec::new();
    let mut seen = 0;
    for folder in ["core", "mount", "model", "hostile"] {
        for entry in std::fs::read_dir(root().join("tests").join(folder)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.ends_with(".rs") {
                continue;
            }
            seen += 1;
            let path = format!("path = \"tests/{folder}/{name}\"");
            if !toml.contains(&path) {
                unlisted.push(format!("tests/{folder}/{name}"));
            }
        }
    }
    assert!(seen >= 20, "only {seen} test files found");
    assert!(
        unlisted.is_empty(),
        "test files with no [[test]] entry in Cargo.toml (they never run): {unlisted:?}"
    );
    // And nothing is left at the top of tests/, where it would be found but unfiled.
    let loose: Vec<_> = std::fs::read_dir(root().join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    assert!(
        loose.is_empty(),
        "test files outside the folders: {loose:?}"
    );
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root());
    c
}

#[test]
fn a_holder_program_gets_the_client_without_fuser_or_memmap2() {
    let out = cargo()
        .args([
            "tree",
            "-p",
            "pinfs",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"libc"), "the client's tree: {tree}");
    for daemon_only in [
        "fuser",
        "memmap2",
        "pinfs-allocator",
        "crossbeam",
        "tracing",
    ] {
        assert!(
            !crates.contains(&daemon_only),
            "{daemon_only} is in a holder program's dependencies: {tree}"
        );
    }
    // And the client alone compiles (its own target directory: no lock on ours).
    let target = root().join("target").join("client-only");
    let out = cargo()
        .args([
            "check",
            "--lib",
            "--no-default-features",
            "--offline",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the client does not build on its own: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

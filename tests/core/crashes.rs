//! The crash-state explorer (`pinfs crashes`, `pinfs::fuzzer::crashes`): its programs' crash
//! states keep every rule on a sound build, and it catches a journal whose flush is dropped
//! (the debug switch `PINFS_DEBUG_DROP_FLUSH=journal`) within a bounded number of programs,
//! with a replay command that fails the same way.

use std::process::Command;

use pinfs::fuzzer::crashes::{crash_program, explore, CrashConfig};

const BIN: &str = env!("CARGO_BIN_EXE_pinfs");

fn cfg() -> CrashConfig {
    CrashConfig {
        states_per_point: 4,
        image_bytes: 8 << 20,
    }
}

#[test]
fn every_crash_state_of_sound_programs_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut states = 0;
    for seed in 100..103 {
        let prog = crash_program(seed, 25);
        let (done, broken) = explore(dir.path(), seed, &prog, cfg()).unwrap();
        assert!(broken.is_none(), "seed {seed}: {broken:?}");
        assert_eq!(done.steps, 25);
        states += done.states;
    }
    // Points were met and crash states built at them: the run explored something.
    assert!(states > 10, "only {states} crash states");
}

#[test]
fn a_dropped_journal_flush_is_caught_and_replayed() {
    if !cfg!(debug_assertions) {
        eprintln!("*** SKIPPED: PINFS_DEBUG_DROP_FLUSH is honoured only by debug builds");
        return;
    }
    let run = |args: &[&str], drop: bool| {
        let mut c = Command::new(BIN);
        c.arg("crashes").args(args);
        if drop {
            c.env("PINFS_DEBUG_DROP_FLUSH", "journal");
        } else {
            c.env_remove("PINFS_DEBUG_DROP_FLUSH");
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let args = [
        "--seed",
        "7",
        "--programs",
        "10",
        "--ops",
        "20",
        "--states-per-point",
        "4",
    ];
    let (code, out) = run(&args, true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED: seed "), "{out}");
    assert!(out.contains("shrunk to "), "{out}");
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("replay: pinfs "))
        .unwrap_or_else(|| panic!("no replay command in {out}"));
    let replay: Vec<&str> = replay.split_whitespace().skip(1).collect();
    let (code, again) = run(&replay, true);
    assert_eq!(code, Some(1), "the replay did not fail: {again}");
    // The same programs without the switch keep every rule.
    let (code, clean) = run(&replay, false);
    assert_eq!(code, Some(0), "{clean}");
    assert!(clean.contains("every rule held"), "{clean}");
}

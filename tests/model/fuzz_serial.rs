//! The serial truncate-versus-pin fuzzer: random programs hold every check under each break
//! policy, and with `busy_blocks=off` its oracle catches the corruption and shrinks the
//! program (a self-test that the oracle can fail).

use pinfs::fuzzer::serial::{run_serial, shrink, Outcome, SerialConfig};
use pinfs::fuzzer::{program, Shape};
use pinfs::lease::Policy;

const SHAPE: Shape = Shape {
    workers: 4,
    holders: 4,
};

fn runs(
    policy: Policy,
    busy_blocks: bool,
    seeds: std::ops::Range<u64>,
) -> Option<(u64, usize, String)> {
    let dir = tempfile::tempdir().unwrap();
    for seed in seeds {
        let cfg = SerialConfig {
            policy,
            busy_blocks,
        };
        match run_serial(dir.path(), &program(seed, SHAPE, 80), cfg).unwrap() {
            Outcome::Clean { .. } => {}
            Outcome::Failed { step, what } => return Some((seed, step, what)),
        }
    }
    None
}

fn hold(policy: Policy, seeds: std::ops::Range<u64>) {
    if let Some((seed, step, what)) = runs(policy, true, seeds) {
        panic!(
            "seed {seed}, step {step}: {what} (replay: pinfs fuzz --serial --seed {seed} --ops 80 --runs 1 -o break_policy={})",
            policy.name()
        );
    }
}

#[test]
fn random_programs_hold_every_check_under_revoke() {
    hold(Policy::Revoke, 0..150);
}

#[test]
fn random_programs_hold_every_check_under_refuse() {
    hold(Policy::Refuse, 1000..1150);
}

#[test]
fn random_programs_hold_every_check_under_wait() {
    hold(Policy::Wait, 2000..2150);
}

#[test]
fn the_serial_mode_is_exactly_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SerialConfig {
        policy: Policy::Revoke,
        busy_blocks: false,
    };
    let prog = program(7, SHAPE, 300);
    let a = run_serial(dir.path(), &prog, cfg).unwrap();
    let b = run_serial(dir.path(), &prog, cfg).unwrap();
    assert_eq!(a, b);
}

#[test]
fn without_busy_blocks_the_oracle_fires_and_shrinks() {
    let (seed, _, what) = runs(Policy::Revoke, false, 0..200)
        .expect("busy_blocks=off must let a holder corrupt a file");
    assert!(what.contains("holder"), "{what}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = SerialConfig {
        policy: Policy::Revoke,
        busy_blocks: false,
    };
    let small = shrink(dir.path(), &program(seed, SHAPE, 80), cfg);
    assert!(
        small.len() <= 8,
        "shrunk to {} steps: {small:?}",
        small.len()
    );
    assert!(matches!(
        run_serial(dir.path(), &small, cfg).unwrap(),
        Outcome::Failed { .. }
    ));
}

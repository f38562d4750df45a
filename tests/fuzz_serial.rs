//! The serial truncate-versus-pin fuzzer: random programs hold every check under `revoke`
//! and `refuse`, and with `busy_blocks=off` its oracle catches the corruption and shrinks
//! the program (a self-test that the oracle can fail).

use pinfs::fuzz::{program, run_serial, shrink, Outcome, SerialConfig};
use pinfs::lease::Policy;

fn runs(
    policy: Policy,
    busy_blocks: bool,
    seeds: std::ops::Range<u64>,
) -> Option<(u64, usize, String)> {
    let dir = tempfile::tempdir().unwrap();
    for seed in seeds {
        match run_serial(
            dir.path(),
            &program(seed, 60),
            SerialConfig {
                policy,
                busy_blocks,
            },
        )
        .unwrap()
        {
            Outcome::Clean { .. } => {}
            Outcome::Failed { step, what } => return Some((seed, step, what)),
        }
    }
    None
}

#[test]
fn random_programs_hold_every_check_under_revoke() {
    if let Some((seed, step, what)) = runs(Policy::Revoke, true, 0..120) {
        panic!(
            "seed {seed}, step {step}: {what} (replay: pinfs fuzz --serial --seed {seed} --runs 1)"
        );
    }
}

#[test]
fn random_programs_hold_every_check_under_refuse() {
    if let Some((seed, step, what)) = runs(Policy::Refuse, true, 1000..1120) {
        panic!("seed {seed}, step {step}: {what} (replay: pinfs fuzz --serial --seed {seed} --runs 1 -o break_policy=refuse)");
    }
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
    let small = shrink(dir.path(), &program(seed, 60), cfg);
    assert!(
        small.len() <= 8,
        "shrunk to {} operations: {small:?}",
        small.len()
    );
    assert!(matches!(
        run_serial(dir.path(), &small, cfg).unwrap(),
        Outcome::Failed { .. }
    ));
}

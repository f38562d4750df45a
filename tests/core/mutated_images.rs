//! Hostile images: a valid image with bytes of its metadata (both superblocks, journal
//! entries, checkpoint) changed at random and every checksum recomputed must make fsck and
//! mount agree (mount refuses what fsck finds errors in) and never panic, and a mounted
//! image must work all the way. Seeded, so a failure replays; the same body as the `image`
//! fuzz target (pinfs::fuzzer::targets::image), driven here by a plain generator.

use pinfs::fuzzer::Rng;

#[test]
fn mutated_images_never_panic() {
    let mut rng = Rng::new(1);
    for round in 0..600 {
        let patches: Vec<u8> = (0..4 * (1 + rng.below(8)))
            .map(|_| rng.below(256) as u8)
            .collect();
        let r = std::panic::catch_unwind(|| pinfs::fuzzer::targets::image(&patches));
        assert!(
            r.is_ok(),
            "round {round}: patches {patches:?} broke a rule (see the panic above)"
        );
    }
}

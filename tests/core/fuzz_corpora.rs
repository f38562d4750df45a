//! The fuzz targets' kept corpora (fuzz/corpus, grown by `cargo fuzz run`) replayed as
//! regression tests on the stable toolchain: every input must run without a panic.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        n += 1;
    }
    assert!(n > 0, "the {target} corpus is empty");
}

#[test]
fn image_corpus_replays() {
    replay("image", pinfs::fuzzer::targets::image);
}

#[test]
fn protocol_corpus_replays() {
    replay("protocol", pinfs::fuzzer::targets::protocol);
}

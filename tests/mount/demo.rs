//! The demonstration runs and every outcome is the expected one.

#[path = "../common/mod.rs"]
mod common;

use common::*;

#[test]
fn the_demo_shows_every_policy_as_expected() {
    if skip_without_fuse("demo") {
        return;
    }
    let out = pinfs(&["demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 of 5 scenarios as expected"), "{text}");
    assert!(
        text.contains("holder's 'X'"),
        "the corruption is shown: {text}"
    );
}

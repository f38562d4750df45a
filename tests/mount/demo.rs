//! The demonstration runs and every outcome is the expected one, local holders and remote
//! peers alike, with what each scenario claims shown.

#[path = "../common/mod.rs"]
mod common;

use common::*;

#[test]
fn the_demo_shows_every_policy_as_expected_for_holders_and_remote_peers() {
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
    assert!(text.contains("10 of 10 scenarios as expected"), "{text}");
    assert!(
        text.contains("holder's 'X'"),
        "the corruption is shown: {text}"
    );
    // The remote scenarios: each as expected, with what it claims shown.
    let seen = |name: &str| -> String {
        let at = text
            .find(&format!("{name} "))
            .unwrap_or_else(|| panic!("no scenario {name}: {text}"));
        let rest = &text[at..];
        let head = rest.lines().next().unwrap_or_default();
        assert!(head.ends_with("as expected"), "{head}\n{text}");
        rest.lines()
            .nth(2)
            .filter(|l| l.trim_start().starts_with("seen:"))
            .unwrap_or_else(|| panic!("{name} shows what it saw: {text}"))
            .to_string()
    };
    let wait = seen("remote peer, wait");
    assert!(
        wait.contains("recalled, never acked") && wait.contains("truncate ok"),
        "{wait}"
    );
    let refuse = seen("remote peer, refuse");
    assert!(
        refuse.contains("Text file busy") && refuse.contains("size still 65536"),
        "{refuse}"
    );
    let off = seen("remote peer, revoke, busy_blocks=off");
    assert!(
        off.contains("the peer's 'X'"),
        "the peer's store in another file: {off}"
    );
    let on = seen("remote peer, revoke, busy_blocks=on");
    assert!(
        on.contains("16 blocks busy") && on.contains("new file intact (0 bad bytes)"),
        "{on}"
    );
    let odp = seen("remote peer, ODP export");
    assert!(
        odp.contains("no recall reached it") && odp.contains("next write: BAD_KEY"),
        "{odp}"
    );
    let table = text
        .split("The breaker's latency with a peer that ignores the recall, side by side:")
        .nth(1)
        .unwrap_or_else(|| panic!("the latency table: {text}"));
    for name in [
        "wait",
        "refuse",
        "revoke, busy_blocks=off",
        "revoke, busy_blocks=on",
        "ODP export",
    ] {
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("remote peer, {name} ")))
            .unwrap_or_else(|| panic!("a latency row for {name}: {table}"));
        assert!(row.trim_end().ends_with(" ms"), "{row}");
    }
}

//! The timeline a person looks at: `pinfs status --follow --trace` on a real mount writes a
//! trace (Chrome trace-event JSON) with the holder's track, its lease states as spans and
//! its breaks, deadlines and revocations as instants, a track per remote peer of an
//! exported pin with its recall and ack, a whole JSON file even when the
//! follower is killed; `pinfs fuzz --trace` does the same for a fuzzer run; `pinfs timeline`
//! draws a trace as an SVG that parses as XML and that headless Chromium renders into a
//! picture that is not blank; bad trace files get clear errors.

#[path = "../common/mod.rs"]
mod common;

use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The trace's events (panics if the file is not a whole trace).
fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", path.display()));
    v["traceEvents"].as_array().expect("traceEvents").clone()
}

fn tid_named(evs: &[Value], name: &str) -> Option<u64> {
    evs.iter()
        .find(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["args"]["name"] == name)
        .map(|e| e["tid"].as_u64().unwrap())
}

fn count(evs: &[Value], ph: &str, name: &str, tid: Option<u64>) -> usize {
    evs.iter()
        .filter(|e| e["ph"] == ph && e["name"] == name)
        .filter(|e| tid.is_none_or(|t| e["tid"] == t))
        .count()
}

fn busy_values(evs: &[Value]) -> Vec<u64> {
    evs.iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "busy_blocks")
        .map(|e| e["args"]["blocks"].as_u64().unwrap())
        .collect()
}

/// Waits (up to 20 s) until the trace file satisfies `ready`; once the file has anything in
/// it, it parses at every look.
fn wait_for(path: &Path, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let evs = if started { events(path) } else { Vec::new() };
        if ready(&evs) {
            return evs;
        }
        assert!(
            Instant::now() < deadline,
            "the trace never showed {what}: {evs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pin broken by a truncate under `revoke`, followed with `--trace`: the holder's track
/// (named by its number) has its granted, breaking and revoked spans and its break,
/// deadline, revoked and holder_gone instants, busy blocks go 0, 1, 0, and after SIGTERM the
/// follower exits 0 leaving a whole JSON trace; `pinfs timeline` draws it as an SVG that
/// parses as XML and names the holder's row.
#[test]
fn status_follow_trace_records_the_holders_spans_and_instants() {
    if skip_without_fuse("timeline_follow_trace") {
        return;
    }
    let mut m = Mount::new("64M", "break_policy=revoke,lease_break_time=0.1");
    let f = new_file(m.path("buf"));
    f.write_all_at(&[b'.'; 4 * 4096], 0).unwrap();
    let trace = m.dir.path().join("lease.trace.json");
    let mut follower = Command::new(BIN)
        .args(["status", m.mnt.to_str().unwrap(), "--follow", "--trace"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    // The follower is watching once its first busy-block count is in the trace.
    wait_for(&trace, "the first busy-block count", |e| {
        !busy_values(e).is_empty()
    });
    let mut holder = Command::new(BIN)
        .arg("pin")
        .arg(m.path("buf"))
        .args(["--len", "4096", "--ignore-breaks"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut grant = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut grant)
        .unwrap();
    let h = serde_json::from_str::<Value>(&grant).unwrap()["holder"]
        .as_u64()
        .unwrap();
    f.set_len(0).unwrap(); // breaks, waits 100 ms, revokes; the block stays busy
    wait_for(&trace, "a busy block", |e| busy_values(e).contains(&1));
    holder.kill().unwrap();
    holder.wait().unwrap();
    for line in lines.by_ref() {
        if line.unwrap().contains("\"holder_gone\"") {
            break;
        }
    }
    wait_for(&trace, "the busy block freed", |e| {
        busy_values(e).last() == Some(&0)
    });
    // SAFETY: kill(2) of our own child, still running (not reaped).
    assert_eq!(
        unsafe { libc::kill(follower.id() as i32, libc::SIGTERM) },
        0
    );
    let status = follower.wait().unwrap();
    assert!(
        status.success(),
        "the follower ends cleanly on SIGTERM: {status:?}"
    );

    let evs = events(&trace);
    let tid = tid_named(&evs, &format!("holder {h}"))
        .unwrap_or_else(|| panic!("no track for holder {h}: {evs:?}"));
    for span in ["granted", "breaking", "revoked"] {
        assert_eq!(count(&evs, "X", span, Some(tid)), 1, "{span} span: {evs:?}");
    }
    for instant in ["break", "deadline", "revoked", "holder_gone"] {
        assert_eq!(
            count(&evs, "i", instant, Some(tid)),
            1,
            "{instant}: {evs:?}"
        );
    }
    // The spans follow each other: each starts where the one before ended.
    let span = |name: &str| {
        let e = evs
            .iter()
            .find(|e| e["ph"] == "X" && e["name"] == name)
            .unwrap();
        let ts = e["ts"].as_u64().unwrap();
        (ts, ts + e["dur"].as_u64().unwrap())
    };
    assert_eq!(span("granted").1, span("breaking").0);
    assert_eq!(span("breaking").1, span("revoked").0);
    let busy = busy_values(&evs);
    assert_eq!(
        (busy.first(), busy.last()),
        (Some(&0), Some(&0)),
        "{busy:?}"
    );
    assert!(busy.contains(&1), "{busy:?}");

    let svg = m.dir.path().join("timeline.svg");
    let out = pinfs(&[
        "timeline",
        trace.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("not XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert!(texts.contains(&format!("holder {h}").as_str()), "{texts:?}");
    assert!(texts.contains(&"revoked (lease state)"), "{texts:?}");
    drop(f);
    m.umount();
}

/// An exported pin with three remote peers, two that ack the recall (and stay connected)
/// and one that ignores it, broken by a truncate under `revoke`, followed with `--trace`: each peer has a track
/// of its own named after it and its holder, with its reference as a `connected` span then
/// a `recalling` one, and a `recall` instant; the holder's track has the three recalls and
/// the two acks; the peers that acked have an `ack` instant, the other a `recall_ignored`
/// one (the lease was revoked without its ack); `status --follow` printed the `remote`
/// events; `pinfs timeline` draws the peers' rows.
#[test]
fn status_follow_trace_shows_remote_peers_their_recalls_and_acks() {
    if skip_without_fuse("timeline_remote_peers") {
        return;
    }
    let mut m = Mount::new("64M", "break_policy=revoke,lease_break_time=0.3");
    let f = new_file(m.path("buf"));
    f.write_all_at(&[b'.'; 4 * 4096], 0).unwrap();
    let trace = m.dir.path().join("remote.trace.json");
    let mut follower = Command::new(BIN)
        .args(["status", m.mnt.to_str().unwrap(), "--follow", "--trace"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let follow_out = follower.stdout.take().unwrap();
    let printed = std::thread::spawn(move || {
        std::io::BufReader::new(follow_out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    wait_for(&trace, "the first busy-block count", |e| {
        !busy_values(e).is_empty()
    });
    let mut holder = Command::new(BIN)
        .arg("pin")
        .arg(m.path("buf"))
        .args(["--len", "16384", "--export", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut holder_out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    holder_out.read_line(&mut line).unwrap();
    let h = serde_json::from_str::<Value>(&line).unwrap()["holder"]
        .as_u64()
        .unwrap();
    line.clear();
    holder_out.read_line(&mut line).unwrap();
    let export: Value = serde_json::from_str(&line).unwrap();
    let nic = export["export"]["nic"].as_str().unwrap().to_string();
    let rkey = export["export"]["rkey"].as_str().unwrap().to_string();
    // Two peers that ack the recall and stay connected (as a node with other regions
    // does), through the Rust API; one that ignores it, through `pinfs remote`.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
    let acking = |nic: &str, rkey: u64| {
        let mut p = pinfs::remote::Peer::connect(nic).unwrap();
        p.read(rkey, 0, 4096).unwrap();
        let stop = stop_rx.clone();
        std::thread::spawn(move || {
            loop {
                if let Some(k) = p.next_recall(Some(Duration::from_millis(5))).unwrap() {
                    p.ack(k).unwrap();
                    break;
                }
                let _ = p.read(rkey, 0, 4096);
            }
            let _ = stop.lock().unwrap().recv();
            drop(p);
        })
    };
    let key = pinfs::remote::protocol::parse_rkey(&rkey).unwrap();
    let ackers = [acking(&nic, key), acking(&nic, key)];
    let mut ignoring = Command::new(BIN)
        .args([
            "remote", &nic, "--rkey", &rkey, "read", "0", "4096", "--every", "5",
        ])
        .arg("--ignore-recalls")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(ignoring.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("\"op\":\"read\""), "{first}");
    // Its later lines are read until it exits (a closed pipe would end it).
    std::thread::spawn(move || out.lines().map_while(Result::ok).count());
    // The holder reported all three (what the daemon passes on as `event remote connected`).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let json = pinfs::holder::client::Connection::for_path(&m.mnt)
            .unwrap()
            .status(false)
            .unwrap();
        let s: pinfs::fs::status::Status = serde_json::from_str(&json).unwrap();
        if s.leases
            .iter()
            .any(|l| l.remote.as_ref().is_some_and(|r| r.peers.len() == 3))
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the holder never reported 3 peers: {json}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    f.set_len(0).unwrap(); // recalls; two ack; the deadline revokes the lease
    let tracks_of_peers = |evs: &[Value]| -> Vec<(String, u64)> {
        evs.iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .filter_map(|e| {
                let name = e["args"]["name"].as_str()?;
                name.ends_with(&format!(" of holder {h}"))
                    .then(|| (name.to_string(), e["tid"].as_u64().unwrap()))
            })
            .collect()
    };
    wait_for(&trace, "two acks and an ignored recall", |e| {
        count(e, "i", "recall_ignored", None) == 1 && count(e, "i", "ack", None) == 4
    });
    let _ = ignoring.kill();
    let _ = ignoring.wait();
    drop(stop_tx);
    for a in ackers {
        a.join().unwrap();
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_for(&trace, "the holder gone", |e| {
        count(e, "i", "holder_gone", None) == 1
    });
    // SAFETY: kill(2) of our own child, still running (not reaped).
    assert_eq!(
        unsafe { libc::kill(follower.id() as i32, libc::SIGTERM) },
        0
    );
    assert!(follower.wait().unwrap().success());
    let printed = printed.join().unwrap();
    let remote_lines = |state: &str| {
        printed
            .iter()
            .filter(|l| {
                l.contains("\"event\":\"remote\"") && l.contains(&format!("\"state\":\"{state}\""))
            })
            .count()
    };
    assert_eq!(remote_lines("connected"), 3, "{printed:?}");
    assert_eq!(remote_lines("recalling"), 3, "{printed:?}");
    assert_eq!(remote_lines("acked"), 2, "{printed:?}");

    let evs = events(&trace);
    let holder_tid = tid_named(&evs, &format!("holder {h}")).unwrap();
    assert_eq!(count(&evs, "i", "recall", Some(holder_tid)), 3, "{evs:?}");
    assert_eq!(count(&evs, "i", "ack", Some(holder_tid)), 2, "{evs:?}");
    assert_eq!(count(&evs, "i", "revoked", Some(holder_tid)), 1, "{evs:?}");
    let tracks = tracks_of_peers(&evs);
    assert_eq!(tracks.len(), 3, "a track per peer: {tracks:?}");
    let (mut acked, mut ignored) = (0, 0);
    for (name, tid) in &tracks {
        assert!(name.starts_with("peer 127.0.0.1:"), "{name}");
        assert_eq!(
            count(&evs, "X", "connected", Some(*tid)),
            1,
            "{name}: {evs:?}"
        );
        assert_eq!(
            count(&evs, "X", "recalling", Some(*tid)),
            1,
            "{name}: {evs:?}"
        );
        assert_eq!(count(&evs, "i", "recall", Some(*tid)), 1, "{name}: {evs:?}");
        acked += count(&evs, "i", "ack", Some(*tid));
        ignored += count(&evs, "i", "recall_ignored", Some(*tid));
        if count(&evs, "i", "recall_ignored", Some(*tid)) == 1 {
            assert_eq!(count(&evs, "X", "recall_ignored", Some(*tid)), 1, "{evs:?}");
        }
    }
    assert_eq!((acked, ignored), (2, 1), "{evs:?}");

    let svg = m.dir.path().join("remote.svg");
    let out = pinfs(&[
        "timeline",
        trace.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("not XML: {e}"));
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for (name, _) in &tracks {
        assert!(
            texts.contains(&name.as_str()),
            "{name} has a row: {texts:?}"
        );
    }
    drop(f);
    m.umount();
}

/// `pinfs fuzz --trace`: a short concurrent run leaves a whole trace with the holders'
/// granted spans, the breakers' steps on a track of their own, and the busy blocks.
#[test]
fn fuzz_trace_records_the_runs_holders_and_breakers() {
    if skip_without_fuse("timeline_fuzz_trace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("fuzz.trace.json");
    let out = Command::new(BIN)
        .args(["fuzz", "--seed", "7", "--duration", "2", "--trace"])
        .arg(&trace)
        .args(["-o", "break_policy=revoke,lease_break_time=0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&trace);
    assert!(count(&evs, "X", "granted", None) > 0, "{evs:?}");
    let breakers = tid_named(&evs, "breakers").expect("a breakers track");
    assert!(count(&evs, "i", "breaker_done", Some(breakers)) > 0);
    assert!(!busy_values(&evs).is_empty());
}

/// A trace made by the library (a scripted sequence, no mount needed), drawn by `pinfs
/// timeline`, parses as XML, and headless Chromium renders it into a screenshot that is not
/// blank: many pixels differ from the white background, and the bars' colours are there.
#[test]
fn the_timeline_renders_in_headless_chromium() {
    use pinfs::holder::protocol::{EventKind, LeaseEvent, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let ev = |kind, holder, pin, ms: u64| LeaseEvent {
        kind,
        holder,
        pin,
        ino: 2,
        offset: 0,
        len: 4096,
        time: Timestamp {
            secs: 1_700_000_000 + ms / 1_000,
            nanos: (ms % 1_000) as u32 * 1_000_000,
        },
    };
    let mut r = pinfs::trace::Recorder::new(std::fs::File::create(&trace).unwrap(), "t").unwrap();
    r.busy_blocks(1_700_000_000_000_000, 0).unwrap();
    r.lease(&ev(EventKind::Granted, 1, Some(1), 0)).unwrap();
    r.lease(&ev(EventKind::Granted, 2, Some(2), 50)).unwrap();
    r.lease(&ev(
        EventKind::Break {
            deadline_ms: Some(100),
        },
        1,
        Some(1),
        200,
    ))
    .unwrap();
    r.lease(&ev(EventKind::Released, 2, Some(2), 250)).unwrap();
    r.lease(&ev(EventKind::Revoked, 1, Some(1), 300)).unwrap();
    r.busy_blocks(1_700_000_000_310_000, 1).unwrap();
    r.lease(&ev(EventKind::HolderGone, 1, None, 600)).unwrap();
    r.busy_blocks(1_700_000_000_610_000, 0).unwrap();
    r.finish(1_700_000_000_700_000).unwrap();
    let svg = dir.path().join("t.svg");
    let out = pinfs(&[
        "timeline",
        trace.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("not XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let (w, h) = (
        root.attribute("width").unwrap().to_string(),
        root.attribute("height").unwrap().to_string(),
    );

    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        let line = "\n*** SKIPPED timeline_in_chromium: chromium is not installed (apt-get install chromium; .ci/setup does) ***\n";
        // SAFETY: write(2) of a buffer we own to file descriptor 2 (past the harness's capture).
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        return;
    };
    let png = dir.path().join("t.png");
    let profile = dir.path().join("chromium-profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("file://{}", svg.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        png.exists(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels.iter().filter(|p| p[..3] != [255, 255, 255]).count();
    assert!(
        inked * 50 > pixels.len(),
        "only {inked} of {} pixels are not white: the screenshot is blank",
        pixels.len()
    );
    // The granted bars' green and the revoked bar's red (drawn at 85 % over white).
    let near = |p: &[u8], c: [i32; 3]| (0..3).all(|i| (i32::from(p[i]) - c[i]).abs() <= 24);
    let green = pixels.iter().filter(|p| near(p, [77, 174, 95])).count();
    let red = pixels.iter().filter(|p| near(p, [208, 72, 72])).count();
    assert!(
        green > 500 && red > 500,
        "bars: {green} green, {red} red pixels"
    );
}

/// `pinfs timeline` on a missing file, a file that is not JSON (a trace cut in the middle of
/// its first line) or JSON that is no trace: exit 1, and a message that says which file,
/// what is wrong and what to give instead; no SVG is written. `--trace` without `--follow`
/// is a usage error (exit 2).
#[test]
fn bad_trace_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("out.svg");
    let run = |trace: &Path| {
        let out = pinfs(&[
            "timeline",
            trace.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let missing = dir.path().join("missing.json");
    let (code, err) = run(&missing);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: cannot read the trace: No such file",
            missing.display()
        )) && err.contains("status --follow --trace"),
        "{err}"
    );
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, "{\"traceEvents\":[{\"ph\":\"X\",\"na").unwrap();
    let (code, err) = run(&cut);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: not JSON (", cut.display())),
        "{err}"
    );
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"holders\": []}").unwrap();
    let (code, err) = run(&other);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("not a trace: it has no \"traceEvents\" array"),
        "{err}"
    );
    assert!(!svg.exists());
    assert!(!err.contains("panicked"), "{err}");
    let out = pinfs(&["status", "/", "--trace", "x.json"]);
    assert_eq!(out.status.code(), Some(2));
}

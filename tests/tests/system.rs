//! The daemon against real system components: journald (structured fields per
//! record), a full disk (fail closed, recover, lose nothing), and the systemd unit
//! (verify and the security score).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lucid_tests::{is_root, skip, Daemon};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether something listens on the journal socket (a socket file left by a journald
/// that has since exited refuses the datagram).
fn journald_listening() -> bool {
    std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(&[], JOURNAL_SOCKET)).is_ok()
}

/// Makes sure a journald is listening (starting the distribution's binary standalone
/// if none is); returns false if that is impossible here.
fn ensure_journald() -> bool {
    if journald_listening() {
        return true;
    }
    if !is_root() || !Path::new("/lib/systemd/systemd-journald").exists() {
        return false;
    }
    let _ = Command::new("/lib/systemd/systemd-journald")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if journald_listening() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn journal_entries(field: &str, value: &str) -> Vec<serde_json::Value> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager", &format!("{field}={value}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn every_record_reaches_journald_with_structured_fields() {
    if !ensure_journald() {
        return skip("every_record_reaches_journald_with_structured_fields", "no journald socket and cannot start systemd-journald (needs root and the systemd package)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.ctl_json(&["status"])["journald"] != true {
        assert!(Instant::now() < deadline, "lucidd did not connect to the listening journald");
        std::thread::sleep(Duration::from_millis(100));
    }
    let marker = format!("journald test note {}", std::process::id());
    let r = d.ctl_json(&["annotate", "--message", &marker, "--ticket", "CHG-7"]);
    let seq = r["seq"].as_u64().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let entry = loop {
        let found = journal_entries("LUCID_SUBJECT", "CHG-7")
            .into_iter()
            .find(|e| e["LUCID_SEQ"] == seq.as_str() && e["MESSAGE"].as_str().unwrap_or_default().contains(&marker));
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "record {seq} did not reach the journal");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(entry["MESSAGE_ID"], "056acc0b553d4c11ad979b176f639b92");
    assert_eq!(entry["LUCID_KIND"], "note");
    assert_eq!(entry["LUCID_CONTROLS"], "CC8.1");
    assert_eq!(entry["LUCID_SEVERITY"], "notice");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "lucidd");
    let body: serde_json::Value = serde_json::from_str(entry["LUCID_BODY"].as_str().unwrap()).unwrap();
    assert_eq!(body["ticket"], "CHG-7");
    // The start records came first, each with its kind's MESSAGE_ID.
    let starts = journal_entries("MESSAGE_ID", "5be033456f4a4586bf446c4f976f4c25");
    assert!(starts.iter().any(|e| e["LUCID_SUBJECT"] == "lucidd.start"), "no lucidd.start system record in the journal");
    // Every MESSAGE_ID the daemon uses is explained in the catalog.
    let catalog = std::fs::read_to_string(lucid_tests::repo_root().join("systemd/lucid.catalog")).unwrap();
    for kind in lucid_common::record::Kind::ALL {
        let id = lucidd::export::journald::message_id(kind);
        assert!(catalog.contains(&format!("-- {id}")), "catalog lacks {kind} ({id})");
    }
}

/// Splits a native-protocol datagram into its fields.
fn journal_fields(d: &[u8]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut rest = d;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(String::from_utf8_lossy(&line[..eq]).into(), String::from_utf8_lossy(&line[eq + 1..]).into());
            rest = &rest[nl + 1..];
        } else {
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
            out.insert(String::from_utf8_lossy(line).into(), String::from_utf8_lossy(&rest[nl + 9..nl + 9 + len]).into());
            rest = &rest[nl + 9 + len + 1..];
        }
    }
    out
}

#[test]
fn records_written_while_journald_is_away_arrive_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("journal.socket");
    // A socket file with nobody behind it, as a crashed journald leaves.
    drop(std::os::unix::net::UnixDatagram::bind(&socket).unwrap());
    let d = Daemon::start_env(&tmp.path().join("state"), &[], &[("LUCID_JOURNAL_SOCKET", socket.to_str().unwrap())]);
    assert_eq!(d.ctl_json(&["status"])["journald"], false);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let r = d.ctl_json(&["annotate", "--message", &format!("while away {i}")]);
        seqs.push(r["seq"].as_u64().unwrap());
    }
    // journald comes back: every record so far arrives, in order, none twice.
    std::fs::remove_file(&socket).unwrap();
    let server = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while got.last() != seqs.last() {
        let n = server.recv(&mut buf).expect("lucidd did not resend the records once journald listened again");
        if n == 0 {
            continue; // the connect probe
        }
        let f = journal_fields(&buf[..n]);
        if let Some(seq) = f.get("LUCID_SEQ") {
            got.push(seq.parse::<u64>().unwrap());
        }
    }
    assert_eq!(got, (0..=*seqs.last().unwrap()).collect::<Vec<_>>(), "records from the first one on, in order, none twice");
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.ctl_json(&["status"])["journald"] != true {
        assert!(Instant::now() < deadline, "status does not show journald connected");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status().ok()?.success();
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_fails_closed_and_recovers_without_losing_acknowledged_records() {
    if !is_root() {
        return skip("a_full_disk_fails_closed_and_recovers", "needs root to mount a small tmpfs");
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&tmp.path().join("small"), "24m") else {
        return skip("a_full_disk_fails_closed_and_recovers", "mount -t tmpfs failed (no privilege for mounts in this sandbox)");
    };
    // journald's copy of the failure is checked where one listens from the start (a
    // journald that another test starts midway would miss it).
    let journal = ensure_journald();
    let dir = fs.0.join("state");
    let d = Daemon::start(&dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal && d.ctl_json(&["status"])["journald"] != true {
        assert!(Instant::now() < deadline, "lucidd did not connect to the listening journald");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut acked = Vec::new();
    for i in 0..20 {
        let (status, body) = d.http("POST", "/v1/notes", &format!("{{\"message\":\"before {i}\"}}"));
        assert_eq!(status, 200, "{body}");
        acked.push(serde_json::from_str::<serde_json::Value>(&body).unwrap()["seq"].as_u64().unwrap());
    }
    let filler = fill(&fs.0);
    // Append until the ledger cannot grow; every answer is either durable or refused.
    let big = "y".repeat(8000);
    let mut refused = None;
    for i in 0..20_000 {
        let (status, body) = d.http("POST", "/v1/notes", &format!("{{\"message\":\"full {i} {big}\"}}"));
        match status {
            200 => acked.push(serde_json::from_str::<serde_json::Value>(&body).unwrap()["seq"].as_u64().unwrap()),
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("a full disk must make appends fail");
    assert!(refused.contains("ledger_unavailable"), "{refused}");
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["ledger"]["health"], "failed", "{status}");
    assert!(status["ledger"]["error"].as_str().unwrap_or_default().contains("disk full"), "{status}");
    let out = d.ctl(&["annotate", "-m", "while full"]);
    assert_eq!(out.status.code(), Some(6), "work that needs evidence is refused: {out:?}");
    assert_eq!(d.ctl(&["status"]).status.code(), Some(6), "status exits non-zero while failed");

    // Space returns: the daemon recovers by itself.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.ctl_json(&["status"])["ledger"]["health"] != "ok" {
        assert!(Instant::now() < deadline, "lucidd did not recover: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    d.ctl_ok(&["annotate", "-m", "after recovery"]);
    let recovered = d.ctl_ok(&["logs", "--kind", "system", "-o", "json"]);
    let rec: serde_json::Value = recovered
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["subject"] == "ledger.recovered")
        .expect("a ledger.recovered record states the failure window");
    assert!(rec["body"]["refused_appends"].as_u64().unwrap() >= 2, "{rec}");
    assert!(rec["body"]["error"].as_str().unwrap().contains("disk full"));
    let anomalies = d.ctl_ok(&["logs", "--anomalies"]);
    assert!(anomalies.contains("ledger.recovered") && !anomalies.contains("before 3"), "{anomalies}");
    if journal {
        let failed = journal_entries("MESSAGE_ID", "374ac128fff3444e8b43564e9a9d23a1");
        assert!(failed.iter().any(|e| e["LUCID_ERROR"].as_str().unwrap_or_default().contains("disk full")), "journald has the failure");
        assert!(!journal_entries("MESSAGE_ID", "046064624f174e81abcbcc75fcdd5931").is_empty(), "journald has the recovery");
    }
    // Nothing acknowledged was lost, and the ledger verifies.
    let notes = d.ctl_ok(&["logs", "--kind", "note", "--since", "2000-01-01", "-o", "json"]);
    let stored: std::collections::HashSet<u64> = notes
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    for seq in &acked {
        assert!(stored.contains(seq), "acknowledged record {seq} lost");
    }
    assert_eq!(d.ctl_json(&["ledger", "verify"])["ok"], true);
    drop(d);
}

#[test]
fn systemd_unit_verifies_and_scores_at_most_2_5() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        return skip("systemd_unit_verifies_and_scores_at_most_2_5", "systemd-analyze not installed");
    }
    let script = lucid_tests::repo_root().join("systemd/check-units.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let score: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lucidd.service exposure: "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 2.5, "exposure {score}: {text}");
    eprintln!("lucidd.service exposure score: {score}");
}

#[test]
fn tells_systemd_ready_status_watchdog_reload_and_stop() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let notify = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut d = Daemon::start_env(
        &tmp.path().join("state"),
        &[],
        &[("NOTIFY_SOCKET", notify.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );
    let mut seen = String::new();
    let wait_for = |what: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        while !seen.contains(what) {
            assert!(Instant::now() < deadline, "no {what} from lucidd; got: {seen}");
            if let Ok(n) = sock.recv(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
    };
    wait_for("READY=1", &mut seen);
    assert!(seen.contains("STATUS=ready:"), "{seen}");
    seen.clear();
    wait_for("WATCHDOG=1", &mut seen);
    seen.clear();
    wait_for("WATCHDOG=1", &mut seen);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    seen.clear();
    wait_for("RELOADING=1", &mut seen);
    wait_for("READY=1", &mut seen);
    let _ = d.stop();
    seen.clear();
    wait_for("STOPPING=1", &mut seen);
}

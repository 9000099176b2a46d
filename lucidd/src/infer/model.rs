//! A classifier directory loaded whole: tokenizer, encoder and heads; texts in,
//! per-head probabilities out, long texts scored as the maximum over overlapping
//! windows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::config::ModelConfig;
use super::cuda::CudaEncoder;
use super::encoder::{Encoder, Packed};
use super::heads::{Head, HeadOutput};
use super::tokens::{self, TokenHead, CASE_FEATURES};
use super::weights::Weights;
use super::InferError;

/// Longest window, in tokens, whatever the position table allows.
pub const MAX_WINDOW: usize = 512;

/// A loaded classifier (or bare encoder, when it has no heads).
pub struct Model {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Its config.
    pub config: ModelConfig,
    tokenizer: Tokenizer,
    encoder: Encoder,
    /// Heads, all scored in the same encoder pass.
    pub heads: Vec<Head>,
    /// Token heads (names), scored in that pass too.
    pub token_heads: Vec<TokenHead>,
    window: usize,
    /// The encoder on a GPU, once attached; batches run there instead.
    cuda: Option<Mutex<Box<dyn Accelerator>>>,
    /// The device it is attached to, as shown to people.
    gpu_device: String,
    /// GPU passes failed in a row.
    gpu_strikes: AtomicU32,
    /// Batches a failing GPU left to the CPU, since load.
    gpu_fallbacks: AtomicU64,
    /// The last GPU failure.
    gpu_error: Mutex<Option<String>>,
}

/// Heads' outputs (`[head][sequence]`) and token heads' probabilities (`[head][row]`).
type WithTokens = (Vec<Vec<HeadOutput>>, Vec<Vec<f32>>);

/// GPU failures in a row after which a model stays on the CPU.
const GPU_STRIKES: u32 = 3;

/// What scores a packed batch instead of the CPU backend: the cuda backend (a failing
/// stand-in in tests, which cannot have a GPU).
pub trait Accelerator: Send {
    /// Every head on every sequence of the batch, as [`Model::run_cpu`] gives them.
    fn run(&self, batch: &Packed, heads: &[Head], vocab: usize) -> Result<Vec<Vec<HeadOutput>>, InferError>;
    /// The batch's last hidden state, as the CPU encoder gives it (token heads read it).
    fn hidden(&self, batch: &Packed, vocab: usize) -> Result<Vec<f32>, InferError>;
}

impl Accelerator for CudaEncoder {
    fn run(&self, batch: &Packed, heads: &[Head], vocab: usize) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        CudaEncoder::run(self, batch, heads, vocab)
    }

    fn hidden(&self, batch: &Packed, vocab: usize) -> Result<Vec<f32>, InferError> {
        CudaEncoder::hidden(self, batch, vocab)
    }
}

/// Where a model's batches are scored now, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scoring {
    /// `cuda` while the GPU takes batches, `cpu` otherwise.
    pub backend: &'static str,
    /// The GPU (while it takes batches), or why the CPU scores them.
    pub detail: String,
    /// Batches the GPU failed and the CPU scored, since load.
    pub gpu_fallbacks: u64,
    /// The last GPU failure, if any.
    pub gpu_error: Option<String>,
}

/// Largest absolute difference between two equally long outputs; infinite where their
/// lengths differ or either holds a NaN, so a broken output can never pass a check.
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

/// One text's scores: per head, the probabilities maximised over the text's windows.
#[derive(Clone, Debug)]
pub struct TextScores {
    /// Per head, in `Model::heads` order.
    pub heads: Vec<Vec<f32>>,
    /// Windows the text was split into.
    pub windows: usize,
    /// Per token head, in `Model::token_heads` order: each token's byte span in the
    /// text and probability (the highest where windows overlap), in order.
    pub tokens: Vec<Vec<(usize, usize, f32)>>,
}

/// One window of a text, tokenised: what the batcher queues.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Each token's byte span in the text (empty for special tokens).
    pub offsets: Vec<(usize, usize)>,
    /// Each token's case features, where a token head reads them (else empty).
    pub case: Vec<[f32; CASE_FEATURES]>,
}

impl Model {
    /// Loads `config.json`, `model.safetensors`, `tokenizer.json` and, when present,
    /// `heads.json`/`heads.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Model, InferError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| InferError::Io { path: cfg_path.display().to_string(), source })?;
        let config: ModelConfig = serde_json::from_str(&text).map_err(|e| InferError::Format { path: cfg_path.display().to_string(), message: e.to_string() })?;
        // Checked before the (large) weights are read.
        let family = config.require_family()?;
        let mut weights = Weights::load(&dir.join("model.safetensors"))?;
        let encoder = Encoder::load(&config, &mut weights)?;
        let mut heads: Vec<Head> = Head::from_checkpoint(&config, family, &mut weights)?.into_iter().collect();
        // Heads trained on short windows see an instruction hidden in a long document as
        // a window of its own: the text is then scored in windows of that length.
        let mut pack_window = None;
        if dir.join("heads.json").exists() {
            let (pack, window) = Head::from_pack(dir, config.hidden_size)?;
            heads.extend(pack);
            pack_window = window;
        }
        let token_heads = TokenHead::from_pack(dir, config.hidden_size)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| InferError::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let window = encoder.max_tokens().min(MAX_WINDOW).min(pack_window.unwrap_or(MAX_WINDOW));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: window,
                stride: window / 4,
                strategy: TruncationStrategy::LongestFirst,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| InferError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Model {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            encoder,
            heads,
            token_heads,
            window,
            cuda: None,
            gpu_device: String::new(),
            gpu_strikes: AtomicU32::new(0),
            gpu_fallbacks: AtomicU64::new(0),
            gpu_error: Mutex::new(None),
        })
    }

    /// Runs the encoder's dense layers in bf16 on AMX from now on (faster, outputs
    /// within about 1e-2 of f32), or says why this host cannot; on error the model stays
    /// f32. A GPU, once attached, is unaffected.
    pub fn use_bf16(&mut self) -> Result<(), String> {
        self.encoder.use_bf16()
    }

    /// [`Model::use_bf16`] only if, in bf16, every head's probabilities on the `probe`
    /// texts stay within `tolerance` of f32's; returns the largest difference seen. On
    /// error (no AMX, or too far apart) the model stays f32 and the error says why.
    pub fn use_bf16_if_close(&mut self, probe: &[&str], tolerance: f32) -> Result<f32, String> {
        let batch = self.probe_batch(probe).map_err(|e| e.to_string())?;
        let want = self.run_cpu(&batch).map_err(|e| e.to_string())?;
        self.encoder.use_bf16()?;
        let worst = match self.run_cpu(&batch) {
            Ok(got) => want.iter().flatten().zip(got.iter().flatten()).map(|(w, g)| largest_difference(&w.probs, &g.probs)).fold(0.0, f32::max),
            Err(e) => {
                self.encoder.use_f32();
                return Err(e.to_string());
            }
        };
        if worst.is_nan() || worst > tolerance {
            self.encoder.use_f32();
            return Err(format!("in bf16 the probe texts' probabilities moved by {worst:.4} (more than {tolerance})"));
        }
        Ok(worst)
    }

    /// What the cuda backend would upload and run for this model: its shapes and
    /// weights for [`super::plan`] (the tests run the plan on the CPU).
    pub fn device_plan(&self) -> (super::plan::Shape, Vec<(super::plan::Buf, super::plan::Data)>) {
        super::plan::weights(&self.encoder, &self.heads)
    }

    /// Longest window in tokens.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Token ids of a text's windows (special tokens included); overlapping by a quarter.
    pub fn windows(&self, text: &str) -> Result<Vec<Vec<u32>>, InferError> {
        Ok(self.encode(text, false)?.into_iter().map(|w| w.ids).collect())
    }

    /// A text's windows with what the token heads read besides the ids.
    pub fn tokenize(&self, text: &str) -> Result<Vec<Window>, InferError> {
        self.encode(text, self.token_heads.iter().any(|h| h.case))
    }

    /// A text's windows, with case features where `case` asks for them.
    fn encode(&self, text: &str, case: bool) -> Result<Vec<Window>, InferError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| InferError::Tokenizer(e.to_string()))?;
        let words = case.then(|| tokens::Words::new(text));
        let window = |e: &tokenizers::Encoding| {
            let offsets: Vec<(usize, usize)> = e.get_offsets().iter().zip(e.get_special_tokens_mask()).map(|(o, special)| if *special == 1 { (0, 0) } else { *o }).collect();
            let case = match &words {
                Some(words) => offsets.iter().map(|o| words.case_features(*o)).collect(),
                None => Vec::new(),
            };
            Window { ids: e.get_ids().to_vec(), offsets, case }
        };
        let mut out = vec![window(&enc)];
        out.extend(enc.get_overflowing().iter().map(window));
        Ok(out)
    }

    /// The last hidden state of a packed batch.
    pub fn hidden(&self, batch: &Packed) -> Result<Vec<f32>, InferError> {
        self.encoder.forward(batch)
    }

    /// Every head on every sequence of a packed batch: `[head][sequence]`, on the GPU
    /// when one is attached. A batch the GPU fails is scored on the CPU (and logged);
    /// after `GPU_STRIKES` failures in a row the GPU is given up for this model.
    pub fn run(&self, batch: &Packed) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        self.gpu_or_cpu(|gpu| gpu.run(batch, &self.heads, self.encoder.vocab()), || self.run_cpu(batch))
    }

    /// `on_gpu` on the attached GPU while it has not been given up, else (and where it
    /// fails, counted as a strike) `on_cpu`.
    fn gpu_or_cpu<T>(&self, on_gpu: impl FnOnce(&dyn Accelerator) -> Result<T, InferError>, on_cpu: impl FnOnce() -> Result<T, InferError>) -> Result<T, InferError> {
        let Some(gpu) = self.cuda.as_ref().filter(|_| self.gpu_strikes.load(Ordering::Relaxed) < GPU_STRIKES) else {
            return on_cpu();
        };
        let answer = on_gpu(gpu.lock().unwrap_or_else(|p| p.into_inner()).as_ref());
        match answer {
            Ok(out) => {
                self.gpu_strikes.store(0, Ordering::Relaxed);
                Ok(out)
            }
            Err(InferError::Gpu(why)) => {
                let strikes = self.gpu_strikes.fetch_add(1, Ordering::Relaxed) + 1;
                self.gpu_fallbacks.fetch_add(1, Ordering::Relaxed);
                match strikes >= GPU_STRIKES {
                    true => tracing::error!(model = %self.dir.display(), error = %why, strikes, "GPU pass failed again; this model is scored on the CPU from now on"),
                    false => tracing::warn!(model = %self.dir.display(), error = %why, strikes, "GPU pass failed; scored on the CPU"),
                }
                *self.gpu_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                on_cpu()
            }
            Err(other) => Err(other),
        }
    }

    /// `run` on the CPU backend, GPU or not.
    pub fn run_cpu(&self, batch: &Packed) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        Ok(self.apply_heads(&self.encoder.forward(batch)?, batch))
    }

    /// Every head on a batch's hidden states.
    fn apply_heads(&self, hidden: &[f32], batch: &Packed) -> Vec<Vec<HeadOutput>> {
        self.heads.iter().map(|h| h.apply(hidden, self.encoder.hidden(), batch)).collect()
    }

    /// `run` and every token head, from one encoder pass: `[token head][row]`
    /// probabilities besides the heads' outputs. On a GPU the hidden states come back
    /// and every head is scored on the CPU (heads are small; the encoder is the work).
    fn run_with_tokens(&self, batch: &Packed, case: &[[f32; CASE_FEATURES]]) -> Result<WithTokens, InferError> {
        if self.token_heads.is_empty() {
            return Ok((self.run(batch)?, Vec::new()));
        }
        let hidden = self.gpu_or_cpu(|gpu| gpu.hidden(batch, self.encoder.vocab()), || self.encoder.forward(batch))?;
        Ok((self.apply_heads(&hidden, batch), self.token_heads.iter().map(|t| t.apply(&hidden, batch, case)).collect()))
    }

    /// Moves the encoder onto GPU 0 (kernels compiled into, or read from, `kernel_cache`)
    /// after checking that it computes the `probe` texts as the CPU backend does: every
    /// hidden state, logit and probability within `tolerance`. On failure the model
    /// stays on the CPU and the error says why.
    pub fn attach_cuda(&mut self, kernel_cache: &Path, probe: &[&str], tolerance: f32) -> Result<String, InferError> {
        let gpu = CudaEncoder::new(&self.encoder, &self.heads, kernel_cache)?;
        let device = gpu.device.clone();
        let batch = self.probe_batch(probe).map_err(|e| InferError::Gpu(format!("self-check: {e}")))?;
        let vocab = self.encoder.vocab();
        let mut worst = largest_difference(&self.encoder.forward(&batch)?, &gpu.hidden(&batch, vocab)?);
        let (want, got) = (self.run_cpu(&batch)?, gpu.run(&batch, &self.heads, vocab)?);
        for (w, g) in want.iter().flatten().zip(got.iter().flatten()) {
            worst = worst.max(largest_difference(&w.probs, &g.probs)).max(largest_difference(&w.logits, &g.logits));
        }
        if worst.is_nan() || worst > tolerance {
            return Err(InferError::Gpu(format!("self-check on {device}: outputs differ from the CPU backend's by {worst:e} (> {tolerance:e})")));
        }
        self.cuda = Some(Mutex::new(Box::new(gpu)));
        self.gpu_device = device.clone();
        self.gpu_strikes.store(0, Ordering::Relaxed);
        Ok(device)
    }

    /// Attaches a stand-in for the GPU (tests of what follows a GPU failure).
    #[cfg(test)]
    pub(crate) fn attach_accelerator(&mut self, accelerator: Box<dyn Accelerator>, device: &str) {
        self.cuda = Some(Mutex::new(accelerator));
        self.gpu_device = device.to_string();
    }

    /// Where batches are scored now: on the GPU while it takes them; on the CPU once it
    /// has failed `GPU_STRIKES` passes in a row (for good), with the last error.
    pub fn scoring(&self) -> Scoring {
        let gpu_fallbacks = self.gpu_fallbacks.load(Ordering::Relaxed);
        let gpu_error = self.gpu_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match (&self.cuda, self.on_gpu()) {
            (None, _) => Scoring { backend: "cpu", detail: String::new(), gpu_fallbacks, gpu_error },
            (Some(_), true) => Scoring { backend: "cuda", detail: self.gpu_device.clone(), gpu_fallbacks, gpu_error },
            (Some(_), false) => Scoring {
                backend: "cpu",
                detail: format!("{} given up after {GPU_STRIKES} failed passes in a row", self.gpu_device),
                gpu_fallbacks,
                gpu_error,
            },
        }
    }

    /// Every window of the `probe` texts in one packed batch (the self-checks of the GPU
    /// and of bf16 score it both ways).
    fn probe_batch(&self, probe: &[&str]) -> Result<Packed, InferError> {
        let mut batch = Packed::default();
        for text in probe {
            for w in self.windows(text)? {
                batch.push(&w);
            }
        }
        if batch.seqs.is_empty() {
            return Err(InferError::Unsupported("no probe text".into()));
        }
        Ok(batch)
    }

    /// Whether batches run on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.cuda.is_some() && self.gpu_strikes.load(Ordering::Relaxed) < GPU_STRIKES
    }

    /// Scores texts: all windows of all texts in one packed pass.
    pub fn score(&self, texts: &[&str]) -> Result<Vec<TextScores>, InferError> {
        let windows = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
        self.score_windows(&windows)
    }

    /// Scores already tokenised texts (each a list of windows) in one packed pass.
    pub fn score_windows(&self, texts: &[Vec<Window>]) -> Result<Vec<TextScores>, InferError> {
        let mut batch = Packed::default();
        let mut owner = Vec::new();
        let mut case = Vec::new();
        for (i, windows) in texts.iter().enumerate() {
            for w in windows {
                batch.push(&w.ids);
                owner.push(i);
                // A window without case features (tokenised by a caller that did not
                // ask for them) reads zeros, and the others keep theirs.
                match w.case.len() == w.ids.len() {
                    true => case.extend_from_slice(&w.case),
                    false => case.resize(case.len() + w.ids.len(), [0.0; CASE_FEATURES]),
                }
            }
        }
        let (outputs, token_probs) = self.run_with_tokens(&batch, &case)?;
        let mut scores: Vec<TextScores> = texts
            .iter()
            .map(|_| TextScores { heads: self.heads.iter().map(|h| vec![0.0; h.labels.len()]).collect(), windows: 0, tokens: vec![Vec::new(); self.token_heads.len()] })
            .collect();
        let windows = texts.iter().flatten();
        for ((seq, &text), w) in owner.iter().enumerate().zip(windows) {
            scores[text].windows += 1;
            for (h, per_seq) in outputs.iter().enumerate() {
                for (best, p) in scores[text].heads[h].iter_mut().zip(&per_seq[seq].probs) {
                    *best = best.max(*p);
                }
            }
            let (start, _) = batch.seqs[seq];
            for (h, probs) in token_probs.iter().enumerate() {
                let found = &mut scores[text].tokens[h];
                for (k, &(s, e)) in w.offsets.iter().enumerate().filter(|(_, (s, e))| e > s) {
                    found.push((s, e, probs[start + k]));
                }
            }
        }
        // Windows overlap: one entry per token, its highest probability.
        for s in &mut scores {
            for found in &mut s.tokens {
                found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.total_cmp(&a.2)));
                found.dedup_by(|later, kept| (later.0, later.1) == (kept.0, kept.1));
            }
        }
        Ok(scores)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GPU whose every pass fails.
    pub(crate) struct Failing;

    impl Accelerator for Failing {
        fn run(&self, _: &Packed, _: &[Head], _: usize) -> Result<Vec<Vec<HeadOutput>>, InferError> {
            Err(InferError::Gpu("CUDA_ERROR_ILLEGAL_ADDRESS in masked_softmax".into()))
        }

        fn hidden(&self, _: &Packed, _: usize) -> Result<Vec<f32>, InferError> {
            Err(InferError::Gpu("CUDA_ERROR_ILLEGAL_ADDRESS in masked_softmax".into()))
        }
    }

    /// Issue 13: after failing passes a model falls back to the CPU for good, and
    /// `status` still said `cuda`.
    #[test]
    fn a_gpu_given_up_is_reported_with_its_last_error() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/infer/bert");
        let mut model = Model::load(&dir).unwrap();
        assert_eq!(model.scoring().backend, "cpu");
        let want = model.score(&["still scored"]).unwrap();
        model.cuda = Some(Mutex::new(Box::new(Failing)));
        model.gpu_device = "NVIDIA H100 (sm_90)".into();
        assert_eq!(model.scoring(), Scoring { backend: "cuda", detail: "NVIDIA H100 (sm_90)".into(), gpu_fallbacks: 0, gpu_error: None });
        for _ in 0..GPU_STRIKES {
            let got = model.score(&["still scored"]).unwrap();
            assert_eq!(got[0].heads, want[0].heads, "the CPU scores what the GPU failed");
        }
        let s = model.scoring();
        assert_eq!(s.backend, "cpu");
        assert_eq!(s.detail, "NVIDIA H100 (sm_90) given up after 3 failed passes in a row");
        assert_eq!(s.gpu_fallbacks, u64::from(GPU_STRIKES));
        // Given up: the next batch goes to the CPU without trying the GPU.
        model.score(&["still scored"]).unwrap();
        assert_eq!(model.scoring().gpu_fallbacks, u64::from(GPU_STRIKES));
        assert_eq!(s.gpu_error.as_deref(), Some("CUDA_ERROR_ILLEGAL_ADDRESS in masked_softmax"));
        assert!(!model.on_gpu());
    }

    /// Issue 15: a pack names the window its heads were trained on; a long text is
    /// then scored in windows of that length, and a window out of range is refused.
    #[test]
    fn a_pack_sets_its_window() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/infer/bert");
        let dir = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&fixture).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let full = Model::load(dir.path()).unwrap();
        let long = "words of a long document ".repeat(60);
        let zeros = vec![0u8; 2 * 32 * 4];
        let bias = vec![0u8; 2 * 4];
        let tensors = [
            ("h.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 32], &zeros).unwrap()),
            ("h.bias", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bias).unwrap()),
        ];
        safetensors::serialize_to_file(tensors, None, &dir.path().join("heads.safetensors")).unwrap();
        let heads = r#"{"pooling": "mean", "normalize": true, "heads": [{"name": "h", "labels": ["a", "b"], "activation": "softmax"}], "window": 32}"#;
        std::fs::write(dir.path().join("heads.json"), heads).unwrap();
        let short = Model::load(dir.path()).unwrap();
        assert_eq!(short.window(), 32);
        assert!(short.windows(&long).unwrap().len() > full.windows(&long).unwrap().len());
        assert!(short.windows(&long).unwrap().iter().all(|w| w.len() <= 32));
        std::fs::write(dir.path().join("heads.json"), heads.replace("32", "4096")).unwrap();
        let err = Model::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("window must be a number of tokens from 16 to 512"), "{err}");
    }

    #[test]
    fn a_nan_or_a_missing_value_never_passes_a_comparison() {
        assert_eq!(largest_difference(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(largest_difference(&[1.0, f32::NAN, 2.0], &[1.0, 1.0, 2.0]), f32::INFINITY);
        assert_eq!(largest_difference(&[1.0, 2.0], &[1.0, 2.0, 3.0]), f32::INFINITY);
        assert_eq!(largest_difference(&[], &[]), 0.0);
    }
}

//! Classification heads: the sequence-classification head a checkpoint carries (BERT's
//! pooler + classifier, RoBERTa's two-layer classifier, DeBERTa's context pooler), and
//! linear heads over pooled sentence embeddings (`heads.json` + `heads.safetensors`
//! beside an encoder that has none, as the default model pack ships them).

use std::path::Path;

use serde::Deserialize;

use super::config::{Family, ModelConfig};
use super::encoder::Packed;
use super::ops::{softmax_rows, Activation, Linear};
use super::weights::Weights;
use super::InferError;

/// Most labels a head may have (one warp per label in the CUDA scoring kernel, whose
/// shared buffer holds this many).
pub const MAX_LABELS: usize = 32;

fn check_labels(head: &str, labels: usize) -> Result<(), InferError> {
    match (1..=MAX_LABELS).contains(&labels) {
        true => Ok(()),
        false => Err(InferError::Labels { head: head.into(), labels, max: MAX_LABELS }),
    }
}

/// How a head turns a sequence's hidden states into one vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pooling {
    /// The first token (`[CLS]`, `<s>`).
    First,
    /// The mean over all tokens, optionally L2-normalised (sentence-transformers).
    Mean {
        /// Normalise to unit length after averaging.
        normalize: bool,
    },
}

/// How logits become probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Exclusive labels.
    Softmax,
    /// Independent labels.
    Sigmoid,
}

/// One head.
pub struct Head {
    /// Its name (`sequence-classification` for a checkpoint's own head).
    pub name: String,
    /// Label names by index.
    pub labels: Vec<String>,
    pooling: Pooling,
    pre: Option<(Linear, Activation)>,
    out: Linear,
    output: Output,
}

/// A head's result for one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadOutput {
    /// Raw logits.
    pub logits: Vec<f32>,
    /// Probabilities (softmax or sigmoid of the logits).
    pub probs: Vec<f32>,
}

impl Head {
    /// The checkpoint's own sequence-classification head, if it has one.
    pub fn from_checkpoint(cfg: &ModelConfig, family: Family, w: &mut Weights) -> Result<Option<Head>, InferError> {
        let h = cfg.hidden_size;
        let (pre_name, pre_act, out_name) = match family {
            Family::Bert => (format!("{}pooler.dense", w.prefix), Activation::Tanh, "classifier".to_string()),
            Family::Roberta => ("classifier.dense".to_string(), Activation::Tanh, "classifier.out_proj".to_string()),
            Family::DebertaV2 => {
                let act = Activation::parse(cfg.pooler_hidden_act.as_deref().unwrap_or("gelu"))?;
                ("pooler.dense".to_string(), act, "classifier".to_string())
            }
        };
        let Some(shape) = w.shape(&format!("{out_name}.weight")).map(<[usize]>::to_vec) else { return Ok(None) };
        let labels = match shape.as_slice() {
            [n, _] => *n,
            _ => return Err(InferError::Unsupported(format!("classifier weight of shape {shape:?}"))),
        };
        check_labels(&out_name, labels)?;
        let pre_width = match family {
            Family::DebertaV2 => cfg.pooler_hidden_size.unwrap_or(h),
            _ => h,
        };
        let pre = Linear::load(w, &pre_name, pre_width, h)?;
        // The classifier's input is the pooler's output: a file that disagrees is a
        // shape error, not mis-strided logits.
        let out = Linear::load(w, &out_name, labels, pre_width)?;
        Ok(Some(Head {
            name: "sequence-classification".into(),
            labels: cfg.labels(labels),
            pooling: Pooling::First,
            pre: Some((pre, pre_act)),
            out,
            output: if cfg.multi_label() { Output::Sigmoid } else { Output::Softmax },
        }))
    }

    /// Linear heads described by `dir/heads.json` over the encoder's pooled output, and
    /// the window (in tokens) they were trained on where the file names one
    /// (`"window": 128`, 16 to [`MAX_WINDOW`](super::model::MAX_WINDOW)).
    pub fn from_pack(dir: &Path, hidden: usize) -> Result<(Vec<Head>, Option<usize>), InferError> {
        let spec_path = dir.join("heads.json");
        let text = std::fs::read_to_string(&spec_path).map_err(|source| InferError::Io { path: spec_path.display().to_string(), source })?;
        let spec: PackSpec = serde_json::from_str(&text).map_err(|e| InferError::Format { path: spec_path.display().to_string(), message: e.to_string() })?;
        for h in &spec.heads {
            check_labels(&h.name, h.labels.len())?;
        }
        let max = super::model::MAX_WINDOW;
        if let Some(w) = spec.window.filter(|w| !(16..=max).contains(w)) {
            let message = format!("window must be a number of tokens from 16 to {max}, found {w}");
            return Err(InferError::Format { path: spec_path.display().to_string(), message });
        }
        let mut w = Weights::load_any(&dir.join("heads.safetensors"))?;
        let pooling = match spec.pooling.as_str() {
            "mean" => Pooling::Mean { normalize: spec.normalize },
            "first" | "cls" => Pooling::First,
            other => return Err(InferError::Unsupported(format!("pooling {other}"))),
        };
        let mut heads = Vec::new();
        for h in spec.heads {
            let out = Linear::load(&mut w, &h.name, h.labels.len(), hidden)?;
            let output = match h.activation.as_str() {
                "softmax" => Output::Softmax,
                "sigmoid" => Output::Sigmoid,
                other => return Err(InferError::Unsupported(format!("head activation {other}"))),
            };
            heads.push(Head { name: h.name, labels: h.labels, pooling, pre: None, out, output });
        }
        Ok((heads, spec.window))
    }

    /// How the head pools a sequence.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The head's single linear layer and output, when it has no pre-layer (pooled
    /// linear heads): what the GPU scoring kernel computes in one launch.
    pub fn linear_only(&self) -> Option<(&Linear, Output)> {
        self.pre.is_none().then_some((&self.out, self.output))
    }

    /// Applies the head to every sequence of a batch.
    pub fn apply(&self, hidden: &[f32], width: usize, batch: &Packed) -> Vec<HeadOutput> {
        let pooled = pool(self.pooling, hidden, width, batch);
        self.apply_pooled(&pooled, batch.seqs.len())
    }

    /// Applies the head to `n` pooled vectors (pooled as [`Head::pooling`] says).
    pub fn apply_pooled(&self, pooled: &[f32], n: usize) -> Vec<HeadOutput> {
        let x = match &self.pre {
            Some((lin, act)) => {
                let mut y = lin.forward(pooled, n);
                act.apply(&mut y);
                y
            }
            None => pooled.to_vec(),
        };
        let logits = self.out.forward(&x, n);
        let k = self.out.out;
        let mut probs = logits.clone();
        match self.output {
            Output::Softmax => softmax_rows(&mut probs, k),
            Output::Sigmoid => probs.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        }
        logits.chunks_exact(k).zip(probs.chunks_exact(k)).map(|(l, p)| HeadOutput { logits: l.to_vec(), probs: p.to_vec() }).collect()
    }
}

/// One vector per sequence of a packed batch's hidden states.
fn pool(pooling: Pooling, hidden: &[f32], width: usize, batch: &Packed) -> Vec<f32> {
    let mut pooled = Vec::with_capacity(batch.seqs.len() * width);
    for &(start, len) in &batch.seqs {
        match pooling {
            Pooling::First => pooled.extend_from_slice(&hidden[start * width..(start + 1) * width]),
            Pooling::Mean { normalize } => {
                let mut acc = vec![0.0f32; width];
                for t in start..start + len {
                    acc.iter_mut().zip(&hidden[t * width..(t + 1) * width]).for_each(|(a, v)| *a += v);
                }
                let inv = 1.0 / len.max(1) as f32;
                acc.iter_mut().for_each(|a| *a *= inv);
                if normalize {
                    let norm = acc.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                    acc.iter_mut().for_each(|a| *a /= norm);
                }
                pooled.extend_from_slice(&acc);
            }
        }
    }
    pooled
}

#[derive(Deserialize)]
struct PackSpec {
    pooling: String,
    #[serde(default)]
    normalize: bool,
    heads: Vec<PackHead>,
    /// Tokens per window the heads were trained on.
    #[serde(default)]
    window: Option<usize>,
}

#[derive(Deserialize)]
struct PackHead {
    name: String,
    labels: Vec<String>,
    activation: String,
}

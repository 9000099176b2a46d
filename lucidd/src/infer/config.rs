//! A model directory's `config.json`: the fields of Hugging Face's configs that decide
//! the encoder's shape and the classification head's labels and activation.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The encoder families this engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BERT and its descendants with absolute positions from 0 (BERT, MiniLM).
    Bert,
    /// RoBERTa and XLM-R: positions start after the padding index, no segment ids.
    Roberta,
    /// DeBERTa-v2/v3: disentangled relative-position attention.
    DebertaV2,
}

/// The subset of `config.json` that the engine reads.
#[derive(Clone, Debug, Deserialize)]
pub struct ModelConfig {
    /// `bert`, `roberta`, `xlm-roberta`, `deberta-v2`, ...
    pub model_type: String,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation (`gelu` is the exact, erf form).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Rows of the absolute position table.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Rows of the segment table (0: none).
    #[serde(default)]
    pub type_vocab_size: usize,
    /// Padding token id (RoBERTa's positions are counted from it).
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    /// Label names by index, for classification heads.
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    /// `multi_label_classification` selects sigmoid over softmax.
    #[serde(default)]
    pub problem_type: Option<String>,
    /// DeBERTa: whether relative attention is on.
    #[serde(default)]
    pub relative_attention: bool,
    /// DeBERTa: whether absolute positions are added to the embeddings.
    #[serde(default)]
    pub position_biased_input: Option<bool>,
    /// DeBERTa: `["p2c", "c2p"]` or a `|`-separated string.
    #[serde(default)]
    pub pos_att_type: Option<serde_json::Value>,
    /// DeBERTa: relative distance cut-off (-1: max_position_embeddings).
    #[serde(default = "minus_one")]
    pub max_relative_positions: i64,
    /// DeBERTa: log-bucket count (-1 or 0: no bucketing).
    #[serde(default = "minus_one")]
    pub position_buckets: i64,
    /// DeBERTa: whether the relative embeddings pass through the layer's own Q/K.
    #[serde(default)]
    pub share_att_key: bool,
    /// DeBERTa: `layer_norm` to normalise the relative embeddings.
    #[serde(default)]
    pub norm_rel_ebd: Option<String>,
    /// DeBERTa: the pooler's activation.
    #[serde(default)]
    pub pooler_hidden_act: Option<String>,
    /// DeBERTa: the pooler's width.
    #[serde(default)]
    pub pooler_hidden_size: Option<usize>,
    /// DeBERTa: embedding width when it differs from hidden_size.
    #[serde(default)]
    pub embedding_size: Option<usize>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_positions() -> usize {
    512
}
fn minus_one() -> i64 {
    -1
}

impl ModelConfig {
    /// The family of `model_type`, or `None` for an architecture this engine lacks.
    pub fn family(&self) -> Option<Family> {
        match self.model_type.as_str() {
            "bert" => Some(Family::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Family::Roberta),
            "deberta-v2" => Some(Family::DebertaV2),
            _ => None,
        }
    }

    /// The family, or the error that names what is supported.
    pub fn require_family(&self) -> Result<Family, super::InferError> {
        self.family().ok_or_else(|| super::InferError::Unsupported(format!("model_type {} (supported: bert, roberta, xlm-roberta, camembert, deberta-v2)", self.model_type)))
    }

    /// Labels in index order (`LABEL_i` where config.json names none).
    pub fn labels(&self, n: usize) -> Vec<String> {
        (0..n).map(|i| self.id2label.get(&i.to_string()).cloned().unwrap_or_else(|| format!("LABEL_{i}"))).collect()
    }

    /// Whether the labels are independent (sigmoid) rather than exclusive (softmax).
    pub fn multi_label(&self) -> bool {
        self.problem_type.as_deref() == Some("multi_label_classification")
    }

    /// DeBERTa's attention terms: (content-to-position, position-to-content).
    pub fn pos_att(&self) -> (bool, bool) {
        let items: Vec<String> = match &self.pos_att_type {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).map(|s| s.to_lowercase()).collect(),
            Some(serde_json::Value::String(s)) => s.split('|').map(|p| p.trim().to_lowercase()).collect(),
            _ => Vec::new(),
        };
        (items.iter().any(|s| s == "c2p"), items.iter().any(|s| s == "p2c"))
    }
}

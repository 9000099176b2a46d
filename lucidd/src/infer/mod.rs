//! The classifier engine: Hugging Face encoder classifiers (BERT, MiniLM, RoBERTa,
//! XLM-R, DeBERTa-v2/v3) loaded from a directory and scored in packed batches.
//!
//! `cpu` is pure Rust (the `gemm` crate's SIMD kernels on rayon threads, f32). Layout:
//! `config` (config.json), `weights` (safetensors), `ops` (GEMM, LayerNorm, GELU,
//! softmax), `encoder` (the transformer), `heads` (classifier heads and pooled linear
//! heads), `model` (tokenizer + encoder + heads, windows for long texts), `batcher`
//! (one queue, token-budget batches), `backend` (which backend, and why), `service`
//! (the models the daemon has loaded, and where the default pack is), `kernels` (the
//! CUDA sources, compiled by NVRTC).

pub mod amx;
pub mod backend;
pub mod batcher;
pub mod config;
pub mod cuda;
pub mod encoder;
pub mod heads;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod plan;
pub mod service;
pub mod tokens;
pub mod weights;

pub use model::{Model, TextScores, Window};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: tensor {name} is missing")]
    MissingTensor {
        /// The checkpoint.
        path: String,
        /// The tensor.
        name: String,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor {name} has shape {found:?}, config says {expected:?}")]
    Shape {
        /// The checkpoint.
        path: String,
        /// The tensor.
        name: String,
        /// From the config.
        expected: Vec<usize>,
        /// In the file.
        found: Vec<usize>,
    },
    /// An architecture, activation or option this engine does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The tokenizer failed to load or to encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A token id outside the embedding table.
    #[error("token id {id} outside the vocabulary of {vocab}")]
    Token {
        /// The id.
        id: usize,
        /// Rows of the table.
        vocab: usize,
    },
    /// A sequence with no tokens (a tokenizer without special tokens, given "").
    #[error("empty token sequence")]
    Empty,
    /// A head with no labels, or more than the scoring kernel takes.
    #[error("head {head} has {labels} labels (1 to {max} supported)")]
    Labels {
        /// The head.
        head: String,
        /// Its label count.
        labels: usize,
        /// The limit.
        max: usize,
    },
    /// The GPU or the CUDA libraries failed.
    #[error("cuda: {0}")]
    Gpu(String),
    /// A sequence longer than the position table.
    #[error("sequence of {tokens} tokens exceeds the model's {max}")]
    TooLong {
        /// Its length.
        tokens: usize,
        /// The limit.
        max: usize,
    },
}

//! Tensors from `model.safetensors`, converted to f32 and looked up by name, with the
//! architecture prefix (`bert.`, `roberta.`, `deberta.` or none) found once.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::InferError;

/// One tensor: shape and f32 values in row-major order.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// All tensors of a checkpoint.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Prefix of the encoder's tensors (`bert.` ...), empty for a bare encoder.
    pub prefix: String,
    file: String,
}

impl Weights {
    /// Reads an encoder checkpoint (F32, F16 or BF16 tensors).
    pub fn load(path: &Path) -> Result<Weights, InferError> {
        let mut w = Weights::load_any(path)?;
        w.prefix = ["", "bert.", "roberta.", "deberta.", "model."]
            .into_iter()
            .find(|p| w.tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| InferError::Format { path: w.file.clone(), message: "no embeddings.word_embeddings.weight: not an encoder checkpoint".into() })?
            .to_string();
        Ok(w)
    }

    /// Reads any safetensors file (heads, say), with no prefix.
    pub fn load_any(path: &Path) -> Result<Weights, InferError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| InferError::Io { path: file.clone(), source })?;
        Weights::parse(&bytes, &file)
    }

    /// Parses safetensors bytes; `file` names them in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Weights, InferError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| InferError::Format { path: file.into(), message: e.to_string() })?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                // Integer buffers (position_ids) are not weights.
                _ => continue,
            };
            tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
        }
        Ok(Weights { tensors, prefix: String::new(), file: file.into() })
    }

    /// Takes a tensor by its full name, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, InferError> {
        let t = self.tensors.remove(name).ok_or_else(|| InferError::MissingTensor { path: self.file.clone(), name: name.into() })?;
        if t.shape != shape {
            return Err(InferError::Shape { path: self.file.clone(), name: name.into(), expected: shape.to_vec(), found: t.shape });
        }
        Ok(t.data)
    }

    /// Takes an encoder tensor (the prefix is added).
    pub fn encoder(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, InferError> {
        let full = format!("{}{name}", self.prefix);
        self.take(&full, shape)
    }

    /// The shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }
}

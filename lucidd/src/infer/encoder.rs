//! The transformer encoder on the CPU: BERT, RoBERTa/XLM-R and DeBERTa-v2/v3.
//!
//! A batch is *packed*: the tokens of all sequences are rows of one matrix, so every
//! dense layer is one GEMM over real tokens only, and attention runs per sequence over
//! its own rows. Padding never costs compute and needs no mask.

use rayon::prelude::*;

use super::config::{Family, ModelConfig};
use super::ops::{matmul_serial, softmax_rows, Activation, LayerNorm, Linear, View};
use super::weights::Weights;
use super::InferError;

/// Token ids of several sequences laid end to end.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    /// All token ids.
    pub ids: Vec<u32>,
    /// (first row, length) of each sequence.
    pub seqs: Vec<(usize, usize)>,
}

impl Packed {
    /// Appends one sequence.
    pub fn push(&mut self, ids: &[u32]) {
        self.seqs.push((self.ids.len(), ids.len()));
        self.ids.extend_from_slice(ids);
    }

    /// Number of token rows.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }
}

/// DeBERTa's relative-position machinery, shared by all layers.
pub(super) struct Relative {
    /// Rows of each layer's projected relative embeddings (`2 * att_span`).
    pub(super) rows: usize,
    /// Row of the relative table for each query-minus-key distance d, at
    /// `d + max_tokens - 1` (bucketed and clamped; built once at load).
    pub(super) index: Vec<usize>,
    pub(super) c2p: bool,
    pub(super) p2c: bool,
}

/// make_log_bucket_position of the reference, in f32 as it computes it: distances
/// beyond `buckets / 2` share log-spaced buckets up to `max_distance`. Odd in `rel`.
fn bucket(rel: i64, buckets: i64, max_distance: i64) -> i64 {
    if buckets <= 0 || max_distance <= 0 {
        return rel;
    }
    let mid = buckets / 2;
    let abs = if rel < mid && rel > -mid { mid - 1 } else { rel.abs() };
    if abs <= mid {
        return rel;
    }
    let (midf, absf) = (mid as f32, abs as f32);
    let log_pos = ((absf / midf).ln() / ((max_distance - 1) as f32 / midf).ln() * (mid - 1) as f32).ceil() + midf;
    log_pos as i64 * rel.signum()
}

pub(super) struct Layer {
    pub(super) qkv: Linear,
    /// DeBERTa: the relative embeddings projected to keys (c2p) and to queries (p2c),
    /// `[rows, h]` each; they depend on weights only, so they are computed at load.
    pub(super) rel_key: Option<Vec<f32>>,
    pub(super) rel_query: Option<Vec<f32>>,
    pub(super) attn_out: Linear,
    pub(super) ln1: LayerNorm,
    pub(super) inter: Linear,
    pub(super) out: Linear,
    pub(super) ln2: LayerNorm,
}

/// A loaded encoder.
pub struct Encoder {
    pub(super) family: Family,
    pub(super) hidden: usize,
    pub(super) heads: usize,
    pub(super) words: Vec<f32>,
    /// Width of the word embeddings (DeBERTa may project them up).
    pub(super) embedding_size: usize,
    pub(super) embed_proj: Option<Linear>,
    pub(super) positions: Option<Vec<f32>>,
    pub(super) max_positions: usize,
    /// First position id (RoBERTa counts from after the padding index).
    pub(super) position_offset: usize,
    pub(super) token_type: Option<Vec<f32>>,
    pub(super) emb_ln: LayerNorm,
    pub(super) layers: Vec<Layer>,
    pub(super) act: Activation,
    pub(super) relative: Option<Relative>,
    /// Attention's two products in bf16 on AMX (set with the dense layers' bf16, for
    /// models without relative positions).
    pub(super) bf16_attention: bool,
    /// Working buffers of finished passes, for the next ones (see [`Buffers`]).
    pub(super) spare: std::sync::Mutex<Vec<Buffers>>,
}

/// One pass's intermediate matrices, reused layer after layer and pass after pass: the
/// shapes repeat, and fresh buffers of this size cost zeroing and page faults (a tenth
/// of a batch's time before they were kept).
#[derive(Default)]
pub(super) struct Buffers {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attended: Vec<f32>,
    inter: Vec<f32>,
    inter_bf16: Vec<u16>,
}

impl Buffers {
    /// Passes whose buffers are kept at once (more concurrent passes allocate their own).
    const KEPT: usize = 2;
    /// Largest set kept, in f32 values (256 MiB): a rare huge batch is not held for good.
    const MAX_VALUES: usize = 64 << 20;

    fn values(&self) -> usize {
        self.qkv.capacity() + self.ctx.capacity() + self.attended.capacity() + self.inter.capacity() + self.inter_bf16.capacity() / 2
    }
}

impl Encoder {
    /// Loads the encoder tensors of `cfg`'s family from `w`.
    pub fn load(cfg: &ModelConfig, w: &mut Weights) -> Result<Encoder, InferError> {
        let family = cfg.require_family()?;
        let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
        if heads == 0 || h % heads != 0 {
            return Err(InferError::Unsupported(format!("hidden_size {h} is not a multiple of {heads} heads")));
        }
        let vocab = w.shape(&format!("{}embeddings.word_embeddings.weight", w.prefix)).map_or(0, |s| s[0]);
        let embedding_size = cfg.embedding_size.unwrap_or(h);
        let words = w.encoder("embeddings.word_embeddings.weight", &[vocab, embedding_size])?;
        let embed_proj = match embedding_size != h {
            true => {
                let p = w.prefix.clone();
                let t = w.take(&format!("{p}embeddings.embed_proj.weight"), &[h, embedding_size])?;
                Some(Linear::from_parts(t, vec![0.0; h], h, embedding_size))
            }
            false => None,
        };
        let absolute = family != Family::DebertaV2 || cfg.position_biased_input.unwrap_or(true);
        let positions = match absolute {
            true => Some(w.encoder("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, embedding_size])?),
            false => None,
        };
        let position_offset = match family {
            Family::Roberta => cfg.pad_token_id.unwrap_or(1) + 1,
            _ => 0,
        };
        let token_type = match cfg.type_vocab_size {
            0 => None,
            n => Some(w.encoder("embeddings.token_type_embeddings.weight", &[n, embedding_size])?),
        };
        let p = w.prefix.clone();
        let emb_ln = LayerNorm::load(w, &format!("{p}embeddings.LayerNorm"), embedding_size, cfg.layer_norm_eps)?;
        let (self_names, attn_span) = match family {
            Family::DebertaV2 => (["query_proj", "key_proj", "value_proj"], true),
            _ => (["query", "key", "value"], false),
        };
        let (c2p, p2c) = cfg.pos_att();
        let relative_on = attn_span && cfg.relative_attention;
        let max_distance = if cfg.max_relative_positions < 1 { cfg.max_position_embeddings as i64 } else { cfg.max_relative_positions };
        let span = if cfg.position_buckets > 0 { cfg.position_buckets } else { max_distance } as usize;
        let rel_embeddings = match relative_on {
            false => None,
            true => {
                let mut e = w.take(&format!("{p}encoder.rel_embeddings.weight"), &[2 * span, h])?;
                if cfg.norm_rel_ebd.as_deref().is_some_and(|n| n.contains("layer_norm")) {
                    LayerNorm::load(w, &format!("{p}encoder.LayerNorm"), h, cfg.layer_norm_eps)?.apply(&mut e);
                }
                Some(e)
            }
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}encoder.layer.{i}");
            let qkv = Linear::concat(vec![
                Linear::load(w, &format!("{l}.attention.self.{}", self_names[0]), h, h)?,
                Linear::load(w, &format!("{l}.attention.self.{}", self_names[1]), h, h)?,
                Linear::load(w, &format!("{l}.attention.self.{}", self_names[2]), h, h)?,
            ]);
            let (mut rel_key, mut rel_query) = (None, None);
            if let Some(e) = &rel_embeddings {
                let n = 2 * span;
                if cfg.share_att_key {
                    // The layer's own key and query projections (columns h..2h and 0..h).
                    let both = qkv.forward(e, n);
                    let cols = |from: usize| -> Vec<f32> { both.chunks_exact(3 * h).flat_map(|row| row[from..from + h].iter().copied()).collect() };
                    rel_key = c2p.then(|| cols(h));
                    rel_query = p2c.then(|| cols(0));
                } else {
                    if c2p {
                        rel_key = Some(Linear::load(w, &format!("{l}.attention.self.pos_key_proj"), h, h)?.forward(e, n));
                    }
                    if p2c {
                        rel_query = Some(Linear::load(w, &format!("{l}.attention.self.pos_query_proj"), h, h)?.forward(e, n));
                    }
                }
            }
            layers.push(Layer {
                qkv,
                rel_key,
                rel_query,
                attn_out: Linear::load(w, &format!("{l}.attention.output.dense"), h, h)?,
                ln1: LayerNorm::load(w, &format!("{l}.attention.output.LayerNorm"), h, cfg.layer_norm_eps)?,
                inter: Linear::load(w, &format!("{l}.intermediate.dense"), cfg.intermediate_size, h)?,
                out: Linear::load(w, &format!("{l}.output.dense"), h, cfg.intermediate_size)?,
                ln2: LayerNorm::load(w, &format!("{l}.output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        let relative = rel_embeddings.map(|_| {
            let longest = cfg.max_position_embeddings as i64;
            let rows = 2 * span;
            let index = (-(longest - 1)..longest)
                .map(|d| (bucket(d, cfg.position_buckets, max_distance) + span as i64).clamp(0, rows as i64 - 1) as usize)
                .collect();
            Relative { rows, index, c2p, p2c }
        });
        Ok(Encoder {
            family,
            hidden: h,
            heads,
            words,
            embedding_size,
            embed_proj,
            positions,
            max_positions: cfg.max_position_embeddings,
            position_offset,
            token_type,
            emb_ln,
            layers,
            act: Activation::parse(&cfg.hidden_act)?,
            relative,
            bf16_attention: false,
            spare: Default::default(),
        })
    }

    /// Rows of the word embedding table.
    pub fn vocab(&self) -> usize {
        self.words.len() / self.embedding_size.max(1)
    }

    /// Width of the hidden states.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Longest sequence the model takes (its position table, or for relative-only
    /// models the length it was trained for).
    pub fn max_tokens(&self) -> usize {
        self.max_positions.saturating_sub(self.position_offset)
    }

    /// Moves every dense layer of the encoder, and attention's products where the model
    /// has no relative positions, to bf16 on AMX (`amx`), or says why it cannot; on
    /// error nothing changed.
    pub fn use_bf16(&mut self) -> Result<(), String> {
        super::amx::available()?;
        for l in &mut self.layers {
            for lin in [&mut l.qkv, &mut l.attn_out, &mut l.inter, &mut l.out] {
                lin.use_bf16();
            }
        }
        self.bf16_attention = self.relative.is_none();
        Ok(())
    }

    /// Undoes [`Encoder::use_bf16`]: f32 throughout again.
    pub fn use_f32(&mut self) {
        for l in &mut self.layers {
            for lin in [&mut l.qkv, &mut l.attn_out, &mut l.inter, &mut l.out] {
                lin.use_f32();
            }
        }
        self.bf16_attention = false;
    }

    /// Runs the encoder; returns the last hidden state, one row per token.
    pub fn forward(&self, batch: &Packed) -> Result<Vec<f32>, InferError> {
        let mut x = self.embed(batch)?;
        let rows = batch.rows();
        // Attention runs one task per (sequence, head), so that even one sequence uses
        // every core; the same tasks in every layer.
        let tasks: Vec<(usize, usize, usize)> = batch.seqs.iter().flat_map(|&(start, len)| (0..self.heads).map(move |head| (start, len, head))).collect();
        let mut buffers = self.spare.lock().ok().and_then(|mut s| s.pop()).unwrap_or_default();
        for layer in &self.layers {
            self.layer(layer, &mut x, &batch.seqs, &tasks, rows, &mut buffers);
        }
        if buffers.values() <= Buffers::MAX_VALUES {
            if let Ok(mut spare) = self.spare.lock() {
                if spare.len() < Buffers::KEPT {
                    spare.push(buffers);
                }
            }
        }
        Ok(x)
    }

    fn embed(&self, batch: &Packed) -> Result<Vec<f32>, InferError> {
        let e = self.embedding_size;
        let vocab = self.words.len() / e.max(1);
        let mut x = vec![0.0f32; batch.rows() * e];
        for &(start, len) in &batch.seqs {
            if len > self.max_tokens() {
                return Err(InferError::TooLong { tokens: len, max: self.max_tokens() });
            }
            if len == 0 {
                return Err(InferError::Empty);
            }
            for t in 0..len {
                let id = batch.ids[start + t] as usize;
                if id >= vocab {
                    return Err(InferError::Token { id, vocab });
                }
                let row = &mut x[(start + t) * e..(start + t + 1) * e];
                row.copy_from_slice(&self.words[id * e..(id + 1) * e]);
                if let Some(pos) = &self.positions {
                    let p = self.position_offset + t;
                    row.iter_mut().zip(&pos[p * e..(p + 1) * e]).for_each(|(v, q)| *v += q);
                }
                if let Some(tt) = &self.token_type {
                    row.iter_mut().zip(&tt[..e]).for_each(|(v, q)| *v += q);
                }
            }
        }
        self.emb_ln.apply(&mut x);
        Ok(match &self.embed_proj {
            Some(p) => p.forward(&x, batch.rows()),
            None => x,
        })
    }

    /// One layer over `x` (in place), with `b` as its working space.
    fn layer(&self, l: &Layer, x: &mut Vec<f32>, seqs: &[(usize, usize)], tasks: &[(usize, usize, usize)], rows: usize, b: &mut Buffers) {
        l.qkv.forward_into(x, rows, None, &mut b.qkv);
        if !(self.bf16_attention && self.attention_bf16(&b.qkv, seqs, tasks, rows, &mut b.ctx)) {
            self.attention(l, &b.qkv, tasks, rows, &mut b.ctx);
        }
        l.attn_out.forward_into(&b.ctx, rows, None, &mut b.attended);
        l.ln1.add_apply(&mut b.attended, x);
        l.inter.forward_chain(&l.out, &b.attended, rows, Some(self.act), &mut b.inter, &mut b.inter_bf16, x);
        l.ln2.add_apply(x, &b.attended);
    }

    /// Every head's attention over every sequence in f32: one task per (sequence, head).
    fn attention(&self, l: &Layer, qkv: &[f32], tasks: &[(usize, usize, usize)], rows: usize, ctx: &mut Vec<f32>) {
        let h = self.hidden;
        let d = h / self.heads;
        let blocks: Vec<Vec<f32>> = tasks.par_iter().map(|&(start, len, head)| self.attend(qkv, start, len, head, l)).collect();
        ctx.resize(rows * h, 0.0);
        for (&(start, len, head), block) in tasks.iter().zip(&blocks) {
            for t in 0..len {
                ctx[(start + t) * h + head * d..(start + t) * h + (head + 1) * d].copy_from_slice(&block[t * d..(t + 1) * d]);
            }
        }
    }

    /// Every head's attention in bf16 on AMX (f32 sums, f32 softmax): each (sequence,
    /// head)'s `K^T` and `V` are laid out in tiles once, then one task per 32 query rows
    /// of a sequence runs every head and writes its rows of the context into `ctx`.
    /// False where the batch is not packed end to end or AMX refused a product (the
    /// caller then runs [`Encoder::attention`]).
    fn attention_bf16(&self, qkv: &[f32], seqs: &[(usize, usize)], tasks: &[(usize, usize, usize)], rows: usize, ctx: &mut Vec<f32>) -> bool {
        use super::amx::{product, softmax_to_bf16, to_bf16, Operand};
        const BLOCK: usize = 32;
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let mut next = 0;
        for &(start, len) in seqs {
            if start != next || len > super::amx::MAX_KEYS {
                return false;
            }
            next += len;
        }
        if next != rows || qkv.len() < rows * 3 * h {
            return false;
        }
        let operands: Vec<(Operand, Operand)> = tasks
            .par_iter()
            .map(|&(start, len, head)| {
                let at = |col: usize| qkv.get(start * 3 * h + col..).unwrap_or_default();
                (Operand::transposed(at(h + head * d), 3 * h, len, d), Operand::rows(at(2 * h + head * d), 3 * h, len, d))
            })
            .collect();
        ctx.resize(rows * h, 0.0);
        let mut jobs = Vec::new();
        let mut rest: &mut [f32] = ctx;
        for (s, &(start, len)) in seqs.iter().enumerate() {
            for q0 in (0..len).step_by(BLOCK) {
                let n = (len - q0).min(BLOCK);
                let (block, tail) = std::mem::take(&mut rest).split_at_mut(n * h);
                rest = tail;
                jobs.push((s, start + q0, len, n, block));
            }
        }
        let scale = 1.0 / (d as f32).sqrt();
        let failed = std::sync::atomic::AtomicBool::new(false);
        jobs.into_par_iter().for_each(|(s, first, len, n, block)| {
            let m_tiles = n.div_ceil(16);
            let (kp, dp, lp16, lp32) = (d.div_ceil(32) * 32, d.div_ceil(16) * 16, len.div_ceil(16) * 16, len.div_ceil(32) * 32);
            let mut q = vec![0u16; m_tiles * 16 * kp];
            let mut scores = vec![0.0f32; m_tiles * 16 * lp16];
            let mut p = vec![0u16; m_tiles * 16 * lp32];
            let mut out = vec![0.0f32; m_tiles * 16 * dp];
            for (head, (kt, v)) in operands[s * heads..(s + 1) * heads].iter().enumerate() {
                let q_src = qkv.get(first * 3 * h + head * d..).unwrap_or_default();
                let ok = to_bf16(&mut q, kp, q_src, 3 * h, n, d)
                    && product(&q, kp, m_tiles, kt, &mut scores, lp16)
                    && softmax_to_bf16(&mut p, lp32, &scores, lp16, n, len, scale)
                    && product(&p, lp32, m_tiles, v, &mut out, dp);
                if !ok {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                for (row, o) in block.chunks_exact_mut(h).zip(out.chunks_exact(dp)) {
                    row[head * d..(head + 1) * d].copy_from_slice(&o[..d]);
                }
            }
        });
        !failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One head's attention over one sequence (rows `start..start+len` of `qkv`) in
    /// layer `l`: returns its `len x d` context.
    fn attend(&self, qkv: &[f32], start: usize, len: usize, head: usize, l: &Layer) -> Vec<f32> {
        let h = self.hidden;
        let d = h / self.heads;
        let all = View::rows(qkv, 3 * h);
        let factor = match &self.relative {
            Some(r) => 1 + usize::from(r.c2p) + usize::from(r.p2c),
            None => 1,
        };
        let scale = 1.0 / ((d * factor) as f32).sqrt();
        let mut scores = vec![0.0f32; len * len];
        let q = all.at(start, head * d);
        let k = all.at(start, h + head * d);
        let v = all.at(start, 2 * h + head * d);
        matmul_serial(&mut scores, len, len, len, d, q, k.t(), scale, false);
        if let Some(r) = &self.relative {
            let n = r.rows;
            // Row of the relative table for distance i - j (the bucketing is odd, so
            // p2c's "minus the bucket of j - i" is the same row).
            let zero = self.max_tokens() - 1;
            let row_of = |i: usize, j: usize| r.index[zero + i - j];
            if let Some(pk) = &l.rel_key {
                // c2p[i][p] = q_i . pk_p
                let mut c2p = vec![0.0f32; len * n];
                matmul_serial(&mut c2p, n, len, n, d, q, View::rows(pk, h).at(0, head * d).t(), scale, false);
                for i in 0..len {
                    let row = &c2p[i * n..(i + 1) * n];
                    for j in 0..len {
                        scores[i * len + j] += row[row_of(i, j)];
                    }
                }
            }
            if let Some(pq) = &l.rel_query {
                // p2c[j][p] = k_j . pq_p
                let mut p2c = vec![0.0f32; len * n];
                matmul_serial(&mut p2c, n, len, n, d, k, View::rows(pq, h).at(0, head * d).t(), scale, false);
                for i in 0..len {
                    for j in 0..len {
                        scores[i * len + j] += p2c[j * n + row_of(i, j)];
                    }
                }
            }
        }
        softmax_rows(&mut scores, len);
        let mut out = vec![0.0f32; len * d];
        matmul_serial(&mut out, d, len, d, len, View::rows(&scores, len), v, 1.0, false);
        out
    }

    /// The family this encoder was loaded as.
    pub fn family(&self) -> Family {
        self.family
    }
}

//! The cuda backend's work as data: every kernel launch (grid, block, arguments) and
//! every GEMM of a pass over a padded batch, computed from the model's shapes alone.
//!
//! `cuda.rs` runs a plan on a GPU. The tests run the same plan on the CPU, with the
//! kernels of `kernels/encoder.cu` compiled for the host (`tests/cuda-host`) and a
//! reference GEMM, and compare the result with the CPU backend: so the launches a GPU
//! is given (sizes, argument order, offsets, strides) are tested on machines without
//! one. [`Kernel::params`] states each kernel's parameters as the `.cu` declares them;
//! a test holds it to the compiled kernels' own signatures.

use super::encoder::{Encoder, Packed};
use super::heads::{Head, Output, Pooling};
use super::ops::{LayerNorm, Linear};

/// Threads per block of every kernel (`THREADS` in encoder.cu).
pub const THREADS: u32 = 256;

/// The kernels of `kernels/encoder.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `embed_layernorm`: embeddings summed and normalised, padded rows zeroed.
    EmbedLayernorm,
    /// `bias_add`.
    BiasAdd,
    /// `bias_gelu`.
    BiasGelu,
    /// `bias_residual_layernorm`.
    BiasResidualLayernorm,
    /// `deberta_relative_bias`.
    DebertaRelativeBias,
    /// `masked_softmax`.
    MaskedSoftmax,
    /// `pool`.
    Pool,
    /// `score_heads`.
    ScoreHeads,
}

/// A kernel parameter's type, as the `.cu` declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `float*`
    F32Out,
    /// `const float*`
    F32In,
    /// `const unsigned int*`
    U32In,
    /// `const int*`
    I32In,
    /// `int`
    I32,
    /// `long long`
    I64,
    /// `float`
    F32,
}

impl Param {
    /// The C type.
    pub fn c_type(self) -> &'static str {
        match self {
            Param::F32Out => "float*",
            Param::F32In => "const float*",
            Param::U32In => "const unsigned int*",
            Param::I32In => "const int*",
            Param::I32 => "int",
            Param::I64 => "long long",
            Param::F32 => "float",
        }
    }
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 8] = [
        Kernel::EmbedLayernorm,
        Kernel::BiasAdd,
        Kernel::BiasGelu,
        Kernel::BiasResidualLayernorm,
        Kernel::DebertaRelativeBias,
        Kernel::MaskedSoftmax,
        Kernel::Pool,
        Kernel::ScoreHeads,
    ];

    /// The entry point's name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::EmbedLayernorm => "embed_layernorm",
            Kernel::BiasAdd => "bias_add",
            Kernel::BiasGelu => "bias_gelu",
            Kernel::BiasResidualLayernorm => "bias_residual_layernorm",
            Kernel::DebertaRelativeBias => "deberta_relative_bias",
            Kernel::MaskedSoftmax => "masked_softmax",
            Kernel::Pool => "pool",
            Kernel::ScoreHeads => "score_heads",
        }
    }

    /// Its parameters, in order, as the `.cu` declares them.
    pub fn params(self) -> &'static [Param] {
        use Param::*;
        match self {
            Kernel::EmbedLayernorm => &[F32Out, U32In, I32In, I32, F32In, F32In, F32In, I32, F32In, F32In, I32, F32],
            Kernel::BiasAdd | Kernel::BiasGelu => &[F32Out, F32In, I64, I32],
            Kernel::BiasResidualLayernorm => &[F32Out, F32In, F32In, F32In, F32In, I32, F32],
            Kernel::DebertaRelativeBias => &[F32Out, F32In, F32In, I32In, I32, I32, I32],
            Kernel::MaskedSoftmax => &[F32Out, I32In, I32, I32, F32],
            Kernel::Pool => &[F32Out, F32In, I32In, I32, I32, I32, I32],
            Kernel::ScoreHeads => &[F32Out, F32Out, F32In, I32, F32In, F32In, I32In, I32In, I32In, I32],
        }
    }
}

/// What a per-layer weight buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerBuf {
    /// Q, K and V fused: `[3h, h]`.
    QkvW,
    /// Their biases.
    QkvB,
    /// DeBERTa's relative embeddings projected to keys, `[rows, h]`.
    RelKey,
    /// ... and to queries.
    RelQuery,
    /// Attention output.
    AttnOutW,
    /// Its bias.
    AttnOutB,
    /// First LayerNorm's gain.
    Ln1G,
    /// ... and shift.
    Ln1B,
    /// Intermediate (FFN up).
    InterW,
    /// Its bias.
    InterB,
    /// FFN down.
    OutW,
    /// Its bias.
    OutB,
    /// Second LayerNorm's gain.
    Ln2G,
    /// ... and shift.
    Ln2B,
}

/// A device buffer, by what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buf {
    /// Token ids of the pass, `[b, t]` (u32).
    Ids,
    /// Each sequence's length, `[b]` (i32).
    Lengths,
    /// Embeddings before DeBERTa's projection, `[b*t, e]`.
    Emb,
    /// The hidden state, `[b*t, h]`: the pass's result.
    X,
    /// Q, K, V, `[b*t, 3h]`.
    Qkv,
    /// Attention scores, `[b*heads, t, t]`.
    Scores,
    /// Attention context, `[b*t, h]`.
    Ctx,
    /// Attention output, `[b*t, h]`.
    Attn,
    /// FFN middle, `[b*t, inter]`.
    Inter,
    /// DeBERTa's content-to-position terms, `[b*heads, t, rows]`.
    C2p,
    /// ... and position-to-content.
    P2c,
    /// Pooled vectors, `[b, h]`.
    Pooled,
    /// Scored heads' logits, `[b, total labels]`.
    Logits,
    /// ... and probabilities.
    Probs,
    /// Word embeddings, `[vocab, e]`.
    Words,
    /// Position embeddings.
    Positions,
    /// Token type 0's embedding, `[e]`.
    Type0,
    /// Embedding LayerNorm's gain.
    EmbG,
    /// ... and shift.
    EmbB,
    /// DeBERTa's embedding projection, `[h, e]`.
    EmbProjW,
    /// Its bias.
    EmbProjB,
    /// A layer's weight.
    Layer(usize, LayerBuf),
    /// DeBERTa's relative bucket index (i32).
    RelIndex,
    /// Scored heads' weights laid end to end, `[total labels, h]`.
    HeadW,
    /// Their biases.
    HeadB,
    /// Each scored head's first row (i32).
    HeadFirst,
    /// Each scored head's label count (i32).
    HeadLabels,
    /// Each scored head's output: 0 softmax, 1 sigmoid (i32).
    HeadAct,
}

/// A kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A buffer from an element offset.
    Buf(Buf, usize),
    /// A null pointer (an input the model does not have).
    Null,
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `float`.
    F32(f32),
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// Which kernel.
    pub kernel: Kernel,
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// Arguments, in the kernel's order.
    pub args: Vec<Arg>,
}

/// `C = op(A) op(B)` in cuBLAS's column-major terms, for `batch` matrices `stride_*`
/// elements apart (row-major callers pass their operands swapped: see [`forward`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Whether A is transposed.
    pub trans_a: bool,
    /// Whether B is transposed.
    pub trans_b: bool,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// A, from an element offset.
    pub a: (Buf, usize),
    /// A's leading dimension.
    pub lda: usize,
    /// B, from an element offset.
    pub b: (Buf, usize),
    /// B's leading dimension.
    pub ldb: usize,
    /// C, from an element offset.
    pub c: (Buf, usize),
    /// C's leading dimension.
    pub ldc: usize,
    /// How many products.
    pub batch: usize,
    /// Strides between the products' operands.
    pub strides: [i64; 3],
}

/// One step of a pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A kernel launch.
    Launch(Launch),
    /// A (batched) GEMM.
    Gemm(Gemm),
}

/// A layer's shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerShape {
    /// Whether it has DeBERTa's projected relative keys (c2p).
    pub rel_key: bool,
    /// ... and queries (p2c).
    pub rel_query: bool,
    /// FFN width.
    pub inter: usize,
    /// LayerNorm epsilons.
    pub eps: (f32, f32),
}

/// The pooled linear heads scored by one `score_heads` launch.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerShape {
    /// Which heads (by index) and their first label row.
    pub heads: Vec<(usize, usize)>,
    /// Labels of all of them.
    pub total: usize,
    /// The pooling they share.
    pub pooling: Pooling,
}

/// Everything a plan is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Word embedding width.
    pub embedding_size: usize,
    /// First position id.
    pub position_offset: usize,
    /// Position table width (DeBERTa's `W`).
    pub max_positions: usize,
    /// Whether there are absolute positions.
    pub positions: bool,
    /// Whether there is a token type embedding.
    pub type0: bool,
    /// DeBERTa's embedding projection.
    pub embed_proj: bool,
    /// Embedding LayerNorm epsilon.
    pub emb_eps: f32,
    /// The layers.
    pub layers: Vec<LayerShape>,
    /// DeBERTa's relative rows (`2 * span`), where the model has them.
    pub relative: Option<usize>,
    /// `1 + c2p + p2c`: scores are scaled by `1/sqrt(d * factor)`.
    pub factor: usize,
    /// The heads scored on the device.
    pub scorer: Option<ScorerShape>,
}

/// A weight's values, as uploaded.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f32 values.
    F32(Vec<f32>),
    /// i32 values.
    I32(Vec<i32>),
}

/// The shapes of `enc` with `heads`, and every weight buffer to upload.
pub fn weights(enc: &Encoder, heads: &[Head]) -> (Shape, Vec<(Buf, Data)>) {
    let mut out: Vec<(Buf, Data)> = Vec::new();
    let e = enc.embedding_size;
    out.push((Buf::Words, Data::F32(enc.words.clone())));
    if let Some(p) = &enc.positions {
        out.push((Buf::Positions, Data::F32(p.clone())));
    }
    if let Some(t) = &enc.token_type {
        out.push((Buf::Type0, Data::F32(t[..e].to_vec())));
    }
    let norm = |out: &mut Vec<(Buf, Data)>, g: Buf, b: Buf, n: &LayerNorm| -> f32 {
        let (gain, shift, eps) = n.parts();
        out.push((g, Data::F32(gain.to_vec())));
        out.push((b, Data::F32(shift.to_vec())));
        eps
    };
    let linear = |out: &mut Vec<(Buf, Data)>, w: Buf, b: Buf, l: &Linear| {
        out.push((w, Data::F32(l.weight())));
        out.push((b, Data::F32(l.bias().to_vec())));
    };
    let emb_eps = norm(&mut out, Buf::EmbG, Buf::EmbB, &enc.emb_ln);
    if let Some(p) = &enc.embed_proj {
        linear(&mut out, Buf::EmbProjW, Buf::EmbProjB, p);
    }
    let mut layers = Vec::new();
    for (i, l) in enc.layers.iter().enumerate() {
        let at = |which| Buf::Layer(i, which);
        linear(&mut out, at(LayerBuf::QkvW), at(LayerBuf::QkvB), &l.qkv);
        if let Some(k) = &l.rel_key {
            out.push((at(LayerBuf::RelKey), Data::F32(k.clone())));
        }
        if let Some(q) = &l.rel_query {
            out.push((at(LayerBuf::RelQuery), Data::F32(q.clone())));
        }
        linear(&mut out, at(LayerBuf::AttnOutW), at(LayerBuf::AttnOutB), &l.attn_out);
        let eps1 = norm(&mut out, at(LayerBuf::Ln1G), at(LayerBuf::Ln1B), &l.ln1);
        linear(&mut out, at(LayerBuf::InterW), at(LayerBuf::InterB), &l.inter);
        linear(&mut out, at(LayerBuf::OutW), at(LayerBuf::OutB), &l.out);
        let eps2 = norm(&mut out, at(LayerBuf::Ln2G), at(LayerBuf::Ln2B), &l.ln2);
        layers.push(LayerShape { rel_key: l.rel_key.is_some(), rel_query: l.rel_query.is_some(), inter: l.inter.out, eps: (eps1, eps2) });
    }
    if let Some(r) = &enc.relative {
        out.push((Buf::RelIndex, Data::I32(r.index.iter().map(|i| *i as i32).collect())));
    }
    let scorer = scorer(heads, enc.hidden, &mut out);
    let shape = Shape {
        hidden: enc.hidden,
        heads: enc.heads,
        embedding_size: e,
        position_offset: enc.position_offset,
        max_positions: enc.max_positions,
        positions: enc.positions.is_some(),
        type0: enc.token_type.is_some(),
        embed_proj: enc.embed_proj.is_some(),
        emb_eps,
        layers,
        relative: enc.relative.as_ref().map(|r| r.rows),
        factor: enc.relative.as_ref().map_or(1, |r| 1 + usize::from(r.c2p) + usize::from(r.p2c)),
        scorer,
    };
    (shape, out)
}

/// The pooled linear heads sharing the first such head's pooling, laid end to end for
/// `score_heads`, if any.
fn scorer(heads: &[Head], hidden: usize, out: &mut Vec<(Buf, Data)>) -> Option<ScorerShape> {
    let pooling = heads.iter().find(|h| h.linear_only().is_some()).map(Head::pooling)?;
    let (mut weight, mut bias, mut first, mut labels, mut act, mut picked) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, h) in heads.iter().enumerate() {
        let Some((lin, output)) = h.linear_only().filter(|_| h.pooling() == pooling) else { continue };
        if lin.inp != hidden {
            continue;
        }
        picked.push((i, bias.len()));
        first.push(bias.len() as i32);
        labels.push(lin.out as i32);
        act.push(match output {
            Output::Softmax => 0,
            Output::Sigmoid => 1,
        });
        weight.extend_from_slice(&lin.weight());
        bias.extend_from_slice(lin.bias());
    }
    if picked.is_empty() {
        return None;
    }
    let total = bias.len();
    out.push((Buf::HeadW, Data::F32(weight)));
    out.push((Buf::HeadB, Data::F32(bias)));
    out.push((Buf::HeadFirst, Data::I32(first)));
    out.push((Buf::HeadLabels, Data::I32(labels)));
    out.push((Buf::HeadAct, Data::I32(act)));
    Some(ScorerShape { heads: picked, total, pooling })
}

impl Shape {
    /// Elements of a pass buffer for `b` sequences padded to `t` tokens (0 for a weight).
    pub fn len(&self, buf: Buf, b: usize, t: usize) -> usize {
        let (h, rows) = (self.hidden, b * t);
        let span2 = self.relative.unwrap_or(0);
        match buf {
            Buf::Ids => rows,
            Buf::Lengths => b,
            Buf::Emb => rows * self.embedding_size,
            Buf::X | Buf::Ctx | Buf::Attn => rows * h,
            Buf::Qkv => rows * 3 * h,
            Buf::Scores => b * self.heads * t * t,
            Buf::Inter => rows * self.layers.first().map_or(0, |l| l.inter),
            Buf::C2p | Buf::P2c => (b * self.heads * t * span2).max(1),
            Buf::Pooled => b * h,
            Buf::Logits | Buf::Probs => b * self.scorer.as_ref().map_or(0, |s| s.total),
            _ => 0,
        }
    }

    /// The pass buffers a forward pass writes (allocated per pass).
    pub fn pass_buffers(&self) -> Vec<Buf> {
        let mut bufs = vec![Buf::X, Buf::Qkv, Buf::Scores, Buf::Ctx, Buf::Attn, Buf::Inter, Buf::Pooled];
        if self.embed_proj {
            bufs.push(Buf::Emb);
        }
        if self.relative.is_some() {
            bufs.extend([Buf::C2p, Buf::P2c]);
        }
        if self.scorer.is_some() {
            bufs.extend([Buf::Logits, Buf::Probs]);
        }
        bufs
    }
}

/// The ids and lengths of the sequences `seqs` of a packed batch, padded to `t` tokens
/// (what a pass uploads as [`Buf::Ids`] and [`Buf::Lengths`]).
pub fn padded(batch: &Packed, seqs: &[usize], t: usize) -> (Vec<u32>, Vec<i32>) {
    let mut ids = vec![0u32; seqs.len() * t];
    let mut lengths = Vec::with_capacity(seqs.len());
    for (k, &i) in seqs.iter().enumerate() {
        let (start, len) = batch.seqs[i];
        let len = len.min(t);
        ids[k * t..k * t + len].copy_from_slice(&batch.ids[start..start + len]);
        lengths.push(len as i32);
    }
    (ids, lengths)
}

/// One block of [`THREADS`] per row.
fn rows(n: usize) -> ([u32; 3], [u32; 3]) {
    ([n.max(1) as u32, 1, 1], [THREADS, 1, 1])
}

/// Grid-stride loops over `total` elements.
fn grid_stride(total: usize) -> ([u32; 3], [u32; 3]) {
    ([total.div_ceil(THREADS as usize).clamp(1, 65_535) as u32, 1, 1], [THREADS, 1, 1])
}

fn launch(kernel: Kernel, (grid, block): ([u32; 3], [u32; 3]), args: Vec<Arg>) -> Op {
    Op::Launch(Launch { kernel, grid, block, args })
}

/// Row-major `y[rows, out] = x[rows, in] W[out, in]^T`, as column-major
/// `y^T = W x^T`.
fn linear(w: Buf, x: Buf, y: Buf, out: usize, inp: usize, rows: usize) -> Op {
    Op::Gemm(Gemm { trans_a: true, trans_b: false, m: out, n: rows, k: inp, a: (w, 0), lda: inp, b: (x, 0), ldb: inp, c: (y, 0), ldc: out, batch: 1, strides: [0; 3] })
}

/// The last hidden state of `b` sequences padded to `t` tokens, left in [`Buf::X`]
/// (`[b, t, hidden]`; padded rows to be ignored).
pub fn forward(s: &Shape, b: usize, t: usize) -> Vec<Op> {
    use Arg::{Buf as B, F32, I32, I64, Null};
    let mut ops = Vec::new();
    let rows_n = b * t;
    let (h, e, heads) = (s.hidden, s.embedding_size, s.heads);
    let opt = |present: bool, buf: Buf| if present { B(buf, 0) } else { Null };
    let first = if s.embed_proj { Buf::Emb } else { Buf::X };
    ops.push(launch(
        Kernel::EmbedLayernorm,
        rows(rows_n),
        vec![
            B(first, 0),
            B(Buf::Ids, 0),
            B(Buf::Lengths, 0),
            I32(t as i32),
            B(Buf::Words, 0),
            opt(s.positions, Buf::Positions),
            opt(s.type0, Buf::Type0),
            I32(s.position_offset as i32),
            B(Buf::EmbG, 0),
            B(Buf::EmbB, 0),
            I32(e as i32),
            F32(s.emb_eps),
        ],
    ));
    if s.embed_proj {
        ops.push(linear(Buf::EmbProjW, Buf::Emb, Buf::X, h, e, rows_n));
        ops.push(launch(Kernel::BiasAdd, grid_stride(rows_n * h), vec![B(Buf::X, 0), B(Buf::EmbProjB, 0), I64((rows_n * h) as i64), I32(h as i32)]));
    }
    let d = h / heads.max(1);
    let scale = 1.0 / ((d * s.factor) as f32).sqrt();
    let span2 = s.relative.unwrap_or(0);
    // Row-major `C = op(A) op(B)` per sequence, as column-major `C^T = op(B)^T op(A)^T`:
    // (m, n, k) and operands (view, leading dimension, batch stride) of that call.
    let batched = |(ta, tb): (bool, bool), (m, n, k): (usize, usize, usize), a: (Buf, usize, usize, i64), bm: (Buf, usize, usize, i64), c: (Buf, usize, usize, i64)| {
        Op::Gemm(Gemm { trans_a: ta, trans_b: tb, m, n, k, a: (a.0, a.1), lda: a.2, b: (bm.0, bm.1), ldb: bm.2, c: (c.0, c.1), ldc: c.2, batch: b, strides: [a.3, bm.3, c.3] })
    };
    for (i, layer) in s.layers.iter().enumerate() {
        let w = |which| Buf::Layer(i, which);
        ops.push(linear(w(LayerBuf::QkvW), Buf::X, Buf::Qkv, 3 * h, h, rows_n));
        ops.push(launch(Kernel::BiasAdd, grid_stride(rows_n * 3 * h), vec![B(Buf::Qkv, 0), B(w(LayerBuf::QkvB), 0), I64((rows_n * 3 * h) as i64), I32((3 * h) as i32)]));
        let seq = (t * 3 * h) as i64;
        for head in 0..heads {
            // scores[b, head] = Q K^T (raw; scaled in the softmax).
            ops.push(batched((true, false), (t, t, d), (Buf::Qkv, h + head * d, 3 * h, seq), (Buf::Qkv, head * d, 3 * h, seq), (Buf::Scores, head * t * t, t, (heads * t * t) as i64)));
            if s.relative.is_some() {
                let n = span2;
                if layer.rel_key {
                    // c2p[b, head] = Q pk^T: [t, 2*span].
                    ops.push(batched((true, false), (n, t, d), (w(LayerBuf::RelKey), head * d, h, 0), (Buf::Qkv, head * d, 3 * h, seq), (Buf::C2p, head * t * n, n, (heads * t * n) as i64)));
                }
                if layer.rel_query {
                    // p2c[b, head] = K pq^T.
                    ops.push(batched((true, false), (n, t, d), (w(LayerBuf::RelQuery), head * d, h, 0), (Buf::Qkv, h + head * d, 3 * h, seq), (Buf::P2c, head * t * n, n, (heads * t * n) as i64)));
                }
            }
        }
        if s.relative.is_some() {
            ops.push(launch(
                Kernel::DebertaRelativeBias,
                rows(b * heads * t),
                vec![
                    B(Buf::Scores, 0),
                    opt(layer.rel_key, Buf::C2p),
                    opt(layer.rel_query, Buf::P2c),
                    B(Buf::RelIndex, 0),
                    I32(s.max_positions as i32),
                    I32(t as i32),
                    I32(span2 as i32),
                ],
            ));
        }
        ops.push(launch(Kernel::MaskedSoftmax, rows(b * heads * t), vec![B(Buf::Scores, 0), B(Buf::Lengths, 0), I32(heads as i32), I32(t as i32), F32(scale)]));
        for head in 0..heads {
            // ctx[b, :, head] = P V.
            ops.push(batched((false, false), (d, t, t), (Buf::Qkv, 2 * h + head * d, 3 * h, seq), (Buf::Scores, head * t * t, t, (heads * t * t) as i64), (Buf::Ctx, head * d, h, (t * h) as i64)));
        }
        ops.push(linear(w(LayerBuf::AttnOutW), Buf::Ctx, Buf::Attn, h, h, rows_n));
        ops.push(residual_norm(Buf::Attn, w(LayerBuf::AttnOutB), Buf::X, w(LayerBuf::Ln1G), w(LayerBuf::Ln1B), h, layer.eps.0, rows_n));
        ops.push(linear(w(LayerBuf::InterW), Buf::Attn, Buf::Inter, layer.inter, h, rows_n));
        ops.push(launch(Kernel::BiasGelu, grid_stride(rows_n * layer.inter), vec![B(Buf::Inter, 0), B(w(LayerBuf::InterB), 0), I64((rows_n * layer.inter) as i64), I32(layer.inter as i32)]));
        ops.push(linear(w(LayerBuf::OutW), Buf::Inter, Buf::X, h, layer.inter, rows_n));
        ops.push(residual_norm(Buf::X, w(LayerBuf::OutB), Buf::Attn, w(LayerBuf::Ln2G), w(LayerBuf::Ln2B), h, layer.eps.1, rows_n));
    }
    ops
}

/// `x = LayerNorm(x + bias + residual)`, one block per row.
#[allow(clippy::too_many_arguments)]
fn residual_norm(x: Buf, bias: Buf, residual: Buf, g: Buf, b: Buf, h: usize, eps: f32, rows_n: usize) -> Op {
    use Arg::{Buf as B, F32, I32};
    launch(Kernel::BiasResidualLayernorm, rows(rows_n), vec![B(x, 0), B(bias, 0), B(residual, 0), B(g, 0), B(b, 0), I32(h as i32), F32(eps)])
}

/// Pools the hidden state of `b` sequences padded to `t` into [`Buf::Pooled`].
pub fn pool(s: &Shape, b: usize, t: usize, pooling: Pooling) -> Op {
    use Arg::{Buf as B, I32};
    let (mean, normalize) = match pooling {
        Pooling::First => (0, 0),
        Pooling::Mean { normalize } => (1, i32::from(normalize)),
    };
    launch(Kernel::Pool, rows(b), vec![B(Buf::Pooled, 0), B(Buf::X, 0), B(Buf::Lengths, 0), I32(t as i32), I32(s.hidden as i32), I32(mean), I32(normalize)])
}

/// Scores every device-scored head of `b` pooled vectors into [`Buf::Logits`] and
/// [`Buf::Probs`] (`[b, total labels]`), or nothing where no head is scored there.
pub fn score(s: &Shape, b: usize) -> Option<Op> {
    use Arg::{Buf as B, I32};
    let sc = s.scorer.as_ref()?;
    Some(Op::Launch(Launch {
        kernel: Kernel::ScoreHeads,
        grid: [b.max(1) as u32, sc.heads.len() as u32, 1],
        block: [THREADS, 1, 1],
        args: vec![
            B(Buf::Logits, 0),
            B(Buf::Probs, 0),
            B(Buf::Pooled, 0),
            I32(s.hidden as i32),
            B(Buf::HeadW, 0),
            B(Buf::HeadB, 0),
            B(Buf::HeadFirst, 0),
            B(Buf::HeadLabels, 0),
            B(Buf::HeadAct, 0),
            I32(sc.total as i32),
        ],
    }))
}

/// What type of data a buffer holds.
pub fn element(buf: Buf) -> Param {
    match buf {
        Buf::Ids => Param::U32In,
        Buf::Lengths | Buf::RelIndex | Buf::HeadFirst | Buf::HeadLabels | Buf::HeadAct => Param::I32In,
        _ => Param::F32In,
    }
}

/// Why a launch's arguments do not fit its kernel's parameters, if they do not.
pub fn mismatch(l: &Launch) -> Option<String> {
    let params = l.kernel.params();
    if params.len() != l.args.len() {
        return Some(format!("{}: {} arguments for {} parameters", l.kernel.name(), l.args.len(), params.len()));
    }
    for (i, (p, a)) in params.iter().zip(&l.args).enumerate() {
        let fits = match (p, a) {
            (Param::F32Out | Param::F32In, Arg::Buf(b, _)) => element(*b) == Param::F32In,
            (Param::U32In, Arg::Buf(b, _)) => element(*b) == Param::U32In,
            (Param::I32In, Arg::Buf(b, _)) => element(*b) == Param::I32In,
            (Param::F32In | Param::U32In | Param::I32In, Arg::Null) => true,
            (Param::I32, Arg::I32(_)) | (Param::I64, Arg::I64(_)) | (Param::F32, Arg::F32(_)) => true,
            _ => false,
        };
        if !fits {
            return Some(format!("{} argument {i}: {a:?} for a {} parameter", l.kernel.name(), p.c_type()));
        }
    }
    None
}

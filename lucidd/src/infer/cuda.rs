//! The `cuda` backend: the CPU encoder's weights on the GPU, cuBLAS for every GEMM and
//! our kernels (`kernels/encoder.cu`) for everything between them.
//!
//! A batch is padded to its longest sequence `T` (`[B, T, h]`, row-major); the
//! kernels take each sequence's length, so padded keys are masked out of attention
//! and padded rows never reach a pooled vector. Attention is three strided-batched
//! GEMMs per head (scores, then DeBERTa's c2p and p2c where the model has them)
//! around the masked-softmax kernel, batched over the sequences. Pooled linear heads
//! are scored by one `score_heads` launch for the whole batch; heads with a
//! pre-layer (a checkpoint's pooler) get the pooled vectors back and run on the CPU,
//! where they cost microseconds. Everything is f32: parity with the CPU backend is
//! what the self-check and the GPU tests hold it to.

use std::path::Path;
use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::encoder::{Encoder, Packed};
use super::heads::{Head, HeadOutput, Output, Pooling};
use super::kernels::{self, KERNELS};
use super::ops::{Activation, LayerNorm, Linear};
use super::InferError;

/// Threads per block of every kernel (`THREADS` in encoder.cu).
const THREADS: u32 = 256;

/// Most padded token rows one GPU pass holds (the batcher's budget counts real tokens;
/// padding to the longest sequence can multiply them).
const MAX_PASS_ROWS: usize = 16_384;

/// Most attention floats (scores, c2p, p2c) one GPU pass holds: 256 MiB.
const MAX_PASS_SCORES: usize = 64 << 20;

fn gpu_err(what: &str) -> impl Fn(String) -> InferError + '_ {
    move |e| InferError::Gpu(format!("{what}: {e}"))
}

struct DevLinear {
    w: CudaSlice<f32>,
    b: CudaSlice<f32>,
    out: usize,
    inp: usize,
}

struct DevNorm {
    g: CudaSlice<f32>,
    b: CudaSlice<f32>,
    eps: f32,
}

struct DevLayer {
    qkv: DevLinear,
    rel_key: Option<CudaSlice<f32>>,
    rel_query: Option<CudaSlice<f32>>,
    attn_out: DevLinear,
    ln1: DevNorm,
    inter: DevLinear,
    out: DevLinear,
    ln2: DevNorm,
}

struct Funcs {
    embed_layernorm: CudaFunction,
    bias_add: CudaFunction,
    bias_gelu: CudaFunction,
    bias_residual_layernorm: CudaFunction,
    deberta_relative_bias: CudaFunction,
    masked_softmax: CudaFunction,
    pool: CudaFunction,
    score_heads: CudaFunction,
}

/// DeBERTa's relative-position table on the device.
struct DevRelative {
    index: CudaSlice<i32>,
    rows: usize,
    /// Positions the index was built for (`W` in the kernel).
    width: usize,
}

/// The pooled linear heads, concatenated for `score_heads`.
struct Scorer {
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    first: CudaSlice<i32>,
    labels: CudaSlice<i32>,
    act: CudaSlice<i32>,
    threshold: CudaSlice<f32>,
    /// Which heads (by index) it scores, and their first row.
    heads: Vec<(usize, usize)>,
    total: usize,
    pooling: Pooling,
}

/// A model's encoder (and its pooled linear heads) resident on a GPU.
pub struct CudaEncoder {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    f: Funcs,
    hidden: usize,
    heads: usize,
    embedding_size: usize,
    position_offset: usize,
    max_tokens: usize,
    words: CudaSlice<f32>,
    positions: Option<CudaSlice<f32>>,
    type0: Option<CudaSlice<f32>>,
    emb_ln: DevNorm,
    embed_proj: Option<DevLinear>,
    layers: Vec<DevLayer>,
    relative: Option<DevRelative>,
    /// 1 + c2p + p2c: DeBERTa scales scores by `1/sqrt(d * factor)`.
    factor: usize,
    scorer: Option<Scorer>,
    /// The device's name and architecture, e.g. `NVIDIA H100 (sm_90)`.
    pub device: String,
}

impl CudaEncoder {
    /// Why `enc` cannot run here, if it cannot (activations the kernels lack).
    pub fn unsupported(enc: &Encoder) -> Option<String> {
        match enc.act {
            Activation::Gelu => None,
            other => Some(format!("hidden activation {other:?}: the cuda kernels implement exact GELU only")),
        }
    }

    /// Uploads `enc` and the pooled linear heads among `heads` to GPU 0, compiling the
    /// kernels (or reading them from `cache`).
    pub fn new(enc: &Encoder, heads: &[Head], cache: &Path) -> Result<CudaEncoder, InferError> {
        if let Some(why) = CudaEncoder::unsupported(enc) {
            return Err(InferError::Unsupported(why));
        }
        // cudarc panics on a missing library: look first.
        if let Some(why) = super::backend::missing_library() {
            return Err(InferError::Gpu(why));
        }
        let ctx = CudaContext::new(0).map_err(|e| InferError::Gpu(format!("GPU 0: {e:?}")))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| InferError::Gpu(format!("GPU 0: {e:?}")))?;
        let arch = (major * 10 + minor).max(0) as u32;
        let name = ctx.name().unwrap_or_else(|_| "GPU 0".into());
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| InferError::Gpu(format!("cuBLAS: {e:?}")))?;
        let kernel = &KERNELS[0];
        let mut driver = 0i32;
        // SAFETY: the driver library is loaded (a context exists); the call writes an int.
        let driver = (unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) } == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(driver);
        let image = kernels::compile_cached(cache, kernel, arch, driver)?;
        let kind = image.kind();
        let loadable = match image {
            kernels::Image::Cubin(bytes) => cudarc::nvrtc::Ptx::from_binary(bytes),
            kernels::Image::Ptx(text) => cudarc::nvrtc::Ptx::from_src(text),
        };
        let module = ctx.load_module(loadable).map_err(|e| InferError::Gpu(format!("loading kernels/{}.cu ({kind}): {e:?}", kernel.name)))?;
        let func = |name: &str| module.load_function(name).map_err(|e| InferError::Gpu(format!("kernel {name}: {e:?}")));
        let f = Funcs {
            embed_layernorm: func("embed_layernorm")?,
            bias_add: func("bias_add")?,
            bias_gelu: func("bias_gelu")?,
            bias_residual_layernorm: func("bias_residual_layernorm")?,
            deberta_relative_bias: func("deberta_relative_bias")?,
            masked_softmax: func("masked_softmax")?,
            pool: func("pool")?,
            score_heads: func("score_heads")?,
        };
        let up = |v: &[f32]| stream.clone_htod(v).map_err(|e| InferError::Gpu(format!("uploading weights: {e:?}")));
        let linear = |l: &Linear| -> Result<DevLinear, InferError> { Ok(DevLinear { w: up(&l.weight())?, b: up(l.bias())?, out: l.out, inp: l.inp }) };
        let norm = |n: &LayerNorm| -> Result<DevNorm, InferError> {
            let (g, b, eps) = n.parts();
            Ok(DevNorm { g: up(g)?, b: up(b)?, eps })
        };
        let mut layers = Vec::with_capacity(enc.layers.len());
        for l in &enc.layers {
            layers.push(DevLayer {
                qkv: linear(&l.qkv)?,
                rel_key: l.rel_key.as_deref().map(up).transpose()?,
                rel_query: l.rel_query.as_deref().map(up).transpose()?,
                attn_out: linear(&l.attn_out)?,
                ln1: norm(&l.ln1)?,
                inter: linear(&l.inter)?,
                out: linear(&l.out)?,
                ln2: norm(&l.ln2)?,
            });
        }
        let relative = match &enc.relative {
            Some(r) => {
                let index: Vec<i32> = r.index.iter().map(|i| *i as i32).collect();
                let index = stream.clone_htod(&index).map_err(|e| InferError::Gpu(format!("uploading weights: {e:?}")))?;
                Some(DevRelative { index, rows: r.rows, width: enc.max_positions })
            }
            None => None,
        };
        let factor = enc.relative.as_ref().map_or(1, |r| 1 + usize::from(r.c2p) + usize::from(r.p2c));
        let e = enc.embedding_size;
        let scorer = Scorer::build(&stream, heads, enc.hidden)?;
        Ok(CudaEncoder {
            hidden: enc.hidden,
            heads: enc.heads,
            embedding_size: e,
            position_offset: enc.position_offset,
            max_tokens: enc.max_tokens(),
            words: up(&enc.words)?,
            positions: enc.positions.as_deref().map(up).transpose()?,
            type0: enc.token_type.as_deref().map(|t| up(&t[..e])).transpose()?,
            emb_ln: norm(&enc.emb_ln)?,
            embed_proj: enc.embed_proj.as_ref().map(linear).transpose()?,
            layers,
            relative,
            factor,
            scorer,
            device: format!("{name} (sm_{arch}, kernels as {kind})"),
            stream,
            blas,
            f,
        })
    }

    /// Every head on every sequence of a packed batch: `[head][sequence]`, as the CPU
    /// backend's `Model::run`. Sequences are padded per GPU pass, longest first, in
    /// passes small enough for the GPU's memory; a non-finite output is an error.
    pub fn run(&self, batch: &Packed, heads: &[Head], vocab: usize) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        self.check(batch, vocab)?;
        let n = batch.seqs.len();
        let mut out: Vec<Vec<Option<HeadOutput>>> = heads.iter().map(|_| vec![None; n]).collect();
        for pass in self.passes(batch) {
            let (ids, lengths, t) = self.upload(batch, &pass)?;
            let x = self.forward(&ids, &lengths, pass.len(), t)?;
            for (h, outputs) in self.heads_of(&x, &lengths, pass.len(), t, heads)?.into_iter().enumerate() {
                for (k, o) in outputs.into_iter().enumerate() {
                    if o.probs.iter().chain(&o.logits).any(|v| !v.is_finite()) {
                        return Err(InferError::Gpu(format!("head {} gave a non-finite output", heads[h].name)));
                    }
                    out[h][pass[k]] = Some(o);
                }
            }
        }
        // A model without heads downloads nothing: wait for the work itself.
        self.stream.synchronize().map_err(|e| InferError::Gpu(format!("synchronize: {e:?}")))?;
        out.into_iter()
            .map(|per_seq| per_seq.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| InferError::Gpu("a sequence was not scored".into())))
            .collect()
    }

    /// The last hidden state of a packed batch, packed (real rows only), as
    /// `Encoder::forward` gives it: what the self-check compares.
    pub fn hidden(&self, batch: &Packed, vocab: usize) -> Result<Vec<f32>, InferError> {
        self.check(batch, vocab)?;
        let h = self.hidden;
        let mut out = vec![0.0f32; batch.rows() * h];
        for pass in self.passes(batch) {
            let (ids, lengths, t) = self.upload(batch, &pass)?;
            let x = self.forward(&ids, &lengths, pass.len(), t)?;
            let x = self.stream.clone_dtoh(&x).map_err(|e| InferError::Gpu(format!("download: {e:?}")))?;
            for (k, &seq) in pass.iter().enumerate() {
                let (start, len) = batch.seqs[seq];
                out[start * h..(start + len) * h].copy_from_slice(&x[k * t * h..(k * t + len) * h]);
            }
        }
        Ok(out)
    }

    /// Refuses what the CPU backend refuses: empty or too long sequences, unknown ids.
    fn check(&self, batch: &Packed, vocab: usize) -> Result<(), InferError> {
        for &(start, len) in &batch.seqs {
            if len == 0 {
                return Err(InferError::Empty);
            }
            if len > self.max_tokens {
                return Err(InferError::TooLong { tokens: len, max: self.max_tokens });
            }
            if let Some(id) = batch.ids[start..start + len].iter().find(|id| **id as usize >= vocab) {
                return Err(InferError::Token { id: *id as usize, vocab });
            }
        }
        Ok(())
    }

    /// The batch's sequences in GPU passes: longest first, so each pass pads little,
    /// and each within `MAX_PASS_ROWS` padded rows and `MAX_PASS_SCORES` attention
    /// floats (scores, and DeBERTa's c2p and p2c).
    fn passes(&self, batch: &Packed) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..batch.seqs.len()).collect();
        order.sort_by_key(|i| std::cmp::Reverse(batch.seqs[*i].1));
        let span2 = self.relative.as_ref().map_or(0, |r| r.rows);
        let mut passes: Vec<Vec<usize>> = Vec::new();
        let mut t = 0;
        for i in order {
            let fits = |count: usize| count * t <= MAX_PASS_ROWS && count * self.heads * t * (t + 2 * span2) <= MAX_PASS_SCORES;
            match passes.last_mut() {
                Some(p) if fits(p.len() + 1) => p.push(i),
                _ => {
                    t = batch.seqs[i].1;
                    passes.push(vec![i]);
                }
            }
        }
        passes
    }

    /// The ids and lengths of some sequences, padded to the longest: (ids, lengths, t).
    fn upload(&self, batch: &Packed, seqs: &[usize]) -> Result<(CudaSlice<u32>, CudaSlice<i32>, usize), InferError> {
        let t = seqs.iter().map(|i| batch.seqs[*i].1).max().unwrap_or(1);
        let mut ids = vec![0u32; seqs.len() * t];
        let mut lengths = Vec::with_capacity(seqs.len());
        for (k, &i) in seqs.iter().enumerate() {
            let (start, len) = batch.seqs[i];
            ids[k * t..k * t + len].copy_from_slice(&batch.ids[start..start + len]);
            lengths.push(len as i32);
        }
        let up_err = |e: cudarc::driver::DriverError| InferError::Gpu(format!("upload: {e:?}"));
        Ok((self.stream.clone_htod(&ids).map_err(up_err)?, self.stream.clone_htod(&lengths).map_err(up_err)?, t))
    }

    /// Every head on the `b` sequences of a padded pass: `[head][sequence]`.
    fn heads_of(&self, x: &CudaSlice<f32>, lengths: &CudaSlice<i32>, b: usize, t: usize, heads: &[Head]) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        let mut out: Vec<Vec<HeadOutput>> = heads.iter().map(|_| Vec::new()).collect();
        if let Some(sc) = &self.scorer {
            let pooled = self.pool(x, lengths, b, t, sc.pooling)?;
            let (logits, probs) = self.score(sc, &pooled, b)?;
            for &(h, first) in &sc.heads {
                let k = heads[h].labels.len();
                let row = |v: &[f32], i: usize| v[i * sc.total + first..i * sc.total + first + k].to_vec();
                out[h] = (0..b).map(|i| HeadOutput { logits: row(&logits, i), probs: row(&probs, i) }).collect();
            }
        }
        for (h, head) in heads.iter().enumerate() {
            if self.scorer.as_ref().is_some_and(|sc| sc.heads.iter().any(|(i, _)| *i == h)) {
                continue;
            }
            let pooled = self.pool(x, lengths, b, t, head.pooling())?;
            let pooled = self.stream.clone_dtoh(&pooled).map_err(|e| InferError::Gpu(format!("download: {e:?}")))?;
            out[h] = head.apply_pooled(&pooled, b);
        }
        Ok(out)
    }

    /// The last hidden state, `[b, t, hidden]` with padded rows to be ignored.
    fn forward(&self, ids: &CudaSlice<u32>, lengths: &CudaSlice<i32>, b: usize, t: usize) -> Result<CudaSlice<f32>, InferError> {
        let s = &self.stream;
        let rows = b * t;
        let (h, e) = (self.hidden, self.embedding_size);
        let alloc = |n: usize| s.alloc_zeros::<f32>(n).map_err(|e| InferError::Gpu(format!("GPU memory: {e:?}")));
        let mut emb = alloc(rows * e)?;
        let null: u64 = 0;
        let (ti, offset, width, eps) = (t as i32, self.position_offset as i32, e as i32, self.emb_ln.eps);
        {
            let mut l = s.launch_builder(&self.f.embed_layernorm);
            l.arg(&mut emb).arg(ids).arg(lengths).arg(&ti).arg(&self.words);
            match &self.positions {
                Some(p) => l.arg(p),
                None => l.arg(&null),
            };
            match &self.type0 {
                Some(p) => l.arg(p),
                None => l.arg(&null),
            };
            l.arg(&offset).arg(&self.emb_ln.g).arg(&self.emb_ln.b).arg(&width).arg(&eps);
            // SAFETY: the arguments match embed_layernorm's signature; emb holds rows*e.
            unsafe { l.launch(rows_config(rows)) }.map_err(|e| InferError::Gpu(format!("embed_layernorm: {e:?}")))?;
        }
        let mut x = match &self.embed_proj {
            Some(p) => {
                let mut y = alloc(rows * h)?;
                self.linear(p, &emb, &mut y, rows)?;
                y
            }
            None => emb,
        };
        let d = h / self.heads;
        let scale = 1.0 / ((d * self.factor) as f32).sqrt();
        let mut qkv = alloc(rows * 3 * h)?;
        let mut scores = alloc(b * self.heads * t * t)?;
        let mut ctx = alloc(rows * h)?;
        let mut a = alloc(rows * h)?;
        let inter_width = self.layers.first().map_or(0, |l| l.inter.out);
        let mut inter = alloc(rows * inter_width)?;
        let span2 = self.relative.as_ref().map_or(0, |r| r.rows);
        let mut c2p = alloc((b * self.heads * t * span2).max(1))?;
        let mut p2c = alloc((b * self.heads * t * span2).max(1))?;
        for layer in &self.layers {
            self.linear(&layer.qkv, &x, &mut qkv, rows)?;
            self.add_bias(&mut qkv, &layer.qkv.b, rows, 3 * h)?;
            for head in 0..self.heads {
                // scores[b, head] = Q K^T (raw; scaled in the softmax).
                self.batched(
                    (CUBLAS_OP_T, CUBLAS_OP_N),
                    (t, t, d),
                    (&qkv.slice(h + head * d..), 3 * h, (t * 3 * h) as i64),
                    (&qkv.slice(head * d..), 3 * h, (t * 3 * h) as i64),
                    (&mut scores.slice_mut(head * t * t..), t, (self.heads * t * t) as i64),
                    b,
                )?;
                if let Some(rel) = &self.relative {
                    let n = rel.rows;
                    if let Some(pk) = &layer.rel_key {
                        // c2p[b, head] = Q pk^T: [t, 2*span].
                        self.batched(
                            (CUBLAS_OP_T, CUBLAS_OP_N),
                            (n, t, d),
                            (&pk.slice(head * d..), h, 0),
                            (&qkv.slice(head * d..), 3 * h, (t * 3 * h) as i64),
                            (&mut c2p.slice_mut(head * t * n..), n, (self.heads * t * n) as i64),
                            b,
                        )?;
                    }
                    if let Some(pq) = &layer.rel_query {
                        // p2c[b, head] = K pq^T.
                        self.batched(
                            (CUBLAS_OP_T, CUBLAS_OP_N),
                            (n, t, d),
                            (&pq.slice(head * d..), h, 0),
                            (&qkv.slice(h + head * d..), 3 * h, (t * 3 * h) as i64),
                            (&mut p2c.slice_mut(head * t * n..), n, (self.heads * t * n) as i64),
                            b,
                        )?;
                    }
                }
            }
            if let Some(rel) = &self.relative {
                let (w, ti, n) = (rel.width as i32, t as i32, rel.rows as i32);
                let mut l = s.launch_builder(&self.f.deberta_relative_bias);
                l.arg(&mut scores);
                match layer.rel_key.is_some() {
                    true => l.arg(&c2p),
                    false => l.arg(&null),
                };
                match layer.rel_query.is_some() {
                    true => l.arg(&p2c),
                    false => l.arg(&null),
                };
                l.arg(&rel.index).arg(&w).arg(&ti).arg(&n);
                // SAFETY: matches deberta_relative_bias; scores is [b*heads, t, t].
                unsafe { l.launch(rows_config(b * self.heads * t)) }.map_err(|e| InferError::Gpu(format!("deberta_relative_bias: {e:?}")))?;
            }
            {
                let (heads, ti) = (self.heads as i32, t as i32);
                let mut l = s.launch_builder(&self.f.masked_softmax);
                l.arg(&mut scores).arg(lengths).arg(&heads).arg(&ti).arg(&scale);
                // SAFETY: matches masked_softmax; one block per score row.
                unsafe { l.launch(rows_config(b * self.heads * t)) }.map_err(|e| InferError::Gpu(format!("masked_softmax: {e:?}")))?;
            }
            for head in 0..self.heads {
                // ctx[b, :, head] = P V.
                self.batched(
                    (CUBLAS_OP_N, CUBLAS_OP_N),
                    (d, t, t),
                    (&qkv.slice(2 * h + head * d..), 3 * h, (t * 3 * h) as i64),
                    (&scores.slice(head * t * t..), t, (self.heads * t * t) as i64),
                    (&mut ctx.slice_mut(head * d..), h, (t * h) as i64),
                    b,
                )?;
            }
            self.linear(&layer.attn_out, &ctx, &mut a, rows)?;
            self.residual_norm(&mut a, &layer.attn_out.b, &x, &layer.ln1, rows)?;
            self.linear(&layer.inter, &a, &mut inter, rows)?;
            {
                let (total, n) = ((rows * layer.inter.out) as i64, layer.inter.out as i32);
                let mut l = s.launch_builder(&self.f.bias_gelu);
                l.arg(&mut inter).arg(&layer.inter.b).arg(&total).arg(&n);
                // SAFETY: matches bias_gelu; inter holds total floats.
                unsafe { l.launch(grid_stride(rows * layer.inter.out)) }.map_err(|e| InferError::Gpu(format!("bias_gelu: {e:?}")))?;
            }
            self.linear(&layer.out, &inter, &mut x, rows)?;
            self.residual_norm(&mut x, &layer.out.b, &a, &layer.ln2, rows)?;
        }
        Ok(x)
    }

    /// `y = x W^T` for `rows` rows (the bias is added by the kernel that follows).
    fn linear(&self, l: &DevLinear, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, rows: usize) -> Result<(), InferError> {
        let cfg = GemmConfig {
            transa: CUBLAS_OP_T,
            transb: CUBLAS_OP_N,
            m: l.out as i32,
            n: rows as i32,
            k: l.inp as i32,
            alpha: 1.0f32,
            lda: l.inp as i32,
            ldb: l.inp as i32,
            beta: 0.0f32,
            ldc: l.out as i32,
        };
        // SAFETY: row-major y[rows, out] = x[rows, in] W[out, in]^T is column-major
        // y^T = W x^T; the buffers hold those extents.
        unsafe { self.blas.gemm(cfg, &l.w, x, y) }.map_err(|e| InferError::Gpu(format!("cuBLAS gemm: {e:?}")))
    }

    /// Row-major `C = op(A) op(B)` per sequence, through column-major cuBLAS as
    /// `C^T = op(B)^T op(A)^T`: `ops` are those of the column-major call on (first,
    /// second) = (B, A); `dims` = (m, n, k) of that call; each operand is (view,
    /// leading dimension, batch stride).
    #[allow(clippy::type_complexity)]
    fn batched<X: DevicePtr<f32>, Y: DevicePtr<f32>, Z: DevicePtrMut<f32>>(
        &self,
        ops: (cudarc::cublas::sys::cublasOperation_t, cudarc::cublas::sys::cublasOperation_t),
        (m, n, k): (usize, usize, usize),
        (first, lda, stride_a): (&X, usize, i64),
        (second, ldb, stride_b): (&Y, usize, i64),
        (out, ldc, stride_c): (&mut Z, usize, i64),
        batch: usize,
    ) -> Result<(), InferError> {
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: ops.0,
                transb: ops.1,
                m: m as i32,
                n: n as i32,
                k: k as i32,
                alpha: 1.0f32,
                lda: lda as i32,
                ldb: ldb as i32,
                beta: 0.0f32,
                ldc: ldc as i32,
            },
            batch_size: batch as i32,
            stride_a,
            stride_b,
            stride_c,
        };
        // SAFETY: the callers pass views whose extents cover every batch's operand.
        unsafe { self.blas.gemm_strided_batched(cfg, first, second, out) }.map_err(|e| InferError::Gpu(format!("cuBLAS batched gemm: {e:?}")))
    }

    fn add_bias(&self, x: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, rows: usize, n: usize) -> Result<(), InferError> {
        let (total, width) = ((rows * n) as i64, n as i32);
        let mut l = self.stream.launch_builder(&self.f.bias_add);
        l.arg(x).arg(bias).arg(&total).arg(&width);
        // SAFETY: matches bias_add; x holds rows*n floats.
        unsafe { l.launch(grid_stride(rows * n)) }.map(|_| ()).map_err(|e| InferError::Gpu(format!("bias_add: {e:?}")))
    }

    /// `x = LayerNorm(x + bias + residual)`.
    fn residual_norm(&self, x: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, residual: &CudaSlice<f32>, ln: &DevNorm, rows: usize) -> Result<(), InferError> {
        let n = self.hidden as i32;
        let mut l = self.stream.launch_builder(&self.f.bias_residual_layernorm);
        l.arg(x).arg(bias).arg(residual).arg(&ln.g).arg(&ln.b).arg(&n).arg(&ln.eps);
        // SAFETY: matches bias_residual_layernorm; one block per row of width hidden.
        unsafe { l.launch(rows_config(rows)) }.map(|_| ()).map_err(|e| InferError::Gpu(format!("bias_residual_layernorm: {e:?}")))
    }

    fn pool(&self, x: &CudaSlice<f32>, lengths: &CudaSlice<i32>, b: usize, t: usize, pooling: Pooling) -> Result<CudaSlice<f32>, InferError> {
        let mut pooled = self.stream.alloc_zeros::<f32>(b * self.hidden).map_err(|e| InferError::Gpu(format!("GPU memory: {e:?}")))?;
        let (mean, normalize) = match pooling {
            Pooling::First => (0i32, 0i32),
            Pooling::Mean { normalize } => (1, i32::from(normalize)),
        };
        let (ti, n) = (t as i32, self.hidden as i32);
        let mut l = self.stream.launch_builder(&self.f.pool);
        l.arg(&mut pooled).arg(x).arg(lengths).arg(&ti).arg(&n).arg(&mean).arg(&normalize);
        // SAFETY: matches pool; one block per sequence.
        unsafe { l.launch(rows_config(b)) }.map_err(|e| InferError::Gpu(format!("pool: {e:?}")))?;
        Ok(pooled)
    }

    /// Every scored head's logits and probabilities for `b` pooled vectors: `[b, total
    /// labels]` each.
    fn score(&self, sc: &Scorer, pooled: &CudaSlice<f32>, b: usize) -> Result<(Vec<f32>, Vec<f32>), InferError> {
        let s = &self.stream;
        let mut logits = s.alloc_zeros::<f32>(b * sc.total).map_err(|e| InferError::Gpu(format!("GPU memory: {e:?}")))?;
        let mut probs = s.alloc_zeros::<f32>(b * sc.total).map_err(|e| InferError::Gpu(format!("GPU memory: {e:?}")))?;
        let mut decisions = s.alloc_zeros::<u8>(b * sc.total).map_err(|e| InferError::Gpu(format!("GPU memory: {e:?}")))?;
        let (n, total) = (self.hidden as i32, sc.total as i32);
        let mut l = s.launch_builder(&self.f.score_heads);
        l.arg(&mut logits).arg(&mut probs).arg(&mut decisions).arg(pooled).arg(&n).arg(&sc.weight).arg(&sc.bias).arg(&sc.first).arg(&sc.labels).arg(&sc.act).arg(&sc.threshold).arg(&total);
        let cfg = LaunchConfig { grid_dim: (b as u32, sc.heads.len() as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: matches score_heads; grid (sequences, heads), labels per head <= 32.
        unsafe { l.launch(cfg) }.map_err(|e| InferError::Gpu(format!("score_heads: {e:?}")))?;
        let down = |v: &CudaSlice<f32>| s.clone_dtoh(v).map_err(|e| InferError::Gpu(format!("download: {e:?}")));
        Ok((down(&logits)?, down(&probs)?))
    }
}

impl Scorer {
    /// The pooled linear heads sharing the first such head's pooling, if any.
    fn build(stream: &Arc<CudaStream>, heads: &[Head], hidden: usize) -> Result<Option<Scorer>, InferError> {
        let Some(pooling) = heads.iter().find(|h| h.linear_only().is_some()).map(Head::pooling) else { return Ok(None) };
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
            return Ok(None);
        }
        let total = bias.len();
        let err = gpu_err("uploading heads");
        let up_f = |v: &[f32]| stream.clone_htod(v).map_err(|e| err(format!("{e:?}")));
        let up_i = |v: &[i32]| stream.clone_htod(v).map_err(|e| err(format!("{e:?}")));
        Ok(Some(Scorer {
            weight: up_f(&weight)?,
            bias: up_f(&bias)?,
            first: up_i(&first)?,
            labels: up_i(&labels)?,
            act: up_i(&act)?,
            // Decisions are the auditors' to take, per configured threshold: disabled here.
            threshold: up_f(&vec![2.0; total])?,
            heads: picked,
            total,
            pooling,
        }))
    }
}

/// One block of 256 threads per row.
fn rows_config(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.max(1) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Grid-stride loops over `total` elements.
fn grid_stride(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

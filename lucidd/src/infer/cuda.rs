//! The `cuda` backend: the CPU encoder's weights on the GPU, cuBLAS for every GEMM and
//! our kernels (`kernels/encoder.cu`) for everything between them.
//!
//! A batch is padded to its longest sequence `T` (`[B, T, h]`, row-major); the
//! kernels take each sequence's length, so padded keys are masked out of attention
//! and padded rows never reach a pooled vector. What each pass launches and multiplies
//! is a [`plan`]: computed from the model's shapes alone, run here on the GPU, and run
//! by the tests on the CPU with the same kernels compiled for the host, so its sizes,
//! argument order, offsets and strides are tested on machines without a GPU. This file
//! only carries plans out: it uploads the weights the plan names, allocates the pass
//! buffers it sizes, and turns each step into a cuBLAS call or a kernel launch. Pooled
//! linear heads are scored by one `score_heads` launch for the whole batch; heads with
//! a pre-layer (a checkpoint's pooler) get the pooled vectors back and run on the CPU,
//! where they cost microseconds. Everything is f32: parity with the CPU backend is
//! what the self-check and the GPU tests hold it to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{CudaBlas, Gemm as _, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg};

use super::encoder::{Encoder, Packed};
use super::heads::{Head, HeadOutput};
use super::kernels::{self, KERNELS};
use super::ops::Activation;
use super::plan::{self, Arg, Buf, Data, Kernel, Op, Shape};
use super::InferError;

/// Most padded token rows one GPU pass holds (the batcher's budget counts real tokens;
/// padding to the longest sequence can multiply them).
const MAX_PASS_ROWS: usize = 16_384;

/// Most attention floats (scores, c2p, p2c) one GPU pass holds: 256 MiB.
const MAX_PASS_SCORES: usize = 64 << 20;

/// A device buffer of the type its data has.
enum DevBuf {
    F32(CudaSlice<f32>),
    I32(CudaSlice<i32>),
    U32(CudaSlice<u32>),
}

/// A view of a device buffer from an offset.
enum DevView<'a> {
    F32(CudaView<'a, f32>),
    I32(CudaView<'a, i32>),
    U32(CudaView<'a, u32>),
}

impl DevBuf {
    /// The buffer from `offset`; `None` past its end.
    fn view(&self, offset: usize) -> Option<DevView<'_>> {
        Some(match self {
            DevBuf::F32(s) => DevView::F32(s.try_slice(offset..)?),
            DevBuf::I32(s) => DevView::I32(s.try_slice(offset..)?),
            DevBuf::U32(s) => DevView::U32(s.try_slice(offset..)?),
        })
    }
}

/// A model's encoder (and its pooled linear heads) resident on a GPU.
pub struct CudaEncoder {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    funcs: HashMap<Kernel, CudaFunction>,
    shape: Shape,
    weights: HashMap<Buf, DevBuf>,
    max_tokens: usize,
    /// The device's name and architecture, e.g. `NVIDIA H100 (sm_90, kernels as cubin)`.
    pub device: String,
}

fn gpu<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> InferError + '_ {
    move |e| InferError::Gpu(format!("{what}: {e:?}"))
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
        let ctx = CudaContext::new(0).map_err(gpu("GPU 0"))?;
        let (major, minor) = ctx.compute_capability().map_err(gpu("GPU 0"))?;
        let arch = (major * 10 + minor).max(0) as u32;
        let name = ctx.name().unwrap_or_else(|_| "GPU 0".into());
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(gpu("cuBLAS"))?;
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
        let mut funcs = HashMap::new();
        for k in Kernel::ALL {
            funcs.insert(k, module.load_function(k.name()).map_err(|e| InferError::Gpu(format!("kernel {}: {e:?}", k.name())))?);
        }
        let (shape, data) = plan::weights(enc, heads);
        let mut weights = HashMap::new();
        for (buf, values) in data {
            let up = match values {
                Data::F32(v) => stream.clone_htod(&v).map(DevBuf::F32),
                Data::I32(v) => stream.clone_htod(&v).map(DevBuf::I32),
            };
            weights.insert(buf, up.map_err(gpu("uploading weights"))?);
        }
        Ok(CudaEncoder { stream, blas, funcs, shape, weights, max_tokens: enc.max_tokens(), device: format!("{name} (sm_{arch}, kernels as {kind})") })
    }

    /// Every head on every sequence of a packed batch: `[head][sequence]`, as the CPU
    /// backend's `Model::run`. Sequences are padded per GPU pass, longest first, in
    /// passes small enough for the GPU's memory; a non-finite output is an error.
    pub fn run(&self, batch: &Packed, heads: &[Head], vocab: usize) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        self.check(batch, vocab)?;
        let n = batch.seqs.len();
        let mut out: Vec<Vec<Option<HeadOutput>>> = heads.iter().map(|_| vec![None; n]).collect();
        for pass in self.passes(batch) {
            let (mut bufs, t) = self.pass_buffers(batch, &pass)?;
            self.exec(&plan::forward(&self.shape, pass.len(), t), &mut bufs)?;
            for (h, outputs) in self.heads_of(&mut bufs, pass.len(), t, heads)?.into_iter().enumerate() {
                for (k, o) in outputs.into_iter().enumerate() {
                    if o.probs.iter().chain(&o.logits).any(|v| !v.is_finite()) {
                        return Err(InferError::Gpu(format!("head {} gave a non-finite output", heads[h].name)));
                    }
                    out[h][pass[k]] = Some(o);
                }
            }
        }
        // A model without heads downloads nothing: wait for the work itself.
        self.stream.synchronize().map_err(gpu("synchronize"))?;
        out.into_iter()
            .map(|per_seq| per_seq.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| InferError::Gpu("a sequence was not scored".into())))
            .collect()
    }

    /// The last hidden state of a packed batch, packed (real rows only), as
    /// `Encoder::forward` gives it: what the self-check compares.
    pub fn hidden(&self, batch: &Packed, vocab: usize) -> Result<Vec<f32>, InferError> {
        self.check(batch, vocab)?;
        let h = self.shape.hidden;
        let mut out = vec![0.0f32; batch.rows() * h];
        for pass in self.passes(batch) {
            let (mut bufs, t) = self.pass_buffers(batch, &pass)?;
            self.exec(&plan::forward(&self.shape, pass.len(), t), &mut bufs)?;
            let x = self.download(&bufs, Buf::X)?;
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
        let span2 = self.shape.relative.unwrap_or(0);
        let heads = self.shape.heads;
        let mut passes: Vec<Vec<usize>> = Vec::new();
        let mut t = 0;
        for i in order {
            let fits = |count: usize| count * t <= MAX_PASS_ROWS && count * heads * t * (t + 2 * span2) <= MAX_PASS_SCORES;
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

    /// A pass's buffers: the ids and lengths of some sequences, padded to the longest,
    /// uploaded, and zeroed buffers for everything the plan writes; with the padded
    /// length `t`.
    fn pass_buffers(&self, batch: &Packed, seqs: &[usize]) -> Result<(HashMap<Buf, DevBuf>, usize), InferError> {
        let t = seqs.iter().map(|i| batch.seqs[*i].1).max().unwrap_or(1);
        let (ids, lengths) = plan::padded(batch, seqs, t);
        let s = &self.stream;
        let mut bufs = HashMap::new();
        bufs.insert(Buf::Ids, DevBuf::U32(s.clone_htod(&ids).map_err(gpu("upload"))?));
        bufs.insert(Buf::Lengths, DevBuf::I32(s.clone_htod(&lengths).map_err(gpu("upload"))?));
        for buf in self.shape.pass_buffers() {
            let n = self.shape.len(buf, seqs.len(), t).max(1);
            bufs.insert(buf, DevBuf::F32(s.alloc_zeros::<f32>(n).map_err(gpu("GPU memory"))?));
        }
        Ok((bufs, t))
    }

    /// Every head on the `b` sequences of a padded pass: `[head][sequence]`.
    fn heads_of(&self, bufs: &mut HashMap<Buf, DevBuf>, b: usize, t: usize, heads: &[Head]) -> Result<Vec<Vec<HeadOutput>>, InferError> {
        let mut out: Vec<Vec<HeadOutput>> = heads.iter().map(|_| Vec::new()).collect();
        let scorer = self.shape.scorer.as_ref();
        if let (Some(sc), Some(score)) = (scorer, plan::score(&self.shape, b)) {
            self.exec(&[plan::pool(&self.shape, b, t, sc.pooling), score], bufs)?;
            let (logits, probs) = (self.download(bufs, Buf::Logits)?, self.download(bufs, Buf::Probs)?);
            for &(h, first) in &sc.heads {
                let k = heads[h].labels.len();
                let row = |v: &[f32], i: usize| v[i * sc.total + first..i * sc.total + first + k].to_vec();
                out[h] = (0..b).map(|i| HeadOutput { logits: row(&logits, i), probs: row(&probs, i) }).collect();
            }
        }
        for (h, head) in heads.iter().enumerate() {
            if scorer.is_some_and(|sc| sc.heads.iter().any(|(i, _)| *i == h)) {
                continue;
            }
            self.exec(&[plan::pool(&self.shape, b, t, head.pooling())], bufs)?;
            let pooled = self.download(bufs, Buf::Pooled)?;
            out[h] = head.apply_pooled(&pooled[..b * self.shape.hidden], b);
        }
        Ok(out)
    }

    fn download(&self, bufs: &HashMap<Buf, DevBuf>, buf: Buf) -> Result<Vec<f32>, InferError> {
        match bufs.get(&buf) {
            Some(DevBuf::F32(s)) => self.stream.clone_dtoh(s).map_err(gpu("download")),
            _ => Err(InferError::Gpu(format!("no f32 buffer {buf:?} to download"))),
        }
    }

    /// Carries out the steps of a plan on the pass's buffers and the weights.
    fn exec(&self, ops: &[Op], bufs: &mut HashMap<Buf, DevBuf>) -> Result<(), InferError> {
        for op in ops {
            match op {
                Op::Launch(l) => self.launch(l, bufs)?,
                Op::Gemm(g) => self.gemm(g, bufs)?,
            }
        }
        Ok(())
    }

    fn launch(&self, l: &plan::Launch, bufs: &HashMap<Buf, DevBuf>) -> Result<(), InferError> {
        let name = l.kernel.name();
        if let Some(why) = plan::mismatch(l) {
            return Err(InferError::Gpu(format!("launch plan: {why}")));
        }
        let func = self.funcs.get(&l.kernel).ok_or_else(|| InferError::Gpu(format!("kernel {name} not loaded")))?;
        let buffer = |b: &Buf| bufs.get(b).or_else(|| self.weights.get(b)).ok_or_else(|| InferError::Gpu(format!("{name}: no buffer {b:?}")));
        // Everything an argument points at must outlive the builder: views and scalars
        // are gathered first.
        let mut views = Vec::new();
        let (mut ints, mut longs, mut floats) = (Vec::new(), Vec::new(), Vec::new());
        for a in &l.args {
            match a {
                Arg::Buf(b, offset) => views.push(buffer(b)?.view(*offset).ok_or_else(|| InferError::Gpu(format!("{name}: offset {offset} past {b:?}")))?),
                Arg::I32(v) => ints.push(*v),
                Arg::I64(v) => longs.push(*v),
                Arg::F32(v) => floats.push(*v),
                Arg::Null => {}
            }
        }
        let null: u64 = 0;
        let mut builder = self.stream.launch_builder(func);
        let (mut vi, mut ii, mut li, mut fi) = (views.iter(), ints.iter(), longs.iter(), floats.iter());
        for a in &l.args {
            match a {
                Arg::Buf(..) => match vi.next() {
                    Some(DevView::F32(v)) => builder.arg(v),
                    Some(DevView::I32(v)) => builder.arg(v),
                    Some(DevView::U32(v)) => builder.arg(v),
                    None => return Err(InferError::Gpu(format!("{name}: arguments out of step"))),
                },
                Arg::I32(_) => builder.arg(ii.next().unwrap_or(&0)),
                Arg::I64(_) => builder.arg(li.next().unwrap_or(&0)),
                Arg::F32(_) => builder.arg(fi.next().unwrap_or(&0.0)),
                Arg::Null => builder.arg(&null),
            };
        }
        let cfg = LaunchConfig { grid_dim: (l.grid[0], l.grid[1], l.grid[2]), block_dim: (l.block[0], l.block[1], l.block[2]), shared_mem_bytes: 0 };
        // SAFETY: the arguments match the kernel's parameters (`plan::mismatch`, and the
        // test holding `Kernel::params` to the compiled kernels); the buffers are sized
        // by the same plan (`Shape::len`) the launch's extents come from.
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(|e| InferError::Gpu(format!("{name}: {e:?}")))
    }

    fn gemm(&self, g: &plan::Gemm, bufs: &mut HashMap<Buf, DevBuf>) -> Result<(), InferError> {
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: op(g.trans_a),
                transb: op(g.trans_b),
                m: g.m as i32,
                n: g.n as i32,
                k: g.k as i32,
                alpha: 1.0f32,
                lda: g.lda as i32,
                ldb: g.ldb as i32,
                beta: 0.0f32,
                ldc: g.ldc as i32,
            },
            batch_size: g.batch as i32,
            stride_a: g.strides[0],
            stride_b: g.strides[1],
            stride_c: g.strides[2],
        };
        // The output is taken out of the map while it is written (the plan never reads
        // an operand from the buffer it writes).
        let mut c = match bufs.remove(&g.c.0) {
            Some(DevBuf::F32(c)) => c,
            Some(other) => {
                bufs.insert(g.c.0, other);
                return Err(InferError::Gpu(format!("GEMM output {:?} is not an f32 buffer", g.c.0)));
            }
            None => return Err(InferError::Gpu(format!("GEMM output {:?} is not a pass buffer", g.c.0))),
        };
        let result = {
            let operand = |(b, offset): (Buf, usize)| match bufs.get(&b).or_else(|| self.weights.get(&b)) {
                Some(DevBuf::F32(s)) => s.try_slice(offset..).ok_or_else(|| InferError::Gpu(format!("GEMM operand {b:?}: offset {offset} past its end"))),
                _ => Err(InferError::Gpu(format!("GEMM operand {b:?} is not an f32 buffer"))),
            };
            match (operand(g.a), operand(g.b), c.try_slice_mut(g.c.1..)) {
                (Ok(a), Ok(b), Some(mut out)) => {
                    // SAFETY: the plan's extents (m, n, k, leading dimensions, strides)
                    // fit the buffers it sizes; tested on the CPU against the backend.
                    unsafe { self.blas.gemm_strided_batched(cfg, &a, &b, &mut out) }.map_err(gpu("cuBLAS"))
                }
                (Err(e), _, _) | (_, Err(e), _) => Err(e),
                (_, _, None) => Err(InferError::Gpu(format!("GEMM output {:?}: offset {} past its end", g.c.0, g.c.1))),
            }
        };
        bufs.insert(g.c.0, DevBuf::F32(c));
        result
    }
}

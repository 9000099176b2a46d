//! The cuda backend's plans (`lucidd::infer::plan`) carried out on the CPU: the kernels
//! of `kernels/encoder.cu` compiled for the host (`tests/cuda-host`, built by
//! `build.rs`), launched with the plan's grids, blocks and arguments on buffers sized by
//! the plan, and its GEMMs done by a reference with cuBLAS's column-major semantics. What
//! a GPU would be asked to do, checked where there is no GPU.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};

use lucidd::infer::encoder::Packed;
use lucidd::infer::heads::HeadOutput;
use lucidd::infer::plan::{self, Arg, Buf, Data, Gemm, Launch, Op, Shape};
use lucidd::infer::Model;

type LaunchFn = unsafe extern "C" fn(*const c_char, u32, u32, u32, u32, u32, u32, *mut *mut c_void, u64) -> c_int;
type TextFn = unsafe extern "C" fn() -> *const c_char;

extern "C" {
    fn lucid_host_launch(name: *const c_char, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, args: *mut *mut c_void, seed: u64) -> c_int;
    fn lucid_host_error() -> *const c_char;
    fn lucid_host_signature(name: *const c_char) -> *const c_char;
    fn lucid_nosync_lucid_host_launch(name: *const c_char, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, args: *mut *mut c_void, seed: u64) -> c_int;
    fn lucid_nosync_lucid_host_error() -> *const c_char;
    fn lucid_offbyone_lucid_host_launch(name: *const c_char, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, args: *mut *mut c_void, seed: u64) -> c_int;
    fn lucid_offbyone_lucid_host_error() -> *const c_char;
}

/// Which build of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// `kernels/encoder.cu` as it is.
    AsWritten,
    /// With `block_reduce`'s second `__syncthreads()` removed.
    MissingBarrier,
    /// With `masked_softmax` counting the first padded key.
    OffByOne,
}

impl Kernels {
    fn entry(self) -> (LaunchFn, TextFn) {
        match self {
            Kernels::AsWritten => (lucid_host_launch, lucid_host_error),
            Kernels::MissingBarrier => (lucid_nosync_lucid_host_launch, lucid_nosync_lucid_host_error),
            Kernels::OffByOne => (lucid_offbyone_lucid_host_launch, lucid_offbyone_lucid_host_error),
        }
    }
}

/// A kernel's parameter types as the host compiler has them, e.g. `float*,int`.
pub fn signature(kernel: &str) -> String {
    let Ok(name) = CString::new(kernel) else { return String::new() };
    // SAFETY: the name is a valid C string; the result is a C string owned by the
    // library, valid until the next call, copied at once.
    unsafe { CStr::from_ptr(lucid_host_signature(name.as_ptr())) }.to_string_lossy().into_owned()
}

/// A host buffer.
#[derive(Clone, Debug)]
pub enum HostBuf {
    /// f32 values.
    F32(Vec<f32>),
    /// i32 values.
    I32(Vec<i32>),
    /// u32 values.
    U32(Vec<u32>),
}

impl HostBuf {
    fn ptr_at(&mut self, offset: usize) -> Option<*mut c_void> {
        match self {
            HostBuf::F32(v) if offset < v.len() => Some(v[offset..].as_mut_ptr().cast()),
            HostBuf::I32(v) if offset < v.len() => Some(v[offset..].as_mut_ptr().cast()),
            HostBuf::U32(v) if offset < v.len() => Some(v[offset..].as_mut_ptr().cast()),
            _ => None,
        }
    }
}

/// A model's weights and one pass's buffers in host memory, and the kernels to run.
pub struct HostDevice {
    /// The model's shapes.
    pub shape: Shape,
    bufs: HashMap<Buf, HostBuf>,
    kernels: Kernels,
    /// Seeds the fibers' order; each launch takes the next.
    seed: u64,
}

impl HostDevice {
    /// A device holding `model`'s weights, as the cuda backend would upload them.
    pub fn new(model: &Model, kernels: Kernels, seed: u64) -> HostDevice {
        let (shape, weights) = model.device_plan();
        let bufs = weights
            .into_iter()
            .map(|(b, d)| {
                (b, match d {
                    Data::F32(v) => HostBuf::F32(v),
                    Data::I32(v) => HostBuf::I32(v),
                })
            })
            .collect();
        HostDevice { shape, bufs, kernels, seed: seed | 1 }
    }

    /// Sets up a pass over the sequences `seqs` of `batch`, padded to their longest:
    /// uploads ids and lengths and zeroes the plan's pass buffers; returns `t`.
    pub fn pass(&mut self, batch: &Packed, seqs: &[usize]) -> usize {
        let t = seqs.iter().map(|i| batch.seqs[*i].1).max().unwrap_or(1);
        let (ids, lengths) = plan::padded(batch, seqs, t);
        self.bufs.insert(Buf::Ids, HostBuf::U32(ids));
        self.bufs.insert(Buf::Lengths, HostBuf::I32(lengths));
        for buf in self.shape.pass_buffers() {
            let n = self.shape.len(buf, seqs.len(), t).max(1);
            self.bufs.insert(buf, HostBuf::F32(vec![0.0; n]));
        }
        t
    }

    /// An f32 buffer's values.
    pub fn f32(&self, buf: Buf) -> &[f32] {
        match self.bufs.get(&buf) {
            Some(HostBuf::F32(v)) => v,
            _ => &[],
        }
    }

    /// Carries out a plan's steps.
    pub fn exec(&mut self, ops: &[Op]) -> Result<(), String> {
        for op in ops {
            match op {
                Op::Launch(l) => self.launch(l)?,
                Op::Gemm(g) => self.gemm(g)?,
            }
        }
        Ok(())
    }

    fn launch(&mut self, l: &Launch) -> Result<(), String> {
        if let Some(why) = plan::mismatch(l) {
            return Err(why);
        }
        // One 8-byte slot per argument, holding its value (a pointer or a scalar, little
        // endian), and the array of pointers to the slots that the kernel's call reads.
        let mut slots = vec![0u64; l.args.len()];
        for (slot, a) in slots.iter_mut().zip(&l.args) {
            *slot = match a {
                Arg::Buf(b, offset) => {
                    let buf = self.bufs.get_mut(b).ok_or_else(|| format!("{}: no buffer {b:?}", l.kernel.name()))?;
                    buf.ptr_at(*offset).ok_or_else(|| format!("{}: offset {offset} beyond {b:?}", l.kernel.name()))? as u64
                }
                Arg::Null => 0,
                Arg::I32(v) => u64::from(*v as u32),
                Arg::I64(v) => *v as u64,
                Arg::F32(v) => u64::from(v.to_bits()),
            };
        }
        let mut args: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast()).collect();
        let name = CString::new(l.kernel.name()).map_err(|e| e.to_string())?;
        let (launch, error) = self.kernels.entry();
        self.seed = self.seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let [gx, gy, gz] = l.grid;
        let [bx, by, bz] = l.block;
        // SAFETY: `args` holds one pointer per parameter of the kernel (checked against
        // its parameters by `plan::mismatch`), each to an 8-byte slot whose first bytes
        // hold the value; buffer pointers point into buffers sized by the plan.
        let rc = unsafe { launch(name.as_ptr(), gx, gy, gz, bx, by, bz, args.as_mut_ptr(), self.seed) };
        if rc != 0 {
            // SAFETY: a C string owned by the library.
            let why = unsafe { CStr::from_ptr(error()) }.to_string_lossy().into_owned();
            return Err(format!("{}: {why}", l.kernel.name()));
        }
        Ok(())
    }

    /// cuBLAS's column-major `C = op(A) op(B)`, strided and batched, summed in f64,
    /// with cuBLAS's own checks of the leading dimensions (it refuses smaller ones).
    fn gemm(&mut self, g: &Gemm) -> Result<(), String> {
        let rows_a = if g.trans_a { g.k } else { g.m };
        let rows_b = if g.trans_b { g.n } else { g.k };
        if g.lda < rows_a.max(1) || g.ldb < rows_b.max(1) || g.ldc < g.m.max(1) {
            return Err(format!("GEMM leading dimensions cuBLAS refuses: {g:?}"));
        }
        let Some(HostBuf::F32(mut c)) = self.bufs.remove(&g.c.0) else { return Err(format!("GEMM output {:?}", g.c.0)) };
        let result = (|| {
            let get = |b: Buf| match self.bufs.get(&b) {
                Some(HostBuf::F32(v)) => Ok(v),
                _ => Err(format!("GEMM operand {b:?}")),
            };
            let (a, b) = (get(g.a.0)?, get(g.b.0)?);
            for p in 0..g.batch as i64 {
                let (oa, ob, oc) = (g.a.1 as i64 + p * g.strides[0], g.b.1 as i64 + p * g.strides[1], g.c.1 as i64 + p * g.strides[2]);
                for j in 0..g.n {
                    for i in 0..g.m {
                        let mut sum = 0.0f64;
                        for l in 0..g.k {
                            let ai = if g.trans_a { l + i * g.lda } else { i + l * g.lda };
                            let bi = if g.trans_b { j + l * g.ldb } else { l + j * g.ldb };
                            let x = a.get((oa + ai as i64) as usize).ok_or("GEMM reads past A")?;
                            let y = b.get((ob + bi as i64) as usize).ok_or("GEMM reads past B")?;
                            sum += f64::from(*x) * f64::from(*y);
                        }
                        *c.get_mut((oc + (i + j * g.ldc) as i64) as usize).ok_or("GEMM writes past C")? = sum as f32;
                    }
                }
            }
            Ok(())
        })();
        self.bufs.insert(g.c.0, HostBuf::F32(c));
        result
    }
}

/// What the cuda backend's `run` and `hidden` give for a batch, run on the host as one
/// padded pass: the hidden state of the real rows (packed), and every head's outputs.
pub fn run(model: &Model, batch: &Packed, kernels: Kernels, seed: u64) -> Result<(Vec<f32>, Vec<Vec<HeadOutput>>), String> {
    let mut dev = HostDevice::new(model, kernels, seed);
    let seqs: Vec<usize> = (0..batch.seqs.len()).collect();
    let b = seqs.len();
    let t = dev.pass(batch, &seqs);
    let shape = dev.shape.clone();
    dev.exec(&plan::forward(&shape, b, t))?;
    let h = shape.hidden;
    let x = dev.f32(Buf::X);
    let mut hidden = Vec::with_capacity(batch.rows() * h);
    for (k, &(_, len)) in batch.seqs.iter().enumerate() {
        hidden.extend_from_slice(&x[k * t * h..(k * t + len) * h]);
    }
    // As `CudaEncoder::heads_of`: the scored heads in one launch, the rest pooled here
    // and finished on the CPU.
    let mut out: Vec<Vec<HeadOutput>> = model.heads.iter().map(|_| Vec::new()).collect();
    if let (Some(sc), Some(score)) = (shape.scorer.as_ref(), plan::score(&shape, b)) {
        dev.exec(&[plan::pool(&shape, b, t, sc.pooling), score])?;
        let (logits, probs) = (dev.f32(Buf::Logits), dev.f32(Buf::Probs));
        for &(i, first) in &sc.heads {
            let k = model.heads[i].labels.len();
            let row = |v: &[f32], s: usize| v[s * sc.total + first..s * sc.total + first + k].to_vec();
            out[i] = (0..b).map(|s| HeadOutput { logits: row(logits, s), probs: row(probs, s) }).collect();
        }
    }
    for (i, head) in model.heads.iter().enumerate() {
        if shape.scorer.as_ref().is_some_and(|sc| sc.heads.iter().any(|(j, _)| *j == i)) {
            continue;
        }
        dev.exec(&[plan::pool(&shape, b, t, head.pooling())])?;
        out[i] = head.apply_pooled(&dev.f32(Buf::Pooled)[..b * h], b);
    }
    Ok((hidden, out))
}

//! The CPU backend's numerical building blocks over row-major f32 matrices: GEMM (the
//! `gemm` crate: SIMD kernels, rayon threads), LayerNorm, GELU, softmax.

use gemm::Parallelism;
use rayon::prelude::*;

use super::weights::Weights;
use super::InferError;

/// Rows above which a GEMM is split across threads (below it, threads cost more than
/// they save).
const PARALLEL_ROWS: usize = 16;

fn parallelism(rows: usize) -> Parallelism {
    if rows >= PARALLEL_ROWS {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

/// A strided view of a matrix: element (i, j) at `data[offset + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The backing slice.
    pub data: &'a [f32],
    /// Index of element (0, 0).
    pub offset: usize,
    /// Step between rows.
    pub rs: usize,
    /// Step between columns.
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A dense row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> View<'a> {
        View { data, offset: 0, rs: cols, cs: 1 }
    }

    /// The transpose of this view.
    pub fn t(self) -> View<'a> {
        View { rs: self.cs, cs: self.rs, ..self }
    }

    /// The view starting at element (i, j).
    pub fn at(self, i: usize, j: usize) -> View<'a> {
        View { offset: self.offset + i * self.rs + j * self.cs, ..self }
    }

    /// Whether an m x n matrix fits in the backing slice.
    fn fits(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || self.offset + (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// `dst[m x n] (row stride dst_rs) = (accumulate ? dst : 0) + scale * a[m x k] * b[k x n]`.
///
/// Bounds are checked here, so the unsafe GEMM call below only ever reads and writes
/// inside the slices it was given.
#[allow(clippy::too_many_arguments)]
pub fn matmul(dst: &mut [f32], dst_rs: usize, m: usize, n: usize, k: usize, a: View, b: View, scale: f32, accumulate: bool) {
    matmul_with(dst, dst_rs, m, n, k, a, b, scale, accumulate, parallelism(m));
}

/// [`matmul`] on the calling thread only (for work already spread across threads).
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial(dst: &mut [f32], dst_rs: usize, m: usize, n: usize, k: usize, a: View, b: View, scale: f32, accumulate: bool) {
    matmul_with(dst, dst_rs, m, n, k, a, b, scale, accumulate, Parallelism::None);
}

#[allow(clippy::too_many_arguments)]
fn matmul_with(dst: &mut [f32], dst_rs: usize, m: usize, n: usize, k: usize, a: View, b: View, scale: f32, accumulate: bool, par: Parallelism) {
    let fits_dst = m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len();
    if !(fits_dst && a.fits(m, k) && b.fits(k, n)) || (m > 1 && n > dst_rs) {
        // A shape bug in this module, not input data: leave dst as it is and say so in
        // debug builds.
        debug_assert!(false, "matmul out of bounds: m={m} n={n} k={k}");
        return;
    }
    // SAFETY: every element the GEMM touches was bounds-checked above; dst does not
    // alias a or b (it is a distinct &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.offset),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// A dense layer `y = x W^T + b` (W as PyTorch stores it, `[out, in]`).
///
/// The weight is kept transposed (`[in, out]` row-major, i.e. W column-major) and the
/// product computed as `y^T = W x^T`: the GEMM then reads the weight, the large operand,
/// in the layout its kernels want and packs only the activations, which for short
/// batches are the small operand (a 1 x 128 MiniLM pass spent a quarter of its time
/// repacking weights otherwise).
pub struct Linear {
    /// `wt[k * out + i] = W[i][k]`.
    wt: Vec<f32>,
    b: Vec<f32>,
    /// The weight in bf16 for AMX, when the model runs at `bf16` precision.
    bf16: Option<super::amx::Packed>,
    /// Output width.
    pub out: usize,
    /// Input width.
    pub inp: usize,
}

/// `[rows, cols]` row-major to `[cols, rows]` row-major.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; w.len()];
    for (i, row) in w.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (k, v) in row.iter().enumerate() {
            t[k * rows + i] = *v;
        }
    }
    t
}

impl Linear {
    /// A layer from its weight (`[out, in]`) and bias.
    pub fn from_parts(w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize) -> Linear {
        Linear { wt: transpose(&w, out, inp), b, bf16: None, out, inp }
    }

    /// Loads `{name}.weight` and `{name}.bias` (full names).
    pub fn load(w: &mut Weights, name: &str, out: usize, inp: usize) -> Result<Linear, InferError> {
        let weight = w.take(&format!("{name}.weight"), &[out, inp])?;
        Ok(Linear::from_parts(weight, w.take(&format!("{name}.bias"), &[out])?, out, inp))
    }

    /// The weight, `[out, in]` row-major (a copy: kept transposed here).
    pub fn weight(&self) -> Vec<f32> {
        transpose(&self.wt, self.inp, self.out)
    }

    /// The bias.
    pub fn bias(&self) -> &[f32] {
        &self.b
    }

    /// Several layers with the same input fused into one (Q, K and V into one GEMM).
    pub fn concat(parts: Vec<Linear>) -> Linear {
        let inp = parts.first().map_or(0, |p| p.inp);
        let mut w = Vec::new();
        let mut b = Vec::new();
        let mut out = 0;
        for p in parts {
            w.extend_from_slice(&p.weight());
            b.extend_from_slice(&p.b);
            out += p.out;
        }
        Linear::from_parts(w, b, out, inp)
    }

    /// Computes this layer in bf16 on AMX from now on (see `amx`); the f32 weight stays
    /// for the case AMX cannot run.
    pub fn use_bf16(&mut self) {
        self.bf16 = Some(super::amx::Packed::new(&self.weight(), self.out, self.inp));
    }

    /// Back to f32 (drops the bf16 weight).
    pub fn use_f32(&mut self) {
        self.bf16 = None;
    }

    /// `x` has `rows` rows of `inp`; returns `rows` rows of `out`.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = Vec::new();
        self.forward_into(x, rows, None, &mut y);
        y
    }

    /// `act(forward(x))` into `y`, a buffer reused from call to call (the encoder's
    /// layers are the same shapes each time; fresh outputs cost zeroing and page faults).
    pub fn forward_into(&self, x: &[f32], rows: usize, act: Option<Activation>, y: &mut Vec<f32>) {
        if self.bf16.as_ref().is_some_and(|p| p.forward_into(x, rows, &self.b, act, y)) {
            return;
        }
        y.clear();
        for _ in 0..rows {
            y.extend_from_slice(&self.b);
        }
        self.product(x, rows, y);
        if let Some(act) = act {
            act.apply(y);
        }
    }

    /// `y = next(act(self(x)))`, with `mid` (f32) or `mid_bf16` as the middle matrix's
    /// space: where both layers run in bf16 the middle goes from one to the other in
    /// bf16 tiles and never exists in f32 (see `amx::Packed::forward_chain`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_chain(&self, next: &Linear, x: &[f32], rows: usize, act: Option<Activation>, mid: &mut Vec<f32>, mid_bf16: &mut Vec<u16>, y: &mut Vec<f32>) {
        if let (Some(p), Some(q)) = (&self.bf16, &next.bf16) {
            if p.forward_chain(x, rows, &self.b, act, q, &next.b, mid_bf16, y) {
                return;
            }
        }
        self.forward_into(x, rows, act, mid);
        next.forward_into(mid, rows, None, y);
    }

    /// `y += x W^T` in f32, `y` holding `rows` rows of `out`.
    fn product(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        let (m, n, k) = (self.out, rows, self.inp);
        let fits = m == 0 || n == 0 || k == 0 || (self.wt.len() >= k * m && x.len() >= n * k && y.len() >= n * m);
        if !fits {
            debug_assert!(false, "linear out of bounds: out={m} rows={n} in={k}");
            return;
        }
        // SAFETY: y^T (m x n, column stride m) = W (m x k, column-major in wt) x^T (k x n,
        // column stride k); the extents were checked above, and y aliases neither input.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                m as isize,
                1,
                true,
                self.wt.as_ptr(),
                m as isize,
                1,
                x.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism(n.max(m / 8)),
            );
        }
    }
}

/// LayerNorm over the last dimension.
pub struct LayerNorm {
    g: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Scale, shift and epsilon.
    pub fn parts(&self) -> (&[f32], &[f32], f32) {
        (&self.g, &self.b, self.eps)
    }

    /// Loads `{name}.weight` and `{name}.bias`.
    pub fn load(w: &mut Weights, name: &str, width: usize, eps: f64) -> Result<LayerNorm, InferError> {
        Ok(LayerNorm { g: w.take(&format!("{name}.weight"), &[width])?, b: w.take(&format!("{name}.bias"), &[width])?, eps: eps as f32 })
    }

    /// Normalises every row of `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        let n = self.g.len().max(1);
        x.par_chunks_mut(n * ROWS_PER_TASK).for_each(|x| vectorised(x, &Norm { ln: self, residual: None }));
    }

    /// Adds `residual` to `x`, then normalises every row (a transformer's
    /// "add & norm"), in place.
    pub fn add_apply(&self, x: &mut [f32], residual: &[f32]) {
        let n = self.g.len().max(1);
        x.par_chunks_mut(n * ROWS_PER_TASK).zip(residual.par_chunks(n * ROWS_PER_TASK)).for_each(|(x, r)| vectorised(x, &Norm { ln: self, residual: Some(r) }));
    }

    #[inline(always)]
    fn apply_rows(&self, x: &mut [f32]) {
        let n = self.g.len();
        for row in x.chunks_exact_mut(n) {
            let mean = lanes_sum(row, |v| v) / n as f32;
            let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / n as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.g).zip(&self.b) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// The activations configs name.
#[derive(Clone, Copy, Debug)]
pub enum Activation {
    /// Exact GELU, `x * Phi(x)` (Hugging Face's `gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
    /// tanh.
    Tanh,
}

impl Activation {
    /// Parses a config's activation name.
    pub fn parse(name: &str) -> Result<Activation, InferError> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "tanh" => Ok(Activation::Tanh),
            other => Err(InferError::Unsupported(format!("activation {other}"))),
        }
    }

    /// Applies the activation in place.
    pub fn apply(self, x: &mut [f32]) {
        x.par_chunks_mut(ELEMENTS_PER_TASK).for_each(|x| vectorised(x, &self));
    }

    /// The activation over `x` on the calling thread, inlined into the caller (so it
    /// vectorises as wide as the caller is compiled).
    #[inline(always)]
    pub(super) fn apply_scalar(self, x: &mut [f32]) {
        match self {
            Activation::Gelu => x.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2))),
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // sqrt(2/pi)
                x.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + (C * (*v + 0.044715 * *v * *v * *v)).tanh()))
            }
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
        }
    }
}

/// Rows of a LayerNorm, and elements of an activation, that one rayon task takes: enough
/// to outweigh the hand-off, few enough that both cores get work at batch 1.
const ROWS_PER_TASK: usize = 32;
const ELEMENTS_PER_TASK: usize = 16 * 1024;

/// A loop over a slice, run by [`vectorised`]. A trait with an `#[inline(always)]`
/// method rather than a closure: a closure body may stay out of line, compiled for
/// baseline x86-64 (softmax's closure did, and ran 4 lanes wide).
trait Kernel {
    fn run(&self, x: &mut [f32]);
}

/// Softmax over rows of `cols`.
struct Softmax {
    cols: usize,
}

impl Kernel for Softmax {
    #[inline(always)]
    fn run(&self, x: &mut [f32]) {
        softmax_loop(x, self.cols)
    }
}

/// LayerNorm of rows, after adding a residual when there is one.
struct Norm<'a> {
    ln: &'a LayerNorm,
    residual: Option<&'a [f32]>,
}

impl Kernel for Norm<'_> {
    #[inline(always)]
    fn run(&self, x: &mut [f32]) {
        if let Some(r) = self.residual {
            x.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        self.ln.apply_rows(x)
    }
}

impl Kernel for Activation {
    #[inline(always)]
    fn run(&self, x: &mut [f32]) {
        self.apply_scalar(x)
    }
}

/// Runs `f` on `x` compiled for AVX-512, or AVX2 and FMA, where the CPU has them (the
/// build targets baseline x86-64, where the same loop runs 4 lanes wide instead of 16).
#[inline(always)]
fn vectorised<F: Kernel>(x: &mut [f32], f: &F) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn widest<F: Kernel>(x: &mut [f32], f: &F) {
            f.run(x)
        }
        // SAFETY: the CPU has the features `widest` is compiled for.
        unsafe { widest(x, f) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide<F: Kernel>(x: &mut [f32], f: &F) {
            f.run(x)
        }
        // SAFETY: the CPU has the features `wide` is compiled for.
        unsafe { wide(x, f) };
        return;
    }
    f.run(x)
}

/// erf(x) in f32 to a few ulp, branch-free so that loops over slices vectorise: the
/// odd/even rational approximation on [-4, 4] (beyond which erf is +-1 in f32) that
/// XLA and Eigen use for their vectorised erf.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_3e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

/// e^x in f32 to about 2 ulp, branch-free (Cody-Waite reduction to r in [-ln2/2, ln2/2],
/// a degree-6 polynomial, and 2^n put straight into the exponent bits).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (r, two_n) = exp_reduce(x);
    let mut p = r * 1.0 / 720.0 + 1.0 / 120.0;
    p = r * p + 1.0 / 24.0;
    p = r * p + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    p * two_n
}

/// e^x to about 5e-5 relative, for values rounded to bf16 next (8 bits of mantissa,
/// 4e-3 apart): [`exp`] with a degree-4 polynomial instead of 6. Attention's
/// probabilities in bf16 spend most of their time here.
#[inline(always)]
pub fn exp_for_bf16(x: f32) -> f32 {
    let (r, two_n) = exp_reduce(x);
    let mut p = r * (1.0 / 24.0) + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    p * two_n
}

/// `x = n ln2 + r` with `r` in [-ln2/2, ln2/2]: returns `(r, 2^n)`, x clamped to where
/// e^x is a normal f32.
#[inline(always)]
fn exp_reduce(x: f32) -> (f32, f32) {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and removing 1.5 * 2^23 (no roundf call, vectorises).
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = n * -0.693_145_75 + x;
    let r = n * -1.428_606_8e-6 + r;
    // `shifted`'s low mantissa bits hold n (two's complement, |n| <= 127): adding the
    // bias and shifting gives 2^n's bits with integer ops only. `n as i32` would be a
    // saturating conversion, which LLVM leaves scalar, one lane at a time.
    let two_n = (shifted.to_bits().wrapping_add(127) & 0xff) << 23;
    (r, f32::from_bits(two_n))
}

/// Lanes of the partial sums below: a plain `iter().sum()` is a chain of dependent
/// scalar adds (float addition is not reassociated), sixteen running sums vectorise.
const LANES: usize = 16;

/// The sum of `f(v)` over `x`, added up in `LANES` interleaved partial sums.
#[inline(always)]
pub(super) fn lanes_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += f(v));
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest value of `x` (negative infinity when empty), in `LANES` partial maxima.
#[inline(always)]
pub(super) fn lanes_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a = if v > *a { v } else { *a });
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// Softmax of each row in place.
pub fn softmax_rows(x: &mut [f32], cols: usize) {
    vectorised(x, &Softmax { cols });
}

#[inline(always)]
fn softmax_loop(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        let max = lanes_max(row);
        row.iter_mut().for_each(|v| *v = exp(*v - max));
        let sum = lanes_sum(row, |v| v);
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_handles_transposed_and_offset_views() {
        // a = [[1,2],[3,4]], b^T stored as rows [[5,6],[7,8]] -> a * b = [[17,23],[39,53]].
        let a = [1.0, 2.0, 3.0, 4.0];
        let bt = [5.0, 6.0, 7.0, 8.0];
        let mut out = vec![0.0; 4];
        matmul(&mut out, 2, 2, 2, 2, View::rows(&a, 2), View::rows(&bt, 2).t(), 1.0, false);
        assert_eq!(out, [17.0, 23.0, 39.0, 53.0]);
        let lin = Linear::from_parts(bt.to_vec(), vec![1.0, -1.0], 2, 2);
        assert_eq!(lin.weight(), bt);
        assert_eq!(lin.forward(&a, 2), [18.0, 22.0, 40.0, 52.0]);
        // The second column of a 2x2 block inside a wider matrix.
        let wide = [0.0, 1.0, 9.0, 0.0, 2.0, 9.0];
        let mut col = vec![0.0; 1];
        matmul(&mut col, 1, 1, 1, 2, View::rows(&[1.0, 1.0], 2), View::rows(&wide, 3).at(0, 1), 1.0, false);
        assert_eq!(col, [3.0]);
    }

    #[test]
    fn fast_erf_and_exp_agree_with_libm() {
        let (mut worst_erf, mut worst_exp) = (0.0f32, 0.0f32);
        for i in -100_000..=100_000 {
            let x = i as f32 * 6e-5;
            worst_erf = worst_erf.max((erf(x) - libm::erff(x)).abs());
            let y = i as f32 * 8e-4;
            worst_exp = worst_exp.max(((exp(y) - libm::expf(y)) / libm::expf(y)).abs());
        }
        assert!(worst_erf < 5e-7, "erf error {worst_erf}");
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        let worst_coarse = (-100_000..=100_000).map(|i| i as f32 * 8e-4).map(|y| ((exp_for_bf16(y) - libm::expf(y)) / libm::expf(y)).abs()).fold(0.0f32, f32::max);
        assert!(worst_coarse < 6e-5, "exp_for_bf16 relative error {worst_coarse}");
    }

    #[test]
    fn softmax_and_gelu_match_closed_forms() {
        let mut x = vec![0.0, (2.0f32).ln()];
        softmax_rows(&mut x, 2);
        assert!((x[0] - 1.0 / 3.0).abs() < 1e-6 && (x[1] - 2.0 / 3.0).abs() < 1e-6);
        let mut g = vec![1.0f32];
        Activation::Gelu.apply(&mut g);
        assert!((g[0] - 0.841_344_7).abs() < 1e-6);
    }
}

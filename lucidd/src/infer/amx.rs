//! Dense layers and attention products in bf16 on Intel AMX (Sapphire Rapids and later),
//! for the CPU backend's bf16 precision (`CLASSIFIER_PRECISION` `auto` or `bf16`).
//!
//! f32 GEMM on two cores tops out near 350 GFLOP/s; AMX's tile unit multiplies bf16
//! pairs into f32 accumulators about eight times faster. Weights are converted and laid
//! out once at load in the tile unit's pair-interleaved ("VNNI") order; activations are
//! rounded to bf16 per call; sums stay f32. The cost is precision: bf16 keeps 8 bits of
//! mantissa, so outputs move by about 1e-2 against f32 (the tests bound it), which is why
//! `auto` checks each model on probe texts before it takes bf16.
//!
//! The instructions are written with `asm!` (Rust has no stable AMX intrinsics); the
//! kernel only ever reads and writes inside buffers whose sizes are checked first.

use std::arch::asm;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::ops::{exp_for_bf16, lanes_max, lanes_sum, Activation};

/// Rows, k-values and columns of one tile: a 16 x 32 bf16 operand, a 16 x 16 f32 sum.
const TILE_ROWS: usize = 16;
const TILE_K: usize = 32;
const TILE_COLS: usize = 16;
/// bf16 values in one operand tile.
const TILE_VALUES: usize = TILE_ROWS * TILE_K;

/// Whether this process can use AMX's bf16 tiles, or why not. Asked once: the answer
/// includes the kernel's permission for the process (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).
pub fn available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe).clone()
}

#[cfg(target_arch = "x86_64")]
fn probe() -> Result<(), String> {
    // Leaf 7 is read whatever the maximum leaf; its answer counts only where max >= 7.
    let (max, edx) = (std::arch::x86_64::__cpuid(0).eax, std::arch::x86_64::__cpuid_count(7, 0).edx);
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bf16");
    if max < 7 || edx & (1 << 24) == 0 || edx & (1 << 22) == 0 || !avx512 {
        return Err("this CPU has no AMX-BF16 tile unit (Intel Sapphire Rapids or later has one)".into());
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only asks the kernel for permission.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if r != 0 {
        return Err(format!("the kernel refused AMX tile state to this process: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn probe() -> Result<(), String> {
    Err("AMX is an x86-64 feature".into())
}

/// f32 to bf16, rounding to nearest even.
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `src` rounded to bf16 (to nearest even) into the start of `dst`, the rest of `dst`
/// zero (every caller pads that way), 32 values per `vcvtne2ps2bf16` (a scalar loop of
/// [`bf16`] left this a tenth of a pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
#[inline]
unsafe fn to_bf16_slice(dst: &mut [u16], src: &[f32]) {
    use std::arch::x86_64::{__m512bh, __m512i, _mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_storeu_si512};
    let n = src.len().min(dst.len());
    let (whole, rest) = (n / 32 * 32, n % 32);
    for (d, s) in dst[..whole].chunks_exact_mut(32).zip(src[..whole].chunks_exact(32)) {
        let (lo, hi) = (_mm512_loadu_ps(s.as_ptr()), _mm512_loadu_ps(s.as_ptr().add(16)));
        let b: __m512i = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(d.as_mut_ptr().cast(), b);
    }
    dst[whole..whole + rest].iter_mut().zip(&src[whole..whole + rest]).for_each(|(d, s)| *d = bf16(*s));
    dst[n..].iter_mut().for_each(|d| *d = 0);
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn to_bf16_slice(_: &mut [u16], _: &[f32]) {}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// A dense layer's weight in bf16, laid out tile by tile as the tile unit reads it.
pub struct Packed {
    /// Tiles, column block major: tile (cb, kb) at `(cb * kblocks + kb) * TILE_VALUES`.
    /// Within a tile, row r holds k-pairs 2r and 2r+1 of 16 output columns, interleaved.
    tiles: Vec<u16>,
    /// Output width.
    out: usize,
    /// Input width.
    inp: usize,
    /// Blocks of 32 input values (zero-padded).
    kblocks: usize,
    /// Blocks of 16 output columns, rounded up to an even count (a kernel step makes two).
    cblocks: usize,
}

impl Packed {
    /// Packs `W` (`[out, in]` row-major, as PyTorch stores it).
    pub fn new(w: &[f32], out: usize, inp: usize) -> Packed {
        let kblocks = inp.div_ceil(TILE_K);
        let cblocks = round_up(out.div_ceil(TILE_COLS), 2);
        let mut tiles = vec![0u16; cblocks * kblocks * TILE_VALUES];
        for (t, tile) in tiles.chunks_exact_mut(TILE_VALUES).enumerate() {
            let (cb, kb) = (t / kblocks, t % kblocks);
            for r in 0..TILE_ROWS {
                for c in 0..TILE_COLS {
                    for p in 0..2 {
                        let (col, k) = (cb * TILE_COLS + c, kb * TILE_K + 2 * r + p);
                        if col < out && k < inp {
                            tile[r * TILE_K + 2 * c + p] = bf16(w[col * inp + k]);
                        }
                    }
                }
            }
        }
        Packed { tiles, out, inp, kblocks, cblocks }
    }

    /// `y = act(x W^T + bias)` for `rows` rows of `x`, into `y` (resized to `rows * out`;
    /// a buffer reused across calls costs neither zeroing nor page faults). False, and
    /// `y` untouched, where AMX is not usable.
    pub fn forward_into(&self, x: &[f32], rows: usize, bias: &[f32], act: Option<Activation>, y: &mut Vec<f32>) -> bool {
        if available().is_err() || x.len() < rows * self.inp || bias.len() < self.out {
            return false;
        }
        with_scratch(|a| {
            self.activations(x, rows, a);
            self.rows_into(a, rows, bias, act, y);
        });
        true
    }

    /// `y = next(act(x W^T + bias))` (`next` with its own `next_bias`): the middle
    /// matrix goes from this layer's sums straight to bf16 in `next`'s tile order, in
    /// `mid`, and never exists in f32 (a transformer's FFN, whose middle is four times
    /// as wide as its ends). False, and `y` untouched, where AMX is not usable or the
    /// shapes do not chain.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_chain(&self, x: &[f32], rows: usize, bias: &[f32], act: Option<Activation>, next: &Packed, next_bias: &[f32], mid: &mut Vec<u16>, y: &mut Vec<f32>) -> bool {
        let chains = next.inp == self.out && next.kblocks == self.cblocks / 2;
        if available().is_err() || !chains || x.len() < rows * self.inp || bias.len() < self.out || next_bias.len() < next.out {
            return false;
        }
        with_scratch(|a| {
            self.activations(x, rows, a);
            mid.resize(round_up(rows.max(1), 2 * TILE_ROWS) * next.kblocks * TILE_K, 0);
            let kp = self.kblocks * TILE_K;
            let (a, pairs) = (&a[..], self.cblocks / 2);
            mid.par_chunks_mut(2 * TILE_ROWS * pairs * TILE_K).enumerate().for_each(|(t, m_rows)| {
                let a_rows = &a[t * 2 * TILE_ROWS * kp..(t + 1) * 2 * TILE_ROWS * kp];
                // SAFETY: as in `rows_into`; `m_rows` is one 32-row block of `pairs`
                // k-blocks in tile order.
                with_sums(pairs, |sums| unsafe { row_block(a_rows, kp, &self.tiles, self.kblocks, pairs, bias, act, self.out, sums, Dest::Tiles(m_rows)) });
            });
            next.rows_into(mid, rows, next_bias, None, y);
        });
        true
    }

    /// `x`'s `rows` rows (`inp` wide) in bf16, in tile order, into `a`: each block of 32
    /// rows is two 16-row tile rows, each of `kblocks` tiles of 1 KiB, so that every tile
    /// load reads one contiguous KiB. Rows past `rows` only feed sums that are dropped;
    /// the k padding must be zero, and a reused buffer may hold another layer's values.
    /// AMX is usable.
    fn activations(&self, x: &[f32], rows: usize, a: &mut Vec<u16>) {
        let kp = self.kblocks * TILE_K;
        a.resize(round_up(rows.max(1), 2 * TILE_ROWS) * kp, 0);
        let inp = self.inp;
        a.par_chunks_mut(2 * TILE_ROWS * kp).zip(x.par_chunks(2 * TILE_ROWS * inp)).for_each(|(dst, src)| {
            // SAFETY: `available()` found AMX and AVX-512 F/BW/VL/BF16.
            unsafe { to_bf16_tiles(dst, self.kblocks, src, inp) }
        });
    }

    /// `y = act(a W^T + bias)` in f32 rows, `a` as [`Packed::activations`] lays it out.
    /// One task per 32 output rows: it walks every column pair, so the whole weight
    /// stays in its core's L2 from one task to the next, then writes its rows of `y`:
    /// every value of y is written.
    fn rows_into(&self, a: &[u16], rows: usize, bias: &[f32], act: Option<Activation>, y: &mut Vec<f32>) {
        let kp = self.kblocks * TILE_K;
        y.resize(rows * self.out, 0.0);
        y.par_chunks_mut(2 * TILE_ROWS * self.out).enumerate().for_each(|(t, y_rows)| {
            let Some(a_rows) = a.get(t * 2 * TILE_ROWS * kp..(t + 1) * 2 * TILE_ROWS * kp) else { return };
            // SAFETY: `a_rows` holds 32 rows of kp values in tile order; `tiles` holds
            // cblocks x kblocks tiles with cblocks even; y_rows holds at most 32 rows of
            // `out`, and bias at least `out` values; the callers checked `available()`.
            let pairs = self.cblocks / 2;
            with_sums(pairs, |sums| unsafe { row_block(a_rows, kp, &self.tiles, self.kblocks, pairs, bias, act, self.out, sums, Dest::Rows(y_rows)) });
        });
    }
}

/// Runs `f` with this thread's buffer in `key`. A thread that reenters (a rayon worker
/// stealing another pass while it waits) finds its buffer in use and takes a fresh one
/// rather than panicking.
fn with_local<T>(key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>, f: impl FnOnce(&mut Vec<T>)) {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Runs `f` with this thread's bf16 activation buffer.
fn with_scratch(f: impl FnOnce(&mut Vec<u16>)) {
    with_local(&SCRATCH, f)
}

/// Where [`row_block`] puts its block of the product.
enum Dest<'a> {
    /// f32 rows of `out` values (at most 32 rows).
    Rows(&'a mut [f32]),
    /// 32 rows of bf16 in tile order, one k-block per column pair, as the next layer's
    /// activations (columns past `out` zero).
    Tiles(&'a mut [u16]),
}

thread_local! {
    /// Each calling thread's bf16 activations, kept between calls (the same shapes
    /// come back layer after layer; fresh buffers cost page faults).
    static SCRATCH: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each worker's f32 sums of one 32-row block, every column pair of it.
    static SUMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's sums buffer sized for 32 rows of `pairs` column pairs.
fn with_sums(pairs: usize, f: impl FnOnce(&mut [f32])) {
    with_local(&SUMS, |sums| {
        sums.resize(2 * TILE_ROWS * pairs * 2 * TILE_COLS, 0.0);
        f(sums)
    })
}

/// Up to 32 rows of `src` (`inp` wide) rounded to bf16 into `dst` in tile order: tile
/// (m, kb) (rows 16m..16m+16, values 32kb..32kb+32) at `(m * kblocks + kb) * 512`, the
/// k padding zero. Compiled for AVX-512 so the loop runs 16 lanes wide.
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
unsafe fn to_bf16_tiles(dst: &mut [u16], kblocks: usize, src: &[f32], inp: usize) {
    for (i, s) in src.chunks_exact(inp).enumerate().take(2 * TILE_ROWS) {
        let (m, r) = (i / TILE_ROWS, i % TILE_ROWS);
        for kb in 0..kblocks {
            let Some(d) = dst.get_mut(((m * kblocks + kb) * TILE_ROWS + r) * TILE_K..).and_then(|d| d.get_mut(..TILE_K)) else { return };
            let from = (kb * TILE_K).min(inp);
            let vals = &s[from..(from + TILE_K).min(inp)];
            to_bf16_slice(d, vals);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn to_bf16_tiles(_: &mut [u16], _: usize, _: &[f32], _: usize) {}

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn new() -> TileConfig {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        let mut t = 0;
        while t < 8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = TILE_ROWS as u8;
            t += 1;
        }
        TileConfig(cfg)
    }
}

static CONFIG: TileConfig = TileConfig::new();

/// `dest = act(a_rows W^T + bias)` for one block of (up to) 32 rows. The tile unit
/// runs over every pair of 16-column blocks first (tiles 0-3 holding the 2 x 2 sums, 4-5
/// the activation rows, 6-7 the weight columns), storing its sums in `sums`; then bias,
/// activation and, for `Tiles`, the rounding to bf16 go row by row over whole rows.
///
/// # Safety
/// AMX and AVX-512 F/BW/VL/BF16 must be usable by this process; `a_rows` must hold 32 rows of
/// `kp` values in tile order (see [`to_bf16_tiles`]), `tiles` the `2 * pairs * kblocks`
/// weight tiles, `bias` at least `out` values, `sums` 32 rows of `pairs * 32`, and
/// `2 * pairs * 16 >= out`; `dest` holds at most 32 rows of `out` (Rows) or 32 rows of
/// `pairs` k-blocks (Tiles).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn row_block(a_rows: &[u16], kp: usize, tiles: &[u16], kblocks: usize, pairs: usize, bias: &[f32], act: Option<Activation>, out: usize, sums: &mut [f32], mut dest: Dest) {
    const W: usize = 2 * TILE_COLS;
    let width = pairs * W;
    debug_assert!(a_rows.len() >= 2 * TILE_ROWS * kp && tiles.len() >= 2 * pairs * kblocks * TILE_VALUES && bias.len() >= out && sums.len() >= 2 * TILE_ROWS * width);
    let (c_stride, tile_stride) = (width * 4, TILE_K * 2);
    let a0 = a_rows.as_ptr();
    let a1 = a0.add(kblocks * TILE_VALUES);
    asm!("ldtilecfg [{cfg}]", cfg = in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    for pair in 0..pairs {
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        let b0 = tiles.as_ptr().add(2 * pair * kblocks * TILE_VALUES);
        let b1 = b0.add(kblocks * TILE_VALUES);
        for kb in 0..kblocks {
            asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0.add(kb * TILE_VALUES),
                a1 = in(reg) a1.add(kb * TILE_VALUES),
                b0 = in(reg) b0.add(kb * TILE_VALUES),
                b1 = in(reg) b1.add(kb * TILE_VALUES),
                s = in(reg) tile_stride,
                options(nostack, readonly),
            );
        }
        let c = sums.as_mut_ptr().add(pair * W);
        asm!(
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c1} + {sc}*1], tmm1",
            "tilestored [{c2} + {sc}*1], tmm2",
            "tilestored [{c3} + {sc}*1], tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(TILE_COLS),
            c2 = in(reg) c.add(TILE_ROWS * width),
            c3 = in(reg) c.add(TILE_ROWS * width + TILE_COLS),
            sc = in(reg) c_stride,
            options(nostack),
        );
    }
    asm!("tilerelease", options(nostack, nomem));
    match &mut dest {
        Dest::Rows(y_rows) => {
            for (y, s) in y_rows.chunks_exact_mut(out).zip(sums.chunks_exact(width)) {
                y.iter_mut().zip(&s[..out]).zip(&bias[..out]).for_each(|((y, s), b)| *y = s + b);
                if let Some(act) = act {
                    act.apply_scalar(y);
                }
            }
        }
        Dest::Tiles(t) => {
            for (i, s) in sums.chunks_exact_mut(width).enumerate() {
                s[..out].iter_mut().zip(&bias[..out]).for_each(|(s, b)| *s += b);
                s[out..].iter_mut().for_each(|s| *s = 0.0);
                if let Some(act) = act {
                    act.apply_scalar(&mut s[..out]);
                }
                let (m, r) = (i / TILE_ROWS, i % TILE_ROWS);
                for (pair, v) in s.chunks_exact(W).enumerate() {
                    if let Some(d) = t.get_mut(((m * pairs + pair) * TILE_ROWS + r) * TILE_K..).and_then(|d| d.get_mut(..TILE_K)) {
                        to_bf16_slice(d, v);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn row_block(_: &[u16], _: usize, _: &[u16], _: usize, _: usize, _: &[f32], _: Option<Activation>, _: usize, _: &mut [f32], _: Dest) {}

/// A right-hand operand made per call (attention's `K^T` and `V`), in the same tile
/// order as [`Packed`]'s weights.
#[derive(Default)]
pub struct Operand {
    tiles: Vec<u16>,
    kblocks: usize,
    cblocks: usize,
}

impl Operand {
    /// `B = M^T` for the `n x k` matrix `M` whose row `i` is `src[i * stride..][..k]`
    /// (attention's keys: `B[kk][c]` is key `c`'s value `kk`). All zero where AMX is not
    /// usable (a product then refuses it anyway) or `src` is too short.
    pub fn transposed(src: &[f32], stride: usize, n: usize, k: usize) -> Operand {
        let mut b = Operand::sized(k, n);
        if n > 0 && k > 0 && (n - 1) * stride + k <= src.len() && available().is_ok() {
            // SAFETY: AMX, hence AVX-512 F/BW/VL/BF16, is usable; `src`'s extent was checked.
            unsafe { b.fill_transposed(src, stride, n, k) };
        }
        b
    }

    /// `B = M` for the `k x n` matrix `M` whose row `i` is `src[i * stride..][..n]`
    /// (attention's values: `B[kk][c]` is value `c` of token `kk`). All zero where AMX
    /// is not usable or `src` is too short.
    pub fn rows(src: &[f32], stride: usize, k: usize, n: usize) -> Operand {
        let mut b = Operand::sized(k, n);
        if n > 0 && k > 0 && (k - 1) * stride + n <= src.len() && available().is_ok() {
            // SAFETY: as in `transposed`.
            unsafe { b.fill_rows(src, stride, k, n) };
        }
        b
    }

    fn sized(k: usize, n: usize) -> Operand {
        let (kblocks, cblocks) = (k.div_ceil(TILE_K), n.div_ceil(TILE_COLS));
        Operand { tiles: vec![0; kblocks * cblocks * TILE_VALUES], kblocks, cblocks }
    }

    /// Each row of `M` rounded to bf16 32 values at a time; its value pairs are the
    /// pairs of one column of the tiles.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/BF16 must be usable; `src` holds `n` rows of `k` at `stride`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
    unsafe fn fill_transposed(&mut self, src: &[f32], stride: usize, n: usize, k: usize) {
        let mut pairs = [0u16; TILE_K];
        for c in 0..n {
            let (cb, col) = (c / TILE_COLS, c % TILE_COLS);
            let row = &src[c * stride..c * stride + k];
            for kb in 0..self.kblocks {
                let vals = &row[kb * TILE_K..((kb + 1) * TILE_K).min(k)];
                to_bf16_slice(&mut pairs, vals);
                let tile = &mut self.tiles[(cb * self.kblocks + kb) * TILE_VALUES..][..TILE_VALUES];
                for (r, pair) in pairs.chunks_exact(2).enumerate() {
                    tile[r * TILE_K + 2 * col..r * TILE_K + 2 * col + 2].copy_from_slice(pair);
                }
            }
        }
    }

    /// Rows of `M` two at a time (a tile row holds a pair of them): both rounded to
    /// bf16, then each 16-column block of the two interleaved by one permute.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/BF16 must be usable; `src` holds `k` rows of `n` at `stride`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
    unsafe fn fill_rows(&mut self, src: &[f32], stride: usize, k: usize, n: usize) {
        use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_castsi256_si512, _mm512_inserti64x4, _mm512_loadu_si512, _mm512_permutexvar_epi16, _mm512_storeu_si512};
        // Lane 2c takes value c of the first row, lane 2c + 1 value c of the second.
        const INTERLEAVE: [u16; 32] = {
            let mut idx = [0u16; 32];
            let mut c = 0;
            while c < 16 {
                idx[2 * c] = c as u16;
                idx[2 * c + 1] = 16 + c as u16;
                c += 1;
            }
            idx
        };
        let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
        let width = self.cblocks * TILE_COLS;
        let (mut first, mut second) = (vec![0u16; width], vec![0u16; width]);
        for kk in (0..k).step_by(2) {
            let (kb, r) = (kk / TILE_K, (kk % TILE_K) / 2);
            to_bf16_slice(&mut first, &src[kk * stride..kk * stride + n]);
            match kk + 1 < k {
                true => to_bf16_slice(&mut second, &src[(kk + 1) * stride..(kk + 1) * stride + n]),
                false => to_bf16_slice(&mut second, &[]),
            }
            for cb in 0..self.cblocks {
                let pair = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(first[cb * TILE_COLS..].as_ptr().cast::<__m256i>())),
                    _mm256_loadu_si256(second[cb * TILE_COLS..].as_ptr().cast::<__m256i>()),
                );
                let row = &mut self.tiles[(cb * self.kblocks + kb) * TILE_VALUES + r * TILE_K..][..TILE_K];
                _mm512_storeu_si512(row.as_mut_ptr().cast(), _mm512_permutexvar_epi16(idx, pair));
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn fill_transposed(&mut self, _: &[f32], _: usize, _: usize, _: usize) {}

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn fill_rows(&mut self, _: &[f32], _: usize, _: usize, _: usize) {}

    /// Padded width of the product (`n` rounded up to 16).
    pub fn cols(&self) -> usize {
        self.cblocks * TILE_COLS
    }

    /// Padded depth (`k` rounded up to 32): the width `A`'s rows must have.
    pub fn depth(&self) -> usize {
        self.kblocks * TILE_K
    }
}

/// `rows` rows of `cols` values, row `i` at `src[i * stride..]`, rounded to bf16 into
/// rows of `dst` (`dst_stride` wide, the rest of each row zero). Returns false (and
/// writes nothing) where AMX is not usable or the buffers are too small.
pub fn to_bf16(dst: &mut [u16], dst_stride: usize, src: &[f32], stride: usize, rows: usize, cols: usize) -> bool {
    let fits = rows == 0 || (cols <= dst_stride && rows * dst_stride <= dst.len() && (rows - 1) * stride + cols <= src.len());
    if available().is_err() || !fits {
        return false;
    }
    // SAFETY: AMX (hence AVX-512 F/BW/VL/BF16) is usable.
    unsafe { strided_to_bf16(dst, dst_stride, src, stride, rows, cols) };
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
unsafe fn strided_to_bf16(dst: &mut [u16], dst_stride: usize, src: &[f32], stride: usize, rows: usize, cols: usize) {
    for (i, d) in dst.chunks_exact_mut(dst_stride).take(rows).enumerate() {
        to_bf16_slice(d, &src[i * stride..i * stride + cols]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn strided_to_bf16(_: &mut [u16], _: usize, _: &[f32], _: usize, _: usize, _: usize) {}

/// Longest row [`softmax_to_bf16`] takes (models take 512 tokens at most).
pub const MAX_KEYS: usize = 1024;

/// Attention probabilities: for each of `rows` rows of `scores` (`s_stride` apart), the
/// softmax of its first `len` values times `scale`, rounded to bf16 into the same row
/// of `dst` (`d_stride` apart; values past `len` zero). Returns false (and writes
/// nothing) where AMX is not usable or the buffers are too small.
pub fn softmax_to_bf16(dst: &mut [u16], d_stride: usize, scores: &[f32], s_stride: usize, rows: usize, len: usize, scale: f32) -> bool {
    let fits = rows == 0 || (len <= MAX_KEYS && len <= d_stride && len <= s_stride && rows * d_stride <= dst.len() && (rows - 1) * s_stride + len <= scores.len());
    if available().is_err() || !fits {
        return false;
    }
    // SAFETY: AMX (hence AVX-512 F/BW/VL/BF16) is usable.
    unsafe { softmax_rows_to_bf16(dst, d_stride, scores, s_stride, rows, len, scale) };
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
unsafe fn softmax_rows_to_bf16(dst: &mut [u16], d_stride: usize, scores: &[f32], s_stride: usize, rows: usize, len: usize, scale: f32) {
    let mut e = [0.0f32; MAX_KEYS];
    for (i, d) in dst.chunks_exact_mut(d_stride).take(rows).enumerate() {
        let s = &scores[i * s_stride..i * s_stride + len];
        let e = match e.get_mut(..len) {
            Some(e) => e,
            None => return,
        };
        let max = lanes_max(s);
        e.iter_mut().zip(s).for_each(|(e, s)| *e = exp_for_bf16((s - max) * scale));
        let inv = 1.0 / lanes_sum(e, |v| v);
        e.iter_mut().for_each(|e| *e *= inv);
        to_bf16_slice(d, e);
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn softmax_rows_to_bf16(_: &mut [u16], _: usize, _: &[f32], _: usize, _: usize, _: usize, _: f32) {}

/// `c = A B` for `m_tiles * 16` rows of `A` (bf16, `b.depth()` values per row at
/// `a_stride`) into `c` (f32, `b.cols()` values per row at `c_stride`), one output tile
/// at a time. Returns false (and computes nothing) where AMX is not usable or the
/// buffers are too small.
pub fn product(a: &[u16], a_stride: usize, m_tiles: usize, b: &Operand, c: &mut [f32], c_stride: usize) -> bool {
    let rows = m_tiles * TILE_ROWS;
    let fits = rows == 0
        || (a_stride >= b.depth() && (rows - 1) * a_stride + b.depth() <= a.len() && c_stride >= b.cols() && (rows - 1) * c_stride + b.cols() <= c.len());
    if available().is_err() || !fits {
        return false;
    }
    // SAFETY: AMX is usable; the extents of a, b's tiles and c were checked above.
    unsafe { tile_product(a.as_ptr(), a_stride, m_tiles, b, c.as_mut_ptr(), c_stride) };
    true
}

/// # Safety
/// AMX must be usable; `a` must hold `m_tiles * 16` rows of `b.depth()` bf16 values at
/// `a_stride`, and `c` as many rows of `b.cols()` f32 values at `c_stride`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
unsafe fn tile_product(a: *const u16, a_stride: usize, m_tiles: usize, b: &Operand, c: *mut f32, c_stride: usize) {
    asm!("ldtilecfg [{cfg}]", cfg = in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    for mt in 0..m_tiles {
        let a_rows = a.add(mt * TILE_ROWS * a_stride);
        for cb in 0..b.cblocks {
            asm!("tilezero tmm0", options(nostack, nomem));
            let tiles = b.tiles.as_ptr().add(cb * b.kblocks * TILE_VALUES);
            for kb in 0..b.kblocks {
                asm!(
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm6, [{b} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    a = in(reg) a_rows.add(kb * TILE_K),
                    b = in(reg) tiles.add(kb * TILE_VALUES),
                    sa = in(reg) a_stride * 2,
                    sb = in(reg) TILE_K * 2,
                    options(nostack, readonly),
                );
            }
            asm!(
                "tilestored [{c} + {sc}*1], tmm0",
                c = in(reg) c.add(mt * TILE_ROWS * c_stride + cb * TILE_COLS),
                sc = in(reg) c_stride * 4,
                options(nostack),
            );
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_product(_: *const u16, _: usize, _: usize, _: &Operand, _: *mut f32, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether AMX is usable; where not, says the test is skipped and why.
    fn amx_or_skip() -> bool {
        let test = std::thread::current().name().unwrap_or("an AMX test").to_string();
        available().map_err(|why| crate::test_support::skip(&test, &format!("no AMX: {why}"))).is_ok()
    }

    /// `Packed::forward_into` into a fresh vector (empty where AMX refused).
    fn forward(p: &Packed, x: &[f32], rows: usize, bias: &[f32]) -> Vec<f32> {
        let mut y = Vec::new();
        p.forward_into(x, rows, bias, None, &mut y);
        y
    }

    /// Values in [-0.5, 0.5) from a linear congruential sequence seeded with `seed`.
    fn uniform(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    /// Against an f64 product of the same bf16-rounded inputs: only summation order and
    /// f32 accumulation may differ. Odd sizes exercise every padding path.
    #[test]
    fn products_match_a_reference_on_bf16_inputs() {
        if !amx_or_skip() {
            return;
        }
        let (rows, out, inp) = (37, 50, 70);
        let mut rnd = uniform(1);
        let w: Vec<f32> = (0..out * inp).map(|_| rnd()).collect();
        let x: Vec<f32> = (0..rows * inp).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..out).map(|_| rnd()).collect();
        let y = forward(&Packed::new(&w, out, inp), &x, rows, &bias);
        assert_eq!(y.len(), rows * out);
        let round = |v: f32| f32::from_bits((bf16(v) as u32) << 16) as f64;
        for i in 0..rows {
            for j in 0..out {
                let want: f64 = (0..inp).map(|k| round(x[i * inp + k]) * round(w[j * inp + k])).sum::<f64>() + bias[j] as f64;
                assert!((y[i * out + j] as f64 - want).abs() < 1e-4, "({i}, {j}): {} vs {want}", y[i * out + j]);
            }
        }
    }

    /// Two layers chained through bf16 tiles give exactly what the second layer gives on
    /// the first one's f32 output (which it rounds to bf16 the same way), for widths
    /// that are not whole tiles.
    #[test]
    fn chained_layers_equal_two_separate_passes() {
        if !amx_or_skip() {
            return;
        }
        let (rows, inp, mid, out) = (45, 40, 50, 24);
        let value = |i: usize, m: usize| ((i * m) % 997) as f32 / 997.0 - 0.5;
        let (first, second) = (Packed::new(&(0..mid * inp).map(|i| value(i, 7919)).collect::<Vec<_>>(), mid, inp), Packed::new(&(0..out * mid).map(|i| value(i, 104_729)).collect::<Vec<_>>(), out, mid));
        let x: Vec<f32> = (0..rows * inp).map(|i| value(i, 31) * 3.0).collect();
        let (b1, b2): (Vec<f32>, Vec<f32>) = ((0..mid).map(|i| value(i, 13)).collect(), (0..out).map(|i| value(i, 17)).collect());
        let act = Some(Activation::Gelu);
        let (mut h, mut want, mut got, mut tiles) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        assert!(first.forward_into(&x, rows, &b1, act, &mut h) && second.forward_into(&h, rows, &b2, None, &mut want));
        assert!(first.forward_chain(&x, rows, &b1, act, &second, &b2, &mut tiles, &mut got));
        assert_eq!(got.len(), rows * out);
        assert!(got == want, "chained and separate passes differ");
        // Layers whose shapes do not chain are refused.
        assert!(!second.forward_chain(&h, rows, &b2, None, &first, &b1, &mut tiles, &mut got));
    }

    /// Passes started from rayon workers (which steal each other's work while they wait,
    /// and so may reenter a pass on the same thread) give the same sums as one alone.
    #[test]
    fn passes_from_rayon_workers_agree_with_a_lone_pass() {
        if !amx_or_skip() {
            return;
        }
        let (rows, out, inp) = (200, 96, 64);
        let w: Vec<f32> = (0..out * inp).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let x: Vec<f32> = (0..rows * inp).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let p = Packed::new(&w, out, inp);
        let bias = vec![0.25f32; out];
        let alone = forward(&p, &x, rows, &bias);
        assert_eq!(alone.len(), rows * out);
        let nested: Vec<Vec<f32>> = (0..16).into_par_iter().map(|_| forward(&p, &x, rows, &bias)).collect();
        assert!(nested.iter().all(|y| *y == alone));
    }

    /// Attention's pieces against f64 on the same bf16-rounded inputs: `Q K^T` through a
    /// transposed operand, softmax rounded to bf16, then `P V` through a row operand, at
    /// sizes that leave every kind of padding (rows, keys, head width).
    #[test]
    fn attention_products_match_a_reference_on_bf16_inputs() {
        if !amx_or_skip() {
            return;
        }
        let (len, d, stride) = (37, 24, 100);
        let mut rnd = uniform(7);
        // q, k and v of one head, rows `stride` apart as in a packed qkv matrix.
        let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = ((0..len * stride).map(|_| rnd() * 4.0).collect(), (0..len * stride).map(|_| rnd() * 4.0).collect(), (0..len * stride).map(|_| rnd()).collect());
        let round = |x: f32| f32::from_bits((bf16(x) as u32) << 16) as f64;
        let (kt, vo) = (Operand::transposed(&k, stride, len, d), Operand::rows(&v, stride, len, d));
        assert_eq!((kt.depth(), kt.cols(), vo.depth(), vo.cols()), (32, 48, 64, 32));
        let m_tiles = len.div_ceil(16);
        let mut qb = vec![0u16; m_tiles * 16 * kt.depth()];
        assert!(to_bf16(&mut qb, kt.depth(), &q, stride, len, d));
        let mut scores = vec![0.0f32; m_tiles * 16 * kt.cols()];
        assert!(product(&qb, kt.depth(), m_tiles, &kt, &mut scores, kt.cols()));
        let scale = 0.3f32;
        let mut p = vec![0u16; m_tiles * 16 * vo.depth()];
        assert!(softmax_to_bf16(&mut p, vo.depth(), &scores, kt.cols(), len, len, scale));
        let mut out = vec![0.0f32; m_tiles * 16 * vo.cols()];
        assert!(product(&p, vo.depth(), m_tiles, &vo, &mut out, vo.cols()));
        for i in 0..len {
            let want: Vec<f64> = (0..len).map(|j| (0..d).map(|c| round(q[i * stride + c]) * round(k[j * stride + c])).sum()).collect();
            for (j, w) in want.iter().enumerate() {
                assert!((scores[i * kt.cols() + j] as f64 - w).abs() < 1e-3, "score ({i}, {j})");
            }
            let max = want.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = want.iter().map(|w| ((w - max) * scale as f64).exp()).collect();
            let sum: f64 = e.iter().sum();
            for j in 0..len {
                let got = f32::from_bits((p[i * vo.depth() + j] as u32) << 16) as f64;
                assert!((got - e[j] / sum).abs() <= (e[j] / sum) * 8e-3 + 1e-6, "probability ({i}, {j})");
            }
            assert!(p[i * vo.depth() + len..(i + 1) * vo.depth()].iter().all(|&x| x == 0), "key padding must be zero");
            for c in 0..d {
                let want: f64 = (0..len).map(|j| f32::from_bits((p[i * vo.depth() + j] as u32) << 16) as f64 * round(v[j * stride + c])).sum();
                assert!((out[i * vo.cols() + c] as f64 - want).abs() < 1e-4, "context ({i}, {c})");
            }
        }
        // Buffers too small for the shapes are refused, not overrun.
        assert!(!product(&qb[..10], kt.depth(), m_tiles, &kt, &mut scores, kt.cols()));
        assert!(!softmax_to_bf16(&mut p[..10], vo.depth(), &scores, kt.cols(), len, len, scale));
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        assert_eq!(bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    }
}

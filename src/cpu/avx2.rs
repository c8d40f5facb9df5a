//! AVX2 + FMA fast paths for the f32 kernels (x86_64 only; selected at run time by
//! [`super::simd_available`]).
//!
//! Contract: every function here returns *bitwise* the same values as the scalar reference in
//! its sibling file instantiated at f32. The SIMD code computes many independent chains side by
//! side — one per lane or register — and never reassociates a chain:
//! - linear ops: each output element is one sequential FMA chain (`acc = fma(a, b, acc)`), the
//!   lanes of a register hold *different* output elements;
//! - elementwise ops (`gelu`, `time_features`): lane i runs the operation sequence of
//!   [`super::math`] on element i; tails (< 8 elements) call the scalar code itself;
//! - `sum`/`logsumexp`: the 8-lane order of [`super::reduce`] is one ymm accumulator.
//!
//! Safety contract of every `unsafe fn` here: the caller has checked that the CPU supports AVX2
//! and FMA (`simd_available()`) and that the slices have the documented shapes (the safe wrappers
//! in `super::simd` assert both).

#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::gelu::{
    gelu_backward_ref, gelu_forward_deriv_ref, gelu_forward_ref, FRAC_1_SQRT_2, FRAC_1_SQRT_2PI,
};
use super::layer_norm::{row_mean, row_rstd};
use super::math::*;
use super::reduce::{gt_select, logsumexp_special};

// =============================================================================================
// 8-wide elementary functions (lane-for-lane twins of super::math)
// =============================================================================================
//
// Each function takes N independent ymm vectors and runs every step on all N before the next
// step (`each!`), which shortens the dependency chains the out-of-order core must overlap
// (erf → exp is ~30 dependent ops). Interleaving changes no lane's operations. Measured on the
// Zen 4 dev box the kernels are bound by FP-pipe throughput (~65 vector ops per 8 GELU
// elements), so N = 1, 2, 4 are within ±10 % of each other; INTERLEAVE = 2 was the best overall.

/// `[f(0), f(1), …, f(N−1)]` for a body using the index `i` (a plain loop, unrolled by LLVM).
macro_rules! each {
    ($n:expr, $i:ident => $body:expr) => {{
        let mut out = [_mm256_setzero_ps(); $n];
        for ($i, o) in out.iter_mut().enumerate() {
            *o = $body;
        }
        out
    }};
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

/// Round to nearest integer, ties to even (`f32::round_ties_even` per lane; exact).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn round_even(v: __m256) -> __m256 {
    _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
}

/// Vectors processed side by side by the elementwise kernels (see `each!`).
const INTERLEAVE: usize = 2;

/// Bit-level reinterpretation (free).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn as_ps(v: __m256i) -> __m256 {
    _mm256_castsi256_ps(v)
}

/// The splatted constants of the vector math, built once per kernel call and passed through
/// `black_box`. With ~40 distinct constants and 16 ymm registers, LLVM would otherwise
/// re-materialise each splat constant with a `vbroadcastss` per use (measured: 43 broadcasts
/// per 16 GELU elements, each taking an FP-pipe slot on Zen); opaque values are instead kept in
/// registers or read as folded memory operands of the FMAs. Values are the f32 constants of
/// `super::math` / `super::gelu`, so results are unchanged.
#[derive(Clone, Copy)]
struct VConsts {
    one: __m256,
    half: __m256,
    sign: __m256,
    exp_lo: __m256,
    exp_hi: __m256,
    log2e: __m256,
    ln2_hi: __m256,
    ln2_lo: __m256,
    exp_p: [__m256; 6],
    bias127: __m256i,
    erf_a: [__m256; 6],
    erf_b: [__m256; 7],
    erf_clamp: __m256,
    erf_split: __m256,
    frac_2_pi: __m256,
    pio2: [__m256; 3],
    sin_p: [__m256; 3],
    cos_p: [__m256; 3],
    one_i: __m256i,
    two_i: __m256i,
    frac_1_sqrt_2: __m256,
    neg_half: __m256,
    frac_1_sqrt_2pi: __m256,
}

impl VConsts {
    /// The constants, opaque to the optimizer (see the type's docs).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn new() -> Self {
        std::hint::black_box(VConsts {
            one: splat(1.0),
            half: splat(0.5),
            sign: splat(-0.0),
            exp_lo: splat(EXP_LO),
            exp_hi: splat(EXP_HI),
            log2e: splat(LOG2E),
            ln2_hi: splat(LN2_HI),
            ln2_lo: splat(LN2_LO),
            exp_p: EXP_P.map(|c| splat(c)),
            bias127: _mm256_set1_epi32(127),
            erf_a: ERF_A.map(|c| splat(c)),
            erf_b: ERF_B.map(|c| splat(c)),
            erf_clamp: splat(ERF_CLAMP),
            erf_split: splat(ERF_SPLIT),
            frac_2_pi: splat(FRAC_2_PI),
            pio2: [splat(PIO2_1), splat(PIO2_2), splat(PIO2_3)],
            sin_p: SIN_P.map(|c| splat(c)),
            cos_p: COS_P.map(|c| splat(c)),
            one_i: _mm256_set1_epi32(1),
            two_i: _mm256_set1_epi32(2),
            frac_1_sqrt_2: splat(FRAC_1_SQRT_2 as f32),
            neg_half: splat(-0.5),
            frac_1_sqrt_2pi: splat(FRAC_1_SQRT_2PI as f32),
        })
    }
}

/// `exp_reduce` on N×8 lanes: returns (n, y).
///
/// # Safety
/// AVX2+FMA must be available. Force-inlined (not `#[target_feature]`, which forbids
/// `inline(always)`) so that the interleaved N-vector body lands in the calling
/// `#[target_feature(enable = "avx2,fma")]` function: an out-of-line call would pass the arrays
/// through memory. (The same holds for `exp8`, `erf8`, `sin_cos8`.)
#[inline(always)]
unsafe fn exp_reduce8<const N: usize>(k: &VConsts, x: [__m256; N]) -> ([__m256; N], [__m256; N]) {
    // SAFETY: AVX2+FMA per the contract; no memory is accessed.
    unsafe {
        let n = each!(N, i => round_even(_mm256_mul_ps(x[i], k.log2e)));
        let r = each!(N, i => _mm256_fnmadd_ps(n[i], k.ln2_hi, x[i]));
        let r = each!(N, i => _mm256_fnmadd_ps(n[i], k.ln2_lo, r[i]));
        let mut p = [k.exp_p[0]; N];
        for &c in &k.exp_p[1..] {
            p = each!(N, i => _mm256_fmadd_ps(p[i], r[i], c));
        }
        (
            n,
            each!(N, i => {
                let z = _mm256_mul_ps(r[i], r[i]);
                _mm256_add_ps(_mm256_fmadd_ps(p[i], z, r[i]), k.one)
            }),
        )
    }
}

/// `exp_f32` on N×8 lanes (same operations, same order).
///
/// # Safety
/// AVX2+FMA must be available (see `exp_reduce8`).
#[inline(always)]
unsafe fn exp8<const N: usize>(k: &VConsts, x: [__m256; N]) -> [__m256; N] {
    // SAFETY: AVX2+FMA per the contract; no memory is accessed.
    unsafe {
        let x = each!(N, i => _mm256_min_ps(k.exp_hi, _mm256_max_ps(k.exp_lo, x[i])));
        let (n, y) = exp_reduce8(k, x);
        let bias = k.bias127;
        each!(N, i => {
            let ni = _mm256_cvttps_epi32(n[i]);
            let n1 = _mm256_srai_epi32::<1>(ni);
            let n2 = _mm256_sub_epi32(ni, n1);
            let s1 = as_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
            let s2 = as_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
            _mm256_mul_ps(_mm256_mul_ps(y[i], s1), s2)
        })
    }
}

/// `exp_f32_moderate` on N×8 lanes (x ∈ [−87, 0]; no clamp, one scaling).
///
/// # Safety
/// AVX2+FMA must be available (see `exp_reduce8`).
#[inline(always)]
unsafe fn exp8_moderate<const N: usize>(k: &VConsts, x: [__m256; N]) -> [__m256; N] {
    // SAFETY: AVX2+FMA per the contract; no memory is accessed.
    unsafe {
        let (n, y) = exp_reduce8(k, x);
        let bias = k.bias127;
        each!(N, i => {
            let biased = _mm256_add_epi32(_mm256_cvttps_epi32(n[i]), bias);
            _mm256_mul_ps(y[i], as_ps(_mm256_slli_epi32::<23>(biased)))
        })
    }
}

/// `erf_f32` on N×8 lanes: both branches are evaluated, `|x| > ERF_SPLIT` selects.
///
/// # Safety
/// AVX2+FMA must be available (see `exp_reduce8`).
#[inline(always)]
unsafe fn erf8<const N: usize>(k: &VConsts, x: [__m256; N]) -> [__m256; N] {
    // SAFETY: AVX2+FMA per the contract; no memory is accessed.
    unsafe {
        let sign = k.sign;
        let t = each!(N, i => _mm256_andnot_ps(sign, x[i]));
        // small branch: x + x·P(x²)   (erf_small)
        let s = each!(N, i => _mm256_mul_ps(x[i], x[i]));
        let mut r = [k.erf_a[5]; N];
        for &c in k.erf_a[..5].iter().rev() {
            r = each!(N, i => _mm256_fmadd_ps(r[i], s[i], c));
        }
        let small = each!(N, i => _mm256_fmadd_ps(r[i], x[i], x[i]));
        // large branch: 1 − exp(−Q(min(t, 4)))   (erf_large_abs), then copysign
        let tl = each!(N, i => _mm256_min_ps(t[i], k.erf_clamp));
        let s = each!(N, i => _mm256_mul_ps(tl[i], tl[i]));
        let r = each!(N, i => _mm256_fmadd_ps(k.erf_b[6], tl[i], k.erf_b[5]));
        let u = each!(N, i => _mm256_fmadd_ps(k.erf_b[4], tl[i], k.erf_b[3]));
        let mut r = each!(N, i => _mm256_fmadd_ps(r[i], s[i], u[i]));
        for &c in k.erf_b[..3].iter().rev() {
            r = each!(N, i => _mm256_fmadd_ps(r[i], tl[i], c));
        }
        let r = each!(N, i => _mm256_xor_ps(_mm256_fmadd_ps(r[i], tl[i], tl[i]), sign));
        let e = exp8_moderate(k, r);
        each!(N, i => {
            // 1 − e ≥ 0, so or-ing in the sign of x is copysign (as in erf_f32)
            let large = _mm256_or_ps(_mm256_sub_ps(k.one, e[i]), _mm256_and_ps(x[i], sign));
            let is_large = _mm256_cmp_ps::<_CMP_GT_OQ>(t[i], k.erf_split);
            _mm256_blendv_ps(small[i], large, is_large)
        })
    }
}

/// `sin_cos_f32` on N×8 lanes: returns (sin, cos).
///
/// # Safety
/// AVX2+FMA must be available (see `exp_reduce8`).
#[inline(always)]
unsafe fn sin_cos8<const N: usize>(k: &VConsts, x: [__m256; N]) -> ([__m256; N], [__m256; N]) {
    // SAFETY: AVX2+FMA per the contract; no memory is accessed.
    unsafe {
        let q = each!(N, i => round_even(_mm256_mul_ps(x[i], k.frac_2_pi)));
        let r = each!(N, i => _mm256_fnmadd_ps(q[i], k.pio2[0], x[i]));
        let r = each!(N, i => _mm256_fnmadd_ps(q[i], k.pio2[1], r[i]));
        let r = each!(N, i => _mm256_fnmadd_ps(q[i], k.pio2[2], r[i]));
        let z = each!(N, i => _mm256_mul_ps(r[i], r[i]));
        let ps = each!(N, i => {
            let p = _mm256_fmadd_ps(k.sin_p[0], z[i], k.sin_p[1]);
            _mm256_fmadd_ps(p, z[i], k.sin_p[2])
        });
        let pc = each!(N, i => {
            let p = _mm256_fmadd_ps(k.cos_p[0], z[i], k.cos_p[1]);
            _mm256_fmadd_ps(p, z[i], k.cos_p[2])
        });
        let s = each!(N, i => _mm256_fmadd_ps(_mm256_mul_ps(ps[i], z[i]), r[i], r[i]));
        let c = each!(N, i => {
            let one_minus_half_z = _mm256_fnmadd_ps(k.half, z[i], k.one);
            _mm256_fmadd_ps(_mm256_mul_ps(pc[i], z[i]), z[i], one_minus_half_z)
        });
        let (one, two) = (k.one_i, k.two_i);
        let mut sin = [_mm256_setzero_ps(); N];
        let mut cos = [_mm256_setzero_ps(); N];
        for i in 0..N {
            let j = _mm256_cvttps_epi32(q[i]);
            let swap = as_ps(_mm256_cmpeq_epi32(_mm256_and_si256(j, one), one));
            let sin_sign = as_ps(_mm256_slli_epi32::<30>(_mm256_and_si256(j, two)));
            let cos_sign = as_ps(_mm256_slli_epi32::<30>(_mm256_and_si256(
                _mm256_add_epi32(j, one),
                two,
            )));
            sin[i] = _mm256_xor_ps(_mm256_blendv_ps(s[i], c[i], swap), sin_sign);
            cos[i] = _mm256_xor_ps(_mm256_blendv_ps(c[i], s[i], swap), cos_sign);
        }
        (sin, cos)
    }
}

/// Lane mask with lanes 0..n set, n in 1..=8.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_mask(n: usize) -> __m256i {
    static TABLE: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!((1..=8).contains(&n));
    // SAFETY: 8 − n ∈ 0..8, so the eight i32 read lie inside TABLE; loadu needs no alignment.
    unsafe { _mm256_loadu_si256(TABLE.as_ptr().add(8 - n).cast::<__m256i>()) }
}

// =============================================================================================
// Register-blocked GEMM tile: the core of all three linear kernels
// =============================================================================================
//
// C[m, n] (+)= Σ_p A[m, p] · B[p, n], each C element one FMA chain over p ascending:
//   acc = init; for p in 0..P { acc = fma(A[m,p], B[p,n], acc) }
// A is read by broadcasts (any strides), B by 8-wide loads along n (contiguous), C tiles are
// MR rows × 8·NV columns held in MR·NV ymm registers. The three kernels map onto it as
//   forward : m = row r, n = output o, p = input k;  A = x,  B = packed wᵀ [K, O8], C = y,  init bias
//   dx      : m = row r, n = input k,  p = output o; A = dy, B = w [O, K],          C = dx, init 0
//   dw      : m = output o, n = input k, p = row r;  A = dy (transposed strides), B = x, C = dw, init dw
// 6 × 16 is the classic AVX2 shape: 12 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm,
// per p: 12 FMAs against 2 loads + 6 broadcasts, i.e. FMA-bound, and 12 independent chains hide
// the 4-cycle FMA latency on 2 FMA ports.

/// Rows per tile.
const TILE_M: usize = 6;
/// Columns per tile (two ymm).
const TILE_N: usize = 16;
/// Rows of x/dy per pass of the dw kernel: the dy slab [64 × O] (16 KiB at O = 64) stays in L1
/// while the k tiles walk over it (measured best of 32/64/128/256 at K = O = 64). The accumulators
/// are stored to dw and reloaded between passes, which does not change any chain.
const DW_ROW_CHUNK: usize = 64;
/// dw walks column (k) tiles outermost, so one x slab [DW_ROW_CHUNK × 16] stays in L1 while all
/// o tiles stream past it (measured ~10 % faster than row tiles outermost at K = O = 64).
const DW_N_OUTER: bool = true;

#[derive(Clone, Copy)]
enum Init {
    /// acc = 0.
    Zero,
    /// acc = C (accumulate into C).
    Load,
    /// acc = bias[n] (same for every row m); the pointer is to bias[0], padded to 8·⌈N/8⌉.
    Row(*const f32),
}

/// One GEMM problem: element strides of A (along m, along p), B (along p; n is contiguous), C
/// (along m; n contiguous).
#[derive(Clone, Copy)]
struct Gemm {
    a: *const f32,
    a_ms: usize,
    a_ps: usize,
    b: *const f32,
    b_ps: usize,
    c: *mut f32,
    c_ms: usize,
    p_len: usize,
    init: Init,
    /// Tile order: column tiles outermost (true) or row tiles outermost (false). Only the
    /// cache behaviour depends on it — every C element is still one chain over p.
    n_outer: bool,
}

/// Computes the C tile at (m0, n0) of MR rows and NV vectors; with PARTIAL the last vector only
/// has the lanes in `mask` valid (loads are masked — no read past the end — and so is the store).
///
/// # Safety
/// AVX2+FMA present; for every valid (m, n, p) of the tile the addresses A, B, C computed from
/// `g` are inside their slices.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const MR: usize, const NV: usize, const PARTIAL: bool>(
    g: &Gemm,
    m0: usize,
    n0: usize,
    mask: __m256i,
) {
    // wrapping_add: these base pointers are only dereferenced at valid elements (see # Safety).
    let c = g.c.wrapping_add(m0 * g.c_ms + n0);
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    // SAFETY (whole block): every pointer below addresses a valid tile element of A, B, C or the
    // padded bias, per this function's contract; partial vectors use masked loads and stores,
    // which do not touch the masked-off lanes.
    unsafe {
        match g.init {
            Init::Zero => {}
            Init::Load => {
                for (m, row) in acc.iter_mut().enumerate() {
                    for (v, a) in row.iter_mut().enumerate() {
                        let p = c.add(m * g.c_ms + 8 * v);
                        *a = if PARTIAL && v + 1 == NV {
                            _mm256_maskload_ps(p, mask)
                        } else {
                            _mm256_loadu_ps(p)
                        };
                    }
                }
            }
            Init::Row(bias) => {
                for v in 0..NV {
                    let p = bias.add(n0 + 8 * v);
                    let bv = if PARTIAL && v + 1 == NV {
                        _mm256_maskload_ps(p, mask)
                    } else {
                        _mm256_loadu_ps(p)
                    };
                    for row in acc.iter_mut() {
                        row[v] = bv;
                    }
                }
            }
        }
        let mut ap = g.a.wrapping_add(m0 * g.a_ms);
        let mut bp = g.b.wrapping_add(n0);
        for _ in 0..g.p_len {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, b) in bv.iter_mut().enumerate() {
                let p = bp.add(8 * v);
                *b = if PARTIAL && v + 1 == NV {
                    _mm256_maskload_ps(p, mask)
                } else {
                    _mm256_loadu_ps(p)
                };
            }
            for (m, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(m * g.a_ms));
                for (a, &b) in row.iter_mut().zip(&bv) {
                    *a = _mm256_fmadd_ps(av, b, *a);
                }
            }
            ap = ap.wrapping_add(g.a_ps);
            bp = bp.wrapping_add(g.b_ps);
        }
        for (m, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                let p = c.add(m * g.c_ms + 8 * v);
                if PARTIAL && v + 1 == NV {
                    _mm256_maskstore_ps(p, mask, a);
                } else {
                    _mm256_storeu_ps(p, a);
                }
            }
        }
    }
}

/// Runs [`tile`] over C [m_total, n_total]: tiles of TILE_M × TILE_N, smaller const-generic tiles
/// on the row and column tails (same chains, fewer of them).
///
/// # Safety
/// AVX2+FMA present; A, B, C (and the bias) cover the index ranges implied by `g`, `m_total`,
/// `n_total`.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm(g: &Gemm, m_total: usize, n_total: usize) {
    macro_rules! dispatch {
        ($mr:expr, $nv:expr, $partial:expr, $m0:expr, $n0:expr, $mask:expr; $($m:literal)*) => {
            match ($mr, $nv, $partial) {
                $(
                    ($m, 1, false) => tile::<$m, 1, false>(g, $m0, $n0, $mask),
                    ($m, 1, true) => tile::<$m, 1, true>(g, $m0, $n0, $mask),
                    ($m, 2, false) => tile::<$m, 2, false>(g, $m0, $n0, $mask),
                    ($m, 2, true) => tile::<$m, 2, true>(g, $m0, $n0, $mask),
                )*
                _ => unreachable!(),
            }
        };
    }
    let (tiles_m, tiles_n) = (m_total.div_ceil(TILE_M), n_total.div_ceil(TILE_N));
    let (outer, inner) = if g.n_outer {
        (tiles_n, tiles_m)
    } else {
        (tiles_m, tiles_n)
    };
    for a in 0..outer {
        for b in 0..inner {
            let (tm, tn) = if g.n_outer { (b, a) } else { (a, b) };
            let (m0, n0) = (tm * TILE_M, tn * TILE_N);
            let mr = (m_total - m0).min(TILE_M);
            let width = (n_total - n0).min(TILE_N);
            let nv = width.div_ceil(8);
            let rem = width % 8;
            let mask = lane_mask(if rem == 0 { 8 } else { rem });
            // SAFETY: forwarded contract; the tile (m0.., n0..) lies inside C.
            unsafe { dispatch!(mr, nv, rem != 0, m0, n0, mask; 1 2 3 4 5 6) };
        }
    }
}

thread_local! {
    /// wᵀ [K, O8] followed by the bias [O8], O8 = O rounded up to 8, zero padded. Reused across
    /// calls on one thread (the only allocation of the linear kernels, amortised to none).
    static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// wt[p, j] = w[j, p] for j < o, 0 for o ≤ j < o8: w [O, K] → wᵀ [K, O8]. Full 8 × 8 blocks
/// go through an in-register transpose (the packing is O(K·O) per call, which matters when the
/// caller's row shards are small: ~2.3 µs scalar vs ~0.3 µs here at K = O = 64, against ~11 µs
/// of FMAs for 150 rows); the rest is copied element by element. Pure data movement.
///
/// # Safety
/// AVX2+FMA present; `w.len() == o·k`, `wt.len() == k·o8`, `o8 ≥ o` a multiple of 8.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_transpose(w: &[f32], k: usize, o: usize, wt: &mut [f32], o8: usize) {
    let (o_full, k_full) = (o - o % 8, k - k % 8);
    let (wp, tp) = (w.as_ptr(), wt.as_mut_ptr());
    for j0 in (0..o_full).step_by(8) {
        for p0 in (0..k_full).step_by(8) {
            // SAFETY: rows j0..j0+8 < o of w, columns p0..p0+8 ≤ k; destination rows p0..p0+8
            // < k of wt, columns j0..j0+8 ≤ o ≤ o8.
            unsafe {
                let r: [__m256; 8] = each!(8, i => _mm256_loadu_ps(wp.add((j0 + i) * k + p0)));
                let t = [
                    _mm256_unpacklo_ps(r[0], r[1]),
                    _mm256_unpackhi_ps(r[0], r[1]),
                    _mm256_unpacklo_ps(r[2], r[3]),
                    _mm256_unpackhi_ps(r[2], r[3]),
                    _mm256_unpacklo_ps(r[4], r[5]),
                    _mm256_unpackhi_ps(r[4], r[5]),
                    _mm256_unpacklo_ps(r[6], r[7]),
                    _mm256_unpackhi_ps(r[6], r[7]),
                ];
                let u = [
                    _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                    _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                    _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                ];
                for c in 0..4 {
                    let lo = _mm256_permute2f128_ps::<0x20>(u[c], u[c + 4]);
                    let hi = _mm256_permute2f128_ps::<0x31>(u[c], u[c + 4]);
                    _mm256_storeu_ps(tp.add((p0 + c) * o8 + j0), lo);
                    _mm256_storeu_ps(tp.add((p0 + c + 4) * o8 + j0), hi);
                }
            }
        }
    }
    for (p, row) in wt.chunks_exact_mut(o8).enumerate() {
        let j_from = if p < k_full { o_full } else { 0 };
        for (j, v) in row[..o].iter_mut().enumerate().skip(j_from) {
            *v = w[j * k + p];
        }
        row[o..].fill(0.0);
    }
}

/// See [`super::linear::linear_forward_ref`].
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    rows: usize,
    k: usize,
    o: usize,
) {
    if rows == 0 || o == 0 {
        return;
    }
    let o8 = o.div_ceil(8) * 8;
    PACK.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < k * o8 + o8 {
            buf.resize(k * o8 + o8, 0.0);
        }
        // Every entry used below is written here (no memset of the whole buffer per call).
        let (wt, bias) = buf[..k * o8 + o8].split_at_mut(k * o8);
        // SAFETY: w is [o, k] (checked by the caller), wt is [k, o8].
        unsafe { pack_transpose(w, k, o, wt, o8) };
        bias[..o].copy_from_slice(b);
        bias[o..].fill(0.0);
        let g = Gemm {
            a: x.as_ptr(),
            a_ms: k,
            a_ps: 1,
            b: wt.as_ptr(),
            b_ps: o8,
            c: y.as_mut_ptr(),
            c_ms: o,
            p_len: k,
            init: Init::Row(bias.as_ptr()),
            n_outer: false,
        };
        // SAFETY: x is [rows, k], wt is [k, o8] with o8 ≥ o, bias has o8 entries, y is [rows, o];
        // column tails are masked to o.
        unsafe { gemm(&g, rows, o) };
    });
}

/// See [`super::linear::linear_backward_dx_ref`].
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn linear_backward_dx(
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    rows: usize,
    k: usize,
    o: usize,
) {
    if rows == 0 || k == 0 {
        return;
    }
    let g = Gemm {
        a: dy.as_ptr(),
        a_ms: o,
        a_ps: 1,
        b: w.as_ptr(),
        b_ps: k,
        c: dx.as_mut_ptr(),
        c_ms: k,
        p_len: o,
        init: Init::Zero,
        n_outer: false,
    };
    // SAFETY: dy is [rows, o], w is [o, k] (rows of k contiguous, tails masked), dx is [rows, k].
    unsafe { gemm(&g, rows, k) };
}

/// See [`super::linear::linear_backward_dw_ref`].
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn linear_backward_dw(
    dy: &[f32],
    x: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    rows: usize,
    k: usize,
    o: usize,
) {
    if k > 0 && o > 0 {
        let mut r0 = 0;
        while r0 < rows {
            let rc = (rows - r0).min(DW_ROW_CHUNK);
            let g = Gemm {
                a: dy[r0 * o..].as_ptr(),
                a_ms: 1,
                a_ps: o,
                b: x[r0 * k..].as_ptr(),
                b_ps: k,
                c: dw.as_mut_ptr(),
                c_ms: k,
                p_len: rc,
                init: Init::Load,
                n_outer: DW_N_OUTER,
            };
            // SAFETY: A[m, p] = dy[(r0+p)·o + m] with m < o, p < rc; B[p, n] = x[(r0+p)·k + n]
            // with n < k (tails masked); C = dw [o, k].
            unsafe { gemm(&g, o, k) };
            r0 += rc;
        }
    }
    // SAFETY: forwarded contract (dy is [rows, o], db is [o]).
    unsafe { col_sum_acc(dy, db, rows, o) };
}

// =============================================================================================
// Column sum
// =============================================================================================

/// Columns per pass of `col_sum_acc` (4 ymm accumulators, independent add chains).
const COLSUM_VECS: usize = 4;
/// Rows per pass of `col_sum_acc` (keeps the dy slab cache resident when cols > 32).
const COLSUM_ROW_CHUNK: usize = 256;

/// out[c0 .. c0+8·NV] += Σ_{r in rows} dy[r, ·]; the last vector masked when PARTIAL.
///
/// # Safety
/// AVX2; dy rows r0..r0+rc of width `cols` and out[c0..] valid for the unmasked lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn col_sum_block<const NV: usize, const PARTIAL: bool>(
    dy: *const f32,
    out: *mut f32,
    cols: usize,
    c0: usize,
    r0: usize,
    rc: usize,
    mask: __m256i,
) {
    // SAFETY: per the contract; partial vectors are masked.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); NV];
        for (v, a) in acc.iter_mut().enumerate() {
            let p = out.add(c0 + 8 * v);
            *a = if PARTIAL && v + 1 == NV {
                _mm256_maskload_ps(p, mask)
            } else {
                _mm256_loadu_ps(p)
            };
        }
        for r in r0..r0 + rc {
            let row = dy.add(r * cols + c0);
            for (v, a) in acc.iter_mut().enumerate() {
                let p = row.add(8 * v);
                let x = if PARTIAL && v + 1 == NV {
                    _mm256_maskload_ps(p, mask)
                } else {
                    _mm256_loadu_ps(p)
                };
                *a = _mm256_add_ps(*a, x);
            }
        }
        for (v, &a) in acc.iter().enumerate() {
            let p = out.add(c0 + 8 * v);
            if PARTIAL && v + 1 == NV {
                _mm256_maskstore_ps(p, mask, a);
            } else {
                _mm256_storeu_ps(p, a);
            }
        }
    }
}

/// See [`super::reduce::col_sum_acc_ref`]: per column, acc = out[c], then + dy[r, c] for r
/// ascending (lanes = columns).
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn col_sum_acc(dy: &[f32], out: &mut [f32], rows: usize, cols: usize) {
    let (dyp, outp) = (dy.as_ptr(), out.as_mut_ptr());
    let mut r0 = 0;
    while r0 < rows {
        let rc = (rows - r0).min(COLSUM_ROW_CHUNK);
        let mut c0 = 0;
        while c0 < cols {
            let width = (cols - c0).min(8 * COLSUM_VECS);
            let rem = width % 8;
            let mask = lane_mask(if rem == 0 { 8 } else { rem });
            // SAFETY: columns c0..c0+width < cols (tail masked), rows r0..r0+rc < rows.
            unsafe {
                match (width.div_ceil(8), rem != 0) {
                    (1, false) => col_sum_block::<1, false>(dyp, outp, cols, c0, r0, rc, mask),
                    (1, true) => col_sum_block::<1, true>(dyp, outp, cols, c0, r0, rc, mask),
                    (2, false) => col_sum_block::<2, false>(dyp, outp, cols, c0, r0, rc, mask),
                    (2, true) => col_sum_block::<2, true>(dyp, outp, cols, c0, r0, rc, mask),
                    (3, false) => col_sum_block::<3, false>(dyp, outp, cols, c0, r0, rc, mask),
                    (3, true) => col_sum_block::<3, true>(dyp, outp, cols, c0, r0, rc, mask),
                    (4, false) => col_sum_block::<4, false>(dyp, outp, cols, c0, r0, rc, mask),
                    (4, true) => col_sum_block::<4, true>(dyp, outp, cols, c0, r0, rc, mask),
                    _ => unreachable!(),
                }
            }
            c0 += 8 * COLSUM_VECS;
        }
        r0 += rc;
    }
}

// =============================================================================================
// GELU
// =============================================================================================

/// GELU forward on N×8 elements at `x`, `y`.
///
/// # Safety
/// AVX2+FMA present; `x` and `y` valid for 8·N f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_forward_block<const N: usize>(k: &VConsts, x: *const f32, y: *mut f32) {
    // SAFETY: the 8·N elements are in bounds per the contract.
    let xv: [__m256; N] = each!(N, i => unsafe { _mm256_loadu_ps(x.add(8 * i)) });
    // SAFETY: AVX2+FMA per this function's contract.
    let e = unsafe { erf8(k, each!(N, i => _mm256_mul_ps(xv[i], k.frac_1_sqrt_2))) };
    for i in 0..N {
        let h = _mm256_mul_ps(k.half, xv[i]);
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(y.add(8 * i), _mm256_fmadd_ps(h, e[i], h)) };
    }
}

/// See [`super::gelu::gelu_forward_ref`]: blocks of 8·INTERLEAVE, then 8, then the scalar code
/// for the last < 8.
///
/// # Safety
/// AVX2+FMA present; x.len() == y.len() checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_forward(x: &[f32], y: &mut [f32]) {
    let k = VConsts::new();
    let n = x.len();
    let mut i = 0;
    // SAFETY (both loops): i + 8·INTERLEAVE (resp. 8) ≤ n = x.len() = y.len().
    while i + 8 * INTERLEAVE <= n {
        unsafe { gelu_forward_block::<INTERLEAVE>(&k, x.as_ptr().add(i), y.as_mut_ptr().add(i)) };
        i += 8 * INTERLEAVE;
    }
    while i + 8 <= n {
        unsafe { gelu_forward_block::<1>(&k, x.as_ptr().add(i), y.as_mut_ptr().add(i)) };
        i += 8;
    }
    gelu_forward_ref::<f32>(&x[i..], &mut y[i..]);
}

/// GELU forward and derivative on N×8 elements (see [`super::gelu::gelu_forward_deriv_ref`]).
///
/// # Safety
/// AVX2+FMA present; `x`, `y`, `g` valid for 8·N f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_forward_deriv_block<const N: usize>(
    k: &VConsts,
    x: *const f32,
    y: *mut f32,
    g: *mut f32,
) {
    // SAFETY: the 8·N elements are in bounds per the contract.
    let xv: [__m256; N] = each!(N, i => unsafe { _mm256_loadu_ps(x.add(8 * i)) });
    let q = each!(N, i => _mm256_mul_ps(_mm256_mul_ps(k.neg_half, xv[i]), xv[i]));
    // SAFETY: AVX2+FMA per this function's contract.
    let (e, ex) = unsafe {
        (
            erf8(k, each!(N, i => _mm256_mul_ps(xv[i], k.frac_1_sqrt_2))),
            exp8(k, q),
        )
    };
    for i in 0..N {
        let h = _mm256_mul_ps(k.half, xv[i]);
        let cdf = _mm256_fmadd_ps(e[i], k.half, k.half);
        let pdf = _mm256_mul_ps(ex[i], k.frac_1_sqrt_2pi);
        // SAFETY: as above.
        unsafe {
            _mm256_storeu_ps(y.add(8 * i), _mm256_fmadd_ps(h, e[i], h));
            _mm256_storeu_ps(g.add(8 * i), _mm256_fmadd_ps(xv[i], pdf, cdf));
        }
    }
}

/// See [`super::gelu::gelu_forward_deriv_ref`] (blocks as in [`gelu_forward`]).
///
/// # Safety
/// AVX2+FMA present; equal lengths checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_forward_deriv(x: &[f32], y: &mut [f32], g: &mut [f32]) {
    let k = VConsts::new();
    let n = x.len();
    let mut i = 0;
    // SAFETY (both loops): i + 8·INTERLEAVE (resp. 8) ≤ n = x.len() = y.len() = g.len().
    while i + 8 * INTERLEAVE <= n {
        unsafe {
            gelu_forward_deriv_block::<INTERLEAVE>(
                &k,
                x.as_ptr().add(i),
                y.as_mut_ptr().add(i),
                g.as_mut_ptr().add(i),
            )
        };
        i += 8 * INTERLEAVE;
    }
    while i + 8 <= n {
        unsafe {
            gelu_forward_deriv_block::<1>(
                &k,
                x.as_ptr().add(i),
                y.as_mut_ptr().add(i),
                g.as_mut_ptr().add(i),
            )
        };
        i += 8;
    }
    gelu_forward_deriv_ref::<f32>(&x[i..], &mut y[i..], &mut g[i..]);
}

/// GELU backward on N×8 elements.
///
/// # Safety
/// AVX2+FMA present; `x`, `dy`, `dx` valid for 8·N f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_backward_block<const N: usize>(
    k: &VConsts,
    x: *const f32,
    dy: *const f32,
    dx: *mut f32,
) {
    // SAFETY: the 8·N elements are in bounds per the contract.
    let xv: [__m256; N] = each!(N, i => unsafe { _mm256_loadu_ps(x.add(8 * i)) });
    let q = each!(N, i => _mm256_mul_ps(_mm256_mul_ps(k.neg_half, xv[i]), xv[i]));
    // SAFETY: AVX2+FMA per this function's contract.
    let (e, ex) = unsafe {
        (
            erf8(k, each!(N, i => _mm256_mul_ps(xv[i], k.frac_1_sqrt_2))),
            exp8(k, q),
        )
    };
    for i in 0..N {
        let cdf = _mm256_fmadd_ps(e[i], k.half, k.half);
        let pdf = _mm256_mul_ps(ex[i], k.frac_1_sqrt_2pi);
        // SAFETY: as above.
        unsafe {
            let g = _mm256_loadu_ps(dy.add(8 * i));
            _mm256_storeu_ps(
                dx.add(8 * i),
                _mm256_mul_ps(g, _mm256_fmadd_ps(xv[i], pdf, cdf)),
            );
        }
    }
}

/// See [`super::gelu::gelu_backward_ref`] (blocks as in [`gelu_forward`]).
///
/// # Safety
/// AVX2+FMA present; equal lengths checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let k = VConsts::new();
    let n = x.len();
    let mut i = 0;
    // SAFETY (both loops): i + 8·INTERLEAVE (resp. 8) ≤ n = x.len() = dy.len() = dx.len().
    while i + 8 * INTERLEAVE <= n {
        unsafe {
            gelu_backward_block::<INTERLEAVE>(
                &k,
                x.as_ptr().add(i),
                dy.as_ptr().add(i),
                dx.as_mut_ptr().add(i),
            )
        };
        i += 8 * INTERLEAVE;
    }
    while i + 8 <= n {
        unsafe {
            gelu_backward_block::<1>(
                &k,
                x.as_ptr().add(i),
                dy.as_ptr().add(i),
                dx.as_mut_ptr().add(i),
            )
        };
        i += 8;
    }
    gelu_backward_ref::<f32>(&x[i..], &dy[i..], &mut dx[i..]);
}

// =============================================================================================
// Time features
// =============================================================================================

/// Forward for one row (time `t`) on frequencies k0 .. k0 + 8N.
///
/// # Safety
/// AVX2+FMA present; k0 + 8N ≤ F = freqs.len() = phase.len(); `sin_row`, `cos_row` valid for F.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn time_features_block<const N: usize>(
    kc: &VConsts,
    t: f32,
    freqs: *const f32,
    phase: *const f32,
    sin_row: *mut f32,
    cos_row: *mut f32,
) {
    // SAFETY (whole body): 8N elements from the given offsets are in bounds per the contract.
    unsafe {
        let a = each!(N, i => {
            let (f, p) = (_mm256_loadu_ps(freqs.add(8 * i)), _mm256_loadu_ps(phase.add(8 * i)));
            _mm256_fmadd_ps(splat(t), f, p)
        });
        let (s, c) = sin_cos8(kc, a);
        for i in 0..N {
            _mm256_storeu_ps(sin_row.add(8 * i), s[i]);
            _mm256_storeu_ps(cos_row.add(8 * i), c[i]);
        }
    }
}

/// See [`super::time_features::time_features_ref`]; lanes = frequencies k (blocks of 8·INTERLEAVE,
/// then 8, then scalar).
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn time_features(t: &[f32], freqs: &[f32], phase: &[f32], out: &mut [f32]) {
    let f = freqs.len();
    if f == 0 {
        return;
    }
    let kc = VConsts::new();
    for (&ti, row) in t.iter().zip(out.chunks_exact_mut(2 * f)) {
        let (sin_row, cos_row) = row.split_at_mut(f);
        let (fp, pp, sp, cp) = (
            freqs.as_ptr(),
            phase.as_ptr(),
            sin_row.as_mut_ptr(),
            cos_row.as_mut_ptr(),
        );
        let mut k = 0;
        // SAFETY (both loops): k + 8·INTERLEAVE (resp. 8) ≤ f, the length of all four slices.
        while k + 8 * INTERLEAVE <= f {
            unsafe {
                time_features_block::<INTERLEAVE>(
                    &kc,
                    ti,
                    fp.add(k),
                    pp.add(k),
                    sp.add(k),
                    cp.add(k),
                )
            };
            k += 8 * INTERLEAVE;
        }
        while k + 8 <= f {
            unsafe {
                time_features_block::<1>(&kc, ti, fp.add(k), pp.add(k), sp.add(k), cp.add(k))
            };
            k += 8;
        }
        for k in k..f {
            let (s, c) = sin_cos_f32(ti.mul_add(freqs[k], phase[k]));
            sin_row[k] = s;
            cos_row[k] = c;
        }
    }
}

/// Backward on frequencies k0 .. k0 + 8N: the accumulator of each k stays in its lane and takes
/// rows i in ascending order.
///
/// # Safety
/// AVX2+FMA present; k0 + 8N ≤ F; `dout` is [t.len(), 2F]; pointers are at offset k0.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn time_features_backward_block<const N: usize>(
    kc: &VConsts,
    t: &[f32],
    f: usize,
    freqs: *const f32,
    phase: *const f32,
    dout: *const f32,
    dphase: *mut f32,
) {
    // SAFETY (whole body): every access is within the 8N lanes at offset k0 of a row of length F
    // (freqs, phase, dphase) or of the sin / cos halves of a dout row, per the contract.
    unsafe {
        let fv = each!(N, i => _mm256_loadu_ps(freqs.add(8 * i)));
        let pv = each!(N, i => _mm256_loadu_ps(phase.add(8 * i)));
        let mut acc = each!(N, i => _mm256_loadu_ps(dphase.add(8 * i)));
        for (r, &ti) in t.iter().enumerate() {
            let (s, c) = sin_cos8(kc, each!(N, i => _mm256_fmadd_ps(splat(ti), fv[i], pv[i])));
            let row = dout.add(r * 2 * f);
            for i in 0..N {
                acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * i)), c[i], acc[i]);
                acc[i] = _mm256_fnmadd_ps(_mm256_loadu_ps(row.add(f + 8 * i)), s[i], acc[i]);
            }
        }
        for (i, &a) in acc.iter().enumerate() {
            _mm256_storeu_ps(dphase.add(8 * i), a);
        }
    }
}

/// See [`super::time_features::time_features_backward_ref`]; lanes = frequencies k.
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn time_features_backward(
    t: &[f32],
    freqs: &[f32],
    phase: &[f32],
    dout: &[f32],
    dphase: &mut [f32],
) {
    let f = freqs.len();
    if f == 0 {
        return;
    }
    let kc = VConsts::new();
    let (fp, pp, dp) = (freqs.as_ptr(), phase.as_ptr(), dphase.as_mut_ptr());
    let mut k = 0;
    // SAFETY (both loops): k + 8·INTERLEAVE (resp. 8) ≤ f; dout is [t.len(), 2f] (caller-checked).
    while k + 8 * INTERLEAVE <= f {
        unsafe {
            time_features_backward_block::<INTERLEAVE>(
                &kc,
                t,
                f,
                fp.add(k),
                pp.add(k),
                dout.as_ptr().add(k),
                dp.add(k),
            )
        };
        k += 8 * INTERLEAVE;
    }
    while k + 8 <= f {
        unsafe {
            time_features_backward_block::<1>(
                &kc,
                t,
                f,
                fp.add(k),
                pp.add(k),
                dout.as_ptr().add(k),
                dp.add(k),
            )
        };
        k += 8;
    }
    for k in k..f {
        let mut acc = dphase[k];
        for (&ti, row) in t.iter().zip(dout.chunks_exact(2 * f)) {
            let (s, c) = sin_cos_f32(ti.mul_add(freqs[k], phase[k]));
            acc = row[k].mul_add(c, acc);
            acc = (-row[f + k]).mul_add(s, acc);
        }
        dphase[k] = acc;
    }
}

// =============================================================================================
// LayerNorm
// =============================================================================================

/// See [`super::layer_norm::layer_norm_forward_ref`]: per row, the two sums are one ymm
/// accumulator each (lane j takes x[8i + j], the tree of `hsum_tree`, then the tail in order),
/// and lane i of the output loop runs element i's operations.
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn layer_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    rows: usize,
    h: usize,
) {
    let n8 = h - h % 8;
    for r in 0..rows {
        let xr = &x[r * h..(r + 1) * h];
        let yr = &mut y[r * h..(r + 1) * h];
        // SAFETY: AVX2+FMA per this function's contract.
        let mu = row_mean(unsafe { sum(xr) }, h);
        let muv = splat(mu);
        let mut acc = _mm256_setzero_ps();
        for c in xr[..n8].chunks_exact(8) {
            // SAFETY: the chunk holds 8 f32.
            let d = _mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, muv);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(d, d));
        }
        let mut s = hsum_tree(acc);
        for &v in &xr[n8..] {
            let d = v - mu;
            s += d * d;
        }
        let rs = row_rstd(s, h);
        let rsv = splat(rs);
        mean[r] = mu;
        rstd[r] = rs;
        for k in (0..n8).step_by(8) {
            // SAFETY: k + 8 ≤ n8 ≤ h, the length of xr, yr, gamma and beta.
            unsafe {
                let nrm =
                    _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr.as_ptr().add(k)), muv), rsv);
                let out = _mm256_fmadd_ps(
                    nrm,
                    _mm256_loadu_ps(gamma.as_ptr().add(k)),
                    _mm256_loadu_ps(beta.as_ptr().add(k)),
                );
                _mm256_storeu_ps(yr.as_mut_ptr().add(k), out);
            }
        }
        for k in n8..h {
            yr[k] = ((xr[k] - mu) * rs).mul_add(gamma[k], beta[k]);
        }
    }
}

/// See [`super::layer_norm::layer_norm_backward_ref`]: per row, n and g = dy·γ are recomputed
/// lane for lane, Σg and Σg·n are one ymm accumulator each (the `sum` order), dγ and dβ take
/// this row's terms in place (so each element still sees rows ascending).
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    rows: usize,
    h: usize,
) {
    let n8 = h - h % 8;
    for r in 0..rows {
        let (mu, rs) = (mean[r], rstd[r]);
        let (muv, rsv) = (splat(mu), splat(rs));
        let (xr, dyr) = (&x[r * h..(r + 1) * h], &dy[r * h..(r + 1) * h]);
        let dxr = &mut dx[r * h..(r + 1) * h];
        let (mut acc_g, mut acc_gn) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for k in (0..n8).step_by(8) {
            // SAFETY: k + 8 ≤ n8 ≤ h, the length of xr, dyr, gamma, dgamma and dbeta.
            unsafe {
                let n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr.as_ptr().add(k)), muv), rsv);
                let d = _mm256_loadu_ps(dyr.as_ptr().add(k));
                let g = _mm256_mul_ps(d, _mm256_loadu_ps(gamma.as_ptr().add(k)));
                acc_g = _mm256_add_ps(acc_g, g);
                acc_gn = _mm256_add_ps(acc_gn, _mm256_mul_ps(g, n));
                let pg = dgamma.as_mut_ptr().add(k);
                _mm256_storeu_ps(pg, _mm256_fmadd_ps(d, n, _mm256_loadu_ps(pg)));
                let pb = dbeta.as_mut_ptr().add(k);
                _mm256_storeu_ps(pb, _mm256_add_ps(_mm256_loadu_ps(pb), d));
            }
        }
        let (mut sg, mut sgn) = (hsum_tree(acc_g), hsum_tree(acc_gn));
        for k in n8..h {
            let n = (xr[k] - mu) * rs;
            let g = dyr[k] * gamma[k];
            sg += g;
            sgn += g * n;
            dgamma[k] = dyr[k].mul_add(n, dgamma[k]);
            dbeta[k] += dyr[k];
        }
        let (a, c) = (row_mean(sg, h), row_mean(sgn, h));
        let (av, cv) = (splat(a), splat(c));
        for k in (0..n8).step_by(8) {
            // SAFETY: k + 8 ≤ n8 ≤ h, the length of xr, dyr, dxr and gamma.
            unsafe {
                let n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr.as_ptr().add(k)), muv), rsv);
                let g = _mm256_mul_ps(
                    _mm256_loadu_ps(dyr.as_ptr().add(k)),
                    _mm256_loadu_ps(gamma.as_ptr().add(k)),
                );
                // fnmadd(n, c, t) = −(n·c) + t in one rounding = fma(−n, c, t).
                let t = _mm256_fnmadd_ps(n, cv, _mm256_sub_ps(g, av));
                _mm256_storeu_ps(dxr.as_mut_ptr().add(k), _mm256_mul_ps(t, rsv));
            }
        }
        for k in n8..h {
            let n = (xr[k] - mu) * rs;
            let g = dyr[k] * gamma[k];
            dxr[k] = (-n).mul_add(c, g - a) * rs;
        }
    }
}

// =============================================================================================
// Reductions
// =============================================================================================

/// The sum tree of super::reduce: h = lo128 + hi128 (h[j] = l[j] + l[j+4]), g = h + movehl(h)
/// (g[j] = h[j] + h[j+2]), result g[0] + g[1].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_tree(acc: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let g = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(g, _mm_shuffle_ps::<0b01>(g, g)))
}

/// The max tree of super::reduce::max_ref (`vmaxps(first, second)` at every node).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hmax_tree(acc: __m256) -> f32 {
    let h = _mm_max_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let g = _mm_max_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_max_ss(g, _mm_shuffle_ps::<0b01>(g, g)))
}

/// See [`super::reduce::sum_ref`].
///
/// # Safety
/// AVX2+FMA present.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn sum(x: &[f32]) -> f32 {
    let n8 = x.len() - x.len() % 8;
    let mut acc = _mm256_setzero_ps();
    for c in x[..n8].chunks_exact(8) {
        // SAFETY: the chunk holds 8 f32.
        acc = _mm256_add_ps(acc, unsafe { _mm256_loadu_ps(c.as_ptr()) });
    }
    let mut s = hsum_tree(acc);
    for &v in &x[n8..] {
        s += v;
    }
    s
}

/// See [`super::reduce::logsumexp_ref`].
///
/// # Safety
/// AVX2+FMA present.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn logsumexp(x: &[f32]) -> f32 {
    let n8 = x.len() - x.len() % 8;
    let mut mv = splat(f32::NEG_INFINITY);
    for c in x[..n8].chunks_exact(8) {
        // SAFETY: the chunk holds 8 f32. vmaxps(x, lane) = gt_select(x, lane).
        mv = _mm256_max_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, mv);
    }
    let mut m = hmax_tree(mv);
    for &v in &x[n8..] {
        m = gt_select(v, m);
    }
    if let Some(v) = logsumexp_special(x, m) {
        return v;
    }
    let k = VConsts::new();
    let msplat = splat(m);
    let mut acc = _mm256_setzero_ps();
    // exp of INTERLEAVE vectors at a time, added to the lane accumulators in order.
    let nb = x.len() - x.len() % (8 * INTERLEAVE);
    for c in x[..nb].chunks_exact(8 * INTERLEAVE) {
        // SAFETY: the chunk holds 8·INTERLEAVE f32; AVX2+FMA per this function's contract.
        let e = unsafe {
            exp8(
                &k,
                each!(INTERLEAVE, i => _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr().add(8 * i)), msplat)),
            )
        };
        for v in e {
            acc = _mm256_add_ps(acc, v);
        }
    }
    for c in x[nb..n8].chunks_exact(8) {
        // SAFETY: the chunk holds 8 f32; AVX2+FMA per this function's contract.
        let e = unsafe { exp8(&k, [_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), msplat)]) };
        acc = _mm256_add_ps(acc, e[0]);
    }
    let mut s = hsum_tree(acc);
    for &v in &x[n8..] {
        s += exp_f32(v - m);
    }
    m + s.ln()
}

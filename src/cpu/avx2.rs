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

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::gelu::{gelu_backward_ref, gelu_forward_ref, FRAC_1_SQRT_2, FRAC_1_SQRT_2PI};
use super::math::*;
use super::reduce::{gt_select, logsumexp_special};

// =============================================================================================
// 8-wide elementary functions (lane-for-lane twins of super::math)
// =============================================================================================

#[inline]
#[target_feature(enable = "avx2,fma")]
fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

/// `exp_f32` on 8 lanes (same operations, same order).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(splat(EXP_HI), _mm256_max_ps(splat(EXP_LO), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, splat(LOG2E)));
    let r = _mm256_fnmadd_ps(n, splat(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, splat(LN2_LO), r);
    let mut p = splat(EXP_P[0]);
    p = _mm256_fmadd_ps(p, r, splat(EXP_P[1]));
    p = _mm256_fmadd_ps(p, r, splat(EXP_P[2]));
    p = _mm256_fmadd_ps(p, r, splat(EXP_P[3]));
    p = _mm256_fmadd_ps(p, r, splat(EXP_P[4]));
    p = _mm256_fmadd_ps(p, r, splat(EXP_P[5]));
    let z = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), splat(1.0));
    let ni = _mm256_cvttps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(y, s1), s2)
}

/// `erf_f32` on 8 lanes: both branches are evaluated, `|x| > ERF_SPLIT` selects.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn erf8(x: __m256) -> __m256 {
    let sign = splat(-0.0);
    let t = _mm256_andnot_ps(sign, x);
    // small branch: x + x·P(x²)   (erf_small)
    let s = _mm256_mul_ps(x, x);
    let mut r = splat(ERF_A[5]);
    r = _mm256_fmadd_ps(r, s, splat(ERF_A[4]));
    r = _mm256_fmadd_ps(r, s, splat(ERF_A[3]));
    r = _mm256_fmadd_ps(r, s, splat(ERF_A[2]));
    r = _mm256_fmadd_ps(r, s, splat(ERF_A[1]));
    r = _mm256_fmadd_ps(r, s, splat(ERF_A[0]));
    let small = _mm256_fmadd_ps(r, x, x);
    // large branch: 1 − exp(−Q(min(t, 4)))   (erf_large_abs), then copysign
    let tl = _mm256_min_ps(t, splat(ERF_CLAMP));
    let s = _mm256_mul_ps(tl, tl);
    let r = _mm256_fmadd_ps(splat(ERF_B[6]), tl, splat(ERF_B[5]));
    let u = _mm256_fmadd_ps(splat(ERF_B[4]), tl, splat(ERF_B[3]));
    let mut r = _mm256_fmadd_ps(r, s, u);
    r = _mm256_fmadd_ps(r, tl, splat(ERF_B[2]));
    r = _mm256_fmadd_ps(r, tl, splat(ERF_B[1]));
    r = _mm256_fmadd_ps(r, tl, splat(ERF_B[0]));
    r = _mm256_fmadd_ps(r, tl, tl);
    let large = _mm256_sub_ps(splat(1.0), exp8(_mm256_xor_ps(r, sign)));
    let large = _mm256_or_ps(_mm256_andnot_ps(sign, large), _mm256_and_ps(x, sign));
    let is_large = _mm256_cmp_ps::<_CMP_GT_OQ>(t, splat(ERF_SPLIT));
    _mm256_blendv_ps(small, large, is_large)
}

/// `sin_cos_f32` on 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sin_cos8(x: __m256) -> (__m256, __m256) {
    let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, splat(FRAC_2_PI)));
    let r = _mm256_fnmadd_ps(q, splat(PIO2_1), x);
    let r = _mm256_fnmadd_ps(q, splat(PIO2_2), r);
    let r = _mm256_fnmadd_ps(q, splat(PIO2_3), r);
    let z = _mm256_mul_ps(r, r);
    let ps = _mm256_fmadd_ps(_mm256_fmadd_ps(splat(SIN_P[0]), z, splat(SIN_P[1])), z, splat(SIN_P[2]));
    let s = _mm256_fmadd_ps(_mm256_mul_ps(ps, z), r, r);
    let pc = _mm256_fmadd_ps(_mm256_fmadd_ps(splat(COS_P[0]), z, splat(COS_P[1])), z, splat(COS_P[2]));
    let c = _mm256_fmadd_ps(_mm256_mul_ps(pc, z), z, _mm256_fnmadd_ps(splat(0.5), z, splat(1.0)));
    let j = _mm256_cvttps_epi32(q);
    let one = _mm256_set1_epi32(1);
    let two = _mm256_set1_epi32(2);
    let swap = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(j, one), one));
    let s2 = _mm256_blendv_ps(s, c, swap);
    let c2 = _mm256_blendv_ps(c, s, swap);
    let sin_sign = _mm256_slli_epi32::<30>(_mm256_and_si256(j, two));
    let cos_sign = _mm256_slli_epi32::<30>(_mm256_and_si256(_mm256_add_epi32(j, one), two));
    (
        _mm256_xor_ps(s2, _mm256_castsi256_ps(sin_sign)),
        _mm256_xor_ps(c2, _mm256_castsi256_ps(cos_sign)),
    )
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
/// Rows of x/dy per pass of the dw kernel (keeps the x and dy slabs in L1/L2; the accumulators
/// are stored to dw and reloaded between passes, which does not change any chain).
const DW_ROW_CHUNK: usize = 128;

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
}

/// Computes the C tile at (m0, n0) of MR rows and NV vectors; with PARTIAL the last vector only
/// has the lanes in `mask` valid (loads are masked — no read past the end — and so is the store).
///
/// # Safety
/// AVX2+FMA present; for every valid (m, n, p) of the tile the addresses A, B, C computed from
/// `g` are inside their slices.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const MR: usize, const NV: usize, const PARTIAL: bool>(g: &Gemm, m0: usize, n0: usize, mask: __m256i) {
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
                        *a = if PARTIAL && v + 1 == NV { _mm256_maskload_ps(p, mask) } else { _mm256_loadu_ps(p) };
                    }
                }
            }
            Init::Row(bias) => {
                for v in 0..NV {
                    let p = bias.add(n0 + 8 * v);
                    let bv = if PARTIAL && v + 1 == NV { _mm256_maskload_ps(p, mask) } else { _mm256_loadu_ps(p) };
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
                *b = if PARTIAL && v + 1 == NV { _mm256_maskload_ps(p, mask) } else { _mm256_loadu_ps(p) };
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
    let mut m0 = 0;
    while m0 < m_total {
        let mr = (m_total - m0).min(TILE_M);
        let mut n0 = 0;
        while n0 < n_total {
            let width = (n_total - n0).min(TILE_N);
            let nv = width.div_ceil(8);
            let rem = width % 8;
            let mask = lane_mask(if rem == 0 { 8 } else { rem });
            // SAFETY: forwarded contract; the tile (m0.., n0..) lies inside C.
            unsafe { dispatch!(mr, nv, rem != 0, m0, n0, mask; 1 2 3 4 5 6) };
            n0 += TILE_N;
        }
        m0 += TILE_M;
    }
}

thread_local! {
    /// wᵀ [K, O8] followed by the bias [O8], O8 = O rounded up to 8, zero padded. Reused across
    /// calls on one thread (the only allocation of the linear kernels, amortised to none).
    static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// See [`super::linear::linear_forward_ref`].
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn linear_forward(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], rows: usize, k: usize, o: usize) {
    if rows == 0 || o == 0 {
        return;
    }
    let o8 = o.div_ceil(8) * 8;
    PACK.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        buf.resize(k * o8 + o8, 0.0);
        let (wt, bias) = buf.split_at_mut(k * o8);
        for (j, wj) in w.chunks_exact(k.max(1)).take(o).enumerate() {
            for (p, &v) in wj.iter().enumerate() {
                wt[p * o8 + j] = v;
            }
        }
        bias[..o].copy_from_slice(b);
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
pub(crate) unsafe fn linear_backward_dx(dy: &[f32], w: &[f32], dx: &mut [f32], rows: usize, k: usize, o: usize) {
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
            *a = if PARTIAL && v + 1 == NV { _mm256_maskload_ps(p, mask) } else { _mm256_loadu_ps(p) };
        }
        for r in r0..r0 + rc {
            let row = dy.add(r * cols + c0);
            for (v, a) in acc.iter_mut().enumerate() {
                let p = row.add(8 * v);
                let x = if PARTIAL && v + 1 == NV { _mm256_maskload_ps(p, mask) } else { _mm256_loadu_ps(p) };
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

/// See [`super::gelu::gelu_forward_ref`].
///
/// # Safety
/// AVX2+FMA present; x.len() == y.len() checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_forward(x: &[f32], y: &mut [f32]) {
    let n8 = x.len() - x.len() % 8;
    let c = splat(FRAC_1_SQRT_2 as f32);
    let half = splat(0.5);
    for (xs, ys) in x[..n8].chunks_exact(8).zip(y[..n8].chunks_exact_mut(8)) {
        // SAFETY: both chunks hold exactly 8 f32.
        let xv = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
        let e = erf8(_mm256_mul_ps(xv, c));
        let h = _mm256_mul_ps(half, xv);
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(ys.as_mut_ptr(), _mm256_fmadd_ps(h, e, h)) };
    }
    gelu_forward_ref::<f32>(&x[n8..], &mut y[n8..]);
}

/// See [`super::gelu::gelu_backward_ref`].
///
/// # Safety
/// AVX2+FMA present; equal lengths checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let n8 = x.len() - x.len() % 8;
    let c = splat(FRAC_1_SQRT_2 as f32);
    let half = splat(0.5);
    let neg_half = splat(-0.5);
    let inv_sqrt_2pi = splat(FRAC_1_SQRT_2PI as f32);
    for ((xs, gs), ds) in x[..n8].chunks_exact(8).zip(dy[..n8].chunks_exact(8)).zip(dx[..n8].chunks_exact_mut(8)) {
        // SAFETY: every chunk holds exactly 8 f32.
        let (xv, gv) = unsafe { (_mm256_loadu_ps(xs.as_ptr()), _mm256_loadu_ps(gs.as_ptr())) };
        let e = erf8(_mm256_mul_ps(xv, c));
        let cdf = _mm256_fmadd_ps(e, half, half);
        let pdf = _mm256_mul_ps(exp8(_mm256_mul_ps(_mm256_mul_ps(neg_half, xv), xv)), inv_sqrt_2pi);
        let d = _mm256_mul_ps(gv, _mm256_fmadd_ps(xv, pdf, cdf));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(ds.as_mut_ptr(), d) };
    }
    gelu_backward_ref::<f32>(&x[n8..], &dy[n8..], &mut dx[n8..]);
}

// =============================================================================================
// Time features
// =============================================================================================

/// See [`super::time_features::time_features_ref`]; lanes = frequencies k.
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn time_features(t: &[f32], freqs: &[f32], phase: &[f32], out: &mut [f32]) {
    let f = freqs.len();
    if f == 0 {
        return;
    }
    let f8 = f - f % 8;
    for (&ti, row) in t.iter().zip(out.chunks_exact_mut(2 * f)) {
        let tv = splat(ti);
        let (sin_row, cos_row) = row.split_at_mut(f);
        let mut k = 0;
        while k < f8 {
            // SAFETY: k + 8 ≤ f8 ≤ f = len of freqs, phase, sin_row, cos_row.
            unsafe {
                let a = _mm256_fmadd_ps(tv, _mm256_loadu_ps(freqs.as_ptr().add(k)), _mm256_loadu_ps(phase.as_ptr().add(k)));
                let (s, c) = sin_cos8(a);
                _mm256_storeu_ps(sin_row.as_mut_ptr().add(k), s);
                _mm256_storeu_ps(cos_row.as_mut_ptr().add(k), c);
            }
            k += 8;
        }
        for k in f8..f {
            let (s, c) = sin_cos_f32(ti.mul_add(freqs[k], phase[k]));
            sin_row[k] = s;
            cos_row[k] = c;
        }
    }
}

/// See [`super::time_features::time_features_backward_ref`]; lanes = frequencies k, the
/// accumulator of each k stays in its lane over i ascending.
///
/// # Safety
/// AVX2+FMA present; shapes checked by the caller.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn time_features_backward(t: &[f32], freqs: &[f32], phase: &[f32], dout: &[f32], dphase: &mut [f32]) {
    let f = freqs.len();
    if f == 0 {
        return;
    }
    let f8 = f - f % 8;
    let mut k = 0;
    while k < f8 {
        // SAFETY: k + 8 ≤ f; dout rows have 2f entries and there are t.len() of them.
        unsafe {
            let fv = _mm256_loadu_ps(freqs.as_ptr().add(k));
            let pv = _mm256_loadu_ps(phase.as_ptr().add(k));
            let mut acc = _mm256_loadu_ps(dphase.as_ptr().add(k));
            for (i, &ti) in t.iter().enumerate() {
                let (s, c) = sin_cos8(_mm256_fmadd_ps(splat(ti), fv, pv));
                let row = dout.as_ptr().add(i * 2 * f + k);
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(row), c, acc);
                acc = _mm256_fnmadd_ps(_mm256_loadu_ps(row.add(f)), s, acc);
            }
            _mm256_storeu_ps(dphase.as_mut_ptr().add(k), acc);
        }
        k += 8;
    }
    for k in f8..f {
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
    let msplat = splat(m);
    let mut acc = _mm256_setzero_ps();
    for c in x[..n8].chunks_exact(8) {
        // SAFETY: the chunk holds 8 f32.
        let xv = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(xv, msplat)));
    }
    let mut s = hsum_tree(acc);
    for &v in &x[n8..] {
        s += exp_f32(v - m);
    }
    m + s.ln()
}

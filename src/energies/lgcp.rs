//! LGCP (spec §1.5): a log-Gaussian Cox process on the Finnish pines, in the unwhitened form the
//! PIS/DDS benchmarks use — the sampler works directly on the latent log-intensity x ∈ ℝ^D,
//! D = M² = 1600 (an M × M grid, M = 40).
//!
//! log R(x) = −½ (x−μ₀)ᵀ K⁻¹ (x−μ₀) − (D/2) ln 2π − ½ ln det K + Σ_i (x_i·y_i − a·e^{x_i})
//!
//! with y the pine counts per grid cell, a = 1/D the cell area, μ₀ = ln N − σ²/2 (N = 126 points),
//! and K_mn = σ² exp(−‖g_m − g_n‖₂ / (M β)) over integer grid coordinates g (σ² = 1.91,
//! β = 1/33). log Z is unknown and there is no exact sampler, so `log_z` and `sample` stay `None`.
//!
//! ## What is computed once, and why
//! K is fixed, so construction does all the O(D³) work in f64 (D³/2 ≈ 2·10⁹ multiply-adds, about
//! a second in release; K is well conditioned, cond(K) ≈ 27.6, so nothing below needs pivoting):
//! 1. the Cholesky factor K = L Lᵀ (packed rows; log det K = 2 Σ ln L_ii), D³/6;
//! 2. U = L⁻ᵀ, one column of L⁻¹ per forward substitution, D³/6 — kept in f64 for log R;
//! 3. K⁻¹ = U Uᵀ, D³/6, rounded to f32 and stored as column panels for the batched gradient.
//!
//! **log R** (the reward; the TB loss sees it directly) stays in f64 and uses the explicit
//! U = L⁻ᵀ: quadratic form ‖Uᵀ(x − μ₀)‖² = (x−μ₀)ᵀK⁻¹(x−μ₀), D²/2 multiply-adds per row (U is
//! triangular) — half of a dense K⁻¹ product — and it cannot come out negative. Unlike forward
//! substitution with L (a recurrence along each row), every z_k = Σ_j r_j U_jk is an independent
//! sum, so the batch runs as a register-blocked triangular GEMM over 8-column strips of U
//! (`quad_strips`). An explicit inverse of a matrix this well conditioned loses nothing visible
//! in f64 (`tests/lgcp.rs` checks log R against elimination and conjugate gradients to 1e-11).
//!
//! **∇log R** = −K⁻¹(x − μ₀) + y − a·e^x is needed at all T steps for all B rows when the Langevin
//! parametrisation is on, i.e. a [B, D] × [D, D] product per step. A triangular solve is a
//! sequential recurrence per row and does not map onto a GEMM, while K⁻¹ (dense, symmetric) does,
//! so the gradient uses the explicit f32 K⁻¹ through the crate's SIMD GEMM
//! ([`Kernels::linear_backward_dx`]). Precision: each component of K⁻¹r is one sequential f32 FMA
//! chain over the D terms (with K⁻¹ and r = x − μ₀ each rounded to f32 once), so its error is at
//! most about D·2⁻²⁴·Σ_j|K⁻¹_ij r_j| (worst case) and in practice below 10⁻⁵ absolute: at most
//! 6.6·10⁻⁶ over all components at |x − μ₀| of order 1–3 against an f64 gradient
//! (`tests/lgcp.rs`, preset `LGCP_GRAD_F32`). The likelihood term y − a·e^x is evaluated in f64 and
//! the sum is rounded to f32 once. Downstream the gradient is clipped to ±`lgv_clip` (100) anyway.
//!
//! ## Determinism
//! Every reduction has a fixed order. The f64 kernels (`dot_many`, `strip_acc`) have a
//! portable version and an AVX2 twin doing the same rounded multiplies and adds in the same order
//! (bitwise equal, unit-tested); they use no FMA, so the portable path needs no software `fma`
//! on CPUs without one. The f32 GEMM is the crate's (bitwise equal with and without AVX2+FMA).
//! Nothing depends on the thread count: there are no threads here. The trainer already splits
//! the batch into row shards on its own threads (`train.shards`) and calls the energy from each,
//! so threads inside the energy would only oversubscribe the cores.
//!
//! The batched methods compute every row with exactly the operations of the row methods (the
//! GEMM's chains do not depend on the number of rows), so `log_reward` equals `log_reward_row` and
//! `grad_log_reward` equals `grad_log_reward_row` bit for bit.

use super::Energy;
use crate::cpu::Kernels;
use crate::data::{self, DataError};
use std::fmt;
use std::path::Path;

/// M, grid cells per axis (D = M² = 1600).
pub const GRID: usize = 40;
/// σ², the prior's marginal variance.
pub const SIGMA2: f64 = 1.91;
/// β, the prior's length scale as a fraction of the unit square (M·β = 40/33 grid cells).
pub const BETA: f64 = 1.0 / 33.0;
/// The pines table, relative to the data folder (and its name in `SHA256SUMS`).
pub const PINES_FILE: &str = "lgcp/pines.csv";

/// ln 2π.
const LOG_TAU: f64 = 1.837_877_066_409_345_5;
/// Rows of L (Cholesky) or columns of L⁻¹ (inverse) computed together at construction: each row
/// of L or U read from memory serves this many dot products. L and U are 10 MB each, more than
/// the last-level cache, so the unblocked recurrences are bound by memory traffic (measured:
/// construction 2.05 s with 1, 0.78 s with 4; 4 rows × 2 ymm of accumulators fill half the
/// registers).
const BLOCK: usize = 4;
/// Rows per register block of the log R strip kernel: 4 rows × 8 columns of f64 accumulators.
const QUAD_ROWS: usize = 4;
/// Rows per pass over the strips of U in the batched log R: U (10 MB) is read from memory once
/// per group of this many rows instead of once per register block. Measured at B = 300 (time
/// relative to 64): 4 → 2×, 8 → 1.4×, 16 → 1.15×, 32 → 1.05×, all 300 at once → 0.97×; 64 keeps
/// the group's residuals (800 KiB) well inside the last-level cache for any B.
const QUAD_GROUP: usize = 64;
/// Columns per strip of U (one strip is 8 f64 columns, two ymm).
const STRIP: usize = 8;
/// Columns of K⁻¹ per GEMM panel in the gradient. A [D, 32] f32 panel is 200 KiB, so it stays in
/// L2 while every 6-row tile of the batch streams past it; without panels the whole K⁻¹ (10 MB,
/// more than the last-level cache) comes from DRAM once per row tile. Measured at B = 300 on a
/// 512 KiB-L2 core: 16 → 1.15×, 32 → 1×, 48 → 1×, 64 → 1.15×, 128 → 1.4×, 256 → 1.5×,
/// unpanelled → 4× the time of 32. Panels change only the cache behaviour: every output is still
/// one FMA chain over all D rows of K⁻¹, so the result does not depend on this value.
const PANEL: usize = 32;

/// Σ a_k·b_k over `a.len()` terms for R right-hand vectors at once (each `b[q]` at least as long
/// as `a`), returning one sum per vector. Order, per vector: 8 lane sums from 0, lane l takes the
/// products k ≡ l (mod 8) of the first n − n mod 8 terms in ascending k (lane = lane + a·b, a
/// rounded multiply then a rounded add, never an FMA); lanes combined as
/// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)); then the tail products added in ascending k — the order
/// of [`crate::cpu::reduce`]'s `sum`. The result does not depend on R. Runs [`avx2::dot_many`]
/// when the CPU has AVX2, [`dot_many_portable`] otherwise; the two are bitwise equal.
#[inline]
fn dot_many<const R: usize>(a: &[f64], b: [&[f64]; R]) -> [f64; R] {
    for bq in &b {
        assert!(bq.len() >= a.len(), "dot_many: b[q] shorter than a");
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_available() {
        // SAFETY: AVX2 detected on this CPU; every b[q] is at least as long as a (checked above).
        return unsafe { avx2::dot_many::<R>(a, b) };
    }
    dot_many_portable::<R>(a, b)
}

/// [`dot_many`] as plain Rust (the reference for [`avx2::dot_many`] and the path on CPUs without
/// AVX2).
fn dot_many_portable<const R: usize>(a: &[f64], b: [&[f64]; R]) -> [f64; R] {
    let n = a.len();
    let (a8, a_tail) = a.as_chunks::<8>();
    let mut b8: [&[[f64; 8]]; R] = [&[]; R];
    for (bq, src) in b8.iter_mut().zip(&b) {
        *bq = src[..a8.len() * 8].as_chunks::<8>().0;
    }
    let mut lane = [[0.0f64; 8]; R];
    for (c, av) in a8.iter().enumerate() {
        for (lq, bq) in lane.iter_mut().zip(&b8) {
            let bv = &bq[c];
            for l in 0..8 {
                lq[l] += av[l] * bv[l];
            }
        }
    }
    let n8 = n - a_tail.len();
    let mut out = [0.0f64; R];
    for ((o, l), bq) in out.iter_mut().zip(&lane).zip(&b) {
        let mut s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        for (k, &ak) in a_tail.iter().enumerate() {
            s += ak * bq[n8 + k];
        }
        *o = s;
    }
    out
}

/// acc[q][t] = Σ_{j<jn} r[q][j]·st[j, t] for one strip st ([jn, 8], row-major) and R residual
/// rows (each at least jn long): per (q, t) one chain acc = acc + r·u, j ascending, from 0.
/// Runs [`avx2::strip_acc`] when the CPU has AVX2, [`strip_acc_portable`] otherwise (bitwise
/// equal).
#[inline]
fn strip_acc<const R: usize>(st: &[f64], r: [&[f64]; R]) -> [[f64; STRIP]; R] {
    let jn = st.len() / STRIP;
    assert_eq!(st.len(), jn * STRIP, "strip_acc: strip is not [jn, 8]");
    for rq in &r {
        assert!(
            rq.len() >= jn,
            "strip_acc: residual row shorter than the strip"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_available() {
        // SAFETY: AVX2 detected on this CPU; st is [jn, 8] and every r[q] has ≥ jn entries.
        return unsafe { avx2::strip_acc::<R>(st, r) };
    }
    strip_acc_portable::<R>(st, r)
}

/// [`strip_acc`] as plain Rust.
fn strip_acc_portable<const R: usize>(st: &[f64], r: [&[f64]; R]) -> [[f64; STRIP]; R] {
    let mut acc = [[0.0f64; STRIP]; R];
    for (j, uj) in st.as_chunks::<STRIP>().0.iter().enumerate() {
        for (aq, rq) in acc.iter_mut().zip(&r) {
            let x = rq[j];
            for t in 0..STRIP {
                aq[t] += x * uj[t];
            }
        }
    }
    acc
}

/// The AVX2 twins of the f64 kernels: the same multiplies and adds in the same order (no FMA),
/// four f64 lanes per ymm, so bitwise equal to the portable versions. Autovectorisation of the
/// portable loops (with or without `target_feature`) gave shuffle-heavy code at 3–5× the time.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::STRIP;
    use std::arch::x86_64::*;

    /// See [`super::dot_many`]: lanes 0–3 in one ymm, 4–7 in another; h = lo + hi gives
    /// (l0+l4, l1+l5, l2+l6, l3+l7), then (h0+h2, h1+h3), then their sum.
    ///
    /// # Safety
    /// AVX2 present; every `b[q].len() >= a.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_many<const R: usize>(a: &[f64], b: [&[f64]; R]) -> [f64; R] {
        let n = a.len();
        let n8 = n - n % 8;
        let ap = a.as_ptr();
        let bp: [*const f64; R] = b.map(|bq| bq.as_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; R];
        let mut k = 0;
        // SAFETY (whole block): k + 8 ≤ n8 ≤ n ≤ b[q].len() for every load.
        unsafe {
            while k < n8 {
                let a0 = _mm256_loadu_pd(ap.add(k));
                let a1 = _mm256_loadu_pd(ap.add(k + 4));
                for (aq, &bq) in acc.iter_mut().zip(&bp) {
                    let b0 = _mm256_loadu_pd(bq.add(k));
                    let b1 = _mm256_loadu_pd(bq.add(k + 4));
                    aq[0] = _mm256_add_pd(aq[0], _mm256_mul_pd(a0, b0));
                    aq[1] = _mm256_add_pd(aq[1], _mm256_mul_pd(a1, b1));
                }
                k += 8;
            }
        }
        let mut out = [0.0f64; R];
        for ((o, aq), bq) in out.iter_mut().zip(&acc).zip(&b) {
            let h = _mm256_add_pd(aq[0], aq[1]);
            let g = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd::<1>(h));
            let mut s = _mm_cvtsd_f64(g) + _mm_cvtsd_f64(_mm_unpackhi_pd(g, g));
            for t in n8..n {
                s += a[t] * bq[t];
            }
            *o = s;
        }
        out
    }

    /// See [`super::strip_acc`]: per row two ymm accumulators (columns 0–3, 4–7), per strip row
    /// j two loads of U shared by the R rows and one broadcast of r[q][j] per row.
    ///
    /// # Safety
    /// AVX2 present; `st.len()` is a multiple of 8 and every `r[q].len() >= st.len() / 8`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn strip_acc<const R: usize>(
        st: &[f64],
        r: [&[f64]; R],
    ) -> [[f64; STRIP]; R] {
        let jn = st.len() / STRIP;
        let sp = st.as_ptr();
        let rp: [*const f64; R] = r.map(|rq| rq.as_ptr());
        let mut acc = [[_mm256_setzero_pd(); 2]; R];
        // SAFETY (whole block): j < jn, so the strip loads end at 8·jn = st.len() and each
        // r[q] read is at index j < jn ≤ r[q].len().
        unsafe {
            for j in 0..jn {
                let u0 = _mm256_loadu_pd(sp.add(STRIP * j));
                let u1 = _mm256_loadu_pd(sp.add(STRIP * j + 4));
                for (aq, &rq) in acc.iter_mut().zip(&rp) {
                    let x = _mm256_broadcast_sd(&*rq.add(j));
                    aq[0] = _mm256_add_pd(aq[0], _mm256_mul_pd(x, u0));
                    aq[1] = _mm256_add_pd(aq[1], _mm256_mul_pd(x, u1));
                }
            }
        }
        let mut out = [[0.0f64; STRIP]; R];
        for (o, aq) in out.iter_mut().zip(&acc) {
            // SAFETY: o is 8 f64, written as two unaligned 4-lane stores.
            unsafe {
                _mm256_storeu_pd(o.as_mut_ptr(), aq[0]);
                _mm256_storeu_pd(o.as_mut_ptr().add(4), aq[1]);
            }
        }
        out
    }
}

/// Σ a_k·b_k over `a.len()` terms, in the order of [`dot_many`].
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    dot_many::<1>(a, [b])[0]
}

/// Start of row i in packed lower-triangular storage (row i holds columns 0..=i).
#[inline(always)]
fn tri(i: usize) -> usize {
    i * (i + 1) / 2
}

/// Start of row j in packed upper-triangular storage of an n × n matrix (row j holds columns
/// j..n, n − j entries).
#[inline(always)]
fn upper(j: usize, n: usize) -> usize {
    j * n - tri(j) + j
}

/// Cholesky–Banachiewicz into packed rows `l` (see [`Cholesky::new`]); false on a non-positive
/// pivot. Rows are computed in blocks of [`BLOCK`]: for the columns left of the block, the
/// finished row j of L is read once for all the block's rows ([`dot_many`]); inside the block row
/// by row. Every entry is the same dot product in the same order as the unblocked recurrence.
fn factor(a: &[f64], n: usize, l: &mut [f64]) -> bool {
    let mut i0 = 0;
    while i0 < n {
        let rb = BLOCK.min(n - i0);
        let (done, block) = l.split_at_mut(tri(i0));
        // Row i0 + q of L starts at start(q) inside `block`.
        let start = |q: usize| tri(i0 + q) - tri(i0);
        for j in 0..i0 {
            let lj = &done[tri(j)..tri(j) + j + 1];
            let s: [f64; BLOCK] = if rb == BLOCK {
                dot_many::<BLOCK>(
                    &lj[..j],
                    std::array::from_fn(|q| &block[start(q)..start(q) + j]),
                )
            } else {
                std::array::from_fn(|q| {
                    let q = q.min(rb - 1); // unused lanes repeat the last row
                    dot(&lj[..j], &block[start(q)..start(q) + j])
                })
            };
            for (q, &sq) in s.iter().enumerate().take(rb) {
                block[start(q) + j] = (a[(i0 + q) * n + j] - sq) / lj[j];
            }
        }
        for q in 0..rb {
            let i = i0 + q;
            let (before, rest) = block.split_at_mut(start(q));
            let li = &mut rest[..=i];
            for j in i0..i {
                let lj = &before[start(j - i0)..start(j - i0) + j + 1];
                let s = a[i * n + j] - dot(&li[..j], &lj[..j]);
                li[j] = s / lj[j];
            }
            let s = a[i * n + i] - dot(&li[..i], &li[..i]);
            if s.is_nan() || s <= 0.0 {
                return false;
            }
            li[i] = s.sqrt();
        }
        i0 += rb;
    }
    true
}

/// U = L⁻ᵀ into packed upper rows `u`: row j of U is column j of W = L⁻¹, found by forward
/// substitution of e_j: W_jj = 1/L_jj and, for k > j, W_kj = −(Σ_{j≤t<k} L_kt W_tj) / L_kk.
///
/// Columns go in blocks of R = [`BLOCK`] (j = j0 + q): column q is kept with q leading zeros,
/// w_q[t] = W_{j0+t, j0+q}, so all R columns share the same slice L_k[j0..k] of each row of L and
/// row k is read once per block ([`dot_many`]). The extra terms are exact zeros.
fn inv_transpose(l: &[f64], n: usize, u: &mut [f64]) {
    let mut w = vec![0.0f64; BLOCK * n];
    let mut j0 = 0;
    while j0 < n {
        let rb = BLOCK.min(n - j0);
        let len = n - j0;
        w.fill(0.0);
        for k in j0..n {
            let lk = &l[tri(k)..tri(k) + k + 1];
            let t = k - j0;
            let s = dot_many::<BLOCK>(&lk[j0..k], std::array::from_fn(|q| &w[q * n..q * n + t]));
            for (q, &sq) in s.iter().enumerate().take(rb) {
                w[q * n + t] = match k.cmp(&(j0 + q)) {
                    std::cmp::Ordering::Less => 0.0,
                    std::cmp::Ordering::Equal => 1.0 / lk[k],
                    std::cmp::Ordering::Greater => -sq / lk[k],
                };
            }
        }
        for q in 0..rb {
            let j = j0 + q;
            u[upper(j, n)..upper(j, n) + n - j].copy_from_slice(&w[q * n + q..q * n + len]);
        }
        j0 += rb;
    }
}

/// The lower triangle of A⁻¹ = U Uᵀ into packed rows `g` (U = L⁻ᵀ from [`inv_transpose`]):
/// A⁻¹_mp = Σ_{k ≥ m} U_mk U_pk for p ≤ m, a dot product of two contiguous rows of U.
///
/// Rows go in blocks of R = [`BLOCK`] (m = m0 + q), each copied with q leading zeros so that it
/// starts at column m0 like the others; then every row p of U is read once per block.
fn gram(u: &[f64], n: usize, g: &mut [f64]) {
    let mut v = vec![0.0f64; BLOCK * n];
    let mut m0 = 0;
    while m0 < n {
        let rb = BLOCK.min(n - m0);
        let len = n - m0;
        v.fill(0.0);
        for q in 0..rb {
            let m = m0 + q;
            v[q * n + q..q * n + len].copy_from_slice(&u[upper(m, n)..upper(m, n) + n - m]);
        }
        for p in 0..m0 + rb {
            let a = if p < m0 {
                &u[upper(p, n) + (m0 - p)..upper(p, n) + n - p]
            } else {
                &v[(p - m0) * n..(p - m0) * n + len]
            };
            let s = dot_many::<BLOCK>(a, std::array::from_fn(|q| &v[q * n..q * n + len]));
            for (q, &sq) in s.iter().enumerate().take(rb) {
                if p <= m0 + q {
                    g[tri(m0 + q) + p] = sq;
                }
            }
        }
        m0 += rb;
    }
}

/// Number of [`STRIP`]-column strips of an n-column matrix.
#[inline(always)]
fn strips(n: usize) -> usize {
    n.div_ceil(STRIP)
}

/// Rows of U that strip s needs: U is upper triangular, so columns below 8s + 8 only have
/// nonzeros in rows below that (clamped to n).
#[inline(always)]
fn strip_rows(s: usize, n: usize) -> usize {
    (STRIP * s + STRIP).min(n)
}

/// Start of strip s in the strip layout (see [`Lgcp`]'s `u_strips`): Σ_{t<s} 8·strip_rows(t),
/// and strip_rows(t) = 8t + 8 for every strip but the last.
#[inline(always)]
fn strip_start(s: usize) -> usize {
    STRIP * STRIP * tri(s)
}

/// ‖U ᵀr_q‖² = ‖L⁻¹ r_q‖² for the `rows` residual rows r ([rows, n], f64) into `out` [rows].
///
/// z = Uᵀr strip by strip: z_k = Σ_j r_j U_jk with j ascending over the strip's rows (the entries
/// below the diagonal are stored zeros, so they add exact zeros), one f64 chain per z_k; then
/// out = Σ_k z_k², k ascending. Rows go in groups of [`QUAD_GROUP`], strips inside, register
/// blocks of [`QUAD_ROWS`] rows inside that (a shorter last block runs one row at a time); none of
/// this changes any row's operations, so one row alone gives the same bits as in any batch.
fn quad_strips(u_strips: &[f64], n: usize, r: &[f64], out: &mut [f64]) {
    let rows = out.len();
    out.fill(0.0);
    for g0 in (0..rows).step_by(QUAD_GROUP) {
        let g1 = (g0 + QUAD_GROUP).min(rows);
        for s in 0..strips(n) {
            let jn = strip_rows(s, n);
            let st = &u_strips[strip_start(s)..strip_start(s) + STRIP * jn];
            let width = STRIP.min(n - STRIP * s);
            let mut b0 = g0;
            while b0 < g1 {
                if g1 - b0 >= QUAD_ROWS {
                    strip_block::<QUAD_ROWS>(st, &r[b0 * n..], n, jn, width, &mut out[b0..]);
                    b0 += QUAD_ROWS;
                } else {
                    strip_block::<1>(st, &r[b0 * n..], n, jn, width, &mut out[b0..]);
                    b0 += 1;
                }
            }
        }
    }
}

/// One strip for R rows: acc = [`strip_acc`], then out[q] += Σ_{t<width} acc[q][t]², t
/// ascending.
#[inline(always)]
fn strip_block<const R: usize>(
    st: &[f64],
    r: &[f64],
    n: usize,
    jn: usize,
    width: usize,
    out: &mut [f64],
) {
    let mut rq: [&[f64]; R] = [&[]; R];
    for (q, slot) in rq.iter_mut().enumerate() {
        *slot = &r[q * n..q * n + jn];
    }
    let acc = strip_acc::<R>(st, rq);
    for (o, aq) in out.iter_mut().zip(&acc) {
        for &z in &aq[..width] {
            *o += z * z;
        }
    }
}

/// The Cholesky factor L of a symmetric positive-definite n × n matrix (A = L Lᵀ), in f64, stored
/// as packed rows (row i holds L[i, 0..=i]).
#[derive(Clone)]
pub struct Cholesky {
    n: usize,
    /// Packed lower triangle, n(n+1)/2 entries.
    l: Vec<f64>,
}

impl Cholesky {
    /// Factor the symmetric `a` ([n, n] row-major; only the lower triangle is read) by the
    /// row-oriented Cholesky–Banachiewicz recurrence
    ///   L_ij = (A_ij − Σ_{k<j} L_ik L_jk) / L_jj,   L_ii = √(A_ii − Σ_{k<i} L_ik²),
    /// whose inner sums are dot products of two contiguous packed rows, each in a fixed 8-lane
    /// order. No pivoting: `None` when a pivot is not positive (A not positive definite, or too
    /// ill-conditioned for f64). Cost n³/6 multiply-adds; deterministic.
    pub fn new(a: &[f64], n: usize) -> Option<Cholesky> {
        assert_eq!(a.len(), n * n, "Cholesky::new: a.len() != n²");
        let mut l = vec![0.0f64; tri(n)];
        factor(a, n, &mut l).then_some(Cholesky { n, l })
    }

    /// n, the matrix size.
    pub fn dim(&self) -> usize {
        self.n
    }

    /// Row i of L: L[i, 0..=i].
    pub fn row(&self, i: usize) -> &[f64] {
        &self.l[tri(i)..tri(i) + i + 1]
    }

    /// ln det A = 2 Σ_i ln L_ii (i ascending).
    pub fn log_det(&self) -> f64 {
        let mut s = 0.0;
        for i in 0..self.n {
            s += self.row(i)[i].ln();
        }
        2.0 * s
    }

    /// ‖L⁻¹ r‖² = rᵀA⁻¹r for one vector r of length n by forward substitution in f64,
    /// z_i = (r_i − Σ_{k<i} L_ik z_k) / L_ii. (A reference path: [`Lgcp`] computes the same
    /// quantity through the explicit L⁻¹, which batches better.)
    pub fn quad_form(&self, r: &[f64]) -> f64 {
        assert_eq!(r.len(), self.n, "Cholesky::quad_form: r.len() != n");
        let mut z = vec![0.0f64; self.n];
        let mut quad = 0.0;
        for i in 0..self.n {
            let li = self.row(i);
            let zi = (r[i] - dot(&li[..i], &z[..i])) / li[i];
            z[i] = zi;
            quad += zi * zi;
        }
        quad
    }

    /// U = L⁻ᵀ (upper triangular) as packed rows: row j holds U[j, j..n].
    fn inverse_transpose(&self) -> Vec<f64> {
        let mut u = vec![0.0f64; tri(self.n)];
        inv_transpose(&self.l, self.n, &mut u);
        u
    }

    /// A⁻¹ = L⁻ᵀ L⁻¹ as a dense [n, n] row-major f64 matrix (exactly symmetric). Cost n³/3
    /// multiply-adds (n³/6 for L⁻¹, n³/6 for the symmetric product).
    pub fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        let mut g = vec![0.0f64; tri(n)];
        gram(&self.inverse_transpose(), n, &mut g);
        let mut inv = vec![0.0f64; n * n];
        for m in 0..n {
            for p in 0..=m {
                inv[m * n + p] = g[tri(m) + p];
                inv[p * n + m] = g[tri(m) + p];
            }
        }
        inv
    }
}

impl fmt::Debug for Cholesky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cholesky")
            .field("n", &self.n)
            .field("log_det", &self.log_det())
            .finish_non_exhaustive()
    }
}

/// The prior covariance for an m × m grid: K_ij = σ² exp(−‖g_i − g_j‖₂ / (m β)) with
/// g_i = (i div m, i mod m), as a dense [m², m²] row-major f64 matrix.
pub fn prior_covariance(m: usize) -> Vec<f64> {
    let d = m * m;
    let scale = m as f64 * BETA;
    // K depends only on the offset (|Δrow|, |Δcol|), so tabulate its m² distinct values.
    let table: Vec<f64> = (0..d)
        .map(|t| {
            let (dr, dc) = ((t / m) as f64, (t % m) as f64);
            SIGMA2 * (-(dr * dr + dc * dc).sqrt() / scale).exp()
        })
        .collect();
    let mut k = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            let dr = (i / m).abs_diff(j / m);
            let dc = (i % m).abs_diff(j % m);
            k[i * d + j] = table[dr * m + dc];
        }
    }
    k
}

/// The counts y (m² of them) of `points` in the m × m grid of the unit square: point (p_x, p_y)
/// goes to cell (row, col) = (⌊m·p_x⌋, ⌊m·p_y⌋), a coordinate of exactly 1 clamped into the last
/// cell, flattened row-major (index row·m + col). Panics on a point outside [0, 1]².
pub fn bin_counts(points: &[[f64; 2]], m: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * m];
    let cell = |p: f64| ((m as f64 * p).floor() as usize).min(m - 1);
    for (i, &[px, py]) in points.iter().enumerate() {
        assert!(
            (0.0..=1.0).contains(&px) && (0.0..=1.0).contains(&py),
            "bin_counts: point {i} ({px}, {py}) is outside the unit square"
        );
        y[cell(px) * m + cell(py)] += 1.0;
    }
    y
}

/// The LGCP target on an M × M grid (see the module docs). States are x ∈ ℝ^D, D = M².
#[derive(Clone)]
pub struct Lgcp {
    /// M, cells per axis.
    m: usize,
    /// D = M².
    dim: usize,
    /// N, the number of points.
    num_points: usize,
    /// y [D], counts per cell (row-major).
    counts: Vec<f64>,
    /// μ₀ = ln N − σ²/2, the prior mean of every cell.
    mu0: f64,
    /// a = 1/D, the cell area.
    area: f64,
    /// ½ ln det K.
    half_log_det: f64,
    /// −(D/2) ln 2π − ½ ln det K, the prior's normaliser.
    log_norm: f64,
    /// U = L⁻ᵀ (f64, upper triangular, K⁻¹ = U Uᵀ) in strips of 8 columns for the f64 quadratic
    /// form: strip s holds U[j, 8s..8s+8] for j < strip_rows(s) as a contiguous
    /// [strip_rows(s), 8] block (entries below the diagonal and past column D are stored zeros),
    /// strips in order. One strip is one contiguous stream of the rows it needs.
    u_strips: Vec<f64>,
    /// K⁻¹ in f32 as column panels: panel c holds columns c·PANEL .. c·PANEL + w_c of K⁻¹ as a
    /// contiguous [D, w_c] row-major block (w_c = PANEL except possibly the last); panels in order.
    kinv_panels: Vec<f32>,
}

impl Lgcp {
    /// The LGCP of `points` (each in [0, 1]², e.g. from [`crate::data::csv::load_pines`]) on an
    /// `m` × `m` grid; the spec's target is `Lgcp::new(&pines, GRID)`. Smaller `m` gives the
    /// analogous target (same σ², β, μ₀ = ln N − σ²/2, a = 1/m²) for tests.
    ///
    /// Panics when `m` is 0, `points` is empty or a point is outside the unit square, or if K is
    /// not positive definite in f64 (it is for every m: the exponential kernel is positive
    /// definite, and cond(K) stays small).
    pub fn new(points: &[[f64; 2]], m: usize) -> Lgcp {
        assert!(m > 0, "Lgcp::new: grid size m must be positive");
        assert!(!points.is_empty(), "Lgcp::new: no points");
        let dim = m * m;
        let counts = bin_counts(points, m);
        let chol = Cholesky::new(&prior_covariance(m), dim)
            .expect("Lgcp::new: the prior covariance is not positive definite in f64");
        let half_log_det = 0.5 * chol.log_det();
        let u = chol.inverse_transpose();
        drop(chol);

        let ns = strips(dim);
        let mut u_strips = vec![0.0f64; strip_start(ns - 1) + STRIP * strip_rows(ns - 1, dim)];
        for s in 0..ns {
            let st = &mut u_strips[strip_start(s)..strip_start(s) + STRIP * strip_rows(s, dim)];
            for (j, row) in st.chunks_exact_mut(STRIP).enumerate() {
                for (t, v) in row.iter_mut().enumerate() {
                    let k = STRIP * s + t;
                    if j <= k && k < dim {
                        *v = u[upper(j, dim) + k - j];
                    }
                }
            }
        }

        // Lower triangle of K⁻¹ (packed rows), then both triangles into the f32 panels.
        let mut g = vec![0.0f64; tri(dim)];
        gram(&u, dim, &mut g);
        drop(u);
        let mut kinv_panels = Vec::with_capacity(dim * dim);
        for c0 in (0..dim).step_by(PANEL) {
            let w = PANEL.min(dim - c0);
            for i in 0..dim {
                kinv_panels.extend((c0..c0 + w).map(|p| {
                    let (hi, lo) = if p <= i { (i, p) } else { (p, i) };
                    g[tri(hi) + lo] as f32
                }));
            }
        }

        let num_points = points.len();
        Lgcp {
            m,
            dim,
            num_points,
            counts,
            mu0: (num_points as f64).ln() - 0.5 * SIGMA2,
            area: 1.0 / dim as f64,
            half_log_det,
            log_norm: -0.5 * dim as f64 * LOG_TAU - half_log_det,
            u_strips,
            kinv_panels,
        }
    }

    /// The spec's target (M = 40) from `dir`/`lgcp/pines.csv`, after checking the file against
    /// `dir`/`SHA256SUMS`. Errors name the file (missing, unreadable, wrong checksum, not a pines
    /// table).
    pub fn from_dir(dir: &Path) -> Result<Lgcp, DataError> {
        data::checksum::verify(dir, PINES_FILE)?;
        let points = data::csv::load_pines(&dir.join(PINES_FILE))?;
        Ok(Lgcp::new(&points, GRID))
    }

    /// [`Lgcp::from_dir`] on the project's `data/` folder ([`crate::data::project_dir`]).
    pub fn load_default() -> Result<Lgcp, DataError> {
        Lgcp::from_dir(&data::project_dir())
    }

    /// M, cells per axis.
    pub fn grid(&self) -> usize {
        self.m
    }

    /// N, the number of points binned.
    pub fn num_points(&self) -> usize {
        self.num_points
    }

    /// y, the D counts per cell, row-major.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// μ₀ = ln N − σ²/2 (spec: 3.881282 for N = 126).
    pub fn mu0(&self) -> f64 {
        self.mu0
    }

    /// a = 1/D, the cell area.
    pub fn area(&self) -> f64 {
        self.area
    }

    /// ½ ln det K (spec: 225.7055 at M = 40).
    pub fn half_log_det(&self) -> f64 {
        self.half_log_det
    }

    /// Σ_i (x_i y_i − a e^{x_i}) in f64, i ascending.
    fn log_likelihood(&self, x: &[f32]) -> f64 {
        let mut s = 0.0;
        for (&xi, &yi) in x.iter().zip(&self.counts) {
            let xi = xi as f64;
            s += xi * yi - self.area * xi.exp();
        }
        s
    }

    /// log R of the rows of x ([B, D]) into out [B]: (log_norm − ½‖L⁻¹(x − μ₀)‖²) +
    /// log-likelihood, every row with the same operations whatever B is.
    fn log_reward_rows(&self, x: &[f32], out: &mut [f64]) {
        let d = self.dim;
        assert_eq!(
            x.len(),
            out.len() * d,
            "Lgcp::log_reward: x.len() != out.len()·D"
        );
        let r: Vec<f64> = x.iter().map(|&v| v as f64 - self.mu0).collect();
        quad_strips(&self.u_strips, d, &r, out);
        for (o, xr) in out.iter_mut().zip(x.chunks_exact(d)) {
            *o = (self.log_norm - 0.5 * *o) + self.log_likelihood(xr);
        }
    }
}

impl fmt::Debug for Lgcp {
    /// A summary: the dense matrices are tens of MB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lgcp")
            .field("grid", &self.m)
            .field("dim", &self.dim)
            .field("num_points", &self.num_points)
            .field("mu0", &self.mu0)
            .field("half_log_det", &self.half_log_det)
            .finish_non_exhaustive()
    }
}

impl Energy for Lgcp {
    fn name(&self) -> String {
        "lgcp".into()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let mut out = [0.0f64];
        self.log_reward_rows(x, &mut out);
        out[0]
    }

    /// x [B, D] → one log R per row in out; see `quad_strips` for the blocking.
    fn log_reward(&self, x: &[f32], out: &mut [f64]) {
        self.log_reward_rows(x, out);
    }

    /// ∇log R = −K⁻¹(x − μ₀) + y − a·e^x (the batched path with B = 1).
    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        self.grad_log_reward(x, grad);
    }

    /// x, grad [B, D]. r = x − μ₀ rounded to f32 [B, D]; per panel c of K⁻¹, the f32 GEMM
    /// p = r · K⁻¹[:, panel] ([B, w_c], = K⁻¹ r by symmetry, one FMA chain over all D per
    /// element); then grad = ((y − a·e^x) − p) in f64, rounded to f32 once.
    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        let d = self.dim;
        assert_eq!(
            x.len() % d,
            0,
            "Lgcp::grad_log_reward: x.len() is not a multiple of D"
        );
        assert_eq!(
            grad.len(),
            x.len(),
            "Lgcp::grad_log_reward: grad.len() != x.len()"
        );
        let b = x.len() / d;
        let r: Vec<f32> = x.iter().map(|&v| (v as f64 - self.mu0) as f32).collect();
        let mut p = vec![0f32; b * PANEL.min(d)];
        for (c, c0) in (0..d).step_by(PANEL).enumerate() {
            let w = PANEL.min(d - c0);
            let panel = &self.kinv_panels[c * PANEL * d..c * PANEL * d + d * w];
            let p = &mut p[..b * w];
            f32::linear_backward_dx(&r, panel, p, b, w, d);
            for (row, pr) in p.chunks_exact(w).enumerate() {
                let cols = row * d + c0..row * d + c0 + w;
                for (((g, &xi), &yi), &pi) in grad[cols.clone()]
                    .iter_mut()
                    .zip(&x[cols])
                    .zip(&self.counts[c0..c0 + w])
                    .zip(pr)
                {
                    *g = ((yi - self.area * (xi as f64).exp()) - pi as f64) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn randv(n: usize, tag: u64) -> Vec<f64> {
        let mut v = vec![0f32; n];
        rng::fill_normals(&mut rng::stream(3, "lgcp-unit", tag), &mut v);
        v.iter().map(|&x| x as f64 * 1.37 + 0.1).collect()
    }

    fn bits<const R: usize>(v: [f64; R]) -> [u64; R] {
        v.map(f64::to_bits)
    }

    /// The dispatched kernels (AVX2 on this CPU when it has it) equal the portable ones bit for
    /// bit, at lengths around the 8-lane boundary, for R = 1 and R = 4.
    #[test]
    fn simd_kernels_equal_portable() {
        if !crate::cpu::simd_available() {
            eprintln!("skipped: no AVX2 on this CPU (the portable path is the only path)");
        }
        for (t, n) in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 100]
            .into_iter()
            .enumerate()
        {
            let a = randv(n, 10 * t as u64);
            let b: Vec<Vec<f64>> = (0..4)
                .map(|q| randv(n + q, 10 * t as u64 + 1 + q as u64))
                .collect();
            let b4 = [&b[0][..], &b[1][..], &b[2][..], &b[3][..]];
            assert_eq!(
                bits(dot_many::<4>(&a, b4)),
                bits(dot_many_portable::<4>(&a, b4)),
                "n {n}"
            );
            assert_eq!(
                bits(dot_many::<1>(&a, [&b[2][..]])),
                bits(dot_many_portable::<1>(&a, [&b[2][..]]))
            );
            // R does not change any sum.
            assert_eq!(dot_many::<4>(&a, b4)[1].to_bits(), dot(&a, &b[1]).to_bits());

            let st = randv(STRIP * n, 10 * t as u64 + 7);
            let r4 = [&b[0][..], &b[1][..], &b[2][..], &b[3][..]];
            let got = strip_acc::<4>(&st, r4);
            let want = strip_acc_portable::<4>(&st, r4);
            for q in 0..4 {
                assert_eq!(bits(got[q]), bits(want[q]), "strip n {n} row {q}");
                assert_eq!(bits(strip_acc::<1>(&st, [r4[q]])[0]), bits(got[q]));
            }
        }
    }

    /// The blocked factorisation and inverse at a size that is not a multiple of BLOCK:
    /// L Lᵀ = A and A⁻¹ A = I to f64 rounding.
    #[test]
    fn cholesky_reconstructs_and_inverts() {
        let n = 13;
        let g = randv(n * n, 99);
        // A = G Gᵀ + n·I, symmetric positive definite.
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| g[i * n + k] * g[j * n + k]).sum::<f64>()
                    + if i == j { n as f64 } else { 0.0 };
            }
        }
        let c = Cholesky::new(&a, n).unwrap();
        let inv = c.inverse();
        for i in 0..n {
            for j in 0..n {
                let llt: f64 = (0..=i.min(j)).map(|k| c.row(i)[k] * c.row(j)[k]).sum();
                assert!((llt - a[i * n + j]).abs() < 1e-12 * a[i * n + i]);
                let id: f64 = (0..n).map(|k| inv[i * n + k] * a[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((id - want).abs() < 1e-12, "(A⁻¹A)[{i},{j}] = {id}");
                assert_eq!(inv[i * n + j].to_bits(), inv[j * n + i].to_bits());
            }
        }
    }
}

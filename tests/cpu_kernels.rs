//! Tests of `src/cpu`: for every kernel
//! 1. the f32 AVX2 path equals the f32 portable path BITWISE (proptest over shapes incl. tails);
//! 2. f32 results agree with the f64 reference within error bounds derived from the op;
//! 3. the f32 elementary functions (erf, exp, sin/cos) are accurate on dense grids, and the
//!    backward kernels are the derivatives of the forward kernels (central differences, f64);
//! 4. `sum` / `logsumexp` against a naive f64 sum, and the documented summation order.
//!
//! Inputs come from a seeded SplitMix64 generator (the seed is a proptest parameter, so failures
//! shrink to a shape and a seed) and include exact zeros, −0.0 and large magnitudes.

use diffusion_samplers::cpu::{self, math, portable, simd, Kernels};
use diffusion_samplers::tolerance::{F32_VS_F64, GRADCHECK_F64};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Unit roundoff of f32, 2^-24.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// Bound for one f32 chain of `n` roundings (an FMA dot product or a running sum) against the
/// same chain in f64: |err| ≤ (n + 1)·u·Σ|terms| (the γ_n bound of Higham, *Accuracy and
/// Stability of Numerical Algorithms*, §3.1, with u the f32 unit roundoff; the f64 side adds
/// ~1e-16 relative). A fixed abs/rel preset such as `F32_VS_F64` is wrong for sums that cancel,
/// hence this eps·n-scaled bound (house style §2.4: faer's ε·n tolerances).
fn chain_close(got: f32, want: f64, n: usize, sum_abs: f64) -> bool {
    (got as f64 - want).abs() <= (n as f64 + 1.0) * U32 * sum_abs * 1.000_001 + 1e-37
}

/// |sin(a32) − sin(a64)| for the time-feature argument a = fma(t, f, φ), |a| < 128: the f32
/// argument is off by ≤ ulp(128)/2 = 3.8e-6, the f32 sin/cos adds ≤ 2e-7.
const TIME_FEATURE_ARG_ERR: f64 = 4e-6;

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unif(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.unif()) as f32
    }
    /// Mostly U(−1, 1); 5 % exact 0, 2 % −0.0, 3 % ±[1, 50].
    fn value(&mut self) -> f32 {
        let u = self.unif();
        if u < 0.05 {
            0.0
        } else if u < 0.07 {
            -0.0
        } else if u < 0.10 {
            let m = self.range(1.0, 50.0);
            if self.unif() < 0.5 {
                -m
            } else {
                m
            }
        } else {
            self.range(-1.0, 1.0)
        }
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
    fn vec_range(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn assert_bitwise(simd_out: &[f32], portable_out: &[f32], what: &str) {
    assert_eq!(simd_out.len(), portable_out.len(), "{what}: lengths differ");
    for (i, (a, b)) in simd_out.iter().zip(portable_out).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{what}[{i}]: simd {a:e} ({:#010x}) != portable {b:e} ({:#010x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

/// True when the AVX2 side can run; otherwise says so once (the bitwise tests then only exercise
/// the portable path, which is what such a CPU runs).
fn have_simd() -> bool {
    static NOTE: std::sync::Once = std::sync::Once::new();
    let ok = cpu::simd_available();
    if !ok {
        NOTE.call_once(|| {
            eprintln!("cpu_kernels: no AVX2+FMA on this CPU; SIMD-vs-portable comparison skipped")
        });
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// 1. SIMD == portable, bitwise
// ---------------------------------------------------------------------------------------------

/// Runs all three linear kernels on both paths and compares bitwise.
fn check_linear_bitwise(rows: usize, k: usize, o: usize, seed: u64) {
    let mut g = Rng(seed);
    let (x, w, b, dy) = (g.vec(rows * k), g.vec(o * k), g.vec(o), g.vec(rows * o));
    let (dw0, db0) = (g.vec(o * k), g.vec(o));
    let what = format!("rows={rows} k={k} o={o} seed={seed}");

    let mut y_p = vec![f32::NAN; rows * o];
    portable::linear_forward(&x, &w, &b, &mut y_p, rows, k, o);
    let mut dx_p = vec![f32::NAN; rows * k];
    portable::linear_backward_dx(&dy, &w, &mut dx_p, rows, k, o);
    let (mut dw_p, mut db_p) = (dw0.clone(), db0.clone());
    portable::linear_backward_dw(&dy, &x, &mut dw_p, &mut db_p, rows, k, o);

    // The trait dispatch must give the same bits whichever path it picks.
    let mut y_t = vec![f32::NAN; rows * o];
    <f32 as Kernels>::linear_forward(&x, &w, &b, &mut y_t, rows, k, o);
    assert_bitwise(&y_t, &y_p, &format!("Kernels::linear_forward {what}"));

    if !have_simd() {
        return;
    }
    let mut y_s = vec![f32::NAN; rows * o];
    simd::linear_forward(&x, &w, &b, &mut y_s, rows, k, o);
    assert_bitwise(&y_s, &y_p, &format!("linear_forward {what}"));
    let mut dx_s = vec![f32::NAN; rows * k];
    simd::linear_backward_dx(&dy, &w, &mut dx_s, rows, k, o);
    assert_bitwise(&dx_s, &dx_p, &format!("linear_backward_dx {what}"));
    let (mut dw_s, mut db_s) = (dw0, db0);
    simd::linear_backward_dw(&dy, &x, &mut dw_s, &mut db_s, rows, k, o);
    assert_bitwise(&dw_s, &dw_p, &format!("linear_backward_dw dw {what}"));
    assert_bitwise(&db_s, &db_p, &format!("linear_backward_dw db {what}"));
}

fn check_gelu_bitwise(x: &[f32], dy: &[f32]) {
    let n = x.len();
    let mut y_p = vec![f32::NAN; n];
    portable::gelu_forward(x, &mut y_p);
    let mut dx_p = vec![f32::NAN; n];
    portable::gelu_backward(x, dy, &mut dx_p);
    assert!(
        y_p.iter().chain(&dx_p).all(|v| !v.is_nan()),
        "gelu produced NaN on finite input"
    );
    if !have_simd() {
        return;
    }
    let mut y_s = vec![f32::NAN; n];
    simd::gelu_forward(x, &mut y_s);
    assert_bitwise(&y_s, &y_p, &format!("gelu_forward n={n}"));
    let mut dx_s = vec![f32::NAN; n];
    simd::gelu_backward(x, dy, &mut dx_s);
    assert_bitwise(&dx_s, &dx_p, &format!("gelu_backward n={n}"));
    check_gelu_deriv_bitwise(x, dy, &y_p, &dx_p);
}

/// The fused forward+derivative kernel: SIMD ≡ portable, y ≡ gelu_forward and dy·g ≡
/// gelu_backward, bit for bit (the tape relies on the last two).
fn check_gelu_deriv_bitwise(x: &[f32], dy: &[f32], y_ref: &[f32], dx_ref: &[f32]) {
    let n = x.len();
    let (mut y_p, mut g_p) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    portable::gelu_forward_deriv(x, &mut y_p, &mut g_p);
    assert_bitwise(&y_p, y_ref, &format!("gelu_forward_deriv y n={n}"));
    let dx: Vec<f32> = dy.iter().zip(&g_p).map(|(a, b)| a * b).collect();
    assert_bitwise(&dx, dx_ref, &format!("dy·gelu_forward_deriv g n={n}"));
    let (mut y_s, mut g_s) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    simd::gelu_forward_deriv(x, &mut y_s, &mut g_s);
    assert_bitwise(&y_s, &y_p, &format!("gelu_forward_deriv simd y n={n}"));
    assert_bitwise(&g_s, &g_p, &format!("gelu_forward_deriv simd g n={n}"));
}

fn check_time_features_bitwise(
    t: &[f32],
    freqs: &[f32],
    phase: &[f32],
    dout: &[f32],
    dphase0: &[f32],
) {
    let (nt, f) = (t.len(), freqs.len());
    let mut out_p = vec![f32::NAN; nt * 2 * f];
    portable::time_features(t, freqs, phase, &mut out_p);
    let mut dph_p = dphase0.to_vec();
    portable::time_features_backward(t, freqs, phase, dout, &mut dph_p);
    if !have_simd() {
        return;
    }
    let mut out_s = vec![f32::NAN; nt * 2 * f];
    simd::time_features(t, freqs, phase, &mut out_s);
    assert_bitwise(&out_s, &out_p, &format!("time_features T={nt} F={f}"));
    let mut dph_s = dphase0.to_vec();
    simd::time_features_backward(t, freqs, phase, dout, &mut dph_s);
    assert_bitwise(
        &dph_s,
        &dph_p,
        &format!("time_features_backward T={nt} F={f}"),
    );
}

fn check_reductions_bitwise(x: &[f32]) {
    let (s_p, l_p) = (portable::sum(x), portable::logsumexp(x));
    if !have_simd() {
        return;
    }
    let n = x.len();
    assert_bitwise(&[simd::sum(x)], &[s_p], &format!("sum n={n}"));
    assert_bitwise(&[simd::logsumexp(x)], &[l_p], &format!("logsumexp n={n}"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn linear_simd_eq_portable(rows in 1usize..70, k in 1usize..70, o in 1usize..70, seed in any::<u64>()) {
        check_linear_bitwise(rows, k, o, seed);
    }

    #[test]
    fn gelu_simd_eq_portable(n in 0usize..200, seed in any::<u64>()) {
        let mut g = Rng(seed);
        // values spread over [−8, 8] (both erf branches, the clamp at |x|/√2 = 4) plus the mix
        let x: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { g.range(-8.0, 8.0) } else { g.value() }).collect();
        check_gelu_bitwise(&x, &g.vec(n));
    }

    #[test]
    fn time_features_simd_eq_portable(nt in 1usize..70, f in 1usize..70, seed in any::<u64>()) {
        let mut g = Rng(seed);
        // the drift net's ranges: t ∈ [0, 1], f up to 100, φ ~ O(1)
        let t = g.vec_range(nt, 0.0, 1.0);
        let freqs = g.vec_range(f, 0.0, 100.0);
        let phase = g.vec_range(f, -3.0, 3.0);
        check_time_features_bitwise(&t, &freqs, &phase, &g.vec(nt * 2 * f), &g.vec(f));
    }

    #[test]
    fn col_sum_simd_eq_portable(rows in 1usize..70, cols in 1usize..70, seed in any::<u64>()) {
        let mut g = Rng(seed);
        let (dy, out0) = (g.vec(rows * cols), g.vec(cols));
        let mut out_p = out0.clone();
        portable::col_sum_acc(&dy, &mut out_p, rows, cols);
        if have_simd() {
            let mut out_s = out0;
            simd::col_sum_acc(&dy, &mut out_s, rows, cols);
            assert_bitwise(&out_s, &out_p, &format!("col_sum_acc rows={rows} cols={cols}"));
        }
    }

    #[test]
    fn reductions_simd_eq_portable(n in 0usize..300, seed in any::<u64>()) {
        let mut g = Rng(seed);
        check_reductions_bitwise(&g.vec(n));
        // logsumexp also on a wide range (terms spanning many orders of magnitude, underflow)
        check_reductions_bitwise(&g.vec_range(n, -120.0, 20.0));
    }
}

#[test]
fn linear_bitwise_paper_sizes_and_edges() {
    // B·T rows in shards, H = 64 hidden, D = 2 / 10 / 32 state dims (K or O small), and empty dims.
    for &(rows, k, o) in &[
        (300, 64, 64),
        (1000, 64, 64),
        (257, 2, 64),
        (257, 64, 2),
        (300, 64, 4),
        (131, 10, 64),
        (131, 64, 32),
        (130, 33, 17),
        (7, 1, 1),
        (6, 16, 16),
        (5, 8, 9),
    ] {
        check_linear_bitwise(rows, k, o, 42 + rows as u64);
    }
    // zero-sized dims: no panic, forward with K = 0 is the bias, dx with O = 0 is zero
    for &(rows, k, o) in &[(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0)] {
        check_linear_bitwise(rows, k, o, 7);
        let b = vec![1.5f32; o];
        let mut y = vec![0.0f32; rows * o];
        <f32 as Kernels>::linear_forward(
            &vec![0.0; rows * k],
            &vec![0.0; o * k],
            &b,
            &mut y,
            rows,
            k,
            o,
        );
        if k == 0 {
            assert!(y.iter().all(|&v| v == 1.5), "K = 0: y must equal the bias");
        }
        let mut dx = vec![f32::NAN; rows * k];
        <f32 as Kernels>::linear_backward_dx(
            &vec![0.0; rows * o],
            &vec![0.0; o * k],
            &mut dx,
            rows,
            k,
            o,
        );
        assert!(
            dx.iter().all(|&v| v == 0.0),
            "dx must be overwritten with zeros"
        );
    }
}

#[test]
fn elementwise_bitwise_dense_grids() {
    // Every lane of erf8/exp8 (through GELU) and sin_cos8 (through the time features) against
    // the scalar code on dense grids, including the branch points and clamps.
    let x: Vec<f32> = (-400_000..400_000).map(|i| i as f32 * 2.5e-5).collect(); // [−10, 10)
    let dy = vec![1.0f32; x.len()];
    check_gelu_bitwise(&x, &dy);
    let big: Vec<f32> = [
        -1e4f32,
        -1e3,
        -200.0,
        -30.0,
        30.0,
        200.0,
        1e3,
        1e4,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-30,
        0.0,
        -0.0,
    ]
    .into_iter()
    .cycle()
    .take(13 * 9)
    .collect();
    check_gelu_bitwise(&big, &vec![-0.5; big.len()]);
    // time features: t = 1, freqs = grid, φ = 0 → arguments over [−2000, 2000]
    let freqs: Vec<f32> = (-80_000..80_000).map(|i| i as f32 * 0.025).collect();
    let phase = vec![0.0f32; freqs.len()];
    check_time_features_bitwise(
        &[1.0],
        &freqs,
        &phase,
        &vec![1.0; 2 * freqs.len()],
        &vec![0.0; freqs.len()],
    );
}

#[test]
fn reductions_bitwise_edge_cases() {
    for &n in &[0usize, 1, 7, 8, 9, 15, 16, 17, 65, 1000] {
        let mut g = Rng(n as u64);
        check_reductions_bitwise(&g.vec(n));
    }
    let inf = f32::INFINITY;
    for x in [
        vec![],
        vec![-inf],
        vec![-inf; 9],
        vec![1.0, inf, 2.0],
        vec![1.0, f32::NAN],
        vec![f32::NAN; 10],
        vec![-inf, f32::NAN],
    ] {
        check_reductions_bitwise(&x);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. f32 vs the f64 reference
// ---------------------------------------------------------------------------------------------

fn check_linear_vs_f64(rows: usize, k: usize, o: usize, seed: u64) {
    let mut g = Rng(seed);
    let (x, w, b, dy) = (g.vec(rows * k), g.vec(o * k), g.vec(o), g.vec(rows * o));
    let (dw0, db0) = (g.vec(o * k), g.vec(o));
    let (x64, w64, b64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
    let what = format!("rows={rows} k={k} o={o} seed={seed}");

    let mut y = vec![0.0f32; rows * o];
    f32::linear_forward(&x, &w, &b, &mut y, rows, k, o);
    let mut y64 = vec![0.0f64; rows * o];
    f64::linear_forward(&x64, &w64, &b64, &mut y64, rows, k, o);
    for r in 0..rows {
        for j in 0..o {
            let sa = b64[j].abs()
                + (0..k)
                    .map(|p| (x64[r * k + p] * w64[j * k + p]).abs())
                    .sum::<f64>();
            let (got, want) = (y[r * o + j], y64[r * o + j]);
            assert!(
                chain_close(got, want, k, sa),
                "linear_forward {what} [{r},{j}]: f32 {got:e} vs f64 {want:e} (Σ|terms| {sa:e})"
            );
        }
    }

    let mut dx = vec![0.0f32; rows * k];
    f32::linear_backward_dx(&dy, &w, &mut dx, rows, k, o);
    let mut dx64 = vec![0.0f64; rows * k];
    f64::linear_backward_dx(&dy64, &w64, &mut dx64, rows, k, o);
    for r in 0..rows {
        for p in 0..k {
            let sa = (0..o)
                .map(|j| (dy64[r * o + j] * w64[j * k + p]).abs())
                .sum::<f64>();
            let (got, want) = (dx[r * k + p], dx64[r * k + p]);
            assert!(
                chain_close(got, want, o, sa),
                "linear_backward_dx {what} [{r},{p}]: f32 {got:e} vs f64 {want:e}"
            );
        }
    }

    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    f32::linear_backward_dw(&dy, &x, &mut dw, &mut db, rows, k, o);
    let (mut dw64, mut db64) = (to_f64(&dw0), to_f64(&db0));
    f64::linear_backward_dw(&dy64, &x64, &mut dw64, &mut db64, rows, k, o);
    for j in 0..o {
        for p in 0..k {
            let sa = (dw0[j * k + p] as f64).abs()
                + (0..rows)
                    .map(|r| (dy64[r * o + j] * x64[r * k + p]).abs())
                    .sum::<f64>();
            let (got, want) = (dw[j * k + p], dw64[j * k + p]);
            assert!(
                chain_close(got, want, rows, sa),
                "linear_backward_dw dw {what} [{j},{p}]: f32 {got:e} vs f64 {want:e}"
            );
        }
        let sa = (db0[j] as f64).abs() + (0..rows).map(|r| dy64[r * o + j].abs()).sum::<f64>();
        assert!(
            chain_close(db[j], db64[j], rows, sa),
            "linear_backward_dw db {what} [{j}]: f32 {:e} vs f64 {:e}",
            db[j],
            db64[j]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn linear_f32_vs_f64(rows in 1usize..70, k in 1usize..70, o in 1usize..70, seed in any::<u64>()) {
        check_linear_vs_f64(rows, k, o, seed);
    }

    #[test]
    fn gelu_f32_vs_f64(n in 1usize..300, seed in any::<u64>()) {
        let mut g = Rng(seed);
        let x: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { g.range(-8.0, 8.0) } else { g.value() }).collect();
        let dy = g.vec(n);
        let (x64, dy64) = (to_f64(&x), to_f64(&dy));
        let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
        f32::gelu_forward(&x, &mut y);
        f32::gelu_backward(&x, &dy, &mut dx);
        let (mut y64, mut dx64) = (vec![0.0f64; n], vec![0.0f64; n]);
        f64::gelu_forward(&x64, &mut y64);
        f64::gelu_backward(&x64, &dy64, &mut dx64);
        F32_VS_F64.assert_all_close(&to_f64(&y), &y64, "gelu_forward f32 vs f64");
        F32_VS_F64.assert_all_close(&to_f64(&dx), &dx64, "gelu_backward f32 vs f64");
    }

    #[test]
    fn time_features_f32_vs_f64(nt in 1usize..70, f in 1usize..70, seed in any::<u64>()) {
        let mut g = Rng(seed);
        let t = g.vec_range(nt, 0.0, 1.0);
        let freqs = g.vec_range(f, 0.0, 100.0);
        let phase = g.vec_range(f, -3.0, 3.0);
        let (dout, dph0) = (g.vec(nt * 2 * f), g.vec(f));
        let (t64, f64s, p64, dout64) = (to_f64(&t), to_f64(&freqs), to_f64(&phase), to_f64(&dout));

        let mut out = vec![0.0f32; nt * 2 * f];
        f32::time_features(&t, &freqs, &phase, &mut out);
        let mut out64 = vec![0.0f64; nt * 2 * f];
        f64::time_features(&t64, &f64s, &p64, &mut out64);
        // |a| ≤ 103: the f32 argument's rounding (≤ 3.8e-6) dominates; F32_VS_F64.abs = 1e-5 covers it
        F32_VS_F64.assert_all_close(&to_f64(&out), &out64, "time_features f32 vs f64");

        let mut dph = dph0.clone();
        f32::time_features_backward(&t, &freqs, &phase, &dout, &mut dph);
        let mut dph64 = to_f64(&dph0);
        f64::time_features_backward(&t64, &f64s, &p64, &dout64, &mut dph64);
        for k in 0..f {
            // each term carries the argument error, the chain of 2T FMAs its rounding
            let w = (0..nt).map(|i| dout64[i * 2 * f + k].abs() + dout64[i * 2 * f + f + k].abs()).sum::<f64>();
            let sa = (dph0[k] as f64).abs() + w;
            let bound = TIME_FEATURE_ARG_ERR * w + (2.0 * nt as f64 + 1.0) * U32 * sa + 1e-37;
            let (got, want) = (dph[k], dph64[k]);
            assert!((got as f64 - want).abs() <= bound, "time_features_backward [{k}]: f32 {got:e} vs f64 {want:e} (bound {bound:e})");
        }
    }

    #[test]
    fn col_sum_f32_vs_f64(rows in 1usize..70, cols in 1usize..70, seed in any::<u64>()) {
        let mut g = Rng(seed);
        let (dy, out0) = (g.vec(rows * cols), g.vec(cols));
        let mut out = out0.clone();
        f32::col_sum_acc(&dy, &mut out, rows, cols);
        let mut out64 = to_f64(&out0);
        f64::col_sum_acc(&to_f64(&dy), &mut out64, rows, cols);
        for c in 0..cols {
            let sa = (out0[c] as f64).abs() + (0..rows).map(|r| (dy[r * cols + c] as f64).abs()).sum::<f64>();
            assert!(chain_close(out[c], out64[c], rows, sa), "col_sum_acc [{c}]: f32 {} vs f64 {}", out[c], out64[c]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. elementary functions and gradients
// ---------------------------------------------------------------------------------------------

/// ulp of an f32 of magnitude |v| (v in the normal range).
fn ulp_f32(v: f64) -> f64 {
    let v = (v.abs() as f32).max(f32::MIN_POSITIVE);
    (f32::from_bits(v.to_bits() + 1) - v) as f64
}

#[test]
fn erf_f32_accuracy_dense_grid() {
    // 24 M points: [−6, 6] in steps of 5e-7 covers both branches, the split at 0.921875 and the
    // clamp at 4; plus a log grid down to 1e-30 (erf ≈ 2x/√π there).
    let mut max_err = 0.0f64;
    let mut at = 0.0f32;
    let mut check = |x: f32| {
        let e = (math::erf_f32(x) as f64 - libm::erf(x as f64)).abs();
        if e > max_err {
            max_err = e;
            at = x;
        }
    };
    for i in -12_000_000i32..=12_000_000 {
        check(i as f32 * 5e-7);
    }
    let mut x = 1e-30f32;
    while x < 1.0 {
        check(x);
        check(-x);
        x *= 1.001;
    }
    eprintln!("erf_f32: max |err| = {max_err:e} at x = {at:e}");
    assert!(
        max_err <= 2e-7,
        "erf_f32 max |err| {max_err:e} at x = {at:e} exceeds 2e-7"
    );
    // tiny arguments: relative accuracy too (|erf(x)| ≈ 1.128·|x|, a few ulp)
    for &x in &[1e-30f32, 1e-20, 1e-10, 1e-5] {
        let (got, want) = (math::erf_f32(x) as f64, libm::erf(x as f64));
        assert!(
            (got - want).abs() <= 2.0 * ulp_f32(want),
            "erf_f32({x:e}) = {got:e}, want {want:e}"
        );
    }
    assert_eq!(math::erf_f32(1e4), 1.0);
    assert_eq!(math::erf_f32(-1e4), -1.0);
}

#[test]
fn exp_f32_accuracy() {
    // normal range: ≤ 2 ulp relative
    let mut max_ulp = 0.0f64;
    let mut at = 0.0f32;
    for i in -8_700_000i32..=8_870_000 {
        let x = i as f32 * 1e-5;
        let want = (x as f64).exp();
        if want < f32::MIN_POSITIVE as f64 || want > f32::MAX as f64 {
            continue;
        }
        let u = (math::exp_f32(x) as f64 - want).abs() / ulp_f32(want);
        if u > max_ulp {
            max_ulp = u;
            at = x;
        }
    }
    eprintln!("exp_f32: max error = {max_ulp:.3} ulp at x = {at}");
    assert!(
        max_ulp <= 2.0,
        "exp_f32 max error {max_ulp} ulp at x = {at}"
    );
    // subnormal results: within 2 subnormal steps; underflow to exactly 0; overflow to +∞
    for i in 0..1000 {
        let x = -87.5 - i as f32 * 0.016; // down to ≈ −103.5
        let want = (x as f64).exp();
        let err = (math::exp_f32(x) as f64 - want).abs();
        assert!(
            err <= 2.0 * f64::from(f32::from_bits(1)),
            "exp_f32({x}) = {:e}, want {want:e}",
            math::exp_f32(x)
        );
    }
    assert_eq!(math::exp_f32(-1e4), 0.0);
    assert_eq!(math::exp_f32(-104.0), 0.0);
    assert_eq!(math::exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(math::exp_f32(100.0), f32::INFINITY);
    assert_eq!(math::exp_f32(0.0), 1.0);
}

#[test]
fn sin_cos_f32_accuracy() {
    // |x| ≤ 2000 covers the time-feature arguments (≤ ~105) with a wide margin.
    let (mut max_s, mut max_c) = (0.0f64, 0.0f64);
    for i in -20_000_000i32..=20_000_000 {
        let x = i as f32 * 1e-4;
        let (s, c) = math::sin_cos_f32(x);
        let xd = x as f64;
        max_s = max_s.max((s as f64 - xd.sin()).abs());
        max_c = max_c.max((c as f64 - xd.cos()).abs());
    }
    eprintln!("sin_cos_f32 on [-2000, 2000]: max |err| sin {max_s:e}, cos {max_c:e}");
    assert!(
        max_s <= 1e-6 && max_c <= 1e-6,
        "sin {max_s:e} / cos {max_c:e} exceed 1e-6"
    );
}

#[test]
fn gelu_extremes_are_finite() {
    let x = [1e4f32, -1e4, 1e3, -1e3, 40.0, -40.0];
    let mut y = [0.0f32; 6];
    let mut dx = [0.0f32; 6];
    f32::gelu_forward(&x, &mut y);
    f32::gelu_backward(&x, &[1.0; 6], &mut dx);
    assert_eq!(y, [1e4, 0.0, 1e3, 0.0, 40.0, 0.0]);
    assert_eq!(dx, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    let mut y64 = [0.0f64; 6];
    let mut dx64 = [0.0f64; 6];
    f64::gelu_forward(&to_f64(&x), &mut y64);
    f64::gelu_backward(&to_f64(&x), &[1.0; 6], &mut dx64);
    assert!(
        y64.iter().chain(&dx64).all(|v| v.is_finite()),
        "{y64:?} {dx64:?}"
    );
}

#[test]
fn gelu_matches_definition_f64() {
    // exact-erf GELU, not the tanh form: GELU(1) = Φ(1) = 0.841344746…, GELU(−1) = −0.158655254…
    let mut y = [0.0f64; 2];
    f64::gelu_forward(&[1.0, -1.0], &mut y);
    GRADCHECK_F64.assert_all_close(
        &y,
        &[0.841_344_746_068_542_9, -0.158_655_253_931_457_05],
        "gelu(±1)",
    );
}

#[test]
fn gelu_backward_is_derivative_f64() {
    let h = 1e-5;
    let x: Vec<f64> = (-600..=600).map(|i| i as f64 * 0.01 + 0.003).collect();
    let (xp, xm): (Vec<f64>, Vec<f64>) = (
        x.iter().map(|v| v + h).collect(),
        x.iter().map(|v| v - h).collect(),
    );
    let (mut yp, mut ym) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    f64::gelu_forward(&xp, &mut yp);
    f64::gelu_forward(&xm, &mut ym);
    let fd: Vec<f64> = yp
        .iter()
        .zip(&ym)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect();
    let mut dx = vec![0.0; x.len()];
    f64::gelu_backward(&x, &vec![1.0; x.len()], &mut dx);
    GRADCHECK_F64.assert_all_close(&dx, &fd, "gelu_backward vs central differences");
    // and dy scales it
    let mut dx2 = vec![0.0; x.len()];
    f64::gelu_backward(&x, &vec![-2.5; x.len()], &mut dx2);
    let scaled: Vec<f64> = dx.iter().map(|v| -2.5 * v).collect();
    GRADCHECK_F64.assert_all_close(&dx2, &scaled, "gelu_backward scales with dy");
}

#[test]
fn time_features_backward_is_derivative_f64() {
    let mut g = Rng(11);
    let (nt, f) = (13, 11);
    let t = to_f64(&g.vec_range(nt, 0.0, 1.0));
    let freqs = to_f64(&g.vec_range(f, 0.0, 100.0));
    let phase = to_f64(&g.vec_range(f, -3.0, 3.0));
    let dout = to_f64(&g.vec_range(nt * 2 * f, -1.0, 1.0));
    // L(φ) = Σ dout ⊙ features(φ); dL/dφ_k by central differences
    let loss = |ph: &[f64]| {
        let mut out = vec![0.0; nt * 2 * f];
        f64::time_features(&t, &freqs, ph, &mut out);
        out.iter().zip(&dout).map(|(a, b)| a * b).sum::<f64>()
    };
    let h = 1e-6;
    let fd: Vec<f64> = (0..f)
        .map(|k| {
            let (mut p, mut m) = (phase.clone(), phase.clone());
            p[k] += h;
            m[k] -= h;
            (loss(&p) - loss(&m)) / (2.0 * h)
        })
        .collect();
    let mut dph = vec![0.5; f];
    f64::time_features_backward(&t, &freqs, &phase, &dout, &mut dph);
    let got: Vec<f64> = dph.iter().map(|v| v - 0.5).collect();
    GRADCHECK_F64.assert_all_close(&got, &fd, "time_features_backward vs central differences");
    // and the forward layout: sines first, cosines second
    let mut out = vec![0.0; nt * 2 * f];
    f64::time_features(&t, &freqs, &phase, &mut out);
    let a = t[2].mul_add(freqs[3], phase[3]);
    assert_eq!(out[2 * 2 * f + 3], a.sin());
    assert_eq!(out[2 * 2 * f + f + 3], a.cos());
}

#[test]
fn linear_backward_is_derivative_f64() {
    // L = Σ dy ⊙ (x·wᵀ + b); the backward kernels must give ∂L/∂x, ∂L/∂w, ∂L/∂b.
    let (rows, k, o) = (5, 3, 4);
    let mut g = Rng(3);
    let (x, w, b, dy) = (
        to_f64(&g.vec(rows * k)),
        to_f64(&g.vec(o * k)),
        to_f64(&g.vec(o)),
        to_f64(&g.vec(rows * o)),
    );
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; rows * o];
        f64::linear_forward(x, w, b, &mut y, rows, k, o);
        y.iter().zip(&dy).map(|(a, c)| a * c).sum::<f64>()
    };
    let h = 1e-6;
    let fd = |v: &[f64], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
        (0..v.len())
            .map(|i| {
                let (mut p, mut m) = (v.to_vec(), v.to_vec());
                p[i] += h;
                m[i] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect()
    };
    let mut dx = vec![f64::NAN; rows * k];
    f64::linear_backward_dx(&dy, &w, &mut dx, rows, k, o);
    GRADCHECK_F64.assert_all_close(&dx, &fd(&x, &|v| loss(v, &w, &b)), "dx");
    let (mut dw, mut db) = (vec![1.0; o * k], vec![-1.0; o]);
    f64::linear_backward_dw(&dy, &x, &mut dw, &mut db, rows, k, o);
    let dw: Vec<f64> = dw.iter().map(|v| v - 1.0).collect();
    let db: Vec<f64> = db.iter().map(|v| v + 1.0).collect();
    GRADCHECK_F64.assert_all_close(
        &dw,
        &fd(&w, &|v| loss(&x, v, &b)),
        "dw (accumulated onto 1)",
    );
    GRADCHECK_F64.assert_all_close(
        &db,
        &fd(&b, &|v| loss(&x, &w, v)),
        "db (accumulated onto −1)",
    );
}

// ---------------------------------------------------------------------------------------------
// 4. sum / logsumexp
// ---------------------------------------------------------------------------------------------

/// The documented order of `sum`, written out independently of src/cpu/reduce.rs.
fn sum_documented_order(x: &[f32]) -> f32 {
    let n8 = x.len() / 8 * 8;
    let mut l = [0.0f32; 8];
    for i in (0..n8).step_by(8) {
        for j in 0..8 {
            l[j] += x[i + j];
        }
    }
    let mut s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for &v in &x[n8..] {
        s += v;
    }
    s
}

fn check_sum_lse(x: &[f32]) {
    let n = x.len();
    let x64 = to_f64(x);
    // sum: the f32 result is a chain of ≤ n roundings
    let naive: f64 = x64.iter().sum();
    let sa: f64 = x64.iter().map(|v| v.abs()).sum();
    for (path, s) in [("Kernels", f32::sum(x)), ("portable", portable::sum(x))] {
        assert!(
            chain_close(s, naive, n, sa),
            "{path} sum n={n}: {s:e} vs naive f64 {naive:e}"
        );
    }
    assert_eq!(
        f32::sum(x).to_bits(),
        sum_documented_order(x).to_bits(),
        "sum order n={n}"
    );
    let s64 = f64::sum(&x64);
    assert!(
        (s64 - naive).abs() <= (n as f64 + 1.0) * f64::EPSILON * sa,
        "f64 sum n={n}"
    );

    // logsumexp: naive f64 with the max shift
    let want = if n == 0 {
        f64::NEG_INFINITY
    } else {
        let m = x64.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + x64.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    // f32: exp ≤ 2 ulp per (positive) term, ≤ n roundings in the sum → relative error of Σ ≤
    // (n + 4)·u, hence ≤ (n + 4)·u absolute after ln, plus the final rounding of m + ln Σ.
    let l = f32::logsumexp(x);
    let l64 = f64::logsumexp(&x64);
    if n == 0 {
        assert_eq!(l, f32::NEG_INFINITY);
        assert_eq!(l64, f64::NEG_INFINITY);
        return;
    }
    let bound = (n as f64 + 4.0) * U32 + ulp_f32(want);
    assert!(
        (l as f64 - want).abs() <= bound,
        "logsumexp f32 n={n}: {l:e} vs {want:e} (bound {bound:e})"
    );
    assert!(
        (l64 - want).abs() <= 1e-12 * (1.0 + want.abs()),
        "logsumexp f64 n={n}: {l64:e} vs {want:e}"
    );
}

#[test]
fn sum_and_logsumexp_vs_naive_f64() {
    for &n in &[0usize, 1, 7, 8, 9, 65, 1000] {
        let mut g = Rng(100 + n as u64);
        check_sum_lse(&g.vec(n));
        check_sum_lse(&g.vec_range(n, -50.0, 50.0));
        check_sum_lse(&g.vec_range(n, -1e3, 1e3));
    }
}

proptest! {
    #[test]
    fn sum_and_logsumexp_random(n in 0usize..2000, seed in any::<u64>()) {
        let mut g = Rng(seed);
        check_sum_lse(&g.vec(n));
    }
}

#[test]
fn logsumexp_special_values() {
    let inf = f32::INFINITY;
    for (x, want) in [
        (vec![], f32::NEG_INFINITY),
        (vec![-inf, -inf], f32::NEG_INFINITY),
        (vec![0.0, inf, 1.0], inf),
        (vec![-inf, 0.0], 0.0),
        (vec![3.0; 9], 3.0 + 9f32.ln()),
    ] {
        for (path, got) in [
            ("Kernels f32", f32::logsumexp(&x)),
            ("portable", portable::logsumexp(&x)),
        ] {
            assert!(
                got == want || (got - want).abs() <= 1e-6,
                "{path} logsumexp({x:?}) = {got}, want {want}"
            );
        }
        let got64 = f64::logsumexp(&to_f64(&x));
        assert!(
            got64 == want as f64 || (got64 - want as f64).abs() <= 1e-6,
            "f64 logsumexp({x:?}) = {got64}"
        );
    }
    assert!(f32::logsumexp(&[1.0, f32::NAN, 2.0]).is_nan());
    assert!(f32::logsumexp(&[f32::NAN; 3]).is_nan());
    assert!(f64::logsumexp(&[-f64::INFINITY, f64::NAN]).is_nan());
}

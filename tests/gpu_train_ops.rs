//! The GPU training-iteration ops against their CPU references (llm.c's pattern, house rule
//! §3.1): add_row / col_sum_into_row (`Tape::add_row`, `Kernels::col_sum_acc`), clip forward and
//! backward (`Tape::clip`, the `Op::Clip` VJP), the TB / VarGrad loss (`losses::tb`), and gradient
//! clipping + Adam (`nn::adam::clip_grad_norm`, `nn::Adam::step`), at odd sizes, from fixed-seed
//! inputs (`rng::stream`).
//!
//! Bitwise or toleranced:
//! - add_row, col_sum_into_row and clip are plain f32 adds / selects in the CPU's order: compared
//!   BITWISE on every device;
//! - adam_step performs `Adam::step`'s f32 operations in the same order, so given the CPU's clip
//!   factor it is bitwise equal wherever the device rounds ÷ and √ as IEEE and does not contract
//!   a·b + c into an fma (WGSL allows both). [`ieee_probe`] measures that on this device; where
//!   it holds (lavapipe) the check is bitwise, elsewhere it falls back to [`GPU_ADAM`];
//! - the losses, Σ g² and the norm are f64 on the CPU and f32 on the GPU: named tolerances, each
//!   a first-order rounding-error bound of the shader's documented order, times a safety factor.
//!
//! Every check prints its max error (in ulps or as a fraction of its bound; `--nocapture`).
//! Without an adapter each test prints `skipped: no GPU adapter (…)` and passes; set
//! `DIFFUSION_SAMPLERS_REQUIRE_GPU=1` to make a missing adapter fail instead.

#![cfg(feature = "gpu")]

mod common;

use common::gpu_or_skip as gpu;
use diffusion_samplers::autodiff::Tape;
use diffusion_samplers::config::Method;
use diffusion_samplers::cpu::Kernels;
use diffusion_samplers::gpu::kernels::{adam, add_row, clip, losses};
use diffusion_samplers::gpu::{GpuContext, GpuError, GpuVec};
use diffusion_samplers::losses::{trajectory_balance, vargrad, LossGrad};
use diffusion_samplers::nn::adam::clip_grad_norm;
use diffusion_samplers::nn::{Adam, Group, ParamLayout};
use diffusion_samplers::{rng, Tensor};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Named tolerances
// ---------------------------------------------------------------------------------------------

/// Unit roundoff of f32, 2^-24.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// A safety factor over a first-order rounding-error bound (the bounds drop O(u²) terms and
/// assume IEEE-rounded +, −, ×, ÷; WGSL allows ÷ and √ within 2.5 ulp, covered by the factor).
#[derive(Clone, Copy, Debug)]
struct Tol {
    name: &'static str,
    factor: f64,
}

/// TB / VarGrad loss, gradients and log Z (f32 on the GPU vs f64 on the CPU). Per trajectory,
/// e_b = δ_b (3 roundings: |err| ≤ 3u·S_b, S_b = |log Z| + |LF| + |LB| + |lr|) or ζ_b (2
/// roundings, log Z left out); each batch sum in the shader's order (⌈B/256⌉ sequential adds +
/// 8 tree levels) adds (⌈B/256⌉ + 8)·u·Σ|terms|, each ÷B and ½·r·r one or two more u. The bounds
/// are those terms (see [`loss_bounds`]); factor 2 covers the dropped O(u²) and a contracted
/// ½·r·r + q. Measured on lavapipe: ≤ 0.26 (TB) and ≤ 0.13 (VarGrad) of the bound, the worst
/// being single elements of ∂L/∂LF whose three inputs nearly cancel.
const GPU_LOSS: Tol = Tol {
    name: "gpu-loss",
    factor: 2.0,
};

/// Σ g² in one workgroup vs the f64 sum: every term is ≥ 0, so the relative error is at most
/// the longest chain of roundings, 1 (the square) + ⌈n/256⌉ (a thread's sequential adds) + 8
/// (the tree): (⌈n/256⌉ + 9)·u·Σ g². Factor 1: that bound is rigorous to first order and the
/// terms never cancel. Measured on lavapipe: ≤ 0.09 of the bound (the n = 1…257 sums are a
/// handful of roundings; long sums err like a random walk, far below the linear bound).
const GPU_SUM_SQUARES: Tol = Tol {
    name: "gpu-sum-squares",
    factor: 1.0,
};

/// norm = √(Σ_k partials_k) and the clip factor max_norm / (norm + 1e−6), f32 vs f64: relative
/// error of S ≤ (max_k ⌈n_k/256⌉ + 9 + n_blocks)·u (as [`GPU_SUM_SQUARES`], plus the sequential
/// sum over blocks), √ halves it and adds ≤ 2.5u (WGSL's √ accuracy), and the factor adds
/// 1 (adding 1e−6) + 2.5 (÷) + 1 (max_norm rounded to f32) u more. Factor 2 for the O(u²) terms.
/// Measured on lavapipe: ≤ 0.03 of the bound.
const GPU_NORM: Tol = Tol {
    name: "gpu-norm",
    factor: 2.0,
};

/// adam_step on a device that is not IEEE for ÷ / √ or contracts a·b + c (NOT lavapipe, where it
/// is bitwise): m, v within 4 roundings of |m| + |g|, |v| + g²; the parameter within ~12 ulps
/// (two ÷ at 2.5 ulp, √ at 2.5 ulp, the rest 1 each) of the step |step_size·m/denom| plus one of
/// |p|. Factor 2 over those counts; errors compound over the test's 3 steps (hence × steps).
const GPU_ADAM: Tol = Tol {
    name: "gpu-adam",
    factor: 2.0,
};

/// Asserts |got − want| ≤ tol.factor·bound; returns |got − want| / (tol.factor·bound).
fn check(tol: Tol, what: &str, got: f64, want: f64, bound: f64) -> f64 {
    let b = tol.factor * bound + 1e-37;
    let err = (got - want).abs();
    assert!(
        err <= b,
        "{what}: gpu {got:e} vs cpu {want:e}: |Δ| = {err:e} > {} bound {b:e}",
        tol.name
    );
    err / b
}

/// Distance in ulps (0 iff bitwise equal, NaN payloads aside).
fn ulps(a: f32, b: f32) -> u64 {
    if a.to_bits() == b.to_bits() {
        return 0;
    }
    let key = |v: f32| {
        let i = v.to_bits() as i32;
        (if i < 0 { i32::MIN - i } else { i }) as i64
    };
    (key(a) - key(b)).unsigned_abs().max(1)
}

/// Asserts got == want bit for bit (NaN included), naming the first difference.
fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} elements differ; first at {i}: gpu {:e} ({:#010x}) vs cpu {:e} ({:#010x}), {} ulps",
            bad.len(),
            got.len(),
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits(),
            ulps(got[i], want[i])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Device and data
// ---------------------------------------------------------------------------------------------

fn ok<T>(r: Result<T, GpuError>) -> T {
    r.unwrap_or_else(|e| panic!("GPU error: {e}"))
}

const SEED: u64 = 20_240_917;

/// n standard normals · scale + shift from stream (SEED, "gpu-train-ops", tag).
fn randv(n: usize, tag: u64, scale: f32, shift: f32) -> Vec<f32> {
    let mut v = vec![0f32; n];
    rng::fill_normals(&mut rng::stream(SEED, "gpu-train-ops", tag), &mut v);
    v.iter_mut().for_each(|x| *x = *x * scale + shift);
    v
}

const ROWS: [usize; 4] = [1, 7, 65, 301];
const COLS: [usize; 3] = [1, 3, 64];

// ---------------------------------------------------------------------------------------------
// add_row / col_sum_into_row
// ---------------------------------------------------------------------------------------------

/// h = x + src[row, :] equals `Tape::add_row`'s value bit for bit.
#[test]
fn add_row() {
    let Some(ctx) = gpu() else { return };
    let t_rows = 5;
    for (ci, &rows) in ROWS.iter().enumerate() {
        for (cj, &cols) in COLS.iter().enumerate() {
            let tag = (10 * ci + cj) as u64;
            let x = randv(rows * cols, tag, 1.0, 0.0);
            let src = randv(t_rows * cols, 100 + tag, 0.5, 0.0);
            let row = (rows + cols) % t_rows;
            let mut tape = Tape::<f32>::new();
            let xv = tape.constant(Tensor::from_vec(rows, cols, x.clone()));
            let sv = tape.param(Tensor::from_vec(t_rows, cols, src.clone()));
            let y = tape.add_row(xv, sv, row);
            let want = tape.value(y).data.clone();
            let mut got = vec![0f32; rows * cols];
            ok(add_row::run_add_row(
                ctx, &x, &src, &mut got, rows, cols, row,
            ));
            assert_bitwise(&format!("add_row {rows}×{cols} row {row}"), &got, &want);
        }
    }
    eprintln!("add_row: bitwise at every size");
}

/// acc[row, :] += Σ_b dy[b, :] equals `Kernels::col_sum_acc` on that row (from a non-zero
/// start, other rows untouched) and, from zero, the tape's ∂L/∂src of add_row, bit for bit.
#[test]
fn col_sum_into_row() {
    let Some(ctx) = gpu() else { return };
    let t_rows = 4;
    for (ci, &rows) in ROWS.iter().enumerate() {
        for (cj, &cols) in COLS.iter().enumerate() {
            let tag = (10 * ci + cj) as u64;
            let dy = randv(rows * cols, 200 + tag, 1.0, 0.0);
            let acc0 = randv(t_rows * cols, 300 + tag, 2.0, 0.0);
            let row = (rows * 3 + cols) % t_rows;
            let what = format!("col_sum_into_row {rows}×{cols} row {row}");

            let mut want = acc0.clone();
            f32::col_sum_acc(&dy, &mut want[row * cols..(row + 1) * cols], rows, cols);
            let mut got = acc0.clone();
            ok(add_row::run_col_sum_into_row(
                ctx, &dy, &mut got, rows, cols, row,
            ));
            assert_bitwise(&what, &got, &want);

            // From zero: the VJP the tape computes for src.
            let mut tape = Tape::<f32>::new();
            let xv = tape.constant(Tensor::zeros(rows, cols));
            let sv = tape.param(Tensor::zeros(t_rows, cols));
            let y = tape.add_row(xv, sv, row);
            let grads = tape.backward(vec![(y, Tensor::from_vec(rows, cols, dy.clone()))]);
            let tape_ds = grads[sv.0].as_ref().expect("∂L/∂src").data.clone();
            let mut got0 = vec![0f32; t_rows * cols];
            ok(add_row::run_col_sum_into_row(
                ctx, &dy, &mut got0, rows, cols, row,
            ));
            assert_bitwise(&format!("{what} (tape VJP)"), &got0, &tape_ds);
        }
    }
    eprintln!("col_sum_into_row: bitwise at every size");
}

// ---------------------------------------------------------------------------------------------
// clip
// ---------------------------------------------------------------------------------------------

/// x ~ 2·N(0, 1) with NaN, ±∞, ±c exactly, ±0 and values just inside / outside ±c planted.
fn clip_input(n: usize, tag: u64, c: f32) -> Vec<f32> {
    let mut x = randv(n, tag, 2.0, 0.0);
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        c,
        -c,
        0.0,
        -0.0,
        f32::from_bits(c.to_bits() + 1),
        f32::from_bits(c.to_bits() - 1),
        -f32::from_bits(c.to_bits() + 1),
        -f32::NAN,
    ];
    for (k, s) in special.iter().enumerate() {
        x[(k * 37 + 5) % n] = *s;
    }
    if n == 1 {
        x[0] = f32::NAN;
    }
    x
}

/// y = clamp(x, −c, c) equals `Tape::clip`'s value bit for bit (NaN ↦ −c).
#[test]
fn clip_forward() {
    let Some(ctx) = gpu() else { return };
    for (k, &n) in [1usize, 7, 195, 301 * 64].iter().enumerate() {
        for &c in &[1.5f32, 0.25] {
            let x = clip_input(n, 400 + k as u64, c);
            let mut tape = Tape::<f32>::new();
            let xv = tape.constant(Tensor::from_vec(n, 1, x.clone()));
            let y = tape.clip(xv, c);
            let want = tape.value(y).data.clone();
            let mut got = vec![0f32; n];
            ok(clip::run_clip_forward(ctx, &x, &mut got, c));
            assert_bitwise(&format!("clip_forward n={n} c={c}"), &got, &want);
            if n == 1 {
                assert_eq!(got[0], -c, "NaN ↦ −c");
            }
        }
    }
    eprintln!("clip_forward: bitwise (NaN, ±inf, ±c, ±0 included)");
}

/// dx = dy inside [−c, c], else 0 (NaN x ↦ 0) equals the tape's `Op::Clip` VJP bit for bit.
#[test]
fn clip_backward() {
    let Some(ctx) = gpu() else { return };
    for (k, &n) in [1usize, 7, 195, 301 * 64].iter().enumerate() {
        for &c in &[1.5f32, 0.25] {
            let x = clip_input(n, 500 + k as u64, c);
            let dy = randv(n, 600 + k as u64, 1.0, 0.0);
            let mut tape = Tape::<f32>::new();
            let xv = tape.param(Tensor::from_vec(n, 1, x.clone()));
            let y = tape.clip(xv, c);
            let grads = tape.backward(vec![(y, Tensor::from_vec(n, 1, dy.clone()))]);
            let want = grads[xv.0].as_ref().expect("∂L/∂x").data.clone();
            let mut got = vec![f32::NAN; n];
            ok(clip::run_clip_backward(ctx, &x, &dy, &mut got, c));
            assert_bitwise(&format!("clip_backward n={n} c={c}"), &got, &want);
            if n == 1 {
                assert_eq!(got[0].to_bits(), 0, "NaN x ↦ +0");
            }
        }
    }
    eprintln!("clip_backward: bitwise (NaN, ±inf, ±c, ±0 included)");
}

// ---------------------------------------------------------------------------------------------
// TB / VarGrad
// ---------------------------------------------------------------------------------------------

const BATCHES: [usize; 6] = [1, 7, 65, 301, 4096, 4097];

/// Realistic magnitudes: LF ~ −10 ± 30, LB ~ 5 ± 20, log R ~ −3 ± 8, log Z = 1.7.
fn loss_inputs(b: usize, tag: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        randv(b, 700 + tag, 30.0, -10.0),
        randv(b, 800 + tag, 20.0, 5.0),
        randv(b, 900 + tag, 8.0, -3.0),
    )
}

const LOG_Z: f32 = 1.7;

/// First-order error bounds of the shader's order (see [`GPU_LOSS`]) for
/// (loss, d_log_pf[b], d_log_z, log_z).
struct LossBounds {
    loss: f64,
    d_log_pf: Vec<f64>,
    d_log_z: f64,
    log_z: f64,
}

fn loss_bounds(method: Method, lf: &[f32], lb: &[f32], lr: &[f32], cpu: &LossGrad) -> LossBounds {
    let n = lf.len();
    let bf = n as f64;
    let depth = (n.div_ceil(256) + 9) as f64;
    let tb = method == Method::Tb;
    let (rounds, lz) = if tb { (3.0, LOG_Z as f64) } else { (2.0, 0.0) };
    // e_b: the error of δ_b / ζ_b; r_b = the CPU residual (δ_b, or ζ_b − ζ̄)
    let e: Vec<f64> = (0..n)
        .map(|i| {
            rounds
                * U32
                * (lz.abs() + (lf[i] as f64).abs() + (lb[i] as f64).abs() + (lr[i] as f64).abs())
        })
        .collect();
    let r: Vec<f64> = cpu.d_log_pf.iter().map(|d| d * bf).collect();
    let zeta_abs: f64 = (0..n)
        .map(|i| (lf[i] as f64 - lb[i] as f64 - lr[i] as f64).abs())
        .sum();
    // error of the center (0 for TB; ζ̄ = S1/B for VarGrad)
    let err_center = if tb {
        0.0
    } else {
        (e.iter().sum::<f64>() + depth * U32 * zeta_abs) / bf
    };
    let err_r: Vec<f64> = (0..n)
        .map(|i| e[i] + err_center + U32 * r[i].abs())
        .collect();
    let d_log_pf = (0..n).map(|i| (err_r[i] + U32 * r[i].abs()) / bf).collect();
    let half_r2: f64 = r.iter().map(|v| 0.5 * v * v).sum();
    let loss = ((0..n)
        .map(|i| r[i].abs() * err_r[i] + 2.0 * U32 * r[i] * r[i])
        .sum::<f64>()
        + depth * U32 * half_r2)
        / bf
        + U32 * cpu.loss.abs();
    let d_log_z = if tb {
        (e.iter().sum::<f64>() + depth * U32 * r.iter().map(|v| v.abs()).sum::<f64>()) / bf
            + U32 * cpu.d_log_z.abs()
    } else {
        0.0
    };
    LossBounds {
        loss,
        d_log_pf,
        d_log_z,
        log_z: err_center + U32 * cpu.log_z.abs(),
    }
}

/// One method at every batch size: loss, ∂L/∂LF, ∂L/∂log Z, log Z within [`GPU_LOSS`].
fn loss_check(method: Method) {
    let Some(ctx) = gpu() else { return };
    let (mut worst, mut loss_rel) = (0f64, 0f64);
    for (k, &b) in BATCHES.iter().enumerate() {
        let (lf, lb, lr) = loss_inputs(b, k as u64);
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let cpu = match method {
            Method::Tb => trajectory_balance(LOG_Z as f64, &f(&lf), &f(&lb), &f(&lr)),
            Method::VarGrad => vargrad(&f(&lf), &f(&lb), &f(&lr)),
            other => unreachable!("the GPU loss kernel has no {other:?}"),
        };
        let gpu = ok(losses::run_loss_grad(ctx, method, LOG_Z, &lf, &lb, &lr));
        let bounds = loss_bounds(method, &lf, &lb, &lr, &cpu);
        let what = format!("{method:?} B={b}");
        if cpu.loss != 0.0 {
            loss_rel = loss_rel.max((gpu.loss as f64 - cpu.loss).abs() / cpu.loss.abs());
        }
        worst = worst.max(check(
            GPU_LOSS,
            &format!("{what} loss"),
            gpu.loss as f64,
            cpu.loss,
            bounds.loss,
        ));
        for i in 0..b {
            worst = worst.max(check(
                GPU_LOSS,
                &format!("{what} d_log_pf[{i}]"),
                gpu.d_log_pf[i] as f64,
                cpu.d_log_pf[i],
                bounds.d_log_pf[i],
            ));
        }
        worst = worst.max(check(
            GPU_LOSS,
            &format!("{what} d_log_z"),
            gpu.d_log_z as f64,
            cpu.d_log_z,
            bounds.d_log_z,
        ));
        worst = worst.max(check(
            GPU_LOSS,
            &format!("{what} log_z"),
            gpu.log_z as f64,
            cpu.log_z,
            bounds.log_z,
        ));
        assert_eq!(gpu.non_finite, 0, "{what}: non-finite count");
        if method == Method::VarGrad {
            assert_eq!(gpu.d_log_z, 0.0, "{what}: VarGrad learns no log Z");
            if b == 1 {
                assert_eq!(gpu.loss, 0.0, "VarGrad with B = 1 is 0");
                assert_eq!(
                    gpu.d_log_pf,
                    vec![0.0],
                    "VarGrad with B = 1 has no gradient"
                );
            }
        } else {
            assert_eq!(gpu.log_z, LOG_Z, "{what}: TB reports the learned log Z");
        }
    }
    eprintln!(
        "{method:?}: max |gpu − cpu| = {worst:.3} of the {} bound; loss relative error ≤ {loss_rel:.2e}",
        GPU_LOSS.name
    );
}

#[test]
fn tb_loss() {
    loss_check(Method::Tb);
}

#[test]
fn vargrad_loss() {
    loss_check(Method::VarGrad);
}

/// The same inputs give the same bits every run (fixed order, no atomics), and non-finite inputs
/// are counted.
#[test]
fn loss_is_reproducible() {
    let Some(ctx) = gpu() else { return };
    for method in [Method::Tb, Method::VarGrad] {
        let (lf, lb, lr) = loss_inputs(4097, 99);
        let first = ok(losses::run_loss_grad(ctx, method, LOG_Z, &lf, &lb, &lr));
        for _ in 0..3 {
            let again = ok(losses::run_loss_grad(ctx, method, LOG_Z, &lf, &lb, &lr));
            assert_eq!(
                again.loss.to_bits(),
                first.loss.to_bits(),
                "{method:?} loss"
            );
            assert_eq!(
                again.log_z.to_bits(),
                first.log_z.to_bits(),
                "{method:?} log_z"
            );
            assert_eq!(again.d_log_z.to_bits(), first.d_log_z.to_bits());
            assert_bitwise(
                &format!("{method:?} d_log_pf rerun"),
                &again.d_log_pf,
                &first.d_log_pf,
            );
        }
        // Three non-finite inputs (one in each array): counted, and the loss is not finite.
        let (mut lf2, mut lb2, mut lr2) = (lf.clone(), lb.clone(), lr.clone());
        lf2[3] = f32::NAN;
        lb2[4000] = f32::INFINITY;
        lr2[17] = f32::NEG_INFINITY;
        let bad = ok(losses::run_loss_grad(ctx, method, LOG_Z, &lf2, &lb2, &lr2));
        assert_eq!(bad.non_finite, 3, "{method:?}: non-finite count");
        assert!(!bad.loss.is_finite(), "{method:?}: loss {}", bad.loss);
    }
    eprintln!("loss_grad: bitwise equal over 4 runs (B = 4097), non-finite inputs counted");
}

// ---------------------------------------------------------------------------------------------
// Σ g², norm, clip factor
// ---------------------------------------------------------------------------------------------

/// Σ g² of one block within [`GPU_SUM_SQUARES`] of the f64 sum, and bitwise equal across runs.
#[test]
fn sum_squares() {
    let Some(ctx) = gpu() else { return };
    let (mut worst, mut rel) = (0f64, 0f64);
    for (k, &n) in [1usize, 7, 255, 256, 257, 4097, 100_003].iter().enumerate() {
        let g = randv(n, 1000 + k as u64, 0.1, 0.0);
        let exact: f64 = g.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let got = ok(adam::run_sum_squares(ctx, &g));
        let bound = (n.div_ceil(256) + 9) as f64 * U32 * exact;
        rel = rel.max((got as f64 - exact).abs() / exact);
        worst = worst.max(check(
            GPU_SUM_SQUARES,
            &format!("sum_squares n={n}"),
            got as f64,
            exact,
            bound,
        ));
        if n == 100_003 {
            let again = ok(adam::run_sum_squares(ctx, &g));
            assert_eq!(again.to_bits(), got.to_bits(), "sum_squares rerun");
        }
    }
    eprintln!(
        "sum_squares: max |gpu − f64| = {worst:.3} of the {} bound, relative ≤ {rel:.2e}",
        GPU_SUM_SQUARES.name
    );
}

/// Parameter blocks (rows, cols, group) of the Adam and norm tests: odd and aligned lengths,
/// a scalar flow block last (as log Z).
const BLOCKS: [(usize, usize, Group); 6] = [
    (3, 64, Group::Policy),
    (64, 1, Group::Policy),
    (64, 64, Group::Policy),
    (1, 7, Group::Policy),
    (65, 3, Group::Policy),
    (1, 1, Group::Flow),
];

fn layout() -> ParamLayout {
    let mut l = ParamLayout::default();
    for (i, &(r, c, g)) in BLOCKS.iter().enumerate() {
        l.add(&format!("b{i}"), r, c, g);
    }
    l
}

/// The factor `clip_grad_norm` multiplies by (1 where it does not clip), recomputed the same way.
fn cpu_clip_factor(norm: f64, max_norm: Option<f64>) -> f32 {
    match max_norm {
        Some(c) if norm > c => (c / (norm + 1e-6)) as f32,
        _ => 1.0,
    }
}

/// [factor, norm] within [`GPU_NORM`] of `clip_grad_norm` over the concatenated blocks: clipping,
/// not clipping (max_norm above the norm: factor exactly 1), and clipping off (factor 1, norm
/// still measured).
#[test]
fn clip_scale() {
    let Some(ctx) = gpu() else { return };
    let l = layout();
    let flat = randv(l.len(), 1100, 0.05, 0.0);
    let blocks: Vec<&[f32]> = l.specs.iter().map(|s| &flat[s.range()]).collect();
    let mut scratch = flat.clone();
    let norm = clip_grad_norm(&mut scratch, f64::INFINITY);
    let max_block = l
        .specs
        .iter()
        .map(|s| s.len().div_ceil(256))
        .max()
        .unwrap_or(0);
    let rel = (max_block + 9 + l.specs.len()) as f64 * U32;
    let norm_bound = (0.5 * rel + 2.5 * U32) * norm;
    let mut worst = 0f64;
    for max_norm in [Some(0.5 * norm), Some(2.0 * norm), None] {
        let [factor, gnorm] = ok(adam::run_clip_grad_norm(ctx, &blocks, max_norm));
        let what = format!("clip_scale max_norm={max_norm:?}");
        worst = worst.max(check(
            GPU_NORM,
            &format!("{what} norm"),
            gnorm as f64,
            norm,
            norm_bound,
        ));
        let want = cpu_clip_factor(norm, max_norm);
        // check the recomputed factor against what clip_grad_norm really did
        let mut clipped = flat.clone();
        clip_grad_norm(&mut clipped, max_norm.unwrap_or(f64::INFINITY));
        assert!(
            clipped
                .iter()
                .zip(&flat)
                .all(|(c, g)| c.to_bits() == (g * want).to_bits()),
            "{what}: the test's factor is not clip_grad_norm's"
        );
        if want == 1.0 {
            assert_eq!(factor, 1.0, "{what}: no clipping → factor exactly 1");
        } else {
            let bound = (0.5 * rel + 2.5 * U32 + 5.5 * U32) * want as f64;
            worst = worst.max(check(
                GPU_NORM,
                &format!("{what} factor"),
                factor as f64,
                want as f64,
                bound,
            ));
        }
    }
    eprintln!(
        "clip_scale: max |gpu − cpu| = {worst:.3} of the {} bound",
        GPU_NORM.name
    );
}

// ---------------------------------------------------------------------------------------------
// Adam
// ---------------------------------------------------------------------------------------------

/// Whether this device computes a·b + c (uncontracted), a / b and √a exactly as IEEE f32 does,
/// on 4096 random triples — what adam_step's bitwise parity needs. A diagnostic shader, not a
/// shipped kernel.
fn ieee_probe(ctx: &GpuContext) -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        const SRC: &str = "
            @group(0) @binding(0) var<storage, read> a: array<f32>;
            @group(0) @binding(1) var<storage, read> b: array<f32>;
            @group(0) @binding(2) var<storage, read> c: array<f32>;
            @group(0) @binding(3) var<storage, read_write> res: array<f32>;
            @compute @workgroup_size(64)
            fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
                let i = gid.x;
                res[3u * i] = a[i] * b[i] + c[i];
                res[3u * i + 1u] = a[i] / b[i];
                res[3u * i + 2u] = sqrt(abs(a[i]));
            }";
        const N: usize = 4096;
        let (a, b, c) = (
            randv(N, 1200, 1.0, 0.0),
            randv(N, 1201, 1.0, 0.0),
            randv(N, 1202, 1.0, 0.0),
        );
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("ieee probe"),
                source: wgpu::ShaderSource::Wgsl(SRC.into()),
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("ieee probe"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let bufs = [
            GpuVec::from_slice(ctx, &a, "a"),
            GpuVec::from_slice(ctx, &b, "b"),
            GpuVec::from_slice(ctx, &c, "c"),
            GpuVec::zeros(ctx, 3 * N, "res"),
        ];
        let entries: Vec<wgpu::BindGroupEntry> = bufs
            .iter()
            .enumerate()
            .map(|(i, v)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: v.buffer().as_entire_binding(),
            })
            .collect();
        let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("ieee probe"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut enc = ctx.encoder("ieee probe");
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups((N / 64) as u32, 1, 1);
        }
        ctx.submit(enc);
        let r = ok(bufs[3].read(ctx));
        let mut want = Vec::with_capacity(3 * N);
        for i in 0..N {
            want.extend([a[i] * b[i] + c[i], a[i] / b[i], a[i].abs().sqrt()]);
        }
        let diff = |k: usize| {
            (0..N)
                .filter(|&i| r[3 * i + k].to_bits() != want[3 * i + k].to_bits())
                .count()
        };
        let (mad, div, sqrt) = (diff(0), diff(1), diff(2));
        eprintln!(
            "ieee probe on {}: a·b + c differs in {mad}, a / b in {div}, √a in {sqrt} of {N}",
            ctx.describe()
        );
        mad == 0 && div == 0 && sqrt == 0
    })
}

/// Three Adam steps over separate per-block buffers (prepared once, `set_step` per step),
/// clipping on steps 1 and 3, clipping off on step 2, the flow block frozen on step 2 (as
/// VarGrad freezes log Z), against `clip_grad_norm` + `Adam::step` on the flat vector with the
/// CPU's clip factor in the scale buffer: bitwise where [`ieee_probe`] holds, else [`GPU_ADAM`].
/// Then one more step with the factor computed on the device (sum_squares → clip_scale →
/// adam_step in one encoder), within the norm tolerance's effect.
#[test]
fn adam_step() {
    let Some(ctx) = gpu() else { return };
    let exact = ieee_probe(ctx);
    let l = layout();
    let lr = |g: Group| match g {
        Group::Policy => 1e-3,
        Group::Flow => 1e-1,
    };
    let mut params = randv(l.len(), 1300, 0.3, 0.0);
    let mut cpu = Adam::new(&l);

    let dev = |data: &[f32], what: &str| GpuVec::from_slice(ctx, data, what);
    let gp: Vec<GpuVec> = l
        .specs
        .iter()
        .map(|s| dev(&params[s.range()], "param"))
        .collect();
    let gg: Vec<GpuVec> = l
        .specs
        .iter()
        .map(|s| GpuVec::zeros(ctx, s.len(), "grad"))
        .collect();
    let gm: Vec<GpuVec> = l
        .specs
        .iter()
        .map(|s| GpuVec::zeros(ctx, s.len(), "m"))
        .collect();
    let gv: Vec<GpuVec> = l
        .specs
        .iter()
        .map(|s| GpuVec::zeros(ctx, s.len(), "v"))
        .collect();
    let scale = GpuVec::zeros(ctx, adam::SCALE_LEN, "scale");
    let cfg = |g: Group, t: u64| adam::AdamStepConfig::new(lr(g), t);
    let steps: Vec<adam::AdamStepDispatch> = (0..l.specs.len())
        .map(|b| {
            ok(adam::prepare_adam_step(
                ctx,
                &gp[b],
                &gg[b],
                &gm[b],
                &gv[b],
                &scale,
                &cfg(l.specs[b].group, 1),
            ))
        })
        .collect();

    let mut max_ulps = 0u64;
    let mut worst = 0f64;
    for step in 1..=3u64 {
        let mut grad = randv(l.len(), 1400 + step, 0.05, 0.0);
        let raw = grad.clone();
        let max_norm = if step == 2 { None } else { Some(0.1) };
        let frozen: &[Group] = if step == 2 { &[Group::Flow] } else { &[] };
        let norm = clip_grad_norm(&mut grad, max_norm.unwrap_or(f64::INFINITY));
        let factor = cpu_clip_factor(norm, max_norm);
        assert_eq!(factor != 1.0, step != 2, "step {step}: clipping as planned");
        cpu.step(&l, &mut params, &grad, &lr, frozen);

        scale.write(ctx, &[factor, norm as f32]);
        let mut enc = ctx.encoder("adam test step");
        for (b, s) in l.specs.iter().enumerate() {
            if frozen.contains(&s.group) {
                continue;
            }
            gg[b].write(ctx, &raw[s.range()]);
            steps[b].set_step(ctx, &cfg(s.group, cpu.steps[b]));
            steps[b].record(&mut enc);
        }
        ctx.submit(enc);

        for (b, s) in l.specs.iter().enumerate() {
            let what = format!("adam step {step} block {b} ({}×{})", s.rows, s.cols);
            let mut out = ok(ctx.read_many(&[&gp[b], &gm[b], &gv[b]])).into_iter();
            let (p, m, v) = (
                out.next().unwrap(),
                out.next().unwrap(),
                out.next().unwrap(),
            );
            let r = s.range();
            let (pw, mw, vw) = (&params[r.clone()], &cpu.m[r.clone()], &cpu.v[r.clone()]);
            for i in 0..s.len() {
                max_ulps = max_ulps
                    .max(ulps(p[i], pw[i]))
                    .max(ulps(m[i], mw[i]))
                    .max(ulps(v[i], vw[i]));
                let g = (raw[r.start + i] * factor).abs() as f64;
                let t = step as f64;
                let n = 4.0 * t * U32;
                worst = worst.max(check(
                    GPU_ADAM,
                    &format!("{what} m[{i}]"),
                    m[i] as f64,
                    mw[i] as f64,
                    n * (mw[i].abs() as f64 + g),
                ));
                worst = worst.max(check(
                    GPU_ADAM,
                    &format!("{what} v[{i}]"),
                    v[i] as f64,
                    vw[i] as f64,
                    n * (vw[i] as f64 + g * g),
                ));
                let bound = t * U32 * (12.0 * 4.0 * lr(s.group) + pw[i].abs() as f64);
                worst = worst.max(check(
                    GPU_ADAM,
                    &format!("{what} param[{i}]"),
                    p[i] as f64,
                    pw[i] as f64,
                    bound,
                ));
            }
            if exact {
                assert_bitwise(&format!("{what} param"), &p, pw);
                assert_bitwise(&format!("{what} m"), &m, mw);
                assert_bitwise(&format!("{what} v"), &v, vw);
            }
        }
    }
    eprintln!(
        "adam_step: 3 steps, max {max_ulps} ulps from Adam::step (bitwise required: {exact}); \
         max {worst:.3} of the {} bound",
        GPU_ADAM.name
    );

    // Step 4, all on the device: Σ g² per block → clip factor → Adam.
    let step = 4u64;
    let mut grad = randv(l.len(), 1400 + step, 0.05, 0.0);
    let raw = grad.clone();
    clip_grad_norm(&mut grad, 0.1);
    cpu.step(&l, &mut params, &grad, &lr, &[]);
    let partials = GpuVec::zeros(ctx, l.specs.len(), "partials");
    let sums: Vec<_> = (0..l.specs.len())
        .map(|b| ok(adam::prepare_sum_squares(ctx, &gg[b], &partials, b)))
        .collect();
    let clip_d = ok(adam::prepare_clip_scale(ctx, &partials, &scale, Some(0.1)));
    let mut enc = ctx.encoder("adam test step 4");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for (b, s) in l.specs.iter().enumerate() {
            gg[b].write(ctx, &raw[s.range()]);
            steps[b].set_step(ctx, &cfg(s.group, cpu.steps[b]));
            sums[b].record_in_pass(&mut pass);
        }
        clip_d.record_in_pass(&mut pass);
        for s in &steps {
            s.record_in_pass(&mut pass);
        }
    }
    ctx.submit(enc);
    let mut worst4 = 0f64;
    for (b, s) in l.specs.iter().enumerate() {
        let p = ok(gp[b].read(ctx));
        let r = s.range();
        for (i, (&got, &want)) in p.iter().zip(&params[r]).enumerate() {
            // Adam's step is invariant to a common gradient scale up to ε, so a factor off by
            // the GPU_NORM relative error moves each parameter by far less than an ulp of the step.
            let bound = 4.0 * U32 * (12.0 * 4.0 * lr(s.group) + want.abs() as f64);
            worst4 = worst4.max(check(
                GPU_ADAM,
                &format!("adam step 4 block {b} param[{i}]"),
                got as f64,
                want as f64,
                bound,
            ));
        }
    }
    eprintln!(
        "adam_step with the device's clip factor: max {worst4:.3} of the {} bound",
        GPU_ADAM.name
    );
}

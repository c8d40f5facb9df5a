//! LayerNorm (`cpu::layer_norm`, `shaders/layer_norm.wgsl`): one op, its three paths.
//! 1. the f32 AVX2 path equals the portable scalar path BITWISE, over shapes with and without
//!    an 8-lane tail;
//! 2. the f64 reference is the definition (an independent naive evaluation) and its backward is
//!    the derivative of its forward (central differences);
//! 3. f32 against f64 within a rounding-error bound derived from the documented order;
//! 4. (feature `gpu`) the WGSL kernels against the f64 reference within twice that bound (WGSL
//!    may leave fma unfused and round ÷ and √ within 2.5 ulp), printed as a fraction of it.

mod common;

use diffusion_samplers::cpu::{self, portable, simd, Kernels, LAYER_NORM_EPS};
use diffusion_samplers::rng;
use diffusion_samplers::tolerance::GRADCHECK_F64;

/// Unit roundoff of f32, 2^-24.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// Shapes (B, H): tails only (H < 8), exact 8-lane blocks, blocks + tail, the Pendulum prior's
/// width 256 and one past it.
const SHAPES: [(usize, usize); 7] = [(1, 1), (3, 5), (2, 8), (5, 13), (4, 64), (3, 256), (2, 257)];

/// One op's inputs: x [B, H] with a per-row offset (so μ is not ~0 and the centring matters),
/// γ, β [H], dy [B, H], from a fixed stream.
struct Case {
    rows: usize,
    h: usize,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn case(rows: usize, h: usize, tag: u64) -> Case {
    let mut r = rng::stream(17, "layer-norm-test", tag);
    let mut normal = |scale: f64| (scale * rng::normal_f64(&mut r)) as f32;
    let mut x = Vec::with_capacity(rows * h);
    for row in 0..rows {
        let offset = 3.0 * (row as f64 - 1.0);
        for _ in 0..h {
            x.push(offset as f32 + normal(1.5));
        }
    }
    let gamma = (0..h).map(|_| 1.0 + normal(0.3)).collect();
    let beta = (0..h).map(|_| normal(0.5)).collect();
    let dy = (0..rows * h).map(|_| normal(1.0)).collect();
    Case {
        rows,
        h,
        x,
        gamma,
        beta,
        dy,
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// Forward and backward outputs of one path: y, μ, rstd, dx, dγ, dβ (dγ and dβ accumulated onto
/// `acc0`, to check that the kernels add rather than overwrite).
struct Out<S> {
    y: Vec<S>,
    mean: Vec<S>,
    rstd: Vec<S>,
    dx: Vec<S>,
    dgamma: Vec<S>,
    dbeta: Vec<S>,
}

/// The starting value of the accumulated dγ, dβ: a constant that any overwrite would lose.
const ACC0: f64 = 0.25;

type Forward<S> = fn(&[S], &[S], &[S], &mut [S], &mut [S], &mut [S], usize, usize);
type Backward<S> = fn(&[S], &[S], &[S], &[S], &[S], &mut [S], &mut [S], &mut [S], usize, usize);

fn run_path<S: Kernels>(c: &Case, fwd: Forward<S>, bwd: Backward<S>) -> Out<S> {
    let cv = |v: &[f32]| -> Vec<S> { v.iter().map(|&a| S::from_f64(a as f64)).collect() };
    let (x, gamma, beta, dy) = (cv(&c.x), cv(&c.gamma), cv(&c.beta), cv(&c.dy));
    let (rows, h) = (c.rows, c.h);
    let mut y = vec![S::ZERO; rows * h];
    let (mut mean, mut rstd) = (vec![S::ZERO; rows], vec![S::ZERO; rows]);
    fwd(&x, &gamma, &beta, &mut y, &mut mean, &mut rstd, rows, h);
    let mut dx = vec![S::from_f64(f64::NAN); rows * h];
    let mut dgamma = vec![S::from_f64(ACC0); h];
    let mut dbeta = vec![S::from_f64(ACC0); h];
    bwd(
        &x,
        &gamma,
        &mean,
        &rstd,
        &dy,
        &mut dx,
        &mut dgamma,
        &mut dbeta,
        rows,
        h,
    );
    Out {
        y,
        mean,
        rstd,
        dx,
        dgamma,
        dbeta,
    }
}

fn reference64(c: &Case) -> Out<f64> {
    run_path::<f64>(c, f64::layer_norm_forward, f64::layer_norm_backward)
}

fn assert_bitwise(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        assert!(
            p.to_bits() == q.to_bits(),
            "{what}[{i}]: simd {p:e} != portable {q:e}"
        );
    }
}

#[test]
fn simd_equals_portable_bitwise() {
    if !cpu::simd_available() {
        eprintln!("layer_norm: no AVX2+FMA here; only the portable path runs");
        return;
    }
    for (i, &(rows, h)) in SHAPES.iter().enumerate() {
        let c = case(rows, h, i as u64);
        let s = run_path::<f32>(&c, simd::layer_norm_forward, simd::layer_norm_backward);
        let p = run_path::<f32>(
            &c,
            portable::layer_norm_forward,
            portable::layer_norm_backward,
        );
        let what = |name: &str| format!("{name} B={rows} H={h}");
        assert_bitwise(&s.y, &p.y, &what("y"));
        assert_bitwise(&s.mean, &p.mean, &what("mean"));
        assert_bitwise(&s.rstd, &p.rstd, &what("rstd"));
        assert_bitwise(&s.dx, &p.dx, &what("dx"));
        assert_bitwise(&s.dgamma, &p.dgamma, &what("dgamma"));
        assert_bitwise(&s.dbeta, &p.dbeta, &what("dbeta"));
    }
}

/// The f64 forward against a naive two-loop evaluation of the definition (PyTorch's: biased
/// variance, ε inside the square root), and the saved statistics.
#[test]
fn f64_forward_is_the_definition() {
    for (i, &(rows, h)) in SHAPES.iter().enumerate() {
        let c = case(rows, h, 100 + i as u64);
        let out = reference64(&c);
        let x = f64s(&c.x);
        for (r, xr) in x.chunks_exact(h).enumerate() {
            let mu = xr.iter().sum::<f64>() / h as f64;
            let var = xr.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / h as f64;
            let rs = 1.0 / (var + LAYER_NORM_EPS).sqrt();
            assert!((out.mean[r] - mu).abs() <= 1e-13 * (1.0 + mu.abs()), "mean");
            assert!((out.rstd[r] - rs).abs() <= 1e-13 * rs, "rstd");
            for (k, &xv) in xr.iter().enumerate() {
                let want = (xv - mu) * rs * c.gamma[k] as f64 + c.beta[k] as f64;
                let got = out.y[r * h + k];
                assert!(
                    (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "y[{r},{k}] B={rows} H={h}: {got} vs {want}"
                );
            }
        }
    }
}

/// The f64 backward is the derivative of the f64 forward: L = Σ dy ⊙ y, central differences in
/// every x, γ and β coordinate.
#[test]
fn f64_backward_is_the_derivative() {
    for (i, &(rows, h)) in [(3usize, 5usize), (2, 13), (1, 1)].iter().enumerate() {
        let c = case(rows, h, 200 + i as u64);
        let out = reference64(&c);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| {
            let mut y = vec![0.0; rows * h];
            let (mut m, mut s) = (vec![0.0; rows], vec![0.0; rows]);
            f64::layer_norm_forward(x, g, b, &mut y, &mut m, &mut s, rows, h);
            y.iter().zip(&c.dy).map(|(a, &d)| a * d as f64).sum::<f64>()
        };
        let (x, g, b) = (f64s(&c.x), f64s(&c.gamma), f64s(&c.beta));
        let step = 1e-6;
        let central = |which: usize, k: usize| {
            let mut v = [x.clone(), g.clone(), b.clone()];
            v[which][k] += step;
            let up = loss(&v[0], &v[1], &v[2]);
            v[which][k] -= 2.0 * step;
            let down = loss(&v[0], &v[1], &v[2]);
            (up - down) / (2.0 * step)
        };
        let close =
            |a: f64, n: f64| (a - n).abs() <= GRADCHECK_F64.abs + GRADCHECK_F64.rel * n.abs();
        for k in 0..rows * h {
            let n = central(0, k);
            assert!(
                close(out.dx[k], n),
                "dx[{k}] B={rows} H={h}: {} vs {n}",
                out.dx[k]
            );
        }
        for k in 0..h {
            let (ng, nb) = (central(1, k), central(2, k));
            assert!(
                close(out.dgamma[k] - ACC0, ng),
                "dgamma[{k}]: {} vs {ng}",
                out.dgamma[k]
            );
            assert!(
                close(out.dbeta[k] - ACC0, nb),
                "dbeta[{k}]: {} vs {nb}",
                out.dbeta[k]
            );
        }
        // At H = 1 the normalised value is 0 whatever x is: no gradient reaches x.
        if h == 1 {
            assert!(out.dx.iter().all(|&d| d == 0.0), "H = 1: dx must vanish");
        }
    }
}

/// First-order rounding-error bounds of the documented order, per output element, for an f32
/// path against the f64 reference, times `factor`. With ρ_r = rstd·mean|x| (how far the row sits
/// from 0 in units of its spread, which is what μ's rounding costs n), the centred value n has
/// |δn| ≤ (H + 8)·u·(|n| + ρ_r) (μ's sum, the subtraction, the variance's sum, ÷, √, ÷, ×);
/// then
/// - y = fma(n, γ, β):       |δy| ≤ |γ|·|δn| + u·|y|;
/// - dx = (g − a − n·c)·rstd: |δdx| ≤ (H + 8)·u·rstd·(|g| + M_g·(1 + (N + ρ)·(|n| + ρ))), M_g =
///   mean|g|, N = max|n| (the sums a and c, and n's error through c and through n·c);
/// - dγ = Σ_r dy·n:          |δdγ| ≤ (B + 1)·u·Σ|dy·n| + Σ|dy|·|δn|  (plus |ACC0| of rounding);
/// - dβ = Σ_r dy:            |δdβ| ≤ (B + 1)·u·(ACC0 + Σ|dy|).
struct Bounds {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn bounds(c: &Case, r64: &Out<f64>, factor: f64) -> Bounds {
    let (rows, h) = (c.rows, c.h);
    let (x, gamma, dy) = (f64s(&c.x), f64s(&c.gamma), f64s(&c.dy));
    let hu = (h as f64 + 8.0) * U32;
    let mut b = Bounds {
        y: vec![0.0; rows * h],
        dx: vec![0.0; rows * h],
        dgamma: vec![(rows as f64 + 1.0) * U32 * ACC0; h],
        dbeta: vec![(rows as f64 + 1.0) * U32 * ACC0; h],
    };
    for r in 0..rows {
        let rs = r64.rstd[r];
        let rho = rs * x[r * h..(r + 1) * h].iter().map(|v| v.abs()).sum::<f64>() / h as f64;
        let n: Vec<f64> = (0..h).map(|k| (x[r * h + k] - r64.mean[r]) * rs).collect();
        let g: Vec<f64> = (0..h).map(|k| dy[r * h + k] * gamma[k]).collect();
        let mg = g.iter().map(|v| v.abs()).sum::<f64>() / h as f64;
        let nmax = n.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for k in 0..h {
            let i = r * h + k;
            let dn = hu * (n[k].abs() + rho);
            b.y[i] = gamma[k].abs() * dn + U32 * r64.y[i].abs();
            b.dx[i] = hu * rs * (g[k].abs() + mg * (1.0 + (nmax + rho) * (n[k].abs() + rho)));
            b.dgamma[k] += (rows as f64 + 1.0) * U32 * (dy[i] * n[k]).abs() + dy[i].abs() * dn;
            b.dbeta[k] += (rows as f64 + 1.0) * U32 * dy[i].abs();
        }
    }
    for v in [&mut b.y, &mut b.dx, &mut b.dgamma, &mut b.dbeta] {
        for e in v.iter_mut() {
            *e = *e * factor + 1e-30;
        }
    }
    b
}

/// The worst |got − want| / bound over one output; panics past 1.
fn worst_fraction(got: &[f32], want: &[f64], bound: &[f64], what: &str) -> f64 {
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let frac = (g as f64 - w).abs() / b;
        assert!(
            frac <= 1.0,
            "{what}[{i}]: {g:e} vs {w:e}, error {:.3e} > bound {b:.3e}",
            (g as f64 - w).abs()
        );
        worst = worst.max(frac);
    }
    worst
}

fn check_against_f64(out: &Out<f32>, c: &Case, factor: f64, path: &str) -> f64 {
    let r64 = reference64(c);
    let b = bounds(c, &r64, factor);
    let what = |name: &str| format!("{path} {name} B={} H={}", c.rows, c.h);
    [
        worst_fraction(&out.y, &r64.y, &b.y, &what("y")),
        worst_fraction(&out.dx, &r64.dx, &b.dx, &what("dx")),
        worst_fraction(&out.dgamma, &r64.dgamma, &b.dgamma, &what("dgamma")),
        worst_fraction(&out.dbeta, &r64.dbeta, &b.dbeta, &what("dbeta")),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

/// `F32_LAYER_NORM`: the f32 kernels (what training runs) within the first-order bound, factor
/// 1 — every term of the bound is rigorous to first order for IEEE ops.
#[test]
fn f32_within_the_rounding_bound_of_f64() {
    let mut worst = 0.0f64;
    for (i, &(rows, h)) in SHAPES.iter().enumerate() {
        let c = case(rows, h, 300 + i as u64);
        let out = run_path::<f32>(&c, f32::layer_norm_forward, f32::layer_norm_backward);
        worst = worst.max(check_against_f64(&out, &c, 1.0, "f32"));
    }
    eprintln!("layer_norm f32 vs f64: worst error {worst:.3} of the bound");
}

#[cfg(feature = "gpu")]
mod gpu {
    use super::*;
    use diffusion_samplers::gpu::kernels::layer_norm::{
        run_layer_norm_backward, run_layer_norm_forward,
    };

    /// `GPU_LAYER_NORM`: the WGSL kernels within twice the f32 bound (an unfused fma costs one
    /// more rounding per element; ÷ and √ may be 2.5 ulp instead of 0.5).
    const GPU_LAYER_NORM_FACTOR: f64 = 2.0;

    #[test]
    fn gpu_layer_norm_matches_the_reference() {
        let Some(ctx) = common::gpu_or_skip() else {
            return;
        };
        let mut worst = 0.0f64;
        for (i, &(rows, h)) in SHAPES.iter().chain(&[(130, 24)]).enumerate() {
            let c = case(rows, h, 400 + i as u64);
            let (mut y, mut mean, mut rstd) =
                (vec![0f32; rows * h], vec![0f32; rows], vec![0f32; rows]);
            run_layer_norm_forward(
                ctx, &c.x, &c.gamma, &c.beta, &mut y, &mut mean, &mut rstd, rows, h,
            )
            .expect("gpu forward");
            let mut dx = vec![f32::NAN; rows * h];
            let (mut dgamma, mut dbeta) = (vec![ACC0 as f32; h], vec![ACC0 as f32; h]);
            run_layer_norm_backward(
                ctx,
                &c.x,
                &c.gamma,
                &mean,
                &rstd,
                &c.dy,
                &mut dx,
                &mut dgamma,
                &mut dbeta,
                rows,
                h,
            )
            .expect("gpu backward");
            let out = Out {
                y,
                mean,
                rstd,
                dx,
                dgamma,
                dbeta,
            };
            worst = worst.max(check_against_f64(&out, &c, GPU_LAYER_NORM_FACTOR, "gpu"));
            // The statistics the backward reads are the forward's (ε and the order shared).
            let r64 = reference64(&c);
            for r in 0..rows {
                let rel = (out.rstd[r] as f64 - r64.rstd[r]).abs() / r64.rstd[r];
                assert!(
                    rel <= (h as f64 + 8.0) * U32 * 2.0,
                    "rstd[{r}] rel err {rel:e}"
                );
            }
        }
        eprintln!("layer_norm gpu vs f64: worst error {worst:.3} of the bound");
    }
}

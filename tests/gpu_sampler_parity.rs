//! The sampler-side GPU kernels against their CPU references: the fused Euler–Maruyama step
//! (x', log p_F, bridge log p_B, running sums), the log p_F VJP, the targets' log R and ∇log R,
//! and the time features' phase gradient. Odd sizes (rows ∈ {1, 7, 65, 301}), named tolerances.
//!
//! Without an adapter the tests print `skipped: no GPU adapter (…)` and pass, unless
//! `DIFFUSION_SAMPLERS_REQUIRE_GPU=1` (set by `.ci/run` where lavapipe is installed).

#![cfg(feature = "gpu")]

mod common;

use common::gpu_or_skip;
use diffusion_samplers::autodiff::Tape;
use diffusion_samplers::config::{FunnelVariant, GmmGroundTruth};
use diffusion_samplers::cpu::Kernels;
use diffusion_samplers::energies::{Energy, Funnel, Gmm, ManyWell};
use diffusion_samplers::gpu::kernels::{em_step, energies, time_features};
use diffusion_samplers::rng;
use diffusion_samplers::samplers::{log_pb_step, Sampler};
use diffusion_samplers::tensor::Tensor;

const ROWS: [usize; 4] = [1, 7, 65, 301];
/// Unit roundoff of f32.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// `|gpu − cpu| ≤ ulps · u · scale`, `scale` the sum of the magnitudes the result is built from.
#[derive(Clone, Copy)]
struct Tol {
    name: &'static str,
    ulps: f64,
}

/// x' = (x + u·dt) + std·ξ: two roundings per side; a device that contracts either product into
/// an fma differs by at most one rounding of each product. scale = |x| + |u·dt| + |std·ξ|.
const GPU_EM_STATE: Tol = Tol {
    name: "gpu-em-state",
    ulps: 4.0,
};
/// log p_F and log p_B summed over D terms in f32 (the CPU's log p_B is f64; its log p_F is
/// the same f32 order, so only contraction differs): γ_D-style growth, scale = Σ_j |term_j|.
/// The bound is 2(D + 4) ulps of the scale.
const GPU_LOGP: Tol = Tol {
    name: "gpu-logp",
    ulps: 2.0,
};
/// The log p_F VJP g·r·dt/var: r = (x' − x) − u·dt cancels, so the error is relative to
/// |g|·(|x'| + |x| + |u·dt|)·dt/var.
const GPU_LOGPF_VJP: Tol = Tol {
    name: "gpu-logpf-vjp",
    ulps: 8.0,
};
/// log R and ∇log R in f32 against the f64 references: exp/log polynomials of math.wgsl or the
/// device's builtins (a few ulps each) and sums over D or the mixture's components; scale = Σ
/// |terms| as stated per target (here bounded by |value| + D·max|x|⁴-type magnitudes).
const GPU_ENERGY: Tol = Tol {
    name: "gpu-energy",
    ulps: 64.0,
};
/// The phase gradient: T fma pairs in the CPU's order with sin/cos from math.wgsl; scale =
/// Σ_i |dout|; an unfused fma adds a rounding per product.
const GPU_TIME_FEATURES_BWD: Tol = Tol {
    name: "gpu-time-features-backward",
    ulps: 8.0,
};

fn normals(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = rng::stream(seed, "gpu-sampler-parity", n as u64);
    let mut v = vec![0f32; n];
    rng::fill_normals(&mut r, &mut v);
    v.iter_mut().for_each(|x| *x *= scale);
    v
}

/// Asserts |got − want| ≤ tol.ulps·u·scale[i] (+ 1e-30) for every element; prints the max.
fn check(what: &str, tol: Tol, got: &[f32], want: &[f64], scale: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f64;
    for i in 0..got.len() {
        let d = (got[i] as f64 - want[i]).abs();
        let bound = tol.ulps * U32 * scale[i] + 1e-30;
        assert!(
            d <= bound,
            "{what}[{i}]: gpu {} cpu {} |Δ| {d:e} > {bound:e} (tolerance {})",
            got[i],
            want[i],
            tol.name
        );
        if scale[i] > 0.0 {
            worst = worst.max(d / (U32 * scale[i]));
        }
    }
    eprintln!("{what}: max |Δ| = {worst:.2} ulp of scale ({})", tol.name);
}

fn sampler(dim: usize, sigma2: f64) -> Sampler {
    Sampler {
        dim,
        steps: 100,
        sigma2,
        learned_range: None,
        lgv_clip: 1e4,
        noising: Default::default(),
        guidance: None,
        ddpm: None,
    }
}

/// CPU reference of one step: x' in the rollout's f32 order, log p_F from the f32 tape,
/// log p_B from the f64 bridge; plus the scales of each.
struct StepRef {
    x_next: Vec<f64>,
    x_scale: Vec<f64>,
    log_pf: Vec<f64>,
    pf_scale: Vec<f64>,
    log_pb: Vec<f64>,
    pb_scale: Vec<f64>,
}

fn step_reference(s: &Sampler, step: usize, eps: f64, o: &[f32], x: &[f32], xi: &[f32]) -> StepRef {
    let d = s.dim;
    let rows = x.len() / d;
    let dt = s.dt();
    let std = (dt * s.sigma2 + eps * eps).sqrt() as f32;
    let mut xn = vec![0f32; x.len()];
    let mut x_scale = vec![0f64; x.len()];
    for b in 0..rows {
        for j in 0..d {
            let k = b * d + j;
            let u = o[b * 2 * d + j];
            xn[k] = x[k] + u * dt as f32 + std * xi[k];
            x_scale[k] = (x[k].abs() + (u * dt as f32).abs() + (std * xi[k]).abs()) as f64;
        }
    }
    let mut tape = Tape::<f32>::new();
    let on = tape.constant(Tensor::from_vec(rows, 2 * d, o.to_vec()));
    let xv = tape.constant(Tensor::from_vec(rows, d, x.to_vec()));
    let nv = tape.constant(Tensor::from_vec(rows, d, xn.clone()));
    let lpf = tape.em_logpf(on, xv, nv, dt as f32, (s.sigma2.ln()) as f32, None);
    let log_pf: Vec<f64> = tape.value(lpf).data.iter().map(|&v| v as f64).collect();
    let var = dt * s.sigma2;
    let norm = 0.5 * (std::f64::consts::TAU * var).ln();
    let mut pf_scale = vec![0f64; rows];
    let mut log_pb = vec![0f64; rows];
    let mut pb_scale = vec![0f64; rows];
    let ratio = step as f64 / (step + 1) as f64;
    let var_b = s.sigma2 * dt * ratio;
    for b in 0..rows {
        let (xr, nr) = (&x[b * d..(b + 1) * d], &xn[b * d..(b + 1) * d]);
        log_pb[b] = log_pb_step(s, step, xr, nr);
        for j in 0..d {
            let r = (nr[j] - xr[j]) as f64 - o[b * 2 * d + j] as f64 * dt;
            let terms = r * r / (2.0 * var) + norm.abs();
            // r itself cancels: its error is relative to |x'| + |x|.
            let r_err = (nr[j].abs() + xr[j].abs()) as f64 * r.abs() / var;
            pf_scale[b] += (d as f64 + 4.0) * terms + 4.0 * r_err;
            if step > 0 {
                let sb = xr[j] as f64 - ratio * nr[j] as f64;
                let tb =
                    sb * sb / (2.0 * var_b) + (0.5 * (std::f64::consts::TAU * var_b).ln()).abs();
                let sb_err = (xr[j].abs() + nr[j].abs()) as f64 * sb.abs() / var_b;
                pb_scale[b] += (d as f64 + 4.0) * tb + 4.0 * sb_err;
            }
        }
    }
    StepRef {
        x_next: xn.iter().map(|&v| v as f64).collect(),
        x_scale,
        log_pf,
        pf_scale,
        log_pb,
        pb_scale,
    }
}

#[test]
fn em_step_matches_the_cpu_rollout_step() {
    let Some(ctx) = gpu_or_skip() else { return };
    for (dim, sigma2) in [(2usize, 5.0f64), (5, 1.0), (32, 1.0)] {
        let s = sampler(dim, sigma2);
        for &rows in &ROWS {
            for (step, eps) in [(0usize, 0.0f64), (3, 0.1), (99, 0.0)] {
                let seed = (dim * 1000 + rows * 10 + step) as u64;
                let o = normals(seed, rows * 2 * dim, 3.0);
                let x = normals(seed + 1, rows * dim, 4.0);
                let xi = normals(seed + 2, rows * dim, 1.0);
                let cfg = em_step::EmStepConfig {
                    dt: s.dt(),
                    sigma2,
                    explore_std: eps,
                    step,
                    accumulate: false,
                };
                let got = em_step::run_em_step(ctx, &cfg, dim, &o, &x, &xi).unwrap();
                let r = step_reference(&s, step, eps, &o, &x, &xi);
                let tag = format!("D={dim} B={rows} i={step}");
                check(
                    &format!("x' {tag}"),
                    GPU_EM_STATE,
                    &got.x_next,
                    &r.x_next,
                    &r.x_scale,
                );
                check(
                    &format!("log p_F {tag}"),
                    GPU_LOGP,
                    &got.log_pf,
                    &r.log_pf,
                    &r.pf_scale,
                );
                check(
                    &format!("log p_B {tag}"),
                    GPU_LOGP,
                    &got.log_pb,
                    &r.log_pb,
                    &r.pb_scale,
                );
            }
        }
    }
}

#[test]
fn em_step_accumulates_running_sums_in_step_order() {
    let Some(ctx) = gpu_or_skip() else { return };
    use diffusion_samplers::gpu::GpuVec;
    let (dim, rows) = (3usize, 65usize);
    let s = sampler(dim, 1.0);
    let mut x = vec![0f32; rows * dim];
    let gx = GpuVec::from_slice(ctx, &x, "x0");
    let gn = GpuVec::zeros(ctx, rows * dim, "x1");
    let lf = GpuVec::zeros(ctx, rows, "lf");
    let lb = GpuVec::zeros(ctx, rows, "lb");
    let (mut want_f, mut want_b) = (vec![0f64; rows], vec![0f64; rows]);
    let (mut scale_f, mut scale_b) = (vec![0f64; rows], vec![0f64; rows]);
    let mut enc = ctx.encoder("accumulate");
    let mut states = [gx, gn];
    let mut keep = Vec::new();
    for step in 0..4 {
        let o = normals(50 + step as u64, rows * 2 * dim, 2.0);
        let xi = normals(60 + step as u64, rows * dim, 1.0);
        let cfg = em_step::EmStepConfig {
            dt: s.dt(),
            sigma2: 1.0,
            explore_std: 0.0,
            step,
            accumulate: step > 0,
        };
        let r = step_reference(&s, step, 0.0, &o, &x, &xi);
        for b in 0..rows {
            want_f[b] += r.log_pf[b];
            want_b[b] += r.log_pb[b];
            scale_f[b] += r.pf_scale[b] + want_f[b].abs() * 4.0;
            scale_b[b] += r.pb_scale[b] + want_b[b].abs() * 4.0;
        }
        let go = GpuVec::from_slice(ctx, &o, "o");
        let gxi = GpuVec::from_slice(ctx, &xi, "xi");
        let std = GpuVec::from_slice(ctx, &[cfg.step_std()], "std");
        let (cur, next) = (&states[0], &states[1]);
        em_step::call_em_step(
            ctx, &mut enc, &cfg, dim, &go, cur, &gxi, next, &lf, &lb, &std,
        )
        .unwrap();
        keep.extend([go, gxi, std]);
        states.swap(0, 1);
        // The GPU continues from its own x'; the CPU from its own (equal up to GPU_EM_STATE),
        // so follow the GPU's states exactly by reading them back below.
        ctx.submit(std::mem::replace(&mut enc, ctx.encoder("accumulate")));
        let gpu_x = states[0].read(ctx).unwrap();
        check(
            &format!("x' step {step}"),
            GPU_EM_STATE,
            &gpu_x,
            &r.x_next,
            &r.x_scale,
        );
        x = gpu_x;
    }
    let got = ctx.read_many(&[&lf, &lb]).unwrap();
    check("Σ log p_F", GPU_LOGP, &got[0], &want_f, &scale_f);
    check("Σ log p_B", GPU_LOGP, &got[1], &want_b, &scale_b);
}

#[test]
fn em_logpf_backward_matches_the_tape_vjp() {
    let Some(ctx) = gpu_or_skip() else { return };
    for dim in [2usize, 7] {
        let s = sampler(dim, 5.0);
        for &rows in &ROWS {
            let seed = (dim * 100 + rows) as u64;
            let o = normals(seed, rows * 2 * dim, 3.0);
            let x = normals(seed + 1, rows * dim, 4.0);
            let xn = normals(seed + 2, rows * dim, 4.0);
            let g = normals(seed + 3, rows, 1.0);
            let cfg = em_step::EmStepConfig {
                dt: s.dt(),
                sigma2: s.sigma2,
                explore_std: 0.0,
                step: 5,
                accumulate: false,
            };
            let got = em_step::run_em_logpf_backward(ctx, &cfg, dim, &o, &x, &xn, &g).unwrap();
            let mut tape = Tape::<f32>::new();
            let on = tape.param(Tensor::from_vec(rows, 2 * dim, o.clone()));
            let xv = tape.constant(Tensor::from_vec(rows, dim, x.clone()));
            let nv = tape.constant(Tensor::from_vec(rows, dim, xn.clone()));
            let lpf = tape.em_logpf(on, xv, nv, s.dt() as f32, s.sigma2.ln() as f32, None);
            let grads = tape.backward(vec![(lpf, Tensor::from_vec(rows, 1, g.clone()))]);
            let want = grads[on.0].as_ref().expect("o has a gradient");
            let var = s.dt() * s.sigma2;
            let scale: Vec<f64> = (0..rows * 2 * dim)
                .map(|k| {
                    let (b, j) = (k / (2 * dim), k % (2 * dim));
                    if j >= dim {
                        return 0.0;
                    }
                    let i = b * dim + j;
                    let mag = (xn[i].abs() + x[i].abs()) as f64 + (o[k] as f64 * s.dt()).abs();
                    g[b].abs() as f64 * mag * s.dt() / var
                })
                .collect();
            let want: Vec<f64> = want.data.iter().map(|&v| v as f64).collect();
            check(
                &format!("du D={dim} B={rows}"),
                GPU_LOGPF_VJP,
                &got,
                &want,
                &scale,
            );
        }
    }
}

#[test]
fn energies_match_the_f64_targets() {
    let Some(ctx) = gpu_or_skip() else { return };
    let cases: Vec<(energies::Target, Box<dyn Energy>, f32)> = vec![
        (
            energies::Target::gmm25(),
            Box::new(Gmm::grid25(GmmGroundTruth::Stratified)),
            8.0,
        ),
        (
            energies::Target::gmm9(),
            Box::new(Gmm::grid9(GmmGroundTruth::Stratified)),
            5.0,
        ),
        (energies::Target::ManyWell, Box::new(ManyWell::new(8)), 1.5),
        (
            energies::Target::Funnel(FunnelVariant::Hard),
            Box::new(Funnel::new(FunnelVariant::Hard, 10)),
            1.5,
        ),
        (
            energies::Target::Funnel(FunnelVariant::Easy),
            Box::new(Funnel::new(FunnelVariant::Easy, 5)),
            1.0,
        ),
    ];
    for (target, energy, spread) in cases {
        let d = energy.dim();
        for &rows in &ROWS {
            let x = normals((d * 7 + rows) as u64, rows * d, spread);
            let (log_r, grad) = energies::run_log_reward_grad(ctx, &target, d, &x).unwrap();
            let mut want_r = vec![0f64; rows];
            energy.log_reward(&x, &mut want_r);
            let mut want_g = vec![0f32; rows * d];
            energy.grad_log_reward(&x, &mut want_g);
            // Scale: the value plus D times the largest per-coordinate magnitude (x⁴ terms of
            // Manywell, e^{−x₀}·x² of the funnel), each rounded a few times.
            let row_scale: Vec<f64> = (0..rows)
                .map(|b| {
                    let xr = &x[b * d..(b + 1) * d];
                    let m = xr.iter().map(|v| v.abs() as f64).fold(1.0, f64::max);
                    let e0 = (-(xr[0] as f64)).exp().max(1.0);
                    want_r[b].abs() + d as f64 * (m.powi(4) + 6.0 * m * m) * e0
                })
                .collect();
            let tag = format!("{} B={rows}", energy.name());
            check(
                &format!("log R {tag}"),
                GPU_ENERGY,
                &log_r,
                &want_r,
                &row_scale,
            );
            let g_scale: Vec<f64> = (0..rows * d)
                .map(|k| {
                    let b = k / d;
                    let xr = &x[b * d..(b + 1) * d];
                    let m = xr.iter().map(|v| v.abs() as f64).fold(1.0, f64::max);
                    let e0 = (-(xr[0] as f64)).exp().max(1.0);
                    (want_g[k].abs() as f64 + 4.0 * m.powi(3) + 12.0 * m) * e0 * d as f64 + 40.0
                })
                .collect();
            let want_g: Vec<f64> = want_g.iter().map(|&v| v as f64).collect();
            check(
                &format!("∇log R {tag}"),
                GPU_ENERGY,
                &grad,
                &want_g,
                &g_scale,
            );
        }
    }
}

#[test]
fn time_features_backward_matches_the_cpu_kernel() {
    let Some(ctx) = gpu_or_skip() else { return };
    for (t_len, f) in [(1usize, 1usize), (7, 3), (100, 64), (65, 65)] {
        let t: Vec<f32> = (0..t_len).map(|i| i as f32 / t_len as f32).collect();
        let freqs: Vec<f32> = (0..f).map(|k| 0.1 + k as f32 * 1.7).collect();
        let phase = normals(t_len as u64, f, 1.0);
        let dout = normals(t_len as u64 + 9, t_len * 2 * f, 1.0);
        let init = normals(t_len as u64 + 11, f, 0.5);
        let mut want = init.clone();
        <f32 as Kernels>::time_features_backward(&t, &freqs, &phase, &dout, &mut want);
        let mut got = init.clone();
        time_features::run_time_features_backward(ctx, &t, &freqs, &phase, &dout, &mut got)
            .unwrap();
        let scale: Vec<f64> = (0..f)
            .map(|k| {
                init[k].abs() as f64
                    + (0..t_len)
                        .map(|i| (dout[i * 2 * f + k].abs() + dout[i * 2 * f + f + k].abs()) as f64)
                        .sum::<f64>()
                        * (2 * t_len + 2) as f64
            })
            .collect();
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        check(
            &format!("dphase T={t_len} F={f}"),
            GPU_TIME_FEATURES_BWD,
            &got,
            &want,
            &scale,
        );
    }
}

//! Property tests over random shapes and values: tape chains vs finite differences, loss
//! invariances, and the p_F / p_B identities.

use diffusion_samplers::autodiff::gradcheck::gradcheck;
use diffusion_samplers::autodiff::Tape;
use diffusion_samplers::losses::{trajectory_balance, vargrad};
use diffusion_samplers::rng;
use diffusion_samplers::samplers::{log_pb_step, sample_backward_states, Sampler};
use diffusion_samplers::tensor::Tensor;
use diffusion_samplers::tolerance::{Tolerance, GRADCHECK_F64};
use proptest::prelude::*;

/// Loss values of a few units summed in f64: shifts leave them equal to rounding.
const SHIFT_INVARIANCE: Tolerance = Tolerance {
    name: "shift-invariance",
    abs: 1e-9,
    rel: 1e-9,
};

fn randn(rows: usize, cols: usize, seed: u64, tag: u64) -> Tensor<f64> {
    let mut r = rng::stream(seed, "props", tag);
    Tensor::from_vec(
        rows,
        cols,
        (0..rows * cols).map(|_| rng::normal_f64(&mut r)).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// linear → GELU → add_row → linear → em_logpf, random shapes: tape gradients of every
    /// input equal f64 central differences.
    #[test]
    fn mlp_chain_matches_finite_differences(b in 1usize..6, d in 1usize..4, h in 1usize..9, seed in 0u64..1000, learned in any::<bool>()) {
        let inputs = [randn(h, d, seed, 1), randn(1, h, seed, 2), randn(2, h, seed, 3), randn(2 * d, h, seed, 4), randn(1, 2 * d, seed, 5)];
        let x = randn(b, d, seed, 6);
        let xn = randn(b, d, seed, 7);
        let sizes: Vec<(usize, usize)> = inputs.iter().map(|t| t.shape()).collect();
        let flat: Vec<f64> = inputs.iter().flat_map(|t| t.data.clone()).collect();
        let range = learned.then_some(4.0);
        let build = |v: &[f64], grad: bool| {
            let mut tape = Tape::<f64>::new();
            let mut off = 0;
            let leaves: Vec<_> = sizes.iter().map(|&(r, c)| { let t = Tensor::from_vec(r, c, v[off..off + r * c].to_vec()); off += r * c; tape.param(t) }).collect();
            let xv = tape.constant(x.clone());
            let xnv = tape.constant(xn.clone());
            let s = tape.linear(xv, leaves[0], leaves[1]);
            let a = tape.gelu(s);
            let a = tape.add_row(a, leaves[2], 1);
            let o = tape.linear(a, leaves[3], leaves[4]);
            let lp = tape.em_logpf(o, xv, xnv, 0.25, 0.5, range);
            let total: f64 = tape.value(lp).data.iter().sum();
            let g = if grad {
                let grads = tape.backward(vec![(lp, Tensor::from_vec(b, 1, vec![1.0; b]))]);
                leaves.iter().zip(&sizes).flat_map(|(l, &(r, c))| grads[l.0].clone().map(|t| t.data).unwrap_or(vec![0.0; r * c])).collect()
            } else { Vec::new() };
            (total, g)
        };
        let (_, analytic) = build(&flat, true);
        let mut f = |v: &[f64]| build(v, false).0;
        let res = gradcheck(&mut f, &flat, &analytic, 1e-6, GRADCHECK_F64);
        prop_assert!(res.is_ok(), "{:?}", res);
    }

    /// TB is invariant to shifting log Z and every log R by the same constant; VarGrad to
    /// shifting log R alone.
    #[test]
    fn losses_are_shift_invariant(n in 1usize..40, seed in 0u64..1000, c in -50.0f64..50.0, log_z in -5.0f64..5.0) {
        let mut r = rng::stream(seed, "shift", 0);
        let mut draw = || (0..n).map(|_| 3.0 * rng::normal_f64(&mut r)).collect::<Vec<f64>>();
        let (lf, lb, lr) = (draw(), draw(), draw());
        let shifted: Vec<f64> = lr.iter().map(|v| v + c).collect();
        let a = trajectory_balance(log_z, &lf, &lb, &lr);
        let b = trajectory_balance(log_z + c, &lf, &lb, &shifted);
        prop_assert!(SHIFT_INVARIANCE.close(b.loss, a.loss), "{} vs {}", b.loss, a.loss);
        for (x, y) in a.d_log_pf.iter().zip(&b.d_log_pf) { prop_assert!(SHIFT_INVARIANCE.close(*y, *x)); }
        if n >= 2 {
            let va = vargrad(&lf, &lb, &lr);
            let vb = vargrad(&lf, &lb, &shifted);
            prop_assert!(SHIFT_INVARIANCE.close(vb.loss, va.loss));
        }
    }

    /// Along any bridge trajectory, Σ log p_B = log N(x_T; 0, σ²I) − Σ log p_Brownian(x_{i+1}|x_i):
    /// checked as the bridge identity with the zero-drift forward density written out here.
    #[test]
    fn bridge_identity_random(t in 1usize..30, d in 1usize..5, sigma2 in 0.2f64..6.0, seed in 0u64..1000) {
        let s = Sampler {
            dim: d,
            steps: t,
            sigma2,
            learned_range: None,
            lgv_clip: 100.0,
            noising: Default::default(),
            guidance: None,
            ddpm: None,
        };
        let b = 3usize;
        let mut r = rng::stream(seed, "bridge", 0);
        let xt: Vec<f32> = (0..b * d).map(|_| (2.0 * rng::normal_f64(&mut r)) as f32).collect();
        let states = sample_backward_states(&s, &xt, &mut rng::stream(seed, "bw", 0), 0, b);
        let dt = 1.0 / t as f64;
        for row in 0..b {
            let mut lf = 0.0;
            let mut lb = 0.0;
            for i in 0..t {
                let xi = &states[(i * b + row) * d..(i * b + row + 1) * d];
                let xn = &states[((i + 1) * b + row) * d..((i + 1) * b + row + 1) * d];
                for j in 0..d {
                    let r = xn[j] as f64 - xi[j] as f64;
                    lf += -0.5 * r * r / (sigma2 * dt) - 0.5 * (std::f64::consts::TAU * sigma2 * dt).ln();
                }
                lb += log_pb_step(&s, i, xi, xn);
            }
            let want: f64 = xt[row * d..(row + 1) * d].iter().map(|&v| -0.5 * (v as f64).powi(2) / sigma2 - 0.5 * (std::f64::consts::TAU * sigma2).ln()).sum();
            prop_assert!((lf - lb - want).abs() < 1e-3 * (1.0 + want.abs()), "{} vs {}", lf - lb, want);
        }
    }
}

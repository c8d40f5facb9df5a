//! Evaluation metrics (spec §6): log Z estimators, ESS, and the exact W2 assignment solver
//! (vs brute force, vs its own dual certificate, and vs the spec's perfect-sampler floors).

use diffusion_samplers::config::GmmGroundTruth;
use diffusion_samplers::energies::{Energy, Gmm, ManyWell};
use diffusion_samplers::metrics::{
    ess_normalised, linear_assignment, log_z_estimates, logmeanexp, logsumexp, mean,
    squared_distances, try_w2_exact, w2_exact, W2Error,
};
use diffusion_samplers::rng;
use diffusion_samplers::tolerance::{Tolerance, F32_VS_F64};
use proptest::prelude::*;
use std::time::Instant;

/// The same f64 sum in two orders or two algebraically equal forms.
const SAME_SUM_F64: Tolerance = Tolerance {
    name: "same-sum-f64",
    abs: 1e-12,
    rel: 1e-12,
};
/// Complementary slackness of the assignment duals: potentials are sums of up to ~n cost
/// differences (costs ≤ ~1e3 here), so allow f64 rounding accumulated over n = 2000 updates.
const DUAL_SLACK: Tolerance = Tolerance {
    name: "dual-slack",
    abs: 1e-8,
    rel: 0.0,
};

// ---------------------------------------------------------------------------------------------
// Estimators

#[test]
fn logmeanexp_known_values() {
    assert_eq!(logmeanexp(&[0.0, 0.0, 0.0]), 0.0);
    assert!(SAME_SUM_F64.close(logmeanexp(&[0.0, 3f64.ln()]), 2f64.ln()));
    // Shifted by the max: no overflow or underflow at ±1000.
    assert!(SAME_SUM_F64.close(logmeanexp(&[1000.0, 1000.0]), 1000.0));
    assert!(SAME_SUM_F64.close(
        logmeanexp(&[-1000.0, -1000.0 + 3f64.ln()]),
        -1000.0 + 2f64.ln()
    ));
    assert!(SAME_SUM_F64.close(logsumexp(&[1000.0, 1000.0]), 1000.0 + 2f64.ln()));
    // A zero weight contributes nothing but counts in K.
    assert!(SAME_SUM_F64.close(logmeanexp(&[f64::NEG_INFINITY, 0.0]), -(2f64.ln())));
    assert_eq!(logmeanexp(&[f64::NEG_INFINITY; 3]), f64::NEG_INFINITY);
    assert_eq!(logmeanexp(&[0.0, f64::INFINITY]), f64::INFINITY);
    assert!(logmeanexp(&[0.0, f64::NAN, 1.0]).is_nan());
    assert!(logmeanexp(&[]).is_nan());
    assert!(mean(&[]).is_nan());
    assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
}

#[test]
fn ess_known_values() {
    assert_eq!(ess_normalised(&[0.7; 10]), 1.0);
    // One live weight out of 4: ESS = 1/K.
    let w = [f64::NEG_INFINITY, 5.0, f64::NEG_INFINITY, f64::NEG_INFINITY];
    assert_eq!(ess_normalised(&w), 0.25);
    // Weights 1 and 3: (1 + 3)² / (2·(1 + 9)) = 0.8, also at a scale where e^{w} overflows.
    assert!(SAME_SUM_F64.close(ess_normalised(&[0.0, 3f64.ln()]), 0.8));
    assert!(SAME_SUM_F64.close(ess_normalised(&[800.0, 800.0 + 3f64.ln()]), 0.8));
    assert!(ess_normalised(&[]).is_nan());
    assert!(ess_normalised(&[f64::NEG_INFINITY; 2]).is_nan());
    assert!(ess_normalised(&[0.0, f64::NAN]).is_nan());
}

#[test]
fn log_z_estimates_are_mean_and_logmeanexp() {
    let w = [-3.0, -1.0, -2.5, 0.5];
    let (elbo, rw) = log_z_estimates(&w);
    assert_eq!(elbo, mean(&w));
    assert_eq!(rw, logmeanexp(&w));
    let (elbo, rw) = log_z_estimates(&[-1.25; 7]);
    assert_eq!(elbo, -1.25);
    assert!(SAME_SUM_F64.close(rw, -1.25));
}

proptest! {
    #[test]
    fn logmeanexp_matches_naive(w in prop::collection::vec(-40.0f64..40.0, 1..50)) {
        let naive = (w.iter().map(|v| v.exp()).sum::<f64>() / w.len() as f64).ln();
        prop_assert!(SAME_SUM_F64.close(logmeanexp(&w), naive));
    }

    #[test]
    fn logmeanexp_and_ess_are_shift_covariant(
        w in prop::collection::vec(-30.0f64..30.0, 1..50), c in -500.0f64..500.0,
    ) {
        let shifted: Vec<f64> = w.iter().map(|v| v + c).collect();
        prop_assert!(SAME_SUM_F64.close(logmeanexp(&shifted), logmeanexp(&w) + c));
        // (Shifting rounds each weight at the scale of |c|, hence the looser check.)
        prop_assert!(F32_VS_F64.close(ess_normalised(&shifted), ess_normalised(&w)));
    }

    #[test]
    fn estimators_obey_jensen_and_ess_bounds(w in prop::collection::vec(-30.0f64..30.0, 1..50)) {
        let (elbo, rw) = log_z_estimates(&w);
        prop_assert!(elbo <= rw + 1e-12, "mean {elbo} > logmeanexp {rw}");
        prop_assert!(rw <= w.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 1e-12);
        let ess = ess_normalised(&w);
        let k = w.len() as f64;
        prop_assert!(ess >= 1.0 / k - 1e-12 && ess <= 1.0 + 1e-12, "ESS {ess} for K = {k}");
    }
}

// ---------------------------------------------------------------------------------------------
// Linear assignment and W2

/// Minimum over all n! permutations (Heap's algorithm), n ≤ 8.
fn brute_force_min(cost: &[f64], n: usize) -> f64 {
    fn heap(k: usize, perm: &mut Vec<usize>, cost: &[f64], n: usize, best: &mut f64) {
        if k == 1 {
            let c: f64 = perm.iter().enumerate().map(|(i, &j)| cost[i * n + j]).sum();
            *best = best.min(c);
            return;
        }
        for i in 0..k {
            heap(k - 1, perm, cost, n, best);
            let swap_with = if k.is_multiple_of(2) { i } else { 0 };
            perm.swap(swap_with, k - 1);
        }
    }
    let mut perm: Vec<usize> = (0..n).collect();
    let mut best = f64::INFINITY;
    if n == 0 {
        return 0.0;
    }
    heap(n, &mut perm, cost, n, &mut best);
    best
}

fn assert_is_permutation(p: &[usize]) {
    let mut seen = vec![false; p.len()];
    for &j in p {
        assert!(j < p.len() && !seen[j], "not a permutation: {p:?}");
        seen[j] = true;
    }
}

/// Dual feasibility (reduced costs ≥ 0) and tightness on the matching: a proof of optimality.
fn assert_dual_certificate(cost: &[f64], n: usize) {
    let asg = linear_assignment(cost, n);
    assert_is_permutation(&asg.row_to_col);
    let (u, v) = (&asg.row_potential, &asg.col_potential);
    let mut min_reduced = f64::INFINITY;
    for i in 0..n {
        for j in 0..n {
            min_reduced = min_reduced.min(cost[i * n + j] - u[i] - v[j]);
        }
        let j = asg.row_to_col[i];
        let tight = cost[i * n + j] - u[i] - v[j];
        assert!(
            DUAL_SLACK.close(tight, 0.0),
            "row {i}: reduced cost {tight} on the matching"
        );
    }
    assert!(
        min_reduced >= -DUAL_SLACK.abs,
        "dual infeasible: min reduced cost {min_reduced}"
    );
    // Strong duality: Σu + Σv = the matching's cost.
    let dual: f64 = u.iter().sum::<f64>() + v.iter().sum::<f64>();
    assert!(
        (dual - asg.total_cost).abs() <= DUAL_SLACK.abs * n as f64,
        "dual {dual} vs primal {}",
        asg.total_cost
    );
}

fn random_points(n: usize, d: usize, scale: f64, seed: u64, index: u64) -> Vec<f32> {
    let mut r = rng::stream(seed, "w2-test-points", index);
    let mut x = vec![0f32; n * d];
    rng::fill_normals(&mut r, &mut x);
    x.iter_mut().for_each(|v| *v = (*v as f64 * scale) as f32);
    x
}

#[test]
fn assignment_matches_brute_force_seeded() {
    let mut r = rng::stream(11, "lap-brute", 0);
    for trial in 0..400u64 {
        let n = 1 + (trial % 7) as usize;
        // Half the trials: integer costs in 0..4, full of ties (the hard case for tie-breaking).
        let cost: Vec<f64> = (0..n * n)
            .map(|_| {
                if trial % 2 == 0 {
                    rng::below(&mut r, 4) as f64
                } else {
                    10.0 * rng::uniform_f64(&mut r) - 3.0
                }
            })
            .collect();
        let asg = linear_assignment(&cost, n);
        assert_is_permutation(&asg.row_to_col);
        let want = brute_force_min(&cost, n);
        assert!(
            SAME_SUM_F64.close(asg.total_cost, want),
            "trial {trial} n = {n}: {} vs {want}",
            asg.total_cost
        );
        assert_dual_certificate(&cost, n);
    }
}

proptest! {
    #[test]
    fn w2_matches_brute_force(
        n in 1usize..=7, d in 1usize..=3,
        pts in prop::collection::vec(-10.0f32..10.0, 2 * 7 * 3),
    ) {
        let a = &pts[..n * d];
        let b = &pts[7 * 3..7 * 3 + n * d];
        let cost = squared_distances(a, b, n, d);
        let want = (brute_force_min(&cost, n) / n as f64).sqrt();
        let got = w2_exact(a, b, n, d);
        prop_assert!(SAME_SUM_F64.close(got, want), "n = {n}, d = {d}: {got} vs {want}");
    }
}

#[test]
fn w2_of_identical_permuted_and_shifted_sets() {
    let (n, d) = (300, 3);
    let a = random_points(n, d, 2.0, 12, 0);
    assert_eq!(w2_exact(&a, &a, n, d), 0.0);
    // A permuted copy: rows in reverse order.
    let rev: Vec<f32> = a.chunks_exact(d).rev().flatten().copied().collect();
    assert_eq!(w2_exact(&a, &rev, n, d), 0.0);
    // A translate by v: Σ‖a_i − a_σ(i) − v‖² = Σ‖a_i − a_σ(i)‖² + n‖v‖², so σ = id and W2 = ‖v‖.
    let v = [0.75f64, -1.5, 0.25];
    let shifted: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(k, &x)| (x as f64 + v[k % d]) as f32)
        .collect();
    let norm_v = v.iter().map(|c| c * c).sum::<f64>().sqrt();
    let got = w2_exact(&a, &shifted, n, d);
    assert!(F32_VS_F64.close(got, norm_v), "W2 {got} vs ‖v‖ = {norm_v}");
}

#[test]
fn w2_is_symmetric() {
    let (n, d) = (200, 2);
    let a = random_points(n, d, 1.0, 13, 0);
    let b = random_points(n, d, 1.5, 13, 1);
    assert!(SAME_SUM_F64.close(w2_exact(&a, &b, n, d), w2_exact(&b, &a, n, d)));
}

#[test]
#[should_panic(expected = "w2_exact: point set `b` has 6 values, expected n·d = 4·2 = 8")]
fn w2_panics_on_mismatched_sizes() {
    w2_exact(&[0.0; 8], &[0.0; 6], 4, 2);
}

#[test]
fn try_w2_reports_errors_and_nan() {
    assert_eq!(
        try_w2_exact(&[0.0; 7], &[0.0; 8], 4, 2),
        Err(W2Error::ShapeMismatch {
            which: "a",
            len: 7,
            n: 4,
            d: 2
        })
    );
    assert_eq!(
        try_w2_exact(&[], &[], 0, 2),
        Err(W2Error::Empty { n: 0, d: 2 })
    );
    let mut a = vec![0f32; 8];
    a[3] = f32::NAN;
    assert!(try_w2_exact(&a, &[1.0; 8], 4, 2).unwrap().is_nan());
}

/// Spec §6 floor: a perfect 25GMM sampler scores W2 ≈ 1.02 against an independent multinomial
/// ground-truth set of 2000 and ≈ 0.81 against the stratified one. Also the timing of n = 2000.
#[test]
fn w2_floor_25gmm_n2000() {
    let n = 2000;
    let multi = Gmm::grid25(GmmGroundTruth::Multinomial);
    let strat = Gmm::grid25(GmmGroundTruth::Stratified);
    let model = multi
        .sample(n, &mut rng::stream(14, "w2-model", 0))
        .unwrap();
    let gt_multi = multi.sample(n, &mut rng::stream(14, "w2-gt", 0)).unwrap();
    let gt_strat = strat.sample(n, &mut rng::stream(14, "w2-gt", 1)).unwrap();

    let t = Instant::now();
    let w_multi = w2_exact(&model, &gt_multi, n, 2);
    let secs = t.elapsed().as_secs_f64();
    eprintln!("w2_exact 25GMM n = {n}: {secs:.3} s");
    let w_strat = w2_exact(&model, &gt_strat, n, 2);
    eprintln!("25GMM W2 vs multinomial {w_multi:.4}, vs stratified {w_strat:.4}");
    // The spec's numbers are single draws. Over 12 seeded draws we measured 1.07 ± 0.14
    // (multinomial) and 0.91 ± 0.12 (stratified), dominated by the random per-mode counts, so
    // the bands are about ±1.5 and ±2.5 sd around the spec: loose, but they still catch a solver
    // that is off by a factor (Sinkhorn-like bias, a wrong √, a wrong 1/n).
    assert!(
        (0.85..1.25).contains(&w_multi),
        "W2 vs multinomial = {w_multi}, spec ≈ 1.02"
    );
    assert!(
        (0.6..1.2).contains(&w_strat),
        "W2 vs stratified = {w_strat}, spec ≈ 0.81"
    );

    assert_dual_certificate(&squared_distances(&model, &gt_multi, n, 2), n);
}

/// Spec §6 floor for Manywell (d = 32): two independent 2000-sets give W2 ≈ 5.43.
#[test]
fn w2_floor_manywell_n2000() {
    let (n, m) = (2000, ManyWell::new(32));
    let a = m.sample(n, &mut rng::stream(15, "w2-model", 0)).unwrap();
    let b = m.sample(n, &mut rng::stream(15, "w2-gt", 0)).unwrap();
    let t = Instant::now();
    let w = w2_exact(&a, &b, n, m.dim());
    eprintln!(
        "w2_exact Manywell n = {n}: {:.3} s, W2 = {w:.4}",
        t.elapsed().as_secs_f64()
    );
    assert!((5.1..5.8).contains(&w), "W2 = {w}, spec ≈ 5.43");
}

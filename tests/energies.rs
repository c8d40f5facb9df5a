//! Targets (spec §1.1–1.4, §8.2): spec test values, normalisation, analytic gradients vs central
//! differences, batch vs row paths, log Z quadrature and the exact samplers' statistics.

use diffusion_samplers::config::{FunnelVariant, GmmGroundTruth};
use diffusion_samplers::energies::{Energy, Funnel, Gmm, ManyWell};
use diffusion_samplers::rng;
use diffusion_samplers::tolerance::{Tolerance, EXACT, GRADCHECK_F32, GRADCHECK_F64, SPEC_VALUE};
use proptest::prelude::*;

/// Two f64 evaluations of the same closed form in a different order (factorised vs direct sum).
const SAME_FORMULA_F64: Tolerance = Tolerance {
    name: "same-formula-f64",
    abs: 1e-11,
    rel: 1e-12,
};
/// Riemann-sum normalisation checks: the grids below resolve the densities to well under this.
const QUADRATURE: Tolerance = Tolerance {
    name: "quadrature",
    abs: 1e-7,
    rel: 0.0,
};
/// The spec's "≈" sample checks for Manywell (P(a > 0) ≈ 0.843, E[a] ≈ 1.184). Quadrature of the
/// spec's own density gives 0.84431 and 1.18796 (midpoint rule here, and independently in
/// Python), so those printed values are themselves ~1e-3 and ~4e-3 off; the band admits that.
/// The samples are tested against the quadrature values, with standard-error bands.
const SPEC_APPROX: Tolerance = Tolerance {
    name: "spec-approx",
    abs: 5e-3,
    rel: 0.0,
};

/// Central-difference step 2⁻¹⁴: test points are multiples of it with |x| < 512, so x ± h is an
/// exact f32 and the difference quotient sees exactly the points it divides by.
const FD_STEP: f64 = 1.0 / 16384.0;

fn snap(v: f64) -> f32 {
    ((v / FD_STEP).round() * FD_STEP) as f32
}

/// Analytic ∇log R at `x` vs f64 central differences of `log_reward_row`, component by component.
fn gradcheck(e: &dyn Energy, x: &[f32]) -> Result<(), TestCaseError> {
    let d = e.dim();
    let mut g = vec![0f32; d];
    e.grad_log_reward_row(x, &mut g);
    let mut xp = x.to_vec();
    for j in 0..d {
        let (up_x, down_x) = (x[j] as f64 + FD_STEP, x[j] as f64 - FD_STEP);
        prop_assert!(up_x as f32 as f64 == up_x && down_x as f32 as f64 == down_x);
        xp[j] = up_x as f32;
        let up = e.log_reward_row(&xp);
        xp[j] = down_x as f32;
        let down = e.log_reward_row(&xp);
        xp[j] = x[j];
        let fd = (up - down) / (2.0 * FD_STEP);
        prop_assert!(
            GRADCHECK_F64.close(g[j] as f64, fd),
            "{}: d/dx{j} at {x:?}: analytic {}, central difference {fd}",
            e.name(),
            g[j]
        );
    }
    Ok(())
}

/// Wraps a target, forwarding only `log_reward_row`, so its gradient is the trait's default FD.
struct DefaultGrad<'a>(&'a dyn Energy);

impl Energy for DefaultGrad<'_> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn log_reward_row(&self, x: &[f32]) -> f64 {
        self.0.log_reward_row(x)
    }
}

/// [n, D] points uniform in `lo..hi` per coordinate (for the seeded, non-proptest checks).
fn uniform_points(n: usize, d: usize, lo: &[f64], hi: &[f64], seed: u64) -> Vec<f32> {
    let mut r = rng::stream(seed, "test-points", 0);
    (0..n * d)
        .map(|k| {
            let j = k % d;
            (lo[j] + (hi[j] - lo[j]) * rng::uniform_f64(&mut r)) as f32
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Spec test values (§1.1–1.4)

#[test]
fn gmm25_spec_values() {
    let g = Gmm::grid25(GmmGroundTruth::Stratified);
    assert_eq!(
        (g.name().as_str(), g.dim(), g.num_modes()),
        ("25gmm", 2, 25)
    );
    assert_eq!(g.log_z(), Some(0.0));
    for x in [[0.0f32, 0.0], [5.0, 5.0]] {
        let got = g.log_reward_row(&x);
        assert!(SPEC_VALUE.close(got, -3.852780), "log R({x:?}) = {got}");
    }
    // Mode order: first coordinate is the outer loop.
    let m = g.means();
    assert_eq!(
        (m[0], m[1], m[5], m[24]),
        ([-10.0, -10.0], [-10.0, -5.0], [-5.0, -10.0], [10.0, 10.0])
    );
}

#[test]
fn gmm9_names_and_modes() {
    let g = Gmm::grid9(GmmGroundTruth::Stratified);
    assert_eq!((g.name().as_str(), g.dim(), g.num_modes()), ("9gmm", 2, 9));
    assert_eq!(g.means()[0], [-5.0, -5.0]);
    assert_eq!(g.means()[8], [5.0, 5.0]);
}

/// The factorised log-density equals the spec's logsumexp over K modes − log K.
fn direct_gmm_log_r(means: &[[f64; 2]], x: &[f32]) -> f64 {
    let v = 0.3;
    let terms: Vec<f64> = means
        .iter()
        .map(|m| {
            let d0 = x[0] as f64 - m[0];
            let d1 = x[1] as f64 - m[1];
            -(d0 * d0 + d1 * d1) / (2.0 * v) - (std::f64::consts::TAU * v).ln()
        })
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln() - (means.len() as f64).ln()
}

#[test]
fn gmm_factorised_equals_direct_logsumexp() {
    for g in [
        Gmm::grid25(GmmGroundTruth::Stratified),
        Gmm::grid9(GmmGroundTruth::Stratified),
    ] {
        let xs = uniform_points(2000, 2, &[-16.0, -16.0], &[16.0, 16.0], 1);
        for x in xs.chunks_exact(2) {
            let got = g.log_reward_row(x);
            let want = direct_gmm_log_r(&g.means(), x);
            assert!(
                SAME_FORMULA_F64.close(got, want),
                "{} at {x:?}: {got} vs {want}",
                g.name()
            );
        }
    }
}

#[test]
fn gmm_is_normalised() {
    // Midpoint rule on [−15, 15]² with spacing 0.02: the integrand is smooth (std 0.55), so the
    // rule converges spectrally; the mass outside the box is ~e^{−5²/0.6}.
    for g in [
        Gmm::grid25(GmmGroundTruth::Stratified),
        Gmm::grid9(GmmGroundTruth::Stratified),
    ] {
        let (lo, step, m) = (-15.0f64, 0.02f64, 1500usize);
        let mut total = 0.0;
        for i in 0..m {
            let mut row = 0.0;
            for j in 0..m {
                let x = [
                    (lo + (i as f64 + 0.5) * step) as f32,
                    (lo + (j as f64 + 0.5) * step) as f32,
                ];
                row += g.log_reward_row(&x).exp();
            }
            total += row;
        }
        total *= step * step;
        assert!(QUADRATURE.close(total, 1.0), "{}: ∫R = {total}", g.name());
    }
}

#[test]
fn funnel_spec_values() {
    let f = Funnel::new(FunnelVariant::Hard, 10);
    assert_eq!(
        (f.name().as_str(), f.dim(), f.log_z()),
        ("funnel", 10, Some(0.0))
    );
    let got0 = f.log_reward_row(&[0.0; 10]);
    let got1 = f.log_reward_row(&[1.0; 10]);
    assert!(SPEC_VALUE.close(got0, -10.287998), "log R(0) = {got0}");
    assert!(SPEC_VALUE.close(got1, -16.499011), "log R(1) = {got1}");
    assert_eq!(Funnel::new(FunnelVariant::Easy, 10).name(), "easy-funnel");
}

#[test]
fn funnel_matches_sum_of_gaussian_log_densities() {
    fn log_normal(x: f64, var: f64) -> f64 {
        -0.5 * (std::f64::consts::TAU * var).ln() - 0.5 * x * x / var
    }
    for (variant, var0) in [(FunnelVariant::Hard, 9.0), (FunnelVariant::Easy, 1.0)] {
        let f = Funnel::new(variant, 10);
        let xs = uniform_points(
            500,
            10,
            &[[-6.0].as_slice(), &[-5.0; 9]].concat(),
            &[[6.0].as_slice(), &[5.0; 9]].concat(),
            2,
        );
        for x in xs.chunks_exact(10) {
            let x0 = x[0] as f64;
            let want = log_normal(x0, var0)
                + x[1..]
                    .iter()
                    .map(|&v| log_normal(v as f64, x0.exp()))
                    .sum::<f64>();
            let got = f.log_reward_row(x);
            assert!(
                SAME_FORMULA_F64.close(got, want),
                "{variant:?} at {x:?}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn manywell_spec_values() {
    let m = ManyWell::new(32);
    assert_eq!((m.name().as_str(), m.dim()), ("manywell", 32));
    assert_eq!(m.log_reward_row(&[0.0; 32]), 0.0);
    let got = m.log_reward_row(&[1.0; 32]);
    assert!(SPEC_VALUE.close(got, 80.0), "log R(1) = {got}");
    // Pair layout: (a, b) = (x_{2k}, x_{2k+1}); a = 2 alone gives −16 + 24 + 1 = 9.
    let mut x = [0.0f32; 32];
    x[30] = 2.0;
    assert_eq!(m.log_reward_row(&x), 9.0);
    x[30] = 0.0;
    x[31] = 2.0;
    assert_eq!(m.log_reward_row(&x), -2.0);
}

#[test]
fn manywell_log_z_quadrature_matches_spec() {
    let m = ManyWell::new(32);
    let z1 = m.log_z1().exp();
    assert!(SPEC_VALUE.close(z1, 11784.50927), "Z₁ = {z1}");
    assert!(
        SPEC_VALUE.close(m.log_z_per_well(), 10.293480),
        "per well {}",
        m.log_z_per_well()
    );
    for (d, want) in [
        (2, 10.293480),
        (8, 41.17392),
        (32, 164.695675),
        (128, 658.78270),
        (512, 2635.13081),
    ] {
        let got = ManyWell::new(d).log_z().unwrap();
        assert!(
            SPEC_VALUE.close(got, want),
            "log Z(d = {d}) = {got}, spec {want}"
        );
    }
}

#[test]
#[should_panic(expected = "even")]
fn manywell_rejects_odd_dim() {
    ManyWell::new(3);
}

#[test]
#[should_panic(expected = "at least 1")]
fn funnel_rejects_zero_dim() {
    Funnel::new(FunnelVariant::Hard, 0);
}

// ---------------------------------------------------------------------------------------------
// Gradients (§8.2)

proptest! {
    #[test]
    fn gmm25_gradient(x0 in -16.0f64..16.0, x1 in -16.0f64..16.0) {
        gradcheck(&Gmm::grid25(GmmGroundTruth::Stratified), &[snap(x0), snap(x1)])?;
    }

    #[test]
    fn gmm9_gradient(x0 in -10.0f64..10.0, x1 in -10.0f64..10.0) {
        gradcheck(&Gmm::grid9(GmmGroundTruth::Stratified), &[snap(x0), snap(x1)])?;
    }

    #[test]
    fn funnel_gradient(x0 in -6.0f64..6.0, rest in prop::collection::vec(-8.0f64..8.0, 9)) {
        let x: Vec<f32> = std::iter::once(snap(x0)).chain(rest.iter().map(|&v| snap(v))).collect();
        gradcheck(&Funnel::new(FunnelVariant::Hard, 10), &x)?;
        gradcheck(&Funnel::new(FunnelVariant::Easy, 10), &x)?;
    }

    #[test]
    fn manywell_gradient(v in prop::collection::vec(-3.5f64..3.5, 8)) {
        let x: Vec<f32> = v.iter().map(|&c| snap(c)).collect();
        gradcheck(&ManyWell::new(8), &x)?;
    }
}

/// The trait's default finite-difference gradient (f32 steps) agrees with each analytic one.
#[test]
fn default_fd_gradient_matches_analytic() {
    // (target, lower corner, upper corner) of the box the test points are drawn from.
    type Case = (Box<dyn Energy>, Vec<f64>, Vec<f64>);
    let targets: Vec<Case> = vec![
        (
            Box::new(Gmm::grid25(GmmGroundTruth::Stratified)),
            vec![-12.0; 2],
            vec![12.0; 2],
        ),
        (
            Box::new(Gmm::grid9(GmmGroundTruth::Stratified)),
            vec![-7.0; 2],
            vec![7.0; 2],
        ),
        (
            Box::new(Funnel::new(FunnelVariant::Hard, 10)),
            [vec![-5.0], vec![-4.0; 9]].concat(),
            [vec![5.0], vec![4.0; 9]].concat(),
        ),
        (Box::new(ManyWell::new(32)), vec![-3.0; 32], vec![3.0; 32]),
    ];
    for (k, (e, lo, hi)) in targets.iter().enumerate() {
        let d = e.dim();
        let xs = uniform_points(200, d, lo, hi, 10 + k as u64);
        let (mut analytic, mut fd) = (vec![0f32; d], vec![0f32; d]);
        for x in xs.chunks_exact(d) {
            e.grad_log_reward_row(x, &mut analytic);
            DefaultGrad(e.as_ref()).grad_log_reward_row(x, &mut fd);
            for j in 0..d {
                assert!(
                    GRADCHECK_F32.close(fd[j] as f64, analytic[j] as f64),
                    "{}: d/dx{j} at {x:?}: default FD {}, analytic {}",
                    e.name(),
                    fd[j],
                    analytic[j]
                );
            }
        }
    }
}

/// The batch overrides return exactly what the row methods do.
#[test]
fn batch_methods_equal_row_methods() {
    let targets: Vec<Box<dyn Energy>> = vec![
        Box::new(Gmm::grid25(GmmGroundTruth::Stratified)),
        Box::new(Gmm::grid9(GmmGroundTruth::Stratified)),
        Box::new(Funnel::new(FunnelVariant::Hard, 10)),
        Box::new(Funnel::new(FunnelVariant::Easy, 3)),
        Box::new(ManyWell::new(32)),
    ];
    for (k, e) in targets.iter().enumerate() {
        let d = e.dim();
        let b = 37;
        let xs = uniform_points(b, d, &vec![-4.0; d], &vec![4.0; d], 20 + k as u64);
        let mut lr = vec![0f64; b];
        let mut g = vec![0f32; b * d];
        e.log_reward(&xs, &mut lr);
        e.grad_log_reward(&xs, &mut g);
        let mut g_row = vec![0f32; d];
        for (i, x) in xs.chunks_exact(d).enumerate() {
            assert!(
                EXACT.close(lr[i], e.log_reward_row(x)),
                "{} log R row {i}",
                e.name()
            );
            e.grad_log_reward_row(x, &mut g_row);
            for j in 0..d {
                assert_eq!(
                    g[i * d + j].to_bits(),
                    g_row[j].to_bits(),
                    "{} grad [{i}, {j}]",
                    e.name()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exact samplers

fn count_modes(g: &Gmm, xs: &[f32]) -> Vec<usize> {
    let mut counts = vec![0usize; g.num_modes()];
    for x in xs.chunks_exact(2) {
        counts[g.nearest_mode(x)] += 1;
    }
    counts
}

#[test]
fn gmm_stratified_ground_truth() {
    let g = Gmm::grid25(GmmGroundTruth::Stratified);
    assert_eq!(g.ground_truth(), GmmGroundTruth::Stratified);
    let xs = g.sample(2000, &mut rng::stream(3, "gt", 0)).unwrap();
    assert_eq!(xs.len(), 4000);
    // 80 per mode, in mode order. (A point lands nearer another mean only beyond 4.6 std.)
    assert_eq!(count_modes(&g, &xs), vec![80; 25]);
    for (i, x) in xs.chunks_exact(2).enumerate() {
        assert_eq!(g.nearest_mode(x), i / 80, "row {i}");
    }
    // Within-mode variance 0.3: 4000 residuals, se ≈ 0.3·√(2/4000) ≈ 0.0067; band ±5 se.
    let means = g.means();
    let resid: Vec<f64> = xs
        .chunks_exact(2)
        .enumerate()
        .flat_map(|(i, x)| {
            let m = means[i / 80];
            [x[0] as f64 - m[0], x[1] as f64 - m[1]]
        })
        .collect();
    let var = resid.iter().map(|r| r * r).sum::<f64>() / resid.len() as f64;
    let mean = resid.iter().sum::<f64>() / resid.len() as f64;
    assert!((var - 0.3).abs() < 0.034, "within-mode variance {var}");
    assert!(mean.abs() < 0.045, "within-mode mean {mean}"); // se ≈ 0.0087

    // The n mod K leftover go to random modes: 2013 = 80·25 + 13.
    let xs = g.sample(2013, &mut rng::stream(3, "gt", 1)).unwrap();
    let counts = count_modes(&g, &xs);
    assert_eq!(counts.iter().sum::<usize>(), 2013);
    assert!(counts.iter().all(|&c| (80..=93).contains(&c)), "{counts:?}");
}

#[test]
fn gmm_multinomial_ground_truth() {
    let g = Gmm::grid25(GmmGroundTruth::Multinomial);
    let n = 25_000;
    let xs = g.sample(n, &mut rng::stream(4, "gt", 0)).unwrap();
    let counts = count_modes(&g, &xs);
    // Each count ~ Binomial(25000, 1/25): mean 1000, sd 31. Pearson χ² over 25 cells has 24
    // degrees of freedom (mean 24, sd 6.9); 65 is ~6 sd out.
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - 1000.0).powi(2) / 1000.0)
        .sum();
    assert!(chi2 < 65.0, "χ² = {chi2}, counts {counts:?}");
    assert!(
        counts.iter().all(|&c| (830..=1170).contains(&c)),
        "{counts:?}"
    );
    // Not stratified: the counts are not all equal.
    assert!(counts.iter().any(|&c| c != 1000));
}

#[test]
fn samplers_are_deterministic_per_stream() {
    let targets: Vec<Box<dyn Energy>> = vec![
        Box::new(Gmm::grid25(GmmGroundTruth::Stratified)),
        Box::new(Gmm::grid9(GmmGroundTruth::Multinomial)),
        Box::new(Funnel::new(FunnelVariant::Hard, 10)),
        Box::new(ManyWell::new(32)),
    ];
    for e in &targets {
        let a = e.sample(101, &mut rng::stream(5, "gt", 0)).unwrap();
        let b = e.sample(101, &mut rng::stream(5, "gt", 0)).unwrap();
        let c = e.sample(101, &mut rng::stream(5, "gt", 1)).unwrap();
        assert_eq!(a.len(), 101 * e.dim());
        assert_eq!(a, b, "{}", e.name());
        assert_ne!(a, c, "{}", e.name());
        assert!(a.iter().all(|v| v.is_finite()), "{}", e.name());
    }
}

#[test]
fn funnel_sample_moments() {
    let n = 200_000;
    for (variant, var0) in [(FunnelVariant::Hard, 9.0), (FunnelVariant::Easy, 1.0)] {
        let f = Funnel::new(variant, 10);
        let xs = f.sample(n, &mut rng::stream(6, "gt", 0)).unwrap();
        let x0: Vec<f64> = xs.chunks_exact(10).map(|r| r[0] as f64).collect();
        let m0 = x0.iter().sum::<f64>() / n as f64;
        let v0 = x0.iter().map(|v| (v - m0).powi(2)).sum::<f64>() / n as f64;
        // se(mean) = √(var0/n), se(var) = var0·√(2/n); bands are ±5 se.
        assert!(
            m0.abs() < 5.0 * (var0 / n as f64).sqrt(),
            "{variant:?}: E[x0] = {m0}"
        );
        assert!(
            (v0 - var0).abs() < 5.0 * var0 * (2.0 / n as f64).sqrt(),
            "{variant:?}: Var(x0) = {v0}"
        );
        // Given x0, z_i = x_i·e^{−x0/2} is N(0, 1) and independent of x0.
        let z: Vec<f64> = xs
            .chunks_exact(10)
            .flat_map(|r| {
                let s = (-0.5 * r[0] as f64).exp();
                r[1..].iter().map(move |&v| v as f64 * s)
            })
            .collect();
        let nz = z.len() as f64;
        let mz = z.iter().sum::<f64>() / nz;
        let vz = z.iter().map(|v| v * v).sum::<f64>() / nz;
        let cov: f64 = xs
            .chunks_exact(10)
            .zip(z.chunks_exact(9))
            .map(|(r, zr)| r[0] as f64 * zr.iter().map(|v| v * v - 1.0).sum::<f64>())
            .sum::<f64>()
            / nz;
        assert!(mz.abs() < 5.0 / nz.sqrt(), "{variant:?}: E[z] = {mz}");
        assert!(
            (vz - 1.0).abs() < 5.0 * (2.0 / nz).sqrt(),
            "{variant:?}: E[z²] = {vz}"
        );
        // E[x0·(z²−1)] = 0; its sd per term is √(var0·2), so se ≈ √(2·var0/nz)·√9 (9 terms share x0).
        assert!(
            cov.abs() < 5.0 * (2.0 * var0 * 9.0 / nz).sqrt(),
            "{variant:?}: E[x0(z²−1)] = {cov}"
        );
    }
}

/// Independent quadrature of the Manywell a-marginal (midpoint rule on [−6, 6], 240 000 cells):
/// returns (P(a > 0), E[a], CDF at the points `ts`).
fn manywell_a_marginal(ts: &[f64]) -> (f64, f64, Vec<f64>) {
    let (lo, hi, cells) = (-6.0f64, 6.0f64, 240_000usize);
    let h = (hi - lo) / cells as f64;
    let f = |a: f64| (-a.powi(4) + 6.0 * a * a + 0.5 * a - 10.0).exp();
    let (mut z, mut pos, mut first) = (0.0, 0.0, 0.0);
    let mut cdf_at = vec![0.0; ts.len()];
    for i in 0..cells {
        let a = lo + (i as f64 + 0.5) * h;
        let w = f(a) * h;
        z += w;
        if a > 0.0 {
            pos += w;
        }
        first += a * w;
        for (t, c) in ts.iter().zip(cdf_at.iter_mut()) {
            if a < *t {
                *c += w;
            }
        }
    }
    (pos / z, first / z, cdf_at.iter().map(|c| c / z).collect())
}

#[test]
fn manywell_sample_statistics() {
    // 41 points on [−3, 3] (multiples of 0.15, so none falls inside a quadrature cell's middle).
    let ts: Vec<f64> = (0..=40).map(|k| -3.0 + 0.15 * k as f64).collect();
    let (p_pos, mean_a, cdf) = manywell_a_marginal(&ts);
    assert!(
        SPEC_APPROX.close(p_pos, 0.843),
        "quadrature P(a > 0) = {p_pos}"
    );
    assert!(
        SPEC_APPROX.close(mean_a, 1.184),
        "quadrature E[a] = {mean_a}"
    );

    let m = ManyWell::new(32);
    let xs = m.sample(10_000, &mut rng::stream(7, "gt", 0)).unwrap();
    let a: Vec<f64> = xs.chunks_exact(2).map(|p| p[0] as f64).collect();
    let b: Vec<f64> = xs.chunks_exact(2).map(|p| p[1] as f64).collect();
    let n = a.len() as f64; // 160 000 pairs
    let frac_pos = a.iter().filter(|&&v| v > 0.0).count() as f64 / n;
    let ea = a.iter().sum::<f64>() / n;
    // se(P) = √(p(1−p)/n) ≈ 0.0009, se(E[a]) = sd(a)/√n ≈ 1.25/400 ≈ 0.0031; bands ±5 se.
    assert!(
        (frac_pos - p_pos).abs() < 0.0046,
        "P(a > 0) = {frac_pos}, quadrature {p_pos}"
    );
    assert!(
        (ea - mean_a).abs() < 0.016,
        "E[a] = {ea}, quadrature {mean_a}"
    );
    // Kolmogorov–Smirnov on the 41 points: √n·sup|F̂ − F| < 1.95 at p = 0.001.
    let mut sorted = a.clone();
    sorted.sort_by(f64::total_cmp);
    let ks = ts
        .iter()
        .zip(&cdf)
        .map(|(&t, &c)| (sorted.partition_point(|&v| v < t) as f64 / n - c).abs())
        .fold(0.0, f64::max);
    assert!(
        ks * n.sqrt() < 1.95,
        "KS distance {ks} (√n·D = {})",
        ks * n.sqrt()
    );
    // b ~ N(0, 1): se(mean) = 0.0025, se(var) = 0.0035.
    let eb = b.iter().sum::<f64>() / n;
    let vb = b.iter().map(|v| (v - eb).powi(2)).sum::<f64>() / n;
    assert!(eb.abs() < 0.0125, "E[b] = {eb}");
    assert!((vb - 1.0).abs() < 0.018, "Var(b) = {vb}");
}

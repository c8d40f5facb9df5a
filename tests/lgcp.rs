//! LGCP target (spec §1.5): the binned pines counts, ½ log det K and log R against the spec's
//! float64 values, independent checks of the Cholesky (Gaussian elimination at M = 5, conjugate
//! gradients at M = 40), the f32 GEMM gradient against central differences and against an f64
//! gradient, batch vs row paths, and the loader's errors.

use diffusion_samplers::energies::lgcp::{Cholesky, GRID, PINES_FILE};
use diffusion_samplers::energies::{Energy, Lgcp};
use diffusion_samplers::rng;
use diffusion_samplers::tolerance::{Tolerance, EXACT, LGCP_GRAD_F32, SPEC_VALUE_4DP};
use std::sync::OnceLock;
use std::time::Instant;

/// The same f64 quantity by two different exact algorithms (Cholesky vs elimination with
/// pivoting, or vs conjugate gradients run to a 1e-13 residual) on a matrix with cond ≈ 28.
const TWO_ALGORITHMS_F64: Tolerance = Tolerance {
    name: "two-algorithms-f64",
    abs: 1e-9,
    rel: 1e-11,
};

/// Central-difference step 2⁻¹⁴: the test points are multiples of it with |x| < 512, so x ± h is
/// an exact f32 and the quotient sees exactly the points it divides by. log R is a quadratic plus
/// a·e^x, so the truncation error is a·e^x·h²/6 < 1e-9 here, and rounding of log R (|log R| ~ 1e3,
/// f64) adds ~1e-13/h ≈ 2e-9: the differences are exact to far below the f32 gradient's error.
const FD_STEP: f64 = 1.0 / 16384.0;

/// The spec's target, built once per test process (construction time printed).
fn lgcp() -> &'static Lgcp {
    static L: OnceLock<Lgcp> = OnceLock::new();
    L.get_or_init(|| {
        let t = Instant::now();
        let l = Lgcp::load_default().expect("data/lgcp/pines.csv");
        eprintln!(
            "Lgcp::load_default (D = 1600): {:.3} s",
            t.elapsed().as_secs_f64()
        );
        l
    })
}

/// The pines points, read directly (for the small-grid targets).
fn pines() -> Vec<[f64; 2]> {
    let dir = diffusion_samplers::data::project_dir();
    diffusion_samplers::data::csv::load_pines(&dir.join(PINES_FILE)).unwrap()
}

/// K for an m × m grid written out here from the spec's formula (not the crate's
/// `prior_covariance`): σ² exp(−‖g_i − g_j‖ / (m/33)), g_i = (i div m, i mod m).
fn spec_covariance(m: usize) -> Vec<f64> {
    let d = m * m;
    let mut k = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            let (ri, ci) = ((i / m) as f64, (i % m) as f64);
            let (rj, cj) = ((j / m) as f64, (j % m) as f64);
            let dist = ((ri - rj).powi(2) + (ci - cj).powi(2)).sqrt();
            k[i * d + j] = 1.91 * (-dist * 33.0 / m as f64).exp();
        }
    }
    k
}

/// Gaussian elimination with partial pivoting on a copy of `a` ([n, n]): returns ln|det a| and
/// a⁻¹b.
fn lu_log_det_and_solve(a: &[f64], b: &[f64], n: usize) -> (f64, Vec<f64>) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    let mut log_det = 0.0;
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        if piv != col {
            for k in 0..n {
                a.swap(col * n + k, piv * n + k);
            }
            b.swap(col, piv);
        }
        let p = a[col * n + col];
        log_det += p.abs().ln();
        for i in col + 1..n {
            let f = a[i * n + col] / p;
            for k in col..n {
                a[i * n + k] -= f * a[col * n + k];
            }
            b[i] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[i * n + k] * x[k];
        }
        x[i] = s / a[i * n + i];
    }
    (log_det, x)
}

/// Solve K z = r by conjugate gradients in f64 (K symmetric positive definite, [n, n]) until
/// ‖K z − r‖ ≤ 1e-13·‖r‖.
fn conjugate_gradients(k: &[f64], r: &[f64]) -> Vec<f64> {
    let n = r.len();
    let matvec = |v: &[f64]| -> Vec<f64> {
        k.chunks_exact(n)
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    };
    let dotp = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    let mut z = vec![0.0; n];
    let mut res = r.to_vec();
    let mut p = res.clone();
    let mut rr = dotp(&res, &res);
    let target = 1e-26 * rr;
    for _ in 0..10 * n {
        if rr <= target {
            return z;
        }
        let kp = matvec(&p);
        let alpha = rr / dotp(&p, &kp);
        for i in 0..n {
            z[i] += alpha * p[i];
            res[i] -= alpha * kp[i];
        }
        let rr_new = dotp(&res, &res);
        for i in 0..n {
            p[i] = res[i] + (rr_new / rr) * p[i];
        }
        rr = rr_new;
    }
    panic!("conjugate gradients did not converge");
}

/// Σ_i (x_i y_i − a e^{x_i}), written out here.
fn log_likelihood(x: &[f32], y: &[f64], a: f64) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&xi, &yi)| xi as f64 * yi - a * (xi as f64).exp())
        .sum()
}

/// `b` rows of μ₀ + N(0, 1)·scale, snapped to multiples of FD_STEP.
fn test_points(b: usize, d: usize, mu0: f64, scale: f64, tag: u64) -> Vec<f32> {
    let mut x = vec![0f32; b * d];
    rng::fill_normals(&mut rng::stream(7, "lgcp-test", tag), &mut x);
    x.iter()
        .map(|&v| (((mu0 + scale * v as f64) / FD_STEP).round() * FD_STEP) as f32)
        .collect()
}

#[test]
fn pines_counts() {
    let l = lgcp();
    let y = l.counts();
    assert_eq!(l.grid(), GRID);
    assert_eq!(l.dim(), 1600);
    assert_eq!(y.len(), 1600);
    assert_eq!(l.num_points(), 126);
    assert_eq!(y.iter().sum::<f64>(), 126.0);
    assert_eq!(y.iter().filter(|&&c| c > 0.0).count(), 111);
    assert_eq!(y.iter().copied().fold(0.0, f64::max), 3.0);
    assert!(y.iter().all(|&c| c == c.floor() && c >= 0.0));
    assert!(SPEC_VALUE_4DP.close(l.mu0(), 3.881282));
    assert_eq!(l.area(), 1.0 / 1600.0);
    assert_eq!(l.name(), "lgcp");
    assert!(l.log_z().is_none());
}

#[test]
fn half_log_det_matches_spec() {
    let l = lgcp();
    assert!(
        SPEC_VALUE_4DP.close(l.half_log_det(), 225.7055),
        "½ ln det K = {}, spec 225.7055",
        l.half_log_det()
    );
}

#[test]
fn spec_log_r_values() {
    let l = lgcp();
    let at_mu0 = vec![l.mu0() as f32; 1600];
    let at_zero = vec![0f32; 1600];
    let (a, b) = (l.log_reward_row(&at_mu0), l.log_reward_row(&at_zero));
    eprintln!(
        "½ ln det K = {:.6}, log R(μ₀·1) = {a:.6}, log R(0) = {b:.6}",
        l.half_log_det()
    );
    assert!(SPEC_VALUE_4DP.close(a, -1255.4519), "log R(μ₀·1) = {a}");
    assert!(SPEC_VALUE_4DP.close(b, -2451.0492), "log R(0) = {b}");
}

/// At M = 5 (D = 25): the Cholesky's log det and the whole log R against Gaussian elimination
/// with partial pivoting on the spec's K, both written in this file.
#[test]
fn small_grid_matches_gaussian_elimination() {
    let m = 5;
    let d = m * m;
    let k = spec_covariance(m);
    let chol = Cholesky::new(&k, d).expect("K is positive definite");
    let target = Lgcp::new(&pines(), m);
    for (seed, scale) in [(1u64, 0.5), (2, 2.0), (3, 5.0)] {
        let x = test_points(1, d, target.mu0(), scale, seed);
        let r: Vec<f64> = x.iter().map(|&v| v as f64 - target.mu0()).collect();
        let (log_det, kinv_r) = lu_log_det_and_solve(&k, &r, d);
        assert!(TWO_ALGORITHMS_F64.close(chol.log_det(), log_det));
        assert!(TWO_ALGORITHMS_F64.close(target.half_log_det(), 0.5 * log_det));
        let quad: f64 = r.iter().zip(&kinv_r).map(|(a, b)| a * b).sum();
        let want = -0.5 * quad - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln() - 0.5 * log_det
            + log_likelihood(&x, target.counts(), 1.0 / d as f64);
        let got = target.log_reward_row(&x);
        assert!(
            TWO_ALGORITHMS_F64.close(got, want),
            "log R {got}, by LU {want}"
        );
        assert!(TWO_ALGORITHMS_F64.close(chol.quad_form(&r), quad));
    }
    // The explicit inverse: K⁻¹K = I.
    let inv = chol.inverse();
    for i in 0..d {
        for j in 0..d {
            let v: f64 = (0..d).map(|t| inv[i * d + t] * k[t * d + j]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!(TWO_ALGORITHMS_F64.close(v, want), "(K⁻¹K)[{i}, {j}] = {v}");
        }
    }
    // The counts at M = 5 still cover all 126 points.
    assert_eq!(target.counts().iter().sum::<f64>(), 126.0);
    // A matrix that is not positive definite is refused.
    assert!(Cholesky::new(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
}

/// At M = 40, for random x: log R against the quadratic form from conjugate gradients on the
/// spec's K (written out here), and the f32 GEMM gradient against the f64 gradient
/// −K⁻¹(x − μ₀) + y − a·e^x from the same solve, all 1600 components.
#[test]
fn full_grid_matches_conjugate_gradients() {
    let l = lgcp();
    let d = 1600;
    let k = spec_covariance(GRID);
    let mut worst = 0f64;
    for (tag, scale) in [(10u64, 1.0), (11, 3.0)] {
        let x = test_points(1, d, l.mu0(), scale, tag);
        let r: Vec<f64> = x.iter().map(|&v| v as f64 - l.mu0()).collect();
        let z = conjugate_gradients(&k, &r);
        let quad: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
        let want = -0.5 * quad - 800.0 * (2.0 * std::f64::consts::PI).ln() - l.half_log_det()
            + log_likelihood(&x, l.counts(), 1.0 / 1600.0);
        let got = l.log_reward_row(&x);
        assert!(
            TWO_ALGORITHMS_F64.close(got, want),
            "log R {got}, by CG {want}"
        );

        let mut g = vec![0f32; d];
        l.grad_log_reward_row(&x, &mut g);
        for j in 0..d {
            let want = l.counts()[j] - (x[j] as f64).exp() / 1600.0 - z[j];
            worst = worst.max((g[j] as f64 - want).abs());
            assert!(
                LGCP_GRAD_F32.close(g[j] as f64, want),
                "scale {scale}: d/dx{j}: f32 GEMM {}, f64 {want}",
                g[j]
            );
        }
    }
    eprintln!("f32 GEMM gradient vs f64: max abs error {worst:.3e}");
}

/// ∇log R against central differences of the f64 `log_reward_row` on a few coordinates (cells
/// with and without pines, corners, edges).
#[test]
fn gradient_matches_central_differences() {
    let l = lgcp();
    let d = 1600;
    let busiest = (0..d)
        .max_by(|&i, &j| l.counts()[i].total_cmp(&l.counts()[j]))
        .unwrap();
    let coords = [0, 39, 40, 777, 1000, 1560, 1599, busiest];
    for (tag, scale) in [(20u64, 1.0), (21, 2.5)] {
        let x = test_points(1, d, l.mu0(), scale, tag);
        let mut g = vec![0f32; d];
        l.grad_log_reward_row(&x, &mut g);
        let mut xp = x.clone();
        for &j in &coords {
            xp[j] = (x[j] as f64 + FD_STEP) as f32;
            let up = l.log_reward_row(&xp);
            xp[j] = (x[j] as f64 - FD_STEP) as f32;
            let down = l.log_reward_row(&xp);
            xp[j] = x[j];
            let fd = (up - down) / (2.0 * FD_STEP);
            assert!(
                LGCP_GRAD_F32.close(g[j] as f64, fd),
                "d/dx{j}: analytic {}, central difference {fd}",
                g[j]
            );
        }
    }
}

/// The batch overrides return exactly what the row methods do (an odd B exercises the row
/// blocks' tail and the GEMM's partial row tiles).
#[test]
fn batch_methods_equal_row_methods() {
    let l = lgcp();
    let d = 1600;
    let b = 11;
    let x = test_points(b, d, l.mu0(), 2.0, 30);
    let mut lr = vec![0f64; b];
    let mut g = vec![0f32; b * d];
    l.log_reward(&x, &mut lr);
    l.grad_log_reward(&x, &mut g);
    let mut g_row = vec![0f32; d];
    for (i, row) in x.chunks_exact(d).enumerate() {
        assert!(EXACT.close(lr[i], l.log_reward_row(row)), "log R row {i}");
        // Bitwise, not just within LGCP_GRAD_F32: each gradient entry is one GEMM chain over
        // all D terms whatever the number of rows, so B = 1 and B = 11 compute the same thing.
        l.grad_log_reward_row(row, &mut g_row);
        for j in 0..d {
            assert_eq!(
                g[i * d + j].to_bits(),
                g_row[j].to_bits(),
                "grad [{i}, {j}]"
            );
        }
    }
}

/// The loader checks the file against SHA256SUMS and names it in its errors.
#[test]
fn loader_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // No SHA256SUMS at all.
    let e = Lgcp::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("SHA256SUMS"), "{e}");
    // The real sums, a tampered file.
    let src = diffusion_samplers::data::project_dir();
    std::fs::copy(src.join("SHA256SUMS"), dir.path().join("SHA256SUMS")).unwrap();
    std::fs::create_dir(dir.path().join("lgcp")).unwrap();
    let mut bytes = std::fs::read(src.join(PINES_FILE)).unwrap();
    bytes.extend_from_slice(b"\"127\",0.5,0.5\n");
    std::fs::write(dir.path().join(PINES_FILE), bytes).unwrap();
    let e = Lgcp::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("pines.csv") && e.contains("sha256"), "{e}");
    // Missing file.
    std::fs::remove_file(dir.path().join(PINES_FILE)).unwrap();
    let e = Lgcp::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("pines.csv"), "{e}");
}

/// Timing of the batched paths at the training shape (B = 300); printed, not asserted.
#[test]
fn batched_timings_b300() {
    let l = lgcp();
    let (b, d) = (300, 1600);
    let x = test_points(b, d, l.mu0(), 1.0, 40);
    let mut g = vec![0f32; b * d];
    let mut lr = vec![0f64; b];
    l.grad_log_reward(&x, &mut g); // warm-up
    let t = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        l.grad_log_reward(&x, &mut g);
    }
    let grad_s = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    l.log_reward(&x, &mut lr);
    let lr_s = t.elapsed().as_secs_f64();
    eprintln!(
        "B = 300: grad_log_reward {:.1} ms ({:.1} GFLOP/s), log_reward {:.1} ms",
        grad_s * 1e3,
        2.0 * (b * d * d) as f64 / grad_s / 1e9,
        lr_s * 1e3
    );
    assert!(g.iter().all(|v| v.is_finite()) && lr.iter().all(|v| v.is_finite()));
}

//! Off-policy machinery (spec §4.2–4.3): the replay buffer's FIFO order, rank-prioritised
//! distribution (closed form and empirical frequencies), checkpoint restore and ties; local
//! search (MALA) invariance of a Gaussian, acceptance and step-size behaviour, the post-burn-in
//! sample count against an independent scalar transcription of the spec's steps, and bitwise
//! reproducibility.
//!
//! Statistical checks run at fixed seeds, so they are deterministic; each bound is chosen so that
//! a *correct* implementation would fail it with probability < 1e-6 over seeds (stated per test).

use diffusion_samplers::energies::Energy;
use diffusion_samplers::offpolicy::{
    LocalSearch, LocalSearchConfig, LocalSearchOutput, ReplayBuffer, SamplingMode, REFERENCE_RANK_K,
};
use diffusion_samplers::rng;
use diffusion_samplers::tolerance::Tolerance;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// A closed-form probability vs the buffer's: both are a handful of f64 divisions and a sum of
/// ≤ 50 positive terms, in possibly different orders.
const CLOSED_FORM_F64: Tolerance = Tolerance {
    name: "closed-form-f64",
    abs: 1e-16,
    rel: 1e-13,
};

// ---------------------------------------------------------------------------------------------
// Replay buffer
// ---------------------------------------------------------------------------------------------

/// Rows `[n, D]` whose values encode (row id, coordinate) so order mistakes are visible.
fn rows(first: usize, n: usize, d: usize) -> Vec<f32> {
    (first..first + n)
        .flat_map(|i| (0..d).map(move |j| (i * 10 + j) as f32))
        .collect()
}

#[test]
fn fifo_drops_oldest_at_capacity() {
    let d = 2;
    let mut buf = ReplayBuffer::new(5, d, SamplingMode::Uniform);
    assert!(buf.is_empty());
    buf.add(&rows(0, 3, d), &[0.0, 1.0, 2.0]);
    assert_eq!(buf.len(), 3);
    buf.add(&rows(3, 4, d), &[3.0, 4.0, 5.0, 6.0]);
    // 7 added, capacity 5: entries 2..7 survive, oldest first.
    assert_eq!(buf.len(), 5);
    let (xs, lr) = buf.entries();
    assert_eq!(lr, &[2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(xs, rows(2, 5, d).as_slice());
    // A batch larger than the capacity keeps only its newest C rows.
    let big: Vec<f64> = (7..15).map(|i| i as f64).collect();
    buf.add(&rows(7, 8, d), &big);
    let (xs, lr) = buf.entries();
    assert_eq!(lr, &[10.0, 11.0, 12.0, 13.0, 14.0]);
    assert_eq!(xs, rows(10, 5, d).as_slice());
    assert_eq!((buf.capacity(), buf.dim()), (5, d));
    // gather returns the named rows.
    let (gx, gr) = buf.gather(&[4, 0, 4]);
    assert_eq!(gr, vec![14.0, 10.0, 14.0]);
    assert_eq!(
        gx,
        [rows(14, 1, d), rows(10, 1, d), rows(14, 1, d)].concat()
    );
}

/// The closed form for a hand-made buffer with a tie. log R = [0.5, 2.0, −1.0, 2.0, 1.0], N = 5,
/// k = 0.01 → k·N = 0.05. Ranks (ties older first): entry 1 → 0, entry 3 → 1, entry 4 → 2,
/// entry 0 → 3, entry 2 → 4. P(i) = w_{rank_i}/Σw, w_r = 1/(0.05 + r).
#[test]
fn rank_probabilities_equal_closed_form() {
    let mut buf = ReplayBuffer::new(10, 1, SamplingMode::default());
    assert_eq!(buf.mode(), SamplingMode::Rank { k: 0.01 });
    buf.add(&[0.0; 5], &[0.5, 2.0, -1.0, 2.0, 1.0]);
    let z = 1.0 / 0.05 + 1.0 / 1.05 + 1.0 / 2.05 + 1.0 / 3.05 + 1.0 / 4.05;
    let want = [
        1.0 / 3.05 / z,
        1.0 / 0.05 / z,
        1.0 / 4.05 / z,
        1.0 / 1.05 / z,
        1.0 / 2.05 / z,
    ];
    let got = buf.probabilities();
    CLOSED_FORM_F64.assert_all_close(&got, &want, "rank P(i)");
    assert!(CLOSED_FORM_F64.close(got.iter().sum::<f64>(), 1.0));

    // Uniform mode on the same contents.
    let (xs, lr) = buf.entries();
    let uni = ReplayBuffer::from_entries(10, 1, SamplingMode::Uniform, xs, lr).unwrap();
    CLOSED_FORM_F64.assert_all_close(&uni.probabilities(), &[0.2; 5], "uniform P(i)");
}

/// Ties are broken by insertion order (older first), NaN ranks last, −0.0 ties with +0.0.
#[test]
fn ties_rank_older_first_and_nan_last() {
    let mut buf = ReplayBuffer::new(8, 1, SamplingMode::Rank { k: 0.5 });
    buf.add(&[0.0; 4], &[3.0, 3.0, 3.0, 3.0]);
    let p = buf.probabilities();
    // All tied: rank = index, so P strictly decreases with the index (age).
    let kn = 0.5 * 4.0;
    let z: f64 = (0..4).map(|r| 1.0 / (kn + r as f64)).sum();
    let want: Vec<f64> = (0..4).map(|r| 1.0 / (kn + r as f64) / z).collect();
    CLOSED_FORM_F64.assert_all_close(&p, &want, "all-tied P(i)");

    let mut buf = ReplayBuffer::new(8, 1, SamplingMode::Rank { k: 0.5 });
    buf.add(&[0.0; 5], &[f64::NAN, -0.0, 1.0, 0.0, f64::NEG_INFINITY]);
    // Ranks: 1.0 (entry 2) → 0, −0.0 (entry 1) → 1, +0.0 (entry 3) → 2, −∞ (entry 4) → 3,
    // NaN (entry 0) → 4.
    let kn = 0.5 * 5.0;
    let w = |r: f64| 1.0 / (kn + r);
    let z = w(0.0) + w(1.0) + w(2.0) + w(3.0) + w(4.0);
    let want = [w(4.0) / z, w(1.0) / z, w(0.0) / z, w(2.0) / z, w(3.0) / z];
    CLOSED_FORM_F64.assert_all_close(&buf.probabilities(), &want, "NaN / signed-zero P(i)");
}

/// The ranks computed independently: a stable sort of entry indices by log R descending (NaN
/// would go last; none here).
fn independent_rank_probabilities(log_r: &[f64], k: f64) -> Vec<f64> {
    let n = log_r.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| log_r[b].partial_cmp(&log_r[a]).unwrap()); // stable: ties keep age order
    let kn = k * n as f64;
    let z: f64 = (0..n).map(|r| 1.0 / (kn + r as f64)).sum();
    let mut p = vec![0.0; n];
    for (r, &i) in idx.iter().enumerate() {
        p[i] = 1.0 / (kn + r as f64) / z;
    }
    p
}

/// Pearson χ² of `counts` against probabilities `p` over `draws` draws, and the largest per-bin
/// |count − nP| / √(nP(1 − P)).
fn chi_square(counts: &[u64], p: &[f64], draws: u64) -> (f64, f64) {
    let n = draws as f64;
    let mut chi2 = 0.0;
    let mut max_z = 0.0f64;
    for (&c, &pi) in counts.iter().zip(p) {
        let e = n * pi;
        chi2 += (c as f64 - e).powi(2) / e;
        max_z = max_z.max((c as f64 - e).abs() / (e * (1.0 - pi)).sqrt());
    }
    (chi2, max_z)
}

/// A 50-entry buffer that has overflowed (so the live rows start at an offset), with ties.
fn filled_buffer(mode: SamplingMode) -> ReplayBuffer {
    let (c, d) = (50, 3);
    let mut buf = ReplayBuffer::new(c, d, mode);
    let mut id = 0usize;
    for batch in [17usize, 30, 9, 24] {
        // log R in {−3, −2.5, …, 8}: 23 distinct values over 80 rows, so many ties.
        let lr: Vec<f64> = (id..id + batch)
            .map(|i| ((i * 37) % 23) as f64 * 0.5 - 3.0)
            .collect();
        buf.add(&rows(id, batch, d), &lr);
        id += batch;
    }
    assert_eq!(buf.len(), c);
    buf
}

/// 200 000 rank-prioritised draws from a 50-entry buffer vs the exact P(i).
///
/// Bounds: Pearson χ² with 49 degrees of freedom < 111.14, its upper 1e-6 quantile (regularised
/// incomplete gamma, checked with mpmath: Q(24.5, 55.57) = 9.9997e-7); and every bin within 6
/// binomial standard deviations (P(|Z| > 6) = 2.0e-9 per bin, < 1e-7 over 50 bins). The smallest
/// expected count is ≈ 700, so both normal approximations are sound. A correct sampler fails
/// with probability < 1.1e-6.
#[test]
fn rank_sampling_frequencies_match_probabilities() {
    let buf = filled_buffer(SamplingMode::default());
    let p = buf.probabilities();
    let (_, lr) = buf.entries();
    CLOSED_FORM_F64.assert_all_close(
        &p,
        &independent_rank_probabilities(lr, REFERENCE_RANK_K),
        "P(i) vs independent ranks",
    );
    let min_p = p.iter().cloned().fold(f64::INFINITY, f64::min);
    let draws = 200_000u64;
    assert!(
        min_p * draws as f64 > 500.0,
        "min expected count {}",
        min_p * draws as f64
    );

    let mut rng = rng::stream(2024, "offpolicy-test/rank-draws", 0);
    let mut counts = vec![0u64; buf.len()];
    // In chunks of 300 (the training batch), as the trainer calls it.
    let mut left = draws as usize;
    while left > 0 {
        let n = left.min(300);
        for i in buf.sample(n, &mut rng) {
            counts[i] += 1;
        }
        left -= n;
    }
    let (chi2, max_z) = chi_square(&counts, &p, draws);
    eprintln!("rank sampling: chi2 = {chi2:.2} (df 49, bound 111.14), max |z| = {max_z:.2}");
    assert!(chi2 < 111.14, "chi2 {chi2}");
    assert!(max_z < 6.0, "max |z| {max_z}");
}

/// Uniform mode: 200 000 draws over 50 entries; same bounds as the rank test (df 49).
#[test]
fn uniform_sampling_frequencies_are_flat() {
    let buf = filled_buffer(SamplingMode::Uniform);
    let p = buf.probabilities();
    assert!(p.iter().all(|&v| v == 1.0 / 50.0));
    let draws = 200_000u64;
    let mut rng = rng::stream(2024, "offpolicy-test/uniform-draws", 0);
    let mut counts = vec![0u64; buf.len()];
    for i in buf.sample(draws as usize, &mut rng) {
        counts[i] += 1;
    }
    let (chi2, max_z) = chi_square(&counts, &p, draws);
    eprintln!("uniform sampling: chi2 = {chi2:.2} (df 49, bound 111.14), max |z| = {max_z:.2}");
    assert!(chi2 < 111.14, "chi2 {chi2}");
    assert!(max_z < 6.0, "max |z| {max_z}");
}

/// A buffer rebuilt from `entries()` samples bitwise identically, now and after further adds.
#[test]
fn restored_buffer_samples_identically() {
    for mode in [SamplingMode::default(), SamplingMode::Uniform] {
        let mut live = filled_buffer(mode);
        let (xs, lr) = live.entries();
        let mut restored =
            ReplayBuffer::from_entries(live.capacity(), live.dim(), mode, xs, lr).unwrap();
        assert_eq!(restored.entries(), live.entries());
        for round in 0..3u64 {
            let mut r1 = rng::stream(5, "offpolicy-test/restore", round);
            let mut r2 = rng::stream(5, "offpolicy-test/restore", round);
            let a = live.sample_batch(300, &mut r1);
            let b = restored.sample_batch(300, &mut r2);
            let bits = |v: &(Vec<f32>, Vec<f64>)| {
                let x: Vec<u32> = v.0.iter().map(|f| f.to_bits()).collect();
                let r: Vec<u64> = v.1.iter().map(|f| f.to_bits()).collect();
                (x, r)
            };
            assert_eq!(bits(&a), bits(&b), "{mode:?} round {round}");
            // Both streams were advanced by the same amount.
            assert_eq!(rng::uniform_f64(&mut r1), rng::uniform_f64(&mut r2));
            // Keep both in lockstep: the same new batch into each.
            let id = 1000 + 7 * round as usize;
            let new_lr = [round as f64, 7.5, -1.0, 2.0 + round as f64, 0.25, 7.5, 3.0];
            live.add(&rows(id, 7, 3), &new_lr);
            restored.add(&rows(id, 7, 3), &new_lr);
            assert_eq!(restored.entries(), live.entries());
        }
    }
}

#[test]
fn sample_zero_from_empty_is_empty() {
    let buf = ReplayBuffer::new(4, 2, SamplingMode::default());
    let mut rng = rng::stream(0, "offpolicy-test/empty", 0);
    assert!(buf.sample(0, &mut rng).is_empty());
    assert!(buf.probabilities().is_empty());
}

/// The reference size: C = 600 000 Manywell states (D = 32) filled by 2 100 batches of 300
/// (630 000 rows, so 30 000 dropped), then one 300-draw rank sample. Prints the cost of an add
/// into the full buffer (rows + the rank-order merge) and of a sample (binary searches only).
#[test]
fn reference_capacity_buffer() {
    let (c, d, b) = (600_000usize, 32usize, 300usize);
    let mut buf = ReplayBuffer::new(c, d, SamplingMode::default());
    let mut rng = rng::stream(3, "offpolicy-test/big", 0);
    let mut xs = vec![0f32; b * d];
    let t_add = Instant::now();
    let mut t_full = t_add;
    for batch in 0..2100usize {
        if batch == 2000 {
            t_full = Instant::now();
        }
        rng::fill_normals(&mut rng, &mut xs);
        xs[0] = batch as f32; // tag the batch
        let lr: Vec<f64> = xs.chunks_exact(d).map(|r| r[1] as f64).collect();
        buf.add(&xs, &lr);
    }
    let full_add_ms = t_full.elapsed().as_secs_f64() * 1e3 / 100.0;
    let add_s = t_add.elapsed().as_secs_f64();
    assert_eq!(buf.len(), c);
    // The oldest live row is row 0 of batch 100 (batches 0..100 = 30 000 rows were dropped).
    assert_eq!(buf.entries().0[0], 100.0);
    let t = Instant::now();
    let idx = buf.sample(300, &mut rng);
    let sample_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(idx.len(), 300);
    assert!(idx.iter().all(|&i| i < c));
    // Rank prioritisation favours high log R: the mean log R of the draws exceeds the buffer's
    // (log R ~ N(0, 1) here; under P the mean rank quantile is ≈ 0.20, so E[log R] ≈ +0.9).
    let (_, lr) = buf.gather(&idx);
    let mean = lr.iter().sum::<f64>() / lr.len() as f64;
    eprintln!(
        "C = {c}, D = {d}: 2100 adds of {b} in {add_s:.2} s ({full_add_ms:.2} ms per add when \
         full); rank sample of 300 in {sample_ms:.2} ms; mean log R of draws {mean:.3}"
    );
    assert!(mean > 0.5, "mean log R of rank draws {mean}");
}

// ---------------------------------------------------------------------------------------------
// Local search
// ---------------------------------------------------------------------------------------------

/// N(μ, diag σ²): analytic log density and gradient, exact samples. Test-only.
struct DiagGaussian {
    mu: Vec<f64>,
    sigma: Vec<f64>,
}

impl DiagGaussian {
    fn reference() -> Self {
        DiagGaussian {
            mu: vec![1.0, -2.0, 0.5],
            sigma: vec![0.5, 1.0, 2.0],
        }
    }
}

impl Energy for DiagGaussian {
    fn name(&self) -> String {
        "diag-gaussian".into()
    }
    fn dim(&self) -> usize {
        self.mu.len()
    }
    fn log_reward_row(&self, x: &[f32]) -> f64 {
        x.iter()
            .zip(self.mu.iter().zip(&self.sigma))
            .map(|(&xi, (&m, &s))| {
                let z = (xi as f64 - m) / s;
                -0.5 * z * z - s.ln() - 0.5 * (std::f64::consts::TAU).ln()
            })
            .sum()
    }
    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        for j in 0..x.len() {
            grad[j] = (-(x[j] as f64 - self.mu[j]) / (self.sigma[j] * self.sigma[j])) as f32;
        }
    }
    fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let d = self.dim();
        let mut z = vec![0f32; n * d];
        rng::fill_normals(rng, &mut z);
        for (j, v) in z.iter_mut().enumerate() {
            let c = j % d;
            *v = (self.mu[c] + self.sigma[c] * *v as f64) as f32;
        }
        Some(z)
    }
}

fn config(steps: usize, burn_in: usize, step0: f64, adapt: Option<f64>) -> LocalSearchConfig {
    LocalSearchConfig {
        steps,
        burn_in,
        step0,
        adapt,
        ..LocalSearchConfig::default()
    }
}

/// Per-coordinate (z of the mean, z of the unbiased variance) of `x` `[M, D]` against the
/// target: z_mean = (x̄ − μ)/(σ/√M), z_var = (s² − σ²)/(σ²√(2/(M − 1))).
fn moment_z_scores(g: &DiagGaussian, x: &[f32]) -> Vec<(f64, f64)> {
    let d = g.dim();
    let m = (x.len() / d) as f64;
    (0..d)
        .map(|c| {
            let col: Vec<f64> = x.iter().skip(c).step_by(d).map(|&v| v as f64).collect();
            let mean = col.iter().sum::<f64>() / m;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
            let (mu, s2) = (g.mu[c], g.sigma[c] * g.sigma[c]);
            (
                (mean - mu) / (g.sigma[c] / m.sqrt()),
                (var - s2) / (s2 * (2.0 / (m - 1.0)).sqrt()),
            )
        })
        .collect()
}

/// MALA leaves N(μ, diag σ²) invariant: M = 2000 chains started from exact samples, K = 50 steps.
/// The final states are then again M independent exact samples (with a fixed η the chains are
/// independent; with adaptation η depends weakly on all chains' history), so each coordinate's
/// mean and unbiased variance must lie within 5 standard errors. False-failure probability of a
/// correct sampler per check: 5.7e-7 for a mean (normal), 9.9e-7 for a variance ((M − 1)s²/σ² is
/// χ²₁₉₉₉; mpmath: 9.27e-7 upper + 6.5e-8 lower tail); ≈ 4.7e-6 for one call's six checks.
/// A wrong MH correction has power here: without it (ULA at η = 0.1) coordinate 0's stationary
/// variance is 2η/(1 − (1 − η/σ²)²) = 0.3125 instead of 0.25 (reached within a few of the 50
/// steps), z ≈ +7.9.
fn check_invariance(adapt: Option<f64>, seed_index: u64) -> LocalSearchOutput {
    let g = DiagGaussian::reference();
    let m = 2000;
    let mut init_rng = rng::stream(11, "offpolicy-test/gaussian-init", seed_index);
    let x0 = g.sample(m, &mut init_rng).unwrap();
    let ls = LocalSearch::new(config(50, 25, 0.1, adapt));
    let mut rng = rng::stream(11, "offpolicy-test/gaussian-mala", seed_index);
    let out = ls.run(&g, &x0, &mut rng);
    let z = moment_z_scores(&g, &out.final_states);
    eprintln!(
        "MALA adapt {adapt:?}: acceptance {:.4}, final η {:.5}, (z_mean, z_var) per coord {z:.3?}",
        out.acceptance_rate, out.final_step_size
    );
    for (c, &(zm, zv)) in z.iter().enumerate() {
        assert!(zm.abs() < 5.0, "coord {c}: mean z {zm}");
        assert!(zv.abs() < 5.0, "coord {c}: var z {zv}");
    }
    assert!(
        out.acceptance_rate > 0.0 && out.acceptance_rate < 1.0,
        "acceptance {}",
        out.acceptance_rate
    );
    // The reported final log R are the energy's values at the final states.
    let mut lr = vec![0.0; m];
    g.log_reward(&out.final_states, &mut lr);
    assert_eq!(lr, out.final_log_r);
    out
}

#[test]
fn mala_leaves_gaussian_invariant_fixed_step() {
    let out = check_invariance(None, 0);
    assert!(out.step_sizes.iter().all(|&e| e == 0.1));
    assert_eq!(out.final_step_size, 0.1);
}

#[test]
fn mala_leaves_gaussian_invariant_adaptive_step() {
    let out = check_invariance(Some(0.01), 1);
    assert!(out.step_sizes.iter().any(|&e| e != 0.1));
}

/// η → 0: the MH ratio → 1 (the Langevin proposal becomes reversible to first order), so almost
/// every proposal is accepted; and a large η is accepted much less often.
#[test]
fn tiny_step_accepts_almost_everything() {
    let g = DiagGaussian::reference();
    let mut init = rng::stream(12, "offpolicy-test/tiny-init", 0);
    let x0 = g.sample(500, &mut init).unwrap();
    let run = |eta: f64| {
        let mut rng = rng::stream(12, "offpolicy-test/tiny", 0);
        LocalSearch::new(config(20, 10, eta, None)).run(&g, &x0, &mut rng)
    };
    let tiny = run(1e-6);
    let big = run(1.0);
    eprintln!(
        "acceptance at η = 1e-6: {:.6}; at η = 1: {:.4}",
        tiny.acceptance_rate, big.acceptance_rate
    );
    assert!(tiny.acceptance_rate > 0.999, "{}", tiny.acceptance_rate);
    assert!(big.acceptance_rate < 0.5, "{}", big.acceptance_rate);
}

/// The step size moves toward the target: from a tiny η₀ the acceptance is ≈ 1 > 0.574, so η
/// grows by the factor 1.01 at every iteration; from a huge η₀ it shrinks at every iteration.
#[test]
fn step_size_moves_toward_target() {
    let g = DiagGaussian::reference();
    let mut init = rng::stream(13, "offpolicy-test/adapt-init", 0);
    let x0 = g.sample(300, &mut init).unwrap();
    let run = |eta0: f64| {
        let mut rng = rng::stream(13, "offpolicy-test/adapt", 0);
        LocalSearch::new(config(100, 50, eta0, Some(0.01))).run(&g, &x0, &mut rng)
    };
    let up = run(1e-4);
    let mut want = 1e-4;
    for (k, &eta) in up.step_sizes.iter().enumerate() {
        if k > 0 {
            want += 0.01 * want;
        }
        assert_eq!(eta, want, "η at k = {k}");
    }
    assert!(up.final_step_size > 2.6e-4); // 1.01^99 = 2.68
    let down = run(50.0);
    assert!(down.step_sizes.windows(2).all(|w| w[1] < w[0]));
    eprintln!(
        "η from 1e-4 → {:.4e} (acceptance {:.4}); from 50 → {:.3} (acceptance {:.4})",
        up.final_step_size, up.acceptance_rate, down.final_step_size, down.acceptance_rate
    );
}

/// The window rule, transcribed from the reference loop and driven by the reported per-iteration
/// acceptances, reproduces the reported η_k bitwise — in a run near the target, where η both
/// grows and shrinks. It pins which rate is used at which k: at k = 1 ..= 5 the rate of iteration
/// 0 alone, then the previous 5-iteration window.
#[test]
fn step_sizes_follow_the_window_rule() {
    let g = DiagGaussian::reference();
    let m = 300;
    let mut init = rng::stream(14, "offpolicy-test/window-init", 0);
    let x0 = g.sample(m, &mut init).unwrap();
    let cfg = config(200, 100, 0.3, Some(0.01));
    let mut rng = rng::stream(14, "offpolicy-test/window", 0);
    let out = LocalSearch::new(cfg.clone()).run(&g, &x0, &mut rng);

    let (mut eta, mut rate, mut acc, mut prop) = (cfg.step0, 0.0f64, 0u64, 0u64);
    let (mut grew, mut shrank) = (0, 0);
    for k in 0..cfg.steps {
        if k > 0 {
            let next = if rate > 0.574 {
                grew += 1;
                eta + 0.01 * eta
            } else {
                shrank += 1;
                eta - 0.01 * eta
            };
            eta = next;
        }
        assert_eq!(out.step_sizes[k].to_bits(), eta.to_bits(), "η at k = {k}");
        if (1..=5).contains(&k) {
            assert_eq!(rate, out.accepted[0] as f64 / m as f64);
        }
        acc += out.accepted[k] as u64;
        prop += m as u64;
        if k % 5 == 0 {
            rate = acc as f64 / prop as f64;
            acc = 0;
            prop = 0;
        }
    }
    eprintln!(
        "near-target run: η grew {grew}×, shrank {shrank}×, final η {:.4}, acceptance {:.4}",
        out.final_step_size, out.acceptance_rate
    );
    assert!(grew > 0 && shrank > 0);
    assert_eq!(out.final_step_size, *out.step_sizes.last().unwrap());
}

/// The spec's steps (§4.3) transcribed as plain per-chain loops, with the documented draw order
/// (all M·D normals of an iteration, then M uniforms). Returns (samples `[S, D]`, log R `[S]`,
/// the number of accepted proposals at k > burn_in counted here, final states).
fn scalar_reference_mala(
    e: &dyn Energy,
    x0: &[f32],
    cfg: &LocalSearchConfig,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<f64>, usize, Vec<f32>) {
    let d = e.dim();
    let m = x0.len() / d;
    let mut x = x0.to_vec();
    let (mut samples, mut sample_lr, mut kept) = (Vec::new(), Vec::new(), 0usize);
    let mut eta = cfg.step0;
    let (mut rate, mut acc, mut prop) = (0.0f64, 0usize, 0usize);
    let mut xi = vec![0f32; m * d];
    for k in 0..cfg.steps {
        if k > 0 {
            if let Some(f) = cfg.adapt {
                eta = if rate > cfg.target_acceptance {
                    eta + f * eta
                } else {
                    eta - f * eta
                };
            }
        }
        rng::fill_normals(rng, &mut xi);
        let mut proposals = Vec::with_capacity(m);
        for c in 0..m {
            let xc = &x[c * d..(c + 1) * d];
            let mut g = vec![0f32; d];
            e.grad_log_reward_row(xc, &mut g);
            let xn: Vec<f32> = (0..d)
                .map(|j| {
                    let step = eta * g[j] as f64 + (2.0 * eta).sqrt() * xi[c * d + j] as f64;
                    (xc[j] as f64 + step) as f32
                })
                .collect();
            let mut gn = vec![0f32; d];
            e.grad_log_reward_row(&xn, &mut gn);
            let log_q = |b: &[f32], a: &[f32], ga: &[f32]| -> f64 {
                let s: f64 = (0..d)
                    .map(|j| (b[j] as f64 - a[j] as f64 - eta * ga[j] as f64).powi(2))
                    .sum();
                -s / (4.0 * eta)
            };
            let (lr_old, lr_new) = (e.log_reward_row(xc), e.log_reward_row(&xn));
            let log_alpha = cfg.beta * (lr_new - lr_old) + log_q(xc, &xn, &gn) - log_q(&xn, xc, &g);
            proposals.push((xn, lr_new, log_alpha));
        }
        for (c, (xn, lr_new, log_alpha)) in proposals.into_iter().enumerate() {
            let u = rng::uniform_f64(rng);
            if u < log_alpha.min(0.0).exp() {
                acc += 1;
                if k > cfg.burn_in {
                    kept += 1;
                    samples.extend_from_slice(&xn);
                    sample_lr.push(lr_new);
                }
                x[c * d..(c + 1) * d].copy_from_slice(&xn);
            }
        }
        prop += m;
        if k % cfg.window == 0 {
            rate = acc as f64 / prop as f64;
            acc = 0;
            prop = 0;
        }
    }
    (samples, sample_lr, kept, x)
}

/// The post-burn-in sample count equals the number of proposals accepted at k > burn_in,
/// counted independently by the scalar transcription — and the samples themselves agree
/// bitwise, which also pins the documented order of random draws. Also checks the identity with
/// the reported per-iteration counters, and that each sample's log R is the energy's value.
#[test]
fn post_burn_in_samples_are_the_accepted_proposals() {
    let g = DiagGaussian::reference();
    let d = g.dim();
    let m = 64;
    let mut init = rng::stream(15, "offpolicy-test/count-init", 0);
    let x0 = g.sample(m, &mut init).unwrap();
    for (cfg, label) in [
        (config(40, 20, 0.2, Some(0.01)), "adaptive"),
        (config(30, 10, 0.5, None), "fixed"),
    ] {
        let mut r1 = rng::stream(15, "offpolicy-test/count", 0);
        let out = LocalSearch::new(cfg.clone()).run(&g, &x0, &mut r1);
        let mut r2 = rng::stream(15, "offpolicy-test/count", 0);
        let (s, slr, kept, fin) = scalar_reference_mala(&g, &x0, &cfg, &mut r2);

        let reported: u32 = out.accepted[cfg.burn_in + 1..].iter().sum();
        eprintln!(
            "{label}: {kept} accepted proposals at k > burn_in (of {} proposed), S = {}",
            (cfg.steps - cfg.burn_in - 1) * m,
            out.log_r.len()
        );
        assert!(kept > 0);
        assert_eq!(out.log_r.len(), kept, "{label}: S vs independent count");
        assert_eq!(out.samples.len(), kept * d);
        assert_eq!(reported as usize, kept, "{label}: reported counters");
        let bits32 = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let bits64 = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits32(&out.samples), bits32(&s), "{label}: samples");
        assert_eq!(bits64(&out.log_r), bits64(&slr), "{label}: sample log R");
        assert_eq!(
            bits32(&out.final_states),
            bits32(&fin),
            "{label}: final states"
        );
        // Streams consumed identically.
        assert_eq!(rng::uniform_f64(&mut r1), rng::uniform_f64(&mut r2));
    }
}

/// Burn-in is strict: with burn_in = K − 2 only iteration K − 1 contributes; with burn_in = K − 1
/// nothing does.
#[test]
fn burn_in_is_strict() {
    let g = DiagGaussian::reference();
    let mut init = rng::stream(16, "offpolicy-test/burn-init", 0);
    let x0 = g.sample(100, &mut init).unwrap();
    let run = |burn_in: usize| {
        let mut rng = rng::stream(16, "offpolicy-test/burn", 0);
        LocalSearch::new(config(10, burn_in, 0.1, Some(0.01))).run(&g, &x0, &mut rng)
    };
    let one = run(8);
    assert_eq!(one.log_r.len(), one.accepted[9] as usize);
    assert!(!one.log_r.is_empty());
    let none = run(9);
    assert!(none.samples.is_empty() && none.log_r.is_empty());
    // Burn-in changes only what is kept, not the chains.
    assert_eq!(one.final_states, none.final_states);
    assert_eq!(one.accepted, none.accepted);
}

/// Same seed → bitwise-identical output; another stream index → different output.
#[test]
fn run_is_bitwise_reproducible() {
    let g = DiagGaussian::reference();
    let mut init = rng::stream(17, "offpolicy-test/repro-init", 0);
    let x0 = g.sample(300, &mut init).unwrap();
    let ls = LocalSearch::new(config(60, 30, 0.2, Some(0.01)));
    let go = |index: u64| ls.run(&g, &x0, &mut rng::stream(17, "offpolicy-test/repro", index));
    let bits = |o: &LocalSearchOutput| {
        (
            o.samples.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            o.log_r.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            o.final_states
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            o.final_log_r
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            o.step_sizes.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            o.accepted.clone(),
            o.final_step_size.to_bits(),
            o.acceptance_rate.to_bits(),
        )
    };
    let (a, b, c) = (go(0), go(0), go(1));
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(a.final_states, c.final_states);
}

/// K = 0 returns the inputs untouched.
#[test]
fn zero_steps_is_identity() {
    let g = DiagGaussian::reference();
    let x0 = vec![0.5f32, -1.0, 2.0, 1.0, 1.0, 1.0];
    let mut rng = rng::stream(18, "offpolicy-test/zero", 0);
    let out = LocalSearch::new(config(0, 0, 0.1, Some(0.01))).run(&g, &x0, &mut rng);
    assert_eq!(out.final_states, x0);
    assert!(out.samples.is_empty() && out.step_sizes.is_empty());
    assert_eq!((out.final_step_size, out.acceptance_rate), (0.1, 0.0));
}

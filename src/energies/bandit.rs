//! Multimodal contextual bandit with exact ground truth (spec rtb2024.md §4.5 (A)): the
//! unit-test level of the offline-RL stand-in.
//!
//! * State s ∈ [−1, 1] (uniform in the offline data); action a ∈ ℝ² (A = 2 action dims).
//! * Behaviour policy μ(a|s): an equal-weight mixture of K isotropic Gaussians N(m_k(s), σ²I) whose
//!   means sit on a circle around the centre c(s) = (0.5·s, 0) that moves with s,
//!   m_k(s) = c(s) + r·(cos(2πk/K), sin(2πk/K)).
//!   - The spec's example rotates the circle with s instead. Measured here: a state-conditioned
//!     MLP DDPM prior (hidden 128, 20 000 ε-MSE steps) did not learn the rotation at all (its
//!     actions' angles relative to the modes were uniform at every test state; TV to μ 0.40,
//!     ε̂ barely changed with s), because rotating by πs needs products of s with the action,
//!     which an additive first layer learns slowly. A moving centre keeps the state dependence
//!     and the five modes, and is within reach of a CPU-scale prior. Everything below is
//!     relative to c(s), so every state is the same problem shifted.
//! * True reward R(s, a) = 2·exp(−‖a − a⋆(s)‖²/0.1) − 0.5‖a − c(s)‖², a⋆(s) = c(s) +
//!   0.65·(cos φ, sin φ), φ = π/10. With the standard K = 5, r = 0.5 the peak lies a quarter of the way
//!   from behaviour mode 0 to mode 1 and *outside* the circle of behaviour means (2.3σ from mode
//!   0): mode 0 gets most of the bonus, mode 1 some, the other three a penalty, and the very best
//!   actions are ones μ rarely takes — the trap that naive reward maximisation falls into and
//!   that the KL-regularised target avoids. (The peak is kept within reach of the data, 2.3σ,
//!   so that π* at α = 0.1 is set by where the offline data actually is: a peak far outside the
//!   support would make π* depend on μ's analytic tails, which no prior learned from data
//!   reproduces.)
//! * Horizon 1, so Q = R, and the RTB target is π*(a|s) ∝ μ(a|s)·exp(R(s, a)/α), log r = R/α.
//!
//! Because μ is analytic and the action space is 2-D, π* is computed exactly (up to midpoint
//! quadrature) on a G × G action grid per test state; [`binned_tv`] and [`binned_kl`] then score
//! a sampler's actions against that truth.
//!
//! Everything is f64 and every sum runs in a fixed order (modes in index order, grid cells
//! row-major), so the numbers are bitwise reproducible across runs and machines with the same libm.
//!
//! Shapes: N rows (samples or tuples), A = 2 action dims, G grid cells per axis, C = G / coarsen
//! coarse bins per axis.

use crate::rng;
use rand_core::Rng;
use std::f64::consts::{PI, TAU};

/// Peak height of the reward bump.
const BUMP_HEIGHT: f64 = 2.0;
/// Width of the reward bump: exp(−‖a − a⋆‖²/BUMP_WIDTH).
const BUMP_WIDTH: f64 = 0.1;
/// Coefficient of the quadratic action penalty −c‖a‖².
const ACTION_PENALTY: f64 = 0.5;
/// ‖a⋆(s)‖: further out than the behaviour circle, so the best actions are rarely taken.
const A_STAR_RADIUS: f64 = 0.65;
/// How far the behaviour circle's centre moves per unit of state: c(s) = (0.5·s, 0).
const CENTRE_SHIFT: f64 = 0.5;
/// Angle of a⋆ relative to behaviour mode 0: π/10, a quarter of the way to mode 1 when K = 5.
const A_STAR_PHASE: f64 = PI / 10.0;

/// The bandit: behaviour policy μ(a|s), true reward R(s, a), and temperature α of the target
/// π*(a|s) ∝ μ(a|s)·exp(R(s, a)/α).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bandit {
    /// K, the number of behaviour modes.
    pub modes: usize,
    /// Radius of the circle the behaviour means sit on.
    pub radius: f64,
    /// Per-coordinate standard deviation σ of every behaviour component.
    pub std: f64,
    /// Temperature α of the target (log r = R/α); the spec's Table G.2 uses {0.05, 0.1, 0.5}.
    pub alpha: f64,
}

impl Bandit {
    /// K = 5 modes on a circle of radius 0.5, σ = 0.1 (inside the spec's 4–6 modes, std
    /// 0.08–0.15), with temperature `alpha`.
    pub fn standard(alpha: f64) -> Self {
        Bandit {
            modes: 5,
            radius: 0.5,
            std: 0.1,
            alpha,
        }
    }

    /// The centre c(s) = (0.5·s, 0) of the behaviour circle: the mixture slides with the state.
    pub fn centre(&self, s: f64) -> [f64; 2] {
        [CENTRE_SHIFT * s, 0.0]
    }

    /// Mean m_k(s) of behaviour mode k: angle 2πk/K on the circle of radius `radius` around
    /// [`Bandit::centre`].
    pub fn mode_mean(&self, s: f64, k: usize) -> [f64; 2] {
        let th = TAU * k as f64 / self.modes as f64;
        let c = self.centre(s);
        [c[0] + self.radius * th.cos(), c[1] + self.radius * th.sin()]
    }

    /// log μ(a|s) = log (1/K) Σ_k N(a; m_k(s), σ²I), by log-sum-exp over the K modes (in index
    /// order) so far-away actions give a finite, accurate value instead of log 0.
    pub fn behaviour_log_density(&self, s: f64, a: [f64; 2]) -> f64 {
        let var = self.std * self.std;
        // e[k] = −‖a − m_k‖²/(2σ²), [K].
        let e: Vec<f64> = (0..self.modes)
            .map(|k| {
                let m = self.mode_mean(s, k);
                let d0 = a[0] - m[0];
                let d1 = a[1] - m[1];
                -0.5 * (d0 * d0 + d1 * d1) / var
            })
            .collect();
        log_sum_exp(&e) - (self.modes as f64).ln() - (TAU * var).ln()
    }

    /// One action a ~ μ(·|s): a uniform mode index (unbiased rejection on 32-bit words, as
    /// [`rng::below`]) and a Box–Muller pair ([`rng::box_muller`]) for the two coordinates.
    /// Generic over the generator so callers can pass any stream; the words consumed are
    /// 1 (mode; more on a rare rejection) + 2 (normals).
    pub fn sample_behaviour(&self, s: f64, rng: &mut impl Rng) -> [f64; 2] {
        let k = rng::below(rng, self.modes as u32) as usize;
        let m = self.mode_mean(s, k);
        let (z0, z1) = rng::box_muller(rng.next_u32(), rng.next_u32());
        [m[0] + self.std * z0, m[1] + self.std * z1]
    }

    /// a⋆(s) = c(s) + 0.65·(cos(π/10), sin(π/10)), the centre of the reward bump: it moves with
    /// the behaviour modes, so it stays between modes 0 and 1 (outside the circle of means) for
    /// every s.
    pub fn a_star(&self, s: f64) -> [f64; 2] {
        let th = A_STAR_PHASE;
        let c = self.centre(s);
        [
            c[0] + A_STAR_RADIUS * th.cos(),
            c[1] + A_STAR_RADIUS * th.sin(),
        ]
    }

    /// True reward R(s, a) = 2·exp(−‖a − a⋆(s)‖²/0.1) − 0.5‖a − c(s)‖² (also Q, horizon 1).
    pub fn reward(&self, s: f64, a: [f64; 2]) -> f64 {
        let c = self.a_star(s);
        let o = self.centre(s);
        let d0 = a[0] - c[0];
        let d1 = a[1] - c[1];
        let (e0, e1) = (a[0] - o[0], a[1] - o[1]);
        BUMP_HEIGHT * (-(d0 * d0 + d1 * d1) / BUMP_WIDTH).exp()
            - ACTION_PENALTY * (e0 * e0 + e1 * e1)
    }

    /// ∇_a R(s, a) = −(2·2/0.1)·exp(−‖a − a⋆‖²/0.1)·(a − a⋆) − 2·0.5·(a − c(s)), analytic (shape `[A]`); used by
    /// classifier-guidance-style drifts and the Langevin term.
    pub fn grad_reward(&self, s: f64, a: [f64; 2]) -> [f64; 2] {
        let c = self.a_star(s);
        let d0 = a[0] - c[0];
        let d1 = a[1] - c[1];
        let bump = BUMP_HEIGHT * (-(d0 * d0 + d1 * d1) / BUMP_WIDTH).exp();
        let coef = -2.0 * bump / BUMP_WIDTH;
        let o = self.centre(s);
        [
            coef * d0 - 2.0 * ACTION_PENALTY * (a[0] - o[0]),
            coef * d1 - 2.0 * ACTION_PENALTY * (a[1] - o[1]),
        ]
    }

    /// log r(s, a) = R(s, a)/α, the log-reward of the RTB objective.
    pub fn log_r(&self, s: f64, a: [f64; 2]) -> f64 {
        self.reward(s, a) / self.alpha
    }

    /// Unnormalised log π*(a|s) = log μ(a|s) + R(s, a)/α.
    pub fn target_log_density_unnorm(&self, s: f64, a: [f64; 2]) -> f64 {
        self.behaviour_log_density(s, a) + self.log_r(s, a)
    }

    /// `n` offline tuples (s, a0, a1, R(s, a)) ([N, 4]) with s ~ U(−1, 1) and a ~ μ(·|s).
    ///
    /// Drawn sequentially from the crate stream `(seed, "bandit-dataset", 0)` (a ChaCha8Rng keyed
    /// by blake3 of the seed and purpose, see [`rng::stream`]), so the set is a pure function of
    /// `seed` and `n`, and a prefix of a larger set for the same seed.
    pub fn dataset(&self, n: usize, seed: u64) -> Vec<[f64; 4]> {
        let mut g = rng::stream(seed, "bandit-dataset", 0);
        (0..n)
            .map(|_| {
                let s = -1.0 + 2.0 * rng::uniform_f64(&mut g);
                let a = self.sample_behaviour(s, &mut g);
                [s, a[0], a[1], self.reward(s, a)]
            })
            .collect()
    }

    /// Per-cell log-weights ([G·G], row-major over (a0 cell, a1 cell)) at the cell centres, with
    /// the reward term included when `tilt`, normalised with log-sum-exp into probabilities.
    fn cell_probs(&self, s: f64, grid: &Grid, tilt: bool) -> Vec<f64> {
        let g = grid.cells;
        let log_area = grid.cell_area().ln();
        let mut logw = Vec::with_capacity(g * g);
        for i0 in 0..g {
            let x0 = grid.centre(i0);
            for i1 in 0..g {
                let a = [x0, grid.centre(i1)];
                let mut l = self.behaviour_log_density(s, a) + log_area;
                if tilt {
                    l += self.log_r(s, a);
                }
                logw.push(l);
            }
        }
        normalise_log_weights(&logw)
    }

    /// π*(·|s) mass per grid cell ([G·G], row-major over (a0 cell, a1 cell)): density at the cell
    /// centre × cell area (midpoint rule), renormalised to sum to 1 with log-sum-exp — at small α
    /// the unnormalised weights span e^±40, and the max-shift keeps them in range. The mass of π*
    /// outside the standard grid is below e^−40 and is neglected.
    pub fn target_cell_probs(&self, s: f64, grid: &Grid) -> Vec<f64> {
        self.cell_probs(s, grid, true)
    }

    /// μ(·|s) mass per grid cell ([G·G]), as [`Bandit::target_cell_probs`] without the reward
    /// tilt: the truth for behaviour cloning, and the α → ∞ limit of the target.
    pub fn behaviour_cell_probs(&self, s: f64, grid: &Grid) -> Vec<f64> {
        self.cell_probs(s, grid, false)
    }

    /// Σ_cells p_cell·R(s, centre) for cell masses `probs` ([G·G]) at state s, row-major order.
    pub fn expected_reward_under(&self, s: f64, probs: &[f64], grid: &Grid) -> f64 {
        let g = grid.cells;
        assert_eq!(probs.len(), g * g, "probs must be [G·G]");
        let mut acc = 0.0;
        for i0 in 0..g {
            let x0 = grid.centre(i0);
            for i1 in 0..g {
                acc += probs[i0 * g + i1] * self.reward(s, [x0, grid.centre(i1)]);
            }
        }
        acc
    }

    /// `E_{π*(·|s)}[R]`, exact up to the grid quadrature: the value an ideal α-regularised policy
    /// earns at s (it rises towards max R as α → 0 and falls to `E_μ[R]` as α → ∞).
    pub fn exact_expected_reward(&self, s: f64, grid: &Grid) -> f64 {
        self.expected_reward_under(s, &self.target_cell_probs(s, grid), grid)
    }

    /// `E_{μ(·|s)}[R]` on the same grid: the behaviour-cloning baseline value.
    pub fn behaviour_expected_reward(&self, s: f64, grid: &Grid) -> f64 {
        self.expected_reward_under(s, &self.behaviour_cell_probs(s, grid), grid)
    }
}

/// A square action grid [lo, hi)² of G × G equal cells; cell (i0, i1) is flat index i0·G + i1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// G, cells per axis.
    pub cells: usize,
    pub lo: f64,
    pub hi: f64,
}

impl Grid {
    /// 200 × 200 cells on [−1.5, 1.5]² (spec: a 200×200 action grid). Cell width 0.015 = 0.15σ,
    /// fine enough that the midpoint rule integrates μ to ~1e-12; the square reaches ≥ 5σ past
    /// every behaviour mean and past a⋆.
    pub fn standard() -> Self {
        Grid {
            cells: 200,
            lo: -1.5,
            hi: 1.5,
        }
    }

    /// Cell width h = (hi − lo)/G.
    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.cells as f64
    }

    /// Cell area h².
    pub fn cell_area(&self) -> f64 {
        let h = self.width();
        h * h
    }

    /// Centre of cell i along either axis: lo + (i + ½)h.
    pub fn centre(&self, i: usize) -> f64 {
        self.lo + (i as f64 + 0.5) * self.width()
    }

    /// Cell index along one axis of coordinate x, or `None` outside [lo, hi) (NaN included).
    pub fn axis_index(&self, x: f64) -> Option<usize> {
        let t = ((x - self.lo) / self.width()).floor();
        if t >= 0.0 && t < self.cells as f64 {
            Some(t as usize)
        } else {
            None
        }
    }
}

/// m evenly spaced evaluation states in [−1, 1], cell midpoints s_i = −1 + (2i + 1)/m (shape `[m]`), so
/// they avoid the endpoints and are symmetric about 0.
pub fn test_states(m: usize) -> Vec<f64> {
    (0..m)
        .map(|i| -1.0 + (2 * i + 1) as f64 / m as f64)
        .collect()
}

/// Coarse-bin counts of `samples` ([N, A]) on `grid` coarsened by `coarsen`: ([C·C] row-major
/// counts, count outside [lo, hi)²). A sample's fine cell is found first and then divided by
/// `coarsen`, so the coarse bins are exactly unions of the fine cells the truth is given on.
fn coarse_histogram(samples: &[[f64; 2]], grid: &Grid, coarsen: usize) -> (Vec<f64>, f64) {
    let c = coarse_cells(grid, coarsen);
    let mut counts = vec![0.0; c * c];
    let mut outside = 0.0;
    for a in samples {
        match (grid.axis_index(a[0]), grid.axis_index(a[1])) {
            (Some(i0), Some(i1)) => counts[(i0 / coarsen) * c + i1 / coarsen] += 1.0,
            _ => outside += 1.0,
        }
    }
    (counts, outside)
}

/// Fine cell masses `probs` ([G·G]) summed into the coarse bins ([C·C]), in row-major fine order.
fn coarse_truth(probs: &[f64], grid: &Grid, coarsen: usize) -> Vec<f64> {
    let g = grid.cells;
    assert_eq!(probs.len(), g * g, "probs must be [G·G]");
    let c = coarse_cells(grid, coarsen);
    let mut out = vec![0.0; c * c];
    for i0 in 0..g {
        for i1 in 0..g {
            out[(i0 / coarsen) * c + i1 / coarsen] += probs[i0 * g + i1];
        }
    }
    out
}

/// C = G / coarsen; panics unless `coarsen` ≥ 1 divides G (ragged bins would have unequal areas).
fn coarse_cells(grid: &Grid, coarsen: usize) -> usize {
    assert!(
        coarsen >= 1 && grid.cells.is_multiple_of(coarsen),
        "coarsen {coarsen} must divide G = {}",
        grid.cells
    );
    grid.cells / coarsen
}

/// Total variation ½Σ|p̂ − p| between the histogram of `samples` ([N, A]) and the truth `probs`
/// ([G·G] cell masses, e.g. [`Bandit::target_cell_probs`]) on the grid coarsened by `coarsen`
/// (200 → 20×20 bins with coarsen 10).
///
/// Samples outside [lo, hi)² fall in an implicit "outside" bin whose truth mass is taken as 0
/// (it is < e^−40 for the standard grid), so they count fully toward the TV. Coarsening trades
/// resolution for sampling noise: with ~80 populated bins the noise floor at N samples is
/// ≈ ½Σ√(2p/(πN)), about 0.03 at N = 10k and 0.008 at N = 200k.
pub fn binned_tv(samples: &[[f64; 2]], probs: &[f64], grid: &Grid, coarsen: usize) -> f64 {
    assert!(!samples.is_empty(), "binned_tv of no samples");
    let truth = coarse_truth(probs, grid, coarsen);
    let (counts, outside) = coarse_histogram(samples, grid, coarsen);
    let n = samples.len() as f64;
    let mut acc = outside / n;
    for (&q, &p) in counts.iter().zip(&truth) {
        acc += (q / n - p).abs();
    }
    0.5 * acc
}

/// KL(π* ‖ p̂) = Σ_b p_b·ln(p_b / p̂_b) between the truth `probs` ([G·G]) and the histogram of
/// `samples` ([N, A]) on the grid coarsened by `coarsen`, with every empirical bin floored at
/// `floor` (the outside bin included) and then renormalised.
///
/// Direction: the truth comes first because it has full support on the grid, so every term is
/// weighted by a known, positive p_b, and the reverse direction would need log p̂ at the sample
/// locations, which a histogram cannot give. This is the mass-covering ("forward") KL: it punishes
/// a sampler for missing truth mass (a dropped mode costs ≈ p_mode·ln(p_mode/floor)), which is
/// the failure mode-seeking samplers have. An empty bin would make it infinite; the floor bounds
/// the penalty, so pick it below 1/N (e.g. 1e-6) and report it with the value. Samples outside the
/// grid take mass from the in-grid bins through the renormalisation, so escaping the grid is still
/// penalised although the outside bin's own truth mass is 0.
pub fn binned_kl(
    samples: &[[f64; 2]],
    probs: &[f64],
    grid: &Grid,
    coarsen: usize,
    floor: f64,
) -> f64 {
    assert!(!samples.is_empty(), "binned_kl of no samples");
    assert!(floor > 0.0, "floor must be positive, got {floor}");
    let truth = coarse_truth(probs, grid, coarsen);
    let (counts, outside) = coarse_histogram(samples, grid, coarsen);
    let n = samples.len() as f64;
    // Floored empirical masses [C·C] and the outside bin; z renormalises all C·C + 1 bins.
    let q: Vec<f64> = counts.iter().map(|&k| (k / n).max(floor)).collect();
    let z = q.iter().sum::<f64>() + (outside / n).max(floor);
    let mut kl = 0.0;
    for (&p, &qb) in truth.iter().zip(&q) {
        if p > 0.0 {
            kl += p * (p.ln() - (qb / z).ln());
        }
    }
    kl
}

/// log Σ exp(x_i), max-shifted; −∞ for an empty slice or all −∞.
fn log_sum_exp(x: &[f64]) -> f64 {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + x.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

/// exp(l_i − logsumexp(l)) ([len]): probabilities from log-weights, max-shifted so no weight
/// overflows and the largest is exactly representable.
fn normalise_log_weights(logw: &[f64]) -> Vec<f64> {
    let m = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logw.iter().map(|&l| (l - m).exp()).collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|v| v / z).collect()
}

/// Bins per axis of the evaluation histogram: the 200-cell grid coarsened by 10 (20 × 20 bins
/// of width 0.15, about 1.5 behaviour standard deviations).
pub const EVAL_COARSEN: usize = 10;
/// The floor of the empirical bin masses in [`binned_kl`] at evaluation.
pub const EVAL_KL_FLOOR: f64 = 1e-6;

/// A bandit sampler's scores against the exact π* (spec rtb2024 §4.5 A), averaged over the test
/// states: binned TV and KL(π* ‖ p̂) on 20 × 20 bins, E[R] of the samples against E_π*[R] and
/// E_μ[R], and the behaviour log-likelihood E[log μ(a|s)] of the samples.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BanditStats {
    pub tv: f64,
    pub kl: f64,
    pub per_state_tv: Vec<f64>,
    pub mean_reward: f64,
    pub target_reward: f64,
    pub behaviour_reward: f64,
    pub behaviour_log_lik: f64,
}

/// [`BanditStats`] of actions `samples` (`[N, 2]`) whose row k was drawn at state
/// `states[k mod M]`, against the target of `bandit` (its α).
pub fn stats(bandit: &Bandit, states: &[f64], samples: &[f32]) -> BanditStats {
    let m = states.len();
    let grid = Grid::standard();
    let rows: Vec<[f64; 2]> = samples
        .chunks_exact(2)
        .map(|a| [a[0] as f64, a[1] as f64])
        .collect();
    let (mut tv, mut kl, mut reward, mut target, mut behaviour, mut log_lik) =
        (Vec::with_capacity(m), 0.0, 0.0, 0.0, 0.0, 0.0);
    for (j, &s) in states.iter().enumerate() {
        let mine: Vec<[f64; 2]> = rows.iter().skip(j).step_by(m).copied().collect();
        let probs = bandit.target_cell_probs(s, &grid);
        tv.push(binned_tv(&mine, &probs, &grid, EVAL_COARSEN));
        kl += binned_kl(&mine, &probs, &grid, EVAL_COARSEN, EVAL_KL_FLOOR) / m as f64;
        let n = mine.len() as f64;
        reward += mine.iter().map(|&a| bandit.reward(s, a)).sum::<f64>() / n / m as f64;
        log_lik += mine
            .iter()
            .map(|&a| bandit.behaviour_log_density(s, a))
            .sum::<f64>()
            / n
            / m as f64;
        target += bandit.expected_reward_under(s, &probs, &grid) / m as f64;
        behaviour += bandit.behaviour_expected_reward(s, &grid) / m as f64;
    }
    BanditStats {
        tv: tv.iter().sum::<f64>() / m as f64,
        kl,
        per_state_tv: tv,
        mean_reward: reward,
        target_reward: target,
        behaviour_reward: behaviour,
        behaviour_log_lik: log_lik,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(p: &[f64], q: &[f64]) -> f64 {
        0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
    }

    fn behaviour_samples(b: &Bandit, s: f64, n: usize, seed: u64) -> Vec<[f64; 2]> {
        let mut g = rng::stream(seed, "bandit-test", 0);
        (0..n).map(|_| b.sample_behaviour(s, &mut g)).collect()
    }

    #[test]
    fn behaviour_density_integrates_to_one() {
        let b = Bandit::standard(0.1);
        let grid = Grid::standard();
        for s in [-0.7, 0.0, 0.45] {
            let mut total = 0.0;
            for i0 in 0..grid.cells {
                for i1 in 0..grid.cells {
                    let a = [grid.centre(i0), grid.centre(i1)];
                    total += b.behaviour_log_density(s, a).exp() * grid.cell_area();
                }
            }
            assert!((total - 1.0).abs() < 1e-3, "s = {s}: ∫μ = {total}");
        }
    }

    #[test]
    fn behaviour_density_matches_direct_mixture() {
        // log-sum-exp against the naive mixture sum where the latter does not underflow.
        let b = Bandit::standard(0.1);
        let (s, a) = (0.3, [0.2, -0.35]);
        let var = b.std * b.std;
        let direct: f64 = (0..b.modes)
            .map(|k| {
                let m = b.mode_mean(s, k);
                let d = (a[0] - m[0]).powi(2) + (a[1] - m[1]).powi(2);
                (-0.5 * d / var).exp() / (TAU * var) / b.modes as f64
            })
            .sum();
        let got = b.behaviour_log_density(s, a);
        assert!(
            (got - direct.ln()).abs() < 1e-12,
            "{got} vs {}",
            direct.ln()
        );
    }

    #[test]
    fn grad_reward_matches_finite_differences() {
        let b = Bandit::standard(0.1);
        let h = 1e-6;
        let pts = [
            (0.0, [0.0, 0.0]),
            (0.0, [0.6, 0.5]),
            (0.3, [-0.4, 0.9]),
            (-0.8, [0.25, -0.6]),
            (1.0, [-0.7, -0.1]),
        ];
        for (s, a) in pts {
            let g = b.grad_reward(s, a);
            for j in 0..2 {
                let mut up = a;
                let mut dn = a;
                up[j] += h;
                dn[j] -= h;
                let fd = (b.reward(s, up) - b.reward(s, dn)) / (2.0 * h);
                assert!(
                    (fd - g[j]).abs() < 1e-6,
                    "s = {s}, a = {a:?}, j = {j}: analytic {} vs fd {fd}",
                    g[j]
                );
            }
        }
    }

    #[test]
    fn reward_peak_is_off_behaviour_support() {
        // The trap: R is highest near a⋆, where μ has almost no mass.
        let b = Bandit::standard(0.1);
        for s in test_states(5) {
            let star = b.a_star(s);
            let r_star = b.reward(s, star);
            for k in 0..b.modes {
                assert!(r_star > b.reward(s, b.mode_mean(s, k)) + 0.5);
            }
            // μ(a⋆) is ~e^−2.7 of a mode centre's density: rarely taken, yet within reach of
            // the data (2.3σ from mode 0).
            let gap =
                b.behaviour_log_density(s, b.mode_mean(s, 0)) - b.behaviour_log_density(s, star);
            assert!(gap > 2.0 && gap < 4.0, "s = {s}: log μ gap {gap}");
        }
    }

    #[test]
    fn large_alpha_target_is_behaviour() {
        let b = Bandit::standard(1e6);
        let grid = Grid::standard();
        for s in [-0.5, 0.0, 0.8] {
            let d = tv(
                &b.target_cell_probs(s, &grid),
                &b.behaviour_cell_probs(s, &grid),
            );
            assert!(d < 1e-6, "s = {s}: TV {d}");
        }
    }

    #[test]
    fn cell_probs_are_normalised() {
        let grid = Grid::standard();
        for alpha in [0.05, 0.5] {
            let b = Bandit::standard(alpha);
            for p in [
                b.target_cell_probs(0.2, &grid),
                b.behaviour_cell_probs(0.2, &grid),
            ] {
                assert_eq!(p.len(), grid.cells * grid.cells);
                let z: f64 = p.iter().sum();
                assert!((z - 1.0).abs() < 1e-12, "sum {z}");
                assert!(p.iter().all(|&v| v >= 0.0 && v.is_finite()));
            }
        }
    }

    #[test]
    fn target_expected_reward_beats_behaviour_and_grows_as_alpha_falls() {
        let grid = Grid::standard();
        for s in test_states(5) {
            let e_mu = Bandit::standard(0.1).behaviour_expected_reward(s, &grid);
            let e: Vec<f64> = [0.5, 0.1, 0.05]
                .iter()
                .map(|&alpha| Bandit::standard(alpha).exact_expected_reward(s, &grid))
                .collect();
            eprintln!(
                "s = {s:+.1}: E_mu[R] = {e_mu:.5}, E_pi*[R] at alpha 0.5/0.1/0.05 = {:.5}/{:.5}/{:.5}",
                e[0], e[1], e[2]
            );
            assert!(
                e[1] > e_mu + 0.1,
                "s = {s}: E_π*[R] {} vs E_μ[R] {e_mu}",
                e[1]
            );
            assert!(e[0] < e[1] && e[1] < e[2], "s = {s}: not increasing {e:?}");
        }
    }

    #[test]
    fn expected_reward_is_the_same_at_every_state() {
        // μ, a⋆ and R's penalty all move with c(s), so E[R] does not depend on s (up to the
        // grid discretisation).
        let grid = Grid::standard();
        let b = Bandit::standard(0.1);
        let e0 = b.exact_expected_reward(0.0, &grid);
        for s in [-0.9, 0.37] {
            let e = b.exact_expected_reward(s, &grid);
            assert!((e - e0).abs() < 1e-6, "s = {s}: {e} vs {e0}");
        }
    }

    #[test]
    fn binned_tv_of_behaviour_samples_is_small_and_discriminates() {
        let b = Bandit::standard(0.1);
        let grid = Grid::standard();
        let s = 0.25;
        let probs = b.behaviour_cell_probs(s, &grid);
        let x = behaviour_samples(&b, s, 200_000, 11);
        let d = binned_tv(&x, &probs, &grid, 10);
        eprintln!("binned TV, 200k samples, coarsen 10: {d:.5}");
        assert!(d > 0.0 && d < 0.02, "TV {d}");
        // Samples from s + 0.6 (the modes moved by 0.3, three behaviour std) are far from the
        // truth at s.
        let y = behaviour_samples(&b, s + 0.6, 200_000, 12);
        let d_other = binned_tv(&y, &probs, &grid, 10);
        eprintln!("binned TV, other state: {d_other:.5}");
        assert!(d_other > 0.3, "TV {d_other}");
    }

    #[test]
    fn sampling_tv_noise_floor_at_10k() {
        let b = Bandit::standard(0.1);
        let grid = Grid::standard();
        let s = 0.0;
        let probs = b.behaviour_cell_probs(s, &grid);
        let ds: Vec<f64> = (0..8)
            .map(|seed| binned_tv(&behaviour_samples(&b, s, 10_000, seed), &probs, &grid, 10))
            .collect();
        let mean = ds.iter().sum::<f64>() / ds.len() as f64;
        eprintln!("binned TV noise floor, 10k samples, coarsen 10: mean {mean:.5} over {ds:?}");
        assert!(mean > 0.01 && mean < 0.06, "mean TV {mean}");
    }

    #[test]
    fn binned_kl_is_small_for_truth_samples_and_large_otherwise() {
        let b = Bandit::standard(0.1);
        let grid = Grid::standard();
        let s = -0.4;
        let probs = b.behaviour_cell_probs(s, &grid);
        let x = behaviour_samples(&b, s, 200_000, 21);
        let kl = binned_kl(&x, &probs, &grid, 10, 1e-6);
        let y = behaviour_samples(&b, s + 0.6, 200_000, 22);
        let kl_other = binned_kl(&y, &probs, &grid, 10, 1e-6);
        eprintln!("binned KL, 200k samples: {kl:.5}; other state: {kl_other:.3}");
        assert!((0.0..0.01).contains(&kl), "KL {kl}");
        assert!(kl_other > 1.0, "KL {kl_other}");
    }

    #[test]
    fn outside_samples_count_fully() {
        let b = Bandit::standard(0.1);
        let grid = Grid::standard();
        let probs = b.behaviour_cell_probs(0.0, &grid);
        let out = vec![[2.0, 0.0], [0.0, -1.6], [f64::NAN, 0.0], [1.5, 0.0]];
        let d = binned_tv(&out, &probs, &grid, 10);
        assert!((d - 1.0).abs() < 1e-12, "TV {d}");
        // Half the samples escaping costs at least ½ in TV.
        let mut half = behaviour_samples(&b, 0.0, 1000, 3);
        half.extend(std::iter::repeat_n([5.0, 5.0], 1000));
        assert!(binned_tv(&half, &probs, &grid, 10) >= 0.5);
        // And lowers every in-grid bin's mass in the KL: ≈ ln 2 on top of the sampling error.
        let kl_full = binned_kl(&half[..1000], &probs, &grid, 10, 1e-6);
        let kl_half = binned_kl(&half, &probs, &grid, 10, 1e-6);
        assert!(kl_half - kl_full > 0.6, "{kl_half} vs {kl_full}");
    }

    #[test]
    fn dataset_is_reproducible_and_consistent() {
        let b = Bandit::standard(0.1);
        let d1 = b.dataset(1000, 7);
        let d2 = b.dataset(1000, 7);
        let d3 = b.dataset(1000, 8);
        let bits = |d: &[[f64; 4]]| -> Vec<u64> {
            d.iter()
                .flat_map(|r| r.iter().map(|v| v.to_bits()))
                .collect()
        };
        assert_eq!(bits(&d1), bits(&d2));
        assert_ne!(bits(&d1), bits(&d3));
        assert_eq!(d1.len(), 1000);
        for r in &d1 {
            assert!((-1.0..=1.0).contains(&r[0]));
            assert_eq!(r[3].to_bits(), b.reward(r[0], [r[1], r[2]]).to_bits());
        }
        // States cover [−1, 1] roughly uniformly.
        let mean_s = d1.iter().map(|r| r[0]).sum::<f64>() / 1000.0;
        assert!(mean_s.abs() < 0.1, "mean s {mean_s}");
        // A shorter set is a prefix of a longer one.
        assert_eq!(bits(&b.dataset(10, 7)), bits(&d1[..10]));
    }

    #[test]
    fn test_states_are_evenly_spaced() {
        let s = test_states(4);
        assert_eq!(s, vec![-0.75, -0.25, 0.25, 0.75]);
        assert_eq!(test_states(1), vec![0.0]);
    }

    #[test]
    fn grid_indexing() {
        let g = Grid::standard();
        assert!((g.width() - 0.015).abs() < 1e-15);
        assert_eq!(g.axis_index(-1.5), Some(0));
        assert_eq!(g.axis_index(1.5), None);
        assert_eq!(g.axis_index(1.4999), Some(199));
        assert_eq!(g.axis_index(g.centre(57)), Some(57));
        assert_eq!(g.axis_index(f64::NAN), None);
    }
}

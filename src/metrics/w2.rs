//! Exact 2-Wasserstein distance between two equal-size point sets (spec §6).
//!
//! With n points on each side and uniform weights, the optimal transport plan is a permutation
//! (Birkhoff), so W2² = min_σ (1/n) Σ_i ‖a_i − b_σ(i)‖², a linear assignment problem. We solve it
//! exactly with the shortest-augmenting-path method (Jonker–Volgenant; this is the variant of
//! Crouse 2016 that scipy's `linear_sum_assignment` uses): one Dijkstra search over reduced costs
//! per row, with row and column potentials kept dual feasible throughout. Dense f64 costs; O(n³)
//! in the worst case, about a second for n = 2000 in practice (see `tests/metrics.rs`).
//!
//! The reference code computes the same quantity with POT's exact network simplex (`ot.emd2`);
//! Sinkhorn would be biased upwards and is not used.

use thiserror::Error;

/// Why [`try_w2_exact`] could not compare two point sets.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum W2Error {
    #[error("w2_exact: point set `{which}` has {len} values, expected n·d = {n}·{d} = {}", .n * .d)]
    ShapeMismatch {
        which: &'static str,
        len: usize,
        n: usize,
        d: usize,
    },
    #[error("w2_exact: empty point sets (n = {n}, d = {d})")]
    Empty { n: usize, d: usize },
}

/// An optimal assignment with its dual certificate.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// Row i is matched to column `row_to_col[i]` (a permutation of 0..n).
    pub row_to_col: Vec<usize>,
    /// Σ_i cost[i, row_to_col[i]], summed in row order.
    pub total_cost: f64,
    /// Dual potentials u (rows) and v (columns): cost[i, j] − u_i − v_j ≥ 0 for every (i, j),
    /// with equality on the assignment. Together they certify optimality (complementary
    /// slackness), which the tests check for n = 2000 where brute force is impossible.
    pub row_potential: Vec<f64>,
    pub col_potential: Vec<f64>,
}

const FREE: usize = usize::MAX;

/// Minimum-cost perfect matching of an n × n cost matrix (row-major, `cost[i * n + j]`).
///
/// Panics if `cost.len() != n * n` or a cost is not finite.
pub fn linear_assignment(cost: &[f64], n: usize) -> Assignment {
    assert_eq!(
        cost.len(),
        n * n,
        "linear_assignment: cost has {} entries, expected n² = {}",
        cost.len(),
        n * n
    );
    assert!(
        cost.iter().all(|c| c.is_finite()),
        "linear_assignment: every cost must be finite"
    );
    let mut u = vec![0.0f64; n];
    let mut v = vec![0.0f64; n];
    let mut col4row = vec![FREE; n];
    let mut row4col = vec![FREE; n];
    // Per search: path[j] = the row from which column j was reached; spc[j] = its shortest
    // reduced-cost distance from the root row; `remaining` = columns not yet scanned.
    let mut path = vec![FREE; n];
    let mut spc = vec![f64::INFINITY; n];
    let mut remaining = vec![0usize; n];
    let mut scanned_rows: Vec<usize> = Vec::with_capacity(n);
    let mut scanned_cols: Vec<usize> = Vec::with_capacity(n);

    for cur in 0..n {
        spc.fill(f64::INFINITY);
        scanned_rows.clear();
        scanned_cols.clear();
        // Reverse order as in scipy: with ties broken towards free columns it does not matter
        // for the optimum, only for which of several optimal matchings comes out.
        for (it, r) in remaining.iter_mut().enumerate() {
            *r = n - 1 - it;
        }
        let mut num_remaining = n;
        let mut i = cur;
        let mut min_val = 0.0f64;
        // Dijkstra over columns until the closest unscanned column is unassigned (the sink).
        let sink = loop {
            scanned_rows.push(i);
            let ui = u[i];
            let crow = &cost[i * n..(i + 1) * n];
            let mut index = FREE;
            let mut lowest = f64::INFINITY;
            for (it, &j) in remaining[..num_remaining].iter().enumerate() {
                let r = min_val + crow[j] - ui - v[j];
                if r < spc[j] {
                    path[j] = i;
                    spc[j] = r;
                }
                // Prefer a free column on ties: it ends the search sooner.
                if spc[j] < lowest || (spc[j] == lowest && row4col[j] == FREE) {
                    lowest = spc[j];
                    index = it;
                }
            }
            min_val = lowest;
            let j = remaining[index];
            scanned_cols.push(j);
            num_remaining -= 1;
            remaining[index] = remaining[num_remaining];
            if row4col[j] == FREE {
                break j;
            }
            i = row4col[j];
        };

        // Move the potentials so reduced costs stay ≥ 0 and the new path is tight.
        u[cur] += min_val;
        for &r in &scanned_rows[1..] {
            u[r] += min_val - spc[col4row[r]];
        }
        for &c in &scanned_cols {
            v[c] -= min_val - spc[c];
        }

        // Flip the alternating path back from the sink to `cur`.
        let mut j = sink;
        loop {
            let r = path[j];
            row4col[j] = r;
            std::mem::swap(&mut col4row[r], &mut j);
            if r == cur {
                break;
            }
        }
    }

    let total_cost = col4row
        .iter()
        .enumerate()
        .map(|(i, &j)| cost[i * n + j])
        .sum();
    Assignment {
        row_to_col: col4row,
        total_cost,
        row_potential: u,
        col_potential: v,
    }
}

/// Squared Euclidean distances ‖a_i − b_j‖² in f64 ([n, n] row-major) between a, b: [n, d].
pub fn squared_distances(a: &[f32], b: &[f32], n: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * n];
    for (ai, orow) in a.chunks_exact(d).zip(out.chunks_exact_mut(n)) {
        for (bj, o) in b.chunks_exact(d).zip(orow.iter_mut()) {
            *o = ai
                .iter()
                .zip(bj)
                .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                .sum();
        }
    }
    out
}

/// W2 = √(min_σ (1/n) Σ_i ‖a_i − b_σ(i)‖²) between two sets of n points in ℝ^d (both [n, d]
/// row-major). Err on a shape mismatch or n·d = 0; Ok(NaN) when a coordinate is not finite (a
/// diverged sampler should report NaN, not abort the run).
pub fn try_w2_exact(a: &[f32], b: &[f32], n: usize, d: usize) -> Result<f64, W2Error> {
    for (which, set) in [("a", a), ("b", b)] {
        if set.len() != n * d {
            return Err(W2Error::ShapeMismatch {
                which,
                len: set.len(),
                n,
                d,
            });
        }
    }
    if n == 0 || d == 0 {
        return Err(W2Error::Empty { n, d });
    }
    let cost = squared_distances(a, b, n, d);
    // Also catches finite points whose squared distance overflows.
    if cost.iter().any(|c| !c.is_finite()) {
        return Ok(f64::NAN);
    }
    let asg = linear_assignment(&cost, n);
    Ok((asg.total_cost / n as f64).max(0.0).sqrt())
}

/// [`try_w2_exact`], panicking with the error's message on a shape mismatch or empty input.
pub fn w2_exact(a: &[f32], b: &[f32], n: usize, d: usize) -> f64 {
    match try_w2_exact(a, b, n, d) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    }
}

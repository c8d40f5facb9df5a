//! Fréchet distance and mean pairwise cosine distance between feature vectors (spec rtb2024
//! §3.3).
//!
//! The RTB paper scores its vision posteriors by FID and by the diversity of the samples. At CPU
//! scale our images are the UCI 8×8 digits (see `energies::digits`), for which an Inception
//! network is neither available nor meaningful. So both metrics are taken in the feature space of
//! the frozen digits classifier instead: its hidden layer (F = 128 features per image). The
//! formulas are those of FID and of the reference code's diversity; only the feature extractor
//! differs, so the numbers are comparable across our runs but not to the paper's.
//!
//! Shapes, in comments, use fixed letters: N rows (images), F features per row. Matrices are
//! row-major `Vec<f64>`.
//!
//! Everything is f64, single-threaded, and summed in a fixed order (rows in index order, pairs in
//! (i, j) lexicographic order), so results are bit-for-bit reproducible.
//!
//! The matrix square roots come from a symmetric eigendecomposition by the cyclic Jacobi method:
//! slower than Householder + QR, but simple, unconditionally stable and accurate to high relative
//! precision. At F = 128 it takes about 10 sweeps, and a whole [`frechet_distance`] (two
//! eigendecompositions) about 0.2 s in a release build on a busy two-core machine.

/// Mean and unbiased covariance of N feature rows of F features each.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    /// F: features per row.
    pub dim: usize,
    /// N: rows the statistics were taken over.
    pub count: usize,
    /// μ, `[F]`.
    pub mean: Vec<f64>,
    /// Σ, `[F, F]` row-major, unbiased: Σ_r (x_r − μ)(x_r − μ)ᵀ / (N − 1).
    pub cov: Vec<f64>,
}

impl FeatureStats {
    /// Statistics of the rows of `x` (`[N, F]`, row-major, F = `dim`).
    ///
    /// Two passes: the mean, then the covariance of the centred rows, each summed over rows in
    /// index order. Panics if `dim` is 0, if `x.len()` is not a multiple of `dim`, or if there are
    /// fewer than 2 rows (the unbiased covariance needs N ≥ 2).
    pub fn from_rows(x: &[f64], dim: usize) -> FeatureStats {
        assert!(dim > 0, "FeatureStats::from_rows: dim must be positive");
        assert!(
            x.len().is_multiple_of(dim),
            "FeatureStats::from_rows: {} values is not a multiple of dim = {}",
            x.len(),
            dim
        );
        let n = x.len() / dim;
        assert!(
            n >= 2,
            "FeatureStats::from_rows: an unbiased covariance needs at least 2 rows, got {n}"
        );

        // μ, [F].
        let mut mean = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in mean.iter_mut() {
            *m /= n as f64;
        }

        // Upper triangle of Σ_r d_r d_rᵀ with d_r = x_r − μ, then scaled and mirrored.
        let mut cov = vec![0.0f64; dim * dim];
        let mut d = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for ((di, &v), &m) in d.iter_mut().zip(row).zip(&mean) {
                *di = v - m;
            }
            for (i, cov_row) in cov.chunks_exact_mut(dim).enumerate() {
                let di = d[i];
                for (c, &dj) in cov_row[i..].iter_mut().zip(&d[i..]) {
                    *c += di * dj;
                }
            }
        }
        let denom = (n - 1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / denom;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }

        FeatureStats {
            dim,
            count: n,
            mean,
            cov,
        }
    }

    /// Checks that the public fields agree with each other.
    fn check_shape(&self, which: &str) {
        assert_eq!(
            self.mean.len(),
            self.dim,
            "frechet_distance: `{which}` has {} means for dim = {}",
            self.mean.len(),
            self.dim
        );
        assert_eq!(
            self.cov.len(),
            self.dim * self.dim,
            "frechet_distance: `{which}` has {} covariance entries, expected dim² = {}",
            self.cov.len(),
            self.dim * self.dim
        );
    }
}

/// Squared Fréchet distance between the Gaussians N(μa, Σa) and N(μb, Σb):
///
/// ‖μa − μb‖² + tr(Σa) + tr(Σb) − 2·tr( (Σa^{1/2} Σb Σa^{1/2})^{1/2} ).
///
/// This is the FID formula (tr (ΣaΣb)^{1/2} = tr (Σa^{1/2} Σb Σa^{1/2})^{1/2}, the two matrices
/// being similar), computed through symmetric PSD square roots only: Σa^{1/2} by
/// eigendecomposition, then the eigenvalues λ_k of the symmetric PSD M = Σa^{1/2} Σb Σa^{1/2}
/// (`[F, F]`), whose square roots sum to tr M^{1/2}. Unlike scipy's `sqrtm` of the non-symmetric
/// product there is no complex arithmetic and nothing to discard. Eigenvalues that rounding makes
/// slightly negative count as 0; with singular covariances (N ≤ F, or dead features) this leaves
/// an error of order √(ε‖M‖) per null direction, as in every FID implementation.
///
/// A tiny negative total (rounding, when the two distributions coincide) is returned as 0. A NaN
/// in the inputs gives NaN. Panics if the dimensions differ.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> f64 {
    assert_eq!(
        a.dim, b.dim,
        "frechet_distance: dimensions differ ({} vs {})",
        a.dim, b.dim
    );
    a.check_shape("a");
    b.check_shape("b");
    let f = a.dim;

    let mut mean_sq = 0.0f64;
    for (&ma, &mb) in a.mean.iter().zip(&b.mean) {
        let d = ma - mb;
        mean_sq += d * d;
    }
    let tr_a = trace(&a.cov, f);
    let tr_b = trace(&b.cov, f);

    // M = Σa^{1/2} Σb Σa^{1/2}, [F, F], made exactly symmetric.
    let sa = sqrt_psd(&a.cov, f);
    let m = matmul(&matmul(&sa, &b.cov, f), &sa, f);
    let mut m_sym = vec![0.0f64; f * f];
    for i in 0..f {
        for j in i..f {
            let v = 0.5 * (m[i * f + j] + m[j * f + i]);
            m_sym[i * f + j] = v;
            m_sym[j * f + i] = v;
        }
    }
    let mut tr_sqrt = 0.0f64;
    for &lambda in &sym_eigen(&m_sym, f).values {
        tr_sqrt += sqrt_clamped(lambda);
    }

    let fd = mean_sq + tr_a + tr_b - 2.0 * tr_sqrt;
    // `if` rather than `max`, so that a NaN is not turned into 0.
    if fd < 0.0 {
        0.0
    } else {
        fd
    }
}

/// Mean pairwise cosine distance of the rows of `x` (`[N, F]`, row-major, F = `dim`):
///
/// (2 / (N(N − 1))) · Σ_{i<j} (1 − cos(x_i, x_j)),
///
/// with cos = 0 when either row is the zero vector, and cos clamped to [−1, 1] against rounding.
/// Pairs are summed in (i, j) lexicographic order. Ranges over [0, 2]: 0 when all rows point the
/// same way, 1 for mutually orthogonal rows. O(N²F).
///
/// This is the diversity metric of spec rtb2024 §3.3 ("mean pairwise cosine distance"). The
/// reference code samples at most 20 000 random pairs and averages their cosine *similarity*; we
/// take all pairs, which is exact and needs no seed, and report the distance 1 − similarity, so
/// that larger means more diverse, which is what the ordering of the paper's Table 2 implies.
///
/// Panics if `dim` is 0, if `x.len()` is not a multiple of `dim`, or if there are fewer than 2
/// rows.
pub fn cosine_diversity(x: &[f64], dim: usize) -> f64 {
    assert!(dim > 0, "cosine_diversity: dim must be positive");
    assert!(
        x.len().is_multiple_of(dim),
        "cosine_diversity: {} values is not a multiple of dim = {}",
        x.len(),
        dim
    );
    let n = x.len() / dim;
    assert!(
        n >= 2,
        "cosine_diversity: needs at least 2 rows for a pair, got {n}"
    );

    let rows: Vec<&[f64]> = x.chunks_exact(dim).collect();
    let norms: Vec<f64> = rows.iter().map(|r| dot(r, r).sqrt()).collect();
    let mut total = 0.0f64;
    for (i, (ri, &ni)) in rows.iter().zip(&norms).enumerate() {
        for (rj, &nj) in rows[i + 1..].iter().zip(&norms[i + 1..]) {
            let cos = if ni == 0.0 || nj == 0.0 {
                0.0
            } else {
                (dot(ri, rj) / (ni * nj)).clamp(-1.0, 1.0)
            };
            total += 1.0 - cos;
        }
    }
    let pairs = (n * (n - 1) / 2) as f64;
    total / pairs
}

/// Σ_k a_k b_k in index order.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        acc += x * y;
    }
    acc
}

/// Trace of an n × n matrix.
fn trace(a: &[f64], n: usize) -> f64 {
    let mut acc = 0.0f64;
    for i in 0..n {
        acc += a[i * n + i];
    }
    acc
}

/// √λ for λ ≥ 0, 0 for (rounding-)negative λ, NaN for NaN.
fn sqrt_clamped(lambda: f64) -> f64 {
    if lambda < 0.0 {
        0.0
    } else {
        lambda.sqrt()
    }
}

/// C = A·B for n × n row-major matrices; each C[i, j] sums over k in increasing order.
fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "matmul: A is not {n} × {n}");
    assert_eq!(b.len(), n * n, "matmul: B is not {n} × {n}");
    let mut c = vec![0.0f64; n * n];
    for (a_row, c_row) in a.chunks_exact(n).zip(c.chunks_exact_mut(n)) {
        for (&aik, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            for (cij, &bkj) in c_row.iter_mut().zip(b_row) {
                *cij += aik * bkj;
            }
        }
    }
    c
}

/// Off-diagonal Frobenius norm reached relative to the whole matrix's, at which Jacobi stops.
const JACOBI_TOL: f64 = 1e-14;
/// Sweeps after which Jacobi stops regardless (it needs about 6–10 at F = 128).
const JACOBI_MAX_SWEEPS: usize = 100;

/// A = V·diag(values)·Vᵀ.
struct SymEigen {
    /// λ, `[n]`, in the order the iteration leaves them (not sorted).
    values: Vec<f64>,
    /// V, `[n, n]` row-major, orthogonal; column k is the eigenvector of `values[k]`.
    vectors: Vec<f64>,
    /// Full sweeps performed.
    #[cfg_attr(not(test), allow(dead_code))]
    sweeps: usize,
}

/// Symmetric eigendecomposition by the cyclic Jacobi method (Golub & Van Loan §8.5; the update
/// formulas are those of Numerical Recipes §11.1). Only the upper triangle of `a` (`[n, n]`) is
/// read; it is mirrored first.
///
/// Each sweep rotates every pair (p, q), p < q, in lexicographic order, zeroing a_pq. Sweeps run
/// until the off-diagonal Frobenius norm is ≤ `JACOBI_TOL`·‖A‖_F (which is invariant under the
/// rotations) or `JACOBI_MAX_SWEEPS` sweeps have been done. Convergence is quadratic.
fn sym_eigen(a: &[f64], n: usize) -> SymEigen {
    assert_eq!(a.len(), n * n, "sym_eigen: matrix is not {n} × {n}");
    let mut a = a.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            a[j * n + i] = a[i * n + j];
        }
    }
    // Vᵀ, [n, n]: row k is eigenvector k, so that each rotation touches two contiguous rows.
    let mut vt = vec![0.0f64; n * n];
    for i in 0..n {
        vt[i * n + i] = 1.0;
    }

    let frob = dot(&a, &a).sqrt();
    let target = JACOBI_TOL * frob;
    let off_norm = |a: &[f64]| -> f64 {
        let mut acc = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    acc += a[i * n + j] * a[i * n + j];
                }
            }
        }
        acc.sqrt()
    };

    let mut sweeps = 0;
    while sweeps < JACOBI_MAX_SWEEPS && off_norm(&a) > target {
        sweeps += 1;
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let app = a[p * n + p];
                let aqq = a[q * n + q];
                // t = tan of the rotation angle, the smaller root of t² + 2θt − 1 = 0.
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + theta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                let tau = s / (1.0 + c);

                a[p * n + p] = app - t * apq;
                a[q * n + q] = aqq + t * apq;
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                // Rows p and q (contiguous; a_rp = a_pr by symmetry), then mirrored into
                // columns p and q.
                {
                    let (head, tail) = a.split_at_mut(q * n);
                    let row_p = &mut head[p * n..(p + 1) * n];
                    let row_q = &mut tail[..n];
                    for (r, (arp, arq)) in row_p.iter_mut().zip(row_q.iter_mut()).enumerate() {
                        if r == p || r == q {
                            continue;
                        }
                        let (xp, xq) = (*arp, *arq);
                        *arp = xp - s * (xq + tau * xp);
                        *arq = xq + s * (xp - tau * xq);
                    }
                }
                for r in 0..n {
                    if r != p && r != q {
                        a[r * n + p] = a[p * n + r];
                        a[r * n + q] = a[q * n + r];
                    }
                }
                // Vᵀ's rows p and q (V's columns).
                let (head, tail) = vt.split_at_mut(q * n);
                let vp = &mut head[p * n..(p + 1) * n];
                let vq = &mut tail[..n];
                for (vrp, vrq) in vp.iter_mut().zip(vq.iter_mut()) {
                    let (xp, xq) = (*vrp, *vrq);
                    *vrp = xp - s * (xq + tau * xp);
                    *vrq = xq + s * (xp - tau * xq);
                }
            }
        }
    }

    // V from Vᵀ.
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            v[i * n + j] = vt[j * n + i];
        }
    }
    SymEigen {
        values: (0..n).map(|i| a[i * n + i]).collect(),
        vectors: v,
        sweeps,
    }
}

/// The PSD square root of a symmetric matrix `a` (`[n, n]`): V·diag(√max(λ, 0))·Vᵀ, exactly
/// symmetric. Negative eigenvalues (rounding on a PSD matrix) are treated as 0.
fn sqrt_psd(a: &[f64], n: usize) -> Vec<f64> {
    let eig = sym_eigen(a, n);
    let roots: Vec<f64> = eig.values.iter().map(|&l| sqrt_clamped(l)).collect();
    let mut out = vec![0.0f64; n * n];
    for i in 0..n {
        let vi = &eig.vectors[i * n..(i + 1) * n];
        for j in i..n {
            let vj = &eig.vectors[j * n..(j + 1) * n];
            let mut acc = 0.0f64;
            for ((&vik, &rk), &vjk) in vi.iter().zip(&roots).zip(vj) {
                acc += vik * rk * vjk;
            }
            out[i * n + j] = acc;
            out[j * n + i] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::normal_f64;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn normals(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
        (0..len).map(|_| normal_f64(rng)).collect()
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        let mut t = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                t[j * n + i] = a[i * n + j];
            }
        }
        t
    }

    fn identity(n: usize) -> Vec<f64> {
        let mut e = vec![0.0; n * n];
        for i in 0..n {
            e[i * n + i] = 1.0;
        }
        e
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn rel_err(got: f64, want: f64) -> f64 {
        (got - want).abs() / want.abs().max(1e-300)
    }

    /// N rows of F correlated features: z·M + offset with z standard normal (`[N, F]`), M a
    /// random `[F, F]` mixing matrix, so that the covariance MᵀM is far from diagonal.
    fn correlated_rows(seed: u64, n: usize, f: usize, offset: f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m = normals(&mut rng, f * f);
        let z = normals(&mut rng, n * f);
        let mut x = vec![0.0; n * f];
        for r in 0..n {
            for j in 0..f {
                let mut acc = offset * (j as f64 + 1.0) / f as f64;
                for k in 0..f {
                    acc += z[r * f + k] * m[k * f + j];
                }
                x[r * f + j] = acc;
            }
        }
        x
    }

    /// A random SPD matrix M·Mᵀ/n + shift·I, `[n, n]`.
    fn random_spd(rng: &mut ChaCha8Rng, n: usize, shift: f64) -> Vec<f64> {
        let m = normals(rng, n * n);
        let mut a = matmul(&m, &transpose(&m, n), n);
        for (i, v) in a.iter_mut().enumerate() {
            *v /= n as f64;
            if i / n == i % n {
                *v += shift;
            }
        }
        a
    }

    /// Lower-triangular L with A = L·Lᵀ (A SPD).
    fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
        let mut l = vec![0.0; n * n];
        for j in 0..n {
            let mut d = a[j * n + j];
            for k in 0..j {
                d -= l[j * n + k] * l[j * n + k];
            }
            assert!(d > 0.0, "cholesky: not positive definite");
            let ljj = d.sqrt();
            l[j * n + j] = ljj;
            for i in j + 1..n {
                let mut s = a[i * n + j];
                for k in 0..j {
                    s -= l[i * n + k] * l[j * n + k];
                }
                l[i * n + j] = s / ljj;
            }
        }
        l
    }

    /// Inverse by Gauss–Jordan elimination with partial pivoting.
    fn inverse(a: &[f64], n: usize) -> Vec<f64> {
        let mut m = a.to_vec();
        let mut inv = identity(n);
        for col in 0..n {
            let piv = (col..n)
                .max_by(|&x, &y| m[x * n + col].abs().total_cmp(&m[y * n + col].abs()))
                .unwrap();
            assert!(m[piv * n + col] != 0.0, "inverse: singular");
            for k in 0..n {
                m.swap(col * n + k, piv * n + k);
                inv.swap(col * n + k, piv * n + k);
            }
            let p = m[col * n + col];
            for k in 0..n {
                m[col * n + k] /= p;
                inv[col * n + k] /= p;
            }
            for r in 0..n {
                if r != col {
                    let fct = m[r * n + col];
                    if fct != 0.0 {
                        for k in 0..n {
                            m[r * n + k] -= fct * m[col * n + k];
                            inv[r * n + k] -= fct * inv[col * n + k];
                        }
                    }
                }
            }
        }
        inv
    }

    /// Principal square root by the Denman–Beavers iteration (no eigendecomposition; works for
    /// non-symmetric matrices with no eigenvalues on the closed negative real axis).
    fn denman_beavers_sqrt(a: &[f64], n: usize) -> Vec<f64> {
        let mut y = a.to_vec();
        let mut z = identity(n);
        for _ in 0..100 {
            let yi = inverse(&y, n);
            let zi = inverse(&z, n);
            let y_next: Vec<f64> = y.iter().zip(&zi).map(|(p, q)| 0.5 * (p + q)).collect();
            let z_next: Vec<f64> = z.iter().zip(&yi).map(|(p, q)| 0.5 * (p + q)).collect();
            let step = max_abs_diff(&y_next, &y);
            y = y_next;
            z = z_next;
            if step <= 1e-15 * y.iter().map(|v| v.abs()).fold(0.0, f64::max) {
                break;
            }
        }
        y
    }

    #[test]
    fn from_rows_small_example() {
        // Rows (1, 2), (3, 6), (5, 7): μ = (3, 5); centred (−2, −3), (0, 1), (2, 2).
        let s = FeatureStats::from_rows(&[1.0, 2.0, 3.0, 6.0, 5.0, 7.0], 2);
        assert_eq!(s.dim, 2);
        assert_eq!(s.count, 3);
        assert_eq!(s.mean, vec![3.0, 5.0]);
        assert_eq!(s.cov, vec![4.0, 5.0, 5.0, 7.0]);
    }

    #[test]
    #[should_panic(expected = "not a multiple of dim")]
    fn from_rows_rejects_ragged_input() {
        FeatureStats::from_rows(&[1.0, 2.0, 3.0], 2);
    }

    #[test]
    #[should_panic(expected = "at least 2 rows")]
    fn from_rows_rejects_single_row() {
        FeatureStats::from_rows(&[1.0, 2.0], 2);
    }

    #[test]
    #[should_panic(expected = "dimensions differ")]
    fn frechet_rejects_mismatched_dims() {
        let a = FeatureStats::from_rows(&[1.0, 2.0, 3.0, 5.0], 2);
        let b = FeatureStats::from_rows(&[1.0, 2.0, 3.0, 5.0], 1);
        frechet_distance(&a, &b);
    }

    #[test]
    fn frechet_of_itself_is_zero() {
        let f = 16;
        let s = FeatureStats::from_rows(&correlated_rows(11, 300, f, 3.0), f);
        // Far from diagonal: the off-diagonal mass is a good part of the whole.
        let off: f64 = (0..f * f)
            .filter(|k| k / f != k % f)
            .map(|k| s.cov[k] * s.cov[k])
            .sum();
        assert!(off.sqrt() > 0.3 * dot(&s.cov, &s.cov).sqrt());
        let fd = frechet_distance(&s, &s);
        assert!((0.0..=1e-9).contains(&fd), "FD(s, s) = {fd:e}");
    }

    #[test]
    fn frechet_of_commuting_covariances_is_closed_form() {
        // Diagonal Σa, Σb: FD = ‖Δμ‖² + Σ_k (σa_k − σb_k)².
        let var_a: [f64; 6] = [0.5, 1.0, 2.0, 3.5, 0.01, 7.0];
        let var_b: [f64; 6] = [1.5, 1.0, 0.2, 4.0, 0.3, 2.5];
        let mu_a: [f64; 6] = [0.0, 1.0, -2.0, 0.5, 3.0, 0.0];
        let mu_b: [f64; 6] = [1.0, 1.0, 0.0, -0.5, 2.0, 0.25];
        let f = var_a.len();
        let diag = |v: &[f64]| {
            let mut c = vec![0.0; f * f];
            for (k, &x) in v.iter().enumerate() {
                c[k * f + k] = x;
            }
            c
        };
        let mut want = 0.0;
        for k in 0..f {
            want += (mu_a[k] - mu_b[k]).powi(2) + (var_a[k].sqrt() - var_b[k].sqrt()).powi(2);
        }
        let a = FeatureStats {
            dim: f,
            count: 10,
            mean: mu_a.to_vec(),
            cov: diag(&var_a),
        };
        let b = FeatureStats {
            dim: f,
            count: 10,
            mean: mu_b.to_vec(),
            cov: diag(&var_b),
        };
        let got = frechet_distance(&a, &b);
        assert!(rel_err(got, want) <= 1e-9, "diagonal: {got} vs {want}");

        // The same after a common random rotation Q (Gram–Schmidt): Σ = Q·D·Qᵀ, μ = Q·μ.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut q = normals(&mut rng, f * f); // rows become orthonormal
        for i in 0..f {
            for j in 0..i {
                let proj = dot(&q[i * f..(i + 1) * f], &q[j * f..(j + 1) * f]);
                for k in 0..f {
                    q[i * f + k] -= proj * q[j * f + k];
                }
            }
            let norm = dot(&q[i * f..(i + 1) * f], &q[i * f..(i + 1) * f]).sqrt();
            for k in 0..f {
                q[i * f + k] /= norm;
            }
        }
        assert!(max_abs_diff(&matmul(&q, &transpose(&q, f), f), &identity(f)) < 1e-13);
        let rotate = |s: &FeatureStats| {
            let qt = transpose(&q, f);
            FeatureStats {
                dim: f,
                count: s.count,
                mean: (0..f)
                    .map(|i| dot(&q[i * f..(i + 1) * f], &s.mean))
                    .collect(),
                cov: matmul(&matmul(&q, &s.cov, f), &qt, f),
            }
        };
        let got = frechet_distance(&rotate(&a), &rotate(&b));
        assert!(rel_err(got, want) <= 1e-9, "rotated: {got} vs {want}");
    }

    #[test]
    fn frechet_of_non_commuting_covariances_matches_independent_sqrt() {
        let f = 8;
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let cov_a = random_spd(&mut rng, f, 0.1);
        let cov_b = random_spd(&mut rng, f, 0.2);
        let mu_a = normals(&mut rng, f);
        let mu_b = normals(&mut rng, f);
        let ab = matmul(&cov_a, &cov_b, f);
        let ba = matmul(&cov_b, &cov_a, f);
        assert!(
            max_abs_diff(&ab, &ba) > 0.1,
            "covariances should not commute"
        );

        // tr (ΣaΣb)^{1/2} = Σ √eig(ΣaΣb) = Σ √eig(LᵀΣbL) with Σa = L·Lᵀ, as the trace of a
        // Denman–Beavers square root (no eigensolver involved).
        let l = cholesky(&cov_a, f);
        assert!(max_abs_diff(&matmul(&l, &transpose(&l, f), f), &cov_a) < 1e-13);
        let c = matmul(&matmul(&transpose(&l, f), &cov_b, f), &l, f);
        let tr_sqrt_c = trace(&denman_beavers_sqrt(&c, f), f);
        // And directly on the non-symmetric product, as scipy's sqrtm would.
        let tr_sqrt_ab = trace(&denman_beavers_sqrt(&ab, f), f);
        assert!(rel_err(tr_sqrt_ab, tr_sqrt_c) <= 1e-10);

        let mean_sq: f64 = mu_a.iter().zip(&mu_b).map(|(x, y)| (x - y).powi(2)).sum();
        let want = mean_sq + trace(&cov_a, f) + trace(&cov_b, f) - 2.0 * tr_sqrt_c;
        let a = FeatureStats {
            dim: f,
            count: 100,
            mean: mu_a,
            cov: cov_a,
        };
        let b = FeatureStats {
            dim: f,
            count: 100,
            mean: mu_b,
            cov: cov_b,
        };
        let got = frechet_distance(&a, &b);
        assert!(rel_err(got, want) <= 1e-8, "FD {got} vs independent {want}");
        // The covariance part alone (the Δμ term must not mask it).
        let cov_part = got - mean_sq;
        let want_cov = want - mean_sq;
        assert!(want_cov > 0.1);
        assert!(rel_err(cov_part, want_cov) <= 1e-8);
    }

    #[test]
    fn frechet_is_symmetric_and_nonnegative() {
        let f = 16;
        let a = FeatureStats::from_rows(&correlated_rows(21, 250, f, 0.0), f);
        let b = FeatureStats::from_rows(&correlated_rows(22, 180, f, 1.5), f);
        let ab = frechet_distance(&a, &b);
        let ba = frechet_distance(&b, &a);
        assert!(ab > 0.0 && ba > 0.0);
        assert!((ab - ba).abs() <= 1e-9 * ab.max(1.0), "{ab} vs {ba}");
        // Same covariance, shifted mean: only the ‖Δμ‖² term remains.
        let mut shifted = a.clone();
        for (k, m) in shifted.mean.iter_mut().enumerate() {
            *m += 0.1 * k as f64;
        }
        let want: f64 = (0..f).map(|k| (0.1 * k as f64).powi(2)).sum();
        let got = frechet_distance(&a, &shifted);
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
    }

    #[test]
    fn jacobi_and_sqrt_psd_at_128() {
        let n = 128;
        let mut rng = ChaCha8Rng::seed_from_u64(128);
        let a = random_spd(&mut rng, n, 0.0); // M·Mᵀ/128, eigenvalues down to ~1e-5

        let start = std::time::Instant::now();
        let eig = sym_eigen(&a, n);
        let s = sqrt_psd(&a, n);
        let elapsed = start.elapsed();
        eprintln!(
            "n = 128: {} Jacobi sweeps; eigen + sqrt_psd in {:?}",
            eig.sweeps, elapsed
        );
        assert!(eig.sweeps < JACOBI_MAX_SWEEPS, "Jacobi did not converge");

        // V orthogonal and A·V = V·Λ.
        let v = &eig.vectors;
        assert!(max_abs_diff(&matmul(&transpose(v, n), v, n), &identity(n)) < 1e-12);
        let av = matmul(&a, v, n);
        let mut v_lambda = v.clone();
        for (k, x) in v_lambda.iter_mut().enumerate() {
            *x *= eig.values[k % n];
        }
        assert!(max_abs_diff(&av, &v_lambda) < 1e-12);
        assert!(eig.values.iter().all(|&l| l > 0.0));

        // S symmetric and S² = A.
        assert_eq!(s, transpose(&s, n));
        let err = max_abs_diff(&matmul(&s, &s, n), &a);
        assert!(err <= 1e-10, "‖S² − A‖_max = {err:e}");
    }

    #[test]
    fn frechet_at_128_features() {
        // The digits classifier's hidden width.
        let f = 128;
        let a = FeatureStats::from_rows(&correlated_rows(31, 400, f, 0.0), f);
        let b = FeatureStats::from_rows(&correlated_rows(32, 400, f, 2.0), f);
        let start = std::time::Instant::now();
        let ab = frechet_distance(&a, &b);
        let elapsed = start.elapsed();
        let aa = frechet_distance(&a, &a);
        eprintln!("F = 128: FD(a, b) = {ab:.6} in {elapsed:?}; FD(a, a) = {aa:e}");
        let scale = trace(&a.cov, f);
        assert!(aa <= 1e-12 * scale, "FD(a, a) = {aa:e} (tr Σa = {scale})");
        assert!(ab > 0.0);
        assert!((ab - frechet_distance(&b, &a)).abs() <= 1e-9 * ab);
    }

    #[test]
    fn sqrt_psd_of_singular_matrix() {
        // Rank 1: v·vᵀ has square root v·vᵀ/‖v‖.
        let v = [1.0, -2.0, 2.0];
        let n = 3;
        let mut a = vec![0.0; 9];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = v[i] * v[j];
            }
        }
        let s = sqrt_psd(&a, n);
        let want: Vec<f64> = a.iter().map(|x| x / 3.0).collect();
        assert!(max_abs_diff(&s, &want) < 1e-7);
        assert!(max_abs_diff(&matmul(&s, &s, n), &a) < 1e-12);
    }

    #[test]
    fn cosine_diversity_special_cases() {
        // Identical rows → 0.
        let row = [0.3, -1.2, 4.0, 0.7, 2.2];
        let same: Vec<f64> = row.iter().copied().cycle().take(5 * row.len()).collect();
        let d = cosine_diversity(&same, row.len());
        assert!(d.abs() <= 1e-12, "identical rows: {d:e}");
        // Two orthogonal rows → 1.
        assert_eq!(cosine_diversity(&[1.0, 0.0, 0.0, 0.0, 2.0, 0.0], 3), 1.0);
        // e1 and −e1 → 2.
        assert_eq!(cosine_diversity(&[1.0, 0.0, -1.0, 0.0], 2), 2.0);
        // A zero row counts as cos = 0: pairs (0, e1) and (0, e1) → 1, (e1, e1) → 0.
        let d = cosine_diversity(&[0.0, 0.0, 1.0, 0.0, 3.0, 0.0], 2);
        assert!((d - 2.0 / 3.0).abs() <= 1e-15, "{d}");
    }

    #[test]
    fn cosine_diversity_matches_brute_force() {
        let (n, f) = (37, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        let mut x = normals(&mut rng, n * f);
        // Shift so that the rows share a direction and the answer is away from 1.
        for (k, v) in x.iter_mut().enumerate() {
            *v += 0.4 * (k % f) as f64;
        }
        // Independently: normalise first, then average 1 − ⟨u_i, u_j⟩ over ordered pairs i ≠ j.
        let units: Vec<Vec<f64>> = x
            .chunks_exact(f)
            .map(|r| {
                let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                r.iter().map(|v| v / norm).collect()
            })
            .collect();
        let mut total = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let c: f64 = units[i].iter().zip(&units[j]).map(|(p, q)| p * q).sum();
                    total += 1.0 - c;
                }
            }
        }
        let want = total / (n * (n - 1)) as f64;
        let got = cosine_diversity(&x, f);
        assert!(want > 0.1 && want < 0.9, "{want}");
        assert!((got - want).abs() <= 1e-12, "{got} vs {want}");
    }

    #[test]
    #[should_panic(expected = "at least 2 rows")]
    fn cosine_diversity_rejects_single_row() {
        cosine_diversity(&[1.0, 2.0], 2);
    }
}

//! Trajectory balance (learned log Z) and VarGrad (batch log Z).

/// A loss value and its gradients with respect to the per-trajectory log p_F sums and log Z.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGrad {
    pub loss: f64,
    /// ∂L/∂LF_b for every trajectory b.
    pub d_log_pf: Vec<f64>,
    /// ∂L/∂log Z (0 for VarGrad, which learns no log Z).
    pub d_log_z: f64,
    /// The log Z this loss implies: the learned one (TB), −mean ζ (VarGrad).
    pub log_z: f64,
}

/// TB with RTB's loss cutoff (spec rtb2024 §1.5, vision and language code):
/// L = (1/B) Σ_b ½·relu(δ_b² − c), so trajectories with |δ_b| ≤ √c give no gradient. A
/// non-finite δ is never masked: it reaches the loss, where the trainer reports it.
pub fn trajectory_balance_cutoff(
    log_z: f64,
    log_pf: &[f64],
    log_pb: &[f64],
    log_r: &[f64],
    cutoff: f64,
) -> LossGrad {
    let b = log_pf.len() as f64;
    let mut loss = 0.0;
    let mut d_log_z = 0.0;
    let mut d_log_pf = Vec::with_capacity(log_pf.len());
    for ((&lf, &lb), &lr) in log_pf.iter().zip(log_pb).zip(log_r) {
        let delta = log_z + lf - lb - lr;
        // A NaN δ counts as active, so it reaches the loss.
        let active = delta.is_nan() || delta * delta > cutoff;
        if active {
            loss += 0.5 * (delta * delta - cutoff);
            d_log_z += delta;
        }
        d_log_pf.push(if active { delta / b } else { 0.0 });
    }
    LossGrad {
        loss: loss / b,
        d_log_pf,
        d_log_z: d_log_z / b,
        log_z,
    }
}

/// TB: L = (1/B) Σ_b ½ (log Z + LF_b − LB_b − lr_b)², the cutoff at c = 0 (a row with δ = 0
/// contributes nothing either way).
pub fn trajectory_balance(log_z: f64, log_pf: &[f64], log_pb: &[f64], log_r: &[f64]) -> LossGrad {
    trajectory_balance_cutoff(log_z, log_pf, log_pb, log_r, 0.0)
}

/// TB with a log Z per row (the VAE's log Z(x), spec §2.5): L = (1/N) Σ_b ½ δ_b², δ_b =
/// log Z_b + LF_b − LB_b − lr_b. Its `log_z` is the mean log Z_b. log Z_b enters δ_b exactly as
/// LF_b does, so ∂L/∂log Z_b is `d_log_pf[b]` = δ_b/N too (`d_log_z`, a scalar, is unused).
pub fn trajectory_balance_rows(
    log_z: &[f64],
    log_pf: &[f64],
    log_pb: &[f64],
    log_r: &[f64],
) -> LossGrad {
    let n = log_pf.len() as f64;
    let mut loss = 0.0;
    let mut d_log_pf = Vec::with_capacity(log_pf.len());
    for k in 0..log_pf.len() {
        let delta = log_z[k] + log_pf[k] - log_pb[k] - log_r[k];
        loss += 0.5 * delta * delta;
        d_log_pf.push(delta / n);
    }
    LossGrad {
        loss: loss / n,
        d_log_pf,
        d_log_z: 0.0,
        log_z: log_z.iter().sum::<f64>() / n,
    }
}

/// VarGrad: ζ_b = LF_b − LB_b − lr_b, L = (1/B) Σ_b ½ (ζ_b − ζ̄)². Because Σ_b(ζ_b − ζ̄) = 0 the
/// batch mean's own dependence on LF drops out: ∂L/∂LF_b = (ζ_b − ζ̄)/B.
pub fn vargrad(log_pf: &[f64], log_pb: &[f64], log_r: &[f64]) -> LossGrad {
    let b = log_pf.len() as f64;
    let zeta: Vec<f64> = log_pf
        .iter()
        .zip(log_pb)
        .zip(log_r)
        .map(|((&lf, &lb), &lr)| lf - lb - lr)
        .collect();
    let mean = zeta.iter().sum::<f64>() / b;
    let mut loss = 0.0;
    let d_log_pf = zeta
        .iter()
        .map(|&z| {
            loss += 0.5 * (z - mean) * (z - mean);
            (z - mean) / b
        })
        .collect();
    LossGrad {
        loss: loss / b,
        d_log_pf,
        d_log_z: 0.0,
        log_z: -mean,
    }
}

/// Conditional VarGrad (`cond-tb-avg`, spec §3): N = R·C rows hold R trajectories of each of
/// C conditions, repeat-major (row r·C + c has condition c). ζ̄_c is the mean of condition c's
/// R values of ζ = LF − LB − lr, and L = (1/N) Σ ½(ζ − ζ̄_c)², so ∂L/∂LF = (ζ − ζ̄_c)/N (each
/// ζ̄_c's own dependence drops out as in [`vargrad`]). The reported log Z is −mean_c ζ̄_c, the
/// batch estimate of E_x[log Z(x)].
pub fn vargrad_conditional(
    log_pf: &[f64],
    log_pb: &[f64],
    log_r: &[f64],
    conditions: usize,
) -> LossGrad {
    let n = log_pf.len();
    assert!(
        conditions > 0 && n.is_multiple_of(conditions),
        "vargrad_conditional: {n} rows do not hold a whole number of repeats of {conditions} conditions"
    );
    let repeats = n / conditions;
    let zeta: Vec<f64> = (0..n).map(|k| log_pf[k] - log_pb[k] - log_r[k]).collect();
    let mut means = vec![0f64; conditions];
    for r in 0..repeats {
        for (c, m) in means.iter_mut().enumerate() {
            *m += zeta[r * conditions + c];
        }
    }
    for m in means.iter_mut() {
        *m /= repeats as f64;
    }
    let mut loss = 0.0;
    let d_log_pf = (0..n)
        .map(|k| {
            let dev = zeta[k] - means[k % conditions];
            loss += 0.5 * dev * dev;
            dev / n as f64
        })
        .collect();
    LossGrad {
        loss: loss / n as f64,
        d_log_pf,
        d_log_z: 0.0,
        log_z: -means.iter().sum::<f64>() / conditions as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cutoff: 0 gives TB exactly; rows with δ² ≤ c drop out of the loss and gradient.
    #[test]
    fn cutoff_masks_small_residuals() {
        let (lf, lb, lr) = ([1.0, 0.2, -0.5], [0.5, 0.0, 0.0], [0.0, 0.1, -0.5]);
        assert_eq!(
            trajectory_balance_cutoff(0.1, &lf, &lb, &lr, 0.0),
            trajectory_balance(0.1, &lf, &lb, &lr)
        );
        // δ = (0.6, 0.2, 0.1): only the first exceeds √0.1 ≈ 0.316.
        let g = trajectory_balance_cutoff(0.1, &lf, &lb, &lr, 0.1);
        assert!((g.loss - 0.5 * (0.36 - 0.1) / 3.0).abs() < 1e-12);
        assert!((g.d_log_pf[0] - 0.2).abs() < 1e-12);
        assert_eq!(&g.d_log_pf[1..], &[0.0, 0.0]);
        assert!((g.d_log_z - 0.2).abs() < 1e-12);
        // A NaN residual is not masked away.
        let bad = trajectory_balance_cutoff(0.1, &[f64::NAN, 0.2], &[0.0, 0.0], &[0.0, 0.1], 0.1);
        assert!(bad.loss.is_nan() && bad.d_log_pf[0].is_nan());
    }
    use crate::autodiff::gradcheck::gradcheck;
    use crate::tolerance::GRADCHECK_F64;

    fn data() -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        (
            vec![1.0, -2.0, 0.5, 3.0],
            vec![0.2, 0.1, -0.4, 1.0],
            vec![-1.0, 0.3, 2.0, 0.7],
        )
    }

    #[test]
    fn tb_gradients_match_finite_differences() {
        let (lf, lb, lr) = data();
        let g = trajectory_balance(0.3, &lf, &lb, &lr);
        let mut x = lf.clone();
        x.push(0.3);
        let mut analytic = g.d_log_pf.clone();
        analytic.push(g.d_log_z);
        let mut f = |v: &[f64]| trajectory_balance(v[4], &v[..4], &lb, &lr).loss;
        gradcheck(&mut f, &x, &analytic, 1e-6, GRADCHECK_F64).unwrap();
    }

    #[test]
    fn vargrad_gradients_match_finite_differences() {
        let (lf, lb, lr) = data();
        let g = vargrad(&lf, &lb, &lr);
        let mut f = |v: &[f64]| vargrad(v, &lb, &lr).loss;
        gradcheck(&mut f, &lf, &g.d_log_pf, 1e-6, GRADCHECK_F64).unwrap();
    }

    #[test]
    fn tb_is_zero_at_balance_and_vargrad_ignores_shifts() {
        let (lf, lb, lr) = data();
        let zeta: Vec<f64> = (0..4).map(|i| lf[i] - lb[i] - lr[i]).collect();
        // Make ζ constant: then log Z = −ζ balances TB exactly and VarGrad is 0.
        let lf2: Vec<f64> = (0..4).map(|i| lf[i] - zeta[i] + 1.5).collect();
        assert!(trajectory_balance(-1.5, &lf2, &lb, &lr).loss.abs() < 1e-24);
        assert!(vargrad(&lf2, &lb, &lr).loss.abs() < 1e-24);
        let shifted: Vec<f64> = lr.iter().map(|v| v + 7.0).collect();
        let a = vargrad(&lf, &lb, &lr);
        let b = vargrad(&lf, &lb, &shifted);
        assert!((a.loss - b.loss).abs() < 1e-12);
        assert!((a.log_z - (b.log_z - 7.0)).abs() < 1e-12);
    }

    #[test]
    fn per_row_tb_equals_tb_at_a_shared_log_z() {
        let (lf, lb, lr) = data();
        let g = trajectory_balance_rows(&[0.3; 4], &lf, &lb, &lr);
        let shared = trajectory_balance(0.3, &lf, &lb, &lr);
        assert!((g.loss - shared.loss).abs() < 1e-15);
        assert!((g.d_log_pf.iter().sum::<f64>() - shared.d_log_z).abs() < 1e-15);
        let mut x = lf.clone();
        x.extend([0.3, -0.1, 0.7, 0.2]);
        let g2 = trajectory_balance_rows(&x[4..], &lf, &lb, &lr);
        // ∂L/∂LF_b then ∂L/∂log Z_b: the same values.
        let analytic: Vec<f64> = g2.d_log_pf.iter().chain(&g2.d_log_pf).copied().collect();
        let mut f = |v: &[f64]| trajectory_balance_rows(&v[4..], &v[..4], &lb, &lr).loss;
        gradcheck(&mut f, &x, &analytic, 1e-6, GRADCHECK_F64).unwrap();
    }

    #[test]
    fn conditional_vargrad_centres_per_condition() {
        // 3 repeats × 2 conditions, repeat-major: rows 0, 2, 4 are condition 0.
        let lf = vec![1.0, -2.0, 0.5, 3.0, 0.25, 1.5];
        let lb = vec![0.2, 0.1, -0.4, 1.0, 0.0, 0.3];
        let lr = vec![-1.0, 0.3, 2.0, 0.7, 1.1, -0.2];
        let g = vargrad_conditional(&lf, &lb, &lr, 2);
        let mut f = |v: &[f64]| vargrad_conditional(v, &lb, &lr, 2).loss;
        gradcheck(&mut f, &lf, &g.d_log_pf, 1e-6, GRADCHECK_F64).unwrap();
        // Each condition alone is plain VarGrad over its rows, with weight R/N each.
        let pick = |v: &[f64], c: usize| vec![v[c], v[c + 2], v[c + 4]];
        let per: Vec<LossGrad> = (0..2)
            .map(|c| vargrad(&pick(&lf, c), &pick(&lb, c), &pick(&lr, c)))
            .collect();
        let want = (per[0].loss + per[1].loss) / 2.0;
        assert!((g.loss - want).abs() < 1e-14, "{} vs {want}", g.loss);
        assert!((g.log_z - (per[0].log_z + per[1].log_z) / 2.0).abs() < 1e-14);
        // One condition is plain VarGrad.
        let one = vargrad_conditional(&lf, &lb, &lr, 1);
        assert_eq!(one, vargrad(&lf, &lb, &lr));
    }
}

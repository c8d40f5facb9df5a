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

/// TB: L = (1/B) Σ_b ½ (log Z + LF_b − LB_b − lr_b)².
pub fn trajectory_balance(log_z: f64, log_pf: &[f64], log_pb: &[f64], log_r: &[f64]) -> LossGrad {
    let b = log_pf.len() as f64;
    let mut loss = 0.0;
    let mut d_log_z = 0.0;
    let mut d_log_pf = Vec::with_capacity(log_pf.len());
    for ((&lf, &lb), &lr) in log_pf.iter().zip(log_pb).zip(log_r) {
        let delta = log_z + lf - lb - lr;
        loss += 0.5 * delta * delta;
        d_log_z += delta;
        d_log_pf.push(delta / b);
    }
    LossGrad {
        loss: loss / b,
        d_log_pf,
        d_log_z: d_log_z / b,
        log_z,
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

#[cfg(test)]
mod tests {
    use super::*;
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
}

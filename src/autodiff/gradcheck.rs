//! Central finite differences in f64: the referee for every VJP.

/// Report of one gradient check: worst coordinate and its values.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    pub worst_index: usize,
    pub analytic: f64,
    pub numeric: f64,
    pub abs_err: f64,
}

/// ∂f/∂xᵢ by central differences, step `h·(1 + |xᵢ|)`, for every i.
pub fn numeric_gradient(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let step = h * (1.0 + x[i].abs());
            xp[i] = x[i] + step;
            let up = f(&xp);
            xp[i] = x[i] - step;
            let down = f(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * step)
        })
        .collect()
}

/// Compare `analytic` with central differences of `f` at `x`; `Err` names the worst coordinate
/// when `|a − n| > abs + rel·|n|` anywhere.
pub fn gradcheck(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    h: f64,
    tol: crate::tolerance::Tolerance,
) -> Result<GradcheckReport, GradcheckReport> {
    assert_eq!(x.len(), analytic.len(), "gradcheck: gradient length");
    let numeric = numeric_gradient(f, x, h);
    let mut worst = GradcheckReport {
        worst_index: 0,
        analytic: 0.0,
        numeric: 0.0,
        abs_err: -1.0,
    };
    let mut ok = true;
    for (i, (&a, &n)) in analytic.iter().zip(&numeric).enumerate() {
        let err = (a - n).abs();
        let excess = err - (tol.abs + tol.rel * n.abs());
        if excess > 0.0 {
            ok = false;
        }
        if err > worst.abs_err {
            worst = GradcheckReport {
                worst_index: i,
                analytic: a,
                numeric: n,
                abs_err: err,
            };
        }
        if !ok && excess > 0.0 {
            return Err(GradcheckReport {
                worst_index: i,
                analytic: a,
                numeric: n,
                abs_err: err,
            });
        }
    }
    Ok(worst)
}

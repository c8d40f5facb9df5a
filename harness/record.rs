//! The bytes of each digested run file: `curve.csv`, `evals.csv`, `metrics.json`.
//!
//! Everything here is a pure function of the training record, so two runs of the same config
//! write identical bytes. Floats use Rust's `{:?}` formatting: the shortest decimal that parses
//! back to the same f64 (`0.1`, `1e-7`, `NaN`, `inf`), never a locale or a fixed precision.

use diffusion_samplers::train::{CurveRow, EvalRow, Metrics};

/// `curve.csv`: one row per training iteration.
pub fn curve_csv(rows: &[CurveRow]) -> String {
    let mut s = String::from("iteration,loss,log_z,explore_std\n");
    for r in rows {
        s.push_str(&format!(
            "{},{:?},{:?},{:?}\n",
            r.iteration, r.loss, r.log_z, r.explore_std
        ));
    }
    s
}

/// `evals.csv`: one row per periodic evaluation.
pub fn evals_csv(rows: &[EvalRow]) -> String {
    let mut s = String::from("iteration,log_z,log_z_rw,elbo,ess\n");
    for r in rows {
        s.push_str(&format!(
            "{},{:?},{:?},{:?},{:?}\n",
            r.iteration, r.log_z, r.log_z_rw, r.elbo, r.ess
        ));
    }
    s
}

/// `metrics.json`: the final metrics, pretty-printed, `None` (and non-finite values) as null.
pub fn metrics_json(m: &Metrics) -> String {
    let mut s = serde_json::to_string_pretty(m).expect("metrics always serialise");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_floats_round_trip() {
        let rows = [
            CurveRow {
                iteration: 0,
                loss: 0.1,
                log_z: -1e-7,
                explore_std: 0.0,
            },
            CurveRow {
                iteration: 1,
                loss: f64::NAN,
                log_z: 12345.678,
                explore_std: 0.2,
            },
        ];
        let text = curve_csv(&rows);
        assert_eq!(
            text,
            "iteration,loss,log_z,explore_std\n0,0.1,-1e-7,0.0\n1,NaN,12345.678,0.2\n"
        );
        let back: f64 = "-1e-7".parse().unwrap();
        assert_eq!(back, -1e-7);
    }

    #[test]
    fn metrics_keys_in_order_and_null() {
        let m = Metrics {
            log_z: -0.5,
            log_z_rw: -0.25,
            true_log_z: Some(0.0),
            delta_log_z: Some(0.5),
            delta_log_z_rw: Some(0.25),
            elbo: -0.5,
            eubo: None,
            w2: Some(f64::NAN),
            ess: 0.75,
            posterior: None,
            modes: None,
            classes: None,
            bandit: None,
            pendulum: None,
        };
        let text = metrics_json(&m);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "log_z",
            "log_z_rw",
            "true_log_z",
            "delta_log_z",
            "delta_log_z_rw",
            "elbo",
            "eubo",
            "w2",
            "ess",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected); // serde_json::Map without preserve_order is sorted
        assert!(v["eubo"].is_null());
        assert!(v["w2"].is_null());
        assert!(text.find("\"log_z\"").unwrap() < text.find("\"ess\"").unwrap());
    }
}

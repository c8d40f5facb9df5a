//! The LGCP target (d = 1600) wired into training: a tiny TB + LP run on the real pines data
//! trains, replays bitwise and reports raw log Ẑ (log Z is unknown, so no Δ, W2 or EUBO).

use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::train::Trainer;

#[test]
fn lgcp_trains_replays_and_reports_raw_log_z() {
    let text = "(seed: 9, target: Lgcp, sampler: (steps: 3, sigma2: 5.0),
        network: (hidden: 8, harmonics: 4, joint_layers: 1, langevin: true),
        train: (method: Tb, iterations: 2, batch: 4, shards: 2,
                exploration: Some((std: 0.1, decay_iters: None))),
        eval: (samples: 4, every: 0, w2: false, eubo: false))";
    let cfg = ExperimentConfig::parse(text, "lgcp-tiny").unwrap();
    assert_eq!(cfg.dim(), 1600);
    let run = || {
        let mut tr = Trainer::new(&cfg).unwrap();
        let losses: Vec<f64> = (0..2).map(|_| tr.step().unwrap().loss).collect();
        (losses, tr.params.clone(), tr.evaluate_final().unwrap())
    };
    let (a, pa, fa) = run();
    let (b, pb, fb) = run();
    assert_eq!(a, b);
    assert_eq!(pa, pb);
    assert!(a.iter().all(|l| l.is_finite()), "losses {a:?}");
    let m = &fa.metrics;
    assert!(m.log_z.is_finite() && m.log_z_rw >= m.log_z);
    assert!(m.true_log_z.is_none() && m.delta_log_z.is_none() && m.w2.is_none());
    assert_eq!(fa.samples, fb.samples);
    assert_eq!(fa.samples.len(), 4 * 1600);
}

//! `train.lr_policy_final`: the policy's learning rate is cosine-annealed, log Z's is not.
//! `train.lr_variance_factor`: the learned log-variance head steps at a fraction of that rate.
//!
//! Adam's update is lr·m̂/(√v̂ + ε), so two runs that share every gradient (same parameters, same
//! noise) differ only by the ratio of their learning rates. That makes the schedule checkable
//! exactly on a real trainer, not just on the formula.

use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::nn::Group;
use diffusion_samplers::train::Trainer;

fn config(final_lr: &str) -> ExperimentConfig {
    config_with(final_lr, false)
}

fn config_with(final_lr: &str, learned_variance: bool) -> ExperimentConfig {
    let text = format!(
        "(seed: 3, target: Gmm25,
          sampler: (steps: 4, sigma2: 5.0, learned_variance: {learned_variance}),
          network: (hidden: 8, harmonics: 4),
          train: (method: Tb, iterations: 3, batch: 6, lr_policy: 1e-3, lr_flow: 0.1{final_lr}),
          eval: (samples: 8))"
    );
    ExperimentConfig::parse(&text, "lr-schedule").unwrap()
}

/// (policy, flow) parameter indices of a trainer's layout.
fn groups(tr: &Trainer) -> (Vec<usize>, Vec<usize>) {
    let (mut policy, mut flow) = (Vec::new(), Vec::new());
    for s in &tr.net.layout.specs {
        match s.group {
            Group::Policy => policy.extend(s.range()),
            Group::Flow => flow.extend(s.range()),
        }
    }
    (policy, flow)
}

/// Over `indices`, how many parameters the `base` trainer's last step moved by more than 1e-5
/// from `before`, and the worst distance of `other`'s step over `base`'s from `ratio` among them.
fn step_ratio(
    before: &[f32],
    base: &Trainer,
    other: &Trainer,
    indices: &[usize],
    ratio: f64,
) -> (usize, f64) {
    let (mut moved, mut worst) = (0, 0f64);
    for &i in indices {
        let d_base = (base.params[i] - before[i]) as f64;
        let d_other = (other.params[i] - before[i]) as f64;
        if d_base.abs() > 1e-5 {
            moved += 1;
            worst = worst.max((d_other / d_base - ratio).abs());
        }
    }
    (moved, worst)
}

#[test]
fn annealed_policy_steps_shrink_by_the_cosine_factor_and_log_z_is_untouched() {
    let mut constant = Trainer::new(&config("")).unwrap();
    let mut annealed = Trainer::new(&config(", lr_policy_final: Some(0.0)")).unwrap();
    assert_eq!(constant.params, annealed.params);

    // Iteration 0: cos(0) = 1, the full rate: bitwise the constant run.
    constant.step().unwrap();
    annealed.step().unwrap();
    assert_eq!(constant.params, annealed.params);

    // Iteration 1 of 3: lr·½(1 + cos(π/3)) = ¾·lr, from identical parameters and noise.
    let before = constant.params.clone();
    constant.step().unwrap();
    annealed.step().unwrap();
    let (policy, flow) = groups(&constant);
    assert!(!policy.is_empty() && !flow.is_empty());
    for &i in &flow {
        assert_eq!(
            constant.params[i], annealed.params[i],
            "log Z moved differently"
        );
    }
    let (moved, worst) = step_ratio(&before, &constant, &annealed, &policy, 0.75);
    assert!(moved > policy.len() / 2, "only {moved} parameters moved");
    // f32 parameters of size ~0.1–1 hold a 1e-3 step to about 1e-4 relative.
    assert!(worst < 2e-3, "step ratio off ¾ by {worst}");
}

#[test]
fn a_floor_equal_to_the_rate_is_the_constant_schedule_and_bad_floors_are_refused() {
    let mut constant = Trainer::new(&config("")).unwrap();
    let mut flat = Trainer::new(&config(", lr_policy_final: Some(1e-3)")).unwrap();
    for _ in 0..3 {
        constant.step().unwrap();
        flat.step().unwrap();
    }
    assert_eq!(constant.params, flat.params);

    // Unset, the field stays out of the resolved config, so existing digests hold.
    let resolved = config("").to_ron();
    assert!(!resolved.contains("lr_policy_final"), "{resolved}");

    for bad in ["-1e-4", "inf"] {
        let text = format!(
            "(target: Gmm25, train: (method: Tb, iterations: 3, lr_policy_final: Some({bad})))"
        );
        let err = ExperimentConfig::parse(&text, "bad")
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.lr_policy_final"), "{bad}: {err}");
    }
}

/// The variance head's factor on an annealed schedule: 1 is the plain run bit for bit; 0.25
/// moves only the head, by exactly a quarter of the plain run's first step.
#[test]
fn the_variance_head_steps_at_its_factor_of_the_policy_rate() {
    let anneal = ", lr_policy_final: Some(0.0)";
    let mut plain = Trainer::new(&config_with(anneal, true)).unwrap();
    let mut unit = Trainer::new(&config_with(
        &format!("{anneal}, lr_variance_factor: Some(1.0)"),
        true,
    ))
    .unwrap();
    for _ in 0..3 {
        plain.step().unwrap();
        unit.step().unwrap();
    }
    assert_eq!(plain.params, unit.params);

    let mut plain = Trainer::new(&config_with(anneal, true)).unwrap();
    let mut slow = Trainer::new(&config_with(
        &format!("{anneal}, lr_variance_factor: Some(0.25)"),
        true,
    ))
    .unwrap();
    let before = plain.params.clone();
    plain.step().unwrap();
    slow.step().unwrap();
    let head: Vec<usize> = plain
        .net
        .log_var_head_ranges()
        .into_iter()
        .flatten()
        .collect();
    assert!(!head.is_empty());
    for i in (0..before.len()).filter(|i| !head.contains(i)) {
        assert_eq!(
            plain.params[i], slow.params[i],
            "parameter {i} is not in the head"
        );
    }
    let (moved, worst) = step_ratio(&before, &plain, &slow, &head, 0.25);
    assert!(
        moved > head.len() / 2,
        "only {moved} of {} moved",
        head.len()
    );
    assert!(worst < 2e-3, "step ratio off ¼ by {worst}");
}

#[test]
fn a_variance_factor_needs_learned_variances_and_a_positive_value() {
    let resolved = config_with("", true).to_ron();
    assert!(!resolved.contains("lr_variance_factor"), "{resolved}");
    let refused = |sampler: &str, factor: &str| {
        let text = format!(
            "(target: Gmm25, sampler: ({sampler}),
              train: (method: Tb, iterations: 3, lr_variance_factor: Some({factor})))"
        );
        ExperimentConfig::parse(&text, "bad")
            .unwrap_err()
            .to_string()
    };
    for bad in ["0.0", "-0.5", "inf"] {
        let err = refused("learned_variance: true", bad);
        assert!(err.contains("train.lr_variance_factor"), "{bad}: {err}");
    }
    let err = refused("steps: 4", "0.1");
    assert!(
        err.contains("train.lr_variance_factor") && err.contains("sampler.learned_variance"),
        "{err}"
    );
}

//! LoRA adapters for a fine-tuned posterior (`posterior.lora`, spec rtb2024 §3.3 (ii)): the
//! posterior starts at its prior bit for bit, every weight matrix moves only by a rank-R
//! update, biases and phases stay frozen, a resumed run is the uninterrupted one, and a short
//! adapter-only RTB run still lands on a posterior known in closed form.

mod common;

use common::{assert_rtb_fits_the_closed_form_gaussian_posterior, init_params, jittered};
use diffusion_samplers::checkpoint;
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::nn::Group;
use diffusion_samplers::train::Trainer;

/// An RTB config on the 2-D toy's constraint, with `extra` appended to `posterior`.
fn toy(extra: &str) -> ExperimentConfig {
    let text = format!(
        "(seed: 4, target: Gmm25To9,
          sampler: (steps: 6, sigma2: 5.0),
          network: (hidden: 8, harmonics: 4, joint_layers: 2),
          train: (method: Rtb, iterations: 4, batch: 7, shards: 2, lr_policy: 1e-2, lr_flow: 0.1),
          eval: (samples: 8, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"){extra})))"
    );
    ExperimentConfig::parse(&text, "lora toy").unwrap()
}

/// The network's own initialisation for `cfg`'s layout, every value moved by N(0, 0.3²), so
/// that no block of the prior is zero.
fn random_prior(cfg: &ExperimentConfig) -> Vec<f32> {
    jittered(&init_params(cfg), "lora-prior", 0, 0.3)
}

/// The rank of a `rows × cols` matrix: Gaussian elimination with full pivoting in f64, counting
/// pivots above `rel` times the largest entry.
fn numerical_rank(m: &[f64], rows: usize, cols: usize, rel: f64) -> usize {
    let mut a = m.to_vec();
    let cut = rel * a.iter().fold(0f64, |acc, v| acc.max(v.abs()));
    let mut rank = 0;
    let mut live_rows: Vec<usize> = (0..rows).collect();
    let mut live_cols: Vec<usize> = (0..cols).collect();
    loop {
        let mut best = (0f64, 0, 0);
        for &r in &live_rows {
            for &c in &live_cols {
                if a[r * cols + c].abs() > best.0 {
                    best = (a[r * cols + c].abs(), r, c);
                }
            }
        }
        if best.0 <= cut {
            return rank;
        }
        let (_, pr, pc) = best;
        rank += 1;
        live_rows.retain(|&r| r != pr);
        live_cols.retain(|&c| c != pc);
        for &r in &live_rows {
            let f = a[r * cols + pc] / a[pr * cols + pc];
            for c in 0..cols {
                a[r * cols + c] -= f * a[pr * cols + c];
            }
        }
    }
}

#[test]
fn adapters_start_at_the_prior_and_move_each_weight_by_a_low_rank_update() {
    let plain_cfg = toy("");
    let cfg = toy(", lora: Some((rank: 2))");
    let prior = random_prior(&cfg);
    let plain = Trainer::with_prior(&plain_cfg, Some(prior.clone())).unwrap();
    let mut tr = Trainer::with_prior(&cfg, Some(prior)).unwrap();
    assert_eq!(tr.params, plain.params, "B = 0: the posterior is its prior");
    let start = tr.params.clone();
    for _ in 0..3 {
        tr.step().unwrap();
    }
    let h = tr.net.hidden;
    let mut adapted = 0;
    for s in &tr.net.layout.specs {
        let moved = s.range().filter(|&i| tr.params[i] != start[i]).count();
        match (s.group, s.name.ends_with(".w")) {
            (Group::Flow, _) => assert!(moved > 0, "{} (log Z) did not train", s.name),
            (Group::Policy, false) => assert_eq!(moved, 0, "{} is frozen but moved", s.name),
            (Group::Policy, true) => {
                // At least half: the joint output's log-variance rows (half of it) get no
                // gradient when the variances are fixed.
                assert!(
                    moved >= s.len() / 2,
                    "{}: only {moved} entries moved",
                    s.name
                );
                let delta: Vec<f64> = s
                    .range()
                    .map(|i| tr.params[i] as f64 - start[i] as f64)
                    .collect();
                let rank = numerical_rank(&delta, s.rows, s.cols, 1e-2);
                assert!(
                    (1..=2).contains(&rank),
                    "{} [{}×{}]: update of rank {rank}",
                    s.name,
                    s.rows,
                    s.cols
                );
                if s.rows >= h && s.cols >= h {
                    adapted += 1;
                }
            }
        }
    }
    assert!(adapted >= 2, "no square hidden layer was checked");
}

#[test]
fn a_resumed_lora_run_is_the_uninterrupted_run_bit_for_bit() {
    let cfg = toy(", lora: Some((rank: 3, alpha: Some(6.0)))");
    let prior = random_prior(&cfg);
    let mut whole = Trainer::with_prior(&cfg, Some(prior.clone())).unwrap();
    for _ in 0..4 {
        whole.step().unwrap();
    }
    let mut first = Trainer::with_prior(&cfg, Some(prior.clone())).unwrap();
    let mut curve = Vec::new();
    for _ in 0..2 {
        curve.push(first.step().unwrap());
    }
    let bytes = first.checkpoint(&curve, &[]).encode();
    let ck = checkpoint::decode(&bytes).unwrap();
    assert!(ck.lora.is_some(), "the adapters are in the checkpoint");
    let mut second = Trainer::restore_with_prior(&cfg, &ck, Some(prior.clone())).unwrap();
    for _ in 0..2 {
        second.step().unwrap();
    }
    assert_eq!(second.params, whole.params);
    assert_eq!(second.adam.m, whole.adam.m);

    // Parameters that are not the prior plus the saved adapters are refused.
    let mut edited = ck.clone();
    let w = cfg_weight_index(&first);
    edited.params[w] += 1.0;
    let err = Trainer::restore_with_prior(&cfg, &edited, Some(prior.clone()))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("LoRA"), "{err}");
    // A checkpoint without adapters does not resume a LoRA run.
    let plain_cfg = toy("");
    let mut plain = Trainer::with_prior(&plain_cfg, Some(prior.clone())).unwrap();
    let plain_curve = vec![plain.step().unwrap()];
    let mut foreign = plain.checkpoint(&plain_curve, &[]);
    foreign.config_digest = cfg.digest();
    assert!(Trainer::restore_with_prior(&cfg, &foreign, Some(prior)).is_err());
}

/// The first adapted weight's first entry in `tr`'s flat vector.
fn cfg_weight_index(tr: &Trainer) -> usize {
    tr.net
        .layout
        .specs
        .iter()
        .find(|s| s.group == Group::Policy && s.name.ends_with(".w"))
        .expect("a weight matrix")
        .offset
}

#[test]
fn lora_settings_are_checked_and_unset_lora_stays_out_of_the_digest() {
    let resolved = toy("").to_ron();
    assert!(!resolved.contains("lora:"), "{resolved}");
    for (extra, field) in [
        (", lora: Some((rank: 0))", "posterior.lora.rank"),
        (
            ", lora: Some((rank: 4, alpha: Some(-1.0)))",
            "posterior.lora.alpha",
        ),
        (", lora: Some((rank: 4, depth: 2))", "depth"),
    ] {
        let text = format!(
            "(target: Gmm25To9, train: (method: Rtb, iterations: 2),
              posterior: Some((prior: (config: \"p.ron\", digest: \"0\"){extra})))"
        );
        let err = ExperimentConfig::parse(&text, "bad lora")
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{extra}: {err}");
    }
    // A method that trains nothing has nothing to adapt.
    let text = "(target: Gmm25To9, train: (method: Resample, iterations: 0),
          posterior: Some((prior: (config: \"p.ron\", digest: \"0\"), lora: Some((rank: 4)))))";
    let err = ExperimentConfig::parse(text, "resample lora")
        .unwrap_err()
        .to_string();
    assert!(err.contains("posterior.lora"), "{err}");
    // The variance head has no block of its own under adapters.
    let text = "(target: Gmm25To9, sampler: (learned_variance: true),
          train: (method: Rtb, iterations: 2, lr_variance_factor: Some(0.1)),
          posterior: Some((prior: (config: \"p.ron\", digest: \"0\"), lora: Some((rank: 4)))))";
    let err = ExperimentConfig::parse(text, "lv lora")
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.lr_variance_factor"), "{err}");
}

/// The closed-form case of `tests/rtb.rs`, with the full-weight test's bounds
/// (`common::assert_rtb_fits_the_closed_form_gaussian_posterior`), trained through rank-4
/// adapters only, with every bias frozen at its prior value. Adapters move W through B·A, about
/// the rate times |A| ≈ 0.1 per step, so they take 10× the full-weight run's rate (3e-3),
/// annealed to 0: at a constant 1e-2 the last iterations' noise left coordinate 0's variance
/// 8–12 % high.
#[test]
fn an_adapter_only_run_matches_the_closed_form_gaussian_posterior() {
    assert_rtb_fits_the_closed_form_gaussian_posterior(
        "lr_policy: 3e-2, lr_policy_final: Some(0.0)",
        "lora: Some((rank: 4))",
        "lora-eval",
    );
}

//! The contextual bandit as a conditional posterior problem (spec rtb2024 §4.5 A): a
//! state-conditioned DDPM prior, RTB in its VarGrad form over each state's repeats, and the
//! grid-exact evaluation.

use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::energies::bandit::stats;
use diffusion_samplers::rng;
use diffusion_samplers::train::Trainer;

/// A small bandit run: `method` with `extra` train fields and an optional posterior.
fn bandit(method: &str, repeats: usize, train_extra: &str, posterior: &str) -> ExperimentConfig {
    let batch = if train_extra.contains("batch") {
        ""
    } else {
        ", batch: 6"
    };
    let text = format!(
        "(seed: 8, target: Bandit(repeats: {repeats}, data: 4000, test_states: 4),
          sampler: (steps: 10, noising: Ddpm(train_steps: 40, clip: false)),
          network: (hidden: 32, harmonics: 8, joint_layers: 2),
          train: (method: {method}, shards: 2{batch}{train_extra}),
          eval: (samples: 400, w2: false, eubo: false){posterior})"
    );
    ExperimentConfig::parse(&text, "bandit test").unwrap()
}

const POSTERIOR: &str =
    ", posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), beta: BETA))";

/// Parameters moved off the initialisation (whose ε-head is zero).
fn random_params(tr: &Trainer, tag: u64, by: f64) -> Vec<f32> {
    let mut r = rng::stream(8, "bandit-params", tag);
    tr.params
        .iter()
        .map(|&p| p + (by * rng::normal_f64(&mut r)) as f32)
        .collect()
}

/// The config field `cfg`'s validation names when it refuses `cfg`.
fn refused_field(cfg: &ExperimentConfig) -> String {
    cfg.validate().unwrap_err().0
}

/// Only the methods built for the bandit are accepted, and the evaluation must split evenly
/// over the test states.
#[test]
fn bandit_configs_are_validated() {
    let post = POSTERIOR.replace("BETA", "10.0");
    let refused = |text: &str| ExperimentConfig::parse(text, "t").unwrap_err().to_string();
    let base = bandit("Rtb", 4, ", iterations: 2", &post);
    let mut text = ron::ser::to_string(&base).unwrap();
    assert!(ExperimentConfig::parse(&text, "t").is_ok());
    text = text.replace("method:Rtb", "method:Ddpo");
    assert!(refused(&text).contains("the bandit is built for"));
    let e = refused(
        &ron::ser::to_string(&base)
            .unwrap()
            .replace("samples:400", "samples:401"),
    );
    assert!(e.contains("eval.samples"), "{e}");
    let e = refused(
        &ron::ser::to_string(&base)
            .unwrap()
            .replace("repeats:4", "repeats:1"),
    );
    assert!(e.contains("target.repeats"), "{e}");
}

/// With the posterior equal to the prior and β = 0 every residual of a state's group is the
/// same (0), so the VarGrad RTB loss and its gradient vanish; with β = 10 they do not. The
/// two-pass gradient equals the whole-trajectory tape's through the state conditioning.
#[test]
fn rtb_vargrad_vanishes_at_the_prior_and_two_pass_matches_the_tape() {
    let cfg0 = bandit(
        "Rtb",
        3,
        ", iterations: 2",
        &POSTERIOR.replace("BETA", "0.0"),
    );
    let seed_tr = Trainer::new(&bandit("EpsMse", 1, ", iterations: 1", "")).unwrap();
    let prior = random_params(&seed_tr, 1, 0.3);
    let tr0 = Trainer::with_prior(&cfg0, Some(prior.clone())).unwrap();
    let (lg, grad) = tr0.loss_and_grad(0).unwrap();
    assert!(lg.loss.abs() < 1e-12, "loss {}", lg.loss);
    assert!(grad.iter().all(|&g| g.abs() < 1e-6));

    let cfg = bandit(
        "Rtb",
        3,
        ", iterations: 2",
        &POSTERIOR.replace("BETA", "10.0"),
    );
    let loss = assert_two_pass_matches_tape(&cfg, &prior, 2);
    assert!(loss > 1e-3, "loss {loss}");
}

/// At parameters moved off the prior (stream tag `tag`), iteration 1's RTB loss is the same
/// number by the whole-trajectory tape and by the two-pass scheme, and the gradients agree
/// within 1e-4 of the largest; returns that loss.
fn assert_two_pass_matches_tape(cfg: &ExperimentConfig, prior: &[f32], tag: u64) -> f64 {
    let mut tr = Trainer::with_prior(cfg, Some(prior.to_vec())).unwrap();
    tr.set_params(random_params(&tr, tag, 0.05));
    let (lg, g_tape) = tr.loss_and_grad(1).unwrap();
    let mut two = cfg.clone();
    two.train.two_pass = true;
    let mut tr2 = Trainer::with_prior(&two, Some(prior.to_vec())).unwrap();
    tr2.set_params(tr.params.clone());
    let (lg2, g_two) = tr2.loss_and_grad(1).unwrap();
    assert_eq!(lg.loss, lg2.loss);
    let scale = g_tape.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0);
    for (k, (a, b)) in g_tape.iter().zip(&g_two).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "parameter {k}: tape {a} vs two-pass {b}"
        );
    }
    lg.loss
}

/// The state-conditioned DDPM prior learns the state-dependent behaviour policy: after a short
/// ε-MSE run the mean action at each test state follows the behaviour circle's centre
/// c(s) = (0.5·s, 0) (a state-blind sampler would put every state's mean at the average
/// centre, 0), its TV to μ(·|s) is far below the untrained network's and below a state-blind
/// sampler's, and the run is bitwise reproducible.
#[test]
fn conditional_prior_learns_the_behaviour_policy() {
    let cfg = ExperimentConfig::parse(
        "(seed: 8, target: Bandit(repeats: 1, data: 4000, test_states: 4),
          sampler: (steps: 20, noising: Ddpm(train_steps: 40, clip: false)),
          network: (hidden: 64, harmonics: 8, joint_layers: 2),
          train: (method: EpsMse, iterations: 2000, batch: 256, lr_policy: 3e-3, shards: 2),
          eval: (samples: 4000, w2: false, eubo: false))",
        "bandit prior",
    )
    .unwrap();
    let tr = Trainer::new(&cfg).unwrap();
    let untrained = tr.evaluate_final().unwrap().metrics.bandit.unwrap();
    let rec = diffusion_samplers::train::run(&cfg, &mut |_| {});
    let fin = rec.final_eval.unwrap();
    let trained = fin.metrics.bandit.unwrap();
    let task = tr.bandit().unwrap();
    let m = task.test_states.len();
    for (j, &s) in task.test_states.iter().enumerate() {
        let a0: Vec<f64> = fin
            .samples
            .chunks_exact(2)
            .skip(j)
            .step_by(m)
            .map(|a| a[0] as f64)
            .collect();
        let mean = a0.iter().sum::<f64>() / a0.len() as f64;
        let centre = task.bandit.centre(s)[0];
        assert!(
            (mean - centre).abs() < 0.06,
            "state {s}: mean action {mean} vs the behaviour centre {centre}"
        );
    }
    // A state-blind sampler: at each test state, actions of μ(·|s') with s' ~ U[−1, 1].
    let mut r = rng::stream(8, "blind", 0);
    let blind: Vec<f32> = (0..cfg.eval.samples)
        .flat_map(|_| {
            let s = 2.0 * rng::uniform_f64(&mut r) - 1.0;
            let a = task.bandit.sample_behaviour(s, &mut r);
            [a[0] as f32, a[1] as f32]
        })
        .collect();
    let blind = stats(&task.bandit, &task.test_states, &blind).tv;
    assert!(
        trained.tv < blind && trained.tv < 0.6 * untrained.tv,
        "TV to μ: trained {} vs untrained {} and state-blind {blind}",
        trained.tv,
        untrained.tv
    );
    // The prior is scored against μ itself.
    assert_eq!(trained.target_reward, trained.behaviour_reward);
    let again = diffusion_samplers::train::run(&cfg, &mut |_| {});
    assert_eq!(
        again.final_eval.unwrap().metrics.bandit.unwrap().tv,
        trained.tv
    );
}

/// RTB with the ε-space Langevin correction (spec rtb2024 §4.2, §4.5 A): the posterior adds
/// s(t)·clip(∇_a log r) to a copy of the prior's ε. Lifted from the prior it starts exactly at
/// the prior (the correction's output layer is zero): the same loss and, on the shared blocks,
/// the same gradient as the plain posterior, and a non-zero gradient on the correction's output
/// layer. Once the correction is active, the two-pass gradient equals the tape's.
#[test]
fn langevin_posterior_starts_at_the_prior_and_two_pass_matches_the_tape() {
    let post = POSTERIOR.replace("BETA", "10.0");
    let plain = bandit("Rtb", 3, ", iterations: 2", &post);
    let mut lp = plain.clone();
    lp.network.langevin = true;
    lp.network.langevin_per_dim = true;
    lp.network.langevin_layers = 2;
    lp.validate().unwrap();
    let seed_tr = Trainer::new(&bandit("EpsMse", 1, ", iterations: 1", "")).unwrap();
    let prior = random_params(&seed_tr, 1, 0.3);

    let tr_plain = Trainer::with_prior(&plain, Some(prior.clone())).unwrap();
    let tr_lp = Trainer::with_prior(&lp, Some(prior.clone())).unwrap();
    assert!(tr_lp.params.len() > tr_plain.params.len());
    let (lg_plain, g_plain) = tr_plain.loss_and_grad(1).unwrap();
    let (lg_lp, g_lp) = tr_lp.loss_and_grad(1).unwrap();
    assert!(lg_plain.loss > 1e-3);
    assert_eq!(lg_plain.loss, lg_lp.loss, "the correction must start at 0");
    // Shared blocks by name: the plain layout is the LP layout without `lp.*`.
    let mut shared = 0;
    for s in &tr_lp.net.layout.specs {
        if s.name.starts_with("lp.") {
            continue;
        }
        let t = tr_plain
            .net
            .layout
            .specs
            .iter()
            .find(|t| t.name == s.name)
            .unwrap();
        if s.name != "log_z" {
            // (log Z restarts at 0, spec rtb2024 §1.2.)
            assert_eq!(tr_lp.params[s.range()], prior[t.range()][..], "{}", s.name);
        }
        assert_eq!(g_lp[s.range()], g_plain[t.range()], "{}", s.name);
        shared += 1;
    }
    assert_eq!(shared, tr_plain.net.layout.specs.len());
    let out = tr_lp
        .net
        .layout
        .specs
        .iter()
        .find(|s| s.name == "lp.out.w")
        .unwrap();
    assert!(
        g_lp[out.range()].iter().any(|g| g.abs() > 1e-6),
        "the correction's output layer must get a gradient"
    );

    // An active correction: the tape and the two-pass scheme agree through it.
    let loss = assert_two_pass_matches_tape(&lp, &prior, 3);
    assert_ne!(loss, lg_lp.loss);

    // A DDPM prior itself takes no Langevin term.
    let mut bad = bandit("EpsMse", 1, ", iterations: 1", "");
    bad.network.langevin = true;
    assert_eq!(refused_field(&bad), "network.langevin");
}

/// RTB with a learned step variance on a DDPM posterior (Sendera et al.'s learned variance,
/// spec §2.2 step 5, on the fixed_small DDPM of the bandit): the posterior's log-variance head
/// starts at 0, so it starts at the prior's fixed variances. Its first loss is the fixed-variance
/// posterior's (to rounding: e^{log rate} for rate), every block but the output layer gets the
/// same gradient, and the log-variance rows of the output layer get a non-zero one. Once the
/// variances move, the two-pass gradient equals the tape's. A prior, and DPOK, learn none.
#[test]
fn learned_variance_posterior_starts_at_the_prior_and_two_pass_matches_the_tape() {
    let post = POSTERIOR.replace("BETA", "10.0");
    let mut plain = bandit("Rtb", 3, ", iterations: 2", &post);
    plain.sampler.noising = diffusion_samplers::config::Noising::Ddpm {
        train_steps: 40,
        clip: false,
        schedule: Default::default(),
        small_variance: true,
    };
    let mut lv = plain.clone();
    lv.sampler.learned_variance = true;
    lv.validate().unwrap();
    let seed_tr = Trainer::new(&bandit("EpsMse", 1, ", iterations: 1", "")).unwrap();
    // Every prior block moved off its initialisation, the unused log-variance rows included.
    let prior = random_params(&seed_tr, 1, 0.3);

    let tr_plain = Trainer::with_prior(&plain, Some(prior.clone())).unwrap();
    let tr_lv = Trainer::with_prior(&lv, Some(prior.clone())).unwrap();
    let (lg_plain, g_plain) = tr_plain.loss_and_grad(1).unwrap();
    let (lg_lv, g_lv) = tr_lv.loss_and_grad(1).unwrap();
    assert!(lg_plain.loss > 1e-3);
    assert!(
        (lg_plain.loss - lg_lv.loss).abs() <= 1e-5 * lg_plain.loss,
        "fixed {} vs learned {}",
        lg_plain.loss,
        lg_lv.loss
    );
    let d = tr_lv.net.dim;
    let scale = g_plain.iter().fold(0f32, |m, g| m.max(g.abs()));
    for s in &tr_lv.net.layout.specs {
        let (a, b) = (&g_plain[s.range()], &g_lv[s.range()]);
        let (shared, head) = match s.name.as_str() {
            "joint.out.w" => (&a[..d * s.cols], Some(&b[d * s.cols..])),
            "joint.out.b" => (&a[..d], Some(&b[d..])),
            _ => (a, None),
        };
        for (k, (x, y)) in shared.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-3 * scale,
                "{} [{k}]: fixed {x} vs learned {y}",
                s.name
            );
        }
        if let Some(head) = head {
            assert!(
                head.iter().any(|g| g.abs() > 1e-4 * scale),
                "{}: the log-variance rows must get a gradient",
                s.name
            );
            assert!(tr_lv.params[s.range()][shared.len()..]
                .iter()
                .all(|&p| p == 0.0));
        }
    }

    // Learned variances away from the prior's: the tape and the two-pass scheme agree.
    let loss = assert_two_pass_matches_tape(&lv, &prior, 4);
    assert_ne!(loss, lg_lv.loss);

    let mut bad = bandit("EpsMse", 1, ", iterations: 1", "");
    bad.sampler.learned_variance = true;
    assert_eq!(refused_field(&bad), "sampler.learned_variance");
    let mut bad = bandit("Dpok", 3, ", iterations: 1", &post);
    bad.sampler.learned_variance = true;
    assert_eq!(refused_field(&bad), "sampler.learned_variance");
}

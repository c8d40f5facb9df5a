//! Relative trajectory balance (spec rtb2024 §1): the loss's fixed points and gradient, and a
//! short run against a posterior known in closed form.

mod common;

use diffusion_samplers::autodiff::gradcheck::gradcheck;
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::losses::{
    behaviour_log_prob, rl_kl, rl_kl_paper, trajectory_balance, LossGrad,
};
use diffusion_samplers::rng;
use diffusion_samplers::samplers::{explore_std, rollout, Path};
use diffusion_samplers::tensor::Tensor;
use diffusion_samplers::tolerance::GRADCHECK_F64;
use diffusion_samplers::train::Trainer;

/// A small RTB config on the 2-D toy's constraint with reward exponent `beta`.
fn toy(beta: f64, exploration: &str) -> ExperimentConfig {
    let text = format!(
        "(seed: 4, target: Gmm25To9,
          sampler: (steps: 6, sigma2: 5.0),
          network: (hidden: 8, harmonics: 4, joint_layers: 2),
          train: (method: Rtb, iterations: 2, batch: 7, shards: 2, lr_flow: 0.1,
                  exploration: {exploration}),
          eval: (samples: 8, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), beta: {beta})))"
    );
    ExperimentConfig::parse(&text, "rtb toy").unwrap()
}

/// The network's own initialisation (zero output layer: the zero-drift policy) for `cfg`.
fn init_params(cfg: &ExperimentConfig) -> Vec<f32> {
    let mut plain = cfg.clone();
    plain.train.method = diffusion_samplers::config::Method::Tb;
    plain.train.iterations = 1;
    plain.posterior = None;
    Trainer::new(&plain).unwrap().params
}

/// A prior with every parameter moved off its initialisation.
fn random_prior(cfg: &ExperimentConfig, tag: u64) -> Vec<f32> {
    let mut r = rng::stream(9, "prior", tag);
    init_params(cfg)
        .iter()
        .map(|&p| p + 0.3 * rng::normal_f64(&mut r) as f32)
        .collect()
}

/// With the posterior equal to the prior, log Z = 0 and r^β ≡ 1 (β = 0) every residual is 0,
/// so the loss and its whole gradient vanish, also on exploratory trajectories: both
/// log-likelihoods are taken under the un-inflated policy. With β = 1 the residual is −log r.
#[test]
fn loss_vanishes_when_the_posterior_is_the_prior_and_r_is_one() {
    for exploration in ["None", "Some((std: 0.5, decay_iters: None))"] {
        let cfg = toy(0.0, exploration);
        let prior = random_prior(&cfg, 1);
        let tr = Trainer::with_prior(&cfg, Some(prior.clone())).unwrap();
        assert_eq!(tr.learned_log_z(), 0.0, "log Z starts at 0");
        let (lg, grad) = tr.loss_and_grad(0).unwrap();
        assert_eq!(lg.loss, 0.0, "{exploration}");
        assert!(grad.iter().all(|&g| g == 0.0), "{exploration}: {grad:?}");

        let cfg1 = toy(1.0, exploration);
        let tr1 = Trainer::with_prior(&cfg1, Some(prior)).unwrap();
        let (lg1, _) = tr1.loss_and_grad(0).unwrap();
        // The same trajectories: log r of their ends from a one-shard replay of iteration 0.
        let b = cfg1.train.batch;
        let path = Path::Forward {
            noise_key: rng::stream_key(cfg1.seed, "train-noise", 0),
            row0: 0,
            total_rows: b,
            explore_std: explore_std(cfg1.train.exploration.as_ref(), 0),
        };
        let roll = rollout::<f32>(
            &tr1.net,
            &tr1.params,
            &tr1.sampler,
            &*tr1.energy,
            b,
            path,
            false,
        );
        let mut lr = vec![0f64; b];
        tr1.energy.log_reward(&roll.x_final, &mut lr);
        let want = lr.iter().map(|v| 0.5 * v * v).sum::<f64>() / b as f64;
        assert!(
            (lg1.loss - want).abs() <= 1e-12 * want,
            "{exploration}: {} vs {want}",
            lg1.loss
        );
    }
}

/// A loss on per-trajectory sums (LF, LP, β·log r) and, off-policy, the exploratory sampler's
/// per-step variance.
type SumsLoss<'a> = &'a dyn Fn(&[f64], &[f64], &[f64], &[f64]) -> LossGrad;

/// A prior-relative loss along fixed states as a function of the f64 posterior parameters
/// (the prior frozen), with its tape gradient; `loss` gets LF, LP, β·log r and the per-step
/// log p_F `[B, T]`.
fn prior_loss_f64(tr: &Trainer, theta: &[f64], states: &[f32], loss: SumsLoss) -> (f64, Vec<f64>) {
    let b = tr.cfg.train.batch;
    let beta = tr.cfg.posterior.as_ref().unwrap().beta;
    let post = rollout::<f64>(
        &tr.net,
        theta,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(states),
        true,
    );
    let prior64: Vec<f64> = tr
        .prior
        .as_ref()
        .unwrap()
        .iter()
        .map(|&p| p as f64)
        .collect();
    let prior = rollout::<f64>(
        &tr.net,
        &prior64,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(states),
        false,
    );
    let mut lr = vec![0f64; b];
    tr.energy.log_reward(&post.x_final, &mut lr);
    let lr: Vec<f64> = lr.iter().map(|v| beta * v).collect();
    let lg = loss(&post.log_pf, &prior.log_pf, &lr, &post.step_log_pf);
    let seed = Tensor::from_vec(b, 1, lg.d_log_pf.clone());
    let seeds = post
        .logpf_nodes
        .iter()
        .map(|&n| (n, seed.clone()))
        .collect();
    let grads = post.tape.unwrap().backward(seeds);
    let mut g = tr.net.flat_grads(&post.vars.unwrap(), &grads);
    g[tr.net.log_z_index()] = lg.d_log_z;
    (lg.loss, g)
}

/// The posterior moved off a random prior (and log Z off 0), and iteration `it`'s states.
fn moved_posterior(cfg: &ExperimentConfig, it: usize) -> (Trainer, Vec<f32>) {
    let prior = random_prior(cfg, 2);
    let mut tr = Trainer::with_prior(cfg, Some(prior)).unwrap();
    let mut r = rng::stream(9, "posterior", 0);
    let p: Vec<f32> = tr
        .params
        .iter()
        .map(|&v| v + 0.2 * rng::normal_f64(&mut r) as f32)
        .collect();
    tr.set_params(p);
    let b = cfg.train.batch;
    let path = Path::Forward {
        noise_key: rng::stream_key(cfg.seed, "train-noise", it as u64),
        row0: 0,
        total_rows: b,
        explore_std: explore_std(cfg.train.exploration.as_ref(), it),
    };
    let states =
        rollout::<f32>(&tr.net, &tr.params, &tr.sampler, &*tr.energy, b, path, true).states;
    (tr, states)
}

/// RTB's gradient δ·∇Σlog p_φ (+ δ for log Z) against finite differences of the f64 loss, and
/// the trainer's sharded f32 gradient (exploratory iteration 1) against that f64 tape.
#[test]
fn gradient_matches_finite_differences_and_the_trainer() {
    let cfg = toy(1.5, "Some((std: 0.3, decay_iters: None))");
    let it = 1;
    let (tr, states) = moved_posterior(&cfg, it);
    let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
    let z = tr.net.log_z_index();
    let loss = |v: &[f64]| -> (f64, Vec<f64>) {
        let tb =
            |lf: &[f64], lp: &[f64], lr: &[f64], _: &[f64]| trajectory_balance(v[z], lf, lp, lr);
        prior_loss_f64(&tr, v, &states, &tb)
    };
    let (loss64, analytic) = loss(&theta);
    let live = analytic.iter().filter(|g| g.abs() > 1e-9).count();
    assert!(
        live > analytic.len() / 2,
        "only {live} live gradient entries"
    );
    let mut f = |v: &[f64]| loss(v).0;
    if let Err(e) = gradcheck(&mut f, &theta, &analytic, 1e-6, GRADCHECK_F64) {
        panic!(
            "index {}: analytic {} numeric {}",
            e.worst_index, e.analytic, e.numeric
        );
    }
    common::assert_trainer_matches(&tr, it, loss64, &analytic, "RTB");
}

/// The RL baselines' trainer gradients (REINFORCE weights on ∇Σlog q, sharded, f32) against
/// the f64 tape with the same weights: corrected on- and off-policy, and the paper's.
#[test]
fn rl_baselines_match_the_f64_tape() {
    let cases: [(&str, &str, &str); 3] = [
        ("RlKl", "None", ""),
        ("RlKl", "Some((std: 0.4, decay_iters: None))", ""),
        ("RlKlPaper", "None", ", kl_weight: Some(0.5)"),
    ];
    for (method, exploration, extra) in cases {
        let text = format!(
            "(seed: 4, target: Gmm25To9,
              sampler: (steps: 6, sigma2: 5.0),
              network: (hidden: 8, harmonics: 4, joint_layers: 2),
              train: (method: {method}, iterations: 2, batch: 7, shards: 2,
                      exploration: {exploration}),
              eval: (samples: 8, w2: false, eubo: false),
              posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), beta: 0.7{extra})))"
        );
        let cfg = ExperimentConfig::parse(&text, method).unwrap();
        let it = 1;
        let (tr, states) = moved_posterior(&cfg, it);
        let (t, d) = (tr.sampler.steps, tr.sampler.dim);
        let eps = explore_std(cfg.train.exploration.as_ref(), it);
        let v = tr.sampler.dt() * tr.sampler.sigma2;
        let loss = |lf: &[f64], lp: &[f64], lr: &[f64], step: &[f64]| match method {
            "RlKl" => {
                let behaviour =
                    (eps > 0.0).then(|| behaviour_log_prob(step, t, d, v, v + eps * eps));
                rl_kl(lf, lp, lr, 0.7, behaviour.as_deref().map(|b| (b, t)))
            }
            _ => rl_kl_paper(lf, lp, lr, 0.5),
        };
        let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
        let (loss64, g64) = prior_loss_f64(&tr, &theta, &states, &loss);
        assert!(g64.iter().filter(|g| g.abs() > 1e-9).count() > g64.len() / 2);
        common::assert_trainer_matches(&tr, it, loss64, &g64, &format!("{method} {exploration}"));
    }
}

/// A Gaussian prior and a Gaussian constraint give a Gaussian posterior in closed form. The
/// zero-drift sampler from x₀ = 0 has x₁ ~ N(0, σ²I) exactly (T Gaussian increments); with
/// r = N(m, s²I) the posterior is N(m·σ²/(σ² + s²), σ²s²/(σ² + s²)·I) and Z = N(m; 0, (σ² + s²)I).
/// A short on-policy RTB run (T = 40, so the fixed per-step variance is close to the
/// continuous-time posterior's) must land on it: mean within 0.05 per coordinate, variance
/// within 8 % (4000 samples: standard errors 0.011 and 2.2 %), learned log Z within 0.03.
#[test]
fn short_run_matches_the_closed_form_gaussian_posterior() {
    let (m, s, sigma2) = ([1.5f64, -1.0], 1.0f64, 1.0f64);
    let text = format!(
        "(seed: 21, target: Gaussian(mean: [{}, {}], std: {s}),
          sampler: (steps: 40, sigma2: {sigma2}),
          network: (hidden: 32, harmonics: 8, joint_layers: 2),
          train: (method: Rtb, iterations: 1200, batch: 128, lr_policy: 3e-3, lr_flow: 0.1,
                  exploration: None),
          eval: (samples: 4000, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), beta: 1.0)))",
        m[0], m[1]
    );
    let cfg = ExperimentConfig::parse(&text, "gaussian rtb").unwrap();
    // The zero-drift prior: the network's own initialisation (zero output layer).
    let mut tr = Trainer::with_prior(&cfg, Some(init_params(&cfg))).unwrap();
    while tr.iteration < cfg.train.iterations {
        tr.step().unwrap();
    }
    let n = cfg.eval.samples;
    let (_, x) = tr.sample_with_weights(n, rng::stream_key(1, "gaussian-eval", 0));
    let post_var = sigma2 * s * s / (sigma2 + s * s);
    let log_z = -0.5 * (m[0] * m[0] + m[1] * m[1]) / (sigma2 + s * s)
        - (std::f64::consts::TAU * (sigma2 + s * s)).ln();
    for j in 0..2 {
        let col: Vec<f64> = x.chunks_exact(2).map(|r| r[j] as f64).collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
        let want_mean = m[j] * sigma2 / (sigma2 + s * s);
        assert!(
            (mean - want_mean).abs() < 0.05,
            "coordinate {j}: mean {mean} vs {want_mean}"
        );
        assert!(
            (var / post_var - 1.0).abs() < 0.08,
            "coordinate {j}: variance {var} vs {post_var}"
        );
    }
    assert!(
        (tr.learned_log_z() - log_z).abs() < 0.03,
        "learned log Z {} vs {log_z}",
        tr.learned_log_z()
    );
}

/// Importance resampling of the zero-drift prior (x₁ ~ N(0, I)) by r = N(m, I): the kept
/// samples' mean is near the posterior mean m/2, and the pool's log Ẑ^RW near
/// log N(m; 0, 2I). Nothing is trained.
#[test]
fn resampling_the_prior_recovers_the_gaussian_posterior() {
    let m = [1.5f64, -1.0];
    let text = format!(
        "(seed: 8, target: Gaussian(mean: [{}, {}], std: 1.0),
          sampler: (steps: 10, sigma2: 1.0),
          network: (hidden: 8, harmonics: 4, joint_layers: 2),
          train: (method: Resample, iterations: 0, batch: 8),
          eval: (samples: 3000, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), resample_pool: Some(10))))",
        m[0], m[1]
    );
    let cfg = ExperimentConfig::parse(&text, "resample").unwrap();
    let tr = Trainer::with_prior(&cfg, Some(init_params(&cfg))).unwrap();
    let fe = tr.evaluate_final().unwrap();
    let n = cfg.eval.samples;
    assert_eq!(fe.samples.len(), n * 2);
    for j in 0..2 {
        let mean = fe.samples.chunks_exact(2).map(|r| r[j] as f64).sum::<f64>() / n as f64;
        assert!((mean - m[j] / 2.0).abs() < 0.06, "coordinate {j}: {mean}");
    }
    let log_z = -0.25 * (m[0] * m[0] + m[1] * m[1]) - (std::f64::consts::TAU * 2.0).ln();
    assert!(
        (fe.metrics.log_z_rw - log_z).abs() < 0.03,
        "{} vs {log_z}",
        fe.metrics.log_z_rw
    );
    assert!(
        fe.metrics.posterior.is_none(),
        "resampled states have no trajectory metrics"
    );
}

/// MLE pretraining (spec rtb2024 §2.4): the trainer's sharded f32 gradient of
/// −(1/B) Σ_b Σ_i log p_F on bridge paths from data equals the f64 tape's on the same paths.
#[test]
fn mle_gradient_matches_the_f64_tape() {
    use diffusion_samplers::samplers::sample_backward_states;
    use rand_core::SeedableRng;
    let text = "(seed: 6, target: Gmm25,
          sampler: (steps: 5, sigma2: 5.0),
          network: (hidden: 8, harmonics: 4, joint_layers: 2),
          train: (method: Mle, iterations: 2, batch: 9, shards: 2),
          eval: (samples: 8, w2: false, eubo: false))";
    let cfg = ExperimentConfig::parse(text, "mle").unwrap();
    let mut tr = Trainer::new(&cfg).unwrap();
    let mut r = rng::stream(9, "mle", 0);
    let p: Vec<f32> = tr
        .params
        .iter()
        .map(|&v| v + 0.3 * rng::normal_f64(&mut r) as f32)
        .collect();
    tr.set_params(p);
    let (it, b) = (1usize, cfg.train.batch);
    let data = tr
        .energy
        .sample(b, &mut rng::stream(cfg.seed, "data", it as u64))
        .unwrap();
    let mut noise =
        rand_chacha::ChaCha8Rng::from_seed(rng::stream_key(cfg.seed, "backward-noise", it as u64));
    let states = sample_backward_states(&tr.sampler, &data, &mut noise, 0, b);
    let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
    let roll = rollout::<f64>(
        &tr.net,
        &theta,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(&states),
        true,
    );
    let loss64 = -roll.log_pf.iter().sum::<f64>() / b as f64;
    let seed = Tensor::from_vec(b, 1, vec![-1.0 / b as f64; b]);
    let seeds = roll
        .logpf_nodes
        .iter()
        .map(|&n| (n, seed.clone()))
        .collect();
    let grads = roll.tape.unwrap().backward(seeds);
    let g64 = tr.net.flat_grads(&roll.vars.unwrap(), &grads);
    assert_eq!(g64[tr.net.log_z_index()], 0.0, "MLE learns no log Z");
    common::assert_trainer_matches(&tr, it, loss64, &g64, "MLE");
}

/// A short MLE run (1 500 iterations, T = 20) on exact samples of N(m, I) gives a sampler whose own samples have the
/// data's mean (within 0.06) and variance (within 10 %).
#[test]
fn mle_prior_learns_a_gaussian() {
    let (m, s) = ([1.0f64, -2.0], 1.0f64);
    let text = format!(
        "(seed: 7, target: Gaussian(mean: [{}, {}], std: {s}),
          sampler: (steps: 20, sigma2: 1.0),
          network: (hidden: 32, harmonics: 8, joint_layers: 2),
          train: (method: Mle, iterations: 1500, batch: 256, lr_policy: 3e-3),
          eval: (samples: 4000, w2: false, eubo: false))",
        m[0], m[1]
    );
    let cfg = ExperimentConfig::parse(&text, "mle gaussian").unwrap();
    let mut tr = Trainer::new(&cfg).unwrap();
    while tr.iteration < cfg.train.iterations {
        tr.step().unwrap();
    }
    let n = cfg.eval.samples;
    let (_, x) = tr.sample_with_weights(n, rng::stream_key(1, "mle-eval", 0));
    for j in 0..2 {
        let col: Vec<f64> = x.chunks_exact(2).map(|r| r[j] as f64).collect();
        let mean = col.iter().sum::<f64>() / n as f64;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
        assert!(
            (mean - m[j]).abs() < 0.06,
            "coordinate {j}: mean {mean} vs {}",
            m[j]
        );
        assert!(
            (var / (s * s) - 1.0).abs() < 0.1,
            "coordinate {j}: variance {var} vs {}",
            s * s
        );
    }
}

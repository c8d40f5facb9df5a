//! The Pendulum's policy-extraction pipeline (spec rtb2024 §4.5 B): the BC prior's run trains
//! and returns the IQL critic; a posterior refuses to start without it, scores actions with
//! log r = Q(s, 2 tanh u) + α·log|J_tanh| (gradient checked against finite differences), and
//! replays bitwise.

use diffusion_samplers::config::{ExperimentConfig, Method, PosteriorConfig, TargetConfig};
use diffusion_samplers::energies::Energy;
use diffusion_samplers::rl::episodes::EpisodePolicy;
use diffusion_samplers::rl::task::{ActionSpace, PendulumBatch};
use diffusion_samplers::tolerance::GRADCHECK_F32;
use diffusion_samplers::train::{self, PriorRun, Trainer};

/// A small prior: 4 data episodes, a hidden-16 DDPM over 10 steps, a hidden-16 critic.
fn prior_cfg() -> ExperimentConfig {
    ExperimentConfig::parse(
        r#"(
            seed: 7,
            target: Pendulum(
                dataset: Medium,
                repeats: 1,
                data_episodes: 4,
                test_states: 2,
                episodes: 2,
                iql: (hidden: 16, steps: 200, batch: 32),
            ),
            sampler: (steps: 10, noising: Ddpm(train_steps: 40, clip: false)),
            network: (hidden: 16, harmonics: 4, joint_layers: 2),
            train: (method: EpsMse, iterations: 30, batch: 32, lr_policy: 1e-3, exploration: None),
            eval: (samples: 8, every: 0, w2: false, eubo: false),
        )"#,
        "prior",
    )
    .unwrap()
}

/// Its RTB posterior at α = 0.5, 2 states × 4 repeats per iteration.
fn posterior_cfg(prior: &ExperimentConfig) -> ExperimentConfig {
    let mut cfg = prior.clone();
    if let TargetConfig::Pendulum { repeats, .. } = &mut cfg.target {
        *repeats = 4;
    }
    cfg.train.method = Method::Rtb;
    cfg.train.iterations = 6;
    cfg.train.batch = 2;
    let post = format!(
        r#"(prior: (config: "prior.ron", digest: "{}"), beta: 2.0)"#,
        prior.digest()
    );
    cfg.posterior = Some(ron::from_str::<PosteriorConfig>(&post).unwrap());
    cfg.validate().unwrap();
    cfg
}

fn trained_prior() -> train::RunRecord {
    let rec = train::run(&prior_cfg(), &mut |_| {});
    assert!(rec.failure.is_none(), "{:?}", rec.failure);
    rec
}

#[test]
fn prior_run_trains_the_critic_and_scores_bc_and_awr() {
    let rec = trained_prior();
    let critic = rec
        .critic
        .as_ref()
        .expect("a Pendulum prior returns its critic");
    assert!(!critic.is_empty());
    let m = rec.final_eval.unwrap().metrics;
    let p = m.pendulum.expect("Pendulum scores");
    assert!(p.score.is_finite() && p.mean_return < 0.0);
    assert!(p.awr_score.is_some_and(f64::is_finite));
    // The normaliser puts the random policy at 0 and the expert at 100.
    assert!(p.random_return < p.expert_return);
}

#[test]
fn posterior_needs_the_critic_and_replays_bitwise() {
    let prior = trained_prior();
    let cfg = posterior_cfg(&prior_cfg());
    assert_eq!(cfg.train.method, Method::Rtb);
    let params = prior.params.clone().unwrap();
    let without = train::run_from(
        &cfg,
        Some(PriorRun {
            params: params.clone(),
            critic: None,
        }),
        None,
        0,
        &mut train::ProgressOnly(&mut |_| {}),
    );
    let err = without
        .failure
        .expect("refused without a critic")
        .to_string();
    assert!(err.contains("critic"), "{err}");

    let run = || {
        train::run_from(
            &cfg,
            Some(PriorRun {
                params: params.clone(),
                critic: prior.critic.clone(),
            }),
            None,
            0,
            &mut train::ProgressOnly(&mut |_| {}),
        )
    };
    let (a, b) = (run(), run());
    assert!(a.failure.is_none(), "{:?}", a.failure);
    let (fa, fb) = (a.final_eval.unwrap(), b.final_eval.unwrap());
    assert_eq!(fa.samples, fb.samples);
    let (pa, pb) = (fa.metrics.pendulum.unwrap(), fb.metrics.pendulum.unwrap());
    assert_eq!(pa.mean_return.to_bits(), pb.mean_return.to_bits());
    assert!(pa.awr_score.is_none(), "only the prior run scores AWR");
    let la: Vec<u64> = a.curve.iter().map(|r| r.loss.to_bits()).collect();
    let lb: Vec<u64> = b.curve.iter().map(|r| r.loss.to_bits()).collect();
    assert_eq!(la, lb);
}

/// The posterior's batch log r at four actions of the first four dataset states, under
/// `action`: its gradient against central differences, and log r against its definition
/// (`jacobian` gives the per-row term added to Q at α = 1/β = 0.5).
fn check_log_reward(action: ActionSpace, u: [f32; 4], jacobian: fn(f64) -> f64) {
    check_log_reward_of(action, u, jacobian, false);
}

/// As [`check_log_reward`], with the critic's Q or (`oracle`) the exact Q^E of
/// `target.oracle_q`.
fn check_log_reward_of(action: ActionSpace, u: [f32; 4], jacobian: fn(f64) -> f64, oracle: bool) {
    let prior = trained_prior();
    let mut cfg = posterior_cfg(&prior_cfg());
    if let TargetConfig::Pendulum {
        action: a,
        oracle_q,
        ..
    } = &mut cfg.target
    {
        *a = action;
        *oracle_q = oracle;
    }
    let mut tr = Trainer::with_prior(&cfg, prior.params.clone()).unwrap();
    tr.attach_critic(prior.critic.as_ref().unwrap()).unwrap();
    let task = tr.pendulum().unwrap();
    assert_eq!(task.action, action);
    let states: Vec<f32> = task.obs[..4 * 3].to_vec();
    let batch = PendulumBatch {
        task,
        states: &states,
    };
    let mut grad = [0f32; 4];
    batch.grad_log_reward(&u, &mut grad);
    for k in 0..4 {
        let h = 1e-2f32;
        let at = |v: f32| {
            let mut x = u;
            x[k] = v;
            let mut out = [0f64; 4];
            batch.log_reward(&x, &mut out);
            out[k]
        };
        let fd = (at(u[k] + h) - at(u[k] - h)) / (2.0 * h as f64);
        assert!(
            GRADCHECK_F32.close(grad[k] as f64, fd),
            "{action:?} row {k}: analytic {} vs finite difference {fd}",
            grad[k]
        );
    }
    let mut lr = [0f64; 4];
    batch.log_reward(&u, &mut lr);
    let torques: Vec<f32> = u.iter().map(|&v| action.torque(v)).collect();
    let q: Vec<f64> = if oracle {
        let gamma = task.iql.discount;
        diffusion_samplers::rl::critic_check::expert_q_batch(
            &states,
            &torques,
            gamma,
            task.reward_scale,
        )
    } else {
        let q = task.critic.as_ref().unwrap().q(&states, &torques);
        q.iter().map(|&v| v as f64).collect()
    };
    for k in 0..4 {
        let want = q[k] + 0.5 * jacobian(u[k] as f64);
        assert!((lr[k] - want).abs() < 1e-9, "row {k}: {} vs {want}", lr[k]);
    }
}

/// `target.oracle_q` scores by the exact expert-continuation value instead of the critic; its
/// central-difference gradient agrees with wider differences of the same log r.
#[test]
fn oracle_log_reward_is_the_expert_continuation_value() {
    check_log_reward_of(
        ActionSpace::PreTanh,
        [0.3, -1.1, 0.05, 0.7],
        |u| {
            let t = u.tanh();
            (1.0 - t * t + 1e-7).ln()
        },
        true,
    );
    let mut prior = prior_cfg();
    if let TargetConfig::Pendulum { oracle_q, .. } = &mut prior.target {
        *oracle_q = true;
    }
    let (field, why) = prior.validate().unwrap_err();
    assert_eq!(field, "target.oracle_q", "{why}");
}

#[test]
fn log_reward_gradient_matches_finite_differences() {
    // With α = 1/β the Jacobian term is α·log(1 − tanh²u + 1e-7) on top of Q(s, 2 tanh u).
    check_log_reward(ActionSpace::PreTanh, [0.3, -1.1, 0.05, 1.7], |u| {
        let t = u.tanh();
        (1.0 - t * t + 1e-7).ln()
    });
    assert_eq!(ActionSpace::PreTanh.torque(1.7), 2.0 * 1.7f32.tanh());
}

#[test]
fn clipped_actions_score_q_of_the_clipped_torque_without_a_jacobian() {
    // Rows inside the bounds (where d/du = 2·∂Q/∂a) and beyond them (where the clip makes
    // log r flat), each at least h = 0.01 from the kink at ±1.
    check_log_reward(ActionSpace::Clipped, [0.3, -0.55, 1.4, -1.2], |_| 0.0);
    let c = ActionSpace::Clipped;
    assert_eq!(
        (c.torque(0.3), c.torque(1.4), c.torque(-1.2)),
        (0.6, 2.0, -2.0)
    );
    assert_eq!(c.from_torque(-1.5), -0.75);
    // The dataset's u are its torques halved, so every one is inside [−1, 1].
    let mut cfg = prior_cfg();
    if let TargetConfig::Pendulum { action, .. } = &mut cfg.target {
        *action = c;
    }
    let tr = Trainer::new(&cfg).unwrap();
    let task = tr.pendulum().unwrap();
    for (t, &u) in task.dataset.transitions.iter().zip(&task.u) {
        assert_eq!(u, (t.action / 2.0) as f32);
    }
    // The default stays out of the resolved config (existing digests hold); Clipped is written.
    assert!(!prior_cfg().to_ron().contains("PreTanh"));
    let text = cfg.to_ron();
    assert!(text.contains("action: Clipped"), "{text}");
    assert_eq!(ExperimentConfig::parse(&text, "clipped").unwrap(), cfg);
}

#[test]
fn resampling_policy_is_deterministic_and_differs_from_the_prior() {
    let prior = trained_prior();
    let mut cfg = posterior_cfg(&prior_cfg());
    cfg.train.method = Method::Resample;
    cfg.train.iterations = 0;
    let mut tr = Trainer::with_prior(&cfg, prior.params.clone()).unwrap();
    tr.attach_critic(prior.critic.as_ref().unwrap()).unwrap();
    let a = tr.episode_returns(EpisodePolicy::Resample { pool: 8 });
    let b = tr.episode_returns(EpisodePolicy::Resample { pool: 8 });
    assert_eq!(a, b);
    let plain = tr.episode_returns(EpisodePolicy::Diffusion);
    assert_ne!(a, plain, "resampling by exp(β log r) changes the actions");
}

#[test]
fn configs_are_validated() {
    let mut cfg = prior_cfg();
    cfg.train.method = Method::Tb;
    let err = cfg.validate().unwrap_err();
    assert_eq!(err.0, "train.method");
    let text = prior_cfg().to_ron();
    let bad = text.replacen("repeats:", "wrong: 1, repeats:", 1);
    assert_ne!(bad, text);
    let err = ExperimentConfig::parse(&bad, "bad")
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong"), "{err}");
    let zero = text.replacen("test_states: 2", "test_states: 0", 1);
    assert_ne!(zero, text);
    let err = ExperimentConfig::parse(&zero, "zero")
        .unwrap_err()
        .to_string();
    assert!(err.contains("test_states"), "{err}");
}

#[test]
fn dataset_paths_vanish_at_the_prior_and_alternate_with_on_policy() {
    // RTB mixed: at the prior (posterior = prior), every repeat of a dataset pair has the same
    // β·log r(u_data) and equal log-likelihoods under both models, so the VarGrad residuals of
    // a state's repeats coincide and the loss is 0 — unless the tiling pairs rows with the
    // wrong state. On-policy repeats differ, so that loss is not 0.
    let prior = trained_prior();
    let mut cfg = posterior_cfg(&prior_cfg());
    cfg.posterior.as_mut().unwrap().dataset_paths = true;
    cfg.validate().unwrap();
    let mut tr = Trainer::with_prior(&cfg, prior.params.clone()).unwrap();
    tr.attach_critic(prior.critic.as_ref().unwrap()).unwrap();
    let (on, _) = tr.loss_and_grad(0).unwrap();
    let (off, grad) = tr.loss_and_grad(1).unwrap();
    assert!(on.loss > 1e-3, "on-policy loss {}", on.loss);
    assert!(
        off.loss.abs() < 1e-6,
        "dataset-path loss at the prior {}",
        off.loss
    );
    let norm: f64 = grad.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
    assert!(norm < 1e-4, "dataset-path gradient at the prior {norm}");
    // Off the prior the dataset paths carry signal.
    tr.step().unwrap();
    let (off2, _) = tr.loss_and_grad(1).unwrap();
    assert!(
        off2.loss > 1e-9,
        "dataset-path loss after a step {}",
        off2.loss
    );

    let mut wrong = cfg.clone();
    wrong.train.method = Method::Resample;
    assert_eq!(wrong.validate().unwrap_err().0, "posterior.dataset_paths");
}

/// RTB with the Langevin correction on the Pendulum: the correction reads ∇_u log r through the
/// critic's input gradient at every step. Lifted from the prior it starts exactly there (the
/// same loss as the plain posterior); a training step moves the correction's output layer off zero, and the run replays bitwise.
#[test]
fn langevin_posterior_starts_at_the_prior_and_learns_its_scale() {
    let prior = trained_prior();
    let plain = posterior_cfg(&prior_cfg());
    let mut lp = plain.clone();
    lp.network.langevin = true;
    lp.network.langevin_per_dim = true;
    lp.network.langevin_layers = 2;
    lp.validate().unwrap();
    let critic = prior.critic.as_ref().unwrap();
    let trainer = |cfg: &ExperimentConfig| {
        let mut tr = Trainer::with_prior(cfg, prior.params.clone()).unwrap();
        tr.attach_critic(critic).unwrap();
        tr
    };
    let (a, b) = (trainer(&plain), trainer(&lp));
    assert_eq!(
        a.loss_and_grad(0).unwrap().0.loss,
        b.loss_and_grad(0).unwrap().0.loss
    );
    assert!(a.loss_and_grad(0).unwrap().0.loss > 1e-6);

    let out = |tr: &Trainer| -> Vec<f32> {
        let s = tr
            .net
            .layout
            .specs
            .iter()
            .find(|s| s.name == "lp.out.w")
            .unwrap();
        tr.params[s.range()].to_vec()
    };
    let mut tr = trainer(&lp);
    assert!(out(&tr).iter().all(|&w| w == 0.0));
    tr.step().unwrap();
    assert!(out(&tr).iter().any(|&w| w != 0.0), "the scale did not move");

    let run = || {
        train::run_from(
            &lp,
            Some(PriorRun {
                params: prior.params.clone().unwrap(),
                critic: prior.critic.clone(),
            }),
            None,
            0,
            &mut train::ProgressOnly(&mut |_| {}),
        )
    };
    let (one, two) = (run(), run());
    assert!(one.failure.is_none(), "{:?}", one.failure);
    assert_eq!(one.params, two.params);
    let (fa, fb) = (one.final_eval.unwrap(), two.final_eval.unwrap());
    assert_eq!(fa.samples, fb.samples);
    let (pa, pb) = (fa.metrics.pendulum.unwrap(), fb.metrics.pendulum.unwrap());
    assert_eq!(pa.mean_return.to_bits(), pb.mean_return.to_bits());
}

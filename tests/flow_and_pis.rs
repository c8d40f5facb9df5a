//! SubTB / FL-SubTB / DB (with the conditional flow head) and PIS (backprop through the
//! simulation), wired into the trainer: each whole loss against f64 central differences of the
//! same loss, and the trainer's sharded f32 gradient against the f64 tape.

mod common;

use common::assert_trainer_matches;
use diffusion_samplers::autodiff::gradcheck::gradcheck;
use diffusion_samplers::config::{ExperimentConfig, Method};
use diffusion_samplers::losses::{detailed_balance, fl_term, subtb};
use diffusion_samplers::nn::FlowHead;
use diffusion_samplers::rng;
use diffusion_samplers::samplers::pis::rollout_pis;
use diffusion_samplers::samplers::{rollout, Path};
use diffusion_samplers::tensor::Tensor;
use diffusion_samplers::tolerance::GRADCHECK_F64;
use diffusion_samplers::train::Trainer;

fn config(
    method: &str,
    extra_train: &str,
    langevin: bool,
    learned_variance: bool,
) -> ExperimentConfig {
    let text = format!(
        "(seed: 3, target: Gmm25,
          sampler: (steps: 4, sigma2: 5.0, learned_variance: {learned_variance}),
          network: (hidden: 8, harmonics: 4, joint_layers: 2, langevin: {langevin}, langevin_layers: 2),
          train: (method: {method}, iterations: 3, batch: 5, shards: 2{extra_train}),
          eval: (samples: 8))"
    );
    ExperimentConfig::parse(&text, "test").unwrap()
}

/// A trainer whose parameters are all perturbed (so the zero-initialised output layer passes
/// gradient everywhere).
fn perturbed(cfg: &ExperimentConfig, tag: u64) -> Trainer {
    let mut tr = Trainer::new(cfg).unwrap();
    let mut r = rng::stream(5, "perturb", tag);
    let mut p = tr.params.clone();
    for v in p.iter_mut() {
        *v += 0.3 * rng::normal_f64(&mut r) as f32;
    }
    tr.set_params(p);
    tr
}

/// Training iteration `it`'s forward path for a whole batch of `b` rows in one shard.
fn train_path(seed: u64, it: u64, b: usize) -> Path<'static> {
    Path::Forward {
        noise_key: rng::stream_key(seed, "train-noise", it),
        row0: 0,
        total_rows: b,
        explore_std: 0.0,
    }
}

/// Iteration `it`'s forward states, regenerated in one shard.
fn states_of(tr: &Trainer, it: u64) -> Vec<f32> {
    let b = tr.cfg.train.batch;
    let path = train_path(tr.cfg.seed, it, b);
    rollout::<f32>(&tr.net, &tr.params, &tr.sampler, &*tr.energy, b, path, true).states
}

/// The SubTB / DB loss and its f64 tape gradient along fixed states.
fn flow_loss_f64(tr: &Trainer, theta: &[f64], states: &[f32]) -> (f64, Vec<f64>) {
    let (b, t, d) = (tr.cfg.train.batch, tr.sampler.steps, tr.sampler.dim);
    let roll = rollout::<f64>(
        &tr.net,
        theta,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(states),
        true,
    );
    let tape = roll.tape.unwrap();
    let mut log_f = vec![0f64; b * t];
    for (i, &n) in roll.flow_nodes.iter().enumerate() {
        for r in 0..b {
            log_f[r * t + i] = tape.value(n).data[r];
        }
    }
    let mut lr = vec![0f64; b];
    tr.energy.log_reward(&roll.x_final, &mut lr);
    let fl = tr.cfg.train.forward_looking.then(|| {
        let dt = tr.sampler.dt();
        let mut fl = vec![0f64; b * t];
        let mut lri = vec![0f64; b];
        for i in 0..t {
            let x_i = &states[i * b * d..(i + 1) * b * d];
            tr.energy.log_reward(x_i, &mut lri);
            for r in 0..b {
                let xr = &x_i[r * d..(r + 1) * d];
                fl[r * t + i] = fl_term(i as f64 * dt, i, dt, tr.sampler.sigma2, xr, lri[r]);
            }
        }
        fl
    });
    let g = match tr.cfg.train.method {
        Method::SubTb => subtb(
            tr.cfg.train.lambda(),
            &roll.step_log_pf,
            &roll.step_log_pb,
            &log_f,
            fl.as_deref(),
            &lr,
            b,
            t,
        ),
        Method::Db => {
            let total: Vec<f64> = match &fl {
                Some(fl) => log_f.iter().zip(fl).map(|(a, c)| a + c).collect(),
                None => log_f,
            };
            detailed_balance(&roll.step_log_pf, &roll.step_log_pb, &total, &lr, b, t)
        }
        m => panic!("not a flow method: {m:?}"),
    };
    let column =
        |v: &[f64], i: usize| Tensor::from_vec(b, 1, (0..b).map(|r| v[r * t + i]).collect());
    let seeds = roll
        .logpf_nodes
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, column(&g.d_log_pf, i)))
        .chain(
            roll.flow_nodes
                .iter()
                .enumerate()
                .map(|(i, &n)| (n, column(&g.d_log_f, i))),
        )
        .collect();
    let grads = tape.backward(seeds);
    (g.loss, tr.net.flat_grads(&roll.vars.unwrap(), &grads))
}

/// The PIS loss and its f64 tape gradient, for iteration `it`'s noise.
fn pis_loss_f64(tr: &Trainer, theta: &[f64], it: u64) -> (f64, Vec<f64>) {
    let (b, d) = (tr.cfg.train.batch, tr.sampler.dim);
    let key = rng::stream_key(tr.cfg.seed, "train-noise", it);
    let roll = rollout_pis::<f64>(&tr.net, theta, &tr.sampler, &*tr.energy, b, key, 0, b);
    let scale = 1.0 / (d * b) as f64;
    let loss: f64 = (0..b)
        .map(|r| roll.log_pf[r] - roll.log_pb[r] - roll.log_r[r])
        .sum::<f64>()
        * scale;
    let seeds = roll.loss_seeds(scale);
    let grads = roll.tape.backward(seeds);
    (loss, tr.net.flat_grads(&roll.vars, &grads))
}

fn block_of(tr: &Trainer, index: usize) -> String {
    tr.net
        .layout
        .specs
        .iter()
        .find(|s| s.range().contains(&index))
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

/// A loss and its gradient as functions of the f64 parameter vector.
type LossFn<'a> = &'a dyn Fn(&[f64]) -> (f64, Vec<f64>);

fn check_whole(tr: &Trainer, what: &str, f: LossFn<'_>) {
    let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
    let (_, analytic) = f(&theta);
    let live = analytic.iter().filter(|g| g.abs() > 1e-9).count();
    assert!(
        live > analytic.len() / 2,
        "{what}: only {live} of {} gradient entries are non-zero",
        analytic.len()
    );
    let mut loss = |v: &[f64]| f(v).0;
    if let Err(r) = gradcheck(&mut loss, &theta, &analytic, 1e-6, GRADCHECK_F64) {
        panic!(
            "{what}: block {} index {}: analytic {} numeric {}",
            block_of(tr, r.worst_index),
            r.worst_index,
            r.analytic,
            r.numeric
        );
    }
}

#[test]
fn subtb_fl_subtb_and_db_match_finite_differences() {
    for (method, extra, lp) in [
        ("SubTb", ", subtb_lambda: Some(2.0)", false),
        ("SubTb", ", forward_looking: true", true),
        ("Db", "", false),
        ("Db", ", forward_looking: true", false),
    ] {
        let cfg = config(method, extra, lp, false);
        let tr = perturbed(&cfg, 1);
        assert_eq!(
            tr.net.flow,
            FlowHead::Trunk,
            "{method} builds the flow head"
        );
        let states = states_of(&tr, 0);
        check_whole(&tr, &format!("{method}{extra}"), &|theta| {
            flow_loss_f64(&tr, theta, &states)
        });
    }
}

/// DIS's and DDS's objective: PIS against the VP (OU) reference, x₀ ~ N(0, std²I), with Euler
/// steps (DIS), with the exponential integrator, and on DDS's cosine grid with its variance-scaled
/// control (plain and with the LP, whose gain scales the ∇log R term too; ∇log R is clipped to
/// ±10⁻³, so the detached term is piecewise constant and finite differences see what the tape
/// does). The PIS rollout and the GFlowNet rollout draw the same x₀ and the same path from one
/// key.
#[test]
fn pis_with_vp_noising_matches_finite_differences() {
    let vp = "beta_min: 0.1, beta_max: 2.0";
    for (noising, lp, name) in [
        (format!("Vp({vp})"), false, "PIS + VP (DIS)"),
        (format!("VpExponential({vp})"), false, "PIS + exact VP"),
        (
            format!("Vp({vp}, std: 2.5)"),
            false,
            "PIS + VP (DIS), std 2.5",
        ),
        (
            "VpCosine(horizon: 6.4)".into(),
            false,
            "PIS + cosine VP (DDS)",
        ),
        (
            "VpCosine(horizon: 6.4, std: 2.0)".into(),
            true,
            "DDS + LP, std 2",
        ),
    ] {
        let text = format!(
            "(seed: 3, target: Gmm25,
              sampler: (steps: 4, noising: {noising}),
              network: (hidden: 8, harmonics: 4, joint_layers: 2, langevin: {lp}, lgv_clip: 1e-3),
              train: (method: Pis, iterations: 3, batch: 5, shards: 2),
              eval: (samples: 8))"
        );
        let cfg = ExperimentConfig::parse(&text, name).unwrap();
        let tr = perturbed(&cfg, 7);
        check_whole(&tr, name, &|theta| pis_loss_f64(&tr, theta, 4));
        let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
        let (loss64, g64) = pis_loss_f64(&tr, &theta, 2);
        assert_trainer_matches(&tr, 2, loss64, &g64, name);
        let b = cfg.train.batch;
        let key = rng::stream_key(cfg.seed, "train-noise", 2);
        let pis = rollout_pis::<f64>(&tr.net, &theta, &tr.sampler, &*tr.energy, b, key, 0, b);
        let path = train_path(cfg.seed, 2, b);
        let gfn = rollout::<f32>(
            &tr.net,
            &tr.params,
            &tr.sampler,
            &*tr.energy,
            b,
            path,
            false,
        );
        for (row, (a, g)) in pis.log_pf.iter().zip(&gfn.log_pf).enumerate() {
            assert!(
                (a - g).abs() < 1e-3 * a.abs().max(1.0),
                "{name} row {row}: LF {a} vs {g}"
            );
        }
        for (a, g) in pis.x_final.iter().zip(&gfn.x_final) {
            assert!(
                (a - g).abs() < 1e-3 * a.abs().max(1.0),
                "{name}: x_T {a} vs {g}"
            );
        }
    }
}

#[test]
fn pis_matches_finite_differences_through_the_simulation() {
    // LP is left out: its ∇log R is detached on purpose, which finite differences cannot see.
    for learned_variance in [false, true] {
        let cfg = config("Pis", "", false, learned_variance);
        let tr = perturbed(&cfg, 2);
        check_whole(&tr, &format!("PIS lv={learned_variance}"), &|theta| {
            pis_loss_f64(&tr, theta, 4)
        });
    }
}

#[test]
fn trainer_gradients_match_the_f64_tape() {
    for (method, extra, lp) in [
        ("SubTb", ", forward_looking: true", true),
        ("Db", "", false),
    ] {
        let cfg = config(method, extra, lp, false);
        let tr = perturbed(&cfg, 3);
        let states = states_of(&tr, 2);
        let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
        let (loss64, g64) = flow_loss_f64(&tr, &theta, &states);
        assert_trainer_matches(&tr, 2, loss64, &g64, method);
    }
    for lp in [false, true] {
        let cfg = config("Pis", "", lp, false);
        let tr = perturbed(&cfg, 4);
        let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
        let (loss64, g64) = pis_loss_f64(&tr, &theta, 2);
        assert_trainer_matches(&tr, 2, loss64, &g64, &format!("PIS lp={lp}"));
    }
}

#[test]
fn new_methods_train_and_replay_bitwise() {
    for (method, extra) in [
        ("SubTb", ", forward_looking: true"),
        ("Db", ""),
        ("Pis", ""),
    ] {
        let cfg = config(method, extra, true, false);
        let run = || {
            let mut tr = Trainer::new(&cfg).unwrap();
            let mut losses = Vec::new();
            for _ in 0..3 {
                losses.push(tr.step().unwrap().loss);
            }
            (losses, tr.params.clone())
        };
        let (a, pa) = run();
        let (b, pb) = run();
        assert!(a.iter().all(|l| l.is_finite()), "{method}: losses {a:?}");
        assert_eq!(a, b, "{method}: losses replay bitwise");
        assert_eq!(pa, pb, "{method}: parameters replay bitwise");
        let init = Trainer::new(&cfg).unwrap().params;
        assert_ne!(pa, init, "{method}: training moved the parameters");
    }
}

#[test]
fn config_rules_for_the_new_methods() {
    let bad = |method: &str, extra: &str| {
        let text = format!("(target: Gmm25, train: (method: {method}, iterations: 1{extra}))");
        ExperimentConfig::parse(&text, "bad.ron")
            .unwrap_err()
            .to_string()
    };
    assert!(bad("Tb", ", forward_looking: true").contains("train.forward_looking"));
    assert!(bad("Tb", ", subtb_lambda: Some(2.0)").contains("train.subtb_lambda"));
    assert!(bad("SubTb", ", subtb_lambda: Some(-1.0)").contains("train.subtb_lambda"));
    assert!(bad("Pis", ", exploration: Some((std: 0.2))").contains("train.exploration"));
    // A TB config without the new fields resolves to the same RON as before (digests kept).
    let tb = ExperimentConfig::parse("(target: Gmm25, train: (method: Tb, iterations: 1))", "tb")
        .unwrap();
    let ron = tb.to_ron();
    assert!(!ron.contains("subtb_lambda") && !ron.contains("forward_looking"));
}

fn interpolated_config(lgv_clip: f64, std: &str) -> ExperimentConfig {
    let text = format!(
        "(seed: 3, target: Gmm25,
          sampler: (steps: 4, noising: Vp(beta_min: 0.1, beta_max: 2.0{std})),
          network: (hidden: 8, harmonics: 4, joint_layers: 2, langevin: true, langevin_layers: 2,
                    interpolated_score: true, lgv_clip: {lgv_clip}),
          train: (method: Pis, iterations: 3, batch: 5, shards: 2),
          eval: (samples: 8))"
    );
    ExperimentConfig::parse(&text, "interpolated").unwrap()
}

/// DIS's interpolated-score parametrisation at initialisation (zero network output, s(t) = 1):
/// every step's drift is σ²_i·t_i·(x/std² + clip(∇log R(x))), so the first step (t = 0) is the
/// OU's own, and the PIS rollout and the GFlowNet rollout move alike.
#[test]
fn interpolated_score_starts_at_the_interpolated_time_reversal() {
    let cfg = interpolated_config(100.0, ", std: 2.0");
    let tr = Trainer::new(&cfg).unwrap();
    let (b, d, t) = (5usize, 2usize, 4usize);
    let path = train_path(cfg.seed, 0, b);
    let roll = diffusion_samplers::samplers::rollout_recording::<f32>(
        &tr.net,
        &tr.params,
        &tr.sampler,
        &*tr.energy,
        b,
        path,
        diffusion_samplers::samplers::Record::Drifts,
        None,
    );
    let mut grad = vec![0f32; b * d];
    for i in 0..t {
        let x = &roll.states[i * b * d..(i + 1) * b * d];
        tr.energy.grad_log_reward(x, &mut grad);
        let rate = tr.sampler.transition(i).rate;
        let ti = i as f64 / t as f64;
        for k in 0..b * d {
            let want = rate * ti * (x[k] as f64 / 4.0 + grad[k] as f64);
            let got = roll.step_drift[i * b * d + k];
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "step {i} entry {k}: {got} vs {want}"
            );
        }
    }
    assert!(roll.step_drift[..b * d].iter().all(|&v| v == 0.0));
    assert!(roll.step_drift[b * d..].iter().any(|&v| v != 0.0));
}

/// PIS through DIS's interpolated score: its x-linear parts are on the tape. With ∇log R
/// clipped to ±10⁻³ the detached target part is piecewise constant, so central differences
/// of the whole loss see exactly what the tape differentiates.
#[test]
fn pis_with_the_interpolated_score_matches_finite_differences() {
    let cfg = interpolated_config(1e-3, "");
    let tr = perturbed(&cfg, 9);
    check_whole(&tr, "PIS + interpolated score", &|theta| {
        pis_loss_f64(&tr, theta, 4)
    });
    let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
    let (loss64, g64) = pis_loss_f64(&tr, &theta, 2);
    assert_trainer_matches(&tr, 2, loss64, &g64, "PIS + interpolated score");
}

#[test]
fn interpolated_score_config_rules() {
    let bad = |network: &str, noising: &str| {
        let text = format!(
            "(target: Gmm25, sampler: (steps: 10{noising}), network: ({network}), \
             train: (method: Pis, iterations: 1))"
        );
        ExperimentConfig::parse(&text, "bad.ron")
            .unwrap_err()
            .to_string()
    };
    let vp = ", noising: Vp(beta_min: 0.1, beta_max: 2.0)";
    let no_lp = bad("interpolated_score: true", vp);
    assert!(
        no_lp.contains("network.interpolated_score") && no_lp.contains("langevin"),
        "{no_lp}"
    );
    let brownian = bad("langevin: true, interpolated_score: true", "");
    assert!(
        brownian.contains("network.interpolated_score") && brownian.contains("VP"),
        "{brownian}"
    );
    let plain = ExperimentConfig::parse(
        &format!("(target: Gmm25, sampler: (steps: 10{vp}), network: (langevin: true), train: (method: Pis, iterations: 1))"),
        "lp",
    )
    .unwrap();
    assert!(!plain.to_ron().contains("interpolated_score"));
}

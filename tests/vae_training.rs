//! The conditional VAE-posterior sampler (spec §1.6, §2.5, `cond-tb-avg`): the conditional
//! network's gradient against f64 finite differences, the repeat-major condition layout, and
//! bitwise replay of a short run.

mod common;

use diffusion_samplers::autodiff::gradcheck::gradcheck;
use diffusion_samplers::conditional::ConditionedBatch;
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::energies::vae::PIXELS;
use diffusion_samplers::energies::Energy;
use diffusion_samplers::losses::{trajectory_balance_rows, vargrad_conditional};
use diffusion_samplers::rng;
use diffusion_samplers::samplers::{rollout_conditional, Path};
use diffusion_samplers::tensor::Tensor;
use diffusion_samplers::tolerance::{Tolerance, GRADCHECK_F64};
use diffusion_samplers::train::Trainer;

fn tiny(langevin: bool) -> ExperimentConfig {
    tiny_with("VarGrad", langevin)
}

fn tiny_with(method: &str, langevin: bool) -> ExperimentConfig {
    let text = format!(
        "(seed: 4, target: Vae(repeats: 3), sampler: (steps: 4, sigma2: 5.0),
          network: (hidden: 8, harmonics: 4, joint_layers: 1, langevin: {langevin}),
          train: (method: {method}, iterations: 3, batch: 2, shards: 2,
                  exploration: Some((std: 0.1, decay_iters: None))),
          eval: (samples: 2, every: 0, w2: false, eubo: false))"
    );
    ExperimentConfig::parse(&text, "vae-tiny").unwrap()
}

#[test]
fn conditions_are_tiled_repeat_major() {
    let tr = Trainer::new(&tiny(false)).unwrap();
    let task = tr.vae.as_ref().unwrap();
    let c = task.training_conditions(4, 7, 2);
    assert_eq!(c.len(), 3 * 2 * PIXELS);
    for r in 1..3 {
        assert_eq!(&c[r * 2 * PIXELS..(r + 1) * 2 * PIXELS], &c[..2 * PIXELS]);
    }
    assert_ne!(&c[..PIXELS], &c[PIXELS..2 * PIXELS], "two different images");
    assert_eq!(
        c,
        task.training_conditions(4, 7, 2),
        "keyed by the iteration"
    );
    assert_ne!(c, task.training_conditions(4, 8, 2));
}

#[test]
fn conditional_vargrad_matches_finite_differences() {
    check_conditional_loss("VarGrad");
}

#[test]
fn conditional_tb_with_learned_log_z_matches_finite_differences() {
    check_conditional_loss("Tb");
}

fn check_conditional_loss(method: &str) {
    let cfg = tiny_with(method, true);
    let mut tr = Trainer::new(&cfg).unwrap();
    let mut r = rng::stream(8, "perturb", 0);
    let mut p = tr.params.clone();
    for v in p.iter_mut() {
        *v += 0.3 * rng::normal_f64(&mut r) as f32;
    }
    tr.set_params(p);
    let task = tr.vae.as_ref().unwrap();
    let conds = task.training_conditions(cfg.seed, 0, cfg.train.batch);
    let rows = cfg.rows_per_iteration();
    let batch = ConditionedBatch {
        energy: &task.energy,
        images: &conds,
    };
    let path = Path::Forward {
        // Iteration 0's training noise and conditions: the trainer's own trajectories.
        noise_key: rng::stream_key(cfg.seed, "train-noise", 0),
        row0: 0,
        total_rows: rows,
        explore_std: 0.1,
    };
    let states = rollout_conditional::<f32>(
        &tr.net,
        &tr.params,
        &tr.sampler,
        &batch,
        rows,
        path,
        true,
        Some(&conds),
    )
    .states;
    let loss = |theta: &[f64]| {
        let roll = rollout_conditional::<f64>(
            &tr.net,
            theta,
            &tr.sampler,
            &batch,
            rows,
            Path::Given(&states),
            true,
            Some(&conds),
        );
        let mut lr = vec![0f64; rows];
        batch.log_reward(&roll.x_final, &mut lr);
        let tape = roll.tape.unwrap();
        let (g, extra) = match roll.log_z_node {
            Some(node) => {
                let lz = tape.value(node).data.clone();
                let g = trajectory_balance_rows(&lz, &roll.log_pf, &roll.log_pb, &lr);
                let d_z = Tensor::from_vec(rows, 1, g.d_log_pf.clone());
                (g, vec![(node, d_z)])
            }
            None => (
                vargrad_conditional(&roll.log_pf, &roll.log_pb, &lr, cfg.train.batch),
                vec![],
            ),
        };
        let seed = Tensor::from_vec(rows, 1, g.d_log_pf.clone());
        let seeds = roll
            .logpf_nodes
            .iter()
            .map(|&n| (n, seed.clone()))
            .chain(extra)
            .collect();
        let grads = tape.backward(seeds);
        (g.loss, tr.net.flat_grads(&roll.vars.unwrap(), &grads))
    };
    let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
    let (_, analytic) = loss(&theta);
    if method == "Tb" {
        let out = tr.net.layout.find("flow.out.w").unwrap().range();
        assert!(
            analytic[out].iter().any(|g| g.abs() > 1e-9),
            "log Z(x) is learned"
        );
    }
    let cond_block = tr.net.layout.find("s.cond.w").unwrap().range();
    assert!(
        analytic[cond_block.clone()].iter().any(|g| g.abs() > 1e-9),
        "the condition's weights get gradient"
    );
    // Every coordinate outside the 784-wide condition block, and every 97th inside it (the
    // block alone is 8·784 coordinates, each a pair of f64 rollouts).
    let picked: Vec<usize> = (0..theta.len())
        .filter(|&i| !cond_block.contains(&i) || (i - cond_block.start).is_multiple_of(97))
        .collect();
    let (loss0, _) = loss(&theta);
    // Central differences of a loss of size |L| carry ≈ |L|·1e-16/h of rounding: scale `abs`.
    let tol = Tolerance {
        name: "vae gradcheck (f64 differences of a loss of size |L|)",
        abs: GRADCHECK_F64.abs.max(loss0.abs() * 1e-16 / 1e-6 * 10.0),
        rel: GRADCHECK_F64.rel,
    };
    let sub: Vec<f64> = picked.iter().map(|&i| theta[i]).collect();
    let sub_analytic: Vec<f64> = picked.iter().map(|&i| analytic[i]).collect();
    let mut f = |v: &[f64]| {
        let mut full = theta.clone();
        for (&i, &x) in picked.iter().zip(v) {
            full[i] = x;
        }
        loss(&full).0
    };
    if let Err(rep) = gradcheck(&mut f, &sub, &sub_analytic, 1e-6, tol) {
        let worst = picked[rep.worst_index];
        let spec = tr
            .net
            .layout
            .specs
            .iter()
            .find(|s| s.range().contains(&worst))
            .unwrap();
        panic!(
            "block {}: analytic {} numeric {}",
            spec.name, rep.analytic, rep.numeric
        );
    }
    // The trainer's sharded f32 gradient of the same iteration agrees with this f64 tape.
    common::assert_trainer_matches(&tr, 0, loss0, &analytic, method);
}

#[test]
fn short_run_replays_bitwise_and_evaluates_on_the_100_images() {
    let cfg = tiny(true);
    let run = || {
        let mut tr = Trainer::new(&cfg).unwrap();
        let losses: Vec<f64> = (0..3).map(|_| tr.step().unwrap().loss).collect();
        let fin = tr.evaluate_final().unwrap();
        (losses, tr.params.clone(), fin)
    };
    let (a, pa, fa) = run();
    let (b, pb, fb) = run();
    assert_eq!(a, b);
    assert_eq!(pa, pb);
    assert_eq!(fa.samples, fb.samples);
    assert_eq!(
        fa.samples.len(),
        100 * 20,
        "one latent per evaluation image"
    );
    assert!(fa.metrics.log_z.is_finite() && fa.metrics.log_z_rw >= fa.metrics.log_z);
    assert!(fa.metrics.w2.is_none() && fa.metrics.true_log_z.is_none());
}

#[test]
fn pis_tb_and_fl_subtb_train_the_conditional_sampler() {
    for method in ["Pis", "Tb", "SubTb, forward_looking: true"] {
        let text = format!(
            "(seed: 4, target: Vae(repeats: 2), sampler: (steps: 4, sigma2: 5.0),
              network: (hidden: 8, harmonics: 4, joint_layers: 1, langevin: true),
              train: (method: {method}, iterations: 2, batch: 2, shards: 2),
              eval: (samples: 2, every: 0, w2: false, eubo: false))"
        );
        let cfg = ExperimentConfig::parse(&text, "vae").unwrap();
        let run = || {
            let mut tr = Trainer::new(&cfg).unwrap();
            let losses: Vec<f64> = (0..2).map(|_| tr.step().unwrap().loss).collect();
            (losses, tr.params.clone())
        };
        let (a, pa) = run();
        assert!(a.iter().all(|l| l.is_finite()), "{method}: {a:?}");
        assert_eq!((a, pa.clone()), run(), "{method} replays bitwise");
        assert_ne!(pa, Trainer::new(&cfg).unwrap().params, "{method} trained");
    }
}

/// Off-policy with local search on the conditional target: every buffer entry is a (z, x) pair
/// whose stored log R is log R(z; x) — the pairing the reference gets wrong (spec §9 item 13) —
/// and the run replays bitwise.
#[test]
fn off_policy_entries_pair_each_latent_with_its_image() {
    let text = "(seed: 6, target: Vae(repeats: 2), sampler: (steps: 4, sigma2: 5.0),
        network: (hidden: 8, harmonics: 4, joint_layers: 1),
        train: (method: VarGrad, iterations: 6, batch: 3, shards: 2,
                exploration: Some((std: 0.1, decay_iters: None)),
                off_policy: Some((buffer_capacity: 100, sampling: Rank(k: 0.01),
                    local_search: Some((steps: 6, burn_in: 2, step0: 0.001, adapt: Some(0.1),
                        target_acceptance: 0.574, window: 5, beta: 5.0)),
                    local_search_period: 4))),
        eval: (samples: 2, every: 0, w2: false, eubo: false))";
    let cfg = ExperimentConfig::parse(text, "vae-ls").unwrap();
    let run = || {
        let mut tr = Trainer::new(&cfg).unwrap();
        let losses: Vec<f64> = (0..6).map(|_| tr.step().unwrap().loss).collect();
        (tr, losses)
    };
    let (tr, losses) = run();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert_eq!(losses, run().1, "replays bitwise");
    let task = tr.vae.as_ref().unwrap();
    for (name, buf) in [
        ("replay", tr.replay.as_ref()),
        ("local search", tr.ls_replay.as_ref()),
    ] {
        let buf = buf.unwrap();
        assert!(!buf.is_empty(), "{name} buffer filled");
        assert_eq!(buf.dim(), 20 + PIXELS);
        let (entries, stored) = buf.entries();
        for (row, &want) in entries.chunks_exact(20 + PIXELS).zip(stored) {
            let mut got = [0f64];
            task.energy.log_reward(&row[..20], &row[20..], &mut got);
            assert_eq!(got[0], want, "{name}: log R(z; x) of the stored pair");
        }
    }
}

#[test]
fn vae_config_errors_name_the_field() {
    let bad = |train: &str| {
        let text = format!("(target: Vae(repeats: 5), train: ({train}))");
        ExperimentConfig::parse(&text, "vae.ron")
            .unwrap_err()
            .to_string()
    };
    assert!(bad("method: Db, iterations: 1").contains("train.method"));
    let one = "(target: Vae(repeats: 1), train: (method: VarGrad, iterations: 1))";
    assert!(ExperimentConfig::parse(one, "vae.ron")
        .unwrap_err()
        .to_string()
        .contains("target.repeats"));
}

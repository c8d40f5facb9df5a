//! Every tape op and the whole TB / VarGrad loss against f64 central differences.

mod common;

use diffusion_samplers::autodiff::gradcheck::gradcheck;
use diffusion_samplers::autodiff::{Tape, Var};
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::config::NetworkConfig;
use diffusion_samplers::losses::{trajectory_balance, vargrad};
use diffusion_samplers::nn::{DriftNet, FlowHead};
use diffusion_samplers::rng;
use diffusion_samplers::samplers::{rollout, Path};
use diffusion_samplers::tensor::Tensor;
use diffusion_samplers::tolerance::GRADCHECK_F64;
use diffusion_samplers::train::Trainer;

/// Random f64 tensor from a named stream.
fn randn(rows: usize, cols: usize, tag: u64) -> Tensor<f64> {
    let mut r = rng::stream(99, "autodiff-test", tag);
    Tensor::from_vec(
        rows,
        cols,
        (0..rows * cols).map(|_| rng::normal_f64(&mut r)).collect(),
    )
}

/// Check one op: `build` maps the input leaves to an output node; the scalar loss is
/// Σ c ⊙ y with fixed random c. Every input is perturbed coordinate by coordinate.
fn check_op(name: &str, inputs: Vec<Tensor<f64>>, build: &dyn Fn(&mut Tape<f64>, &[Var]) -> Var) {
    let shapes: Vec<(usize, usize)> = inputs.iter().map(|t| t.shape()).collect();
    let flat: Vec<f64> = inputs.iter().flat_map(|t| t.data.clone()).collect();
    let unflatten = |v: &[f64]| -> Vec<Tensor<f64>> {
        let mut off = 0;
        shapes
            .iter()
            .map(|&(r, c)| {
                let t = Tensor::from_vec(r, c, v[off..off + r * c].to_vec());
                off += r * c;
                t
            })
            .collect()
    };
    let forward = |v: &[f64]| {
        let mut tape = Tape::new();
        let vars: Vec<Var> = unflatten(v).into_iter().map(|t| tape.param(t)).collect();
        let y = build(&mut tape, &vars);
        (tape, vars, y)
    };
    let (tape, vars, y) = forward(&flat);
    let yv = tape.value(y).clone();
    let c = randn(yv.rows, yv.cols, 7_777);
    let grads = tape.backward(vec![(y, c.clone())]);
    let analytic: Vec<f64> = vars
        .iter()
        .zip(&shapes)
        .flat_map(|(v, &(r, cc))| {
            grads[v.0]
                .clone()
                .map(|g| g.data)
                .unwrap_or(vec![0.0; r * cc])
        })
        .collect();
    let mut f = |v: &[f64]| {
        let (tape, _, y) = forward(v);
        tape.value(y)
            .data
            .iter()
            .zip(&c.data)
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    if let Err(r) = gradcheck(&mut f, &flat, &analytic, 1e-6, GRADCHECK_F64) {
        panic!(
            "{name}: gradient mismatch at flat index {}: analytic {} vs numeric {}",
            r.worst_index, r.analytic, r.numeric
        );
    }
}

#[test]
fn linear_vjp() {
    check_op(
        "linear",
        vec![randn(5, 7, 1), randn(3, 7, 2), randn(1, 3, 3)],
        &|t, v| t.linear(v[0], v[1], v[2]),
    );
}

#[test]
fn gelu_vjp() {
    check_op("gelu", vec![randn(4, 9, 4)], &|t, v| t.gelu(v[0]));
}

#[test]
fn layer_norm_vjp() {
    // Rows of width 13 (an 8-lane block and a tail) and 3, with γ away from 1 and β from 0.
    for (tag, (rows, h)) in [(4, 13), (5, 3)].into_iter().enumerate() {
        let tag = 40 + 3 * tag as u64;
        check_op(
            "layer_norm",
            vec![
                randn(rows, h, tag),
                randn(1, h, tag + 1),
                randn(1, h, tag + 2),
            ],
            &|t, v| t.layer_norm(v[0], v[1], v[2]),
        );
    }
}

#[test]
fn add_row_vjp() {
    check_op("add_row", vec![randn(6, 5, 5), randn(3, 5, 6)], &|t, v| {
        t.add_row(v[0], v[1], 2)
    });
}

#[test]
fn time_features_vjp() {
    let ts = vec![0.0, 0.13, 0.5, 0.99];
    let freqs = vec![0.1, 3.0, 17.5];
    check_op("time_features", vec![randn(1, 3, 7)], &|t, v| {
        t.time_features(v[0], ts.clone(), freqs.clone())
    });
}

#[test]
fn langevin_add_vjp_scalar_and_per_dim() {
    for width in [1usize, 3] {
        check_op(
            "langevin_add",
            vec![randn(4, 6, 8), randn(5, width, 9)],
            &|t, v| {
                let g = t.constant(randn(4, 3, 10));
                t.langevin_add(v[0], v[1], 1, g)
            },
        );
        // An input on the tape (DIS's interpolated score is linear in x) gets s ⊙ dy too.
        check_op(
            "langevin_add, input on the tape",
            vec![randn(4, 6, 8), randn(5, width, 9), randn(4, 3, 10)],
            &|t, v| t.langevin_add(v[0], v[1], 1, v[2]),
        );
    }
}

#[test]
fn clip_vjp_away_from_the_limit() {
    // Values are N(0,1); a limit of 0.8 clips some of them, none within FD reach of ±0.8.
    let x = randn(5, 5, 11);
    assert!(x.data.iter().all(|v| (v.abs() - 0.8).abs() > 1e-3));
    assert!(
        x.data.iter().any(|v| v.abs() > 0.8),
        "the test must clip something"
    );
    check_op("clip", vec![x], &|t, v| t.clip(v[0], 0.8));
}

#[test]
fn em_logpf_vjp_fixed_and_learned_variance() {
    for learned in [None, Some(4.0)] {
        check_op("em_logpf", vec![randn(5, 6, 12)], &|t, v| {
            let x = t.constant(randn(5, 3, 13));
            let xn = t.constant(randn(5, 3, 14));
            t.em_logpf(v[0], x, xn, 0.1, 5f64.ln(), learned)
        });
    }
}

#[test]
fn em_logpf_vjp_through_the_states() {
    // PIS differentiates log p_F with respect to x and x' as well as the policy output.
    for learned in [None, Some(4.0)] {
        check_op(
            "em_logpf(states)",
            vec![randn(5, 6, 15), randn(5, 3, 16), randn(5, 3, 17)],
            &|t, v| t.em_logpf(v[0], v[1], v[2], 0.1, 5f64.ln(), learned),
        );
    }
}

#[test]
fn em_step_vjp_fixed_and_learned_variance() {
    for learned in [None, Some(4.0)] {
        check_op(
            "em_step",
            vec![randn(4, 6, 18), randn(4, 3, 19)],
            &|t, v| t.em_step(v[0], v[1], randn(4, 3, 20), 0.1, 5f64.ln(), learned),
        );
    }
}

#[test]
fn bridge_logpb_vjp() {
    check_op(
        "bridge_logpb",
        vec![randn(4, 3, 21), randn(4, 3, 22)],
        &|t, v| t.bridge_logpb(v[0], v[1], 0.75, 0.3),
    );
}

#[test]
fn add_vjp() {
    check_op("add", vec![randn(3, 4, 24), randn(3, 4, 25)], &|t, v| {
        let s = t.add(v[0], v[1]);
        t.add(s, v[0])
    });
}

#[test]
fn scale_vjp() {
    check_op("scale", vec![randn(3, 4, 26)], &|t, v| t.scale(v[0], 0.7));
}

#[test]
fn affine_head_vjp() {
    // o carries two extra columns (an unused log-variance head) that get no gradient.
    check_op(
        "affine_head",
        vec![randn(3, 4, 27), randn(3, 6, 28)],
        &|t, v| t.affine_head(v[0], v[1], 1.3, -0.6),
    );
}

#[test]
fn replace_head_vjp() {
    // o's first 4 columns are replaced (no gradient reaches them); its last 2 pass through.
    check_op(
        "replace_head",
        vec![randn(3, 6, 29), randn(3, 4, 30)],
        &|t, v| {
            let u = t.scale(v[1], 1.7);
            t.replace_head(v[0], u)
        },
    );
}

#[test]
fn row_function_vjp() {
    // y_b = Σ_j sin(x_bj), a function the tape does not know, given with its Jacobian.
    check_op("row_function", vec![randn(4, 3, 23)], &|t, v| {
        let xv = t.value(v[0]).clone();
        let vals: Vec<f64> = xv
            .data
            .chunks_exact(3)
            .map(|r| r.iter().map(|a| a.sin()).sum())
            .collect();
        let jac = Tensor::from_vec(4, 3, xv.data.iter().map(|a| a.cos()).collect());
        t.row_function(v[0], Tensor::from_vec(4, 1, vals), jac)
    });
}

/// A tiny experiment exercising every parameter block: LP (per-dim scale), learned variance and
/// LayerNorm.
fn tiny_config(
    method: &str,
    langevin: bool,
    learned_variance: bool,
    layer_norm: bool,
) -> ExperimentConfig {
    let text = format!(
        "(seed: 3, target: Gmm25,
          sampler: (steps: 4, sigma2: 5.0, learned_variance: {learned_variance}),
          network: (hidden: 8, harmonics: 4, joint_layers: 2, langevin: {langevin}, langevin_layers: 2, langevin_per_dim: true, layer_norm: {layer_norm}),
          train: (method: {method}, iterations: 1, batch: 5, shards: 2),
          eval: (samples: 8))"
    );
    ExperimentConfig::parse(&text, "tiny").unwrap()
}

/// The whole loss as a function of the f64 parameter vector along fixed (detached) trajectories.
fn loss_f64(tr: &Trainer, theta: &[f64], states: &[f32], tb: bool) -> (f64, Vec<f64>) {
    let b = tr.cfg.train.batch;
    let roll = rollout::<f64>(
        &tr.net,
        theta,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(states),
        true,
    );
    let mut lr = vec![0f64; b];
    tr.energy.log_reward(&roll.x_final, &mut lr);
    let lg = if tb {
        trajectory_balance(theta[tr.net.log_z_index()], &roll.log_pf, &roll.log_pb, &lr)
    } else {
        vargrad(&roll.log_pf, &roll.log_pb, &lr)
    };
    let seed = Tensor::from_vec(b, 1, lg.d_log_pf.clone());
    let seeds = roll
        .logpf_nodes
        .iter()
        .map(|&n| (n, seed.clone()))
        .collect();
    let grads = roll.tape.unwrap().backward(seeds);
    let mut g = tr.net.flat_grads(&roll.vars.unwrap(), &grads);
    if tb {
        g[tr.net.log_z_index()] = lg.d_log_z;
    }
    (lg.loss, g)
}

/// Trainer with all parameters perturbed (so the zero-initialised output layer passes gradient
/// everywhere), plus the states of iteration 0's trajectories.
fn perturbed(cfg: &ExperimentConfig) -> (Trainer, Vec<f32>) {
    let mut tr = Trainer::new(cfg).unwrap();
    let mut r = rng::stream(5, "perturb", 0);
    for p in tr.params.iter_mut() {
        *p += 0.3 * rng::normal_f64(&mut r) as f32;
    }
    let b = cfg.train.batch;
    let key = rng::stream_key(cfg.seed, "train-noise", 0);
    let path = Path::Forward {
        noise_key: key,
        row0: 0,
        total_rows: b,
        explore_std: 0.1,
    };
    let roll = rollout::<f32>(&tr.net, &tr.params, &tr.sampler, &*tr.energy, b, path, true);
    (tr, roll.states)
}

#[test]
fn whole_tb_and_vargrad_losses_match_finite_differences() {
    for (method, lp, lv, ln) in [
        ("Tb", true, true, false),
        ("Tb", false, false, false),
        ("VarGrad", true, false, false),
        // LayerNorm before every hidden GELU, the LP scale net's included.
        ("Tb", true, true, true),
    ] {
        let cfg = tiny_config(method, lp, lv, ln);
        let (tr, states) = perturbed(&cfg);
        let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
        let tb = method == "Tb";
        let (_, analytic) = loss_f64(&tr, &theta, &states, tb);
        assert!(
            analytic.iter().filter(|g| g.abs() > 1e-8).count() > analytic.len() / 2,
            "most blocks get gradient"
        );
        let mut f = |v: &[f64]| loss_f64(&tr, v, &states, tb).0;
        if let Err(r) = gradcheck(&mut f, &theta, &analytic, 1e-6, GRADCHECK_F64) {
            let spec = tr
                .net
                .layout
                .specs
                .iter()
                .find(|s| s.range().contains(&r.worst_index))
                .unwrap();
            panic!(
                "{method} lp={lp} lv={lv} ln={ln}: block {} index {}: analytic {} numeric {}",
                spec.name, r.worst_index, r.analytic, r.numeric
            );
        }
    }
}

/// The f32 training gradient (sharded, SIMD), by the whole-trajectory tape and by the two-pass
/// scheme, equals the f64 tape's within f32 accuracy.
#[test]
fn f32_training_gradient_matches_f64_tape() {
    for (method, ln) in [("Tb", false), ("VarGrad", false), ("Tb", true)] {
        let cfg = tiny_config(method, true, false, ln);
        let mut tr = Trainer::new(&cfg).unwrap();
        let mut r = rng::stream(6, "perturb", 0);
        for p in tr.params.iter_mut() {
            *p += 0.3 * rng::normal_f64(&mut r) as f32;
        }
        // Iteration 5's trajectories, regenerated in one shard to get their states.
        let b = cfg.train.batch;
        let key = rng::stream_key(cfg.seed, "train-noise", 5);
        let eps = 0.0;
        let path = Path::Forward {
            noise_key: key,
            row0: 0,
            total_rows: b,
            explore_std: eps,
        };
        let roll = rollout::<f32>(&tr.net, &tr.params, &tr.sampler, &*tr.energy, b, path, true);
        let theta: Vec<f64> = tr.params.iter().map(|&p| p as f64).collect();
        let (loss64, g64) = loss_f64(&tr, &theta, &roll.states, method == "Tb");
        common::assert_trainer_matches(&tr, 5, loss64, &g64, &format!("{method} ln={ln}"));
        // The memory-light two-pass gradient (one step's graph at a time), LP term included.
        let mut two = cfg.clone();
        two.train.two_pass = true;
        let mut tr2 = Trainer::new(&two).unwrap();
        tr2.set_params(tr.params.clone());
        common::assert_trainer_matches(
            &tr2,
            5,
            loss64,
            &g64,
            &format!("{method} ln={ln}, two-pass"),
        );
    }
}

/// The conditional network (the Pendulum and VAE posteriors' state encoder) with LayerNorm:
/// policy_rows' output and log Z(c) against central differences in every parameter, so the
/// conditional encoder's LayerNorm blocks (`s.lin.ln.*`, `s.k.ln.*`) are covered too.
#[test]
fn conditional_network_with_layer_norm_matches_finite_differences() {
    let cfg = NetworkConfig {
        hidden: 6,
        harmonics: 3,
        joint_layers: 1,
        layer_norm: true,
        ..NetworkConfig::default()
    };
    let (d, c, b) = (2usize, 5usize, 4usize);
    let net = DriftNet::build(d, &cfg, FlowHead::ConditionLogZ, Some(c));
    let mut r = rng::stream(21, "perturb", 0);
    let theta: Vec<f64> = net
        .init(4)
        .iter()
        .map(|&p| p as f64 + 0.3 * rng::normal_f64(&mut r))
        .collect();
    let x = randn(b, d, 60);
    let cond = randn(b, c, 61);
    let times: Vec<f64> = (0..b).map(|i| i as f64 / b as f64).collect();
    let co = randn(b, 2 * d, 62);
    let cz = randn(b, 1, 63);
    let forward = |v: &[f64]| {
        let mut tape = Tape::<f64>::new();
        let vars = net.bind(&mut tape, v);
        let temb = net.time_embedding(&mut tape, &vars, &times);
        let xv = tape.constant(x.clone());
        let cv = tape.constant(cond.clone());
        let emb = net.condition_embedding(&mut tape, &vars, cv);
        let o = net.policy_rows(&mut tape, &vars, xv, temb, Some(emb));
        let z = net.conditional_log_z(&mut tape, &vars, emb, b);
        let loss = dot(&tape.value(o).data, &co.data) + dot(&tape.value(z).data, &cz.data);
        (tape, vars, o, z, loss)
    };
    let (tape, vars, o, z, _) = forward(&theta);
    let grads = tape.backward(vec![(o, co.clone()), (z, cz.clone())]);
    let analytic = net.flat_grads(&vars, &grads);
    for name in [
        "s.lin.ln.gain",
        "s.0.ln.bias",
        "trunk.ln.gain",
        "joint.0.ln.gain",
    ] {
        let range = net.layout.find(name).expect(name).range();
        assert!(
            analytic[range].iter().any(|g| g.abs() > 1e-9),
            "{name} gets no gradient"
        );
    }
    let mut f = |v: &[f64]| forward(v).4;
    if let Err(e) = gradcheck(&mut f, &theta, &analytic, 1e-6, GRADCHECK_F64) {
        let spec = net
            .layout
            .specs
            .iter()
            .find(|s| s.range().contains(&e.worst_index))
            .unwrap();
        panic!(
            "block {}: analytic {} numeric {}",
            spec.name, e.analytic, e.numeric
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

//! The dense ReLU MLP's hand-written backward (vs f64 central differences) and IQL on tiny
//! offline datasets with known answers: expectile regression, a 2-step Bellman chain, AWR's pull
//! toward the better action, the flat round trip and bitwise determinism.

use diffusion_samplers::nn::mlp::Mlp;
use diffusion_samplers::rl::iql::{Iql, IqlConfig, IqlLosses, OfflineData};
use diffusion_samplers::rng;
use diffusion_samplers::tolerance::{Tolerance, F32_VS_F64, GRADCHECK_F64};

/// A short IQL training on a tiny dataset whose regression targets are noisy within a minibatch
/// (several actions or rewards per state, or the AWR policy's ±1 actions): V, Q and the policy
/// keep a minibatch-noise jitter. Measured over seeds 1–6 of the expectile test (5000 steps,
/// B = 64, lr 3e-4): |V − expectile| ≤ 0.036, |Q − E[r | a]| ≤ 0.050 on targets 0–4; the band
/// is twice that, still far inside the gaps the tests tell apart (expectile vs mean: 0.45).
const IQL_NOISY_FIT: Tolerance = Tolerance {
    name: "iql-noisy-fit",
    abs: 0.1,
    rel: 0.0,
};
/// The same where every target is deterministic given (s, a): only optimisation error is left.
const IQL_EXACT_FIT: Tolerance = Tolerance {
    name: "iql-exact-fit",
    abs: 0.01,
    rel: 0.0,
};

/// The f32 ∂Q/∂a against central differences of the f32 Q at h = 1e-3: rounding of q (|q| ≲ 2,
/// ~1e-7 each) over 2h gives ~1e-4; measured ≤ 6e-5 on gradients of 0.01–0.4.
const Q_GRAD_VS_FD: Tolerance = Tolerance {
    name: "q-grad-vs-fd",
    abs: 3e-4,
    rel: 1e-3,
};

/// A small, fast config for the known-answer tests: the paper's lr, τ, β and weight cap, a
/// faster target EMA (0.05) so the bootstrap settles in a few thousand steps.
fn tiny_cfg(steps: usize) -> IqlConfig {
    IqlConfig {
        hidden: 32,
        steps,
        batch: 64,
        target_ema: 0.05,
        ..IqlConfig::default()
    }
}

/// n random tuples with S = 3, A = 1 (standard normal observations, torques in [−2, 2]).
fn random_data(n: usize, seed: u64) -> OfflineData {
    let mut r = rng::stream(seed, "test-iql-data", 0);
    let mut normals = |k: usize| {
        let mut v = vec![0f32; k];
        rng::fill_normals(&mut r, &mut v);
        v
    };
    let obs = normals(3 * n);
    let next_obs = normals(3 * n);
    let rewards = normals(n);
    let actions = normals(n).iter().map(|&a| 2.0 * a.tanh()).collect();
    let terminals = (0..n).map(|i| if i % 7 == 6 { 1.0 } else { 0.0 }).collect();
    OfflineData {
        obs,
        actions,
        rewards,
        next_obs,
        terminals,
        obs_dim: 3,
        action_dim: 1,
    }
}

/// Rows of single-state data: every row at observation `s`, terminal, (action, reward) pairs.
fn one_state_data(s: [f32; 3], rows: &[(f32, f32)]) -> OfflineData {
    OfflineData {
        obs: rows.iter().flat_map(|_| s).collect(),
        actions: rows.iter().map(|r| r.0).collect(),
        rewards: rows.iter().map(|r| r.1).collect(),
        next_obs: vec![0.0; 3 * rows.len()],
        terminals: vec![1.0; rows.len()],
        obs_dim: 3,
        action_dim: 1,
    }
}

/// The τ-expectile e of values x with weights p: Σ p·|τ − 1(x < e)|·(x − e) = 0 (decreasing
/// in e), by bisection.
fn expectile(x: &[f64], p: &[f64], tau: f64) -> f64 {
    let g = |e: f64| -> f64 {
        x.iter()
            .zip(p)
            .map(|(&xi, &pi)| pi * if xi < e { 1.0 - tau } else { tau } * (xi - e))
            .sum()
    };
    let (mut lo, mut hi) = (-1e3, 1e3);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if g(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

fn train(data: &OfflineData, cfg: &IqlConfig, seed: u64) -> Iql {
    Iql::train(data, cfg, seed, &mut |_, _| {}).expect("IQL trains")
}

/// Backward of the MLP against f64 central differences, for every parameter and input, on
/// points away from the ReLU kinks; and its f32 forward against the f64 one.
#[test]
fn mlp_backward_matches_central_differences() {
    for (sizes, rows) in [(vec![4, 7, 5, 1], 6), (vec![3, 6, 2], 5)] {
        let net = Mlp::new(&sizes);
        let p32 = net.init(11, "test-mlp-init");
        assert_eq!(p32.len(), net.num_params());
        let p: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
        let mut r = rng::stream(11, "test-mlp-points", sizes.len() as u64);
        let mut x32 = vec![0f32; rows * net.input_dim()];
        let mut c32 = vec![0f32; rows * net.output_dim()];
        rng::fill_normals(&mut r, &mut x32);
        rng::fill_normals(&mut r, &mut c32);
        let x: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let c: Vec<f64> = c32.iter().map(|&v| v as f64).collect();

        // A step of h moves a pre-activation by at most ~h·(|x| + |w|)·width ≪ this margin.
        let pass = net.forward(&p, &x, rows);
        let margin = pass.pre[..net.layers() - 1]
            .iter()
            .flatten()
            .fold(f64::INFINITY, |m, &v| m.min(v.abs()));
        assert!(
            margin > 1e-3,
            "{sizes:?}: a point sits on a ReLU kink ({margin})"
        );

        // L = Σ c ⊙ output, so dy = c.
        let loss = |p: &[f64], x: &[f64]| -> f64 {
            let out = net.forward(p, x, rows);
            out.output().iter().zip(&c).map(|(o, c)| o * c).sum()
        };
        let (gp, gx) = net.backward(&p, &pass, &x, &c);
        let h = 1e-6;
        let central = |f: &dyn Fn(usize, f64) -> f64, n: usize| -> Vec<f64> {
            (0..n).map(|i| (f(i, h) - f(i, -h)) / (2.0 * h)).collect()
        };
        let fd_p = central(
            &|i, d| {
                let mut q = p.clone();
                q[i] += d;
                loss(&q, &x)
            },
            p.len(),
        );
        let fd_x = central(
            &|i, d| {
                let mut y = x.clone();
                y[i] += d;
                loss(&p, &y)
            },
            x.len(),
        );
        GRADCHECK_F64.assert_all_close(&gp, &fd_p, &format!("{sizes:?} dparams"));
        GRADCHECK_F64.assert_all_close(&gx, &fd_x, &format!("{sizes:?} dx"));
        assert!(gp.iter().any(|&g| g != 0.0) && gx.iter().any(|&g| g != 0.0));

        let out32: Vec<f64> = net
            .forward(&p32, &x32, rows)
            .output()
            .iter()
            .map(|&v| v as f64)
            .collect();
        F32_VS_F64.assert_all_close(&out32, pass.output(), &format!("{sizes:?} f32 forward"));
    }
}

/// One state, four actions with frequencies 0.4/0.3/0.2/0.1 and mean rewards 0, 1, 2, 4 (the
/// third action's reward is 1 or 3, so Q must average it); terminal everywhere. Then
/// Q(s, a_k) = E[r | a_k] and V(s) is the τ-expectile of those Q values under the action
/// frequencies (not of the raw rewards: V regresses on Q).
#[test]
fn value_is_the_expectile_of_q_and_q_the_mean_reward() {
    let s = [0.5, -0.3, 0.2];
    let acts = [-1.5f32, -0.5, 0.5, 1.5];
    let counts = [4, 3, 2, 1];
    let mut rows = Vec::new();
    for _ in 0..10 {
        for (k, &n) in counts.iter().enumerate() {
            for j in 0..n {
                let r = match k {
                    0 => 0.0,
                    1 => 1.0,
                    2 => [1.0, 3.0][j % 2],
                    _ => 4.0,
                };
                rows.push((acts[k], r));
            }
        }
    }
    let data = one_state_data(s, &rows);
    let cfg = tiny_cfg(5000);
    let iql = train(&data, &cfg, 1);

    let obs: Vec<f32> = acts.iter().flat_map(|_| s).collect();
    let q: Vec<f64> = iql.q(&obs, &acts).iter().map(|&v| v as f64).collect();
    IQL_NOISY_FIT.assert_all_close(&q, &[0.0, 1.0, 2.0, 4.0], "Q(s, a_k) vs E[r | a_k]");

    let p: Vec<f64> = counts.iter().map(|&c| c as f64 / 10.0).collect();
    let v = iql.value(&s)[0] as f64;
    let e_true = expectile(&[0.0, 1.0, 2.0, 4.0], &p, cfg.expectile);
    let e_learned = expectile(&q, &p, cfg.expectile);
    eprintln!("Q {q:?}, V {v}, expectile of E[r|a] {e_true}, of the learned Q {e_learned}");
    // The expectile is well above the mean 1.1: V is not a mean regression.
    assert!(e_true > 1.5, "{e_true}");
    IQL_NOISY_FIT.assert_all_close(&[v], &[e_learned], "V vs the expectile of min-Q");
    IQL_NOISY_FIT.assert_all_close(&[v], &[e_true], "V vs the expectile of E[r | a]");
}

/// s0 → s1 → terminal with one action, rewards r0, r1: Q(s1) = V(s1) = r1 and
/// Q(s0) = r0 + γ·r1 through the V bootstrap.
#[test]
fn bellman_backup_on_a_two_step_chain() {
    let (r0, r1) = (1.0f32, 2.0f32);
    let (s0, s1, end) = ([1.0f32, 0.0, 0.0], [0.0f32, 1.0, 0.0], [0.0f32, 0.0, 1.0]);
    let data = OfflineData {
        obs: [s0, s1].concat(),
        actions: vec![0.0, 0.0],
        rewards: vec![r0, r1],
        next_obs: [s1, end].concat(),
        terminals: vec![0.0, 1.0],
        obs_dim: 3,
        action_dim: 1,
    };
    let cfg = IqlConfig {
        discount: 0.9,
        ..tiny_cfg(3000)
    };
    let iql = train(&data, &cfg, 2);
    let q: Vec<f64> = iql
        .q(&[s0, s1].concat(), &[0.0, 0.0])
        .iter()
        .map(|&v| v as f64)
        .collect();
    let v: Vec<f64> = iql
        .value(&[s0, s1].concat())
        .iter()
        .map(|&v| v as f64)
        .collect();
    let want_q0 = (r0 + 0.9 * r1) as f64;
    eprintln!("Q {q:?} (want {want_q0}, {r1}), V {v:?}");
    IQL_EXACT_FIT.assert_all_close(&q, &[want_q0, r1 as f64], "Q(s0), Q(s1)");
    IQL_EXACT_FIT.assert_all_close(&v, &[want_q0, r1 as f64], "V(s0), V(s1)");
}

/// One state, actions ±1 equally often, reward 1 for +1 and 0 for −1 (terminal). AWR's
/// Gaussian-mean optimum is the weighted mean Σ w_k a_k / Σ w_k, w_k = min(e^{β(Q(a_k) − V)},
/// 100) — about 0.9 here (Q = 1, 0 and V = the 0.7-expectile 0.7) — while plain behaviour
/// cloning (β = 0) stays at the data mean 0.
#[test]
fn awr_policy_moves_toward_the_better_action() {
    let s = [0.2, 0.9, -0.4];
    let rows: Vec<(f32, f32)> = (0..20)
        .map(|i| if i % 2 == 0 { (1.0, 1.0) } else { (-1.0, 0.0) })
        .collect();
    let data = one_state_data(s, &rows);
    let cfg = tiny_cfg(3000);
    let iql = train(&data, &cfg, 3);
    let a = iql.policy_action(&s)[0] as f64;
    let q = iql.q(&[s, s].concat(), &[1.0, -1.0]);
    let v = iql.value(&s)[0];
    let w: Vec<f64> = q
        .iter()
        .map(|&q| {
            (cfg.awr_beta * (q - v) as f64)
                .exp()
                .min(cfg.awr_max_weight)
        })
        .collect();
    let want = (w[0] - w[1]) / (w[0] + w[1]);
    eprintln!("AWR action {a}, weighted mean {want} (Q {q:?}, V {v})");
    assert!(
        (a - 1.0).abs() < (a + 1.0).abs(),
        "action {a} not closer to +1"
    );
    assert!(want > 0.8, "the weighted mean {want}");
    IQL_NOISY_FIT.assert_all_close(&[a], &[want], "AWR action vs the weighted mean");

    let bc = train(
        &data,
        &IqlConfig {
            awr_beta: 0.0,
            ..cfg
        },
        3,
    );
    let a_bc = bc.policy_action(&s)[0] as f64;
    IQL_NOISY_FIT.assert_all_close(&[a_bc], &[0.0], "β = 0 (behaviour cloning) action");
}

/// ∂Q/∂a of the min twin critic against central differences of `q` (f32 function, f64 step).
#[test]
fn q_action_gradient_matches_differences() {
    // Rewards that depend on the action, so Q has a real slope in a.
    let mut data = random_data(64, 4);
    data.rewards = data
        .actions
        .iter()
        .map(|&a| 1.5 * a - 0.5 * a * a)
        .collect();
    let iql = train(
        &data,
        &IqlConfig {
            hidden: 16,
            ..tiny_cfg(200)
        },
        4,
    );
    let obs = &data.obs[..8 * 3];
    let acts = &data.actions[..8];
    let (q, g) = iql.q_and_action_grad(obs, acts);
    assert_eq!(q, iql.q(obs, acts), "q_and_action_grad's q is q's");
    // Small enough that few steps straddle a ReLU kink (Q is piecewise linear in a), large
    // enough that f32 rounding of q (~1e-7) stays far below the tolerance after dividing by 2h.
    let h = 1e-3f32;
    let fd: Vec<f64> = (0..8)
        .map(|i| {
            let (mut p, mut m) = (acts.to_vec(), acts.to_vec());
            p[i] += h;
            m[i] -= h;
            let (qp, qm) = (iql.q(obs, &p)[i] as f64, iql.q(obs, &m)[i] as f64);
            (qp - qm) / (2.0 * h as f64)
        })
        .collect();
    let g: Vec<f64> = g.iter().map(|&v| v as f64).collect();
    Q_GRAD_VS_FD.assert_all_close(&g, &fd, "dQ/da");
    assert!(
        g.iter().any(|v| v.abs() > 0.1),
        "dQ/da {g:?} too flat to test"
    );
}

/// to_flat → from_flat reproduces every output bitwise; a wrong length is an Err naming both.
#[test]
fn flat_round_trip_is_exact() {
    let data = random_data(50, 5);
    let cfg = IqlConfig {
        hidden: 8,
        ..tiny_cfg(100)
    };
    let iql = train(&data, &cfg, 5);
    let flat = iql.to_flat();
    assert_eq!(flat.len(), Iql::flat_len(&cfg, 3, 1));
    let back = Iql::from_flat(&cfg, 3, 1, &flat).expect("round trip");
    assert_eq!(back.to_flat(), flat);
    let (obs, acts) = (&data.obs[..], &data.actions[..]);
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(back.q(obs, acts)), bits(iql.q(obs, acts)));
    assert_eq!(bits(back.value(obs)), bits(iql.value(obs)));
    assert_eq!(bits(back.policy_action(obs)), bits(iql.policy_action(obs)));
    let (g0, g1) = (
        iql.q_and_action_grad(obs, acts).1,
        back.q_and_action_grad(obs, acts).1,
    );
    assert_eq!(bits(g0), bits(g1));

    let err = Iql::from_flat(&cfg, 3, 1, &flat[1..]).unwrap_err();
    let (got, want) = (format!("{}", flat.len() - 1), format!("{}", flat.len()));
    assert!(err.contains(&got) && err.contains(&want), "{err}");
    assert!(Iql::from_flat(&IqlConfig { hidden: 9, ..cfg }, 3, 1, &flat).is_err());
}

/// Same (data, config, seed) → the same bits, progress reports included; another seed differs.
#[test]
fn training_is_bitwise_deterministic() {
    let data = random_data(300, 6);
    let cfg = IqlConfig {
        hidden: 8,
        batch: 16,
        ..tiny_cfg(2000)
    };
    let run = |seed| {
        let mut reports: Vec<(usize, IqlLosses)> = Vec::new();
        let iql = Iql::train(&data, &cfg, seed, &mut |s, l| reports.push((s, l))).unwrap();
        (iql.to_flat(), reports)
    };
    let (a, ra) = run(7);
    let (b, rb) = run(7);
    let (c, _) = run(8);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "same seed, different parameters");
    assert_ne!(bits(&a), bits(&c), "different seeds, same parameters");
    assert_eq!(ra.iter().map(|r| r.0).collect::<Vec<_>>(), [1000, 2000]);
    for (x, y) in ra.iter().zip(&rb) {
        let (x, y) = (x.1, y.1);
        assert_eq!(
            [x.value, x.q, x.policy].map(f64::to_bits),
            [y.value, y.q, y.policy].map(f64::to_bits)
        );
        assert!(x.value.is_finite() && x.q.is_finite() && x.policy.is_finite());
    }
}

/// A non-finite reward surfaces as an Err naming the step and the loss, not as NaN weights.
#[test]
fn non_finite_loss_is_an_error() {
    let mut data = random_data(4, 9);
    data.rewards[2] = f32::NAN;
    let err = Iql::train(&data, &tiny_cfg(50), 9, &mut |_, _| {}).unwrap_err();
    assert!(err.contains("IQL step") && err.contains("loss"), "{err}");

    let mut bad = random_data(4, 9);
    bad.next_obs.pop();
    let err = Iql::train(&bad, &tiny_cfg(1), 9, &mut |_, _| {}).unwrap_err();
    assert!(err.contains("next_obs"), "{err}");
}

/// The config's serde defaults are the paper's (`()` is the default config) and unknown
/// fields are rejected.
#[test]
fn config_defaults_are_the_papers() {
    let cfg: IqlConfig = ron::from_str("()").unwrap();
    assert_eq!(cfg, IqlConfig::default());
    assert_eq!(
        (cfg.hidden, cfg.batch, cfg.lr, cfg.expectile, cfg.discount),
        (256, 256, 3e-4, 0.7, 0.99)
    );
    assert_eq!(
        (
            cfg.target_ema,
            cfg.awr_beta,
            cfg.awr_max_weight,
            cfg.max_action
        ),
        (0.005, 3.0, 100.0, 2.0)
    );
    assert!(ron::from_str::<IqlConfig>("(tau: 0.7)").is_err());
    let cfg: IqlConfig = ron::from_str("(steps: 5, expectile: 0.9)").unwrap();
    assert_eq!((cfg.steps, cfg.expectile, cfg.hidden), (5, 0.9, 256));
    assert!(IqlConfig {
        expectile: 1.0,
        ..cfg
    }
    .validate()
    .is_err());
}

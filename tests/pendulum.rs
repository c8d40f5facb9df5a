//! The Pendulum stand-in (spec rtb2024 §4.5 B): Gym `Pendulum-v1` dynamics recomputed by hand,
//! the scripted expert's swing-up and LQR, the D4RL-style datasets and the score normaliser.

use diffusion_samplers::rl::pendulum::*;
use diffusion_samplers::rng;
use std::f64::consts::PI;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The Gym step written out once more, literally: (θ', θ̇', reward).
fn gym_step(th: f64, thdot: f64, u: f64) -> (f64, f64, f64) {
    let u = u.clamp(-2.0, 2.0);
    let norm = ((th + PI) % (2.0 * PI) + 2.0 * PI) % (2.0 * PI) - PI;
    let cost = norm * norm + 0.1 * thdot * thdot + 0.001 * u * u;
    let new_thdot = (thdot + (3.0 * 10.0 / (2.0 * 1.0) * th.sin() + 3.0 / (1.0 * 1.0) * u) * 0.05)
        .clamp(-8.0, 8.0);
    (th + new_thdot * 0.05, new_thdot, -cost)
}

#[test]
fn one_step_matches_hand_computation() {
    // θ = 0.3, θ̇ = −1.2, u = 0.7: cost = 0.09 + 0.144 + 0.00049.
    let mut p = Pendulum {
        theta: 0.3,
        theta_dot: -1.2,
    };
    let r = p.step(0.7);
    let thdot = -1.2 + (15.0 * 0.3f64.sin() + 2.1) * 0.05;
    assert!((r - -(0.09 + 0.144 + 0.00049)).abs() < 1e-12, "reward {r}");
    assert!((p.theta_dot - thdot).abs() < 1e-12, "θ̇ {}", p.theta_dot);
    assert!(
        (p.theta - (0.3 + thdot * 0.05)).abs() < 1e-12,
        "θ {}",
        p.theta
    );

    // θ = 4 wraps to 4 − 2π in the cost, but stays raw in the state (as Gym).
    let mut p = Pendulum {
        theta: 4.0,
        theta_dot: 0.5,
    };
    let r = p.step(-1.0);
    let w = 4.0 - 2.0 * PI;
    assert!(
        (r - -(w * w + 0.1 * 0.25 + 0.001)).abs() < 1e-12,
        "reward {r}"
    );
    let thdot = 0.5 + (15.0 * 4.0f64.sin() - 3.0) * 0.05;
    assert!((p.theta_dot - thdot).abs() < 1e-12);
    assert!((p.theta - (4.0 + thdot * 0.05)).abs() < 1e-12);

    // A grid of states and torques against the literal transcription.
    for i in 0..41 {
        for j in 0..9 {
            let (th, thdot, u) = (
                -7.0 + 0.35 * i as f64,
                -8.0 + 2.0 * j as f64,
                -3.0 + 0.15 * i as f64,
            );
            let mut p = Pendulum {
                theta: th,
                theta_dot: thdot,
            };
            let r = p.step(u);
            let (th2, thdot2, r2) = gym_step(th, thdot, u);
            assert!((p.theta - th2).abs() < 1e-12 && (p.theta_dot - thdot2).abs() < 1e-12);
            assert!((r - r2).abs() < 1e-12, "({th}, {thdot}, {u}): {r} vs {r2}");
        }
    }
}

#[test]
fn speed_and_torque_are_clipped() {
    // θ = π/2, θ̇ = 7.9, u = 2: 7.9 + (15 + 6)·0.05 = 8.95 → 8.
    let mut p = Pendulum {
        theta: PI / 2.0,
        theta_dot: 7.9,
    };
    p.step(2.0);
    assert_eq!(p.theta_dot, 8.0);
    assert!((p.theta - (PI / 2.0 + 0.4)).abs() < 1e-12);
    let mut p = Pendulum {
        theta: -PI / 2.0,
        theta_dot: -7.9,
    };
    p.step(-2.0);
    assert_eq!(p.theta_dot, -8.0);

    // Torques beyond ±2 act (and cost) exactly as ±2.
    for (big, edge) in [(5.0, 2.0), (-100.0, -2.0), (2.0000001, 2.0)] {
        let start = Pendulum {
            theta: 1.1,
            theta_dot: 0.3,
        };
        let (mut a, mut b) = (start, start);
        let (ra, rb) = (a.step(big), b.step(edge));
        assert_eq!(a, b);
        assert_eq!(ra.to_bits(), rb.to_bits());
    }
    // Within the range the torque matters: 1.9 differs from 2.
    let start = Pendulum {
        theta: 1.1,
        theta_dot: 0.3,
    };
    let (mut a, mut b) = (start, start);
    a.step(1.9);
    b.step(2.0);
    assert_ne!(a, b);
}

#[test]
fn reward_scores_the_state_before_the_step() {
    let mut p = Pendulum {
        theta: 0.0,
        theta_dot: 0.0,
    };
    // Upright at rest, no torque: cost 0 now, although the step moves nothing (sin 0 = 0).
    assert_eq!(p.step(0.0), 0.0);
    // Upright at rest, torque 2: reward −0.001·4 only; the state after has θ̇ = 0.3, θ = 0.015.
    let r = p.step(2.0);
    assert!((r - -0.004).abs() < 1e-15, "reward {r}");
    assert!((p.theta_dot - 0.3).abs() < 1e-12 && (p.theta - 0.015).abs() < 1e-12);
    // The next reward sees that post-step state.
    let r = p.step(0.0);
    assert!(
        (r - -(0.015f64.powi(2) + 0.1 * 0.09)).abs() < 1e-12,
        "reward {r}"
    );
}

#[test]
fn reset_and_observation() {
    let mut lo = [f64::MAX; 2];
    let mut hi = [f64::MIN; 2];
    for k in 0..2000 {
        let p = Pendulum::reset(&mut rng::stream(3, "reset-test", k));
        lo = [lo[0].min(p.theta), lo[1].min(p.theta_dot)];
        hi = [hi[0].max(p.theta), hi[1].max(p.theta_dot)];
        let o = p.observe();
        assert_eq!(o, [p.theta.cos(), p.theta.sin(), p.theta_dot]);
    }
    // Inside [−π, π] × [−1, 1] and spread over it (2000 draws leave gaps ≪ 0.02).
    assert!(lo[0] >= -PI && hi[0] <= PI && lo[1] >= -1.0 && hi[1] <= 1.0);
    assert!(lo[0] < -PI + 0.02 && hi[0] > PI - 0.02 && lo[1] < -0.99 && hi[1] > 0.99);
    assert_eq!(angle_normalize(PI), -PI);
    assert!((angle_normalize(3.0 * PI + 0.5) - (-PI + 0.5)).abs() < 1e-12);
    assert!((angle_normalize(-0.25) - -0.25).abs() < 1e-15);
}

#[test]
fn lqr_solves_riccati_and_stabilises_the_linearisation() {
    let (k, p) = *lqr();
    // x' = A x + B u by hand: θ̇' = θ̇ + (15θ + 3u)·0.05, θ' = θ + 0.05·θ̇'.
    let a = [[1.0 + 15.0 * 0.0025, 0.05], [0.75, 1.0]];
    let b = [3.0 * 0.0025, 0.15];
    let (la, lb) = linearisation();
    for i in 0..2 {
        assert!((lb[i] - b[i]).abs() < 1e-15, "B {lb:?}");
        for j in 0..2 {
            assert!((la[i][j] - a[i][j]).abs() < 1e-15, "A {la:?}");
        }
    }
    // Riccati residual: P = Q + AᵀPA − AᵀPB (R + BᵀPB)⁻¹ BᵀPA.
    let pb = [
        p[0][0] * b[0] + p[0][1] * b[1],
        p[1][0] * b[0] + p[1][1] * b[1],
    ];
    let bpb = b[0] * pb[0] + b[1] * pb[1];
    let q = [[1.0, 0.0], [0.0, 0.1]];
    let pa = |i: usize, j: usize| p[i][0] * a[0][j] + p[i][1] * a[1][j];
    let bpa = [
        b[0] * pa(0, 0) + b[1] * pa(1, 0),
        b[0] * pa(0, 1) + b[1] * pa(1, 1),
    ];
    for i in 0..2 {
        assert!((k[i] - bpa[i] / (0.001 + bpb)).abs() < 1e-9 * k[i].abs());
        for j in 0..2 {
            let apa = a[0][i] * pa(0, j) + a[1][i] * pa(1, j);
            let rhs = q[i][j] + apa - bpa[i] * bpa[j] / (0.001 + bpb);
            assert!(
                (p[i][j] - rhs).abs() < 1e-9,
                "P[{i}][{j}] {} vs {rhs}",
                p[i][j]
            );
        }
    }
    // Closed loop A − BK: both eigenvalues inside the unit circle (Jury: |det| < 1,
    // |tr| < 1 + det).
    let c = [
        [a[0][0] - b[0] * k[0], a[0][1] - b[0] * k[1]],
        [a[1][0] - b[1] * k[0], a[1][1] - b[1] * k[1]],
    ];
    let (tr, det) = (c[0][0] + c[1][1], c[0][0] * c[1][1] - c[0][1] * c[1][0]);
    assert!(det.abs() < 1.0 && tr.abs() < 1.0 + det, "tr {tr} det {det}");
    assert!(k[0] > 0.0 && k[1] > 0.0, "K {k:?}");
}

#[test]
fn expert_swings_up_from_hanging_and_holds() {
    let mut p = Pendulum {
        theta: PI,
        theta_dot: 0.0,
    };
    let mut ret = 0.0;
    for t in 0..HORIZON {
        let u = expert_action(&p);
        assert!(u.abs() <= MAX_TORQUE);
        ret += p.step(u);
        if t >= HORIZON - 50 {
            let a = angle_normalize(p.theta);
            assert!(a.abs() < 0.05, "step {t}: θ = {a}");
        }
    }
    // Hanging is the worst start; the swing-up still costs well under the random policy's mean.
    assert!(ret > -700.0, "return from hanging {ret}");
}

#[test]
fn expert_and_random_returns() {
    let n = 20;
    let expert = run_episodes(n, 11, &mut |_, obs| expert_batch(obs));
    let mut random = RandomPolicy::new(11, n);
    let rand = run_episodes(n, 11, &mut |t, _| random.act(t));
    let (e, r) = (mean(&expert), mean(&rand));
    assert!(e > -300.0, "expert mean {e}");
    assert!(r < -900.0, "random mean {r}");
    // The expert wins on every single start, not only on average.
    for (k, (x, y)) in expert.iter().zip(&rand).enumerate() {
        assert!(x > y, "episode {k}: expert {x} random {y}");
    }
}

#[test]
fn run_episodes_steps_each_episode_from_its_stream() {
    let (n, seed) = (3, 42);
    let mut seen_t = Vec::new();
    let rets = run_episodes(n, seed, &mut |t, obs| {
        assert_eq!(obs.len(), n * OBS_DIM);
        if t == 0 {
            for k in 0..n {
                let p = Pendulum::reset(&mut rng::stream(seed, "pendulum-episode", k as u64));
                let o = p.observe().map(|v| v as f32);
                assert_eq!(&obs[k * 3..k * 3 + 3], &o);
            }
        }
        seen_t.push(t);
        (0..n).map(|k| 0.5 * k as f32 - 0.5).collect()
    });
    assert_eq!(seen_t, (0..HORIZON).collect::<Vec<_>>());
    // The same episodes stepped one by one.
    for (k, &got) in rets.iter().enumerate() {
        let mut p = Pendulum::reset(&mut rng::stream(seed, "pendulum-episode", k as u64));
        let want: f64 = (0..HORIZON).fold(0.0, |acc, _| acc + p.step(0.5 * k as f64 - 0.5));
        assert_eq!(got.to_bits(), want.to_bits(), "episode {k}");
    }
}

/// Transitions chain within episodes, rewards and next observations recompute from (obs,
/// action), returns are the per-episode sums.
fn check_consistency(d: &Dataset, episodes: usize) {
    assert_eq!(d.transitions.len(), episodes * HORIZON);
    assert_eq!(d.episode_returns.len(), episodes);
    for (e, ep) in d.transitions.chunks_exact(HORIZON).enumerate() {
        let mut sum = 0.0;
        for (t, tr) in ep.iter().enumerate() {
            assert!(!tr.terminal);
            assert!(tr.action.abs() <= MAX_TORQUE);
            if t + 1 < HORIZON {
                assert_eq!(tr.next_obs, ep[t + 1].obs, "episode {e} step {t}");
            }
            let theta = tr.obs[1].atan2(tr.obs[0]);
            let mut p = Pendulum {
                theta,
                theta_dot: tr.obs[2],
            };
            let want =
                -(theta * theta + 0.1 * tr.obs[2] * tr.obs[2] + 0.001 * tr.action * tr.action);
            assert!((tr.reward - want).abs() < 1e-9, "episode {e} step {t}");
            assert!((p.step(tr.action) - tr.reward).abs() < 1e-9);
            for (a, b) in p.observe().iter().zip(&tr.next_obs) {
                assert!((a - b).abs() < 1e-9, "episode {e} step {t}: next obs");
            }
            sum += tr.reward;
        }
        assert_eq!(sum.to_bits(), d.episode_returns[e].to_bits(), "episode {e}");
    }
}

fn bits(d: &Dataset) -> Vec<u64> {
    d.transitions
        .iter()
        .flat_map(|t| {
            let mut v: Vec<u64> = t
                .obs
                .iter()
                .chain(&t.next_obs)
                .map(|x| x.to_bits())
                .collect();
            v.extend([t.action.to_bits(), t.reward.to_bits(), t.terminal as u64]);
            v
        })
        .collect()
}

#[test]
fn datasets_are_consistent_and_ordered_by_quality() {
    let n = 40;
    let scale = score_scale(40);
    let medium = dataset(DatasetKind::Medium, n, 7);
    assert_eq!(medium.kind, DatasetKind::Medium);
    check_consistency(&medium, n);
    let m = mean(&medium.episode_returns);
    assert!(
        scale.random < m && m < scale.expert,
        "medium {m} vs {scale:?}"
    );
    // Roughly halfway (measured ≈ 52 on 1000 episodes).
    let score = scale.normalised(m);
    assert!((25.0..75.0).contains(&score), "medium score {score}");

    let me = dataset(DatasetKind::MediumExpert, n, 7);
    assert_eq!(me.kind, DatasetKind::MediumExpert);
    check_consistency(&me, 2 * n);
    let (me_m, me_e) = (
        mean(&me.episode_returns[..n]),
        mean(&me.episode_returns[n..]),
    );
    assert!(me_m < me_e, "medium half {me_m}, expert half {me_e}");
    assert!(
        me_e > -300.0 && scale.normalised(me_e) > 80.0,
        "expert half {me_e}"
    );
    assert!(scale.normalised(me_m) < 75.0, "medium half {me_m}");

    // The expert set: every action is the noiseless expert's plus N(0, 0.1²), clipped to ±2,
    // and its episodes score near 100 (the noiseless expert defines 100).
    let expert = dataset(DatasetKind::Expert, n, 7);
    assert_eq!(expert.kind, DatasetKind::Expert);
    check_consistency(&expert, n);
    let ex = scale.normalised(mean(&expert.episode_returns));
    assert!((90.0..105.0).contains(&ex), "expert set score {ex}");
    let devs: Vec<f64> = expert
        .transitions
        .iter()
        .map(|t| t.action - expert_action_obs(&t.obs))
        .collect();
    let sd = (mean(&devs.iter().map(|d| d * d).collect::<Vec<_>>())).sqrt();
    assert!((0.08..0.11).contains(&sd), "expert action noise sd {sd}");

    let n = 100;
    let replay = dataset(DatasetKind::MediumReplay, n, 7);
    assert_eq!(replay.kind, DatasetKind::MediumReplay);
    check_consistency(&replay, n);
    let (first, last) = (
        mean(&replay.episode_returns[..10]),
        mean(&replay.episode_returns[90..]),
    );
    assert!(first < last, "replay first decile {first}, last {last}");
    assert!(
        first < scale.random + 300.0,
        "first decile should be near random: {first}"
    );
    assert_eq!(replay_behaviour(0, n).random_p, 1.0);
    assert!((replay_behaviour(n - 1, n).random_p - MEDIUM_BEHAVIOUR.random_p).abs() < 1e-15);
}

#[test]
fn datasets_are_pure_functions_of_the_seed() {
    for kind in [
        DatasetKind::Medium,
        DatasetKind::MediumReplay,
        DatasetKind::MediumExpert,
        DatasetKind::Expert,
    ] {
        let a = dataset(kind, 6, 3);
        let b = dataset(kind, 6, 3);
        let c = dataset(kind, 6, 4);
        assert_eq!(bits(&a), bits(&b), "{kind:?}");
        let ret_bits = |d: &Dataset| {
            d.episode_returns
                .iter()
                .map(|r| r.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(ret_bits(&a), ret_bits(&b));
        assert_ne!(bits(&a), bits(&c), "{kind:?}");
    }
    // A larger Medium set extends a smaller one with the same seed (one stream per episode).
    let small = dataset(DatasetKind::Medium, 3, 9);
    let large = dataset(DatasetKind::Medium, 5, 9);
    assert_eq!(small.transitions[..], large.transitions[..3 * HORIZON]);
}

#[test]
fn score_scale_pins_random_at_0_and_expert_at_100() {
    let n = 12;
    let s = score_scale(n);
    // Recompute both means independently from the documented seed and policies.
    let expert = mean(&run_episodes(n, SCORE_SEED, &mut |_, obs| {
        expert_batch(obs)
    }));
    let mut rp = RandomPolicy::new(SCORE_SEED, n);
    let random = mean(&run_episodes(n, SCORE_SEED, &mut |t, _| rp.act(t)));
    assert!(
        (s.normalised(expert) - 100.0).abs() < 1e-9,
        "{s:?} expert {expert}"
    );
    assert!(s.normalised(random).abs() < 1e-9, "{s:?} random {random}");
    assert!((s.normalised(0.5 * (expert + random)) - 50.0).abs() < 1e-9);
    assert!(s.expert > s.random);
    assert_eq!(score_scale(n), s);
}

#[test]
fn random_policy_torques_depend_only_on_seed_episode_and_step() {
    let mut a = RandomPolicy::new(5, 4);
    let mut b = RandomPolicy::new(5, 4);
    let forward: Vec<Vec<f32>> = (0..HORIZON).map(|t| a.act(t)).collect();
    // Out of order and repeated calls give the same torques.
    for t in (0..HORIZON).rev() {
        assert_eq!(b.act(t), forward[t]);
    }
    assert_eq!(b.act(17), forward[17]);
    let all: Vec<f32> = forward.concat();
    assert!(all.iter().all(|u| u.abs() <= 2.0));
    let m = all.iter().map(|&u| u as f64).sum::<f64>() / all.len() as f64;
    // 800 uniforms on [−2, 2]: sd of the mean ≈ 0.04.
    assert!(m.abs() < 0.2, "mean torque {m}");
    assert!(all.iter().any(|&u| u > 1.9) && all.iter().any(|&u| u < -1.9));
}

#[test]
fn action_fit_counts_saturation_and_expert_agreement_and_sorts_for_w1() {
    use diffusion_samplers::rl::action_fit::action_fit;
    let data = [2.0, 0.0, -1.95, 0.5];
    let policy = [1.0, 0.1, -2.0, 0.5];
    let expert = [2.0, 0.2, -2.0, 0.0];
    let f = action_fit(&data, &policy, &expert);
    assert_eq!(f.states, 4);
    assert_eq!((f.data_saturated, f.policy_saturated), (0.5, 0.25));
    assert_eq!((f.data_near_expert, f.policy_near_expert), (0.75, 0.5));
    // Sorted: data (−1.95, 0, 0.5, 2), policy (−2, 0.1, 0.5, 1): |Δ| = 0.05, 0.1, 0, 1.
    assert!((f.w1 - 1.15 / 4.0).abs() < 1e-12, "{}", f.w1);
    // W1 compares the two sets, not the rows: shuffling the policy's rows leaves it.
    let shuffled = [0.5, -2.0, 1.0, 0.1];
    assert_eq!(action_fit(&data, &shuffled, &expert).w1, f.w1);
    let same = action_fit(&data, &data, &expert);
    assert_eq!(same.w1, 0.0);
    assert_eq!(same.policy_near_expert, same.data_near_expert);
}

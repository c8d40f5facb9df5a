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

/// The PIT of torques under a behaviour's exact CDF: uniform for the behaviour's own draws
/// (the dataset's torques at its states), far from uniform for a shifted or a sharpened
/// policy; and the CDF's own edges and value at the controller's torque.
#[test]
fn behaviour_pit_is_uniform_for_the_behaviours_own_torques_only() {
    use diffusion_samplers::rl::action_fit::{ks_critical_95, pit, pit_fit, PIT_BINS};
    use diffusion_samplers::rl::pendulum::{
        dataset, single_behaviour, DatasetKind, MEDIUM_BEHAVIOUR,
    };
    let b = single_behaviour(DatasetKind::Medium).unwrap();
    assert_eq!(b, MEDIUM_BEHAVIOUR);
    assert!(single_behaviour(DatasetKind::MediumExpert).is_none());
    assert!(single_behaviour(DatasetKind::MediumReplay).is_none());

    let d = dataset(DatasetKind::Medium, 20, 3);
    let t = &d.transitions;
    let n = t.len();
    // The CDF: 0 below −2, 1 from 2 on, and at the controller's torque c (the noiseless
    // expert's where the swing-up cap does not bite: here an upright state) p·(c + 2)/4 + (1 − p)/2.
    let up = t
        .iter()
        .find(|x| x.obs[0] > 0.999)
        .expect("an upright state");
    let c = diffusion_samplers::rl::pendulum::expert_action_obs(&up.obs);
    assert!(c.abs() < 1.5, "{c}");
    assert_eq!(b.cdf(&up.obs, -2.0 - 1e-9), 0.0);
    assert_eq!(b.cdf(&up.obs, 2.0), 1.0);
    let want = 0.4 * (c + 2.0) / 4.0 + 0.6 * 0.5;
    assert!(
        (b.cdf(&up.obs, c) - want).abs() < 1e-12,
        "{} vs {want}",
        b.cdf(&up.obs, c)
    );

    let v = |i: usize| ((i as f64 + 0.5) * 0.618_033_988_75).fract();
    let own: Vec<f64> = (0..n)
        .map(|i| pit(&b, &t[i].obs, t[i].action, v(i)))
        .collect();
    let f = pit_fit(&own);
    assert_eq!(f.states, n);
    assert!(
        f.ks < ks_critical_95(n),
        "own torques: KS {} ≥ {}",
        f.ks,
        ks_critical_95(n)
    );
    // Shifted by 0.3: the controller's mode moves three noise stds.
    let shifted: Vec<f64> = (0..n)
        .map(|i| pit(&b, &t[i].obs, (t[i].action + 0.3).min(1.99), v(i)))
        .collect();
    assert!(
        pit_fit(&shifted).ks > 0.1,
        "shifted: KS {}",
        pit_fit(&shifted).ks
    );
    // Sharpened: the controller's torque exactly, no random torques: PIT piles into the
    // middle, where the behaviour's controlled mass sits.
    let sharp: Vec<f64> = (0..n)
        .map(|i| {
            let noiseless = diffusion_samplers::rl::pendulum::Behaviour {
                random_p: 0.0,
                noise_std: 0.0,
                ..b
            };
            // The controller's torque is where the noiseless CDF steps from 0 to 1.
            let (mut lo, mut hi) = (-2.0, 2.0);
            for _ in 0..60 {
                let m = 0.5 * (lo + hi);
                if noiseless.cdf(&t[i].obs, m) < 1.0 {
                    lo = m;
                } else {
                    hi = m;
                }
            }
            pit(&b, &t[i].obs, hi.clamp(-1.99, 1.99), v(i))
        })
        .collect();
    let sf = pit_fit(&sharp);
    assert!(sf.ks > 0.1, "sharpened: KS {}", sf.ks);
    let middle: f64 = sf.tenths[3..7].iter().sum();
    assert!(
        middle > 0.6,
        "sharpened: middle tenths {middle} of {:?}",
        sf.tenths
    );
    assert_eq!(sf.tenths.len(), PIT_BINS);
}

#[test]
fn pit_fit_measures_ks_and_tenths_on_hand_values() {
    use diffusion_samplers::rl::action_fit::pit_fit;
    // Sorted 0.25, 0.75: the empirical CDF is 0.5 on [0.25, 0.75), so sup |F̂ − u| = 0.25.
    let f = pit_fit(&[0.75, 0.25]);
    assert!((f.ks - 0.25).abs() < 1e-15, "{}", f.ks);
    let mut want = [0.0; 10];
    want[2] = 0.5;
    want[7] = 0.5;
    assert_eq!(f.tenths, want);
    // Evenly spaced midpoints are as uniform as 10 values get: KS 0.05, one per tenth.
    let even: Vec<f64> = (0..10).map(|i| (i as f64 + 0.5) / 10.0).collect();
    let e = pit_fit(&even);
    assert!((e.ks - 0.05).abs() < 1e-12, "{}", e.ks);
    assert!(e.tenths.iter().all(|&x| (x - 0.1).abs() < 1e-12));
    // u = 1 falls in the last tenth.
    assert_eq!(pit_fit(&[1.0]).tenths[9], 1.0);
}

/// The medium behaviour's score survives each blunt perturbation of its torques alone:
/// Gaussian noise six times its own, twice its random torques, a swing-up capped at 0.3
/// instead of 0.55, a constant torque bias of 0.2. Only together do the deficits that
/// `repro actions` measures on the T = 75 medium BC prior (pumping at 0.71 of the behaviour's
/// power, a 0.06 bias, more mass away from the controller's torque) bring it to the BC
/// prior's level (26 over 100 paired episodes, against the behaviour's 50; README, "Scores
/// over 100 paired episodes").
#[test]
fn medium_behaviour_keeps_swinging_up_under_blunt_perturbations() {
    use diffusion_samplers::rl::pendulum::{
        score_scale, Behaviour, Pendulum, HORIZON, MAX_TORQUE, MEDIUM_BEHAVIOUR,
    };
    let scale = score_scale(100);
    // (score, fraction of upright steps) over 400 episodes of `b` plus a torque bias.
    let run = |b: Behaviour, bias: f64| {
        let (mut total, mut upright) = (0.0, 0usize);
        for j in 0..400u64 {
            let mut rng = diffusion_samplers::rng::stream(777, "perturbed-medium", j);
            let mut s = Pendulum::reset(&mut rng);
            let mut ret = 0.0;
            for _ in 0..HORIZON {
                upright += usize::from(s.observe()[0] > 0.95);
                let a = (b.act(&s, &mut rng) + bias).clamp(-MAX_TORQUE, MAX_TORQUE);
                ret += s.step(a);
            }
            total += scale.normalised(ret);
        }
        (total / 400.0, upright as f64 / (400 * HORIZON) as f64)
    };
    let m = MEDIUM_BEHAVIOUR;
    let (base, base_up) = run(m, 0.0);
    assert!(
        (45.0..62.0).contains(&base) && base_up > 0.35,
        "{base} {base_up}"
    );
    let cases = [
        (
            "noise sd 0.6",
            Behaviour {
                noise_std: 0.6,
                ..m
            },
            0.0,
            42.0,
        ),
        (
            "random torques 80 %",
            Behaviour { random_p: 0.8, ..m },
            0.0,
            8.0,
        ),
        (
            "swing-up cap 0.3",
            Behaviour {
                swing_cap: 0.3,
                ..m
            },
            0.0,
            28.0,
        ),
        ("bias 0.2", m, 0.2, 42.0),
    ];
    let combined = Behaviour {
        swing_cap: 0.39,
        noise_std: 0.3,
        random_p: 0.5,
    };
    for (name, b, bias, floor) in cases {
        let (score, up) = run(b, bias);
        assert!(
            score > floor && up > 0.05,
            "{name}: score {score}, upright {up}"
        );
        assert!(
            score < base + 3.0,
            "{name} should not help: {score} vs {base}"
        );
    }
    let (score, _) = run(combined, 0.06);
    assert!((20.0..40.0).contains(&score), "combined: {score}");
}

/// `repro score`'s data row: every dataset episode's behaviour, from the evaluation's own
/// initial states. The noiseless expert as a behaviour (on the exact state) returns what the
/// expert policy returns in `run_episodes` (on f32 observations) episode by episode, so the
/// two start from the same states; a longer run keeps the shorter one as its prefix.
#[test]
fn behaviour_returns_start_from_the_evaluation_states_and_mix_the_datasets_behaviours() {
    use diffusion_samplers::rl::pendulum::{
        behaviour_returns, dataset_behaviours, expert_batch, replay_behaviour, run_episodes,
        Behaviour, DatasetKind, EXPERT_BEHAVIOUR, MAX_TORQUE, MEDIUM_BEHAVIOUR,
    };
    let noiseless = Behaviour {
        random_p: 0.0,
        noise_std: 0.0,
        swing_cap: MAX_TORQUE,
    };
    let b = behaviour_returns(&noiseless, 42, 6, "t");
    let e = run_episodes(6, 42, &mut |_, obs| expert_batch(obs));
    for (k, (x, y)) in b.iter().zip(&e).enumerate() {
        assert!((x - y).abs() <= 1e-3 * y.abs(), "episode {k}: {x} vs {y}");
    }
    // Different initial states give different returns: the pairing is not vacuous.
    let other = run_episodes(6, 43, &mut |_, obs| expert_batch(obs));
    assert!(b.iter().zip(&other).any(|(x, y)| (x - y).abs() > 1.0));
    let noisy = behaviour_returns(&MEDIUM_BEHAVIOUR, 42, 8, "t");
    assert_eq!(
        behaviour_returns(&MEDIUM_BEHAVIOUR, 42, 5, "t")[..],
        noisy[..5]
    );
    assert_ne!(behaviour_returns(&MEDIUM_BEHAVIOUR, 42, 8, "u"), noisy);

    assert_eq!(
        dataset_behaviours(DatasetKind::Medium, 3),
        vec![MEDIUM_BEHAVIOUR; 3]
    );
    assert_eq!(
        dataset_behaviours(DatasetKind::MediumExpert, 2),
        vec![
            MEDIUM_BEHAVIOUR,
            MEDIUM_BEHAVIOUR,
            EXPERT_BEHAVIOUR,
            EXPERT_BEHAVIOUR
        ]
    );
    let replay = dataset_behaviours(DatasetKind::MediumReplay, 5);
    assert_eq!(replay.len(), 5);
    assert_eq!(replay[0], replay_behaviour(0, 5));
    assert_eq!(replay[0].random_p, 1.0);
    assert_eq!(replay[4], MEDIUM_BEHAVIOUR);
    assert_eq!(
        dataset_behaviours(DatasetKind::Expert, 1),
        vec![EXPERT_BEHAVIOUR]
    );
}

/// `Behaviour::mean` (the closed form of the clipped mixture's mean) against the average of
/// 200 000 draws of `act` at states where the clip bites (the expert's saturated swing-up)
/// and where it does not (medium near upright).
#[test]
fn behaviour_mean_matches_the_average_of_its_draws() {
    use diffusion_samplers::rl::pendulum::{
        expert_action_obs, Pendulum, EXPERT_BEHAVIOUR, MEDIUM_BEHAVIOUR,
    };
    let cases = [
        (
            EXPERT_BEHAVIOUR,
            Pendulum {
                theta: 2.0,
                theta_dot: 1.0,
            },
        ),
        (
            MEDIUM_BEHAVIOUR,
            Pendulum {
                theta: 0.1,
                theta_dot: -0.3,
            },
        ),
        (
            MEDIUM_BEHAVIOUR,
            Pendulum {
                theta: 2.5,
                theta_dot: 2.0,
            },
        ),
    ];
    let mut rng = diffusion_samplers::rng::stream(9, "behaviour-mean", 0);
    for (b, s) in cases {
        let obs = s.observe();
        let n = 200_000;
        let avg = (0..n).map(|_| b.act(&s, &mut rng)).sum::<f64>() / n as f64;
        // The draws' sd is at most 2 (uniform torques), so the average is within 0.02 at 4.5 sd.
        assert!(
            (b.mean(&obs) - avg).abs() < 0.02,
            "{b:?} at {s:?}: {} vs {avg}",
            b.mean(&obs)
        );
    }
    // The expert's swing-up saturates, so the clip moves its mean below the controller's 2.
    let s = Pendulum {
        theta: 2.0,
        theta_dot: 1.0,
    };
    let c = expert_action_obs(&s.observe());
    assert_eq!(c.abs(), 2.0);
    assert!(EXPERT_BEHAVIOUR.mean(&s.observe()).abs() < 1.97);
}

/// The expert-continuation value that `repro critic` judges actions by: Bellman-consistent with
/// the expert's own next step (an independent recursion of the same quantity), zero at the
/// upright rest the expert holds for free, lower for a torque that knocks it off, converged in
/// its continuation length, and the state behind an observation is the one that made it.
#[test]
fn expert_continuation_q_is_bellman_consistent_and_converged() {
    use diffusion_samplers::rl::critic_check::{
        expert_continuation_q, expert_q_batch, state_of, CONTINUATION_STEPS,
    };
    let gamma = 0.99;
    let mut r = rng::stream(31, "critic-check", 0);
    for k in 0..20 {
        let s = Pendulum::reset(&mut r);
        let a = -2.0 + 4.0 * rng::uniform_f64(&mut r);
        let q = expert_continuation_q(s, a, gamma, 400);
        let mut next = s;
        let reward = next.step(a);
        let q_next = expert_continuation_q(next, expert_action(&next), gamma, 399);
        let want = reward + gamma * q_next;
        assert!(
            (q - want).abs() <= 1e-9 * want.abs().max(1.0),
            "state {k}: {q} vs {want}"
        );
        let (short, long) = (
            expert_continuation_q(s, a, gamma, CONTINUATION_STEPS),
            expert_continuation_q(s, a, gamma, 2 * CONTINUATION_STEPS),
        );
        assert!((short - long).abs() < 0.07, "state {k}: {short} vs {long}");
        let obs = s.observe();
        let back = state_of(&[obs[0] as f32, obs[1] as f32, obs[2] as f32]);
        assert!((angle_normalize(back.theta) - angle_normalize(s.theta)).abs() < 1e-6);
        assert!((back.theta_dot - s.theta_dot).abs() < 1e-6);
    }
    let upright = Pendulum {
        theta: 0.0,
        theta_dot: 0.0,
    };
    assert_eq!(expert_continuation_q(upright, 0.0, gamma, 500), 0.0);
    assert!(expert_continuation_q(upright, 2.0, gamma, 500) < -1e-3);
    // The batch form scales by the critic's reward scale.
    let obs = [1.0f32, 0.0, 0.0, -1.0, 0.0, 0.0];
    let q = expert_q_batch(&obs, &[2.0, 0.0], gamma, 3.0);
    let hanging = Pendulum {
        theta: PI,
        theta_dot: 0.0,
    };
    let want = 3.0 * expert_continuation_q(hanging, 0.0, gamma, CONTINUATION_STEPS);
    assert!(
        (q[1] - want).abs() <= 1e-6 * want.abs(),
        "{} vs {want}",
        q[1]
    );
    assert!(q[0] < 0.0 && q[1] < q[0]);
}

//! Identities of the Euler–Maruyama / Brownian-bridge pair and reproducibility of training.

use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::rng;
use diffusion_samplers::samplers::{
    log_pb_step, rollout, sample_backward_states, Path, Rollout, Sampler,
};
use diffusion_samplers::tolerance::Tolerance;
use diffusion_samplers::train::Trainer;

/// The bridge identity holds to f32 rounding of the states: Σ terms of size ~D·T.
const BRIDGE_IDENTITY: Tolerance = Tolerance {
    name: "bridge-identity",
    abs: 2e-3,
    rel: 1e-5,
};

fn cfg(target: &str, steps: usize, sigma2: f64) -> ExperimentConfig {
    let text = format!(
        "(seed: 11, target: {target}, sampler: (steps: {steps}, sigma2: {sigma2}),
          network: (hidden: 16, harmonics: 8),
          train: (method: Tb, iterations: 1, batch: 33, shards: 3), eval: (samples: 8))"
    );
    ExperimentConfig::parse(&text, "test").unwrap()
}

/// A forward rollout of `tr`'s network over `b` rows, without exploration, from the noise
/// stream (`seed`, `purpose`).
fn forward_rollout(
    tr: &Trainer,
    b: usize,
    seed: u64,
    purpose: &str,
    keep_graph: bool,
) -> Rollout<f32> {
    let path = Path::Forward {
        noise_key: rng::stream_key(seed, purpose, 0),
        row0: 0,
        total_rows: b,
        explore_std: 0.0,
    };
    rollout::<f32>(
        &tr.net,
        &tr.params,
        &tr.sampler,
        &*tr.energy,
        b,
        path,
        keep_graph,
    )
}

fn log_normal_iso(x: &[f32], var: f64) -> f64 {
    x.iter()
        .map(|&v| -0.5 * (v as f64).powi(2) / var - 0.5 * (std::f64::consts::TAU * var).ln())
        .sum()
}

/// Spec §2.3: with zero drift and fixed variance, Σ log p_F − Σ log p_B = log N(x_T; 0, σ²I) for
/// every trajectory, because the bridge is the exact posterior of Brownian motion.
#[test]
fn zero_drift_bridge_identity() {
    for (target, steps, sigma2) in [
        ("Gmm25", 100, 5.0),
        ("ManyWell(dim: 8)", 10, 1.0),
        ("Gmm9", 1, 2.5),
    ] {
        let c = cfg(target, steps, sigma2);
        let tr = Trainer::new(&c).unwrap();
        // The joint output layer is zero-initialised: u = 0 exactly.
        let b = c.train.batch;
        let roll = forward_rollout(&tr, b, 1, "bridge", false);
        let d = tr.sampler.dim;
        for r in 0..b {
            let want = log_normal_iso(&roll.x_final[r * d..(r + 1) * d], sigma2);
            let got = roll.log_pf[r] - roll.log_pb[r];
            assert!(
                BRIDGE_IDENTITY.close(got, want),
                "{target} row {r}: {got} vs {want}"
            );
        }
    }
}

/// The same identity along backward (bridge) trajectories from arbitrary terminal states.
#[test]
fn zero_drift_identity_on_backward_trajectories() {
    let c = cfg("ManyWell(dim: 4)", 20, 1.0);
    let tr = Trainer::new(&c).unwrap();
    let (b, d) = (7usize, 4usize);
    let mut r = rng::stream(2, "xt", 0);
    let xt: Vec<f32> = (0..b * d)
        .map(|_| 2.0 * rng::normal_f64(&mut r) as f32)
        .collect();
    let states = sample_backward_states(&tr.sampler, &xt, &mut rng::stream(2, "bw", 0), 0, b);
    assert!(states[..b * d].iter().all(|&v| v == 0.0), "x₀ = 0");
    assert_eq!(&states[20 * b * d..], &xt[..]);
    let roll = rollout::<f32>(
        &tr.net,
        &tr.params,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(&states),
        false,
    );
    for row in 0..b {
        let want = log_normal_iso(&xt[row * d..(row + 1) * d], 1.0);
        let got = roll.log_pf[row] - roll.log_pb[row];
        assert!(
            BRIDGE_IDENTITY.close(got, want),
            "row {row}: {got} vs {want}"
        );
    }
}

/// log p_B at i = 0 is zero and otherwise the Gaussian of spec §2.3.
#[test]
fn log_pb_matches_its_definition() {
    let s = Sampler {
        dim: 2,
        steps: 10,
        sigma2: 2.0,
        learned_range: None,
        lgv_clip: 100.0,
        noising: Default::default(),
        guidance: None,
        ddpm: None,
    };
    assert_eq!(log_pb_step(&s, 0, &[0.0, 0.0], &[1.0, 2.0]), 0.0);
    let (i, xi, xn) = (3usize, [0.4f32, -0.2], [1.0f32, 0.5]);
    let ratio = 3.0 / 4.0;
    let var = 2.0 * 0.1 * ratio;
    let want: f64 = (0..2)
        .map(|j| {
            let r = xi[j] as f64 - ratio * xn[j] as f64;
            -0.5 * r * r / var - 0.5 * (std::f64::consts::TAU * var).ln()
        })
        .sum();
    assert!((log_pb_step(&s, i, &xi, &xn) - want).abs() < 1e-12);
}

/// Sharding: a batch cut in 1, 2 or 3 shards draws the same trajectories (forward values are
/// row-wise); training gradients may differ only by summation order.
#[test]
fn shards_draw_identical_trajectories() {
    let c = cfg("Gmm25", 12, 5.0);
    let mut tr = Trainer::new(&c).unwrap();
    let mut r = rng::stream(9, "perturb", 0);
    for p in tr.params.iter_mut() {
        *p += 0.2 * rng::normal_f64(&mut r) as f32;
    }
    let key = rng::stream_key(4, "shards", 0);
    let mut reference: Option<(Vec<u32>, Vec<u64>)> = None;
    for shards in [1usize, 2, 3] {
        let mut trs = Trainer::new(&c).unwrap();
        trs.params = tr.params.clone();
        trs.cfg.train.shards = shards;
        let (w, x) = trs.sample_with_weights(33, key);
        let bits = (
            x.iter().map(|v| v.to_bits()).collect(),
            w.iter().map(|v| v.to_bits()).collect(),
        );
        match &reference {
            None => reference = Some(bits),
            Some(r0) => assert_eq!(&bits, r0, "shards = {shards}"),
        }
    }
    tr.step().unwrap();
}

/// Same config, same seed → bitwise-identical parameters after a few iterations; another seed
/// differs.
#[test]
fn training_is_bitwise_reproducible() {
    let c = cfg("ManyWell(dim: 4)", 10, 1.0);
    let run = |seed: u64| {
        let mut c2 = c.clone();
        c2.seed = seed;
        let mut tr = Trainer::new(&c2).unwrap();
        let rows: Vec<u64> = (0..4).map(|_| tr.step().unwrap().loss.to_bits()).collect();
        (
            tr.params.iter().map(|p| p.to_bits()).collect::<Vec<u32>>(),
            rows,
        )
    };
    let a = run(11);
    assert_eq!(a, run(11));
    assert_ne!(a.0, run(12).0);
}

/// Rolls B zero-drift trajectories forward and B backward from their ends under `noising`, and
/// checks LF − LB on each against `want(x₀, x_T)`.
fn assert_zero_drift_identity(noising: &str, steps: usize, want: &dyn Fn(&[f32], &[f32]) -> f64) {
    let text = format!(
        "(seed: 11, target: ManyWell(dim: 4),
          sampler: (steps: {steps}, noising: {noising}),
          network: (hidden: 16, harmonics: 8),
          train: (method: Tb, iterations: 1, batch: 17, shards: 2), eval: (samples: 8))"
    );
    let c = ExperimentConfig::parse(&text, "vp").unwrap();
    let tr = Trainer::new(&c).unwrap();
    let (b, d) = (c.train.batch, tr.sampler.dim);
    let roll = forward_rollout(&tr, b, 2, "vp", true);
    let x0 = roll.states[..b * d].to_vec();
    // x₀ ~ N(0, std²I): its mean square over B·D = 68 draws is within a factor 2 of std²
    // (the ratio's own std is √(2/68) ≈ 0.17).
    let std2 = c.sampler.noising.stationary_std().powi(2);
    let mean_square = x0.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x0.len() as f64;
    assert!(
        (0.5..2.0).contains(&(mean_square / std2)),
        "{noising}: x₀'s mean square {mean_square} vs std² {std2}"
    );
    let mut noise = rng::stream(3, "vp-back", 0);
    let back = sample_backward_states(&tr.sampler, &roll.x_final, &mut noise, 0, b);
    assert!(back[..b * d].iter().any(|&v| v != 0.0), "VP p_B draws x₀");
    let back_roll = rollout::<f32>(
        &tr.net,
        &tr.params,
        &tr.sampler,
        &*tr.energy,
        b,
        Path::Given(&back),
        true,
    );
    for (what, r, states) in [
        ("forward", &roll, &roll.states),
        ("backward", &back_roll, &back),
    ] {
        for row in 0..b {
            let x0 = &states[row * d..(row + 1) * d];
            let xt = &r.x_final[row * d..(row + 1) * d];
            let got = r.log_pf[row] - r.log_pb[row];
            let want = want(x0, xt);
            assert!(
                BRIDGE_IDENTITY.close(got, want),
                "{noising} {what} row {row}: {got} vs {want}"
            );
        }
    }
}

/// VP noising (Table C.2) with a constant β: the Euler OU kernel N((1 − β·dt)x, 2β·dt) is
/// reversible with respect to its stationary N(0, v), v = 2/(2 − β·dt), so with zero drift
/// LF − LB = log N(x_T; 0, v) + log N(x₀; 0, 1) − log N(x₀; 0, v) on every trajectory (LF
/// includes the source density N(0, I) of x₀), forward and backward.
#[test]
fn vp_zero_drift_reversibility_identity() {
    let (beta, steps) = (2.0, 20usize);
    let v = 2.0 / (2.0 - beta / steps as f64);
    assert_zero_drift_identity(
        &format!("Vp(beta_min: {beta}, beta_max: {beta})"),
        steps,
        &|x0, xt| log_normal_iso(xt, v) + log_normal_iso(x0, 1.0) - log_normal_iso(x0, v),
    );
    // With a stationary std s every variance scales by s²: the start, the kernel's noise and
    // its stationary law.
    let s2 = 3.0f64 * 3.0;
    assert_zero_drift_identity(
        &format!("Vp(beta_min: {beta}, beta_max: {beta}, std: 3.0)"),
        steps,
        &|x0, xt| log_normal_iso(xt, v * s2) + log_normal_iso(x0, s2) - log_normal_iso(x0, v * s2),
    );
    // The Brownian config keeps its digest: the default noising is not written out.
    assert!(!cfg("Gmm25", 10, 5.0).to_ron().contains("noising"));
    // So do VP configs written before `std` existed: a unit std is not written out either.
    let vp = |std: &str| {
        let text = format!(
            "(seed: 1, target: Gmm25, sampler: (steps: 10, noising: Vp(beta_min: 0.1, \
             beta_max: 2.0{std})), train: (method: Pis, iterations: 1, batch: 4), \
             eval: (samples: 4))"
        );
        ExperimentConfig::parse(&text, "vp").unwrap().to_ron()
    };
    assert!(vp("").contains("Vp(") && !vp("").contains("std"));
    assert_eq!(vp(", std: 1.0"), vp(""));
    assert!(vp(", std: 2.0").contains("std: 2.0"));
    let err = ExperimentConfig::parse(
        "(seed: 1, target: Gmm25, sampler: (steps: 10, noising: Vp(beta_min: 0.1, \
         beta_max: 2.0, std: 0.0)), train: (method: Pis, iterations: 1, batch: 4), \
         eval: (samples: 4))",
        "vp",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sampler.noising.std"), "{err}");
}

/// DDS's exponential integrator: every step is the exact OU transition, which keeps N(0, I)
/// stationary and is reversible for any β schedule, so with zero drift LF − LB = log N(x_T; 0, I)
/// exactly — here with β varying 40-fold across the steps and steps too coarse for Euler
/// (β·dt up to 2, where the Euler kernel is refused).
#[test]
fn vp_exponential_zero_drift_is_exactly_reversible() {
    assert_zero_drift_identity(
        "VpExponential(beta_min: 0.5, beta_max: 20.0)",
        10,
        &|_, xt| log_normal_iso(xt, 1.0),
    );
    assert_zero_drift_identity(
        "VpExponential(beta_min: 0.5, beta_max: 20.0, std: 0.25)",
        10,
        &|_, xt| log_normal_iso(xt, 0.0625),
    );
    let coarse_euler = "(seed: 1, target: ManyWell(dim: 4),
        sampler: (steps: 10, noising: Vp(beta_min: 0.5, beta_max: 20.0)),
        train: (method: Tb, iterations: 1, batch: 4), eval: (samples: 4))";
    let err = ExperimentConfig::parse(coarse_euler, "euler")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sampler.noising"), "{err}");
}

/// DDS's cosine grid (Vargas et al. 2023): the step lengths h_i = horizon·cos⁴(φ_i)/Σ cos⁴,
/// φ_i = ((i/T + 0.008)/1.008)·π/2, computed here from that definition, sum to the horizon and
/// shrink from the noise end toward the target. Each kernel is √(1 − h_i)·x + N(0, h_i·std²),
/// which keeps N(0, std²I) (decay²·std² + var = std²), and the control's gain is var_i/dt. With
/// zero drift the chain is exactly reversible, as the exponential integrator's.
#[test]
fn vp_cosine_grid_kernels_and_reversibility() {
    let (steps, horizon, std) = (8usize, 2.0, 1.5);
    let text = format!(
        "(seed: 1, target: ManyWell(dim: 4), sampler: (steps: {steps}, \
         noising: VpCosine(horizon: {horizon}, std: {std})), \
         train: (method: Pis, iterations: 1, batch: 4), eval: (samples: 4))"
    );
    let sampler = Sampler::from_config(&ExperimentConfig::parse(&text, "cosine").unwrap());
    let phase = |i: usize| (i as f64 / steps as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2;
    let total: f64 = (0..steps).map(|i| phase(i).cos().powi(4)).sum();
    let mut lengths = Vec::new();
    for i in 0..steps {
        let h = horizon * phase(i).cos().powi(4) / total;
        let tr = sampler.transition(i);
        let var = h * std * std;
        assert!(
            (tr.decay - (1.0 - h).sqrt()).abs() < 1e-12,
            "step {i}: decay"
        );
        assert!(
            (tr.rate * sampler.dt() - var).abs() < 1e-12,
            "step {i}: var"
        );
        assert_eq!(tr.backward, Some((tr.decay, tr.rate * sampler.dt())));
        let kept = tr.decay.powi(2) * std * std + tr.rate * sampler.dt();
        assert!(
            (kept - std * std).abs() < 1e-12,
            "step {i}: N(0, std²) kept ({kept})"
        );
        assert_eq!(sampler.control_gain(i), Some(tr.rate));
        lengths.push(h);
    }
    assert!((lengths.iter().sum::<f64>() - horizon).abs() < 1e-9);
    assert!(lengths.windows(2).all(|w| w[1] < w[0]), "{lengths:?}");
    assert_zero_drift_identity("VpCosine(horizon: 12.8)", 10, &|_, xt| {
        log_normal_iso(xt, 1.0)
    });
    assert_zero_drift_identity("VpCosine(horizon: 6.4, std: 0.25)", 10, &|_, xt| {
        log_normal_iso(xt, 0.0625)
    });
    // The plain references leave the network's output as the drift.
    assert_eq!(cfg("Gmm25", 4, 1.0).sampler.noising.stationary_std(), 1.0);
    assert_eq!(
        Sampler::from_config(&cfg("Gmm25", 4, 1.0)).control_gain(0),
        None
    );
    for (bad, field) in [
        ("noising: VpCosine(horizon: 0.0)", "sampler.noising.horizon"),
        (
            "noising: VpCosine(horizon: 1.0, std: -1.0)",
            "sampler.noising.std",
        ),
        (
            "noising: VpCosine(horizon: 1.0), learned_variance: true",
            "sampler.learned_variance",
        ),
    ] {
        let text = format!(
            "(seed: 1, target: Gmm25, sampler: (steps: 10, {bad}), \
             train: (method: Pis, iterations: 1, batch: 4), eval: (samples: 4))"
        );
        let err = ExperimentConfig::parse(&text, "cosine")
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{bad}: {err}");
    }
}

/// Under DDS's reference the step's mean is decay·x + var_i·u (Vargas et al.'s integrator),
/// not decay·x + u·dt: at initialisation the LP network's u is 0.01·clip(∇log R(x)) (zero
/// trunk output, s(t) = 0.01), so each step's log p_F along a forward rollout is the Gaussian
/// log N(x_{i+1}; decay·x_i + 0.01·var_i·∇log R(x_i), var_i), computed here from the energy.
#[test]
fn vp_cosine_scales_the_control_by_the_step_variance() {
    let text = "(seed: 11, target: ManyWell(dim: 4),
          sampler: (steps: 6, noising: VpCosine(horizon: 12.8)),
          network: (hidden: 16, harmonics: 8, langevin: true, lgv_clip: 1e6),
          train: (method: Pis, iterations: 1, batch: 5), eval: (samples: 8))";
    let c = ExperimentConfig::parse(text, "cosine-lp").unwrap();
    let tr = Trainer::new(&c).unwrap();
    let (b, d, t) = (c.train.batch, tr.sampler.dim, tr.sampler.steps);
    let roll = forward_rollout(&tr, b, 2, "cosine", true);
    let mut moved = 0.0f64;
    for i in 0..t {
        let step = tr.sampler.transition(i);
        let var = step.rate * tr.sampler.dt();
        for row in 0..b {
            let x = &roll.states[(i * b + row) * d..(i * b + row + 1) * d];
            let next = &roll.states[((i + 1) * b + row) * d..((i + 1) * b + row + 1) * d];
            let mut g = vec![0f32; d];
            tr.energy.grad_log_reward_row(x, &mut g);
            let want: f64 = (0..d)
                .map(|j| {
                    let u = 0.01 * g[j] as f64;
                    moved = moved.max((var * u).abs());
                    let mean = step.decay * x[j] as f64 + var * u;
                    -0.5 * (next[j] as f64 - mean).powi(2) / var
                        - 0.5 * (std::f64::consts::TAU * var).ln()
                })
                .sum();
            let got = roll.step_log_pf[row * t + i];
            assert!(
                (got - want).abs() < 2e-3 * want.abs().max(1.0),
                "step {i} row {row}: log p_F {got} vs {want}"
            );
        }
    }
    // The LP term moved the mean by more than the f32 tolerance, so the check sees the gain.
    assert!(moved > 0.05, "largest LP shift {moved}");
}

/// `small_variance` gives generation step i the DDPM posterior variance
/// β̃ = β_eff·(1 − ᾱ_prev)/(1 − ᾱ_t), computed here from the β schedule directly, except the last
/// step, which keeps β_eff = β_0; fixed_large keeps β_eff everywhere. The backward (noising)
/// kernel is the same in both.
#[test]
fn ddpm_small_variance_is_the_posterior_variance() {
    let (train, steps) = (100usize, 50usize);
    let make = |small: bool| {
        let text = format!(
            "(seed: 1, target: Gmm25, sampler: (steps: {steps}, noising: Ddpm(train_steps: \
             {train}, clip: false, small_variance: {small})), network: (hidden: 8, harmonics: 4),
              train: (method: EpsMse, iterations: 1, batch: 4, exploration: None),
              eval: (samples: 4, w2: false, eubo: false))"
        );
        Sampler::from_config(&ExperimentConfig::parse(&text, "test").unwrap())
    };
    let (small, large) = (make(true), make(false));
    // ᾱ_t = Π_{s ≤ t}(1 − β_s), β linear from 0.1/T to 20/T.
    let betas: Vec<f64> = (0..train)
        .map(|s| 0.1 / train as f64 + (19.9 / train as f64) * s as f64 / (train - 1) as f64)
        .collect();
    let alpha_bar = |t: usize| betas[..=t].iter().map(|b| 1.0 - b).product::<f64>();
    let k = train / steps;
    for i in 0..steps {
        let t = (steps - 1 - i) * k;
        let prev = if t >= k { alpha_bar(t - k) } else { 1.0 };
        let beta_eff = 1.0 - alpha_bar(t) / prev;
        let want = if t >= k {
            beta_eff * (1.0 - prev) / (1.0 - alpha_bar(t))
        } else {
            beta_eff
        };
        let dt = small.dt();
        let got = small.transition(i).rate * dt;
        assert!(
            (got - want).abs() <= 1e-12 * want.max(1e-12),
            "step {i}: {got} vs {want}"
        );
        let got_large = large.transition(i).rate * dt;
        assert!(
            (got_large - beta_eff).abs() <= 1e-12,
            "step {i}: {got_large} vs {beta_eff}"
        );
        assert_eq!(small.transition(i).backward, large.transition(i).backward);
        if t >= k {
            assert!(got < got_large, "step {i}: β̃ < β_eff");
        }
    }
}

//! The training-free guided samplers (spec rtb2024 §2.6, §3.1): DPS and LGD-MC's guidance is
//! the gradient through x̂0(x_t) of the measurement loss, checked against finite differences,
//! and guided sampling is deterministic across shardings and graph/no-graph rollouts.

use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::data;
use diffusion_samplers::energies::digits::{split, Classifier, DigitImages, DigitsClass, PIXELS};
use diffusion_samplers::energies::{Energy, Gmm25To9};
use diffusion_samplers::nn::DriftNet;
use diffusion_samplers::rng;
use diffusion_samplers::samplers::dps::{measurement_guidance, predicted_x0};
use diffusion_samplers::samplers::{rollout, Path, Sampler};
use diffusion_samplers::train::Trainer;

/// The digits target with a briefly trained classifier (enough for smooth, non-trivial logits).
fn digits(classes: Vec<u8>) -> DigitsClass {
    let d = DigitImages::load(&data::project_dir()).expect("data/digits ships with the project");
    let (train, _) = split(d.len());
    let net = Classifier::train(&d, &train, 2, 7);
    DigitsClass::new(d, net, classes)
}

/// A small DDPM guided run on the digits: 4 strided steps of a 40-step schedule.
fn guided(method: &str, clip: bool, extra: &str) -> ExperimentConfig {
    let text = format!(
        "(seed: 3, target: Digits(classes: [3]),
          sampler: (steps: 4, noising: Ddpm(train_steps: 40, clip: {clip})),
          network: (hidden: 16, harmonics: 4, joint_layers: 2),
          train: (method: {method}, iterations: 0, batch: 4, shards: 2),
          eval: (samples: 6, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), beta: 1.0{extra})))"
    );
    ExperimentConfig::parse(&text, "guided digits").unwrap()
}

/// Parameters moved off the network's initialisation (whose ε-head is zero), in f64.
fn random_params(net: &DriftNet, tag: u64) -> Vec<f64> {
    let mut r = rng::stream(5, "guided-params", tag);
    (0..net.num_params())
        .map(|_| 0.3 * rng::normal_f64(&mut r))
        .collect()
}

/// ‖e_c − logits(x)‖'s input gradient matches central differences.
#[test]
fn measurement_loss_gradient_matches_finite_differences() {
    let e = digits(vec![3]);
    let x: Vec<f64> = e.data.image(11).iter().map(|&v| v as f64 * 0.7).collect();
    let (l, g) = e.measurement_loss_grad(&x).unwrap();
    assert!(l > 0.0);
    for j in [0usize, 9, 30, 63] {
        let h = 1e-6;
        let (mut up, mut down) = (x.clone(), x.clone());
        up[j] += h;
        down[j] -= h;
        let fd = (e.measurement_loss_grad(&up).unwrap().0
            - e.measurement_loss_grad(&down).unwrap().0)
            / (2.0 * h);
        assert!(
            (fd - g[j]).abs() <= 1e-7 + 1e-6 * fd.abs(),
            "pixel {j}: {} vs {fd}",
            g[j]
        );
    }
    // Even digits: the loss is the smallest over the allowed classes.
    let even = digits(vec![0, 2, 4, 6, 8]);
    let best = [0usize, 2, 4, 6, 8]
        .into_iter()
        .map(|c| even.classifier.measurement_loss_grad(&x, c).0)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(even.measurement_loss_grad(&x).unwrap().0, best);
}

/// DPS's g(x_t) = −∇_{x_t} L(x̂0(x_t)) and LGD-MC's ∇_{x_t} log mean_k exp(−L(x̂0 + r_t z_k))
/// against central differences of the same functions built from `predicted_x0`, at every
/// generation step (no clipping, so the function is smooth).
#[test]
fn dps_and_lgd_mc_guidance_match_finite_differences() {
    let e = digits(vec![3]);
    let cfg = guided("Dps", false, "");
    let sampler = Sampler::from_config(&cfg);
    let net = DriftNet::new(PIXELS, &cfg.network);
    let params = random_params(&net, 1);
    let rows = 2;
    let mut r = rng::stream(5, "guided-x", 0);
    let x: Vec<f32> = (0..rows * PIXELS)
        .map(|_| (0.6 * rng::normal_f64(&mut r)) as f32)
        .collect();
    let k = 3;
    let mut z = vec![0f32; k * rows * PIXELS];
    rng::fill_normals(&mut rng::stream(5, "guided-z", 0), &mut z);
    for i in 0..sampler.steps {
        let r_t = (1.0 - sampler.ddpm_step(i).unwrap().alpha_bar).sqrt();
        // The scalar whose gradient the guidance is, for row b of states xs.
        let objective = |xs: &[f32], b: usize, particles: usize| -> f64 {
            let x0 = predicted_x0(&net, &params, &sampler, xs, i, None);
            let base = &x0[b * PIXELS..(b + 1) * PIXELS];
            if particles == 0 {
                return -e.measurement_loss_grad(base).unwrap().0;
            }
            let losses: Vec<f64> = (0..particles)
                .map(|p| {
                    let zr = &z[(p * rows + b) * PIXELS..(p * rows + b + 1) * PIXELS];
                    let pt: Vec<f64> = base
                        .iter()
                        .zip(zr)
                        .map(|(&m, &zz)| m + r_t * zz as f64)
                        .collect();
                    e.measurement_loss_grad(&pt).unwrap().0
                })
                .collect();
            let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
            let mean = losses.iter().map(|l| (min - l).exp()).sum::<f64>() / particles as f64;
            mean.ln() - min
        };
        for particles in [0usize, k] {
            let g = measurement_guidance(
                &net,
                &params,
                &sampler,
                &e,
                &x,
                i,
                None,
                &z[..particles * rows * PIXELS],
            );
            for b in 0..rows {
                for j in [1usize, 20, 44] {
                    let k_ = b * PIXELS + j;
                    let (mut up, mut down) = (x.clone(), x.clone());
                    up[k_] += 1e-3;
                    down[k_] -= 1e-3;
                    let step = up[k_] as f64 - down[k_] as f64;
                    let fd = (objective(&up, b, particles) - objective(&down, b, particles)) / step;
                    let got = g[k_] as f64;
                    assert!(
                        (fd - got).abs() <= 2e-4 + 2e-3 * fd.abs(),
                        "step {i}, K = {particles}, row {b}, pixel {j}: {got} vs {fd}"
                    );
                }
                // Rows do not leak into each other: row b's objective ignores row 1 − b.
                let other = (1 - b) * PIXELS + 5;
                let mut up = x.clone();
                up[other] += 0.1;
                assert_eq!(objective(&up, b, particles), objective(&x, b, particles));
            }
        }
    }
}

/// Guided samples are the same whatever the sharding (the particles' normals are keyed by
/// row), and guidance moves the samples: ζ = 0 is the prior itself.
#[test]
fn guided_sampling_is_shard_invariant_and_zeta_zero_is_the_prior() {
    let cfg = guided("LgdMc", true, ", guidance: Some(0.5), particles: Some(3)");
    let net = DriftNet::new(PIXELS, &cfg.network);
    let prior: Vec<f32> = random_params(&net, 2).iter().map(|&v| v as f32).collect();
    let key = rng::stream_key(3, "guided-eval", 0);
    let sample = |cfg: &ExperimentConfig| {
        let tr = Trainer::with_prior(cfg, Some(prior.clone())).unwrap();
        tr.sample_with_weights(5, key)
    };
    let (w2, x2) = sample(&cfg);
    let mut one = cfg.clone();
    one.train.shards = 1;
    let (w1, x1) = sample(&one);
    assert_eq!(x1, x2, "LGD-MC samples depend on the sharding");
    assert_eq!(w1, w2);
    // ζ = 0: the prior's own samples, and log-weights β·log r exactly (LF = LP).
    let mut off = cfg.clone();
    off.posterior.as_mut().unwrap().guidance = Some(0.0);
    let mut plain = cfg.clone();
    plain.train.method = diffusion_samplers::config::Method::Resample;
    plain.posterior.as_mut().unwrap().guidance = None;
    plain.posterior.as_mut().unwrap().particles = None;
    let (_, x_off) = sample(&off);
    let (_, x_prior) = sample(&plain);
    assert_eq!(x_off, x_prior);
    assert_ne!(x2, x_prior, "ζ = 0.5 must move the samples");
    // DPS differs from LGD-MC.
    let mut dps = cfg.clone();
    dps.train.method = diffusion_samplers::config::Method::Dps;
    dps.posterior.as_mut().unwrap().particles = None;
    assert_ne!(sample(&dps).1, x2);
}

/// Classifier guidance samples the same whether or not the rollout keeps its graph (the
/// guidance scale is a rollout-long tape constant that gradient-free rollouts must not drop).
#[test]
fn classifier_guidance_is_the_same_with_and_without_the_graph() {
    let text = "(seed: 4, target: Gmm25To9,
          sampler: (steps: 6, sigma2: 5.0),
          network: (hidden: 8, harmonics: 4, joint_layers: 2),
          train: (method: Guidance, iterations: 0, batch: 7),
          eval: (samples: 8, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), beta: 1.0,
                           guidance: Some(2.0))))";
    let cfg = ExperimentConfig::parse(text, "cg").unwrap();
    let sampler = Sampler::from_config(&cfg);
    let net = DriftNet::new(2, &cfg.network);
    let params: Vec<f32> = random_params(&net, 3).iter().map(|&v| v as f32).collect();
    let energy = Gmm25To9::new();
    let path = || Path::Forward {
        noise_key: rng::stream_key(4, "cg", 0),
        row0: 0,
        total_rows: 7,
        explore_std: 0.0,
    };
    let with = rollout::<f32>(&net, &params, &sampler, &energy, 7, path(), true);
    let without = rollout::<f32>(&net, &params, &sampler, &energy, 7, path(), false);
    assert_eq!(with.x_final, without.x_final);
    assert_eq!(with.log_pf, without.log_pf);
    // And the guidance acts: without it the samples differ.
    let plain = Sampler {
        guidance: None,
        ..sampler.clone()
    };
    let unguided = rollout::<f32>(&net, &params, &plain, &energy, 7, path(), false);
    assert_ne!(unguided.x_final, without.x_final);
}

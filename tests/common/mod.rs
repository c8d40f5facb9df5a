//! Helpers shared by the integration tests (each test file that needs them says `mod common;`).

#[cfg(feature = "gpu")]
use diffusion_samplers::gpu::GpuContext;

/// The process-wide GPU context, or `None` after printing `skipped: no GPU adapter (…)` when
/// this machine has none — so machines without Vulkan stay green — unless
/// `DIFFUSION_SAMPLERS_REQUIRE_GPU=1` (set by `.ci/run` where lavapipe is installed), which makes
/// a missing adapter a failure. The adapter is named once per test process.
#[cfg(feature = "gpu")]
#[allow(dead_code)]
pub fn gpu_or_skip() -> Option<&'static GpuContext> {
    match GpuContext::shared() {
        Ok(ctx) => {
            static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
            ONCE.get_or_init(|| eprintln!("GPU tests on: {}", ctx.describe()));
            Some(ctx)
        }
        Err(e) => {
            if std::env::var_os("DIFFUSION_SAMPLERS_REQUIRE_GPU").is_some_and(|v| v == "1") {
                panic!("DIFFUSION_SAMPLERS_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// The trainer's loss and sharded f32 gradient at iteration `it` against an f64 tape's
/// (`loss64`, `g64`) on the same trajectories: the loss within 1e-4·(1 + |L|), the gradient
/// within [`F32_TRAINER_VS_F64_TAPE`] with `abs` scaled by the largest |g64|.
#[allow(dead_code)]
pub fn assert_trainer_matches(
    tr: &diffusion_samplers::train::Trainer,
    it: usize,
    loss64: f64,
    g64: &[f64],
    what: &str,
) {
    use diffusion_samplers::tolerance::{Tolerance, F32_TRAINER_VS_F64_TAPE};
    let (lg, g32) = tr.loss_and_grad(it).unwrap();
    assert!(
        (lg.loss - loss64).abs() <= 1e-4 * (1.0 + loss64.abs()),
        "{what}: loss {} vs {loss64}",
        lg.loss
    );
    let got: Vec<f64> = g32.iter().map(|&g| g as f64).collect();
    let scale = g64.iter().fold(0f64, |m, g| m.max(g.abs()));
    let tol = Tolerance {
        abs: F32_TRAINER_VS_F64_TAPE.abs * scale,
        ..F32_TRAINER_VS_F64_TAPE
    };
    tol.assert_all_close(&got, g64, what);
}

/// Sample mean and (unbiased) variance of coordinate `j` of rows `x` (`[n, d]`).
#[allow(dead_code)]
fn column_moments(x: &[f32], d: usize, j: usize) -> (f64, f64) {
    let col: Vec<f64> = x.chunks_exact(d).map(|r| r[j] as f64).collect();
    let n = col.len() as f64;
    let mean = col.iter().sum::<f64>() / n;
    let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// `tr`'s own samples (its config's `eval.samples`, stream `tag`) have per-coordinate means
/// within `mean_tol` of `means` and variances within the fraction `var_tol` of `var`.
#[allow(dead_code)]
pub fn assert_gaussian_samples(
    tr: &diffusion_samplers::train::Trainer,
    tag: &str,
    means: &[f64],
    var: f64,
    mean_tol: f64,
    var_tol: f64,
) {
    let n = tr.cfg.eval.samples;
    let d = means.len();
    let (_, x) = tr.sample_with_weights(n, diffusion_samplers::rng::stream_key(1, tag, 0));
    for (j, &want) in means.iter().enumerate() {
        let (mean, v) = column_moments(&x, d, j);
        assert!(
            (mean - want).abs() < mean_tol,
            "{tag} coordinate {j}: mean {mean} vs {want}"
        );
        assert!(
            (v / var - 1.0).abs() < var_tol,
            "{tag} coordinate {j}: variance {v} vs {var}"
        );
    }
}

/// The closed-form RTB case: the zero-drift prior from x₀ = 0 (x₁ ~ N(0, σ²I) exactly, σ² = 1;
/// T = 40, so the fixed per-step variance is close to the continuous-time posterior's) and
/// r = N(m, s²I) with m = (1.5, −1), s = 1 have the posterior
/// N(m·σ²/(σ² + s²), σ²s²/(σ² + s²)·I) and Z = N(m; 0, (σ² + s²)I). Trains the RTB config
/// whose `train` and `posterior` clauses are given (seed 21, B = 128, 1200 iterations) from
/// that prior, then asserts its 4000 samples' means within 0.05 per coordinate (standard error
/// 0.011), variances within 8 % (2.2 %), and the learned log Z within 0.03.
#[allow(dead_code)]
pub fn assert_rtb_fits_the_closed_form_gaussian_posterior(train: &str, posterior: &str, tag: &str) {
    let (m, s, sigma2) = ([1.5f64, -1.0], 1.0f64, 1.0f64);
    let text = format!(
        "(seed: 21, target: Gaussian(mean: [{}, {}], std: {s}),
          sampler: (steps: 40, sigma2: {sigma2}),
          network: (hidden: 32, harmonics: 8, joint_layers: 2),
          train: (method: Rtb, iterations: 1200, batch: 128, lr_flow: 0.1, {train}),
          eval: (samples: 4000, w2: false, eubo: false),
          posterior: Some((prior: (config: \"unused.ron\", digest: \"0\"), {posterior})))",
        m[0], m[1]
    );
    let cfg = diffusion_samplers::config::ExperimentConfig::parse(&text, tag).unwrap();
    // The zero-drift prior: the network's own initialisation (zero output layer).
    let mut tr =
        diffusion_samplers::train::Trainer::with_prior(&cfg, Some(init_params(&cfg))).unwrap();
    while tr.iteration < cfg.train.iterations {
        tr.step().unwrap();
    }
    let post_var = sigma2 * s * s / (sigma2 + s * s);
    let log_z = -0.5 * (m[0] * m[0] + m[1] * m[1]) / (sigma2 + s * s)
        - (std::f64::consts::TAU * (sigma2 + s * s)).ln();
    let post_mean = m.map(|v| v * sigma2 / (sigma2 + s * s));
    assert_gaussian_samples(&tr, tag, &post_mean, post_var, 0.05, 0.08);
    assert!(
        (tr.learned_log_z() - log_z).abs() < 0.03,
        "{tag}: learned log Z {} vs {log_z}",
        tr.learned_log_z()
    );
}

/// The network's own initialisation (zero output layer: the zero-drift policy) for `cfg`.
#[allow(dead_code)]
pub fn init_params(cfg: &diffusion_samplers::config::ExperimentConfig) -> Vec<f32> {
    let mut plain = cfg.clone();
    plain.train.method = diffusion_samplers::config::Method::Tb;
    plain.train.iterations = 1;
    plain.train.exploration = None;
    plain.posterior = None;
    // The layout does not depend on the sampler; TB needs a Brownian one.
    plain.sampler.noising = Default::default();
    diffusion_samplers::train::Trainer::new(&plain)
        .unwrap()
        .params
}

/// `params` each moved by N(0, `by`²) from stream (9, `purpose`, `tag`).
#[allow(dead_code)]
pub fn jittered(params: &[f32], purpose: &str, tag: u64, by: f64) -> Vec<f32> {
    let mut r = diffusion_samplers::rng::stream(9, purpose, tag);
    params
        .iter()
        .map(|&p| p + (by * diffusion_samplers::rng::normal_f64(&mut r)) as f32)
        .collect()
}

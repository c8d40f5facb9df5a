//! The GPU training iteration against the CPU reference: a whole iteration's loss and gradient
//! (every parameter block) against the CPU tape at perturbed parameters; a short training run's
//! curve and metrics against the CPU run; bitwise run-to-run reproducibility on one device; the
//! backend resolution errors.
//!
//! Without an adapter the tests print `skipped: no GPU adapter (…)` and pass, unless
//! `DIFFUSION_SAMPLERS_REQUIRE_GPU=1` (set by `.ci/run` where lavapipe is installed).

#![cfg(feature = "gpu")]

mod common;

use common::gpu_or_skip;
use diffusion_samplers::config::{Backend, ExperimentConfig};
use diffusion_samplers::gpu::trainer::{GpuTrainer, NoiseSource};
use diffusion_samplers::rng;
use diffusion_samplers::train::{self, Trainer};

/// Whole-iteration gradient parity: per block, ‖g_gpu − g_cpu‖₂ ≤ rel·‖g_cpu‖₂ + abs. The two
/// sides sum the same B·T per-step contributions in different orders (the CPU by shards, the GPU
/// per step into one accumulator) with f32 linear kernels that round differently where the
/// device's fma is unfused, and the trajectories themselves differ by those roundings; measured
/// on lavapipe: ≤ 3.3e-6 relative (printed by the test); the bound leaves a 30× margin.
const GPU_ITERATION_GRAD_REL: f64 = 1e-4;
const GPU_ITERATION_GRAD_ABS: f64 = 1e-6;
/// Loss and log Z of one iteration: f32 per-trajectory sums over T steps on the GPU vs f64 sums
/// of f32 step values on the CPU.
const GPU_ITERATION_LOSS_REL: f64 = 1e-4;
/// A 30-iteration run: Adam turns gradient roundings into parameter differences of order
/// lr·iterations·(relative gradient error); measured on lavapipe: curves within 4.9e-7
/// (relative to 1 + |value|), final log Ẑ within 1e-9. The bound leaves a 200× margin.
const GPU_SHORT_RUN_ABS: f64 = 1e-4;

fn config(ron: &str) -> ExperimentConfig {
    ExperimentConfig::parse(ron, "test").expect("test config parses")
}

fn small(target: &str, method: &str, extra: &str) -> ExperimentConfig {
    small_net(target, method, extra, "")
}

fn small_net(target: &str, method: &str, extra: &str, net: &str) -> ExperimentConfig {
    config(&format!(
        "(seed: 7, target: {target}, sampler: (steps: 12, sigma2: 2.0),
          network: (hidden: 16, harmonics: 8, joint_layers: 2 {net}),
          train: (method: {method}, iterations: 30, batch: 13 {extra}),
          eval: (samples: 64, every: 0))"
    ))
}

/// The initial parameters plus N(0, 0.05²) noise everywhere (the zero-initialised output layer
/// would otherwise stop every gradient below it).
fn perturbed(tr: &Trainer) -> Vec<f32> {
    let mut noise = vec![0f32; tr.params.len()];
    rng::fill_normals(&mut rng::stream(99, "gpu-parity-perturb", 0), &mut noise);
    tr.params
        .iter()
        .zip(&noise)
        .map(|(p, n)| p + 0.05 * n)
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn check_iteration(cfg: &ExperimentConfig) {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut cpu = Trainer::new(cfg).unwrap();
    let params = perturbed(&cpu);
    cpu.set_params(params.clone());
    for it in [0usize, 3] {
        let (lg, g_cpu) = cpu.loss_and_grad(it).unwrap();
        let eps = diffusion_samplers::samplers::explore_std(cfg.train.exploration.as_ref(), it);
        let mut gpu = GpuTrainer::new(
            ctx,
            cfg,
            &cpu.net,
            &cpu.sampler,
            &params,
            NoiseSource::Upload,
        )
        .unwrap();
        let (stats, g_gpu) = gpu.loss_and_grad(cfg.seed, it, eps).unwrap();
        let what = format!("{:?} {:?} it {it}", cfg.target, cfg.train.method);
        assert_eq!(stats.non_finite, 0, "{what}");
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        assert!(
            rel(stats.loss, lg.loss) <= GPU_ITERATION_LOSS_REL,
            "{what}: loss gpu {} cpu {}",
            stats.loss,
            lg.loss
        );
        assert!(
            (stats.log_z - lg.log_z).abs() <= GPU_ITERATION_LOSS_REL * (1.0 + lg.log_z.abs()),
            "{what}: log Z gpu {} cpu {}",
            stats.log_z,
            lg.log_z
        );
        let mut worst = 0f64;
        for spec in &cpu.net.layout.specs {
            let r = spec.range();
            let c: Vec<f64> = g_cpu[r.clone()].iter().map(|&v| v as f64).collect();
            let d: Vec<f64> = g_gpu[r.clone()]
                .iter()
                .zip(&c)
                .map(|(&a, &b)| a as f64 - b)
                .collect();
            let (nd, nc) = (norm(&d), norm(&c));
            assert!(
                nd <= GPU_ITERATION_GRAD_REL * nc + GPU_ITERATION_GRAD_ABS,
                "{what}: block {}: ‖Δ‖ {nd:e} vs ‖g_cpu‖ {nc:e}",
                spec.name
            );
            assert!(
                nc > 0.0 || spec.name == "log_z",
                "{what}: block {} has no gradient",
                spec.name
            );
            if nc > 0.0 {
                worst = worst.max(nd / nc);
            }
        }
        eprintln!(
            "{what}: worst block ‖Δg‖/‖g‖ = {worst:.2e}, loss {} vs {}",
            stats.loss, lg.loss
        );
    }
}

#[test]
fn tb_iteration_on_25gmm_matches_the_cpu_tape() {
    check_iteration(&small("Gmm25", "Tb", ""));
}

#[test]
fn vargrad_iteration_with_exploration_on_manywell_matches_the_cpu_tape() {
    check_iteration(&small(
        "ManyWell(dim: 8)",
        "VarGrad",
        ", exploration: Some((std: 0.3, decay_iters: Some(10)))",
    ));
}

#[test]
fn tb_iteration_on_the_funnel_matches_the_cpu_tape() {
    check_iteration(&small(
        "Funnel(variant: Hard, dim: 5)",
        "Tb",
        ", grad_clip: Some(1.0)",
    ));
}

#[test]
fn tb_iteration_with_the_langevin_parametrization_matches_the_cpu_tape() {
    check_iteration(&small_net("Gmm25", "Tb", "", ", langevin: true"));
}

#[test]
fn vargrad_iteration_with_per_dim_langevin_scale_on_manywell_matches_the_cpu_tape() {
    check_iteration(&small_net(
        "ManyWell(dim: 8)",
        "VarGrad",
        ", exploration: Some((std: 0.3, decay_iters: Some(10)))",
        ", langevin: true, langevin_per_dim: true, langevin_layers: 3",
    ));
}

#[test]
fn tb_iteration_with_a_learned_variance_and_exploration_matches_the_cpu_tape() {
    let mut cfg = small_net(
        "Funnel(variant: Hard, dim: 5)",
        "Tb",
        ", exploration: Some((std: 0.2, decay_iters: Some(10)))",
        ", langevin: true",
    );
    cfg.sampler.learned_variance = true;
    check_iteration(&cfg);
}

fn run_on(cfg: &ExperimentConfig, backend: Backend) -> train::RunRecord {
    let mut c = cfg.clone();
    c.backend = backend;
    train::run(&c, &mut |_| {})
}

#[test]
fn a_short_gpu_run_agrees_with_the_cpu_run_and_replays_bitwise() {
    if gpu_or_skip().is_none() {
        return;
    }
    let mut cfg = small(
        "Gmm25",
        "Tb",
        ", exploration: Some((std: 0.2, decay_iters: Some(20))), grad_clip: Some(5.0)",
    );
    cfg.eval.every = 10;
    let cpu = run_on(&cfg, Backend::Cpu);
    let gpu = run_on(&cfg, Backend::Gpu);
    assert!(gpu.failure.is_none(), "{:?}", gpu.failure);
    assert_eq!(cpu.curve.len(), gpu.curve.len());
    let mut worst = 0f64;
    for (c, g) in cpu.curve.iter().zip(&gpu.curve) {
        for (a, b, what) in [(g.loss, c.loss, "loss"), (g.log_z, c.log_z, "log Z")] {
            let d = (a - b).abs() / (1.0 + b.abs());
            worst = worst.max(d);
            assert!(
                d <= GPU_SHORT_RUN_ABS,
                "iteration {}: {what} gpu {a} cpu {b}",
                c.iteration
            );
        }
    }
    let (fc, fg) = (
        cpu.final_eval.as_ref().unwrap(),
        gpu.final_eval.as_ref().unwrap(),
    );
    for (a, b, what) in [
        (fg.metrics.log_z, fc.metrics.log_z, "log Ẑ"),
        (fg.metrics.log_z_rw, fc.metrics.log_z_rw, "log Ẑ^RW"),
        (fg.metrics.elbo, fc.metrics.elbo, "ELBO"),
    ] {
        assert!(
            (a - b).abs() <= GPU_SHORT_RUN_ABS * (1.0 + b.abs()),
            "final {what}: gpu {a} cpu {b}"
        );
    }
    eprintln!(
        "30-iteration run: worst curve difference {worst:.2e}; final log Ẑ gpu {} cpu {}",
        fg.metrics.log_z, fc.metrics.log_z
    );
    // Same device, same config: bit for bit.
    let again = run_on(&cfg, Backend::Gpu);
    let bits = |r: &train::RunRecord| -> Vec<u64> {
        r.curve
            .iter()
            .flat_map(|c| [c.loss.to_bits(), c.log_z.to_bits()])
            .chain(
                r.final_eval
                    .as_ref()
                    .unwrap()
                    .samples
                    .iter()
                    .map(|v| v.to_bits() as u64),
            )
            .collect()
    };
    assert_eq!(bits(&gpu), bits(&again), "two GPU runs differ");
}

#[test]
fn backend_resolution_names_the_problem() {
    // Shapes the fused step cannot hold: Gpu is refused with a reason, Auto falls back to the CPU
    // and says why.
    let mut cfg = small("Gmm25", "Tb", "");
    cfg.network.joint_layers = 4;
    cfg.backend = Backend::Gpu;
    let err = train::resolve_backend(&mut cfg.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("joint_layers"), "{err}");
    cfg.backend = Backend::Auto;
    let why = train::resolve_backend(&mut cfg).unwrap();
    assert_eq!(cfg.backend, Backend::Cpu);
    assert!(why.unwrap().contains("joint_layers"));
    // Off-policy training (backward trajectories, buffers, local search) stays on the CPU.
    let mut off = small("Gmm25", "Tb", "");
    off.train.off_policy = Some(diffusion_samplers::config::OffPolicyConfig {
        buffer_capacity: 1000,
        sampling: Default::default(),
        local_search: None,
        local_search_period: 100,
    });
    off.backend = Backend::Gpu;
    let err = train::resolve_backend(&mut off).unwrap_err().to_string();
    assert!(err.contains("off-policy"), "{err}");
    // The CPU-only methods, targets and the VP reference are refused by name; Auto falls back.
    for (target, method, field) in [
        ("Gmm25", "Pis", "Pis"),
        ("Gmm25", "SubTb", "SubTb"),
        ("Gmm25", "Db", "Db"),
        ("Lgcp", "Tb", "Lgcp"),
        ("Vae(repeats: 2)", "VarGrad", "Vae"),
    ] {
        let mut cfg = small(target, method, "");
        cfg.backend = Backend::Gpu;
        let err = train::resolve_backend(&mut cfg.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{target} {method}: {err}");
        cfg.backend = Backend::Auto;
        let why = train::resolve_backend(&mut cfg)
            .unwrap()
            .unwrap_or_default();
        assert_eq!(cfg.backend, Backend::Cpu, "{target} {method}: {why}");
    }
    let mut vp = small("Gmm25", "Tb", "");
    vp.sampler.noising = diffusion_samplers::config::Noising::Vp {
        beta_min: 0.01,
        beta_max: 4.0,
        std: 1.0,
    };
    vp.backend = Backend::Gpu;
    let err = train::resolve_backend(&mut vp).unwrap_err().to_string();
    assert!(err.contains("VP"), "{err}");
    // The GPU's Adam has one rate per group: a separate rate for the variance head stays here.
    let mut slow_var = small("Gmm25", "Tb", "");
    slow_var.sampler.learned_variance = true;
    slow_var.train.lr_variance_factor = Some(0.1);
    slow_var.backend = Backend::Gpu;
    let err = train::resolve_backend(&mut slow_var)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.lr_variance_factor"), "{err}");
    // The fused step has no LayerNorm: a network with it stays on the CPU.
    let mut ln = small("Gmm25", "Tb", "");
    ln.network.layer_norm = true;
    ln.backend = Backend::Gpu;
    let err = train::resolve_backend(&mut ln).unwrap_err().to_string();
    assert!(err.contains("network.layer_norm"), "{err}");
    // Shapes the fused step cannot hold are refused the same way.
    let mut wide = small("Gmm25", "Tb", "");
    wide.network.hidden = 300;
    wide.backend = Backend::Gpu;
    let err = train::resolve_backend(&mut wide).unwrap_err().to_string();
    assert!(err.contains("network.hidden"), "{err}");
    // A rollout larger than any adapter's per-binding limit (8 GB for o alone) is refused up
    // front with the sizes named, never a wgpu panic.
    if gpu_or_skip().is_some() {
        let mut huge = small("ManyWell(dim: 100)", "Tb", "");
        huge.sampler.steps = 100;
        huge.train.batch = 100_000;
        huge.backend = Backend::Gpu;
        let err = train::resolve_backend(&mut huge).unwrap_err().to_string();
        assert!(err.contains("MiB") && err.contains("train.batch"), "{err}");
    }
    assert_eq!(Backend::parse("GPU"), Ok(Backend::Gpu));
    assert!(Backend::parse("tpu")
        .unwrap_err()
        .contains("cpu, gpu or auto"));
}

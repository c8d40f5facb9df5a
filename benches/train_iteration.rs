//! One full TB training iteration (rollout with tape, loss, sharded backward, Adam) at the
//! paper's shapes: B = 300, T = 100, H = 64, for 25GMM (D = 2) and Manywell (D = 32), with and
//! without the Langevin parametrization. Throughput is the iteration's linear-layer FLOPs, so
//! criterion's elements/s is the achieved FLOP rate to set against the machine's FMA peak.
//!
//! `gpu/tb_iteration/<target>/…`: the same iteration on the GPU backend (one submission: rollout,
//! loss, backward, clip, Adam; the stats read back, so the device is synchronised before the
//! timer stops), at 25GMM, Manywell and LGCP-sized shapes (D = 1600; Manywell(1600) stands in
//! for the LGCP target, the kernels only see the shape). On a software adapter (lavapipe) the
//! D = 1600 shape is skipped unless `DIFFUSION_SAMPLERS_BENCH_ALL=1` (and lavapipe's 128 MiB
//! storage-binding limit refuses it anyway: its [T·B, 2D] policy output is 366 MiB).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::train::Trainer;

/// FLOPs of the linear layers in one iteration: forward, dX (not for the state encoder, whose
/// input is data) and dW, over B·T rows; the per-step time MLPs run on T rows only.
fn linear_flops(cfg: &ExperimentConfig) -> u64 {
    let (b, t) = (cfg.train.batch as u64, cfg.sampler.steps as u64);
    let (d, h, l) = (
        cfg.dim() as u64,
        cfg.network.hidden as u64,
        cfg.network.joint_layers as u64,
    );
    let fwd = d * h + l * h * h + h * 2 * d;
    let dx = l * h * h + h * 2 * d;
    let dw = fwd;
    2 * b * t * (fwd + dx + dw)
}

fn config(target: &str, sigma2: f64, langevin: bool) -> ExperimentConfig {
    let text = format!(
        "(target: {target}, sampler: (steps: 100, sigma2: {sigma2}), network: (langevin: {langevin}),
          train: (method: Tb, iterations: 1000000, batch: 300))"
    );
    ExperimentConfig::parse(&text, "bench").unwrap()
}

fn iteration(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/tb_iteration");
    g.sample_size(10);
    for (name, target, sigma2, lp) in [
        ("25gmm", "Gmm25", 5.0, false),
        ("25gmm_lp", "Gmm25", 5.0, true),
        ("manywell32", "ManyWell(dim: 32)", 1.0, false),
        ("manywell32_lp", "ManyWell(dim: 32)", 1.0, true),
    ] {
        let cfg = config(target, sigma2, lp);
        let flops = linear_flops(&cfg);
        let mut tr = Trainer::new(&cfg).unwrap();
        g.throughput(Throughput::Elements(flops));
        g.bench_function(format!("{name}/B300xT100xH64/{flops}flop"), |b| {
            b.iter(|| tr.step().unwrap())
        });
    }
    g.finish();
}

/// One iteration of each other method, and of the data targets, at the paper's shapes:
/// `cpu/iteration/<method>/<target>`. PIS back-propagates through the states; FL-SubTB adds
/// the flow head and log R at every state; the VAE rows train R·B = 1500 conditioned
/// trajectories; LGCP is D = 1600.
fn method_iterations(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/iteration");
    g.sample_size(10);
    for (name, text) in [
        (
            "pis/25gmm",
            "(target: Gmm25, train: (method: Pis, iterations: 1000000))",
        ),
        (
            "fl_subtb/25gmm",
            "(target: Gmm25, train: (method: SubTb, forward_looking: true, lr_flow: 1e-2, \
             iterations: 1000000))",
        ),
        (
            "fl_subtb/manywell32",
            "(target: ManyWell(dim: 32), sampler: (sigma2: 1.0), \
             train: (method: SubTb, forward_looking: true, iterations: 1000000))",
        ),
        (
            "dds/25gmm",
            "(target: Gmm25, sampler: (noising: Vp(beta_min: 0.01, beta_max: 4.0)), \
             train: (method: Pis, iterations: 1000000))",
        ),
        (
            "vargrad_r5/vae",
            "(target: Vae(repeats: 5), train: (method: VarGrad, iterations: 1000000))",
        ),
        (
            "tb/lgcp",
            "(target: Lgcp, train: (method: Tb, iterations: 1000000))",
        ),
    ] {
        let cfg = ExperimentConfig::parse(text, "bench").unwrap();
        let mut tr = Trainer::new(&cfg).unwrap();
        g.bench_function(format!("{name}/B300xT100xH64"), |b| {
            b.iter(|| tr.step().unwrap())
        });
    }
    g.finish();
}

#[cfg(feature = "gpu")]
fn gpu_iteration(c: &mut Criterion) {
    use diffusion_samplers::config::Backend;
    use diffusion_samplers::gpu::GpuContext;
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("gpu/tb_iteration skipped: {e}");
            return;
        }
    };
    eprintln!("gpu/tb_iteration on {}", ctx.describe());
    let all = std::env::var_os("DIFFUSION_SAMPLERS_BENCH_ALL").is_some_and(|v| v == "1");
    let mut g = c.benchmark_group("gpu/tb_iteration");
    g.sample_size(10);
    for (name, target, sigma2) in [
        ("25gmm", "Gmm25", 5.0),
        ("manywell32", "ManyWell(dim: 32)", 1.0),
        ("lgcp_sized_d1600", "ManyWell(dim: 1600)", 1.0),
    ] {
        if name.ends_with("d1600") && ctx.is_software() && !all {
            eprintln!("gpu/tb_iteration/{name} skipped on a software adapter");
            continue;
        }
        let mut cfg = config(target, sigma2, false);
        cfg.backend = Backend::Gpu;
        let flops = linear_flops(&cfg);
        let mut tr = match Trainer::new(&cfg) {
            Ok(tr) => tr,
            Err(e) => {
                // e.g. lavapipe's 128 MiB binding limit at D = 1600
                eprintln!("gpu/tb_iteration/{name} skipped: {e}");
                continue;
            }
        };
        g.throughput(Throughput::Elements(flops));
        g.bench_function(format!("{name}/B300xT100xH64/{flops}flop"), |b| {
            b.iter(|| tr.step().unwrap())
        });
    }
    g.finish();
}

#[cfg(not(feature = "gpu"))]
fn gpu_iteration(_: &mut Criterion) {}

criterion_group!(benches, iteration, method_iterations, gpu_iteration);
criterion_main!(benches);

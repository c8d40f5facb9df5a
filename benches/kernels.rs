//! Criterion benches of the CPU kernels at the paper's shapes: the whole batch of a TB iteration
//! is B·T = 300·100 = 30 000 rows through 64-wide layers. Names: `cpu/<op>/<shape>`; the FLOP
//! count is the throughput (criterion prints elements/s = FLOP/s).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diffusion_samplers::cpu::Kernels;
use diffusion_samplers::rng;
use std::hint::black_box;

fn randv(n: usize, tag: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    rng::fill_normals(&mut rng::stream(1, "bench", tag), &mut v);
    v
}

fn linear(c: &mut Criterion) {
    let (rows, k, o) = (30_000usize, 64usize, 64usize);
    let x = randv(rows * k, 1);
    let w = randv(o * k, 2);
    let b = randv(o, 3);
    let dy = randv(rows * o, 4);
    let flops = (2 * rows * k * o) as u64;
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(flops));
    g.sample_size(20);
    let mut y = vec![0f32; rows * o];
    g.bench_function(
        format!("linear_forward/{rows}x{k}x{o}/{flops}flop"),
        |bch| bch.iter(|| f32::linear_forward(black_box(&x), &w, &b, &mut y, rows, k, o)),
    );
    let mut dx = vec![0f32; rows * k];
    g.bench_function(
        format!("linear_backward_dx/{rows}x{k}x{o}/{flops}flop"),
        |bch| bch.iter(|| f32::linear_backward_dx(black_box(&dy), &w, &mut dx, rows, k, o)),
    );
    let mut dw = vec![0f32; o * k];
    let mut db = vec![0f32; o];
    g.bench_function(
        format!("linear_backward_dw/{rows}x{k}x{o}/{flops}flop"),
        |bch| {
            bch.iter(|| f32::linear_backward_dw(black_box(&dy), &x, &mut dw, &mut db, rows, k, o))
        },
    );
    g.throughput(Throughput::Elements((rows * o) as u64));
    g.bench_function(format!("gelu_forward/{rows}x{o}"), |bch| {
        bch.iter(|| f32::gelu_forward(black_box(&x), &mut y))
    });
    g.bench_function(format!("gelu_backward/{rows}x{o}"), |bch| {
        bch.iter(|| f32::gelu_backward(black_box(&x), &dy, &mut dx))
    });
    let mut deriv = vec![0f32; rows * o];
    g.bench_function(format!("gelu_forward_deriv/{rows}x{o}"), |bch| {
        bch.iter(|| f32::gelu_forward_deriv(black_box(&x), &mut y, &mut deriv))
    });
    g.finish();
}

/// The LGCP target (D = 1600) at the training batch B = 300: the f32 GEMM gradient (called at
/// every step with the Langevin parametrisation) and the f64 log R. FLOPs: 2·B·D² for the
/// gradient, B·D² for log R (a triangular product). Construction (≈ 1 s) is outside the timing.
fn lgcp(c: &mut Criterion) {
    use diffusion_samplers::energies::{Energy, Lgcp};
    let l = Lgcp::load_default().expect("data/lgcp/pines.csv");
    let (b, d) = (300usize, l.dim());
    let x: Vec<f32> = randv(b * d, 5)
        .iter()
        .map(|&v| v + l.mu0() as f32)
        .collect();
    let mut g = c.benchmark_group("lgcp");
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * b * d * d) as u64));
    let mut grad = vec![0f32; b * d];
    g.bench_function(format!("grad_log_reward_b{b}"), |bch| {
        bch.iter(|| l.grad_log_reward(black_box(&x), &mut grad))
    });
    g.throughput(Throughput::Elements((b * d * d) as u64));
    let mut out = vec![0f64; b];
    g.bench_function(format!("log_reward_b{b}"), |bch| {
        bch.iter(|| l.log_reward(black_box(&x), &mut out))
    });
    g.finish();
}

/// LayerNorm at the offline-RL prior's shape: a batch of 512 rows at width 256, forward and
/// backward, the AVX2 path against the portable scalar path it equals bit for bit. Throughput
/// in elements (B·H).
fn layer_norm(c: &mut Criterion) {
    use diffusion_samplers::cpu::{portable, simd, simd_available};
    let (rows, h) = (512usize, 256usize);
    let x = randv(rows * h, 6);
    let gamma = randv(h, 7);
    let beta = randv(h, 8);
    let dy = randv(rows * h, 9);
    let mut y = vec![0f32; rows * h];
    let (mut mean, mut rstd) = (vec![0f32; rows], vec![0f32; rows]);
    let mut dx = vec![0f32; rows * h];
    let (mut dg, mut db) = (vec![0f32; h], vec![0f32; h]);
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements((rows * h) as u64));
    g.sample_size(30);
    type Fwd = fn(&[f32], &[f32], &[f32], &mut [f32], &mut [f32], &mut [f32], usize, usize);
    type Bwd = fn(
        &[f32],
        &[f32],
        &[f32],
        &[f32],
        &[f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
        usize,
        usize,
    );
    let mut paths: Vec<(&str, Fwd, Bwd)> = vec![(
        "portable",
        portable::layer_norm_forward,
        portable::layer_norm_backward,
    )];
    if simd_available() {
        paths.push(("avx2", simd::layer_norm_forward, simd::layer_norm_backward));
    }
    for (name, fwd, bwd) in paths {
        g.bench_function(format!("layer_norm_forward/{name}/{rows}x{h}"), |bch| {
            bch.iter(|| {
                fwd(
                    black_box(&x),
                    &gamma,
                    &beta,
                    &mut y,
                    &mut mean,
                    &mut rstd,
                    rows,
                    h,
                )
            })
        });
        g.bench_function(format!("layer_norm_backward/{name}/{rows}x{h}"), |bch| {
            bch.iter(|| {
                bwd(
                    black_box(&x),
                    &gamma,
                    &mean,
                    &rstd,
                    &dy,
                    &mut dx,
                    &mut dg,
                    &mut db,
                    rows,
                    h,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, linear, lgcp, layer_norm);
criterion_main!(benches);

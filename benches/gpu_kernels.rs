//! Criterion benches of the WGSL kernels, `gpu/<op>/<shape>` beside `cpu/<op>/<shape>` at the same
//! shapes (house rule §3.9). GPU timing uses `iter_custom`: each iteration records the prepared
//! dispatch (pipeline + bind group built once, as a training loop would) into a fresh encoder and
//! submits it; the device is waited on BEFORE the timer stops, so the time covers the kernels.
//! Pipelines are compiled by `warm_up()` before any timing.
//!
//! Sizes are small on purpose: on lavapipe (Mesa's software Vulkan, this machine and CI) WGSL runs
//! on the CPU cores, and the whole bench must finish in about a minute. 4096 rows = a TB batch of
//! B = 300 at ~14 time steps; the paper-size rollout (B·T = 30 000 rows) is benches/kernels.rs on
//! the CPU. Napkin math for linear_forward 4096×64×64: 2·4096·64·64 = 33.6 MFLOP, reading
//! 1 MiB of x and writing 1 MiB of y.
//!
//! `cargo bench --bench gpu_kernels` (feature `gpu`, on by default). Without an adapter only the
//! CPU benches run.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use diffusion_samplers::config::Method;
use diffusion_samplers::cpu::Kernels;
use diffusion_samplers::gpu::kernels::{
    adam, add_row, chacha, clip, gelu, linear, losses, reduce, time_features,
};
use diffusion_samplers::gpu::{Dispatch, GpuContext, GpuVec};
use diffusion_samplers::rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

const ROWS: usize = 4096;
const K: usize = 64;
const O: usize = 64;
const F: usize = 32;

fn randv(n: usize, tag: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    rng::fill_normals(&mut rng::stream(7, "gpu-bench", tag), &mut v);
    v
}

/// Times `iters` submissions of `record` and waits for the device before stopping the clock.
fn time_gpu(ctx: &GpuContext, iters: u64, record: &dyn Fn(&mut wgpu::CommandEncoder)) -> Duration {
    ctx.wait().expect("idle before timing");
    let start = Instant::now();
    for _ in 0..iters {
        let mut enc = ctx.encoder("bench");
        record(&mut enc);
        ctx.submit(enc);
    }
    ctx.wait().expect("device wait");
    start.elapsed()
}

fn gpu_one(c: &mut Criterion, ctx: &GpuContext, name: String, elements: u64, d: &Dispatch) {
    let mut g = c.benchmark_group("gpu");
    g.throughput(Throughput::Elements(elements));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| time_gpu(ctx, iters, &|enc| d.record(enc)))
    });
    g.finish();
}

fn gpu_benches(c: &mut Criterion) {
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("skipped gpu/* benches: no GPU adapter ({e})");
            return;
        }
    };
    eprintln!("gpu benches on {}", ctx.describe());
    ctx.warm_up().expect("compile pipelines");
    let flops = (2 * ROWS * K * O) as u64;
    let up = |v: &[f32], l: &str| GpuVec::from_slice(ctx, v, l);
    let x = up(&randv(ROWS * K, 1), "x");
    let w = up(&randv(O * K, 2), "w");
    let b = up(&randv(O, 3), "b");
    let dy = up(&randv(ROWS * O, 4), "dy");
    let y = GpuVec::zeros(ctx, ROWS * O, "y");
    let dx = GpuVec::zeros(ctx, ROWS * K, "dx");
    let dw = GpuVec::zeros(ctx, O * K, "dw");
    let db = GpuVec::zeros(ctx, O, "db");
    let gg = GpuVec::zeros(ctx, ROWS * O, "g");
    let shape = format!("{ROWS}x{K}x{O}");

    let d = linear::prepare_linear_forward(ctx, &x, &w, &b, &y, ROWS, K, O).expect("prepare");
    gpu_one(c, ctx, format!("linear_forward/{shape}"), flops, &d);
    let d = linear::prepare_linear_backward_dx(ctx, &dy, &w, &dx, ROWS, K, O).expect("prepare");
    gpu_one(c, ctx, format!("linear_backward_dx/{shape}"), flops, &d);
    let d =
        linear::prepare_linear_backward_dw(ctx, &dy, &x, &dw, &db, ROWS, K, O).expect("prepare");
    gpu_one(c, ctx, format!("linear_backward_dw/{shape}"), flops, &d);

    let n = (ROWS * O) as u64;
    let d = gelu::prepare_gelu_forward(ctx, &dy, &y).expect("prepare");
    gpu_one(c, ctx, format!("gelu_forward/{ROWS}x{O}"), n, &d);
    let d = gelu::prepare_gelu_backward(ctx, &dy, &y, &dx).expect("prepare");
    gpu_one(c, ctx, format!("gelu_backward/{ROWS}x{O}"), n, &d);
    let d = gelu::prepare_gelu_forward_deriv(ctx, &dy, &y, &gg).expect("prepare");
    gpu_one(c, ctx, format!("gelu_forward_deriv/{ROWS}x{O}"), n, &d);

    let t = up(&randv(ROWS, 5), "t");
    let freqs = up(&randv(F, 6), "freqs");
    let phase = up(&randv(F, 7), "phase");
    let feats = GpuVec::zeros(ctx, ROWS * 2 * F, "features");
    let d = time_features::prepare_time_features(ctx, &t, &freqs, &phase, &feats).expect("prepare");
    gpu_one(
        c,
        ctx,
        format!("time_features/{ROWS}x{F}"),
        (ROWS * F) as u64,
        &d,
    );

    let sum_out = GpuVec::zeros(ctx, 1, "sum");
    let s = reduce::prepare_sum(ctx, &dy, &sum_out, 1, ROWS * O).expect("prepare");
    let mut g = c.benchmark_group("gpu");
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("sum/{}", ROWS * O), |bch| {
        bch.iter_custom(|iters| time_gpu(ctx, iters, &|enc| s.record(enc)))
    });
    g.finish();

    // Training-iteration ops: the time-embedding row add and its VJP, the clip, the TB loss over
    // a batch of ROWS trajectories, and Σ g² + Adam over one 64×64 weight block.
    let table = up(&randv(8 * O, 8), "table");
    let d = add_row::prepare_add_row(ctx, &dy, &table, &y, ROWS, O, 3).expect("prepare");
    gpu_one(c, ctx, format!("add_row/{ROWS}x{O}"), n, &d);
    let d = add_row::prepare_col_sum_into_row(ctx, &dy, &dw, ROWS, O, 3).expect("prepare");
    gpu_one(c, ctx, format!("col_sum_into_row/{ROWS}x{O}"), n, &d);
    let d = clip::prepare_clip_forward(ctx, &dy, &y, 1.0).expect("prepare");
    gpu_one(c, ctx, format!("clip_forward/{ROWS}x{O}"), n, &d);

    let (lf, lb, lr) = (
        up(&randv(ROWS, 9), "log_pf"),
        up(&randv(ROWS, 10), "log_pb"),
        up(&randv(ROWS, 11), "log_r"),
    );
    let (lz, d_lz) = (up(&[0.5], "log_z"), GpuVec::zeros(ctx, 1, "d_log_z"));
    let (d_lf, stats) = (
        GpuVec::zeros(ctx, ROWS, "d_log_pf"),
        GpuVec::zeros(ctx, losses::STATS_LEN, "stats"),
    );
    let bufs = losses::LossBuffers {
        log_pf: &lf,
        log_pb: &lb,
        log_r: &lr,
        log_z: &lz,
        d_log_pf: &d_lf,
        d_log_z: &d_lz,
        stats: &stats,
    };
    let d = losses::prepare_loss_grad(ctx, Method::Tb, &bufs).expect("prepare");
    gpu_one(c, ctx, format!("loss_grad_tb/{ROWS}"), ROWS as u64, &d);

    let nw = O * K;
    let (p, m, v) = (
        up(&randv(nw, 12), "param"),
        GpuVec::zeros(ctx, nw, "m"),
        GpuVec::zeros(ctx, nw, "v"),
    );
    let grad = up(&randv(nw, 13), "grad");
    let partials = GpuVec::zeros(ctx, 1, "partials");
    let scale = up(&[1.0, 0.0], "scale");
    let d = adam::prepare_sum_squares(ctx, &grad, &partials, 0).expect("prepare");
    gpu_one(c, ctx, format!("sum_squares/{O}x{K}"), nw as u64, &d);
    let cfg = adam::AdamStepConfig::new(1e-3, 1);
    let a = adam::prepare_adam_step(ctx, &p, &grad, &m, &v, &scale, &cfg).expect("prepare");
    gpu_one(c, ctx, format!("adam_step/{O}x{K}"), nw as u64, &a.dispatch);
}

fn cpu_benches(c: &mut Criterion) {
    let (x, w, b, dy) = (
        randv(ROWS * K, 1),
        randv(O * K, 2),
        randv(O, 3),
        randv(ROWS * O, 4),
    );
    let flops = (2 * ROWS * K * O) as u64;
    let shape = format!("{ROWS}x{K}x{O}");
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(flops));
    let mut y = vec![0f32; ROWS * O];
    g.bench_function(format!("linear_forward/{shape}"), |bch| {
        bch.iter(|| f32::linear_forward(black_box(&x), &w, &b, &mut y, ROWS, K, O))
    });
    let mut dx = vec![0f32; ROWS * K];
    g.bench_function(format!("linear_backward_dx/{shape}"), |bch| {
        bch.iter(|| f32::linear_backward_dx(black_box(&dy), &w, &mut dx, ROWS, K, O))
    });
    let (mut dw, mut db) = (vec![0f32; O * K], vec![0f32; O]);
    g.bench_function(format!("linear_backward_dw/{shape}"), |bch| {
        bch.iter(|| f32::linear_backward_dw(black_box(&dy), &x, &mut dw, &mut db, ROWS, K, O))
    });
    let n = (ROWS * O) as u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("gelu_forward/{ROWS}x{O}"), |bch| {
        bch.iter(|| f32::gelu_forward(black_box(&dy), &mut y))
    });
    g.bench_function(format!("gelu_backward/{ROWS}x{O}"), |bch| {
        bch.iter(|| f32::gelu_backward(black_box(&dy), &y, &mut dx))
    });
    let mut gg = vec![0f32; ROWS * O];
    g.bench_function(format!("gelu_forward_deriv/{ROWS}x{O}"), |bch| {
        bch.iter(|| f32::gelu_forward_deriv(black_box(&dy), &mut y, &mut gg))
    });
    let (t, freqs, phase) = (randv(ROWS, 5), randv(F, 6), randv(F, 7));
    let mut feats = vec![0f32; ROWS * 2 * F];
    g.throughput(Throughput::Elements((ROWS * F) as u64));
    g.bench_function(format!("time_features/{ROWS}x{F}"), |bch| {
        bch.iter(|| f32::time_features(black_box(&t), &freqs, &phase, &mut feats))
    });
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("sum/{}", ROWS * O), |bch| {
        bch.iter(|| f32::sum(black_box(&dy)))
    });
    g.finish();
}

/// `gpu/noise`: one training iteration's noise, T steps × [B·D] normals into T `GpuVec`s (the
/// trainer's layout, stream (seed, "train-noise", it), normal (i·B + b)·D + j), two ways:
/// - `upload/<shape>`: what `gpu::trainer` does — host `rng::normals_at` (f64 Box–Muller) per
///   step + `GpuVec::write`, then a submit that flushes the staged writes, then device sync;
///   moves 4·T·B·D bytes host → device per iteration;
/// - `generate/<shape>`: the `chacha8_normals` kernel (f32 Box–Muller, not bitwise the CPU's),
///   dispatches prepared once, per iteration a 32-byte key write + T dispatches in one pass +
///   device sync; `generate_words/<shape>`: the same with `chacha8_words` (the bitwise part alone).
///
/// Shapes: Manywell T = 100, B = 300, D = 32 (960 000 normals) and LGCP D = 1600 (48 000 000).
/// Every iteration uses a new key, as training does. LGCP takes about a second per iteration on
/// lavapipe, so the group samples flat (10 iterations, not criterion's 55 of linear sampling).
fn noise_benches(c: &mut Criterion) {
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("skipped gpu/noise benches: no GPU adapter ({e})");
            return;
        }
    };
    ctx.warm_up().expect("compile pipelines");
    let mut g = c.benchmark_group("gpu/noise");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, t, b, d) in [
        ("manywell", 100usize, 300usize, 32usize),
        ("lgcp", 100, 300, 1600),
    ] {
        let n = b * d;
        let shape = format!("{name}_T{t}xB{b}xD{d}");
        eprintln!(
            "gpu/noise {shape}: {} normals per iteration; upload moves {:.1} MB host → device",
            t * n,
            (4 * t * n) as f64 / 1e6
        );
        let bufs: Vec<GpuVec> = (0..t).map(|_| GpuVec::zeros(ctx, n, "noise")).collect();
        g.throughput(Throughput::Elements((t * n) as u64));

        let mut host = vec![0f32; n];
        let mut it = 0u64;
        g.bench_function(format!("upload/{shape}"), |bch| {
            bch.iter_custom(|iters| {
                ctx.wait().expect("idle before timing");
                let start = Instant::now();
                for _ in 0..iters {
                    let mut stream = rng::stream(1, "train-noise", it);
                    it += 1;
                    for (i, buf) in bufs.iter().enumerate() {
                        rng::normals_at(&mut stream, (i * n) as u64, &mut host);
                        buf.write(ctx, &host);
                    }
                    // queue.write_buffer is staged until the next submit
                    ctx.submit(ctx.encoder("noise upload"));
                }
                ctx.wait().expect("device wait");
                start.elapsed()
            })
        });

        let key_buf = chacha::upload_key(ctx, &rng::stream_key(1, "train-noise", 0));
        for (what, words) in [("generate", false), ("generate_words", true)] {
            let dispatches: Vec<Dispatch> = bufs
                .iter()
                .enumerate()
                .map(|(i, buf)| {
                    let at = (i * n) as u64;
                    if words {
                        chacha::prepare_chacha8_words(ctx, &key_buf, at, buf)
                    } else {
                        chacha::prepare_chacha8_normals(ctx, &key_buf, at, buf)
                    }
                    .expect("prepare")
                })
                .collect();
            let mut it = 0u64;
            g.bench_function(format!("{what}/{shape}"), |bch| {
                bch.iter_custom(|iters| {
                    ctx.wait().expect("idle before timing");
                    let start = Instant::now();
                    for _ in 0..iters {
                        chacha::write_key(ctx, &key_buf, &rng::stream_key(1, "train-noise", it));
                        it += 1;
                        let mut enc = ctx.encoder("noise generate");
                        {
                            let mut pass = enc.begin_compute_pass(&Default::default());
                            for d in &dispatches {
                                d.record_in_pass(&mut pass);
                            }
                        }
                        ctx.submit(enc);
                    }
                    ctx.wait().expect("device wait");
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

/// `gpu/policy_forward|policy_backward/<shape>`: one fused rollout step (policy_step.wgsl) at the
/// paper's B = 300, H = 64, L = 2 for D = 32 (Manywell) and D = 1600 (LGCP-sized), throughput
/// in the step's linear-layer FLOPs (forward: 2B(DH + LH² + 2DH); backward: the dx chain,
/// 2B(2DH + LH²)); and `gpu/linear_backward_dw_split/<R>x<K>x<O>`: the weight-gradient product
/// of the D = 1600 state encoder over R = 15 000 rows (half a T·B rollout: lavapipe's 128 MiB
/// binding limit), chunks of 256 rows.
fn step_benches(c: &mut Criterion) {
    use diffusion_samplers::gpu::kernels::em_step::EmStepConfig;
    use diffusion_samplers::gpu::kernels::policy_step::{self, PolicyBuffers, PolicyShape};
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("skipped gpu/policy_* benches: no GPU adapter ({e})");
            return;
        }
    };
    let (b, h, l) = (300usize, 64usize, 2usize);
    for d in [32usize, 1600] {
        let shape = PolicyShape {
            batch: b,
            dim: d,
            hidden: h,
            layers: l,
            steps: 1,
            out_clip: 1e4,
            lp: None,
            learned: None,
        };
        let up = |v: Vec<f32>, label: &str| GpuVec::from_slice(ctx, &v, label);
        let z = |n: usize| GpuVec::zeros(ctx, n, "buf");
        let w: Vec<f32> = randv(shape.packed_offsets().1, 20)
            .iter()
            .map(|v| 0.1 * v)
            .collect();
        let weights_t = up(shape.transpose_packed(&w), "w_t");
        let weights = up(w, "w");
        let (temb, noise, xs) = (
            up(randv(h, 21), "temb"),
            up(randv(b * d, 22), "noise"),
            up(randv(2 * b * d, 23), "xs"),
        );
        let (std, g) = (up(vec![0.1], "std"), up(randv(b, 24), "g"));
        let (hh, dh, o_raw, o, d_o) =
            (z(b * h), z(b * h), z(b * 2 * d), z(b * 2 * d), z(b * 2 * d));
        let a: Vec<GpuVec> = (0..=l).map(|_| z(b * h)).collect();
        let zz: Vec<GpuVec> = (0..l).map(|_| z(b * h)).collect();
        let dz: Vec<GpuVec> = (0..l).map(|_| z(b * h)).collect();
        let (lf, lb, dtemb, dummy, dummy_read) = (z(b), z(b), z(h), z(1), z(1));
        let bufs = PolicyBuffers {
            weights: &weights,
            weights_t: &weights_t,
            temb: &temb,
            noise: &noise,
            step_std: &std,
            xs: &xs,
            h: &hh,
            a: &a,
            z: &zz,
            o_raw: &o_raw,
            o: &o,
            log_pf: &lf,
            log_pb: &lb,
            d_log_pf: &g,
            d_o: &d_o,
            dz: &dz,
            dh: &dh,
            dtemb: &dtemb,
            lp_scale: &dummy_read,
            grad_r: &dummy_read,
            dscale: &dummy,
            dummy: &dummy,
        };
        let em = EmStepConfig {
            dt: 0.01,
            sigma2: 1.0,
            explore_std: 0.0,
            step: 0,
            accumulate: false,
        };
        let fwd = policy_step::prepare_policy_forward(ctx, &shape, &em, &bufs).expect("prepare");
        let flops_f = (2 * b * (d * h + l * h * h + 2 * d * h)) as u64;
        gpu_one(
            c,
            ctx,
            format!("policy_forward/B{b}xD{d}xH{h}xL{l}"),
            flops_f,
            &fwd,
        );
        let bwd = policy_step::prepare_policy_backward(ctx, &shape, &em, &bufs).expect("prepare");
        let flops_b = (2 * b * (2 * d * h + l * h * h)) as u64;
        gpu_one(
            c,
            ctx,
            format!("policy_backward/B{b}xD{d}xH{h}xL{l}"),
            flops_b,
            &bwd,
        );
    }
    let (rows, k, o, chunk) = (15_000usize, 1600usize, 64usize, 256usize);
    let (dy, x) = (
        GpuVec::from_slice(ctx, &randv(rows * o, 25), "dy"),
        GpuVec::from_slice(ctx, &randv(rows * k, 26), "x"),
    );
    let (dw, db) = (GpuVec::zeros(ctx, o * k, "dw"), GpuVec::zeros(ctx, o, "db"));
    let chunks = linear::split_chunks(rows, chunk);
    let (pw, pb) = (
        GpuVec::zeros(ctx, chunks * o * k, "part_w"),
        GpuVec::zeros(ctx, chunks * o, "part_b"),
    );
    let [p1, p2] = linear::prepare_linear_backward_dw_split(
        ctx, &dy, &x, &dw, &db, &pw, &pb, rows, k, o, chunk,
    )
    .expect("prepare");
    let mut g = c.benchmark_group("gpu");
    g.throughput(Throughput::Elements((2 * rows * k * o) as u64));
    g.bench_function(format!("linear_backward_dw_split/{rows}x{k}x{o}"), |bch| {
        bch.iter_custom(|iters| {
            time_gpu(ctx, iters, &|enc| {
                p1.record(enc);
                p2.record(enc);
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    // Small and short: lavapipe is slow, and the whole file should run in about a minute.
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = gpu_benches, cpu_benches, noise_benches, step_benches
}
criterion_main!(benches);

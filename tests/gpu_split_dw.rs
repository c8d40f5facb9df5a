//! Split-K weight gradients (linear.wgsl `linear_backward_dw_partial` + `_reduce`) against the
//! exact f64 product and, with a single chunk, against `linear_backward_dw` bit for bit.
//!
//! Without an adapter the tests print `skipped: no GPU adapter (…)` and pass, unless
//! `DIFFUSION_SAMPLERS_REQUIRE_GPU=1` (set by `.ci/run` where lavapipe is installed).

#![cfg(feature = "gpu")]

mod common;

use common::gpu_or_skip;
use diffusion_samplers::gpu::kernels::linear;
use diffusion_samplers::gpu::{GpuContext, GpuVec};
use diffusion_samplers::rng;

/// Unit roundoff of f32.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// |split − exact| ≤ ulps·u·(S + C + 2)·Σ_r |dy·x| (+ |dw₀|): a chunk's chain of S fmas and the
/// C-term chunk sum each add at most one rounding per term (two where the fma is unfused).
const GPU_SPLIT_DW_ULPS: f64 = 2.0;

fn normals(tag: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    rng::fill_normals(&mut rng::stream(9, "split-dw", tag), &mut v);
    v
}

/// Runs the split product into dw/db that start at `dw0`/`db0`; returns (dw, db).
#[allow(clippy::too_many_arguments)]
fn run_split(
    ctx: &GpuContext,
    dy: &[f32],
    x: &[f32],
    dw0: &[f32],
    db0: &[f32],
    rows: usize,
    k: usize,
    o: usize,
    chunk: usize,
) -> (Vec<f32>, Vec<f32>) {
    let c = linear::split_chunks(rows, chunk);
    let (gdy, gx) = (
        GpuVec::from_slice(ctx, dy, "dy"),
        GpuVec::from_slice(ctx, x, "x"),
    );
    let (gdw, gdb) = (
        GpuVec::from_slice(ctx, dw0, "dw"),
        GpuVec::from_slice(ctx, db0, "db"),
    );
    let pw = GpuVec::zeros(ctx, c * o * k, "part_w");
    let pb = GpuVec::zeros(ctx, c * o, "part_b");
    let mut enc = ctx.encoder("split dw");
    for d in linear::prepare_linear_backward_dw_split(
        ctx, &gdy, &gx, &gdw, &gdb, &pw, &pb, rows, k, o, chunk,
    )
    .unwrap()
    {
        d.record(&mut enc);
    }
    ctx.submit(enc);
    let v = ctx.read_many(&[&gdw, &gdb]).unwrap();
    (v[0].clone(), v[1].clone())
}

#[test]
fn split_dw_matches_the_exact_product() {
    let Some(ctx) = gpu_or_skip() else { return };
    for (rows, k, o, chunk) in [
        (1usize, 3usize, 4usize, 256usize),
        (301, 7, 5, 64),
        (1000, 16, 6, 256),
        (4097, 3, 19, 100),
    ] {
        let dy = normals(rows as u64, rows * o);
        let x = normals(rows as u64 + 1, rows * k);
        let dw0 = normals(rows as u64 + 2, o * k);
        let db0 = normals(rows as u64 + 3, o);
        let (dw, db) = run_split(ctx, &dy, &x, &dw0, &db0, rows, k, o, chunk);
        let c = linear::split_chunks(rows, chunk);
        let growth = (chunk.min(rows) + c + 2) as f64 * GPU_SPLIT_DW_ULPS * U32;
        let mut worst = 0f64;
        for j in 0..o {
            for p in 0..k {
                let (mut exact, mut mag) = (dw0[j * k + p] as f64, dw0[j * k + p].abs() as f64);
                for r in 0..rows {
                    let t = dy[r * o + j] as f64 * x[r * k + p] as f64;
                    exact += t;
                    mag += t.abs();
                }
                let e = (dw[j * k + p] as f64 - exact).abs();
                assert!(e <= growth * mag + 1e-30, "dw[{j},{p}] rows {rows}: {e:e}");
                worst = worst.max(e / (U32 * mag));
            }
            let (mut exact, mut mag) = (db0[j] as f64, db0[j].abs() as f64);
            for r in 0..rows {
                exact += dy[r * o + j] as f64;
                mag += dy[r * o + j].abs() as f64;
            }
            let e = (db[j] as f64 - exact).abs();
            assert!(e <= growth * mag + 1e-30, "db[{j}] rows {rows}: {e:e}");
        }
        eprintln!("rows {rows} chunk {chunk}: max error {worst:.1} ulp of Σ|terms|");
    }
}

#[test]
fn one_chunk_from_zero_equals_the_unsplit_kernel_bitwise() {
    let Some(ctx) = gpu_or_skip() else { return };
    let (rows, k, o) = (65usize, 9usize, 7usize);
    let dy = normals(1, rows * o);
    let x = normals(2, rows * k);
    let (dw, db) = run_split(
        ctx,
        &dy,
        &x,
        &vec![0.0; o * k],
        &vec![0.0; o],
        rows,
        k,
        o,
        65,
    );
    let mut want_w = vec![0f32; o * k];
    let mut want_b = vec![0f32; o];
    linear::run_linear_backward_dw(ctx, &dy, &x, &mut want_w, &mut want_b, rows, k, o).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&dw), bits(&want_w));
    assert_eq!(bits(&db), bits(&want_b));
}

//! Every GPU kernel against its CPU reference (llm.c's pattern, house rule §3.1), at odd sizes
//! (rows ∈ {1, 7, 65, 301}, K ∈ {2, 64, 65}, O ∈ {3, 4, 64}) with named tolerances.
//!
//! Each check is written once over a [`Device`] and instantiated for the CPU (`cpu::Kernels`,
//! which must equal the scalar reference bitwise — a sanity check of the harness) and for the GPU
//! (the shared `GpuContext`: lavapipe here and in CI). Without any adapter the GPU instances print
//! `skipped: no GPU adapter (…)` and pass, so machines without Vulkan stay green; set
//! `DIFFUSION_SAMPLERS_REQUIRE_GPU=1` to make a missing adapter fail instead.
//!
//! Bitwise or toleranced: the kernels keep the CPU's per-element operation order, so on a device
//! whose WGSL `fma` is a true fused multiply-add (and that keeps subnormals where they matter)
//! the linear, GELU and time-feature results are bit-identical to the CPU. WGSL does not promise
//! a fused `fma`, and lavapipe's is not (Mesa lowers `ffma` to `fmul` + `fadd` for llvmpipe;
//! [`probe`] measures it). So every check makes three comparisons:
//! 1. the test's operation-sequence [`model`] with a fused fma equals the CPU reference bitwise;
//! 2. the GPU equals the model with the DEVICE's fma (fused or not, as probed) BITWISE — this
//!    proves the shader performs the reference's operations in the reference's order, and on a
//!    fused-fma device it means GPU == CPU bit for bit;
//! 3. the GPU is within the named tolerance of the CPU reference (sized for an unfused fma).
//!
//! Every GPU check prints its mismatch count and max |Δ| in ulps (`--nocapture` shows them).
//!
//! Sizes are small: lavapipe runs WGSL on the CPU cores and compiles each pipeline on first use
//! (all tests share one context, so once per process).

#![cfg(feature = "gpu")]

mod common;

use common::gpu_or_skip;
use diffusion_samplers::cpu::{self, Kernels};
use diffusion_samplers::gpu::kernels::{gelu, linear, reduce, time_features};
use diffusion_samplers::gpu::{self, GpuContext, GpuError, GpuVec};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Named tolerances
// ---------------------------------------------------------------------------------------------
//
// Every preset bounds |gpu − cpu| by `ulps · u · scale(i)`, u = 2⁻²⁴ and `scale` the magnitude
// the rounding errors are relative to (stated per preset). They are sized for a device whose
// WGSL `fma` is NOT fused — WGSL allows that, and lavapipe is such a device (Mesa lowers ffma to
// fmul + fadd for llvmpipe) — where each fma rounds twice. With a fused fma the same kernels are
// bitwise equal to the CPU, and the model check below demands exactly that.

/// Unit roundoff of f32, 2^-24.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// `|gpu − cpu| ≤ ulps · u · scale` (+ 1e-37 so exact zeros compare).
#[derive(Clone, Copy, Debug)]
struct Tol {
    name: &'static str,
    ulps: f64,
}

impl Tol {
    fn bound(&self, scale: f64) -> f64 {
        self.ulps * U32 * scale + 1e-37
    }
}

/// Linear forward/backward: one chain of n fmas per element in the CPU's order.
/// scale = (n + 1)·Σ|terms| (terms = the n products and the start value). An unfused fma adds
/// one rounding of each product, so the two chains differ by ≤ 2(n+1)·u·Σ|terms| (Higham's γ_n
/// for each side). Measured on lavapipe: up to ~8000 ulp of an element whose terms cancel.
const GPU_LINEAR: Tol = Tol {
    name: "gpu-linear",
    ulps: 2.0,
};

/// db inside linear_backward_dw: plain adds in the CPU order, no fma — bitwise on any IEEE device.
const GPU_DB: Tol = Tol {
    name: "gpu-db-exact",
    ulps: 0.0,
};

/// GELU: erf/exp polynomials (shaders/math.wgsl = src/cpu/math.rs) and the final fmas.
/// scale = |x| + |y| for y = GELU(x) (the fma h·e + h cancels to |y| ≪ |x| for x ≪ 0),
/// (1 + |x|) for g = GELU'(x), and (1 + |x|)·|dy| for dx. Measured on lavapipe: ≤ 16 ulp of g,
/// ≤ 0.1·|x|·u absolute on y.
const GPU_GELU: Tol = Tol {
    name: "gpu-gelu",
    ulps: 16.0,
};

/// Time features sin/cos(a), a = fma(t, f, φ): unfused, the argument and each Cody–Waite step
/// round once more (errors ∝ |a|), which sin/cos pass through. scale = 1 + |t·f| + |a|.
const GPU_TIME_FEATURES: Tol = Tol {
    name: "gpu-time-features",
    ulps: 4.0,
};

/// Fixed-order GPU sum vs the exact sum (f64 of the f32 inputs): the shader's order has at most
/// 4 + 8 + ⌈G/256⌉ + 8 additions on any path (G = ⌈n/1024⌉), so
/// |gpu − exact| ≤ (21 + ⌈G/256⌉)·u·Σ|x|. NOT compared bitwise with `cpu::Kernels::sum` (a different
/// fixed order), but compared bitwise with itself across runs.
const GPU_SUM: &str = "gpu-sum";

fn gpu_sum_bound(x: &[f32]) -> f64 {
    let groups = x.len().div_ceil(reduce::CHUNK);
    let depth = 21 + groups.div_ceil(256);
    let sum_abs: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
    depth as f64 * U32 * sum_abs + 1e-37
}

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

/// The ops under test with the CPU reference's signatures; implemented by both backends.
trait Device {
    fn name(&self) -> &'static str;
    /// The GPU context, if this is the GPU.
    fn gpu(&self) -> Option<&'static GpuContext>;
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    );
    fn linear_backward_dx(
        &self,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_dw(
        &self,
        dy: &[f32],
        x: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    );
    fn gelu_forward(&self, x: &[f32], y: &mut [f32]);
    fn gelu_backward(&self, x: &[f32], dy: &[f32], dx: &mut [f32]);
    fn gelu_forward_deriv(&self, x: &[f32], y: &mut [f32], g: &mut [f32]);
    fn time_features(&self, t: &[f32], f: &[f32], p: &[f32], out: &mut [f32]);
    fn sum(&self, x: &[f32]) -> f32;
}

/// `cpu::Kernels` for f32 (AVX2 when present, else portable: bitwise the same).
struct Cpu;

impl Device for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn gpu(&self) -> Option<&'static GpuContext> {
        None
    }
    fn linear_forward(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    ) {
        f32::linear_forward(x, w, b, y, r, k, o)
    }
    fn linear_backward_dx(
        &self,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    ) {
        f32::linear_backward_dx(dy, w, dx, r, k, o)
    }
    fn linear_backward_dw(
        &self,
        dy: &[f32],
        x: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    ) {
        f32::linear_backward_dw(dy, x, dw, db, r, k, o)
    }
    fn gelu_forward(&self, x: &[f32], y: &mut [f32]) {
        f32::gelu_forward(x, y)
    }
    fn gelu_backward(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        f32::gelu_backward(x, dy, dx)
    }
    fn gelu_forward_deriv(&self, x: &[f32], y: &mut [f32], g: &mut [f32]) {
        f32::gelu_forward_deriv(x, y, g)
    }
    fn time_features(&self, t: &[f32], f: &[f32], p: &[f32], out: &mut [f32]) {
        f32::time_features(t, f, p, out)
    }
    fn sum(&self, x: &[f32]) -> f32 {
        f32::sum(x)
    }
}

/// The GPU through the `run_<op>` wrappers (upload, record, submit, read back).
struct Gpu(&'static GpuContext);

fn ok<T>(r: Result<T, GpuError>) -> T {
    r.unwrap_or_else(|e| panic!("GPU error: {e}"))
}

impl Device for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }
    fn gpu(&self) -> Option<&'static GpuContext> {
        Some(self.0)
    }
    fn linear_forward(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    ) {
        ok(linear::run_linear_forward(self.0, x, w, b, y, r, k, o))
    }
    fn linear_backward_dx(
        &self,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    ) {
        ok(linear::run_linear_backward_dx(self.0, dy, w, dx, r, k, o))
    }
    fn linear_backward_dw(
        &self,
        dy: &[f32],
        x: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        r: usize,
        k: usize,
        o: usize,
    ) {
        ok(linear::run_linear_backward_dw(
            self.0, dy, x, dw, db, r, k, o,
        ))
    }
    fn gelu_forward(&self, x: &[f32], y: &mut [f32]) {
        ok(gelu::run_gelu_forward(self.0, x, y))
    }
    fn gelu_backward(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        ok(gelu::run_gelu_backward(self.0, x, dy, dx))
    }
    fn gelu_forward_deriv(&self, x: &[f32], y: &mut [f32], g: &mut [f32]) {
        ok(gelu::run_gelu_forward_deriv(self.0, x, y, g))
    }
    fn time_features(&self, t: &[f32], f: &[f32], p: &[f32], out: &mut [f32]) {
        ok(time_features::run_time_features(self.0, t, f, p, out))
    }
    fn sum(&self, x: &[f32]) -> f32 {
        ok(reduce::run_sum(self.0, x))
    }
}

/// candle's `test_device!`: one check, a `cpu` and a `gpu` test.
macro_rules! test_device {
    ($check:ident) => {
        mod $check {
            #[test]
            fn cpu() {
                super::$check(&super::Cpu);
            }
            #[test]
            fn gpu() {
                if let Some(ctx) = super::gpu_or_skip() {
                    super::$check(&super::Gpu(ctx));
                }
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The fma / subnormal probe
// ---------------------------------------------------------------------------------------------

/// What the device does with the two things bitwise parity depends on.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// WGSL `fma(a, b, c)` rounds once (fused).
    fma_fused: bool,
    /// A subnormal product survives (not flushed to zero).
    keeps_subnormals: bool,
}

/// Runs a 1-thread test shader (a diagnostic, not a shipped kernel) on the shared context:
/// fma(1+2⁻¹², 1+2⁻¹², −(1+2⁻¹¹)) is 2⁻²⁴ fused and 0 unfused; 2⁻⁶⁶·2⁻⁶⁶ = 2⁻¹³² is subnormal.
fn probe(ctx: &GpuContext) -> Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    *PROBE.get_or_init(|| {
        const SRC: &str = "
            @group(0) @binding(0) var<storage, read> inp: array<f32>;
            @group(0) @binding(1) var<storage, read_write> res: array<f32>;
            @compute @workgroup_size(1)
            fn main() {
                res[0] = fma(inp[0], inp[1], inp[2]);
                res[1] = inp[3] * inp[3];
            }";
        let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("probe"),
            source: wgpu::ShaderSource::Wgsl(SRC.into()),
        });
        let pipeline = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("probe"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let a = 1.0 + 2f32.powi(-12);
        let inp = GpuVec::from_slice(ctx, &[a, a, -(1.0 + 2f32.powi(-11)), 2f32.powi(-66)], "in");
        let res = GpuVec::zeros(ctx, 2, "res");
        let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("probe"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: inp.buffer().as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: res.buffer().as_entire_binding(),
                },
            ],
        });
        let mut enc = ctx.encoder("probe");
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        ctx.submit(enc);
        let r = ok(res.read(ctx));
        let p = Probe {
            fma_fused: r[0] == 2f32.powi(-24),
            keeps_subnormals: r[1] == 2f32.powi(-132),
        };
        eprintln!(
            "probe on {}: fma(1+2^-12, 1+2^-12, -(1+2^-11)) = {:e} (fused: {}), 2^-66·2^-66 = {:e} (subnormals kept: {})",
            ctx.describe(),
            r[0],
            p.fma_fused,
            r[1],
            p.keeps_subnormals
        );
        p
    })
}

#[test]
fn fma_and_subnormal_probe() {
    if let Some(ctx) = gpu_or_skip() {
        let p = probe(ctx);
        // Not asserted either way: WGSL allows both. Reported, and it decides below whether the
        // linear kernels must be bitwise.
        eprintln!("{p:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The operation-sequence model
// ---------------------------------------------------------------------------------------------

/// The CPU references' operation sequences (src/cpu/{linear,gelu,time_features,math}.rs) with the
/// fused multiply-add as a parameter. With [`model::fused`] the model IS the reference (checked
/// bitwise on the CPU); with [`model::unfused`] (`a·b` rounded, then `+ c` rounded) it is what a
/// device with an unfused WGSL `fma` must compute if the shader performs the reference's
/// operations in the reference's order — so on such a device (lavapipe) the GPU is checked
/// BITWISE against it, which proves the shaders' order even where it cannot equal the CPU bitwise.
mod model {
    pub type Fma = fn(f32, f32, f32) -> f32;

    pub fn fused(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    /// Rust never contracts `a * b + c`, so this is two roundings.
    pub fn unfused(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    fn max_sse(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    fn min_sse(a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    fn cvtt_sse(x: f32) -> i32 {
        if x.abs() < 2_147_483_648.0 {
            x as i32
        } else {
            i32::MIN
        }
    }
    fn or_sign(y: f32, x: f32) -> f32 {
        f32::from_bits(y.to_bits() | (x.to_bits() & 0x8000_0000))
    }
    fn b(bits: u32) -> f32 {
        f32::from_bits(bits)
    }

    fn exp_reduce(x: f32, fma: Fma) -> (f32, f32) {
        let n = (x * b(0x3fb8_aa3b)).round_ties_even();
        let r = fma(-n, b(0x3f31_7218), x);
        let r = fma(-n, b(0xb102_e308), r);
        let mut p = b(0x3950_6967);
        for c in [
            0x3ab7_43ce,
            0x3c08_8908,
            0x3d2a_a9c1,
            0x3e2a_aaaa,
            0x3f00_0000,
        ] {
            p = fma(p, r, b(c));
        }
        (n, fma(p, r * r, r) + 1.0)
    }

    pub fn exp_f32(x: f32, fma: Fma) -> f32 {
        let x = min_sse(89.0, max_sse(-104.0, x));
        let (n, y) = exp_reduce(x, fma);
        let ni = cvtt_sse(n);
        let n1 = ni >> 1;
        let n2 = ni.wrapping_sub(n1);
        let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
        let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
        y * s1 * s2
    }

    fn exp_moderate(x: f32, fma: Fma) -> f32 {
        let (n, y) = exp_reduce(x, fma);
        y * f32::from_bits((cvtt_sse(n).wrapping_add(127) as u32) << 23)
    }

    pub fn erf_f32(x: f32, fma: Fma) -> f32 {
        let t = x.abs();
        if t > 0.921_875 {
            let t = min_sse(t, 4.0);
            let s = t * t;
            let r = fma(b(0x3791_1480), t, b(0xb9c8_e966));
            let u = fma(b(0x3b7e_899b), t, b(0xbcc6_b180));
            let mut r = fma(r, s, u);
            for c in [0x3dda_ae58, 0x3f22_8550, 0x3e03_ce86] {
                r = fma(r, t, b(c));
            }
            r = fma(r, t, t);
            or_sign(1.0 - exp_moderate(-r, fma), x)
        } else {
            let s = x * x;
            let mut r = b(0xba1d_0d41);
            for c in [
                0x3ba3_9fa4,
                0xbcdb_45e9,
                0x3de7_0d23,
                0xbec0_9370,
                0x3e03_75d3,
            ] {
                r = fma(r, s, b(c));
            }
            fma(r, x, x)
        }
    }

    pub fn sin_cos_f32(x: f32, fma: Fma) -> (f32, f32) {
        let q = (x * b(0x3f22_f983)).round_ties_even();
        let r = fma(-q, b(0x3fc9_0fdb), x);
        let r = fma(-q, b(0xb33b_bd2e), r);
        let r = fma(-q, b(0xa6f7_2ced), r);
        let z = r * r;
        let ps = fma(fma(b(0xb94c_a1f9), z, b(0x3c08_839e)), z, b(0xbe2a_aaa3));
        let s = fma(ps * z, r, r);
        let pc = fma(fma(b(0x37cc_f5ce), z, b(0xbab6_061a)), z, b(0x3d2a_aaa5));
        let c = fma(pc * z, z, fma(-0.5, z, 1.0));
        let j = cvtt_sse(q);
        let (s, c) = if j & 1 != 0 { (c, s) } else { (s, c) };
        let sin_sign = ((j & 2) as u32) << 30;
        let cos_sign = ((j.wrapping_add(1) & 2) as u32) << 30;
        (
            f32::from_bits(s.to_bits() ^ sin_sign),
            f32::from_bits(c.to_bits() ^ cos_sign),
        )
    }

    const FRAC_1_SQRT_2: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_280_401_432_7_f64 as f32;

    /// (GELU(x), GELU'(x)) in the order of `gelu_forward_deriv_ref`.
    pub fn gelu(x: f32, fma: Fma) -> (f32, f32) {
        let e = erf_f32(x * FRAC_1_SQRT_2, fma);
        let h = 0.5 * x;
        let cdf = fma(e, 0.5, 0.5);
        let pdf = exp_f32((-0.5 * x) * x, fma) * FRAC_1_SQRT_2PI;
        (fma(h, e, h), fma(x, pdf, cdf))
    }

    pub fn linear_forward(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        k: usize,
        o: usize,
        fma: Fma,
    ) -> Vec<f32> {
        let rows = x.len() / k;
        let mut y = vec![0f32; rows * o];
        for r in 0..rows {
            for j in 0..o {
                let mut acc = bias[j];
                for p in 0..k {
                    acc = fma(x[r * k + p], w[j * k + p], acc);
                }
                y[r * o + j] = acc;
            }
        }
        y
    }

    pub fn linear_backward_dx(dy: &[f32], w: &[f32], k: usize, o: usize, fma: Fma) -> Vec<f32> {
        let rows = dy.len() / o;
        let mut dx = vec![0f32; rows * k];
        for r in 0..rows {
            for p in 0..k {
                let mut acc = 0.0;
                for j in 0..o {
                    acc = fma(dy[r * o + j], w[j * k + p], acc);
                }
                dx[r * k + p] = acc;
            }
        }
        dx
    }

    pub fn linear_backward_dw(dy: &[f32], x: &[f32], dw: &mut [f32], k: usize, o: usize, fma: Fma) {
        let rows = dy.len() / o;
        for j in 0..o {
            for p in 0..k {
                let mut acc = dw[j * k + p];
                for r in 0..rows {
                    acc = fma(dy[r * o + j], x[r * k + p], acc);
                }
                dw[j * k + p] = acc;
            }
        }
    }
}

/// Whether the device's fma is fused: always on the CPU (`mul_add`), as probed on a GPU.
fn device_fused(dev: &dyn Device) -> bool {
    dev.gpu().is_none_or(|ctx| probe(ctx).fma_fused)
}

/// The model's fma for this device: the reference's (fused) on the CPU, the probed one on a GPU.
fn device_fma(dev: &dyn Device) -> model::Fma {
    if device_fused(dev) {
        model::fused
    } else {
        model::unfused
    }
}

/// How strictly a result must follow the operation-sequence model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelCheck {
    /// Bitwise on every device: pure fma chains and adds (linear, db). Lavapipe's compiler keeps
    /// these op for op (only splitting each fma into fmul + fadd).
    Always,
    /// Bitwise where the device's fma is fused (then GPU == CPU exactly); only reported where it
    /// is not. On lavapipe the elementwise math (erf/exp/sin/cos polynomials) is further rewritten
    /// by Mesa's NIR/LLVM optimisations (the SPIR-V carries no NoContraction, so this is allowed):
    /// measured, ~13 % of sin/cos values 1 ulp from the unfused model, GELU a few ulp (hundreds
    /// of ulp only where GELU'(x) cancels to ~1e-14 for x ≪ 0). The named tolerance still holds.
    WhenFused,
}

/// `got` must equal the model's result bit for bit (see [`model`] and [`ModelCheck`]).
fn assert_model_bitwise(
    dev: &dyn Device,
    what: &str,
    got: &[f32],
    model: &[f32],
    check: ModelCheck,
) {
    let (diff, max) = bit_stats(got, model);
    if check == ModelCheck::WhenFused && !device_fused(dev) {
        if diff > 0 {
            eprintln!(
                "{}: {what}: {diff}/{} elements differ from the unfused-fma model (max {max} ulp; not asserted, see ModelCheck::WhenFused)",
                dev.name(),
                got.len()
            );
        }
        return;
    }
    assert!(
        diff == 0,
        "{what} on {}: {diff}/{} elements differ from the operation-sequence model (max {max} ulp): \
         the kernel does not perform the reference's operations in the reference's order",
        dev.name(),
        got.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Inputs and comparison helpers
// ---------------------------------------------------------------------------------------------

/// SplitMix64 (as tests/cpu_kernels.rs): deterministic inputs per (case, tag).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_1234_abcd_0000)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unif(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Mostly U(−1, 1); 5 % exact 0, 2 % −0.0, 3 % ±[1, 20].
    fn value(&mut self) -> f32 {
        let u = self.unif();
        if u < 0.05 {
            0.0
        } else if u < 0.07 {
            -0.0
        } else if u < 0.10 {
            let m = 1.0 + 19.0 * self.unif();
            (if self.unif() < 0.5 { -m } else { m }) as f32
        } else {
            (2.0 * self.unif() - 1.0) as f32
        }
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }
    fn range(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * self.unif()) as f32)
            .collect()
    }
}

/// Distance in units in the last place between two f32 (0 for equal bits or ±0 pairs).
fn ulps(a: f32, b: f32) -> u64 {
    if a == b {
        return 0;
    }
    let key = |v: f32| {
        let i = v.to_bits() as i32;
        (if i < 0 { i32::MIN - i } else { i }) as i64
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Bitwise comparison statistics: how many elements differ in any bit, and the max ulp gap.
fn bit_stats(got: &[f32], want: &[f32]) -> (usize, u64) {
    let diff = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let max = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| ulps(a, b))
        .max()
        .unwrap_or(0);
    (diff, max)
}

/// Prints the bitwise statistics of a GPU result; returns whether it was bitwise equal.
fn report(dev: &dyn Device, what: &str, got: &[f32], want: &[f32]) -> bool {
    let (diff, max) = bit_stats(got, want);
    if dev.gpu().is_some() {
        eprintln!(
            "{}: {what}: {diff}/{} elements differ in bits, max {max} ulp",
            dev.name(),
            got.len()
        );
    }
    diff == 0
}

/// Panics on the first element outside `|got − want| ≤ bound[i]`.
fn assert_within(what: &str, tol: &str, got: &[f32], want: &[f32], bound: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w as f64).abs();
        assert!(
            g.to_bits() == w.to_bits() || d <= bound(i),
            "{what}[{i}]: got {g:e}, want {w:e}, |Δ| = {d:e} > {:e} (tolerance {tol})",
            bound(i)
        );
    }
}

const ROWS: [usize; 4] = [1, 7, 65, 301];
const KS: [usize; 3] = [2, 64, 65];
const OS: [usize; 3] = [3, 4, 64];

// ---------------------------------------------------------------------------------------------
// Linear
// ---------------------------------------------------------------------------------------------

/// (rows, k, o) for every row count × K × O.
fn cases3() -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for &r in &ROWS {
        for &k in &KS {
            for &o in &OS {
                v.push((r, k, o));
            }
        }
    }
    v
}

/// The three comparisons every check makes: the fused model IS the reference (bitwise); the
/// device equals the model with the device's fma (bitwise); the device is within `tol` of the
/// reference (the bound that holds on every conforming device). Prints the bit statistics.
#[allow(clippy::too_many_arguments)]
fn compare(
    dev: &dyn Device,
    what: &str,
    got: &[f32],
    want: &[f32],
    model_fused: &[f32],
    model_dev: &[f32],
    check: ModelCheck,
    tol: Tol,
    scale: impl Fn(usize) -> f64,
) {
    let (diff, max) = bit_stats(model_fused, want);
    assert!(
        diff == 0,
        "{what}: the test's model differs from the CPU reference ({diff} elements, {max} ulp)"
    );
    report(dev, what, got, want);
    assert_model_bitwise(dev, what, got, model_dev, check);
    assert_within(what, tol.name, got, want, |i| tol.bound(scale(i)));
}

fn linear_forward(dev: &dyn Device) {
    let fma = device_fma(dev);
    for (ci, &(rows, k, o)) in cases3().iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let (x, w, b) = (rng.vec(rows * k), rng.vec(o * k), rng.vec(o));
        let mut want = vec![0f32; rows * o];
        cpu::linear_forward_ref(&x, &w, &b, &mut want, rows, k, o);
        let mut got = vec![f32::NAN; rows * o];
        dev.linear_forward(&x, &w, &b, &mut got, rows, k, o);
        let mf = model::linear_forward(&x, &w, &b, k, o, model::fused);
        let md = model::linear_forward(&x, &w, &b, k, o, fma);
        compare(
            dev,
            &format!("linear_forward {rows}x{k}x{o}"),
            &got,
            &want,
            &mf,
            &md,
            ModelCheck::Always,
            GPU_LINEAR,
            |i| {
                let (r, j) = (i / o, i % o);
                let terms: f64 = (0..k)
                    .map(|p| (x[r * k + p] as f64 * w[j * k + p] as f64).abs())
                    .sum::<f64>()
                    + (b[j] as f64).abs();
                (k + 1) as f64 * terms
            },
        );
    }
}

fn linear_backward_dx(dev: &dyn Device) {
    let fma = device_fma(dev);
    for (ci, &(rows, k, o)) in cases3().iter().enumerate() {
        let mut rng = Rng::new(100 + ci as u64);
        let (dy, w) = (rng.vec(rows * o), rng.vec(o * k));
        let mut want = vec![0f32; rows * k];
        cpu::linear_backward_dx_ref(&dy, &w, &mut want, rows, k, o);
        let mut got = vec![f32::NAN; rows * k];
        dev.linear_backward_dx(&dy, &w, &mut got, rows, k, o);
        let mf = model::linear_backward_dx(&dy, &w, k, o, model::fused);
        let md = model::linear_backward_dx(&dy, &w, k, o, fma);
        compare(
            dev,
            &format!("linear_backward_dx {rows}x{k}x{o}"),
            &got,
            &want,
            &mf,
            &md,
            ModelCheck::Always,
            GPU_LINEAR,
            |i| {
                let (r, p) = (i / k, i % k);
                let terms: f64 = (0..o)
                    .map(|j| (dy[r * o + j] as f64 * w[j * k + p] as f64).abs())
                    .sum();
                (o + 1) as f64 * terms
            },
        );
    }
}

fn linear_backward_dw(dev: &dyn Device) {
    let fma = device_fma(dev);
    for (ci, &(rows, k, o)) in cases3().iter().enumerate() {
        let mut rng = Rng::new(200 + ci as u64);
        let (dy, x) = (rng.vec(rows * o), rng.vec(rows * k));
        // dw and db accumulate: start from non-zero values
        let (dw0, db0) = (rng.vec(o * k), rng.vec(o));
        let (mut want_dw, mut want_db) = (dw0.clone(), db0.clone());
        cpu::linear_backward_dw_ref(&dy, &x, &mut want_dw, &mut want_db, rows, k, o);
        let (mut got_dw, mut got_db) = (dw0.clone(), db0.clone());
        dev.linear_backward_dw(&dy, &x, &mut got_dw, &mut got_db, rows, k, o);
        let (mut mf, mut md) = (dw0.clone(), dw0.clone());
        model::linear_backward_dw(&dy, &x, &mut mf, k, o, model::fused);
        model::linear_backward_dw(&dy, &x, &mut md, k, o, fma);
        let what = format!("linear_backward_dw {rows}x{k}x{o}");
        compare(
            dev,
            &format!("{what} dw"),
            &got_dw,
            &want_dw,
            &mf,
            &md,
            ModelCheck::Always,
            GPU_LINEAR,
            |i| {
                let (j, p) = (i / k, i % k);
                let terms: f64 = (0..rows)
                    .map(|r| (dy[r * o + j] as f64 * x[r * k + p] as f64).abs())
                    .sum::<f64>()
                    + (dw0[i] as f64).abs();
                (rows + 1) as f64 * terms
            },
        );
        // db: no fma, so the reference is the model on every device
        compare(
            dev,
            &format!("{what} db"),
            &got_db,
            &want_db,
            &want_db,
            &want_db,
            ModelCheck::Always,
            GPU_DB,
            |_| 0.0,
        );
    }
}

test_device!(linear_forward);
test_device!(linear_backward_dx);
test_device!(linear_backward_dw);

// ---------------------------------------------------------------------------------------------
// GELU
// ---------------------------------------------------------------------------------------------

/// Inputs: uniform over [−8, 8] (both erf branches and the |x|/√2 > 4 clamp) plus the edges ±0,
/// ±ERF_SPLIT·√2, ±4√2 and ±13 (exp(−84.5) is still a normal f32).
fn gelu_inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = rng.range(n, -8.0, 8.0);
    let edges = [
        0.0, -0.0, 1.303_71, -1.303_71, 5.656_854, -5.656_854, 13.0, -13.0,
    ];
    for (xi, &e) in x.iter_mut().zip(&edges) {
        *xi = e;
    }
    x
}

fn gelu_all(dev: &dyn Device) {
    let fma = device_fma(dev);
    for (ci, &n) in [1usize, 7, 65, 301, 301 * 64 + 5].iter().enumerate() {
        let x = gelu_inputs(n, 300 + ci as u64);
        let dy = Rng::new(400 + ci as u64).vec(n);
        let (mut want_y, mut want_dx, mut want_g) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        cpu::gelu_forward_ref(&x, &mut want_y);
        cpu::gelu_backward_ref(&x, &dy, &mut want_dx);
        let mut want_y2 = vec![0f32; n];
        cpu::gelu_forward_deriv_ref(&x, &mut want_y2, &mut want_g);
        let model_of = |f: model::Fma| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
            let (y, g): (Vec<f32>, Vec<f32>) = x.iter().map(|&v| model::gelu(v, f)).unzip();
            let dx = g.iter().zip(&dy).map(|(&g, &d)| d * g).collect();
            (y, g, dx)
        };
        let (mf_y, mf_g, mf_dx) = model_of(model::fused);
        let (md_y, md_g, md_dx) = model_of(fma);
        let sy = |i: usize| (x[i] as f64).abs() + (want_y[i] as f64).abs();
        let sg = |i: usize| 1.0 + (x[i] as f64).abs();
        let sdx = |i: usize| (1.0 + (x[i] as f64).abs()) * (dy[i] as f64).abs();

        let mut y = vec![f32::NAN; n];
        dev.gelu_forward(&x, &mut y);
        compare(
            dev,
            &format!("gelu_forward n={n}"),
            &y,
            &want_y,
            &mf_y,
            &md_y,
            ModelCheck::WhenFused,
            GPU_GELU,
            sy,
        );
        let mut dx = vec![f32::NAN; n];
        dev.gelu_backward(&x, &dy, &mut dx);
        compare(
            dev,
            &format!("gelu_backward n={n}"),
            &dx,
            &want_dx,
            &mf_dx,
            &md_dx,
            ModelCheck::WhenFused,
            GPU_GELU,
            sdx,
        );
        let (mut y2, mut g) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        dev.gelu_forward_deriv(&x, &mut y2, &mut g);
        compare(
            dev,
            &format!("gelu_forward_deriv y n={n}"),
            &y2,
            &want_y2,
            &mf_y,
            &md_y,
            ModelCheck::WhenFused,
            GPU_GELU,
            sy,
        );
        compare(
            dev,
            &format!("gelu_forward_deriv g n={n}"),
            &g,
            &want_g,
            &mf_g,
            &md_g,
            ModelCheck::WhenFused,
            GPU_GELU,
            sg,
        );
    }
}

test_device!(gelu_all);

// ---------------------------------------------------------------------------------------------
// Time features
// ---------------------------------------------------------------------------------------------

fn time_features_all(dev: &dyn Device) {
    let fma = device_fma(dev);
    for (ci, &(nt, f)) in [(1usize, 1usize), (7, 16), (65, 32), (301, 33)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(500 + ci as u64);
        let t = rng.range(nt, 0.0, 1.0);
        let freqs = rng.range(f, 0.5, 120.0); // |a| up to ~125
        let phase = rng.range(f, -3.2, 3.2);
        let mut want = vec![0f32; nt * 2 * f];
        cpu::time_features_ref(&t, &freqs, &phase, &mut want);
        let mut got = vec![f32::NAN; nt * 2 * f];
        dev.time_features(&t, &freqs, &phase, &mut got);
        let model_of = |fm: model::Fma| -> Vec<f32> {
            let mut out = vec![0f32; nt * 2 * f];
            for i in 0..nt {
                for k in 0..f {
                    let (s, c) = model::sin_cos_f32(fm(t[i], freqs[k], phase[k]), fm);
                    out[i * 2 * f + k] = s;
                    out[i * 2 * f + f + k] = c;
                }
            }
            out
        };
        let (mf, md) = (model_of(model::fused), model_of(fma));
        compare(
            dev,
            &format!("time_features T={nt} F={f}"),
            &got,
            &want,
            &mf,
            &md,
            ModelCheck::WhenFused,
            GPU_TIME_FEATURES,
            |idx| {
                let (i, k) = (idx / (2 * f), idx % (2 * f) % f);
                let tf = (t[i] as f64 * freqs[k] as f64).abs();
                1.0 + tf + (tf + phase[k].abs() as f64)
            },
        );
    }
}

test_device!(time_features_all);

// ---------------------------------------------------------------------------------------------
// Fixed-order sum
// ---------------------------------------------------------------------------------------------

fn sum_all(dev: &dyn Device) {
    for (ci, &n) in [1usize, 7, 65, 301, 1023, 1024, 1025, 4096 * 64 + 3]
        .iter()
        .enumerate()
    {
        let x = Rng::new(600 + ci as u64).vec(n);
        let exact: f64 = x.iter().map(|&v| v as f64).sum();
        let got = dev.sum(&x);
        let d = (got as f64 - exact).abs();
        if let Some(ctx) = dev.gpu() {
            let bound = gpu_sum_bound(&x);
            eprintln!(
                "gpu: sum n={n}: |gpu − exact| = {d:e} (bound {bound:e}), cpu::sum {:e}",
                (f32::sum(&x) as f64 - exact).abs()
            );
            assert!(d <= bound, "sum n={n}: got {got:e}, exact {exact:e}, |Δ| {d:e} > {bound:e} (tolerance {GPU_SUM})");
            // fixed order: a second run is bitwise identical
            let again = ok(reduce::run_sum(ctx, &x));
            assert_eq!(
                again.to_bits(),
                got.to_bits(),
                "sum n={n}: not reproducible"
            );
        } else {
            assert_eq!(
                got.to_bits(),
                cpu::sum_ref(&x).to_bits(),
                "cpu::sum != sum_ref"
            );
        }
    }
}

test_device!(sum_all);

/// Segmented sums: S segments at once, each equal (bitwise) to its own single-segment sum, since
/// the order depends only on the segment length.
#[test]
fn segmented_sum_equals_per_segment_sums() {
    let Some(ctx) = gpu_or_skip() else { return };
    for &(s, n) in &[(3usize, 1usize), (300, 100), (5, 2049)] {
        let x = Rng::new(700 + n as u64).vec(s * n);
        let mut out = vec![f32::NAN; s];
        ok(reduce::run_segmented_sum(ctx, &x, &mut out, s, n));
        for (i, seg) in x.chunks_exact(n).enumerate() {
            let one = ok(reduce::run_sum(ctx, seg));
            assert_eq!(out[i].to_bits(), one.to_bits(), "segment {i} of {s}x{n}");
        }
    }
    // the empty segment sums to +0
    let mut out = [f32::NAN; 2];
    ok(reduce::run_segmented_sum(ctx, &[], &mut out, 2, 0));
    assert_eq!(out, [0.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// Composition: several kernels in ONE encoder (the shape of the later full iteration)
// ---------------------------------------------------------------------------------------------

/// y = sum(W2·GELU(W1·x + b1) + b2) prepared once, recorded into ONE encoder and ONE compute
/// pass, read back once. Each intermediate equals the operation-sequence model bitwise (so the
/// CPU chain itself on a fused-fma device), and the CPU chain within a loose composite bound.
#[test]
fn one_encoder_mlp_chain() {
    let Some(ctx) = gpu_or_skip() else { return };
    let gpu_dev = Gpu(ctx);
    let fma = device_fma(&gpu_dev);
    let (rows, d, h) = (65usize, 3usize, 64usize);
    let mut rng = Rng::new(800);
    let (x, w1, b1, w2, b2) = (
        rng.vec(rows * d),
        rng.vec(h * d),
        rng.vec(h),
        rng.vec(d * h),
        rng.vec(d),
    );
    // CPU chain
    let mut a = vec![0f32; rows * h];
    f32::linear_forward(&x, &w1, &b1, &mut a, rows, d, h);
    let mut z = vec![0f32; rows * h];
    f32::gelu_forward(&a, &mut z);
    let mut out = vec![0f32; rows * d];
    f32::linear_forward(&z, &w2, &b2, &mut out, rows, h, d);
    // the model chain with the device's fma
    let ma = model::linear_forward(&x, &w1, &b1, d, h, fma);
    let mz: Vec<f32> = ma.iter().map(|&v| model::gelu(v, fma).0).collect();
    let mout = model::linear_forward(&mz, &w2, &b2, h, d, fma);
    // GPU chain
    let up = |v: &[f32], l: &str| GpuVec::from_slice(ctx, v, l);
    let (gx, gw1, gb1, gw2, gb2) = (
        up(&x, "x"),
        up(&w1, "w1"),
        up(&b1, "b1"),
        up(&w2, "w2"),
        up(&b2, "b2"),
    );
    let (ga, gz, gout) = (
        GpuVec::zeros(ctx, rows * h, "a"),
        GpuVec::zeros(ctx, rows * h, "z"),
        GpuVec::zeros(ctx, rows * d, "out"),
    );
    let gsum = GpuVec::zeros(ctx, 1, "sum");
    let l1 = ok(linear::prepare_linear_forward(
        ctx, &gx, &gw1, &gb1, &ga, rows, d, h,
    ));
    let act = ok(gelu::prepare_gelu_forward(ctx, &ga, &gz));
    let l2 = ok(linear::prepare_linear_forward(
        ctx, &gz, &gw2, &gb2, &gout, rows, h, d,
    ));
    let s = ok(reduce::prepare_sum(ctx, &gout, &gsum, 1, rows * d));
    let mut enc = ctx.encoder("mlp chain");
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        l1.record_in_pass(&mut pass);
        act.record_in_pass(&mut pass);
        l2.record_in_pass(&mut pass);
        s.record_in_pass(&mut pass);
    }
    ctx.submit(enc);
    let got = ok(ctx.read_many(&[&ga, &gz, &gout, &gsum]));
    for (name, g, w, m, check) in [
        ("a", &got[0], &a, &ma, ModelCheck::Always),
        ("z", &got[1], &z, &mz, ModelCheck::WhenFused),
        ("out", &got[2], &out, &mout, ModelCheck::WhenFused),
    ] {
        let what = format!("mlp chain {name}");
        report(&gpu_dev, &what, g, w);
        assert_model_bitwise(&gpu_dev, &what, g, m, check);
        // composite: GELU's slope ≤ 1.13 and the second layer's 64-term chain, loosely
        assert_within(&what, "gpu-chain", g, w, |i| {
            1e-4 * (1.0 + (w[i] as f64).abs())
        });
    }
    let exact: f64 = got[2].iter().map(|&v| v as f64).sum();
    assert!((got[3][0] as f64 - exact).abs() <= gpu_sum_bound(&got[2]));
}

// ---------------------------------------------------------------------------------------------
// Context, cache, selection, errors
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelines_compile_once_and_warm_up_covers_all() {
    let Some(ctx) = gpu_or_skip() else { return };
    ok(ctx.warm_up());
    let n = ctx.pipelines.len();
    assert_eq!(n, gpu::kernels::ALL_ENTRY_POINTS.len());
    ok(ctx.warm_up());
    assert_eq!(ctx.pipelines.len(), n, "warm_up compiled again");
    let info = ctx.adapter_info();
    assert!(!info.name.is_empty());
}

#[test]
fn device_selection() {
    match gpu::select_device(gpu::DeviceRequest::Cpu).expect("cpu never fails") {
        gpu::SelectedDevice::Cpu { reason } => assert!(reason.is_none()),
        other => panic!("cpu request gave {other:?}"),
    }
    let shared = GpuContext::shared();
    match (gpu::select_device(gpu::DeviceRequest::Gpu), &shared) {
        (Ok(gpu::SelectedDevice::Gpu(_)), Ok(_)) => {}
        (Err(e), Err(_)) => assert!(e.to_string().contains("WGPU_BACKEND")),
        (r, s) => panic!("gpu request {r:?} with shared context {s:?}"),
    }
    match (
        gpu::select_device(gpu::DeviceRequest::Auto).expect("auto never fails"),
        &shared,
    ) {
        (gpu::SelectedDevice::Gpu(c), _) => assert!(!c.is_software()),
        (gpu::SelectedDevice::Cpu { reason }, Ok(c)) => {
            assert!(c.is_software(), "auto skipped a hardware GPU");
            eprintln!("auto → cpu: {}", reason.unwrap_or_default());
        }
        (gpu::SelectedDevice::Cpu { reason }, Err(_)) => assert!(reason.is_some()),
    }
}

/// A backend set with no adapter gives a clear error, not a panic.
#[test]
fn missing_adapter_is_a_clear_error() {
    // No native build has a browser WebGPU adapter.
    match GpuContext::with_backends(wgpu::Backends::BROWSER_WEBGPU) {
        Ok(ctx) => panic!("unexpected adapter {}", ctx.describe()),
        Err(e) => {
            let msg = e.to_string();
            eprintln!("{msg}");
            assert!(matches!(e, GpuError::NoAdapter { .. }), "{e:?}");
            assert!(
                msg.contains("WGPU_BACKEND") && msg.contains("lavapipe"),
                "{msg}"
            );
        }
    }
}

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

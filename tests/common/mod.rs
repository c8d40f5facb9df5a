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

//! Named tolerances: every approximate comparison in the tests uses one of these presets.

/// `|a − b| ≤ abs + rel·|b|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub name: &'static str,
    pub abs: f64,
    pub rel: f64,
}

/// Bitwise-equal paths (SIMD vs scalar reference).
pub const EXACT: Tolerance = Tolerance {
    name: "exact",
    abs: 0.0,
    rel: 0.0,
};
/// f32 kernels vs their f64 reference: a few ulps of the operands' scale.
pub const F32_VS_F64: Tolerance = Tolerance {
    name: "f32-vs-f64",
    abs: 1e-5,
    rel: 1e-4,
};
/// Analytic gradients vs f64 central differences.
pub const GRADCHECK_F64: Tolerance = Tolerance {
    name: "gradcheck-f64",
    abs: 1e-6,
    rel: 1e-5,
};
/// Analytic gradients of f32 code vs central differences taken in f64 on an f32 function.
pub const GRADCHECK_F32: Tolerance = Tolerance {
    name: "gradcheck-f32",
    abs: 2e-3,
    rel: 2e-2,
};
/// The trainer's sharded f32 gradient (SIMD kernels, f32 tape) against the f64 tape on the same
/// trajectories; `abs` is relative to the largest gradient entry (the check scales it).
pub const F32_TRAINER_VS_F64_TAPE: Tolerance = Tolerance {
    name: "f32-trainer-vs-f64-tape",
    abs: 2e-4,
    rel: 2e-3,
};
/// Test values quoted in the spec (printed to ~7 significant digits).
pub const SPEC_VALUE: Tolerance = Tolerance {
    name: "spec-value",
    abs: 2e-5,
    rel: 1e-6,
};

/// The frozen f32 VAE (f32 GEMM chains of up to 784 FMAs; the Bernoulli sum in f64) against
/// its f64 twin or the f64 test vectors, on log R from −10 to −10⁴. Measured (tests/vae.rs):
/// 1.1e-5 at log R(0) = −270.5 on image 0, at most 7.9e-5 absolute / 8.9e-8 relative over 300
/// latents down to log R = −2253. (`data/README.md` calls 1e-3 absolute safe at log R ≈ −10².)
pub const VAE_F32_VS_F64: Tolerance = Tolerance {
    name: "vae-f32-vs-f64",
    abs: 1e-4,
    rel: 4e-7,
};
/// The frozen f32 VAE's ∇_z log R against its f64 twin's analytic gradient. Measured: at most
/// 1.1e-4 absolute over 300 latents with |∇| up to 431.
pub const VAE_F32_VS_F64_GRAD: Tolerance = Tolerance {
    name: "vae-f32-vs-f64-grad",
    abs: 3e-4,
    rel: 2e-6,
};
/// Test values the spec prints to 4 decimal places (the LGCP values, |v| up to ~2500): the band
/// is 1e-3 absolute, which also covers evaluating log R at the f32 rounding of μ₀·1.
pub const SPEC_VALUE_4DP: Tolerance = Tolerance {
    name: "spec-value-4dp",
    abs: 1e-3,
    rel: 0.0,
};
/// The LGCP gradient (f32 GEMM with K⁻¹ rounded to f32, D = 1600 terms per chain) vs an f64
/// gradient: the chains' rounding, ~1e-5 absolute at |x − μ₀| ~ 1–10 (measured max in
/// `tests/lgcp.rs`), with headroom.
pub const LGCP_GRAD_F32: Tolerance = Tolerance {
    name: "lgcp-grad-f32",
    abs: 1e-4,
    rel: 1e-5,
};

impl Tolerance {
    pub fn close(&self, a: f64, b: f64) -> bool {
        if self.abs == 0.0 && self.rel == 0.0 {
            return a.to_bits() == b.to_bits() || a == b;
        }
        (a - b).abs() <= self.abs + self.rel * b.abs()
    }

    /// Panics with both values, the index and the preset's name on the first mismatch.
    pub fn assert_all_close(&self, got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                self.close(a, b),
                "{what}[{i}]: got {a}, want {b} (tolerance {}: abs {}, rel {})",
                self.name,
                self.abs,
                self.rel
            );
        }
    }
}

//! CPU kernels: one scalar reference per op, plus an AVX2+FMA path for f32 that is bitwise equal
//! to it.
//!
//! Layout (one op family per file, each with its generic reference `<op>_ref<S>`):
//! - [`linear`]: y = x·wᵀ + b, dx = dy·w, dw += dyᵀ·x, db += Σ dy;
//! - [`gelu`]: exact-erf GELU and its derivative;
//! - [`layer_norm`]: LayerNorm over the last axis and its backward;
//! - [`time_features`]: sin/cos Fourier features of t and the phase gradient;
//! - [`reduce`]: fixed-order `sum`, `logsumexp`, column sums;
//! - [`math`]: f32 erf/exp/sin/cos (shared op-for-op with the SIMD path), f64 via libm/std;
//! - `avx2` (x86_64 only): the `#[target_feature(enable = "avx2,fma")]` fast paths.
//!
//! Dispatch: [`Kernels`] for f64 always runs the reference. For f32 it runs [`simd`] when
//! [`simd_available`] (AVX2 and FMA detected at run time, once) and [`portable`] otherwise. Both
//! compute every output with the same operations in the same order — each dot product is one
//! sequential FMA chain, each reduction has one documented lane/tree order — so a run replays
//! bit for bit on machines with and without AVX2. Nothing depends on `target-cpu=native`: the
//! portable path's `mul_add` is a correctly rounded fused multiply-add on every target (a
//! hardware FMA or libm's `fmaf`), exactly what `vfmadd` computes.
//!
//! The kernels are single-threaded; callers split the batch into row shards across threads.

pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod math;
pub mod reduce;
pub mod time_features;

#[cfg(target_arch = "x86_64")]
mod avx2;

pub use gelu::{gelu_backward_ref, gelu_forward_deriv_ref, gelu_forward_ref};
pub use layer_norm::{layer_norm_backward_ref, layer_norm_forward_ref, LAYER_NORM_EPS};
pub use linear::{linear_backward_dw_ref, linear_backward_dx_ref, linear_forward_ref};
pub use math::KernelMath;
pub use reduce::{col_sum_acc_ref, logsumexp_ref, sum_ref};
pub use time_features::{time_features_backward_ref, time_features_ref};

/// Kernels the tape and the sampler call. f64 always runs the scalar reference; f32 runs the
/// AVX2+FMA path when the CPU has it (runtime-detected once, cached) and the portable scalar path
/// otherwise — both compute in the SAME fixed order, so they are bitwise identical.
///
/// Shapes: B rows (batch, or batch·steps flattened), K inputs, O outputs, all row-major.
pub trait Kernels: crate::real::Real {
    /// y[B,O] = x[B,K]·w[O,K]ᵀ + b[O]. Order per output: acc = b[o]; for k in 0..K { acc = x[r,k].mul_add(w[o,k], acc) }
    fn linear_forward(
        x: &[Self],
        w: &[Self],
        b: &[Self],
        y: &mut [Self],
        rows: usize,
        k: usize,
        o: usize,
    );
    /// dx[B,K] = dy[B,O]·w[O,K] (overwrites dx). Order: acc = 0; for o in 0..O { acc = dy[r,o].mul_add(w[o,k], acc) }
    fn linear_backward_dx(
        dy: &[Self],
        w: &[Self],
        dx: &mut [Self],
        rows: usize,
        k: usize,
        o: usize,
    );
    /// dw[O,K] += dy[B,O]ᵀ·x[B,K] and db[O] += Σ_r dy[r,·] (ACCUMULATES into dw, db).
    /// Order: acc = dw[o,k]; for r in 0..B { acc = dy[r,o].mul_add(x[r,k], acc) }; acc = db[o]; for r { acc = acc + dy[r,o] }
    fn linear_backward_dw(
        dy: &[Self],
        x: &[Self],
        dw: &mut [Self],
        db: &mut [Self],
        rows: usize,
        k: usize,
        o: usize,
    );
    /// y = GELU(x) = ½·x·(1 + erf(x/√2)), exact-erf form (NOT the tanh approximation).
    /// Order: e = erf(x·(1/√2)); h = 0.5·x; y = h.mul_add(e, h).
    fn gelu_forward(x: &[Self], y: &mut [Self]);
    /// dx = dy · (Φ(x) + x·φ(x)), Φ the normal CDF, φ the normal pdf (overwrites dx).
    /// Order: Φ = erf(x·(1/√2)).mul_add(0.5, 0.5); φ = exp((−0.5·x)·x)·(1/√(2π)); dx = dy·x.mul_add(φ, Φ).
    fn gelu_backward(x: &[Self], dy: &[Self], dx: &mut [Self]);
    /// y = GELU(x) and g = GELU'(x) in one pass (one erf and one exp per element); y is bitwise
    /// `gelu_forward`'s and dy·g bitwise `gelu_backward`'s. Lets the tape skip the backward erf.
    fn gelu_forward_deriv(x: &[Self], y: &mut [Self], g: &mut [Self]);
    /// y[B,H] = LayerNorm(x)·γ + β per row, and each row's μ and rstd [B] (see [`layer_norm`]
    /// for the order). Order per element: y = ((x − μ)·rstd).mul_add(γ, β).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_forward(
        x: &[Self],
        gamma: &[Self],
        beta: &[Self],
        y: &mut [Self],
        mean: &mut [Self],
        rstd: &mut [Self],
        rows: usize,
        h: usize,
    );
    /// dx[B,H] (overwritten), dγ[H] and dβ[H] (ACCUMULATED, rows ascending) of
    /// [`Kernels::layer_norm_forward`], from its input x and statistics μ, rstd.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        x: &[Self],
        gamma: &[Self],
        mean: &[Self],
        rstd: &[Self],
        dy: &[Self],
        dx: &mut [Self],
        dgamma: &mut [Self],
        dbeta: &mut [Self],
        rows: usize,
        h: usize,
    );
    /// out[c] += Σ_r dy[r,c], r ascending (the backward of a row broadcast). dy is [rows, cols].
    fn col_sum_acc(dy: &[Self], out: &mut [Self], rows: usize, cols: usize);
    /// Time features: out[i, k] = sin(t[i]·f[k] + φ[k]), out[i, F + k] = cos(t[i]·f[k] + φ[k]); out is [T, 2F].
    /// The argument is t[i].mul_add(f[k], φ[k]).
    fn time_features(t: &[Self], freqs: &[Self], phase: &[Self], out: &mut [Self]);
    /// dφ[k] += Σ_i ( dout[i,k]·cos(a_ik) − dout[i,F+k]·sin(a_ik) ), a_ik = t[i]f[k]+φ[k], i ascending (ACCUMULATES).
    /// Order per k: acc = dφ[k]; for i { acc = dout[i,k].mul_add(cos a, acc); acc = (−dout[i,F+k]).mul_add(sin a, acc) }.
    fn time_features_backward(
        t: &[Self],
        freqs: &[Self],
        phase: &[Self],
        dout: &[Self],
        dphase: &mut [Self],
    );
    /// Σ x in a fixed order: 8 lane accumulators from 0, lane j takes x[8i+j] (i ascending) over the
    /// first n − n mod 8 elements; lanes combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7));
    /// then the tail x[n8..] added in order. See [`reduce`].
    fn sum(x: &[Self]) -> Self;
    /// log Σ exp(x) = m + ln Σ exp(x − m), m = max x, the Σ in the order of `sum`. Empty → −∞;
    /// all −∞ → −∞; any +∞ → +∞; NaN anywhere → NaN.
    fn logsumexp(x: &[Self]) -> Self;
}

/// True when this CPU has AVX2 and FMA (and the crate was built for x86_64). Detected on the
/// first call and cached.
#[inline]
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The f32 portable path: the scalar references at f32 (with the in-crate f32 math). What
/// [`Kernels`] for f32 runs on CPUs without AVX2+FMA; public so tests can compare it with [`simd`].
/// The scalar references as a full set of kernels at scalar type `$t`: generates both the f32
/// portable path ([`portable`]) and `Kernels for f64`, so the list exists once.
macro_rules! reference_kernels {
    ($vis:vis $t:ty) => {
        #[inline]
        $vis fn linear_forward(x: &[$t], w: &[$t], b: &[$t], y: &mut [$t], rows: usize, k: usize, o: usize) {
            linear_forward_ref(x, w, b, y, rows, k, o)
        }
        #[inline]
        $vis fn linear_backward_dx(dy: &[$t], w: &[$t], dx: &mut [$t], rows: usize, k: usize, o: usize) {
            linear_backward_dx_ref(dy, w, dx, rows, k, o)
        }
        #[inline]
        $vis fn linear_backward_dw(dy: &[$t], x: &[$t], dw: &mut [$t], db: &mut [$t], rows: usize, k: usize, o: usize) {
            linear_backward_dw_ref(dy, x, dw, db, rows, k, o)
        }
        #[inline]
        $vis fn gelu_forward(x: &[$t], y: &mut [$t]) {
            gelu_forward_ref(x, y)
        }
        #[inline]
        $vis fn gelu_backward(x: &[$t], dy: &[$t], dx: &mut [$t]) {
            gelu_backward_ref(x, dy, dx)
        }
        #[inline]
        $vis fn gelu_forward_deriv(x: &[$t], y: &mut [$t], g: &mut [$t]) {
            gelu_forward_deriv_ref(x, y, g)
        }
        #[inline]
        #[allow(clippy::too_many_arguments)]
        $vis fn layer_norm_forward(x: &[$t], gamma: &[$t], beta: &[$t], y: &mut [$t], mean: &mut [$t], rstd: &mut [$t], rows: usize, h: usize) {
            layer_norm_forward_ref(x, gamma, beta, y, mean, rstd, rows, h)
        }
        #[inline]
        #[allow(clippy::too_many_arguments)]
        $vis fn layer_norm_backward(x: &[$t], gamma: &[$t], mean: &[$t], rstd: &[$t], dy: &[$t], dx: &mut [$t], dgamma: &mut [$t], dbeta: &mut [$t], rows: usize, h: usize) {
            layer_norm_backward_ref(x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, h)
        }
        #[inline]
        $vis fn col_sum_acc(dy: &[$t], out: &mut [$t], rows: usize, cols: usize) {
            col_sum_acc_ref(dy, out, rows, cols)
        }
        #[inline]
        $vis fn time_features(t: &[$t], freqs: &[$t], phase: &[$t], out: &mut [$t]) {
            time_features_ref(t, freqs, phase, out)
        }
        #[inline]
        $vis fn time_features_backward(t: &[$t], freqs: &[$t], phase: &[$t], dout: &[$t], dphase: &mut [$t]) {
            time_features_backward_ref(t, freqs, phase, dout, dphase)
        }
        #[inline]
        $vis fn sum(x: &[$t]) -> $t {
            sum_ref(x)
        }
        #[inline]
        $vis fn logsumexp(x: &[$t]) -> $t {
            logsumexp_ref(x)
        }
    };
}

pub mod portable {
    use super::*;

    reference_kernels!(pub f32);
}

/// The f32 AVX2+FMA path, behind safe wrappers that assert the shapes and [`simd_available`]
/// (they panic on a CPU without AVX2/FMA or on a non-x86_64 target — check `simd_available()`
/// first). Bitwise equal to [`portable`].
pub mod simd {
    #[cfg(target_arch = "x86_64")]
    use super::avx2;
    use super::layer_norm::{check_backward, check_forward};
    use super::linear::check_linear;
    use super::reduce::check_col_sum;
    use super::simd_available;
    use super::time_features::check_time_features;

    /// Panics unless the AVX2 path can run here.
    #[inline]
    fn require_simd() {
        assert!(
            simd_available(),
            "cpu::simd called on a CPU/target without AVX2+FMA; use cpu::portable"
        );
    }

    /// Calls the AVX2 function `$f` after `require_simd()`; unreachable off x86_64.
    macro_rules! call_avx2 {
        ($f:ident($($arg:expr),*)) => {{
            require_simd();
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: require_simd() just checked AVX2+FMA; the caller asserted the shapes.
                unsafe { avx2::$f($($arg),*) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = ($($arg,)*); // no AVX2 path on this target; require_simd() panicked
                unreachable!()
            }
        }};
    }

    #[inline]
    pub fn linear_forward(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        rows: usize,
        k: usize,
        o: usize,
    ) {
        check_linear(x.len(), w.len(), b.len(), y.len(), rows, k, o);
        call_avx2!(linear_forward(x, w, b, y, rows, k, o))
    }
    #[inline]
    pub fn linear_backward_dx(
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
        rows: usize,
        k: usize,
        o: usize,
    ) {
        check_linear(dx.len(), w.len(), o, dy.len(), rows, k, o);
        call_avx2!(linear_backward_dx(dy, w, dx, rows, k, o))
    }
    #[inline]
    pub fn linear_backward_dw(
        dy: &[f32],
        x: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        rows: usize,
        k: usize,
        o: usize,
    ) {
        check_linear(x.len(), dw.len(), db.len(), dy.len(), rows, k, o);
        call_avx2!(linear_backward_dw(dy, x, dw, db, rows, k, o))
    }
    #[inline]
    pub fn gelu_forward(x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "gelu_forward: x.len() != y.len()");
        call_avx2!(gelu_forward(x, y))
    }
    #[inline]
    pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        assert_eq!(x.len(), dy.len(), "gelu_backward: x.len() != dy.len()");
        assert_eq!(x.len(), dx.len(), "gelu_backward: x.len() != dx.len()");
        call_avx2!(gelu_backward(x, dy, dx))
    }
    #[inline]
    pub fn gelu_forward_deriv(x: &[f32], y: &mut [f32], g: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "gelu_forward_deriv: x.len() != y.len()");
        assert_eq!(x.len(), g.len(), "gelu_forward_deriv: x.len() != g.len()");
        call_avx2!(gelu_forward_deriv(x, y, g))
    }
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_forward(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
        h: usize,
    ) {
        check_forward(x, gamma, beta, y, mean, rstd, rows, h);
        call_avx2!(layer_norm_forward(x, gamma, beta, y, mean, rstd, rows, h))
    }
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_backward(
        x: &[f32],
        gamma: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        rows: usize,
        h: usize,
    ) {
        check_backward(x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, h);
        call_avx2!(layer_norm_backward(
            x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, h
        ))
    }
    #[inline]
    pub fn col_sum_acc(dy: &[f32], out: &mut [f32], rows: usize, cols: usize) {
        check_col_sum(dy.len(), out.len(), rows, cols);
        call_avx2!(col_sum_acc(dy, out, rows, cols))
    }
    #[inline]
    pub fn time_features(t: &[f32], freqs: &[f32], phase: &[f32], out: &mut [f32]) {
        check_time_features(t.len(), freqs.len(), phase.len(), out.len());
        call_avx2!(time_features(t, freqs, phase, out))
    }
    #[inline]
    pub fn time_features_backward(
        t: &[f32],
        freqs: &[f32],
        phase: &[f32],
        dout: &[f32],
        dphase: &mut [f32],
    ) {
        check_time_features(t.len(), freqs.len(), phase.len(), dout.len());
        assert_eq!(
            dphase.len(),
            freqs.len(),
            "time_features_backward: dphase.len() != freqs.len()"
        );
        call_avx2!(time_features_backward(t, freqs, phase, dout, dphase))
    }
    #[inline]
    pub fn sum(x: &[f32]) -> f32 {
        call_avx2!(sum(x))
    }
    #[inline]
    pub fn logsumexp(x: &[f32]) -> f32 {
        call_avx2!(logsumexp(x))
    }
}

impl Kernels for f64 {
    reference_kernels!(f64);
}

/// f32: the AVX2 path when available, else the portable path (bitwise the same results).
macro_rules! dispatch_f32 {
    ($f:ident($($arg:expr),*)) => {
        if simd_available() {
            simd::$f($($arg),*)
        } else {
            portable::$f($($arg),*)
        }
    };
}

impl Kernels for f32 {
    #[inline]
    fn linear_forward(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        rows: usize,
        k: usize,
        o: usize,
    ) {
        dispatch_f32!(linear_forward(x, w, b, y, rows, k, o))
    }
    #[inline]
    fn linear_backward_dx(dy: &[f32], w: &[f32], dx: &mut [f32], rows: usize, k: usize, o: usize) {
        dispatch_f32!(linear_backward_dx(dy, w, dx, rows, k, o))
    }
    #[inline]
    fn linear_backward_dw(
        dy: &[f32],
        x: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        rows: usize,
        k: usize,
        o: usize,
    ) {
        dispatch_f32!(linear_backward_dw(dy, x, dw, db, rows, k, o))
    }
    #[inline]
    fn gelu_forward(x: &[f32], y: &mut [f32]) {
        dispatch_f32!(gelu_forward(x, y))
    }
    #[inline]
    fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        dispatch_f32!(gelu_backward(x, dy, dx))
    }
    #[inline]
    fn gelu_forward_deriv(x: &[f32], y: &mut [f32], g: &mut [f32]) {
        dispatch_f32!(gelu_forward_deriv(x, y, g))
    }
    #[inline]
    fn layer_norm_forward(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
        h: usize,
    ) {
        dispatch_f32!(layer_norm_forward(x, gamma, beta, y, mean, rstd, rows, h))
    }
    #[inline]
    fn layer_norm_backward(
        x: &[f32],
        gamma: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        rows: usize,
        h: usize,
    ) {
        dispatch_f32!(layer_norm_backward(
            x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, h
        ))
    }
    #[inline]
    fn col_sum_acc(dy: &[f32], out: &mut [f32], rows: usize, cols: usize) {
        dispatch_f32!(col_sum_acc(dy, out, rows, cols))
    }
    #[inline]
    fn time_features(t: &[f32], freqs: &[f32], phase: &[f32], out: &mut [f32]) {
        dispatch_f32!(time_features(t, freqs, phase, out))
    }
    #[inline]
    fn time_features_backward(
        t: &[f32],
        freqs: &[f32],
        phase: &[f32],
        dout: &[f32],
        dphase: &mut [f32],
    ) {
        dispatch_f32!(time_features_backward(t, freqs, phase, dout, dphase))
    }
    #[inline]
    fn sum(x: &[f32]) -> f32 {
        dispatch_f32!(sum(x))
    }
    #[inline]
    fn logsumexp(x: &[f32]) -> f32 {
        dispatch_f32!(logsumexp(x))
    }
}

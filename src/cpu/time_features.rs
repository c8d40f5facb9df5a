//! Fourier time features of the drift net's time embedding and their phase gradient.
//!
//! Shapes: t [T] (one time per row; T may be B·T flattened rows), freqs [F], phase [F],
//! out [T, 2F] with the F sines first and the F cosines second in every row.
//! The argument is a_ik = fma(t[i], f[k], φ[k]) (one rounding), in both precisions.

use super::math::KernelMath;

/// Panics unless phase is [F] and out is [T, 2F].
#[inline]
pub(crate) fn check_time_features(t: usize, freqs: usize, phase: usize, out: usize) {
    assert_eq!(phase, freqs, "time_features: phase.len() != freqs.len()");
    assert_eq!(
        out,
        t * 2 * freqs,
        "time_features: out.len() != t.len()·2·freqs.len()"
    );
}

/// out[i, k] = sin(a_ik), out[i, F + k] = cos(a_ik), a_ik = fma(t[i], f[k], φ[k]).
#[inline]
pub fn time_features_ref<S: KernelMath>(t: &[S], freqs: &[S], phase: &[S], out: &mut [S]) {
    check_time_features(t.len(), freqs.len(), phase.len(), out.len());
    let f = freqs.len();
    if f == 0 {
        return;
    }
    for (&ti, row) in t.iter().zip(out.chunks_exact_mut(2 * f)) {
        let (sin_row, cos_row) = row.split_at_mut(f);
        for k in 0..f {
            let (s, c) = ti.mul_add(freqs[k], phase[k]).kernel_sin_cos();
            sin_row[k] = s;
            cos_row[k] = c;
        }
    }
}

/// dφ[k] += Σ_i ( dout[i,k]·cos(a_ik) − dout[i,F+k]·sin(a_ik) ) (accumulates).
/// Order per k: acc = dφ[k]; for i ascending { acc = fma(dout[i,k], cos a_ik, acc);
/// acc = fma(−dout[i,F+k], sin a_ik, acc) }; dφ[k] = acc.
#[inline]
pub fn time_features_backward_ref<S: KernelMath>(
    t: &[S],
    freqs: &[S],
    phase: &[S],
    dout: &[S],
    dphase: &mut [S],
) {
    check_time_features(t.len(), freqs.len(), phase.len(), dout.len());
    assert_eq!(
        dphase.len(),
        freqs.len(),
        "time_features_backward: dphase.len() != freqs.len()"
    );
    let f = freqs.len();
    if f == 0 {
        return;
    }
    for (&ti, row) in t.iter().zip(dout.chunks_exact(2 * f)) {
        let (ds, dc) = row.split_at(f);
        for k in 0..f {
            let (s, c) = ti.mul_add(freqs[k], phase[k]).kernel_sin_cos();
            let acc = ds[k].mul_add(c, dphase[k]);
            dphase[k] = (-dc[k]).mul_add(s, acc);
        }
    }
}

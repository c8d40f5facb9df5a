//! Deterministic randomness: every random number comes from a named ChaCha8 stream.
//!
//! A stream is keyed by `(seed, purpose, index)`: `purpose` names what the numbers are for
//! ("init", "rollout-noise", "eval-noise", …) and `index` separates repeated uses (the
//! iteration number, say). The key is hashed with blake3 into the 32-byte ChaCha key, so streams
//! never overlap and adding a new purpose never shifts an old one.
//!
//! Gaussians are made in-crate (Box–Muller over pairs of 32-bit words) rather than by
//! `rand_distr`, whose float algorithms may change in a minor release: the golden-value test in
//! this module pins them. Normal number `n` of a stream is a pure function of the stream key and
//! `n` ([`normals_at`]), so a batch can be split across threads (or uploaded to a GPU) and still
//! give the same numbers.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// The 32-byte ChaCha key of stream `(seed, purpose, index)`.
pub fn stream_key(seed: u64, purpose: &str, index: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"diffusion-samplers/rng/v1");
    h.update(&seed.to_le_bytes());
    h.update(&(purpose.len() as u64).to_le_bytes());
    h.update(purpose.as_bytes());
    h.update(&index.to_le_bytes());
    *h.finalize().as_bytes()
}

/// A fresh generator for stream `(seed, purpose, index)`.
pub fn stream(seed: u64, purpose: &str, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::from_seed(stream_key(seed, purpose, index))
}

/// Uniform in the open interval (0, 1) from one 32-bit word: (w + ½)/2³².
#[inline]
pub fn open01(word: u32) -> f64 {
    (word as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

/// Box–Muller: two words → two independent standard normals.
#[inline]
pub fn box_muller(w1: u32, w2: u32) -> (f64, f64) {
    let r = (-2.0 * open01(w1).ln()).sqrt();
    let theta = std::f64::consts::TAU * open01(w2);
    (r * theta.cos(), r * theta.sin())
}

/// Fill `out` with standard normals number `start .. start + out.len()` of stream `rng`'s key.
///
/// Normal pair `m` (normals `2m` and `2m + 1`) uses words `2m` and `2m + 1` of the stream, so any
/// slice of the sequence can be produced directly: the result does not depend on how a batch is
/// split. `rng`'s position is moved; its key is what matters.
pub fn normals_at(rng: &mut ChaCha8Rng, start: u64, out: &mut [f32]) {
    if out.is_empty() {
        return;
    }
    let first_pair = start / 2;
    rng.set_word_pos(first_pair as u128 * 2);
    let mut n = first_pair * 2;
    let end = start + out.len() as u64;
    let mut i = 0usize;
    while n < end {
        let (z0, z1) = box_muller(rng.next_u32(), rng.next_u32());
        if n >= start {
            out[i] = z0 as f32;
            i += 1;
        }
        if n + 1 >= start && n + 1 < end {
            out[i] = z1 as f32;
            i += 1;
        }
        n += 2;
    }
}

/// `out.len()` standard normals drawn sequentially from `rng` (pairs, the second kept).
pub fn fill_normals(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    let mut chunks = out.chunks_exact_mut(2);
    for pair in &mut chunks {
        let (a, b) = box_muller(rng.next_u32(), rng.next_u32());
        pair[0] = a as f32;
        pair[1] = b as f32;
    }
    for last in chunks.into_remainder() {
        let (a, _) = box_muller(rng.next_u32(), rng.next_u32());
        *last = a as f32;
    }
}

/// One standard normal in f64 (uses two words; the second normal is discarded).
pub fn normal_f64(rng: &mut ChaCha8Rng) -> f64 {
    box_muller(rng.next_u32(), rng.next_u32()).0
}

/// Uniform in (0, 1), f64, from one word.
pub fn uniform_f64(rng: &mut ChaCha8Rng) -> f64 {
    open01(rng.next_u32())
}

/// Uniform integer in `0..n` by rejection (unbiased), from any generator's 32-bit words.
pub fn below(rng: &mut impl rand_core::Rng, n: u32) -> u32 {
    assert!(n > 0);
    let zone = u32::MAX - (u32::MAX - n + 1) % n;
    loop {
        let w = rng.next_u32();
        if w <= zone {
            return w % n;
        }
    }
}

/// The running sums of exp(w_k − max w) in index order: the unnormalised CDF of "index k with
/// probability ∝ exp(w_k)", shifted by the max so it neither overflows nor underflows.
/// [`pick_from_cdf`] draws from it.
pub fn exp_weight_cdf(w: impl Iterator<Item = f64> + Clone) -> Vec<f64> {
    let max = w.clone().fold(f64::NEG_INFINITY, f64::max);
    let mut acc = 0.0;
    w.map(|v| {
        acc += (v - max).exp();
        acc
    })
    .collect()
}

/// An index drawn from the unnormalised CDF `cdf` ([`exp_weight_cdf`]) with one uniform of
/// `stream`: the first k with cdf[k] > u·total (the last index if rounding leaves none).
pub fn pick_from_cdf(cdf: &[f64], stream: &mut ChaCha8Rng) -> usize {
    let total = *cdf.last().expect("a non-empty pool");
    let u = uniform_f64(stream) * total;
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: the first normals of stream (12345, "golden", 0). If a dependency release
    /// or a change here moves them, every recorded run digest moves too; this test says so first.
    #[test]
    fn golden_normals() {
        let mut rng = stream(12345, "golden", 0);
        let mut out = [0f32; 6];
        normals_at(&mut rng, 0, &mut out);
        let golden: [u32; 6] = GOLDEN_BITS;
        let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, golden, "normals {out:?}");
    }
    // Recorded from this implementation (ChaCha8 via rand_chacha 0.10.0, blake3 stream keys,
    // Box–Muller in f64 with glibc's ln/sin/cos) — a pinned regression value, not derived.
    const GOLDEN_BITS: [u32; 6] = [
        0xbf3b23e4, 0xbf933382, 0x3f8655e1, 0xbe88a0eb, 0xbf02ed58, 0xbf74095d,
    ];

    /// The raw ChaCha8 words behind the golden normals: if only this fails, rand_chacha changed.
    #[test]
    fn golden_chacha_words() {
        let mut rng = stream(12345, "golden", 0);
        let words: Vec<u32> = (0..4).map(|_| rng.next_u32()).collect();
        assert_eq!(words, [0x65297f57, 0xa8ee0411, 0x8e6e1c26, 0xf5daedc3]);
        // Box–Muller on those words, written out here, gives the first golden normal.
        let r = (-2.0 * ((0x65297f57u32 as f64 + 0.5) / 4_294_967_296.0).ln()).sqrt();
        let th = std::f64::consts::TAU * ((0xa8ee0411u32 as f64 + 0.5) / 4_294_967_296.0);
        assert_eq!((r * th.cos()) as f32, f32::from_bits(GOLDEN_BITS[0]));
    }

    #[test]
    fn normals_at_is_split_invariant() {
        let mut rng = stream(7, "split", 3);
        let mut whole = vec![0f32; 101];
        normals_at(&mut rng, 0, &mut whole);
        for cut in [0usize, 1, 2, 37, 50, 100, 101] {
            let mut a = vec![0f32; cut];
            let mut b = vec![0f32; 101 - cut];
            normals_at(&mut rng, 0, &mut a);
            normals_at(&mut rng, cut as u64, &mut b);
            a.extend_from_slice(&b);
            assert_eq!(a, whole, "cut at {cut}");
        }
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut rng = stream(1, "moments", 0);
        let mut v = vec![0f32; 200_000];
        fill_normals(&mut rng, &mut v);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let kurt = v.iter().map(|&x| (x as f64 - mean).powi(4)).sum::<f64>() / n / (var * var);
        // 5-sigma bands for n = 2e5: se(mean) ≈ 0.0022, se(var) ≈ 0.0032, se(kurt) ≈ 0.011.
        assert!(mean.abs() < 0.011, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "var {var}");
        assert!((kurt - 3.0).abs() < 0.06, "kurtosis {kurt}");
    }

    #[test]
    fn streams_differ_by_purpose_and_index() {
        let a = stream_key(1, "a", 0);
        assert_ne!(a, stream_key(1, "b", 0));
        assert_ne!(a, stream_key(1, "a", 1));
        assert_ne!(a, stream_key(2, "a", 0));
    }
}

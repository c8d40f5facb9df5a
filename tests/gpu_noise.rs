//! The training noise on the GPU (`shaders/chacha.wgsl`, `gpu::kernels::chacha`) against the CPU's
//! (`rng::normals_at` on `rand_chacha`'s ChaCha8Rng):
//! (a) the in-shader ChaCha8 word stream equals `next_u32` bit for bit — several keys, word
//!     offsets inside and across 16-word blocks, counts that end mid-block, and block counters
//!     whose low word carries into the high word;
//! (b) the uploaded normals (the trainer's path: host `normals_at` → `GpuVec`) come back bit for
//!     bit;
//! (c) the in-shader f32 Box–Muller normals are within [`GPU_NORMAL_REL`] (relative) of the f64
//!     Box–Muller the CPU computes — on a stream and on hand-picked tail words.
//!
//! Without an adapter the tests print `skipped: no GPU adapter (…)` and pass, unless
//! `DIFFUSION_SAMPLERS_REQUIRE_GPU=1`.

#![cfg(feature = "gpu")]

mod common;

use common::gpu_or_skip;
use diffusion_samplers::gpu::kernels::chacha;
use diffusion_samplers::gpu::GpuVec;
use diffusion_samplers::rng;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// In-shader f32 Box–Muller vs the exact value: |z_gpu − z| ≤ GPU_NORMAL_REL·|z| for every normal,
/// z = [`box_muller_exact`]. The shader keeps the error relative everywhere (ln u₁ via log1p of
/// 1 − u₁ near u₁ = 1, the angle reduced to a quarter turn in integer arithmetic), so there is no
/// absolute floor: the error is a few f32 roundings (u's int→f32 conversion, FreeBSD's logf
/// kernel < 1 ulp, sqrt, α = (d + ½)·π·2⁻³¹, the sin/cos polynomials, the final product), a few
/// units of 2⁻²⁴ ≈ 6e-8. Measured on lavapipe (printed by the tests): ≤ 2.6e-7 (4.4 ulp) over
/// the 2¹⁷ stream normals here, ≤ 1.6e-7 (2.7 ulp) on the tail words, 3.2e-7 (5.4 ulp) over 2²³
/// stream normals in a one-off run. Against the CPU's f32 normals: about 55% bitwise equal, the
/// rest ≤ 4 ulp apart on streams (max |Δ| 4.8e-7), ≤ 12 ulp on the tail words (where the CPU's
/// f64 angle is the less accurate of the two, see below). WGSL allows a device 2.5 ulp for `/`,
/// more for `sqrt`, and an unfused `fma`; 2⁻¹⁹ ≈ 1.9e-6 (32 ulp) leaves a 6× margin for that.
const GPU_NORMAL_REL: f64 = 1.0 / 524_288.0;

/// The CPU's own f64 Box–Muller (`rng::box_muller`) is not exact where sin or cos of θ = 2π·u₂
/// crosses zero: θ rounded to f64 is off by up to ½ulp(2π) = 4.4e-16, so r·sin θ near θ = π, 2π
/// carries an absolute error up to 6.8·4.4e-16 = 3e-15 (relative 6e-7 at the extreme w₂ = 2³² − 1,
/// |z| ≈ 7.6e-10 — measured by the tail test, where the GPU is the closer of the two). Against
/// the CPU's normals the bound is therefore GPU_NORMAL_REL·|z| + this.
const CPU_F64_ANGLE_ABS: f64 = 1e-14;

/// Box–Muller in f64 with the angle reduced exactly (integer quarter turn j and remainder d, as
/// the shader): r·(cos, sin)(j·π/2 + (d + ½)·π·2⁻³¹) — correct to ~1e-16 relative, the reference
/// that isolates the shader's own error.
fn box_muller_exact(w1: u32, w2: u32) -> (f64, f64) {
    let r = (-2.0 * rng::open01(w1).ln()).sqrt();
    let j = w2.wrapping_add(0x2000_0000) >> 30;
    let d = w2.wrapping_sub(j << 30) as i32;
    let alpha = (d as f64 + 0.5) * std::f64::consts::PI / 2_147_483_648.0;
    let (s, c) = alpha.sin_cos();
    let (c, s) = match j {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    };
    (r * c, r * s)
}

/// Stream keys of different purposes and indices, as the trainer derives them.
fn keys() -> Vec<[u8; 32]> {
    vec![
        rng::stream_key(0, "train-noise", 0),
        rng::stream_key(42, "train-noise", 17),
        rng::stream_key(7, "eval-noise", 3),
        rng::stream_key(12345, "golden", 0),
    ]
}

/// `count` words of `key`'s stream from word `word0`, by rand_chacha.
fn cpu_words(key: &[u8; 32], word0: u64, count: usize) -> Vec<u32> {
    let mut r = ChaCha8Rng::from_seed(*key);
    r.set_word_pos(word0 as u128);
    (0..count).map(|_| r.next_u32()).collect()
}

fn first_mismatch(got: &[u32], want: &[u32]) -> Option<(usize, u32, u32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g != w)
        .map(|(i, (g, w))| (i, *g, *w))
}

#[test]
fn chacha8_words_equal_rand_chacha() {
    let Some(ctx) = gpu_or_skip() else { return };
    let mut cases = 0;
    for key in keys() {
        for word0 in [0u64, 1, 15, 16, 17, 1000] {
            for count in [1usize, 7, 16, 33, 4099] {
                let got = chacha::run_chacha8_words(ctx, &key, word0, count).unwrap();
                let want = cpu_words(&key, word0, count);
                assert_eq!(got.len(), count);
                assert!(
                    first_mismatch(&got, &want).is_none(),
                    "key {:02x?}… word0 {word0} count {count}: first mismatch (i, gpu, cpu) = \
                     {:x?}",
                    &key[..4],
                    first_mismatch(&got, &want)
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 4 * 6 * 5);
}

/// Block counters past 2³²: the low counter word carries into the high one inside a dispatch
/// (block 2³² − 1 → 2³²), and a start far into the stream (2⁴⁰ words).
#[test]
fn chacha8_words_block_counter_carry() {
    let Some(ctx) = gpu_or_skip() else { return };
    let key = rng::stream_key(3, "train-noise", 9);
    for (word0, count) in [
        (16 * ((1u64 << 32) - 1) - 3, 100usize),
        (16 * ((1u64 << 32) - 2) + 5, 64),
        ((1u64 << 40) + 5, 37),
        (u64::MAX - 40, 41), // the last words of the 2⁶⁴-block stream
    ] {
        let got = chacha::run_chacha8_words(ctx, &key, word0, count).unwrap();
        let want = cpu_words(&key, word0, count);
        assert!(
            first_mismatch(&got, &want).is_none(),
            "word0 {word0:#x} count {count}: first mismatch {:x?}",
            first_mismatch(&got, &want)
        );
    }
}

/// The pinned golden words of src/rng.rs (stream (12345, "golden", 0)), independent of the
/// rand_chacha build the other tests compare against; and an empty request.
#[test]
fn chacha8_words_golden_and_empty() {
    let Some(ctx) = gpu_or_skip() else { return };
    let key = rng::stream_key(12345, "golden", 0);
    let got = chacha::run_chacha8_words(ctx, &key, 0, 4).unwrap();
    assert_eq!(got, [0x65297f57, 0xa8ee0411, 0x8e6e1c26, 0xf5daedc3]);
    assert!(chacha::run_chacha8_words(ctx, &key, 5, 0)
        .unwrap()
        .is_empty());
}

/// The trainer's path: host normals (exactly `rng::normals_at`), uploaded per step into a
/// `GpuVec` by `from_slice` or `write`, read back bit for bit.
#[test]
fn uploaded_normals_are_the_cpu_normals_bitwise() {
    let Some(ctx) = gpu_or_skip() else { return };
    let (t, n) = (3usize, 300 * 2 + 1); // T steps of B·D normals, odd on purpose
    let key = rng::stream_key(11, "train-noise", 5);
    let mut stream = ChaCha8Rng::from_seed(key);
    let dev = GpuVec::zeros(ctx, n, "noise");
    let mut host = vec![0f32; n];
    for i in 0..t {
        rng::normals_at(&mut stream, (i * n) as u64, &mut host);
        let fresh = GpuVec::from_slice(ctx, &host, "noise");
        dev.write(ctx, &host);
        for (how, v) in [("from_slice", &fresh), ("write", &dev)] {
            let back = v.read(ctx).unwrap();
            assert!(
                back.iter()
                    .zip(&host)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "step {i}: {how} did not round-trip bit for bit"
            );
        }
    }
}

/// How far f32 normals `got` are from the exact Box–Muller of word pairs `words` (normal `first +
/// i` uses pair ⌊(first + i)/2⌋ − ⌊first/2⌋ of `words`) and from the CPU's f64 and f32 normals.
#[derive(Debug, Default)]
struct Diff {
    /// max |got − exact| / |exact|, and where: (normal, got, exact).
    max_rel: f64,
    worst: (usize, f32, f64),
    /// max of |got − cpu_f64| − GPU_NORMAL_REL·|cpu_f64| (≤ CPU_F64_ANGLE_ABS required).
    max_excess_vs_cpu: f64,
    /// max |got − cpu f32|, max distance in f32 ulps (same sign, so the bit patterns' distance),
    /// and how many are bitwise equal to the CPU's f32 normal.
    max_abs_vs_f32: f64,
    max_ulps_vs_f32: u32,
    equal_bits: usize,
}

fn compare_normals(got: &[f32], words: &[u32], first: usize) -> Diff {
    let mut d = Diff::default();
    for (i, &g) in got.iter().enumerate() {
        let n = first + i;
        let p = n / 2 * 2 - (first / 2 * 2);
        let pick = |(a, b): (f64, f64)| if n.is_multiple_of(2) { a } else { b };
        let exact = pick(box_muller_exact(words[p], words[p + 1]));
        let cpu = pick(rng::box_muller(words[p], words[p + 1]));
        assert!(g.is_finite(), "normal {n}: {g}");
        let rel = (g as f64 - exact).abs() / exact.abs();
        if rel > d.max_rel {
            d.max_rel = rel;
            d.worst = (n, g, exact);
        }
        let excess = (g as f64 - cpu).abs() - GPU_NORMAL_REL * cpu.abs();
        d.max_excess_vs_cpu = d.max_excess_vs_cpu.max(excess);
        d.max_abs_vs_f32 = d.max_abs_vs_f32.max((g - cpu as f32).abs() as f64);
        d.equal_bits += usize::from(g.to_bits() == (cpu as f32).to_bits());
        assert_eq!(
            g.is_sign_negative(),
            cpu.is_sign_negative(),
            "normal {n}: sign"
        );
        d.max_ulps_vs_f32 = d
            .max_ulps_vs_f32
            .max(g.to_bits().abs_diff((cpu as f32).to_bits()));
    }
    d
}

fn check(what: &str, d: &Diff, n: usize) {
    eprintln!(
        "{what} ({n} normals): max rel err vs exact {:.3e} = {:.2} ulp(2^-24) (normal {}: gpu {} \
         exact {}); vs the CPU's f32: max |Δ| {:.3e}, max {} ulp, bitwise equal {}/{n}",
        d.max_rel,
        d.max_rel * 16_777_216.0,
        d.worst.0,
        d.worst.1,
        d.worst.2,
        d.max_abs_vs_f32,
        d.max_ulps_vs_f32,
        d.equal_bits,
    );
    assert!(
        d.max_rel <= GPU_NORMAL_REL,
        "{what}: normal {}: gpu {} vs exact {}: rel err {:.3e} > {GPU_NORMAL_REL:.3e}",
        d.worst.0,
        d.worst.1,
        d.worst.2,
        d.max_rel
    );
    assert!(
        d.max_excess_vs_cpu <= CPU_F64_ANGLE_ABS,
        "{what}: |gpu − cpu f64| exceeds GPU_NORMAL_REL·|cpu| by {:.3e}",
        d.max_excess_vs_cpu
    );
}

#[test]
fn chacha8_normals_within_tolerance_of_f64_box_muller() {
    let Some(ctx) = gpu_or_skip() else { return };
    for (key, start, count) in [
        (rng::stream_key(0, "train-noise", 0), 0u64, 1usize << 16),
        (rng::stream_key(9, "train-noise", 2), 12_345, (1 << 16) + 1),
        (rng::stream_key(1, "eval-noise", 0), 7, 33),
    ] {
        let got = chacha::run_chacha8_normals(ctx, &key, start, count).unwrap();
        assert_eq!(got.len(), count);
        let first_word = start / 2 * 2;
        let end_word = (start + count as u64).div_ceil(2) * 2;
        let words = cpu_words(&key, first_word, (end_word - first_word) as usize);
        let d = compare_normals(&got, &words, start as usize);
        // compare_normals' CPU f32 values are rng::normals_at's, element for element
        let mut cpu = vec![0f32; count];
        rng::normals_at(&mut ChaCha8Rng::from_seed(key), start, &mut cpu);
        let max_abs = got
            .iter()
            .zip(&cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(max_abs as f64, d.max_abs_vs_f32);
        check(&format!("stream normals from {start}"), &d, count);
    }
}

/// The tails and branch edges of the shader's Box–Muller, which a short stream never reaches:
/// w₁ ∈ {0, 1, …} (u₁ → 0, r → 6.8), w₁ → 2³² − 1 (u₁ → 1, r → 1.5e-5), u₁ around ½ (the log
/// branch switch), √½ (the log1p split) and m = √2 (the mantissa split); w₂ at and around each
/// eighth of a turn (where cos or sin crosses 0, and where the quarter-turn rounding switches).
#[test]
fn box_muller_tail_words_within_tolerance() {
    let Some(ctx) = gpu_or_skip() else { return };
    let w1s = [
        0u32,
        1,
        2,
        3,
        0xff,
        0xb504,
        0xb505,
        0x5a82_7999,
        0x5a82_799a,
        0x7fff_fffe,
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0001,
        0x95f6_1998,
        0xb504_f333,
        0xb504_f334,
        0xb504_f335,
        0xd413_cccf,
        0xffff_0000,
        0xffff_fff0,
        0xffff_fffd,
        0xffff_fffe,
        0xffff_ffff,
    ];
    let mut w2s = vec![];
    for q in 0u32..8 {
        let c = q.wrapping_mul(0x2000_0000);
        for dlt in [0u32, 1, 2] {
            w2s.push(c.wrapping_add(dlt));
            w2s.push(c.wrapping_sub(dlt + 1));
        }
    }
    let mut pairs = Vec::with_capacity(2 * w1s.len() * w2s.len());
    for &a in &w1s {
        for &b in &w2s {
            pairs.extend_from_slice(&[a, b]);
        }
    }
    let got = chacha::run_box_muller_words(ctx, &pairs).unwrap();
    let d = compare_normals(&got, &pairs, 0);
    check("tail words", &d, got.len());
    // how far the CPU's own f64 normals are from exact there (the reason for CPU_F64_ANGLE_ABS)
    let cpu_worst = pairs
        .chunks_exact(2)
        .flat_map(|p| {
            let (a, b) = rng::box_muller(p[0], p[1]);
            let (x, y) = box_muller_exact(p[0], p[1]);
            [(a - x).abs() / x.abs(), (b - y).abs() / y.abs()]
        })
        .fold(0f64, f64::max);
    eprintln!("tail words: the CPU's f64 Box–Muller vs exact: max rel err {cpu_worst:.3e}");
}

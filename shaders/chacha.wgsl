// chacha.wgsl — the ChaCha8 word stream of rand_chacha's ChaCha8Rng, and f32 Box–Muller normals
// from it, generated on the device.
//
// Purpose:   chacha8_words:    words[i] = word (word0 + i) of the ChaCha8 stream of `key`
//                              (stream id 0), i < count — bit for bit rand_chacha's `next_u32`
//                              sequence after `set_word_pos(word0)`.
//            chacha8_normals:  normals[i] = standard normal number (start + i) of that stream,
//                              Box–Muller in f32 on the word pair (2⌊n/2⌋, 2⌊n/2⌋ + 1):
//                              r = √(−2 ln u₁), θ = 2π u₂, u = (w + ½)·2⁻³², r·cos θ for even n,
//                              r·sin θ for odd n — the formula of src/rng.rs `box_muller`, which
//                              evaluates it in f64. NOT bitwise equal to the CPU's normals (WGSL
//                              has no f64); evaluated so that the error is relative everywhere,
//                              tails included (see box_muller_f32 below).
//            box_muller_words: normals[i] from caller-given words (pairs), the same f32 math —
//                              lets the tests reach the tails (w₁ = 0, w₁ = 2³² − 1) directly.
// Prelude:   math.wgsl (sin_cos_f32).
// Bindings (group 0; each entry point uses the subset listed):
//   0  params  : uniform ChaChaParams                 all
//   1  key     : storage, read       [8] u32          chacha8_words, chacha8_normals (the 32-byte
//                                                     key as 8 little-endian words, as from_seed)
//   2  words   : storage, read_write [count] u32      chacha8_words
//   3  normals : storage, read_write [count] f32      chacha8_normals, box_muller_words
//   4  pairs   : storage, read       [count] u32      box_muller_words (count even)
// Workgroup: 64 threads. chacha8_*: one thread per 16-word ChaCha block; thread t computes stream
//            block (block + t) and writes its words/normals 16t + j − skip that fall in [0, count)
//            (block = ⌊word0/16⌋, skip = word0 mod 16, threads = ⌈(skip + count)/16⌉).
//            box_muller_words: one thread per word pair. The grid is 2-D (x ≤ 65535 workgroups);
//            index = gid.x + gid.y·(num_workgroups.x·64), bounds-checked.
// Matches:   rand_chacha 0.10 ChaCha8Rng (state = "expand 32-byte k", key words 0–7, 64-bit block
//            counter in words 12–13 (low word first), stream id in words 14–15 = 0; 4 double
//            rounds; output = working state + input state), word position as `set_word_pos`;
//            src/rng.rs normals_at / box_muller for the normals, approximately: within
//            GPU_NORMAL_REL = 2⁻¹⁹ relative of the exact value; measured on lavapipe ≤ 5.4 ulp
//            (3.2e-7) relative, ~55% bitwise equal to the CPU's f32 normals, the rest ≤ 4 ulp off.
// Tested by: tests/gpu_noise.rs (words: bitwise vs rand_chacha at many offsets/counts, block
//            counter carry; normals: relative error vs the f64 Box–Muller, tails included).
//            Bench: benches/gpu_kernels.rs gpu/noise (upload vs generate).

struct ChaChaParams {
    block_lo: u32, // first stream block (= word0 / 16), low 32 bits
    block_hi: u32, // … high 32 bits
    skip: u32, // words of the first block before word0 (= word0 mod 16)
    count: u32, // words / normals to write
}

@group(0) @binding(0) var<uniform> params: ChaChaParams;
@group(0) @binding(1) var<storage, read> key: array<u32, 8>;
@group(0) @binding(2) var<storage, read_write> words: array<u32>;
@group(0) @binding(3) var<storage, read_write> normals: array<f32>;
@group(0) @binding(4) var<storage, read> pairs: array<u32>;

const WG: u32 = 64u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * (nwg.x * WG);
}

// ---------------------------------------------------------------------------------------------
// ChaCha8 block function, one 4×4 state as four row vectors (a = words 0–3, b = 4–7, c = 8–11,
// d = 12–15), as rand_chacha's SIMD code does: a column round is one quarter round on the four
// columns at once; the diagonal round is the same after rotating rows b, c, d by 1, 2, 3 lanes.
// ---------------------------------------------------------------------------------------------

fn rotl(v: vec4<u32>, n: u32) -> vec4<u32> {
    return (v << vec4<u32>(n)) | (v >> vec4<u32>(32u - n));
}

struct Rows {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    d: vec4<u32>,
}

fn quarter_rounds(s: Rows) -> Rows {
    var x = s;
    x.a += x.b;
    x.d = rotl(x.d ^ x.a, 16u);
    x.c += x.d;
    x.b = rotl(x.b ^ x.c, 12u);
    x.a += x.b;
    x.d = rotl(x.d ^ x.a, 8u);
    x.c += x.d;
    x.b = rotl(x.b ^ x.c, 7u);
    return x;
}

// The 16 output words of stream block (lo, hi) (a 64-bit block counter).
fn chacha8_block(lo: u32, hi: u32) -> Rows {
    var s: Rows;
    s.a = vec4<u32>(0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u); // "expand 32-byte k"
    s.b = vec4<u32>(key[0], key[1], key[2], key[3]);
    s.c = vec4<u32>(key[4], key[5], key[6], key[7]);
    s.d = vec4<u32>(lo, hi, 0u, 0u); // counter, stream id 0
    var x = s;
    for (var i = 0u; i < 4u; i++) { // 4 double rounds = 8 rounds
        x = quarter_rounds(x);
        // diagonalize: columns become (0,5,10,15), (1,6,11,12), (2,7,8,13), (3,4,9,14)
        x.b = x.b.yzwx;
        x.c = x.c.zwxy;
        x.d = x.d.wxyz;
        x = quarter_rounds(x);
        x.b = x.b.wxyz;
        x.c = x.c.zwxy;
        x.d = x.d.yzwx;
    }
    return Rows(x.a + s.a, x.b + s.b, x.c + s.c, x.d + s.d);
}

// Stream block of thread t: (block_lo, block_hi) + t with the carry into the high word.
fn block_of(t: u32) -> Rows {
    let lo = params.block_lo + t;
    let hi = params.block_hi + select(0u, 1u, lo < t);
    return chacha8_block(lo, hi);
}

// Output index of word j of thread t's block, or count (out of range) when it is not written.
fn out_index(t: u32, j: u32) -> u32 {
    let o = t * 16u + j; // < skip + count + 16: fits (count ≤ 2³² − 32, asserted by the host)
    if (o < params.skip || o - params.skip >= params.count) {
        return params.count;
    }
    return o - params.skip;
}

fn put_word(t: u32, j: u32, w: u32) {
    let i = out_index(t, j);
    if (i < params.count) {
        words[i] = w;
    }
}

fn put_words(t: u32, j: u32, v: vec4<u32>) {
    put_word(t, j, v.x);
    put_word(t, j + 1u, v.y);
    put_word(t, j + 2u, v.z);
    put_word(t, j + 3u, v.w);
}

@compute @workgroup_size(64)
fn chacha8_words(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_index(gid, nwg);
    if (t * 16u >= params.skip + params.count) {
        return;
    }
    let x = block_of(t);
    put_words(t, 0u, x.a);
    put_words(t, 4u, x.b);
    put_words(t, 8u, x.c);
    put_words(t, 12u, x.d);
}

// ---------------------------------------------------------------------------------------------
// Box–Muller in f32 with relative error everywhere. The naive f32 evaluation loses the tails:
// u₁ = (w₁ + ½)·2⁻³² rounded to f32 near 1 has an absolute error up to 2⁻²⁵, so r = √(−2 ln u₁)
// has a relative error up to 2⁻²⁵/r² (3e-4 at r = 0.01, 50% at r = 2.4e-4); θ = 2π u₂ rounded to
// f32 has an absolute error up to 2⁻²² near 2π, so sin θ near π and 2π (and cos θ near π/2,
// 3π/2) loses its relative accuracy. Instead:
// - ln u₁: for w₁ < 2³¹, ln of the (exactly scaled) f32 of (w₁ + ½)·2⁻³²; for w₁ ≥ 2³¹,
//   ln(1 − t) with t = (~w₁ + ½)·2⁻³² = 1 − u₁ (no cancellation), as log1p(−t). Both through
//   FreeBSD's logf kernel (s = f/(2+f), Lg1..Lg4; |error| < 1 ulp there) on f ∈ [√½ − 1, √2 − 1];
// - θ: the quadrant j = nearest multiple of 2³⁰ to w₂ (integer), the remainder d = w₂ − j·2³⁰ ∈
//   [−2²⁹, 2²⁹) (integer, exact), α = (d + ½)·π·2⁻³¹ ∈ (−π/4, π/4), so θ = j·π/2 + α exactly
//   up to α's rounding (relative, ≈ 1.5 ulp), then sin/cos α by math.wgsl's polynomials (no
//   range reduction needed) and the quadrant swap/negation in integer form.
// ---------------------------------------------------------------------------------------------

const TWO_M32: f32 = 0x1.000000p-32f; // 0x2f800000 = 2^-32
const PI_2M31: f32 = 0x1.921fb6p-30f; // 0x30c90fdb = f32(π)·2^-31
const SQRT2: f32 = 0x1.6a09e6p+0f; // 0x3fb504f3 = √2 rounded to f32
const ONE_MINUS_SQRT_HALF: f32 = 0x1.2bec34p-2f; // 0x3e95f61a = 1 − √½ rounded to f32
const LOGF_LN2_HI: f32 = 0x1.62e300p-1f; // 0x3f317180 = ln 2, high part (FreeBSD e_logf.c)
const LOGF_LN2_LO: f32 = 0x1.2fefa2p-17f; // 0x3717f7d1 = ln 2 − LOGF_LN2_HI
const LOGF_LG1: f32 = 0x1.555554p-1f; // 0x3f2aaaaa = 0.66666662693
const LOGF_LG2: f32 = 0x1.999c26p-2f; // 0x3eccce13 = 0.40000972152
const LOGF_LG3: f32 = 0x1.23d3dcp-2f; // 0x3e91e9ee = 0.28498786688
const LOGF_LG4: f32 = 0x1.f13c4cp-3f; // 0x3e789e26 = 0.24279078841

// k·ln 2 + ln(1 + f) for f ∈ [√½ − 1, √2 − 1] (FreeBSD __ieee754_logf after its reduction).
fn log_reduced(f: f32, k: f32) -> f32 {
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LOGF_LG2 + w * LOGF_LG4);
    let t2 = z * (LOGF_LG1 + w * LOGF_LG3);
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    return k * LOGF_LN2_HI - ((hfsq - (s * (hfsq + r) + k * LOGF_LN2_LO)) - f);
}

// ln u, u = (w + ½)·2⁻³² ∈ (0, 1): relative error of a few ulp for every w.
fn ln_open01(w: u32) -> f32 {
    if (w < 0x80000000u) {
        // u ∈ (2⁻³³, ½], a normal f32: u = m·2^e, m ∈ [1, 2), then m ∈ [√½, √2) by halving.
        let u = (f32(w) + 0.5) * TWO_M32;
        let bits = bitcast<u32>(u);
        var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
        var e = i32(bits >> 23u) - 127;
        if (m > SQRT2) {
            m = 0.5 * m;
            e += 1;
        }
        return log_reduced(m - 1.0, f32(e)); // m − 1 exact (Sterbenz)
    }
    // u ∈ [½, 1): t = 1 − u = (~w + ½)·2⁻³² ∈ (0, ½] exactly up to f32 rounding of t itself.
    let t = (f32(~w) + 0.5) * TWO_M32;
    if (t <= ONE_MINUS_SQRT_HALF) {
        return log_reduced(-t, 0.0); // ln(1 − t), u ∈ [√½, 1)
    }
    return log_reduced(1.0 - 2.0 * t, -1.0); // u = ½·(2 − 2t), 1 − 2t exact (Sterbenz)
}

// (cos θ, sin θ), θ = 2π·(w + ½)·2⁻³².
fn cos_sin_turn(w: u32) -> vec2<f32> {
    let j = (w + 0x20000000u) >> 30u; // nearest quarter turn, mod 4
    let d = bitcast<i32>(w - (j << 30u)); // ∈ [−2²⁹, 2²⁹)
    let alpha = (f32(d) + 0.5) * PI_2M31; // |α| < π/4
    let sc = sin_cos_f32(alpha); // (sin α, cos α); its reduction is the identity for |α| < π/4
    // θ = j·π/2 + α: rotate (cos α, sin α) by j quarter turns.
    switch j {
        case 0u: { return vec2<f32>(sc.y, sc.x); }
        case 1u: { return vec2<f32>(-sc.x, sc.y); }
        case 2u: { return vec2<f32>(-sc.y, -sc.x); }
        default: { return vec2<f32>(sc.x, -sc.y); }
    }
}

// The two normals of word pair (w1, w2): (r·cos θ, r·sin θ).
fn box_muller_f32(w1: u32, w2: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * ln_open01(w1));
    return r * cos_sin_turn(w2);
}

fn put_normal(t: u32, j: u32, z: f32) {
    let i = out_index(t, j);
    if (i < params.count) {
        normals[i] = z;
    }
}

fn put_normals(t: u32, j: u32, v: vec4<u32>) {
    let z01 = box_muller_f32(v.x, v.y);
    let z23 = box_muller_f32(v.z, v.w);
    put_normal(t, j, z01.x);
    put_normal(t, j + 1u, z01.y);
    put_normal(t, j + 2u, z23.x);
    put_normal(t, j + 3u, z23.y);
}

@compute @workgroup_size(64)
fn chacha8_normals(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat_index(gid, nwg);
    if (t * 16u >= params.skip + params.count) {
        return;
    }
    // Normal n uses words 2⌊n/2⌋ and 2⌊n/2⌋ + 1: blocks are 16 words, so pairs never straddle.
    let x = block_of(t);
    put_normals(t, 0u, x.a);
    put_normals(t, 4u, x.b);
    put_normals(t, 8u, x.c);
    put_normals(t, 12u, x.d);
}

@compute @workgroup_size(64)
fn box_muller_words(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let p = flat_index(gid, nwg);
    if (2u * p >= params.count) {
        return;
    }
    let z = box_muller_f32(pairs[2u * p], pairs[2u * p + 1u]);
    normals[2u * p] = z.x;
    normals[2u * p + 1u] = z.y;
}

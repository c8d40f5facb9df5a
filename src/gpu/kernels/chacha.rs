//! Host wrappers of `shaders/chacha.wgsl`: the ChaCha8 word stream of `rand_chacha`'s
//! `ChaCha8Rng` generated on the device (bit for bit), and f32 Box–Muller normals from it (an
//! approximation of `rng::normals_at`, which computes in f64: not bitwise, see
//! `tests/gpu_noise.rs` for the measured difference and its named tolerance).
//!
//! Storage: the words are `u32`s held in a [`GpuVec`] (whose elements are nominally f32): the
//! shader binds the buffer as `array<u32>` and [`words_of`] reinterprets the bits on readback.
//! The key lives in its own 8-word storage buffer ([`upload_key`] / [`write_key`]), not in the
//! params uniform, so a caller that needs fresh noise every iteration prepares its dispatches once
//! and rewrites 32 bytes per iteration (the training loop's pattern; the per-dispatch params only
//! hold the position, which does not change between iterations).
//!
//! Stream position: word `p` of the stream is word `p mod 16` of block `⌊p/16⌋` (64-bit block
//! counter, stream id 0) — `ChaCha8Rng::set_word_pos(p)` then `next_u32`. Normal number `n` is
//! made from words `2⌊n/2⌋` and `2⌊n/2⌋ + 1` (cos for even `n`, sin for odd), as `rng::normals_at`.

use super::{dispatch, grid_1d, to_u32, Dispatch};
use crate::gpu::buffers::{params_buffer, GpuVec};
use crate::gpu::pipelines::{BindingKind::*, EntryPoint};
use crate::gpu::shaders::Shader;
use crate::gpu::{GpuContext, GpuError};
use bytemuck::{Pod, Zeroable};

/// Threads per workgroup in chacha.wgsl (`@workgroup_size`, `WG`).
pub const WORKGROUP_SIZE: u32 = 64;

/// Words per ChaCha block (one shader thread each).
pub const BLOCK_WORDS: u64 = 16;

/// Most words (or normals) one dispatch may produce: keeps the shader's `16·t + j` indices,
/// surplus grid threads included, inside u32.
pub const MAX_COUNT: usize = 1 << 30;

/// `chacha.wgsl` `ChaChaParams`: where in the stream a dispatch starts and how much it writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ChaChaParams {
    /// First stream block `⌊word0 / 16⌋`, low 32 bits.
    pub block_lo: u32,
    /// … high 32 bits.
    pub block_hi: u32,
    /// `word0 mod 16`: words of the first block before `word0`.
    pub skip: u32,
    /// Words (normals) to write.
    pub count: u32,
}

impl ChaChaParams {
    /// Params for `count` words starting at stream word `word0`.
    pub fn new(word0: u64, count: usize) -> Self {
        assert!(
            count <= MAX_COUNT,
            "gpu chacha: count {count} > MAX_COUNT {MAX_COUNT}"
        );
        let block = word0 / BLOCK_WORDS;
        ChaChaParams {
            block_lo: block as u32,
            block_hi: (block >> 32) as u32,
            skip: (word0 % BLOCK_WORDS) as u32,
            count: count as u32,
        }
    }

    /// Shader threads (one per 16-word block touched).
    fn threads(&self) -> u32 {
        (self.skip + self.count).div_ceil(BLOCK_WORDS as u32)
    }
}

pub static CHACHA8_WORDS: EntryPoint = EntryPoint {
    shader: Shader::ChaCha,
    name: "chacha8_words",
    bindings: &[(0, Uniform), (1, StorageRead), (2, StorageReadWrite)],
};

pub static CHACHA8_NORMALS: EntryPoint = EntryPoint {
    shader: Shader::ChaCha,
    name: "chacha8_normals",
    bindings: &[(0, Uniform), (1, StorageRead), (3, StorageReadWrite)],
};

pub static BOX_MULLER_WORDS: EntryPoint = EntryPoint {
    shader: Shader::ChaCha,
    name: "box_muller_words",
    bindings: &[(0, Uniform), (3, StorageReadWrite), (4, StorageRead)],
};

/// The 32-byte key as the 8 little-endian words of ChaCha's state (rand_chacha's `from_seed`).
pub fn key_words(key: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().unwrap()))
}

/// Words as the bit patterns of a [`GpuVec`]'s f32 elements (upload side; a byte copy, no float
/// operation touches them, so NaN patterns survive).
pub fn words_as_f32(words: &[u32]) -> Vec<f32> {
    bytemuck::cast_slice(words).to_vec()
}

/// A [`GpuVec`]'s f32 elements read back as the words the shader stored (readback side).
pub fn words_of(v: &[f32]) -> Vec<u32> {
    bytemuck::cast_slice(v).to_vec()
}

/// A new 8-element key buffer holding `key` (binding 1 of the chacha8 entry points).
pub fn upload_key(ctx: &GpuContext, key: &[u8; 32]) -> GpuVec {
    GpuVec::from_slice(ctx, &words_as_f32(&key_words(key)), "chacha key")
}

/// Overwrites a key buffer from [`upload_key`] (ordered before the next submit), so prepared
/// dispatches produce the stream of the new key.
pub fn write_key(ctx: &GpuContext, key_buf: &GpuVec, key: &[u8; 32]) {
    key_buf.write(ctx, &words_as_f32(&key_words(key)));
}

fn prepare(
    ctx: &GpuContext,
    entry: &'static EntryPoint,
    key_buf: &GpuVec,
    word0: u64,
    out: &GpuVec,
    out_binding: u32,
) -> Result<Dispatch, GpuError> {
    assert_eq!(key_buf.len(), 8, "gpu chacha: key buffer must hold 8 words");
    let params = ChaChaParams::new(word0, out.len());
    let grid = grid_1d(params.threads().div_ceil(WORKGROUP_SIZE));
    let pb = params_buffer(ctx, &params, "ChaChaParams");
    dispatch(
        ctx,
        entry,
        &[(0, &pb), (1, key_buf.buffer()), (out_binding, out.buffer())],
        grid,
    )
}

/// out[i] = word `word0 + i` of the ChaCha8 stream of the key in `key_buf`, i < out.len()
/// (u32 bits in f32 storage; see [`words_of`]).
pub fn prepare_chacha8_words(
    ctx: &GpuContext,
    key_buf: &GpuVec,
    word0: u64,
    out: &GpuVec,
) -> Result<Dispatch, GpuError> {
    prepare(ctx, &CHACHA8_WORDS, key_buf, word0, out, 2)
}

/// out[i] = f32 Box–Muller normal number `start + i` of the stream of the key in `key_buf`.
pub fn prepare_chacha8_normals(
    ctx: &GpuContext,
    key_buf: &GpuVec,
    start: u64,
    out: &GpuVec,
) -> Result<Dispatch, GpuError> {
    prepare(ctx, &CHACHA8_NORMALS, key_buf, start, out, 3)
}

/// out[2m], out[2m + 1] = the f32 Box–Muller pair of words (pairs[2m], pairs[2m + 1]) (u32 bits
/// in f32 storage, see [`words_as_f32`]); `pairs.len()` even, = out.len().
pub fn prepare_box_muller_words(
    ctx: &GpuContext,
    pairs: &GpuVec,
    out: &GpuVec,
) -> Result<Dispatch, GpuError> {
    assert_eq!(
        pairs.len(),
        out.len(),
        "gpu box_muller: pairs.len() != out.len()"
    );
    assert_eq!(pairs.len() % 2, 0, "gpu box_muller: odd number of words");
    let n = to_u32(pairs.len(), "gpu box_muller: n");
    let params = ChaChaParams {
        count: n,
        ..Default::default()
    };
    let pb = params_buffer(ctx, &params, "ChaChaParams");
    dispatch(
        ctx,
        &BOX_MULLER_WORDS,
        &[(0, &pb), (3, out.buffer()), (4, pairs.buffer())],
        grid_1d((n / 2).div_ceil(WORKGROUP_SIZE)),
    )
}

/// Records [`prepare_chacha8_words`] into `encoder`.
pub fn call_chacha8_words(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    key_buf: &GpuVec,
    word0: u64,
    out: &GpuVec,
) -> Result<(), GpuError> {
    prepare_chacha8_words(ctx, key_buf, word0, out)?.record(encoder);
    Ok(())
}

/// Records [`prepare_chacha8_normals`] into `encoder`.
pub fn call_chacha8_normals(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    key_buf: &GpuVec,
    start: u64,
    out: &GpuVec,
) -> Result<(), GpuError> {
    prepare_chacha8_normals(ctx, key_buf, start, out)?.record(encoder);
    Ok(())
}

/// Records [`prepare_box_muller_words`] into `encoder`.
pub fn call_box_muller_words(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    pairs: &GpuVec,
    out: &GpuVec,
) -> Result<(), GpuError> {
    prepare_box_muller_words(ctx, pairs, out)?.record(encoder);
    Ok(())
}

/// `count` words of the ChaCha8 stream of `key` from word `word0`: equals
/// `ChaCha8Rng::from_seed(key)`, `set_word_pos(word0)`, then `count` × `next_u32`.
pub fn run_chacha8_words(
    ctx: &GpuContext,
    key: &[u8; 32],
    word0: u64,
    count: usize,
) -> Result<Vec<u32>, GpuError> {
    let kb = upload_key(ctx, key);
    let out = GpuVec::zeros(ctx, count, "chacha8 words");
    let mut enc = ctx.encoder("run_chacha8_words");
    call_chacha8_words(ctx, &mut enc, &kb, word0, &out)?;
    ctx.submit(enc);
    Ok(words_of(&out.read(ctx)?))
}

/// `count` f32 Box–Muller normals of the stream of `key` from normal `start`: approximates
/// `rng::normals_at(&mut ChaCha8Rng::from_seed(key), start, …)` (same words, f32 math).
pub fn run_chacha8_normals(
    ctx: &GpuContext,
    key: &[u8; 32],
    start: u64,
    count: usize,
) -> Result<Vec<f32>, GpuError> {
    let kb = upload_key(ctx, key);
    let out = GpuVec::zeros(ctx, count, "chacha8 normals");
    let mut enc = ctx.encoder("run_chacha8_normals");
    call_chacha8_normals(ctx, &mut enc, &kb, start, &out)?;
    ctx.submit(enc);
    out.read(ctx)
}

/// The f32 Box–Muller normals of word pairs `pairs` (`rng::box_muller` in f32), for testing the
/// shader's math on chosen words (the tails) without a stream.
pub fn run_box_muller_words(ctx: &GpuContext, pairs: &[u32]) -> Result<Vec<f32>, GpuError> {
    let pb = GpuVec::from_slice(ctx, &words_as_f32(pairs), "box_muller pairs");
    let out = GpuVec::zeros(ctx, pairs.len(), "box_muller normals");
    let mut enc = ctx.encoder("run_box_muller_words");
    call_box_muller_words(ctx, &mut enc, &pb, &out)?;
    ctx.submit(enc);
    out.read(ctx)
}

//! Conditional sampling for the VAE latent posterior (spec §1.6, §2.5, §3 `cond-tb-avg`): the
//! data a run needs and the per-batch energy that scores row b given its own image.
//!
//! Layout: an iteration trains on B conditions (training images), each tiled R times
//! repeat-major, so row r·B + b of the [R·B, ·] batch holds condition b, as the reference does.

use crate::energies::vae::{self, MnistTrain, VaeEnergy, VaeError, LATENT, PIXELS};
use crate::energies::Energy;
use crate::rng;
use std::path::Path;

/// The frozen VAE, its training images (the conditions sampled during training) and the 100
/// evaluation images.
pub struct VaeTask {
    pub energy: VaeEnergy,
    pub train: MnistTrain,
    /// `[100, 784]`.
    pub eval: Vec<f32>,
    /// R, trajectories per condition in training.
    pub repeats: usize,
}

impl VaeTask {
    /// Load and checksum everything from `data_dir` (the project's `data/` folder).
    pub fn load(data_dir: &Path, repeats: usize) -> Result<Self, VaeError> {
        Ok(VaeTask {
            energy: VaeEnergy::load(data_dir)?,
            train: MnistTrain::load(data_dir)?,
            eval: vae::load_eval_images(data_dir)?,
            repeats,
        })
    }

    /// The number of evaluation images (one trajectory each, spec §6).
    pub fn eval_count(&self) -> usize {
        self.eval.len() / PIXELS
    }

    /// Iteration `it`'s conditions, tiled: `[R·B, 784]`. The B images are drawn uniformly with
    /// replacement from stream (seed, "vae-conditions", it) — the reference walks a shuffled
    /// loader instead; both give i.i.d.-uniform images within an iteration, and keying by the
    /// iteration keeps resumed runs bitwise identical.
    pub fn training_conditions(&self, seed: u64, it: usize, b: usize) -> Vec<f32> {
        let mut stream = rng::stream(seed, "vae-conditions", it as u64);
        let n = self.train.len() as u32;
        let picks: Vec<usize> = (0..b)
            .map(|_| rng::below(&mut stream, n) as usize)
            .collect();
        let mut one = vec![0f32; b * PIXELS];
        self.train.gather(&picks, &mut one);
        tile(&one, self.repeats)
    }
}

/// `[B, C]` → `[R·B, C]`, repeat-major.
pub fn tile(rows: &[f32], repeats: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * repeats);
    for _ in 0..repeats {
        out.extend_from_slice(rows);
    }
    out
}

/// Replay-buffer entries of a forward batch: for each of the B conditions, the terminal state
/// with the highest log R among its R repeats (rows r·B + b), joined with its image as a
/// `[z | x]` row. `x_t` is `[R·B, D]`, `images` `[R·B, 784]`; returns (`[B, D + 784]`, `[B]`).
/// The reference reshapes the repeat-major batch as (B, R) here and so pairs states with the
/// wrong images (spec §9 item 13); this takes the argmax over r for each b.
pub fn best_of_repeats(
    x_t: &[f32],
    log_r: &[f64],
    images: &[f32],
    b: usize,
    d: usize,
) -> (Vec<f32>, Vec<f64>) {
    let repeats = log_r.len() / b;
    let mut entries = Vec::with_capacity(b * (d + PIXELS));
    let mut best_log_r = Vec::with_capacity(b);
    for c in 0..b {
        // The first maximum in repeat order (ties keep the earliest repeat).
        let mut best = c;
        for r in 1..repeats {
            let row = r * b + c;
            if log_r[row] > log_r[best] {
                best = row;
            }
        }
        entries.extend_from_slice(&x_t[best * d..(best + 1) * d]);
        entries.extend_from_slice(&images[best * PIXELS..(best + 1) * PIXELS]);
        best_log_r.push(log_r[best]);
    }
    (entries, best_log_r)
}

/// `[z | x]` entries (`[N, D + 784]`) → (z `[N, D]`, x `[N, 784]`).
pub fn split_entries(entries: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
    let width = d + PIXELS;
    let n = entries.len() / width;
    let mut z = Vec::with_capacity(n * d);
    let mut x = Vec::with_capacity(n * PIXELS);
    for row in entries.chunks_exact(width) {
        z.extend_from_slice(&row[..d]);
        x.extend_from_slice(&row[d..]);
    }
    (z, x)
}

/// Local-search samples `[S, D]` joined with the image of the chain each came from
/// (`chains[s]` indexes `images` `[M, 784]`): `[S, D + 784]`.
pub fn join_entries(samples: &[f32], chains: &[u32], images: &[f32], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(chains.len() * (d + PIXELS));
    for (z, &c) in samples.chunks_exact(d).zip(chains) {
        let c = c as usize;
        out.extend_from_slice(z);
        out.extend_from_slice(&images[c * PIXELS..(c + 1) * PIXELS]);
    }
    out
}

/// The VAE energy of a batch whose row b is conditioned on `images[b]`: the batched methods
/// score each latent against its own image. A single row has no image of its own, so the
/// per-row methods are refused.
pub struct ConditionedBatch<'a> {
    pub energy: &'a VaeEnergy,
    /// `[B, 784]`.
    pub images: &'a [f32],
}

impl Energy for ConditionedBatch<'_> {
    fn name(&self) -> String {
        "vae-posterior-batch".into()
    }
    fn dim(&self) -> usize {
        LATENT
    }
    fn log_reward_row(&self, _x: &[f32]) -> f64 {
        panic!("a conditioned batch scores whole batches (each row against its own image)")
    }
    fn log_reward(&self, x: &[f32], out: &mut [f64]) {
        self.energy.log_reward(x, self.images, out);
    }
    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        self.energy.grad_log_reward(x, self.images, grad);
    }
}

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

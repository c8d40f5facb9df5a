//! The vision stand-in of the RTB paper at CPU scale (spec rtb2024 §3.3): the UCI 8×8 digits
//! (or MNIST, average-pooled) scaled to [−1, 1], a frozen MLP classifier trained on them, and
//! the constraint r(x) = max over the allowed classes of p(c | x) (one class, or even / odd
//! digits).
//!
//! The classifier (D → H → 10, GELU, spec §3.3's "MLP 64 → 128 → 10") is trained here,
//! deterministically, whenever the target is built: Adam 1e-3, batch 128, cross-entropy, on a
//! fixed 80 % split (stream (CLASSIFIER_SEED, "digits-split")): a few seconds on two cores for
//! the 8×8 digits, tens of seconds for MNIST. Its forward pass and input gradient are written
//! out by hand (f64).

use super::Energy;
use crate::config::DigitImagesConfig;
use crate::data::{self, csv::Digits, DataError};
use crate::rng;
use rand_chacha::ChaCha8Rng;

/// The digits file in `data/`.
pub const DIGITS_FILE: &str = "digits/digits.csv.gz";
/// D of the UCI digits: an 8×8 image.
pub const PIXELS: usize = 64;
/// Classes.
pub const CLASSES: usize = 10;
/// Hidden width of the classifier.
pub const HIDDEN: usize = 128;
/// The classifier's fixed seed (split, initialisation, batches).
pub const CLASSIFIER_SEED: u64 = 20240529;
/// Training epochs of the classifier on the 1 437 UCI training images.
pub const EPOCHS: usize = 60;
/// Training epochs on the 48 000 MNIST training images (about the same number of Adam steps
/// as [`EPOCHS`] on the UCI digits, times 3).
pub const MNIST_EPOCHS: usize = 6;
/// The MNIST training images in `data/` (the file the VAE target trains on) and their labels.
pub const MNIST_IMAGES_FILE: &str = super::vae::TRAIN_IMAGES_FILE;
pub const MNIST_LABELS_FILE: &str = "mnist/train-labels-idx1-ubyte.gz";
/// Real images the diversity of a reference set is computed over: the first this many (all
/// pairs), so an MNIST class (about 6 000 images) or parity (30 000) stays affordable. Every
/// UCI reference set is smaller, so its numbers are unchanged.
pub const DIVERSITY_ROWS: usize = 5000;

/// Images scaled to [−1, 1] with their labels.
#[derive(Clone, Debug)]
pub struct DigitImages {
    /// `[n, D]`.
    pub x: Vec<f32>,
    pub labels: Vec<u8>,
    /// D, pixels per image.
    pub pixels: usize,
}

impl DigitImages {
    /// The UCI digits, v/8 − 1 (values 0..=16).
    pub fn from_table(d: &Digits) -> Self {
        DigitImages {
            x: d.features.iter().map(|&v| v / 8.0 - 1.0).collect(),
            labels: d.labels.clone(),
            pixels: PIXELS,
        }
    }

    /// The 60 000 MNIST training images from `dir` (checksummed), each `pool`×`pool` block
    /// averaged (in f64, row-major block order) and scaled from [0, 255] to [−1, 1].
    pub fn load_mnist(dir: &std::path::Path, pool: usize) -> Result<Self, DataError> {
        assert!(pool >= 1 && 28 % pool == 0, "pool must divide 28");
        data::checksum::verify(dir, MNIST_IMAGES_FILE)?;
        data::checksum::verify(dir, MNIST_LABELS_FILE)?;
        let images = data::idx::load_images(&dir.join(MNIST_IMAGES_FILE))?;
        let labels = data::idx::load_labels(&dir.join(MNIST_LABELS_FILE))?;
        let path = dir.join(MNIST_IMAGES_FILE);
        let shape = [images.n, images.rows, images.cols];
        if images.rows != 28 || images.cols != 28 || labels.labels.len() != images.n {
            return Err(DataError::Invalid {
                format: data::Format::Idx,
                origin: Some(path),
                what: format!(
                    "expected 28×28 images with one label each, got {} for {} labels",
                    data::shape_str(&shape),
                    labels.labels.len()
                ),
            });
        }
        let raw: Vec<f32> = images.pixels.iter().map(|&p| f32::from(p)).collect();
        Ok(Self::pooled(&raw, labels.labels, pool))
    }

    /// `raw` 28×28 images `[n, 784]` with values in [0, 255], pooled and scaled.
    pub fn pooled(raw: &[f32], labels: Vec<u8>, pool: usize) -> Self {
        let side = 28 / pool;
        let area = (pool * pool) as f64;
        let mut x = Vec::with_capacity(labels.len() * side * side);
        for img in raw.chunks_exact(784) {
            for by in 0..side {
                for bx in 0..side {
                    let mut sum = 0.0f64;
                    for dy in 0..pool {
                        for dx in 0..pool {
                            sum += img[(by * pool + dy) * 28 + bx * pool + dx] as f64;
                        }
                    }
                    x.push((sum / area / 127.5 - 1.0) as f32);
                }
            }
        }
        DigitImages {
            x,
            labels,
            pixels: side * side,
        }
    }

    /// Load and checksum `data/digits/digits.csv.gz` from `dir`.
    pub fn load(dir: &std::path::Path) -> Result<Self, DataError> {
        data::checksum::verify(dir, DIGITS_FILE)?;
        Ok(Self::from_table(&data::csv::load_digits(
            &dir.join(DIGITS_FILE),
        )?))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.x[i * self.pixels..(i + 1) * self.pixels]
    }
}

/// A D → H → 10 GELU MLP, f64 weights (row-major `[out, in]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    /// D, the input width.
    pub inputs: usize,
    pub w1: Vec<f64>,
    pub b1: Vec<f64>,
    pub w2: Vec<f64>,
    pub b2: Vec<f64>,
}

fn gelu(z: f64) -> (f64, f64) {
    // Exact erf form and its derivative Φ(z) + z·φ(z).
    let phi = 0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2));
    let dens = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (z * phi, phi + z * dens)
}

/// What one forward pass keeps for the backward.
struct Pass {
    pre: Vec<f64>,
    hidden: Vec<f64>,
    logits: [f64; CLASSES],
    log_probs: Vec<f64>,
}

impl Classifier {
    /// PyTorch's default initialisation, U(±1/√fan_in), from `stream`.
    fn init(inputs: usize, stream: &mut ChaCha8Rng) -> Self {
        let mut u = |n: usize, fan_in: usize| -> Vec<f64> {
            let a = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|_| a * (2.0 * rng::uniform_f64(stream) - 1.0))
                .collect()
        };
        Classifier {
            inputs,
            w1: u(HIDDEN * inputs, inputs),
            b1: u(HIDDEN, inputs),
            w2: u(CLASSES * HIDDEN, HIDDEN),
            b2: u(CLASSES, HIDDEN),
        }
    }

    fn forward(&self, x: &[f64]) -> Pass {
        let mut pre = vec![0.0; HIDDEN];
        let mut hidden = vec![0.0; HIDDEN];
        for h in 0..HIDDEN {
            let row = &self.w1[h * self.inputs..(h + 1) * self.inputs];
            pre[h] = self.b1[h] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>();
            hidden[h] = gelu(pre[h]).0;
        }
        let mut logits = [0.0; CLASSES];
        for (c, l) in logits.iter_mut().enumerate() {
            let row = &self.w2[c * HIDDEN..(c + 1) * HIDDEN];
            *l = self.b2[c] + row.iter().zip(&hidden).map(|(w, v)| w * v).sum::<f64>();
        }
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        Pass {
            pre,
            hidden,
            log_probs: logits.iter().map(|l| l - lse).collect(),
            logits,
        }
    }

    /// log p(c | x) for the 10 classes.
    pub fn log_probs(&self, x: &[f64]) -> Vec<f64> {
        self.forward(x).log_probs
    }

    /// The class with the highest probability.
    pub fn predict(&self, x: &[f64]) -> usize {
        let lp = self.log_probs(x);
        (0..CLASSES)
            .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
            .expect("ten classes")
    }

    /// ∂/∂logits of `Σ_c g_c·log p(c|x)` pushed back through the network: the gradient with
    /// respect to the input x (`want_input`) and, accumulated into `grads`, the parameters.
    fn backward(
        &self,
        x: &[f64],
        p: &Pass,
        d_log_probs: &[f64],
        grads: Option<&mut Classifier>,
        want_input: bool,
    ) -> Vec<f64> {
        // d logits = g − softmax·Σg.
        let total: f64 = d_log_probs.iter().sum();
        let d_logits: Vec<f64> = (0..CLASSES)
            .map(|c| d_log_probs[c] - p.log_probs[c].exp() * total)
            .collect();
        self.backward_logits(x, p, &d_logits, grads, want_input)
    }

    /// [`Self::backward`] from ∂/∂logits.
    fn backward_logits(
        &self,
        x: &[f64],
        p: &Pass,
        d_logits: &[f64],
        grads: Option<&mut Classifier>,
        want_input: bool,
    ) -> Vec<f64> {
        let mut d_pre = vec![0.0; HIDDEN];
        for (h, dp) in d_pre.iter_mut().enumerate() {
            let dh: f64 = (0..CLASSES)
                .map(|c| self.w2[c * HIDDEN + h] * d_logits[c])
                .sum();
            *dp = dh * gelu(p.pre[h]).1;
        }
        if let Some(g) = grads {
            // Outer products d_logits ⊗ hidden and d_pre ⊗ x, row by row.
            for ((gb, gw), &dl) in
                g.b2.iter_mut()
                    .zip(g.w2.chunks_exact_mut(HIDDEN))
                    .zip(d_logits)
            {
                *gb += dl;
                for (w, &hv) in gw.iter_mut().zip(&p.hidden) {
                    *w += dl * hv;
                }
            }
            for ((gb, gw), &dp) in
                g.b1.iter_mut()
                    .zip(g.w1.chunks_exact_mut(self.inputs))
                    .zip(&d_pre)
            {
                *gb += dp;
                for (w, &xv) in gw.iter_mut().zip(x) {
                    *w += dp * xv;
                }
            }
        }
        if !want_input {
            return Vec::new();
        }
        (0..self.inputs)
            .map(|j| {
                (0..HIDDEN)
                    .map(|h| self.w1[h * self.inputs + j] * d_pre[h])
                    .sum()
            })
            .collect()
    }

    /// ∇ₓ log p(c | x).
    pub fn grad_log_prob(&self, x: &[f64], c: usize) -> Vec<f64> {
        let p = self.forward(x);
        let mut g = vec![0.0; CLASSES];
        g[c] = 1.0;
        self.backward(x, &p, &g, None, true)
    }

    /// The hidden layer's activations, `[H]`: the feature space of the Fréchet distance and
    /// the diversity metric (spec rtb2024 §3.3, in place of Inception features).
    pub fn features(&self, x: &[f64]) -> Vec<f64> {
        self.forward(x).hidden
    }

    /// DPS's measurement loss ‖y − logits(x)‖₂ for the one-hot measurement y = e_c (spec
    /// rtb2024 §3.1: raw logits, not probabilities), and its gradient with respect to x.
    pub fn measurement_loss_grad(&self, x: &[f64], c: usize) -> (f64, Vec<f64>) {
        let p = self.forward(x);
        let resid: Vec<f64> = (0..CLASSES)
            .map(|k| p.logits[k] - if k == c { 1.0 } else { 0.0 })
            .collect();
        let norm = resid.iter().map(|r| r * r).sum::<f64>().sqrt();
        // ∂‖r‖/∂r = r/‖r‖ (0 at the measurement itself, where the norm has no gradient).
        let d_logits: Vec<f64> = resid
            .iter()
            .map(|r| if norm > 0.0 { r / norm } else { 0.0 })
            .collect();
        (norm, self.backward_logits(x, &p, &d_logits, None, true))
    }

    /// Train on `train` (indices into `data`): Adam 1e-3, batch 128, mean cross-entropy.
    pub fn train(data: &DigitImages, train: &[usize], epochs: usize, seed: u64) -> Self {
        let mut net = Classifier::init(
            data.pixels,
            &mut rng::stream(seed, "digits-classifier-init", 0),
        );
        let zeros = |c: &Classifier| Classifier {
            inputs: c.inputs,
            w1: vec![0.0; c.w1.len()],
            b1: vec![0.0; c.b1.len()],
            w2: vec![0.0; c.w2.len()],
            b2: vec![0.0; c.b2.len()],
        };
        let (mut m, mut v) = (zeros(&net), zeros(&net));
        let (lr, b1, b2, eps): (f64, f64, f64, f64) = (1e-3, 0.9, 0.999, 1e-8);
        let mut step = 0i32;
        for epoch in 0..epochs {
            let mut order = train.to_vec();
            let mut s = rng::stream(seed, "digits-classifier-batches", epoch as u64);
            for i in (1..order.len()).rev() {
                order.swap(i, rng::below(&mut s, (i + 1) as u32) as usize);
            }
            for batch in order.chunks(128) {
                let mut g = zeros(&net);
                for &k in batch {
                    let x: Vec<f64> = data.image(k).iter().map(|&v| v as f64).collect();
                    let p = net.forward(&x);
                    let mut d = vec![0.0; CLASSES];
                    d[data.labels[k] as usize] = -1.0 / batch.len() as f64;
                    net.backward(&x, &p, &d, Some(&mut g), false);
                }
                step += 1;
                let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
                let adam = |w: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]| {
                    for k in 0..w.len() {
                        m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                        v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                        w[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
                    }
                };
                adam(&mut net.w1, &g.w1, &mut m.w1, &mut v.w1);
                adam(&mut net.b1, &g.b1, &mut m.b1, &mut v.b1);
                adam(&mut net.w2, &g.w2, &mut m.w2, &mut v.w2);
                adam(&mut net.b2, &g.b2, &mut m.b2, &mut v.b2);
            }
        }
        net
    }
}

/// The fixed 80/20 split of `n` images (1 797 UCI digits, 60 000 MNIST): (train, held-out)
/// indices.
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = rng::stream(CLASSIFIER_SEED, "digits-split", 0);
    for i in (1..n).rev() {
        order.swap(i, rng::below(&mut s, (i + 1) as u32) as usize);
    }
    let cut = n * 4 / 5;
    let held = order.split_off(cut);
    (order, held)
}

/// r(x) = max over `classes` of p(c | x) under the frozen classifier; samples are the dataset's
/// images of those classes (its empirical distribution, for ε-MSE pretraining and metrics).
pub struct DigitsClass {
    pub data: DigitImages,
    pub classifier: Classifier,
    pub classes: Vec<u8>,
    /// Indices of the images whose label is allowed.
    allowed: Vec<usize>,
}

impl DigitsClass {
    /// Load `images` from `dir`, train the classifier on the fixed split.
    pub fn load(
        dir: &std::path::Path,
        classes: Vec<u8>,
        images: DigitImagesConfig,
    ) -> Result<Self, DataError> {
        let (data, epochs) = match images {
            DigitImagesConfig::Uci8x8 => (DigitImages::load(dir)?, EPOCHS),
            DigitImagesConfig::Mnist(pool) => (DigitImages::load_mnist(dir, pool)?, MNIST_EPOCHS),
        };
        let (train, _) = split(data.len());
        let classifier = Classifier::train(&data, &train, epochs, CLASSIFIER_SEED);
        Ok(Self::new(data, classifier, classes))
    }

    pub fn new(data: DigitImages, classifier: Classifier, classes: Vec<u8>) -> Self {
        let allowed = (0..data.len())
            .filter(|&i| classes.contains(&data.labels[i]))
            .collect();
        DigitsClass {
            data,
            classifier,
            classes,
            allowed,
        }
    }

    /// The allowed class with the highest log p(c | x), and that log-probability.
    fn best(&self, x: &[f64]) -> (usize, f64) {
        let lp = self.classifier.log_probs(x);
        self.classes
            .iter()
            .map(|&c| (c as usize, lp[c as usize]))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one class")
    }
}

impl Energy for DigitsClass {
    fn name(&self) -> String {
        format!("digits{:?}", self.classes)
    }

    fn dim(&self) -> usize {
        self.data.pixels
    }

    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        self.best(&x).1
    }

    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (c, _) = self.best(&x);
        for (g, v) in grad.iter_mut().zip(self.classifier.grad_log_prob(&x, c)) {
            *g = v as f32;
        }
    }

    fn log_reward_grad_f64(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let (c, lp) = self.best(x);
        grad.copy_from_slice(&self.classifier.grad_log_prob(x, c));
        lp
    }

    fn classify(&self, x: &[f32]) -> Option<usize> {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        Some(self.classifier.predict(&x))
    }

    /// The smallest measurement loss over the allowed classes (one class: DPS as in the paper;
    /// several: the min, the measurement analogue of r = max over classes).
    fn measurement_loss_grad(&self, x: &[f64]) -> Option<(f64, Vec<f64>)> {
        self.classes
            .iter()
            .map(|&c| self.classifier.measurement_loss_grad(x, c as usize))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn features(&self, x: &[f32]) -> Option<Vec<f64>> {
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        Some(self.classifier.features(&x))
    }

    fn reference_set(&self) -> Option<Vec<f32>> {
        Some(
            self.allowed
                .iter()
                .flat_map(|&i| self.data.image(i).iter().copied())
                .collect(),
        )
    }

    /// Dataset images of the allowed classes, drawn uniformly with replacement.
    fn sample(&self, n: usize, stream: &mut ChaCha8Rng) -> Option<Vec<f32>> {
        let k = self.allowed.len() as u32;
        let mut out = Vec::with_capacity(n * self.data.pixels);
        for _ in 0..n {
            let i = self.allowed[rng::below(stream, k) as usize];
            out.extend_from_slice(self.data.image(i));
        }
        Some(out)
    }
}

/// What the digits posteriors report (spec rtb2024 §3.3): E[log r], the fraction classified
/// into an allowed class, the class histogram, and, in the frozen classifier's hidden-layer
/// features (in place of Inception's), the Fréchet distance to the real images of the allowed
/// classes and the mean pairwise cosine distance (diversity) of the samples and of those images.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassStats {
    pub mean_log_r: f64,
    pub accuracy: f64,
    pub class_histogram: Vec<f64>,
    pub frechet: f64,
    pub diversity: f64,
    pub real_diversity: f64,
    /// The Fréchet distance of the prior's own samples that the classifier puts in an allowed
    /// class (the prior's class-conditional samples), when the run has a prior: the yardstick
    /// of the "within 1.5× of the prior" target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_frechet: Option<f64>,
}

/// The samples' features `[n, H]` under `energy`'s classifier.
pub fn features_of(energy: &dyn Energy, x: &[f32]) -> Vec<f64> {
    x.chunks_exact(energy.dim())
        .flat_map(|row| energy.features(row).expect("a classifier-based target"))
        .collect()
}

/// The features `[N, H]` of every real image of the allowed classes.
fn real_features(energy: &dyn Energy) -> Vec<f64> {
    features_of(
        energy,
        &energy.reference_set().expect("a dataset-backed target"),
    )
}

/// The Fréchet distance between two feature sets `[n, H]`.
fn frechet_of_features(a: &[f64], b: &[f64]) -> f64 {
    use crate::metrics::{frechet_distance, FeatureStats};
    frechet_distance(
        &FeatureStats::from_rows(a, HIDDEN),
        &FeatureStats::from_rows(b, HIDDEN),
    )
}

/// The Fréchet distance between samples `x` (`[n, D]`) and the real images of the allowed
/// classes, in the classifier's hidden-layer features.
pub fn frechet_to_real(energy: &dyn Energy, x: &[f32]) -> f64 {
    frechet_of_features(&features_of(energy, x), &real_features(energy))
}

/// [`ClassStats`] of samples `x` (`[n, D]`) under `energy` (a [`DigitsClass`]).
pub fn class_stats(energy: &dyn Energy, x: &[f32], classes: &[u8]) -> ClassStats {
    let d = energy.dim();
    let n = x.len() / d;
    let mut lr = vec![0f64; n];
    energy.log_reward(x, &mut lr);
    let preds: Vec<usize> = x
        .chunks_exact(d)
        .map(|row| energy.classify(row).expect("a classifier-based target"))
        .collect();
    let mut hist = vec![0f64; CLASSES];
    for &p in &preds {
        hist[p] += 1.0 / n as f64;
    }
    // Each feature set once: the Fréchet distance and both diversities share them.
    let (xf, rf) = (features_of(energy, x), real_features(energy));
    ClassStats {
        mean_log_r: lr.iter().sum::<f64>() / n as f64,
        accuracy: preds
            .iter()
            .filter(|&&p| classes.contains(&(p as u8)))
            .count() as f64
            / n as f64,
        class_histogram: hist,
        frechet: frechet_of_features(&xf, &rf),
        diversity: crate::metrics::cosine_diversity(&xf, HIDDEN),
        real_diversity: crate::metrics::cosine_diversity(
            &rf[..rf.len().min(DIVERSITY_ROWS * HIDDEN)],
            HIDDEN,
        ),
        prior_frechet: None,
    }
}

//! The frozen MNIST VAE and its latent posterior (spec §1.6): d = 20, conditional on an image
//! x ∈ [0, 1]^784.
//!
//! ```text
//! encoder:  h1 = relu(W1 x + b1)                      784 → 400
//!           μ = W21 h1 + b21,  logvar = W22 h1 + b22  400 → 20 (each)
//! decoder:  h3 = relu(W3 z + b3)                      20 → 400
//!           ℓ = W4 h3 + b4,  p = sigmoid(ℓ)           400 → 784 (Bernoulli means)
//! log R(z; x) = log N(z; 0, I₂₀) + Σ_j [x_j log p̃_j + (1 − x_j) log(1 − p̃_j)],
//!           p̃ = clamp(p, 1e−5, 1 − 1e−5)
//! ∇_z log R = −z + W3ᵀ(1[h3 > 0] ⊙ W4ᵀ g),  g_j = (x_j − p_j)·1[1e−5 ≤ p_j ≤ 1 − 1e−5]
//! ```
//! (g is d/dℓ of the Bernoulli term; the indicator is `torch.clamp`'s gradient mask.)
//!
//! **Precision.** The matrix products run through [`crate::cpu::Kernels`] at the model's scalar
//! type `S`: for `f32` the SIMD GEMM (bitwise equal to the portable path), for `f64` the scalar
//! reference. Everything after the logits — sigmoid, clamp, logs, the 784-term sum and the prior —
//! is computed in f64, the sum in ascending pixel order, whatever `S` is. So
//! [`VaeModel::to_f64`] gives an f64 twin of the very same code that matches
//! `data/vae_mnist_bce/test_vectors.json` (computed in f64 from the f32 weights) to ~1e−12, and
//! the f32 model is checked against it.
//!
//! **Determinism.** Every output element of a product is one fixed FMA chain that reads only its
//! own row, and the per-row f64 sums have a fixed order, so a row's log R and gradient do not
//! depend on the batch it came in, on the internal row chunking ([`ROW_CHUNK`]) or on how a caller
//! shards rows across threads. The methods are single-threaded; callers split the batch.
//!
//! **Cost** (one core, AVX2; `tests/vae.rs` `timing_b300`, ignored, best of 30 on a shared
//! machine): for B = 300, log R ≈ 9 ms, ∇log R ≈ 14 ms, both in one call ≈ 16 ms. The two
//! 400 × 784 products (fc4 forward, and its transpose for the gradient) are ~6 ms each; the f64
//! Bernoulli terms (one `exp` + one `ln_1p` per pixel) ~3 ms.
//!
//! **Files** (`data/README.md` §2): `vae_mnist_bce/{fc1,fc21,fc22,fc3,fc4}.{weight,bias}.npy`
//! (PyTorch `nn.Linear` layout, weight `[out, in]`), `vae_mnist_bce/mnist_evaluation_subset.npy`
//! (the 100 evaluation images) and `mnist/train-images-idx3-ubyte.gz` (the training conditions).
//! The `load` functions check each file against the data folder's `SHA256SUMS` first.

use super::Energy;
use crate::cpu::{logsumexp_ref, Kernels};
use crate::data::{self, checksum, idx, npy, DataError};
use crate::real::Real;
use crate::rng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Pixels per image (28 × 28), the condition's dimension.
pub const PIXELS: usize = 784;
/// Hidden width of the encoder and the decoder.
pub const HIDDEN: usize = 400;
/// Latent dimension d.
pub const LATENT: usize = 20;
/// The Bernoulli means are clamped to [ε, 1 − ε] before the logs.
pub const CLAMP_EPS: f64 = 1e-5;
/// The weights' folder inside the data folder.
pub const WEIGHTS_DIR: &str = "vae_mnist_bce";
/// The evaluation images inside the data folder: the first 100 MNIST test images / 255.
pub const EVAL_IMAGES_FILE: &str = "vae_mnist_bce/mnist_evaluation_subset.npy";
/// How many evaluation images [`load_eval_images`] returns.
pub const EVAL_IMAGES: usize = 100;
/// The MNIST training images inside the data folder.
pub const TRAIN_IMAGES_FILE: &str = "mnist/train-images-idx3-ubyte.gz";
/// How many MNIST training images there are.
pub const TRAIN_IMAGES: usize = 60_000;
/// Rows per internal block of the batched methods: bounds the scratch (ℓ is ROW_CHUNK × 784) and
/// keeps it in cache. Results do not depend on it (see the module docs).
pub const ROW_CHUNK: usize = 128;

/// ½ log 2π.
const HALF_LOG_TAU: f64 = 0.918_938_533_204_672_8;

/// Why the VAE's files could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    /// The file is missing, unreadable, not a valid `.npy`/IDX file, or fails its checksum.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The file decoded, but its array has the wrong shape.
    #[error("vae: {}: shape {got}, expected {expected}", .path.display())]
    Shape {
        path: PathBuf,
        got: String,
        expected: String,
    },
    /// The file holds a NaN or an infinity.
    #[error("vae: {}: entry {index} is {value}, not finite", .path.display())]
    NonFinite {
        path: PathBuf,
        index: usize,
        value: f32,
    },
}

/// One frozen dense layer y = x·Wᵀ + b (PyTorch `nn.Linear`): `weight` is `[out, in]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<S> {
    weight: Vec<S>,
    bias: Vec<S>,
    inputs: usize,
    outputs: usize,
}

impl<S: Real> Linear<S> {
    /// The weight, `[outputs, inputs]` row-major.
    pub fn weight(&self) -> &[S] {
        &self.weight
    }
    /// The bias, `[outputs]`.
    pub fn bias(&self) -> &[S] {
        &self.bias
    }
    pub fn inputs(&self) -> usize {
        self.inputs
    }
    pub fn outputs(&self) -> usize {
        self.outputs
    }
    fn to_f64(&self) -> Linear<f64> {
        Linear {
            weight: self.weight.iter().map(|v| v.to_f64()).collect(),
            bias: self.bias.iter().map(|v| v.to_f64()).collect(),
            inputs: self.inputs,
            outputs: self.outputs,
        }
    }
}

impl<S: Kernels> Linear<S> {
    /// y[B, out] = x[B, in]·Wᵀ + b.
    fn forward(&self, x: &[S], y: &mut [S], rows: usize) {
        S::linear_forward(
            x,
            &self.weight,
            &self.bias,
            y,
            rows,
            self.inputs,
            self.outputs,
        );
    }
    /// dx[B, in] = dy[B, out]·W (overwrites dx).
    fn backward_dx(&self, dy: &[S], dx: &mut [S], rows: usize) {
        S::linear_backward_dx(dy, &self.weight, dx, rows, self.inputs, self.outputs);
    }
}

/// The frozen VAE: encoder fc1 → (fc21, fc22), decoder fc3 → fc4. `S = f32` is the model the
/// experiments run; [`VaeModel::to_f64`] makes the f64 reference twin.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeModel<S = f32> {
    fc1: Linear<S>,
    fc21: Linear<S>,
    fc22: Linear<S>,
    fc3: Linear<S>,
    fc4: Linear<S>,
}

/// The layers as (name, inputs, outputs), in the order of the files and of [`VaeModel::layers`].
const LAYERS: [(&str, usize, usize); 5] = [
    ("fc1", PIXELS, HIDDEN),
    ("fc21", HIDDEN, LATENT),
    ("fc22", HIDDEN, LATENT),
    ("fc3", LATENT, HIDDEN),
    ("fc4", HIDDEN, PIXELS),
];

/// Load `path` as an `.npy` array of exactly `shape`, all finite.
fn load_array(path: &Path, shape: &[usize]) -> Result<Vec<f32>, VaeError> {
    let arr = npy::load(path)?;
    if arr.shape != shape {
        return Err(VaeError::Shape {
            path: path.to_path_buf(),
            got: data::shape_str(&arr.shape),
            expected: data::shape_str(shape),
        });
    }
    if let Some((index, &value)) = arr.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(VaeError::NonFinite {
            path: path.to_path_buf(),
            index,
            value,
        });
    }
    Ok(arr.data)
}

impl VaeModel<f32> {
    /// Load the weights from `data_dir/vae_mnist_bce/` after checking each file against
    /// `data_dir/SHA256SUMS` (`data_dir` is the project's data folder, [`data::project_dir`]).
    pub fn load(data_dir: &Path) -> Result<Self, VaeError> {
        for (name, _, _) in LAYERS {
            for part in ["weight", "bias"] {
                checksum::verify(data_dir, &format!("{WEIGHTS_DIR}/{name}.{part}.npy"))?;
            }
        }
        Self::load_unverified(&data_dir.join(WEIGHTS_DIR))
    }

    /// Load `{fc1,fc21,fc22,fc3,fc4}.{weight,bias}.npy` from `weights_dir` with no checksum,
    /// checking every shape (`[out, in]` and `[out]`) and that every value is finite.
    pub fn load_unverified(weights_dir: &Path) -> Result<Self, VaeError> {
        let layer = |i: usize| -> Result<Linear<f32>, VaeError> {
            let (name, inputs, outputs) = LAYERS[i];
            let weight = load_array(
                &weights_dir.join(format!("{name}.weight.npy")),
                &[outputs, inputs],
            )?;
            let bias = load_array(&weights_dir.join(format!("{name}.bias.npy")), &[outputs])?;
            Ok(Linear {
                weight,
                bias,
                inputs,
                outputs,
            })
        };
        Ok(VaeModel {
            fc1: layer(0)?,
            fc21: layer(1)?,
            fc22: layer(2)?,
            fc3: layer(3)?,
            fc4: layer(4)?,
        })
    }

    /// The same weights widened to f64 (exactly): the reference twin for tests.
    pub fn to_f64(&self) -> VaeModel<f64> {
        VaeModel {
            fc1: self.fc1.to_f64(),
            fc21: self.fc21.to_f64(),
            fc22: self.fc22.to_f64(),
            fc3: self.fc3.to_f64(),
            fc4: self.fc4.to_f64(),
        }
    }
}

impl<S: Kernels> VaeModel<S> {
    /// The five layers by name, `fc1, fc21, fc22, fc3, fc4` (e.g. for uploading to a GPU).
    pub fn layers(&self) -> [(&'static str, &Linear<S>); 5] {
        [
            ("fc1", &self.fc1),
            ("fc21", &self.fc21),
            ("fc22", &self.fc22),
            ("fc3", &self.fc3),
            ("fc4", &self.fc4),
        ]
    }

    /// The encoder: `x` `[B, 784]` → `mu`, `logvar` `[B, 20]` each (B = `x.len() / 784`).
    pub fn encode(&self, x: &[S], mu: &mut [S], logvar: &mut [S]) {
        let rows = x.len() / PIXELS;
        assert_eq!(
            x.len(),
            rows * PIXELS,
            "encode: x.len() is not a multiple of 784"
        );
        assert_eq!(mu.len(), rows * LATENT, "encode: mu.len() != B·20");
        assert_eq!(logvar.len(), rows * LATENT, "encode: logvar.len() != B·20");
        let mut h = vec![S::ZERO; ROW_CHUNK.min(rows) * HIDDEN];
        for r0 in (0..rows).step_by(ROW_CHUNK) {
            let c = ROW_CHUNK.min(rows - r0);
            let h = &mut h[..c * HIDDEN];
            self.fc1.forward(&x[r0 * PIXELS..(r0 + c) * PIXELS], h, c);
            relu(h);
            let out = r0 * LATENT..(r0 + c) * LATENT;
            self.fc21.forward(h, &mut mu[out.clone()], c);
            self.fc22.forward(h, &mut logvar[out], c);
        }
    }

    /// The decoder's logits ℓ = fc4(relu(fc3(z))): `z` `[B, 20]` → `logits` `[B, 784]`.
    pub fn decode_logits(&self, z: &[S], logits: &mut [S]) {
        let rows = z.len() / LATENT;
        assert_eq!(
            z.len(),
            rows * LATENT,
            "decode: z.len() is not a multiple of 20"
        );
        assert_eq!(logits.len(), rows * PIXELS, "decode: logits.len() != B·784");
        let mut h = vec![S::ZERO; ROW_CHUNK.min(rows) * HIDDEN];
        for r0 in (0..rows).step_by(ROW_CHUNK) {
            let c = ROW_CHUNK.min(rows - r0);
            let h = &mut h[..c * HIDDEN];
            self.decoder_hidden(&z[r0 * LATENT..(r0 + c) * LATENT], h, c);
            self.fc4
                .forward(h, &mut logits[r0 * PIXELS..(r0 + c) * PIXELS], c);
        }
    }

    /// The decoder's Bernoulli means p = sigmoid(ℓ) (unclamped; the sigmoid is taken in f64):
    /// `z` `[B, 20]` → `p` `[B, 784]`.
    pub fn decode(&self, z: &[S], p: &mut [S]) {
        self.decode_logits(z, p);
        for v in p.iter_mut() {
            *v = S::from_f64(sigmoid(v.to_f64()));
        }
    }

    /// h3 = relu(fc3(z)) for `rows` rows.
    fn decoder_hidden(&self, z: &[S], h: &mut [S], rows: usize) {
        self.fc3.forward(z, h, rows);
        relu(h);
    }
}

fn relu<S: Real>(h: &mut [S]) {
    for v in h {
        // `v > 0 ? v : 0` (NaN → 0 like max(·, 0) on x86; the weights are checked finite).
        *v = if *v > S::ZERO { *v } else { S::ZERO };
    }
}

#[inline]
fn sigmoid(l: f64) -> f64 {
    1.0 / (1.0 + (-l).exp())
}

/// The clamped Bernoulli log-likelihood of one pixel and its derivative in the logit, in f64.
///
/// With p = sigmoid(ℓ), log p = ℓ − softplus(ℓ) and log(1 − p) = −softplus(ℓ), so the term is
/// x log p + (1 − x) log(1 − p) = x ℓ − softplus(ℓ), softplus(ℓ) = max(ℓ, 0) + log1p(e^{−|ℓ|}):
/// one `exp` and one `ln_1p` per pixel, no division, no cancellation in 1 − p, the same formula
/// for every x. The clamp p̃ = clamp(p, ε, 1 − ε) is applied in logit space: p < ε ⇔
/// ℓ < logit(ε), p > 1 − ε ⇔ ℓ > logit(1 − ε) = −logit(ε); there the term is the constant
/// x log ε + (1 − x) log(1 − ε) (or mirrored) and the derivative is 0, as `torch.clamp`'s
/// gradient mask gives. (The f64 reference that computes p first and then clamps agrees to
/// ~1e−15 per pixel; the two can only disagree about *which side* of the clamp a logit lies on
/// within an ulp of the boundary, where the value is continuous.)
#[derive(Clone, Copy, Debug)]
struct Bernoulli {
    logit_lo: f64,
    logit_hi: f64,
    ln_eps: f64,
    ln_1m_eps: f64,
}

impl Bernoulli {
    fn new() -> Self {
        let ln_eps = CLAMP_EPS.ln();
        let ln_1m_eps = (-CLAMP_EPS).ln_1p();
        Bernoulli {
            logit_lo: ln_eps - ln_1m_eps,
            logit_hi: ln_1m_eps - ln_eps,
            ln_eps,
            ln_1m_eps,
        }
    }

    /// (term, d term / dℓ); each half is computed only when its flag is set (0 otherwise), and
    /// each is the same expression whichever else is computed, so a combined call is bitwise the
    /// two separate ones.
    #[inline(always)]
    fn eval<const TERM: bool, const GRAD: bool>(&self, l: f64, x: f64) -> (f64, f64) {
        if l < self.logit_lo {
            return (x * self.ln_eps + (1.0 - x) * self.ln_1m_eps, 0.0);
        }
        if l > self.logit_hi {
            return (x * self.ln_1m_eps + (1.0 - x) * self.ln_eps, 0.0);
        }
        let e = (-l.abs()).exp();
        let term = if TERM {
            x * l - (l.max(0.0) + e.ln_1p())
        } else {
            0.0
        };
        let g = if GRAD {
            // p = 1/(1 + e^{−ℓ}), written with e = e^{−|ℓ|} ≤ 1 on both sides of 0.
            let p = if l >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            x - p
        } else {
            0.0
        };
        (term, g)
    }
}

/// Σ_j Bernoulli terms of one row (pixels ascending, f64) and, when `GRAD`, d/dℓ written over
/// the row's logits.
#[inline]
fn bernoulli_row<S: Real, const TERM: bool, const GRAD: bool>(
    bern: &Bernoulli,
    logits: &mut [S],
    x: &[S],
) -> f64 {
    let mut ll = 0.0f64;
    for (l, &xv) in logits.iter_mut().zip(x) {
        let (term, g) = bern.eval::<TERM, GRAD>(l.to_f64(), xv.to_f64());
        if TERM {
            ll += term;
        }
        if GRAD {
            *l = S::from_f64(g);
        }
    }
    ll
}

/// log N(z; 0, I_d) in f64, Σ z² in ascending order.
#[inline]
fn log_std_normal<S: Real>(z: &[S]) -> f64 {
    let sq: f64 = z.iter().map(|v| v.to_f64() * v.to_f64()).sum();
    -(z.len() as f64) * HALF_LOG_TAU - 0.5 * sq
}

/// The latent posterior's unnormalised log density log R(z; x) = log p(z) + log p(x | z), batched
/// and conditional: row b of `z` `[B, 20]` goes with row b of `x` `[B, 784]`, or with the single
/// image when `x` is `[784]` (broadcast). Cheap to clone (the model is shared).
#[derive(Clone, Debug)]
pub struct VaeEnergy<S = f32> {
    model: Arc<VaeModel<S>>,
}

impl VaeEnergy<f32> {
    /// [`VaeModel::load`] (checksummed) wrapped as an energy.
    pub fn load(data_dir: &Path) -> Result<Self, VaeError> {
        Ok(Self::new(VaeModel::load(data_dir)?))
    }

    /// The f64 reference twin (same weights, widened).
    pub fn to_f64(&self) -> VaeEnergy<f64> {
        VaeEnergy::new(self.model.to_f64())
    }
}

/// The pieces of log R for a batch, each `[B]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRewardParts {
    /// log N(z; 0, I₂₀).
    pub log_prior: Vec<f64>,
    /// Σ_j [x_j log p̃_j + (1 − x_j) log(1 − p̃_j)].
    pub log_likelihood: Vec<f64>,
}

impl<S: Kernels> VaeEnergy<S> {
    pub fn new(model: VaeModel<S>) -> Self {
        VaeEnergy {
            model: Arc::new(model),
        }
    }

    pub fn from_shared(model: Arc<VaeModel<S>>) -> Self {
        VaeEnergy { model }
    }

    pub fn model(&self) -> &VaeModel<S> {
        &self.model
    }

    pub fn shared_model(&self) -> &Arc<VaeModel<S>> {
        &self.model
    }

    /// d = 20.
    pub fn dim(&self) -> usize {
        LATENT
    }

    /// log R(z_b; x_b) for each row into `out` `[B]`.
    pub fn log_reward(&self, z: &[S], x: &[S], out: &mut [f64]) {
        let rows = check_batch(z, x);
        assert_eq!(out.len(), rows, "log_reward: out.len() != B");
        self.run(z, x, rows, Out::LogReward(out));
    }

    /// ∇_z log R(z_b; x_b) for each row into `grad` `[B, 20]`.
    pub fn grad_log_reward(&self, z: &[S], x: &[S], grad: &mut [S]) {
        let rows = check_batch(z, x);
        assert_eq!(
            grad.len(),
            z.len(),
            "grad_log_reward: grad.len() != z.len()"
        );
        self.run(z, x, rows, Out::Grad(grad));
    }

    /// Both at once (one decoder pass): the values are bitwise those of the two separate calls.
    pub fn log_reward_and_grad(&self, z: &[S], x: &[S], out: &mut [f64], grad: &mut [S]) {
        let rows = check_batch(z, x);
        assert_eq!(out.len(), rows, "log_reward_and_grad: out.len() != B");
        assert_eq!(
            grad.len(),
            z.len(),
            "log_reward_and_grad: grad.len() != z.len()"
        );
        self.run(z, x, rows, Out::Both(out, grad));
    }

    /// log p(z) and log p(x | z) separately; `log_prior[b] + log_likelihood[b]` is bitwise
    /// [`Self::log_reward`]'s value (it is computed as exactly that sum).
    pub fn log_reward_parts(&self, z: &[S], x: &[S]) -> LogRewardParts {
        let rows = check_batch(z, x);
        let mut parts = LogRewardParts {
            log_prior: z.chunks_exact(LATENT).map(log_std_normal).collect(),
            log_likelihood: vec![0.0; rows],
        };
        self.run(z, x, rows, Out::LogLik(&mut parts.log_likelihood));
        parts
    }

    /// The decoder pass over blocks of [`ROW_CHUNK`] rows.
    fn run(&self, z: &[S], x: &[S], rows: usize, mut out: Out<'_, S>) {
        let m = &*self.model;
        let c_max = ROW_CHUNK.min(rows);
        let mut h = vec![S::ZERO; c_max * HIDDEN];
        let mut logits = vec![S::ZERO; c_max * PIXELS];
        let mut dh = vec![S::ZERO; if out.wants_grad() { c_max * HIDDEN } else { 0 }];
        let broadcast = x.len() == PIXELS;
        let bern = Bernoulli::new();
        for r0 in (0..rows).step_by(ROW_CHUNK) {
            let c = ROW_CHUNK.min(rows - r0);
            let zc = &z[r0 * LATENT..(r0 + c) * LATENT];
            let h = &mut h[..c * HIDDEN];
            let logits = &mut logits[..c * PIXELS];
            m.decoder_hidden(zc, h, c);
            m.fc4.forward(h, logits, c);

            // Per row: the f64 log-likelihood sum; the logits are overwritten by
            // g = d log p(x|z) / dℓ when the gradient is wanted.
            for r in 0..c {
                let xr = if broadcast {
                    x
                } else {
                    &x[(r0 + r) * PIXELS..(r0 + r + 1) * PIXELS]
                };
                let lr = &mut logits[r * PIXELS..(r + 1) * PIXELS];
                let zr = &zc[r * LATENT..(r + 1) * LATENT];
                match &mut out {
                    Out::LogReward(o) => {
                        let ll = bernoulli_row::<S, true, false>(&bern, lr, xr);
                        o[r0 + r] = log_std_normal(zr) + ll;
                    }
                    Out::LogLik(o) => o[r0 + r] = bernoulli_row::<S, true, false>(&bern, lr, xr),
                    Out::Grad(_) => {
                        bernoulli_row::<S, false, true>(&bern, lr, xr);
                    }
                    Out::Both(o, _) => {
                        let ll = bernoulli_row::<S, true, true>(&bern, lr, xr);
                        o[r0 + r] = log_std_normal(zr) + ll;
                    }
                }
            }

            if let Out::Grad(grad) | Out::Both(_, grad) = &mut out {
                let dh = &mut dh[..c * HIDDEN];
                m.fc4.backward_dx(logits, dh, c);
                for (d, &hv) in dh.iter_mut().zip(h.iter()) {
                    // relu'(pre) = 1[pre > 0] = 1[h3 > 0]; h3 is relu's output, never NaN.
                    if hv <= S::ZERO {
                        *d = S::ZERO;
                    }
                }
                let gc = &mut grad[r0 * LATENT..(r0 + c) * LATENT];
                m.fc3.backward_dx(dh, gc, c);
                for (g, &zv) in gc.iter_mut().zip(zc) {
                    *g -= zv;
                }
            }
        }
    }

    /// `k` importance log-weights log R(z_i; x) − log q(z_i | x) for one image `x` `[784]`, with
    /// the encoder's Gaussian q = N(μ(x), diag exp(logvar(x))) as the proposal:
    /// z_i = μ + exp(logvar/2)·ε_i, ε_i the next standard normals of `rng`
    /// ([`rng::fill_normals`], 20 per sample, in sample order). log q is evaluated in f64 at the
    /// z actually used (after its rounding to `S`).
    pub fn encoder_log_weights(&self, x: &[S], k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        assert_eq!(
            x.len(),
            PIXELS,
            "encoder_log_weights: x must be one image [784]"
        );
        let (mut mu, mut logvar) = (vec![S::ZERO; LATENT], vec![S::ZERO; LATENT]);
        self.model.encode(x, &mut mu, &mut logvar);
        let sigma: Vec<f64> = logvar.iter().map(|v| (0.5 * v.to_f64()).exp()).collect();
        let mut weights = vec![0.0f64; k];
        // LATENT is even, so every block draws whole Box–Muller pairs and the normals are the
        // same sequence as one fill of all k·20.
        let mut eps = vec![0f32; ROW_CHUNK.min(k) * LATENT];
        let mut z = vec![S::ZERO; ROW_CHUNK.min(k) * LATENT];
        for i0 in (0..k).step_by(ROW_CHUNK) {
            let c = ROW_CHUNK.min(k - i0);
            let (eps, z) = (&mut eps[..c * LATENT], &mut z[..c * LATENT]);
            rng::fill_normals(rng, eps);
            let w = &mut weights[i0..i0 + c];
            for (r, wr) in w.iter_mut().enumerate() {
                let mut log_q = 0.0f64;
                for i in 0..LATENT {
                    let m = mu[i].to_f64();
                    let zi = S::from_f64(sigma[i].mul_add(eps[r * LATENT + i] as f64, m));
                    z[r * LATENT + i] = zi;
                    let u = (zi.to_f64() - m) / sigma[i];
                    log_q += -HALF_LOG_TAU - 0.5 * logvar[i].to_f64() - 0.5 * u * u;
                }
                *wr = -log_q;
            }
            let mut log_r = vec![0.0f64; c];
            self.log_reward(z, x, &mut log_r);
            for (wr, lr) in w.iter_mut().zip(log_r) {
                *wr += lr;
            }
        }
        weights
    }

    /// The importance-sampling (IWAE) estimate of log p(x) = log Z(x) for one image `x` `[784]`:
    /// log (1/k) Σ_i exp(w_i) over [`Self::encoder_log_weights`]. A lower bound in expectation,
    /// tightening as k grows (spec §1.6: mean over the 100 evaluation images ≈ −94.23 at k = 5000).
    pub fn log_px_is(&self, x: &[S], k: usize, rng: &mut ChaCha8Rng) -> f64 {
        assert!(k > 0, "log_px_is: k must be positive");
        let w = self.encoder_log_weights(x, k, rng);
        logsumexp_ref(&w) - (k as f64).ln()
    }
}

/// Where [`VaeEnergy::run`] writes.
enum Out<'a, S> {
    LogReward(&'a mut [f64]),
    LogLik(&'a mut [f64]),
    Grad(&'a mut [S]),
    Both(&'a mut [f64], &'a mut [S]),
}

impl<S> Out<'_, S> {
    fn wants_grad(&self) -> bool {
        matches!(self, Out::Grad(_) | Out::Both(..))
    }
}

/// B from `z` `[B, 20]`, checking `x` is `[B, 784]` or `[784]`.
fn check_batch<S>(z: &[S], x: &[S]) -> usize {
    let rows = z.len() / LATENT;
    assert_eq!(
        z.len(),
        rows * LATENT,
        "vae: z.len() is not a multiple of 20"
    );
    assert!(
        x.len() == rows * PIXELS || x.len() == PIXELS,
        "vae: x.len() = {} is neither B·784 = {} nor 784",
        x.len(),
        rows * PIXELS
    );
    rows
}

/// The energy conditioned on one fixed image, as an unconditional [`Energy`] on ℝ²⁰ (for MALA,
/// gradient checks, per-image samplers).
#[derive(Clone, Debug)]
pub struct VaeFixedImage {
    pub energy: VaeEnergy,
    /// The condition x, `[784]` in [0, 1].
    pub image: Vec<f32>,
}

impl VaeFixedImage {
    /// Panics unless `image` has 784 entries.
    pub fn new(energy: VaeEnergy, image: Vec<f32>) -> Self {
        assert_eq!(
            image.len(),
            PIXELS,
            "VaeFixedImage: image must have 784 pixels"
        );
        VaeFixedImage { energy, image }
    }
}

impl Energy for VaeFixedImage {
    fn name(&self) -> String {
        "vae-fixed-image".to_string()
    }
    fn dim(&self) -> usize {
        LATENT
    }
    fn log_reward_row(&self, x: &[f32]) -> f64 {
        let mut out = [0.0];
        self.energy.log_reward(x, &self.image, &mut out);
        out[0]
    }
    fn grad_log_reward_row(&self, x: &[f32], grad: &mut [f32]) {
        self.energy.grad_log_reward(x, &self.image, grad);
    }
    fn log_reward(&self, x: &[f32], out: &mut [f64]) {
        self.energy.log_reward(x, &self.image, out);
    }
    fn grad_log_reward(&self, x: &[f32], grad: &mut [f32]) {
        self.energy.grad_log_reward(x, &self.image, grad);
    }
}

/// The 100 evaluation images `[100, 784]` (`mnist_evaluation_subset.npy`, checked against
/// `data_dir/SHA256SUMS`): the first 100 MNIST test images as f32(u8) / 255.
pub fn load_eval_images(data_dir: &Path) -> Result<Vec<f32>, VaeError> {
    checksum::verify(data_dir, EVAL_IMAGES_FILE)?;
    load_array(&data_dir.join(EVAL_IMAGES_FILE), &[EVAL_IMAGES, 1, 28, 28])
}

/// The 60 000 MNIST training images as `[60000, 784]` f32 = u8 / 255 (continuous, not
/// binarised), the conditions the VAE sampler trains on.
#[derive(Clone, Debug, PartialEq)]
pub struct MnistTrain {
    pixels: Vec<f32>,
}

impl MnistTrain {
    /// Read `data_dir/mnist/train-images-idx3-ubyte.gz` after checking it against
    /// `data_dir/SHA256SUMS`.
    pub fn load(data_dir: &Path) -> Result<Self, VaeError> {
        checksum::verify(data_dir, TRAIN_IMAGES_FILE)?;
        let path = data_dir.join(TRAIN_IMAGES_FILE);
        let images = idx::load_images(&path)?;
        let shape = [images.n, images.rows, images.cols];
        if shape != [TRAIN_IMAGES, 28, 28] {
            return Err(VaeError::Shape {
                path,
                got: data::shape_str(&shape),
                expected: data::shape_str(&[TRAIN_IMAGES, 28, 28]),
            });
        }
        Ok(MnistTrain {
            pixels: images.to_f32(),
        })
    }

    /// Number of images (60 000).
    pub fn len(&self) -> usize {
        self.pixels.len() / PIXELS
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// All images, `[60000, 784]` row-major.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// Image `i`, `[784]`. Panics past the end.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Copy the images `indices` into `out` `[indices.len(), 784]`, in that order.
    pub fn gather(&self, indices: &[usize], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            indices.len() * PIXELS,
            "gather: out.len() != n·784"
        );
        for (&i, o) in indices.iter().zip(out.chunks_exact_mut(PIXELS)) {
            o.copy_from_slice(self.image(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written the direct way: p = sigmoid(ℓ), clamp, logs; d/dℓ = (x − p)
    /// inside the clamp, 0 outside.
    fn direct(l: f64, x: f64) -> (f64, f64) {
        let p = 1.0 / (1.0 + (-l).exp());
        let pc = p.clamp(CLAMP_EPS, 1.0 - CLAMP_EPS);
        let term = x * pc.ln() + (1.0 - x) * (1.0 - pc).ln();
        let g = if p == pc { x - p } else { 0.0 };
        (term, g)
    }

    #[test]
    fn bernoulli_softplus_form_matches_direct_definition() {
        let b = Bernoulli::new();
        assert!((b.logit_lo - (1e-5f64 / (1.0 - 1e-5)).ln()).abs() < 1e-14);
        assert_eq!(b.logit_hi, -b.logit_lo);
        let mut logits: Vec<f64> = (-400..=400).map(|i| i as f64 * 0.05).collect();
        for edge in [b.logit_lo, b.logit_hi] {
            logits.extend([edge - 1e-9, edge + 1e-9, edge - 1e-3, edge + 1e-3]);
        }
        for &l in &logits {
            for x in [0.0, 1.0 / 255.0, 0.3, 0.5, 254.0 / 255.0, 1.0] {
                let (t, g) = b.eval::<true, true>(l, x);
                let (t_only, _) = b.eval::<true, false>(l, x);
                let (_, g_only) = b.eval::<false, true>(l, x);
                assert_eq!(
                    (t.to_bits(), g.to_bits()),
                    (t_only.to_bits(), g_only.to_bits())
                );
                let (tw, gw) = direct(l, x);
                // The direct form loses ~ulp/(1 − p) in 1 − p (and ~ulp/p in p): up to ~2e-11
                // near the clamp; the softplus form has no such cancellation.
                let cancel = f64::EPSILON * (1.0 + l.abs().exp());
                assert!(
                    (t - tw).abs() <= 4.0 * cancel + 1e-14 * tw.abs(),
                    "term at l = {l}, x = {x}: {t} vs {tw}"
                );
                assert!(
                    (g - gw).abs() <= 1e-15,
                    "d/dl at l = {l}, x = {x}: {g} vs {gw}"
                );
            }
        }
    }
}

//! LoRA adapters for a fine-tuned posterior (spec rtb2024 §3.3, option (ii)): every weight
//! matrix W [O, I] of the policy is frozen at its prior value W₀ and trained only through a
//! rank-R update,
//!   W = W₀ + s·B·A,   B [O, R] zero-initialised, A [R, I],   s = α/R,
//! so the posterior starts exactly at its prior. Biases and time phases stay frozen; the `Flow`
//! group (log Z and any flow head) trains in full.
//!
//! The adapters live outside the network: the trainer keeps the trainable vector θ (every A and
//! B, then the flow blocks, laid out by [`Lora::layout`]), materialises the network's flat
//! parameters from (W₀, θ) before each iteration, and pulls the network's flat gradient back to
//! θ by the chain rule,
//!   ∂L/∂B = s·G·Aᵀ,   ∂L/∂A = s·Bᵀ·G   (G = ∂L/∂W [O, I]).
//! Every loss, sampler and gradient path therefore works unchanged with adapters. These are
//! host-side products of P-sized blocks once per iteration, not kernels: they accumulate in f64
//! in a fixed order (over R for W, over I or O for the gradients), which makes them
//! deterministic and cheap next to a rollout.

use super::drift_net::DriftNet;
use super::layout::{Group, ParamLayout};
use crate::rng;

/// One adapted weight matrix: where W sits in the network's vector and A, B in θ.
#[derive(Clone, Debug, PartialEq)]
struct Adapted {
    /// W's offset in the network's flat vector, and its shape [O, I].
    w_offset: usize,
    rows: usize,
    cols: usize,
    /// Offsets of A [R, I] and B [O, R] in θ.
    a_offset: usize,
    b_offset: usize,
}

/// The adapters of one network: which blocks they adapt, and θ's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    pub rank: usize,
    /// s = α/R.
    pub scale: f64,
    /// θ's blocks: `lora.<W>.a`, `lora.<W>.b` (group `Policy`) per adapted matrix in the
    /// network's order, then the network's `Flow` blocks under their own names.
    pub layout: ParamLayout,
    adapted: Vec<Adapted>,
    /// (range in the network's vector, offset in θ) of each `Flow` block.
    flow: Vec<(std::ops::Range<usize>, usize)>,
}

impl Lora {
    /// Adapters of rank `rank` with scale `alpha / rank` on every `Policy` weight matrix
    /// (blocks named `*.w`) of `net`.
    pub fn new(net: &DriftNet, rank: usize, alpha: f64) -> Self {
        assert!(rank >= 1, "LoRA rank must be at least 1");
        let mut layout = ParamLayout::default();
        let mut adapted = Vec::new();
        for s in &net.layout.specs {
            if s.group == Group::Policy && s.name.ends_with(".w") {
                let a = layout.add(&format!("lora.{}.a", s.name), rank, s.cols, Group::Policy);
                let b = layout.add(&format!("lora.{}.b", s.name), s.rows, rank, Group::Policy);
                adapted.push(Adapted {
                    w_offset: s.offset,
                    rows: s.rows,
                    cols: s.cols,
                    a_offset: layout.specs[a].offset,
                    b_offset: layout.specs[b].offset,
                });
            }
        }
        let mut flow = Vec::new();
        for s in &net.layout.specs {
            if s.group == Group::Flow {
                let i = layout.add(&s.name, s.rows, s.cols, Group::Flow);
                flow.push((s.range(), layout.specs[i].offset));
            }
        }
        Lora {
            rank,
            scale: alpha / rank as f64,
            layout,
            adapted,
            flow,
        }
    }

    /// θ's length: every A and B, and the flow blocks.
    pub fn trainable_len(&self) -> usize {
        self.layout.len()
    }

    /// θ at the start: every A from PyTorch's Linear init over its input width,
    /// U(−1/√I, 1/√I), drawn from stream (seed, "lora-init", 0) in layout order; every B zero;
    /// the flow blocks copied from `params` (the posterior's starting vector).
    pub fn init(&self, seed: u64, params: &[f32]) -> Vec<f32> {
        let mut rng = rng::stream(seed, "lora-init", 0);
        let mut theta = vec![0f32; self.trainable_len()];
        for a in &self.adapted {
            let bound = 1.0 / (a.cols as f64).sqrt();
            for v in &mut theta[a.a_offset..a.a_offset + self.rank * a.cols] {
                *v = ((2.0 * rng::uniform_f64(&mut rng) - 1.0) * bound) as f32;
            }
        }
        for (range, at) in &self.flow {
            theta[*at..*at + range.len()].copy_from_slice(&params[range.clone()]);
        }
        theta
    }

    /// The network's flat parameters from the frozen `base` (W₀ and every frozen block) and θ:
    /// W = W₀ + s·B·A per adapted matrix (the sum over R in f64, in order), flow blocks from θ.
    /// `out` has the network's length.
    pub fn materialise(&self, base: &[f32], theta: &[f32], out: &mut [f32]) {
        assert_eq!(base.len(), out.len(), "network vector length");
        assert_eq!(theta.len(), self.trainable_len(), "adapter vector length");
        out.copy_from_slice(base);
        let r = self.rank;
        for a in &self.adapted {
            let am = &theta[a.a_offset..a.a_offset + r * a.cols];
            let bm = &theta[a.b_offset..a.b_offset + a.rows * r];
            for o in 0..a.rows {
                for i in 0..a.cols {
                    let mut acc = 0f64;
                    for k in 0..r {
                        acc += bm[o * r + k] as f64 * am[k * a.cols + i] as f64;
                    }
                    let w = a.w_offset + o * a.cols + i;
                    out[w] = (base[w] as f64 + self.scale * acc) as f32;
                }
            }
        }
        for (range, at) in &self.flow {
            out[range.clone()].copy_from_slice(&theta[*at..*at + range.len()]);
        }
    }

    /// ∂L/∂θ from the network's flat gradient `grad` at θ: ∂L/∂A = s·Bᵀ·G (sum over O),
    /// ∂L/∂B = s·G·Aᵀ (sum over I), flow blocks copied. Gradients of the frozen blocks are
    /// dropped.
    pub fn pull_back(&self, theta: &[f32], grad: &[f32]) -> Vec<f32> {
        assert_eq!(theta.len(), self.trainable_len(), "adapter vector length");
        let r = self.rank;
        let mut out = vec![0f32; self.trainable_len()];
        for a in &self.adapted {
            let g = &grad[a.w_offset..a.w_offset + a.rows * a.cols];
            let am = &theta[a.a_offset..a.a_offset + r * a.cols];
            let bm = &theta[a.b_offset..a.b_offset + a.rows * r];
            for k in 0..r {
                // ∂L/∂A[k, i] = s·Σ_o B[o, k]·G[o, i]
                for i in 0..a.cols {
                    let mut acc = 0f64;
                    for o in 0..a.rows {
                        acc += bm[o * r + k] as f64 * g[o * a.cols + i] as f64;
                    }
                    out[a.a_offset + k * a.cols + i] = (self.scale * acc) as f32;
                }
            }
            for o in 0..a.rows {
                // ∂L/∂B[o, k] = s·Σ_i G[o, i]·A[k, i]
                for k in 0..r {
                    let mut acc = 0f64;
                    for i in 0..a.cols {
                        acc += g[o * a.cols + i] as f64 * am[k * a.cols + i] as f64;
                    }
                    out[a.b_offset + o * r + k] = (self.scale * acc) as f32;
                }
            }
        }
        for (range, at) in &self.flow {
            out[*at..*at + range.len()].copy_from_slice(&grad[range.clone()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkConfig;

    fn small_net() -> DriftNet {
        let cfg: NetworkConfig =
            ron::from_str("(hidden: 6, harmonics: 2, joint_layers: 1)").expect("network config");
        DriftNet::new(3, &cfg)
    }

    #[test]
    fn adapts_every_policy_weight_and_carries_the_flow_blocks() {
        let net = small_net();
        let lora = Lora::new(&net, 2, 4.0);
        let weights = net
            .layout
            .specs
            .iter()
            .filter(|s| s.group == Group::Policy && s.name.ends_with(".w"))
            .count();
        assert_eq!(lora.adapted.len(), weights);
        assert!(lora.layout.find("lora.joint.out.w.b").is_some());
        assert!(lora.layout.find("log_z").is_some());
        assert_eq!(lora.scale, 2.0);
    }

    #[test]
    fn starts_at_the_base_and_materialises_the_rank_r_update() {
        let net = small_net();
        let lora = Lora::new(&net, 2, 2.0);
        let base = net.init(7);
        let mut theta = lora.init(7, &base);
        let mut out = vec![0f32; base.len()];
        lora.materialise(&base, &theta, &mut out);
        assert_eq!(
            out, base,
            "B = 0: the posterior starts at its prior, bit for bit"
        );
        // One hand-checked entry of W₀ + s·B·A after setting B.
        let b = lora.layout.find("lora.s.lin.w.b").expect("B").offset;
        let a = lora.layout.find("lora.s.lin.w.a").expect("A").offset;
        theta[b] = 0.5; // B[0, 0]
        theta[b + 1] = -0.25; // B[0, 1]
        lora.materialise(&base, &theta, &mut out);
        let w = net.layout.find("s.lin.w").expect("W");
        let cols = w.cols;
        let want = base[w.offset + 1] as f64
            + 1.0 * (0.5 * theta[a + 1] as f64 - 0.25 * theta[a + cols + 1] as f64);
        assert_eq!(out[w.offset + 1], want as f32);
        assert_eq!(
            out[w.offset + cols],
            base[w.offset + cols],
            "row 1 has B = 0"
        );
    }

    /// ∂L/∂θ by [`Lora::pull_back`] against central finite differences of
    /// L(θ) = Σ_j c_j·W_j + ½·Σ_j d_j·W_j² over the materialised vector (quartic in θ).
    #[test]
    fn pull_back_matches_finite_differences() {
        let net = small_net();
        let lora = Lora::new(&net, 3, 1.5);
        let base = net.init(11);
        let mut theta = lora.init(11, &base);
        // B away from zero, so that ∂L/∂A is not trivially zero.
        let mut rng = rng::stream(3, "test", 0);
        for s in lora.layout.specs.iter().filter(|s| s.name.ends_with(".b")) {
            for v in &mut theta[s.range()] {
                *v = (rng::uniform_f64(&mut rng) - 0.5) as f32;
            }
        }
        let n = base.len();
        let c: Vec<f64> = (0..n).map(|j| ((j * 7 % 13) as f64 - 6.0) / 6.0).collect();
        let d: Vec<f64> = (0..n).map(|j| 0.5 + (j % 5) as f64 / 5.0).collect();
        let loss = |th: &[f32]| {
            let mut w = vec![0f32; n];
            lora.materialise(&base, th, &mut w);
            (0..n)
                .map(|j| c[j] * w[j] as f64 + 0.5 * d[j] * (w[j] as f64).powi(2))
                .sum::<f64>()
        };
        let mut w = vec![0f32; n];
        lora.materialise(&base, &theta, &mut w);
        let g: Vec<f32> = (0..n).map(|j| (c[j] + d[j] * w[j] as f64) as f32).collect();
        let analytic = lora.pull_back(&theta, &g);
        let h = 1e-2f32;
        let mut worst = 0f64;
        for k in (0..theta.len()).step_by(3) {
            let mut plus = theta.clone();
            plus[k] += h;
            let mut minus = theta.clone();
            minus[k] -= h;
            let fd = (loss(&plus) - loss(&minus)) / (plus[k] as f64 - minus[k] as f64);
            let err = (fd - analytic[k] as f64).abs() / (1.0 + fd.abs());
            worst = worst.max(err);
        }
        assert!(worst < 2e-3, "worst relative error {worst}");
    }
}

//! The PIS drift network of Sendera et al. (spec §2.4), built on the tape.
//!
//! - time encoder T(t): [sin(t·f + φ), cos(t·f + φ)] (F fixed frequencies 0.1‥100, learned φ)
//!   → Linear(2F, H) → GELU → Linear(H, H);
//! - state encoder S(x): Linear(D, H);
//! - joint policy: h = S(x) + T(t) → GELU → [Linear(H, H) → GELU] × L → Linear(H, 2D), the last
//!   layer zero-initialised (so the initial policy is plain Brownian motion);
//! - optional Langevin scale s(t): its own phase, Linear(2F, H) → [GELU → Linear(H, H)] × (n − 1)
//!   → GELU → Linear(H, 1 or D) with zero weights and bias 0.01;
//! - log Z, a scalar in the `Flow` group;
//! - optional conditional flow log F(x, t) (SubTB, DB; spec §2.4 "Flow"): on the shared trunk
//!   GELU(S(x) + T(t)) → [Linear(H, H) → GELU] × L → Linear(H, 1), PyTorch default init, in the
//!   `Flow` group. It shares S and T with the policy, so their gradients sum both heads'.
//!
//! The output is [u ; v] ∈ ℝ^{2D}: drift u, and v the raw log-variance when it is learned.
//!
//! With `layer_norm` (spec rtb2024 §4.2's Linear → LayerNorm → GELU blocks), every hidden
//! pre-activation above is layer-normalised before its GELU, with its own learned gain (init 1)
//! and bias (init 0): blocks `<name>.ln.gain` and `<name>.ln.bias` [1, H] right after the block
//! `<name>.b` of the layer they follow (`trunk.ln.*` for S(x) + T(t), `s.lin.ln.*` for the
//! conditional encoder's first layer). They draw no random numbers, so every other block starts
//! as in the same network without LayerNorm.

use super::layout::{Group, ParamLayout};
use crate::autodiff::{Tape, Var};
use crate::config::NetworkConfig;
use crate::cpu::Kernels;
use crate::rng;
use crate::tensor::Tensor;

/// Shapes and layout of one drift network.
#[derive(Clone, Debug)]
pub struct DriftNet {
    pub dim: usize,
    pub hidden: usize,
    pub harmonics: usize,
    pub joint_layers: usize,
    /// `Some((layers, per_dim))` when the Langevin parametrization is on.
    pub langevin: Option<(usize, bool)>,
    /// Clip of the raw output (`gfn_clip`).
    pub out_clip: f64,
    /// Which flow head the network has, if any.
    pub flow: FlowHead,
    /// C, the width of a per-trajectory condition (784 for the VAE posterior), when the state
    /// encoder is the conditional MLP of spec §2.5.
    pub cond_dim: Option<usize>,
    /// LayerNorm before every hidden GELU (see the module docs).
    pub layer_norm: bool,
    /// DIS's interpolated score as the LP term's input (`network.interpolated_score`); its
    /// s(t) starts at 1 instead of 0.01.
    pub interpolated_score: bool,
    pub layout: ParamLayout,
}

/// The network's parameters bound to one tape (one leaf per block, in layout order).
#[derive(Clone, Debug)]
pub struct NetVars {
    pub leaves: Vec<Var>,
}

impl NetVars {
    fn get(&self, net: &DriftNet, name: &str) -> Var {
        let i = net
            .layout
            .specs
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no parameter block {name}"));
        self.leaves[i]
    }
}

/// The flow head's blocks (`flow.*`, `Flow` group) and what they compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowHead {
    /// No flow head (TB with a scalar log Z, VarGrad, PIS).
    None,
    /// log F(x, t) on the shared trunk GELU(S(x) + T(t)) at every step (SubTB, DB).
    Trunk,
    /// log Z(c) of TB on a conditional target (spec §2.5), evaluated once on the condition's
    /// embedding ([`DriftNet::conditional_log_z`]).
    ConditionLogZ,
}

impl DriftNet {
    /// The unconditional network without a flow head (TB, VarGrad, PIS).
    pub fn new(dim: usize, cfg: &NetworkConfig) -> Self {
        Self::build(dim, cfg, FlowHead::None, None)
    }

    /// The network for states of width `dim` conditioned on a `cond_dim`-wide vector (spec
    /// §2.5): S(z, c) = Linear(D + C, H) → GELU → [Linear(H, H) → GELU] × L → Linear(H, H). The
    /// first layer is stored as two blocks, `s.lin.w` [H, D] and `s.cond.w` [H, C], because the
    /// condition's part c·W_cᵀ is the same at every step: it is computed once per rollout
    /// ([`Self::condition_embedding`]) and its gradient summed over the steps before one
    /// product.
    ///
    /// The flow blocks come after every other policy block, so a network without them has the
    /// same layout and initial values.
    pub fn build(dim: usize, cfg: &NetworkConfig, flow: FlowHead, cond_dim: Option<usize>) -> Self {
        let (h, f) = (cfg.hidden, cfg.harmonics);
        let ln = cfg.layer_norm;
        let mut l = ParamLayout::default();
        l.add("t.phase", 1, f, Group::Policy);
        l.add("t.lin1.w", h, 2 * f, Group::Policy);
        l.add("t.lin1.b", 1, h, Group::Policy);
        add_layer_norm(&mut l, ln, "t.lin1", h, Group::Policy);
        l.add("t.lin2.w", h, h, Group::Policy);
        l.add("t.lin2.b", 1, h, Group::Policy);
        l.add("s.lin.w", h, dim, Group::Policy);
        l.add("s.lin.b", 1, h, Group::Policy);
        add_layer_norm(&mut l, ln, "trunk", h, Group::Policy);
        let joint = cfg.joint_layers;
        if let Some(c) = cond_dim {
            l.add("s.cond.w", h, c, Group::Policy);
            add_layer_norm(&mut l, ln, "s.lin", h, Group::Policy);
            add_mlp_tail(&mut l, "s", joint, h, h, ln, Group::Policy);
        }
        add_mlp_tail(&mut l, "joint", joint, h, 2 * dim, ln, Group::Policy);
        let langevin = cfg
            .langevin
            .then_some((cfg.langevin_layers, cfg.langevin_per_dim));
        if let Some((layers, per_dim)) = langevin {
            let out = if per_dim { dim } else { 1 };
            l.add("lp.phase", 1, f, Group::Policy);
            l.add("lp.lin1.w", h, 2 * f, Group::Policy);
            l.add("lp.lin1.b", 1, h, Group::Policy);
            add_layer_norm(&mut l, ln, "lp.lin1", h, Group::Policy);
            add_mlp_tail(&mut l, "lp", layers - 1, h, out, ln, Group::Policy);
        }
        if flow != FlowHead::None {
            add_mlp_tail(&mut l, "flow", joint, h, 1, ln, Group::Flow);
        }
        l.add("log_z", 1, 1, Group::Flow);
        DriftNet {
            flow,
            cond_dim,
            dim,
            hidden: h,
            harmonics: f,
            joint_layers: cfg.joint_layers,
            langevin,
            out_clip: cfg.out_clip,
            layer_norm: ln,
            interpolated_score: cfg.interpolated_score,
            layout: l,
        }
    }

    /// P, the number of parameters.
    pub fn num_params(&self) -> usize {
        self.layout.len()
    }

    /// A posterior's parameters from its prior's (spec rtb2024 §4.2). `prior` is laid out as
    /// this network without its Langevin blocks (`lp.*`, the prior has none); those come from
    /// `init` with the output layer zeroed, so the scale s(t) and with it the whole term
    /// s(t)·clip(∇log r) are exactly 0: the posterior starts as the prior, and the same vector
    /// scores the prior's moves. (The reference copies the prior into a correction that is
    /// *added* to it, so it starts at about twice the prior's ε; this is the spec's fix.) None
    /// when `prior` has the wrong length.
    pub fn lift_prior(&self, prior: &[f32], init: &[f32]) -> Option<Vec<f32>> {
        assert_eq!(init.len(), self.num_params());
        let is_lp = |name: &str| name.starts_with("lp.");
        let prior_len: usize = self
            .layout
            .specs
            .iter()
            .filter(|s| !is_lp(&s.name))
            .map(|s| s.len())
            .sum();
        if prior.len() != prior_len {
            return None;
        }
        let mut out = Vec::with_capacity(init.len());
        let mut from = prior.iter();
        for s in &self.layout.specs {
            if !is_lp(&s.name) {
                out.extend(from.by_ref().take(s.len()));
            } else if s.name.starts_with("lp.out.") {
                out.extend(std::iter::repeat_n(0.0, s.len()));
            } else {
                out.extend_from_slice(&init[s.range()]);
            }
        }
        Some(out)
    }

    /// The parameters of the log-variance head: output rows D..2D of the joint policy's last
    /// layer, weights and bias, as absolute index ranges.
    pub fn log_var_head_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let d = self.dim;
        self.layout
            .specs
            .iter()
            .filter_map(|s| match s.name.as_str() {
                // [2D, H]: one row per output.
                "joint.out.w" => Some(s.offset + d * s.cols..s.offset + s.len()),
                // [1, 2D].
                "joint.out.b" => Some(s.offset + d..s.offset + s.len()),
                _ => None,
            })
            .collect()
    }

    /// Zero the log-variance head ([`Self::log_var_head_ranges`]): the raw log-variance v is
    /// then 0 at every input, so a learned variance starts at the fixed one.
    pub fn zero_log_var_head(&self, params: &mut [f32]) {
        for r in self.log_var_head_ranges() {
            params[r].fill(0.0);
        }
    }

    /// The F fixed frequencies: linspace(0.1, 100, F).
    pub fn frequencies(&self) -> Vec<f64> {
        let f = self.harmonics;
        (0..f)
            .map(|k| {
                if f == 1 {
                    0.1
                } else {
                    0.1 + k as f64 * (99.9 / (f - 1) as f64)
                }
            })
            .collect()
    }

    /// Initial parameters from stream (seed, "init", 0): PyTorch's default Linear init
    /// U(−1/√fan_in, 1/√fan_in) for weights and biases, N(0,1) phases, zero joint output layer,
    /// zero LP output weights with bias 0.01, log Z = 0, LayerNorm gains 1 and biases 0 (no
    /// draws). Blocks are filled in layout order.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = rng::stream(seed, "init", 0);
        let mut p = vec![0f32; self.num_params()];
        for (i, s) in self.layout.specs.iter().enumerate() {
            let block = &mut p[s.range()];
            let name = s.name.as_str();
            if name.ends_with(".ln.gain") {
                block.fill(1.0);
            } else if name.ends_with(".ln.bias") {
                block.fill(0.0);
            } else if name.ends_with("phase") {
                for v in block.iter_mut() {
                    *v = rng::normal_f64(&mut rng) as f32;
                }
            } else if name.starts_with("joint.out") || name == "log_z" || name == "lp.out.w" {
                block.fill(0.0);
            } else if name == "lp.out.b" {
                // The reference code's 0.01; DIS starts at the interpolated score itself
                // (Berner et al. initialise this bias to 1).
                block.fill(if self.interpolated_score { 1.0 } else { 0.01 });
            } else {
                // Biases share their weight's fan-in (the block before a ".b" is its ".w"); the
                // conditional encoder's first layer is one Linear(D + C, H) split in two blocks.
                let fan_in = match (self.cond_dim, name) {
                    (Some(c), "s.lin.w" | "s.lin.b" | "s.cond.w") => self.dim + c,
                    _ if name.ends_with(".b") => self.layout.specs[i - 1].cols,
                    _ => s.cols,
                };
                let bound = 1.0 / (fan_in as f64).sqrt();
                for v in block.iter_mut() {
                    *v = ((2.0 * rng::uniform_f64(&mut rng) - 1.0) * bound) as f32;
                }
            }
        }
        p
    }

    /// Push every parameter block onto `tape` as a gradient leaf.
    pub fn bind<S: Kernels>(&self, tape: &mut Tape<S>, params: &[S]) -> NetVars {
        assert_eq!(params.len(), self.num_params(), "parameter vector length");
        let leaves = self
            .layout
            .specs
            .iter()
            .map(|s| tape.param(Tensor::from_vec(s.rows, s.cols, params[s.range()].to_vec())))
            .collect();
        NetVars { leaves }
    }

    fn features<S: Kernels>(&self, tape: &mut Tape<S>, phase: Var, ts: &[f64]) -> Var {
        let t: Vec<S> = ts.iter().map(|&v| S::from_f64(v)).collect();
        let f: Vec<S> = self.frequencies().into_iter().map(S::from_f64).collect();
        tape.time_features(phase, t, f)
    }

    /// T(t) for every time in `ts` at once: `[T, H]`.
    pub fn time_embedding<S: Kernels>(&self, tape: &mut Tape<S>, v: &NetVars, ts: &[f64]) -> Var {
        let feats = self.features(tape, v.get(self, "t.phase"), ts);
        let a = tape.linear(feats, v.get(self, "t.lin1.w"), v.get(self, "t.lin1.b"));
        let a = self.activate(tape, v, a, "t.lin1");
        tape.linear(a, v.get(self, "t.lin2.w"), v.get(self, "t.lin2.b"))
    }

    /// s(t) for every time in `ts`: `[T, 1]` or `[T, D]`; `None` without LP.
    pub fn langevin_scale<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        ts: &[f64],
    ) -> Option<Var> {
        let (layers, _) = self.langevin?;
        let feats = self.features(tape, v.get(self, "lp.phase"), ts);
        let mut a = tape.linear(feats, v.get(self, "lp.lin1.w"), v.get(self, "lp.lin1.b"));
        let mut name = "lp.lin1".to_string();
        for k in 0..layers - 1 {
            let g = self.activate(tape, v, a, &name);
            a = tape.linear(
                g,
                v.get(self, &format!("lp.{k}.w")),
                v.get(self, &format!("lp.{k}.b")),
            );
            name = format!("lp.{k}");
        }
        let g = self.activate(tape, v, a, &name);
        Some(tape.linear(g, v.get(self, "lp.out.w"), v.get(self, "lp.out.b")))
    }

    /// c·W_cᵀ for the conditions `cond` `[B, C]` (a constant node): `[B, H]`, added to the
    /// state encoder's first layer at every step.
    pub fn condition_embedding<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        cond: Var,
    ) -> Var {
        let zero = tape.constant(Tensor::zeros(1, self.hidden));
        tape.linear(cond, v.get(self, "s.cond.w"), zero)
    }

    /// log Z(c) of a conditional network with a [`FlowHead::ConditionLogZ`] (the VAE's TB, spec
    /// §2.5): the flow MLP on GELU(S(0, c)), the state embedding at the start state z₀ = 0 with
    /// no time input. `[B, 1]`.
    pub fn conditional_log_z<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        cond_emb: Var,
        rows: usize,
    ) -> Var {
        let z0 = tape.constant(Tensor::zeros(rows, self.dim));
        let s = self.state_encoder(tape, v, z0, Some(cond_emb));
        let a = self.activate(tape, v, s, "trunk");
        self.flow_mlp(tape, v, a)
    }

    /// GELU of the pre-activation `z` of layer `name`, layer-normalised first (blocks
    /// `name.ln.gain`, `name.ln.bias`) when the network has LayerNorm. Pre-activations feed only
    /// this: without LayerNorm the GELU releases z (keeping its derivative); with it, z stays for
    /// the LayerNorm's VJP and the GELU releases the normalised value instead.
    fn activate<S: Kernels>(&self, tape: &mut Tape<S>, v: &NetVars, z: Var, name: &str) -> Var {
        if !self.layer_norm {
            return tape.gelu_consuming(z);
        }
        let gain = v.get(self, &format!("{name}.ln.gain"));
        let bias = v.get(self, &format!("{name}.ln.bias"));
        let n = tape.layer_norm(z, gain, bias);
        tape.gelu_consuming(n)
    }

    /// The flow head's layers on an activation `a` `[B, H]`: `[B, 1]`.
    fn flow_mlp<S: Kernels>(&self, tape: &mut Tape<S>, v: &NetVars, a: Var) -> Var {
        self.mlp_tail(tape, v, a, "flow")
    }

    /// `[Linear(prefix.k) → GELU] × L → Linear(prefix.out)` on an activation `a` (the blocks
    /// [`add_mlp_tail`] laid out): the joint policy, the flow head and the conditional state
    /// encoder share this shape.
    fn mlp_tail<S: Kernels>(&self, tape: &mut Tape<S>, v: &NetVars, a: Var, prefix: &str) -> Var {
        let mut a = a;
        for k in 0..self.joint_layers {
            let z = tape.linear(
                a,
                v.get(self, &format!("{prefix}.{k}.w")),
                v.get(self, &format!("{prefix}.{k}.b")),
            );
            a = self.activate(tape, v, z, &format!("{prefix}.{k}"));
        }
        let (w, b) = (format!("{prefix}.out.w"), format!("{prefix}.out.b"));
        tape.linear(a, v.get(self, &w), v.get(self, &b))
    }

    /// S(x) (`[B, H]`): one Linear, or the conditional MLP when `cond_emb` (from
    /// [`Self::condition_embedding`]) is given.
    fn state_encoder<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        x: Var,
        cond_emb: Option<Var>,
    ) -> Var {
        let s = tape.linear(x, v.get(self, "s.lin.w"), v.get(self, "s.lin.b"));
        let Some(c) = cond_emb else {
            return s;
        };
        let joined = tape.add(s, c);
        let a = self.activate(tape, v, joined, "s.lin");
        self.mlp_tail(tape, v, a, "s")
    }

    /// The policy output at one step: `o [B, 2D]` for states `x [B, D]` at step `row` of the
    /// precomputed time embedding. With LP, `lp = Some((scale, clipped_grad))`, where `scale` is
    /// [`Self::langevin_scale`]'s node and `clipped_grad` the constant clip(∇log R(x)) `[B, D]`.
    pub fn policy<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        x: Var,
        temb: Var,
        row: usize,
        lp: Option<(Var, Var)>,
    ) -> Var {
        self.policy_and_flow(tape, v, x, None, temb, row, lp, false)
            .0
    }

    /// The policy output for states `x [B, D]` each at its own time: `temb_rows [B, H]` is
    /// [`Self::time_embedding`] of the B times (DDPM's ε-MSE draws a time per row).
    /// Conditioned on `cond_emb` ([`Self::condition_embedding`] of the rows' conditions) when
    /// the network is conditional. Networks without LP only.
    pub fn policy_rows<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        x: Var,
        temb_rows: Var,
        cond_emb: Option<Var>,
    ) -> Var {
        let s = self.state_encoder(tape, v, x, cond_emb);
        let h = tape.add(s, temb_rows);
        let trunk = self.activate(tape, v, h, "trunk");
        let o = self.mlp_tail(tape, v, trunk, "joint");
        tape.clip(o, S::from_f64(self.out_clip))
    }

    /// [`Self::policy`] (conditioned on `cond_emb` when the network is conditional), and with
    /// `want_flow` (and a flow head) the learned log F(x, t_row) `[B, 1]` from the same trunk.
    #[allow(clippy::too_many_arguments)]
    pub fn policy_and_flow<S: Kernels>(
        &self,
        tape: &mut Tape<S>,
        v: &NetVars,
        x: Var,
        cond_emb: Option<Var>,
        temb: Var,
        row: usize,
        lp: Option<(Var, Var)>,
        want_flow: bool,
    ) -> (Var, Option<Var>) {
        let s = self.state_encoder(tape, v, x, cond_emb);
        let h = tape.add_row(s, temb, row);
        let trunk = self.activate(tape, v, h, "trunk");
        let mut o = self.mlp_tail(tape, v, trunk, "joint");
        if let Some((scale, grad)) = lp {
            o = tape.langevin_add(o, scale, row, grad);
        }
        let o = tape.clip(o, S::from_f64(self.out_clip));
        // A conditional network's flow head is its log Z(c) ([`Self::conditional_log_z`]).
        let flow =
            (want_flow && self.flow == FlowHead::Trunk).then(|| self.flow_mlp(tape, v, trunk));
        (o, flow)
    }

    /// Gather the parameter leaves' gradients (from [`Tape::backward`]) into a flat vector;
    /// blocks with no gradient are zero.
    pub fn flat_grads<S: Kernels>(&self, v: &NetVars, grads: &[Option<Tensor<S>>]) -> Vec<S> {
        let mut out = vec![S::ZERO; self.num_params()];
        for (spec, leaf) in self.layout.specs.iter().zip(&v.leaves) {
            if let Some(g) = &grads[leaf.0] {
                out[spec.range()].copy_from_slice(&g.data);
            }
        }
        out
    }

    /// Index of log Z in the flat vector.
    pub fn log_z_index(&self) -> usize {
        self.layout.find("log_z").expect("log_z block").offset
    }
}

/// Lay out `[Linear(H, H)] × layers` as `prefix.k.{w,b}` (each followed by its LayerNorm's
/// `prefix.k.ln.{gain,bias}` when `ln`) and then `prefix.out.{w,b}` (`[out, H]`, `[1, out]`), in
/// that order.
fn add_mlp_tail(
    l: &mut ParamLayout,
    prefix: &str,
    layers: usize,
    h: usize,
    out: usize,
    ln: bool,
    group: Group,
) {
    for k in 0..layers {
        l.add(&format!("{prefix}.{k}.w"), h, h, group);
        l.add(&format!("{prefix}.{k}.b"), 1, h, group);
        add_layer_norm(l, ln, &format!("{prefix}.{k}"), h, group);
    }
    l.add(&format!("{prefix}.out.w"), out, h, group);
    l.add(&format!("{prefix}.out.b"), 1, out, group);
}

/// The LayerNorm gain and bias `[1, H]` of layer `name`, when `ln`.
fn add_layer_norm(l: &mut ParamLayout, ln: bool, name: &str, h: usize, group: Group) {
    if ln {
        l.add(&format!("{name}.ln.gain"), 1, h, group);
        l.add(&format!("{name}.ln.bias"), 1, h, group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::layout::ParamSpec;

    fn net(layer_norm: bool, cond: Option<usize>) -> DriftNet {
        let cfg = NetworkConfig {
            hidden: 6,
            harmonics: 3,
            joint_layers: 2,
            langevin: true,
            langevin_layers: 3,
            layer_norm,
            ..NetworkConfig::default()
        };
        DriftNet::build(2, &cfg, FlowHead::Trunk, cond)
    }

    /// LayerNorm adds only its gain/bias blocks, one pair per hidden GELU, and draws no random
    /// numbers: every other block has the same name, shape and initial values as without it.
    #[test]
    fn layer_norm_adds_only_unit_gain_zero_bias_blocks() {
        for cond in [None, Some(4)] {
            let (plain, ln) = (net(false, cond), net(true, cond));
            let (p0, p1) = (plain.init(9), ln.init(9));
            let extra: Vec<&ParamSpec> = ln
                .layout
                .specs
                .iter()
                .filter(|s| s.name.contains(".ln."))
                .collect();
            // t.lin1, trunk, joint.0–1, lp.lin1, lp.0–1, flow.0–1, and s.lin + s.0–1 if conditional.
            let want_pairs = 9 + if cond.is_some() { 3 } else { 0 };
            assert_eq!(extra.len(), 2 * want_pairs, "cond {cond:?}");
            for s in &extra {
                let want = if s.name.ends_with(".ln.gain") {
                    1.0
                } else {
                    0.0
                };
                assert_eq!((s.rows, s.cols), (1, 6), "{}", s.name);
                assert!(p1[s.range()].iter().all(|&v| v == want), "{}", s.name);
            }
            let kept: Vec<&ParamSpec> = ln
                .layout
                .specs
                .iter()
                .filter(|s| !s.name.contains(".ln."))
                .collect();
            assert_eq!(kept.len(), plain.layout.specs.len());
            for (a, b) in kept.iter().zip(&plain.layout.specs) {
                assert_eq!((&a.name, a.rows, a.cols), (&b.name, b.rows, b.cols));
                assert_eq!(p1[a.range()], p0[b.range()], "{}", a.name);
            }
        }
    }
}

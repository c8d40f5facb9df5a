//! Implicit Q-Learning (Kostrikov et al. 2022) on offline continuous-control tuples: the critic
//! whose min(Q1, Q2) is the RTB log-reward of policy extraction, and IQL's own AWR policy, the
//! baseline (spec rtb2024 §4.2, §4.5 B, §6.3).
//!
//! It follows the reference the paper used (gwthomas `IQL-PyTorch`, `src/iql.py`, vendored in
//! `GFNOrg/diffusion-finetuning/offline_RL/IQL_PyTorch`), one update per step on a minibatch of
//! `batch` rows drawn uniformly with replacement from stream (seed, "iql-batch", step):
//!
//! 0. with no gradient: q̂ = min(Q1_targ, Q2_targ)(s, a) and V(s′), both from the networks as
//!    they are BEFORE this step's updates (the reference computes them first);
//! 1. V: L_V = mean L₂^τ(q̂ − V(s)), L₂^τ(u) = |τ − 1(u < 0)|·u² (expectile regression);
//! 2. Q: y = r + γ·(1 − terminal)·V(s′); L_Q = ½·[mean (Q1(s,a) − y)² + mean (Q2(s,a) − y)²],
//!    the MEAN of the two MSEs (the reference's `sum(mse) / len(qs)`);
//! 3. target EMA: θ_targ ← (1 − λ)·θ_targ + λ·θ;
//! 4. AWR: w = min(exp(β·(q̂ − V(s))), max_weight) with the advantage of step 1 (detached);
//!    L_π = −mean w·log π(a|s), π = N(max_action·tanh(MLP(s)), diag exp(clamp(log σ, −5, 2))²).
//!    The policy's learning rate follows the reference's cosine annealing to 0 over `steps`.
//!
//! Each of V, (Q1, Q2) and π has its own Adam (PyTorch semantics, `crate::nn::Adam`).
//! Everything runs on one thread with the crate's fixed-order kernels, so a training is a pure
//! function of (data, config, seed), bit for bit.
//!
//! Shapes: N dataset rows, B batch rows, S observation dims, A action dims, H hidden width.
//! Networks: Q_i [S+A → H → H → 1], V [S → H → H → 1], π mean [S → H → H → A], all ReLU
//! ([`crate::nn::mlp`]), PyTorch default init.

use crate::nn::adam::cosine_lr;
use crate::nn::mlp::{Mlp, Pass};
use crate::nn::{Adam, Group, ParamLayout};
use crate::real::Real;
use crate::rng;
use serde::{Deserialize, Serialize};

/// Bounds of the policy's log-std (the reference's `LOG_STD_MIN`, `LOG_STD_MAX`).
const LOG_STD_MIN: f32 = -5.0;
const LOG_STD_MAX: f32 = 2.0;
/// Steps between two `progress` calls.
pub const PROGRESS_EVERY: usize = 1000;

/// The offline tuples, rows aligned: obs [N, S], actions [N, A], rewards [N] (already scaled by
/// the caller), next_obs [N, S], terminals [N] (1.0 = terminal).
#[derive(Clone, Debug, Default)]
pub struct OfflineData {
    pub obs: Vec<f32>,
    pub actions: Vec<f32>,
    pub rewards: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub terminals: Vec<f32>,
    pub obs_dim: usize,
    pub action_dim: usize,
}

impl OfflineData {
    /// N, the number of tuples.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// Err naming the first array whose length does not match N rows.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len();
        let (s, a) = (self.obs_dim, self.action_dim);
        if n == 0 || s == 0 || a == 0 {
            return Err(format!(
                "offline data needs N, S, A ≥ 1 (N = {n}, S = {s}, A = {a})"
            ));
        }
        if n > u32::MAX as usize {
            return Err(format!("offline data: N = {n} rows exceeds 2³² − 1"));
        }
        for (name, len, want) in [
            ("obs", self.obs.len(), n * s),
            ("actions", self.actions.len(), n * a),
            ("next_obs", self.next_obs.len(), n * s),
            ("terminals", self.terminals.len(), n),
        ] {
            if len != want {
                return Err(format!(
                    "offline data: {name} has {len} values, want {want} (N = {n} rows)"
                ));
            }
        }
        Ok(())
    }
}

/// IQL's knobs; every default is the paper's value (spec §4.2, §6.3) except `steps`, which
/// the caller sets (the paper's 750k is far more than the Pendulum needs; §4.5 B says 100–200k).
/// A field left out of a config takes its value from [`IqlConfig::default`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IqlConfig {
    /// H, the width of both hidden layers of every network.
    pub hidden: usize,
    pub steps: usize,
    pub batch: usize,
    /// Adam learning rate of all three optimisers (the policy's is cosine-annealed).
    pub lr: f64,
    /// τ of the value expectile.
    pub expectile: f64,
    /// γ.
    pub discount: f64,
    /// λ of the target critics' EMA.
    pub target_ema: f64,
    /// β of the AWR weights exp(β·advantage).
    pub awr_beta: f64,
    /// Cap of the AWR weights (the reference's `EXP_ADV_MAX`).
    pub awr_max_weight: f64,
    /// The action bound: the policy mean is max_action·tanh(·).
    pub max_action: f64,
}

impl Default for IqlConfig {
    fn default() -> Self {
        IqlConfig {
            hidden: 256,
            steps: 100_000,
            batch: 256,
            lr: 3e-4,
            expectile: 0.7,
            discount: 0.99,
            target_ema: 0.005,
            awr_beta: 3.0,
            awr_max_weight: 100.0,
            max_action: 2.0,
        }
    }
}

impl IqlConfig {
    /// Err naming the first knob out of range.
    pub fn validate(&self) -> Result<(), String> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if self.hidden == 0 || self.batch == 0 {
            return Err(format!(
                "hidden and batch must be ≥ 1 (hidden {}, batch {})",
                self.hidden, self.batch
            ));
        }
        if !finite_pos(self.lr) {
            return Err(format!("lr must be finite and > 0, got {}", self.lr));
        }
        if !(self.expectile > 0.0 && self.expectile < 1.0) {
            return Err(format!(
                "expectile must be in (0, 1), got {}",
                self.expectile
            ));
        }
        if !(0.0..=1.0).contains(&self.discount) {
            return Err(format!("discount must be in [0, 1], got {}", self.discount));
        }
        if !(self.target_ema > 0.0 && self.target_ema <= 1.0) {
            return Err(format!(
                "target_ema must be in (0, 1], got {}",
                self.target_ema
            ));
        }
        if !(self.awr_beta.is_finite() && self.awr_beta >= 0.0) {
            return Err(format!(
                "awr_beta must be finite and ≥ 0, got {}",
                self.awr_beta
            ));
        }
        if !finite_pos(self.awr_max_weight) || !finite_pos(self.max_action) {
            return Err(format!(
                "awr_max_weight and max_action must be finite and > 0 (got {}, {})",
                self.awr_max_weight, self.max_action
            ));
        }
        Ok(())
    }
}

/// The three losses, averaged over the steps since the previous report.
#[derive(Clone, Copy, Debug, Default)]
pub struct IqlLosses {
    pub value: f64,
    pub q: f64,
    pub policy: f64,
}

/// A trained (or loaded) IQL: twin critics, their targets, V and the AWR policy.
///
/// Flat layout ([`Iql::to_flat`]), P_Q = (S+A)·H + H + H² + H + H + 1, P_V the same with S
/// inputs, P_π = S·H + H + H² + H + H·A + A:
/// `[Q1 (P_Q) | Q2 (P_Q) | Q1_targ (P_Q) | Q2_targ (P_Q) | V (P_V) | π mean MLP (P_π) | π log σ (A)]`,
/// each MLP in [`Mlp`] order (W₀, b₀, W₁, b₁, W₂, b₂).
#[derive(Clone, Debug)]
pub struct Iql {
    cfg: IqlConfig,
    obs_dim: usize,
    action_dim: usize,
    q_net: Mlp,
    v_net: Mlp,
    pi_net: Mlp,
    /// [Q1 | Q2], the trained critics.
    q: Vec<f32>,
    /// [Q1_targ | Q2_targ], their EMA: what [`Iql::q`] evaluates.
    q_target: Vec<f32>,
    v: Vec<f32>,
    /// [π mean MLP | log σ (A)], log σ unclamped (clamped where used).
    pi: Vec<f32>,
}

impl Iql {
    /// The untrained networks (PyTorch init from streams (seed, "iql-init-…", layer), log σ = 0,
    /// targets equal to the critics).
    fn init(cfg: &IqlConfig, obs_dim: usize, action_dim: usize, seed: u64) -> Iql {
        let mut iql = Iql::zeros(cfg, obs_dim, action_dim);
        let q1 = iql.q_net.init(seed, "iql-init-q1");
        let q2 = iql.q_net.init(seed, "iql-init-q2");
        iql.q = [q1, q2].concat();
        iql.q_target = iql.q.clone();
        iql.v = iql.v_net.init(seed, "iql-init-v");
        let mut pi = iql.pi_net.init(seed, "iql-init-policy");
        pi.extend(std::iter::repeat_n(0.0, action_dim));
        iql.pi = pi;
        iql
    }

    /// Networks of the right shapes with all parameters 0.
    fn zeros(cfg: &IqlConfig, obs_dim: usize, action_dim: usize) -> Iql {
        let h = cfg.hidden;
        let q_net = Mlp::new(&[obs_dim + action_dim, h, h, 1]);
        let v_net = Mlp::new(&[obs_dim, h, h, 1]);
        let pi_net = Mlp::new(&[obs_dim, h, h, action_dim]);
        Iql {
            cfg: cfg.clone(),
            obs_dim,
            action_dim,
            q: vec![0.0; 2 * q_net.num_params()],
            q_target: vec![0.0; 2 * q_net.num_params()],
            v: vec![0.0; v_net.num_params()],
            pi: vec![0.0; pi_net.num_params() + action_dim],
            q_net,
            v_net,
            pi_net,
        }
    }

    /// Train on `data` for `cfg.steps` steps. `progress(steps_done, mean losses)` is called
    /// every [`PROGRESS_EVERY`] steps. Err on bad data or config, or on the first step whose
    /// loss is not finite.
    pub fn train(
        data: &OfflineData,
        cfg: &IqlConfig,
        seed: u64,
        progress: &mut dyn FnMut(usize, IqlLosses),
    ) -> Result<Iql, String> {
        data.check()?;
        cfg.validate().map_err(|e| format!("IQL config: {e}"))?;
        let mut iql = Iql::init(cfg, data.obs_dim, data.action_dim, seed);
        let mut opt = Optimisers::new(&iql);
        let mut acc = IqlLosses::default();
        for step in 0..cfg.steps {
            let batch = Batch::draw(data, cfg.batch, seed, step as u64);
            let l = iql.step(&mut opt, &batch, step);
            for (name, v) in [("value", l.value), ("q", l.q), ("policy", l.policy)] {
                if !v.is_finite() {
                    return Err(format!("IQL step {step}: the {name} loss is {v}"));
                }
            }
            acc.value += l.value;
            acc.q += l.q;
            acc.policy += l.policy;
            let done = step + 1;
            if done % PROGRESS_EVERY == 0 {
                let n = PROGRESS_EVERY as f64;
                progress(
                    done,
                    IqlLosses {
                        value: acc.value / n,
                        q: acc.q / n,
                        policy: acc.policy / n,
                    },
                );
                acc = IqlLosses::default();
            }
        }
        Ok(iql)
    }

    /// One IQL update (steps 0–4 of the module doc); returns this step's losses.
    fn step(&mut self, opt: &mut Optimisers, b: &Batch, step: usize) -> IqlLosses {
        let cfg = &self.cfg;
        let rows = b.rows;
        // 0. Targets, no gradient, before any update.
        let (tq1, tq2) = self.twin_forward(&self.q_target, &b.sa, rows);
        let q_hat = row_min(tq1.output(), tq2.output());
        let next_v = self
            .v_net
            .forward(&self.v, &b.next_obs, rows)
            .pre
            .pop()
            .unwrap();

        // 1. V: expectile regression onto q̂.
        let v_pass = self.v_net.forward(&self.v, &b.obs, rows);
        let v_now = v_pass.output().to_vec();
        let (value_loss, dv) = expectile_loss(&q_hat, &v_now, cfg.expectile);
        let (gv, _) = self.v_net.backward(&self.v, &v_pass, &b.obs, &dv);
        opt.v
            .step(&opt.v_layout, &mut self.v, &gv, &|_| cfg.lr, &[]);

        // 2. Q: regression onto y = r + γ(1 − d)·V(s′).
        let y: Vec<f32> = (0..rows)
            .map(|i| {
                let cont = 1.0 - b.terminals[i] as f64;
                (b.rewards[i] as f64 + cfg.discount * cont * next_v[i] as f64) as f32
            })
            .collect();
        let (q1, q2) = self.twin_forward(&self.q, &b.sa, rows);
        let (q_loss, dq1, dq2) = twin_mse_loss(q1.output(), q2.output(), &y);
        let pq = self.q_net.num_params();
        let mut gq = vec![0.0f32; 2 * pq];
        {
            let (g1, g2) = gq.split_at_mut(pq);
            let (p1, p2) = self.q.split_at(pq);
            self.q_net.backward_acc(p1, &q1, &b.sa, &dq1, Some(g1));
            self.q_net.backward_acc(p2, &q2, &b.sa, &dq2, Some(g2));
        }
        opt.q
            .step(&opt.q_layout, &mut self.q, &gq, &|_| cfg.lr, &[]);

        // 3. Target EMA.
        let lam = cfg.target_ema as f32;
        let keep = (1.0 - cfg.target_ema) as f32;
        for (t, &s) in self.q_target.iter_mut().zip(&self.q) {
            *t = *t * keep + lam * s;
        }

        // 4. AWR with the advantage of step 1 (critic before EMA, V before its update).
        let weights: Vec<f32> = q_hat
            .iter()
            .zip(&v_now)
            .map(|(&q, &v)| {
                let adv = q as f64 - v as f64;
                (cfg.awr_beta * adv).exp().min(cfg.awr_max_weight) as f32
            })
            .collect();
        let pm = self.pi_net.num_params();
        let pi_pass = self.pi_net.forward(&self.pi[..pm], &b.obs, rows);
        let (policy_loss, draw, dlog_std) = awr_loss(
            pi_pass.output(),
            &self.pi[pm..],
            &b.actions,
            &weights,
            cfg.max_action,
        );
        let mut gpi = vec![0.0f32; pm + self.action_dim];
        self.pi_net.backward_acc(
            &self.pi[..pm],
            &pi_pass,
            &b.obs,
            &draw,
            Some(&mut gpi[..pm]),
        );
        gpi[pm..].copy_from_slice(&dlog_std);
        let lr_pi = cosine_lr(cfg.lr, 0.0, step, cfg.steps);
        opt.pi
            .step(&opt.pi_layout, &mut self.pi, &gpi, &|_| lr_pi, &[]);

        IqlLosses {
            value: value_loss,
            q: q_loss,
            policy: policy_loss,
        }
    }

    /// Forward both halves of a twin-critic vector on sa [B, S+A].
    fn twin_forward(&self, twin: &[f32], sa: &[f32], rows: usize) -> (Pass<f32>, Pass<f32>) {
        let (p1, p2) = twin.split_at(self.q_net.num_params());
        (
            self.q_net.forward(p1, sa, rows),
            self.q_net.forward(p2, sa, rows),
        )
    }

    /// Rows of obs [B, S] and actions [B, A] side by side: [B, S+A]. Panics on ragged input.
    fn concat_sa(&self, obs: &[f32], actions: &[f32]) -> (Vec<f32>, usize) {
        let (s, a) = (self.obs_dim, self.action_dim);
        let rows = obs.len() / s;
        assert!(
            obs.len() == rows * s && actions.len() == rows * a,
            "Iql: obs ({} values) and actions ({} values) are not [B, {s}] and [B, {a}]",
            obs.len(),
            actions.len()
        );
        let mut sa = Vec::with_capacity(rows * (s + a));
        for r in 0..rows {
            sa.extend_from_slice(&obs[r * s..(r + 1) * s]);
            sa.extend_from_slice(&actions[r * a..(r + 1) * a]);
        }
        (sa, rows)
    }

    fn obs_rows(&self, obs: &[f32]) -> usize {
        let s = self.obs_dim;
        assert!(
            obs.len().is_multiple_of(s),
            "Iql: obs has {} values, not [B, {s}]",
            obs.len()
        );
        obs.len() / s
    }

    /// min(Q1_targ, Q2_targ)(s, a) for rows: obs [B, S], actions [B, A] → [B].
    pub fn q(&self, obs: &[f32], actions: &[f32]) -> Vec<f32> {
        let (sa, rows) = self.concat_sa(obs, actions);
        let (p1, p2) = self.twin_forward(&self.q_target, &sa, rows);
        row_min(p1.output(), p2.output())
    }

    /// [`Iql::q`] and its gradient ∂/∂a [B, A], taken through the smaller critic of each row
    /// (Q1 on a tie; ties have measure zero).
    pub fn q_and_action_grad(&self, obs: &[f32], actions: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (s, a) = (self.obs_dim, self.action_dim);
        let (sa, rows) = self.concat_sa(obs, actions);
        let (pass1, pass2) = self.twin_forward(&self.q_target, &sa, rows);
        let (o1, o2) = (pass1.output(), pass2.output());
        let q = row_min(o1, o2);
        let first: Vec<bool> = o1.iter().zip(o2).map(|(x, y)| x <= y).collect();
        let dy1: Vec<f32> = first.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
        let dy2: Vec<f32> = first.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect();
        let (p1, p2) = self.q_target.split_at(self.q_net.num_params());
        let dx1 = self.q_net.backward_acc(p1, &pass1, &sa, &dy1, None);
        let dx2 = self.q_net.backward_acc(p2, &pass2, &sa, &dy2, None);
        let mut grad = Vec::with_capacity(rows * a);
        for r in 0..rows {
            let dx = if first[r] { &dx1 } else { &dx2 };
            grad.extend_from_slice(&dx[r * (s + a) + s..(r + 1) * (s + a)]);
        }
        (q, grad)
    }

    /// V(s) for obs [B, S] → [B].
    pub fn value(&self, obs: &[f32]) -> Vec<f32> {
        let rows = self.obs_rows(obs);
        self.v_net.forward(&self.v, obs, rows).pre.pop().unwrap()
    }

    /// The AWR policy's deterministic action max_action·tanh(mean) [B, A] for obs [B, S].
    pub fn policy_action(&self, obs: &[f32]) -> Vec<f32> {
        let rows = self.obs_rows(obs);
        let pm = self.pi_net.num_params();
        let m = self.cfg.max_action as f32;
        let pass = self.pi_net.forward(&self.pi[..pm], obs, rows);
        pass.output().iter().map(|&z| m * z.tanh()).collect()
    }

    /// The policy's learned log σ [A], before the clamp to [−5, 2].
    pub fn policy_log_std(&self) -> &[f32] {
        &self.pi[self.pi_net.num_params()..]
    }

    pub fn config(&self) -> &IqlConfig {
        &self.cfg
    }

    /// Every parameter in the documented order (see [`Iql`]).
    pub fn to_flat(&self) -> Vec<f32> {
        [&self.q[..], &self.q_target, &self.v, &self.pi].concat()
    }

    /// The length [`Iql::to_flat`] gives for these shapes.
    pub fn flat_len(cfg: &IqlConfig, obs_dim: usize, action_dim: usize) -> usize {
        let z = Iql::zeros(cfg, obs_dim, action_dim);
        z.q.len() + z.q_target.len() + z.v.len() + z.pi.len()
    }

    /// The inverse of [`Iql::to_flat`]: Err naming both lengths when `flat` does not fit.
    pub fn from_flat(
        cfg: &IqlConfig,
        obs_dim: usize,
        action_dim: usize,
        flat: &[f32],
    ) -> Result<Iql, String> {
        cfg.validate().map_err(|e| format!("IQL config: {e}"))?;
        if obs_dim == 0 || action_dim == 0 {
            return Err(format!(
                "Iql::from_flat: obs_dim {obs_dim} and action_dim {action_dim} must be ≥ 1"
            ));
        }
        let mut iql = Iql::zeros(cfg, obs_dim, action_dim);
        let want = Iql::flat_len(cfg, obs_dim, action_dim);
        if flat.len() != want {
            return Err(format!(
                "Iql::from_flat: got {} values, want {want} (hidden {}, obs_dim {obs_dim}, \
                 action_dim {action_dim})",
                flat.len(),
                cfg.hidden
            ));
        }
        let mut rest = flat;
        for part in [&mut iql.q, &mut iql.q_target, &mut iql.v, &mut iql.pi] {
            let (head, tail) = rest.split_at(part.len());
            part.copy_from_slice(head);
            rest = tail;
        }
        Ok(iql)
    }
}

/// The three Adams and their one-block layouts (every block in `Group::Policy`).
struct Optimisers {
    q_layout: ParamLayout,
    v_layout: ParamLayout,
    pi_layout: ParamLayout,
    q: Adam,
    v: Adam,
    pi: Adam,
}

impl Optimisers {
    fn new(iql: &Iql) -> Self {
        let one_block = |name: &str, len: usize| {
            let mut l = ParamLayout::default();
            l.add(name, 1, len, Group::Policy);
            l
        };
        let q_layout = one_block("iql.q", iql.q.len());
        let v_layout = one_block("iql.v", iql.v.len());
        let pi_layout = one_block("iql.pi", iql.pi.len());
        Optimisers {
            q: Adam::new(&q_layout),
            v: Adam::new(&v_layout),
            pi: Adam::new(&pi_layout),
            q_layout,
            v_layout,
            pi_layout,
        }
    }
}

/// One minibatch, gathered: obs [B, S], actions [B, A], sa [B, S+A], rewards, terminals [B],
/// next_obs [B, S].
struct Batch {
    rows: usize,
    obs: Vec<f32>,
    actions: Vec<f32>,
    sa: Vec<f32>,
    rewards: Vec<f32>,
    next_obs: Vec<f32>,
    terminals: Vec<f32>,
}

impl Batch {
    /// `rows` indices uniform with replacement from stream (seed, "iql-batch", step).
    fn draw(data: &OfflineData, rows: usize, seed: u64, step: u64) -> Batch {
        let (s, a) = (data.obs_dim, data.action_dim);
        let n = data.len() as u32;
        let mut rng = rng::stream(seed, "iql-batch", step);
        let mut b = Batch {
            rows,
            obs: Vec::with_capacity(rows * s),
            actions: Vec::with_capacity(rows * a),
            sa: Vec::with_capacity(rows * (s + a)),
            rewards: Vec::with_capacity(rows),
            next_obs: Vec::with_capacity(rows * s),
            terminals: Vec::with_capacity(rows),
        };
        for _ in 0..rows {
            let i = rng::below(&mut rng, n) as usize;
            let (o, act) = (
                &data.obs[i * s..(i + 1) * s],
                &data.actions[i * a..(i + 1) * a],
            );
            b.obs.extend_from_slice(o);
            b.actions.extend_from_slice(act);
            b.sa.extend_from_slice(o);
            b.sa.extend_from_slice(act);
            b.rewards.push(data.rewards[i]);
            b.next_obs
                .extend_from_slice(&data.next_obs[i * s..(i + 1) * s]);
            b.terminals.push(data.terminals[i]);
        }
        b
    }
}

/// Elementwise min of two [B] columns.
fn row_min(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| x.min(y)).collect()
}

/// L_V = mean |τ − 1(u < 0)|·u², u = q − v [B]; returns (L_V, ∂L_V/∂v [B]). The loss is summed
/// in f64, rows ascending.
fn expectile_loss<S: Real>(q: &[S], v: &[S], tau: f64) -> (f64, Vec<S>) {
    let n = q.len() as f64;
    let mut loss = 0.0;
    let mut dv = Vec::with_capacity(q.len());
    for (&qi, &vi) in q.iter().zip(v) {
        let u = qi - vi;
        let w = if u < S::ZERO { 1.0 - tau } else { tau };
        loss += w * u.to_f64() * u.to_f64();
        dv.push(S::from_f64(-2.0 * w / n) * u);
    }
    (loss / n, dv)
}

/// L_Q = ½·[mean (q1 − y)² + mean (q2 − y)²] over [B]; returns (L_Q, ∂/∂q1, ∂/∂q2).
fn twin_mse_loss<S: Real>(q1: &[S], q2: &[S], y: &[S]) -> (f64, Vec<S>, Vec<S>) {
    let n = y.len() as f64;
    let scale = S::from_f64(1.0 / n);
    let mut loss = 0.0;
    let (mut d1, mut d2) = (Vec::with_capacity(y.len()), Vec::with_capacity(y.len()));
    for ((&a, &b), &t) in q1.iter().zip(q2).zip(y) {
        let (e1, e2) = (a - t, b - t);
        loss += e1.to_f64() * e1.to_f64() + e2.to_f64() * e2.to_f64();
        d1.push(scale * e1);
        d2.push(scale * e2);
    }
    (0.5 * loss / n, d1, d2)
}

/// AWR loss L_π = −mean_i w_i·log N(a_i; μ_i, diag σ²), μ = m·tanh(raw), σ = exp(clamp(log σ,
/// −5, 2)). raw, actions [B, A]; log_std [A]; weights [B]. Returns (L_π, ∂L/∂raw [B, A],
/// ∂L/∂log σ [A]); the clamp passes no gradient outside [−5, 2] (as `torch.clamp`). Sums run
/// rows ascending (the loss in f64).
fn awr_loss<S: Real>(
    raw: &[S],
    log_std: &[S],
    actions: &[S],
    weights: &[S],
    max_action: f64,
) -> (f64, Vec<S>, Vec<S>) {
    let a_dim = log_std.len();
    let rows = weights.len();
    let n = rows as f64;
    let m = S::from_f64(max_action);
    let (lo, hi) = (
        S::from_f64(LOG_STD_MIN as f64),
        S::from_f64(LOG_STD_MAX as f64),
    );
    let ls: Vec<S> = log_std.iter().map(|&l| l.max(lo).min(hi)).collect();
    let inv_var: Vec<S> = ls.iter().map(|&l| (-(l + l)).exp()).collect();
    let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let mut loss = 0.0;
    let mut draw = Vec::with_capacity(raw.len());
    let mut dls = vec![S::ZERO; a_dim];
    for r in 0..rows {
        let w = weights[r];
        let wn = w * S::from_f64(1.0 / n);
        let mut log_p = 0.0;
        for j in 0..a_dim {
            let t = raw[r * a_dim + j].tanh();
            let diff = actions[r * a_dim + j] - m * t;
            let z2 = diff * diff * inv_var[j];
            log_p += -0.5 * z2.to_f64() - ls[j].to_f64() - half_ln_2pi;
            // ∂L/∂μ = −(w/B)·(a − μ)/σ²; ∂μ/∂raw = m·(1 − tanh²).
            let dmu = -(wn * diff * inv_var[j]);
            draw.push(dmu * m * (S::ONE - t * t));
            // ∂L/∂log σ = −(w/B)·(z² − 1).
            dls[j] -= wn * (z2 - S::ONE);
        }
        loss -= w.to_f64() * log_p;
    }
    for (d, &l) in dls.iter_mut().zip(log_std) {
        if !(l >= lo && l <= hi) {
            *d = S::ZERO;
        }
    }
    (loss / n, draw, dls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences (f64) of a scalar function of one vector at `x`.
    fn fd(f: &dyn Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let (mut p, mut m) = (x.to_vec(), x.to_vec());
                p[i] += h;
                m[i] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect()
    }

    fn close(got: &[f64], want: &[f64], what: &str) {
        crate::tolerance::GRADCHECK_F64.assert_all_close(got, want, what);
    }

    #[test]
    fn expectile_gradient_matches_differences() {
        let q = [0.3, -1.2, 2.0, 0.5];
        let v = [0.1, -0.4, 2.5, 0.9];
        let (_, dv) = expectile_loss(&q, &v, 0.7);
        let want = fd(&|v| expectile_loss(&q, v, 0.7).0, &v, 1e-6);
        close(&dv, &want, "dL_V/dv");
    }

    #[test]
    fn twin_mse_gradient_matches_differences() {
        let (q1, q2, y) = ([0.3, -1.2, 2.0], [0.1, 0.7, -0.2], [1.0, 0.0, 0.5]);
        let (_, d1, d2) = twin_mse_loss(&q1, &q2, &y);
        close(
            &d1,
            &fd(&|q| twin_mse_loss(q, &q2, &y).0, &q1, 1e-6),
            "dL_Q/dq1",
        );
        close(
            &d2,
            &fd(&|q| twin_mse_loss(&q1, q, &y).0, &q2, 1e-6),
            "dL_Q/dq2",
        );
    }

    /// Both AWR gradients, with one log σ inside the clamp and one outside (gradient 0).
    #[test]
    fn awr_gradient_matches_differences() {
        let raw = [0.3, -1.2, 0.8, 0.1, -0.5, 1.5];
        let acts = [1.0, -0.5, 1.9, 0.2, -1.7, 0.0];
        let w = [0.5, 2.0, 1.3];
        for log_std in [[0.4, -1.1], [2.5, -0.3]] {
            let (_, draw, dls) = awr_loss(&raw, &log_std, &acts, &w, 2.0);
            let want = fd(&|r| awr_loss(r, &log_std, &acts, &w, 2.0).0, &raw, 1e-6);
            close(&draw, &want, "dL_pi/draw");
            let want = fd(&|l| awr_loss(&raw, l, &acts, &w, 2.0).0, &log_std, 1e-6);
            close(&dls, &want, "dL_pi/dlog_std");
        }
    }

    /// The loss itself: −log N(a; μ, σ²) written out for one row, one dim.
    #[test]
    fn awr_loss_is_the_gaussian_nll() {
        let (raw, ls, a) = (0.4f64, -0.3f64, 1.1f64);
        let mu = 2.0 * raw.tanh();
        let sigma = ls.exp();
        let nll = 0.5 * ((a - mu) / sigma).powi(2) + ls + 0.5 * (2.0 * std::f64::consts::PI).ln();
        let (loss, _, _) = awr_loss(&[raw], &[ls], &[a], &[1.5], 2.0);
        assert!((loss - 1.5 * nll).abs() < 1e-12, "{loss} vs {}", 1.5 * nll);
    }
}

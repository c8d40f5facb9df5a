//! Adam with per-group learning rates, PyTorch semantics (spec §8.1).

use super::layout::{Group, ParamLayout};

/// A run of parameters that steps at its own learning rate (the learned log-variance head,
/// `train.lr_variance_factor`).
#[derive(Clone, Debug, PartialEq)]
pub struct LrOverride {
    /// Absolute indices into the flat parameter vector.
    pub range: std::ops::Range<usize>,
    pub lr: f64,
}

/// Adam state over a flat parameter vector. β = (0.9, 0.999), ε = 1e−8, no weight decay.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// First and second moments, one per parameter.
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Steps taken per block (a block that gets no gradient keeps its count, as PyTorch's
    /// per-parameter `step` does when `grad is None`).
    pub steps: Vec<u64>,
}

impl Adam {
    pub fn new(layout: &ParamLayout) -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; layout.len()],
            v: vec![0.0; layout.len()],
            steps: vec![0; layout.specs.len()],
        }
    }

    /// One step: `lr(group)` gives each group's learning rate; blocks whose group is in `frozen`
    /// received no gradient this step and are left untouched (moments included).
    pub fn step(
        &mut self,
        layout: &ParamLayout,
        params: &mut [f32],
        grads: &[f32],
        lr: &dyn Fn(Group) -> f64,
        frozen: &[Group],
    ) {
        self.step_with_overrides(layout, params, grads, lr, frozen, &[]);
    }

    /// [`Self::step`], except that the parameters in each override's range (absolute indices,
    /// possibly part of a block) step at that override's rate. They share their block's step
    /// count, so the bias corrections are their block's. With no overrides this is `step`,
    /// bit for bit.
    pub fn step_with_overrides(
        &mut self,
        layout: &ParamLayout,
        params: &mut [f32],
        grads: &[f32],
        lr: &dyn Fn(Group) -> f64,
        frozen: &[Group],
        overrides: &[LrOverride],
    ) {
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        for (bi, spec) in layout.specs.iter().enumerate() {
            if frozen.contains(&spec.group) {
                continue;
            }
            self.steps[bi] += 1;
            let t = self.steps[bi] as i32;
            let bc1 = 1.0 - self.beta1.powi(t);
            let bc2 = 1.0 - self.beta2.powi(t);
            let step_size = (lr(spec.group) / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let eps = self.eps as f32;
            for i in spec.range() {
                let step_size = match overrides.iter().find(|o| o.range.contains(&i)) {
                    Some(o) => (o.lr / bc1) as f32,
                    None => step_size,
                };
                let g = grads[i];
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
                let denom = self.v[i].sqrt() / bc2_sqrt + eps;
                params[i] -= step_size * self.m[i] / denom;
            }
        }
    }
}

/// Scale `grads` so their global L2 norm is at most `max_norm` (PyTorch `clip_grad_norm_`:
/// factor max_norm / (norm + 1e−6) when norm > max_norm). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt();
    if norm > max_norm {
        let scale = (max_norm / (norm + 1e-6)) as f32;
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    norm
}

/// PyTorch `CosineAnnealingLR` in closed form: the learning rate of update `step` of `total`,
/// from `lr` at step 0 to `lr_final` (η_min) at step `total`.
pub fn cosine_lr(lr: f64, lr_final: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    lr_final + 0.5 * (lr - lr_final) * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_lr_runs_from_lr_to_its_floor() {
        assert_eq!(cosine_lr(3e-4, 0.0, 0, 100), 3e-4);
        assert!((cosine_lr(3e-4, 0.0, 50, 100) - 1.5e-4).abs() < 1e-18);
        assert!(cosine_lr(3e-4, 0.0, 100, 100).abs() < 1e-18);
        assert!((cosine_lr(5e-4, 1e-4, 50, 100) - 3e-4).abs() < 1e-18);
        assert!((cosine_lr(5e-4, 1e-4, 100, 100) - 1e-4).abs() < 1e-18);
    }

    /// Two steps of Adam on one parameter, against the update written out by hand.
    #[test]
    fn matches_hand_computed_updates() {
        let mut layout = ParamLayout::default();
        layout.add("w", 1, 1, Group::Policy);
        let mut adam = Adam::new(&layout);
        let mut p = [1.0f32];
        let lr = |_: Group| 0.1;
        adam.step(&layout, &mut p, &[0.5], &lr, &[]);
        // m̂ = 0.5, v̂ = 0.25 → step = 0.1·0.5/(0.5 + 1e−8).
        // f32 arithmetic: (1 − β₁) alone is off by 2.4e−8 relative; allow a few f32 ulps of 0.9.
        assert!(
            (p[0] as f64 - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 2e-6,
            "{}",
            p[0]
        );
        adam.step(&layout, &mut p, &[-1.0], &lr, &[]);
        let m: f64 = 0.9 * 0.05 - 0.1;
        let v: f64 = 0.999 * 0.000_25 + 0.001 * 1.0;
        let mhat = m / (1.0 - 0.81);
        let vhat_sqrt = v.sqrt() / (1.0f64 - 0.998_001).sqrt();
        let want = 0.9 - 0.1 * mhat / (vhat_sqrt + 1e-8);
        assert!((p[0] as f64 - want).abs() < 2e-6, "{} vs {want}", p[0]);
    }

    /// The overridden slice of a block takes its first step at its own rate (Adam's first step
    /// is ±lr to within ε), the rest of the block at the group's; no overrides is `step`.
    #[test]
    fn an_override_steps_part_of_a_block_at_its_own_rate() {
        let mut layout = ParamLayout::default();
        layout.add("w", 2, 2, Group::Policy);
        let grads = [1.0f32, -2.0, 0.5, -0.25];
        let mut a = Adam::new(&layout);
        let mut p = [0.0f32; 4];
        let over = [LrOverride {
            range: 2..4,
            lr: 1e-4,
        }];
        a.step_with_overrides(&layout, &mut p, &grads, &|_| 1e-2, &[], &over);
        let want = [-1e-2, 1e-2, -1e-4, 1e-4];
        for (got, want) in p.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-4 * want.abs(), "{p:?}");
        }
        let (mut b, mut q, mut r) = (Adam::new(&layout), [0.0f32; 4], [0.0f32; 4]);
        let mut c = Adam::new(&layout);
        b.step(&layout, &mut q, &grads, &|_| 1e-2, &[]);
        c.step_with_overrides(&layout, &mut r, &grads, &|_| 1e-2, &[], &[]);
        assert_eq!(q.map(f32::to_bits), r.map(f32::to_bits));
        assert_eq!(b, c);
    }

    #[test]
    fn frozen_groups_are_untouched() {
        let mut layout = ParamLayout::default();
        layout.add("w", 1, 2, Group::Policy);
        layout.add("log_z", 1, 1, Group::Flow);
        let mut adam = Adam::new(&layout);
        let mut p = [1.0f32, 2.0, 3.0];
        adam.step(&layout, &mut p, &[1.0, 1.0, 1.0], &|_| 0.01, &[Group::Flow]);
        assert_eq!(p[2], 3.0);
        assert_eq!(adam.m[2], 0.0);
        assert_eq!(adam.steps, vec![1, 0]);
        assert!(p[0] < 1.0 && p[1] < 2.0);
    }

    #[test]
    fn clip_scales_to_max_norm() {
        let mut g = [3.0f32, 4.0];
        let n = clip_grad_norm(&mut g, 1.0);
        assert_eq!(n, 5.0);
        let after = ((g[0] * g[0] + g[1] * g[1]) as f64).sqrt();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }
}

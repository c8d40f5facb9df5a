//! A dense ReLU MLP with a hand-written backward, for the offline-RL critics and policy (IQL,
//! spec rtb2024 §4.2, §6.3): Linear → ReLU → … → Linear, the output linear.
//!
//! The drift nets run on the tape; these small nets do not, because IQL takes ~10⁵ steps of
//! three networks and the RTB log-reward asks for ∂Q/∂a at every diffusion step, where a tape's
//! node bookkeeping would cost more than the matmuls. Forward keeps every layer's
//! pre-activation; backward walks the layers in reverse (llm.c style) and gives both the
//! parameter gradient and the input gradient.
//!
//! Every matmul is a [`Kernels`] linear kernel (AVX2 for f32, bitwise equal to the scalar
//! reference), so a pass is deterministic and the same at f32 and, to rounding, at f64 — the
//! precision of the gradient checks. ReLU is a plain elementwise loop here: max(0, x) and its
//! mask are exact in any order, so it needs no reference/SIMD kernel pair.
//!
//! Parameters live in one flat vector (so Adam, EMA and saving see one buffer), layer by layer
//! in PyTorch `state_dict` order: [W₀ (O₀×K₀, row-major), b₀ (O₀), W₁, b₁, …]; the input of
//! layer l has K_l = sizes[l] features and its output O_l = sizes[l + 1].
//!
//! Shapes: B rows, K inputs of a layer, O outputs of a layer; `x` [B, sizes[0]], output
//! [B, sizes[L]].

use crate::cpu::Kernels;
use crate::rng;

/// Layer widths of a dense ReLU MLP: `sizes[0]` inputs, `sizes[L]` outputs, L linear layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    pub sizes: Vec<usize>,
}

/// One forward pass: the pre-activation of every layer (the last one is the output) and the
/// ReLU output of every hidden layer, what backward needs.
#[derive(Clone, Debug)]
pub struct Pass<S> {
    pub rows: usize,
    /// `pre[l]` [B, O_l]: x_l·W_lᵀ + b_l.
    pub pre: Vec<Vec<S>>,
    /// `post[l]` [B, O_l] = max(0, pre[l]) for the hidden layers l < L − 1.
    pub post: Vec<Vec<S>>,
}

impl<S> Pass<S> {
    /// The network output [B, sizes[L]].
    pub fn output(&self) -> &[S] {
        self.pre.last().expect("an MLP has at least one layer")
    }
}

impl Mlp {
    /// An MLP with these widths (at least an input and an output width).
    pub fn new(sizes: &[usize]) -> Self {
        assert!(
            sizes.len() >= 2,
            "Mlp needs at least input and output widths: {sizes:?}"
        );
        Mlp {
            sizes: sizes.to_vec(),
        }
    }

    /// L, the number of linear layers.
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    pub fn input_dim(&self) -> usize {
        self.sizes[0]
    }

    pub fn output_dim(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// P, the length of the flat parameter vector.
    pub fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    /// Offsets of layer `l`'s weight [O, K] and bias [O] in the flat vector.
    pub fn offsets(&self, l: usize) -> (usize, usize) {
        let w_off: usize = self.sizes[..l + 1]
            .windows(2)
            .map(|w| w[1] * w[0] + w[1])
            .sum();
        (w_off, w_off + self.sizes[l + 1] * self.sizes[l])
    }

    /// PyTorch's default `nn.Linear` init: weights and biases U(−1/√K, 1/√K), layer l drawn
    /// from stream (seed, purpose, l), weights row-major first, then the biases.
    pub fn init(&self, seed: u64, purpose: &str) -> Vec<f32> {
        let mut p = Vec::with_capacity(self.num_params());
        for l in 0..self.layers() {
            let (k, o) = (self.sizes[l], self.sizes[l + 1]);
            let bound = 1.0 / (k as f64).sqrt();
            let mut rng = rng::stream(seed, purpose, l as u64);
            for _ in 0..o * k + o {
                p.push(((2.0 * rng::uniform_f64(&mut rng) - 1.0) * bound) as f32);
            }
        }
        debug_assert_eq!(p.len(), self.num_params());
        p
    }

    /// Forward `rows` rows of `x` [B, sizes[0]], keeping what backward needs.
    pub fn forward<S: Kernels>(&self, params: &[S], x: &[S], rows: usize) -> Pass<S> {
        assert_eq!(
            params.len(),
            self.num_params(),
            "Mlp::forward: params length"
        );
        assert_eq!(
            x.len(),
            rows * self.input_dim(),
            "Mlp::forward: x is not [B, in]"
        );
        let last = self.layers() - 1;
        let mut pre = Vec::with_capacity(self.layers());
        let mut post: Vec<Vec<S>> = Vec::with_capacity(last);
        for l in 0..self.layers() {
            let (k, o) = (self.sizes[l], self.sizes[l + 1]);
            let (w_off, b_off) = self.offsets(l);
            let input = if l == 0 { x } else { &post[l - 1][..] };
            let mut y = vec![S::ZERO; rows * o];
            S::linear_forward(
                input,
                &params[w_off..b_off],
                &params[b_off..b_off + o],
                &mut y,
                rows,
                k,
                o,
            );
            if l < last {
                post.push(y.iter().map(|&v| relu(v)).collect());
            }
            pre.push(y);
        }
        Pass { rows, pre, post }
    }

    /// Backward of a pass given dy = ∂L/∂output [B, sizes[L]]: returns (∂L/∂params [P],
    /// ∂L/∂x [B, sizes[0]]).
    pub fn backward<S: Kernels>(
        &self,
        params: &[S],
        pass: &Pass<S>,
        x: &[S],
        dy: &[S],
    ) -> (Vec<S>, Vec<S>) {
        let mut grads = vec![S::ZERO; self.num_params()];
        let dx = self.backward_acc(params, pass, x, dy, Some(&mut grads));
        (grads, dx)
    }

    /// Backward of a pass: ADDS ∂L/∂params into `grads` when given (skipping every weight
    /// gradient when `None`, for callers that want only ∂L/∂x) and returns ∂L/∂x [B, sizes[0]].
    /// Per element the order is the kernels' (rows ascending), so the result is deterministic.
    pub fn backward_acc<S: Kernels>(
        &self,
        params: &[S],
        pass: &Pass<S>,
        x: &[S],
        dy: &[S],
        mut grads: Option<&mut [S]>,
    ) -> Vec<S> {
        let rows = pass.rows;
        assert_eq!(
            params.len(),
            self.num_params(),
            "Mlp::backward: params length"
        );
        assert_eq!(
            x.len(),
            rows * self.input_dim(),
            "Mlp::backward: x is not [B, in]"
        );
        assert_eq!(
            dy.len(),
            rows * self.output_dim(),
            "Mlp::backward: dy is not [B, out]"
        );
        if let Some(g) = grads.as_deref() {
            assert_eq!(g.len(), self.num_params(), "Mlp::backward: grads length");
        }
        // g: ∂L/∂pre[l] [B, O_l], walking l downwards.
        let mut g = dy.to_vec();
        for l in (0..self.layers()).rev() {
            let (k, o) = (self.sizes[l], self.sizes[l + 1]);
            let (w_off, b_off) = self.offsets(l);
            let input = if l == 0 { x } else { &pass.post[l - 1][..] };
            if let Some(grads) = grads.as_deref_mut() {
                let (dw, db) = grads[w_off..b_off + o].split_at_mut(o * k);
                S::linear_backward_dw(&g, input, dw, db, rows, k, o);
            }
            let mut dx = vec![S::ZERO; rows * k];
            S::linear_backward_dx(&g, &params[w_off..b_off], &mut dx, rows, k, o);
            if l > 0 {
                // ReLU mask: the derivative of max(0, p) is 1(p > 0) (0 at the kink, as PyTorch).
                // A select, not a conditional store, so it compiles to a vector blend.
                for (d, &p) in dx.iter_mut().zip(&pass.pre[l - 1]) {
                    *d = if p > S::ZERO { *d } else { S::ZERO };
                }
            }
            g = dx;
        }
        g
    }
}

/// max(0, x), exact in any order (no kernel pair needed). NaN stays NaN, as in PyTorch, so a
/// diverging run shows up in its loss instead of being masked.
#[inline]
fn relu<S: Kernels>(v: S) -> S {
    if v <= S::ZERO {
        S::ZERO
    } else {
        v
    }
}

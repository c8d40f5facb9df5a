//! Every differentiable op: its forward (a `Tape` method) and its VJP (`Op::vjp`), side by side.
//!
//! Shapes: B rows (trajectories), D state dim, H hidden width, F harmonics, T steps.

use super::tape::{accumulate, grad_slot, Node, Tape, Var};
use crate::cpu::Kernels;
use crate::tensor::Tensor;

/// How a node was made: its op, its inputs, and the constants its VJP needs.
#[derive(Debug, Clone)]
pub enum Op<S> {
    /// A parameter or a constant.
    Leaf,
    /// y[B,O] = x[B,K]·w[O,K]ᵀ + b[1,O].
    Linear { x: Var, w: Var, b: Var },
    /// y = GELU(x), exact erf form; `deriv` = GELU'(x), computed in the forward pass so the
    /// backward is one multiply (and x's value need not be kept).
    Gelu { x: Var, deriv: Tensor<S> },
    /// y[B,H] = LayerNorm(x)·γ + β per row (γ, β [1,H]); the per-row μ and rstd [B] are
    /// kept for the VJP, which also reads x.
    LayerNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Vec<S>,
        rstd: Vec<S>,
    },
    /// y[B,H] = x[B,H] + src[row, :] broadcast over rows (the time embedding of one step).
    AddRow { x: Var, src: Var, row: usize },
    /// y[T,2F] = [sin(t·f + φ), cos(t·f + φ)]; only φ ([1,F]) is learned.
    TimeFeatures {
        phase: Var,
        t: Vec<S>,
        freqs: Vec<S>,
    },
    /// Langevin parametrization: y = o, then y[:, :D] += s[row, ·] ⊙ g, with g [B,D] a constant
    /// (clipped ∇log R) and s [R, 1] (scalar per step) or [R, D].
    LangevinAdd {
        o: Var,
        scale: Var,
        row: usize,
        grad: Var,
    },
    /// y = clamp(x, −limit, limit); the gradient passes where −limit ≤ x ≤ limit (PyTorch).
    Clip { x: Var, limit: S },
    /// Per-row Euler–Maruyama transition log-density, y[B,1] = Σ_j log N(x'_j; x_j + u_j·dt,
    /// dt·e^{ℓ_j}), with u = o[:, :D] and ℓ = log σ² (fixed) or log σ² + range·tanh(o[:, D:2D]).
    EmLogPf {
        o: Var,
        x: Var,
        x_next: Var,
        dt: S,
        log_sigma2: S,
        learned_range: Option<S>,
    },
    /// The reparametrised Euler–Maruyama step (PIS): y[B,D] = x + u·dt + √(dt·e^ℓ)·ξ, with
    /// ξ [B,D] a constant draw and u, ℓ read from o as in [`Op::EmLogPf`].
    EmStep {
        o: Var,
        x: Var,
        noise: Tensor<S>,
        dt: S,
        log_sigma2: S,
        learned_range: Option<S>,
    },
    /// Per-row Brownian-bridge log-density y[B,1] = Σ_j log N(x_j; ratio·x'_j, var), the
    /// fixed backward policy p_B(x_i | x_{i+1}) with ratio = i/(i+1), var = σ²·dt·ratio.
    BridgeLogPb {
        x: Var,
        x_next: Var,
        ratio: S,
        var: S,
    },
    /// y = a + b, same shapes.
    Add { a: Var, b: Var },
    /// y = c·x for a constant c.
    Scale { x: Var, c: S },
    /// y[B,D] = a·x + b·o[:, :D], constants a and b: the DDPM x̂0 from the ε-head o.
    AffineHead { x: Var, o: Var, a: S, b: S },
    /// y[B,K] = [u ; o[:, D:]] for u [B,D] and o [B,K]: a new head on o's extra columns (a
    /// DDPM's drift from ε, keeping the learned log-variance beside it).
    ReplaceHead { o: Var, u: Var, d: usize },
    /// A per-row scalar function computed outside the tape (log R(x)): y[B,1] is given, and so
    /// is its Jacobian `jac` [B,D] = ∂y_b/∂x_b, which the VJP applies.
    RowFunction { x: Var, jac: Tensor<S> },
}

impl<S: Kernels> Tape<S> {
    /// y[B,O] = x[B,K]·w[O,K]ᵀ + b[1,O].
    pub fn linear(&mut self, x: Var, w: Var, b: Var) -> Var {
        let (xv, wv, bv) = (self.value(x), self.value(w), self.value(b));
        let (rows, k) = xv.shape();
        let o = wv.rows;
        assert_eq!(
            wv.cols, k,
            "linear: x has {k} columns, w is {}×{}",
            wv.rows, wv.cols
        );
        assert_eq!(bv.len(), o, "linear: bias length {} ≠ {o}", bv.len());
        let mut y = Tensor::zeros(rows, o);
        S::linear_forward(&xv.data, &wv.data, &bv.data, &mut y.data, rows, k, o);
        let ng = self.needs_grad(x) || self.needs_grad(w) || self.needs_grad(b);
        self.push(Op::Linear { x, w, b }, y, ng)
    }

    pub fn gelu(&mut self, x: Var) -> Var {
        let xv = self.value(x);
        let mut y = Tensor::zeros(xv.rows, xv.cols);
        let mut deriv = Tensor::zeros(xv.rows, xv.cols);
        S::gelu_forward_deriv(&xv.data, &mut y.data, &mut deriv.data);
        let ng = self.needs_grad(x);
        self.push(Op::Gelu { x, deriv }, y, ng)
    }

    /// [`Tape::gelu`] where the GELU is the *only* consumer of x (a pre-activation): x's value
    /// is released at once, so a GELU layer costs one stored derivative, not a stored input.
    /// Reading x afterwards panics.
    pub fn gelu_consuming(&mut self, x: Var) -> Var {
        let y = self.gelu(x);
        self.release(x);
        y
    }

    /// y[B,H] = LayerNorm(x)·γ + β over each row of x (ε = 1e-5, biased variance, as
    /// PyTorch's `nn.LayerNorm(H)`); γ and β are [1,H].
    pub fn layer_norm(&mut self, x: Var, gamma: Var, beta: Var) -> Var {
        let (xv, gv, bv) = (self.value(x), self.value(gamma), self.value(beta));
        let (rows, h) = xv.shape();
        assert_eq!(gv.len(), h, "layer_norm: gamma length {} ≠ {h}", gv.len());
        assert_eq!(bv.len(), h, "layer_norm: beta length {} ≠ {h}", bv.len());
        let mut y = Tensor::zeros(rows, h);
        let (mut mean, mut rstd) = (vec![S::ZERO; rows], vec![S::ZERO; rows]);
        S::layer_norm_forward(
            &xv.data,
            &gv.data,
            &bv.data,
            &mut y.data,
            &mut mean,
            &mut rstd,
            rows,
            h,
        );
        let ng = self.needs_grad(x) || self.needs_grad(gamma) || self.needs_grad(beta);
        self.push(
            Op::LayerNorm {
                x,
                gamma,
                beta,
                mean,
                rstd,
            },
            y,
            ng,
        )
    }

    pub fn add_row(&mut self, x: Var, src: Var, row: usize) -> Var {
        let (xv, sv) = (self.value(x), self.value(src));
        assert_eq!(xv.cols, sv.cols, "add_row: widths differ");
        let r = sv.row(row);
        let mut y = xv.clone();
        for yr in y.data.chunks_exact_mut(xv.cols) {
            for (a, &b) in yr.iter_mut().zip(r) {
                *a += b;
            }
        }
        let ng = self.needs_grad(x) || self.needs_grad(src);
        self.push(Op::AddRow { x, src, row }, y, ng)
    }

    pub fn time_features(&mut self, phase: Var, t: Vec<S>, freqs: Vec<S>) -> Var {
        let f = freqs.len();
        assert_eq!(self.value(phase).len(), f, "time_features: phase length");
        let mut y = Tensor::zeros(t.len(), 2 * f);
        S::time_features(&t, &freqs, &self.value(phase).data, &mut y.data);
        let ng = self.needs_grad(phase);
        self.push(Op::TimeFeatures { phase, t, freqs }, y, ng)
    }

    pub fn langevin_add(&mut self, o: Var, scale: Var, row: usize, grad: Var) -> Var {
        let (ov, sv, gv) = (self.value(o), self.value(scale), self.value(grad));
        let d = gv.cols;
        assert!(ov.cols >= d && gv.rows == ov.rows, "langevin_add: shapes");
        assert!(sv.cols == 1 || sv.cols == d, "langevin_add: scale width");
        let s = sv.row(row);
        let mut y = ov.clone();
        for (yr, gr) in y
            .data
            .chunks_exact_mut(ov.cols)
            .zip(gv.data.chunks_exact(d))
        {
            for j in 0..d {
                let sj = if s.len() == 1 { s[0] } else { s[j] };
                yr[j] += sj * gr[j];
            }
        }
        let ng = self.needs_grad(o) || self.needs_grad(scale) || self.needs_grad(grad);
        self.push(
            Op::LangevinAdd {
                o,
                scale,
                row,
                grad,
            },
            y,
            ng,
        )
    }

    pub fn clip(&mut self, x: Var, limit: S) -> Var {
        let xv = self.value(x);
        let mut y = xv.clone();
        for v in &mut y.data {
            *v = v.max(-limit).min(limit);
        }
        let ng = self.needs_grad(x);
        self.push(Op::Clip { x, limit }, y, ng)
    }

    /// Per-row log p_F of the transition x → x_next under the policy output `o` (see [`Op::EmLogPf`]).
    pub fn em_logpf(
        &mut self,
        o: Var,
        x: Var,
        x_next: Var,
        dt: S,
        log_sigma2: S,
        learned_range: Option<S>,
    ) -> Var {
        let (ov, xv, nv) = (self.value(o), self.value(x), self.value(x_next));
        let d = xv.cols;
        let need = if learned_range.is_some() { 2 * d } else { d };
        assert!(
            ov.cols >= need,
            "em_logpf: policy output has {} columns, needs {need}",
            ov.cols
        );
        assert_eq!(xv.shape(), nv.shape(), "em_logpf: state shapes");
        let mut y = Tensor::zeros(xv.rows, 1);
        let (half, tau) = (S::from_f64(0.5), S::from_f64(std::f64::consts::TAU));
        // With a fixed variance, var and the normalising term are the same for every element.
        let fixed_var = dt * log_sigma2.exp();
        let fixed_norm = half * (tau * fixed_var).ln();
        for b in 0..xv.rows {
            let (orow, xr, nr) = (ov.row(b), xv.row(b), nv.row(b));
            let mut acc = S::ZERO;
            for j in 0..d {
                let (var, norm) = match learned_range {
                    None => (fixed_var, fixed_norm),
                    Some(_) => {
                        let var = dt * log_var(orow, d, j, log_sigma2, learned_range).exp();
                        (var, half * (tau * var).ln())
                    }
                };
                let r = nr[j] - xr[j] - orow[j] * dt;
                acc += -half * r * r / var - norm;
            }
            y.data[b] = acc;
        }
        let ng = self.needs_grad(o) || self.needs_grad(x) || self.needs_grad(x_next);
        self.push(
            Op::EmLogPf {
                o,
                x,
                x_next,
                dt,
                log_sigma2,
                learned_range,
            },
            y,
            ng,
        )
    }

    /// x_next = x + u·dt + √(dt·e^ℓ)·ξ with gradient to the policy output and to x (the PIS
    /// rollout, where the states themselves depend on θ).
    pub fn em_step(
        &mut self,
        o: Var,
        x: Var,
        noise: Tensor<S>,
        dt: S,
        log_sigma2: S,
        learned_range: Option<S>,
    ) -> Var {
        let (ov, xv) = (self.value(o), self.value(x));
        let d = xv.cols;
        assert_eq!(noise.shape(), xv.shape(), "em_step: noise shape");
        let mut y = xv.clone();
        for b in 0..xv.rows {
            let orow = ov.row(b);
            let yr = y.row_mut(b);
            for j in 0..d {
                let std = (dt * log_var(orow, d, j, log_sigma2, learned_range).exp()).sqrt();
                yr[j] = yr[j] + orow[j] * dt + std * noise.data[b * d + j];
            }
        }
        let ng = self.needs_grad(o) || self.needs_grad(x);
        self.push(
            Op::EmStep {
                o,
                x,
                noise,
                dt,
                log_sigma2,
                learned_range,
            },
            y,
            ng,
        )
    }

    /// log p_B(x | x_next) of the Brownian bridge per row (see [`Op::BridgeLogPb`]).
    pub fn bridge_logpb(&mut self, x: Var, x_next: Var, ratio: S, var: S) -> Var {
        let (xv, nv) = (self.value(x), self.value(x_next));
        assert_eq!(xv.shape(), nv.shape(), "bridge_logpb: state shapes");
        let half = S::from_f64(0.5);
        let norm = half * (S::from_f64(std::f64::consts::TAU) * var).ln();
        let mut y = Tensor::zeros(xv.rows, 1);
        for b in 0..xv.rows {
            let mut acc = S::ZERO;
            for (&a, &n) in xv.row(b).iter().zip(nv.row(b)) {
                let r = a - ratio * n;
                acc += -half * r * r / var - norm;
            }
            y.data[b] = acc;
        }
        let ng = self.needs_grad(x) || self.needs_grad(x_next);
        self.push(
            Op::BridgeLogPb {
                x,
                x_next,
                ratio,
                var,
            },
            y,
            ng,
        )
    }

    /// y = a + b (same shapes).
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let (av, bv) = (self.value(a), self.value(b));
        assert_eq!(av.shape(), bv.shape(), "add: shapes differ");
        let mut y = av.clone();
        for (v, &w) in y.data.iter_mut().zip(&bv.data) {
            *v += w;
        }
        let ng = self.needs_grad(a) || self.needs_grad(b);
        self.push(Op::Add { a, b }, y, ng)
    }

    /// y[B,D] = a·x + b·o[:, :D] (`o` may carry more columns, e.g. an unused log-variance).
    pub fn affine_head(&mut self, x: Var, o: Var, a: S, b: S) -> Var {
        let (xv, ov) = (self.value(x), self.value(o));
        let d = xv.cols;
        assert!(ov.rows == xv.rows && ov.cols >= d, "affine_head: shapes");
        let mut y = xv.clone();
        for (r, yr) in y.data.chunks_exact_mut(d).enumerate() {
            for (v, &e) in yr.iter_mut().zip(&ov.row(r)[..d]) {
                *v = a * *v + b * e;
            }
        }
        let ng = self.needs_grad(x) || self.needs_grad(o);
        self.push(Op::AffineHead { x, o, a, b }, y, ng)
    }

    /// y[B,K] = [u ; o[:, D:]]: `o` (`[B, K]`) with its first D columns replaced by `u`
    /// (`[B, D]`, D ≤ K).
    pub fn replace_head(&mut self, o: Var, u: Var) -> Var {
        let (ov, uv) = (self.value(o), self.value(u));
        let d = uv.cols;
        assert!(ov.rows == uv.rows && ov.cols >= d, "replace_head: shapes");
        let mut y = ov.clone();
        for (yr, ur) in y
            .data
            .chunks_exact_mut(ov.cols)
            .zip(uv.data.chunks_exact(d))
        {
            yr[..d].copy_from_slice(ur);
        }
        let ng = self.needs_grad(o) || self.needs_grad(u);
        self.push(Op::ReplaceHead { o, u, d }, y, ng)
    }

    /// y = c·x.
    pub fn scale(&mut self, x: Var, c: S) -> Var {
        let mut y = self.value(x).clone();
        for v in &mut y.data {
            *v *= c;
        }
        let ng = self.needs_grad(x);
        self.push(Op::Scale { x, c }, y, ng)
    }

    /// A per-row function of x evaluated elsewhere: `values` [B,1] and `jac` [B,D].
    pub fn row_function(&mut self, x: Var, values: Tensor<S>, jac: Tensor<S>) -> Var {
        let xv = self.value(x);
        assert_eq!(jac.shape(), xv.shape(), "row_function: Jacobian shape");
        assert_eq!(values.shape(), (xv.rows, 1), "row_function: values shape");
        let ng = self.needs_grad(x);
        self.push(Op::RowFunction { x, jac }, values, ng)
    }
}

/// ℓ_j: the per-dimension log-variance per unit time.
#[inline]
fn log_var<S: Kernels>(orow: &[S], d: usize, j: usize, log_sigma2: S, range: Option<S>) -> S {
    match range {
        None => log_sigma2,
        Some(r) => log_sigma2 + r * orow[d + j].tanh(),
    }
}

impl<S: Kernels> Op<S> {
    /// Add this node's contribution to its inputs' gradients. `nodes` holds every earlier node;
    /// `y` is this node's value and `g` = ∂L/∂y.
    pub(crate) fn vjp(
        &self,
        nodes: &[Node<S>],
        _y: &Tensor<S>,
        g: Tensor<S>,
        grads: &mut [Option<Tensor<S>>],
    ) {
        let ng = |v: Var| nodes[v.0].needs_grad;
        match self {
            Op::Leaf => {}
            Op::Linear { x, w, b } => {
                let (xv, wv) = (nodes[x.0].live_value(), nodes[w.0].live_value());
                let (rows, k, o) = (xv.rows, xv.cols, wv.rows);
                if ng(*x) {
                    let mut dx = Tensor::zeros(rows, k);
                    S::linear_backward_dx(&g.data, &wv.data, &mut dx.data, rows, k, o);
                    accumulate(&mut grads[x.0], dx);
                }
                if ng(*w) || ng(*b) {
                    // Both slots exist after this; the kernel accumulates into them in row order.
                    grad_slot(grads, nodes, *w);
                    grad_slot(grads, nodes, *b);
                    let mut dw = grads[w.0].take().expect("slot");
                    let mut db = grads[b.0].take().expect("slot");
                    S::linear_backward_dw(
                        &g.data,
                        &xv.data,
                        &mut dw.data,
                        &mut db.data,
                        rows,
                        k,
                        o,
                    );
                    grads[w.0] = Some(dw);
                    grads[b.0] = Some(db);
                }
            }
            Op::Gelu { x, deriv } => {
                // dx = dy · GELU'(x): bitwise what `S::gelu_backward` computes from x.
                let mut dx = g;
                for (d, &k) in dx.data.iter_mut().zip(&deriv.data) {
                    *d *= k;
                }
                accumulate(&mut grads[x.0], dx);
            }
            Op::LayerNorm {
                x,
                gamma,
                beta,
                mean,
                rstd,
            } => {
                let (xv, gv) = (nodes[x.0].live_value(), nodes[gamma.0].live_value());
                let (rows, h) = xv.shape();
                // The kernel accumulates dγ and dβ in row order and overwrites dx; the slots
                // exist after this even when γ and β are constants (their gradients unused).
                grad_slot(grads, nodes, *gamma);
                grad_slot(grads, nodes, *beta);
                let mut dg = grads[gamma.0].take().expect("slot");
                let mut db = grads[beta.0].take().expect("slot");
                let mut dx = Tensor::zeros(rows, h);
                S::layer_norm_backward(
                    &xv.data,
                    &gv.data,
                    mean,
                    rstd,
                    &g.data,
                    &mut dx.data,
                    &mut dg.data,
                    &mut db.data,
                    rows,
                    h,
                );
                grads[gamma.0] = Some(dg);
                grads[beta.0] = Some(db);
                if ng(*x) {
                    accumulate(&mut grads[x.0], dx);
                }
            }
            Op::AddRow { x, src, row } => {
                if ng(*src) {
                    let cols = g.cols;
                    let slot = grad_slot(grads, nodes, *src);
                    S::col_sum_acc(
                        &g.data,
                        &mut slot.data[row * cols..(row + 1) * cols],
                        g.rows,
                        cols,
                    );
                }
                if ng(*x) {
                    accumulate(&mut grads[x.0], g);
                }
            }
            Op::TimeFeatures { phase, t, freqs } => {
                let pv = nodes[phase.0].live_value();
                let slot = grad_slot(grads, nodes, *phase);
                S::time_features_backward(t, freqs, &pv.data, &g.data, &mut slot.data);
            }
            Op::LangevinAdd {
                o,
                scale,
                row,
                grad,
            } => {
                if ng(*scale) {
                    let gv = nodes[grad.0].live_value();
                    let d = gv.cols;
                    let slot = grad_slot(grads, nodes, *scale);
                    let sc = slot.cols;
                    let srow = &mut slot.data[row * sc..(row + 1) * sc];
                    for (gr, cr) in g.data.chunks_exact(g.cols).zip(gv.data.chunks_exact(d)) {
                        for j in 0..d {
                            let idx = if sc == 1 { 0 } else { j };
                            srow[idx] = gr[j].mul_add(cr[j], srow[idx]);
                        }
                    }
                }
                // The input is usually a constant (the detached ∇log R); DIS's interpolated
                // score has a part linear in x, which PIS differentiates through.
                if ng(*grad) {
                    let sv = nodes[scale.0].live_value();
                    let s = sv.row(*row);
                    let d = nodes[grad.0].live_value().cols;
                    let mut dg = Tensor::zeros(g.rows, d);
                    for (dr, gr) in dg.data.chunks_exact_mut(d).zip(g.data.chunks_exact(g.cols)) {
                        for j in 0..d {
                            dr[j] = gr[j] * if s.len() == 1 { s[0] } else { s[j] };
                        }
                    }
                    accumulate(&mut grads[grad.0], dg);
                }
                if ng(*o) {
                    accumulate(&mut grads[o.0], g);
                }
            }
            Op::Clip { x, limit } => {
                let xv = nodes[x.0].live_value();
                let mut dx = g;
                for (d, &v) in dx.data.iter_mut().zip(&xv.data) {
                    if !(v >= -*limit && v <= *limit) {
                        *d = S::ZERO;
                    }
                }
                accumulate(&mut grads[x.0], dx);
            }
            Op::EmLogPf {
                o,
                x,
                x_next,
                dt,
                log_sigma2,
                learned_range,
            } => {
                let (ov, xv, nv) = (
                    nodes[o.0].live_value(),
                    nodes[x.0].live_value(),
                    nodes[x_next.0].live_value(),
                );
                let d = xv.cols;
                let fixed_var = *dt * log_sigma2.exp();
                let mut dout = Tensor::zeros(ov.rows, ov.cols);
                // Through the states only when they depend on θ (PIS); ∂/∂x' = −r/var = −∂/∂x.
                let state_grads = ng(*x) || ng(*x_next);
                let mut dnext = Tensor::zeros(if state_grads { xv.rows } else { 0 }, d);
                for b in 0..xv.rows {
                    let (orow, xr, nr) = (ov.row(b), xv.row(b), nv.row(b));
                    let gb = g.data[b];
                    let drow = dout.row_mut(b);
                    for j in 0..d {
                        let var = match learned_range {
                            None => fixed_var,
                            Some(_) => *dt * log_var(orow, d, j, *log_sigma2, *learned_range).exp(),
                        };
                        let r = nr[j] - xr[j] - orow[j] * *dt;
                        // ∂/∂u_j of −½r²/var, r = x' − x − u·dt.
                        drow[j] = gb * r * *dt / var;
                        if let Some(range) = learned_range {
                            // ∂/∂ℓ_j of −½r²/(dt·e^ℓ) − ½ log(2π dt e^ℓ), times dℓ/dv = range·(1 − tanh²v).
                            let th = orow[d + j].tanh();
                            let dl = S::from_f64(0.5) * r * r / var - S::from_f64(0.5);
                            drow[d + j] = gb * dl * *range * (S::ONE - th * th);
                        }
                        if state_grads {
                            dnext.data[b * d + j] = -gb * r / var;
                        }
                    }
                }
                if ng(*o) {
                    accumulate(&mut grads[o.0], dout);
                }
                if ng(*x) {
                    let mut dx = dnext.clone();
                    for v in &mut dx.data {
                        *v = -*v;
                    }
                    accumulate(&mut grads[x.0], dx);
                }
                if ng(*x_next) {
                    accumulate(&mut grads[x_next.0], dnext);
                }
            }
            Op::EmStep {
                o,
                x,
                noise,
                dt,
                log_sigma2,
                learned_range,
            } => {
                if ng(*o) {
                    let ov = nodes[o.0].live_value();
                    let d = g.cols;
                    let mut dout = Tensor::zeros(ov.rows, ov.cols);
                    for b in 0..g.rows {
                        let orow = ov.row(b);
                        let drow = dout.row_mut(b);
                        for j in 0..d {
                            let gk = g.data[b * d + j];
                            drow[j] = gk * *dt;
                            if let Some(range) = learned_range {
                                // ∂/∂v of √(dt·e^ℓ)·ξ = ½·std·ξ·range·(1 − tanh²v).
                                let ell = log_var(orow, d, j, *log_sigma2, *learned_range);
                                let std = (*dt * ell.exp()).sqrt();
                                let th = orow[d + j].tanh();
                                drow[d + j] = gk
                                    * S::from_f64(0.5)
                                    * std
                                    * noise.data[b * d + j]
                                    * *range
                                    * (S::ONE - th * th);
                            }
                        }
                    }
                    accumulate(&mut grads[o.0], dout);
                }
                if ng(*x) {
                    accumulate(&mut grads[x.0], g);
                }
            }
            Op::BridgeLogPb {
                x,
                x_next,
                ratio,
                var,
            } => {
                let (xv, nv) = (nodes[x.0].live_value(), nodes[x_next.0].live_value());
                let d = xv.cols;
                // r = x − ratio·x'; ∂y/∂x = −r/var, ∂y/∂x' = ratio·r/var.
                let mut dx = Tensor::zeros(xv.rows, d);
                for b in 0..xv.rows {
                    for j in 0..d {
                        let k = b * d + j;
                        dx.data[k] = -g.data[b] * (xv.data[k] - *ratio * nv.data[k]) / *var;
                    }
                }
                if ng(*x_next) {
                    let mut dn = dx.clone();
                    for v in &mut dn.data {
                        *v = -*v * *ratio;
                    }
                    accumulate(&mut grads[x_next.0], dn);
                }
                if ng(*x) {
                    accumulate(&mut grads[x.0], dx);
                }
            }
            Op::Add { a, b } => {
                if ng(*b) {
                    accumulate(&mut grads[b.0], g.clone());
                }
                if ng(*a) {
                    accumulate(&mut grads[a.0], g);
                }
            }
            Op::AffineHead { x, o, a, b } => {
                let d = g.cols;
                if ng(*o) {
                    let oc = nodes[o.0].live_value().cols;
                    let mut do_ = Tensor::zeros(g.rows, oc);
                    for (orow, grow) in do_.data.chunks_exact_mut(oc).zip(g.data.chunks_exact(d)) {
                        for (v, &gv) in orow[..d].iter_mut().zip(grow) {
                            *v = *b * gv;
                        }
                    }
                    accumulate(&mut grads[o.0], do_);
                }
                if ng(*x) {
                    let mut dx = g;
                    for v in &mut dx.data {
                        *v *= *a;
                    }
                    accumulate(&mut grads[x.0], dx);
                }
            }
            Op::ReplaceHead { o, u, d } => {
                let (k, d) = (g.cols, *d);
                if ng(*u) {
                    let mut du = Tensor::zeros(g.rows, d);
                    for (ur, gr) in du.data.chunks_exact_mut(d).zip(g.data.chunks_exact(k)) {
                        ur.copy_from_slice(&gr[..d]);
                    }
                    accumulate(&mut grads[u.0], du);
                }
                if ng(*o) {
                    let mut do_ = g;
                    for r in do_.data.chunks_exact_mut(k) {
                        r[..d].fill(S::ZERO);
                    }
                    accumulate(&mut grads[o.0], do_);
                }
            }
            Op::Scale { x, c } => {
                let mut dx = g;
                for v in &mut dx.data {
                    *v *= *c;
                }
                accumulate(&mut grads[x.0], dx);
            }
            Op::RowFunction { x, jac } => {
                let d = jac.cols;
                let mut dx = jac.clone();
                for (row, &gb) in dx.data.chunks_exact_mut(d).zip(&g.data) {
                    for v in row {
                        *v *= gb;
                    }
                }
                accumulate(&mut grads[x.0], dx);
            }
        }
    }
}

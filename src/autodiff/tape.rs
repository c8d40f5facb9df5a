//! The tape: nodes in creation order, and the reverse loop.

use super::ops::Op;
use crate::cpu::Kernels;
use crate::tensor::Tensor;

/// A node of the tape, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub usize);

/// One recorded value and how it was made.
#[derive(Debug)]
pub struct Node<S> {
    pub op: Op<S>,
    pub value: Tensor<S>,
    /// Does any gradient flow into this node? Constants and everything computed from constants
    /// only do not; their VJPs are skipped.
    pub needs_grad: bool,
    /// The value was handed over to its only consumer (see [`Tape::gelu_consuming`]) and must
    /// not be read again; [`Tape::value`] and the VJPs check this.
    pub released: bool,
}

impl<S> Node<S> {
    /// The value, which must not have been released.
    pub fn live_value(&self) -> &Tensor<S> {
        assert!(
            !self.released,
            "a released tape value was read: its consumer was not its only use"
        );
        &self.value
    }
}

/// An append-only tape over scalar type `S` (f32 for training, f64 for gradient checks).
#[derive(Debug, Default)]
pub struct Tape<S> {
    nodes: Vec<Node<S>>,
}

impl<S: Kernels> Tape<S> {
    pub fn new() -> Self {
        Tape { nodes: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The value of a node.
    pub fn value(&self, v: Var) -> &Tensor<S> {
        self.nodes[v.0].live_value()
    }

    pub fn node(&self, v: Var) -> &Node<S> {
        &self.nodes[v.0]
    }

    /// A leaf whose gradient is wanted (a parameter).
    pub fn param(&mut self, value: Tensor<S>) -> Var {
        self.push(Op::Leaf, value, true)
    }

    /// A leaf with no gradient (data, states, detached quantities).
    pub fn constant(&mut self, value: Tensor<S>) -> Var {
        self.push(Op::Leaf, value, false)
    }

    pub(crate) fn push(&mut self, op: Op<S>, value: Tensor<S>, needs_grad: bool) -> Var {
        self.nodes.push(Node {
            op,
            value,
            needs_grad,
            released: false,
        });
        Var(self.nodes.len() - 1)
    }

    /// Drop the value of interior node `v` (its only remaining reader has copied what it needs).
    pub(crate) fn release(&mut self, v: Var) {
        let node = &mut self.nodes[v.0];
        if !matches!(node.op, Op::Leaf) {
            node.value = Tensor {
                rows: node.value.rows,
                cols: node.value.cols,
                data: Vec::new(),
            };
            node.released = true;
        }
    }

    pub(crate) fn needs_grad(&self, v: Var) -> bool {
        self.nodes[v.0].needs_grad
    }

    /// Forget every node from `len` on (used by gradient-free rollouts to keep memory flat).
    pub fn truncate(&mut self, len: usize) {
        self.nodes.truncate(len);
    }

    /// Reverse-mode sweep. `seeds` are (node, ∂L/∂node) pairs; several seeds may name nodes
    /// anywhere on the tape. Returns ∂L/∂node for every node that received a gradient and is a
    /// leaf (`None` elsewhere). The tape is consumed: node values are dropped as soon as no
    /// remaining VJP can read them, which keeps the peak memory at the forward's.
    pub fn backward(mut self, seeds: Vec<(Var, Tensor<S>)>) -> Vec<Option<Tensor<S>>> {
        let n = self.nodes.len();
        let mut grads: Vec<Option<Tensor<S>>> = (0..n).map(|_| None).collect();
        for (v, g) in seeds {
            assert_eq!(
                g.shape(),
                self.nodes[v.0].value.shape(),
                "seed shape for node {}",
                v.0
            );
            accumulate(&mut grads[v.0], g);
        }
        for i in (0..n).rev() {
            if matches!(self.nodes[i].op, Op::Leaf) {
                continue;
            }
            let Some(g) = grads[i].take() else {
                continue;
            };
            if self.nodes[i].needs_grad {
                let (before, rest) = self.nodes.split_at_mut(i);
                let node = &rest[0];
                node.op.vjp(before, &node.value, g, &mut grads);
            }
            // Nothing after this point reads node i's value: VJPs only read their inputs.
            self.nodes[i].value = Tensor {
                rows: 0,
                cols: 0,
                data: Vec::new(),
            };
        }
        grads
    }
}

/// `slot += g`, allocating on first touch.
pub(crate) fn accumulate<S: Kernels>(slot: &mut Option<Tensor<S>>, g: Tensor<S>) {
    match slot {
        None => *slot = Some(g),
        Some(acc) => {
            for (a, b) in acc.data.iter_mut().zip(&g.data) {
                *a += *b;
            }
        }
    }
}

/// A mutable gradient buffer for node `v` shaped like its value, zeroed on first touch.
pub(crate) fn grad_slot<'a, S: Kernels>(
    grads: &'a mut [Option<Tensor<S>>],
    nodes: &[Node<S>],
    v: Var,
) -> &'a mut Tensor<S> {
    let (r, c) = nodes[v.0].value.shape(); // the shape survives a release
    grads[v.0].get_or_insert_with(|| Tensor::zeros(r, c))
}

//! Minimal reverse-mode automatic differentiation.
//!
//! [`Tape`] is an append-only list of nodes; a [`Var`] is a node's index. Creation order is a
//! topological order, so backward is one reverse loop and gradient accumulation happens in a fixed
//! order (bitwise reproducible). Each op's forward and VJP sit side by side in [`ops`]; node values
//! are whole matrices, so a 100-step rollout is a few thousand nodes, not millions.

pub mod gradcheck;
pub mod ops;
pub mod tape;

pub use tape::{Tape, Var};

//! # diffusion-samplers
//!
//! Diffusion samplers for unnormalised densities, trained as continuous GFlowNets (Sendera et al.
//! 2024), rebuilt as exact, deterministic kernels.
//!
//! Layout, one job per module:
//! - [`real`], [`tensor`]: the scalar types (f32 for training, f64 for checks) and the matrix type;
//! - [`cpu`]: the kernels — a scalar reference for each op plus its AVX2+FMA path, bitwise equal;
//! - [`autodiff`]: the append-only reverse-mode tape and the finite-difference gradcheck;
//! - [`nn`]: the PIS drift network (flat parameter vector) and Adam;
//! - [`samplers`]: Euler–Maruyama forward policy, Brownian-bridge backward policy, rollouts;
//! - [`losses`]: TB and VarGrad on per-trajectory log-probability sums;
//! - [`energies`]: the targets; [`metrics`]: log Z estimators, ELBO/EUBO, ESS, exact W2;
//! - [`rng`]: named ChaCha8 streams and in-crate Gaussians;
//! - [`offpolicy`]: the rank-prioritized replay buffer, MALA local search and the both-ways schedule;
//! - [`config`], [`train`]: RON experiment configs and the training/evaluation loop (CPU or GPU);
//! - [`gpu`] (feature `gpu`): the WGSL kernels and the device-resident training iteration;
//! - [`checkpoint`], [`data`]: self-checking checkpoints and the fuzzed data readers.
//!
//! Shape letters used in comments everywhere: B batch, D state dim, H hidden, T steps, P params.

pub mod alloc_tuning;
pub mod autodiff;
pub mod checkpoint;
pub mod conditional;
pub mod config;
pub mod cpu;
pub mod data;
pub mod energies;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod losses;
pub mod metrics;
pub mod nn;
pub mod offpolicy;
pub mod real;
pub mod rl;
pub mod rng;
pub mod samplers;
pub mod tensor;
pub mod tolerance;
pub mod train;

pub use real::Real;
pub use tensor::Tensor;

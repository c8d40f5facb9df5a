//! Offline reinforcement learning at the D4RL-like level of the RTB paper's stand-in (spec
//! rtb2024 §4.5 B): a self-written Pendulum, its D4RL-style datasets, and the IQL critic whose
//! Q-function is the log-reward of RTB policy extraction.

pub mod action_fit;
pub mod critic_check;
pub mod episodes;
pub mod iql;
pub mod pendulum;
pub mod task;

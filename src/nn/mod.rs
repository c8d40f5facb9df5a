//! The drift network and its optimiser.

pub mod adam;
pub mod drift_net;
pub mod layout;
pub mod lora;
pub mod mlp;

pub use adam::{Adam, LrOverride};
pub use drift_net::{DriftNet, FlowHead, NetVars};
pub use layout::{Group, ParamLayout, ParamSpec};
pub use lora::Lora;

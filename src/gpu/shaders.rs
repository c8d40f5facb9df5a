//! The WGSL sources, compiled into the binary (candle's `source.rs`): one `include_str!` constant
//! per file under `shaders/` and [`Shader`], the enum the pipeline cache is keyed by.
//!
//! WGSL has no `#include`, so the shared f32 math (`shaders/math.wgsl`: exp, erf, sin/cos — the
//! same operation sequences as `src/cpu/math.rs`) is a *prelude*: [`Shader::source`] is the
//! prelude followed by the op file for every shader whose header carries the line
//! `// Prelude:   math.wgsl …`. `tests/shaders.rs` checks that rule against the files and
//! validates exactly the strings returned here.

/// `shaders/math.wgsl`: the prelude (no entry points).
pub const MATH: &str = include_str!("../../shaders/math.wgsl");
/// `shaders/linear.wgsl`.
pub const LINEAR: &str = include_str!("../../shaders/linear.wgsl");
/// `shaders/gelu.wgsl` (needs the prelude).
pub const GELU: &str = include_str!("../../shaders/gelu.wgsl");
/// `shaders/reduce.wgsl`.
pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// `shaders/time_features.wgsl` (needs the prelude).
pub const TIME_FEATURES: &str = include_str!("../../shaders/time_features.wgsl");
/// `shaders/em_step.wgsl`.
pub const EM_STEP: &str = include_str!("../../shaders/em_step.wgsl");
/// `shaders/energies.wgsl` (needs the prelude).
pub const ENERGIES: &str = include_str!("../../shaders/energies.wgsl");

/// `shaders/add_row.wgsl`.
pub const ADD_ROW: &str = include_str!("../../shaders/add_row.wgsl");
/// `shaders/clip.wgsl`.
pub const CLIP: &str = include_str!("../../shaders/clip.wgsl");
/// `shaders/losses.wgsl`.
pub const LOSSES: &str = include_str!("../../shaders/losses.wgsl");
/// `shaders/adam.wgsl`.
pub const ADAM: &str = include_str!("../../shaders/adam.wgsl");
/// `shaders/chacha.wgsl` (needs the prelude).
pub const CHACHA: &str = include_str!("../../shaders/chacha.wgsl");
/// `shaders/transpose.wgsl`.
pub const TRANSPOSE: &str = include_str!("../../shaders/transpose.wgsl");
/// `shaders/layer_norm.wgsl`.
pub const LAYER_NORM: &str = include_str!("../../shaders/layer_norm.wgsl");
/// `shaders/policy_step.wgsl` (needs the prelude).
pub const POLICY_STEP: &str = include_str!("../../shaders/policy_step.wgsl");

/// One shader module = one `shaders/<stem>.wgsl` op family (with its prelude, if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shader {
    Linear,
    Gelu,
    Reduce,
    TimeFeatures,
    AddRow,
    Clip,
    Losses,
    Adam,
    EmStep,
    Energies,
    ChaCha,
    PolicyStep,
    Transpose,
    LayerNorm,
}

impl Shader {
    /// Every shader module, for tests and warm-up.
    pub const ALL: [Shader; 14] = [
        Shader::Linear,
        Shader::Gelu,
        Shader::Reduce,
        Shader::TimeFeatures,
        Shader::AddRow,
        Shader::Clip,
        Shader::Losses,
        Shader::Adam,
        Shader::EmStep,
        Shader::Energies,
        Shader::ChaCha,
        Shader::PolicyStep,
        Shader::Transpose,
        Shader::LayerNorm,
    ];

    /// The file stem under `shaders/` (also the module's debug label).
    pub fn name(self) -> &'static str {
        match self {
            Shader::Linear => "linear",
            Shader::Gelu => "gelu",
            Shader::Reduce => "reduce",
            Shader::TimeFeatures => "time_features",
            Shader::AddRow => "add_row",
            Shader::Clip => "clip",
            Shader::Losses => "losses",
            Shader::Adam => "adam",
            Shader::EmStep => "em_step",
            Shader::Energies => "energies",
            Shader::ChaCha => "chacha",
            Shader::PolicyStep => "policy_step",
            Shader::Transpose => "transpose",
            Shader::LayerNorm => "layer_norm",
        }
    }

    /// The op file alone, as it is on disk.
    pub fn file_source(self) -> &'static str {
        match self {
            Shader::Linear => LINEAR,
            Shader::Gelu => GELU,
            Shader::Reduce => REDUCE,
            Shader::TimeFeatures => TIME_FEATURES,
            Shader::AddRow => ADD_ROW,
            Shader::Clip => CLIP,
            Shader::Losses => LOSSES,
            Shader::Adam => ADAM,
            Shader::EmStep => EM_STEP,
            Shader::Energies => ENERGIES,
            Shader::ChaCha => CHACHA,
            Shader::PolicyStep => POLICY_STEP,
            Shader::Transpose => TRANSPOSE,
            Shader::LayerNorm => LAYER_NORM,
        }
    }

    /// Whether the file declares `Prelude: math.wgsl` in its header.
    pub fn uses_math_prelude(self) -> bool {
        matches!(
            self,
            Shader::Gelu
                | Shader::TimeFeatures
                | Shader::Energies
                | Shader::ChaCha
                | Shader::PolicyStep
                | Shader::EmStep
                | Shader::Clip
        )
    }

    /// The module source handed to the device: prelude (if used) + the op file.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Linear => LINEAR,
            Shader::Gelu => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/gelu.wgsl")
            ),
            Shader::Reduce => REDUCE,
            Shader::AddRow => ADD_ROW,
            Shader::Clip => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/clip.wgsl")
            ),
            Shader::Losses => LOSSES,
            Shader::Adam => ADAM,
            Shader::TimeFeatures => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/time_features.wgsl")
            ),
            Shader::EmStep => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/em_step.wgsl")
            ),
            Shader::Energies => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/energies.wgsl")
            ),
            Shader::Transpose => TRANSPOSE,
            Shader::LayerNorm => LAYER_NORM,
            Shader::PolicyStep => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/policy_step.wgsl")
            ),
            Shader::ChaCha => concat!(
                include_str!("../../shaders/math.wgsl"),
                include_str!("../../shaders/chacha.wgsl")
            ),
        }
    }
}

//! `repro actions RUN_DIR`: a Pendulum BC prior run's policy against its dataset
//! ([`diffusion_samplers::rl::action_fit`]): one policy torque at each of N evenly spaced dataset
//! states beside the dataset's own torque there, as fractions of saturated and near-expert
//! torques and a 1-D Wasserstein distance, over all states and over the upright ones. Reads the
//! run's resolved config and its digest-checked parameters; writes nothing.

use crate::error::CliError;
use crate::manifest;
use diffusion_samplers::config::{ExperimentConfig, Method, TargetConfig};
use diffusion_samplers::rl::action_fit::{policy_action_fit, ActionFit, NEAR_EXPERT, SATURATED};
use diffusion_samplers::train::Trainer;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ActionsArgs {
    /// A complete Pendulum prior run folder (method EpsMse).
    pub run_dir: PathBuf,
    /// Dataset states to compare at.
    #[arg(long, default_value_t = 4000)]
    pub states: usize,
}

fn row(name: &str, f: &ActionFit) -> String {
    format!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
        f.states,
        f.data_saturated,
        f.policy_saturated,
        f.data_near_expert,
        f.policy_near_expert,
        f.w1
    )
}

pub fn cmd_actions(args: ActionsArgs) -> Result<ExitCode, CliError> {
    let dir = &args.run_dir;
    let cfg = ExperimentConfig::load(&dir.join(manifest::CONFIG))?;
    if !matches!(cfg.target, TargetConfig::Pendulum { .. }) || cfg.train.method != Method::EpsMse {
        return Err(CliError::usage(format!(
            "{}: `repro actions` reads Pendulum BC prior runs (target Pendulum, method EpsMse)",
            dir.display()
        )));
    }
    if args.states == 0 {
        return Err(CliError::usage("--states must be at least 1".to_string()));
    }
    let run = crate::prior::load_prior_run(dir, &cfg.digest())?;
    let mut tr = Trainer::new(&cfg).map_err(|e| CliError::usage(format!("{e}")))?;
    tr.set_params(run.params);
    let (all, upright) = policy_action_fit(&tr, args.states);
    let mut out = format!(
        "# {}: BC policy vs dataset torques\n\nsaturated: |a| ≥ {SATURATED}; near expert: within \
         {NEAR_EXPERT} of the noiseless expert's torque at the state; W1 between the two sets of \
         torques.\n\n| states | N | data saturated | policy saturated | data near expert | \
         policy near expert | W1 |\n|---|---|---|---|---|---|---|\n",
        dir.display()
    );
    out.push_str(&row("all", &all));
    if let Some(up) = &upright {
        out.push_str(&row("upright (cos θ > 0.95)", up));
    }
    crate::emit(&out);
    Ok(ExitCode::SUCCESS)
}

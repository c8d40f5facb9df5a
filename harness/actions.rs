//! `repro actions RUN_DIR`: a Pendulum BC prior run's policy against its dataset
//! ([`diffusion_samplers::rl::action_fit`]): one policy torque at each of N evenly spaced dataset
//! states beside the dataset's own torque there, as fractions of saturated and near-expert
//! torques and a 1-D Wasserstein distance, over all states and over the upright ones. Where one
//! behaviour made the dataset (medium, expert) it also scores the policy's torques state by
//! state against that behaviour's exact CDF (the PIT), at the dataset's states and at the
//! states of the policy's own evaluation episodes. Reads the run's resolved config and its
//! digest-checked parameters; writes nothing.

use crate::error::CliError;
use crate::manifest;
use diffusion_samplers::config::{ExperimentConfig, Method, TargetConfig};
use diffusion_samplers::rl::action_fit::{
    behaviour_fit, dataset_draws, ks_critical_95, policy_action_fit, ActionFit, PitFit, PitSplit,
    NEAR_EXPERT, SATURATED, UPRIGHT_COS,
};
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

fn pit_row(place: &str, subset: &str, policy: &PitFit, data: Option<&PitFit>) -> String {
    let tenths: Vec<String> = policy.tenths.iter().map(|f| format!("{f:.3}")).collect();
    format!(
        "| {place}, {subset} | {} | {:.3} | {:.3} | {} | {} |\n",
        policy.states,
        policy.ks,
        ks_critical_95(policy.states),
        data.map_or("—".to_string(), |d| format!("{:.3}", d.ks)),
        tenths.join(" ")
    )
}

fn pit_rows(place: &str, policy: &PitSplit, data: Option<&PitSplit>) -> String {
    let mut s = pit_row(place, "all", &policy.all, data.map(|d| &d.all));
    let subsets = [
        (
            "upright",
            &policy.upright,
            data.and_then(|d| d.upright.as_ref()),
        ),
        (
            "elsewhere",
            &policy.elsewhere,
            data.and_then(|d| d.elsewhere.as_ref()),
        ),
    ];
    for (name, p, d) in subsets {
        if let Some(p) = p {
            s.push_str(&pit_row(place, name, p, d));
        }
    }
    s
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
    let draws = dataset_draws(&tr, args.states);
    let (all, upright) = policy_action_fit(&draws);
    let mut out = format!(
        "# {}: BC policy vs dataset torques\n\nsaturated: |a| ≥ {SATURATED}; near expert: within \
         {NEAR_EXPERT} of the noiseless expert's torque at the state; W1 between the two sets of \
         torques.\n\n| states | N | data saturated | policy saturated | data near expert | \
         policy near expert | W1 |\n|---|---|---|---|---|---|---|\n",
        dir.display()
    );
    out.push_str(&row("all", &all));
    if let Some(up) = &upright {
        out.push_str(&row(&format!("upright (cos θ > {UPRIGHT_COS})"), up));
    }
    match behaviour_fit(&tr, &draws) {
        Some(b) => {
            out.push_str(&format!(
                "\nAgainst the behaviour that made the dataset: the PIT F(a|s) of each torque under \
                 its exact CDF (|a| ≥ {SATURATED} lumped per side) is uniform when the policy \
                 draws from it. KS: the distance from uniform; KS 95 %: what uniform values exceed \
                 one time in 20; dataset KS: the dataset's own torques at the same states (the \
                 control). Tenths: the policy's PIT histogram.\n\n\
                 | states | N | KS | KS 95 % | dataset KS | tenths |\n|---|---|---|---|---|---|\n"
            ));
            out.push_str(&pit_rows(
                "dataset",
                &b.policy_at_data,
                Some(&b.data_at_data),
            ));
            out.push_str(&pit_rows("own episodes", &b.policy_in_episodes, None));
            out.push_str(&format!(
                "\nOwn episodes: score {:.1}, upright {:.3} of steps (dataset: {:.3}).\n",
                b.episodes_score, b.episodes_upright, b.data_upright
            ));
            if let (Some((pp, bp)), Some((pt, bt))) = (b.swing_power, b.swing_torque) {
                out.push_str(&format!(
                    "Away from upright: energy input 3·a·θ̇ {pp:.3} (the behaviour's mean torque \
                     at the same states: {bp:.3}); mean torque {pt:+.3} (behaviour: {bt:+.3}).\n"
                ));
            }
        }
        None => out.push_str(
            "\nNo PIT: this dataset mixes behaviours (medium-replay, medium-expert), so its \
             μ(a|s) is not known in closed form.\n",
        ),
    }
    crate::emit(&out);
    Ok(ExitCode::SUCCESS)
}

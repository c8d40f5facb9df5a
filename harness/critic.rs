//! `repro critic RUN_DIR [--states N]`: does the IQL critic rank a Pendulum run's actions the
//! way the environment does ([`diffusion_samplers::rl::critic_check`])? RTB's posterior is
//! ∝ prior·exp(Q/α), so where it scores below its prior the question is whether the critic
//! prefers the worse actions.
//!
//! The states are N evenly spaced steps of the run's own evaluation episodes (the states its
//! policy actually visits). At each, every policy acts once: the run's policy (the torque its
//! episode took there), the BC prior (for a posterior), IQL's AWR policy, the scripted expert,
//! and the dataset's behaviour where one behaviour made it. Each torque is valued by the critic
//! and by Q^E, the exact discounted return of that torque followed by the expert. Reads the
//! run (and a posterior's prior run) with digests checked; writes nothing.

use crate::error::CliError;
use crate::score::{load_pendulum_run, run_policy, PendulumRun};
use diffusion_samplers::rl::critic_check::{calibration, expert_q_batch, preference, state_of};
use diffusion_samplers::rl::episodes::EpisodeLog;
use diffusion_samplers::rl::pendulum::{expert_batch, single_behaviour, OBS_DIM};
use diffusion_samplers::rl::task::evenly_spaced_rows;
use diffusion_samplers::rng;
use diffusion_samplers::train::Trainer;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CriticArgs {
    /// A complete Pendulum run folder with a critic: a BC prior, or a posterior beside its
    /// `priors/` folder.
    pub run_dir: PathBuf,
    /// States to judge at, evenly spaced over the run's own evaluation episodes' steps.
    #[arg(long, default_value_t = 400)]
    pub states: usize,
}

/// One policy's torques at the states, valued by both judges.
struct Judged {
    name: String,
    critic: Vec<f64>,
    expert: Vec<f64>,
}

pub fn cmd_critic(args: CriticArgs) -> Result<ExitCode, CliError> {
    let dir = &args.run_dir;
    if args.states == 0 {
        return Err(CliError::usage("--states must be at least 1".to_string()));
    }
    let PendulumRun {
        cfg,
        tr,
        prior_params,
        dataset,
        ..
    } = load_pendulum_run(dir, None, "critic")?;
    let task = tr.pendulum().expect("a Pendulum target");
    let Some(critic) = task.critic.as_ref() else {
        return Err(CliError::usage(format!(
            "{}: `repro critic` needs the run's IQL critic, and this run has none",
            dir.display()
        )));
    };
    let (policy, own_name) = run_policy(&cfg);
    let mut log = EpisodeLog::default();
    tr.scored_episodes(policy, task.episodes, Some(&mut log));
    let visited = log.torques.len();
    let n = args.states.min(visited);
    let rows: Vec<usize> = evenly_spaced_rows(visited, n).collect();
    let obs: Vec<f32> = rows
        .iter()
        .flat_map(|&r| log.obs[r * OBS_DIM..(r + 1) * OBS_DIM].iter().copied())
        .collect();
    let gamma = critic.config().discount;
    let judge = |name: &str, torques: Vec<f32>| Judged {
        name: name.to_string(),
        critic: critic.q(&obs, &torques).iter().map(|&q| q as f64).collect(),
        expert: expert_q_batch(&obs, &torques, gamma, task.reward_scale),
    };
    let mut judged = vec![judge(
        &format!("{own_name}, its own torques"),
        rows.iter().map(|&r| log.torques[r]).collect(),
    )];
    if let Some(p) = prior_params {
        // A posterior's network starts as an exact copy of its prior's.
        let prior =
            Trainer::with_prior(&cfg, Some(p)).map_err(|e| CliError::usage(format!("{e}")))?;
        let key = rng::stream_key(cfg.seed, "critic-check-prior", 0);
        let (_, u) = prior.sample_with_conditions(n, Some(&obs), key);
        let torques = u.iter().map(|&v| task.action.torque(v)).collect();
        judged.push(judge("the BC prior", torques));
    }
    judged.push(judge("IQL's AWR policy", critic.policy_action(&obs)));
    judged.push(judge("the scripted expert", expert_batch(&obs)));
    if let Some(b) = single_behaviour(dataset) {
        let mut r = rng::stream(cfg.seed, "critic-check-behaviour", 0);
        let torques = obs
            .chunks_exact(OBS_DIM)
            .map(|o| b.act(&state_of(o), &mut r) as f32)
            .collect();
        judged.push(judge("the dataset's behaviour", torques));
    }
    let mut out = format!(
        "# {}: the critic against the environment\n\n{n} states, evenly spaced over the \
         {visited} steps of the run's {} evaluation episodes (seed {}). At each, every policy \
         acts once; its torque is valued by the critic (min of the twin target Qs) and by Q^E, \
         the exact discounted return (γ = {gamma}) of that torque followed by the scripted \
         expert, in the critic's unit (rewards × {:.4}). corr: across states.\n\n| policy | \
         critic Q | Q^E | critic − Q^E | corr |\n|---|---|---|---|---|\n",
        dir.display(),
        task.episodes,
        cfg.seed,
        task.reward_scale,
    );
    for j in &judged {
        let c = calibration(&j.critic, &j.expert);
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:+.1} | {:.3} |\n",
            j.name,
            c.critic_q,
            c.expert_q,
            c.critic_q - c.expert_q,
            c.correlation
        ));
    }
    let own = &judged[0];
    out.push_str(
        "\nThe run's policy against each other policy at the same states: how often each judge \
         prefers the run's torque (ties count half), whether they agree, and the mean gain in \
         each judge's Q.\n\n| against | critic prefers the run's | Q^E prefers the run's | \
         agree | critic gain | Q^E gain |\n|---|---|---|---|---|---|\n",
    );
    for j in &judged[1..] {
        let p = preference(&own.critic, &j.critic, &own.expert, &j.expert);
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:+.1} | {:+.1} |\n",
            j.name,
            p.critic_prefers_a,
            p.expert_prefers_a,
            p.agreement,
            p.critic_gain,
            p.expert_gain
        ));
    }
    crate::emit(&out);
    Ok(ExitCode::SUCCESS)
}

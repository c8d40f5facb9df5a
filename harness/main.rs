//! `repro`: train paper configs into self-describing run folders, replay them, list them.
//!
//! One module per job: [`run`] (the `run` / `resume` commands and the run-folder builder shared
//! with `verify`), [`sweep`] (folder × seeds, sharded), [`run_dir`] (atomic staging + rename,
//! locked resumable folders), [`record`] (CSV / JSON bytes), [`plot`] (PNG figures),
//! [`table`] (paper vs replay), [`manifest`], [`progress`] (stderr), [`verify`], [`list`], [`error`]
//! (messages and exit codes). Results go to stdout, progress and errors to stderr.

mod actions;
mod critic;
mod error;
mod list;
mod manifest;
mod plot;
mod prior;
mod progress;
mod record;
mod replot;
mod run;
mod run_dir;
mod score;
mod sweep;
mod table;
mod verify;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "repro",
    version,
    about = "Train and replay diffusion-sampler experiments from RON configs",
    after_help = "Exit codes: 0 success; 1 `verify` mismatch or `list` met an unreadable config; \
                  2 bad usage, bad config or unwritable output; 3 training failed (a partial run \
                  folder with status \"failed\" is still written); 130 interrupted by \
                  SIGINT/SIGTERM (resume with `repro resume DIR`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train CONFIG and write a run folder (config, metrics, curves, samples, manifest); print
    /// the final metrics JSON on stdout.
    Run(run::RunArgs),
    /// Continue an interrupted or crashed run from its last checkpoint (bitwise identical to an
    /// uninterrupted run).
    Resume(run::ResumeArgs),
    /// Replay a run folder from its resolved config and compare every file digest with its
    /// manifest.
    Verify(verify::VerifyArgs),
    /// List the configs under DIR with the paper, table, row and values each replays.
    List(list::ListArgs),
    /// Merge run folders (from any machines) into a paper-vs-replay table: Markdown and CSV.
    Table(table::TableArgs),
    /// Draw a run folder's figures again from its recorded files (figures are not digested).
    Plot(replot::PlotArgs),
    /// Compare a Pendulum BC prior run's actions with its dataset's at the same states.
    Actions(actions::ActionsArgs),
    /// Score a Pendulum run's policies again over more evaluation episodes, with the dataset's
    /// own behaviour from the same initial states.
    Score(score::ScoreArgs),
    /// Judge a Pendulum run's actions by its IQL critic and by the environment (the exact
    /// return of each torque followed by the scripted expert) at the states its episodes visit.
    Critic(critic::CriticArgs),
}

/// Write `text` to stdout, ignoring a closed pipe (`repro list | head`).
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::cmd_run(args),
        Command::Resume(args) => run::cmd_resume(args),
        Command::Verify(args) => verify::cmd_verify(args),
        Command::List(args) => list::cmd_list(args),
        Command::Table(args) => table::cmd_table(args),
        Command::Plot(args) => replot::cmd_plot(args),
        Command::Actions(args) => actions::cmd_actions(args),
        Command::Score(args) => score::cmd_score(args),
        Command::Critic(args) => critic::cmd_critic(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code)
        }
    }
}

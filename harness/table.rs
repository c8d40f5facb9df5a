//! `repro table`: merge run folders into a paper-vs-replay table (being written).

use crate::error::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TableArgs {
    /// Run folders, or folders searched recursively for run folders (those with a manifest.json).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Write the Markdown table here (and the CSV beside it, same stem, `.csv`) instead of stdout.
    #[arg(long, value_name = "FILE.md")]
    pub out: Option<PathBuf>,
    /// Print the merged rows as JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

pub fn cmd_table(args: TableArgs) -> Result<ExitCode, CliError> {
    let _ = args;
    Err(CliError::usage("repro table is not implemented yet"))
}

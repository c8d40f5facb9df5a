//! `repro list [DIR]`: every config under DIR with the paper row it replays.
//!
//! A config that does not parse is listed with its error (and the exit code becomes 1) rather
//! than aborting the listing.

use crate::error::{CliError, EXIT_MISMATCH};
use diffusion_samplers::config::{ExperimentConfig, PaperRef};
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Folder searched recursively for `.ron` configs.
    #[arg(default_value = "paper-configs")]
    pub dir: PathBuf,
    /// Print the listing as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Entry {
    path: String,
    /// The config's paper block (values as `[mean, std]`), null when it has none.
    paper: Option<PaperRef>,
    /// The resolved config's digest (what an RTB posterior's `posterior.prior.digest` names),
    /// null when it did not parse.
    digest: Option<String>,
    /// Why the config could not be read, null when it parsed.
    error: Option<String>,
}

/// Every `.ron` file under `dir` (following file symlinks, not folder symlinks), plus the
/// folders that could not be read, each with its error.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return errors.push((dir.to_path_buf(), format!("cannot read folder: {e}"))),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push((dir.to_path_buf(), format!("cannot read folder: {e}")));
                continue;
            }
        };
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&path, files, errors);
        } else if path.extension().is_some_and(|e| e == "ron")
            && (ft.is_file() || path.metadata().is_ok_and(|m| m.is_file()))
        {
            files.push(path);
        }
    }
}

pub fn cmd_list(args: ListArgs) -> Result<ExitCode, CliError> {
    if !args.dir.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a folder",
            args.dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut walk_errors = Vec::new();
    walk(&args.dir, &mut files, &mut walk_errors);

    let mut entries: Vec<Entry> = files
        .into_iter()
        .map(|p| {
            let (paper, digest, error) = match ExperimentConfig::load(&p) {
                Ok(cfg) => {
                    let digest = cfg.digest();
                    (cfg.paper, Some(digest), None)
                }
                Err(e) => (None, None, Some(e.to_string().replace('\n', " "))),
            };
            Entry {
                path: p.display().to_string(),
                paper,
                digest,
                error,
            }
        })
        .chain(walk_errors.into_iter().map(|(p, e)| Entry {
            path: p.display().to_string(),
            paper: None,
            digest: None,
            error: Some(e),
        }))
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&entries).expect("listings serialise");
        s.push('\n');
        s
    } else {
        render(&entries)
    };
    crate::emit(&text);
    let any_error = entries.iter().any(|e| e.error.is_some());
    Ok(if any_error {
        ExitCode::from(EXIT_MISMATCH)
    } else {
        ExitCode::SUCCESS
    })
}

/// `metric = mean ± std, …` in the paper's key order (sorted), or "-".
fn values(p: &PaperRef) -> String {
    if p.values.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = p
        .values
        .iter()
        .map(|(k, (mean, std))| format!("{k} = {mean} ± {std}"))
        .collect();
    parts.join(", ")
}

/// Aligned columns: path, paper, table, row, values; errors after the path.
fn render(entries: &[Entry]) -> String {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| match (&e.paper, &e.error) {
            (_, Some(err)) => [
                e.path.clone(),
                format!("ERROR: {err}"),
                String::new(),
                String::new(),
                String::new(),
            ],
            (Some(p), None) => [
                e.path.clone(),
                p.paper.clone(),
                p.table.clone(),
                p.row.clone(),
                values(p),
            ],
            (None, None) => [
                e.path.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    let header = ["path", "paper", "table", "row", "values"].map(String::from);
    // Error rows count only towards the path column (their message runs past the others).
    let width = |i: usize| {
        std::iter::once(&header)
            .chain(
                rows.iter()
                    .filter(|r| i == 0 || !r[1].starts_with("ERROR: ")),
            )
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let mut s = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        if r[1].starts_with("ERROR: ") {
            line.push_str(&format!("{}  {}", pad(&r[0], widths[0]), r[1]));
        } else {
            for (i, w) in widths.iter().enumerate() {
                line.push_str(&pad(&r[i], *w));
                line.push_str("  ");
            }
            line.push_str(&r[4]);
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    if entries.is_empty() {
        s.push_str("(no .ron configs found)\n");
    }
    s
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

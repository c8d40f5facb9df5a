//! `repro table`: merge run folders into a paper-vs-replay table.
//!
//! Run folders are found by their `manifest.json` (given directly, or searched for recursively;
//! staging, replaced and hidden folders are skipped). Runs are grouped by the paper row they
//! replay (`paper.paper`, `paper.table`, `paper.row` of the manifest) or, without one, by the
//! folder name less a trailing `-seed<N>`. Per group and metric: the replay mean ± sample std
//! over the complete runs, the paper's mean ± std, and whether the replay mean lies within the
//! paper mean ± 2 paper std. Output: Markdown (one table per paper table), a CSV with one line
//! per (group, metric), or the same records as JSON.

use crate::error::CliError;
use crate::manifest;
use diffusion_samplers::config::{ExperimentConfig, PaperRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// The metrics of `metrics.json`, in table order (`true_log_z` is a constant of the target).
const METRICS: [&str; 8] = [
    "log_z",
    "log_z_rw",
    "delta_log_z",
    "delta_log_z_rw",
    "elbo",
    "eubo",
    "w2",
    "ess",
];
/// `metrics.json` keys that are not replay results.
const NOT_METRICS: [&str; 1] = ["true_log_z"];

/// The CSV header.
const CSV_HEADER: &str =
    "table,row,metric,n,replay_mean,replay_std,paper_mean,paper_std,within_2sigma";

/// The part of a manifest the table needs; other fields (and fields added later) are ignored.
#[derive(Deserialize, Debug)]
struct ManifestView {
    status: String,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    config_digest: Option<String>,
    #[serde(default)]
    paper: Option<PaperRef>,
}

/// One run folder, read.
#[derive(Debug)]
struct Run {
    dir: PathBuf,
    manifest: ManifestView,
    /// metric → value (null and non-finite values dropped); empty for incomplete runs.
    metrics: BTreeMap<String, f64>,
    /// blake3 of the resolved config with the seed set to 0, when `config.ron` parses.
    config_sans_seed: Option<String>,
}

impl Run {
    fn complete(&self) -> bool {
        self.manifest.status == "complete"
    }
}

/// What runs are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    /// Empty when the runs carry no paper reference.
    paper: String,
    table: String,
    row: String,
}

/// One (group, metric) line of the merged table.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Record {
    /// The paper, or null for runs without a paper reference.
    pub paper: Option<String>,
    /// The paper's table ("" without a paper reference).
    pub table: String,
    /// The paper's row, or the run folder name less `-seed<N>`.
    pub row: String,
    pub metric: String,
    /// Complete runs with a finite value for this metric.
    pub n: usize,
    /// Runs of this group whose status is not "complete".
    pub n_failed: usize,
    pub replay_mean: Option<f64>,
    /// Sample standard deviation (n − 1); null for a single run.
    pub replay_std: Option<f64>,
    pub paper_mean: Option<f64>,
    pub paper_std: Option<f64>,
    /// |replay mean − paper mean| ≤ 2 · paper std; null when either side is missing or the
    /// paper gives no std (quoted as 0 in the config).
    pub within_2sigma: Option<bool>,
}

pub fn cmd_table(args: TableArgs) -> Result<ExitCode, CliError> {
    let dirs = find_run_dirs(&args.runs)?;
    if dirs.is_empty() {
        let given: Vec<String> = args.runs.iter().map(|p| p.display().to_string()).collect();
        return Err(CliError::usage(format!(
            "no run folders (folders with a {}) found in {}",
            manifest::MANIFEST,
            given.join(", ")
        )));
    }
    let runs = dirs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>, _>>()?;
    let groups = group_runs(runs);
    let records = merge(&groups);
    let markdown = render_markdown(&groups, &records);
    let csv = render_csv(&records);
    let json = || {
        let mut s = serde_json::to_string_pretty(&records).expect("records serialise");
        s.push('\n');
        s
    };

    match &args.out {
        Some(md_path) => {
            let csv_path = md_path.with_extension("csv");
            if csv_path == *md_path {
                return Err(CliError::usage(format!(
                    "--out {}: the Markdown file needs a name other than its CSV's (use FILE.md)",
                    md_path.display()
                )));
            }
            write_atomic(md_path, markdown.as_bytes())?;
            write_atomic(&csv_path, csv.as_bytes())?;
            if args.json {
                crate::emit(&json());
                eprintln!("wrote {} and {}", md_path.display(), csv_path.display());
            } else {
                crate::emit(&format!("{}\n", md_path.display()));
            }
        }
        None if args.json => crate::emit(&json()),
        None => crate::emit(&markdown),
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// Finding and reading run folders

/// A folder that is a run folder's temporary sibling (`run_dir`'s staging / replaced folders),
/// an interrupted write, or hidden.
fn skipped_folder(name: &str) -> bool {
    name.starts_with('.')
        || name.contains(".staging-")
        || name.contains(".old-")
        || name.ends_with(".partial")
        || name.ends_with(".staging")
}

fn is_run_dir(dir: &Path) -> bool {
    dir.join(manifest::MANIFEST).is_file()
}

/// Every run folder named by or under `paths`, each once, in path order.
fn find_run_dirs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut found = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|e| CliError::io("read", p, e))?;
        if meta.is_file() {
            if p.file_name().is_some_and(|n| n == manifest::MANIFEST) {
                let parent = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                found.push(parent);
                continue;
            }
            return Err(CliError::usage(format!(
                "{} is a file, not a run folder (or a folder of run folders)",
                p.display()
            )));
        }
        if is_run_dir(p) {
            found.push(p.clone());
        } else {
            walk(p, &mut found)?;
        }
    }
    // The same folder given twice (or reached through two arguments) counts once.
    let mut seen = BTreeSet::new();
    let mut unique = Vec::new();
    for d in found {
        let key = fs::canonicalize(&d).unwrap_or_else(|_| d.clone());
        if seen.insert(key) {
            unique.push(d);
        }
    }
    unique.sort();
    Ok(unique)
}

/// Run folders below `dir` (not following folder symlinks); a run folder is not searched inside.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let entries = fs::read_dir(dir).map_err(|e| CliError::io("read folder", dir, e))?;
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::io("read folder", dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name();
        if is_dir && !skipped_folder(&name.to_string_lossy()) {
            subdirs.push(entry.path());
        }
    }
    subdirs.sort();
    for sub in subdirs {
        if is_run_dir(&sub) {
            found.push(sub);
        } else {
            walk(&sub, found)?;
        }
    }
    Ok(())
}

fn read_run(dir: &Path) -> Result<Run, CliError> {
    let mpath = dir.join(manifest::MANIFEST);
    let text = fs::read_to_string(&mpath).map_err(|e| CliError::io("read manifest", &mpath, e))?;
    let manifest: ManifestView = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("unreadable manifest {}: {e}", mpath.display())))?;
    let mut metrics = BTreeMap::new();
    if manifest.status == "complete" {
        let path = dir.join(manifest::METRICS);
        let text = fs::read_to_string(&path).map_err(|e| {
            CliError::usage(format!(
                "cannot read {} (its manifest says the run is complete): {e}",
                path.display()
            ))
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError::usage(format!("unreadable metrics {}: {e}", path.display())))?;
        let obj = value.as_object().ok_or_else(|| {
            CliError::usage(format!(
                "unreadable metrics {}: not a JSON object",
                path.display()
            ))
        })?;
        for (k, v) in obj {
            if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                metrics.insert(k.clone(), x);
            }
        }
    }
    let config_sans_seed = fs::read_to_string(dir.join(manifest::CONFIG))
        .ok()
        .and_then(|t| ExperimentConfig::parse(&t, manifest::CONFIG).ok())
        .map(|mut c| {
            c.seed = 0;
            c.digest()
        });
    Ok(Run {
        dir: dir.to_path_buf(),
        manifest,
        metrics,
        config_sans_seed,
    })
}

/// The folder's name less a trailing `-seed<digits>` (or a sweep's `-seed+<digits>`).
fn strip_seed(name: &str) -> &str {
    if let Some(at) = name.rfind("-seed") {
        let tail = &name[at + "-seed".len()..];
        let tail = tail.strip_prefix('+').unwrap_or(tail);
        if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) {
            return &name[..at];
        }
    }
    name
}

fn folder_name(dir: &Path) -> String {
    let named = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    named(dir)
        .or_else(|| fs::canonicalize(dir).ok().as_deref().and_then(named))
        .unwrap_or_else(|| dir.display().to_string())
}

fn group_key(run: &Run) -> GroupKey {
    match &run.manifest.paper {
        Some(p) => GroupKey {
            paper: p.paper.clone(),
            table: p.table.clone(),
            row: p.row.clone(),
        },
        None => GroupKey {
            paper: String::new(),
            table: String::new(),
            row: strip_seed(&folder_name(&run.dir)).to_string(),
        },
    }
}

/// Runs by group (each group's runs in path order), with duplicates dropped and mixed groups
/// reported on stderr.
fn group_runs(runs: Vec<Run>) -> BTreeMap<GroupKey, Vec<Run>> {
    let mut groups: BTreeMap<GroupKey, Vec<Run>> = BTreeMap::new();
    for run in runs {
        let key = group_key(&run);
        let members = groups.entry(key).or_default();
        // The same config and seed twice (a folder copied from another machine) is one run.
        let dup = members.iter().find(|m| {
            m.manifest.config_digest.is_some()
                && m.manifest.config_digest == run.manifest.config_digest
                && m.manifest.seed == run.manifest.seed
                && m.manifest.status == run.manifest.status
        });
        if let Some(first) = dup {
            eprintln!(
                "warning: {} repeats {} (same config and seed); counted once",
                run.dir.display(),
                first.dir.display()
            );
            continue;
        }
        members.push(run);
    }
    for (key, members) in &groups {
        let configs: BTreeSet<&String> = members
            .iter()
            .filter_map(|r| r.config_sans_seed.as_ref())
            .collect();
        if configs.len() > 1 {
            eprintln!(
                "warning: row \"{}\"{} merges runs of {} configs that differ beyond the seed",
                key.row,
                if key.table.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", key.table)
                },
                configs.len()
            );
        }
        let values: Vec<_> = members
            .iter()
            .filter_map(|r| r.manifest.paper.as_ref().map(|p| &p.values))
            .collect();
        if values.windows(2).any(|w| w[0] != w[1]) {
            eprintln!(
                "warning: runs of row \"{}\" quote different paper values; using {}'s",
                key.row,
                members[0].dir.display()
            );
        }
    }
    groups
}

// ---------------------------------------------------------------------------------------------
// Merging

/// Mean and sample standard deviation (None for fewer than two values).
fn mean_std(xs: &[f64]) -> (Option<f64>, Option<f64>) {
    if xs.is_empty() {
        return (None, None);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (Some(mean), None);
    }
    let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
    (Some(mean), Some((ss / (n - 1.0)).sqrt()))
}

/// Whether `mean` lies in paper mean ± 2 paper std (a relative 1e-12 of slack for decimal
/// round-off at the edge).
fn within(mean: f64, paper_mean: f64, paper_std: f64) -> bool {
    let tol = 1e-12 * (1.0 + paper_mean.abs() + paper_std.abs());
    (mean - paper_mean).abs() <= 2.0 * paper_std.abs() + tol
}

/// The metrics a group reports on: the known ones in table order, then any others, sorted.
fn metric_order<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: BTreeSet<&str> = names
        .map(String::as_str)
        .filter(|m| !NOT_METRICS.contains(m))
        .collect();
    let mut out: Vec<String> = METRICS
        .iter()
        .filter(|m| set.contains(*m))
        .map(|m| m.to_string())
        .collect();
    out.extend(
        set.iter()
            .filter(|m| !METRICS.contains(m))
            .map(|m| m.to_string()),
    );
    out
}

fn paper_of(members: &[Run]) -> Option<&PaperRef> {
    members.iter().find_map(|r| r.manifest.paper.as_ref())
}

/// One record per (group, metric) that has replay values or a paper value.
fn merge(groups: &BTreeMap<GroupKey, Vec<Run>>) -> Vec<Record> {
    let mut records = Vec::new();
    for (key, members) in groups {
        let paper = paper_of(members);
        let complete: Vec<&Run> = members.iter().filter(|r| r.complete()).collect();
        let n_failed = members.len() - complete.len();
        let names = complete
            .iter()
            .flat_map(|r| r.metrics.keys())
            .chain(paper.into_iter().flat_map(|p| p.values.keys()));
        for metric in metric_order(names) {
            let xs: Vec<f64> = complete
                .iter()
                .filter_map(|r| r.metrics.get(&metric).copied())
                .collect();
            let (replay_mean, replay_std) = mean_std(&xs);
            let pv = paper.and_then(|p| p.values.get(&metric)).copied();
            // A paper std of 0 is a cell the paper prints without one (Table C.3): no band.
            let pv = pv.map(|(pm, ps)| (pm, (ps != 0.0).then_some(ps)));
            let within_2sigma = match (replay_mean, pv) {
                (Some(m), Some((pm, Some(ps)))) => Some(within(m, pm, ps)),
                _ => None,
            };
            records.push(Record {
                paper: (!key.paper.is_empty()).then(|| key.paper.clone()),
                table: key.table.clone(),
                row: key.row.clone(),
                metric,
                n: xs.len(),
                n_failed,
                replay_mean,
                replay_std,
                paper_mean: pv.map(|v| v.0),
                paper_std: pv.and_then(|v| v.1),
                within_2sigma,
            });
        }
    }
    // Paper rows first, as in the Markdown (the sort is stable).
    records.sort_by_key(|r| r.paper.is_none());
    records
}

// ---------------------------------------------------------------------------------------------
// Output

/// A CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Shortest round-trip float (as in the run files), empty for None.
fn csv_num(x: Option<f64>) -> String {
    x.map(|v| format!("{v:?}")).unwrap_or_default()
}

fn render_csv(records: &[Record]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in records {
        let within = r.within_2sigma.map(|b| b.to_string()).unwrap_or_default();
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            csv_field(&r.table),
            csv_field(&r.row),
            csv_field(&r.metric),
            r.n,
            csv_num(r.replay_mean),
            csv_num(r.replay_std),
            csv_num(r.paper_mean),
            csv_num(r.paper_std),
            within
        ));
    }
    s
}

/// About three significant digits, no exponent for ordinary magnitudes.
fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 5) as usize;
    format!("{x:.decimals$}")
}

/// A metric's column title.
fn metric_title(m: &str) -> String {
    match m {
        "log_z" => "log Ẑ".into(),
        "log_z_rw" => "log Ẑ^RW".into(),
        "delta_log_z" => "Δlog Z".into(),
        "delta_log_z_rw" => "Δlog Z^RW".into(),
        "elbo" => "ELBO".into(),
        "eubo" => "EUBO".into(),
        "w2" => "W₂".into(),
        "ess" => "ESS".into(),
        other => other.to_string(),
    }
}

/// Escape what would break a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn cell(r: &Record, complete: usize) -> String {
    let mut s = match (r.replay_mean, r.replay_std) {
        (Some(m), Some(sd)) => format!("{} ± {}", fmt_num(m), fmt_num(sd)),
        (Some(m), None) => format!("{} ± –", fmt_num(m)),
        _ => "–".to_string(),
    };
    if r.n > 0 && r.n < complete {
        s.push_str(&format!(" [n = {}]", r.n));
    }
    match (r.paper_mean, r.paper_std) {
        (Some(pm), Some(ps)) => s.push_str(&format!(" (paper {pm} ± {ps})")),
        (Some(pm), None) => s.push_str(&format!(" (paper {pm}, no std)")),
        _ => {}
    }
    if r.within_2sigma == Some(false) {
        s.push_str(" ⚠ **outside ±2σ**");
    }
    s
}

fn render_markdown_header(n_runs: usize, n_complete: usize) -> String {
    let failed = n_runs - n_complete;
    format!(
        "# Paper vs replay\n\n\
         {n_runs} run folder{} ({n_complete} complete, {failed} failed). Cells: replay mean ± \
         sample std over seeds (– for a single run), then the paper's mean ± std; \
         ⚠ **outside ±2σ** marks a replay mean outside the paper mean ± 2 paper std \
         (\"no std\": the paper prints the cell without one, so there is no band). \
         `[n = k]`: only k runs have this metric.\n",
        if n_runs == 1 { "" } else { "s" }
    )
}

fn render_markdown(groups: &BTreeMap<GroupKey, Vec<Run>>, records: &[Record]) -> String {
    let n_runs: usize = groups.values().map(Vec::len).sum();
    let n_complete: usize = groups
        .values()
        .map(|m| m.iter().filter(|r| r.complete()).count())
        .sum();
    let mut s = render_markdown_header(n_runs, n_complete);

    // One section per (paper, table); runs without a paper come last.
    let mut sections: Vec<(String, String)> = groups
        .keys()
        .map(|k| (k.paper.clone(), k.table.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sections.sort_by_key(|(p, _)| p.is_empty());
    for (paper, table) in sections {
        let keys: Vec<&GroupKey> = groups
            .keys()
            .filter(|k| k.paper == paper && k.table == table)
            .collect();
        let recs = |k: &GroupKey| -> Vec<&Record> {
            records
                .iter()
                .filter(|r| {
                    r.paper.as_deref().unwrap_or("") == k.paper
                        && r.table == k.table
                        && r.row == k.row
                })
                .collect()
        };
        // Columns: what the paper reports for this table; else whatever the runs measured.
        let paper_cols: Vec<String> = keys
            .iter()
            .flat_map(|k| recs(k))
            .filter(|r| r.paper_mean.is_some())
            .map(|r| r.metric.clone())
            .collect();
        let columns = if paper_cols.is_empty() {
            let measured: Vec<String> = keys
                .iter()
                .flat_map(|k| recs(k))
                .filter(|r| r.n > 0)
                .map(|r| r.metric.clone())
                .collect();
            metric_order(measured.iter())
        } else {
            metric_order(paper_cols.iter())
        };

        s.push('\n');
        if paper.is_empty() {
            s.push_str("## Runs without a paper reference\n\n");
        } else {
            s.push_str(&format!("## {} — {}\n\n", md(&paper), md(&table)));
        }
        s.push_str("| row | runs |");
        for c in &columns {
            s.push_str(&format!(" {} |", metric_title(c)));
        }
        s.push_str("\n|---|---|");
        s.push_str(&"---|".repeat(columns.len()));
        s.push('\n');
        for k in keys {
            let members = &groups[k];
            let complete = members.iter().filter(|r| r.complete()).count();
            let failed = members.len() - complete;
            let runs = if failed > 0 {
                format!("{complete} (+{failed} failed)")
            } else {
                complete.to_string()
            };
            s.push_str(&format!("| {} | {runs} |", md(&k.row)));
            let rs = recs(k);
            for c in &columns {
                let text = rs
                    .iter()
                    .find(|r| &r.metric == c)
                    .map(|r| cell(r, complete))
                    .unwrap_or_else(|| "–".to_string());
                s.push_str(&format!(" {} |", md(&text)));
            }
            s.push('\n');
        }
    }
    s
}

/// Write `bytes` to `path` through a temporary sibling and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(|e| CliError::io("create folder", parent, e))?;
    let name = path.file_name().ok_or_else(|| {
        CliError::usage(format!(
            "output path {} does not name a file",
            path.display()
        ))
    })?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| CliError::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| CliError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| CliError::io("sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| CliError::io("rename into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_seed_only_strips_a_numeric_suffix() {
        assert_eq!(strip_seed("gmm25_tb-seed12345"), "gmm25_tb");
        assert_eq!(strip_seed("gmm25_tb-seed+2"), "gmm25_tb");
        assert_eq!(strip_seed("gmm25_tb-seed"), "gmm25_tb-seed");
        assert_eq!(strip_seed("a-seedx"), "a-seedx");
        assert_eq!(strip_seed("plain"), "plain");
    }

    #[test]
    fn sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, Some(2.0));
        assert_eq!(s, Some(1.0));
        assert_eq!(mean_std(&[4.0]), (Some(4.0), None));
        assert_eq!(mean_std(&[]), (None, None));
    }

    #[test]
    fn within_two_sigma_edges() {
        assert!(within(1.2, 1.0, 0.1));
        assert!(!within(1.2000001, 1.0, 0.1));
        assert!(within(0.8, 1.0, 0.1));
    }

    #[test]
    fn numbers_and_fields() {
        assert_eq!(fmt_num(1.176), "1.18");
        assert_eq!(fmt_num(0.0123456), "0.0123");
        assert_eq!(fmt_num(164.696), "165");
        assert_eq!(fmt_num(-12.34), "-12.3");
        assert_eq!(fmt_num(1e-5), "1.00e-5");
        assert_eq!(
            csv_field("Table 1 (25GMM, d = 2)"),
            "\"Table 1 (25GMM, d = 2)\""
        );
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn metric_order_puts_known_first() {
        let names: Vec<String> = ["w2", "zeta", "log_z", "true_log_z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(metric_order(names.iter()), vec!["log_z", "w2", "zeta"]);
    }
}

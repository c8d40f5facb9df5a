//! End-to-end tests of `repro table` (on hand-made run folders: manifest.json + metrics.json in
//! the format `repro run` writes) and of the figures a real tiny run writes.

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repro(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the repro binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the exit code, showing the output when it is wrong.
fn expect_code(o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// A paper block as the manifest writes it (`values`: metric → [mean, std]).
fn paper(table: &str, row: &str, values: &[(&str, f64, f64)]) -> Value {
    let values: serde_json::Map<String, Value> = values
        .iter()
        .map(|(k, m, s)| (k.to_string(), json!([m, s])))
        .collect();
    json!({
        "paper": "Sendera et al. 2024",
        "table": table,
        "row": row,
        "values": values,
        "note": null,
    })
}

/// A complete run folder `root/name` with these final metrics (others null).
fn complete_run(root: &Path, name: &str, seed: u64, paper: Option<Value>, metrics: &[(&str, f64)]) {
    let mut m = json!({
        "log_z": null, "log_z_rw": null, "true_log_z": 0.0, "delta_log_z": null,
        "delta_log_z_rw": null, "elbo": null, "eubo": null, "w2": null, "ess": null,
    });
    for (k, v) in metrics {
        m[*k] = json!(v);
    }
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("metrics.json"),
        serde_json::to_string_pretty(&m).unwrap() + "\n",
    )
    .unwrap();
    write_manifest(&dir, seed, "complete", paper);
}

/// A failed run folder (no metrics.json).
fn failed_run(root: &Path, name: &str, seed: u64, paper: Option<Value>) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    write_manifest(&dir, seed, "failed", paper);
}

fn write_manifest(dir: &Path, seed: u64, status: &str, paper: Option<Value>) {
    let failure =
        (status == "failed").then_some("non-finite loss at iteration 3: training stopped");
    let manifest = json!({
        "crate_version": "0.1.0",
        "config_digest": format!("{:064x}", seed + 1000 * dir.to_string_lossy().len() as u64),
        "seed": seed,
        "status": status,
        "failure": failure,
        "files": {},
        "wall_seconds": 1.5,
        "paper": paper,
        "figures": [],
    });
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
}

fn table_json(cwd: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["table", "--json"];
    all.extend_from_slice(args);
    let o = repro(cwd, &all);
    expect_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("--json prints JSON");
    v.as_array().expect("a JSON array").clone()
}

fn record<'a>(records: &'a [Value], row: &str, metric: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["row"] == row && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no record for {row} / {metric} in {records:#?}"))
}

const T1: &str = "Table 1 (25GMM, d = 2)";

#[test]
fn two_seeds_give_mean_and_sample_std() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let p = || Some(paper(T1, "TB", &[("delta_log_z", 1.2, 0.2)]));
    complete_run(
        &runs,
        "gmm25_tb-seed1",
        1,
        p(),
        &[("delta_log_z", 1.0), ("w2", 3.0)],
    );
    complete_run(
        &runs,
        "gmm25_tb-seed2",
        2,
        p(),
        &[("delta_log_z", 1.5), ("w2", 4.0)],
    );
    failed_run(&runs, "gmm25_tb-seed3", 3, p());

    let recs = table_json(tmp.path(), &["runs"]);
    let r = record(&recs, "TB", "delta_log_z");
    assert_eq!(r["n"], 2);
    assert_eq!(r["n_failed"], 1);
    assert_eq!(r["table"], T1);
    assert_eq!(r["paper"], "Sendera et al. 2024");
    let mean = r["replay_mean"].as_f64().unwrap();
    let std = r["replay_std"].as_f64().unwrap();
    assert!((mean - 1.25).abs() < 1e-12, "{mean}");
    // Sample std (n − 1): sqrt((0.25² + 0.25²) / 1).
    assert!((std - 0.125f64.sqrt()).abs() < 1e-12, "{std}");
    assert_eq!(r["paper_mean"], 1.2);
    assert_eq!(r["paper_std"], 0.2);
    assert_eq!(r["within_2sigma"], true);
    // A metric the paper does not report still gets a record, without a verdict.
    let w2 = record(&recs, "TB", "w2");
    assert_eq!(w2["replay_mean"], 3.5);
    assert!(w2["paper_mean"].is_null() && w2["within_2sigma"].is_null());

    let o = repro(tmp.path(), &["table", "runs"]);
    expect_code(&o, 0);
    let md = stdout(&o);
    assert!(
        md.contains("## Sendera et al. 2024 — Table 1 (25GMM, d = 2)"),
        "{md}"
    );
    let line = md
        .lines()
        .find(|l| l.starts_with("| TB |"))
        .expect("a TB row");
    assert!(line.contains("| 2 (+1 failed) |"), "{line}");
    assert!(line.contains("1.25 ± 0.354 (paper 1.2 ± 0.2)"), "{line}");
    assert!(!line.contains("outside"), "{line}");
}

#[test]
fn single_run_has_no_std() {
    let tmp = tempfile::tempdir().unwrap();
    complete_run(tmp.path(), "solo-seed7", 7, None, &[("log_z", -0.5)]);
    let recs = table_json(tmp.path(), &["solo-seed7"]);
    let r = record(&recs, "solo", "log_z");
    assert_eq!(r["n"], 1);
    assert_eq!(r["replay_mean"], -0.5);
    assert!(r["replay_std"].is_null());
    let o = repro(tmp.path(), &["table", "solo-seed7"]);
    expect_code(&o, 0);
    assert!(
        stdout(&o).contains("| solo | 1 | -0.500 ± – |"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn replay_outside_two_sigma_is_flagged_and_inside_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let values = [("delta_log_z", 1.0, 0.1)];
    // Inside: 1.15 (|Δ| = 0.15 ≤ 0.2). Outside: 1.35 (|Δ| = 0.35 > 0.2).
    for (seed, v) in [(1, 1.1), (2, 1.2)] {
        let p = Some(paper(T1, "Inside", &values));
        complete_run(
            tmp.path(),
            &format!("in-seed{seed}"),
            seed,
            p,
            &[("delta_log_z", v)],
        );
    }
    for (seed, v) in [(1, 1.3), (2, 1.4)] {
        let p = Some(paper(T1, "Outside", &values));
        complete_run(
            tmp.path(),
            &format!("out-seed{seed}"),
            seed,
            p,
            &[("delta_log_z", v)],
        );
    }
    let recs = table_json(tmp.path(), &["."]);
    assert_eq!(
        record(&recs, "Inside", "delta_log_z")["within_2sigma"],
        true
    );
    assert_eq!(
        record(&recs, "Outside", "delta_log_z")["within_2sigma"],
        false
    );

    let o = repro(tmp.path(), &["table", "."]);
    expect_code(&o, 0);
    let md = stdout(&o);
    let row = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row {name}:\n{md}"))
            .to_string()
    };
    assert!(row("Outside").contains("outside ±2σ"), "{md}");
    assert!(row("Outside").contains('⚠'), "{md}");
    assert!(!row("Inside").contains("outside ±2σ"), "{md}");
    assert!(!row("Inside").contains('⚠'), "{md}");
}

/// Table C.3 prints single numbers: a config quotes them with std 0, and the table shows the
/// number with no band instead of flagging every replay that is not bitwise the paper's.
#[test]
fn a_paper_cell_without_std_gets_no_band() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Some(paper(T1, "Single", &[("delta_log_z", 0.95, 0.0)]));
    complete_run(tmp.path(), "single-seed1", 1, p, &[("delta_log_z", 0.97)]);
    let recs = table_json(tmp.path(), &["."]);
    let r = record(&recs, "Single", "delta_log_z");
    assert_eq!(r["paper_mean"], 0.95);
    assert!(r["paper_std"].is_null(), "{r}");
    assert!(r["within_2sigma"].is_null(), "{r}");

    let o = repro(tmp.path(), &["table", "."]);
    expect_code(&o, 0);
    let md = stdout(&o);
    let line = md
        .lines()
        .find(|l| l.starts_with("| Single |"))
        .unwrap_or_else(|| panic!("no row:\n{md}"));
    assert!(line.contains("(paper 0.95, no std)"), "{md}");
    assert!(!line.contains('⚠'), "{md}");
}

/// Split one CSV line into fields (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[test]
fn out_writes_markdown_and_csv_with_the_documented_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let p = || {
        Some(paper(
            T1,
            "TB + Expl.",
            &[("delta_log_z", 0.56, 0.302), ("w2", 3.61, 1.41)],
        ))
    };
    complete_run(
        &runs,
        "a-seed1",
        1,
        p(),
        &[("delta_log_z", 0.5), ("w2", 9.0)],
    );
    complete_run(
        &runs,
        "a-seed2",
        2,
        p(),
        &[("delta_log_z", 0.7), ("w2", 9.5)],
    );

    let o = repro(tmp.path(), &["table", "runs", "--out", "report/t.md"]);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), "report/t.md");
    let md = fs::read_to_string(tmp.path().join("report/t.md")).unwrap();
    assert!(md.contains("| TB + Expl. | 2 |"), "{md}");
    assert!(md.contains("W₂"), "{md}");

    let csv = fs::read_to_string(tmp.path().join("report/t.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "table,row,metric,n,replay_mean,replay_std,paper_mean,paper_std,within_2sigma"
    );
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    for r in &rows {
        assert_eq!(r.len(), 9, "{r:?}");
        assert_eq!(r[0], T1);
        assert_eq!(r[1], "TB + Expl.");
        assert_eq!(r[3], "2");
    }
    let w2 = rows.iter().find(|r| r[2] == "w2").expect("a w2 line");
    assert_eq!(w2[4].parse::<f64>().unwrap(), 9.25);
    assert_eq!(w2[6].parse::<f64>().unwrap(), 3.61);
    assert_eq!(w2[7].parse::<f64>().unwrap(), 1.41);
    assert_eq!(w2[8], "false");
    let dz = rows.iter().find(|r| r[2] == "delta_log_z").unwrap();
    assert_eq!(dz[8], "true");

    // Only the two outputs were written (no temporary files left behind).
    let mut names: Vec<String> = fs::read_dir(tmp.path().join("report"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["t.csv", "t.md"]);
}

#[test]
fn json_is_an_array_of_records() {
    let tmp = tempfile::tempdir().unwrap();
    complete_run(
        tmp.path(),
        "r-seed1",
        1,
        None,
        &[("log_z", 1.0), ("ess", 0.5)],
    );
    let recs = table_json(tmp.path(), &["r-seed1"]);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        for key in [
            "table",
            "row",
            "metric",
            "n",
            "replay_mean",
            "replay_std",
            "paper_mean",
            "paper_std",
            "within_2sigma",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    assert_eq!(recs[0]["metric"], "log_z");
    assert_eq!(recs[1]["metric"], "ess");
}

#[test]
fn staging_folders_are_skipped_and_no_runs_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    // A staging folder left by a crashed `repro run` is not a run.
    complete_run(
        tmp.path(),
        "x-seed1.staging-4242",
        1,
        None,
        &[("log_z", 1.0)],
    );
    fs::create_dir_all(tmp.path().join("empty/deeper")).unwrap();
    let o = repro(tmp.path(), &["table", "."]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("no run folders"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));

    let o = repro(tmp.path(), &["table", "does-not-exist"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("does-not-exist"), "{}", stderr(&o));
}

#[test]
fn corrupt_manifest_is_exit_2_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    complete_run(tmp.path(), "good-seed1", 1, None, &[("log_z", 1.0)]);
    let bad: PathBuf = tmp.path().join("bad-seed1");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("manifest.json"), "{ \"status\": \"complete\", ").unwrap();
    let o = repro(tmp.path(), &["table", "."]);
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("bad-seed1/manifest.json"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The tiny config of the harness brief: 25GMM, T = 4, 3 TB iterations, 16 eval samples.
const TINY: &str = "(
    seed: 1,
    target: Gmm25,
    sampler: (steps: 4, sigma2: 5.0),
    train: (method: Tb, iterations: 3, batch: 8),
    eval: (samples: 16, every: 2),
)
";

#[test]
fn a_real_run_writes_png_figures_listed_in_the_manifest() {
    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("tiny.ron"), TINY).unwrap();
    let o = repro(tmp.path(), &["run", "tiny.ron", "--out", "run", "-q"]);
    expect_code(&o, 0);
    let run = tmp.path().join("run");
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    let figures: Vec<&str> = manifest["figures"]
        .as_array()
        .expect("figures is a list")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in ["samples.png", "curve.png"] {
        assert!(figures.contains(&name), "{name} not in {figures:?}");
        let bytes = fs::read(run.join(name)).unwrap();
        assert!(bytes.len() > 1000, "{name} is only {} bytes", bytes.len());
        assert_eq!(bytes[..8], PNG_SIGNATURE, "{name} is not a PNG");
    }
    // No temporary figure files are left in the run folder.
    let hidden: Vec<String> = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // The table reads the real run too.
    let recs = table_json(tmp.path(), &["run"]);
    assert!(recs.iter().any(|r| r["metric"] == "log_z" && r["n"] == 1));
}

#[test]
fn a_machine_without_fonts_keeps_the_run_and_warns() {
    // fontconfig with no font folders: text cannot be drawn, so the figures are skipped with a
    // warning, and the trained run is still written (exit 0).
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("tiny.ron"), TINY).unwrap();
    let conf = tmp.path().join("no-fonts.conf");
    fs::write(
        &conf,
        "<?xml version=\"1.0\"?>\n<!DOCTYPE fontconfig SYSTEM \"fonts.dtd\">\n<fontconfig></fontconfig>\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(["run", "tiny.ron", "--out", "run", "-q"])
        .current_dir(tmp.path())
        .env("FONTCONFIG_FILE", &conf)
        .output()
        .unwrap();
    expect_code(&o, 0);
    let run = tmp.path().join("run");
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "complete");
    assert!(run.join("metrics.json").is_file());
    for name in ["samples.png", "curve.png"] {
        let listed = manifest["figures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == name);
        // Listed exactly when it exists; when it is missing, stderr says why.
        assert_eq!(listed, run.join(name).is_file(), "{name}: {manifest}");
        if !listed {
            assert!(stderr(&o).contains(name), "{}", stderr(&o));
        }
    }
}

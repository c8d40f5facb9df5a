//! End-to-end tests of the `repro` binary: config errors, run-folder safety, determinism,
//! `verify` and `list`. Each test works in its own temporary folder.
//!
//! Tests marked "(trains)" run `train::run` on a tiny config (3 iterations, B = 8, T = 4);
//! the others fail before training starts.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny config of the harness brief: 25GMM, T = 4, 3 TB iterations, 16 eval samples.
const TINY: &str = "(
    seed: 1,
    target: Gmm25,
    sampler: (steps: 4, sigma2: 5.0),
    train: (method: Tb, iterations: 3, batch: 8, shards: 2),
    eval: (samples: 16, every: 2, w2: true, eubo: true),
)
";

const RUN_FILES: [&str; 6] = [
    "config.ron",
    "metrics.json",
    "curve.csv",
    "evals.csv",
    "samples.npy",
    "params.npy",
];

fn repro(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the repro binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Assert the exit code, showing the output when it is wrong.
fn expect_code(o: &Output, want: i32) {
    assert_eq!(
        code(o),
        want,
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

fn manifest(run: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

/// Names in `dir` other than the listed ones (leftover staging / old folders).
fn extra_entries(dir: &Path, expected: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect()
}

// ---- config errors (exit 2, message names the field and its line) ----

#[test]
fn unknown_field_names_field_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TINY.replace("    seed: 1,\n", "    seed: 1,\n    bogus_knob: 3,\n");
    let path = write(tmp.path(), "bad.ron", &cfg);
    let o = repro(tmp.path(), &["run", path.to_str().unwrap(), "-q"]);
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("bogus_knob"), "{err}");
    assert!(
        err.contains("bad.ron:3:"),
        "error should name line 3: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !tmp.path().join("runs").exists(),
        "nothing is written for a bad config"
    );
}

#[test]
fn zero_batch_names_train_batch_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TINY.replace("batch: 8", "batch: 0");
    let path = write(tmp.path(), "b0.ron", &cfg);
    let o = repro(tmp.path(), &["run", path.to_str().unwrap(), "-q"]);
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("train.batch"), "{err}");
    assert!(err.contains("b0.ron:5:"), "`batch` is on line 5: {err}");
}

#[test]
fn odd_manywell_dim_names_target_dim() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TINY.replace("target: Gmm25,", "target: ManyWell(dim: 5),");
    let path = write(tmp.path(), "mw.ron", &cfg);
    let o = repro(tmp.path(), &["run", path.to_str().unwrap(), "-q"]);
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("target.dim"), "{err}");
    assert!(err.contains("mw.ron:3:"), "`target` is on line 3: {err}");
}

#[test]
fn missing_config_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = repro(tmp.path(), &["run", "nope.ron", "-q"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("nope.ron"), "{}", stderr(&o));
}

// ---- output location safety ----

#[test]
fn existing_folder_is_refused_and_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), "precious").unwrap();
    let o = repro(
        tmp.path(),
        &["run", cfg.to_str().unwrap(), "--out", "out", "-q"],
    );
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("out") && err.contains("--force"), "{err}");
    assert_eq!(
        fs::read_to_string(out.join("keep.txt")).unwrap(),
        "precious"
    );
    assert_eq!(extra_entries(&out, &["keep.txt"]), Vec::<String>::new());
    assert_eq!(
        extra_entries(tmp.path(), &["tiny.ron", "out"]),
        Vec::<String>::new()
    );
}

#[test]
fn unwritable_out_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    fs::write(tmp.path().join("blocker"), "a regular file").unwrap();
    let o = repro(
        tmp.path(),
        &["run", cfg.to_str().unwrap(), "--out", "blocker/run", "-q"],
    );
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("blocker"), "{err}");
    assert!(err.contains("not a folder"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        fs::read_to_string(tmp.path().join("blocker")).unwrap(),
        "a regular file"
    );
}

#[test]
fn out_that_is_a_file_is_refused_even_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    fs::write(tmp.path().join("afile"), "x").unwrap();
    let o = repro(
        tmp.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            "afile",
            "--force",
            "-q",
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("not a folder"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(tmp.path().join("afile")).unwrap(), "x");
}

#[test]
fn force_replaces_existing_folder() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), "old").unwrap();
    let o = repro(
        tmp.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            "out",
            "--force",
            "-q",
        ],
    );
    expect_code(&o, 0);
    assert!(!out.join("keep.txt").exists(), "the old run is gone");
    assert!(out.join("manifest.json").is_file());
    assert_eq!(
        extra_entries(tmp.path(), &["tiny.ron", "out"]),
        Vec::<String>::new()
    );
}

// ---- determinism and run folder contents ----

#[test]
fn tiny_run_twice_gives_identical_digests() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    let a = repro(tmp.path(), &["run", cfg.to_str().unwrap(), "--out", "a"]);
    expect_code(&a, 0);
    let b = repro(
        tmp.path(),
        &["run", cfg.to_str().unwrap(), "--out", "b", "-q"],
    );
    expect_code(&b, 0);
    let (ma, mb) = (
        manifest(&tmp.path().join("a")),
        manifest(&tmp.path().join("b")),
    );

    assert_eq!(ma["status"], "complete");
    assert!(ma["failure"].is_null());
    assert_eq!(ma["seed"], 1);
    assert_eq!(ma["crate_version"], env!("CARGO_PKG_VERSION"));
    assert!(ma["paper"].is_null());
    assert!(ma["wall_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(ma["files"], mb["files"]);
    assert_eq!(ma["config_digest"], mb["config_digest"]);
    assert_eq!(ma["config_digest"], ma["files"]["config.ron"]);
    let files = ma["files"].as_object().unwrap();
    assert_eq!(files.len(), RUN_FILES.len());
    for name in RUN_FILES {
        let bytes_a = fs::read(tmp.path().join("a").join(name)).unwrap();
        let bytes_b = fs::read(tmp.path().join("b").join(name)).unwrap();
        assert_eq!(bytes_a, bytes_b, "{name} differs between identical runs");
        let hex = blake3::hash(&bytes_a).to_hex().to_string();
        assert_eq!(files[name], hex.as_str(), "{name}: manifest digest");
    }

    // stdout is exactly the metrics JSON; progress went to stderr.
    let metrics_text = fs::read_to_string(tmp.path().join("a/metrics.json")).unwrap();
    assert_eq!(stdout(&a), metrics_text);
    let metrics: Value = serde_json::from_str(&metrics_text).unwrap();
    let mut keys: Vec<&str> = metrics
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    let mut want = [
        "log_z",
        "log_z_rw",
        "true_log_z",
        "delta_log_z",
        "delta_log_z_rw",
        "elbo",
        "eubo",
        "w2",
        "ess",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert!(
        stderr(&a).contains("/3 "),
        "progress on stderr: {}",
        stderr(&a)
    );

    let curve = fs::read_to_string(tmp.path().join("a/curve.csv")).unwrap();
    assert!(
        curve.starts_with("iteration,loss,log_z,explore_std\n"),
        "{curve}"
    );
    assert_eq!(curve.lines().count(), 1 + 3, "{curve}");
    let evals = fs::read_to_string(tmp.path().join("a/evals.csv")).unwrap();
    assert!(
        evals.starts_with("iteration,log_z,log_z_rw,elbo,ess\n"),
        "{evals}"
    );

    // samples.npy: (16, 2) float32, data 64-byte aligned.
    let npy = fs::read(tmp.path().join("a/samples.npy")).unwrap();
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&npy[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (16, 2)"),
        "{header}"
    );
    assert_eq!(npy.len(), 10 + hlen + 16 * 2 * 4);

    // The resolved config parses back to the same config.
    let resolved = fs::read_to_string(tmp.path().join("a/config.ron")).unwrap();
    let back =
        diffusion_samplers::config::ExperimentConfig::parse(&resolved, "config.ron").unwrap();
    let orig = diffusion_samplers::config::ExperimentConfig::parse(TINY, "tiny.ron").unwrap();
    assert_eq!(back, orig);
}

#[test]
fn seed_override_is_recorded_and_names_default_folder() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "tiny.ron", TINY);
    let o = repro(tmp.path(), &["run", "tiny.ron", "--seed", "7", "-q"]);
    expect_code(&o, 0);
    let run = tmp.path().join("runs/tiny-seed7");
    assert_eq!(manifest(&run)["seed"], 7);
    let resolved = fs::read_to_string(run.join("config.ron")).unwrap();
    let cfg = diffusion_samplers::config::ExperimentConfig::parse(&resolved, "config.ron").unwrap();
    assert_eq!(cfg.seed, 7);
    assert_eq!(
        extra_entries(&tmp.path().join("runs"), &["tiny-seed7"]),
        Vec::<String>::new()
    );
}

#[test]
fn verify_passes_on_a_run_and_catches_edits() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    expect_code(
        &repro(
            tmp.path(),
            &["run", cfg.to_str().unwrap(), "--out", "r", "-q"],
        ),
        0,
    );

    let o = repro(tmp.path(), &["verify", "r", "-q"]);
    expect_code(&o, 0);
    let table = stdout(&o);
    for name in RUN_FILES {
        let line = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(line.contains("OK") && !line.contains("MISMATCH"), "{line}");
    }
    let o = repro(tmp.path(), &["verify", "r", "--json"]);
    expect_code(&o, 0);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["files"].as_array().unwrap().len(), RUN_FILES.len());

    // Edit a stored file: verify fails and says which.
    let curve = tmp.path().join("r/curve.csv");
    let mut text = fs::read_to_string(&curve).unwrap();
    text.push_str("99,0.0,0.0,0.0\n");
    fs::write(&curve, text).unwrap();
    let o = repro(tmp.path(), &["verify", "r", "-q"]);
    expect_code(&o, 1);
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("curve.csv"))
        .unwrap()
        .to_string();
    assert!(line.contains("CHANGED"), "{line}");

    // verify writes nothing beside the run (its replay goes to a temporary folder, then away).
    assert_eq!(
        extra_entries(tmp.path(), &["tiny.ron", "r"]),
        Vec::<String>::new()
    );
}

#[test]
fn non_finite_training_writes_failed_run_and_exits_3() {
    // (trains) A learning rate of 1e300 sends log Z (and the loss) to ±inf within two steps.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TINY.replace("shards: 2)", "shards: 2, lr_policy: 1e300, lr_flow: 1e300)");
    let path = write(tmp.path(), "nan.ron", &cfg);
    let o = repro(
        tmp.path(),
        &["run", path.to_str().unwrap(), "--out", "r", "-q"],
    );
    expect_code(&o, 3);
    let err = stderr(&o);
    assert!(err.contains("iteration"), "{err}");
    let m = manifest(&tmp.path().join("r"));
    assert_eq!(m["status"], "failed");
    assert!(m["failure"].as_str().unwrap().contains("iteration"), "{m}");
    for name in ["config.ron", "curve.csv", "evals.csv"] {
        assert!(m["files"][name].is_string(), "{name} is recorded: {m}");
        assert!(tmp.path().join("r").join(name).is_file());
    }
    assert!(
        stdout(&o).is_empty(),
        "no metrics on stdout for a failed run"
    );
}

// ---- list ----

const WITH_PAPER: &str = r#"(
    paper: Some((
        paper: "Sendera et al. 2024",
        table: "Table 1",
        row: "TB + Expl.",
        values: { "delta_log_z": (0.12, 0.03), "w2": (4.5, 0.2) },
    )),
    target: Gmm25,
    train: (method: Tb, iterations: 3),
)
"#;

#[test]
fn list_shows_paper_rows_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("configs");
    write(&dir, "sendera/gmm25_tb_expl.ron", WITH_PAPER);
    write(&dir, "tiny.ron", TINY);
    write(
        &dir,
        "broken.ron",
        "(target: Gmm25, train: (method: Tb, iterations: 3), oops: 1)",
    );
    write(&dir, "notes.txt", "not a config");

    let o = repro(tmp.path(), &["list", "configs"]);
    expect_code(&o, 1); // one config does not parse
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().skip(1).collect(); // skip the header
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("configs/broken.ron") && lines[0].contains("oops"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("configs/sendera/gmm25_tb_expl.ron"),
        "{out}"
    );
    for part in [
        "Sendera et al. 2024",
        "Table 1",
        "TB + Expl.",
        "delta_log_z = 0.12 ± 0.03",
    ] {
        assert!(lines[1].contains(part), "{part} missing: {}", lines[1]);
    }
    assert!(lines[2].starts_with("configs/tiny.ron"), "{out}");
    assert!(
        lines[2].split_whitespace().skip(1).all(|w| w == "-"),
        "{}",
        lines[2]
    );
    assert!(!out.contains("notes.txt"));

    let o = repro(tmp.path(), &["list", "--json", "configs"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries[0]["error"].as_str().unwrap().contains("oops"));
    assert_eq!(entries[1]["paper"]["row"], "TB + Expl.");
    assert_eq!(entries[1]["paper"]["values"]["w2"][0], 4.5);
    assert!(entries[2]["paper"].is_null() && entries[2]["error"].is_null());
}

#[test]
fn list_of_good_configs_exits_0_and_missing_dir_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("configs"), "a.ron", WITH_PAPER);
    let o = repro(tmp.path(), &["list", "configs"]);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("TB + Expl."));
    let o = repro(tmp.path(), &["list", "nowhere"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("nowhere"));
}

/// Every config under paper-configs/ parses, and every posterior among them names its prior by
/// the digest `repro list` reports for that prior now. A prior edited without updating its
/// posteriors would otherwise surface only when a posterior run, hours into a sweep, refuses it.
#[test]
fn repo_paper_configs_all_parse_and_name_their_priors_current_digest() {
    use diffusion_samplers::config::ExperimentConfig;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = repro(root, &["list", "--json"]);
    expect_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let entries = v.as_array().unwrap();
    assert!(!entries.is_empty(), "paper-configs/ holds configs");
    let digests: std::collections::HashMap<PathBuf, &str> = entries
        .iter()
        .map(|e| {
            assert!(e["error"].is_null(), "{e}");
            let path = root.join(e["path"].as_str().unwrap());
            (path, e["digest"].as_str().unwrap())
        })
        .collect();
    let mut checked = 0;
    for path in digests.keys() {
        let Some(post) = ExperimentConfig::load(path).unwrap().posterior else {
            continue;
        };
        let prior_path = path.parent().unwrap().join(&post.prior.config);
        let prior = digests
            .get(&prior_path)
            .unwrap_or_else(|| panic!("{}: its prior is not listed", path.display()));
        assert_eq!(
            post.prior.digest,
            *prior,
            "{} names a stale digest for {}",
            path.display(),
            prior_path.display()
        );
        checked += 1;
    }
    assert!(checked > 50, "only {checked} posterior configs found");
}

#[cfg(feature = "gpu")]
mod common;

/// Whether this machine has a GPU adapter (lavapipe counts; see `common::gpu_or_skip`).
#[cfg(feature = "gpu")]
fn have_gpu() -> bool {
    common::gpu_or_skip().is_some()
}

#[cfg(feature = "gpu")]
#[test]
fn gpu_run_records_its_backend_and_device_and_verifies() {
    // (trains)
    if !have_gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    let o = repro(
        tmp.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--backend",
            "gpu",
            "--out",
            "g",
            "-q",
        ],
    );
    expect_code(&o, 0);
    let resolved = std::fs::read_to_string(tmp.path().join("g/config.ron")).unwrap();
    assert!(resolved.contains("backend: Gpu"), "{resolved}");
    let m = manifest(&tmp.path().join("g"));
    assert!(m["device"].as_str().is_some_and(|d| !d.is_empty()), "{m}");
    // Same device: verify replays the GPU run bit for bit.
    expect_code(&repro(tmp.path(), &["verify", "g", "-q"]), 0);
    // A CPU run of the same config is a different config (digest) and has no device.
    expect_code(
        &repro(
            tmp.path(),
            &["run", cfg.to_str().unwrap(), "--out", "c", "-q"],
        ),
        0,
    );
    let mc = manifest(&tmp.path().join("c"));
    assert!(mc["device"].is_null());
    assert_ne!(mc["config_digest"], m["config_digest"]);
}

#[test]
fn missing_gpu_is_a_clear_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    // A backend wgpu was not built with on this OS: no adapter, whatever the machine has.
    let o = Command::new(env!("CARGO_BIN_EXE_repro"))
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--backend",
            "gpu",
            "--out",
            "g",
        ])
        .env(
            "WGPU_BACKEND",
            if cfg!(target_os = "macos") {
                "dx12"
            } else {
                "metal"
            },
        )
        .current_dir(tmp.path())
        .output()
        .unwrap();
    expect_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("GPU") && err.contains("no GPU adapter"),
        "{err}"
    );
    assert!(!tmp.path().join("g").exists());
    let o = repro(
        tmp.path(),
        &[
            "run",
            cfg.to_str().unwrap(),
            "--backend",
            "tpu",
            "--out",
            "t",
        ],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("cpu, gpu or auto"), "{}", stderr(&o));
}

// ---- RTB posteriors and their prior runs ----

/// A tiny MLE prior on the 25GMM (T = 4).
const TINY_PRIOR: &str = "(
    seed: 2,
    target: Gmm25,
    sampler: (steps: 4, sigma2: 5.0),
    network: (hidden: 8, harmonics: 4, joint_layers: 2),
    train: (method: Mle, iterations: 3, batch: 25, shards: 2),
    eval: (samples: 16, every: 2, w2: false, eubo: false),
)
";

/// A tiny RTB posterior of `prior.ron` whose digest is `digest`.
fn tiny_posterior(digest: &str) -> String {
    format!(
        "(
    seed: 3,
    target: Gmm25To9,
    sampler: (steps: 4, sigma2: 5.0),
    network: (hidden: 8, harmonics: 4, joint_layers: 2),
    train: (method: Rtb, iterations: 3, batch: 8, shards: 2, lr_flow: 0.1,
            exploration: Some((std: 0.5, decay_iters: Some(4), hold_iters: Some(2)))),
    eval: (samples: 16, every: 2, w2: false, eubo: false),
    posterior: Some((prior: (config: \"prior.ron\", digest: \"{digest}\"))),
)
"
    )
}

/// A Pendulum posterior must diffuse in its prior's action space (and read its dataset and
/// critic): a different `target.action` is refused by name before any run folder is made,
/// the prior's included; `repro actions` reads a Pendulum prior run and nothing else.
#[test]
fn pendulum_posterior_needs_its_priors_action_space_and_actions_reads_the_prior() {
    let tmp = tempfile::tempdir().unwrap();
    let prior = "(
    seed: 7,
    target: Pendulum(dataset: Medium, repeats: 1, data_episodes: 2, test_states: 2, episodes: 1,
                     iql: (hidden: 8, steps: 10, batch: 16)),
    sampler: (steps: 4, noising: Ddpm(train_steps: 40, clip: false)),
    network: (hidden: 8, harmonics: 4, joint_layers: 2),
    train: (method: EpsMse, iterations: 2, batch: 16, exploration: None),
    eval: (samples: 4, every: 0, w2: false, eubo: false),
)
";
    write(tmp.path(), "cfg/prior.ron", prior);
    let listed = repro(tmp.path(), &["list", "--json", "cfg"]);
    let entries: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let digest = entries[0]["digest"].as_str().unwrap().to_string();
    let post = prior
        .replace("repeats: 1", "repeats: 2, action: Clipped")
        .replace("method: EpsMse, iterations: 2", "method: Rtb, iterations: 2, lr_flow: 0.1")
        .replace(
            "eval: (samples: 4, every: 0, w2: false, eubo: false),",
            &format!(
                "eval: (samples: 4, every: 0, w2: false, eubo: false),\n    \
                 posterior: Some((prior: (config: \"prior.ron\", digest: \"{digest}\"), beta: 2.0)),"
            ),
        );
    assert!(post.contains("action: Clipped") && post.contains("method: Rtb"));
    write(tmp.path(), "cfg/post.ron", &post);
    let o = repro(
        tmp.path(),
        &["run", "cfg/post.ron", "--out", "runs/post", "-q"],
    );
    expect_code(&o, 2);
    assert!(stderr(&o).contains("target.action"), "{}", stderr(&o));
    assert!(!tmp.path().join("runs/post").exists());
    assert!(!tmp.path().join("runs/priors").exists());

    // `repro actions` reads the prior run: one table row over all states, and refuses what is
    // not a Pendulum prior run.
    let o = repro(
        tmp.path(),
        &["run", "cfg/prior.ron", "--out", "runs/prior", "-q"],
    );
    expect_code(&o, 0);
    let o = repro(tmp.path(), &["actions", "runs/prior", "--states", "50"]);
    expect_code(&o, 0);
    assert!(stdout(&o).contains("| all | 50 |"), "{}", stdout(&o));
    // Medium has one behaviour, so the PIT rows follow: at the 50 dataset states and at the
    // 200 steps of the one evaluation episode.
    assert!(
        stdout(&o).contains("| dataset, all | 50 |"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("| own episodes, all | 200 |"),
        "{}",
        stdout(&o)
    );
    // `repro score` re-scores the run over more episodes; its first one is the run's own
    // evaluation episode, so that column reproduces the run's recorded score.
    let o = repro(tmp.path(), &["score", "runs/prior", "--episodes", "3"]);
    expect_code(&o, 0);
    let text = stdout(&o);
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("runs/prior/metrics.json")).unwrap(),
    )
    .unwrap();
    let recorded = metrics["score"].as_f64().unwrap();
    let bc = text
        .lines()
        .find(|l| l.starts_with("| the BC prior | 3 |"))
        .unwrap_or_else(|| panic!("no BC row:\n{text}"));
    let own = bc.split('|').nth(6).unwrap().trim();
    assert!(
        own.starts_with(&format!("{recorded:.1} ± ")),
        "{own} against the recorded {recorded}:\n{text}"
    );
    assert!(text.contains("| the dataset's behaviour"), "{text}");
    // --seed: the run's own seed (7) changes nothing; another starts from its states.
    let same = repro(
        tmp.path(),
        &["score", "runs/prior", "--episodes", "3", "--seed", "7"],
    );
    assert_eq!(stdout(&same), text);
    let other = repro(
        tmp.path(),
        &["score", "runs/prior", "--episodes", "3", "--seed", "8"],
    );
    expect_code(&other, 0);
    assert!(
        stdout(&other).contains("Seed 8 (the run's own is 7)"),
        "{}",
        stdout(&other)
    );
    assert_ne!(stdout(&other), text);
    expect_code(
        &repro(tmp.path(), &["score", "runs/prior", "--episodes", "0"]),
        2,
    );
    // `repro critic` judges the prior's torques at 20 of its episode's 200 states by the
    // prior run's critic and by the environment, beside the AWR policy's, the expert's and the
    // medium behaviour's; the run's own row is compared with each of them.
    let o = repro(tmp.path(), &["critic", "runs/prior", "--states", "20"]);
    expect_code(&o, 0);
    let text = stdout(&o);
    for row in [
        "| the BC prior, its own torques |",
        "| IQL's AWR policy |",
        "| the scripted expert |",
        "| the dataset's behaviour |",
    ] {
        assert!(text.contains(row), "{row}:\n{text}");
    }
    assert!(text.starts_with("# runs/prior: the critic against the environment\n\n20 states"));
    assert_eq!(text.matches("| the scripted expert |").count(), 2, "{text}");
    expect_code(
        &repro(tmp.path(), &["critic", "runs/prior", "--states", "0"]),
        2,
    );
    write(tmp.path(), "cfg/gmm.ron", TINY_PRIOR);
    let o = repro(
        tmp.path(),
        &["run", "cfg/gmm.ron", "--out", "runs/gmm", "-q"],
    );
    expect_code(&o, 0);
    let o = repro(tmp.path(), &["actions", "runs/gmm"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("Pendulum BC prior"), "{}", stderr(&o));
    let o = repro(tmp.path(), &["score", "runs/gmm"]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("Pendulum runs"), "{}", stderr(&o));
    let o = repro(tmp.path(), &["critic", "runs/gmm"]);
    expect_code(&o, 2);
    assert!(
        stderr(&o).contains("`repro critic` reads Pendulum runs"),
        "{}",
        stderr(&o)
    );
}

/// A posterior may add a Langevin correction or a learned step variance to its copy of the
/// prior (both start at the prior), but any other change of network or sampler is refused by
/// name before anything is written.
#[test]
fn posterior_may_add_a_langevin_term_or_learned_variance_but_no_other_change() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "cfg/prior.ron", TINY_PRIOR);
    let listed = repro(tmp.path(), &["list", "--json", "cfg"]);
    let entries: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let digest = entries[0]["digest"].as_str().unwrap().to_string();
    let net = "network: (hidden: 8, harmonics: 4, joint_layers: 2)";
    let post = tiny_posterior(&digest);
    // Config `text` as `cfg/NAME.ron`: it runs to completion, or it is refused by name
    // before its folder `runs/NAME` is made.
    let run = |name: &str, text: &str| {
        write(tmp.path(), &format!("cfg/{name}.ron"), text);
        let (cfg, out) = (format!("cfg/{name}.ron"), format!("runs/{name}"));
        (repro(tmp.path(), &["run", &cfg, "--out", &out, "-q"]), out)
    };
    let accepted = |name: &str, text: &str| {
        assert_ne!(text, post);
        let (o, out) = run(name, text);
        expect_code(&o, 0);
        assert_eq!(manifest(&tmp.path().join(out))["status"], "complete");
    };
    let refused = |name: &str, text: &str| {
        let (o, out) = run(name, text);
        expect_code(&o, 2);
        assert!(
            stderr(&o).contains("network, sampler and dimension"),
            "{}",
            stderr(&o)
        );
        assert!(!tmp.path().join(out).exists());
    };
    let sampler = "sampler: (steps: 4, sigma2: 5.0)";
    accepted(
        "lp",
        &post.replace(
            net,
            "network: (hidden: 8, harmonics: 4, joint_layers: 2, langevin: true, langevin_layers: 2)",
        ),
    );
    accepted(
        "lv",
        &post.replace(
            sampler,
            "sampler: (steps: 4, sigma2: 5.0, learned_variance: true)",
        ),
    );
    refused(
        "hot",
        &post.replace(sampler, "sampler: (steps: 4, sigma2: 6.0)"),
    );
    refused(
        "wide",
        &post.replace(net, "network: (hidden: 16, harmonics: 4, joint_layers: 2)"),
    );
}

#[test]
fn posterior_trains_its_prior_first_and_refuses_an_edited_one() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "cfg/prior.ron", TINY_PRIOR);
    let listed = repro(tmp.path(), &["list", "--json", "cfg"]);
    expect_code(&listed, 0);
    let entries: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let digest = entries[0]["digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    write(tmp.path(), "cfg/post.ron", &tiny_posterior(&digest));

    let run = repro(
        tmp.path(),
        &["run", "cfg/post.ron", "--out", "runs/post", "-q"],
    );
    expect_code(&run, 0);
    // stdout carries the posterior's metrics only, not the prior's too.
    let printed: Value = serde_json::from_str(&stdout(&run)).expect("one JSON document");
    assert!(!printed["tv"].is_null());
    let prior_dir = tmp.path().join("runs/priors").join(&digest[..16]);
    let mp = manifest(&prior_dir);
    assert_eq!(mp["status"], "complete");
    assert_eq!(mp["config_digest"], digest.as_str());
    assert!(mp["files"]["params.npy"].is_string());
    let metrics: Value = serde_json::from_str(
        &fs::read_to_string(tmp.path().join("runs/post/metrics.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "learned_log_z",
        "kl_traj",
        "near_mode",
        "tv",
        "retained_weights",
    ] {
        assert!(!metrics[key].is_null(), "metrics.json lacks {key}");
    }

    // A second posterior run reuses the prior (same folder, untouched), and verify replays.
    let prior_params = fs::read(prior_dir.join("params.npy")).unwrap();
    let again = repro(
        tmp.path(),
        &["run", "cfg/post.ron", "--out", "runs/post2", "-q"],
    );
    expect_code(&again, 0);
    assert_eq!(
        fs::read(prior_dir.join("params.npy")).unwrap(),
        prior_params
    );
    assert_eq!(
        manifest(&tmp.path().join("runs/post"))["files"],
        manifest(&tmp.path().join("runs/post2"))["files"]
    );
    let verify = repro(tmp.path(), &["verify", "runs/post", "--json"]);
    expect_code(&verify, 0);

    // An edited prior config no longer has the digest the posterior names: refused, and
    // nothing is written.
    write(
        tmp.path(),
        "cfg/prior.ron",
        &TINY_PRIOR.replace("seed: 2", "seed: 5"),
    );
    fs::remove_dir_all(&prior_dir).unwrap();
    let edited = repro(
        tmp.path(),
        &["run", "cfg/post.ron", "--out", "runs/post3", "-q"],
    );
    expect_code(&edited, 2);
    assert!(
        stderr(&edited).contains("posterior.prior.digest"),
        "{}",
        stderr(&edited)
    );
    assert!(!tmp.path().join("runs/post3").exists());
    assert!(!prior_dir.exists());

    // A tampered prior parameter file is caught by its manifest digest.
    write(tmp.path(), "cfg/prior.ron", TINY_PRIOR);
    expect_code(
        &repro(
            tmp.path(),
            &["run", "cfg/prior.ron", "--out", "runs/tmp-prior", "-q"],
        ),
        0,
    );
    fs::rename(tmp.path().join("runs/tmp-prior"), &prior_dir).unwrap();
    let mut bytes = fs::read(prior_dir.join("params.npy")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(prior_dir.join("params.npy"), bytes).unwrap();
    let tampered = repro(
        tmp.path(),
        &["run", "cfg/post.ron", "--out", "runs/post4", "-q"],
    );
    expect_code(&tampered, 2);
    assert!(
        stderr(&tampered).contains("params.npy"),
        "{}",
        stderr(&tampered)
    );
}

#[test]
fn plot_redraws_a_runs_figures_without_touching_its_digests() {
    // (trains)
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(tmp.path(), "tiny.ron", TINY);
    expect_code(
        &repro(
            tmp.path(),
            &["run", cfg.to_str().unwrap(), "--out", "a", "-q"],
        ),
        0,
    );
    let run = tmp.path().join("a");
    let before = manifest(&run);
    for f in ["samples.png", "curve.png"] {
        fs::remove_file(run.join(f)).unwrap();
    }
    expect_code(&repro(tmp.path(), &["plot", "a"]), 0);
    for f in ["samples.png", "curve.png"] {
        assert!(
            fs::metadata(run.join(f)).unwrap().len() > 1000,
            "{f} redrawn"
        );
    }
    assert_eq!(manifest(&run), before);
    expect_code(&repro(tmp.path(), &["verify", "a"]), 0);
    let missing = repro(tmp.path(), &["plot", "nowhere"]);
    expect_code(&missing, 2);
}

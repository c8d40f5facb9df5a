//! Long runs that survive faults: SIGKILL at random points then `repro resume` gives the digests
//! of an uninterrupted run; Ctrl-C checkpoints and exits 130; a second repro on a folder is
//! refused; divergence names the last good checkpoint; sweeps shard deterministically.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repro() -> Command {
    Command::new(env!("CARGO_BIN_EXE_repro"))
}

fn out(args: &[&str]) -> Output {
    repro().args(args).output().expect("run repro")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn digests(run: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "complete", "{m}");
    m["files"].clone()
}

/// A run long enough (~1–3 s here) to be interrupted at many points, checkpointing often.
const LONG: &str = "(seed: 5, target: ManyWell(dim: 4), sampler: (steps: 20, sigma2: 1.0),
    network: (hidden: 32, harmonics: 16),
    train: (method: Tb, iterations: 400, batch: 64, lr_policy_final: Some(1e-4),
        exploration: Some((std: 0.2, decay_iters: Some(200)))),
    eval: (samples: 128, every: 50))";

fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn spawn_run(cfg: &Path, dir: &Path) -> Child {
    repro()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--checkpoint-every",
            "13",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `repro run CFG --out DIR -q`, waited for.
fn run_quiet(cfg: &Path, dir: &Path) -> Output {
    out(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "-q",
    ])
}

/// Ctrl-C: SIGINT to the running `child`.
fn interrupt(child: &Child) {
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn partial(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

/// Resume until the run is complete (a resumed run is never interrupted here).
fn resume(dir: &Path) {
    let o = out(&[
        "resume",
        dir.to_str().unwrap(),
        "-q",
        "--checkpoint-every",
        "13",
    ]);
    assert!(o.status.success(), "resume failed: {}", text(&o));
}

/// Off-policy training with local search (both-ways schedule, replay and local-search buffers in
/// every checkpoint), long enough to be interrupted at several points.
const LONG_OFF_POLICY: &str = "(seed: 5, target: Gmm25, sampler: (steps: 10, sigma2: 5.0),
    network: (hidden: 16, harmonics: 8),
    train: (method: Tb, iterations: 400, batch: 16,
        exploration: Some((std: 0.1, decay_iters: Some(100))),
        off_policy: Some((buffer_capacity: 200, sampling: Rank(k: 0.01),
            local_search: Some((steps: 12, burn_in: 4, step0: 0.1, adapt: Some(0.01),
                target_acceptance: 0.574, window: 5, beta: 1.0)),
            local_search_period: 10))),
    eval: (samples: 64, every: 50))";

/// Runs `config` once uninterrupted, then `kills` times with a SIGKILL at a point drawn from a
/// fixed stream and a resume; every run must end with the reference's digests.
fn kill_and_resume(config: &str, kills: usize, min_interrupted: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "long.ron", config);
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    let o = run_quiet(&cfg, &reference);
    assert!(o.status.success(), "{}", text(&o));
    let full = t0.elapsed();
    let want = digests(&reference);

    // Kill points spread over the run's duration, from a fixed stream (a reproducible test).
    let mut rng = diffusion_samplers::rng::stream(2024, "kill-points", 0);
    let mut interrupted = 0;
    for k in 0..kills {
        let frac = diffusion_samplers::rng::uniform_f64(&mut rng);
        let delay = full.mul_f64(0.05 + 0.9 * frac);
        let dir = tmp.path().join(format!("killed-{k}"));
        let mut child = spawn_run(&cfg, &dir);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL: no chance to checkpoint or clean up
        child.wait().unwrap();
        if partial(&dir).exists() {
            interrupted += 1;
            assert!(!dir.exists(), "a killed run must not appear finished");
            resume(&dir);
        }
        assert!(
            !partial(&dir).exists(),
            "kill {k}: partial folder left behind"
        );
        assert_eq!(digests(&dir), want, "kill {k} after {delay:?}");
    }
    assert!(
        interrupted >= min_interrupted,
        "only {interrupted}/{kills} kills landed mid-run: the test run is too short"
    );
}

#[test]
fn sigkill_at_random_points_then_resume_is_bitwise_identical() {
    kill_and_resume(LONG, 20, 10);
}

#[test]
fn off_policy_runs_resume_bitwise_with_their_buffers() {
    kill_and_resume(LONG_OFF_POLICY, 6, 3);
}

#[test]
fn ctrl_c_checkpoints_and_resume_finishes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "long.ron", LONG);
    let reference = tmp.path().join("reference");
    assert!(run_quiet(&cfg, &reference).status.success());
    let dir = tmp.path().join("interrupted");
    let child = spawn_run(&cfg, &dir);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("repro resume"), "says how to resume: {err}");
    assert!(partial(&dir).join("checkpoint.bin").is_file());
    assert!(!dir.exists());
    resume(&dir);
    assert_eq!(digests(&dir), digests(&reference));
    assert!(
        !dir.join("checkpoint.bin").exists(),
        "a complete run keeps no checkpoint"
    );
}

#[test]
fn a_second_repro_on_the_same_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "long.ron", LONG);
    let dir = tmp.path().join("busy");
    let mut child = spawn_run(&cfg, &dir);
    // Wait until the first one holds its lock.
    let t0 = Instant::now();
    while !partial(&dir).join(".lock").exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = out(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--force",
        "-q",
    ]);
    let third = out(&["resume", dir.to_str().unwrap(), "-q"]);
    child.kill().unwrap();
    child.wait().unwrap();
    for o in [&second, &third] {
        assert_eq!(o.status.code(), Some(2), "{}", text(o));
        assert!(text(o).contains("another repro is running"), "{}", text(o));
    }
    // The killed run is abandoned, not locked: run without --force points to resume.
    let again = run_quiet(&cfg, &dir);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("repro resume"), "{}", text(&again));
}

#[test]
fn divergence_names_iteration_quantity_and_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // log Z's learning rate is so large that Adam's second step overflows f32 (the first step
    // leaves a finite, checkpointed state).
    let cfg = write_config(
        tmp.path(),
        "diverge.ron",
        "(seed: 1, target: Gmm25, sampler: (steps: 5, sigma2: 5.0), network: (hidden: 8, harmonics: 4),
          train: (method: Tb, iterations: 50, batch: 8, lr_flow: 1e37), eval: (samples: 8, every: 0))",
    );
    let dir = tmp.path().join("run");
    let o = out(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--checkpoint-every",
        "1",
        "-q",
    ]);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("non-finite") && msg.contains("at iteration"),
        "{msg}"
    );
    assert!(
        msg.contains("at iteration 1") && msg.contains("parameters"),
        "{msg}"
    );
    assert!(msg.contains("last good checkpoint: iteration 1"), "{msg}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "failed");
    let ck =
        diffusion_samplers::checkpoint::decode(&std::fs::read(dir.join("checkpoint.bin")).unwrap())
            .unwrap();
    assert!(
        ck.params.iter().all(|p| p.is_finite()),
        "the kept checkpoint is a good one"
    );
    assert_eq!(ck.iteration, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("curve.csv"))
            .unwrap()
            .lines()
            .count(),
        2,
        "header + the good iteration"
    );
}

#[test]
fn a_checkpoint_of_another_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_config(tmp.path(), "a.ron", LONG);
    let b = write_config(tmp.path(), "b.ron", &LONG.replace("seed: 5", "seed: 6"));
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    for (cfg, dir) in [(&a, &da), (&b, &db)] {
        let mut c = spawn_run(cfg, dir);
        let t0 = Instant::now();
        while !partial(dir).join("checkpoint.bin").exists()
            && t0.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        c.kill().unwrap();
        c.wait().unwrap();
    }
    std::fs::copy(
        partial(&da).join("checkpoint.bin"),
        partial(&db).join("checkpoint.bin"),
    )
    .unwrap();
    let o = out(&["resume", db.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("another config"), "{}", text(&o));
    assert!(
        partial(&db).exists(),
        "a refused resume leaves the folder for inspection"
    );
}

#[test]
fn sweep_shards_cover_every_job_once_and_rerun_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let configs = tmp.path().join("configs/sub");
    std::fs::create_dir_all(&configs).unwrap();
    let tiny = |seed: u64| {
        format!(
            "(seed: {seed}, target: Gmm9, sampler: (steps: 4, sigma2: 2.0), network: (hidden: 8, harmonics: 4),
              train: (method: VarGrad, iterations: 3, batch: 8), eval: (samples: 8, every: 0))"
        )
    };
    write_config(&configs, "x.ron", &tiny(10));
    write_config(&configs, "y.ron", &tiny(20));
    let root = tmp.path().join("runs");
    let folder = tmp.path().join("configs");
    for shard in ["0/3", "1/3", "2/3"] {
        let o = out(&[
            "run",
            folder.to_str().unwrap(),
            "--shard",
            shard,
            "--seeds",
            "2",
            "--out",
            root.to_str().unwrap(),
            "-q",
        ]);
        assert!(o.status.success(), "{shard}: {}", text(&o));
    }
    let mut made: Vec<String> = std::fs::read_dir(root.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(made, ["x-seed10", "x-seed11", "y-seed20", "y-seed21"]);
    for name in &made {
        digests(&root.join("sub").join(name));
    }
    let again = out(&[
        "run",
        folder.to_str().unwrap(),
        "--shard",
        "1/3",
        "--seeds",
        "2",
        "--out",
        root.to_str().unwrap(),
    ]);
    assert!(again.status.success());
    assert!(
        text(&again).contains("[skip]") && !text(&again).contains("[run]"),
        "{}",
        text(&again)
    );
    let bad = out(&["run", folder.to_str().unwrap(), "--shard", "3/3"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

/// Ctrl-C while a posterior's missing prior is being trained first: the prior checkpoints,
/// the posterior exits 130 saying so (it used to go on and fail to load the unfinished
/// prior), no posterior folder is left, and running the posterior again resumes the prior
/// and completes both.
#[test]
fn ctrl_c_during_a_posteriors_prior_checkpoints_the_prior() {
    let tmp = tempfile::tempdir().unwrap();
    let prior = "(seed: 2, target: Gmm25, sampler: (steps: 20, sigma2: 5.0),
        network: (hidden: 32, harmonics: 16),
        train: (method: Mle, iterations: 4000, batch: 64),
        eval: (samples: 64, every: 0, w2: false, eubo: false))";
    write_config(tmp.path(), "prior.ron", prior);
    let listed = out(&["list", "--json", tmp.path().to_str().unwrap()]);
    let entries: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let digest = entries[0]["digest"].as_str().unwrap().to_string();
    let post = write_config(
        tmp.path(),
        "post.ron",
        &format!(
            "(seed: 3, target: Gmm25To9, sampler: (steps: 20, sigma2: 5.0),
            network: (hidden: 32, harmonics: 16),
            train: (method: Rtb, iterations: 3, batch: 8),
            eval: (samples: 16, every: 0, w2: false, eubo: false),
            posterior: Some((prior: (config: \"prior.ron\", digest: \"{digest}\"))))"
        ),
    );
    let runs = tmp.path().join("runs");
    let dir = runs.join("post");
    let child = spawn_run(&post, &dir);
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted before this posterior started"),
        "{err}"
    );
    let prior_dir = runs.join("priors").join(&digest[..16]);
    assert!(partial(&prior_dir).join("checkpoint.bin").is_file());
    assert!(!dir.exists() && !partial(&dir).exists());

    let again = run_quiet(&post, &dir);
    assert!(again.status.success(), "{}", text(&again));
    digests(&prior_dir);
    digests(&dir);
}

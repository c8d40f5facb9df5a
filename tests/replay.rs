//! The CI smoke config, replayed: two runs give identical digests and `repro verify` passes.

use std::path::Path;
use std::process::Command;

fn repro(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run repro")
}

fn digests(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["status"], "complete", "{text}");
    m["files"].clone()
}

#[test]
fn smoke_config_is_bitwise_reproducible_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        let o = repro(&[
            "run",
            "paper-configs/smoke.ron",
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (da, db) = (digests(&a), digests(&b));
    assert_eq!(da, db);
    assert_eq!(
        da.as_object().unwrap().len(),
        6,
        "config, metrics, curve, evals, samples, params"
    );
    let v = repro(&["verify", a.to_str().unwrap()]);
    assert!(
        v.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    // The metrics are real numbers: the smoke run has a finite ELBO below the EUBO.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("metrics.json")).unwrap()).unwrap();
    let (elbo, eubo) = (m["elbo"].as_f64().unwrap(), m["eubo"].as_f64().unwrap());
    assert!(
        elbo.is_finite() && eubo.is_finite() && elbo < eubo,
        "ELBO {elbo} must be below EUBO {eubo}"
    );
}

//! Off-policy training (spec §4.1): the both-ways schedule with a replay buffer and local
//! search trains, fills its buffers when the schedule says, survives a checkpoint round trip bit
//! for bit (the buffers are part of the checkpoint), and its config errors name the field.

use diffusion_samplers::checkpoint;
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::train::Trainer;

/// 25GMM, T = 10, B = 16, local search every 4 iterations (at it = 1, 5, 9, …).
const TINY_LS: &str = "(seed: 3, target: Gmm25, sampler: (steps: 10, sigma2: 5.0),
    network: (hidden: 16, harmonics: 8, joint_layers: 2),
    train: (method: Tb, iterations: 14, batch: 16,
        exploration: Some((std: 0.1, decay_iters: Some(8))),
        off_policy: Some((buffer_capacity: 100, sampling: Rank(k: 0.01),
            local_search: Some((steps: 12, burn_in: 4, step0: 0.1, adapt: Some(0.01),
                target_acceptance: 0.574, window: 5, beta: 1.0)),
            local_search_period: 4))),
    eval: (samples: 32, every: 0, w2: false, eubo: false))";

fn cfg(text: &str) -> ExperimentConfig {
    ExperimentConfig::parse(text, "test").expect("test config parses")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn both_ways_schedule_fills_the_buffers_when_due() {
    // Room for every local-search sample (up to 7·16 per call).
    let c = cfg(&TINY_LS.replace("buffer_capacity: 100", "buffer_capacity: 1000"));
    let mut tr = Trainer::new(&c).unwrap();
    let mut replay_len = Vec::new();
    let mut ls_len = Vec::new();
    for _ in 0..10 {
        tr.step().unwrap();
        replay_len.push(tr.replay.as_ref().unwrap().len());
        ls_len.push(tr.ls_replay.as_ref().unwrap().len());
    }
    // Forward iterations (it even) add B = 16 states.
    assert_eq!(replay_len, vec![16, 16, 32, 32, 48, 48, 64, 64, 80, 80]);
    // Local search at it = 1, 5, 9 only: the LS buffer grows exactly there (accepted
    // post-burn-in MALA proposals: 7 iterations × 16 chains at most).
    for (it, w) in ls_len.windows(2).enumerate() {
        let grew = w[1] > w[0];
        assert_eq!(
            grew,
            (it + 1) % 4 == 1,
            "LS buffer at it {}: {ls_len:?}",
            it + 1
        );
    }
    assert!(ls_len[1] > 0 && ls_len[1] <= 7 * 16, "{ls_len:?}");
    // Parameters moved and stayed finite on both kinds of iteration.
    assert!(tr.params.iter().all(|p| p.is_finite()));
}

#[test]
fn a_checkpoint_restores_the_buffers_bitwise() {
    let c = cfg(TINY_LS);
    let mut straight = Trainer::new(&c).unwrap();
    for _ in 0..14 {
        straight.step().unwrap();
    }
    let mut first = Trainer::new(&c).unwrap();
    for _ in 0..6 {
        first.step().unwrap();
    }
    let bytes = first.checkpoint(&[], &[]).encode();
    let mut ck = checkpoint::decode(&bytes).unwrap();
    assert!(ck.replay.is_some() && ck.ls_replay.is_some());
    // restore() checks the curve length against the iteration count.
    ck.curve = (0..6)
        .map(|i| diffusion_samplers::train::CurveRow {
            iteration: i,
            loss: 0.0,
            log_z: 0.0,
            explore_std: 0.0,
        })
        .collect();
    let mut resumed = Trainer::restore(&c, &ck).unwrap();
    for _ in 6..14 {
        resumed.step().unwrap();
    }
    assert_eq!(bits(&resumed.params), bits(&straight.params));
    let (a, b) = (
        resumed.replay.as_ref().unwrap().entries(),
        straight.replay.as_ref().unwrap().entries(),
    );
    assert_eq!(bits(a.0), bits(b.0));
    assert_eq!(a.1, b.1);
    // The buffer wrapped (capacity 100 < 7 forward batches of 16): FIFO order survived too.
    assert_eq!(straight.replay.as_ref().unwrap().len(), 100);
}

#[test]
fn without_local_search_backward_iterations_draw_from_the_replay_buffer() {
    let text = TINY_LS.replace(
        "local_search: Some((steps: 12, burn_in: 4, step0: 0.1, adapt: Some(0.01),
                target_acceptance: 0.574, window: 5, beta: 1.0)),",
        "local_search: None,",
    );
    let c = cfg(&text);
    let mut tr = Trainer::new(&c).unwrap();
    assert!(tr.ls_replay.is_none());
    let mut losses = Vec::new();
    for _ in 0..6 {
        losses.push(tr.step().unwrap().loss);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert_eq!(tr.replay.as_ref().unwrap().len(), 48);
}

#[test]
fn off_policy_config_errors_name_the_field() {
    let small = TINY_LS.replace("buffer_capacity: 100", "buffer_capacity: 8");
    let e = ExperimentConfig::parse(&small, "t.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.off_policy.buffer_capacity"), "{e}");
    let bad_k = TINY_LS.replace("Rank(k: 0.01)", "Rank(k: -1.0)");
    let e = ExperimentConfig::parse(&bad_k, "t.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.off_policy.sampling"), "{e}");
    let bad_eta = TINY_LS.replace("step0: 0.1", "step0: 0.0");
    let e = ExperimentConfig::parse(&bad_eta, "t.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.off_policy.local_search.step0"), "{e}");
    let unknown = TINY_LS.replace(
        "local_search_period: 4",
        "local_search_period: 4, lr_back: 1.0",
    );
    let e = ExperimentConfig::parse(&unknown, "t.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("lr_back"), "{e}");
}

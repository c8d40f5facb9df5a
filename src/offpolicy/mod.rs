//! Off-policy machinery (spec §4): the training-step schedule, the replay buffers and local
//! search.
//!
//! - [`phase`]: which branch iteration `it` runs (§4.1) — forward loss, backward loss, and
//!   whether a local-search call precedes the backward loss;
//! - [`replay_buffer`]: the FIFO (x, log R) buffer with uniform or rank-prioritised sampling
//!   (§4.2), fully inspectable and restorable for checkpoints;
//! - [`local_search`]: parallel MALA with the energy code's adaptive step (§4.3).
//!
//! Randomness comes only from the `&mut ChaCha8Rng` the caller passes (a named stream from
//! [`crate::rng::stream`]), in a documented order, so every call is bitwise reproducible.
//!
//! Shape letters: B batch, D state dim, M local-search chains, N buffer entries, S post-burn-in
//! samples, K local-search iterations.

pub mod local_search;
pub mod replay_buffer;

pub use local_search::{LocalSearch, LocalSearchConfig, LocalSearchOutput};
pub use replay_buffer::{ReplayBuffer, ReplayBufferError, SamplingMode, REFERENCE_RANK_K};

/// The period of local-search calls in the reference energy code (`it mod 100`).
pub const REFERENCE_LOCAL_SEARCH_PERIOD: usize = 100;

/// What training iteration `it` does (spec §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Forward loss on fresh (exploratory) trajectories; with `both_ways`, their terminal states
    /// and log R then go into D_buffer.
    Forward,
    /// Backward loss on states drawn from the buffer. With `local_search` set, first draw B states
    /// from D_buffer, run local search from them and append its post-burn-in samples to D_LS;
    /// the backward states are then drawn from D_LS whenever local search is configured at all
    /// (from D_buffer otherwise).
    Backward { local_search: bool },
}

/// The branch of iteration `it` (`it = 0 ..= epochs`).
///
/// `both_ways = false` is the plain mode (every iteration is [`Phase::Forward`]). With
/// `both_ways`, even iterations are forward and odd ones backward. `local_search_period = Some(p)`
/// (the reference uses p = [`REFERENCE_LOCAL_SEARCH_PERIOD`]) runs local search on the odd
/// iterations with `it mod p == 1`: it = 1, 101, 201, …
///
/// Deviation from the paper's Algorithm 1 (spec §9 item 10): it writes `i % 100 == 0` inside the
/// odd branch, which can never hold for an odd i; the reference code tests `it % 100 ∈ {0, 1}`,
/// whose effective rule on odd iterations is `it % 100 == 1`. We implement that effective rule,
/// the evident intent (one local-search call every p iterations), and it is what produced the
/// paper's numbers. For other (odd) periods the set {0, 1} would fire twice per period on odd
/// iterations, so we state the rule as `== 1` rather than copy the set.
pub fn phase(it: usize, both_ways: bool, local_search_period: Option<usize>) -> Phase {
    if !both_ways || it.is_multiple_of(2) {
        return Phase::Forward;
    }
    let local_search = match local_search_period {
        // A period of 1 means "every odd iteration" (it % 1 is always 0, never 1).
        Some(1) => true,
        Some(p) if p > 1 => it % p == 1,
        _ => false,
    };
    Phase::Backward { local_search }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_reference_effective_rule() {
        // Plain mode: always forward.
        for it in 0..10 {
            assert_eq!(phase(it, false, Some(100)), Phase::Forward);
        }
        // both_ways: even forward, odd backward; local search at it = 1, 101, 201, … only.
        let ls: Vec<usize> = (0..=1000)
            .filter(|&it| phase(it, true, Some(100)) == Phase::Backward { local_search: true })
            .collect();
        assert_eq!(ls, vec![1, 101, 201, 301, 401, 501, 601, 701, 801, 901]);
        assert_eq!(phase(100, true, Some(100)), Phase::Forward);
        assert_eq!(
            phase(3, true, Some(100)),
            Phase::Backward {
                local_search: false
            }
        );
        assert_eq!(
            phase(3, true, None),
            Phase::Backward {
                local_search: false
            }
        );
        // epochs = 25 000 (it = 0 ..= 25 000): 250 calls, as §4.1 says.
        let calls = (0..=25_000)
            .filter(|&it| phase(it, true, Some(100)) == Phase::Backward { local_search: true })
            .count();
        assert_eq!(calls, 250);
        assert_eq!(
            phase(7, true, Some(1)),
            Phase::Backward { local_search: true }
        );
    }
}

//! The FIFO replay buffer of (x, log R(x)) pairs with uniform or rank-prioritised sampling
//! (spec §4.2; reference `energy_sampling/buffer.py`).
//!
//! Entries are indexed 0 .. N in oldest-to-newest order (N = current size ≤ capacity C); `add`
//! appends a batch in order and drops the oldest entries beyond C.
//!
//! Rank prioritisation: rank 0 is the largest log R, and entry i is drawn with probability
//! P(i) ∝ 1/(k·N + rank_i). Draws are i.i.d. with replacement from the *current* contents at each
//! [`ReplayBuffer::sample`] call. Deviations from the reference code, and why (spec §9 item 6):
//! - the reference builds a `WeightedRandomSampler` that pre-draws N indices at iterator creation
//!   and serves them in batches until they run out, while entries keep being appended and
//!   dropped, so the stale indices point at shifted rows. We draw fresh i.i.d. indices from the
//!   current buffer at every call, the behaviour that code evidently intends (§4.2);
//! - the reference hard-codes k = 0.01 and ignores `--rank_weight`; k is a field of
//!   [`SamplingMode::Rank`] here, with [`REFERENCE_RANK_K`] = 0.01 as the default;
//! - the reference ranks with `np.argsort(np.argsort(-scores))`, an unstable quicksort, so the
//!   ranks of tied log R values are unspecified. We break ties by insertion order, older first
//!   (the older entry gets the smaller rank, hence the larger weight), which makes sampling a
//!   pure function of the contents. NaN log R values rank last (numpy sorts NaN to the end too),
//!   and −0.0 ties with +0.0;
//! - the reference's first `add` stores the first batch twice (§4.2); we store it once;
//! - the reference's non-rank modes crash (§9 item 5); [`SamplingMode::Uniform`] is the intended
//!   uniform draw.
//!
//! Storage: one contiguous row-major `Vec<f32>` of rows and a `Vec<f64>` of log R, with a start
//! offset. Dropping the oldest rows only advances the offset; the dead prefix is compacted away
//! (one memmove of the live rows) once it exceeds C/4 rows, so `add` costs amortised O(n·D) for
//! n rows, the memory is at most 1.25·C rows, and the live entries are always one contiguous
//! slice in oldest-to-newest order — which is what [`ReplayBuffer::entries`] hands a checkpoint.
//!
//! Ranking: rank mode keeps the live entries sorted by (log R descending, insertion order) and
//! the cumulative rank weights (24 bytes per entry), updated by each `add` in linear passes (drop
//! the dead entries, merge the sorted batch in place), so `sample` is a binary search per draw. Both are derived from the entries alone (a restored buffer rebuilds
//! them by one sort), so a checkpoint needs nothing but [`ReplayBuffer::entries`].

use crate::rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The rank-prioritisation constant the reference code hard-codes (`1e-2` in `buffer.py`).
pub const REFERENCE_RANK_K: f64 = 0.01;

/// How [`ReplayBuffer::sample`] picks entries.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum SamplingMode {
    /// Every live entry with probability 1/N.
    Uniform,
    /// P(i) ∝ 1/(k·N + rank_i), rank 0 = the largest log R (ties: older first). k > 0.
    Rank { k: f64 },
}

impl Default for SamplingMode {
    /// The reference configuration: rank prioritisation with k = 0.01.
    fn default() -> Self {
        SamplingMode::Rank {
            k: REFERENCE_RANK_K,
        }
    }
}

impl SamplingMode {
    /// Rejects a rank constant that is not finite and positive (k = 0 gives rank 0 an infinite
    /// weight). Returns (field, message) like [`crate::config::ExperimentConfig::validate`].
    pub fn validate(&self) -> Result<(), (String, String)> {
        match *self {
            SamplingMode::Uniform => Ok(()),
            SamplingMode::Rank { k } if k.is_finite() && k > 0.0 => Ok(()),
            SamplingMode::Rank { k } => Err((
                "rank.k".to_string(),
                format!("must be finite and positive, got {k}"),
            )),
        }
    }
}

/// Why [`ReplayBuffer::from_entries`] refused a saved state.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplayBufferError {
    #[error("replay buffer: capacity and dim must be positive (capacity {capacity}, dim {dim})")]
    EmptyShape { capacity: usize, dim: usize },
    #[error("replay buffer: {xs} state values are not {rows} rows of dim {dim}")]
    Shape { xs: usize, rows: usize, dim: usize },
    #[error("replay buffer: {rows} entries exceed the capacity {capacity}")]
    OverCapacity { rows: usize, capacity: usize },
    #[error("replay buffer: bad sampling mode: {field} {msg}")]
    Mode { field: String, msg: String },
}

/// A FIFO of capacity C holding (x ∈ ℝ^D as an f32 row, log R(x) as f64).
#[derive(Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    dim: usize,
    mode: SamplingMode,
    /// Rows `start ..` of these are the live entries, oldest first: `[(start + N)·D]`.
    xs: Vec<f32>,
    /// `[start + N]`, aligned with `xs`.
    log_r: Vec<f64>,
    /// Number of dead rows at the front of `xs` / `log_r`.
    start: usize,
    /// Rank mode only, `[N]`: the live entries as (descending_key(log R), seq), sorted — that
    /// is, in rank order. Kept sorted across adds by one merge pass (see [`ReplayBuffer::add`]).
    ranked: Vec<(u64, u64)>,
    /// Rank mode only, `[N]`: c_r = Σ_{j ≤ r} 1/(k·N + j), rebuilt when N changes.
    cum: Vec<f64>,
    /// Sequence number of the next entry; live entry i has seq `next_seq − N + i`.
    next_seq: u64,
}

impl std::fmt::Debug for ReplayBuffer {
    /// Sizes only: a full buffer holds 600 000 rows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBuffer")
            .field("capacity", &self.capacity)
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("mode", &self.mode)
            .finish()
    }
}

impl ReplayBuffer {
    /// An empty buffer of capacity C = `capacity` for states of dimension D = `dim`.
    ///
    /// Panics on C = 0, D = 0 or an invalid `mode` (configs are validated before this).
    pub fn new(capacity: usize, dim: usize, mode: SamplingMode) -> Self {
        assert!(
            capacity > 0 && dim > 0,
            "replay buffer: capacity {capacity} and dim {dim} must be positive"
        );
        if let Err((field, msg)) = mode.validate() {
            panic!("replay buffer: {field} {msg}");
        }
        ReplayBuffer {
            capacity,
            dim,
            mode,
            xs: Vec::new(),
            log_r: Vec::new(),
            start: 0,
            ranked: Vec::new(),
            cum: Vec::new(),
            next_seq: 0,
        }
    }

    /// Rebuild a buffer from a checkpoint: `xs` `[N, D]` and `log_r` `[N]` in oldest-to-newest
    /// order, as [`ReplayBuffer::entries`] returned them. The result holds exactly those entries
    /// and therefore samples identically to the saved buffer (sampling depends only on the live
    /// entries, their order, the mode and the caller's RNG).
    pub fn from_entries(
        capacity: usize,
        dim: usize,
        mode: SamplingMode,
        xs: &[f32],
        log_r: &[f64],
    ) -> Result<Self, ReplayBufferError> {
        if capacity == 0 || dim == 0 {
            return Err(ReplayBufferError::EmptyShape { capacity, dim });
        }
        mode.validate()
            .map_err(|(field, msg)| ReplayBufferError::Mode { field, msg })?;
        let rows = log_r.len();
        if xs.len() != rows * dim {
            return Err(ReplayBufferError::Shape {
                xs: xs.len(),
                rows,
                dim,
            });
        }
        if rows > capacity {
            return Err(ReplayBufferError::OverCapacity { rows, capacity });
        }
        let mut buf = ReplayBuffer {
            capacity,
            dim,
            mode,
            xs: xs.to_vec(),
            log_r: log_r.to_vec(),
            start: 0,
            ranked: Vec::new(),
            cum: Vec::new(),
            next_seq: rows as u64,
        };
        if let SamplingMode::Rank { k } = mode {
            // The same order the incremental merge maintains: a unique total order, so one sort
            // rebuilds it exactly.
            buf.ranked = log_r
                .iter()
                .enumerate()
                .map(|(i, &v)| (descending_key(v), i as u64))
                .collect();
            buf.ranked.sort_unstable();
            buf.cum = cumulative_rank_weights(rows, k);
        }
        Ok(buf)
    }

    /// N, the number of live entries.
    pub fn len(&self) -> usize {
        self.log_r.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// D, the state dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// C, the most entries kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn mode(&self) -> SamplingMode {
        self.mode
    }

    /// The live entries, oldest to newest: (`[N, D]` states, `[N]` log R). Index i of
    /// [`ReplayBuffer::sample`] and [`ReplayBuffer::probabilities`] refers to row i here.
    pub fn entries(&self) -> (&[f32], &[f64]) {
        (&self.xs[self.start * self.dim..], &self.log_r[self.start..])
    }

    /// Dead rows tolerated at the front before compaction: C/4 (at least 1).
    fn slack(&self) -> usize {
        self.capacity.div_ceil(4)
    }

    /// Append `xs` `[n, D]` with `log_r` `[n]` in order; drop the oldest entries beyond C.
    /// If n ≥ C only the newest C of the batch stay. Panics if the shapes disagree.
    ///
    /// Cost: O(n·D) amortised for the rows; in rank mode also O(N + n log n) to keep the rank
    /// order (sort the batch, drop the dead entries and merge in place, one pass) and O(N) to
    /// rebuild the cumulative weights while N is still growing. That moves the ranking work out
    /// of [`ReplayBuffer::sample`], where a full O(N log N) sort per call measured ≈ 54 ms at
    /// N = 600 000 on the 2-core development machine, into linear passes here: an add of 300 rows
    /// of D = 32 into the full buffer measured 3.6 ms and a 300-draw sample 0.4 ms
    /// (`reference_capacity_buffer` in `tests/offpolicy.rs` prints both).
    pub fn add(&mut self, xs: &[f32], log_r: &[f64]) {
        let d = self.dim;
        let n = log_r.len();
        assert_eq!(
            xs.len(),
            n * d,
            "replay buffer add: {} values are not {n} rows of dim {d}",
            xs.len()
        );
        // The newest min(n, C) rows of the batch survive.
        let keep_new = n.min(self.capacity);
        let (xs, log_r) = (&xs[(n - keep_new) * d..], &log_r[n - keep_new..]);
        // Old entries that still fit after the batch.
        let keep_old = self.len().min(self.capacity - keep_new);
        self.start = self.log_r.len() - keep_old;
        if self.start > self.slack() || keep_old == 0 {
            // Compact: move the surviving old rows to the front (a no-op copy when none survive).
            self.xs.drain(..self.start * d);
            self.log_r.drain(..self.start);
            self.start = 0;
        }
        // Rows held after the push: start + keep_old + keep_new ≤ C/4 + C. Grow geometrically up
        // to that bound, never past it, so a full buffer's allocation is at most 1.25·C rows.
        let held = self.log_r.len() + keep_new;
        if held > self.log_r.capacity() {
            let bound = self.capacity + self.slack();
            let want = held.max(2 * self.log_r.capacity()).min(bound).max(held);
            self.log_r.reserve_exact(want - self.log_r.len());
            self.xs.reserve_exact(want * d - self.xs.len());
        }
        self.xs.extend_from_slice(xs);
        self.log_r.extend_from_slice(log_r);

        if let SamplingMode::Rank { k } = self.mode {
            // Old entry seqs run over next_seq − old_len .. next_seq; the oldest ones go.
            let first_kept_seq = self.next_seq - keep_old as u64;
            let mut batch: Vec<(u64, u64)> = log_r
                .iter()
                .enumerate()
                .map(|(j, &v)| (descending_key(v), self.next_seq + j as u64))
                .collect();
            batch.sort_unstable();
            self.next_seq += keep_new as u64;
            self.ranked.retain(|&(_, seq)| seq >= first_kept_seq);
            merge_sorted_into(&mut self.ranked, &batch);
            if self.cum.len() != self.len() {
                self.cum = cumulative_rank_weights(self.len(), k);
            }
        }
    }

    /// The index (into [`ReplayBuffer::entries`]) of the entry with rank r. Rank mode only.
    fn index_of_rank(&self, r: usize) -> usize {
        let first_seq = self.next_seq - self.len() as u64;
        (self.ranked[r].1 - first_seq) as usize
    }

    /// The exact sampling distribution over entries (index i = row i of [`entries`]), `[N]`.
    /// For rank mode P(i) = w_{rank_i} / Σ_r w_r with w_r = 1/(k·N + r) and Σ_r w_r the same
    /// rank-ordered sum [`sample`] searches.
    ///
    /// [`entries`]: ReplayBuffer::entries
    /// [`sample`]: ReplayBuffer::sample
    pub fn probabilities(&self) -> Vec<f64> {
        let n = self.len();
        match self.mode {
            SamplingMode::Uniform => vec![1.0 / n as f64; n],
            SamplingMode::Rank { k } => {
                let kn = k * n as f64;
                let mut p = vec![0.0; n];
                if let Some(&total) = self.cum.last() {
                    for r in 0..n {
                        p[self.index_of_rank(r)] = 1.0 / (kn + r as f64) / total;
                    }
                }
                p
            }
        }
    }

    /// `n` indices (into [`ReplayBuffer::entries`]) drawn i.i.d. with replacement.
    ///
    /// Random numbers, in order: rank mode uses one [`rng::uniform_f64`] word per index; uniform
    /// mode one [`rng::below`] per index (rejection, almost always one word).
    ///
    /// Rank mode: a rank r is the first one whose cumulative weight exceeds u·Σw (binary search
    /// over the maintained cumulative sums, O(log N) per index, so a call is O(n log N)). The sums
    /// are accumulated in f64 in rank order, and the rank order is a unique total order, so the
    /// draw is a deterministic function of (contents, k, RNG). The u resolution is 2⁻³², so each
    /// P(i) is realised to within 2⁻³² absolute.
    ///
    /// Panics if the buffer is empty and n > 0.
    pub fn sample(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        if n == 0 {
            return Vec::new();
        }
        let len = self.len();
        assert!(len > 0, "replay buffer: sample({n}) from an empty buffer");
        match self.mode {
            SamplingMode::Uniform => {
                let len = u32::try_from(len).expect("replay buffer larger than 2^32 entries");
                (0..n).map(|_| rng::below(rng, len) as usize).collect()
            }
            SamplingMode::Rank { .. } => {
                let total = self.cum[len - 1];
                (0..n)
                    .map(|_| {
                        let t = rng::uniform_f64(rng) * total;
                        let r = self.cum.partition_point(|&c| c <= t).min(len - 1);
                        self.index_of_rank(r)
                    })
                    .collect()
            }
        }
    }

    /// The entries at `indices`: (`[n, D]` states, `[n]` log R). Panics on an index ≥ N.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<f64>) {
        let d = self.dim;
        let (xs, log_r) = self.entries();
        let mut out_x = Vec::with_capacity(indices.len() * d);
        let mut out_r = Vec::with_capacity(indices.len());
        for &i in indices {
            out_x.extend_from_slice(&xs[i * d..(i + 1) * d]);
            out_r.push(log_r[i]);
        }
        (out_x, out_r)
    }

    /// [`ReplayBuffer::sample`] then [`ReplayBuffer::gather`]: `n` states `[n, D]` and log R `[n]`.
    pub fn sample_batch(&self, n: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<f64>) {
        self.gather(&self.sample(n, rng))
    }
}

/// Cumulative rank weights c_r = Σ_{j ≤ r} 1/(k·N + j), r = 0 .. N, summed in rank order in f64.
/// They depend on N and k only, not on the contents.
fn cumulative_rank_weights(n: usize, k: f64) -> Vec<f64> {
    let kn = k * n as f64;
    let mut acc = 0.0f64;
    (0..n)
        .map(|r| {
            acc += 1.0 / (kn + r as f64);
            acc
        })
        .collect()
}

/// Merge the sorted `batch` into the sorted `ranked` in place, from the back: every element moves
/// at most once, O(N + n). Elements are unique (distinct seqs), so the result is the unique
/// sorted order.
fn merge_sorted_into(ranked: &mut Vec<(u64, u64)>, batch: &[(u64, u64)]) {
    let old = ranked.len();
    ranked.resize(old + batch.len(), (0, 0));
    let (mut i, mut j, mut w) = (old, batch.len(), old + batch.len());
    while j > 0 {
        w -= 1;
        if i > 0 && ranked[i - 1] > batch[j - 1] {
            ranked[w] = ranked[i - 1];
            i -= 1;
        } else {
            ranked[w] = batch[j - 1];
            j -= 1;
        }
    }
}

/// A u64 whose ascending order is "log R descending, NaN last": the usual order-preserving map
/// of f64 bits (flip all bits of negatives, set the sign bit of positives), complemented. −0.0 is
/// mapped to +0.0 first so the two tie (then insertion order decides).
fn descending_key(v: f64) -> u64 {
    if v.is_nan() {
        return u64::MAX;
    }
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits();
    let ascending = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    // The complement of +∞'s key is 2^52 − 1 > 0, and of −∞'s is < u64::MAX, so NaN stays last.
    !ascending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_key_orders_values() {
        let vals = [
            f64::INFINITY,
            1e300,
            2.0,
            1.0,
            1e-300,
            0.0,
            -1e-300,
            -1.0,
            -1e300,
            f64::NEG_INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(descending_key(w[0]) < descending_key(w[1]), "{w:?}");
        }
        assert_eq!(descending_key(-0.0), descending_key(0.0));
        assert!(descending_key(f64::NEG_INFINITY) < descending_key(f64::NAN));
        assert_eq!(descending_key(-f64::NAN), u64::MAX);
    }

    /// Compaction and the bounded allocation: after many small adds into a small buffer, the
    /// entries are the newest C rows in order and the allocation stays within 1.25·C rows (+ the
    /// batch's slack from geometric growth, bounded by the same cap).
    #[test]
    fn many_adds_keep_newest_and_bounded_memory() {
        let (c, d) = (10, 2);
        let mut buf = ReplayBuffer::new(c, d, SamplingMode::Uniform);
        let mut next = 0u32;
        for step in 0..200usize {
            let n = step % 4 + 1;
            let xs: Vec<f32> = (0..n * d).map(|j| (next as usize * d + j) as f32).collect();
            let lr: Vec<f64> = (0..n).map(|j| (next as usize + j) as f64).collect();
            next += n as u32;
            buf.add(&xs, &lr);
            let (ex, el) = buf.entries();
            let len = buf.len();
            assert_eq!(len, (next as usize).min(c));
            let first = next as usize - len;
            for (i, &v) in el.iter().enumerate() {
                assert_eq!(v, (first + i) as f64);
                assert_eq!(ex[i * d], ((first + i) * d) as f32);
                assert_eq!(ex[i * d + 1], ((first + i) * d + 1) as f32);
            }
            assert!(
                buf.log_r.capacity() <= c + buf.slack(),
                "{}",
                buf.log_r.capacity()
            );
            assert!(buf.start <= buf.slack());
        }
    }

    /// The rank order maintained by `add` (retain + in-place merge) equals the one a fresh sort
    /// of the same entries gives, through overflow, ties, NaN and batches larger than C.
    #[test]
    fn incremental_rank_order_equals_fresh_sort() {
        let mode = SamplingMode::Rank { k: 0.3 };
        let mut buf = ReplayBuffer::new(37, 1, mode);
        let mut rng = rng::stream(9, "offpolicy-unit/merge", 0);
        for step in 0..300u32 {
            let n = [1usize, 5, 13, 40][(step % 4) as usize];
            let lr: Vec<f64> = (0..n)
                .map(|_| match rng::below(&mut rng, 12) {
                    0 => f64::NAN,
                    1 => -0.0,
                    v => (v / 2) as f64, // ties
                })
                .collect();
            buf.add(&vec![0.0; n], &lr);
            let (xs, el) = buf.entries();
            let fresh = ReplayBuffer::from_entries(37, 1, mode, xs, el).unwrap();
            let order =
                |b: &ReplayBuffer| (0..b.len()).map(|r| b.index_of_rank(r)).collect::<Vec<_>>();
            assert_eq!(order(&buf), order(&fresh), "step {step}");
            assert_eq!(buf.cum, fresh.cum);
            assert_eq!(buf.cum.len(), buf.len());
        }
    }

    #[test]
    fn from_entries_rejects_bad_states() {
        let m = SamplingMode::default();
        assert_eq!(
            ReplayBuffer::from_entries(3, 2, m, &[0.0; 5], &[0.0; 3]).unwrap_err(),
            ReplayBufferError::Shape {
                xs: 5,
                rows: 3,
                dim: 2
            }
        );
        assert_eq!(
            ReplayBuffer::from_entries(2, 1, m, &[0.0; 3], &[0.0; 3]).unwrap_err(),
            ReplayBufferError::OverCapacity {
                rows: 3,
                capacity: 2
            }
        );
        assert!(ReplayBuffer::from_entries(0, 1, m, &[], &[]).is_err());
        assert!(ReplayBuffer::from_entries(2, 1, SamplingMode::Rank { k: 0.0 }, &[], &[]).is_err());
    }
}

//! Checkpoints: everything a run's future depends on, in one self-checking binary file.
//!
//! Layout (little-endian):
//! ```text
//! magic  b"DSCKPT\0\n"                8 bytes
//! format u32 = FORMAT                  4 bytes
//! sections: tag [u8; 4], len u64, payload[len]   (in any order, each at most once)
//! trailer: blake3 of everything above  32 bytes
//! ```
//! Sections: `META` (crate version, config digest, iteration), `PARM` (parameters), `ADAM`
//! (moments and per-block step counts), `CURV` (training curve so far), `EVAL` (evaluations so
//! far), `LORA` (a LoRA posterior's adapter vector θ; the Adam moments are then θ's), and with
//! off-policy training `BUFF` / `LSBF` (the replay buffer and the local-search
//! buffer: rows, dim, the states as f32, their log R as f64, oldest first). A reader that meets
//! a tag it does not know refuses the file rather than misreading it. RNG state needs no section:
//! every stream is keyed by (seed, purpose, iteration), so the iteration number is its position;
//! the local search's step size restarts from η₀ at every call, so it needs none either.
//!
//! [`decode`] never panics and never allocates more than the file's own size: every length is
//! checked against the bytes present first.

use crate::train::{CurveRow, EvalRow};

const MAGIC: &[u8; 8] = b"DSCKPT\0\n";
/// Bumped when a section's payload layout changes.
pub const FORMAT: u32 = 1;

/// A training state at the end of iteration `iteration − 1` (i.e. `iteration` steps done).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub crate_version: String,
    /// `ExperimentConfig::digest` of the run's resolved config.
    pub config_digest: String,
    /// Iterations completed.
    pub iteration: u64,
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_steps: Vec<u64>,
    pub curve: Vec<CurveRow>,
    pub evals: Vec<EvalRow>,
    /// The replay buffer's entries (off-policy runs).
    pub replay: Option<BufferState>,
    /// The local-search buffer's entries (runs with local search).
    pub ls_replay: Option<BufferState>,
    /// A LoRA posterior's adapter vector θ (then the Adam moments are θ's, not PARM's).
    pub lora: Option<Vec<f32>>,
}

/// A replay buffer's contents, oldest first: states [N, D] and their log R [N].
#[derive(Clone, Debug, PartialEq)]
pub struct BufferState {
    pub dim: usize,
    pub xs: Vec<f32>,
    pub log_r: Vec<f64>,
}

impl BufferState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, self.log_r.len() as u64);
        put_u64(&mut out, self.dim as u64);
        out.extend(f32s(&self.xs));
        for v in &self.log_r {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8], name: &str) -> Result<Self, CheckpointError> {
        let mut r = Reader { b };
        let rows = len_usize(r.u64()?)?;
        let dim = len_usize(r.u64()?)?;
        let cells = rows
            .checked_mul(dim)
            .filter(|c| c.checked_mul(4).is_some_and(|n| n <= r.b.len()))
            .ok_or_else(|| malformed(format!("section {name} declares more rows than it holds")))?;
        let xs = read_f32s(r.take(cells * 4)?)?;
        if rows > r.b.len() / 8 {
            return Err(malformed(format!("section {name} lacks the log R values")));
        }
        let log_r = (0..rows)
            .map(|_| r.u64().map(f64::from_bits))
            .collect::<Result<Vec<f64>, _>>()?;
        r.end(name)?;
        Ok(BufferState { dim, xs, log_r })
    }
}

/// Why a checkpoint file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a checkpoint file (bad magic or shorter than a header)")]
    NotACheckpoint,
    #[error("checkpoint format {found} is not supported (this build reads format {FORMAT})")]
    Format { found: u32 },
    #[error("checkpoint is corrupt: its blake3 checksum does not match (truncated or edited?)")]
    Checksum,
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint has an unknown section {0:?}: written by another crate version?")]
    UnknownSection(String),
    #[error("checkpoint was written by diffusion-samplers {found}, this is {expected}")]
    CrateVersion { found: String, expected: String },
    #[error("checkpoint belongs to another config (digest {found}, expected {expected})")]
    Config { found: String, expected: String },
}

impl Checkpoint {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        let mut meta = Vec::new();
        put_str(&mut meta, &self.crate_version);
        put_str(&mut meta, &self.config_digest);
        meta.extend_from_slice(&self.iteration.to_le_bytes());
        section(&mut out, b"META", &meta);
        section(&mut out, b"PARM", &f32s(&self.params));
        let mut adam = Vec::new();
        put_u64(&mut adam, self.adam_m.len() as u64);
        adam.extend(f32s(&self.adam_m));
        adam.extend(f32s(&self.adam_v));
        put_u64(&mut adam, self.adam_steps.len() as u64);
        for s in &self.adam_steps {
            put_u64(&mut adam, *s);
        }
        section(&mut out, b"ADAM", &adam);
        let mut curve = Vec::new();
        for r in &self.curve {
            put_u64(&mut curve, r.iteration as u64);
            for v in [r.loss, r.log_z, r.explore_std] {
                curve.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        section(&mut out, b"CURV", &curve);
        let mut evals = Vec::new();
        for r in &self.evals {
            put_u64(&mut evals, r.iteration as u64);
            for v in [r.log_z, r.log_z_rw, r.elbo, r.ess] {
                evals.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        section(&mut out, b"EVAL", &evals);
        if let Some(b) = &self.replay {
            section(&mut out, b"BUFF", &b.encode());
        }
        if let Some(b) = &self.ls_replay {
            section(&mut out, b"LSBF", &b.encode());
        }
        if let Some(theta) = &self.lora {
            section(&mut out, b"LORA", &f32s(theta));
        }
        let digest = blake3::hash(&out);
        out.extend_from_slice(digest.as_bytes());
        out
    }

    /// Refuse a checkpoint from another crate version or config.
    pub fn check_origin(&self, config_digest: &str) -> Result<(), CheckpointError> {
        let here = env!("CARGO_PKG_VERSION");
        if self.crate_version != here {
            return Err(CheckpointError::CrateVersion {
                found: self.crate_version.clone(),
                expected: here.into(),
            });
        }
        if self.config_digest != config_digest {
            return Err(CheckpointError::Config {
                found: self.config_digest.clone(),
                expected: config_digest.into(),
            });
        }
        Ok(())
    }
}

/// Parse and check a checkpoint file's bytes.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..8] != MAGIC {
        return Err(CheckpointError::NotACheckpoint);
    }
    let format = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if format != FORMAT {
        return Err(CheckpointError::Format { found: format });
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != trailer {
        return Err(CheckpointError::Checksum);
    }
    let mut r = Reader { b: &body[12..] };
    let (mut meta, mut parm, mut adam, mut curv, mut eval) = (None, None, None, None, None);
    let (mut buff, mut lsbf, mut lora) = (None, None, None);
    while !r.b.is_empty() {
        let tag = r.take(4)?;
        let len = r.u64()?;
        let payload = r.take(len_usize(len)?)?;
        let slot = match tag {
            b"META" => &mut meta,
            b"PARM" => &mut parm,
            b"ADAM" => &mut adam,
            b"CURV" => &mut curv,
            b"EVAL" => &mut eval,
            b"BUFF" => &mut buff,
            b"LSBF" => &mut lsbf,
            b"LORA" => &mut lora,
            other => {
                return Err(CheckpointError::UnknownSection(
                    String::from_utf8_lossy(other).into_owned(),
                ))
            }
        };
        if slot.replace(payload).is_some() {
            return Err(malformed(format!(
                "section {} appears twice",
                String::from_utf8_lossy(tag)
            )));
        }
    }
    let mut m = Reader {
        b: need(meta, "META")?,
    };
    let crate_version = m.string()?;
    let config_digest = m.string()?;
    let iteration = m.u64()?;
    m.end("META")?;
    let params = read_f32s(need(parm, "PARM")?)?;
    let lora = lora.map(read_f32s).transpose()?;
    // Adam steps what trains: the adapters when there are any, else the parameters.
    let (trained, trained_name) = match &lora {
        Some(theta) => (theta.len(), "LORA"),
        None => (params.len(), "PARM"),
    };
    let mut a = Reader {
        b: need(adam, "ADAM")?,
    };
    let n = len_usize(a.u64()?)?;
    if n != trained {
        return Err(malformed(format!(
            "Adam moments cover {n} parameters, {trained_name} has {trained}"
        )));
    }
    let adam_m = read_f32s(
        a.take(
            n.checked_mul(4)
                .ok_or_else(|| malformed("length overflow".into()))?,
        )?,
    )?;
    let adam_v = read_f32s(a.take(n * 4)?)?;
    let blocks = len_usize(a.u64()?)?;
    if blocks > a.b.len() / 8 {
        return Err(malformed(format!(
            "Adam declares {blocks} step counters, the section holds fewer"
        )));
    }
    let adam_steps = (0..blocks)
        .map(|_| a.u64())
        .collect::<Result<Vec<u64>, _>>()?;
    a.end("ADAM")?;
    let curve = records(need(curv, "CURV")?, 4, "CURV")?
        .into_iter()
        .map(|(it, v)| CurveRow {
            iteration: it,
            loss: v[0],
            log_z: v[1],
            explore_std: v[2],
        })
        .collect();
    let evals = records(need(eval, "EVAL")?, 5, "EVAL")?
        .into_iter()
        .map(|(it, v)| EvalRow {
            iteration: it,
            log_z: v[0],
            log_z_rw: v[1],
            elbo: v[2],
            ess: v[3],
        })
        .collect();
    Ok(Checkpoint {
        crate_version,
        config_digest,
        iteration,
        params,
        adam_m,
        adam_v,
        adam_steps,
        curve,
        evals,
        replay: buff.map(|b| BufferState::decode(b, "BUFF")).transpose()?,
        ls_replay: lsbf.map(|b| BufferState::decode(b, "LSBF")).transpose()?,
        lora,
    })
}

fn need<'a>(s: Option<&'a [u8]>, name: &str) -> Result<&'a [u8], CheckpointError> {
    s.ok_or_else(|| malformed(format!("section {name} is missing")))
}

fn malformed(msg: String) -> CheckpointError {
    CheckpointError::Malformed(msg)
}

fn len_usize(v: u64) -> Result<usize, CheckpointError> {
    usize::try_from(v).map_err(|_| malformed(format!("length {v} does not fit in memory")))
}

/// Fixed-size records of one u64 iteration followed by `fields − 1` f64 values.
fn records(b: &[u8], fields: usize, name: &str) -> Result<Vec<(usize, Vec<f64>)>, CheckpointError> {
    let size = fields * 8;
    if !b.len().is_multiple_of(size) {
        return Err(malformed(format!(
            "section {name} is {} bytes, not a multiple of {size}",
            b.len()
        )));
    }
    b.chunks_exact(size)
        .map(|c| {
            let words: Vec<u64> = c
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
                .collect();
            let it = len_usize(words[0])?;
            Ok((it, words[1..].iter().map(|&w| f64::from_bits(w)).collect()))
        })
        .collect()
}

fn read_f32s(b: &[u8]) -> Result<Vec<f32>, CheckpointError> {
    if !b.len().is_multiple_of(4) {
        return Err(malformed(format!("an f32 array of {} bytes", b.len())));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        if n > self.b.len() {
            return Err(malformed(format!(
                "needs {n} more bytes, {} remain",
                self.b.len()
            )));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, CheckpointError> {
        let n = len_usize(self.u64()?)?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| malformed("a string is not UTF-8".into()))
    }
    fn end(&self, name: &str) -> Result<(), CheckpointError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "section {name} has {} trailing bytes",
                self.b.len()
            )))
        }
    }
}

fn section(out: &mut Vec<u8>, tag: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(tag);
    put_u64(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            crate_version: env!("CARGO_PKG_VERSION").into(),
            config_digest: "abc".into(),
            iteration: 7,
            params: vec![1.0, -2.5, f32::MIN_POSITIVE],
            adam_m: vec![0.1, 0.2, 0.3],
            adam_v: vec![0.01, 0.02, 0.03],
            adam_steps: vec![7, 0],
            curve: vec![CurveRow {
                iteration: 6,
                loss: 0.5,
                log_z: -1.0,
                explore_std: 0.2,
            }],
            evals: vec![EvalRow {
                iteration: 5,
                log_z: -2.0,
                log_z_rw: -1.0,
                elbo: -2.0,
                ess: 0.3,
            }],
            replay: Some(BufferState {
                dim: 2,
                xs: vec![1.0, 2.0, -3.0, f32::MAX],
                log_r: vec![-0.5, f64::NEG_INFINITY],
            }),
            ls_replay: Some(BufferState {
                dim: 2,
                xs: vec![],
                log_r: vec![],
            }),
            lora: None,
        }
    }

    #[test]
    fn a_lora_checkpoint_round_trips_with_the_adapters_moments() {
        let mut c = sample();
        c.lora = Some(vec![0.5, -0.25]);
        c.adam_m = vec![0.1, 0.2];
        c.adam_v = vec![0.3, 0.4];
        let bytes = c.encode();
        assert_eq!(decode(&bytes).unwrap(), c);
        // Without its LORA section the same moments no longer fit the parameters.
        let mut plain = c.clone();
        plain.lora = None;
        let err = decode(&plain.encode()).unwrap_err().to_string();
        assert!(err.contains("cover 2 parameters, PARM has 3"), "{err}");
    }

    #[test]
    fn round_trips_bitwise() {
        let c = sample();
        let bytes = c.encode();
        assert_eq!(decode(&bytes).unwrap(), c);
    }

    #[test]
    fn every_truncation_and_single_bit_flip_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated to {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "bit flip at byte {i}");
        }
    }

    #[test]
    fn origin_is_checked() {
        let c = sample();
        assert!(c.check_origin("abc").is_ok());
        assert!(matches!(
            c.check_origin("xyz"),
            Err(CheckpointError::Config { .. })
        ));
        let mut old = c.clone();
        old.crate_version = "0.0.1".into();
        assert!(matches!(
            old.check_origin("abc"),
            Err(CheckpointError::CrateVersion { .. })
        ));
    }
}

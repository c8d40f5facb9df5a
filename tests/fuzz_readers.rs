//! Fuzzing the readers of untrusted bytes: `.npy`, IDX images and labels, the CSV tables
//! (generic, digits, pines), `SHA256SUMS`, RON experiment configs and checkpoints.
//!
//! Each reader gets proptest inputs from three sources: arbitrary bytes; mutations of valid
//! files (truncations, bit flips, interesting bytes and u32s, inserted/deleted/duplicated runs,
//! numbers replaced by extreme ones, format tokens inserted); and a structure-aware generator per
//! format (header fields drawn from valid, boundary and absurd values: shapes like (2⁶², 2⁶²),
//! wrong dtypes and magics, lying lengths, gzip that is truncated, concatenated or followed by
//! junk). The properties: the reader never panics (proptest turns a panic into a failure), its
//! error message formats, and an `Ok` value is internally consistent (e.g. an npy array holds
//! exactly product(shape) values and re-encodes to an equal array).
//!
//! Cases per reader: `FUZZ_CASES` (default 2000, so `cargo test --release` stays fast). Inputs
//! are reproducible from `FUZZ_SEED` (a u64; printed by every run). The long campaign:
//! `FUZZ_CASES=1000000 cargo test --release --test fuzz_readers -- --nocapture --test-threads=1`.
//!
//! Regression corpus: `tests/fuzz-corpus/<reader>/<blake3 prefix>.bin`. A failing fuzz case is
//! shrunk and written there automatically (fix the reader, keep the file); the corpus also holds
//! hand-made nasty inputs (regenerate with `cargo test --release --test fuzz_readers --
//! --ignored write_seed_corpus`). `replay_corpus` runs every file through its reader.

use diffusion_samplers::checkpoint;
use diffusion_samplers::config::ExperimentConfig;
use diffusion_samplers::data::{checksum, csv, idx, npy, Format};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// The readers under test and what an Ok must satisfy.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    Npy,
    IdxImages,
    IdxLabels,
    Csv,
    Digits,
    Pines,
    Sha256Sums,
    RonConfig,
    Checkpoint,
}

const ALL: [Reader; 9] = [
    Reader::Npy,
    Reader::IdxImages,
    Reader::IdxLabels,
    Reader::Csv,
    Reader::Digits,
    Reader::Pines,
    Reader::Sha256Sums,
    Reader::RonConfig,
    Reader::Checkpoint,
];

impl Reader {
    /// Corpus folder name.
    fn name(self) -> &'static str {
        match self {
            Reader::Npy => "npy",
            Reader::IdxImages => "idx-images",
            Reader::IdxLabels => "idx-labels",
            Reader::Csv => "csv",
            Reader::Digits => "digits",
            Reader::Pines => "pines",
            Reader::Sha256Sums => "sha256sums",
            Reader::RonConfig => "ron-config",
            Reader::Checkpoint => "checkpoint",
        }
    }

    /// Run the reader on `bytes`. `Err` only for an inconsistent `Ok` or a mislabelled error;
    /// a refused input is fine. A panic propagates (proptest and the corpus replay catch it).
    fn check(self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Reader::Npy => check_npy(bytes),
            Reader::IdxImages => match idx::decode_images(bytes) {
                Ok(im) => {
                    accept();
                    let n =
                        im.n.checked_mul(im.rows)
                            .and_then(|v| v.checked_mul(im.cols));
                    ensure(n == Some(im.pixels.len()), "pixels.len() != n·rows·cols")?;
                    ensure(im.rows > 0 && im.cols > 0, "empty image dimensions")
                }
                Err(e) => error_ok(&e, &[Format::Idx, Format::Gzip]),
            },
            Reader::IdxLabels => match idx::decode_labels(bytes) {
                Ok(l) => ensure(
                    accept() && l.labels.iter().all(|&v| v < 10),
                    "label outside 0..9",
                ),
                Err(e) => error_ok(&e, &[Format::Idx, Format::Gzip]),
            },
            Reader::Csv => check_csv(bytes),
            Reader::Digits => match csv::decode_digits(bytes) {
                Ok(d) => {
                    accept();
                    ensure(!d.is_empty(), "no rows")?;
                    ensure(d.features.len() == 64 * d.labels.len(), "features != 64·n")?;
                    ensure(d.labels.iter().all(|&l| l < 10), "label outside 0..9")?;
                    ensure(
                        d.features
                            .iter()
                            .all(|&v| (0.0..=16.0).contains(&v) && v.fract() == 0.0),
                        "feature outside 0..=16",
                    )
                }
                Err(e) => error_ok(&e, &[Format::Digits, Format::Gzip, Format::Csv]),
            },
            Reader::Pines => match csv::decode_pines(bytes) {
                Ok(p) => {
                    accept();
                    ensure(!p.is_empty(), "no points")?;
                    ensure(
                        p.iter().flatten().all(|v| (0.0..=1.0).contains(v)),
                        "point outside the unit square",
                    )
                }
                Err(e) => error_ok(&e, &[Format::Pines, Format::Gzip, Format::Csv]),
            },
            Reader::Sha256Sums => match checksum::parse_sums(bytes) {
                Ok(entries) => ensure(
                    accept()
                        && entries.iter().all(|e| {
                            e.sha256.len() == 64
                                && e.sha256
                                    .bytes()
                                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                                && !e.name.is_empty()
                        }),
                    "bad entry",
                ),
                Err(e) => error_ok(&e, &[Format::Sha256Sums]),
            },
            Reader::RonConfig => check_ron(bytes),
            Reader::Checkpoint => match checkpoint::decode(bytes) {
                Ok(cp) => {
                    accept();
                    // Re-encoding is stable: encode ∘ decode is the identity on encoded files.
                    let once = cp.encode();
                    let again = checkpoint::decode(&once)
                        .map_err(|e| format!("re-encoded checkpoint does not decode: {e}"))?;
                    ensure(
                        again.encode() == once,
                        "encode(decode(encode(c))) != encode(c)",
                    )
                }
                Err(e) => ensure(!e.to_string().is_empty(), "empty error message"),
            },
        }
    }
}

thread_local! {
    /// Inputs a reader accepted (Ok), for the fuzz summary.
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Count an accepted input; returns true so it can sit in a condition.
fn accept() -> bool {
    ACCEPTED.with(|c| c.set(c.get() + 1));
    true
}

fn ensure(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

/// An error formats and comes from one of the expected readers.
fn error_ok(e: &diffusion_samplers::data::DataError, formats: &[Format]) -> Result<(), String> {
    let msg = e.to_string();
    ensure(!msg.is_empty(), "empty error message")?;
    match e.format() {
        Some(f) if formats.contains(&f) => Ok(()),
        other => Err(format!("error from unexpected format {other:?}: {msg}")),
    }
}

fn check_npy(bytes: &[u8]) -> Result<(), String> {
    match npy::decode(bytes) {
        Ok(a) => {
            accept();
            let count = a.shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
            ensure(count == Some(a.data.len()), "data.len() != product(shape)")?;
            ensure(a.shape.len() <= npy::MAX_NDIM, "too many dimensions")?;
            // The writer round-trips what the reader returned, bit for bit.
            let back = npy::decode(&npy::encode(&a.shape, &a.data))
                .map_err(|e| format!("re-encoded array does not decode: {e}"))?;
            ensure(back.shape == a.shape, "shape changed in a round trip")?;
            ensure(
                back.data
                    .iter()
                    .zip(&a.data)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "values changed in a round trip",
            )
        }
        Err(e) => error_ok(&e, &[Format::Npy]),
    }
}

fn check_csv(bytes: &[u8]) -> Result<(), String> {
    let mut any = false;
    for header in [false, true] {
        for allow_non_finite in [false, true] {
            let opts = csv::CsvOptions {
                header,
                allow_non_finite,
            };
            match csv::parse_table(bytes, &opts) {
                Ok(t) => {
                    any = true;
                    ensure(
                        t.rows.checked_mul(t.cols) == Some(t.values.len()),
                        "values != rows·cols",
                    )?;
                    ensure(t.header.is_some() == header, "header presence")?;
                    if let Some(h) = &t.header {
                        ensure(h.len() == t.cols, "header length != cols")?;
                    }
                    ensure(
                        allow_non_finite || t.values.iter().all(|v| v.is_finite()),
                        "non-finite value accepted",
                    )?;
                }
                Err(e) => error_ok(&e, &[Format::Csv])?,
            }
        }
    }
    if any {
        accept();
    }
    Ok(())
}

fn check_ron(bytes: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(bytes);
    match ExperimentConfig::parse(&text, "fuzz") {
        Ok(cfg) => {
            accept();
            cfg.validate()
                .map_err(|(f, m)| format!("parse accepted an invalid {f}: {m}"))?;
            // The resolved config re-parses to the same resolved config.
            let ron = cfg.to_ron();
            let back = ExperimentConfig::parse(&ron, "fuzz-resolved")
                .map_err(|e| format!("resolved config does not re-parse: {e}\n{ron}"))?;
            ensure(back.to_ron() == ron, "to_ron is not stable")
        }
        Err(e) => ensure(!e.to_string().is_empty(), "empty error message"),
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of valid files.

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(u32),
    FlipBit(u32, u8),
    SetByte(u32, u8),
    Insert(u32, Vec<u8>),
    Delete(u32, u8),
    Duplicate(u32, u8, u32),
    OverwriteU32(u32, u32, bool),
    /// Replace one run of ASCII digits by an extreme number (shapes, counts, values).
    ReplaceNumber(u32, &'static str),
    /// Insert a token of one of the text formats.
    InsertToken(u32, &'static str),
}

const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b',', b'"', b'\'', b'(', b')', b'{', b'}', b'9', b' ',
    b'.', b'-', b'e', 0x1f, 0x8b, 0x93,
];
const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    u32::MAX,
    2049,
    2051,
    0x0803_0000,
    60_000,
    784,
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "17",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "4611686018427387904",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "1.5",
    "-0",
    "",
];
const TOKENS: &[&str] = &[
    ",",
    "\n",
    "\r\n",
    "\r",
    "\"",
    "\"\"",
    "'",
    "(",
    ")",
    "()",
    "{",
    "}",
    "[",
    "]",
    ":",
    " ",
    "True",
    "False",
    "None",
    "Some(",
    "L",
    "'<f4'",
    "'>f4'",
    "'|u1'",
    "'<f8'",
    "'<i8'",
    "'descr'",
    "'shape'",
    "'fortran_order'",
    ",,",
    "\u{e9}",
    "\u{0}",
    "//",
    "/*",
    "#![enable(implicit_some)]",
    "r#\"",
    "b\"",
    "Gmm25",
    "Funnel",
    "VarGrad",
    "((((((((((((((((",
    "NaN",
    "inf",
    "-inf",
    "e",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<u32>().prop_map(Mutation::Truncate),
        3 => (any::<u32>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        2 => (any::<u32>(), prop_oneof![select(INTERESTING_BYTES), any::<u8>()])
            .prop_map(|(p, v)| Mutation::SetByte(p, v)),
        1 => (any::<u32>(), vec(any::<u8>(), 1..16)).prop_map(|(p, v)| Mutation::Insert(p, v)),
        1 => (any::<u32>(), 1u8..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        1 => (any::<u32>(), 1u8..64, any::<u32>()).prop_map(|(p, n, t)| Mutation::Duplicate(p, n, t)),
        2 => (any::<u32>(), prop_oneof![select(INTERESTING_U32), any::<u32>()], any::<bool>())
            .prop_map(|(p, v, be)| Mutation::OverwriteU32(p, v, be)),
        2 => (any::<u32>(), select(NUMBERS)).prop_map(|(p, s)| Mutation::ReplaceNumber(p, s)),
        1 => (any::<u32>(), select(TOKENS)).prop_map(|(p, s)| Mutation::InsertToken(p, s)),
    ]
}

fn at(p: u32, len: usize) -> usize {
    p as usize % (len + 1)
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len();
        match m {
            Mutation::Truncate(p) => b.truncate(at(*p, len)),
            Mutation::FlipBit(p, bit) if len > 0 => b[*p as usize % len] ^= 1 << bit,
            Mutation::SetByte(p, v) if len > 0 => b[*p as usize % len] = *v,
            Mutation::Insert(p, v) => {
                let i = at(*p, len);
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Delete(p, n) => {
                let i = at(*p, len);
                b.drain(i..(i + *n as usize).min(len));
            }
            Mutation::Duplicate(p, n, to) => {
                let i = at(*p, len);
                let chunk = b[i..(i + *n as usize).min(len)].to_vec();
                let j = at(*to, len);
                b.splice(j..j, chunk);
            }
            Mutation::OverwriteU32(p, v, be) if len >= 4 => {
                let i = *p as usize % (len - 3);
                let bytes = if *be {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                b[i..i + 4].copy_from_slice(&bytes);
            }
            Mutation::ReplaceNumber(p, s) => {
                let runs = digit_runs(&b);
                if !runs.is_empty() {
                    let (s0, e0) = runs[*p as usize % runs.len()];
                    b.splice(s0..e0, s.bytes());
                }
            }
            Mutation::InsertToken(p, s) => {
                let i = at(*p, len);
                b.splice(i..i, s.bytes());
            }
            _ => {}
        }
    }
    b
}

fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    runs
}

fn mutations_of(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (select(seeds), vec(mutation(), 1..8))
        .prop_map(|(seed, muts)| apply(seed, &muts))
        .boxed()
}

fn random_bytes() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..512).boxed()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// How a generated file is wrapped: raw, gzip, or broken gzip.
#[derive(Clone, Copy, Debug)]
enum Wrap {
    Raw,
    Gzip,
    GzipTruncated(u32),
    GzipTrailingJunk(u8),
    GzipTwice,
    GzipFlipBit(u32),
}

fn wrap() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        4 => Just(Wrap::Raw),
        4 => Just(Wrap::Gzip),
        1 => any::<u32>().prop_map(Wrap::GzipTruncated),
        1 => any::<u8>().prop_map(Wrap::GzipTrailingJunk),
        1 => Just(Wrap::GzipTwice),
        1 => any::<u32>().prop_map(Wrap::GzipFlipBit),
    ]
}

fn apply_wrap(raw: Vec<u8>, w: Wrap) -> Vec<u8> {
    match w {
        Wrap::Raw => raw,
        Wrap::Gzip => gzip(&raw),
        Wrap::GzipTruncated(p) => {
            let mut g = gzip(&raw);
            g.truncate(p as usize % (g.len() + 1));
            g
        }
        Wrap::GzipTrailingJunk(b) => {
            let mut g = gzip(&raw);
            g.extend_from_slice(&[b, 0x8b, 1, 2]);
            g
        }
        Wrap::GzipTwice => {
            let mut g = gzip(&raw);
            g.extend(gzip(&raw));
            g
        }
        Wrap::GzipFlipBit(p) => {
            let mut g = gzip(&raw);
            let i = p as usize % g.len();
            g[i] ^= 1 << (p % 8);
            g
        }
    }
}

/// Deterministic filler bytes (for data sections).
fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Valid seed files per reader.

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared_data() -> PathBuf {
    manifest().join("../shared/data")
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    let p = path.as_ref();
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn npy_with(version: (u8, u8), dict: &str, body: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version.0, version.1]);
    let text = format!("{dict}\n");
    if version.0 == 1 {
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(body);
    out
}

fn npy_seeds() -> Vec<Vec<u8>> {
    let d = |descr: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    };
    vec![
        read(shared_data().join("vae_mnist_bce/fc21.bias.npy")),
        npy::encode_f32(3, 4, &(0..12).map(|i| i as f32 - 5.5).collect::<Vec<_>>()),
        npy::encode(&[2, 1, 3], &[1.0; 6]),
        npy::encode(&[], &[7.0]),
        npy::encode(&[0, 5], &[]),
        npy_with(
            (2, 0),
            &d("<f8", "(2,)"),
            &[0.1f64, -3.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        npy_with((3, 0), &d("|u1", "(2, 3)"), &[0, 1, 2, 3, 4, 255]),
        npy_with((1, 0), &d("<i8", "(1,)"), &5i64.to_le_bytes()),
    ]
}

fn idx_image_seeds() -> Vec<Vec<u8>> {
    let real = idx::decode_images(&read(shared_data().join("mnist/t10k-images-idx3-ubyte.gz")))
        .expect("real test images decode");
    let first2 = idx::Images {
        n: 2,
        rows: 28,
        cols: 28,
        pixels: real.pixels[..2 * 784].to_vec(),
    };
    let small = idx::Images {
        n: 3,
        rows: 2,
        cols: 3,
        pixels: (0..18).collect(),
    };
    let raw2 = idx::encode_images_raw(&first2);
    let raw_small = idx::encode_images_raw(&small);
    vec![gzip(&raw2), raw2, gzip(&raw_small), raw_small]
}

fn idx_label_seeds() -> Vec<Vec<u8>> {
    let raw = idx::encode_labels_raw(&[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    vec![
        read(shared_data().join("mnist/t10k-labels-idx1-ubyte.gz")),
        gzip(&raw),
        raw,
        idx::encode_labels_raw(&[]),
    ]
}

fn digits_text(rows: usize) -> Vec<u8> {
    let all = String::from_utf8(unzip(&read(shared_data().join("digits/digits.csv.gz")))).unwrap();
    let lines: Vec<&str> = all.lines().take(rows).collect();
    format!("{}\n", lines.join("\n")).into_bytes()
}

fn digits_seeds() -> Vec<Vec<u8>> {
    let three = digits_text(3);
    vec![gzip(&three), three, digits_text(1)]
}

fn pines_seeds() -> Vec<Vec<u8>> {
    let real = read(shared_data().join("lgcp/pines.csv"));
    let head: Vec<u8> = real
        .split_inclusive(|&b| b == b'\n')
        .take(4)
        .flatten()
        .copied()
        .collect();
    vec![
        real,
        head,
        b"data_x,data_y\n0,1\n0.5,0.25\r\n1e-3,1.0".to_vec(),
    ]
}

fn csv_seeds() -> Vec<Vec<u8>> {
    let mut v = pines_seeds();
    v.truncate(2);
    v.push(digits_text(2));
    v.push(b"a,\"b \"\"c\"\"\",d\n1,2,3\n-4.5e2,+.5,6.\n".to_vec());
    v.push(b"nan,inf,-inf,1e308\n".to_vec());
    v
}

fn sums_seeds() -> Vec<Vec<u8>> {
    vec![
        read(shared_data().join("SHA256SUMS")),
        format!(
            "{}  a.bin\n{} *dir/b c.txt\r\n",
            "AB".repeat(32),
            "0f".repeat(32)
        )
        .into_bytes(),
    ]
}

fn ron_seeds() -> Vec<Vec<u8>> {
    let mut v = vec![read(manifest().join("paper-configs/smoke.ron"))];
    let dir = manifest().join("paper-configs/sendera2024");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    for p in names
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .take(4)
    {
        v.push(read(p));
    }
    v
}

/// A checkpoint body (everything before the blake3 trailer) laid out as `src/checkpoint.rs`
/// documents: magic, format, then tagged sections.
fn checkpoint_body(sections: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = b"DSCKPT\0\n".to_vec();
    out.extend_from_slice(&checkpoint::FORMAT.to_le_bytes());
    for (tag, payload) in sections {
        out.extend_from_slice(*tag);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

fn with_trailer(mut body: Vec<u8>) -> Vec<u8> {
    let h = blake3::hash(&body);
    body.extend_from_slice(h.as_bytes());
    body
}

fn ckpt_sections(
    n: usize,
    blocks: usize,
    curve: usize,
    evals: usize,
) -> Vec<(&'static [u8; 4], Vec<u8>)> {
    let u64le = |v: u64| v.to_le_bytes().to_vec();
    let mut meta = Vec::new();
    for s in [env!("CARGO_PKG_VERSION"), "0123456789abcdef"] {
        meta.extend(u64le(s.len() as u64));
        meta.extend_from_slice(s.as_bytes());
    }
    meta.extend(u64le(7));
    let f32s = |k: usize, c: f32| -> Vec<u8> {
        (0..k).flat_map(|i| (i as f32 * c).to_le_bytes()).collect()
    };
    let mut adam = u64le(n as u64);
    adam.extend(f32s(n, 0.1));
    adam.extend(f32s(n, 0.01));
    adam.extend(u64le(blocks as u64));
    for b in 0..blocks {
        adam.extend(u64le(b as u64 + 3));
    }
    let rec = |k: usize, fields: usize| -> Vec<u8> {
        (0..k)
            .flat_map(|i| {
                let mut r = u64le(i as u64);
                for f in 1..fields {
                    r.extend((i as f64 * 0.5 - f as f64).to_bits().to_le_bytes());
                }
                r
            })
            .collect()
    };
    vec![
        (b"META", meta),
        (b"PARM", f32s(n, -1.5)),
        (b"ADAM", adam),
        (b"CURV", rec(curve, 4)),
        (b"EVAL", rec(evals, 5)),
    ]
}

/// Checkpoint seeds as *bodies* (no trailer): the strategies mutate the body and then usually
/// recompute the blake3 trailer, so that mutations reach the section parser.
fn checkpoint_body_seeds() -> Vec<Vec<u8>> {
    let mut reordered = ckpt_sections(2, 1, 1, 0);
    reordered.reverse();
    vec![
        checkpoint_body(&ckpt_sections(3, 2, 2, 1)),
        checkpoint_body(&ckpt_sections(0, 0, 0, 0)),
        checkpoint_body(&reordered),
    ]
}

fn seeds(r: Reader) -> Vec<Vec<u8>> {
    match r {
        Reader::Npy => npy_seeds(),
        Reader::IdxImages => idx_image_seeds(),
        Reader::IdxLabels => idx_label_seeds(),
        Reader::Csv => csv_seeds(),
        Reader::Digits => digits_seeds(),
        Reader::Pines => pines_seeds(),
        Reader::Sha256Sums => sums_seeds(),
        Reader::RonConfig => ron_seeds(),
        Reader::Checkpoint => checkpoint_body_seeds()
            .into_iter()
            .map(with_trailer)
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Structure-aware generators.

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..6,
        1 => select(&[
            1u64 << 31,
            1 << 32,
            1 << 62,
            1 << 63,
            u64::MAX,
            u64::MAX / 4 + 1,
            (1 << 61) + 1,
            784,
            60_000
        ][..]),
        1 => any::<u64>(),
    ]
}

fn npy_structured() -> BoxedStrategy<Vec<u8>> {
    let version = prop_oneof![
        4 => select(&[(1u8, 0u8), (2, 0), (3, 0)][..]),
        1 => any::<(u8, u8)>(),
    ];
    let descr = prop_oneof![
        6 => select(&["'<f4'", "'<f8'", "'|u1'", "'<i8'"][..]).prop_map(str::to_string),
        2 => select(&["'>f4'", "'<f2'", "'|b1'", "'<u4'", "'f4'", "'=f4'", "'<c8'", "'O'", "''",
            "[('a', '<f4')]", "\"<f4\"", "'<f4", "<f4", "'<f\\4'"][..]).prop_map(str::to_string),
        1 => "'[a-z<>|=0-9]{0,5}'".prop_map(|s| s),
    ];
    let fortran = select(&["False", "True", "None", "0", "false", ""][..]);
    let shape_style = (any::<bool>(), any::<bool>(), any::<bool>()); // trailing comma, L, spaces
    (
        version,
        descr,
        prop_oneof![6 => Just("False"), 1 => fortran],
        vec(dim(), 0..6),
        shape_style,
        0u8..12,
        prop_oneof![4 => Just(0i64), 1 => -9i64..=9],
        any::<u64>(),
        prop_oneof![9 => Just(None), 1 => any::<u32>().prop_map(Some)],
    )
        .prop_map(
            |(ver, descr, fortran, dims, (comma, l, spaces), layout, delta, fill, len_override)| {
                let sep = if spaces { ", " } else { "," };
                let sfx = if l { "L" } else { "" };
                let mut shape = dims
                    .iter()
                    .map(|d| format!("{d}{sfx}"))
                    .collect::<Vec<_>>()
                    .join(sep);
                if dims.len() == 1 || (comma && !dims.is_empty()) {
                    shape.push(',');
                }
                let shape = format!("({shape})");
                let (d, f, s) = (
                    format!("'descr': {descr}"),
                    format!("'fortran_order': {fortran}"),
                    format!("'shape': {shape}"),
                );
                let dict = match layout {
                    0..=4 => format!("{{{d}, {f}, {s}, }}"),
                    5 => format!("{{{s}, {f}, {d}}}"),
                    6 => format!("{{{f}, {s}}}"),
                    7 => format!("{{{d}, {f}, {s}, {s}}}"),
                    8 => format!("{{{d}, {f}, {s}, 'extra': 1}}"),
                    9 => format!("{d}, {f}, {s}"),
                    10 => format!("{{{d}, {f}, {s}}} junk"),
                    _ => format!(
                        "{{\"descr\": {descr}, \"fortran_order\": {fortran}, \"shape\": {shape}}}"
                    )
                    .replace('\'', "\""),
                };
                let item = match descr.as_str() {
                    "'<f8'" | "'<i8'" => 8u64,
                    "'|u1'" => 1,
                    _ => 4,
                };
                let want = dims.iter().try_fold(item, |p, &d| p.checked_mul(d));
                let len = match want {
                    Some(w) if w <= 4096 => (w as i64 + delta).clamp(0, 4200) as usize,
                    _ => (delta.unsigned_abs() * 7) as usize,
                };
                let mut out = b"\x93NUMPY".to_vec();
                out.extend_from_slice(&[ver.0, ver.1]);
                let text = format!("{dict}\n");
                let hlen = len_override.unwrap_or(text.len() as u32);
                if ver.0 == 1 {
                    out.extend_from_slice(&(hlen as u16).to_le_bytes());
                } else {
                    out.extend_from_slice(&hlen.to_le_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.extend(filler(fill, len));
                out
            },
        )
        .boxed()
}

fn u32_field() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 0u32..6,
        1 => select(INTERESTING_U32),
        1 => any::<u32>(),
    ]
}

fn idx_structured(images: bool) -> BoxedStrategy<Vec<u8>> {
    let magic = prop_oneof![
        8 => Just(if images { 2051u32 } else { 2049 }),
        1 => select(&[2049u32, 2051, 2050, 0x0803, 0x0000_0c03, 0x0800_0000][..]),
        1 => any::<u32>(),
    ];
    (
        magic,
        (u32_field(), u32_field(), u32_field()),
        -3i64..=3,
        prop_oneof![9 => Just(0usize), 1 => 1usize..100_000],
        any::<u64>(),
        wrap(),
    )
        .prop_map(move |(magic, (n, r, c), delta, extra_zeros, fill, w)| {
            let mut raw = magic.to_be_bytes().to_vec();
            let want = if images {
                for v in [n, r, c] {
                    raw.extend_from_slice(&v.to_be_bytes());
                }
                (n as u64)
                    .checked_mul(r as u64)
                    .and_then(|v| v.checked_mul(c as u64))
            } else {
                raw.extend_from_slice(&n.to_be_bytes());
                Some(n as u64)
            };
            let len = match want {
                Some(w) if w <= 8192 => (w as i64 + delta).max(0) as usize,
                _ => (delta.unsigned_abs() * 5) as usize,
            };
            let mut body = filler(fill, len);
            if !images {
                // Mostly valid digits, sometimes not.
                for b in &mut body {
                    *b %= if fill % 5 == 0 { 255 } else { 10 };
                }
            }
            raw.extend(body);
            raw.resize(raw.len() + extra_zeros, 0);
            apply_wrap(raw, w)
        })
        .boxed()
}

const CSV_FIELDS: &[&str] = &[
    "0",
    "1",
    "16",
    "17",
    "9",
    "10",
    "-1",
    "0.5",
    "1.0",
    "1e-3",
    "1e999",
    "-0",
    "+.5",
    "6.",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "infinity",
    "",
    " 1",
    "1 ",
    "\"3\"",
    "\"\"",
    "\"",
    "\"a\"\"b\"",
    "a",
    "data_x",
    "data_y",
    "\"data_x\"",
    "\"data_y\"",
    "0x10",
    "1_0",
    "\u{e9}",
    "\"1\"x",
];

fn csv_line(fields: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            6 => select(CSV_FIELDS).prop_map(str::to_string),
            1 => any::<f64>().prop_map(|v| v.to_string()),
            1 => any::<i32>().prop_map(|v| v.to_string()),
        ],
        fields,
    )
    .prop_map(|f| f.join(","))
}

fn eol() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just("\n"), 1 => Just("\r\n"), 1 => select(&["", "\r", "\n\n"][..])]
}

fn csv_structured() -> BoxedStrategy<Vec<u8>> {
    (vec((csv_line(0..6), eol()), 0..8), any::<bool>())
        .prop_map(|(lines, last_newline)| {
            let mut s = String::new();
            let n = lines.len();
            for (i, (l, e)) in lines.into_iter().enumerate() {
                s.push_str(&l);
                if i + 1 < n || last_newline {
                    s.push_str(e);
                }
            }
            s.into_bytes()
        })
        .boxed()
}

fn digits_structured() -> BoxedStrategy<Vec<u8>> {
    // Mostly valid rows (64 features 0..=16 and a label), with a rare wrong field or count.
    let field = prop_oneof![
        400 => (0u8..=16).prop_map(|v| v.to_string()),
        1 => select(CSV_FIELDS).prop_map(str::to_string),
    ]
    .boxed();
    let features = prop_oneof![6 => Just(64usize), 1 => 60usize..68]
        .prop_flat_map(move |n| vec(field.clone(), n));
    let label = prop_oneof![
        40 => (0u8..=9).prop_map(|v| v.to_string()),
        1 => select(CSV_FIELDS).prop_map(str::to_string),
    ];
    let row = (features, label);
    (vec(row, 0..4), vec(mutation(), 0..3), wrap())
        .prop_map(|(rows, muts, w)| {
            let mut s = String::new();
            for (mut f, label) in rows {
                f.push(label);
                s.push_str(&f.join(","));
                s.push('\n');
            }
            apply_wrap(apply(s.into_bytes(), &muts), w)
        })
        .boxed()
}

fn pines_structured() -> BoxedStrategy<Vec<u8>> {
    let header = select(
        &[
            "\"\",\"data_x\",\"data_y\"",
            "data_x,data_y",
            "\"\",data_x,data_y",
            "\"data_x\",\"data_y\"",
            "x,y",
            "\"\",\"data_y\",\"data_x\"",
            "",
        ][..],
    );
    let coord = prop_oneof![
        8 => 0.0f64..=1.0,
        1 => select(&[0.0, -0.0, 1.0, 1.0000001, -1e-300, f64::NAN, f64::INFINITY, 2.0][..]),
        1 => any::<f64>(),
    ];
    (
        header,
        vec((0u32..200, coord.clone(), coord), 0..5),
        vec(mutation(), 0..3),
        wrap(),
    )
        .prop_map(|(h, rows, muts, w)| {
            let named = h.starts_with("\"\"");
            let mut s = format!("{h}\n");
            for (i, x, y) in rows {
                if named {
                    s.push_str(&format!("\"{i}\",{x},{y}\n"));
                } else {
                    s.push_str(&format!("{x},{y}\n"));
                }
            }
            apply_wrap(apply(s.into_bytes(), &muts), w)
        })
        .boxed()
}

fn sums_structured() -> BoxedStrategy<Vec<u8>> {
    let line = (
        "[0-9a-fA-Fg]{60,68}",
        select(&["  ", " *", " ", "\t", "", "   "][..]),
        "[a-z/._ \u{e9}]{0,10}",
    )
        .prop_map(|(h, s, n)| format!("{h}{s}{n}"));
    (vec((line, eol()), 0..5))
        .prop_map(|lines| {
            lines
                .into_iter()
                .flat_map(|(l, e)| [l, e.to_string()])
                .collect::<String>()
                .into_bytes()
        })
        .boxed()
}

const RON_FIELDS: &[&str] = &[
    "seed",
    "steps",
    "sigma2",
    "hidden",
    "harmonics",
    "joint_layers",
    "iterations",
    "batch",
    "std",
    "decay_iters",
    "samples",
    "every",
];
const RON_VALUES: &[&str] = &[
    "0",
    "-1",
    "1e999",
    "-1e999",
    "NaN",
    "inf",
    "18446744073709551616",
    "4294967296",
    "1.5",
    "\"x\"",
    "None",
    "Some(3)",
    "()",
    "[]",
    "true",
    "0x10",
    "1_000",
    "'c'",
];

fn ron_structured() -> BoxedStrategy<Vec<u8>> {
    let smoke =
        String::from_utf8_lossy(&read(manifest().join("paper-configs/smoke.ron"))).into_owned();
    prop_oneof![
        // Arbitrary Unicode text.
        2 => any::<String>().prop_map(String::into_bytes),
        // Text over RON's alphabet.
        3 => "[(){}\\[\\],:a-zA-Z0-9_.\"' \n+#!-]{0,300}".prop_map(String::into_bytes),
        // Deep nesting: the parser's recursion limit must turn it into an error, not a stack
        // overflow.
        1 => (0usize..5000, select(&["(", "[", "{", "Some(", "(seed:", "(target:Funnel(variant:"][..]))
            .prop_map(|(n, t)| t.repeat(n).into_bytes()),
        // Smoke config with one field's value replaced by an extreme or wrong-typed one.
        3 => (select(RON_FIELDS),
              select(RON_VALUES))
            .prop_map(move |(field, value)| replace_value(&smoke, field, value).into_bytes()),
    ]
    .boxed()
}

/// Replace the value after `field:` up to the next `,` or `)` in `text`.
fn replace_value(text: &str, field: &str, value: &str) -> String {
    let key = format!("{field}:");
    let Some(i) = text.find(&key) else {
        return text.to_string();
    };
    let start = i + key.len();
    let end = text[start..]
        .find([',', ')'])
        .map_or(text.len(), |e| start + e);
    format!("{} {value}{}", &text[..start], &text[end..])
}

const TAGS: &[[u8; 4]] = &[*b"META", *b"PARM", *b"ADAM", *b"CURV", *b"EVAL"];

fn checkpoint_structured() -> BoxedStrategy<Vec<u8>> {
    let tag = prop_oneof![
        8 => select(TAGS),
        1 => any::<[u8; 4]>(),
    ];
    let len_kind = prop_oneof![
        8 => Just(None),
        1 => select(&[u64::MAX, 1 << 62, 1 << 32, u64::MAX - 7][..]).prop_map(Some),
        1 => any::<u64>().prop_map(Some),
    ];
    let section = (tag, len_kind, vec(any::<u8>(), 0..64));
    let body_mutated =
        (select(checkpoint_body_seeds()), vec(mutation(), 1..6)).prop_map(|(b, m)| apply(b, &m));
    let body_generated = vec(section, 0..7).prop_map(|secs| {
        let mut out = b"DSCKPT\0\n".to_vec();
        out.extend_from_slice(&checkpoint::FORMAT.to_le_bytes());
        for (tag, len, payload) in secs {
            out.extend_from_slice(&tag);
            out.extend_from_slice(&len.unwrap_or(payload.len() as u64).to_le_bytes());
            out.extend(payload);
        }
        out
    });
    (prop_oneof![3 => body_mutated, 1 => body_generated], 0u8..8)
        .prop_map(|(body, t)| match t {
            // Usually a correct trailer, so the section parser is reached.
            0..=5 => with_trailer(body),
            6 => body,
            _ => {
                let mut b = with_trailer(body);
                if let Some(x) = b.last_mut() {
                    *x ^= 1;
                }
                b
            }
        })
        .boxed()
}

fn strategy(r: Reader) -> BoxedStrategy<Vec<u8>> {
    let structured = match r {
        Reader::Npy => npy_structured(),
        Reader::IdxImages => idx_structured(true),
        Reader::IdxLabels => idx_structured(false),
        Reader::Csv => csv_structured(),
        Reader::Digits => digits_structured(),
        Reader::Pines => pines_structured(),
        Reader::Sha256Sums => sums_structured(),
        Reader::RonConfig => ron_structured(),
        Reader::Checkpoint => checkpoint_structured(),
    };
    let mutated = match r {
        // Mutate the decompressed file, then (maybe) compress: reaches the IDX parser.
        Reader::IdxImages | Reader::IdxLabels | Reader::Digits | Reader::Pines => {
            let raw: Vec<Vec<u8>> = seeds(r)
                .into_iter()
                .map(|s| {
                    if s.starts_with(&[0x1f, 0x8b]) {
                        unzip(&s)
                    } else {
                        s
                    }
                })
                .collect();
            (mutations_of(raw), wrap())
                .prop_map(|(b, w)| apply_wrap(b, w))
                .boxed()
        }
        _ => mutations_of(seeds(r)),
    };
    prop_oneof![
        1 => random_bytes(),
        2 => mutations_of(seeds(r)),
        2 => mutated,
        3 => structured,
    ]
    .boxed()
}

fn unzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(gz), &mut out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Running, saving failures, replaying the corpus.

fn fuzz_cases() -> u32 {
    match std::env::var("FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_CASES={v:?} is not a count")),
        Err(_) => 2000,
    }
}

fn fuzz_seed() -> u64 {
    match std::env::var("FUZZ_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_SEED={v:?} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

fn corpus_dir(r: Reader) -> PathBuf {
    manifest().join("tests/fuzz-corpus").join(r.name())
}

/// Write `bytes` into the reader's corpus folder under its content hash; returns the path.
fn save_to_corpus(r: Reader, bytes: &[u8]) -> PathBuf {
    let dir = corpus_dir(r);
    std::fs::create_dir_all(&dir).unwrap();
    let hash = blake3::hash(bytes).to_hex();
    let path = dir.join(format!("{}.bin", &hash.as_str()[..16]));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn fuzz(r: Reader) {
    let cases = fuzz_cases();
    let seed = fuzz_seed();
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut rng_seed = [0u8; 32];
    rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
    rng_seed[8..8 + r.name().len().min(24)]
        .copy_from_slice(&r.name().as_bytes()[..r.name().len().min(24)]);
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed));
    let start = Instant::now();
    ACCEPTED.with(|c| c.set(0));
    let result = runner.run(&strategy(r), |bytes| {
        r.check(&bytes).map_err(TestCaseError::fail)
    });
    let accepted = ACCEPTED.with(|c| c.get());
    let secs = start.elapsed().as_secs_f64();
    let summary = format!(
        "fuzz {}: {cases} cases in {secs:.1} s ({:.1} µs/case), {accepted} accepted, FUZZ_SEED={seed}",
        r.name(),
        1e6 * secs / f64::from(cases.max(1))
    );
    match result {
        Ok(()) => eprintln!("{summary}"),
        Err(TestError::Fail(why, bytes)) => {
            let path = save_to_corpus(r, &bytes);
            panic!(
                "fuzz {} failed (FUZZ_SEED={seed}): {why}\nminimal input ({} bytes) saved to {} \
                 — fix the reader and keep the file as a regression case\n{:?}",
                r.name(),
                bytes.len(),
                path.display(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
            );
        }
        Err(e) => panic!("fuzz {}: {e}", r.name()),
    }
}

#[test]
fn fuzz_npy() {
    fuzz(Reader::Npy);
}

#[test]
fn fuzz_idx_images() {
    fuzz(Reader::IdxImages);
}

#[test]
fn fuzz_idx_labels() {
    fuzz(Reader::IdxLabels);
}

#[test]
fn fuzz_csv() {
    fuzz(Reader::Csv);
}

#[test]
fn fuzz_digits() {
    fuzz(Reader::Digits);
}

#[test]
fn fuzz_pines() {
    fuzz(Reader::Pines);
}

#[test]
fn fuzz_sha256sums() {
    fuzz(Reader::Sha256Sums);
}

#[test]
fn fuzz_ron_config() {
    fuzz(Reader::RonConfig);
}

#[test]
fn fuzz_checkpoint() {
    fuzz(Reader::Checkpoint);
}

/// The mutation seeds are valid files, so mutations start from inputs that get deep into the
/// parsers. (If the checkpoint layout changes, update `ckpt_sections`.)
#[test]
fn seeds_are_valid() {
    for r in ALL {
        for (i, s) in seeds(r).iter().enumerate() {
            let ok = match r {
                Reader::Npy => npy::decode(s).map(drop).map_err(|e| e.to_string()),
                Reader::IdxImages => idx::decode_images(s).map(drop).map_err(|e| e.to_string()),
                Reader::IdxLabels => idx::decode_labels(s).map(drop).map_err(|e| e.to_string()),
                Reader::Csv => {
                    let opts = |header| csv::CsvOptions {
                        header,
                        allow_non_finite: true,
                    };
                    csv::parse_table(s, &opts(false))
                        .or_else(|_| csv::parse_table(s, &opts(true)))
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                Reader::Digits => csv::decode_digits(s).map(drop).map_err(|e| e.to_string()),
                Reader::Pines => csv::decode_pines(s).map(drop).map_err(|e| e.to_string()),
                Reader::Sha256Sums => checksum::parse_sums(s).map(drop).map_err(|e| e.to_string()),
                Reader::RonConfig => ExperimentConfig::parse(&String::from_utf8_lossy(s), "seed")
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Reader::Checkpoint => checkpoint::decode(s).map(drop).map_err(|e| {
                    format!("{e} (has the checkpoint layout changed? update ckpt_sections)")
                }),
            };
            if let Err(e) = ok {
                panic!("{} seed {i} does not decode: {e}", r.name());
            }
            r.check(s).unwrap();
        }
    }
}

/// Every file in `tests/fuzz-corpus/<reader>/` goes through its reader without a panic (and
/// any Ok is consistent). Every reader has a non-empty corpus, and there are no stray folders.
#[test]
fn replay_corpus() {
    let root = manifest().join("tests/fuzz-corpus");
    let mut failures = Vec::new();
    let mut total = 0;
    for r in ALL {
        let dir = corpus_dir(r);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: empty corpus", dir.display());
        for path in &files {
            let bytes = read(path);
            let outcome = std::panic::catch_unwind(|| r.check(&bytes));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    failures.push(format!("{}: inconsistent Ok: {why}", path.display()))
                }
                Err(_) => failures.push(format!("{}: PANIC", path.display())),
            }
        }
        total += files.len();
    }
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            ALL.iter().any(|r| r.name() == name),
            "tests/fuzz-corpus/{name} is not a reader's folder"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {total} corpus files fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-made nasty inputs for the corpus.

fn gzip_best(parts: &[&[u8]], zeros: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for p in parts {
        e.write_all(p).unwrap();
    }
    let chunk = vec![0u8; 1 << 16];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        e.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    e.finish().unwrap()
}

fn hand_made(r: Reader) -> Vec<Vec<u8>> {
    let f4 =
        |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let be = |vals: &[u32]| {
        vals.iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>()
    };
    match r {
        Reader::Npy => vec![
            Vec::new(),
            b"\x93NUMPY".to_vec(),
            b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortr".to_vec(),
            b"\x93NUMPY\x02\x00\xff\xff\xff\xff{}".to_vec(),
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
            npy_with((1, 0), &f4("(4611686018427387904, 4611686018427387904)"), &[0; 16]),
            npy_with((1, 0), &f4("(18446744073709551616,)"), &[]),
            npy_with((1, 0), &f4("(0, 18446744073709551615)"), &[]),
            npy_with((1, 0), &f4("(1000000000000,)"), &[0; 64]),
            npy_with((1, 0), &f4(&format!("({})", "1, ".repeat(40))), &[0; 4]),
            npy_with((1, 0), &f4("(3)"), &[0; 12]),
            npy_with((1, 0), &f4("(3, 4)"), &[0; 40]),
            npy_with((1, 0), &f4("(1,)"), &[0; 5]),
            npy_with((1, 0), "{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}", &[0; 4]),
            npy_with((1, 0), "{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,)}", &[0; 4]),
            npy_with((1, 0), "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}", &[0; 16]),
            npy_with((1, 0), "{'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", &f64::MAX.to_le_bytes()),
            npy_with((1, 0), "{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}", &i64::MIN.to_le_bytes()),
            npy_with((3, 0), "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), '\u{e9}': 1}", &[0; 4]),
            npy_with((1, 0), "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}", &[0; 4]),
            npy_with((1, 0), "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", &[0; 4]),
            npy_with((1, 0), "{'descr': '<f4\\', 'fortran_order': False, 'shape': (1,)}", &[0; 4]),
        ],
        Reader::IdxImages => vec![
            Vec::new(),
            vec![0x1f, 0x8b],
            be(&[2051, 1, 28]),
            be(&[2051, u32::MAX, u32::MAX, u32::MAX]),
            be(&[2051, 60_000, 28, 28]),
            be(&[2051, 1, 0, 0]),
            be(&[2049, 1, 28, 28]),
            be(&[0x0803_0000, 1, 1, 1, 0]),
            [be(&[2051, 1, 1, 1]), vec![9, 9]].concat(),
            gzip(&be(&[2051, 60_000, 28, 28])),
            // Zip bomb: an honest 1-image header followed by 64 MiB of zeros (~64 KB of gzip).
            gzip_best(&[&be(&[2051, 1, 28, 28])], 64 << 20),
            {
                let mut g = gzip(&[be(&[2051, 1, 1, 2]), vec![1, 2]].concat());
                g.extend_from_slice(b"trailing junk");
                g
            },
            {
                let g = gzip(&[be(&[2051, 2, 2, 2]), vec![7; 8]].concat());
                g[..g.len() - 6].to_vec()
            },
        ],
        Reader::IdxLabels => vec![
            Vec::new(),
            be(&[2049]),
            be(&[2049, u32::MAX]),
            [be(&[2049, 3]), vec![1, 2, 10]].concat(),
            [be(&[2049, 1]), vec![255]].concat(),
            [be(&[2051, 1, 1, 1]), vec![1]].concat(),
            [be(&[2049, 2]), vec![1]].concat(),
            gzip_best(&[&be(&[2049, 10]), &[0; 10]], 32 << 20),
            gzip(&be(&[2049, u32::MAX])),
            {
                let mut g = gzip(&[be(&[2049, 1]), vec![3]].concat());
                let n = g.len();
                g[n - 8] ^= 0xff; // CRC32
                g
            },
        ],
        Reader::Csv => vec![
            Vec::new(),
            b"\n".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"1,2\n3\n".to_vec(),
            b"1,2\n\n3,4\n".to_vec(),
            b"\"unterminated\n".to_vec(),
            b"\"a\"b,1\n".to_vec(),
            b"1\"2\n".to_vec(),
            b"1,\xff\xfe\n".to_vec(),
            b"nan,inf,-inf,1e999,-1e999\n".to_vec(),
            b",,,\n,,,\n".to_vec(),
            b"\r".to_vec(),
            b"\"\xc3\xa9\",\"\"\"\"\n1,2".to_vec(),
            "9".repeat(5000).into_bytes(),
        ],
        Reader::Digits => vec![
            Vec::new(),
            format!("{}\n", ["0"; 64].join(",")).into_bytes(),
            format!("{},10\n", ["0"; 64].join(",")).into_bytes(),
            format!("{},17,1\n", ["0"; 63].join(",")).into_bytes(),
            format!("{},1.5,1\n", ["0"; 63].join(",")).into_bytes(),
            format!("{},16.5,1\n", ["0"; 63].join(",")).into_bytes(),
            format!("{},nan,1\n", ["0"; 63].join(",")).into_bytes(),
            // Zip bomb: 24 MiB of "0,0,..." (over the 16 MiB CSV cap), a few KB compressed.
            gzip_best(&[&"0,".repeat(12 << 20).into_bytes()], 0),
            gzip(b""),
        ],
        Reader::Pines => vec![
            Vec::new(),
            b"\"\",\"data_x\",\"data_y\"\n".to_vec(),
            b"data_x,data_y\n0.5,1.5\n".to_vec(),
            b"data_x,data_y\n-0.1,0.5\n".to_vec(),
            b"data_x,data_y\nnan,0.5\n".to_vec(),
            b"data_y,data_x\n0.5,0.5\n".to_vec(),
            b"\"\",\"data_x\",\"data_y\"\n\"1\",0.5\n".to_vec(),
            b"\"\",\"data_x\",\"data_y\"\n\"1\",0.5,0.5,0.5\n".to_vec(),
            b"data_x,data_y\n1e400,1\n".to_vec(),
        ],
        Reader::Sha256Sums => vec![
            Vec::new(),
            b"abc  x\n".to_vec(),
            format!("{} x\n", "0".repeat(64)).into_bytes(),
            format!("{}  \n", "0".repeat(64)).into_bytes(),
            format!("{}  x\n", "g".repeat(64)).into_bytes(),
            // A two-byte character straddling byte 64.
            format!("{}\u{e9}  x\n", "0".repeat(63)).into_bytes(),
            b"\xff\xfe".to_vec(),
        ],
        Reader::RonConfig => vec![
            Vec::new(),
            "(".repeat(10_000).into_bytes(),
            "[".repeat(10_000).into_bytes(),
            "Some(".repeat(2_000).into_bytes(),
            b"(seed: 18446744073709551616, target: Gmm25, train: (method: Tb))".to_vec(),
            b"(target: Gmm25, sampler: (steps: 10, sigma2: NaN), train: (method: Tb))".to_vec(),
            b"(target: Gmm25, sampler: (sigma2: inf), train: (method: Tb))".to_vec(),
            b"(target: Funnel(variant: Hard, dim: 18446744073709551615), train: (method: Tb))".to_vec(),
            b"(target: ManyWell(dim: 3), train: (method: VarGrad, batch: 1))".to_vec(),
            b"(target: Gmm25, train: (method: Tb, shards: 0))".to_vec(),
            b"#![enable(implicit_some)] (target: Gmm25, train: (method: Tb, exploration: (std: -1)))".to_vec(),
            b"(target: Gmm25, train: (method: Tb), \"\xff\": 1)".to_vec(),
            b"(target: Gmm25, train: (method: Tb)) /* unterminated".to_vec(),
            b"r#####\"".to_vec(),
        ],
        Reader::Checkpoint => {
            let u64le = |v: u64| v.to_le_bytes().to_vec();
            let good = ckpt_sections(2, 1, 1, 1);
            let mut huge_len = checkpoint_body(&good[..1]);
            huge_len.extend_from_slice(b"PARM");
            huge_len.extend(u64le(u64::MAX));
            let mut adam_huge = good.clone();
            adam_huge[2].1 = [u64le(1 << 62), vec![0; 16]].concat();
            let mut adam_n_max = good.clone();
            adam_n_max[2].1 = [u64le(u64::MAX), vec![0; 16]].concat();
            let mut blocks_huge = good.clone();
            blocks_huge[2].1 = [u64le(2), vec![0; 16], u64le(u64::MAX)].concat();
            let mut str_huge = good.clone();
            str_huge[0].1 = u64le(u64::MAX - 3);
            let mut dup = good.clone();
            dup.push(good[1].clone());
            let mut unknown = good.clone();
            unknown.push((b"RPLY", vec![1, 2, 3]));
            let mut curv_ragged = good.clone();
            curv_ragged[3].1.push(0);
            let mut not_utf8 = good.clone();
            not_utf8[0].1 = [u64le(2), vec![0xff, 0xfe], u64le(0), u64le(0)].concat();
            let mut wrong_format = checkpoint_body(&good);
            wrong_format[8] = 99;
            vec![
                Vec::new(),
                b"DSCKPT\0\n".to_vec(),
                checkpoint_body(&good),
                with_trailer(huge_len),
                with_trailer(checkpoint_body(&adam_huge)),
                with_trailer(checkpoint_body(&adam_n_max)),
                with_trailer(checkpoint_body(&blocks_huge)),
                with_trailer(checkpoint_body(&str_huge)),
                with_trailer(checkpoint_body(&dup)),
                with_trailer(checkpoint_body(&unknown)),
                with_trailer(checkpoint_body(&curv_ragged)),
                with_trailer(checkpoint_body(&not_utf8)),
                with_trailer(checkpoint_body(&good[1..])),
                with_trailer(wrong_format),
            ]
        }
    }
}

/// Regenerate the hand-made part of the corpus (found cases are kept as they are).
#[test]
#[ignore = "writes tests/fuzz-corpus; run by hand"]
fn write_seed_corpus() {
    for r in ALL {
        for bytes in hand_made(r) {
            save_to_corpus(r, &bytes);
        }
    }
}

/// The hand-made inputs are all refused (each is broken on purpose).
#[test]
fn hand_made_inputs_are_refused() {
    for r in ALL {
        for (i, bytes) in hand_made(r).iter().enumerate() {
            let refused = match r {
                Reader::Npy => npy::decode(bytes).is_err(),
                Reader::IdxImages => idx::decode_images(bytes).is_err(),
                Reader::IdxLabels => idx::decode_labels(bytes).is_err(),
                Reader::Csv => csv::parse_table(bytes, &csv::CsvOptions::default()).is_err(),
                Reader::Digits => csv::decode_digits(bytes).is_err(),
                Reader::Pines => csv::decode_pines(bytes).is_err(),
                Reader::Sha256Sums => checksum::parse_sums(bytes).is_err(),
                Reader::RonConfig => {
                    ExperimentConfig::parse(&String::from_utf8_lossy(bytes), "x").is_err()
                }
                Reader::Checkpoint => checkpoint::decode(bytes).is_err(),
            };
            // Exceptions that are valid on purpose: an empty npy array with a huge dimension,
            // and an empty SHA256SUMS (no entries).
            let valid_on_purpose = matches!((r, i), (Reader::Npy, 7) | (Reader::Sha256Sums, 0));
            assert!(
                refused != valid_on_purpose,
                "{} hand-made input {i} was {}",
                r.name(),
                if refused { "refused" } else { "accepted" }
            );
        }
    }
}

//! Readers for the data files the experiments use (`shared/data/README.md` describes each one):
//! NumPy `.npy` arrays ([`npy`]), MNIST IDX files, gzip-compressed or raw ([`idx`]), the
//! numeric CSV tables `digits.csv.gz` and `pines.csv` ([`csv`]), and `SHA256SUMS` checks
//! ([`checksum`]).
//!
//! Every reader is a pure function over bytes plus a thin `load(path)` wrapper, and returns a
//! [`DataError`] — never panics — on truncated, oversized, wrong-dtype or random input:
//! - every declared size (a shape, an image count, a header length) is checked with overflow-free
//!   arithmetic against the bytes actually present *before* anything is allocated for it;
//! - gzip input is decompressed through a hard cap ([`MAX_DECOMPRESSED_BYTES`], and for IDX the
//!   size its header implies), so a zip bomb is an error, not an out-of-memory abort;
//! - no indexing that hostile input can push out of bounds.
//!
//! `tests/fuzz_readers.rs` fuzzes each reader (random bytes and mutations of valid files) and
//! replays the regression corpus in `tests/fuzz-corpus/`; `tests/data_readers.rs` checks the
//! real files in the project's `data/` folder (copied from `shared/data`, with its README and
//! `SHA256SUMS`, so a fresh clone runs every config with no other set-up).

pub mod checksum;
pub mod csv;
pub mod idx;
pub mod npy;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The project's `data/` folder (beside `Cargo.toml`), where configs find their data files
/// unless they name another folder. Resolved at build time, so a binary finds it from any
/// working directory of the checkout it was built from.
pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The largest decompressed output any reader accepts from a gzip stream (100 MiB; the largest
/// real file, MNIST's training images, is 47,040,016 bytes).
pub const MAX_DECOMPRESSED_BYTES: usize = 100 << 20;

/// The largest file `load` reads from disk (1 GiB): a guard against pointing a reader at the
/// wrong file, not a format limit.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// DEFLATE cannot expand its input by more than about 1032:1, so a gzip stream of `n` bytes
/// decompresses to at most `n * MAX_DEFLATE_RATIO` bytes. A header that declares more is lying.
pub const MAX_DEFLATE_RATIO: usize = 1032;

/// Which reader refused the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Npy,
    Idx,
    Gzip,
    Csv,
    Digits,
    Pines,
    Sha256Sums,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Npy => "npy",
            Format::Idx => "idx",
            Format::Gzip => "gzip",
            Format::Csv => "csv",
            Format::Digits => "digits csv",
            Format::Pines => "pines csv",
            Format::Sha256Sums => "SHA256SUMS",
        })
    }
}

/// Why a data file was refused. Display reads like
/// `npy: fc1.weight.npy: header says shape (3, 4) but 40 data bytes follow, need 48`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read at all.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid file of `format`; `origin` names the file when known.
    #[error("{format}: {}{what}", origin_prefix(.origin))]
    Invalid {
        format: Format,
        origin: Option<PathBuf>,
        what: String,
    },
    /// The file's sha256 differs from the one its `SHA256SUMS` lists.
    #[error("{}: sha256 is {actual}, {} says {expected}", .path.display(), .sums.display())]
    ChecksumMismatch {
        path: PathBuf,
        sums: PathBuf,
        expected: String,
        actual: String,
    },
    /// `SHA256SUMS` has no line for the file.
    #[error("{}: no entry for {name}", .sums.display())]
    NotListed { sums: PathBuf, name: String },
}

fn origin_prefix(origin: &Option<PathBuf>) -> String {
    match origin {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

impl DataError {
    /// Name the file an [`Invalid`](DataError::Invalid) error came from (the pure decoders do
    /// not know it; the `load` wrappers add it).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            DataError::Invalid {
                format,
                origin: None,
                what,
            } => DataError::Invalid {
                format,
                origin: Some(path.to_path_buf()),
                what,
            },
            other => other,
        }
    }

    /// The format of an [`Invalid`](DataError::Invalid) error.
    pub fn format(&self) -> Option<Format> {
        match self {
            DataError::Invalid { format, .. } => Some(*format),
            _ => None,
        }
    }
}

/// An [`DataError::Invalid`] with no file name yet.
pub(crate) fn invalid(format: Format, what: impl Into<String>) -> DataError {
    DataError::Invalid {
        format,
        origin: None,
        what: what.into(),
    }
}

/// Read a whole file (at most [`MAX_FILE_BYTES`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // One byte over the cap tells "too large" from "exactly at the cap".
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "file is larger than the {MAX_FILE_BYTES}-byte limit for data files"
            )),
        });
    }
    Ok(bytes)
}

/// Whether `bytes` start with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompress a gzip stream (one or more members, RFC 1952), refusing output longer than
/// `limit` bytes (and never more than [`MAX_DECOMPRESSED_BYTES`]) and refusing trailing garbage,
/// a bad CRC or a truncated stream.
pub fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DataError> {
    let limit = limit.min(MAX_DECOMPRESSED_BYTES);
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        // One byte over the limit tells "too long" from "exactly the limit".
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(Format::Gzip, format!("corrupt gzip stream: {e}")))?;
    if out.len() > limit {
        return Err(invalid(
            Format::Gzip,
            format!("decompresses to more than {limit} bytes (zip bomb or wrong file?)"),
        ));
    }
    Ok(out)
}

/// Decompress at most the first `n` bytes of a gzip stream (fewer if it is shorter); no CRC
/// check, since the stream is not read to its end. Used to read a header before deciding how
/// much output to allow.
pub fn gunzip_prefix(bytes: &[u8], n: usize) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(n.min(4096));
    flate2::read::MultiGzDecoder::new(bytes)
        .take(n as u64)
        .read_to_end(&mut out)
        .map_err(|e| invalid(Format::Gzip, format!("corrupt gzip stream: {e}")))?;
    Ok(out)
}

/// A reader over a byte slice that never panics: `take(n)` returns `None` when fewer than `n`
/// bytes remain.
pub(crate) struct Cursor<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }
}

/// Write a shape as NumPy prints it: `()`, `(3,)`, `(3, 4)`.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_round_trips_and_caps() {
        let data = vec![7u8; 10_000];
        let gz = gzip(&data);
        assert!(is_gzip(&gz));
        assert_eq!(gunzip(&gz, 10_000).unwrap(), data);
        let err = gunzip(&gz, 9_999).unwrap_err().to_string();
        assert!(err.contains("more than 9999 bytes"), "{err}");
        assert_eq!(gunzip_prefix(&gz, 16).unwrap(), &data[..16]);
    }

    #[test]
    fn gunzip_rejects_truncation_and_bad_crc() {
        let gz = gzip(b"hello, world");
        assert!(gunzip(&gz[..gz.len() - 3], 100).is_err());
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 5] ^= 1; // CRC32 field
        assert!(gunzip(&bad, 100).is_err());
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"junk");
        assert!(gunzip(&trailing, 100).is_err());
    }

    #[test]
    fn error_names_format_and_file() {
        let e = invalid(Format::Npy, "bad magic").in_file(Path::new("x.npy"));
        assert_eq!(e.to_string(), "npy: x.npy: bad magic");
        assert_eq!(e.format(), Some(Format::Npy));
        assert_eq!(invalid(Format::Idx, "short").to_string(), "idx: short");
    }

    #[test]
    fn shapes_print_like_numpy() {
        assert_eq!(shape_str(&[]), "()");
        assert_eq!(shape_str(&[3]), "(3,)");
        assert_eq!(shape_str(&[3, 4]), "(3, 4)");
    }
}

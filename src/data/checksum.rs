//! sha256 checks against a `SHA256SUMS` file (the format `sha256sum` writes and `sha256sum -c`
//! reads: one `<64 hex digits><space><space or *><relative path>` per line).
//!
//! `shared/data/SHA256SUMS` lists every data file; [`verify`] checks one of them before use.

use super::{invalid, DataError, Format};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The file name the sums live in, in the data folder.
pub const SUMS_FILE: &str = "SHA256SUMS";

/// One line of a `SHA256SUMS` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumEntry {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// The path as written, relative to the sums file's folder.
    pub name: String,
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex sha256 of a file, read in chunks (any size).
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex(&hasher.finalize()))
}

/// Parse the text of a `SHA256SUMS` file. Blank lines are skipped; anything else that is not
/// `<64 hex><2 separators><name>` is an error naming the line. Upper-case hex is accepted and
/// lower-cased.
pub fn parse_sums(bytes: &[u8]) -> Result<Vec<SumEntry>, DataError> {
    let err = |what: String| invalid(Format::Sha256Sums, what);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| err(format!("not UTF-8 text (byte {})", e.valid_up_to())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let no = i + 1;
        let (digest, rest) = match (line.get(..64), line.get(64..)) {
            (Some(d), Some(r)) => (d, r),
            _ => {
                return Err(err(format!(
                    "line {no}: does not start with a 64-digit sha256 and a name"
                )))
            }
        };
        if !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(format!("line {no}: '{digest}' is not 64 hex digits")));
        }
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                err(format!(
                    "line {no}: expected two spaces (or ' *') and a file name after the sha256"
                ))
            })?;
        out.push(SumEntry {
            sha256: digest.to_ascii_lowercase(),
            name: name.to_string(),
        });
    }
    Ok(out)
}

/// Check `dir/name` against the entry for `name` in `dir/SHA256SUMS`.
pub fn verify(dir: &Path, name: &str) -> Result<(), DataError> {
    let sums_path = dir.join(SUMS_FILE);
    let sums = super::read_file(&sums_path)?;
    let entries = parse_sums(&sums).map_err(|e| e.in_file(&sums_path))?;
    let entry = entries
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| DataError::NotListed {
            sums: sums_path.clone(),
            name: name.to_string(),
        })?;
    check(dir, entry, &sums_path)
}

/// Check every file `dir/SHA256SUMS` lists; returns how many were checked.
pub fn verify_all(dir: &Path) -> Result<usize, DataError> {
    let sums_path = dir.join(SUMS_FILE);
    let sums = super::read_file(&sums_path)?;
    let entries = parse_sums(&sums).map_err(|e| e.in_file(&sums_path))?;
    for entry in &entries {
        check(dir, entry, &sums_path)?;
    }
    Ok(entries.len())
}

fn check(dir: &Path, entry: &SumEntry, sums_path: &Path) -> Result<(), DataError> {
    let path = dir.join(&entry.name);
    let actual = sha256_file(&path)?;
    if actual != entry.sha256 {
        return Err(DataError::ChecksumMismatch {
            path,
            sums: sums_path.to_path_buf(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"abc").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"abd").unwrap();
        let sums = format!(
            "{}  a.txt\n\n{} *b.txt\n",
            sha256_hex(b"abc").to_uppercase(),
            sha256_hex(b"abc")
        );
        std::fs::write(dir.path().join(SUMS_FILE), sums).unwrap();
        verify(dir.path(), "a.txt").unwrap();
        let e = verify(dir.path(), "b.txt").unwrap_err().to_string();
        assert!(e.contains("b.txt: sha256 is"), "{e}");
        assert!(matches!(
            verify(dir.path(), "c.txt"),
            Err(DataError::NotListed { .. })
        ));
        assert!(verify_all(dir.path()).is_err());
        assert!(parse_sums(b"abc  x\n")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        let bad = format!("{} x\n", "0".repeat(64));
        assert!(parse_sums(bad.as_bytes()).is_err());
    }
}

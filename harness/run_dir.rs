//! Building a run folder atomically.
//!
//! A run is written into a staging folder next to its target (`<DIR>.staging-<pid>`), each file
//! through write-to-temp + rename, and the finished folder is renamed onto the target in one
//! step. Readers therefore see either no folder or a complete one. With `--force` an existing
//! target is first moved aside (`<DIR>.old-<pid>`) and deleted only once the new folder is in
//! place, so a crash never leaves the user with neither. A staging folder that is dropped
//! without being committed (an error, a panic in training) is removed.

use crate::error::CliError;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A staging folder that is removed on drop unless committed.
pub struct Staging {
    path: PathBuf,
    keep: bool,
}

/// `<parent>/<name><suffix>-<pid>`, the sibling of `target` used while building or replacing it.
fn sibling(target: &Path, suffix: &str) -> Result<PathBuf, CliError> {
    let name = target.file_name().ok_or_else(|| {
        CliError::usage(format!(
            "output path {} does not name a folder",
            target.display()
        ))
    })?;
    let mut sib = name.to_os_string();
    sib.push(format!("{suffix}-{}", std::process::id()));
    Ok(target.with_file_name(sib))
}

/// The folder holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fail early (before training) when `target` exists and may not be replaced.
pub fn check_target(target: &Path, force: bool) -> Result<(), CliError> {
    match fs::symlink_metadata(target) {
        Ok(meta) if !meta.is_dir() => Err(CliError::usage(format!(
            "output path {} exists and is not a folder; refusing to replace it",
            target.display()
        ))),
        Ok(_) if !force => Err(CliError::usage(format!(
            "output folder {} already exists; pass --force to replace it",
            target.display()
        ))),
        _ => Ok(()),
    }
}

impl Staging {
    /// Create the staging folder for `target` (creating `target`'s parent folders if needed).
    pub fn new_for(target: &Path) -> Result<Self, CliError> {
        let parent = parent_of(target);
        let unwritable = |why: String| {
            CliError::usage(format!(
                "cannot write run folder {}: {why}",
                target.display()
            ))
        };
        // Name the first ancestor that is a file: "a/b is not a folder" beats "File exists".
        for anc in parent.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            if let Ok(meta) = fs::metadata(anc) {
                if !meta.is_dir() {
                    return Err(unwritable(format!("{} is not a folder", anc.display())));
                }
                break;
            }
        }
        fs::create_dir_all(parent)
            .map_err(|e| unwritable(format!("cannot create folder {}: {e}", parent.display())))?;
        let path = sibling(target, ".staging")?;
        Self::create(path).map_err(|e| unwritable(e.message))
    }

    /// Create a staging folder at exactly `path` (which must not be in use).
    pub fn create(path: PathBuf) -> Result<Self, CliError> {
        // A leftover of an earlier process with the same pid: ours to clear.
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_dir_all(&path).map_err(|e| CliError::io("remove stale folder", &path, e))?;
        }
        fs::create_dir(&path).map_err(|e| CliError::io("create folder", &path, e))?;
        Ok(Staging { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `name` inside the staging folder: temp file, fsync, rename.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), CliError> {
        let tmp = self.path.join(format!(".{name}.tmp"));
        let dst = self.path.join(name);
        let mut f = fs::File::create(&tmp).map_err(|e| CliError::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| CliError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| CliError::io("sync", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &dst).map_err(|e| CliError::io("rename into place", &dst, e))
    }

    /// Move the finished folder onto `target`. An existing `target` is replaced only with
    /// `force`: it is renamed aside, the new folder renamed in, and only then the old one removed.
    pub fn commit(mut self, target: &Path, force: bool) -> Result<(), CliError> {
        check_target(target, force)?;
        let exists = fs::symlink_metadata(target).is_ok();
        if !exists {
            fs::rename(&self.path, target)
                .map_err(|e| CliError::io("move the finished run to", target, e))?;
            self.keep = true;
            return Ok(());
        }
        let aside = sibling(target, ".old")?;
        fs::rename(target, &aside).map_err(|e| CliError::io("move aside old run", target, e))?;
        if let Err(e) = fs::rename(&self.path, target) {
            // Put the old run back; the staging folder is removed on drop.
            let _ = fs::rename(&aside, target);
            return Err(CliError::io("move the finished run to", target, e));
        }
        self.keep = true;
        if let Err(e) = fs::remove_dir_all(&aside) {
            eprintln!(
                "warning: cannot remove the replaced run {}: {e}",
                aside.display()
            );
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("repro-run-dir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn commit_then_force_replace() {
        let root = scratch("commit");
        let target = root.join("run");
        let s = Staging::new_for(&target).unwrap();
        s.write("a.txt", b"one").unwrap();
        let staged = s.path().to_path_buf();
        s.commit(&target, false).unwrap();
        assert!(!staged.exists());
        assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"one");

        // Without force: refused, old run untouched, staging removed.
        let s = Staging::new_for(&target).unwrap();
        s.write("a.txt", b"two").unwrap();
        let staged = s.path().to_path_buf();
        assert!(s.commit(&target, false).is_err());
        assert!(!staged.exists());
        assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"one");

        // With force: replaced, nothing left beside it.
        let s = Staging::new_for(&target).unwrap();
        s.write("b.txt", b"two").unwrap();
        s.commit(&target, true).unwrap();
        assert!(!target.join("a.txt").exists());
        assert_eq!(fs::read(target.join("b.txt")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run")]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn dropped_staging_is_removed() {
        let root = scratch("drop");
        let s = Staging::new_for(&root.join("run")).unwrap();
        let staged = s.path().to_path_buf();
        s.write("x", b"x").unwrap();
        drop(s);
        assert!(!staged.exists());
        fs::remove_dir_all(&root).unwrap();
    }
}

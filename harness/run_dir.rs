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

/// A staging folder that is removed on drop unless committed or kept.
pub struct Staging {
    path: PathBuf,
    keep: bool,
    /// The held lock of a resumable folder.
    lock: Option<fs::File>,
}

/// Name of the lock file inside a resumable staging folder.
pub const LOCK: &str = ".lock";

/// `<DIR>.partial`: where a run of DIR is built and where an interrupted run waits.
pub fn partial_path(target: &Path) -> Result<PathBuf, CliError> {
    let name = target.file_name().ok_or_else(|| {
        CliError::usage(format!(
            "output path {} does not name a folder",
            target.display()
        ))
    })?;
    let mut p = name.to_os_string();
    p.push(".partial");
    Ok(target.with_file_name(p))
}

/// Take the lock of an existing resumable folder, or say who holds it.
fn lock_folder(path: &Path, target: &Path) -> Result<fs::File, CliError> {
    let lock_path = path.join(LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| CliError::io("open lock file", &lock_path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(CliError::usage(format!(
            "another repro is running on {} (its lock {} is held); wait for it or stop it",
            target.display(),
            lock_path.display()
        ))),
        Err(fs::TryLockError::Error(e)) => Err(CliError::io("lock", &lock_path, e)),
    }
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

    /// Start a resumable run of `target` in `<target>.partial`, locked. An existing partial folder
    /// is refused while another process holds it; an abandoned one (interrupted or crashed) is
    /// kept for `repro resume` unless `force` discards it.
    pub fn new_partial(target: &Path, force: bool) -> Result<Self, CliError> {
        // Creates the parent folders and gives the clear errors for unwritable locations.
        let probe = Self::new_for(target)?;
        drop(probe);
        let path = partial_path(target)?;
        if fs::symlink_metadata(&path).is_ok() {
            let lock = lock_folder(&path, target)?;
            if !force {
                return Err(CliError::usage(format!(
                    "an unfinished run of {} exists in {}; continue it with `repro resume {}` or \
                     start over with --force",
                    target.display(),
                    path.display(),
                    target.display()
                )));
            }
            drop(lock);
            fs::remove_dir_all(&path)
                .map_err(|e| CliError::io("discard unfinished run", &path, e))?;
        }
        fs::create_dir(&path).map_err(|e| CliError::io("create folder", &path, e))?;
        let lock = lock_folder(&path, target)?;
        Ok(Staging {
            path,
            keep: false,
            lock: Some(lock),
        })
    }

    /// Reopen the resumable folder of `target` (after an interruption), locked.
    pub fn reopen_partial(target: &Path) -> Result<Self, CliError> {
        let path = partial_path(target)?;
        if !path.is_dir() {
            let done = target.join("manifest.json").is_file();
            return Err(CliError::usage(if done {
                format!(
                    "{} is already complete: nothing to resume",
                    target.display()
                )
            } else {
                format!(
                    "no unfinished run of {} ({} does not exist)",
                    target.display(),
                    path.display()
                )
            }));
        }
        let lock = lock_folder(&path, target)?;
        // An interrupted folder must stay if resuming fails again.
        Ok(Staging {
            path,
            keep: true,
            lock: Some(lock),
        })
    }

    /// Leave the folder in place (an interrupted run waiting for `repro resume`).
    pub fn keep_for_resume(mut self) {
        self.keep = true;
    }

    /// Delete a file of the folder if it exists (the checkpoint of a completed run).
    pub fn remove(&self, name: &str) -> Result<(), CliError> {
        let p = self.path.join(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CliError::io("remove", &p, e)),
        }
    }

    /// Create a staging folder at exactly `path` (which must not be in use).
    pub fn create(path: PathBuf) -> Result<Self, CliError> {
        // A leftover of an earlier process with the same pid: ours to clear.
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_dir_all(&path).map_err(|e| CliError::io("remove stale folder", &path, e))?;
        }
        fs::create_dir(&path).map_err(|e| CliError::io("create folder", &path, e))?;
        Ok(Staging {
            path,
            keep: false,
            lock: None,
        })
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
        if self.lock.take().is_some() {
            // The lock file is bookkeeping, not part of the run.
            let _ = fs::remove_file(self.path.join(LOCK));
        }
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

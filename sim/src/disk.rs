//! Simulated twin of `igor::env::real::FsDisk`: the [`Disk`] trait on
//! turmoil's simulated filesystem (`unstable-fs`). Writes stay pending until
//! synced; a turmoil crash drops unsynced files and pending writes, so the
//! atomic-write protocol (temp, fsync, rename, directory fsync) is tested
//! against real durability semantics. Must be used inside a turmoil host.

use igor::env::{Disk, DiskError, TEMP_SUFFIX, check_path};
use std::io::Write;
use std::path::{Path, PathBuf};
use turmoil::fs::shim::std::fs;

/// Root of every node's data inside its own simulated filesystem.
pub const SIM_DATA_ROOT: &str = "/igor-data";

/// A disk on the current turmoil host's filesystem.
#[derive(Clone, Debug)]
pub struct SimDisk {
    root: PathBuf,
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk { root: PathBuf::from(SIM_DATA_ROOT) }
    }
}

fn io<'a>(op: &'static str, path: &'a str) -> impl Fn(std::io::Error) -> DiskError + use<'a> {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => DiskError::NotFound { op, path: path.to_string() },
        _ => DiskError::Io { op, path: path.to_string(), reason: e.to_string() },
    }
}

impl SimDisk {
    fn full(&self, op: &'static str, path: &str) -> Result<PathBuf, DiskError> {
        check_path(op, path)?;
        Ok(self.root.join(path))
    }

    /// Flip one bit of a durable file (a disk fault injected by a scenario).
    pub fn flip_bit(&self, path: &str, byte: usize) -> Result<(), DiskError> {
        let mut bytes = self.read(path)?;
        let at = byte % bytes.len().max(1);
        let Some(b) = bytes.get_mut(at) else {
            return Err(DiskError::Io { op: "corrupt", path: path.to_string(), reason: "empty file".into() });
        };
        *b ^= 0x01;
        self.write_atomic(path, &bytes)
    }

    /// Every file under `dir`, recursively, as relative paths (sorted).
    pub fn walk(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let Ok(full) = self.full("walk", &d) else { continue };
            let Ok(entries) = fs::read_dir(&full) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = format!("{d}/{name}");
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(rel);
                } else {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }
}

impl Disk for SimDisk {
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        let full = self.full("read", path)?;
        fs::read(&full).map_err(io("read", path))
    }

    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let full = self.full("write", path)?;
        let err = io("write", path);
        let dir = full.parent().unwrap_or(Path::new(SIM_DATA_ROOT)).to_path_buf();
        if !fs::exists(&dir) {
            fs::create_dir_all(&dir).map_err(&err)?;
            // A new directory's entry is durable only once its parent is
            // synced, up to the root (turmoil models this like POSIX does).
            let mut d = dir.as_path();
            while let Some(parent) = d.parent() {
                fs::sync_dir(parent).map_err(&err)?;
                if parent == self.root || parent == Path::new("/") {
                    break;
                }
                d = parent;
            }
        }
        let tmp = PathBuf::from(format!("{}{TEMP_SUFFIX}", full.display()));
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(&err)?;
        f.write_all(bytes).map_err(&err)?;
        f.sync_all().map_err(&err)?;
        drop(f);
        fs::rename(&tmp, &full).map_err(&err)?;
        fs::sync_dir(&dir).map_err(&err)?;
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let full = self.full("remove", path)?;
        fs::remove_file(&full).map_err(io("remove", path))?;
        if let Some(dir) = full.parent() {
            fs::sync_dir(dir).map_err(io("remove", path))?;
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let full = self.full("list", dir)?;
        let entries = match fs::read_dir(&full) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", dir)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(TEMP_SUFFIX))
            .collect();
        names.sort();
        Ok(names)
    }
}

impl SimDisk {
    /// Lose the whole data directory (a node restarting on an empty disk).
    /// Files *and* directories go: a wiped node must find no trace of an
    /// agent (a leftover empty `agents/<id>/` once came back as a phantom
    /// RECOVERY_REQUIRED record at epoch 0.0).
    pub fn wipe(&self) {
        for path in self.walk_root() {
            let _ = self.remove(&path);
        }
        let Ok(entries) = fs::read_dir(&self.root) else { return };
        for e in entries.flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    }

    fn walk_root(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(self.walk(&name));
            } else {
                out.push(name);
            }
        }
        out
    }
}

//! The real backend for clock, disk and entropy: the system clock, a
//! directory on the filesystem and the OS random source; and the other
//! pieces that touch the world: the http client (`http`, [`UreqGateway`])
//! and the sandbox's wall-clock safety net (`wall_clock`, [`WallClockNet`]).
//! This is one of the few places allowed to touch the world (see
//! `clippy.toml`); the libp2p network adapter is the other.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod http;
mod wall_clock;

pub use http::UreqGateway;
pub use wall_clock::WallClockNet;

use super::{Clock, Disk, DiskError, Entropy, TEMP_SUFFIX, check_path};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The machine's clocks.
#[derive(Clone, Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { origin: Instant::now() }
    }
}

impl Clock for SystemClock {
    fn mono_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
    fn unix_ns(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

/// The OS random source.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use rand_core::TryRngCore;
        // Without OS randomness no key can be made safely: stopping is the
        // only honest option, and it happens before any state is touched.
        rand_core::OsRng.try_fill_bytes(buf).expect("OS random source failed");
    }
}

/// A disk rooted in a directory (a node's data dir).
#[derive(Clone, Debug)]
pub struct FsDisk {
    root: PathBuf,
}

impl FsDisk {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsDisk { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, op: &'static str, path: &str) -> Result<PathBuf, DiskError> {
        check_path(op, path)?;
        Ok(self.root.join(path))
    }

    fn write_with_mode(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), DiskError> {
        let full = self.full("write", path)?;
        let io =
            |reason: std::io::Error| DiskError::Io { op: "write", path: path.to_string(), reason: reason.to_string() };
        let dir = full.parent().unwrap_or(&self.root).to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io)?;
            // A new directory survives a power loss only once its entry in
            // the parent is synced: sync every ancestor up to the root.
            let mut d = dir.as_path();
            while let Some(parent) = d.parent() {
                File::open(parent).and_then(|p| p.sync_all()).map_err(io)?;
                if parent == self.root || parent.as_os_str().is_empty() {
                    break;
                }
                d = parent;
            }
        }
        let tmp = PathBuf::from(format!("{}{TEMP_SUFFIX}", full.display()));
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &full).map_err(io)?;
        // The rename is durable only once the directory entry is synced.
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

impl Disk for FsDisk {
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        let full = self.full("read", path)?;
        fs::read(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DiskError::NotFound { op: "read", path: path.to_string() },
            _ => DiskError::Io { op: "read", path: path.to_string(), reason: e.to_string() },
        })
    }

    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.write_with_mode(path, bytes, 0o644)
    }

    fn write_secret(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.write_with_mode(path, bytes, 0o600)
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let full = self.full("remove", path)?;
        fs::remove_file(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DiskError::NotFound { op: "remove", path: path.to_string() },
            _ => DiskError::Io { op: "remove", path: path.to_string(), reason: e.to_string() },
        })
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let full = self.full("list", dir)?;
        let entries = match fs::read_dir(&full) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(DiskError::Io { op: "list", path: dir.to_string(), reason: e.to_string() }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| DiskError::Io { op: "list", path: dir.to_string(), reason: e.to_string() })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(TEMP_SUFFIX) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_disk_meets_the_disk_contract() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::disk_contract(&FsDisk::new(dir.path()));
        // A restart opens the same directory: what was written is there.
        let disk = FsDisk::new(dir.path());
        super::super::conformance::disk_survives_crash(&disk, || FsDisk::new(dir.path()));
    }

    #[test]
    fn fs_disk_writes_atomically_and_secrets_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FsDisk::new(dir.path());
        disk.write_atomic("a/b/c", b"one").unwrap();
        disk.write_atomic("a/b/c", b"two").unwrap();
        assert_eq!(disk.read("a/b/c").unwrap(), b"two");
        assert_eq!(disk.list("a/b").unwrap(), vec!["c"]);
        disk.write_secret("keys/k", b"secret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keys/k")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        disk.remove("a/b/c").unwrap();
        assert!(disk.read("a/b/c").unwrap_err().is_not_found());
        assert!(disk.read("../etc/passwd").is_err());
    }

    #[test]
    fn clocks_move_forward() {
        let c = SystemClock::default();
        let a = c.mono_ns();
        assert!(c.mono_ns() >= a);
        assert!(c.unix_ns() > 1_600_000_000_000_000_000);
    }
}

//! Simulated twin of `igor::env::real::FsDisk`: the [`Disk`] trait on
//! turmoil's simulated filesystem (`unstable-fs`). Writes stay pending until
//! synced; a turmoil crash drops unsynced files and pending writes, so the
//! atomic-write protocol (temp, fsync, rename, directory fsync) is tested
//! against real durability semantics. Must be used inside a turmoil host.

use igor::env::{Disk, DiskError, TEMP_SUFFIX, check_path};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use turmoil::fs::shim::std::fs;

/// Root of every node's data inside its own simulated filesystem.
pub const SIM_DATA_ROOT: &str = "/igor-data";

/// A write fault the simulator can switch on for a node's disk
/// (`DiskFault` in a scenario): writes and syncs fail, reads keep working.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFaultKind {
    /// ENOSPC: the temp file is created, writing into it fails. Removing a
    /// file still works (it frees space).
    Full,
    /// EIO: the bytes are written, the fsync fails. Removing fails too.
    Io,
}

impl DiskFaultKind {
    /// The text `std::io::Error` gives for the errno on Linux, so the node
    /// sees the same `DiskError::Io` the real `FsDisk` would return.
    pub fn reason(self) -> &'static str {
        match self {
            DiskFaultKind::Full => "No space left on device (os error 28)",
            DiskFaultKind::Io => "Input/output error (os error 5)",
        }
    }
}

/// The fault switch the runner shares with every boot of one node's disk.
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// The fault in force, if any.
    pub active: Cell<Option<DiskFaultKind>>,
    /// Simulated time (ns) the fault in force ends at; a later heal of an
    /// earlier, shorter fault leaves it on.
    pub until_ns: Cell<u64>,
    /// Writes (and removes) refused so far, for the trace and coverage.
    pub refused: Cell<u64>,
    /// Only paths under this prefix fail (`None`: every path).
    pub under: std::cell::RefCell<Option<String>>,
}

impl DiskFaults {
    /// Switch `kind` on until `until_ns` (the later end wins when faults overlap).
    pub fn start(&self, kind: DiskFaultKind, until_ns: u64) {
        self.active.set(Some(kind));
        self.until_ns.set(self.until_ns.get().max(until_ns));
    }

    /// Switch the fault off if its time is up at `now_ns` (or always with `force`).
    pub fn end(&self, now_ns: u64, force: bool) {
        if force || now_ns >= self.until_ns.get() {
            self.active.set(None);
        }
    }

    /// The fault in force for `path`, if any.
    fn on(&self, path: &str) -> Option<DiskFaultKind> {
        let applies = self.under.borrow().as_deref().is_none_or(|p| path.starts_with(p));
        self.active.get().filter(|_| applies)
    }

    fn refuse(&self, op: &'static str, path: &str, kind: DiskFaultKind) -> DiskError {
        self.refused.set(self.refused.get() + 1);
        DiskError::Io { op, path: path.to_string(), reason: kind.reason().to_string() }
    }
}

/// A disk on the current turmoil host's filesystem.
#[derive(Clone, Debug)]
pub struct SimDisk {
    root: PathBuf,
    faults: Rc<DiskFaults>,
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk { root: PathBuf::from(SIM_DATA_ROOT), faults: Rc::default() }
    }
}

fn io<'a>(op: &'static str, path: &'a str) -> impl Fn(std::io::Error) -> DiskError + use<'a> {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => DiskError::NotFound { op, path: path.to_string() },
        _ => DiskError::Io { op, path: path.to_string(), reason: e.to_string() },
    }
}

impl SimDisk {
    /// A disk whose writes fail while `faults` says so.
    pub fn with_faults(faults: Rc<DiskFaults>) -> Self {
        SimDisk { faults, ..SimDisk::default() }
    }

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
            if let Some(kind) = self.faults.on(path) {
                return Err(self.faults.refuse("write", path, kind));
            }
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
        // A fault fails the write before the rename: `path` keeps its old
        // bytes (RE-1) and a temp file is left behind, as on a real disk.
        let fault = self.faults.on(path);
        if fault == Some(DiskFaultKind::Full) {
            return Err(self.faults.refuse("write", path, DiskFaultKind::Full));
        }
        f.write_all(bytes).map_err(&err)?;
        if fault == Some(DiskFaultKind::Io) {
            return Err(self.faults.refuse("write", path, DiskFaultKind::Io));
        }
        f.sync_all().map_err(&err)?;
        drop(f);
        fs::rename(&tmp, &full).map_err(&err)?;
        fs::sync_dir(&dir).map_err(&err)?;
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let full = self.full("remove", path)?;
        if self.faults.on(path) == Some(DiskFaultKind::Io) {
            return Err(self.faults.refuse("remove", path, DiskFaultKind::Io));
        }
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
        // turmoil keeps a removal pending until its parent is synced; a
        // later create of the same path would otherwise race it.
        let _ = fs::sync_dir(&self.root);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Duration;

    /// Run `f` inside one turmoil host (the simulated filesystem needs one).
    fn on_host(f: impl FnOnce() + 'static) {
        let mut sim = turmoil::Builder::new().simulation_duration(Duration::from_secs(5)).build();
        let f = RefCell::new(Some(f));
        sim.client("h", async move {
            if let Some(f) = f.borrow_mut().take() {
                f();
            }
            Ok(())
        });
        sim.run().expect("host ran");
    }

    #[test]
    fn a_full_disk_refuses_writes_keeps_old_bytes_and_reads() {
        on_host(|| {
            let faults = Rc::new(DiskFaults::default());
            let disk = SimDisk::with_faults(faults.clone());
            disk.write_atomic("agents/x/head", b"old").expect("healthy write");
            disk.write_atomic("agents/x/spare", b"s").expect("healthy write");
            faults.start(DiskFaultKind::Full, 1_000);
            let err = disk.write_atomic("agents/x/head", b"new").expect_err("a full disk refuses");
            assert_eq!(
                err,
                DiskError::Io {
                    op: "write",
                    path: "agents/x/head".into(),
                    reason: "No space left on device (os error 28)".into()
                }
            );
            // RE-1: the old bytes stay whole; the temp file is hidden.
            assert_eq!(disk.read("agents/x/head").expect("reads work"), b"old");
            assert_eq!(disk.list("agents/x").expect("list works"), vec!["head".to_string(), "spare".to_string()]);
            // A new directory cannot be made either.
            assert!(disk.write_atomic("agents/y/head", b"1").is_err());
            // Removing frees space: allowed on a full disk.
            disk.remove("agents/x/spare").expect("remove on a full disk");
            assert_eq!(faults.refused.get(), 2);
            // An earlier heal time leaves the fault on; its own end clears it.
            faults.end(500, false);
            assert!(disk.write_atomic("agents/x/head", b"new").is_err());
            faults.end(1_000, false);
            disk.write_atomic("agents/x/head", b"new").expect("space is back");
            assert_eq!(disk.read("agents/x/head").unwrap(), b"new");
            disk.remove("agents/x/head").expect("remove");
        });
    }

    #[test]
    fn an_io_error_fails_the_sync_and_removes() {
        on_host(|| {
            let faults = Rc::new(DiskFaults::default());
            let disk = SimDisk::with_faults(faults.clone());
            disk.write_atomic("k", b"v1").unwrap();
            faults.start(DiskFaultKind::Io, u64::MAX);
            let err = disk.write_atomic("k", b"v2").unwrap_err();
            assert!(err.to_string().contains("Input/output error (os error 5)"), "{err}");
            assert!(disk.remove("k").is_err(), "EIO fails removes too");
            assert_eq!(disk.read("k").unwrap(), b"v1");
            faults.end(0, true);
            disk.write_atomic("k", b"v2").unwrap();
            assert_eq!(disk.read("k").unwrap(), b"v2");
        });
    }
}
